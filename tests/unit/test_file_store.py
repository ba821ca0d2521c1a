"""The files handed out as URLs expire by one rule, a pure function over (name, size, mtime) rows: a file lives
``ttl_s`` after it was written, and over ``max_bytes`` the oldest go first. ``FileStore`` applies it to a folder:
at a sweep, before each write, and at each read. The app binds its files deployment only where files can be made.
No Ray runs here."""

from __future__ import annotations

import os
import time

import pytest

from aimu_ray.deployments.app import _makes_files
from aimu_ray.deployments.config import AppConfig
from aimu_ray.deployments.files import FILE_NAME, FileStore, Stored, media_type, to_delete
from aimu_ray.models.errors import LimitExceededError

NOW = 1_000_000.0
HOUR = 3600.0


def test_a_file_lives_ttl_after_it_was_written():
    rows = [Stored("new", 10, NOW - 1), Stored("edge", 10, NOW - HOUR), Stored("old", 10, NOW - 2 * HOUR)]
    assert to_delete(rows, NOW, HOUR, max_bytes=10**6) == ["old", "edge"]


def test_over_the_bound_the_oldest_go_first_until_the_rest_fits():
    rows = [Stored("c", 100, NOW - 10), Stored("a", 100, NOW - 30), Stored("b", 100, NOW - 20)]
    assert to_delete(rows, NOW, HOUR, max_bytes=300) == []
    assert to_delete(rows, NOW, HOUR, max_bytes=250) == ["a"]
    assert to_delete(rows, NOW, HOUR, max_bytes=150) == ["a", "b"]
    assert to_delete(rows, NOW, HOUR, max_bytes=250, room=100) == ["a", "b"]    # room for a file about to be written


def test_expired_files_free_their_bytes_before_any_fresh_file_goes():
    rows = [Stored("stale", 200, NOW - 2 * HOUR), Stored("older", 100, NOW - 30), Stored("newer", 100, NOW - 20)]
    assert to_delete(rows, NOW, HOUR, max_bytes=200) == ["stale"]


def test_files_of_the_same_mtime_go_in_name_order():
    rows = [Stored("b", 100, NOW), Stored("a", 100, NOW), Stored("c", 100, NOW)]
    assert to_delete(rows, NOW, HOUR, max_bytes=100) == ["a", "b"]


def test_put_then_get_gives_the_bytes_back_under_an_unguessable_name(tmp_path):
    store = FileStore(tmp_path / "files", HOUR, 10**6)
    png, wav = store.put(b"png bytes", "png"), store.put(b"wav bytes", "wav")
    assert FILE_NAME.fullmatch(png) and FILE_NAME.fullmatch(wav) and png != wav
    assert store.get(png) == b"png bytes" and store.get(wav) == b"wav bytes"
    assert (media_type(png), media_type(wav)) == ("image/png", "audio/wav")
    assert (tmp_path / "files" / png).read_bytes() == b"png bytes"


def test_get_answers_none_for_names_it_never_made(tmp_path):
    store = FileStore(tmp_path, HOUR, 10**6)
    (tmp_path / "secret.txt").write_text("not a generated file")
    (tmp_path.parent / ("x" * 24 + ".png")).write_bytes(b"outside")
    assert store.get("secret.txt") is None
    assert store.get("../" + "x" * 24 + ".png") is None
    assert store.get("y" * 24 + ".png") is None                       # well formed, never written


def test_a_link_under_a_valid_name_is_not_followed(tmp_path):
    store = FileStore(tmp_path / "files", HOUR, 10**6)
    (tmp_path / "target").write_bytes(b"elsewhere")
    (tmp_path / "files" / ("z" * 24 + ".png")).symlink_to(tmp_path / "target")
    assert store.get("z" * 24 + ".png") is None


def test_an_expired_file_is_refused_at_get_before_any_sweep(tmp_path):
    store = FileStore(tmp_path, 60.0, 10**6)
    name = store.put(b"image", "png")
    _age(tmp_path / name, 61)
    assert store.get(name) is None
    assert (tmp_path / name).exists()                                 # nothing swept it yet: the read checked


def test_a_sweep_deletes_what_an_earlier_run_left_expired_and_nothing_else(tmp_path):
    earlier = FileStore(tmp_path, 60.0, 10**6)
    stale, fresh = earlier.put(b"stale", "png"), earlier.put(b"fresh", "wav")
    _age(tmp_path / stale, 120)
    _age(tmp_path / "notes.txt", 120, b"someone else's")
    store = FileStore(tmp_path, 60.0, 10**6)                          # a restarted replica, same folder
    assert store.sweep() == [stale]
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted([fresh, "notes.txt"])
    assert store.get(fresh) == b"fresh"


def test_a_write_over_the_bound_deletes_the_oldest_first(tmp_path):
    store = FileStore(tmp_path, HOUR, 250)
    first, second = store.put(b"a" * 100, "png"), store.put(b"b" * 100, "png")
    _age(tmp_path / first, 20)
    _age(tmp_path / second, 10)
    third = store.put(b"c" * 100, "png")
    assert store.get(first) is None and store.get(second) == b"b" * 100 and store.get(third) == b"c" * 100
    assert sum(path.stat().st_size for path in tmp_path.iterdir()) <= 250


def test_a_file_larger_than_the_bound_is_refused_and_nothing_is_deleted(tmp_path):
    store = FileStore(tmp_path, HOUR, 250)
    kept = store.put(b"k" * 100, "png")
    with pytest.raises(LimitExceededError, match="files_max_bytes"):
        store.put(b"x" * 251, "png")
    assert [path.name for path in tmp_path.iterdir()] == [kept]


def test_only_images_and_clips_are_kept(tmp_path):
    with pytest.raises(ValueError, match="png, wav"):
        FileStore(tmp_path, HOUR, 10**6).put(b"#!/bin/sh", "sh")


@pytest.mark.parametrize(("settings", "makes"), [
    ({"models": [{"name": "chat", "model": "openai:gpt-4o"}]}, False),
    ({"models": [{"name": "chat", "model": "openai:gpt-4o"}], "admin_keys_env": "KEYS",
      "admin": {"allowed_providers": ["llamacpp"]}}, False),
    ({"models": [{"name": "chat", "model": "openai:gpt-4o"}], "admin_keys_env": "KEYS",
      "admin": {"allowed_providers": ["hf"]}}, True),                 # the admin API may add an image model
    ({"models": [{"name": "paint", "model": "gemini:imagen-4", "task": "image"}]}, True),
])
def test_the_files_deployment_is_bound_only_where_files_can_be_made(settings, makes):
    assert _makes_files(AppConfig(**settings)) is makes


def _age(path, seconds: float, data: bytes | None = None) -> None:
    """Write ``data`` to ``path`` if given; then set its mtime ``seconds`` in the past."""
    if data is not None:
        path.write_bytes(data)
    then = time.time() - seconds
    os.utime(path, (then, then))
