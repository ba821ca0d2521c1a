"""``aimu-ray`` without Ray: the help of every subcommand, options in any order among the positionals,
``--option KEY=VALUE`` parsing, bad input answered with exit code 2 and one line before any connection to
Ray is made, and which Ray a command joins (the record a running ``aimu-ray serve`` leaves).

Every test that could reach Ray replaces the CLI's ``_connect`` with a function that fails the test, so
"refused before connecting" is checked, not assumed. The installed ``aimu-ray`` script is run once as a
process to show the entry point itself works.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest

from aimu_ray import cli
from aimu_ray.cluster import connection, served_ray as served_rays
from aimu_ray.cluster.served_ray import ServedRay, recording_served_ray, served_ray, served_rays_dir

SCRIPT = Path(sys.executable).with_name("aimu-ray")

# What each subcommand does, in words its own --help must use (the summaries of the command list,
# `aimu-ray --help`, are checked there).
SUBCOMMANDS = {
    "serve": ["YAML config", "serve it until Ctrl-C", "--host", "--port", "--no-access-log"],
    "chat": ["Stream the answer to PROMPT", "one stdin line per turn", "--served", "--system", "--option"],
    "image": ["Generate images", "path of each PNG", "--size", "--steps", "--output-dir", "--served"],
    "audio": ["Generate audio", "path of each WAV", "--duration", "--output-dir"],
    "batch": ["One request per input line", "rerun skips", "--input", "--output", "--option", "--concurrency",
              "--replicas", "auto", "--ray-data", "Parquet"],
    "status": ["GPUs", "in-process model", "Serve apps", "--json"],
    "unload": ["model string", "all models when left out", "--grace"],
}
SUMMARIES = {
    "serve": "run the OpenAI-compatible Serve app from a config file",
    "chat": "chat with a model: one prompt, or a conversation on stdin",
    "image": "generate images into a folder",
    "audio": "generate audio clips into a folder",
    "batch": "run a file or dataset of requests; resumable",
    "status": "GPUs, placed models, memory reserved vs used, and why",
    "unload": "unload in-process models, giving their GPU shares back",
}


@pytest.fixture(autouse=True)
def wide_help(monkeypatch):
    """argparse wraps help to the terminal's width: a wide one keeps phrases on one line."""
    monkeypatch.setenv("COLUMNS", "300")


@pytest.fixture
def no_ray(monkeypatch):
    """The CLI may not connect to Ray in these tests: input errors are found first."""
    def refuse(*args, **kwargs):
        raise AssertionError("the CLI connected to Ray")
    monkeypatch.setattr(cli, "_connect", refuse)


def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    """``aimu-ray ARGV`` in this process: exit code (argparse's SystemExit included), stdout, stderr."""
    try:
        code = cli.main(list(argv))
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


# ----- help -----

def test_top_level_help_names_every_subcommand_and_the_cluster(capsys):
    code, out, _ = run_main(capsys, "--help")
    assert code == 0
    assert "usage: aimu-ray" in out
    assert "OpenAI-compatible" in out and "--address" in out and "RAY_ADDRESS" in out
    for name, summary in SUMMARIES.items():
        assert any(line.split() == [name, *summary.split()] for line in out.splitlines()), name
    assert "examples:" in out and "aimu-ray batch --model" in out


@pytest.mark.parametrize("command", sorted(SUBCOMMANDS))
def test_every_subcommand_help_says_what_it_does(capsys, command):
    code, out, err = run_main(capsys, command, "--help")
    assert code == 0, err
    assert out.startswith(f"usage: aimu-ray {command}")
    text = " ".join(out.split())
    missing = [words for words in SUBCOMMANDS[command] if words not in text]
    assert not missing, f"`aimu-ray {command} --help` does not mention {missing}:\n{out}"


