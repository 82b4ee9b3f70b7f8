"""Fixtures shared by the bench-server and live-view tests: a fake bench served in process.

Modules that need another bench or server limits define their own fixtures of the
same names, which take precedence.
"""

from __future__ import annotations

import pytest

from labctl.client import BenchClient
from tests.labctl.fakes import FakeBench, start_server

FAKE_SHAPE = (20, 30)  # input-SLM ROI (rows, cols) of the fake bench


@pytest.fixture()
def bench():
    return FakeBench(FAKE_SHAPE)


@pytest.fixture()
def server(bench):
    srv = start_server(bench)
    yield srv
    srv.close()


@pytest.fixture()
def client(server):
    with BenchClient(server.endpoint, timeout_s=5) as c:
        yield c
