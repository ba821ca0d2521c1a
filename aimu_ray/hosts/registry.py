"""The model registry: one named actor per cluster that places, creates, scales, evicts, lists and unloads model
actors.

It is the only creator of model actors. A model runs as a group of copies (``ModelLoad.replicas``: a fixed count
or a range), each its own actor placed on its own GPU share; copies spread over GPUs and nodes before they pack.
Its ledger of placements is what keeps two models from being promised the same GPU memory: each placement reserves
its share until the actor is gone, and memory a model actor is seen holding (NVML, by pid) is credited back so it
is not counted twice. Decisions are taken one at a time; loads on one GPU run one at a time too, so each is measured
alone, and the measured peak of a (model, options) is what its next placement asks for.

When a copy must load and nothing fits, idle copies of other models (no request in flight, not pinned) are
unloaded, least recently used first, by what they measured holding, until it fits (``cluster.eviction``); only then
``PlacementError``, naming what holds the memory. Every eviction is logged with its reason and kept for status.

A scaler runs every ``SCALE_PERIOD_S``: it keeps each group at its minimum (a copy that died for good is
replaced), adds a copy when requests in flight per copy pass the group's target, and removes one above the
minimum once it has been idle ``scale_in_idle_s``. It adds copies only into free memory: eviction is for a model a
request is waiting for, so a copy evicted is not loaded back until a request asks for the model.

The ledger outlives its keeper. Ray restarts a registry that dies and sends it again the calls it was running
(each is safe to repeat), and a registry rebuilds its ledger when it starts, before it answers anything, from what
is alive: every model actor carries its own line (model, copy, need, placement, measured use; loading ones too).
An actor found retiring (idle while no registry listened) is ended and its share given back. Status reads wait a
bound, then raise ``RegistryUnavailableError``. Every path reaches models through it: Python clients, batch jobs
and the HTTP app's served models alike.

It is never on a request's path: callers keep the copies' handles and come here for the group when they have none
(or every few seconds, to learn of copies added or gone).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict, defaultdict, deque
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, AsyncIterator, Coroutine, Iterable

import ray
from pydantic import BaseModel, ConfigDict
from ray.actor import ActorHandle
from ray.exceptions import ActorUnavailableError, RayActorError, RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ..cluster.connection import NAMESPACE, named_actor, result_of
from ..cluster.eviction import Evictable, place_evicting
from ..cluster.inventory import Inventory
from ..cluster.need import ModelNeed
from ..cluster.placement import Placement, ReservedKey, copies_that_fit, gib
from ..cluster.survey import live_node_ids, survey
from ..models.errors import RegistryUnavailableError
from ..models.load import ACTOR_PREFIX, ModelLoad, PlacementOptions
from ..models.placements import Eviction, ModelPlacement
from .model import MeasuredUse, pinned_gpus
from .model_actor import ModelActor

logger = logging.getLogger("aimu_ray")
REGISTRY_NAME = "models"
MAX_RESTARTS = 3          # a model process that keeps dying (OOM, segfault) is not restarted forever
DRAIN_S = 30.0            # how long an explicit unload lets requests in flight finish, by default
ENDED_KEPT = 10_000       # actors ended on purpose that are remembered (a late caller may still hold one)
EVICTIONS_KEPT = 200      # evictions status lists (the counts per model are kept whole)
STATUS_WAIT_S = 5.0       # how long a status read waits for the registry (a restart and its rebuild: ~1 s)
INFO_WAIT_S = 2.0         # how long a row waits for its model actor's answer (one Ray is restarting, say)
REJOIN_WAIT_S = 3.0       # how long a starting registry waits for a model actor it found (restarting, being created)
SCALE_PERIOD_S = 1.0      # how often the scaler reads the groups' requests in flight
SCALE_RETRY_S = 30.0      # how long the scaler waits after a copy it added did not fit or load
GONE_WAIT_S = 10.0        # how long an eviction waits for the evicted process to exit (its memory to come back)


class Entry(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    load: ModelLoad
    need: ModelNeed
    placement: Placement
    handle: Any                    # ActorHandle (not a pydantic type); None while waiting for its GPU
    created_at: float
    replica: int = 0               # which copy of its model
    use: MeasuredUse | None = None


@ray.remote
class ModelRegistry:
    async def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}         # actor name → one copy of a model
        self._wanted: dict[str, tuple[ModelLoad, ModelNeed]] = {}   # model key → the group's latest ask (replicas)
        self._measured: dict[str, int] = {}          # model key → bytes its copies measured (the next estimate)
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)      # per model: its group's size
        self._placing = asyncio.Lock()               # one placement decision at a time, cluster-wide
        self._utilization = 1.0                      # the share of each GPU's memory placement may use
        self._gpu_loads: defaultdict[ReservedKey, asyncio.Lock] = defaultdict(asyncio.Lock)   # one load per GPU
        self._ended: OrderedDict[str, float] = OrderedDict()  # actor id → when this registry ended it on purpose
        self._crashed: OrderedDict[str, float] = OrderedDict()   # actor id → when the scaler found it dead for good
        self._evictions: deque[Eviction] = deque(maxlen=EVICTIONS_KEPT)
        self._evicted: defaultdict[str, int] = defaultdict(int)   # model → evictions since this registry started
        self._tasks: set[asyncio.Task] = set()       # work started here and awaited by no caller (kept referenced)
        self._scaling: set[str] = set()              # groups the scaler is working on now
        self._scale_after: dict[str, float] = {}     # group → when the scaler may try again to add a copy
        await self._rebuild()
        self._spawn(self._scale_forever())

    async def ensure(self, load: ModelLoad, need: ModelNeed, inventory: Inventory | None,
                     gone_actor_id: str | None = None) -> list[ActorHandle]:
        """The model's copies, at least ``min_replicas`` of them placed and loaded; raises the first copy's load or
        placement error. The latest ask sets the group's replicas, keep-alive and pin.

        ``gone_actor_id`` is a copy the caller found unloading or ended on purpose: it is replaced, once an unload
        of it is over (the unload holds the model's lock).
        """
        key = load.key()
        async with self._locks[key]:
            if gone_actor_id is not None:
                self._end_actor(gone_actor_id)
            self._wanted[key] = (load, need)
            missing = load.replicas.min_replicas - len(self._group(key))
            if missing > 0:
                added = await asyncio.gather(*(self._add(load, need, inventory) for _ in range(missing)),
                                             return_exceptions=True)
                failures = [a for a in added if isinstance(a, BaseException)]
                if failures and not self.replicas(key):
                    self._wanted.pop(key, None)
                    raise failures[0]
                for failure in failures:
                    logger.warning("%s: a copy could not be added (the scaler tries again): %s", load.label(), failure)
            return self.replicas(key)

    async def room_for(self, load: ModelLoad, need: ModelNeed, most: int, inventory: Inventory | None = None) -> int:
        """How many more copies of the model fit in free memory now, besides those placed (at most ``most``): what
        ``replicas="auto"`` asks for. Decided like ``_add`` (same ledger, spread and options) but evicting nothing."""
        async with self._placing:
            inventory = (inventory or await survey()).capped(self._utilization)
            return copies_that_fit(need, inventory, self._options(load), promised(self._ledger(), inventory),
                                   self._copies(load.key()), most)

    def replicas(self, key: str) -> list[ActorHandle]:
        """The loaded copies of model ``key``, by copy number: what callers route among."""
        return [e.handle for e in sorted(self._group(key), key=lambda e: e.replica) if e.use is not None]

    async def loaded(self, actor: ActorHandle) -> None:
        """A model actor has (re)loaded: its measured use goes in the ledger, and it joins the ledger if this
        registry never heard of it (it was still being created when the registry started)."""
        await self._rejoin(actor)

    def retired(self, name: str, actor_id: str) -> None:
        """A copy idle for its keep-alive is unloading itself: give its share back and end it (if it is still the
        current one), and stop keeping its group at a minimum: the next request loads the model again."""
        entry = self._entries.get(name)
        if entry is not None:
            self._wanted.pop(entry.load.key(), None)
        if not self._end_actor(actor_id) and (stray := named_actor(name)) is not None and _actor_id(stray) == actor_id:
            self._kill(stray, self._ended)             # a registry restarted that never heard from it

    async def unload(self, model: str | None = None, grace_s: float = DRAIN_S) -> list[str]:
        """Unload the models matching ``model`` (a model string such as "hf:org/name", or a model key), or all, every
        copy of each.

        New requests are refused at once; those in flight get ``grace_s`` to finish, then end with
        ``ModelUnloadedError``. Returns what was unloaded.
        """
        entries = [(n, e) for n, e in self._entries.items() if model in (None, e.load.key(), e.load.label())]
        for _, entry in entries:
            self._wanted.pop(entry.load.key(), None)
        await asyncio.gather(*(self._unload(name, entry, grace_s) for name, entry in entries))
        return list({entry.load.key(): entry.load.label() for _, entry in entries}.values())   # one per model

    def ended(self, actor_id: str, sent_at: float | None = None) -> bool:
        """Was that actor gone before a request ``sent_at`` (epoch seconds) reached it? Yes when this registry ended
        it on purpose (unloaded, idle, evicted, scaled in: it had nothing in flight), or found it dead for good
        before the request was sent; then the request never ran and may go to another copy. A crash under the
        request is not that."""
        crashed = self._crashed.get(actor_id)
        return actor_id in self._ended or (crashed is not None and sent_at is not None and crashed <= sent_at)

    def set_gpu_memory_utilization(self, fraction: float) -> float:
        """Let placement use only ``fraction`` of each GPU's memory from now on (models placed before stay where
        they are; a load that no longer fits evicts idle ones). Returns the fraction before."""
        if not 0 < fraction <= 1:
            raise ValueError(f"gpu_memory_utilization={fraction!r}: a fraction of each GPU's memory, above 0 and at "
                             "most 1")
        before, self._utilization = self._utilization, fraction
        logger.info("Placement now uses %.0f %% of each GPU's memory (was %.0f %%).", fraction * 100, before * 100)
        return before

    def evictions(self) -> tuple[list[Eviction], dict[str, int]]:
        """The latest evictions, oldest first, and how many each model has had since this registry started."""
        return list(self._evictions), dict(self._evicted)

    async def placements(self) -> list[ModelPlacement]:
        """One row per model copy: where it runs, its share, memory promised vs measured, and why. A copy that
        does not answer within ``INFO_WAIT_S`` gets an ``unreachable`` row instead of holding up the others."""
        entries = list(self._entries.values())
        infos = await self._infos(entries)
        return [_row(entry, info, self._pinned(entry)) for entry, info in zip(entries, infos)]

    # ----- one copy in, one copy out -----

    async def _add(self, load: ModelLoad, need: ModelNeed, inventory: Inventory | None, evict: bool = True) -> Entry:
        """Place one more copy (evicting idle models if nothing fits and ``evict``), then load it once its GPUs have
        no other load running; raises the placement or load error."""
        key = load.key()
        async with self._placing:
            inventory = (inventory or await survey()).capped(self._utilization)
            candidates = await self._evictable(key) if evict else []
            plan = place_evicting(need, inventory, self._options(load), promised(self._ledger(), inventory),
                                  candidates, copies=self._copies(key))
            for victim in plan.victims:
                await self._evict(victim, load, plan.reason)
            replica = next(i for i in range(len(self._group(key)) + 1) if load.actor_name(i) not in self._entries)
            name = load.actor_name(replica)
            entry = self._entries[name] = Entry(load=load, need=need, placement=plan.placement, handle=None,
                                                created_at=time.time(), replica=replica)
        logger.info("Placing %s (copy %d): %s", load.label(), replica, plan.placement.reason)
        async with self._loading_on(plan.placement):
            if self._entries.get(name) is not entry:
                raise RuntimeError(f"{load.label()} was unloaded before its copy {replica} could load")
            entry.handle = ModelActor.options(**_actor_options(name, plan.placement)).remote(
                load, need, plan.placement, replica)
            await self._loaded(name, entry)
        return entry

    @asynccontextmanager
    async def _loading_on(self, placement: Placement) -> AsyncIterator[None]:
        """Hold the load lock of each GPU the placement uses (in one order, so two loads never wait on each other):
        a load reads no free memory another load is about to take, and its measured peak is its own."""
        async with AsyncExitStack() as stack:
            for index in sorted(placement.gpu_bytes):
                await stack.enter_async_context(self._gpu_loads[(placement.node_id, index)])
            yield

    async def _evictable(self, placing_key: str) -> list[Evictable]:
        """Every copy on the cluster as eviction sees it: idle for how long, busy, pinned, or why it must stay."""
        entries = list(self._entries.items())
        infos = await self._infos([entry for _, entry in entries])
        candidates = []
        for (name, entry), info in zip(entries, infos):
            kept = ("another copy of the model being placed" if entry.load.key() == placing_key
                    else "still loading" if entry.handle is None or entry.use is None
                    else "not answering" if not isinstance(info, dict) else None)
            state = info if isinstance(info, dict) else {}
            candidates.append(Evictable(ident=name, label=entry.load.label(), frees=_frees(entry),
                                        idle_s=state.get("idle_s", 0.0), in_flight=state.get("in_flight", 0),
                                        pinned=self._pinned(entry), reason_kept=kept))
        return candidates

    async def _evict(self, victim: Evictable, for_load: ModelLoad, why: str) -> None:
        """Unload one idle copy to make room: drained (a request that slipped in finishes), ended, its process
        awaited so its memory is back before the next load reads it; logged and counted."""
        name, idle_s = victim.ident, victim.idle_s     # idle as eviction saw it, moments ago
        entry = self._entries.get(name)
        if entry is None:
            return
        logger.warning("Evicting %s (copy %d, idle %.0f s) to load %s: %s", entry.load.label(), entry.replica, idle_s,
                       for_load.label(), why)
        await self._drain(entry, DRAIN_S)
        if self._entries.get(name) is entry:
            self._forget(name)
        if not self._group(entry.load.key()):
            self._wanted.pop(entry.load.key(), None)      # loaded again when a request asks, not by the scaler
        await _gone(entry.handle)
        placement = entry.placement
        self._evictions.append(Eviction(model=entry.load.label(), replica=entry.replica, node_id=placement.node_id,
                                        gpu_indices=placement.gpu_indices, freed_bytes=sum(_frees(entry).values()),
                                        idle_s=round(idle_s, 1), for_model=for_load.label(), at=time.time(),
                                        reason=why))
        self._evicted[entry.load.label()] += 1

    # ----- the scaler -----

    async def _scale_forever(self) -> None:
        while True:
            await asyncio.sleep(SCALE_PERIOD_S)
            now = time.monotonic()
            for key in list(self._wanted):
                if key not in self._scaling and self._scale_after.get(key, 0.0) <= now:
                    self._scaling.add(key)
                    self._spawn(self._scale(key))

    async def _scale(self, key: str) -> None:
        """One look at a group: forget copies dead for good, add copies up to what its requests in flight ask (and
        at least its minimum), or remove one copy idle long enough above the minimum."""
        try:
            wanted = self._wanted.get(key)
            if wanted is None:
                return
            load, need = wanted
            group = self._group(key)
            infos = await self._infos(group)
            if self._wanted.get(key) is not wanted:     # unloaded, evicted or asked anew meanwhile
                return
            for entry, info in zip(group, infos):
                if isinstance(info, RayActorError) and not isinstance(info, ActorUnavailableError):
                    logger.warning("%s (copy %d) died for good; another copy takes its place.", load.label(),
                                   entry.replica)
                    self._forget(load.actor_name(entry.replica), crashed=True)
            live = [(e, i) for e, i in zip(group, infos) if not isinstance(i, RayActorError) or
                    isinstance(i, ActorUnavailableError)]
            serving = [(e, i) for e, i in live if isinstance(i, dict) and not i["retiring"]]
            in_flight = sum(i["in_flight"] for _, i in serving)
            scaling = load.replicas
            desired = min(max(math.ceil(in_flight / scaling.target_in_flight), scaling.min_replicas),
                          scaling.max_replicas)
            count = len(live)
            if count < desired:
                logger.info("%s: %d request(s) in flight on %d cop%s (target %g each): adding %d.", load.label(),
                            in_flight, count, "y" if count == 1 else "ies", scaling.target_in_flight,
                            desired - count)
                async with self._locks[key]:
                    if self._wanted.get(key) is not wanted:
                        return
                    missing = desired - len(self._group(key))
                    added = await asyncio.gather(*(self._add(load, need, None, evict=False) for _ in range(missing)),
                                                 return_exceptions=True)
                failures = [a for a in added if isinstance(a, BaseException)]
                if failures:
                    self._scale_after[key] = time.monotonic() + SCALE_RETRY_S
                    logger.warning("%s: could not add a copy (tried again in %.0f s): %s", load.label(),
                                   SCALE_RETRY_S, failures[0])
            elif count > max(desired, scaling.min_replicas):
                idle = [(e, i) for e, i in serving if i["in_flight"] == 0 and i["idle_s"] >= scaling.scale_in_idle_s]
                if idle:
                    entry, info = max(idle, key=lambda pair: (pair[1]["idle_s"], pair[0].replica))
                    logger.info("%s: copy %d idle for %.0f s, %d cop%s left: removing it.", load.label(),
                                entry.replica, info["idle_s"], count - 1, "y" if count == 2 else "ies")
                    await self._unload(load.actor_name(entry.replica), entry, DRAIN_S)
        finally:
            self._scaling.discard(key)

    # ----- the ledger -----

    async def _rebuild(self) -> None:
        """The ledger from what is alive: each model actor's own line."""
        actors = await asyncio.to_thread(_live_actors)
        await asyncio.gather(*(self._rejoin(actor) for actor in actors))
        if actors:
            logger.info("Model registry started: %d of %d live model actor(s) back in the ledger.",
                        len(self._entries), len(actors))

    async def _rejoin(self, actor: ActorHandle) -> None:
        """Bring a live model actor's line up to date from its own account, adding it if the ledger lacks it (a
        restarted registry); one not loaded yet is awaited like a new one (and ended if its load failed), one found
        retiring is ended."""
        info = await _info_of(actor)
        if info is None or _actor_id(actor) in self._ended:
            return
        load = info["load"]
        name = load.actor_name(info["replica"])
        entry = self._entries.get(name)
        if entry is None:
            entry = self._entries[name] = entry_from(actor, info)
            self._wanted.setdefault(load.key(), (load, info["need"]))
            if info["use"] is None:
                self._spawn(self._loaded(name, entry))
        elif entry.handle is None or _actor_id(entry.handle) != _actor_id(actor):
            return                                     # an old actor's late report: the copy has a newer one
        if info["use"] is not None:
            entry.use = info["use"]
            self._learn(entry.load, entry.placement, entry.use)
        if info["retiring"]:
            self._spawn(self._unload(name, entry, DRAIN_S))

    async def _loaded(self, name: str, entry: Entry) -> MeasuredUse:
        """Wait for the entry's actor to load; a load that fails ends the actor and raises its error."""
        try:
            entry.use = await entry.handle.ready.remote()
        except BaseException as error:
            if self._entries.get(name) is entry:
                self._forget(name)
            raise (error.cause if isinstance(error, RayTaskError) else error) from None
        self._learn(entry.load, entry.placement, entry.use)
        return entry.use

    def _learn(self, load: ModelLoad, placement: Placement, use: MeasuredUse) -> None:
        """A copy's measured peak on its GPU becomes the model's next estimate; holding more than its share is
        warned about, since the GPU's other models were promised that memory."""
        if use.vram_bytes <= 0:
            return
        self._measured[load.key()] = max(use.vram_bytes, self._measured.get(load.key(), 0))
        promised_bytes = sum(placement.gpu_bytes.values())
        if use.vram_bytes > promised_bytes > 0:
            logger.warning("%s holds %s of GPU memory, more than the %s its share promised; its next placement "
                           "will ask for the measured figure.", load.label(), gib(use.vram_bytes), gib(promised_bytes))

    def _options(self, load: ModelLoad) -> PlacementOptions:
        """The model's placement options, asking for what its copies measured at their peak when they did."""
        options = load.placement
        if load.key() in self._measured and options.measured_bytes is None:
            options = options.model_copy(update={"measured_bytes": self._measured[load.key()]})
        return options

    def _group(self, key: str) -> list[Entry]:
        return [entry for entry in self._entries.values() if entry.load.key() == key]

    def _copies(self, key: str) -> dict[ReservedKey, int]:
        """How many copies of model ``key`` each GPU holds: the next copy spreads away from them."""
        copies: dict[ReservedKey, int] = defaultdict(int)
        for entry in self._group(key):
            for index in entry.placement.gpu_indices:
                copies[(entry.placement.node_id, index)] += 1
        return dict(copies)

    def _pinned(self, entry: Entry) -> bool:
        wanted = self._wanted.get(entry.load.key())
        return entry.load.pin or (wanted is not None and wanted[0].pin)

    def _ledger(self) -> list[Entry]:
        return list(self._entries.values())

    async def _infos(self, entries: list[Entry]) -> list[Any]:
        """Each copy's ``info`` (None for one waiting for its GPU), or the error of one that did not answer in time."""
        async def info(entry: Entry) -> Any:
            if entry.handle is None:
                return None
            return await asyncio.wait_for(result_of(entry.handle.info.remote()), INFO_WAIT_S)

        return await asyncio.gather(*map(info, entries), return_exceptions=True)

    async def _unload(self, name: str, entry: Entry, grace_s: float) -> None:
        """Under the model's lock, so a request refused meanwhile (``ensure`` with the old actor) waits for the end
        and gets a fresh actor instead of the unloading one."""
        async with self._locks[entry.load.key()]:
            await self._drain(entry, grace_s)
            if self._entries.get(name) is entry:
                self._forget(name)

    async def _drain(self, entry: Entry, grace_s: float) -> None:
        """Refuse new requests, give those in flight ``grace_s`` to finish, then end them: nothing runs when killed."""
        if entry.handle is None:
            return
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

    def _end_actor(self, actor_id: str) -> bool:
        """End the copy whose actor is ``actor_id``, if the ledger still holds it; says whether it did."""
        name = next((n for n, e in self._entries.items() if e.handle is not None and _actor_id(e.handle) == actor_id),
                    None)
        if name is not None:
            self._forget(name)
        return name is not None

    def _forget(self, name: str, crashed: bool = False) -> None:
        """Take the copy out of the ledger and end its actor: its share is free again. One that crashed was not
        ended on purpose (a request on it may have run)."""
        entry = self._entries.pop(name, None)
        if entry is not None and entry.handle is not None:
            self._kill(entry.handle, self._crashed if crashed else self._ended)

    def _kill(self, handle: ActorHandle, record: OrderedDict[str, float]) -> None:
        record[_actor_id(handle)] = time.time()
        while len(record) > ENDED_KEPT:
            record.popitem(last=False)
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
                 created_at=info["created_at"], replica=info["replica"], use=info["use"])


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


