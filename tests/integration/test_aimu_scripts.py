"""aimu code, unchanged but for the import: each script runs twice against the same loopback provider, once with
aimu 0.38 itself and once with ``import aimu_ray as aimu``, and the two must print the same lines.

The scripts print what aimu code reads (answers, parsed objects, the conversation's roles, tool calls, tool
schemas, the model's read surface, errors); nothing either library may choose for itself (tool-call ids, token
counts, how a stream is cut into chunks: a stream's text is printed whole).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("aimu")
pytest_plugins = ["tests.fakes.fixtures"]

SCRIPT_S = 120

TEXT_CLIENT = '''
import os
from typing import Literal, Optional

from pydantic import BaseModel

import aimu

url = os.environ["FAKE_URL"]
client = aimu.client(f"vllm:m@{url}/v1;tools,structured", system="Be brief.")
print(client.chat("hi"))
print(client.model.value, client.model.name, client.model.supports_tools, client.model.supports_vision,
      client.is_tool_using_model, client.supports_structured_output)


class City(BaseModel):
    name: str
    population: int


print(repr(client.chat("A city?", schema=City)))
print([m["role"] for m in client.messages])
print("".join(chunk.content for chunk in client.chat("stream me", stream=True)))
print(client.generate("once"), len(client.messages))


@aimu.tool
def weather(city: str, unit: Optional[Literal["C", "F"]] = None, days: int = 1) -> str:
    """Weather now.

    Looks the city up first.

    Args:
        city: The city,
            by name.
        unit: C or F.
    """
    return "sunny"


print(client.chat("Weather?", tools=[weather]), [(t["name"], t["arguments"]) for t in client.last_tool_calls])
print(client.messages[-1]["tool_calls"][0]["function"])
client.system_message = "New."
print(client.messages[0]["content"], client.last_output_truncated)
client.reset()
print(client.messages, client.system_message)
'''

PURE = '''
import aimu

print(repr(aimu.parse_json_response('Sure: ```json\\n{"a": 1}\\n```')))


@aimu.tool
def plain(name="x", count: int = 3, flag: bool = False, ratio: float | None = None, tags: list[str] = ()) -> str:
    """Do a thing.

    Second paragraph,
    on two lines.
    """


print(plain.__tool_spec__)
try:
    @aimu.tool
    def varargs(*items: str) -> str:
        """No."""
except Exception as error:
    print(type(error).__name__)
'''


def run(script: str, library: str, fake_url: str) -> subprocess.CompletedProcess:
    if library == "aimu_ray":
        script = script.replace("import aimu\n", "import aimu_ray as aimu\n")
    env = {**os.environ, "FAKE_URL": fake_url, "PYTHONPATH": os.getcwd()}
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=SCRIPT_S)


def replies_for_text_client(fake) -> None:
    fake.reply("Hello.")
    fake.reply('{"name": "Oslo", "population": 700000}')
    fake.reply("streamed words here")
    fake.reply("one-off")
    fake.reply("", tool_calls=[("weather", {"city": "Oslo"})])


@pytest.mark.parametrize("script", [TEXT_CLIENT, PURE], ids=["text_client", "pure"])
def test_an_aimu_script_prints_the_same_with_aimu_ray(fake, script):
    outputs = {}
    for library in ("aimu", "aimu_ray"):
        fake.reset()
        replies_for_text_client(fake)
        done = run(script, library, fake.url)
        assert done.returncode == 0, f"{library}: {done.stderr[-3000:]}"
        outputs[library] = done.stdout.splitlines()
    assert outputs["aimu_ray"] == outputs["aimu"]
