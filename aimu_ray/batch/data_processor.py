"""A Ray Data processor: a dataset of requests in, the same rows with their answers out.

Built like Ray Data LLM's ``build_llm_processor`` (a stage of ``map_batches`` on an actor pool sized by
``concurrency``), for every aimu model:
- in-process models (``hf:``, ``llamacpp:``): each actor of the pool hosts the engine a model actor hosts
  (``HostedModel``), with the GPU share placement gives the model from its measured memory; rows go to it with no
  hop, and the HF text engine batches a block's rows into one forward pass;
- remote providers: the actors send each row through the cluster's shared pool, under the cluster-wide
  ``max_in_flight`` limits and the pool's retries (429s honour ``Retry-After``).
A row that fails is kept with its error, never dropped. Ray Data restarts an actor that dies and runs its block
again, so every row still comes out once.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any, Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator

from ..backends.hosted import HostedBackend
from ..cluster.inventory import current_inventory_override
from ..cluster.model_size import need_for
from ..cluster.placement import copies_that_fit, place
from ..cluster.survey import survey
from ..clients.sync import run
from ..hosts.model import HostedModel
from ..models.load import ModelLoad, Target, Task
from .files import Folder
from .requests import LineRequest, media_request, run_line, task_client, text_request
from .rows import check_columns, line_of, with_results

logger = logging.getLogger("aimu_ray")
AUTO_REMOTE_ACTORS = (1, 4)   # a remote model's actors only wait on the pool: a few carry any rate a provider allows


class ProcessorConfig(BaseModel):
    """What a processor runs: the model and its options, the pool's size and what every row shares."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    task: Task = "text"
    # actors: a count, (min, max) to autoscale, or "auto": up to as many as fit in free GPU memory (in-process)
    concurrency: PositiveInt | tuple[PositiveInt, PositiveInt] | Literal["auto"] = 1
    batch_size: PositiveInt = 16              # rows one actor has in flight at once (HF text: one forward pass)
    generate_kwargs: dict[str, Any] | None = None   # every text row's; a row's own win key by key
    system: str | None = None                 # every text row's system message, unless the row has one
    output_dir: str | None = None             # images and clips go here (any filesystem pyarrow opens)
    num_gpus: float | None = Field(None, ge=0)   # each actor's GPU share; None: from the model's measured memory
    model_options: dict[str, Any] = Field(default_factory=dict)   # loader options, or api_key / base_url

    @model_validator(mode="after")
    def _ordered(self) -> ProcessorConfig:
        if isinstance(self.concurrency, tuple) and self.concurrency[0] > self.concurrency[1]:
            raise ValueError(f"concurrency={self.concurrency}: the pool's minimum is above its maximum")
        return self

    def client(self, backend=None):
        """The aimu client of this model (validating its string and options); nothing loads until it is asked."""
        return task_client(self.task, self.model, backend, **self.model_options)



def processor(model: str, **settings: Any) -> Processor:
    """A processor for ``model``; ``settings`` are ``ProcessorConfig``'s fields (``concurrency``, ``batch_size``,
    ``generate_kwargs``, ``system``, ``output_dir``, ``num_gpus``, ``model_options``, ``task``)."""
    return Processor(ProcessorConfig(model=model, **settings))


class Processor:
    """``processor(ds)``: the rows of ``ds`` with the result columns appended (``aimu_ray.batch.rows``). Lazy, as
    Ray Data is: nothing loads until the dataset is consumed (written, iterated, materialized)."""

    def __init__(self, config: ProcessorConfig) -> None:
        if config.task != "text" and config.output_dir is None:
            raise ValueError(f"A {config.task} processor writes its files somewhere: give output_dir=.")
        self.config = config
        self.load: ModelLoad | None = config.client().model_load   # a bad model string or option fails here

    def __call__(self, dataset):
        from ray.data import ActorPoolStrategy

        check_columns(dataset.schema().names, self.config.task)
        num_gpus, target, (low, high) = self._share()
        blocks = dataset.repartition(target_num_rows_per_block=self.config.batch_size)   # one block: one worker
        return blocks.map_batches(RowWorker, fn_constructor_kwargs={"config": self.config, "target": target},
                                   batch_format="pyarrow", batch_size=self.config.batch_size,
                                   compute=ActorPoolStrategy(min_size=low, max_size=high), num_gpus=num_gpus)

    def _share(self) -> tuple[float, Target | None, tuple[int, int]]:
        """Each actor's GPU share, where its engine loads, and the pool's (min, max) size. The share comes from the
        model's measured need, placed on the cluster's measured free memory as a model actor would be; none for a
        remote provider, whose actors only wait on the shared pool."""
        concurrency = self.config.concurrency
        if self.load is None:
            return 0, None, _pool(AUTO_REMOTE_ACTORS if concurrency == "auto" else concurrency)
        if self.config.num_gpus is not None and concurrency != "auto":
            return self.config.num_gpus, Target(device="cuda" if self.config.num_gpus else "cpu"), _pool(concurrency)
        need, inventory = need_for(self.load), current_inventory_override() or run(survey())
        placement = place(need, inventory, self.load.placement)
        logger.info("Each worker of the %s processor: %s", self.load.label(), placement.reason)
        if concurrency == "auto":
            concurrency = (1, max(1, copies_that_fit(need, inventory, self.load.placement)))
            logger.info("%s: up to %d workers fit in free GPU memory now", self.load.label(), concurrency[1])
        num_gpus = self.config.num_gpus if self.config.num_gpus is not None else placement.num_gpus
        return num_gpus, placement.target(), _pool(concurrency)


def _pool(concurrency: int | tuple[int, int]) -> tuple[int, int]:
    return concurrency if isinstance(concurrency, tuple) else (concurrency, concurrency)


class RowWorker:
    """One actor of the pool: loads the engine (in-process models) once, then answers batches of rows.

    Its requests run on a loop of its own, which lives as long as the actor, so an engine's loop-bound state
    (the HF text batcher) lasts from batch to batch; a batch's rows are all in flight together."""

    def __init__(self, config: ProcessorConfig, target: Target | None) -> None:
        self.task = config.task
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, name="aimu_ray-rows", daemon=True).start()
        self._request: LineRequest = self._on_loop(_requester(config, target))

    def __call__(self, batch: pa.Table) -> pa.Table:
        items = [line_of(row, number, self.task) for number, row in enumerate(batch.to_pylist(), 1)]
        return with_results(batch, self._on_loop(self._answers(items)), self.task)

    async def _answers(self, items) -> list:
        return await asyncio.gather(*(run_line(item, self._request) for item in items))

    def _on_loop(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()


async def _requester(config: ProcessorConfig, target: Target | None) -> LineRequest:
    """How this worker makes one row's request: through its own engine, or the shared pool for a remote model."""
    backend = None
    load = config.client().model_load
    if load is not None:
        hosted = HostedModel(load, target or Target())
        hosted.ready()                       # a load failure fails the actor, and Ray Data says why
        backend = HostedBackend(hosted)
    if config.task != "text":
        return media_request(config.client(backend), config.task, Folder(config.output_dir))

    async def request(line):                 # a client per row: no row sees another's conversation
        return await text_request(config.client(backend), config.system, config.generate_kwargs)(line)
    return request
