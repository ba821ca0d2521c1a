"""The Serve app over HTTP with the openai SDK, and through deployment handles, on one local Ray.

One app for the module serves a tiny HF text model, a tiny diffusers pipeline, a tiny MusicGen and
remote models on the loopback fake server (one with capability flags, one without). Every error status,
auth, cancellation on disconnect, metrics and the handle client are checked against it.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import re
import time
import wave

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel
import ray
from PIL import Image
from ray import serve

import aimu_ray
from aimu_ray.demo.servers import free_port
from aimu_ray.deployments import AppConfig, ServedModel, connect
from aimu_ray.hosts.registry import get_registry
from aimu_ray.models.load import load_for

pytest_plugins = ["tests.fixtures.pytest_fixtures", "tests.fixtures.image_fixtures", "tests.fixtures.audio_fixtures",
                  "tests.fakes.fixtures"]

KEY = "sk-test-serve-key-0123456789"
PROVIDER_KEY = "sk-provider-secret-9876543210"
GUARD_S = 60.0
# Small enough to test each one with a small body; every other test of the module stays within them.
LIMITS = {"max_body_bytes": 256 * 1024, "max_messages": 8, "max_prompt_chars": 50_000, "max_image_pixels": 128 * 128,
          "max_images": 4, "max_audio_s": 1.0, "max_audio_clips": 2}



@pytest.fixture(scope="module")
def app(serve_app, tiny_hf_dir, tiny_sd_dir, tiny_musicgen_dir, fake_server, tmp_path_factory):
    os.environ["AIMU_RAY_TEST_PROVIDER_KEY"] = PROVIDER_KEY       # reaches the remote replicas, never a response
    config = AppConfig(port=free_port(), output_dir=tmp_path_factory.mktemp("served"), api_keys=[KEY], limits=LIMITS,
                       models=[
        {"name": "tiny", "model": f"hf:{tiny_hf_dir}", "options": {"max_batch_size": 8}},
        {"name": "busy", "model": f"hf:{tiny_hf_dir}", "options": {"max_batch_size": 1}, "max_in_flight": 2},
        {"name": "painter", "model": f"hf:{tiny_sd_dir}", "task": "image"},
        {"name": "music", "model": f"hf:{tiny_musicgen_dir}", "task": "audio"},
        {"name": "gpt", "model": f"openai-compat:m@{fake_server.url}/v1;tools,thinking", "options": {"max_retries": 0},
         "api_key_env": "AIMU_RAY_TEST_PROVIDER_KEY"},
        {"name": "plain", "model": f"openai-compat:plain@{fake_server.url}/v1", "options": {"max_retries": 0}},
        {"name": "keyless", "model": "anthropic:claude-sonnet-4-6", "api_key_env": "AIMU_RAY_TEST_UNSET_KEY"},
    ])
    return serve_app(config)


@pytest.fixture(scope="module")
def sdk(app) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{app}/v1", api_key=KEY, max_retries=0, timeout=GUARD_S)


def post(app: str, path: str, body: dict, key: str | None = KEY) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{app}{path}", json=body, headers=headers, timeout=GUARD_S)


USER = [{"role": "user", "content": "hi"}]
WEATHER = {"type": "function", "function": {"name": "weather", "description": "Weather in a city.",
                                            "parameters": {"type": "object",
                                                           "properties": {"city": {"type": "string"}}}}}


# ----- the OpenAI surface -----

def test_models_lists_every_served_model_with_modality_state_and_placement(sdk):
    cards = {card.id: card.model_dump() for card in sdk.models.list()}
    assert set(cards) == {"tiny", "busy", "painter", "music", "gpt", "plain", "keyless"}
    assert [cards[name]["modality"] for name in ("tiny", "painter", "music", "gpt")] == ["text", "image", "audio",
                                                                                         "text"]
    assert all(cards[name]["state"] == "ready" for name in ("tiny", "painter", "music", "gpt"))
    assert cards["keyless"]["state"] == "failed" and "API key" in cards["keyless"]["error"]
    placement = cards["tiny"]["placement"]
    assert len(placement) == 1 and placement[0]["device"] == "cpu" and placement[0]["reason"]
    [row] = placement          # the estimate held against the RAM the load added, not the whole process's RSS
    assert row["need_bytes"] > 0 and row["reserved_bytes"] > 0 and 0 < row["used_bytes"] < row["used_ram_bytes"]
    assert row["estimate_error_pct"] == round((row["used_bytes"] - row["need_bytes"]) / row["need_bytes"] * 100, 1)
    assert cards["gpt"]["placement"] == []


def test_chat_completion_from_an_in_process_model(sdk):
    reply = sdk.chat.completions.create(model="tiny", messages=USER, max_tokens=6, temperature=0)
    assert reply.object == "chat.completion" and reply.model == "tiny"
    assert isinstance(reply.choices[0].message.content, str)
    assert reply.choices[0].finish_reason in ("length", "stop")
    assert reply.usage.completion_tokens <= 6 and reply.usage.prompt_tokens > 0


def test_chat_stream_arrives_in_chunks_and_ends_with_a_finish_reason(sdk):
    chunks = list(sdk.chat.completions.create(model="tiny", messages=USER, max_tokens=8, stream=True,
                                              stream_options={"include_usage": True}))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert deltas[0].role == "assistant"
    assert sum(1 for d in deltas if d.content) >= 2
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("length", "stop")
    assert chunks[-1].usage.completion_tokens <= 8 and not chunks[-1].choices


def test_remote_model_reasoning_and_tool_calls(sdk, fake):
    fake.reply("Checking.", reasoning="They want weather.", tool_calls=[("weather", {"city": "Oslo"})])
    reply = sdk.chat.completions.create(model="gpt", messages=USER, tools=[WEATHER], reasoning_effort="high")
    message = reply.choices[0].message
    assert message.content == "Checking." and message.model_extra["reasoning_content"] == "They want weather."
    assert message.tool_calls[0].function.name == "weather"
    assert message.tool_calls[0].function.arguments == '{"city": "Oslo"}'
    assert reply.choices[0].finish_reason == "tool_calls"
    sent = fake.requests[-1].body
    assert sent["tools"][0]["function"]["name"] == "weather" and sent["model"] == "m"


def test_remote_stream_carries_reasoning_content_then_content(sdk, fake):
    fake.reply("The answer.", reasoning="Thinking it over.")
    chunks = list(sdk.chat.completions.create(model="gpt", messages=USER, stream=True))
    reasoning = "".join(c.choices[0].delta.model_extra.get("reasoning_content") or "" for c in chunks if c.choices)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert reasoning == "Thinking it over." and content == "The answer."


def test_a_conversation_with_tool_results_goes_to_the_provider(sdk, fake):
    fake.reply("It is sunny.")
    messages = [*USER, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]
    assert sdk.chat.completions.create(model="gpt", messages=messages).choices[0].message.content == "It is sunny."
    sent = fake.requests[-1].body["messages"]
    assert sent[1]["tool_calls"][0]["function"]["arguments"] == '{"city": "Oslo"}' and sent[2]["role"] == "tool"


# ----- remote models pass through: the upstream judges tools, images and reasoning -----

def test_a_remote_model_without_flags_takes_tools_and_images(sdk, fake):
    fake.reply("", tool_calls=[("weather", {"city": "Oslo"})])
    pixel = "data:image/png;base64," + base64.b64encode(_png()).decode()
    reply = sdk.chat.completions.create(model="plain", tools=[WEATHER], messages=[{"role": "user", "content": [
        {"type": "text", "text": "Weather here?"}, {"type": "image_url", "image_url": {"url": pixel}}]}])
    assert reply.choices[0].message.tool_calls[0].function.name == "weather"
    sent = fake.requests[-1].body
    assert sent["tools"][0]["function"]["name"] == "weather"
    assert sent["messages"][0]["content"][1] == {"type": "image_url", "image_url": {"url": pixel}}


def test_reasoning_effort_reaches_a_remote_model_only_when_asked(sdk, fake):
    sent = []
    for effort in ("medium", "none", None):
        extra = {"reasoning_effort": effort} if effort else {}
        sdk.chat.completions.create(model="plain", messages=USER, **extra)
        sent.append(fake.requests[-1].body)
    assert sent[0]["reasoning_effort"] == "medium" and sent[0]["chat_template_kwargs"] == {"enable_thinking": True}
    assert "reasoning_effort" not in sent[1] and sent[1]["chat_template_kwargs"] == {"enable_thinking": False}
    assert not {"reasoning_effort", "chat_template_kwargs", "think", "thinking"} & set(sent[2])


def test_an_upstream_400_is_a_400_openai_error_with_the_upstream_message(sdk, fake):
    fake.fault(status=400, message="this model does not support tools")
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="plain", messages=USER, tools=[WEATHER])
    error = caught.value.body
    assert error["type"] == "invalid_request_error" and "this model does not support tools" in error["message"]


def test_images_as_b64_json_and_as_urls_served_by_the_app(sdk, app):
    inline = sdk.images.generate(model="painter", prompt="a fox", n=2, size="64x64",
                                 extra_body={"num_inference_steps": 2, "seed": 7})
    images = [Image.open(io.BytesIO(base64.b64decode(item.b64_json))) for item in inline.data]
    assert [image.size for image in images] == [(64, 64), (64, 64)]
    linked = sdk.images.generate(model="painter", prompt="a fox", size="64x64", response_format="url",
                                 extra_body={"num_inference_steps": 2, "seed": 7})
    fetched = httpx.get(linked.data[0].url, timeout=GUARD_S)
    assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/png"
    alone = sdk.images.generate(model="painter", prompt="a fox", size="64x64",
                                extra_body={"num_inference_steps": 2, "seed": 7})
    assert fetched.content == base64.b64decode(alone.data[0].b64_json)      # same seed, same bytes


def test_audio_generation_returns_a_wav(app):
    answer = post(app, "/v1/audio/generations", {"model": "music", "prompt": "drums", "duration_s": 0.2, "seed": 1})
    assert answer.status_code == 200 and answer.headers["content-type"] == "audio/wav"
    with wave.open(io.BytesIO(answer.content)) as wav:
        assert wav.getframerate() == 24000 and wav.getnframes() > 0
    listed = post(app, "/v1/audio/generations", {"model": "music", "prompt": "drums", "duration_s": 0.2, "n": 2,
                                                 "response_format": "b64_json"})
    assert len(listed.json()["data"]) == 2


# ----- errors -----

def test_unknown_model_is_404_with_an_openai_error(sdk):
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.chat.completions.create(model="nope", messages=USER)
    assert caught.value.body["code"] == "model_not_found" and "tiny" in caught.value.body["message"]


@pytest.mark.parametrize("body, param", [
    ({"model": "tiny"}, "messages"),
    ({"model": "tiny", "messages": []}, "messages"),
    ({"model": "tiny", "messages": USER, "temperature": 7}, "temperature"),
    ({"model": "tiny", "messages": USER, "n": 0}, "n"),
    ({"model": "tiny", "messages": USER, "top_logprobs": 21}, "top_logprobs"),
    ({"model": "tiny", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://169.254.169.254/x.png"}}]}]}, "messages.0.content"),
    ({"model": "tiny", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "/etc/passwd"}}]}]}, "messages.0.content"),
])
def test_invalid_bodies_are_400_naming_the_parameter(app, body, param):
    answer = post(app, "/v1/chat/completions", body)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"].startswith(param)


def test_a_body_that_is_not_json_is_400(app):
    answer = httpx.post(f"{app}/v1/chat/completions", content=b"{not json", timeout=GUARD_S,
                        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    assert answer.status_code == 400 and answer.json()["error"]["type"] == "invalid_request_error"


def test_wrong_modality_and_images_or_tools_for_an_in_process_model_without_them_are_400(app):
    assert post(app, "/v1/images/generations", {"model": "tiny", "prompt": "x"}).status_code == 400
    pixel = "data:image/png;base64," + base64.b64encode(_png()).decode()
    answer = post(app, "/v1/chat/completions", {"model": "tiny", "messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": pixel}}]}]})
    assert answer.status_code == 400 and "images" in answer.json()["error"]["message"]
    answer = post(app, "/v1/chat/completions", {"model": "tiny", "messages": USER, "tools": [WEATHER]})
    assert answer.status_code == 400 and "tools" in answer.json()["error"]["message"]


def test_provider_rate_limit_is_429_with_retry_after(app, fake):
    fake.fault(status=429, retry_after=3)
    answer = post(app, "/v1/chat/completions", {"model": "gpt", "messages": USER})
    assert answer.status_code == 429 and answer.headers["retry-after"] == "3"
    assert answer.json()["error"]["type"] == "rate_limit_error"


def test_provider_failure_is_502_and_a_missing_key_is_503_without_the_secret(app, fake):
    fake.fault(status=500, message=f"boom, your key {PROVIDER_KEY} is odd")
    answer = post(app, "/v1/chat/completions", {"model": "gpt", "messages": USER})
    assert answer.status_code == 502 and "boom" in answer.text and PROVIDER_KEY not in answer.text
    assert fake.requests[-1].headers["authorization"] == f"Bearer {PROVIDER_KEY}"
    keyless = post(app, "/v1/chat/completions", {"model": "keyless", "messages": USER})
    assert keyless.status_code == 503 and "retry-after" in keyless.headers
    assert "API key" in keyless.json()["error"]["message"]


def test_a_stream_that_fails_before_its_first_chunk_gets_a_status_code(app, fake):
    fake.fault(status=429, retry_after=1)
    answer = post(app, "/v1/chat/completions", {"model": "gpt", "messages": USER, "stream": True})
    assert answer.status_code == 429


def test_overload_is_503_with_retry_after(app):
    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=GUARD_S, headers={"Authorization": f"Bearer {KEY}"}) as http:
            body = {"model": "busy", "messages": USER, "max_tokens": 200}
            return await asyncio.gather(*(http.post(f"{app}/v1/chat/completions", json=body) for _ in range(6)))

    answers = asyncio.run(burst())
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses.count(200) >= 2 and 503 in statuses, statuses
    rejected = next(answer for answer in answers if answer.status_code == 503)
    assert rejected.headers["retry-after"] == "1" and rejected.json()["error"]["code"] == "overloaded"


# ----- limits: each one refused with its status, the limit named in the error's code -----

def deep_tool(depth: int) -> dict:
    schema: dict = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"x": schema}}
    return {"type": "function", "function": {"name": "deep", "parameters": schema}}


@pytest.mark.parametrize("path, body, limit", [
    ("/v1/chat/completions", {"model": "tiny", "messages": USER * 9}, "max_messages"),
    ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "x" * 50_001}]},
     "max_prompt_chars"),
    ("/v1/chat/completions", {"model": "gpt", "messages": USER, "tools": [deep_tool(400)]}, "max_json_depth"),
    ("/v1/images/generations", {"model": "painter", "prompt": "a fox", "size": "256x256"}, "max_image_pixels"),
    ("/v1/images/generations", {"model": "painter", "prompt": "a fox", "size": "9999x9999"}, "max_image_pixels"),
    ("/v1/images/generations", {"model": "painter", "prompt": "a fox", "size": "64x64", "n": 5}, "max_images"),
    ("/v1/audio/generations", {"model": "music", "prompt": "drums", "duration_s": 1.5}, "max_audio_s"),
    ("/v1/audio/generations", {"model": "music", "prompt": "drums", "n": 3, "response_format": "b64_json"},
     "max_audio_clips"),
    ("/v1/images/generations", {"model": "painter", "prompt": "a fox", "num_inference_steps": 201},
     "max_inference_steps"),
], ids=["messages", "prompt-chars", "tools-400-deep", "image-pixels", "image-9999", "images", "audio-seconds",
        "audio-clips", "steps"])
def test_a_request_over_a_limit_is_400_naming_the_limit(app, fake, path, body, limit):
    sent = len(fake.requests)
    answer = post(app, path, body)
    assert answer.status_code == 400, answer.text[:300]
    error = answer.json()["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", limit) and limit in error["message"]
    assert len(fake.requests) == sent                      # refused before anything reached a model


def test_a_body_over_the_limit_is_413_by_its_length_or_as_it_streams_in(app):
    big = b'{"model": "tiny", "messages": [{"role": "user", "content": "' + b"x" * (256 * 1024) + b'"}]}'
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    declared = httpx.post(f"{app}/v1/chat/completions", content=big, headers=headers, timeout=GUARD_S)
    pieces = iter([big[start:start + 65536] for start in range(0, len(big), 65536)])
    chunked = httpx.post(f"{app}/v1/chat/completions", content=pieces, headers=headers, timeout=GUARD_S)
    assert "content-length" not in chunked.request.headers          # no length declared: counted as it arrived
    for answer in (declared, chunked):
        assert answer.status_code == 413, answer.text[:300]
        assert answer.json()["error"]["code"] == "max_body_bytes"


def test_a_prompt_sure_to_overflow_the_context_is_refused_before_tokenizing(app):
    answer = post(app, "/v1/chat/completions", {"model": "tiny", "max_tokens": 4,
                                                "messages": [{"role": "user", "content": "x " * 20_000}]})
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "context_length_exceeded"
    assert "at least" in answer.json()["error"]["message"]             # the bound, not a count: no tokenizer ran


# ----- auth -----

@pytest.mark.parametrize("key", [None, "wrong-key"])
def test_requests_without_the_right_key_are_401(app, key):
    answer = post(app, "/v1/chat/completions", {"model": "tiny", "messages": USER}, key=key)
    assert answer.status_code == 401 and answer.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(f"{app}/v1/models", timeout=GUARD_S).status_code == 401


def test_health_and_metrics_need_no_key(app, sdk):
    sdk.chat.completions.create(model="tiny", messages=USER, max_tokens=2)
    assert httpx.get(f"{app}/healthz", timeout=GUARD_S).json() == {"status": "ok"}
    metrics = httpx.get(f"{app}/metrics", timeout=GUARD_S).text
    assert 'aimu_ray_requests_total{model="tiny",route="chat",status="200"}' in metrics
    assert 'aimu_ray_tokens_total{kind="completion",model="tiny"}' in metrics
    assert 'aimu_ray_request_errors_total{model="nope"' not in metrics          # 404s are not model traffic
    assert "aimu_ray_requests_in_flight" in metrics and "aimu_ray_vram_reserved_bytes" in metrics
    assert 'aimu_ray_memory_estimate_error_percent{model="tiny"}' in metrics


def test_metrics_split_each_answered_request_into_engine_and_serving_time(app, sdk):
    sdk.chat.completions.create(model="tiny", messages=USER, max_tokens=2)
    sdk.chat.completions.create(model="gpt", messages=USER)
    list(sdk.chat.completions.create(model="gpt", messages=USER, stream=True))
    samples = {(sample.name, sample.labels.get("model"), sample.labels.get("route")): sample.value
               for family in text_string_to_metric_families(httpx.get(f"{app}/metrics", timeout=GUARD_S).text)
               for sample in family.samples if not sample.labels.get("le")}
    for model in ("tiny", "gpt"):
        total = samples[("aimu_ray_request_seconds_sum", model, "chat")]
        engine = samples[("aimu_ray_engine_seconds_sum", model, "chat")]
        serving = samples[("aimu_ray_serving_seconds_sum", model, "chat")]
        assert samples[("aimu_ray_engine_seconds_count", model, "chat")] >= 1
        assert 0 < engine <= total and 0 < serving <= total                  # the engine's time is part of the whole
        assert engine + serving == pytest.approx(total, rel=0.05, abs=0.05)   # errors (not split) aside, all of it


def test_each_answer_tells_its_client_the_apps_time_and_the_engines_share(app):
    for model in ("tiny", "gpt"):
        answer = post(app, "/v1/chat/completions", {"model": model, "messages": USER, "max_tokens": 2})
        timing = dict(re.findall(r"(\w+);dur=([0-9.]+)", answer.headers["server-timing"]))
        assert answer.status_code == 200 and 0 < float(timing["engine"]) <= float(timing["app"])
    refused = post(app, "/v1/chat/completions", {"model": "nope", "messages": USER})
    assert refused.status_code == 404 and "engine" not in refused.headers["server-timing"]


# ----- cancellation -----

def model_state(task: str, folder) -> dict:
    """The served model's one copy's own account: requests in flight and engine counters."""
    key = load_for("hf", task, str(folder), {"max_batch_size": 8} if task == "text" else {}).key()
    [copy] = ray.get(get_registry().replicas.remote(key), timeout=GUARD_S)
    return ray.get(copy.info.remote(), timeout=GUARD_S)


def wait_idle(task: str, folder) -> dict:
    deadline = time.monotonic() + GUARD_S
    while (state := model_state(task, folder))["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.1)
    return state


def test_a_client_that_disconnects_stops_the_hf_generation(app, tiny_hf_dir):
    before = wait_idle("text", tiny_hf_dir)["engine"]["tokens"]
    body = {"model": "tiny", "messages": USER, "max_tokens": 480, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{app}/v1/chat/completions", json=body, timeout=GUARD_S,
                      headers={"Authorization": f"Bearer {KEY}"}) as answer:
        lines = answer.iter_lines()
        for _ in range(3):
            next(lines)
    after = wait_idle("text", tiny_hf_dir)
    assert after["in_flight"] == 0
    assert after["engine"]["tokens"] - before < 480


def test_a_client_that_disconnects_stops_the_diffusers_loop(app, tiny_sd_dir):
    before = wait_idle("image", tiny_sd_dir)["engine"]["steps"]
    body = {"model": "painter", "prompt": "a slow fox", "num_inference_steps": 200}     # limits.max_inference_steps
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{app}/v1/images/generations", json=body, timeout=1.5, headers={"Authorization": f"Bearer {KEY}"})
    after = wait_idle("image", tiny_sd_dir)
    assert after["in_flight"] == 0
    assert 0 < after["engine"]["steps"] - before < 200


# ----- handles for other Ray apps -----

async def test_the_handle_client_keeps_aimus_contract(app):
    client = await connect("tiny", system_message="Be brief.")
    answer = await client.chat("hello", generate_kwargs={"max_tokens": 4, "temperature": 0})
    assert isinstance(answer, str) and [m["role"] for m in client.messages] == ["system", "user", "assistant"]
    assert client.last_usage["output_tokens"] <= 4 and client.last_stop_reason in ("length", "stop")
    chunks = [chunk async for chunk in await client.chat("more", stream=True, generate_kwargs={"max_tokens": 4})]
    assert chunks and all(chunk.phase == "generating" for chunk in chunks)
    assert len(client.messages) == 5


async def test_the_handle_client_for_images_and_errors(app, fake):
    painter = await connect("painter")
    image = await painter.generate("a fox", num_inference_steps=2, seed=3)
    assert image.size == (64, 64)
    gpt = await connect("gpt")
    fake.fault(status=429, retry_after=0.1)
    with pytest.raises(aimu_ray.models.errors.RateLimitError):
        await gpt.chat("hi")
    with pytest.raises(ValueError, match="'nope'"):
        await connect("nope")


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (2, 2)).save(buffer, format="PNG")
    return buffer.getvalue()


async def test_another_serve_app_calls_the_served_model_through_handles(app):
    from examples.handle_app import Summarizer

    handle = serve.run(Summarizer.bind("tiny", "aimu_ray"), name="summarizer", route_prefix="/summarize")
    summary = await handle.summarize.remote("Ray scales Python.", max_tokens=4)
    assert isinstance(summary, str)
    over_http = post(app, "/summarize", {}, key=None)
    assert over_http.status_code == 200 and isinstance(over_http.json()["summary"], str)
    serve.delete("summarizer")


# ----- hardening: a key cut short, an answer in the wrong protocol, clients that leave, a replica lost -----

def _log_paths() -> list[str]:
    """This Ray session's Serve logs and worker stdout/stderr: what the replicas and workers print. (The logs
    folder has no public accessor in Ray 2.60.)"""
    logs = ray._private.worker._global_node.get_logs_dir_path()
    serve_logs = os.path.join(logs, "serve")
    return ([os.path.join(serve_logs, name) for name in os.listdir(serve_logs) if name.endswith(".log")]
            + [os.path.join(logs, name) for name in os.listdir(logs)
               if name.startswith("worker-") and name.endswith((".err", ".out"))])


def _log_texts(since: dict[str, int] | None = None) -> dict[str, str]:
    """Each log's text from the offset ``since`` gives it (its size at an earlier moment)."""
    texts = {}
    for path in _log_paths():
        with open(path, "rb") as file:
            file.seek((since or {}).get(path, 0))
            texts[path] = file.read().decode(errors="replace")
    return texts