def test_the_installed_script_runs():
    done = subprocess.run([str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "usage: aimu-ray" in done.stdout


# ----- argparse's own errors -----

def test_an_unknown_subcommand_is_an_argparse_error(capsys):
    code, out, err = run_main(capsys, "bogus")
    assert code == 2
    assert out == ""
    assert "invalid choice: 'bogus'" in err and "Traceback" not in err


def test_no_subcommand_is_an_argparse_error(capsys):
    code, _, err = run_main(capsys)
    assert code == 2
    assert "required: COMMAND" in err


def test_a_missing_required_argument_is_an_argparse_error(capsys):
    code, _, err = run_main(capsys, "batch", "--model", "openai:gpt-4.1", "--input", "in.jsonl")
    assert code == 2
    assert "--output" in err


# ----- --option KEY=VALUE -----

@pytest.mark.parametrize(("pair", "key", "value"), [
    ("n_ctx=4096", "n_ctx", 4096),
    ("temperature=0.5", "temperature", 0.5),
    ("verbose=true", "verbose", True),
    ("chat_handler=null", "chat_handler", None),
    ('model_kwargs={"torch_dtype": "bfloat16", "trust_remote_code": true}', "model_kwargs",
     {"torch_dtype": "bfloat16", "trust_remote_code": True}),
    ('stop=["a", "b"]', "stop", ["a", "b"]),
    ('name="quoted"', "name", "quoted"),
    ("model_path=/models/qwen3-8b-q4.gguf", "model_path", "/models/qwen3-8b-q4.gguf"),   # not JSON: the text
    ("base_url=http://gpu-7:8000/v1", "base_url", "http://gpu-7:8000/v1"),
    ("url=a=b", "url", "a=b"),                 # split at the first '='
    ("empty=", "empty", ""),
    ("dtype=bfloat16", "dtype", "bfloat16"),
])
def test_option_values_are_json_when_they_parse_else_text(pair, key, value):
    assert cli._options([pair]) == {key: value}


def test_options_accumulate_and_a_repeated_key_takes_the_last():
    assert cli._options(["a=1", "b=x", "a=2"]) == {"a": 2, "b": "x"}
    assert cli._options([]) == {}


def test_option_is_repeatable_on_the_command_line():
    args = cli._parser().parse_args(["chat", "hf:org/m", "hi", "--option", "n_ctx=1", "--option", "x=y"])
    assert args.option == ["n_ctx=1", "x=y"]
    assert cli._options(args.option) == {"n_ctx": 1, "x": "y"}


@pytest.mark.parametrize("pair", ["novalue", "=5", ""])
def test_a_malformed_option_is_refused(pair):
    with pytest.raises(ValueError, match="KEY=VALUE"):
        cli._options([pair])


@pytest.mark.parametrize("argv", [
    ["chat", "openai:gpt-4.1", "hi", "--option", "novalue"],
    ["image", "hf:org/sd", "a fox", "--option", "=1"],
    ["audio", "hf:org/musicgen", "piano", "--option", "oops"],
    ["batch", "--model", "openai:gpt-4.1", "--input", "in.jsonl", "--output", "out.jsonl", "--option", "oops"],
], ids=["chat", "image", "audio", "batch"])
def test_a_malformed_option_exits_2_with_one_line_before_connecting(capsys, no_ray, argv):
    code, out, err = run_main(capsys, *argv)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"aimu-ray {argv[0]}: --option takes KEY=VALUE")
    assert repr(argv[-1]) in err


@pytest.mark.parametrize("command", ["chat", "image", "audio"])
def test_option_with_served_is_refused_before_connecting(capsys, no_ray, command):
    code, out, err = run_main(capsys, command, "qwen", "a prompt", "--served", "--option", "n_ctx=4096")
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"aimu-ray {command}: --option does not apply with --served")


# ----- the model arguments -----

def test_served_is_a_flag_and_the_app_defaults_to_aimu_ray():
    parse = cli._parser().parse_args
    args = parse(["chat", "qwen", "What is Ray?", "--served"])
    assert (args.model, args.prompt, args.served, args.app) == ("qwen", "What is Ray?", True, "aimu_ray")
    assert parse(["chat", "qwen", "--served", "--app", "mine"]).app == "mine"
    args = parse(["chat", "anthropic:claude-sonnet-4-6"])
    assert (args.prompt, args.served, args.option) == (None, False, [])


def test_address_is_a_top_level_option():
    args = cli._parser().parse_args(["--address", "127.0.0.1:6379", "status", "--json"])
    assert (args.address, args.command, args.json) == ("127.0.0.1:6379", "status", True)
    assert cli._parser().parse_args(["unload"]).model is None
    assert cli._parser().parse_args(["unload", "--grace", "2.5", "hf:m"]).grace == 2.5


