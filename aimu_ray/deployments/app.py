"""The Serve application built from an ``AppConfig``: the ingress, which also calls remote providers itself.

In-process models are not Serve deployments: the ingress sends to their copies, which the model registry places
(each on its own GPU share, by measured free memory), scales by requests in flight, evicts and reloads, exactly as
for ``aimu_ray.client``. Serve keeps what it is good at: the HTTP proxy, the ingress's replicas, their autoscaling
and health checks, and handles other Ray apps call.

``build_app`` is also Serve's import path (``serve run aimu_ray.deployments:build_app config=serve.yaml``,
or ``import_path`` + ``args`` in a ``serve deploy`` / KubeRay config). A build that finds no Serve running starts
it on the config's host and port: ``serve run`` (which builds before it starts Serve) then listens where the
config says, as ``aimu-ray serve`` does. A build also clears the models the admin API added to an earlier
deploy of the app: the config is the truth after a deploy.
"""

from __future__ import annotations

import logging
import os

import ray
from ray import serve
from ray.serve import Application
from ray.serve.context import _get_global_client

from ..cluster.connection import ensure_ray
from ..hosts.registry import get_registry
from .catalog import reset_catalog
from .config import AppConfig, load_config
from .files import FILES, Files
from .ingress import IngressDeployment

INGRESS_ONGOING = 1000            # remote requests are I/O, and copies' requests are waits: one replica holds many
FILES_ONGOING = 1000              # small reads and writes, each in a thread: one replica holds many

logger = logging.getLogger("aimu_ray")


def build_app(args: dict | AppConfig | str | os.PathLike) -> Application:
    """The app for a config (an ``AppConfig``, Serve's ``args`` dict, or a YAML path)."""
    config = load_config(args)
    ensure_ray(fast_serve=config.fast_path)
    _start_serve(config)
    reset_catalog(config.name)
    if config.gpu_memory_utilization is not None:
        ray.get(get_registry().set_gpu_memory_utilization.remote(config.gpu_memory_utilization))
    deployments: dict[str, Application] = {}
    if _makes_files(config):                          # one replica: the files sit on its node's disk
        deployments[FILES] = Files.options(num_replicas=1, max_ongoing_requests=FILES_ONGOING,
                                           ray_actor_options={"num_cpus": 0}).bind(
            config.output_dir, config.files_ttl_s, config.files_max_bytes)
    return IngressDeployment.options(ray_actor_options={"num_cpus": 0},
                                     **config.ingress.deployment_options(INGRESS_ONGOING)).bind(config, deployments)


def run(config: AppConfig, *, blocking: bool = False, access_log: bool = True) -> None:
    """Deploy the app (and Serve's HTTP proxy, on the config's host and port); returns once it is up."""
    serve.run(build_app(config), name=config.name, route_prefix=config.route_prefix, blocking=blocking,
              logging_config={"enable_access_log": access_log})


def _makes_files(config: AppConfig) -> bool:
    """Whether the app may hand out files: it serves image or audio models, or its admin API may add one."""
    may_add = config.admin_keys_env is not None and "hf" in config.admin.allowed_providers
    return may_add or any(model.task != "text" for model in config.models)


def _start_serve(config: AppConfig) -> None:
    """Serve on the config's host and port, unless it runs already: then its proxy stays where it is
    (``serve deploy`` and KubeRay set it in their own config), and a config that differs is said."""
    client = _get_global_client(raise_if_no_controller_running=False)
    if client is None:
        serve.start(http_options={"host": config.host, "port": config.port})
    elif (client.http_config.host, client.http_config.port) != (config.host, config.port):
        logger.warning("Serve already listens on %s:%s; the config's host and port (%s:%s) do not apply.",
                       client.http_config.host, client.http_config.port, config.host, config.port)