def test_a_key_that_ends_a_long_provider_error_is_in_no_answer_and_no_log(app, fake):
    """The provider's message is cut to 300 characters; a key that straddles the cut must not keep its head."""
    marker = "x" * 60                                  # finds the failure in the logs
    fake.fault(status=500, message=marker + "y" * (300 - len(marker) - len(PROVIDER_KEY) + 1) + PROVIDER_KEY)
    answer = post(app, "/v1/chat/completions", {"model": "gpt", "messages": USER})
    assert answer.status_code == 502 and "***" in answer.text and not _holds_a_piece_of_the_key(answer.text)
    deadline = time.monotonic() + GUARD_S
    while not any(marker in text for text in _log_texts().values()):
        assert time.monotonic() < deadline, "the ingress replica never logged the failed request"
        time.sleep(0.2)
    leaks = [path for path, text in _log_texts().items() if _holds_a_piece_of_the_key(text)]
    assert not leaks


def _holds_a_piece_of_the_key(text: str, size: int = 14) -> bool:
    return any(PROVIDER_KEY[start:start + size] in text for start in range(len(PROVIDER_KEY) - size + 1))


def test_a_provider_that_streams_to_a_request_for_a_whole_answer_is_502(app, fake):
    fake.fault(stream_anyway=True)
    answer = post(app, "/v1/chat/completions", {"model": "gpt", "messages": USER})
    assert answer.status_code == 502, answer.text[:300]
    error = answer.json()["error"]
    assert error["type"] == "upstream_error" and "event stream" in error["message"]


