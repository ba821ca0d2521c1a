"""``aimu-ray``: serve models, talk to them, run batch jobs and see where everything runs.

Every subcommand runs on the Ray named by ``--address`` / ``RAY_ADDRESS`` (a ``ray job submit`` job
has it set), or on an embedded local Ray. ``serve`` records an embedded Ray it started, so the other
commands run beside it join that Ray instead of starting their own. Model arguments are aimu model
strings; with ``--served`` they are the public names of a running ``aimu-ray serve`` app instead, reached
through its deployment handles. Options may come before, between or after the positional arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from typing import Any, Sequence

from .models.errors import ModelError

EVICTIONS_SHOWN = 10           # the latest evictions `aimu-ray status` lists (--json has them all)
DESCRIPTION = ("Serve models over an OpenAI-compatible API, talk to them, run batch jobs and see where "
               "everything runs, on the Ray named by --address or RAY_ADDRESS (or an embedded local Ray).")
EXAMPLES = """\
examples:
  aimu-ray serve examples/serve.yaml                 # the OpenAI-compatible app, at http://127.0.0.1:8000/v1
  aimu-ray chat anthropic:claude-sonnet-4-6 "What is Ray?"
  aimu-ray chat qwen --served                        # a conversation (stdin) with a model the app serves
  aimu-ray image hf:stabilityai/sdxl-turbo "a fox" --steps 4 --output-dir out/
  aimu-ray audio hf:facebook/musicgen-small "lo-fi piano" --duration 8
  ray job submit -- aimu-ray batch --model hf:Qwen/Qwen3-8B --input prompts.jsonl --output out.jsonl
  ray job submit -- aimu-ray batch --model hf:Qwen/Qwen3-8B --replicas auto --input s3://b/in/ --output s3://b/out/
  aimu-ray status                                    # GPUs, placed models, memory reserved vs used, and why
  aimu-ray unload hf:Qwen/Qwen3-8B
