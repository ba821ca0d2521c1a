"""Models on demand and at runtime over HTTP: the admin API behind its own keys, within the config's policy.

One app for the module on a local Ray: ``tiny`` loads at start, ``lazy`` (the same weights with other options, so
its own copies) loads at its first request, and the admin API may add ``hf:`` models from the tiny models' folder
only. Timeouts are guards, never assertions.
"""

from __future__ import annotations

import os

import httpx
import pytest

from aimu_ray.demo.servers import free_port
from aimu_ray.deployments import AppConfig

pytest_plugins = ["tests.fixtures.pytest_fixtures"]

KEY, ADMIN = "sk-plain-0123456789", "sk-admin-9876543210"
GUARD_S = 120.0
USER = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def app(serve_app, tiny_hf_dir, tmp_path_factory):
    os.environ["AIMU_RAY_TEST_ADMIN_KEYS"] = ADMIN
    config = AppConfig(port=free_port(), output_dir=tmp_path_factory.mktemp("admin"), api_keys=[KEY],
                       admin_keys_env="AIMU_RAY_TEST_ADMIN_KEYS",
                       admin={"allowed_providers": ["hf"], "allowed_folders": [str(tiny_hf_dir.parent)]},
                       models=[{"name": "tiny", "model": f"hf:{tiny_hf_dir}"},
                               {"name": "lazy", "model": f"hf:{tiny_hf_dir}", "options": {"max_batch_size": 2},
                                "load": "on_demand", "keep_alive_s": 600}])
    return serve_app(config)


def call(app: str, verb: str, path: str, key: str | None = ADMIN, body: dict | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.request(verb, f"{app}{path}", json=body, headers=headers, timeout=GUARD_S)


def card(app: str, name: str) -> dict:
    cards = {c["id"]: c for c in call(app, "GET", "/v1/models", KEY).json()["data"]}
    return cards[name]


def chat(app: str, name: str, key: str = KEY) -> httpx.Response:
    return call(app, "POST", "/v1/chat/completions", key, {"model": name, "messages": USER, "max_tokens": 4})


def test_an_on_demand_model_loads_at_its_first_request(app):
    assert card(app, "tiny")["state"] == "ready" and card(app, "tiny")["load"] == "startup"
    lazy = card(app, "lazy")
    assert lazy["state"] == "unloaded" and lazy["placement"] == [] and lazy["load"] == "on_demand"
    assert chat(app, "lazy").status_code == 200
    assert card(app, "lazy")["state"] == "ready" and len(card(app, "lazy")["placement"]) == 1


def test_admin_routes_want_an_admin_key(app):
    for verb, path in (("POST", "/v1/models/tiny/load"), ("POST", "/v1/models/tiny/unload"),
                       ("PUT", "/v1/models/x"), ("DELETE", "/v1/models/tiny")):
        assert call(app, verb, path, key=None).status_code == 401
        refused = call(app, verb, path, key=KEY, body={"model": "hf:x"})
        assert refused.status_code == 403 and "admin key" in refused.json()["error"]["message"]
    assert card(app, "tiny")["state"] == "ready"                       # nothing unloaded, nothing removed


def test_admin_unloads_and_loads_a_model_and_a_request_reloads_it(app):
    unloaded = call(app, "POST", "/v1/models/tiny/unload")
    assert unloaded.status_code == 200 and unloaded.json()["state"] == "unloaded"
    assert chat(app, "tiny").status_code == 200                         # a request loads it again
    assert call(app, "POST", "/v1/models/tiny/unload").json()["state"] == "unloaded"
    loaded = call(app, "POST", "/v1/models/tiny/load")
    assert loaded.status_code == 200 and loaded.json()["state"] == "ready"


def test_admin_adds_a_model_under_a_new_name_then_removes_it(app, tiny_hf_dir):
    added = call(app, "PUT", "/v1/models/extra", body={"model": f"hf:{tiny_hf_dir}", "replicas": 1,
                                                       "options": {"max_batch_size": 3}, "load": "on_demand"})
    assert added.status_code == 200, added.text
    assert added.json()["id"] == "extra" and added.json()["load"] == "on_demand"
    assert chat(app, "extra").status_code == 200
    assert "extra" in {c["id"] for c in call(app, "GET", "/v1/models", KEY).json()["data"]}
    removed = call(app, "DELETE", "/v1/models/extra")
    assert removed.status_code == 200 and removed.json()["deleted"] is True
    assert chat(app, "extra").status_code == 404
    assert call(app, "PUT", "/v1/models/tiny", body={"model": f"hf:{tiny_hf_dir}"}).status_code == 409


@pytest.mark.parametrize("body, status, message", [
    ({"model": "hf:/etc"}, 403, "allowed folders"),
    ({"model": "hf:Qwen/Qwen3-8B"}, 403, "allowed folders"),                   # a hub id: a download
    ({"model": "llamacpp:m", "options": {"model_path": "/tmp/m.gguf"}}, 403, "provider 'llamacpp'"),
    ({"model": "openai-compat:m@http://169.254.169.254/v1"}, 403, "provider 'openai-compat'"),
    ({"model": "anthropic:claude-sonnet-4-6"}, 403, "provider 'anthropic'"),
    ({"model": "hf:TINY", "options": {"model_kwargs": {"trust_remote_code": True}}}, 403, "model_kwargs"),
    ({"model": "hf:TINY", "options": {"model_kwargs": {"gguf_file": "../../x.gguf"}}}, 403, "gguf_file"),
    ({"model": "hf:TINY/../../etc"}, 403, "allowed folders"),
    ({"model": "hf:TINY", "replicas": 0}, 400, "replicas"),
    ({"model": "hf:TINY", "min_replicas": 3, "max_replicas": 1}, 400, "above max_replicas"),
    ({"model": "hf:TINY", "wings": 2}, 400, "wings"),
])
def test_a_model_outside_the_allowed_set_is_refused_and_nothing_loads(app, tiny_hf_dir, body, status, message):
    body = {**body, "model": body["model"].replace("TINY", str(tiny_hf_dir))}
    refused = call(app, "PUT", "/v1/models/intruder", body=body)
    assert refused.status_code == status and message in refused.json()["error"]["message"], refused.text
    assert "intruder" not in {c["id"] for c in call(app, "GET", "/v1/models", KEY).json()["data"]}


def test_an_unknown_model_in_an_admin_call_is_404(app):
    for verb, path in (("POST", "/v1/models/nope/load"), ("POST", "/v1/models/nope/unload"),
                       ("DELETE", "/v1/models/nope")):
        answer = call(app, verb, path)
        assert answer.status_code == 404 and "nope" in answer.json()["error"]["message"]
