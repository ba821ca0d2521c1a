"""The shared worker pool on a local Ray: requests through real engines and the OpenAI SDK to the fake
server, workers dying under requests, the cluster-wide in-flight limit, growth, typed errors.

One Ray for the module; each test gets a fresh pool (the manager, its workers and the limiter are killed
and the saved limits dropped between tests), so pool settings and dead workers never leak from one test to
the next.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import subprocess
import sys
import threading
from typing import Iterator

import pytest
import ray
from ray.exceptions import RayTaskError
from ray.experimental.internal_kv import _internal_kv_del

import aimu_ray
from aimu_ray.backends.pool import pool_backend
from aimu_ray.hosts.limiter import LIMITER_NAME, LIMITS_KEY
from aimu_ray.cluster.connection import NAMESPACE
from aimu_ray.hosts.pool_manager import MANAGER_NAME, get_manager
from aimu_ray.models.errors import ModelConnectionError, ProviderError, RateLimitError, UpstreamError
from aimu_ray.models.wire import ChatDelta, ChatRequest, ChatResult, Endpoint
from aimu_ray.hosts.pool_manager import PoolConfig
from tests.fakes import FakeServer

pytestmark = [pytest.mark.asyncio, pytest.mark.usefixtures("local_ray")]
HANG_GUARD_S = 60      # only so that a broken limiter fails the test instead of hanging the run
SLOW_S = 600           # a provider answer slower than any test waits: the request is surely in flight
RESTART_S = 4          # longer than Ray takes to restart an actor here (1-2 s)


class PeakConcurrency:
    """ASGI wrapper around the fake: the most HTTP requests it was answering at once since ``reset``.

    Requests left hanging by an earlier test's killed worker are forgotten at ``reset``.
    """

    def __init__(self, app) -> None:
        self.app = app
        self.active: set[object] = set()
        self.peak = 0

    def reset(self) -> None:
        self.active.clear()
        self.peak = 0

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        token = object()
        self.active.add(token)
        self.peak = max(self.peak, len(self.active))
        try:
            await self.app(scope, receive, send)
        finally:
            self.active.discard(token)


@pytest.fixture(scope="module")
def server() -> Iterator[FakeServer]:
    server = FakeServer()
    server.app = PeakConcurrency(server.app)
    with server:
        yield server


@pytest.fixture
def fake(server: FakeServer) -> FakeServer:
    server.reset()
    server.app.reset()
    return server


@pytest.fixture(autouse=True)
def fresh_pool() -> Iterator[None]:
    yield
    pool_backend().reset()
    _internal_kv_del(LIMITS_KEY, namespace=NAMESPACE)
    names = [actor["name"] for actor in ray.util.list_named_actors(all_namespaces=True)
             if actor["namespace"] == NAMESPACE]     # the manager, the workers, the limiter: each detached
    for name in names:
        try:
            ray.kill(ray.get_actor(name, namespace=NAMESPACE))
            while True:                      # until the name is free for the next test's pool
                ray.get_actor(name, namespace=NAMESPACE)
        except ValueError:
            pass


def request(fake: FakeServer, text: str = "hi", **fields) -> ChatRequest:
    endpoint = Endpoint(base_url=f"{fake.url}/v1", api_key="sk-test", max_retries=0)
    return ChatRequest(provider="openai", model="fake-model", endpoint=endpoint,
                       messages=[{"role": "user", "content": text}], **fields)


async def workers() -> dict:
    return await get_manager().workers.remote()


async def until(predicate) -> None:
    """Poll ``predicate`` (plain or async) until it holds."""
    while True:
        held = predicate()
        if inspect.isawaitable(held):
            held = await held
        if held:
            return
        await asyncio.sleep(0.02)


async def busy_worker() -> tuple:
    """The worker running this test's one request in flight."""
    while True:
        for key, worker in (await workers()).items():
            if await worker.in_flight.remote():
                return key, worker
        await asyncio.sleep(0.02)


async def test_chat_through_the_pool(fake):
    fake.reply("Hello from the pool.", prompt_tokens=5, completion_tokens=4)
    result = await pool_backend().call(request(fake))
    assert result.content == "Hello from the pool." and result.usage.input_tokens == 5
    assert fake.requests[-1].body["messages"] == [{"role": "user", "content": "hi"}]


