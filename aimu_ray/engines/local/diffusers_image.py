"""The in-process image engine: a diffusers pipeline, with concurrent requests batched into one call.

One worker thread owns the pipeline. Requests wait in a queue while a call runs; when it ends, the
oldest waiting request runs next, together with every later one whose settings are equal in all but
prompt, negative prompt and seed (image-to-image and preview requests always run alone), up to
``max_batch_size`` images per call. Each request of a batch gets its own progress stream and its
own images, handed to its event loop without ever blocking it.

Seeds: every image has its own ``torch.Generator``. A request with ``seed=s`` and ``num_images=n``
draws its images from generators seeded ``s, s+1, …, s+n-1``, so it makes the same images whether it
runs alone or in a batch (for ``n == 1`` these are aimu's images; for ``n > 1`` aimu draws all of them
from one generator). Unseeded requests get freshly seeded random generators.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import io
import logging
import queue
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, AsyncIterator

import diffusers
import numpy as np
import torch
from PIL import Image

from ...models.errors import ModelError
from ...models.load import ModelLoad, Target
from ...models.media import ImageProgress, ImageRequest, ImageResult

logger = logging.getLogger("aimu_ray")

DEFAULT_STRENGTH = 0.75
DEFAULT_MAX_BATCH_SIZE = 8
# What may differ between the requests of one batch: everything else is one setting of the call.
_PER_REQUEST_FIELDS = frozenset({"prompt", "negative_prompt", "seed"})
# Request settings a pipeline must name in its __call__: passed to one that does not, they would be
# swallowed by its **kwargs, so the request fails instead (aimu's rule for negative prompts).
_CHECKED_SETTINGS = ("negative_prompt", "width", "height", "num_inference_steps", "guidance_scale", "strength")


@dataclass
class EngineStats:
    """Work done so far: ``requests - calls`` requests shared a pipeline call with an earlier one."""

    calls: int = 0
    requests: int = 0
    images: int = 0
    steps: int = 0          # denoising steps run: a call whose callers all left stops adding to it


class DiffusersImageEngine:
    """A diffusers pipeline loaded on ``target``.

    ``load.options``: ``pipeline_class`` (a diffusers class name, default "DiffusionPipeline"),
    ``img2img_pipeline_class`` (default: derived by AutoPipelineForImage2Image), ``model_kwargs`` (for
    ``from_pretrained``) and ``max_batch_size`` (images per pipeline call, default 8).
    """

    def __init__(self, load: ModelLoad, target: Target):
        options = load.options
        self.stats = EngineStats()
        self._device = target.device
        self._max_batch_images = options.get("max_batch_size", DEFAULT_MAX_BATCH_SIZE)
        img2img_class = options.get("img2img_pipeline_class")
        self._img2img_class = _pipeline_class(img2img_class) if img2img_class else diffusers.AutoPipelineForImage2Image
        self._pipe = _load_pipeline(load.model_id, options, target)
        self._img2img = None
        self._inbox: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._closed = False
        self._worker = threading.Thread(target=self._serve, name=f"diffusers:{load.model_id}", daemon=True)
        self._worker.start()

    async def run(self, request: ImageRequest) -> ImageResult:
        result = None
        async for result in self.stream(request):
            pass
        return result

    async def stream(self, request: ImageRequest) -> AsyncIterator[ImageProgress | ImageResult]:
        """Progress per denoising step (1-based), then the ImageResult."""
        if self._closed:
            raise ModelError("The image engine is closed.")
        job = _Job(request, asyncio.get_running_loop(), asyncio.Queue())
        self._inbox.put(job)
        try:
            while True:
                item = await job.items.get()
                if isinstance(item, Exception):
                    raise item
                yield item
                if isinstance(item, ImageResult):
                    return
        finally:
            job.abandoned = True        # still waiting: it will not run; running: its output is dropped

    async def aclose(self) -> None:
        """Let the running call finish, fail the waiting requests, and release the weights."""
        if self._closed:
            return
        self._closed = True
        self._inbox.put(None)
        await asyncio.to_thread(self._worker.join)
        self._pipe = self._img2img = None
        gc.collect()
        if self._device == "cuda":
            torch.cuda.empty_cache()

    # The worker thread: everything below runs there and is the only code that touches a pipeline.

    def _serve(self) -> None:
        backlog: deque[_Job] = deque()
        while self._collect(backlog):
            batch = _take_batch(backlog, self._max_batch_images)
            if batch:
                self._run(batch)
        for job in backlog:
            job.send(ModelError("The image engine was closed before this request ran."))

    def _collect(self, backlog: deque[_Job]) -> bool:
        """Move newly queued requests to the backlog, waiting for one when idle; False once closing."""
        items = [] if backlog else [self._inbox.get()]
        while not self._inbox.empty():
            items.append(self._inbox.get())
        backlog.extend(item for item in items if item is not None)
        return all(item is not None for item in items)

    def _run(self, batch: list[_Job]) -> None:
        first = batch[0].request
        self.stats.calls += 1
        self.stats.requests += len(batch)
        self.stats.images += len(batch) * first.num_images
        steps = _StepReporter(batch, first.preview_every, self.stats)
        try:
            pipe = self._pipe if first.reference_image is None else self._img2img_pipe()
            output = pipe(**_call_kwargs(pipe, batch, self._device), callback_on_step_end=steps)
            images = _pixels(output.images)
        except Exception as error:
            for job in batch:
                job.send(_failure(error))
            return
        n = first.num_images
        for k, job in enumerate(batch):
            job.send(ImageResult(images=images[k * n:(k + 1) * n], total_steps=steps.total_steps))

    def _img2img_pipe(self):
        """The image-to-image pipeline, derived on first use; ``from_pipe`` shares the loaded weights."""
        if self._img2img is None:
            self._img2img = self._img2img_class.from_pipe(self._pipe)
            self._img2img.set_progress_bar_config(disable=True)
        return self._img2img


@dataclass(eq=False)
class _Job:
    """One request: where its items go (a queue of the caller's event loop) and whether anyone still listens."""

    request: ImageRequest
    loop: asyncio.AbstractEventLoop
    items: asyncio.Queue
    abandoned: bool = False

    def send(self, item: ImageProgress | ImageResult | Exception) -> None:
        try:
            self.loop.call_soon_threadsafe(self.items.put_nowait, item)
        except RuntimeError:            # the caller's loop is closed: nobody is listening
            pass


def _take_batch(backlog: deque[_Job], max_images: int) -> list[_Job]:
    """The oldest live request and the later ones that can share its call; the rest stay, in order."""
    waiting = [job for job in backlog if not job.abandoned]
    backlog.clear()
    if not waiting:
        return []
    first, *rest = waiting
    key, batch, images = _batch_key(first.request), [first], first.request.num_images
    for job in rest:
        fits = images + job.request.num_images <= max_images
        if key is not None and fits and _batch_key(job.request) == key:
            batch.append(job)
            images += job.request.num_images
        else:
            backlog.append(job)
    return batch


def _batch_key(request: ImageRequest) -> tuple | None:
    """The settings that must be equal to share a call; None for requests that run alone.

    Whether a negative prompt is given is part of it: some pipelines treat none differently from ""
    (SDXL's zeroed embeddings), so the two kinds never share a call.
    """
    if request.reference_image is not None or request.preview_every is not None:
        return None
    return request.model_dump(exclude=_PER_REQUEST_FIELDS), request.negative_prompt is None


def _call_kwargs(pipe, batch: list[_Job], device: str) -> dict[str, Any]:
    """One pipeline call for a batch: a prompt per request, a generator per image; None settings left
    to the pipeline's own defaults; aimu's image-to-image rules (strength 0.75, no width/height)."""
    first = batch[0].request
    kwargs = first.model_dump(include={"width", "height", "num_inference_steps", "guidance_scale"}, exclude_none=True)
    kwargs.update(prompt=[job.request.prompt for job in batch], num_images_per_prompt=first.num_images,
                  generator=[g for job in batch for g in _generators(job.request, device)], output_type="np")
    if first.negative_prompt is not None:
        kwargs["negative_prompt"] = [job.request.negative_prompt for job in batch]
    if first.reference_image is not None:
        kwargs.pop("width", None)
        kwargs.pop("height", None)
        kwargs["image"] = Image.open(io.BytesIO(first.reference_image)).convert("RGB")
        if first.strength is not None or _takes(pipe, "strength"):
            kwargs["strength"] = first.strength or DEFAULT_STRENGTH
    untaken = [name for name in _CHECKED_SETTINGS if name in kwargs and not _takes(pipe, name)]
    if untaken:
        raise ValueError(f"{type(pipe).__name__} does not take {', '.join(untaken)}.")
    return kwargs


def _takes(pipe, name: str) -> bool:
    return name in inspect.signature(pipe.__call__).parameters


def _generators(request: ImageRequest, device: str) -> list[torch.Generator]:
    """A generator per image of the request: seeds s, s+1, … when seeded (see the module docstring)."""
    if request.seed is None:
        return [_random_generator(device) for _ in range(request.num_images)]
    return [torch.Generator(device).manual_seed(request.seed + i) for i in range(request.num_images)]


def _random_generator(device: str) -> torch.Generator:
    generator = torch.Generator(device)
    generator.seed()                    # a fresh Generator always starts from the same default seed
    return generator


class _StepReporter:
    """``callback_on_step_end`` of one call: a progress item per step for every request of the batch."""

    def __init__(self, batch: list[_Job], preview_every: int | None, stats: EngineStats):
        self.batch = batch
        self.preview_every = preview_every
        self.stats = stats
        self.total_steps = 1

    def __call__(self, pipe, step: int, timestep, tensors: dict) -> dict:
        if all(job.abandoned for job in self.batch):
            pipe._interrupt = True          # nobody listens: diffusers pipelines skip their remaining steps
            return tensors
        self.stats.steps += 1
        done = step + 1
        self.total_steps = getattr(pipe, "num_timesteps", done)     # img2img runs fewer than asked
        preview = None
        if self.preview_every and (done % self.preview_every == 0 or done == self.total_steps):
            preview = _decode_preview(pipe, tensors.get("latents"))
        for job in self.batch:
            job.send(ImageProgress(step=done, total_steps=self.total_steps, preview=preview))
        return tensors


def _decode_preview(pipe, latents: torch.Tensor | None) -> np.ndarray | None:
    """The first image as the VAE sees the latents now; None where they are not plain VAE latents
    (packed Flux latents, no VAE): a preview is a nicety, so its failure never fails the request."""
    try:
        config = pipe.vae.config
        latents = latents[:1] / config.scaling_factor + (getattr(config, "shift_factor", None) or 0.0)
        decoded = pipe.vae.decode(latents.to(pipe.vae.dtype), return_dict=False)[0]
        return _pixels(pipe.image_processor.postprocess(decoded, output_type="np"))[0]
    except Exception:
        logger.debug("preview decode failed", exc_info=True)
        return None


def _pixels(images) -> list[np.ndarray]:
    """HxWx3 uint8 arrays from a pipeline's output: floats in [0, 1] (``output_type="np"``) or PIL images."""
    if isinstance(images, np.ndarray):
        return list((images * 255).round().astype(np.uint8))       # the rounding diffusers' numpy_to_pil uses
    return [np.asarray(image.convert("RGB")) for image in images]


def _failure(error: Exception) -> Exception:
    """A fresh exception for each request of a failed batch, caused by the pipeline's. A ValueError
    (unsupported setting, size not a multiple of 8) says the request was bad and stays one."""
    if isinstance(error, ValueError):
        failure: Exception = ValueError(str(error))
    else:
        failure = ModelError(f"The diffusers pipeline failed: {type(error).__name__}: {error}")
    failure.__cause__ = error
    return failure


# Loading


def _load_pipeline(model_id: str, options: dict[str, Any], target: Target):
    """``from_pretrained`` with the load options, then placement as the target says."""
    pipeline_class = _pipeline_class(options.get("pipeline_class", "DiffusionPipeline"))
    kwargs = _model_kwargs(options.get("model_kwargs"), target.device)
    kwargs["device_map"] = target.device_map    # placement decides: a device_map in model_kwargs is only a pin
    logger.info("Loading %s with %s (%s)", model_id, pipeline_class.__name__, target)
    pipe = pipeline_class.from_pretrained(model_id, **kwargs)
    pipe.set_progress_bar_config(disable=True)
    _place(pipe, target)
    return pipe


def _place(pipe, target: Target) -> None:
    """Put the weights where placement decided; with a device_map, ``from_pretrained`` already did."""
    if target.device_map is not None:
        return
    if target.offload == "model":
        pipe.enable_model_cpu_offload()
    elif target.offload == "sequential":
        pipe.enable_sequential_cpu_offload()
    else:
        pipe.to(target.device)


def _pipeline_class(name: str) -> type:
    pipeline_class = getattr(diffusers, name, None)
    if not (isinstance(pipeline_class, type) and hasattr(pipeline_class, "from_pretrained")):
        raise ValueError(f"diffusers has no pipeline class {name!r} (e.g. 'StableDiffusionXLPipeline').")
    return pipeline_class


def _model_kwargs(given: dict[str, Any] | None, device: str) -> dict[str, Any]:
    """``from_pretrained`` kwargs with the dtype set: aimu's default unless given, a name looked up in torch.

    diffusers 0.42 spells it ``dtype`` and still takes the deprecated ``torch_dtype`` (aimu's spelling),
    so whichever the caller used is kept. Names (``"bfloat16"``) are accepted because load options are
    plain data: they name the model's actor.
    """
    kwargs = dict(given or {})
    key = "torch_dtype" if "torch_dtype" in kwargs else "dtype"
    kwargs[key] = _torch_dtype(kwargs.get(key) or _default_dtype(device))
    return kwargs


def _default_dtype(device: str) -> torch.dtype:
    """aimu's default: full precision on CPU, bfloat16 on GPUs that have it, else float16."""
    if device == "cpu":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _torch_dtype(value: str | torch.dtype) -> torch.dtype:
    dtype = getattr(torch, value, None) if isinstance(value, str) else value
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"model_kwargs dtype {value!r} is not a torch dtype (e.g. 'bfloat16', 'float16', 'float32').")
    return dtype