def _live_actors() -> list[ActorHandle]:
    """The model actors alive in aimu_ray's namespace, from Ray's list of names."""
    named = ray.util.list_named_actors(all_namespaces=True)
    names = [a["name"] for a in named if a["namespace"] == NAMESPACE and a["name"].startswith(ACTOR_PREFIX)]
    return [actor for actor in map(named_actor, names) if actor is not None]


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


def _frees(entry: Entry) -> dict[ReservedKey, int]:
    """What each slot gets back when the copy goes: its share, or what it measured holding when that is more."""
    frees = entry.placement.reservations()
    use, placement = entry.use, entry.placement
    if use is not None and use.device == "cuda" and len(placement.gpu_indices) == 1:
        slot = (placement.node_id, placement.gpu_indices[0])
        frees[slot] = max(frees.get(slot, 0), use.vram_bytes)
    elif use is not None and placement.device == "cpu":
        slot = (placement.node_id, None)
        frees[slot] = max(frees.get(slot, 0), use.ram_added_bytes)
    return frees


async def _gone(handle: ActorHandle) -> None:
    """Wait (up to ``GONE_WAIT_S``) until a killed actor answers no more: its process, and memory, are gone."""
    deadline = time.monotonic() + GONE_WAIT_S
    while time.monotonic() < deadline:
        try:
            await asyncio.wait_for(result_of(handle.info.remote()), 1.0)
        except (RayActorError, TimeoutError):
            return
        await asyncio.sleep(0.1)