async def test_stream_arrives_in_pieces_then_the_result(fake):
    fake.reply("Ray streams every piece.", reasoning="Think.")
    items = [item async for item in pool_backend().stream(request(fake, stream=True))]
    deltas, result = items[:-1], items[-1]
    assert len(deltas) > 2 and all(isinstance(d, ChatDelta) for d in deltas)
    assert "".join(d.text for d in deltas if d.phase == "generating") == "Ray streams every piece."
    assert isinstance(result, ChatResult) and result.content == "Ray streams every piece."


async def test_clients_in_other_threads_loops_and_processes_share_one_pool(fake):
    ours = await pool_backend().call(request(fake, "from the test loop"))
    in_thread: list[ChatResult] = []
    thread = threading.Thread(target=lambda: in_thread.append(
        asyncio.run(pool_backend().call(request(fake, "from another loop")))))
    thread.start()
    thread.join()
    script = ("import asyncio, json, sys, ray\n"
              "from aimu_ray.backends.pool import pool_backend\n"
              "from aimu_ray.hosts.pool_manager import get_manager\n"
              "from aimu_ray.models.wire import ChatRequest\n"
              "result = asyncio.run(pool_backend().call(ChatRequest.model_validate_json(sys.argv[1])))\n"
              "print(json.dumps([result.content, sorted(ray.get(get_manager().workers.remote()))]))\n")
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    done = subprocess.run([sys.executable, "-c", script, request(fake, "from another process").model_dump_json()],
                          env=env, capture_output=True, text=True, timeout=120, cwd=os.getcwd())
    assert done.returncode == 0, done.stderr
    content, their_workers = json.loads(done.stdout.splitlines()[-1])
    assert [ours.content, in_thread[0].content, content] == [
        "echo: from the test loop", "echo: from another loop", "echo: from another process"]
    assert their_workers == sorted(await workers())


async def test_a_request_inside_another_ray_actor(fake):
    @ray.remote
    class Caller:
        async def ask(self, req: ChatRequest) -> str:
            return (await pool_backend().call(req)).content

    assert await Caller.remote().ask.remote(request(fake, "from an actor")) == "echo: from an actor"


async def test_a_killed_worker_is_replaced(fake):
    await pool_backend().call(request(fake))
    key, worker = next(iter((await workers()).items()))
    ray.kill(worker)
    answers = await asyncio.gather(*(pool_backend().call(request(fake, f"n{i}")) for i in range(6)))
    assert [a.content for a in answers] == [f"echo: n{i}" for i in range(6)]

    async def replaced() -> bool:
        now = await workers()
        return key not in now and len(now) == 2
    await until(replaced)


async def test_a_request_on_a_worker_that_dies_is_retried_on_another(fake):
    fake.fault(delay_s=SLOW_S)               # the first request hangs on the provider...
    pending = asyncio.create_task(pool_backend().call(request(fake, "retry me")))
    await until(lambda: len(fake.requests) == 1)
    _, worker = await busy_worker()
    ray.kill(worker)                         # ...when its worker dies
    assert (await pending).content == "echo: retry me"
    assert len(fake.requests) == 2


async def test_a_stream_that_already_sent_text_fails_typed_when_its_worker_dies(fake):
    fake.reply("one two three four five six")
    fake.fault(chunk_delay_s=0.5)
    stream = pool_backend().stream(request(fake, stream=True))
    assert isinstance(await anext(stream), ChatDelta)
    _, worker = await busy_worker()
    ray.kill(worker)
    with pytest.raises(ModelConnectionError, match="mid-stream"):
        async for _ in stream:
            pass
    assert len(fake.requests) == 1           # not retried: the text would have been repeated


async def test_the_in_flight_limit_holds_across_workers(fake):
    aimu_ray.init(max_in_flight={"openai": 2})
    fake.delay_s = 0.2
    handles = list((await workers()).values())
    assert len(handles) == 2
    calls = [handles[i % 2].run.remote(request(fake, f"n{i}")) for i in range(8)]
    results = await asyncio.wait_for(asyncio.gather(*calls), HANG_GUARD_S)
    assert sorted(r.content for r in results) == sorted(f"echo: n{i}" for i in range(8))
    assert fake.app.peak == 2
    limiter = ray.get_actor(LIMITER_NAME, namespace=NAMESPACE)

    async def all_returned() -> bool:         # workers release without waiting, so look until they land
        return await limiter.in_use.remote() == {}
    await asyncio.wait_for(until(all_returned), HANG_GUARD_S)


