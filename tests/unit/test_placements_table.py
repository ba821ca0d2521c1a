"""``aimu_ray.placements()`` as people read it: every row told apart, CPU rows in the units they hold, and each
model's memory estimate held against what it measured holding."""

import pytest

from aimu_ray.hosts.model import MeasuredUse
from aimu_ray.models.placements import ModelPlacement, Placements


def row(**fields) -> ModelPlacement:
    base = dict(model="hf:/root/.cache/aimu_ray/tiny-models/tiny-musicgen", task="audio", key="k", state="ready",
                node_id="d98fc4c7e389fd75", device="cpu", need_bytes=4 * 2**20, reserved_bytes=3 * 2**20,
                used_bytes=5 * 2**20, used_ram_bytes=511 * 2**20,
                reason="On the CPU: reserves 3 MiB through Ray's memory resource.")
    return ModelPlacement(**{**base, **fields})


def test_rows_that_share_a_long_path_start_are_told_apart_by_its_end():
    table = str(Placements([row(), row(model="hf:/root/.cache/aimu_ray/tiny-models/tiny-stable-diffusion",
                                       task="image")]))
    assert "hf:…mu_ray/tiny-models/tiny-musicgen" in table
    assert "hf:…iny-models/tiny-stable-diffusion" in table


def test_a_served_replica_shows_its_served_name():
    table = str(Placements([row(name="tiny-music", state="serving", deployment="model-tiny-music")]))
    assert table.splitlines()[1].startswith("tiny-music ")


def test_a_cpu_row_shows_estimate_reserved_and_the_ram_its_load_added_with_no_gpu_share():
    line = str(Placements([row()])).splitlines()[1].split()
    assert line[-8:] == ["-", "4", "MiB", "3", "MiB", "5", "MiB", "+25%"]


def test_a_gpu_row_shows_its_share_and_vram_in_gib():
    gpu = row(device="cuda", gpu_indices=[1], num_gpus=0.25, need_bytes=5 * 2**30, reserved_bytes=5 * 2**30,
              used_bytes=4 * 2**30, used_vram_bytes=4 * 2**30)
    line = str(Placements([gpu])).splitlines()[1]
    assert "cuda[1]" in line and line.split()[-8:] == ["0.25", "5.00", "GiB", "5.00", "GiB", "4.00", "GiB", "-20%"]


def test_the_table_has_one_header_and_each_reason_below_its_row_within_120_columns():
    lines = str(Placements([row(), row(device="cuda", gpu_ids=[0, 1], num_gpus=2.0)])).splitlines()
    assert lines[0].split() == ["model", "task", "state", "where", "share", "estimate", "reserved", "used", "error"]
    assert lines[2] == lines[4] == "    On the CPU: reserves 3 MiB through Ray's memory resource."
    assert max(len(line) for line in lines) <= 120


@pytest.mark.parametrize("need, used, error", [(100, 125, 25.0), (300, 200, -33.3), (100, 100, 0.0),
                                               (0, 125, None), (100, None, None), (100, 0, None)])
def test_the_estimate_error_is_measured_against_estimated_in_percent_of_the_estimate(need, used, error):
    assert row(need_bytes=need, used_bytes=used).estimate_error_pct == error


def test_an_unmeasured_row_shows_dashes_and_no_error():
    line = str(Placements([row(need_bytes=0, used_bytes=None)])).splitlines()[1].split()
    assert line[-6:] == ["-", "-", "3", "MiB", "-", "-"]


def test_the_error_travels_with_the_row_as_json():
    dumped = row().model_dump()
    assert dumped["estimate_error_pct"] == 25.0
    assert ModelPlacement.model_validate(dumped) == row()       # and a dumped row reads back


def use(**fields) -> MeasuredUse:
    return MeasuredUse(**{**dict(pid=1, node_id="n", gpu_ids=[], vram_bytes=7, ram_bytes=900, ram_added_bytes=40),
                          **fields})


def test_a_model_is_held_to_its_own_use_not_its_process_baseline():
    assert use(device="cpu").model_bytes == 40                      # the RSS its load added, not the 900
    assert use(device="cuda", gpu_ids=[0]).model_bytes == 7         # its VRAM
    assert use(device="cuda", gpu_ids=[0], offload="sequential").model_bytes == 47   # plus the RAM it offloads to
