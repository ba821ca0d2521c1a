"""The model registry: one named actor per cluster that places, creates, lists and unloads model actors.

It is the only creator of model actors, and it creates each under a per-model lock, so two scripts
that ask for the same model at the same moment get one actor and one load. Its ledger of placements
is what keeps two models from being promised the same GPU memory: each placement reserves its share
until the actor is gone, and memory a model actor is seen holding (NVML, by pid) is credited back so it
is not counted twice. When a loaded actor measures more than its share, the registry warns and the
next placement of that model uses the measured figure.

The ledger outlives its keeper. Ray restarts a registry that dies and sends it again the calls it was running
(each is safe to repeat), and a registry rebuilds its ledger when it starts, before it answers anything, from what
is alive: every model actor carries its own line (model, need, placement, measured use; loading ones too), and
every Serve replica of a model reports itself again at each health check, so placement waits one check's time
after a start that finds replicas. An actor found retiring (idle while no registry listened) is ended and its
share given back. Status reads wait a bound, then raise ``RegistryUnavailableError``.

It is never on a request's path: callers look model actors up by name and only come here when the
actor does not exist yet (or has just been unloaded).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, defaultdict
from typing import Any, Coroutine, Iterable

import ray
from pydantic import BaseModel, ConfigDict
from ray.actor import ActorHandle
from ray.exceptions import ActorUnavailableError, RayActorError, RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ..cluster.connection import NAMESPACE, named_actor, result_of
from ..cluster.inventory import Inventory
from ..cluster.need import ModelNeed
from ..cluster.placement import Placement, ReservedKey, gib, place, reserve
from ..cluster.survey import live_node_ids, survey
from ..models.errors import RegistryUnavailableError
from ..models.load import ACTOR_PREFIX, ModelLoad, PlacementOptions
from ..models.placements import ModelPlacement
from .model import MeasuredUse
from .model_actor import ModelActor

logger = logging.getLogger("aimu_ray")
REGISTRY_NAME = "models"
MAX_RESTARTS = 3          # a model process that keeps dying (OOM, segfault) is not restarted forever
DRAIN_S = 30.0            # how long an explicit unload lets requests in flight finish, by default
ENDED_KEPT = 10_000       # actors ended on purpose that are remembered (a late caller may still hold one)
STATUS_WAIT_S = 5.0       # how long a status read waits for the registry (a restart and its rebuild: ~1 s)
INFO_WAIT_S = 2.0         # how long a row waits for its model actor's answer (one Ray is restarting, say)
REJOIN_WAIT_S = 3.0       # how long a starting registry waits for a model actor it found (restarting, being created)
REPORT_PERIOD_S = 5.0     # a model's Serve replica reports itself at least this often (its health-check period)
SERVE_NAMESPACE, SERVE_REPLICA_PREFIX = "serve", "SERVE_REPLICA::"   # where and how Ray Serve names its replicas


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
    async def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}
        self._replicas: dict[str, Entry] = {}        # Serve replica id → its model, share and use
        self._measured: dict[str, int] = {}          # model key → bytes its last actor measured (feedback)
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._ended: OrderedDict[str, None] = OrderedDict()   # ids of actors this registry ended on purpose
        self._tasks: set[asyncio.Task] = set()       # work started here and awaited by no caller (kept referenced)
        self._placing_from = 0.0                     # monotonic time before which nothing is placed (replicas report)
        await self._rebuild()

    async def ensure(self, load: ModelLoad, need: ModelNeed, inventory: Inventory | None,
                     gone_actor_id: str | None = None) -> ActorHandle:
        """The model's actor, placed and loaded now unless it exists; raises its load or placement error.

        ``gone_actor_id`` is an actor the caller found unloading or ended on purpose: it is replaced, once an
        unload of it is over (the unload holds the model's lock).
        """
        key = load.key()
        async with self._locks[key]:
            if gone_actor_id is not None:
                self._end_actor(load, gone_actor_id)
            entry = self._entries.get(key)
            if entry is not None:
                return entry.handle
            await self._replicas_reported()
            inventory = inventory or await survey()
            placement = place(need, inventory, self._options(load), promised(self._ledger(), inventory))
            logger.info("Placing %s: %s", load.label(), placement.reason)
            handle = ModelActor.options(**_actor_options(load, placement, inventory)).remote(load, need, placement)
            entry = self._entries[key] = Entry(load=load, need=need, placement=placement, handle=handle,
                                               created_at=time.time())
            await self._loaded(key, entry)
            return handle

    async def plan(self, loads: list[tuple[ModelLoad, ModelNeed]], inventory: Inventory | None) -> list[Placement]:
        """Placements for Serve deployments, each seeing the shares of the ones before it; nothing is created.

        A deployment's replicas get the share planned here; each replica joins the ledger when it has loaded.
        """
        await self._replicas_reported()
        inventory = inventory or await survey()
        reserved, placements = promised(self._ledger(), inventory), []
        for load, need in loads:
            placement = place(need, inventory, self._options(load), reserved)
            reserved = reserve(reserved, placement)
            placements.append(placement)
        return placements

    def hosted(self, replica_id: str, deployment: str, served_as: str, load: ModelLoad, need: ModelNeed,
               placement: Placement, use: MeasuredUse) -> None:
        """A Serve replica has loaded its model: its share is promised until it says it is gone. Replicas say so
        again at every health check (a restarted registry learns them that way); a known one changes nothing."""
        if replica_id in self._replicas:
            return
        self._replicas[replica_id] = Entry(load=load, need=need, placement=placement, handle=None,
                                           created_at=time.time(), use=use, deployment=deployment,
                                           served_as=served_as)
        self._check_share(load, placement, use)

    def released(self, replica_id: str) -> None:
        self._replicas.pop(replica_id, None)

    async def loaded(self, actor: ActorHandle) -> None:
        """A model actor has (re)loaded: its measured use goes in the ledger, and it joins the ledger if this
        registry never heard of it (it was still being created when the registry started)."""
        await self._rejoin(actor)

    def _check_share(self, load: ModelLoad, placement: Placement, use: MeasuredUse) -> None:
        """Warn when a model holds more than its share promised; its next placement asks for the measured figure."""
        promised_bytes = sum(placement.gpu_bytes.values())
        if use.vram_bytes > promised_bytes > 0:
            self._measured[load.key()] = use.vram_bytes
            logger.warning("%s holds %s of GPU memory, more than the %s its share promised; its next placement "
                           "will ask for the measured figure.", load.label(), gib(use.vram_bytes), gib(promised_bytes))

    def retired(self, load: ModelLoad, actor_id: str) -> None:
        """An idle actor unloading itself: give its share back and end it (only if it is still the current one)."""
        self._end_actor(load, actor_id)

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
        """One row per model actor: where it runs, its share, memory promised vs measured, and why. An actor that
        does not answer within ``INFO_WAIT_S`` gets an ``unreachable`` row instead of holding up the others."""
        entries = list(self._entries.items())
        infos = await asyncio.gather(*(asyncio.wait_for(result_of(e.handle.info.remote()), INFO_WAIT_S)
                                       for _, e in entries), return_exceptions=True)
        rows = [_row(key, entry, info) for (key, entry), info in zip(entries, infos)]
        return rows + [_row(entry.load.key(), entry, None) for entry in self._replicas.values()]

    async def _rebuild(self) -> None:
        """The ledger from what is alive: each model actor's own line, and a pause in placement until the Serve
        replicas found running have each had a health check in which to report themselves."""
        actors, replicas = await asyncio.to_thread(_live_actors)
        await asyncio.gather(*(self._rejoin(actor) for actor in actors))
        if replicas:
            self._placing_from = time.monotonic() + 2 * REPORT_PERIOD_S
        if actors or replicas:
            logger.info("Model registry started: %d of %d live model actor(s) back in the ledger; placement waits "
                        "%.0f s for %d Serve replica(s) to report themselves.", len(self._entries), len(actors),
                        max(0.0, self._placing_from - time.monotonic()), replicas)

    async def _rejoin(self, actor: ActorHandle) -> None:
        """Bring a live model actor's line up to date from its own account, adding it if the ledger lacks it (a
        restarted registry); one not loaded yet is awaited like a new one (and ended if its load failed), one found
        retiring is ended."""
        info = await _info_of(actor)
        if info is None or _actor_id(actor) in self._ended:
            return
        key = info["load"].key()
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = entry_from(actor, info)
            if info["use"] is None:
                self._spawn(self._loaded(key, entry))
        elif _actor_id(entry.handle) != _actor_id(actor):
            return                                     # an old actor's late report: the model has a newer one
        if info["use"] is not None:
            entry.use = info["use"]
            self._check_share(entry.load, entry.placement, entry.use)
        if info["retiring"]:
            self._spawn(self._unload(key, entry, DRAIN_S))

    async def _loaded(self, key: str, entry: Entry) -> MeasuredUse:
        """Wait for the entry's actor to load; a load that fails ends the actor and raises its error."""
        try:
            entry.use = await entry.handle.ready.remote()
        except BaseException as error:
            if self._entries.get(key) is entry:
                self._forget(key)
            raise (error.cause if isinstance(error, RayTaskError) else error) from None
        return entry.use

    async def _replicas_reported(self) -> None:
        """Placement waits until the Serve replicas found at the start have reported themselves again."""
        await asyncio.sleep(max(0.0, self._placing_from - time.monotonic()))

    def _options(self, load: ModelLoad) -> PlacementOptions:
        """The model's placement options, asking for what its last actor measured when that exceeded its share."""
        options = load.placement
        if load.key() in self._measured and options.measured_bytes is None:
            options = options.model_copy(update={"measured_bytes": self._measured[load.key()]})
        return options

    def _ledger(self) -> list[Entry]:
        return [*self._entries.values(), *self._replicas.values()]

    async def _unload(self, key: str, entry: Entry, grace_s: float) -> None:
        """Under the model's lock, so a request refused meanwhile (``ensure`` with the old actor) waits for the end
        and gets a fresh actor instead of the unloading one."""
        async with self._locks[key]:
            await self._drain(entry, grace_s)
            if self._entries.get(key) is entry:
                self._forget(key)

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

    def _end_actor(self, load: ModelLoad, actor_id: str) -> None:
        """End the model's actor ``actor_id`` if it is still the current one: the ledger's, or, when the ledger
        lacks the model (a registry restarted that never heard from it), the one its name finds, so the next
        request gets a fresh actor instead of the same retiring one."""
        key = load.key()
        entry = self._entries.get(key)
        if entry is not None:
            if _actor_id(entry.handle) == actor_id:
                self._forget(key)
        elif (stray := named_actor(load.actor_name())) is not None and _actor_id(stray) == actor_id:
            self._kill(stray)

    def _forget(self, key: str) -> None:
        """Take the model out of the ledger and end its actor: its share is free again."""
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._kill(entry.handle)

    def _kill(self, handle: ActorHandle) -> None:
        self._ended[_actor_id(handle)] = None
        while len(self._ended) > ENDED_KEPT:
            self._ended.popitem(last=False)
        ray.kill(handle, no_restart=True)

    def _spawn(self, work: Coroutine) -> None:
        """Run ``work`` in the background (no caller waits for it); a failure is logged."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("Model registry: %s", task.exception())


def entry_from(actor: ActorHandle, info: dict) -> Entry:
    """A model actor's line of the ledger, as the actor tells it (``ModelActor.info``): what rebuilds a ledger."""
    return Entry(load=info["load"], need=info["need"], placement=info["placement"], handle=actor,
                 created_at=info["created_at"], use=info["use"])


