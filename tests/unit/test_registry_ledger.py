"""The registry's ledger rebuilt from model actors' own accounts, and the bounded status read, without Ray."""

from __future__ import annotations

from concurrent.futures import Future

import pytest
from ray.exceptions import RayActorError

from aimu_ray.cluster import GPU, GPUProcess, Inventory, ModelNeed, Node, PlacementError, place
from aimu_ray.hosts import registry
from aimu_ray.hosts.model import MeasuredUse
from aimu_ray.hosts.registry import Entry, _row, entry_from, promised, read_placements
from aimu_ray.models.errors import ModelConnectionError, RegistryUnavailableError
from aimu_ray.models.load import ModelLoad

G = 1024**3
INVENTORY = Inventory(nodes=[Node(node_id="n", ram_total_bytes=64 * G, ram_free_bytes=64 * G,
                                  gpus=[GPU(index=i, total_bytes=10 * G, free_bytes=10 * G) for i in range(2)])])
NEED = ModelNeed(model="m", kind="text", weights_bytes=4 * G)      # two fit a GPU, a third does not


class Actor:
    """Stands for a model actor's handle: only its id is read."""

    def __init__(self, actor_id: str) -> None:
        self._actor_id = bytes.fromhex(actor_id)


def loaded_models(count: int) -> list[Entry]:
    """``count`` models placed one after another, each seeing the ones before: the ledger a registry kept."""
    entries: list[Entry] = []
    for i in range(count):
        load = ModelLoad(provider="hf", task="text", model_id=f"m{i}")
        placement = place(NEED, INVENTORY, load.placement, promised(entries, INVENTORY))
        use = MeasuredUse(pid=100 + i, node_id="n", gpu_ids=placement.gpu_indices, device="cuda", vram_bytes=3 * G)
        entries.append(Entry(load=load, need=NEED, placement=placement, handle=Actor(f"{i:02x}" * 16),
                             created_at=1000.0 + i, use=use))
    return entries


def info_of(entry: Entry, **state) -> dict:
    """What ``ModelActor.info`` answers for that entry's actor."""
    return {"load": entry.load, "replica": entry.replica, "need": entry.need, "placement": entry.placement, "created_at": entry.created_at,
            "loading": False, "use": entry.use, "in_flight": 0, "idle_s": 3.0, "retiring": False, "engine": None,
            **state}


def test_a_rebuilt_entry_gives_the_same_row_and_the_same_share():
    for entry in loaded_models(3):
        info = info_of(entry)
        rebuilt = entry_from(entry.handle, info)
        assert rebuilt.model_dump(exclude={"handle"}) == entry.model_dump(exclude={"handle"})
        assert rebuilt.placement.reservations() == entry.placement.reservations()
        assert _row(rebuilt, info, False) == _row(entry, info, False)


def test_a_loading_actor_rebuilds_its_share_before_it_has_measured_anything():
    entry = loaded_models(1)[0]
    rebuilt = entry_from(entry.handle, info_of(entry, loading=True, use=None))
    assert rebuilt.use is None
    assert promised([rebuilt], INVENTORY) == promised([entry], INVENTORY) == {("n", 0): 4 * G}


def test_the_rebuilt_ledger_keeps_the_next_model_off_the_shares_already_held():
    before = loaded_models(3)                                     # GPU 0 holds two, GPU 1 one
    assert [e.placement.gpu_indices for e in before] == [[0], [0], [1]]
    rebuilt = [entry_from(e.handle, info_of(e)) for e in before]
    fourth = place(NEED, INVENTORY, ModelLoad(provider="hf", task="text", model_id="m3").placement,
                   promised(rebuilt, INVENTORY))
    assert fourth.gpu_indices == [1]
    with pytest.raises(PlacementError):
        place(NEED, INVENTORY, ModelLoad(provider="hf", task="text", model_id="m4").placement,
              promised([*rebuilt, entry_from(Actor("ff" * 16), {**info_of(before[2]), "placement": fourth})],
                       INVENTORY))


def test_memory_nvml_sees_a_model_holding_is_not_counted_twice():
    entry = loaded_models(1)[0]
    seen = Inventory(nodes=[Node(node_id="n", ram_total_bytes=64 * G, ram_free_bytes=64 * G, gpus=[
        GPU(index=0, total_bytes=10 * G, free_bytes=7 * G, used_bytes=3 * G,
            processes=[GPUProcess(pid=entry.use.pid, used_bytes=3 * G)])])])
    assert promised([entry], seen) == {("n", 0): 1 * G}


class Registry:
    """Stands for the registry's handle: ``placements.remote()`` gives a ref that ``result_of`` awaits."""

    def __init__(self, answer: Future) -> None:
        self.placements = self
        self._answer = answer

    def remote(self):
        return self

    def future(self) -> Future:
        return self._answer


async def test_a_status_read_gives_up_after_its_bound_with_a_typed_error(monkeypatch):
    monkeypatch.setattr(registry, "get_registry", lambda: Registry(Future()))      # never answers
    with pytest.raises(RegistryUnavailableError, match="did not answer within 0 s.*ask again") as raised:
        await read_placements(wait_s=0.2)
    assert isinstance(raised.value, ModelConnectionError)


async def test_a_status_read_of_a_dead_registry_is_the_same_typed_error(monkeypatch):
    dead = Future()
    dead.set_exception(RayActorError())
    monkeypatch.setattr(registry, "get_registry", lambda: Registry(dead))
    with pytest.raises(RegistryUnavailableError, match="RayActorError"):
        await read_placements(wait_s=5)


async def test_a_status_read_answers_the_rows(monkeypatch):
    answer = Future()
    answer.set_result(["a row"])
    monkeypatch.setattr(registry, "get_registry", lambda: Registry(answer))
    assert await read_placements() == ["a row"]
