"""Channels in the console: every field, the mapping editor, keys (add many, masked, state with
reason, enable, disable, delete), the filtered list, bulk changes by tag, fetching models from a
real (fake) upstream, state history, and escaping of what operators and upstreams supply."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from controlplane.extensions import db
from controlplane.models import AuditEntry, Channel, ChannelEvent, ChannelKey
from tests import factories
from tests.console import as_operator, as_support, operator, post, support, text  # noqa: F401  (fixtures)
from tests.fakes.http import FakeServer, Handler
from tests.fakes.openai_server import FakeOpenAI

FORM = {"name": "Primary", "type": "openai", "base_url": "https://api.example.com/v1", "models": "gpt-4o\ngpt-4o-mini",
        "groups": "default, pro", "priority": "5", "weight": "3", "tag": "prod", "cost": "62.5", "config": '{"max_tokens_field": "max_completion_tokens"}',
        "model_map-0-public": "gpt-4", "model_map-0-upstream": "gpt-4-0613", "keys": "sk-first-AAAA1111\n\nsk-second-BBBB2222\n"}


def count(model) -> int:
    return db.session.scalar(select(func.count()).select_from(model))


def test_create_a_channel_with_every_field_and_many_keys(as_operator):
    response = post(as_operator, "/admin/channels/new", FORM)
    assert response.status_code == 302
    channel = db.session.scalar(select(Channel))
    assert (channel.name, channel.models, channel.model_map, channel.groups) == (
        "Primary", ["gpt-4o", "gpt-4o-mini"], {"gpt-4": "gpt-4-0613"}, ["default", "pro"])
    assert (channel.priority, channel.weight, channel.tag, channel.cost_bp, channel.config) == (
        5, 3, "prod", 6250, {"max_tokens_field": "max_completion_tokens"})
    assert [k.last4 for k in channel.keys] == ["1111", "2222"]
    page = text(as_operator.get(response.headers["Location"]))
    assert "••••1111" in page and "••••2222" in page and "sk-first" not in page
    assert "62.5% of list price" in page and "gpt-4 → gpt-4-0613" in page
    assert 'action="/admin/channels/%d/test"' % channel.id in page and ">Test now<" in page


@pytest.mark.parametrize("field,value,message", [
    ("base_url", "api.example.com/v1", "starting with https://"), ("base_url", "http://169.254.169.254/", "link-local"),
    ("weight", "-1", "at least 0"), ("models", "", "at least one model"), ("cost", "-5", "cannot be negative"),
    ("config", "[1, 2]", "JSON object"), ("config", "{nope", "not valid JSON"),
    # Settings are checked against the channel's type, naming the key: an Azure setting on an OpenAI
    # channel, a value of the wrong type.
    ("config", '{"api_version": "2024-06-01"}', "config.api_version is not a setting of openai channels"),
    ("config", '{"timeouts": {"idle": "soon"}}', "config.timeouts.idle: Expected float, got str"), ("keys", "", "at least one upstream key"),
    ("model_map-0-upstream", "", "both names"), ("name", "", "Give the channel a name"),
])
def test_an_invalid_channel_explains_next_to_the_field_and_saves_nothing(as_operator, field, value, message):
    data = dict(FORM, **{field: value})
    if field == "models":
        data.pop("model_map-0-public"), data.pop("model_map-0-upstream")
    response = post(as_operator, "/admin/channels/new", data)
    assert response.status_code == 400
    assert message in text(response)
    assert count(Channel) == 0 and count(ChannelKey) == 0
    assert db.session.scalar(select(AuditEntry.id).where(AuditEntry.target_type == "channel")) is None


def test_callers_may_name_a_channel_by_its_checkbox_alone(as_operator, app):
    """"Callers may name it" is the settings' `public`: the checkbox edits it, the JSON cannot."""
    channel = factories.channel("https://api.example.com/v1", models=("a",), name="Old")
    assert post(as_operator, f"/admin/channels/{channel.id}/edit", dict(FORM, public="y", config='{"public": false}')).status_code == 302
    db.session.refresh(channel)
    assert channel.config == {"public": True}
    form = text(as_operator.get(f"/admin/channels/{channel.id}/edit"))
    assert 'checked id="public" name="public" type="checkbox"' in form and "public&#34;" not in form
    assert post(as_operator, f"/admin/channels/{channel.id}/edit", FORM).status_code == 302  # unticked
    db.session.refresh(channel)
    assert channel.config == {"max_tokens_field": "max_completion_tokens"}


