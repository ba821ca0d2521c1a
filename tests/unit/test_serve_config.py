"""The Serve app's config, HTTP bodies, metrics and model states, without Ray or Serve running."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from aimu_ray.deployments.config import AppConfig, ServedModel, load_config
from aimu_ray.deployments.metrics import Metrics
from aimu_ray.models.placements import ModelPlacement
from aimu_ray.deployments.openai_api import (AudioGenerationRequest, ChatCompletionRequest, ImageGenerationRequest,
                                             finish_reason)

USER = [{"role": "user", "content": "hi"}]


def config(*models: dict, **fields) -> AppConfig:
    return AppConfig.model_validate({"models": list(models), **fields})


def test_a_config_needs_models_with_unique_names():
    with pytest.raises(ValidationError, match="at least 1"):
        config()
    with pytest.raises(ValidationError, match="repeated: a"):
        config({"name": "a", "model": "hf:x"}, {"name": "a", "model": "hf:y"})


@pytest.mark.parametrize("model, message", [
    ({"name": "a", "model": "nope:x"}, "nope"),
    ({"name": "a", "model": "vllm:x@http://h:1/v1;wings"}, "flag"),
    ({"name": "a", "model": "anthropic:claude", "task": "image"}, "image models"),
    ({"name": "a", "model": "gemini:imagen", "task": "audio"}, "audio models"),
    ({"name": "a", "model": "hf:x", "options": {"n_ctx": 8}}, "n_ctx"),
    ({"name": "a", "model": "anthropic:claude", "placement": {"num_gpus": 0.5}}, "in-process"),
    ({"name": "a", "model": "hf:x", "api_key_env": "K"}, "remote providers"),
    ({"name": "../etc", "model": "hf:x"}, "pattern"),
    ({"name": "a", "model": "hf:x", "num_replicas": 2}, "num_replicas is Serve's.*takes replicas"),
    ({"name": "a", "model": "hf:x", "autoscaling_config": {"max_replicas": 3}}, "min_replicas/max_replicas"),
    ({"name": "a", "model": "hf:x", "replicas": 2, "max_replicas": 3}, "not both"),
    ({"name": "a", "model": "hf:x", "min_replicas": 3, "max_replicas": 1}, "above max_replicas"),
    ({"name": "a", "model": "anthropic:claude", "replicas": 2}, "in-process models"),
    ({"name": "a", "model": "anthropic:claude", "load": "on_demand"}, "in-process models"),
    ({"name": "a", "model": "hf:x", "load": "lazily"}, "startup"),
])
def test_bad_models_fail_when_the_config_loads(model, message):
    with pytest.raises(ValidationError, match=message):
        config(model)


def test_a_served_in_process_model_has_no_idle_keep_alive_and_keeps_its_pins():
    served = ServedModel(name="q", model="hf:/models/q", options={"max_batch_size": 4}, placement={"num_gpus": 0.5})
    load = served.model_load()
    assert load.keep_alive_s is None and load.options == {"max_batch_size": 4} and load.placement.num_gpus == 0.5
    assert served.in_process and served.load == "startup" and not load.pin
    assert (load.replicas.min_replicas, load.replicas.max_replicas) == (1, 1)


def test_a_served_model_carries_its_copies_keep_alive_and_pin_into_its_load():
    served = ServedModel(name="q", model="hf:/models/q", min_replicas=1, max_replicas=4, target_in_flight=2,
                         max_in_flight=32, load="on_demand", keep_alive_s=300, pin=True)
    load = served.model_load()
    assert (load.replicas.min_replicas, load.replicas.max_replicas, load.replicas.target_in_flight) == (1, 4, 2)
    assert (load.max_in_flight, load.keep_alive_s, load.pin) == (32, 300, True)
    assert load.key() == ServedModel(name="other", model="hf:/models/q").model_load().key()   # the same weights


def test_yaml_expands_environment_variables_and_serve_args_name_a_file(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELS", "/srv/models")
    path = tmp_path / "app.yaml"
    path.write_text("port: 9000\nmodels:\n  - {name: q, model: 'hf:${MODELS}/q'}\n")
    assert AppConfig.from_yaml(path).models[0].model == "hf:/srv/models/q"
    assert load_config({"config": str(path)}).port == 9000                  # serve run ... config=app.yaml
    assert load_config({"models": [{"name": "q", "model": "hf:q"}]}).port == 8000   # args inline (KubeRay)


def test_bearer_keys_come_from_the_config_and_the_environment(monkeypatch):
    monkeypatch.setenv("KEYS", "k2, k3,")
    app = config({"name": "a", "model": "hf:x"}, api_keys=["k1"], api_keys_env="KEYS")
    assert app.bearer_keys() == {"k1", "k2", "k3"}
    assert "k1" not in repr(app)


def test_chat_bodies_refuse_unknown_fields_and_fetchable_images():
    with pytest.raises(ValidationError, match="temprature"):
        ChatCompletionRequest(model="m", messages=USER, temprature=1)
    for url in ("http://169.254.169.254/latest", "file:///etc/passwd", "/etc/passwd"):
        with pytest.raises(ValidationError, match="inline data URLs"):
            ChatCompletionRequest(model="m", messages=[{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": url}}]}])
    with pytest.raises(ValidationError, match="JSON object"):
        ChatCompletionRequest(model="m", messages=[{"role": "assistant", "tool_calls": [
            {"id": "c", "function": {"name": "f", "arguments": "[1]"}}]}])


def test_chat_bodies_become_aimu_calls():
    body = ChatCompletionRequest(model="m", max_completion_tokens=9, max_tokens=3, temperature=0, stop=["x"],
                                 reasoning_effort="minimal", messages=[
                                     {"role": "developer", "content": "Be brief."},
                                     {"role": "assistant", "tool_calls": [
                                         {"id": "c1", "function": {"name": "f", "arguments": '{"a": 1}'}}]},
                                     {"role": "tool", "tool_call_id": "c1", "content": "ok"}])
    assert body.generate_kwargs() == {"max_tokens": 9, "temperature": 0, "stop": ["x"]}
    assert body.thinking() == "low" and ChatCompletionRequest(model="m", messages=USER,
                                                              reasoning_effort="none").thinking() is False
    system, call, result = (message.as_aimu() for message in body.messages)
    assert system == {"role": "system", "content": "Be brief."}
    assert call["tool_calls"][0]["function"]["arguments"] == {"a": 1}
    assert result == {"role": "tool", "content": "ok", "tool_call_id": "c1"}


def test_a_wav_answer_carries_one_clip_so_more_are_refused_before_any_work():
    with pytest.raises(ValidationError, match="one clip"):
        AudioGenerationRequest(model="m", prompt="p", n=2)
    assert AudioGenerationRequest(model="m", prompt="p", n=2, response_format="b64_json").n == 2


def test_image_sizes_and_finish_reasons():
    assert ImageGenerationRequest(model="m", prompt="p", size="512x768").dimensions() == {"width": 512,
                                                                                         "height": 768}
    assert ImageGenerationRequest(model="m", prompt="p").dimensions() == {}
    with pytest.raises(ValidationError):
        ImageGenerationRequest(model="m", prompt="p", size="0x5")
    assert [finish_reason(r, []) for r in ("max_tokens", "length", "end_turn", None, "refusal")] == \
        ["length", "length", "stop", "stop", "content_filter"]
    assert finish_reason("stop", [{"id": "c"}]) == "tool_calls"


def test_memory_gauges_sum_a_deployments_replicas_under_its_public_name():
    metrics = Metrics()
    replica = dict(model="hf:q", task="text", key="k", state="serving", node_id="n", deployment="model-q", name="q",
                   device="cuda", need_bytes=10, reserved_bytes=10)
    rows = [ModelPlacement(**replica, used_bytes=7, used_vram_bytes=7),
            ModelPlacement(**replica, used_bytes=8, used_vram_bytes=8),
            ModelPlacement(model="hf:other", task="text", key="o", state="ready", node_id="n", device="cpu",
                           need_bytes=50, reserved_bytes=99),
            ModelPlacement(model="hf:cpu", task="text", key="c", state="ready", node_id="n", device="cpu",
                           need_bytes=100, reserved_bytes=100, used_bytes=120, used_ram_bytes=900)]
    metrics.set_memory(rows)
    text = metrics.render().decode()
    assert 'aimu_ray_vram_reserved_bytes{model="q"} 20.0' in text
    assert 'aimu_ray_vram_used_bytes{model="q"} 15.0' in text
    assert 'aimu_ray_vram_reserved_bytes{model="hf:other"} 0.0' in text
    assert 'aimu_ray_memory_estimated_bytes{model="q"} 20.0' in text
    assert 'aimu_ray_memory_estimate_error_percent{model="q"} -25.0' in text       # 15 measured of 20 estimated
    assert 'aimu_ray_memory_estimate_error_percent{model="hf:cpu"} 20.0' in text   # the RAM its load added
    assert 'aimu_ray_memory_estimated_bytes{model="hf:other"} 50.0' in text
    assert 'aimu_ray_memory_estimate_error_percent{model="hf:other"}' not in text  # not measured yet: no figure
    assert "# HELP aimu_ray_memory_estimate_error_percent how far the memory" in text
