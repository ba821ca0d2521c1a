"""``aimu_ray.placements()`` as people read it: every row told apart, CPU rows in the units they hold."""

from aimu_ray.models.placements import ModelPlacement, Placements


def row(**fields) -> ModelPlacement:
    base = dict(model="hf:/root/.cache/aimu_ray/tiny-models/tiny-musicgen", task="audio", key="k", state="ready",
                node_id="d98fc4c7e389fd75", device="cpu", reserved_bytes=3 * 2**20, used_ram_bytes=511 * 2**20,
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


def test_a_cpu_row_shows_the_ram_reserved_through_ray_and_no_gpu_share():
    line = str(Placements([row()])).splitlines()[1].split()
    assert line[-5:] == ["-", "3", "MiB", "511", "MiB"]


def test_a_gpu_row_shows_its_share_and_vram_in_gib():
    gpu = row(device="cuda", gpu_indices=[1], num_gpus=0.25, reserved_bytes=5 * 2**30, used_vram_bytes=4 * 2**30)
    line = str(Placements([gpu])).splitlines()[1]
    assert "cuda[1]" in line and line.split()[-5:] == ["0.25", "5.00", "GiB", "4.00", "GiB"]
