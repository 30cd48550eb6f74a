"""Steering and the shared retry budget across real processes: `switchboard up` plus a second
`switchboard relay` on the same Redis, the official openai SDK as the caller, fake upstreams behind."""
from __future__ import annotations

import threading
import time

import openai
import pytest
from sqlalchemy import select

from controlplane.extensions import db
from controlplane.models import RequestLog
from controlplane.runtime import runtime
from controlplane.services import model_routes
from tests import factories
from tests.e2e.gateway_state import SecondRelay, inspecting, state_app, wait_for_snapshot
from tests.fakes.openai_server import Behaviour, FakeOpenAI
from tests.gateway import Gateway

pytestmark = pytest.mark.e2e

ENV = {
    "SWITCHBOARD_UPSTREAM_FIRST_BYTE_TIMEOUT": "10",
    "SWITCHBOARD_UPSTREAM_TOTAL_TIMEOUT": "30",
    "SWITCHBOARD_PROBE_EVERY_SECONDS": "0",  # no scheduled probes eating the fakes' scripted answers
    # One retry beyond a request's first failover in flight at a time — across the deployment.
    "SWITCHBOARD_RETRY_BUDGET_PERCENT": "0",
    "SWITCHBOARD_RETRY_BUDGET_MIN": "1",
}
CHEAP_CHAT = 12 * 3 + 5 * 15  # the fake's usage (12 in, 5 out) at $3 / $15 per 1M, in µ$


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    gw = Gateway(tmp_path_factory.mktemp("steering-gateway"), ENV)
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def second(gateway):
    relay = SecondRelay(gateway)
    yield relay
    relay.stop()


@pytest.fixture(scope="module")
def inspector(gateway):
    return state_app(gateway)


@pytest.fixture(scope="module")
def fake():
    server = FakeOpenAI()
    yield server
    server.close()


def customer(inspector) -> str:
    with inspecting(inspector):
        _, secret = factories.api_key(factories.funded_user("5"))
        return secret


def synced(inspector, *relays) -> None:
    with inspector.app_context():
        wait_for_snapshot(runtime().redis, *(relay.url for relay in relays))


def log_of(inspector, request_id: str, timeout: float = 60) -> RequestLog:
    deadline = time.time() + timeout
    while True:
        with inspecting(inspector):
            row = db.session.scalar(select(RequestLog).where(RequestLog.request_id == request_id))
            if row is not None:
                db.session.expunge(row)
                return row
        assert time.time() < deadline, f"no request log for {request_id}"
        time.sleep(0.2)


def sdk(base_url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=30)


def test_a_fallback_list_and_an_alias_through_switchboard_up(gateway, inspector, fake):
    with inspecting(inspector):
        factories.price("steer-dear", input="30", output="150")
        factories.price("steer-cheap", input="3", output="15")
        factories.channel(fake.url, models=("steer-dear",), keys_=("sk-dear",), name="steer-dear")
        factories.channel(fake.url, models=("steer-cheap",), keys_=("sk-cheap",), name="steer-cheap")
        model_routes.set_route(factories.ACTOR, "steer-smart", targets=["steer-dear", "steer-cheap"])
    key = customer(inspector)
    fake.by_key["sk-dear"] = Behaviour(status=500)
    synced(inspector, gateway)
    client = sdk(gateway.base_url, key)
    raw = client.chat.completions.with_raw_response.create(model="steer-dear", messages=[{"role": "user", "content": "hi"}],
                                                           extra_body={"models": ["steer-cheap"]})
    answer = raw.parse()
    assert answer.model == "steer-cheap" and raw.headers["x-switchboard-model"] == "steer-cheap"
    log = log_of(inspector, raw.headers["x-request-id"])
    assert (log.model, log.cost) == ("steer-cheap", CHEAP_CHAT)
    aliased = client.chat.completions.with_raw_response.create(model="steer-smart", messages=[{"role": "user", "content": "hi"}])
    assert aliased.headers["x-switchboard-model"] == "steer-cheap"
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="steer-cheap", messages=[{"role": "user", "content": "hi"}], extra_body={"provider": {"sort": "vibes"}})
    assert refused.value.body["param"] == "provider.sort"


def test_the_retry_budget_is_shared_by_relay_processes(gateway, second, inspector, fake):
    with inspecting(inspector):
        factories.price("budget-model", input="3", output="15")
        for name, priority in (("budget-1", 20), ("budget-2", 10), ("budget-3", 0)):
            factories.channel(fake.url, models=("budget-model",), keys_=(f"sk-{name}",), name=name, priority=priority)
    key = customer(inspector)
    fake.by_key["sk-budget-1"] = Behaviour(status=500)
    fake.by_key["sk-budget-2"] = Behaviour(status=500)
    fake.by_key["sk-budget-3"] = Behaviour(first_byte_delay=4)  # answers, slowly: its retry slot stays taken
    synced(inspector, gateway, second)
    body = {"model": "budget-model", "messages": [{"role": "user", "content": "hi"}]}
    slow: dict = {}
    first = threading.Thread(target=lambda: slow.update(reply=sdk(gateway.base_url, key).chat.completions.with_raw_response.create(**body)))
    first.start()
    deadline = time.time() + 20
    while not any(r["headers"].get("Authorization") == "Bearer sk-budget-3" for r in fake.requests):
        assert time.time() < deadline, "the first request never reached its third channel"
        time.sleep(0.05)
    # The other relay process fails over once (always allowed), then finds the one retry slot taken.
    with pytest.raises(openai.APIStatusError) as refused:
        sdk(second.base_url, key).chat.completions.with_raw_response.create(**body)
    first.join(30)
    assert slow["reply"].http_response.status_code == 200
    log = log_of(inspector, refused.value.response.headers["x-request-id"])
    assert [s["why"] for s in log.trace if s.get("step") == "stop"] == ["retry budget exhausted"]
    assert len([s for s in log.trace if s.get("step") == "attempt"]) == 2  # the first channel, and the free failover
    after = sdk(second.base_url, key).chat.completions.with_raw_response.create(**body)  # the slot was given back
    assert after.http_response.status_code == 200
