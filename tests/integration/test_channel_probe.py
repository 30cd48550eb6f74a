"""The channel page's "Test now": the health probe on demand, for operators, changing no state; its
answer lands in place (htmx) and stays as the channel's last test in the list. "Test all channels"
starts the scheduled health check on its worker."""
from __future__ import annotations

import re

import pytest

from controlplane.extensions import db
from controlplane.models import Channel, ChannelEvent, Role
from controlplane.services import users
from tests import factories
from tests.fakes.openai_server import Behaviour, FakeOpenAI, invalid_key
from tests.helpers import csrf_token, login

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def fake():
    server = FakeOpenAI()
    yield server
    server.close()


@pytest.fixture
def signed_in(client, fake):
    fake.reset_log()
    users.create_operator(factories.ACTOR, "op@example.com", PASSWORD, Role.OPERATOR)
    assert login(client, "op@example.com", PASSWORD).status_code == 302
    return client


def press_test_now(client, channel_id: int, **headers):
    token = csrf_token(client, f"/admin/channels/{channel_id}")
    return client.post(f"/admin/channels/{channel_id}/test", headers={"X-CSRFToken": token, **headers})


def test_the_channel_page_has_a_test_now_button_wired_to_the_probe(signed_in, fake):
    ch = factories.channel(fake.url)
    page = signed_in.get(f"/admin/channels/{ch.id}").get_data(as_text=True)
    form = re.search(r'<form method="post" action="([^"]+)"([^>]*)>\s*<input[^>]*csrf_token[^>]*>\s*<button type="submit"[^>]*>Test now</button>', page)
    assert form and form.group(1) == f"/admin/channels/{ch.id}/test"
    assert f'hx-post="/admin/channels/{ch.id}/test"' in form.group(2) and 'hx-target="#probe-result"' in form.group(2)
    assert '<div id="probe-result">' in page


def test_json_callers_get_the_result_and_latency(signed_in, fake):
    ch = factories.channel(fake.url, keys_=("sk-good", "sk-dead"))
    fake.by_key["sk-dead"] = invalid_key()
    reply = press_test_now(signed_in, ch.id, Accept="application/json")
    assert reply.status_code == 200
    data = reply.get_json()
    assert data["ok"] is True and isinstance(data["latency_ms"], int)
    assert [(r["key_id"], r["verdict"]) for r in data["results"]] == [(ch.keys[0].id, "pass"), (ch.keys[1].id, "key_fail")]
    assert data["results"][0]["model"] == "gpt-4o-mini" and data["results"][0]["operation"] == "chat"
    assert "Incorrect API key" in data["results"][1]["message"]
    assert fake.keys_seen() == ["sk-good", "sk-dead"]


def test_it_changes_nothing_even_when_the_channel_fails(signed_in, fake):
    ch = factories.channel(fake.url)
    fake.default = Behaviour(status=500)
    for _ in range(4):
        assert press_test_now(signed_in, ch.id, Accept="application/json").get_json()["ok"] is False
    db.session.expire_all()
    tested = db.session.get(Channel, ch.id)
    assert tested.status == "enabled" and db.session.query(ChannelEvent).count() == 0
    assert tested.probe_failures == 0 and tested.probe_passes == 0 and tested.probed_at is not None  # the last test is kept


def test_htmx_gets_a_fragment_and_a_plain_browser_a_page(signed_in, fake):
    ch = factories.channel(fake.url)
    fragment = press_test_now(signed_in, ch.id, **{"HX-Request": "true"}).get_data(as_text=True)
    assert fragment.lstrip().startswith('<div class="probe-result"') and "passed" in fragment and " ms" in fragment
    assert "<html" not in fragment
    page = press_test_now(signed_in, ch.id).get_data(as_text=True)
    assert "<html" in page and "Test of" in page and "passed" in page and "Back to the channel" in page


def test_support_staff_may_not_run_it_and_strangers_must_sign_in(client, app, fake):
    fake.reset_log()
    ch = factories.channel(fake.url)
    users.create_operator(factories.ACTOR, "support@example.com", PASSWORD, Role.SUPPORT)
    login(client, "support@example.com", PASSWORD)
    assert press_test_now(client, ch.id, Accept="application/json").status_code == 403
    client.post("/logout", data={"csrf_token": csrf_token(client, "/admin/channels/")})
    assert client.post(f"/admin/channels/{ch.id}/test", headers={"Accept": "application/json"}).status_code in (400, 401)
    assert fake.requests == []


def test_an_unknown_channel_is_404(signed_in):
    token = csrf_token(signed_in, "/admin/channels/")
    assert signed_in.post("/admin/channels/999/test", headers={"X-CSRFToken": token}).status_code == 404


def test_the_list_shows_each_channels_last_test_and_test_now_fills_it_in_place(signed_in, fake):
    ch = factories.channel(fake.url, name="Primary")
    listing = signed_in.get("/admin/channels/").get_data(as_text=True)
    cell = re.search(rf'<td id="last-test-{ch.id}"[^>]*>(.*?)</td>', listing, re.S)
    assert cell and "never" in cell.group(1)
    assert f'hx-post="/admin/channels/{ch.id}/test?compact=1"' in listing and f'hx-target="#last-test-{ch.id}"' in listing
    token = csrf_token(signed_in, "/admin/channels/")
    compact = signed_in.post(f"/admin/channels/{ch.id}/test?compact=1", headers={"X-CSRFToken": token, "HX-Request": "true"})
    assert "passed" in compact.get_data(as_text=True) and " ms" in compact.get_data(as_text=True) and "<ul>" not in compact.get_data(as_text=True)
    listing = signed_in.get("/admin/channels/").get_data(as_text=True)
    cell = re.search(rf'<td id="last-test-{ch.id}"[^>]*>(.*?)</td>', listing, re.S)
    assert " ms</span>" in cell.group(1) and ("ago" in cell.group(1) or "just now" in cell.group(1))


def test_test_all_channels_starts_the_health_check_on_its_worker(signed_in, redis_client):
    from rq import Queue

    from workers import queues

    queue = Queue(queues.PROBE, connection=redis_client)
    queue.empty()
    listing = signed_in.get("/admin/channels/").get_data(as_text=True)
    assert ">Test all channels</button>" in listing
    token = csrf_token(signed_in, "/admin/channels/")
    reply = signed_in.post("/admin/channels/test-all", headers={"X-CSRFToken": token})
    assert reply.status_code == 302
    assert [job.func_name for job in queue.jobs] == ["workers.health.scheduled_probe"]
    assert "Testing every enabled and auto-disabled channel now" in signed_in.get("/admin/channels/").get_data(as_text=True)
    queue.empty()
