"""The environment a Ray started here inherits for Serve's fast path: Ray's own switches, the user's settings first."""

from __future__ import annotations

import os

import pytest

from aimu_ray.cluster import connection
from aimu_ray.cluster.connection import _set_serve_env, fast_serve_env

SWITCHES = ("RAY_SERVE_THROUGHPUT_OPTIMIZED", "RAY_SERVE_ENABLE_HA_PROXY", "RAY_SERVE_HAPROXY_STATS_PORT",
            "RAY_SERVE_HAPROXY_METRICS_PORT", "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE",
            "RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH", "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S",
            "RAY_SERVE_LOG_TO_STDERR", "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in SWITCHES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(connection, "_ours", set())
    yield
    for name in SWITCHES:
        os.environ.pop(name, None)


def test_the_fast_path_is_throughput_optimized_and_haproxy_only_when_asked_with_ports_of_its_own(monkeypatch):
    env = fast_serve_env()
    assert env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1" and "RAY_SERVE_ENABLE_HA_PROXY" not in env
    assert env["RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE"] == "1"                # log lines written as they come
    assert env["RAY_SERVE_LOG_TO_STDERR"] == "1"                               # ... to the console, as before
    assert float(env["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"]) < 30   # Ctrl-C stops in seconds
    assert int(env["RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH"]) > 4 << 20     # above gRPC's 4 MiB default
    monkeypatch.setenv("RAY_SERVE_ENABLE_HA_PROXY", "1")                        # the user's choice
    first, second = fast_serve_env(), fast_serve_env()
    assert int(first["RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S"]) > 5             # Serve's 5 s is short on a busy node
    assert first["RAY_SERVE_HAPROXY_STATS_PORT"] != second["RAY_SERVE_HAPROXY_STATS_PORT"] or \
        first["RAY_SERVE_HAPROXY_METRICS_PORT"] != second["RAY_SERVE_HAPROXY_METRICS_PORT"]


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
