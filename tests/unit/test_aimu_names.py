"""aimu's names for the factories' own surface, at aimu's import paths, with aimu's meaning (issue 14).

Where aimu is installed beside aimu_ray (the bench extra), each name is checked against aimu itself: that aimu has
it at that path, and that it behaves the same. aimu's enum members are taken wherever a model string is.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

import aimu_ray
from aimu_ray.clients import loaded_models
import aimu_ray.aio
import aimu_ray.models
from aimu_ray.models import discovery
from aimu_ray.models.model_string import AIMU_ENUMS, ResolvedModel
from aimu_ray.models.providers import PROVIDERS
from tests.fakes.server import FakeServer

# aimu's path -> the names aimu has there that aimu_ray now has too
AT_TOP = ["ModelClient", "ImageClient", "AudioClient", "resolve_model_string", "available_text_models",
          "available_image_models", "available_audio_models", "HAS_HF_IMAGE", "HAS_HF_AUDIO", "HAS_GEMINI_IMAGE",
          "clear_hf_cache", "clear_llamacpp_cache", "parse_json_response", "generate_json", "extract_tool_calls",
          "strip_inert_keys", "INERT_MESSAGE_KEYS", "encode_tool_call_arguments"]
AT_MODELS = ["resolve_model_string", "available_text_models", "available_image_models", "available_audio_models",
             "HAS_HF", "HAS_OLLAMA", "HAS_ANTHROPIC", "HAS_OPENAI_COMPAT", "HAS_LLAMACPP", "HAS_HF_IMAGE",
             "HAS_HF_AUDIO", "HAS_GEMINI_IMAGE", "parse_json_response", "generate_json", "extract_tool_calls",
             "strip_inert_keys", "INERT_MESSAGE_KEYS", "encode_tool_call_arguments"]
AT_AIO = ["AsyncModelClient", "AsyncImageClient", "AsyncAudioClient"]
PATHS = {"aimu_ray": AT_TOP, "aimu_ray.models": AT_MODELS, "aimu_ray.aio": AT_AIO}
CASES = [(path, name) for path, names in PATHS.items() for name in names]


def _aimu():
    return pytest.importorskip("aimu")


def _enum(module: str, name: str):
    return getattr(importlib.import_module(module), name)


# ----- the names, where aimu has them -----

@pytest.mark.parametrize("path, name", CASES)
def test_each_name_is_at_its_path(path, name):
    module = importlib.import_module(path)
    assert hasattr(module, name)
    assert name in module.__all__


@pytest.mark.parametrize("path, name", CASES)
def test_aimu_has_each_name_at_the_same_path(path, name):
    _aimu()
    assert hasattr(importlib.import_module(path.replace("aimu_ray", "aimu", 1)), name)


def test_the_factories_are_the_clients_of_that_kind():
    assert aimu_ray.ModelClient is aimu_ray.TextClient
    assert aimu_ray.aio.AsyncModelClient is aimu_ray.aio.AsyncTextClient
    assert isinstance(aimu_ray.client("ollama:qwen3:8b"), aimu_ray.ModelClient)
    assert isinstance(aimu_ray.aio.client("ollama:qwen3:8b"), aimu_ray.aio.AsyncModelClient)


def test_import_stays_cheap():
    """No Ray, torch, SDK or aimu at ``import aimu_ray`` (the extras flags ask find_spec, nothing more)."""
    heavy = ("ray", "torch", "transformers", "diffusers", "huggingface_hub", "aimu", "openai", "anthropic", "ollama",
             "google.genai", "soundfile", "llama_cpp")
    code = (f"import sys, aimu_ray, aimu_ray.aio, aimu_ray.models; print([m for m in {heavy!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ----- aimu's enum members wherever a model string is taken -----

def test_the_enum_table_is_aimus():
    """Each aimu enum class maps to the provider aimu's own factories route it to."""
    _aimu()
    from aimu.models import audio_client, image_client, model_client

    theirs = {(e.module, e.enum_name): (e.prefix, "text") for e in model_client._TEXT_PROVIDERS}
    theirs |= {(e.module, e.enum_name): (e.prefix, "image") for e in image_client._entries()}
    theirs |= {(e.module, e.enum_name): (e.prefix, "audio") for e in audio_client._entries()}
    assert AIMU_ENUMS == theirs
    assert {provider for provider, _ in AIMU_ENUMS.values()} <= set(PROVIDERS)


