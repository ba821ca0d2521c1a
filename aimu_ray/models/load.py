"""What identifies one loaded in-process model, what the user pinned of its placement, and where it went.

``ModelLoad`` is the key of a model's replica group: two clients anywhere on the cluster that ask for the same
model with the same load options get the same actors, because their names are derived from this object.
``Replicas`` says how many copies of it run and when there are more or fewer; like ``keep_alive_s`` and ``pin``
it is how the model is served, not which model it is, so it stays out of the key.
``Target`` is the part of a placement decision an engine needs to load its weights.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Task = Literal["text", "image", "audio"]
DEFAULT_KEEP_ALIVE_S = 600.0
DEFAULT_TARGET_IN_FLIGHT = 8.0   # requests in flight per copy before another is added (HF text batches them)
DEFAULT_SCALE_IN_IDLE_S = 60.0   # a copy above the minimum goes after this long without a request
ACTOR_PREFIX = "model:"          # every model actor's name starts so: the registry finds them by it


class PlacementOptions(BaseModel):
    """What the user pinned; anything left None is the policy's to choose.

    Precedence follows aimu: a ``device_map`` wins over ``device`` (aimu ignores the device then).
    ``measured_bytes`` is what a loaded actor reported using; it replaces the estimate.
    """

    model_config = ConfigDict(frozen=True)

    device: str | None = Field(default=None, pattern=r"^(cpu|cuda(:\d+)?)$")
    device_map: str | dict[str, Any] | None = None
    num_gpus: float | None = Field(default=None, gt=0)
    node_id: str | None = None
    gpu_index: int | None = Field(default=None, ge=0)
    force: bool = False
    measured_bytes: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> PlacementOptions:
        if self.num_gpus is not None and self.num_gpus > 1 and self.num_gpus != int(self.num_gpus):
            raise ValueError(f"num_gpus={self.num_gpus}: above 1 Ray grants whole GPUs only")
        device_index = self._device_index()
        if device_index is not None and self.gpu_index is not None and device_index != self.gpu_index:
            raise ValueError(f"device={self.device!r} and gpu_index={self.gpu_index} name different GPUs")
        if self.wants_cpu and (self.gpu_index is not None or self.num_gpus is not None):
            raise ValueError("device='cpu' cannot go with gpu_index or num_gpus")
        return self

    def _device_index(self) -> int | None:
        match = re.fullmatch(r"cuda:(\d+)", self.device or "") if self.device_map is None else None
        return int(match.group(1)) if match else None

    @property
    def wants_cpu(self) -> bool:
        return (self.device_map if self.device_map is not None else self.device) == "cpu"

    @property
    def wants_gpu(self) -> bool:
        return self.device_map is None and (self.device or "").startswith("cuda")

    @property
    def gpu_constraint(self) -> int | None:
        """The one GPU index the user pinned, through ``gpu_index`` or ``device="cuda:N"``."""
        return self.gpu_index if self.gpu_index is not None else self._device_index()


class Replicas(BaseModel):
    """How many copies of a model run: a fixed count (``min == max``) or a range the registry scales by requests in
    flight. It adds a copy when the requests in flight per copy pass ``target_in_flight``, and takes one away (never
    below ``min_replicas``) once that copy has had no request for ``scale_in_idle_s``."""

    model_config = ConfigDict(frozen=True)

    min_replicas: int = Field(default=1, ge=1)
    max_replicas: int = Field(default=1, ge=1)
    target_in_flight: float = Field(default=DEFAULT_TARGET_IN_FLIGHT, gt=0)
    scale_in_idle_s: float = Field(default=DEFAULT_SCALE_IN_IDLE_S, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> Replicas:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas={self.min_replicas} is above max_replicas={self.max_replicas}")
        return self

    @property
    def scales(self) -> bool:
        return self.max_replicas > self.min_replicas

    @classmethod
    def from_kwargs(cls, replicas: int | None = None, **settings: Any) -> Replicas:
        """``replicas=N`` (N copies, always) or ``min_replicas``/``max_replicas`` (a range), not both."""
        settings = {k: v for k, v in settings.items() if v is not None}
        if replicas is not None:
            if {"min_replicas", "max_replicas"} & set(settings):
                raise ValueError("give replicas=N or min_replicas/max_replicas, not both")
            if not isinstance(replicas, int) or replicas < 1:
                raise ValueError(f"replicas={replicas!r}: a model runs as 1 or more copies")
            settings.update(min_replicas=replicas, max_replicas=replicas)
        elif "min_replicas" in settings and "max_replicas" not in settings:
            settings["max_replicas"] = max(settings["min_replicas"], 1)
        return cls(**settings)


class ModelLoad(BaseModel):
    """A model and the options it is loaded with (``options`` are the engine's constructor kwargs).

    ``keep_alive_s``, ``replicas``, ``max_in_flight`` and ``pin`` are not part of the identity: they say how long an
    idle copy keeps its GPU share, how many copies run, how many requests one copy takes at once, and whether
    eviction may ever take one (``pin=True``: never).
    """

    model_config = ConfigDict(frozen=True)

    provider: Literal["hf", "llamacpp"]
    task: Task
    model_id: str
    options: dict[str, Any] = Field(default_factory=dict)
    placement: PlacementOptions = Field(default_factory=PlacementOptions)
    keep_alive_s: float | None = Field(default=DEFAULT_KEEP_ALIVE_S, gt=0)
    replicas: Replicas = Field(default_factory=Replicas)
    max_in_flight: int | None = Field(default=None, ge=1)   # requests one copy takes at once; more: ModelBusyError
    pin: bool = False

    def key(self) -> str:
        """A stable digest of the identity: provider, task, model, load options and placement pins."""
        identity = {"provider": self.provider, "task": self.task, "model_id": self.model_id,
                    "options": self.options, "placement": self.placement.model_dump(exclude_defaults=True)}
        text = json.dumps(identity, sort_keys=True, default=_describe)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def actor_name(self, replica: int = 0) -> str:
        """One copy's cluster-wide name: readable in ``ray list actors``, unique by the digest and copy number."""
        readable = re.sub(r"[^A-Za-z0-9._-]+", "_", self.model_id.strip("/"))[-48:]
        return f"{ACTOR_PREFIX}{self.provider}:{self.task}:{readable}:{self.key()}#{replica}"

    def label(self) -> str:
        return f"{self.provider}:{self.model_id}"


class Target(BaseModel):
    """Where an engine puts its weights, as decided by placement (or pinned by the user)."""

    model_config = ConfigDict(frozen=True)

    device: Literal["cuda", "cpu"] = "cpu"
    device_map: str | dict[str, Any] | None = None
    offload: Literal["model", "sequential"] | None = None


def _describe(value: Any) -> str:
    """Options that are objects (a llama.cpp chat handler) enter the key by type and public settings."""
    settings = {k: v for k, v in sorted(vars(value).items()) if not k.startswith("_")} if hasattr(value, "__dict__") else {}
    return f"{type(value).__module__}.{type(value).__qualname__}{sorted((k, repr(v)) for k, v in settings.items())}"


# Loader options each in-process engine takes (beyond model_kwargs), as aimu's constructors spell them.
ENGINE_OPTIONS: dict[tuple[str, Task], frozenset[str]] = {
    ("hf", "text"): frozenset({"model_kwargs", "max_batch_size", "batch_wait_timeout_s", "context_tokens"}),
    ("llamacpp", "text"): frozenset({"model_path", "n_ctx", "n_gpu_layers", "chat_format", "chat_handler", "verbose",
                                     "model_kwargs"}),
    ("hf", "image"): frozenset({"model_kwargs", "pipeline_class", "img2img_pipeline_class", "max_batch_size"}),
    ("hf", "audio"): frozenset({"model_kwargs", "pipeline_type"}),
}
PLACEMENT_OPTIONS = frozenset({"device", "device_map", "num_gpus", "node_id", "gpu_index", "force"})
SERVING_OPTIONS = frozenset({"keep_alive_s", "pin", "max_in_flight", "replicas", "min_replicas", "max_replicas",
                             "target_in_flight", "scale_in_idle_s"})
REPLICA_OPTIONS = SERVING_OPTIONS - {"keep_alive_s", "pin", "max_in_flight"}


def load_for(provider: str, task: Task, model_id: str, kwargs: dict[str, Any]) -> ModelLoad:
    """Split a factory's kwargs into loader options and placement pins; unknown names are a TypeError.

    As in aimu, ``device`` may also sit in ``model_kwargs`` (an aimu-only hint, taken out there) and
    ``device_map`` in ``model_kwargs`` is both a placement pin and a ``from_pretrained`` argument.
    """
    allowed = ENGINE_OPTIONS[(provider, task)]
    unknown = sorted(set(kwargs) - allowed - PLACEMENT_OPTIONS - SERVING_OPTIONS)
    if unknown:
        raise TypeError(f"{provider}:{model_id} ({task}) takes no argument {', '.join(map(repr, unknown))}. "
                        f"It takes {', '.join(sorted(allowed | PLACEMENT_OPTIONS | SERVING_OPTIONS))}.")
    options = {k: v for k, v in kwargs.items() if k in allowed and v is not None}
    if provider == "llamacpp" and not options.get("model_path"):
        raise ValueError(f"llamacpp:{model_id} needs model_path= (the .gguf file); the model id only names it.")
    pins = {k: v for k, v in kwargs.items() if k in PLACEMENT_OPTIONS and v is not None}
    model_kwargs = dict(options.get("model_kwargs") or {})
    if "device" in model_kwargs:
        pins.setdefault("device", model_kwargs.pop("device"))
        options["model_kwargs"] = model_kwargs
    if "device_map" in model_kwargs:
        pins.setdefault("device_map", model_kwargs["device_map"])
    serving = {k: kwargs[k] for k in ("keep_alive_s", "pin", "max_in_flight") if k in kwargs}
    replicas = Replicas.from_kwargs(**{k: kwargs[k] for k in REPLICA_OPTIONS if k in kwargs})
    return ModelLoad(provider=provider, task=task, model_id=model_id, options=options,
                     placement=PlacementOptions(**pins), replicas=replicas, **serving)