async def test_permits_come_back_from_cancelled_requests_and_dead_workers(fake):
    aimu_ray.init(max_in_flight={"openai": 1})
    _, worker = next(iter((await workers()).items()))
    fake.fault(delay_s=SLOW_S)
    cancelled = asyncio.create_task(pool_backend().call(request(fake, "cancel me")))
    await until(lambda: len(fake.requests) == 1)
    cancelled.cancel()
    assert (await asyncio.wait_for(pool_backend().call(request(fake, "next")), HANG_GUARD_S)).content == "echo: next"

    fake.fault(delay_s=SLOW_S)
    doomed = worker.run.remote(request(fake, "dies holding the permit"))
    await until(lambda: len(fake.requests) == 3)
    ray.kill(worker)
    answer = await asyncio.wait_for(pool_backend().call(request(fake, "after")), HANG_GUARD_S)
    assert answer.content == "echo: after"
    with pytest.raises(ray.exceptions.RayActorError):
        await doomed


async def test_closing_a_stream_early_cancels_it_and_returns_its_permit(fake):
    aimu_ray.init(max_in_flight={"openai": 1})
    fake.reply("word " * 1000)               # half a second a word: the stream would run for minutes
    fake.fault(chunk_delay_s=0.5)
    stream = pool_backend().stream(request(fake, stream=True))
    assert isinstance(await anext(stream), ChatDelta)
    await stream.aclose()
    answer = await asyncio.wait_for(pool_backend().call(request(fake, "next")), HANG_GUARD_S)
    assert answer.content == "echo: next"


@pytest.mark.parametrize("lost", [(MANAGER_NAME,), (LIMITER_NAME,), (MANAGER_NAME, LIMITER_NAME)])
async def test_the_in_flight_limit_outlives_the_manager_and_the_limiter(fake, lost):
    """Killed under load and restarted by Ray, they lose neither the limits nor the permits in flight."""
    aimu_ray.init(max_in_flight={"openai": 2})
    fake.delay_s = 0.3
    for _ in range(2):
        fake.fault(delay_s=RESTART_S)                # the first two still hold their permits after the restart
    keys = sorted(await workers())
    first = [asyncio.create_task(pool_backend().call(request(fake, f"a{i}"))) for i in range(10)]
    await asyncio.wait_for(until(lambda: len(fake.app.active) == 2), HANG_GUARD_S)   # eight wait for permits
    for name in lost:
        ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=False)
    second = [asyncio.create_task(pool_backend().call(request(fake, f"b{i}"))) for i in range(10)]
    answers = await asyncio.wait_for(asyncio.gather(*first, *second), HANG_GUARD_S)
    assert [a.content for a in answers] == [f"echo: a{i}" for i in range(10)] + [f"echo: b{i}" for i in range(10)]
    assert sorted(await workers()) == keys           # the restarted manager adopted the running workers

    key, worker = next(iter((await workers()).items()))
    ray.kill(worker)                                 # its replacement learns the limits from the restarted manager
    third = await asyncio.wait_for(asyncio.gather(*(pool_backend().call(request(fake, f"c{i}"))
                                                    for i in range(10))), HANG_GUARD_S)
    assert [a.content for a in third] == [f"echo: c{i}" for i in range(10)] and key not in await workers()
    assert fake.app.peak == 2


async def test_the_pool_grows_under_load(fake):
    aimu_ray.init(pool=PoolConfig(min_workers=1, max_workers=3, scale_up_at=4, check_interval_s=0.1))
    fake.delay_s = 1.0
    results = await asyncio.gather(*(pool_backend().call(request(fake, f"n{i}")) for i in range(40)))
    assert len(results) == 40
    assert 1 < len(await workers()) <= 3


async def test_errors_arrive_typed_not_wrapped_by_ray(fake):
    fake.fault(status=429, retry_after=7)
    with pytest.raises(RateLimitError) as caught:
        await pool_backend().call(request(fake))
    assert not isinstance(caught.value, RayTaskError)
    assert caught.value.status_code == 429 and caught.value.retry_after == 7
    assert isinstance(caught.value.__cause__, UpstreamError)

    fake.fault(status=400, message="bad request")
    with pytest.raises(ProviderError) as caught:
        async for _ in pool_backend().stream(request(fake, stream=True)):
            pass
    assert type(caught.value) is ProviderError and caught.value.status_code == 400