def test_clients_that_leave_streams_are_counted_499_and_leave_no_traceback(app, fake):
    def left() -> float:
        metrics = httpx.get(f"{app}/metrics", timeout=GUARD_S).text
        line = 'aimu_ray_requests_total{model="gpt",route="chat",status="499"} '
        return next((float(row.removeprefix(line)) for row in metrics.splitlines() if row.startswith(line)), 0.0)

    before, offsets = left(), {path: os.path.getsize(path) for path in _log_paths()}
    for _ in range(3):
        fake.reply("word " * 200)
        fake.fault(chunk_delay_s=0.05)
        with httpx.stream("POST", f"{app}/v1/chat/completions", timeout=GUARD_S,
                          json={"model": "gpt", "messages": USER, "stream": True},
                          headers={"Authorization": f"Bearer {KEY}"}) as answer:
            lines = answer.iter_lines()
            for _ in range(3):
                next(lines)
    deadline = time.monotonic() + GUARD_S
    while left() < before + 3:
        assert time.monotonic() < deadline, "the ingress never finished the streams its clients left"
        time.sleep(0.2)
    printed = "".join(_log_texts(offsets).values())
    assert "Traceback" not in printed and "internal error" not in printed, printed[-6000:]


async def test_a_copy_lost_mid_request_is_503_with_retry_after_and_is_replaced(app, tiny_hf_dir):
    """A model's copy dies under a request: the request may have run, so it is not sent again; the caller gets
    503 + Retry-After, and the registry puts a new copy in its place."""
    url = f"{app}/v1/chat/completions"
    body = {"model": "busy", "messages": USER, "max_tokens": 2000, "temperature": 0}
    key = ServedModel(name="busy", model=f"hf:{tiny_hf_dir}", options={"max_batch_size": 1},
                      max_in_flight=2).model_load().key()
    [copy] = ray.get(get_registry().replicas.remote(key), timeout=GUARD_S)
    async with httpx.AsyncClient(timeout=GUARD_S, headers={"Authorization": f"Bearer {KEY}"}) as http:
        pending = asyncio.create_task(http.post(url, json=body))
        deadline = time.monotonic() + GUARD_S
        while not (await copy.info.remote())["in_flight"]:
            assert time.monotonic() < deadline and not pending.done(), "the request never reached the copy"
            await asyncio.sleep(0.02)
        ray.kill(copy)
        answer = await pending
        assert answer.status_code == 503 and answer.headers["retry-after"] == "1", answer.text[:300]
        error = answer.json()["error"]
        assert error["type"] == "model_unavailable_error" and "died while running this request" in error["message"]
        short = dict(body, max_tokens=2)
        while (await http.post(url, json=short)).status_code != 200:     # a new copy answers
            assert time.monotonic() < deadline, "the registry did not replace the lost copy"
            await asyncio.sleep(0.5)


