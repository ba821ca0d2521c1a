"""Structured output on SmolLM2-135M-Instruct: how many answers come back valid and parsed, and how fast, five ways.

Every side asks the same N prompts (default 50), "Describe the city of <X> as JSON with its name, country and
population.", for a small pydantic model City(name: str, country: str, population: int), greedy, at most 64 new
tokens per answer (max_tokens=64):
  1  llama.cpp, prompt-and-parse  aimu's way through aimu_ray's llamacpp client (the Q4_1 GGUF of
                                  aimu_ray.demo.smollm2.smollm2_gguf()): the prompt + "\\n\\n" + aimu's instruction
                                  (aimu_ray.models.structured.json_schema_instruction of City's JSON Schema), sent
                                  WITHOUT schema=, the text answer parsed by parse_json_response(text, City)
  2  llama.cpp, grammar           the bare prompt with schema=City: llama.cpp decodes under its JSON-schema grammar
  3  HF, prompt-and-parse         as 1, on "hf:<smollm2_hf_dir()>" (the same weights as a float32 folder)
  4  HF, grammar                  as 2: an xgrammar token mask built from City's schema
  5  aimu 0.38 itself             aimu's HuggingFaceClient on the same folder (an AdHocModel with
                                  tool_call_format=None, as in batch_throughput.py), chat(prompt, schema=City):
                                  aimu sees no structured-output support and takes its own prompt-and-parse path
Valid and parsed means the side returned a City: anything raising (no JSON found: ValueError; JSON that does not fit
City: pydantic's ValidationError; for aimu, any exception) counts as invalid. "name ok" counts the valid answers whose
name is the city asked about: content, which no grammar enforces. "cut" counts answers stopped at the 64 tokens.
How it runs: the aimu_ray sides call the engines in this process, without Ray (LlamaCppEngine / HFTextEngine behind
an aio.client whose backend calls engine.run, as tests/unit/test_structured.py does); aimu runs in this process too.
The three models are loaded once, up front (not timed), and each side answers one extra prompt (a city not among
the N) untimed, so one-off set-up (xgrammar's tokenizer info, first calls) is not in its time. Requests are
sequential, one at a time: for each prompt the five sides take turns, starting one side later at every prompt, so
that a burst of other work on the machine falls on all sides alike. One client per side, reset between prompts:
every prompt is a fresh one-turn chat. s is the sum of a side's N request times; tokens/s = tokens / s.
Tokens: the output tokens each aimu_ray answer's usage reports; aimu reports none, so its model's generate() is
wrapped to count the new ids it returns.
Decoding, per engine: the HF sides add aimu's HF default repetition_penalty=1.1 (aimu_ray keeps aimu's defaults,
and aimu 0.38 is aimu); llama.cpp runs temperature 0 with llama-cpp-python's repeat_penalty (printed below).
llama.cpp computes on its default thread count (cpu_count // 2), torch on every core it sees: both printed. So
tokens/s compares prompt-and-parse with grammar within an engine; across engines it also compares a Q4_1 GGUF on
llama.cpp with float32 torch. Other processes on the machine make the timings noisy; each side runs once. Target
(the issue's): the grammar sides (2 and 4) 100 % valid.
What a run showed here (25 prompts, 2 cores, ~7 min, a test suite running beside it; 50 take ~11): llama.cpp's grammar
25/25 valid, HF's 24/25, every prompt-and-parse side 0/25 (SmolLM2 echoes the JSON Schema back, or runs past 64 tokens
inside it), aimu_ray's parse path and aimu 0.38's answering alike, token for token. A grammar holds the form, not the
length: HF's one invalid answer looped on population digits (111111...) until max_tokens cut it, and a cut answer
fails to parse like any other (an unbounded integer or string in the schema allows it; bounds in the schema, e.g.
Field(le=...) or max_length, are what stop it). Nor does it hold the content: 19 of HF's and 22 of llama.cpp's names
were the city asked. (An earlier run, before the HF grammar kept the schema's order of properties, had HF 25/25
valid but only 11 names right: it asked for "country" first and the model wrote the city there.)
Run: python benchmarks/structured_output.py [--prompts N]
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import os
import sys
import time
from pathlib import Path
from typing import Awaitable, Callable

from pydantic import BaseModel, ValidationError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TOKENS = 64
CITIES = ["Paris", "Tokyo", "Cairo", "Lima", "Oslo", "Nairobi", "Toronto", "Sydney", "Mumbai", "Berlin", "Madrid",
          "Rome", "Lisbon", "Dublin", "Vienna", "Prague", "Warsaw", "Athens", "Istanbul", "Moscow", "Beijing",
          "Seoul", "Bangkok", "Jakarta", "Manila", "Hanoi", "Delhi", "Karachi", "Tehran", "Baghdad", "Riyadh",
          "Dubai", "Lagos", "Accra", "Dakar", "Casablanca", "Tunis", "Johannesburg", "Cape Town", "Buenos Aires",
          "Santiago", "Bogota", "Caracas", "Havana", "Mexico City", "Chicago", "Boston", "Vancouver", "Helsinki",
          "Stockholm"]
WARM_CITY = "Amsterdam"   # the untimed first prompt of every side
LLAMA_GEN = {"max_tokens": TOKENS, "temperature": 0}
HF_GEN = {"max_tokens": TOKENS, "do_sample": False}          # aimu_ray's spelling; aimu's below
AIMU_GEN = {"max_new_tokens": TOKENS, "do_sample": False}


class City(BaseModel):
    name: str
    country: str
    population: int


def prompt(city: str) -> str:
    return f"Describe the city of {city} as JSON with its name, country and population."


# One request: (the City or None, the error or None, the answer's text, output tokens, stopped at max_tokens)
Reply = tuple[City | None, Exception | None, str | None, int, bool]
Ask = Callable[[str], Awaitable[Reply]]


class Tally:
    """One side's count: valid and parsed, the reasons for the rest, tokens, time."""

    def __init__(self) -> None:
        self.n = self.valid = self.named = self.no_json = self.misfit = self.other = self.cut = self.tokens = 0
        self.seconds = 0.0
        self.example: str | None = None      # the first invalid answer, for the notes

    def add(self, city: str, seconds: float, reply: Reply) -> None:
        answer, error, text, tokens, cut = reply
        self.n, self.seconds = self.n + 1, self.seconds + seconds
        self.tokens, self.cut = self.tokens + tokens, self.cut + cut
        if error is None:
            self.valid += 1
            self.named += answer.name.strip().lower() == city.lower()
            return
        if isinstance(error, ValidationError):          # a ValueError too: test it first
            self.misfit += 1
        elif isinstance(error, ValueError):
            self.no_json += 1
        else:
            self.other += 1
        if self.example is None:
            self.example = f"{city}: {type(error).__name__}; answer {(text or '')[:150]!r}"


