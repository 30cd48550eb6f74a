"""End-to-end fixtures: a real `switchboard up` and a fake upstream on real sockets."""
from __future__ import annotations

import pytest

from tests.fakes.openai_server import FakeOpenAI
from tests.gateway import ROOT, Gateway, free_port  # noqa: F401  (re-exported for tests)


@pytest.fixture(scope="module")
def fake_openai():
    fake = FakeOpenAI()
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    gw = Gateway(tmp_path_factory.mktemp("gateway"), {"SWITCHBOARD_MAX_BODY_BYTES": str(256 * 1024)})
    yield gw
    gw.stop()
