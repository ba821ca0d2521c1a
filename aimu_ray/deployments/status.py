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


def model_state(deployment: dict | None) -> tuple[str, str | None]:
    """A deployment's status as a model state: loading, ready, unloaded (scaled to zero) or failed."""
    if deployment is None:
        return "loading", None
    status, running = deployment["status"], deployment["replicas"].get("RUNNING", 0)
    if "UNHEALTHY" in status or "FAILED" in status:
        return "failed", deployment["message"] or None
    if running:
        return "ready", None
    if "UPDATING" in status or deployment["replicas"]:
        return "loading", None
    return "unloaded", None
