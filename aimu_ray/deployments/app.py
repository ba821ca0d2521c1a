"""The Serve application built from an ``AppConfig``: one deployment per in-process model, one for every
remote provider, and the ingress in front.

``build_app`` is also Serve's import path (``serve run aimu_ray.deployments:build_app config=serve.yaml``,
or ``import_path`` + ``args`` in a ``serve deploy`` / KubeRay config). Building plans each in-process
model's GPU share with the placement policy, through the model registry so the plan sees the memory
that model actors and other replicas already hold. A build that finds no Serve running starts it on the
config's host and port: ``serve run`` (which builds before it starts Serve) then listens where the
config says, as ``aimu-ray serve`` does.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import ray
from ray import serve
from ray.serve import Application
from ray.serve.context import _get_global_client

from ..hosts.registry import get_registry
from ..cluster.inventory import current_inventory_override
from ..cluster.model_size import need_for
from ..cluster.need import ModelNeed
from ..cluster.placement import Placement
from ..cluster.survey import live_node_ids
from ..models.load import ModelLoad
from ..cluster.connection import ensure_ray
from .config import AppConfig, ServedModel, load_config
from .ingress import REMOTE, IngressDeployment
from .model_server import ModelServer
from .remote_server import RemoteServer

# Requests one replica takes at once: HF text batches them; one image or clip keeps a GPU busy.
DEFAULT_ONGOING = {"text": 64, "image": 8, "audio": 4}
REMOTE_ONGOING = 1000             # remote requests are I/O: one replica holds many
INGRESS_ONGOING = 1000

logger = logging.getLogger("aimu_ray")


def build_app(args: dict | AppConfig | str | os.PathLike) -> Application:
    """The app for a config (an ``AppConfig``, Serve's ``args`` dict, or a YAML path)."""
    config = load_config(args)
    ensure_ray()
    _start_serve(config)
    in_process = [model for model in config.models if model.in_process]
    remote = [model for model in config.models if not model.in_process]
    sized = [(load, need_for(load)) for load in (model.load() for model in in_process)]   # reads weight files
    deployments: dict[str, Application] = {}
    for model, (load, need), placement in zip(in_process, sized, _plan(sized)):
        deployments[model.deployment_name] = ModelServer.options(
            name=model.deployment_name, ray_actor_options=_replica_resources(model, placement),
            **model.deployment_options(DEFAULT_ONGOING[model.task])).bind(model.name, load, need, placement)
    if remote:
        deployments[REMOTE] = RemoteServer.options(       # keys: from the nodes' environment, never the config
            name=REMOTE, ray_actor_options={"num_cpus": 0},
            **config.remote.deployment_options(REMOTE_ONGOING)).bind(remote)
    return IngressDeployment.options(ray_actor_options={"num_cpus": 0},
                                     **config.ingress.deployment_options(INGRESS_ONGOING)).bind(config, deployments)


def run(config: AppConfig, *, blocking: bool = False, access_log: bool = True) -> None:
    """Deploy the app (and Serve's HTTP proxy, on the config's host and port); returns once it is up."""
    serve.run(build_app(config), name=config.name, route_prefix=config.route_prefix, blocking=blocking,
              logging_config={"enable_access_log": access_log})


def _start_serve(config: AppConfig) -> None:
    """Serve on the config's host and port, unless it runs already: then its proxy stays where it is
    (``serve deploy`` and KubeRay set it in their own config), and a config that differs is said."""
    client = _get_global_client(raise_if_no_controller_running=False)
    if client is None:
        serve.start(http_options={"host": config.host, "port": config.port})
    elif (client.http_config.host, client.http_config.port) != (config.host, config.port):
        logger.warning("Serve already listens on %s:%s; the config's host and port (%s:%s) do not apply.",
                       client.http_config.host, client.http_config.port, config.host, config.port)


def _plan(sized: list[tuple[ModelLoad, ModelNeed]]) -> list[Placement]:
    """Each model's share, planned through the registry so it sees every share already promised."""
    if not sized:
        return []
    return ray.get(get_registry().plan.remote(sized, current_inventory_override()))


def _replica_resources(model: ServedModel, placement: Placement) -> dict[str, Any]:
    """Ray's half of the plan for every replica: the GPU share, the RAM of a CPU model, a pinned node."""
    options: dict[str, Any] = {"num_cpus": 0, "num_gpus": placement.num_gpus}
    if placement.memory_bytes:
        options["memory"] = placement.memory_bytes
    if model.placement.node_id and model.placement.node_id in live_node_ids():
        options["label_selector"] = {"ray.io/node-id": model.placement.node_id}
    return options