# 1-4: aimu_ray, engines in this process ---------------------------------------------------------------------------

def aimu_ray_ask(client, gen: dict, grammar: bool) -> Ask:
    """A fresh one-turn chat: schema=City (grammar), or aimu's instruction appended and the text parsed."""
    from aimu_ray.models.structured import json_schema_instruction, parse_json_response

    suffix = "\n\n" + json_schema_instruction(City.model_json_schema())

    async def ask(city: str) -> Reply:
        client.reset()
        answer = text = error = None
        try:
            if grammar:
                answer = await client.chat(prompt(city), generate_kwargs=dict(gen), schema=City)
            else:
                text = await client.chat(prompt(city) + suffix, generate_kwargs=dict(gen))
                answer = parse_json_response(text, City)
        except (ValueError, ValidationError) as e:       # an answer that does not parse or fit
            error = e
        if text is None and client.messages:
            text = client.messages[-1].get("content")
        return answer, error, text, (client.last_usage or {}).get("output_tokens") or 0, client.last_output_truncated

    return ask


def load_llamacpp():
    from aimu_ray import aio
    from aimu_ray.backends.hosted import HostedBackend
    from aimu_ray.demo.smollm2 import smollm2_gguf
    from aimu_ray.engines.local.llamacpp import LlamaCppEngine
    from aimu_ray.models.load import ModelLoad, Target

    path = str(smollm2_gguf())
    engine = LlamaCppEngine(ModelLoad(provider="llamacpp", task="text", model_id="smollm2",
                                      options={"model_path": path}), Target())
    return engine, aio.client("llamacpp:smollm2", model_path=path, backend=HostedBackend(engine))