def test_edit_changes_every_field_and_an_invalid_edit_changes_nothing(as_operator, app):
    channel = factories.channel("https://api.example.com/v1", models=("a",), name="Old")
    form = text(as_operator.get(f"/admin/channels/{channel.id}/edit"))
    assert 'value="Old"' in form and "sk-upstream" not in form
    bad = post(as_operator, f"/admin/channels/{channel.id}/edit", dict(FORM, weight="-3"))
    assert bad.status_code == 400
    db.session.refresh(channel)
    assert channel.name == "Old" and channel.weight == 1
    assert post(as_operator, f"/admin/channels/{channel.id}/edit", dict(FORM, name="New", cost="")).status_code == 302
    db.session.refresh(channel)
    assert (channel.name, channel.models, channel.model_map, channel.cost_bp, channel.tag) == (
        "New", ["gpt-4o", "gpt-4o-mini"], {"gpt-4": "gpt-4-0613"}, None, "prod")
    audit = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "channel.update"))
    assert audit.before["name"] == "Old" and audit.after["name"] == "New" and audit.actor == "operator@example.com"


def test_keys_are_added_disabled_with_a_reason_enabled_and_deleted(as_operator):
    channel = factories.channel("https://api.example.com/v1")
    assert post(as_operator, f"/admin/channels/{channel.id}/keys", {"keys": "sk-a-1234\nsk-b-5678"}).status_code == 302
    db.session.refresh(channel)
    first, second = channel.keys[1], channel.keys[2]
    second_id = second.id
    asked = post(as_operator, f"/admin/channels/{channel.id}/keys/{first.id}/status", {"status": "disabled", "reason": "rotating"})
    assert asked.status_code == 200 and "Disable key ••••1234" in text(asked)
    db.session.refresh(first)
    assert first.status == "enabled"  # not until confirmed
    post(as_operator, f"/admin/channels/{channel.id}/keys/{first.id}/status", {"status": "disabled", "reason": "rotating"}, confirm=True)
    db.session.refresh(first)
    assert (first.status, first.status_reason) == ("disabled", "rotating")
    page = text(as_operator.get(f"/admin/channels/{channel.id}"))
    assert "rotating" in page and "operator@example.com" in page  # in the state history
    post(as_operator, f"/admin/channels/{channel.id}/keys/{first.id}/status", {"status": "enabled"})
    db.session.refresh(first)
    assert first.status == "enabled"
    post(as_operator, f"/admin/channels/{channel.id}/keys/{second_id}/delete", confirm=True)
    db.session.expire_all()
    assert db.session.scalar(select(ChannelKey.id).where(ChannelKey.id == second_id)) is None
    events = db.session.scalars(select(ChannelEvent).where(ChannelEvent.channel_key_id == first.id).order_by(ChannelEvent.id)).all()
    assert [(e.from_status, e.to_status) for e in events] == [("enabled", "disabled"), ("disabled", "enabled")]


def test_the_last_key_cannot_be_deleted(as_operator):
    channel = factories.channel("https://api.example.com/v1")
    response = post(as_operator, f"/admin/channels/{channel.id}/keys/{channel.keys[0].id}/delete", confirm=True)
    assert "at least one key" in text(as_operator.get(response.headers["Location"]))
    assert count(ChannelKey) == 1


def test_disable_and_delete_a_channel_only_after_confirming(as_operator):
    channel = factories.channel("https://api.example.com/v1", name="Doomed")
    assert "Disable Doomed?" in text(post(as_operator, f"/admin/channels/{channel.id}/status", {"status": "disabled"}))
    post(as_operator, f"/admin/channels/{channel.id}/status", {"status": "disabled", "reason": "maintenance"}, confirm=True)
    db.session.refresh(channel)
    assert (channel.status, channel.status_reason) == ("disabled", "maintenance")
    assert "Delete Doomed" in text(post(as_operator, f"/admin/channels/{channel.id}/delete"))
    assert count(Channel) == 1
    post(as_operator, f"/admin/channels/{channel.id}/delete", confirm=True)
    assert count(Channel) == 0


