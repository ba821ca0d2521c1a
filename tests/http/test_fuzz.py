"""Fuzz the served HTTP API against its own OpenAPI schema (schemathesis, deterministic and bounded).

One app for the module serves only cheap models: a remote model on the loopback fake server and the tiny
HF text model. Every operation in ``GET /openapi.json`` gets schema-valid and schema-breaking requests; the
properties are that nothing is ever a 5xx, that every 4xx is an OpenAI-style error object a client can
parse, and that the server still answers afterwards.
"""

from __future__ import annotations

import copy

import httpx
import hypothesis.strategies as st
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from aimu_ray.demo.servers import free_port
from aimu_ray.deployments import AppConfig
from aimu_ray.deployments.ingress import api

pytest_plugins = ["tests.fixtures.pytest_fixtures", "tests.fakes.fixtures"]

KEY = "sk-fuzz-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
SERVED = ("gpt", "tiny")
GUARD_S = 30.0
# The HF engine caps max_tokens at what the context leaves (512 tokens for the tiny model); a small budget keeps
# the fuzz fast on 2 cores.
TINY_TOKEN_CAP = 16



@pytest.fixture(scope="module")
def app(serve_app, tiny_hf_dir, fake_server, tmp_path_factory):
    config = AppConfig(port=free_port(), output_dir=tmp_path_factory.mktemp("fuzz"), api_keys=[KEY], models=[
        {"name": "gpt", "model": f"openai-compat:m@{fake_server.url}/v1", "options": {"max_retries": 0}},
        {"name": "tiny", "model": f"hf:{tiny_hf_dir}", "options": {"max_batch_size": 4}},
    ])
    return serve_app(config)


def _steer(context, body):
    """Most fuzzed bodies would name a random model and stop at the 404: let them name a served one too."""
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        return st.just(body)

    def named(model: str) -> dict:
        steered = {**body, "model": model}
        if model == "tiny":
            for key in ("max_tokens", "max_completion_tokens"):
                if isinstance(steered.get(key), int) and not isinstance(steered[key], bool):
                    steered[key] = min(steered[key], TINY_TOKEN_CAP)
            if "max_tokens" not in steered and "max_completion_tokens" not in steered:
                steered["max_tokens"] = TINY_TOKEN_CAP
        return steered

    return st.sampled_from((*SERVED, body["model"])).map(named)


# The schema is the ingress' own FastAPI document, read at collection time so that pytest can parametrize by
# operation (schemathesis' lazy fixture loader does not run under pytest 9); the first test checks that it is
# exactly the document the running app serves at /openapi.json.
SPEC = api.openapi()
schema = schemathesis.openapi.from_dict(copy.deepcopy(SPEC))
schema.hook("flatmap_body")(_steer)


def assert_openai_error(response) -> None:
    """A 4xx must carry ``{"error": {"message": str, "type": str, ...}}``, as OpenAI's SDKs expect."""
    try:
        body = response.json()
    except ValueError:
        pytest.fail(f"{response.status_code} with a body that is not JSON: {response.text[:500]!r}")
    error = body.get("error") if isinstance(body, dict) else None
    assert isinstance(error, dict), f"{response.status_code} without an 'error' object: {body!r}"
    assert isinstance(error.get("message"), str) and error["message"], body
    assert isinstance(error.get("type"), str) and error["type"], body


def test_the_fuzzed_schema_is_the_one_the_app_serves(app):
    """The fuzz below is only as good as its schema: it must be what clients get from ``/openapi.json``."""
    served = httpx.get(f"{app}/openapi.json", timeout=GUARD_S)
    assert served.status_code == 200
    assert served.json() == SPEC


@schema.parametrize()
@settings(max_examples=60, deadline=None, derandomize=True, database=None, print_blob=True,
          suppress_health_check=list(HealthCheck))
def test_fuzzed_requests_never_get_a_server_error_and_4xx_are_openai_errors(app, case):
    """Schema-valid and schema-breaking requests alike: the client's fault is a 4xx error object, never a 5xx."""
    response = case.call(base_url=app, headers=AUTH, timeout=GUARD_S)
    case.validate_response(response, checks=[not_a_server_error], headers=AUTH,
                           transport_kwargs={"base_url": app, "headers": AUTH})
    assert response.status_code < 500, response.text[:500]
    if 400 <= response.status_code < 500:
        assert_openai_error(response)


@pytest.mark.parametrize("method, path, content", [
    ("POST", "/healthz", None),
    ("DELETE", "/v1/chat/completions", None),
    ("GET", "/v1/no-such-route", None),
    ("POST", "/v1/chat/completions", b'{"model": "gpt", "messages": "\xff"}'),
], ids=["wrong-method", "wrong-method-on-post-route", "unknown-path", "body-not-utf8"])
def test_router_and_body_errors_are_openai_errors_too(app, method, path, content):
    """A wrong method, an unknown path or an undecodable body is the client's fault: an OpenAI error object."""
    response = httpx.request(method, f"{app}{path}", content=content, timeout=GUARD_S,
                             headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code in (400, 404, 405), response.text[:300]
    assert_openai_error(response)