def promised(entries: Iterable[Entry], inventory: Inventory) -> dict[ReservedKey, int]:
    """Bytes promised to live model actors and replicas, less what NVML already shows them holding (not counted
    twice): the ``reserved`` that ``place`` subtracts from each GPU's free memory."""
    reserved: dict[ReservedKey, int] = defaultdict(int)
    seen = {(node.node_id, gpu.index, p.pid): p.used_bytes
            for node in inventory.nodes for gpu in node.gpus for p in gpu.processes}
    for entry in entries:
        for slot, nbytes in entry.placement.reservations().items():
            node_id, gpu_index = slot
            held = seen.get((node_id, gpu_index, entry.use.pid), 0) if entry.use and gpu_index is not None else 0
            reserved[slot] += nbytes - min(held, nbytes)
    return dict(reserved)


def _live_actors() -> tuple[list[ActorHandle], int]:
    """The model actors alive in aimu_ray's namespace, and how many Serve replicas run, from Ray's list of names."""
    named = ray.util.list_named_actors(all_namespaces=True)
    names = [a["name"] for a in named if a["namespace"] == NAMESPACE and a["name"].startswith(ACTOR_PREFIX)]
    replicas = sum(a["namespace"] == SERVE_NAMESPACE and a["name"].startswith(SERVE_REPLICA_PREFIX) for a in named)
    return [actor for actor in map(named_actor, names) if actor is not None], replicas