def load_hf(folder: Path):
    from aimu_ray import aio
    from aimu_ray.backends.hosted import HostedBackend
    from aimu_ray.engines.local.hf_text import HFTextEngine
    from aimu_ray.models.load import ModelLoad, Target

    engine = HFTextEngine(ModelLoad(provider="hf", task="text", model_id=str(folder)), Target())
    return engine, aio.client(f"hf:{folder}", backend=HostedBackend(engine))


def sent_params(client) -> dict:
    return {k: v for k, v in (client.last_request or {}).items() if k not in ("messages", "tools", "model")}


# 5: aimu 0.38 -----------------------------------------------------------------------------------------------------

def load_aimu(folder: Path):
    """aimu's HuggingFaceClient on the folder, its generate() wrapped to count new ids; and an undo."""
    import transformers
    from aimu.models._base.text import AdHocModel, ModelSpec
    from aimu.models.providers.hf import text as aimu_hf

    transformers.logging.set_verbosity_error()   # greedy + aimu's default temperature/top_p warn on every call
    model = AdHocModel(ModelSpec(id=str(folder)))   # aimu's model strings refuse ad-hoc hf ids: build it by hand
    model.tool_call_format = None    # HuggingFaceClient.chat reads it, and only its enum members carry one
    client = aimu_hf.HuggingFaceClient(model)
    hf_model, counted = client._hf_model, []
    generate = hf_model.generate

    def counting_generate(*args, **kwargs):       # aimu reports no usage: count the new ids generate returns
        ids = generate(*args, **kwargs)
        counted.append(ids.shape[1] - kwargs["input_ids"].shape[1])
        return ids

    hf_model.generate = counting_generate

    async def ask(city: str) -> Reply:             # aimu is synchronous: it blocks the loop, nothing else runs
        client.messages, counted[:] = [], []      # one conversation per prompt
        answer = error = None
        try:
            answer = client.chat(prompt(city), generate_kwargs=dict(AIMU_GEN), schema=City)
        except Exception as e:                     # any error of aimu's on a prompt counts as invalid
            error = e
        text = client.messages[-1].get("content") if client.messages else None
        return answer, error, text, sum(counted), client.last_stop_reason == "length"

    def unload() -> None:
        del hf_model.generate
        aimu_hf._model_registry.clear()       # aimu caches the weights per process

    return client, ask, unload


# the run ------------------------------------------------------------------------------------------------------------

async def measure(folder: Path, cities: list[str]) -> tuple[dict[str, Tally], dict]:
    import torch
    import llama_cpp

    from aimu_ray.models.structured import json_schema_instruction

    llama, llama_client = load_llamacpp()
    hf, hf_client = load_hf(folder)
    aimu_client, aimu_ask, aimu_unload = load_aimu(folder)
    try:
        asks: dict[str, Ask] = {
            "1 llama.cpp prompt-and-parse": aimu_ray_ask(llama_client, LLAMA_GEN, grammar=False),
            "2 llama.cpp grammar": aimu_ray_ask(llama_client, LLAMA_GEN, grammar=True),
            "3 HF prompt-and-parse": aimu_ray_ask(hf_client, HF_GEN, grammar=False),
            "4 HF grammar": aimu_ray_ask(hf_client, HF_GEN, grammar=True),
            "5 aimu 0.38 (HF, parse)": aimu_ask,
        }
        names = list(asks)
        for ask in asks.values():
            await ask(WARM_CITY)
        tallies = {name: Tally() for name in names}
        for i, city in enumerate(cities):
            for name in names[i % len(names):] + names[:i % len(names)]:
                start = time.perf_counter()
                reply = await asks[name](city)
                tallies[name].add(city, time.perf_counter() - start, reply)
            print(f"  {i + 1}/{len(cities)}", end="\r", flush=True)
        info = {
            "llama.cpp params sent": sent_params(llama_client),
            "llama.cpp repeat_penalty (llama-cpp-python's default, none sent)":
                inspect.signature(llama_cpp.Llama.create_chat_completion).parameters["repeat_penalty"].default,
            "aimu_ray HF params sent": sent_params(hf_client),
            "aimu 0.38's prompt suffix is aimu_ray's": aimu_client._structured_request(City)[1] ==
                "\n\n" + json_schema_instruction(City.model_json_schema()),
            "threads": f"llama.cpp {llama._llm.n_threads} (its default, cpu_count // 2); torch "
                       f"{torch.get_num_threads()} (aimu_ray HF and aimu, this process); {os.cpu_count()} cores; "
                       f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}",
        }
    finally:
        aimu_unload()
        await hf.aclose()
        await llama.aclose()
    return tallies, info