@pytest.mark.parametrize("row", sorted(AIMU_ENUMS), ids=lambda row: row[1])
def test_every_member_becomes_its_model_string(row):
    _aimu()
    enum = _enum(*row)
    provider, task = AIMU_ENUMS[row]
    for member in enum:
        ref = aimu_ray.models.parse_model_string(member)
        assert (ref.provider, ref.model_id, ref.base_url, ref.flags) == (provider, member.value, None, ())


@pytest.mark.parametrize("row", sorted(row for row, (_, task) in AIMU_ENUMS.items() if task == "text"),
                         ids=lambda row: row[1])
def test_a_text_member_reads_as_aimus(row):
    """``client.model`` built from a member reads as the member does in aimu: its catalog's capabilities."""
    _aimu()
    fields = ("value", "supports_tools", "supports_thinking", "supports_vision", "supports_audio",
              "supports_structured_output", "generation_kwargs", "nonthinking_generation_kwargs", "thinking_optional")
    for member in _enum(*row):
        resolved = aimu_ray.resolve_model_string(member)
        assert resolved.provider == AIMU_ENUMS[row][0]
        assert {f: getattr(resolved, f) for f in fields} == {f: getattr(member, f) for f in fields}
        assert bool(resolved.thinking_levels) == bool(member.thinking_levels)


def test_constructors_take_enum_members(monkeypatch):
    """No request is made: construction only."""
    _aimu()
    import aimu.models as am

    monkeypatch.setenv("ANTHROPIC_API_KEY", "k")
    monkeypatch.setenv("GOOGLE_API_KEY", "k")
    sonnet = am.AnthropicModel.CLAUDE_SONNET_4_6
    for make in (aimu_ray.client, aimu_ray.ModelClient, aimu_ray.aio.client, aimu_ray.aio.AsyncModelClient):
        client = make(sonnet)
        assert str(client.model) == "anthropic:claude-sonnet-4-6"
        assert client.model.supports_thinking == sonnet.supports_thinking
    assert aimu_ray.ModelClient(sonnet, system_message="Be brief.").system_message == "Be brief."
    assert aimu_ray.client(list(am.HuggingFaceModel)[0]).model_load.model_id == list(am.HuggingFaceModel)[0].value
    llama = aimu_ray.ModelClient(list(am.LlamaCppModel)[0], model_path="/models/x.gguf")     # aimu's docstring form
    assert llama.model_load.options == {"model_path": "/models/x.gguf"}
    lmstudio = aimu_ray.ModelClient(list(am.LMStudioOpenAIModel)[0], base_url="http://myserver:1234/v1")
    assert lmstudio.endpoint.base_url == "http://myserver:1234/v1"

    sd = am.HuggingFaceImageModel.SD_1_5
    for make in (aimu_ray.image_client, aimu_ray.ImageClient, aimu_ray.aio.image_client, aimu_ray.aio.AsyncImageClient):
        assert make(sd).model == f"hf:{sd.value}"
    banana = am.GeminiImageModel.NANO_BANANA
    assert aimu_ray.image_client(banana).model == f"gemini:{banana.value}"
    musicgen = am.HuggingFaceAudioModel.MUSICGEN_SMALL
    for make in (aimu_ray.audio_client, aimu_ray.AudioClient, aimu_ray.aio.audio_client, aimu_ray.aio.AsyncAudioClient):
        assert make(musicgen).model == f"hf:{musicgen.value}"


def test_what_aimu_refuses_is_refused():
    """A bare spec is the enum's value type, not a model (aimu: TypeError); a modality aimu_ray has no provider for,
    or a member of another task's enum given to a text client, is named."""
    aimu = _aimu()
    import aimu.models as am

    spec = am.AnthropicModel.CLAUDE_SONNET_4_6.spec
    with pytest.raises(TypeError):
        aimu.models.ModelClient(spec)
    with pytest.raises(TypeError, match="value type held by enum members"):
        aimu_ray.client(spec)
    with pytest.raises(TypeError, match="value type held by enum members"):
        aimu_ray.image_client(am.HuggingFaceImageModel.SD_1_5.spec)
    with pytest.raises(ValueError, match="no provider for aimu's HuggingFaceSpeechModel"):
        aimu_ray.client(list(am.HuggingFaceSpeechModel)[0])
    with pytest.raises(ValueError, match="is an image model: pass it to image_client"):
        aimu_ray.client(am.HuggingFaceImageModel.SD_1_5)
    with pytest.raises(TypeError):
        aimu_ray.models.parse_model_string(42)


