"""The Serve application's one config: which models it serves and how, validated once, YAML on disk.

Only the models named here are served: an HTTP request picks one by its public ``name`` and can never
name a model string, a file path or a URL. The admin API may add models at runtime, within what ``admin``
allows (its providers and folders). ``${VAR}`` in the YAML is replaced from the environment, so one file serves
with paths and keys that differ per machine.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, SecretStr, field_validator, model_validator

from ..cluster.placement import PlacementOptions
from ..models.limits import Limits
from ..models.load import ModelLoad, Task, load_for
from ..models.model_string import ResolvedModel, parse_model_string, resolve_model
from .admin import AdminPolicy

NAME = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"


class ReplicaOptions(BaseModel):
    """Serve's per-deployment knobs; ``autoscaling_config`` is Serve's own, checked by Serve's model."""

    model_config = ConfigDict(extra="forbid")

    num_replicas: PositiveInt | None = None
    autoscaling_config: dict[str, Any] | None = None
    max_ongoing_requests: PositiveInt | None = None
    max_queued_requests: int | None = Field(None, ge=-1, description="requests waiting beyond which callers get "
                                                                     "503 + Retry-After; -1: no limit")

    @model_validator(mode="after")
    def _one_scaling_mode(self) -> ReplicaOptions:
        if self.num_replicas is not None and self.autoscaling_config is not None:
            raise ValueError("give num_replicas or autoscaling_config, not both")
        if self.autoscaling_config is not None:
            from ray.serve.config import AutoscalingConfig

            AutoscalingConfig(**self.autoscaling_config)
        return self

    def deployment_options(self, default_ongoing: int) -> dict[str, Any]:
        options: dict[str, Any] = {"max_ongoing_requests": self.max_ongoing_requests or default_ongoing}
        if self.autoscaling_config is not None:
            options["autoscaling_config"] = self.autoscaling_config
        else:
            options["num_replicas"] = self.num_replicas or 1
        if self.max_queued_requests is not None:
            options["max_queued_requests"] = self.max_queued_requests
        return options


