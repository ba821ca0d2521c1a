"""The model registry: one named actor per cluster that places, creates, lists and unloads model actors.

It is the only creator of model actors, and it creates each under a per-model lock, so two scripts
that ask for the same model at the same moment get one actor and one load. Its ledger of placements
is what keeps two models from being promised the same GPU memory: each placement reserves its share
until the actor is gone, and memory a model actor is seen holding (NVML, by pid) is credited back so it
is not counted twice. When a loaded actor measures more than its share, the registry warns and the
next placement of that model uses the measured figure.

It is never on a request's path: callers look model actors up by name and only come here when the
actor does not exist yet (or has just been unloaded).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, defaultdict
from typing import Any

import ray
from pydantic import BaseModel, ConfigDict
from ray.actor import ActorHandle
from ray.exceptions import RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ..cluster.inventory import Inventory
from ..cluster.placement import Placement, ReservedKey, gib, place, reserve
from ..cluster.need import ModelNeed
from ..cluster.survey import live_node_ids, survey
from ..models.load import ModelLoad, Target
from ..models.placements import ModelPlacement
from .model import MeasuredUse
from .model_actor import ModelActor
from ..cluster.connection import NAMESPACE

logger = logging.getLogger("aimu_ray")
REGISTRY_NAME = "models"
MAX_RESTARTS = 3          # a model process that keeps dying (OOM, segfault) is not restarted forever
DRAIN_S = 30.0            # how long an explicit unload lets requests in flight finish, by default
ENDED_KEPT = 10_000       # actors ended on purpose that are remembered (a late caller may still hold one)


class Entry(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    load: ModelLoad
    need: ModelNeed
    placement: Placement
    handle: Any                    # ActorHandle (not a pydantic type); None for a Serve replica
    created_at: float
    use: MeasuredUse | None = None
    deployment: str | None = None  # the Serve deployment a replica belongs to
    served_as: str | None = None   # and the name its app serves the model under


@ray.remote
class ModelRegistry:
    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}
        self._replicas: dict[str, Entry] = {}        # Serve replica id → its model, share and use
        self._measured: dict[str, int] = {}          # model key → bytes its last actor measured (feedback)
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._ended: OrderedDict[str, None] = OrderedDict()   # ids of actors this registry ended on purpose

    async def ensure(self, load: ModelLoad, need: ModelNeed, inventory: Inventory | None,
                     gone_actor_id: str | None = None) -> ActorHandle:
        """The model's actor, placed and loaded now unless it exists; raises its load or placement error.

        ``gone_actor_id`` is an actor the caller found unloading or ended on purpose: it is replaced, once an
        unload of it is over (the unload holds the model's lock).
        """
        key = load.key()
        async with self._locks[key]:
            entry = self._entries.get(key)
            if entry is not None and gone_actor_id is not None and _actor_id(entry.handle) == gone_actor_id:
                self._forget(key, kill=True)
                entry = None
            if entry is not None:
                return entry.handle
            inventory = inventory or await survey()
            options = load.placement
            if key in self._measured and options.measured_bytes is None:
                options = options.model_copy(update={"measured_bytes": self._measured[key]})
            placement = place(need, inventory, options, self._reserved(inventory))
            logger.info("Placing %s: %s", load.label(), placement.reason)
            handle = ModelActor.options(**_actor_options(load, placement, inventory)).remote(
                load, Target(device=placement.device, device_map=placement.device_map, offload=placement.offload),
                REGISTRY_NAME, NAMESPACE)
            self._entries[key] = Entry(load=load, need=need, placement=placement, handle=handle,
                                       created_at=time.time())
            try:
                self._entries[key].use = await handle.ready.remote()
            except BaseException as error:
                self._forget(key, kill=True)
                raise (error.cause if isinstance(error, RayTaskError) else error) from None
            return handle

    async def plan(self, loads: list[tuple[ModelLoad, ModelNeed]], inventory: Inventory | None) -> list[Placement]:
        """Placements for Serve deployments, each seeing the shares of the ones before it; nothing is created.

        A deployment's replicas get the share planned here; each replica joins the ledger when it has loaded.
        """
        inventory = inventory or await survey()
        reserved, placements = self._reserved(inventory), []
        for load, need in loads:
            options = load.placement
            if load.key() in self._measured and options.measured_bytes is None:
                options = options.model_copy(update={"measured_bytes": self._measured[load.key()]})
            placement = place(need, inventory, options, reserved)
            reserved = reserve(reserved, placement)
            placements.append(placement)
        return placements

    def hosted(self, replica_id: str, deployment: str, served_as: str, load: ModelLoad, need: ModelNeed,
               placement: Placement, use: MeasuredUse) -> None:
        """A Serve replica has loaded its model: its share is promised until it says it is gone."""
        self._replicas[replica_id] = Entry(load=load, need=need, placement=placement, handle=None,
                                           created_at=time.time(), use=use, deployment=deployment,
                                           served_as=served_as)
        self._check_share(load, placement, use)

    def released(self, replica_id: str) -> None:
        self._replicas.pop(replica_id, None)

    def loaded(self, key: str, use: MeasuredUse) -> None:
        """A model actor's measured use after (re)loading: warn and remember when it exceeds the share."""
        entry = self._entries.get(key)
        if entry is None:
            return
        entry.use = use
        self._check_share(entry.load, entry.placement, use)

    def _check_share(self, load: ModelLoad, placement: Placement, use: MeasuredUse) -> None:
        """Warn when a model holds more than its share promised; its next placement asks for the measured figure."""
        promised = sum(placement.gpu_bytes.values())
        if use.vram_bytes > promised > 0:
            self._measured[load.key()] = use.vram_bytes
            logger.warning("%s holds %s of GPU memory, more than the %s its share promised; its next placement "
                           "will ask for the measured figure.", load.label(), gib(use.vram_bytes), gib(promised))

    def retired(self, key: str, actor_id: str) -> None:
        """An idle actor unloading itself: give its share back and end it (only if it is still the current one)."""
        entry = self._entries.get(key)
        if entry is not None and _actor_id(entry.handle) == actor_id:
            self._forget(key, kill=True)

    async def unload(self, model: str | None = None, grace_s: float = DRAIN_S) -> list[str]:
        """Unload the models matching ``model`` (a model string such as "hf:org/name", or an actor key), or all.

        New requests are refused at once; those in flight get ``grace_s`` to finish, then end with
        ``ModelUnloadedError``. Returns what was unloaded.
        """
        entries = [(k, e) for k, e in self._entries.items() if model in (None, k, e.load.label())]
        await asyncio.gather(*(self._unload(key, entry, grace_s) for key, entry in entries))
        return [entry.load.label() for _, entry in entries]

    def ended(self, actor_id: str) -> bool:
        """Did this registry end that actor on purpose (unloaded, idle, replaced)? It then had nothing in flight,
        so a request that met it dead never ran there and may go to a fresh actor; a crash is not that."""
        return actor_id in self._ended

    async def placements(self) -> list[ModelPlacement]:
        """One row per model actor: where it runs, its share, memory promised vs measured, and why."""
        infos = await asyncio.gather(*(e.handle.info.remote() for e in self._entries.values()),
                                     return_exceptions=True)
        rows = [_row(key, entry, info) for (key, entry), info in zip(self._entries.items(), infos)]
        return rows + [_row(entry.load.key(), entry, None) for entry in self._replicas.values()]

    async def _unload(self, key: str, entry: Entry, grace_s: float) -> None:
        """Under the model's lock, so a request refused meanwhile (``ensure`` with the old actor) waits for the end
        and gets a fresh actor instead of the unloading one."""
        async with self._locks[key]:
            await self._drain(entry, grace_s)
            if self._entries.get(key) is entry:
                self._forget(key, kill=True)

    async def _drain(self, entry: Entry, grace_s: float) -> None:
        """Refuse new requests, give those in flight ``grace_s`` to finish, then end them: nothing runs when killed."""
        try:
            in_flight = await entry.handle.retire.remote()
            deadline = time.monotonic() + grace_s
            while in_flight and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                in_flight = (await entry.handle.info.remote())["in_flight"]
            if in_flight:
                ended = await entry.handle.end_requests.remote()
                logger.warning("Unloading %s: ended %d request(s) still running after %.0f s.", entry.load.label(),
                               ended, grace_s)
        except ray.exceptions.RayActorError:
            pass                                       # already dead: nothing to drain

    def _forget(self, key: str, kill: bool) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None and kill:
            self._ended[_actor_id(entry.handle)] = None
            while len(self._ended) > ENDED_KEPT:
                self._ended.popitem(last=False)
            ray.kill(entry.handle, no_restart=True)

    def _reserved(self, inventory: Inventory) -> dict[ReservedKey, int]:
        """Bytes promised to live model actors, less what NVML already shows them holding (not counted twice)."""
        reserved: dict[ReservedKey, int] = defaultdict(int)
        seen = {(node.node_id, gpu.index, p.pid): p.used_bytes
                for node in inventory.nodes for gpu in node.gpus for p in gpu.processes}
        for entry in [*self._entries.values(), *self._replicas.values()]:
            for slot, nbytes in entry.placement.reservations().items():
                node_id, gpu_index = slot
                held = seen.get((node_id, gpu_index, entry.use.pid), 0) if entry.use and gpu_index is not None else 0
                reserved[slot] += nbytes - min(held, nbytes)
        return dict(reserved)


def _actor_options(load: ModelLoad, placement: Placement, inventory: Inventory) -> dict:
    """Ray's half of the decision: GPU fraction, node affinity, RAM reservation, name and restarts."""
    options: dict[str, Any] = dict(name=load.actor_name(), namespace=NAMESPACE, lifetime="detached",
                                   get_if_exists=True, num_cpus=0, num_gpus=placement.num_gpus,
                                   max_concurrency=1000, max_restarts=MAX_RESTARTS, max_task_retries=0)
    if placement.memory_bytes:
        options["memory"] = placement.memory_bytes
    if placement.node_id in live_node_ids():        # a made-up inventory's nodes are not Ray nodes
        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(placement.node_id, soft=False)
    return options


def _row(key: str, entry: Entry, info: Any) -> ModelPlacement:
    placement = entry.placement
    row = {"model": entry.load.label(), "task": entry.load.task, "key": key, "node_id": placement.node_id,
           "device": placement.device, "gpu_indices": placement.gpu_indices, "num_gpus": placement.num_gpus,
           "offload": placement.offload, "reserved_bytes": sum(placement.gpu_bytes.values()) or placement.memory_bytes,
           "need_bytes": entry.need.total_bytes, "reason": placement.reason}
    if isinstance(info, BaseException):
        return ModelPlacement(**row, state=f"unreachable ({type(info).__name__})")
    if info is None:                               # a Serve replica: what it measured when it loaded
        use, state = entry.use, "serving"
        row.update(deployment=entry.deployment, name=entry.served_as)
    else:
        use, state = info["use"], "unloading" if info["retiring"] else "ready"
        row.update(in_flight=info["in_flight"], idle_s=round(info["idle_s"], 1))
    return ModelPlacement(**row, state=state, gpu_ids=use.gpu_ids if use else [],
                          used_vram_bytes=use.vram_bytes if use else None,
                          used_ram_bytes=use.ram_bytes if use else None,
                          load_s=round(use.load_s, 3) if use else None, note=use.note if use else "")


def _actor_id(handle: ActorHandle) -> str:
    return handle._actor_id.hex()


def get_registry() -> ActorHandle:
    return ModelRegistry.options(name=REGISTRY_NAME, namespace=NAMESPACE, get_if_exists=True, lifetime="detached",
                                 num_cpus=0, max_concurrency=1000).remote()