def test_the_list_filters_by_type_state_model_group_and_tag(as_operator):
    factories.channel("https://a.example.com/v1", models=("gpt-4o",), name="Alpha", tag="prod", groups=["pro"])
    beta = factories.channel("https://b.example.com/v1", models=("claude-3",), name="Beta", tag="budget")
    from controlplane.models import ChannelStatus
    from controlplane.services import channels

    channels.set_status(factories.ACTOR, beta, ChannelStatus.DISABLED, "quota")

    def names(query: str) -> set[str]:
        page = text(as_operator.get("/admin/channels/?" + query))
        return {n for n in ("Alpha", "Beta") if f">{n}</a>" in page}

    assert names("") == {"Alpha", "Beta"}
    assert names("model=gpt-4o") == {"Alpha"} and names("tag=budget") == {"Beta"}
    assert names("status=disabled") == {"Beta"} and names("type=openai") == {"Alpha", "Beta"}
    assert names("group=pro") == {"Alpha", "Beta"}  # Beta is open to every group
    assert names("group=trial") == {"Beta"}
    assert "No channel matches" in text(as_operator.get("/admin/channels/?q=zzz"))


def test_bulk_disable_and_enable_by_tag(as_operator):
    for n in range(3):
        factories.channel("https://a.example.com/v1", name=f"p{n}", tag="prod")
    other = factories.channel("https://a.example.com/v1", name="o", tag="other")
    assert "Disable all 3 channel(s) tagged prod?" in text(post(as_operator, "/admin/channels/bulk-status", {"tag": "prod", "status": "disabled"}))
    post(as_operator, "/admin/channels/bulk-status", {"tag": "prod", "status": "disabled", "reason": "incident"}, confirm=True)
    states = dict(db.session.execute(select(Channel.name, Channel.status)).all())
    assert states == {"p0": "disabled", "p1": "disabled", "p2": "disabled", "o": "enabled"}
    assert count(ChannelEvent) == 3
    post(as_operator, "/admin/channels/bulk-status", {"tag": "prod", "status": "enabled"}, confirm=True)
    assert set(db.session.scalars(select(Channel.status))) == {"enabled"}
    db.session.refresh(other)


def test_fetch_models_from_the_upstream_and_choose_them(as_operator):
    fake = FakeOpenAI(models=["gpt-4o", "gpt-4o-mini", "o3-mini"])
    try:
        channel = factories.channel(fake.url, models=("gpt-4o",))
        page = text(post(as_operator, f"/admin/channels/{channel.id}/models/fetch"))
        assert 'value="o3-mini"' in page and 'value="gpt-4o" checked' in page
        post(as_operator, f"/admin/channels/{channel.id}/models", {"model": ["gpt-4o", "o3-mini"]})
        db.session.refresh(channel)
        assert channel.models == ["gpt-4o", "o3-mini"]
        assert fake.requests[0]["headers"]["Authorization"] == "Bearer sk-upstream-1"
    finally:
        fake.close()


class RudeUpstream(Handler):
    def do_GET(self):
        self.send_json(401, {"error": {"message": "<script>alert('x')</script> Incorrect API key", "code": "invalid_api_key"}})


def test_an_upstream_error_is_shown_escaped(as_operator):
    server = type("Rude", (FakeServer,), {"handler_class": RudeUpstream})()
    try:
        channel = factories.channel(server.origin + "/v1")
        response = post(as_operator, f"/admin/channels/{channel.id}/models/fetch")
        page = text(as_operator.get(response.headers["Location"]))
        assert "Incorrect API key" in page and "<script>alert" not in page and "&lt;script&gt;" in page
    finally:
        server.close()


def test_names_and_models_are_escaped_everywhere(as_operator):
    channel = factories.channel("https://a.example.com/v1", name="<b>bold</b>", models=("<img src=x onerror=alert(1)>",), tag="<i>t</i>")
    for path in ("/admin/channels/", f"/admin/channels/{channel.id}", f"/admin/channels/{channel.id}/edit"):
        page = text(as_operator.get(path))
        assert "<b>bold</b>" not in page and "<img src=x" not in page and "<i>t</i>" not in page


def test_support_sees_channels_without_the_buttons_that_change_them(as_support):
    channel = factories.channel("https://a.example.com/v1")
    page = text(as_support.get(f"/admin/channels/{channel.id}"))
    assert "••••" in page and ">Disable<" not in page and "Add keys" not in page and "Test now" not in page


def test_a_big_key_pool_pages(as_operator):
    channel = factories.channel("https://a.example.com/v1", keys_=[f"sk-pool-{n:04d}" for n in range(120)])
    first = text(as_operator.get(f"/admin/channels/{channel.id}"))
    assert "••••0000" in first and "••••0049" in first and "••••0050" not in first and "120 in all" in first
    second = text(as_operator.get(f"/admin/channels/{channel.id}?keys_page=2"))
    assert "••••0050" in second and "••••0099" in second and "••••0000" not in second
