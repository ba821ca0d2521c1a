"""aimu's discovery names, with aimu's meaning where aimu_ray can carry it: the ``HAS_*`` extras flags, model
discovery (``available_*_models``: what this installation can serve now, not a catalog) and
``resolve_model_string``.

Nothing heavy is imported here: the flags ask ``importlib.util.find_spec``, discovery reads the Hugging Face cache's
folders and asks local servers over plain HTTP (never a download, never a cloud unless asked for).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from .model_string import ResolvedModel, resolve_model
from .providers import PROVIDERS

PROBE_TIMEOUT_S = 0.5                 # aimu's: a local server that does not answer in half a second is not there


# ----- extras: installed in this process (an in-process model also needs them where its actor runs) -----

def installed(*modules: str) -> bool:
    """Every module importable, decided without importing it (a missing parent package counts as missing)."""
    for module in modules:
        try:
            if importlib.util.find_spec(module) is None:
                return False
        except (ImportError, ValueError):
            return False
    return True


# aimu's flag -> the modules of aimu_ray's extra that serves it (pyproject.toml); aimu asks for one module each
EXTRAS: dict[str, tuple[str, ...]] = {
    "HAS_HF": ("transformers", "torch"),                              # [hf]: in-process text
    "HAS_OLLAMA": ("ollama",),                                        # [ollama]
    "HAS_ANTHROPIC": ("anthropic",),                                  # [anthropic]
    "HAS_OPENAI_COMPAT": ("openai",),                                 # [openai]: OpenAI, Gemini text, local servers
    "HAS_LLAMACPP": ("llama_cpp",),                                   # [llamacpp]
    "HAS_HF_IMAGE": ("diffusers", "transformers", "torch", "PIL"),    # [image]
    "HAS_GEMINI_IMAGE": ("google.genai", "PIL"),                      # [gemini]: native image API, PIL for outputs
    "HAS_HF_AUDIO": ("diffusers", "transformers", "torch", "soundfile"),   # [audio]
}

HAS_HF = installed(*EXTRAS["HAS_HF"])
HAS_OLLAMA = installed(*EXTRAS["HAS_OLLAMA"])
HAS_ANTHROPIC = installed(*EXTRAS["HAS_ANTHROPIC"])
HAS_OPENAI_COMPAT = installed(*EXTRAS["HAS_OPENAI_COMPAT"])
HAS_LLAMACPP = installed(*EXTRAS["HAS_LLAMACPP"])
HAS_HF_IMAGE = installed(*EXTRAS["HAS_HF_IMAGE"])
HAS_GEMINI_IMAGE = installed(*EXTRAS["HAS_GEMINI_IMAGE"])
HAS_HF_AUDIO = installed(*EXTRAS["HAS_HF_AUDIO"])


def _has(flag: str) -> bool:
    """The flag as it is now (discovery asks at call time, so an extra installed since import counts)."""
    return installed(*EXTRAS[flag])


# ----- resolve_model_string -----

def resolve_model_string(model_str: str) -> ResolvedModel:
    """What ``client(model_str).model`` is: the model with aimu's read surface (``value``, ``name``,
    ``supports_tools``, ``supports_thinking``, ``supports_vision``, ``generation_kwargs``, …), or aimu's ValueError
    for an unknown provider.

    aimu returns its catalog's enum member and refuses an id it has not catalogued; aimu_ray has no catalog, so any
    id resolves, with capabilities from its ``;flags`` or aimu_ray's rules for known model families, and the
    extended forms (``@url``, ``;flags``) are kept. aimu's enum members are taken too.
    """
    return resolve_model(model_str)


# ----- discovery -----

# ids that name a model that does not chat: embeddings, rerankers, speech, images, moderation, legacy completions
_NOT_CHAT = re.compile(r"embed|rerank|\bbge|minilm|whisper|tts|transcribe|speech|dall-e|image|imagen|veo|sora|lyria"
                       r"|moderation|babbage|davinci|\baqa\b", re.IGNORECASE)
_AUDIO_PIPELINES = frozenset({"AudioLDM2Pipeline", "StableAudioPipeline"})      # what engines/local/hf_audio loads
_NOT_IMAGE_PIPELINE = re.compile(r"Audio|Music|Speech|Video", re.IGNORECASE)
_WEIGHTS = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
_CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")


def available_text_models(*, include_hf_cache: bool = True, include_cloud: bool = False) -> list[ResolvedModel]:
    """The text models aimu_ray can serve from here now, as ``resolve_model_string`` gives them (aimu's read surface:
    ``value``, ``name``, ``supports_tools``, …); each can be passed to ``client()`` as it is.

    In aimu's order, each only when its client package is installed here:

    1. models pulled on a running Ollama server (``OLLAMA_HOST``, else the default ``127.0.0.1:11434``);
    2. with ``include_hf_cache``, Hugging Face models whose weights are in this machine's cache and that chat
       (a config, weights and a chat template), as ``hf:<repo>``: in-process models, loaded on the cluster;
    3. models served by a local OpenAI-compatible server at its default URL (LM Studio, vLLM, Transformers Serve,
       llama-server, SGLang, oMLX, or an aimu_ray Serve app's OpenAI API): ``<provider>:<id>``, or
       ``openai-compat:<id>@<url>`` where several providers share the URL and the server does not say which it is;
    4. with ``include_cloud`` (off, as in aimu: discovery is cloud-free unless asked), the models of each cloud
       provider whose API key is set (``ANTHROPIC_API_KEY``, ``OPENAI_API_KEY``, ``GOOGLE_API_KEY``), from its
       model list.

    Unlike aimu, no catalog filters the ids: every chat model found is reported (ids that name an embedding,
    reranking, speech, image or moderation model are left out). Nothing is downloaded. The HF cache read is this
    machine's: a multi-node cluster's workers load from their own caches.
    """
    found = _ollama_models()
    if include_hf_cache and _has("HAS_HF"):
        found += [resolve_model(f"hf:{repo}") for repo, task in _hf_cached() if task == "text"]
    found += _local_server_models()
    if include_cloud:
        found += _cloud_models()
    return found


def available_image_models(*, include_cloud: bool = False) -> list[str]:
    """The image models aimu_ray can serve from here now, as model strings for ``image_client()``: diffusers
    pipelines whose weights are in this machine's Hugging Face cache (``hf:<repo>``, when the [image] extra is
    installed), and with ``include_cloud`` Gemini's image models (``gemini:<id>``, when ``GOOGLE_API_KEY`` is set
    and the [gemini] extra installed). aimu returns catalog enum members of the HF cache only; aimu_ray has no
    catalog, so every cached pipeline counts. Nothing is downloaded."""
    found = [f"hf:{repo}" for repo, task in _hf_cached() if task == "image"] if _has("HAS_HF_IMAGE") else []
    if include_cloud and _has("HAS_GEMINI_IMAGE") and os.environ.get("GOOGLE_API_KEY"):
        ids = _listed(PROVIDERS["gemini"].default_base_url, "models", os.environ["GOOGLE_API_KEY"])
        found += [f"gemini:{model_id}" for model_id in ids if model_id.startswith("gemini") and "image" in model_id]
    return found


def available_audio_models() -> list[str]:
    """The audio models aimu_ray can serve from here now, as model strings for ``audio_client()``: MusicGen,
    AudioLDM2 and Stable Audio models whose weights are in this machine's Hugging Face cache (``hf:<repo>``, when
    the [audio] extra is installed). aimu returns catalog enum members; every cached one counts here."""
    return [f"hf:{repo}" for repo, task in _hf_cached() if task == "audio"] if _has("HAS_HF_AUDIO") else []


def _ollama_models() -> list[ResolvedModel]:
    if not _has("HAS_OLLAMA"):
        return []
    host = os.environ.get("OLLAMA_HOST") or PROVIDERS["ollama"].default_base_url
    if "://" not in host:
        host = f"http://{host}"
    if not re.search(r":\d+$", host.rstrip("/").split("://", 1)[1]):
        host = f"{host.rstrip('/')}:11434"
    body = _get_json(f"{host.rstrip('/')}/api/tags")
    names = [entry.get("model") or entry.get("name") for entry in (body or {}).get("models") or []]
    return [resolve_model(f"ollama:{name}") for name in names if name and not _NOT_CHAT.search(name)]


def _local_server_models() -> list[ResolvedModel]:
    """Each local OpenAI-compatible provider's default URL, asked once (aimu's probes; ``ollama-openai`` is the
    Ollama server already asked natively)."""
    if not _has("HAS_OPENAI_COMPAT"):
        return []
    claimants: dict[str, list[str]] = {}
    for spec in PROVIDERS.values():
        if (spec.protocol == "openai" and not spec.is_cloud and spec.default_base_url
                and spec.key != "ollama-openai"):
            claimants.setdefault(spec.default_base_url, []).append(spec.key)
    found = []
    for url, keys in claimants.items():
        body = _get_json(f"{url.rstrip('/')}/models")
        for card in (body or {}).get("data") or []:
            model_id, modality = card.get("id"), card.get("modality", "text")   # an aimu_ray app says its modality
            if not model_id or modality != "text" or _NOT_CHAT.search(model_id):
                continue
            owner = card.get("owned_by")
            if len(keys) == 1:
                found.append(resolve_model(f"{keys[0]}:{model_id}"))
            elif owner in keys:
                found.append(resolve_model(f"{owner}:{model_id}"))
            else:
                found.append(resolve_model(f"openai-compat:{model_id}@{url}"))
    return found


def _cloud_models() -> list[ResolvedModel]:
    found = []
    for spec in PROVIDERS.values():
        key = spec.api_key_env and os.environ.get(spec.api_key_env)
        if not (spec.is_cloud and key and installed(spec.sdk_module)):
            continue
        url = (spec.base_url_env and os.environ.get(spec.base_url_env)) or spec.default_base_url
        if spec.protocol == "anthropic":
            ids = _listed(url, "v1/models?limit=1000", key, anthropic=True)
        else:
            ids = _listed(url, "models", key)
        found += [resolve_model(f"{spec.key}:{model_id}") for model_id in ids if not _NOT_CHAT.search(model_id)]
    return found


def _listed(url: str, path: str, key: str, *, anthropic: bool = False) -> list[str]:
    """The ids of a provider's model list (Gemini's come as ``models/<id>``)."""
    headers = {"x-api-key": key, "anthropic-version": "2023-06-01"} if anthropic else {"Authorization": f"Bearer {key}"}
    body = _get_json(f"{url.rstrip('/')}/{path}", headers)
    ids = [card.get("id") for card in (body or {}).get("data") or []]
    return [model_id.removeprefix("models/") for model_id in ids if isinstance(model_id, str) and model_id]


def _get_json(url: str, headers: dict | None = None) -> Any:
    """A GET's JSON body, or None when nothing answers in time, or not with JSON."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT_S) as response:
            return json.loads(response.read())
    except (OSError, ValueError, urllib.error.URLError):
        return None