def test_a_bad_size_is_refused_in_one_line(capsys, monkeypatch):
    monkeypatch.setattr(cli, "_client", lambda args, task: None)     # no Ray, no model: only the parsing
    code, out, err = run_main(capsys, "image", "hf:org/sd", "a fox", "--size", "64xbig")
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("aimu-ray image: ")


def test_a_missing_config_file_is_refused_in_one_line(capsys, no_ray, tmp_path):
    code, out, err = run_main(capsys, "serve", str(tmp_path / "nope.yaml"))
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("aimu-ray serve: ") and "nope.yaml" in err


# ----- options anywhere among the positionals -----

PROMPTED = {"chat": "--system", "image": "--steps", "audio": "--duration"}      # an option that takes a value


def orders(command: str) -> list[list[str]]:
    """MODEL, PROMPT, a flag and an option with its value, in every order that keeps MODEL before PROMPT."""
    option = [PROMPTED[command], "3"]
    return [["m", "p", "--served", *option], ["m", "--served", "p", *option], ["--served", "m", "p", *option],
            ["m", *option, "p", "--served"], [*option, "m", "--served", "p"], ["m", "--served", *option, "p"],
            ["--served", *option, "m", "p"], ["m", "--option", "k=v", "p", "--served", *option]]


@pytest.mark.parametrize("command", sorted(PROMPTED))
def test_options_may_come_before_between_or_after_model_and_prompt(command):
    for argv in orders(command):
        args = cli._parser().parse_args([command, *argv])
        assert (args.model, args.prompt, args.served) == ("m", "p", True), argv
        assert str(getattr(args, PROMPTED[command].strip("-"))) in ("3", "3.0"), argv
        assert args.option == (["k=v"] if "--option" in argv else []), argv


@pytest.mark.parametrize("argv", [["chat", "fake", "--served", "hello"],
                                  ["chat", "llamacpp:tiny", "--option", "model_path=/m/tiny.gguf", "hi"]])
def test_the_readme_commands_parse(argv):
    args = cli._parser().parse_args(argv)
    assert (args.model, args.prompt) == (argv[1], argv[-1])


def test_a_prompt_that_starts_with_a_dash_comes_after_double_dash():
    args = cli._parser().parse_args(["chat", "m", "--served", "--", "-1 + 1?"])
    assert (args.model, args.prompt, args.served) == ("m", "-1 + 1?", True)


def test_without_a_prompt_chat_reads_stdin_whatever_the_order():
    for argv in (["chat", "m", "--served"], ["chat", "--served", "m"], ["chat", "m", "--system", "s"]):
        assert cli._parser().parse_args(argv).prompt is None, argv


@pytest.mark.parametrize("argv", [["chat", "m", "p", "extra"], ["image", "m", "--steps", "2"],
                                  ["audio", "m", "p", "--bogus"]])
def test_a_missing_or_extra_positional_is_still_an_argparse_error(capsys, argv):
    code, out, err = run_main(capsys, *argv)
    assert code == 2 and out == ""
    assert "error:" in err and "Traceback" not in err


def test_subcommand_help_keeps_its_usage_line(capsys):
    code, out, _ = run_main(capsys, "chat", "--served", "--help")
    assert code == 0
    assert out.startswith("usage: aimu-ray chat") and "model [prompt]" in " ".join(out.split())


# ----- the Ray a command joins -----