# ----- resolve_model_string -----

def test_resolve_model_string_is_what_a_client_reads_as_its_model():
    resolved = aimu_ray.resolve_model_string("ollama:qwen3:8b")
    assert isinstance(resolved, ResolvedModel)
    assert resolved == aimu_ray.client("ollama:qwen3:8b").model
    assert (resolved.value, resolved.provider) == ("qwen3:8b", "ollama")
    assert aimu_ray.client(resolved).model is resolved                       # passed back as it is
    with pytest.raises(ValueError, match="Unknown provider"):
        aimu_ray.resolve_model_string("nope:model")
    with pytest.raises(ValueError, match="provider:model_id"):
        aimu_ray.resolve_model_string("qwen3")


def test_resolve_model_string_agrees_with_aimu_on_a_catalogued_id():
    aimu = _aimu()
    theirs = aimu.resolve_model_string("anthropic:claude-sonnet-4-6")
    ours = aimu_ray.resolve_model_string("anthropic:claude-sonnet-4-6")
    assert ours.value == theirs.value
    with pytest.raises(ValueError, match="Unknown provider"):
        aimu.resolve_model_string("nope:model")


# ----- HAS_* -----

@pytest.mark.parametrize("flag", sorted(discovery.EXTRAS))
def test_flags_say_whether_the_extra_is_installed(flag):
    assert getattr(aimu_ray.models, flag) is discovery.installed(*discovery.EXTRAS[flag])
    if hasattr(aimu_ray, flag):
        assert getattr(aimu_ray, flag) is getattr(aimu_ray.models, flag)


@pytest.mark.parametrize("flag", sorted(discovery.EXTRAS))
def test_a_flag_is_never_true_where_aimus_is_false(flag):
    """aimu asks for one module per flag; aimu_ray's extra needs that one and maybe more."""
    _aimu()
    import aimu.models

    assert getattr(aimu_ray.models, flag) <= getattr(aimu.models, flag)


def test_a_missing_module_turns_a_flag_off(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "diffusers" else real(name, *a))
    assert not discovery.installed(*discovery.EXTRAS["HAS_HF_IMAGE"])
    assert discovery.installed("json")
    assert not discovery.installed("no_such_package.sub")


# ----- discovery -----

def _write(path: Path, text: str = "x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _repo(cache: Path, repo: str, files: dict[str, str], revision: str = "abc123") -> Path:
    folder = cache / f"models--{repo.replace('/', '--')}"
    _write(folder / "refs" / "main", revision)
    for name, text in files.items():
        _write(folder / "snapshots" / revision / name, text)
    return folder / "snapshots" / revision


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """A Hugging Face cache with one repo of each kind, and some that are not servable."""
    cache = tmp_path / "hub"
    template = json.dumps({"chat_template": "{{ messages }}"})
    _repo(cache, "org/chat", {"config.json": "{}", "tokenizer_config.json": template, "model.safetensors": "w"})
    _repo(cache, "org/vlm", {"config.json": "{}", "chat_template.jinja": "t", "model-00001-of-00002.safetensors": "w"})
    _repo(cache, "org/base", {"config.json": "{}", "tokenizer_config.json": "{}", "model.safetensors": "w"})
    _repo(cache, "org/partial", {"config.json": "{}", "tokenizer_config.json": template})          # no weights yet
    _repo(cache, "org/sd", {"model_index.json": json.dumps({"_class_name": "StableDiffusionPipeline"}),
                            "unet/diffusion_pytorch_model.safetensors": "w"})
    _repo(cache, "cvssp/audioldm2", {"model_index.json": json.dumps({"_class_name": "AudioLDM2Pipeline"}),
                                     "unet/diffusion_pytorch_model.safetensors": "w"})
    _repo(cache, "org/video", {"model_index.json": json.dumps({"_class_name": "TextToVideoSDPipeline"}),
                               "unet/diffusion_pytorch_model.safetensors": "w"})
    _repo(cache, "facebook/musicgen-small", {"config.json": json.dumps({"model_type": "musicgen"}),
                                             "model.safetensors": "w"})
    broken = _repo(cache, "org/broken", {"config.json": "{}", "tokenizer_config.json": template})
    (broken / "model.safetensors").symlink_to(broken / "missing-blob")                # an unfinished download
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(discovery, "_has", lambda flag: True)
    monkeypatch.setattr(discovery, "_ollama_models", lambda: [])
    monkeypatch.setattr(discovery, "_local_server_models", lambda: [])
    return cache


def test_hf_cache_discovery_by_task(hf_cache):
    assert [str(m) for m in aimu_ray.available_text_models()] == ["hf:org/chat", "hf:org/vlm"]
    assert aimu_ray.available_image_models() == ["hf:org/sd"]
    assert aimu_ray.available_audio_models() == ["hf:cvssp/audioldm2", "hf:facebook/musicgen-small"]
    assert aimu_ray.available_text_models(include_hf_cache=False) == []


def test_discovered_models_go_straight_to_the_factories(hf_cache):
    text = aimu_ray.available_text_models()[0]
    assert isinstance(text, ResolvedModel) and (text.value, text.name) == ("org/chat", "org/chat")
    assert aimu_ray.client(text).model_load.model_id == "org/chat"
    assert aimu_ray.image_client(aimu_ray.available_image_models()[0]).model == "hf:org/sd"
    assert aimu_ray.audio_client(aimu_ray.available_audio_models()[0]).model == "hf:cvssp/audioldm2"


def test_discovery_needs_the_extra(hf_cache, monkeypatch):
    monkeypatch.setattr(discovery, "_has", lambda flag: False)
    assert aimu_ray.available_text_models() == []
    assert aimu_ray.available_image_models() == []
    assert aimu_ray.available_audio_models() == []


def test_an_empty_or_absent_cache_finds_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "none"))
    monkeypatch.setattr(discovery, "_has", lambda flag: True)
    assert discovery._hf_cached() == []