def report(n: int, sides: dict[str, Tally], info: dict, total_s: float) -> None:
    print(f"\n{n} prompts for City(name, country, population) on SmolLM2-135M-Instruct, greedy, max_tokens "
          f"{TOKENS}, sequential requests, the sides in turn; one run")
    print(f"{'side':<29}{'valid':>8}{'%':>6}{'name ok':>9}{'no JSON':>9}{'misfit':>8}{'cut':>5}{'tokens':>8}"
          f"{'s':>8}{'tokens/s':>10}{'s/answer':>10}")
    for name, t in sides.items():
        print(f"{name:<29}{f'{t.valid}/{t.n}':>8}{100 * t.valid / t.n:>5.0f}%{t.named:>9}{t.no_json:>9}"
              f"{t.misfit:>8}{t.cut:>5}{t.tokens:>8}{t.seconds:>8.1f}{t.tokens / t.seconds:>10.1f}"
              f"{t.seconds / t.n:>10.2f}")
    if any(t.other for t in sides.values()):
        print("other errors: " + ", ".join(f"{k} {t.other}" for k, t in sides.items() if t.other))
    print("(valid: a City came back; name ok: valid, and its name is the city asked; no JSON: ValueError, nothing "
          "parsed; misfit: pydantic ValidationError, JSON that is no City; cut: stopped at max_tokens)")
    s = sides
    l1, l2, h3, h4, a5 = (s[k] for k in s)
    met = l2.valid == l2.n and h4.valid == h4.n
    print(f"\nTarget, grammar sides 100 % valid: llama.cpp {100 * l2.valid / n:.0f} %, HF {100 * h4.valid / n:.0f} %"
          f"  -> {'met' if met else 'NOT met'}")
    rate = {k: t.tokens / t.seconds for k, t in s.items()}
    per = {k: t.seconds / t.n for k, t in s.items()}
    k1, k2, k3, k4, k5 = s
    print(f"grammar / prompt-and-parse, llama.cpp: valid {l2.valid} vs {l1.valid}; {rate[k2] / rate[k1]:.2f}x "
          f"tokens/s, {per[k1] / per[k2]:.2f}x answers/s")
    print(f"grammar / prompt-and-parse, HF:        valid {h4.valid} vs {h3.valid}; {rate[k4] / rate[k3]:.2f}x "
          f"tokens/s, {per[k3] / per[k4]:.2f}x answers/s")
    print(f"aimu_ray HF prompt-and-parse / aimu 0.38: valid {h3.valid} vs {a5.valid}; {rate[k3] / rate[k5]:.2f}x "
          f"tokens/s")
    print("\nfirst invalid answer per side:")
    for name, t in sides.items():
        print(f"  {name}: {t.example or '-'}")
    print("\n" + "\n".join(f"{k}: {v}" for k, v in info.items()))
    print(f"whole run (loads and warm-ups included): {total_s:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=50, help=f"prompts per side (default 50, at most {len(CITIES)})")
    n = parser.parse_args().prompts
    if not 1 <= n <= len(CITIES):
        parser.error(f"--prompts must be 1..{len(CITIES)}")
    begun = time.perf_counter()

    import logging

    import transformers

    from aimu_ray.demo.smollm2 import smollm2_hf_dir

    transformers.logging.set_verbosity_error()
    logging.getLogger("aimu_ray").setLevel(logging.ERROR)
    folder = smollm2_hf_dir()
    print(f"loading llama.cpp, aimu_ray HF and aimu 0.38; {n} prompts x 5 sides ...", flush=True)
    sides, info = asyncio.run(measure(folder, CITIES[:n]))
    report(n, sides, info, time.perf_counter() - begun)


if __name__ == "__main__":
    main()
