"""Pytest fixtures for the fake provider server.

Import them into a conftest (``from tests.fakes.fixtures import fake, fake_server``) or list
this module in ``pytest_plugins``. `fake_server` starts one server for the whole session;
`fake` hands it to a test with queues, request log and `delay_s` reset, so tests cannot leak
scripted replies or faults into each other.
"""

from __future__ import annotations

from typing import Iterator

import pytest

from tests.fakes.server import FakeServer


@pytest.fixture(scope="session")
def fake_server() -> Iterator[FakeServer]:
    with FakeServer() as server:
        yield server


@pytest.fixture
def fake(fake_server: FakeServer) -> FakeServer:
    fake_server.reset()
    return fake_server