class ServedModel(BaseModel):
    """One model the app serves, under a public name.

    ``options`` are what the aimu factory would take: loader options for in-process models
    (``model_kwargs``, ``model_path``, ``n_ctx``, …) or endpoint options for remote ones (``base_url``,
    ``timeout``, ``max_retries``). A remote provider's key comes from ``api_key_env`` on the replica's node.

    An in-process model runs as copies the model registry places, scales and evicts (the same as
    ``aimu_ray.client(..., replicas=...)``): ``replicas`` copies, or ``min_replicas``..``max_replicas`` scaled by
    requests in flight per copy (``target_in_flight``); ``max_in_flight`` requests per copy at most (more: 503
    + Retry-After). ``load: on_demand`` loads it at its first request instead of at deploy; ``keep_alive_s``
    unloads it after that long without requests (None: never); ``pin`` keeps eviction away from it.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME)
    model: str
    task: Task = "text"
    options: dict[str, Any] = Field(default_factory=dict)
    placement: PlacementOptions = Field(default_factory=PlacementOptions)
    api_key_env: str | None = None
    replicas: PositiveInt | None = None
    min_replicas: PositiveInt | None = None
    max_replicas: PositiveInt | None = None
    target_in_flight: float | None = Field(None, gt=0)
    scale_in_idle_s: float | None = Field(None, gt=0)
    max_in_flight: PositiveInt | None = None
    load: Literal["startup", "on_demand"] = "startup"
    keep_alive_s: float | None = Field(None, gt=0)
    pin: bool = False

    @model_validator(mode="before")
    @classmethod
    def _no_serve_scaling(cls, data: Any) -> Any:
        """A model's copies are the registry's, not a Serve deployment's: Serve's names say what to write."""
        moved = {"num_replicas": "replicas", "autoscaling_config": "min_replicas/max_replicas/target_in_flight",
                 "max_ongoing_requests": "max_in_flight", "max_queued_requests": "max_in_flight"}
        if isinstance(data, dict) and (given := sorted(set(data) & set(moved))):
            raise ValueError("; ".join(f"{key} is Serve's, for the ingress deployment: a served model "
                                       f"takes {moved[key]}" for key in given))
        return data

    @field_validator("model")
    @classmethod
    def _parses(cls, value: str) -> str:
        resolve_model(value)           # the form, the provider and the ;flags, with aimu's messages
        return value

    @model_validator(mode="after")
    def _fits_the_task(self) -> ServedModel:
        ref = parse_model_string(self.model)
        in_process = ref.provider in ("hf", "llamacpp")
        if self.task != "text" and ref.provider not in ("hf", "gemini"):
            raise ValueError(f"{self.task} models are 'hf:' (or 'gemini:' images) strings, got {self.model!r}")
        if self.task == "audio" and ref.provider != "hf":
            raise ValueError(f"audio models are 'hf:' strings, got {self.model!r}")
        if not in_process and (self.serving() or self.load != "startup" or self.keep_alive_s or self.pin):
            raise ValueError(f"replicas, max_in_flight, load, keep_alive_s and pin apply to in-process models "
                             f"(hf:, llamacpp:), not to {self.model!r}: remote providers scale with the `ingress`")
        if in_process:
            if self.api_key_env:
                raise ValueError(f"api_key_env applies to remote providers, not to {self.model!r}")
            try:
                self.model_load()                        # unknown loader options fail here, at config time
            except TypeError as error:                   # pydantic reports ValueErrors, with the model's name
                raise ValueError(str(error)) from None
        elif self.placement != PlacementOptions():
            raise ValueError(f"placement applies to in-process models (hf:, llamacpp:), not to {self.model!r}")
        return self

    @property
    def in_process(self) -> bool:
        return parse_model_string(self.model).provider in ("hf", "llamacpp")

    def resolved(self) -> ResolvedModel:
        return resolve_model(self.model)

    def serving(self) -> dict[str, Any]:
        """The copy settings given, as ``aimu_ray.client`` takes them."""
        names = ("replicas", "min_replicas", "max_replicas", "target_in_flight", "scale_in_idle_s", "max_in_flight")
        return {name: value for name in names if (value := getattr(self, name)) is not None}

    def model_load(self) -> ModelLoad:
        """The in-process load: its copies, keep-alive (by default none: it stays loaded) and pin."""
        ref = parse_model_string(self.model)
        pins = self.placement.model_dump(exclude_defaults=True, exclude={"measured_bytes"})
        return load_for(ref.provider, self.task, ref.model_id,
                        {**self.options, **pins, **self.serving(), "keep_alive_s": self.keep_alive_s, "pin": self.pin})


class AppConfig(BaseModel):
    """The whole app: models, the ingress's scaling (it calls remote providers too), API keys, where outputs go."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("aimu_ray", pattern=NAME, description="the Serve application's name")
    route_prefix: str = "/"
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    api_keys: list[SecretStr] = Field(default_factory=list, description="bearer keys clients must send; "
                                                                        "none: no auth")
    api_keys_env: str | None = Field(None, description="an env var with more keys, comma-separated")
    output_dir: Path = Path("output")
    files_ttl_s: float = Field(3600.0, gt=0, description="how long an image or clip handed out as a URL lives after "
                                                         "it was written; then it is deleted and its URL answers 404")
    files_max_bytes: PositiveInt = Field(2 * 1024**3, description="the most the files handed out as URLs may hold in "
                                                                  "output_dir; over it, the oldest are deleted first")
    public_url: str | None = Field(None, description="base of the image URLs the app hands out; default: the "
                                                     "address the request came to")
    ingress: ReplicaOptions = Field(default_factory=ReplicaOptions)
    fast_path: bool = Field(True, description="a Ray started for this app serves on Ray's fast path: HAProxy in "
                            "front of ingress replicas that answer HTTP themselves, gRPC between deployments "
                            "(cluster.connection.fast_serve_env); false keeps Serve's proxy. A running cluster keeps "
                            "its nodes' settings")
    limits: Limits = Field(default_factory=Limits, description="what one request may carry or ask for (body size, "
                                                               "messages, prompt characters, image pixels, ...)")
    models: list[ServedModel] = Field(min_length=1)
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1, description="the share of each GPU's memory "
                                                 "placement may use, cluster-wide; none: all of it")
    load_wait_s: float = Field(60.0, gt=0, description="how long a request waits for its model to load (on demand, "
                                                        "or again after an eviction); then 503 + Retry-After")
    admin_keys_env: str | None = Field(None, description="an env var with the admin API's keys, comma-separated; "
                                                         "none: the admin API is off")
    admin: AdminPolicy = Field(default_factory=AdminPolicy, description="what the admin API may add at runtime")

    @model_validator(mode="after")
    def _unique_names(self) -> AppConfig:
        names = [model.name for model in self.models]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"model names must be unique; repeated: {', '.join(twice)}")
        return self

    def model(self, name: str) -> ServedModel | None:
        return next((model for model in self.models if model.name == name), None)

    def bearer_keys(self) -> set[str]:
        keys = {key.get_secret_value() for key in self.api_keys}
        return keys | _keys_in(self.api_keys_env)

    def admin_keys(self) -> set[str]:
        return _keys_in(self.admin_keys_env)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> AppConfig:
        import yaml

        text = os.path.expandvars(Path(path).read_text())
        return cls.model_validate(yaml.safe_load(text) or {})


def _keys_in(variable: str | None) -> set[str]:
    """The comma-separated keys an environment variable holds (none when unset)."""
    return {key.strip() for key in os.environ.get(variable, "").split(",") if key.strip()} if variable else set()


def load_config(config: AppConfig | dict | str | os.PathLike) -> AppConfig:
    """A config from an object, a dict (Serve's ``args``) or a YAML path."""
    if isinstance(config, AppConfig):
        return config
    if isinstance(config, dict):
        if set(config) == {"config"}:                    # `serve run aimu_ray.deployments:build_app config=x.yaml`
            return AppConfig.from_yaml(_args_file(config["config"]))
        return AppConfig.model_validate(config)
    return AppConfig.from_yaml(config)


def _args_file(path: str) -> Path:
    """A config path in Serve's args is read where the app is built: on this machine for ``serve run``, but
    on a cluster node, in a working directory of Ray's, for ``serve deploy`` and KubeRay."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"No app config at {file.resolve()} on {socket.gethostname()}. Under `serve deploy` "
                                "the app is built on the cluster: put the config inline as the app's args (as "
                                "examples/serve_deploy.yaml does) or give a path that exists on every node.")
    return file