def _actor_options(name: str, placement: Placement) -> dict:
    """Ray's half of the decision: GPU fraction on the GPUs placement chose, node affinity, RAM reservation, name and
    restarts."""
    options: dict[str, Any] = dict(name=name, namespace=NAMESPACE, lifetime="detached",
                                   get_if_exists=True, num_cpus=0, num_gpus=placement.num_gpus,
                                   max_concurrency=1000, max_restarts=MAX_RESTARTS, max_task_retries=0)
    if placement.memory_bytes:
        options["memory"] = placement.memory_bytes
    if placement.device == "cuda" and placement.gpu_indices:
        options["runtime_env"] = {"env_vars": pinned_gpus(placement.gpu_indices)}
    if placement.node_id in live_node_ids():        # a made-up inventory's nodes are not Ray nodes
        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(placement.node_id, soft=False)
    return options


def _row(entry: Entry, info: Any, pinned: bool) -> ModelPlacement:
    placement = entry.placement
    row = {"model": entry.load.label(), "task": entry.load.task, "key": entry.load.key(), "replica": entry.replica,
           "pinned": pinned, "node_id": placement.node_id,
           "device": placement.device, "gpu_indices": placement.gpu_indices, "num_gpus": placement.num_gpus,
           "offload": placement.offload, "reserved_bytes": sum(placement.gpu_bytes.values()) or placement.memory_bytes,
           "need_bytes": entry.need.total_bytes, "reason": placement.reason}
    if isinstance(info, BaseException):
        return ModelPlacement(**row, state=f"unreachable ({type(info).__name__})")
    if info is None:                             # placed, waiting for its GPU's other load to finish
        use, state = None, "queued"
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
    return await read_registry("placements", wait_s)


async def read_evictions(wait_s: float = STATUS_WAIT_S) -> tuple[list[Eviction], dict[str, int]]:
    """The latest evictions and the count per model, bounded like ``read_placements``."""
    return await read_registry("evictions", wait_s)


async def read_registry(method: str, wait_s: float) -> Any:
    async def read() -> Any:
        registry = await asyncio.to_thread(get_registry)
        return await result_of(getattr(registry, method).remote())

    try:
        return await asyncio.wait_for(read(), wait_s)
    except (TimeoutError, RayActorError) as error:
        raise RegistryUnavailableError(
            f"The model registry did not answer within {wait_s:.0f} s ({type(error).__name__}). It restarts by "
            "itself and rebuilds its ledger from the live models, which keep answering meanwhile; ask again in a "
            "moment.") from None