def test_the_cache_is_where_huggingface_hub_puts_it(tmp_path, monkeypatch):
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    assert discovery.hf_hub_cache() == tmp_path / "hub"
    pytest.importorskip("huggingface_hub")
    code = "import huggingface_hub.constants as c; print(c.HF_HUB_CACHE)"
    theirs = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={**os.environ, "HF_HOME": str(tmp_path)}).stdout.strip()
    assert Path(theirs) == discovery.hf_hub_cache()


def test_a_running_ollama_servers_models(monkeypatch):
    monkeypatch.setattr(discovery, "_has", lambda flag: True)
    monkeypatch.setattr(discovery, "_hf_cached", lambda: [])
    monkeypatch.setattr(discovery, "_local_server_models", lambda: [])
    with FakeServer(models=["qwen3:8b", "nomic-embed-text:latest"]) as ollama:
        monkeypatch.setenv("OLLAMA_HOST", ollama.url.removeprefix("http://"))      # host:port, as Ollama takes it
        found = aimu_ray.available_text_models()
    assert [str(m) for m in found] == ["ollama:qwen3:8b"]                             # the embedding model is left out
    assert found[0].supports_tools


def test_local_openai_compatible_servers(monkeypatch):
    """One request per default URL; a URL several providers share names the one the server says it is, else the
    model goes to openai-compat at that URL."""
    monkeypatch.setattr(discovery, "_has", lambda flag: True)
    with FakeServer(models=["Qwen/Qwen3-8B"]) as alone, FakeServer(models=["Qwen/Qwen3-8B"]) as shared:
        table = {key: dataclasses.replace(spec, default_base_url=f"{alone.url}/v1" if key == "lmstudio" else
                                          f"{shared.url}/v1" if key in ("vllm", "hf-openai") else
                                          "http://127.0.0.1:9/v1" if spec.default_base_url and not spec.is_cloud
                                          else spec.default_base_url)
                 for key, spec in PROVIDERS.items()}
        monkeypatch.setattr(discovery, "PROVIDERS", table)
        found = [str(m) for m in discovery._local_server_models()]
        assert found == ["lmstudio:Qwen/Qwen3-8B", f"openai-compat:Qwen/Qwen3-8B@{shared.url}/v1"]
        assert [r.path for r in alone.requests] == ["/v1/models"]
        assert [r.path for r in shared.requests] == ["/v1/models"]


