"""Batch jobs without Ray: line validation, duplicate ids, the output file as a resume log, record shapes.

The seam is ``process_file``'s request factory: tests hand it small async functions in place of the
aimu_ray clients. The text request itself is tested on a real ``AsyncTextClient`` with an in-memory backend.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from aimu_ray import aio
from aimu_ray.batch import AudioLine, DuplicateIdError, ImageLine, OutputFileError, TextLine, process_file
from aimu_ray.batch.lines import parse_line
from aimu_ray.batch.output import recover
from aimu_ray.batch.files import Folder
from aimu_ray.batch.requests import media_request, text_request
from aimu_ray.models import ChatResult, Usage
from aimu_ray.models.errors import ProviderError


def write_jsonl(path: Path, *lines) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def echo_factory(calls: list | None = None):
    """Each line answers its own prompt back; ``calls`` collects the ids asked for."""
    def factory():
        async def request(line):
            if calls is not None:
                calls.append(line.id)
            if line.prompt == "fail":
                raise ProviderError("upstream said no", status_code=400)
            return {"output": f"echo: {line.prompt}"}
        return request
    return factory


def parse(obj, number=1, model=TextLine):
    return parse_line(number, (obj if isinstance(obj, str) else json.dumps(obj)).encode(), model)


# ----- input lines -----

@pytest.mark.parametrize("line", [{"prompt": "hi"}, {"messages": [{"role": "user", "content": "hi"}]}])
def test_a_text_line_takes_a_prompt_or_messages(line):
    assert parse(line).parsed is not None


@pytest.mark.parametrize("line, fragment", [
    ({}, "exactly one of 'prompt' and 'messages'"),
    ({"prompt": "a", "messages": [{"role": "user", "content": "b"}]}, "exactly one"),
    ({"messages": [{"content": "no role"}]}, "messages[0] needs a 'role'"),
    ({"messages": []}, "messages"),
    ({"prompt": "a", "temprature": 0.2}, "temprature: Extra inputs are not permitted"),
    ({"prompt": "a", "thinking": "extreme"}, "thinking"),
    ({"prompt": "a", "id": ["x"]}, "'id' must be a non-empty string or an integer"),
    ('{"prompt": "a"', "line 4 is not JSON"),
    ('["prompt"]', "line 4 is not a JSON object"),
])
def test_an_invalid_line_says_why_with_its_number(line, fragment):
    item = parse(line, number=4)
    assert item.parsed is None and fragment in item.problem and item.id == "4"


def test_the_id_defaults_to_the_line_number_and_integers_become_strings():
    assert parse({"prompt": "a"}, number=7).id == "7"
    assert parse({"prompt": "a", "id": 12}).parsed.id == "12"
    assert parse({"prompt": "a", "id": "q-1"}).parsed.id == "q-1"


def test_image_and_audio_lines_validate_their_options():
    image = parse({"prompt": "fox", "num_images": 2, "seed": 3, "width": 64}, model=ImageLine).parsed
    assert (image.num_images, image.seed, image.width) == (2, 3, 64)
    assert "num_images" in parse({"prompt": "fox", "num_images": 0}, model=ImageLine).problem
    assert parse({"prompt": "rain", "duration_s": 0.5, "num_audio": 2}, model=AudioLine).parsed.num_audio == 2
    assert "duration_s" in parse({"prompt": "rain", "duration_s": -1}, model=AudioLine).problem


async def test_duplicate_ids_stop_the_job_before_any_request(tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", {"prompt": "a"}, {"prompt": "b"}, {"id": "1", "prompt": "c"})
    calls = []
    with pytest.raises(DuplicateIdError, match="id '1' is on lines 1 and 3"):
        await process_file(source, tmp_path / "out.jsonl", TextLine, echo_factory(calls), progress=False)
    assert calls == [] and not (tmp_path / "out.jsonl").exists()


# ----- records -----

async def test_every_line_gets_one_record_failures_included(tmp_path, capsys):
    source = write_jsonl(tmp_path / "in.jsonl", {"id": "a", "prompt": "one"}, "", "not json",
                         {"id": "c", "prompt": "fail"})
    out = tmp_path / "out.jsonl"
    summary = await process_file(source, out, TextLine, echo_factory(), concurrency=2)
    assert (summary.total, summary.done_before, summary.succeeded, summary.failed) == (3, 0, 1, 2)
    by_id = {r["id"]: r for r in records(out)}
    assert set(by_id["a"]) == {"id", "line", "ok", "output", "elapsed_s"} and by_id["a"]["output"] == "echo: one"
    assert by_id["3"] == {"id": "3", "line": 3, "ok": False,
                          "error": {"type": "InvalidLine", "message": by_id["3"]["error"]["message"]}}
    assert by_id["3"]["error"]["message"].startswith("line 3 is not JSON")
    assert by_id["c"]["error"] == {"type": "ProviderError", "message": "upstream said no"} and by_id["c"]["line"] == 4
    bar = capsys.readouterr().err
    assert "3/3" in bar and "ok=1" in bar and "failed=2" in bar


async def test_text_records_carry_thinking_usage_and_tool_calls_and_lines_do_not_share_a_conversation():
    class Backend:
        def __init__(self):
            self.requests = []

        async def call(self, request):
            self.requests.append(request)
            return ChatResult(content="ok", thinking="hm", usage=Usage(input_tokens=3, output_tokens=1, total_tokens=4),
                              stop_reason="stop")

    backend = Backend()
    request = text_request(aio.client("openai-compat:m@http://127.0.0.1:9/v1", backend=backend), "default system")
    first = await request(TextLine(id="1", prompt="hello"))
    await request(TextLine(id="2", messages=[{"role": "system", "content": "old"}, {"role": "user", "content": "x"}],
                           system="line system"))
    await request(TextLine(id="3", messages=[{"role": "user", "content": "y"}]))
    assert first == {"output": "ok", "thinking": "hm", "usage": {"input_tokens": 3, "output_tokens": 1,
                                                                 "total_tokens": 4},
                     "stop_reason": "stop", "tool_calls": []}
    sent = [[(m["role"], m["content"]) for m in r.messages] for r in backend.requests]
    assert sent == [[("system", "default system"), ("user", "hello")],
                    [("system", "line system"), ("user", "x")],
                    [("system", "default system"), ("user", "y")]]


async def test_media_files_are_named_by_line_id_and_line_options_reach_generate(tmp_path):
    class Client:
        async def generate(self, prompt, **kwargs):
            self.kwargs = kwargs
            images = [f"{prompt}{i}".encode() for i in range(kwargs["num_images"])]
            return images if kwargs["num_images"] > 1 else images[0]

    client = Client()
    request = media_request(client, "image", Folder(tmp_path / "files"))
    assert await request(ImageLine(id="1", prompt="fox")) == {"output": [str(tmp_path / "files" / "1-0.png")]}
    two = await request(ImageLine(id="a/b", prompt="fox", num_images=2, seed=5))
    assert [Path(p).name for p in two["output"]] == ["a_b-c14cddc0-0.png", "a_b-c14cddc0-1.png"]
    assert [Path(p).read_bytes() for p in two["output"]] == [b"fox0", b"fox1"]
    assert client.kwargs == {"format": "bytes", "num_images": 2, "seed": 5}


async def test_at_most_concurrency_requests_are_in_flight(tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", *({"prompt": str(i)} for i in range(10)))
    active, peak, all_in = 0, 0, asyncio.Event()

    def factory():
        async def request(line):
            nonlocal active, peak
            active += 1
            peak = max(peak, active)
            if active == 3:
                all_in.set()
            await all_in.wait()
            await asyncio.sleep(0)
            active -= 1
            return {"output": "x"}
        return request

    summary = await process_file(source, tmp_path / "out.jsonl", TextLine, factory, concurrency=3, progress=False)
    assert peak == 3 and summary.succeeded == 10


# ----- the output file as a resume log -----

def test_recover_cuts_a_torn_last_line(tmp_path):
    out = tmp_path / "out.jsonl"
    whole = '{"id": "a", "line": 1, "ok": true}\n{"id": "b", "line": 2, "ok": false}\n'
    out.write_text(whole + '{"id": "c", "line": 3, "ok": tr')
    assert recover(out) == {"a": True, "b": False}
    assert out.read_text() == whole


def test_recover_refuses_a_file_whose_bad_line_is_not_the_last(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text('{"id": "a", "line": 1, "ok": true}\nhello\n{"id": "b", "line": 2, "ok": true}\n')
    with pytest.raises(OutputFileError, match="line 2 is not a batch record"):
        recover(out)


async def test_a_rerun_skips_recorded_ids_failures_included(tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", {"prompt": "a"}, {"prompt": "fail"}, {"prompt": "c"})
    out = tmp_path / "out.jsonl"
    out.write_text('{"id": "1", "line": 1, "ok": true, "output": "x"}\n{"id": "2", "line": 2, "ok": fal')
    calls = []
    summary = await process_file(source, out, TextLine, echo_factory(calls), progress=False)
    assert sorted(calls) == ["2", "3"] and (summary.done_before, summary.succeeded, summary.failed) == (1, 1, 1)
    calls.clear()
    again = await process_file(source, out, TextLine, echo_factory(calls), progress=False)
    assert calls == [] and (again.done_before, again.succeeded, again.failed) == (3, 0, 0)
    assert sorted(r["id"] for r in records(out)) == ["1", "2", "3"]


async def test_retry_failed_redoes_only_failures_and_keeps_one_record_per_id(tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", {"prompt": "a"}, {"prompt": "b"})
    out = tmp_path / "out.jsonl"
    out.write_text('{"id": "1", "line": 1, "ok": true, "output": "x"}\n'
                   '{"id": "2", "line": 2, "ok": false, "error": {"type": "RateLimitError", "message": "429"}}\n')
    calls = []
    summary = await process_file(source, out, TextLine, echo_factory(calls), progress=False, retry_failed=True)
    assert calls == ["2"] and (summary.done_before, summary.succeeded) == (1, 1)
    assert [(r["id"], r["ok"]) for r in records(out)] == [("1", True), ("2", True)]


async def test_a_cancelled_run_leaves_whole_lines_and_the_rerun_finishes_the_rest(tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", *({"prompt": str(i)} for i in range(12)))
    out = tmp_path / "out.jsonl"
    finished, four_written = 0, asyncio.Event()

    def stalling_factory():
        async def request(line):
            nonlocal finished
            if finished >= 4:
                await asyncio.Event().wait()          # in flight forever, until cancelled
            finished += 1
            if finished == 4:
                asyncio.get_running_loop().call_soon(four_written.set)   # after its record is written
            return {"output": line.prompt}
        return request

    job = asyncio.ensure_future(process_file(source, out, TextLine, stalling_factory, concurrency=3, progress=False))
    await four_written.wait()
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    assert out.read_bytes().endswith(b"\n") and len(records(out)) == 4
    calls = []
    summary = await process_file(source, out, TextLine, echo_factory(calls), progress=False)
    assert summary.done_before == 4 and len(calls) == 8
    ids = [r["id"] for r in records(out)]
    assert sorted(ids, key=int) == [str(n) for n in range(1, 13)]