"""


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:                  # `aimu-ray status --json | head`: the reader left, nothing is wrong
        return 0
    except (ValueError, TypeError, ImportError, OSError, ModelError) as error:   # say what, no traceback
        print(f"aimu-ray {args.command}: {error}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aimu-ray", description=DESCRIPTION,
                                     epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--address", help="the Ray cluster (default: RAY_ADDRESS, the Ray of a running `aimu-ray "
                                          "serve`, a local `ray start`, or an embedded Ray)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Intermixed)

    serve = commands.add_parser("serve", help="run the OpenAI-compatible Serve app from a config file",
                                description="Deploy the app a YAML config describes (models, keys, scaling) and "
                                            "serve it until Ctrl-C. `serve run aimu_ray.deployments:build_app "
                                            "config=FILE` and `serve deploy` run the same app.")
    serve.add_argument("config", help="the app's YAML config (see examples/serve.yaml)")
    serve.add_argument("--host", help="override the config's host")
    serve.add_argument("--port", type=int, help="override the config's port")
    serve.add_argument("--no-access-log", action="store_true", help="no log line per request")
    serve.set_defaults(run=_serve)

    chat = commands.add_parser("chat", help="chat with a model: one prompt, or a conversation on stdin",
                               description="Stream the answer to PROMPT, or hold a conversation one stdin line per "
                                           "turn when PROMPT is left out.")
    _model_arguments(chat)
    chat.add_argument("prompt", nargs="?", help="one prompt; without it, read turns from stdin")
    chat.add_argument("--system", help="the system message")
    chat.add_argument("--max-tokens", type=int)
    chat.add_argument("--thinking", choices=["on", "off", "low", "medium", "high"])
    chat.set_defaults(run=_chat)

    image = commands.add_parser("image", help="generate images into a folder", description="Generate images "
                                "and print the path of each PNG.")
    _model_arguments(image)
    image.add_argument("prompt")
    image.add_argument("-n", "--num-images", type=int, default=1)
    image.add_argument("--size", help="WIDTHxHEIGHT")
    image.add_argument("--steps", type=int, help="denoising steps")
    image.add_argument("--seed", type=int)
    image.add_argument("--output-dir", default="output")
    image.set_defaults(run=_image)

    audio = commands.add_parser("audio", help="generate audio clips into a folder",
                                description="Generate audio and print the path of each WAV.")
    _model_arguments(audio)
    audio.add_argument("prompt")
    audio.add_argument("--duration", type=float, help="seconds")
    audio.add_argument("--steps", type=int)
    audio.add_argument("--seed", type=int)
    audio.add_argument("-n", "--num-audio", type=int, default=1)
    audio.add_argument("--output-dir", default="output")
    audio.set_defaults(run=_audio)

    batch = commands.add_parser("batch", help="run a file or dataset of requests; resumable",
                                description="One request per input line or row. A JSONL file runs through this "
                                            "process, its results appended to OUTPUT as they complete; Parquet, a "
                                            "folder or a remote URI (or --ray-data) runs on Ray Data across the "
                                            "cluster into the folder OUTPUT. A rerun skips the ids already written. "
                                            "Line formats: `python -c 'import aimu_ray.batch as b; help(b)'`.")
    batch.add_argument("--model", required=True, help="a model string")
    batch.add_argument("--input", required=True, help="JSONL requests; or Parquet/JSONL files, a folder, s3://…")
    batch.add_argument("--output", required=True, help="JSONL results (appended; also the resume log); a folder "
                                                       "on the Ray Data path")
    batch.add_argument("--task", choices=["text", "image", "audio"], default="text")
    batch.add_argument("--concurrency", type=int, default=16, help="requests in flight: in all (JSONL), or per "
                                                                    "worker (Ray Data)")
    batch.add_argument("--replicas", type=_replicas, help="copies of an in-process model (hf:, llamacpp:), each on "
                                                          "its own GPU share, or `auto`: as many as fit on free GPUs "
                                                          "(released at the end); the workers on the Ray Data path")
    batch.add_argument("--ray-data", action="store_true", help="run on Ray Data even for a JSONL file")
    batch.add_argument("--output-format", choices=["parquet", "jsonl"],
                       help="on the Ray Data path (default: the input's format)")
    batch.add_argument("--generate-kwargs", type=json.loads, metavar="JSON",
                       help='every text line\'s, e.g. \'{"max_tokens": 256}\' (a line\'s own win key by key)')
    batch.add_argument("--output-dir", help="where images and clips go (default: OUTPUT's name + _files)")
    batch.add_argument("--retry-failed", action="store_true", help="run the lines recorded as failed again")
    batch.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                       help="a client option, value as JSON when it parses (model_path=..., n_ctx=4096)")
    batch.add_argument("--no-progress", action="store_true")
    batch.set_defaults(run=_batch)

    status = commands.add_parser("status", help="GPUs, placed models, memory reserved vs used, and why",
                                 description="Every node's GPUs as NVML sees them, every in-process model (actors "
                                             "and Serve replicas) with its share and the reason, and Serve apps.")
    status.add_argument("--json", action="store_true", help="machine-readable")
    status.set_defaults(run=_status)

    unload = commands.add_parser("unload", help="unload in-process models, giving their GPU shares back",
                                 description="Unload model actors (not Serve replicas: those live while their app "
                                             "does); requests in flight get --grace seconds to finish, then fail.")
    unload.add_argument("model", nargs="?", help="a model string such as hf:org/name; all models when left out")
    unload.add_argument("--grace", type=float, default=30.0, metavar="SECONDS",
                        help="how long requests in flight may still run (default 30)")
    unload.set_defaults(run=_unload)
    return parser


class _Intermixed(argparse.ArgumentParser):
    """A subcommand's parser that takes options anywhere among its positionals, as other CLIs do.

    Plain argparse stops ``chat MODEL --served PROMPT`` at the option, gives PROMPT's ``?`` nothing, and
    then refuses PROMPT as unrecognized. Subparsers call ``parse_known_args``: here it parses intermixed.
    """

    _inside = False

    def parse_known_args(self, args=None, namespace=None):
        if self._inside:        # before Python 3.13.1, parse_known_intermixed_args calls back in here
            return super().parse_known_args(args, namespace)
        self._inside = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inside = False


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a model string (hf:…, anthropic:…), or with --served a served name")
    parser.add_argument("--served", action="store_true",
                        help="MODEL is a name the running Serve app serves (reached through its handles)")
    parser.add_argument("--app", default="aimu_ray", help="with --served: the Serve app's name (default aimu_ray, "
                                                          "else the running aimu_ray app that serves MODEL)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="a client option, value as JSON when it parses (model_path=..., num_gpus=0.5)")


# ----- subcommands -----

def _serve(args) -> int:
    import ray

    from .deployments import AppConfig, run

    config = AppConfig.from_yaml(args.config)
    overrides = {key: value for key, value in (("host", args.host), ("port", args.port)) if value is not None}
    config = config.model_copy(update=overrides)
    _connect(args, join_served=False, fast_serve=config.fast_path)   # a second server must not replace the first's app
    url = f"http://{config.host}:{config.port}{config.route_prefix.rstrip('/')}/v1"
    address = ray.get_runtime_context().gcs_address
    print(f"aimu-ray: serving {', '.join(m.name for m in config.models)} at {url} on Ray {address} (Ctrl-C stops)",
          file=sys.stderr)
    try:
        with _recorded(args, address, config.name, url):
            run(config, blocking=True, access_log=not args.no_access_log)
    except KeyboardInterrupt:
        from ray import serve

        serve.shutdown()        # as `serve run` does: on a cluster that outlives this process the app stops too
        raise
    return 0


def _chat(args) -> int:
    import aimu_ray

    client = _client(args, "text")
    if args.system:
        client.system_message = args.system
    kwargs: dict[str, Any] = {"generate_kwargs": {"max_tokens": args.max_tokens} if args.max_tokens else None,
                              "thinking": {"on": True, "off": False}.get(args.thinking, args.thinking)}
    prompts = [args.prompt] if args.prompt else (line.rstrip("\n") for line in sys.stdin)
    for prompt in prompts:
        if not prompt.strip():
            continue
        phase = None
        for chunk in client.chat(prompt, stream=True, **kwargs):
            if chunk.phase != phase and chunk.phase == aimu_ray.StreamingContentType.THINKING:
                print("[thinking] ", end="", file=sys.stderr)
            phase = chunk.phase
            print(chunk.content, end="", flush=True, file=sys.stderr if phase == "thinking" else sys.stdout)
        print()
    return 0


def _image(args) -> int:
    client = _client(args, "image")
    calls: dict[str, Any] = {"num_inference_steps": args.steps, "seed": args.seed}
    if args.size:
        width, _, height = args.size.partition("x")
        calls.update(width=int(width), height=int(height))
    paths = client.generate(args.prompt, num_images=args.num_images, format="path", output_dir=args.output_dir,
                            **{k: v for k, v in calls.items() if v is not None})
    print("\n".join(paths if isinstance(paths, list) else [paths]))
    return 0


def _audio(args) -> int:
    client = _client(args, "audio")
    paths = client.generate(args.prompt, duration_s=args.duration, num_inference_steps=args.steps, seed=args.seed,
                            num_audio=args.num_audio, format="path", output_dir=args.output_dir)
    print("\n".join(paths if isinstance(paths, list) else [paths]))
    return 0


def _batch(args) -> int:
    options = _options(args.option)
    _connect(args)
    if _on_ray_data(args):
        from .batch.datasets import run_dataset

        summary = run_dataset(args.model, args.input, args.output, task=args.task, output_format=args.output_format,
                              retry_failed=args.retry_failed, progress=not args.no_progress,
                              concurrency=args.replicas or 1, batch_size=args.concurrency,
                              output_dir=args.output_dir, system=options.pop("system", None), model_options=options,
                              generate_kwargs=args.generate_kwargs)
    else:
        from .batch import BatchInterrupted, run_batch_sync

        if args.replicas is not None:
            options["replicas"] = args.replicas
        try:
            summary = run_batch_sync(args.model, args.input, args.output, task=args.task,
                                     concurrency=args.concurrency, output_dir=args.output_dir,
                                     progress=not args.no_progress, retry_failed=args.retry_failed,
                                     client_options=options, generate_kwargs=args.generate_kwargs)
        except BatchInterrupted as stopped:
            print(f"aimu-ray batch: {stopped}", file=sys.stderr)
            return 130
    print(summary.model_dump_json())
    return 1 if summary.failed else 0


def _on_ray_data(args) -> bool:
    """Ray Data for what one process should not read alone: Parquet, folders, remote URIs (or when asked)."""
    from pathlib import Path

    location = args.input.rstrip("/")
    return args.ray_data or "://" in location or location.endswith(".parquet") or Path(location).is_dir()


def _replicas(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        count = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a count of copies or 'auto', not {value!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError("at least 1 copy")
    return count


def _status(args) -> int:
    import aimu_ray

    from .cluster.survey import survey
    from .deployments.status import serve_apps

    _connect(args)
    inventory = aimu_ray.run(survey())
    rows = aimu_ray.placements()
    evictions = aimu_ray.evictions()
    apps = serve_apps()
    if args.json:
        print(json.dumps({"nodes": inventory.model_dump()["nodes"], "models": [row.model_dump() for row in rows],
                          "evictions": [e.model_dump() for e in evictions], "serve": apps}, indent=2))
        return 0
    print(_nodes_table(inventory))
    print()
    print(rows)
    if evictions:
        print(f"\nEvictions ({len(evictions)}, latest last):")
        for e in evictions[-EVICTIONS_SHOWN:]:
            when = time.strftime("%H:%M:%S", time.localtime(e.at))
            print(f"  {when} {e.model} (copy {e.replica}) idle {e.idle_s:.0f} s, freed "
                  f"{e.freed_bytes / 1024**3:.2f} GiB on {e.node_id[:12]} GPU {e.gpu_indices or '-'} for {e.for_model}")
    if apps:
        print()
        for app, deployments in apps.items():
            print(f"Serve app {app!r}:")
            for name, state in deployments.items():
                print(f"  {name:<28} {state['status']:<12} replicas {state['replicas']}")
    return 0


def _unload(args) -> int:
    import aimu_ray

    _connect(args)
    unloaded = aimu_ray.unload(args.model, grace_s=args.grace)
    print("\n".join(unloaded) if unloaded else "Nothing to unload.")
    return 0


# ----- helpers -----

def _connect(args, join_served: bool = True, fast_serve: bool = True) -> None:
    """The Ray of --address or RAY_ADDRESS; else that of a running `aimu-ray serve` (said on stderr); else what
    ``ray.init`` finds (a `ray start` cluster on this machine) or an embedded one (``fast_serve``: on Serve's fast
    path)."""
    from .cluster.connection import ensure_ray
    from .cluster.served_ray import served_ray

    address = args.address
    if join_served and not _address_given(args) and (served := served_ray()) is not None:
        address = served.address
        print(f"aimu-ray: joining the Ray of `aimu-ray serve` (pid {served.pid}, app {served.app!r} at {served.url}) "
              f"at {address}", file=sys.stderr)
    ensure_ray(address, fast_serve=fast_serve)


def _address_given(args) -> bool:
    return bool(args.address or os.environ.get("RAY_ADDRESS"))


def _recorded(args, address: str, app: str, url: str):
    """A server on a Ray nobody named records it, so the other commands find that Ray (``ray.init`` cannot)."""
    from .cluster.served_ray import recording_served_ray

    return contextlib.nullcontext() if _address_given(args) else recording_served_ray(address, app, url)


def _client(args, task: str):
    import aimu_ray

    options = _options(args.option)
    if args.served and options:
        raise ValueError("--option does not apply with --served: the server's config holds the options.")
    _connect(args)
    if args.served:
        from ray.serve.exceptions import RayServeException
        try:
            return aimu_ray.connect(args.model, app=args.app)
        except (KeyError, RayServeException) as missing:
            raise ValueError(f"no Serve app {args.app!r} on this cluster ({missing})") from None
    factory = {"text": aimu_ray.client, "image": aimu_ray.image_client, "audio": aimu_ray.audio_client}[task]
    return factory(args.model, **options)


def _options(pairs: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--option takes KEY=VALUE, got {pair!r}.")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def _nodes_table(inventory) -> str:
    lines = [f"{'node':<14} {'GPU':>3} {'total':>10} {'free':>10} {'used by others':>15}   RAM free / total"]
    for node in inventory.nodes:
        ram = f"{node.ram_free_bytes / 1024**3:.1f} / {node.ram_total_bytes / 1024**3:.1f} GiB"
        if not node.gpus:
            lines.append(f"{node.node_id[:12]:<14} {'-':>3} {'':>10} {'':>10} {'':>15}   {ram}")
        for gpu in node.gpus:
            lines.append(f"{node.node_id[:12]:<14} {gpu.index:>3} {gpu.total_bytes / 1024**3:>9.1f}G "
                         f"{gpu.free_bytes / 1024**3:>9.1f}G {len(gpu.processes):>9} procs   {ram}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
