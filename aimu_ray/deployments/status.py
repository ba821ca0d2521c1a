"""Serve's view of the apps, read from its controller: each deployment's status and replica counts."""

from __future__ import annotations

from ray import serve


def serve_apps() -> dict[str, dict[str, dict]]:
    """app → deployment → {status, replicas by state, message}; empty when Serve is not running."""
    from ray.serve.context import _get_global_client

    if _get_global_client(raise_if_no_controller_running=False) is None:
        return {}
    return {name: {deployment: {"status": getattr(d.status, "value", str(d.status)), "replicas": dict(d.replica_states or {}),
                                "message": d.message}
                   for deployment, d in app.deployments.items()}
            for name, app in serve.status().applications.items()}

