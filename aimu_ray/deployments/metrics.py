"""Prometheus metrics of the HTTP front end, one registry per ingress replica (``GET /metrics``).

Request counts, errors, latency and tokens are counted where requests pass, and each request's time is split into
the engine's (timed by its host, carried back on the result) and the serving layer's (the rest); queue depth is what
is in flight per model at this ingress; memory per model (estimated, VRAM reserved and used, and the estimate's
error) and evictions are read from the model registry when Prometheus scrapes, so they always match ``aimu-ray
status``.
"""

from __future__ import annotations

import dataclasses
from contextlib import aclosing
from typing import Any, AsyncIterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ..models.placements import ModelPlacement, estimate_error_pct

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
SERVING_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("aimu_ray_requests", "HTTP requests answered", ["model", "route", "status"],
                                registry=self.registry)
        self.errors = Counter("aimu_ray_request_errors", "HTTP requests answered with an error",
                              ["model", "route", "type"], registry=self.registry)
        self.latency = Histogram("aimu_ray_request_seconds", "time to the whole answer (to the last chunk for "
                                 "streams)", ["model", "route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.engine = Histogram("aimu_ray_engine_seconds", "time the model's engine spent on a request, as its host "
                                "timed it (a copy's engine, or the remote provider's answer)", ["model", "route"],
                                buckets=LATENCY_BUCKETS, registry=self.registry)
        self.serving = Histogram("aimu_ray_serving_seconds", "time a request spent in the serving layer: its whole "
                                 "time here less the engine's (parsing, routing, the hops to a copy, queueing "
                                 "before its host, rendering)", ["model", "route"], buckets=SERVING_BUCKETS,
                                 registry=self.registry)
        self.tokens = Counter("aimu_ray_tokens", "tokens in prompts and completions", ["model", "kind"],
                              registry=self.registry)
        self.in_flight = Gauge("aimu_ray_requests_in_flight", "requests this ingress is waiting on (queue depth)",
                               ["model"], registry=self.registry)
        self.vram_reserved = Gauge("aimu_ray_vram_reserved_bytes", "GPU memory promised to the model's replicas "
                                   "and actors", ["model"], registry=self.registry)
        self.vram_used = Gauge("aimu_ray_vram_used_bytes", "GPU memory the model's replicas and actors measured "
                               "holding", ["model"], registry=self.registry)
        self.estimated = Gauge("aimu_ray_memory_estimated_bytes", "memory sizing estimated, before loading, that the "
                               "model's replicas and actors would hold (VRAM on a GPU, RAM on the CPU)", ["model"],
                               registry=self.registry)
        self.estimate_error = Gauge("aimu_ray_memory_estimate_error_percent", "how far the memory the model's "
                                    "replicas and actors measured holding is from the estimate, in percent of the "
                                    "estimate (+25: a quarter more than estimated); absent until both are known",
                                    ["model"], registry=self.registry)

        self.evictions = Gauge("aimu_ray_evictions_total", "times an idle copy of the model was unloaded to make "
                               "room for another model, since the model registry started", ["model"],
                               registry=self.registry)

    def set_evictions(self, counts: dict[str, int]) -> None:
        """The registry's count per model (it keeps them: every ingress replica reports the same figure)."""
        self.evictions.clear()
        for model, count in counts.items():
            self.evictions.labels(model).set(count)

    def split_time(self, model: str, route: str, total_s: float, clock: EngineClock) -> None:
        """A request's whole time as the engine's and the serving layer's, once the engine's is known."""
        if clock.seconds is not None:
            self.engine.labels(model, route).observe(clock.seconds)
            self.serving.labels(model, route).observe(max(0.0, total_s - clock.seconds))

    def count_tokens(self, model: str, usage: dict | None) -> None:
        if usage:
            self.tokens.labels(model, "prompt").inc(usage.get("input_tokens", 0))
            self.tokens.labels(model, "completion").inc(usage.get("output_tokens", 0))

    def set_memory(self, rows: list[ModelPlacement]) -> None:
        """Sum the registry's rows per model (a replica's rows under the name its app serves it as); the error is
        that of the sums, over the rows whose estimate and measured use are both known."""
        reserved: dict[str, int] = {}
        used: dict[str, int] = {}
        estimated: dict[str, int] = {}
        compared: dict[str, tuple[int, int]] = {}
        for row in rows:
            model = row.name or row.model
            reserved[model] = reserved.get(model, 0) + (row.reserved_bytes if row.device == "cuda" else 0)
            used[model] = used.get(model, 0) + (row.used_vram_bytes or 0)
            estimated[model] = estimated.get(model, 0) + row.need_bytes
            if row.estimate_error_pct is not None:
                need, measured = compared.get(model, (0, 0))
                compared[model] = need + row.need_bytes, measured + row.used_bytes
        for gauge in (self.vram_reserved, self.vram_used, self.estimated, self.estimate_error):
            gauge.clear()
        for model in reserved:
            self.vram_reserved.labels(model).set(reserved[model])
            self.vram_used.labels(model).set(used[model])
            self.estimated.labels(model).set(estimated[model])
        for model, (need, measured) in compared.items():
            self.estimate_error.labels(model).set(estimate_error_pct(need, measured))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class EngineClock:
    """The engine's share of one request, read from the results its host timed (``engine_s``); with n choices side by
    side, the longest of them."""

    def __init__(self) -> None:
        self.seconds: float | None = None

    def around(self, served):
        """``served`` (a ``Served``) whose backend reads the time off every result it returns."""
        return dataclasses.replace(served, backend=_Clocked(served.backend, self))

    def saw(self, item: Any) -> None:
        engine_s = getattr(item, "engine_s", None)
        if engine_s is not None:
            self.seconds = max(self.seconds or 0.0, engine_s)


class _Clocked:
    """A backend that tells its clock of every result; everything else is the backend's own."""

    def __init__(self, backend, clock: EngineClock) -> None:
        self._backend, self._clock = backend, clock

    async def call(self, request):
        result = await self._backend.call(request)
        self._clock.saw(result)
        return result

    async def stream(self, request) -> AsyncIterator:
        async with aclosing(self._backend.stream(request)) as items:
            async for item in items:
                self._clock.saw(item)
                yield item

    def __getattr__(self, name: str):
        return getattr(self._backend, name)