def test_cloud_models_only_when_asked_and_keyed(monkeypatch):
    monkeypatch.setattr(discovery, "_has", lambda flag: True)
    monkeypatch.setattr(discovery, "_hf_cached", lambda: [])
    monkeypatch.setattr(discovery, "_ollama_models", lambda: [])
    monkeypatch.setattr(discovery, "_local_server_models", lambda: [])
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    with FakeServer(models=["gpt-4.1", "text-embedding-3-small", "claude-sonnet-4-6"]) as cloud:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("OPENAI_BASE_URL", f"{cloud.url}/v1")
        monkeypatch.setenv("ANTHROPIC_API_KEY", "ak-test")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", cloud.url)
        assert aimu_ray.available_text_models() == []                       # cloud-free unless asked, as aimu
        assert cloud.requests == []
        found = [str(m) for m in aimu_ray.available_text_models(include_cloud=True)]
        headers = {r.headers.get("authorization") or r.headers.get("x-api-key") for r in cloud.requests}
    assert found == ["anthropic:gpt-4.1", "anthropic:claude-sonnet-4-6", "openai:gpt-4.1", "openai:claude-sonnet-4-6"]
    assert headers == {"ak-test", "Bearer sk-test"}


def test_nothing_listening_finds_nothing(monkeypatch):
    monkeypatch.setattr(discovery, "_has", lambda flag: True)
    monkeypatch.setenv("OLLAMA_HOST", "127.0.0.1:9")
    assert discovery._ollama_models() == []
    assert discovery._get_json("http://127.0.0.1:9/v1/models") is None


# ----- clear_hf_cache / clear_llamacpp_cache: unloading the model actors -----

class _Row:
    def __init__(self, model: str) -> None:
        self.model = model


@pytest.fixture
def registry(monkeypatch):
    rows = ["hf:org/chat", "hf:org/chat", "hf:org/sd", "llamacpp:qwen3-8b"]     # a row per copy
    unloaded: list[tuple[str, float]] = []

    async def placements():
        return [_Row(model) for model in rows]

    async def unload(model=None, *, grace_s=30.0):
        unloaded.append((model, grace_s))
        return [model] if model in rows else []

    monkeypatch.setattr(loaded_models, "placements", placements)
    monkeypatch.setattr(loaded_models, "unload", unload)
    return unloaded


def test_clear_hf_cache_unloads_every_hf_model(registry):
    assert aimu_ray.clear_hf_cache() == ["hf:org/chat", "hf:org/sd"]
    assert registry == [("hf:org/chat", 30.0), ("hf:org/sd", 30.0)]


def test_clear_hf_cache_one_model(registry):
    _aimu()
    import aimu.models as am

    assert aimu_ray.clear_hf_cache("org/sd", grace_s=1.0) == ["hf:org/sd"]
    assert aimu_ray.clear_hf_cache("hf:org/chat") == ["hf:org/chat"]
    assert aimu_ray.clear_hf_cache(am.HuggingFaceImageModel.SD_1_5) == []            # not loaded
    assert aimu_ray.clear_hf_cache(am.AnthropicModel.CLAUDE_SONNET_4_6) == []         # not an HF model
    assert registry == [("hf:org/sd", 1.0), ("hf:org/chat", 30.0),
                        (f"hf:{am.HuggingFaceImageModel.SD_1_5.value}", 30.0)]


def test_clear_llamacpp_cache(registry):
    assert aimu_ray.clear_llamacpp_cache() == ["llamacpp:qwen3-8b"]
    assert aimu_ray.clear_llamacpp_cache("qwen3-8b") == ["llamacpp:qwen3-8b"]
    assert aimu_ray.clear_llamacpp_cache("llamacpp:qwen3-8b") == ["llamacpp:qwen3-8b"]


def test_clear_caches_take_aimus_arguments():
    aimu = _aimu()
    import inspect

    for name in ("clear_hf_cache", "clear_llamacpp_cache"):
        theirs = inspect.signature(getattr(aimu, name)).parameters
        ours = inspect.signature(getattr(aimu_ray, name)).parameters
        assert list(theirs) == ["model"] and list(ours)[0] == "model" and ours["model"].default is None


# ----- JSON and message helpers: aimu's, compared with aimu -----

class Point(BaseModel):
    x: int
    y: int


@dataclasses.dataclass
class Pair:
    a: str
    b: int


class _Scripted:
    """A sync client whose generate answers from a script (no model)."""

    def __init__(self, *answers: str) -> None:
        self.answers, self.calls = list(answers), []

    def generate(self, prompt, generate_kwargs=None):
        self.calls.append((prompt, generate_kwargs))
        return self.answers.pop(0)