class Verdict(BaseModel):
    ok: bool


def test_response_format_reaches_a_remote_model_and_the_sdk_parses_the_answer(sdk, fake):
    fake.reply('{"ok": true}')
    completion = sdk.chat.completions.parse(model="plain", messages=[{"role": "user", "content": "Fine?"}],
                                            response_format=Verdict)
    assert completion.choices[0].message.parsed == Verdict(ok=True)
    sent = fake.requests[-1].body["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["name"] == "Verdict"
    assert sent["json_schema"]["schema"]["properties"] == {"ok": {"title": "Ok", "type": "boolean"}}
    fake.reply('{"any": 1}')
    plain = sdk.chat.completions.create(model="plain", messages=[{"role": "user", "content": "JSON?"}],
                                        response_format={"type": "json_object"})
    assert json.loads(plain.choices[0].message.content) == {"any": 1}
    assert fake.requests[-1].body["response_format"]["json_schema"]["schema"] == {"type": "object"}


def test_an_in_process_model_answers_under_the_schema_as_a_grammar(sdk):
    """The tiny random-weight model says nothing sensible, but under the grammar it says it as a Verdict."""
    completion = sdk.chat.completions.parse(model="tiny", messages=[{"role": "user", "content": "Fine?"}],
                                            response_format=Verdict, max_tokens=32)
    assert isinstance(completion.choices[0].message.parsed, Verdict)
    chunks = list(sdk.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Fine?"}],
                                              response_format={"type": "json_schema", "json_schema": {
                                                  "name": "verdict", "schema": Verdict.model_json_schema()}},
                                              max_tokens=32, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert Verdict.model_validate_json(text)


def test_a_bad_response_format_is_a_400(app):
    missing = post(app, "/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "x"}],
                                                 "response_format": {"type": "json_schema"}})
    assert missing.status_code == 400 and "json_schema" in missing.text
    odd = post(app, "/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "x"}],
                                             "response_format": {"type": "json_schema", "json_schema": {
                                                 "name": "x", "schema": {"type": "object", "required": 5}}}})
    assert odd.status_code == 400 and "schema" in odd.json()["error"]["message"]


def test_one_model_is_retrieved_by_id_as_the_sdk_asks(sdk):
    card = sdk.models.retrieve("tiny")
    assert card.id == "tiny" and card.object == "model"
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        sdk.models.retrieve("nope")


def test_fields_that_change_nothing_here_are_taken(sdk):
    reply = sdk.chat.completions.create(model="plain", messages=[{"role": "user", "content": "hi"}], store=False,
                                        metadata={"team": "a"}, parallel_tool_calls=True, user="u1")
    assert reply.choices[0].message.content == "echo: hi"