async def _info_of(actor: ActorHandle) -> dict | None:
    """A model actor's ``info``, waiting up to ``REJOIN_WAIT_S`` for one Ray is restarting or still creating; None
    for one that is gone, or silent that long (it joins the ledger when it reports its load)."""
    deadline = time.monotonic() + REJOIN_WAIT_S
    while True:
        try:
            return await asyncio.wait_for(result_of(actor.info.remote()), max(0.0, deadline - time.monotonic()))
        except ActorUnavailableError:                  # restarting: Ray refuses calls until it is back
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.2)
        except RayActorError:
            return None
        except TimeoutError:
            break
    logger.warning("Model actor %s did not answer within %.0f s; it joins the ledger when it reports its load.",
                   _actor_id(actor), REJOIN_WAIT_S)
    return None


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
        use = info["use"]
        state = "unloading" if info["retiring"] else "loading" if info["loading"] else "ready"
        row.update(in_flight=info["in_flight"], idle_s=round(info["idle_s"], 1))
    return ModelPlacement(**row, state=state, gpu_ids=use.gpu_ids if use else [],
                          used_bytes=use.model_bytes if use else None,
                          used_vram_bytes=use.vram_bytes if use else None,
                          used_ram_bytes=use.ram_bytes if use else None,
                          load_s=round(use.load_s, 3) if use else None, note=use.note if use else "")


