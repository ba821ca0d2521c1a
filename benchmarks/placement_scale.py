"""Placement at scale: 5,000 loads and unloads on a simulated 125 nodes × 8 GPUs × 80 GB (1,000 GPUs).

The models and the foreign processes are those of ``placement.py`` (a quarter of the GPUs hold 2-30 GB outside
Ray). Churn: each operation loads a model (``place`` with the ledger of live promises, then ``reserve``) or, with
probability UNLOAD_SHARE when models are live, unloads a random one (its promise leaves the ledger). Printed:
decisions per second and the time per decision, loads refused, over-commit (must be 0); then packing after the
churn, against first-fit-decreasing re-packing the models live or refused at the end from scratch (an offline
bound: it may move every model, which a live cluster cannot; but it cannot split a model over GPUs, as ``place``
does for large text models): how many each leaves out.
No Ray. Run: python benchmarks/placement_scale.py [operations] [seed]
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aimu_ray.cluster import GPU, GPUProcess, Inventory, Node, PlacementError, place, reserve  # noqa: E402
from benchmarks.placement import GB, workload  # noqa: E402

OPERATIONS = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
SEED = int(sys.argv[2]) if len(sys.argv) > 2 else 7
NODES, GPUS_PER_NODE = 125, 8
UNLOAD_SHARE = 0.1            # loads outrun unloads, so the cluster fills and refusals test the packing


def cluster(rng: random.Random) -> Inventory:
    nodes = []
    for n in range(NODES):
        gpus = []
        for i in range(GPUS_PER_NODE):
            held = rng.randint(2, 30) * GB if rng.random() < 0.25 else 0
            processes = [GPUProcess(pid=10_000 + GPUS_PER_NODE * n + i, used_bytes=held, name="foreign")] if held else []
            gpus.append(GPU(index=i, total_bytes=80 * GB, free_bytes=80 * GB - held, used_bytes=held,
                            processes=processes))
        nodes.append(Node(node_id=f"node{n:03d}", gpus=gpus, ram_total_bytes=2048 * GB, ram_free_bytes=1800 * GB))
    return Inventory(nodes=nodes)


def unreserve(reserved: dict, promised: dict) -> dict:
    left = dict(reserved)
    for key, nbytes in promised.items():
        left[key] -= nbytes
        if not left[key]:
            del left[key]
    return left


def churn(inv: Inventory, rng: random.Random) -> dict:
    """OPERATIONS loads and unloads through ``place``; the live models and what each promised."""
    pool = workload(rng, 500)
    reserved: dict = {}
    live: list[tuple[int, dict]] = []           # (bytes asked, the placement's promises)
    timings, refused, loads, unloads = [], [], 0, 0
    for _ in range(OPERATIONS):
        if live and rng.random() < UNLOAD_SHARE:
            _, promised = live.pop(rng.randrange(len(live)))
            reserved = unreserve(reserved, promised)
            unloads += 1
            continue
        need = rng.choice(pool)
        loads += 1
        started = time.perf_counter()
        try:
            placement = place(need, inv, reserved=reserved)
        except PlacementError:
            timings.append(time.perf_counter() - started)
            refused.append(need.total_bytes)
            continue
        timings.append(time.perf_counter() - started)
        reserved = reserve(reserved, placement)
        live.append((need.total_bytes, placement.reservations()))
    gpus = {(n.node_id, g.index): g.free_bytes for n in inv.nodes for g in n.gpus}
    over = sum(reserved.get(key, 0) > free for key, free in gpus.items())
    in_use = sum(1 for key in gpus if reserved.get(key, 0) > 0)
    return dict(timings=timings, refused=refused, loads=loads, unloads=unloads, live=live, over=over, in_use=in_use,
                packed=sum(v for (node, gpu), v in reserved.items() if gpu is not None))


def first_fit_decreasing(inv: Inventory, sizes: list[int]) -> tuple[int, list[int]]:
    """GPUs in use after packing ``sizes`` largest first into each GPU's free memory, and the sizes left out (a
    model larger than one GPU among them: FFD cannot split one)."""
    bins = [g.free_bytes for n in inv.nodes for g in n.gpus]
    left, missed = list(bins), []
    for size in sorted(sizes, reverse=True):
        slot = next((i for i, free in enumerate(left) if free >= size), None)
        if slot is None:
            missed.append(size)
        else:
            left[slot] -= size
    return sum(a != b for a, b in zip(left, bins)), missed


def main() -> None:
    rng = random.Random(SEED)
    inv = cluster(rng)
    free = sum(g.free_bytes for n in inv.nodes for g in n.gpus)
    print(f"cluster: {NODES} nodes × {GPUS_PER_NODE} GPUs × 80 GB = {NODES * GPUS_PER_NODE} GPUs, "
          f"{free / GB:,.0f} GB free after foreign processes; {OPERATIONS} operations (seed {SEED})")
    result = churn(inv, rng)
    timings = result["timings"]
    print(f"place(): {result['loads']} loads and {result['unloads']} unloads; {len(timings) / sum(timings):,.0f} "
          f"decisions/s, p50 {statistics.median(timings) * 1000:.2f} ms, "
          f"p99 {statistics.quantiles(timings, n=100)[98] * 1000:.2f} ms per decision")
    print(f"         {len(result['refused'])} loads refused, over-commit {result['over']}")
    live = [size for size, _ in result["live"]]
    print(f"after the churn: {len(live)} models live, {result['packed'] / free:.1%} of free VRAM promised, "
          f"{result['in_use']} GPUs in use")
    asked = live + result["refused"]
    _, missed = first_fit_decreasing(inv, asked)
    print(f"packing, over the {len(asked)} models live or refused at the end: place() (online, never moving a model) "
          f"left out {len(result['refused'])}; FFD re-packing them all from scratch (largest first, one GPU each) "
          f"leaves out {len(missed)}")

if __name__ == "__main__":
    main()
