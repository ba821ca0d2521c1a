"""Clients of in-process models, without Ray: loader options and placement pins are split and checked
at construction, actor identity follows the load options, and media calls are validated before any work."""

from __future__ import annotations

import pytest

from aimu_ray import aio
from aimu_ray.models.errors import MissingAPIKeyError
from aimu_ray.models.load import ModelLoad, load_for


def test_hf_client_sends_hf_vocabulary_and_keeps_the_load_on_the_client():
    client = aio.client("hf:Qwen/Qwen3-8B", model_kwargs={"dtype": "bfloat16"}, num_gpus=0.5)
    request = client._request([{"role": "user", "content": "hi"}], {"max_tokens": 16}, False, [], False)
    assert request.params["max_new_tokens"] == 16 and "max_tokens" not in request.params
    assert request.params["chat_template_kwargs"] == {"enable_thinking": False}
    assert client._load.options == {"model_kwargs": {"dtype": "bfloat16"}}
    assert client._load.placement.num_gpus == 0.5


def test_llamacpp_needs_a_model_path_and_maps_repetition_penalty():
    with pytest.raises(ValueError, match="model_path="):
        aio.client("llamacpp:qwen3-8b")
    client = aio.client("llamacpp:qwen3-8b", model_path="/models/q.gguf", n_gpu_layers=-1)
    request = client._request([{"role": "user", "content": "hi"}], {"repetition_penalty": 1.2}, None, [], False)
    assert request.params["repeat_penalty"] == 1.2


@pytest.mark.parametrize("kwargs, error", [
    ({"base_url": "http://x"}, TypeError),            # endpoint arguments belong to remote providers
    ({"n_ctx": 4096}, TypeError),                     # a llama.cpp option on an hf model
    ({"device": "gpu"}, ValueError),                  # not cpu / cuda / cuda:N
])
def test_bad_in_process_arguments_fail_at_construction(kwargs, error):
    with pytest.raises(error):
        aio.client("hf:org/model", **kwargs)


def test_remote_providers_refuse_loader_options():
    with pytest.raises(TypeError, match="model_path"):
        aio.client("lmstudio:qwen3-8b", model_path="/x.gguf")


def test_actor_identity_follows_load_options_but_not_keep_alive():
    base = load_for("hf", "text", "org/model", {"model_kwargs": {"dtype": "float16"}})
    same = load_for("hf", "text", "org/model", {"model_kwargs": {"dtype": "float16"}, "keep_alive_s": 5})
    other = load_for("hf", "text", "org/model", {"model_kwargs": {"dtype": "bfloat16"}})
    pinned = load_for("hf", "text", "org/model", {"model_kwargs": {"dtype": "float16"}, "gpu_index": 1})
    assert base.actor_name() == same.actor_name()
    assert len({base.key(), other.key(), pinned.key()}) == 3
    assert base.actor_name().startswith("model:hf:text:org_model:")


def test_aimu_device_hint_in_model_kwargs_becomes_a_placement_pin():
    load = load_for("hf", "image", "org/sdxl", {"model_kwargs": {"device": "cuda:1", "variant": "fp16"}})
    assert load.placement.device == "cuda:1" and load.placement.gpu_constraint == 1
    assert load.options["model_kwargs"] == {"variant": "fp16"}
    mapped = load_for("hf", "text", "org/big", {"model_kwargs": {"device_map": "auto"}})
    assert mapped.placement.device_map == "auto" and mapped.options["model_kwargs"] == {"device_map": "auto"}


def test_keep_alive_none_means_never_unload():
    assert ModelLoad(provider="hf", task="text", model_id="m", keep_alive_s=None).keep_alive_s is None


@pytest.mark.parametrize("model", ["openai:gpt-image-1", "hf:org/sd@http://x", "sd-without-provider"])
def test_image_model_strings_are_hf_or_gemini(model):
    with pytest.raises(ValueError):
        aio.image_client(model)


def test_audio_models_are_hf_only_with_aimus_words():
    with pytest.raises(ValueError, match=r"Unknown audio provider 'gemini'. Available: \['hf'\]"):
        aio.audio_client("gemini:lyria")
    with pytest.raises(ValueError, match="'hf:<id>'"):
        aio.audio_client("hf:x@http://h:1")


def test_gemini_images_need_a_key_from_the_env_or_model_kwargs(monkeypatch):
    with pytest.raises(MissingAPIKeyError, match="GOOGLE_API_KEY"):
        aio.image_client("gemini:nano-banana")
    client = aio.image_client("gemini:nano-banana", model_kwargs={"api_key": "k-123"})
    assert "k-123" not in repr(client._endpoint)


async def test_media_calls_are_validated_before_any_work():
    images, audio = aio.image_client("hf:org/sd"), aio.audio_client("hf:org/musicgen")
    with pytest.raises(ValueError, match="num_images"):
        await images.generate("x", num_images=0)
    with pytest.raises(ValueError, match="format"):
        await images.generate("x", format="jpeg")
    with pytest.raises(ValueError, match="num_audio"):
        await audio.generate("x", num_audio=0)
    with pytest.raises(ValueError, match="format"):
        await audio.generate("x", format="mp3")
    with pytest.raises(TypeError):
        await images.generate("x", reference_image=12)
    assert images._backend is None and audio._backend is None      # nothing was sent


def test_default_media_models_come_from_the_environment(monkeypatch):
    with pytest.raises(ValueError, match="AIMU_IMAGE_MODEL"):
        aio.image_client()
    monkeypatch.setenv("AIMU_AUDIO_MODEL", "hf:facebook/musicgen-small")
    assert aio.audio_client().model == "hf:facebook/musicgen-small"