def _actor_id(handle: ActorHandle) -> str:
    return handle._actor_id.hex()



def get_registry() -> ActorHandle:
    """The cluster's registry, created on first use. Ray restarts it when it dies and sends it again the calls it
    was running; every method is safe to repeat, and a restarted registry rebuilds its ledger before it answers."""
    return ModelRegistry.options(name=REGISTRY_NAME, namespace=NAMESPACE, get_if_exists=True, lifetime="detached",
                                 num_cpus=0, max_concurrency=1000, max_restarts=-1, max_task_retries=-1).remote()


def tell_registry(method: str, *args) -> None:
    """A host's report to the registry, sent without waiting: it must never hold up or fail the host. Ray sends it
    again across a registry restart, and a registry gone for good is made anew (it rebuilds its ledger)."""
    try:
        getattr(get_registry(), method).remote(*args)
    except Exception as error:
        logger.warning("Could not tell the model registry (%s): %s", method, error)


async def read_placements(wait_s: float = STATUS_WAIT_S) -> list[ModelPlacement]:
    """The registry's rows, or ``RegistryUnavailableError`` after ``wait_s``: a status read never hangs."""
    async def read() -> list[ModelPlacement]:
        registry = await asyncio.to_thread(get_registry)
        return await result_of(registry.placements.remote())

    try:
        return await asyncio.wait_for(read(), wait_s)
    except (TimeoutError, RayActorError) as error:
        raise RegistryUnavailableError(
            f"The model registry did not answer within {wait_s:.0f} s ({type(error).__name__}). It restarts by "
            "itself and rebuilds its ledger from the live models, which keep answering meanwhile; ask again in a "
            "moment.") from None