def hf_hub_cache() -> Path:
    """Where huggingface_hub keeps downloads (its own variables, in its order)."""
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(variable):
            return Path(os.environ[variable]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()
    return base / "huggingface" / "hub"


def _hf_cached() -> list[tuple[str, str]]:
    """``(repo id, task)`` for each cached model repo whose snapshot holds weights and a task aimu_ray serves."""
    cache = hf_hub_cache()
    try:
        folders = sorted(cache.glob("models--*"))
    except OSError:
        return []
    found = []
    for folder in folders:
        snapshot = _snapshot(folder)
        task = _task(snapshot) if snapshot else None
        if task:
            found.append((folder.name.removeprefix("models--").replace("--", "/"), task))
    return found


def _snapshot(repo: Path) -> Path | None:
    """The snapshot ``refs/main`` names, else the newest one."""
    ref = repo / "refs" / "main"
    if ref.is_file():
        named = repo / "snapshots" / ref.read_text().strip()
        if named.is_dir():
            return named
    snapshots = [path for path in (repo / "snapshots").glob("*") if path.is_dir()]
    return max(snapshots, key=lambda path: path.stat().st_mtime) if snapshots else None


def _task(snapshot: Path) -> str | None:
    """``text``, ``image`` or ``audio`` for a snapshot with weights that aimu_ray's engines load; None otherwise."""
    if not any(path.suffix in _WEIGHTS and path.exists() for path in snapshot.rglob("*")):
        return None                                  # config only, or a download that did not finish
    index = _read_json(snapshot / "model_index.json")
    if index is not None:                            # a diffusers pipeline
        pipeline = str(index.get("_class_name", ""))
        if pipeline in _AUDIO_PIPELINES:
            return "audio"
        return None if _NOT_IMAGE_PIPELINE.search(pipeline) else "image"
    config = _read_json(snapshot / "config.json")
    if config is None:
        return None
    if config.get("model_type") == "musicgen":
        return "audio"
    return "text" if _has_chat_template(snapshot) else None


def _has_chat_template(snapshot: Path) -> bool:
    if any((snapshot / name).exists() for name in _CHAT_TEMPLATE_FILES):
        return True
    return any("chat_template" in (_read_json(snapshot / name) or {})
               for name in ("tokenizer_config.json", "processor_config.json"))


def _read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None