@pytest.fixture
def records(monkeypatch, tmp_path) -> Path:
    """Records go to a temp dir of this test's own."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return served_rays_dir()


def record_of(process: psutil.Process, **fields) -> ServedRay:
    return ServedRay(**{"address": "127.0.0.1:6379", "pid": process.pid, "started": process.create_time(),
                        "app": "aimu_ray", "url": "http://127.0.0.1:8000/v1", **fields})


def write(records: Path, record: ServedRay) -> None:
    records.mkdir(parents=True, exist_ok=True)
    (records / f"{record.pid}.json").write_text(record.model_dump_json())


def test_records_live_in_the_temp_dir_one_folder_per_user(records, tmp_path):
    assert records.parent == tmp_path and records.name.startswith("aimu_ray-serve-")


def test_no_record_means_no_served_ray(records):
    assert served_ray() is None
    records.mkdir()
    assert served_ray() is None


def test_a_record_lasts_as_long_as_its_block(records):
    with recording_served_ray("127.0.0.1:6379", "aimu_ray", "http://127.0.0.1:8000/v1"):
        found = served_ray()
        assert found == record_of(psutil.Process())
        assert [path.name for path in records.iterdir()] == [f"{os.getpid()}.json"]
    assert served_ray() is None and not list(records.iterdir())


def test_a_record_goes_when_the_block_fails(records):
    with pytest.raises(KeyboardInterrupt):
        with recording_served_ray("127.0.0.1:6379", "aimu_ray", "http://x/v1"):
            raise KeyboardInterrupt
    assert not list(records.iterdir())


def test_the_record_of_a_process_that_ended_is_ignored(records):
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    record = record_of(psutil.Process(ended.pid))
    ended.wait()
    write(records, record)
    assert served_ray() is None


def test_a_reused_pid_is_not_the_server(records):
    write(records, record_of(psutil.Process(), started=psutil.Process().create_time() - 60))
    assert served_ray() is None


def test_a_torn_or_foreign_file_is_skipped(records):
    records.mkdir()
    (records / "1.json").write_text('{"address": "127.0.')
    (records / "2.json").write_text("[]")
    write(records, record_of(psutil.Process()))
    assert served_ray() == record_of(psutil.Process())


def test_the_most_recently_started_live_server_wins(records):
    first, me = psutil.Process(1), psutil.Process()       # init: alive, and started well before this process
    write(records, record_of(first, address="127.0.0.1:1"))
    write(records, record_of(me, address="127.0.0.1:2"))
    assert served_ray().address == "127.0.0.1:2"          # (a parent shell may share this process's start tick)


def test_a_record_that_cannot_be_written_is_a_warning_not_a_failure(records, caplog):
    records.parent.joinpath(records.name).write_text("a file where the folder would be")
    with recording_served_ray("127.0.0.1:6379", "aimu_ray", "http://x/v1"):
        pass
    assert "give them --address 127.0.0.1:6379" in caplog.text


@pytest.fixture
def joined(monkeypatch):
    """What ``_connect`` passes to ``ensure_ray``, with a live server recorded and no Ray started."""
    calls = []
    monkeypatch.setattr(connection, "ensure_ray", lambda address, fast_serve: calls.append(address))
    monkeypatch.setattr(served_rays, "served_ray", lambda: record_of(psutil.Process(), address="127.0.0.1:4242"))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return calls


def test_a_command_without_an_address_joins_the_served_ray_and_says_so(capsys, joined):
    cli._connect(cli._parser().parse_args(["status"]))
    assert joined == ["127.0.0.1:4242"]
    _, err = capsys.readouterr()
    assert err == (f"aimu-ray: joining the Ray of `aimu-ray serve` (pid {os.getpid()}, app 'aimu_ray' at "
                   "http://127.0.0.1:8000/v1) at 127.0.0.1:4242\n")


def test_an_address_or_ray_address_wins_over_the_record(capsys, joined, monkeypatch):
    cli._connect(cli._parser().parse_args(["--address", "10.0.0.1:6379", "unload"]))
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.2:6379")
    cli._connect(cli._parser().parse_args(["unload"]))
    assert joined == ["10.0.0.1:6379", None]              # None: ray.init reads RAY_ADDRESS itself
    assert capsys.readouterr().err == ""


def test_serve_never_joins_another_server(capsys, joined):
    cli._connect(cli._parser().parse_args(["serve", "x.yaml"]), join_served=False)
    assert joined == [None] and capsys.readouterr().err == ""


def test_serve_records_its_ray_only_when_no_address_was_given(records, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with cli._recorded(cli._parser().parse_args(["--address", "a:1", "serve", "x.yaml"]), "a:1", "aimu_ray", "u"):
        assert served_ray() is None
    with cli._recorded(cli._parser().parse_args(["serve", "x.yaml"]), "127.0.0.1:6379", "aimu_ray", "u"):
        assert served_ray().address == "127.0.0.1:6379"