@pytest.mark.parametrize("answers, schema, retries", [
    (['{"x": 1, "y": 2}'], Point, 2),
    (["no json", "```json\n{\"x\": 3, \"y\": 4}\n```"], Point, 2),
    (["nope", "still nope", 'ok {"a": "s", "b": 5} done'], Pair, 2),
    (['[1, 2]'], None, 0),
])
def test_generate_json_as_aimu(answers, schema, retries):
    aimu = _aimu()
    ours, theirs = _Scripted(*answers), _Scripted(*answers)
    assert (aimu_ray.generate_json(ours, "p", schema, retries=retries, generate_kwargs={"temperature": 0})
            == aimu.generate_json(theirs, "p", schema, retries=retries, generate_kwargs={"temperature": 0}))
    assert ours.calls == theirs.calls


def test_generate_json_gives_up_as_aimu():
    aimu = _aimu()
    for generate_json in (aimu_ray.generate_json, aimu.generate_json):
        client = _Scripted("a", "b")
        with pytest.raises(ValueError, match=r"Failed to parse JSON after 2 attempt\(s\)") as raised:
            generate_json(client, "p", retries=1)
        assert isinstance(raised.value.__cause__, ValueError) and len(client.calls) == 2


def test_generate_json_refuses_an_async_client():
    class Async:
        async def generate(self, prompt, generate_kwargs=None):
            return "{}"

    with pytest.raises(TypeError, match="sync client"):
        aimu_ray.generate_json(Async(), "p")


def _conversation() -> list[dict]:
    return [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "u", "timestamp": 1.0},
        {"role": "assistant", "thinking": "hmm", "provenance": "continuation", "tool_calls": [
            {"type": "function", "id": "a1", "function": {"name": "add", "arguments": {"x": 1}}},
            {"type": "function", "id": "a2", "function": {"name": "raw", "arguments": "not json"}},
        ]},
        {"role": "tool", "tool_call_id": "a1", "content": "2"},
        {"role": "assistant", "tool_calls": [
            {"type": "function", "id": "b1", "function": {"name": "p", "parameters": '{"q": "z"}'}},
            {"type": "function", "id": "b2", "function": {"name": "none"}},
            {"type": "function", "id": "b3", "function": {"name": "s", "arguments": '{"k": 1}'}},
        ]},
        {"role": "tool", "tool_call_id": "b3", "content": "done"},
        {"role": "assistant", "content": "end", "timestamp": 2.0},
    ]


def test_message_helpers_as_aimu():
    aimu = _aimu()
    messages = _conversation()
    before = json.dumps(messages)
    assert aimu_ray.extract_tool_calls(messages) == aimu.extract_tool_calls(messages)
    assert aimu_ray.encode_tool_call_arguments(messages) == aimu.encode_tool_call_arguments(messages)
    assert aimu_ray.strip_inert_keys(messages) == aimu.strip_inert_keys(messages)
    assert aimu_ray.INERT_MESSAGE_KEYS == aimu.INERT_MESSAGE_KEYS
    assert json.dumps(messages) == before                                    # nothing changed in place


def test_message_helpers_on_aimu_rays_own_turns():
    """The assistant turns aimu_ray stores (parsed arguments) come out as aimu's would."""
    from aimu_ray.models.messages import assistant_message
    from aimu_ray.models.wire import ToolCall

    turn = assistant_message("", "", [ToolCall(id="c1", name="add", arguments={"x": 1})], keep_ids=True)
    messages = [turn, {"role": "tool", "tool_call_id": "c1", "content": "2"}]
    assert aimu_ray.extract_tool_calls(messages) == [{"iteration": 1, "tool": "add", "arguments": {"x": 1},
                                                      "result": "2"}]
    encoded = aimu_ray.encode_tool_call_arguments(messages)
    assert encoded[0]["tool_calls"][0]["function"]["arguments"] == '{"x": 1}'
    assert "timestamp" not in aimu_ray.strip_inert_keys(messages)[0]


@pytest.mark.parametrize("text", ['{"a": 1}', "x ```json\n{\"a\": [1, 2]}\n``` y", 'say {"a": {"b": 2}} ok', "[1, 2]"])
def test_parse_json_response_as_aimu(text):
    aimu = _aimu()
    assert aimu_ray.parse_json_response(text) == aimu.parse_json_response(text)
