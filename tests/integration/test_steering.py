"""The caller steering within what their key allows, through the real relay (in this process)
against fake upstreams on real sockets: fallback models in every inbound format, operator aliases,
provider preferences, and what is held, charged and traced for them."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from controlplane.services import model_routes
from tests import factories
from tests.fakes.openai_server import Behaviour, FakeOpenAI
from tests.relay_harness import Relay, assert_money_consistent, events_of, request_log, steps

CHEAP, DEAR = "cheap-model", "dear-model"
CHEAP_CHAT = 111  # the fake's usage (12 in, 5 out) at $3 / $15 per 1M tokens, in µ$
DEAR_CHAT = 12 * 30 + 5 * 150  # at $30 / $150


@pytest.fixture(scope="module")
def upstreams():
    fakes = [FakeOpenAI() for _ in range(3)]
    yield fakes
    for fake in fakes:
        fake.close()


@dataclass
class World:
    relay: Relay
    key: str
    account_id: int
    a: FakeOpenAI
    b: FakeOpenAI
    c: FakeOpenAI

    def balance(self) -> int:
        from controlplane import ledger

        return ledger.stored_balance(self.account_id)

    def post(self, path: str, body: dict, **headers):
        self.relay.app.holder.refresh()
        return self.relay.client.post(path, json=body, headers={"Authorization": f"Bearer {self.key}", **headers})


@pytest.fixture
def world(app, upstreams):
    for fake in upstreams:
        fake.reset_log()
        fake.default = Behaviour()
    factories.price(CHEAP, input="3", output="15")
    factories.price(DEAR, input="30", output="150")
    user = factories.funded_user("10")
    _, secret = factories.api_key(user)
    return World(Relay(app), secret, user.account_id, *upstreams)


def models_sent(fake: FakeOpenAI) -> list[str]:
    return [r["body"]["model"] for r in fake.chat_requests()]


def test_the_next_model_answers_when_the_first_fails_and_is_what_is_charged(world):
    channel_a = factories.channel(world.a.url, models=(DEAR,))
    channel_b = factories.channel(world.b.url, models=(CHEAP,))
    world.a.default = Behaviour(status=500)
    reply = world.relay.chat(world.key, model=DEAR, models=[DEAR, CHEAP])
    assert reply.status_code == 200 and reply.json["model"] == CHEAP
    assert reply.headers["x-switchboard-model"] == CHEAP
    assert (models_sent(world.a), models_sent(world.b)) == ([DEAR], [CHEAP])
    assert "models" not in world.b.chat_requests()[0]["body"]  # no upstream sees the steering fields
    log = request_log(reply.headers["X-Request-Id"])
    assert (log.model, log.channel_id, log.cost) == (CHEAP, channel_b.id, CHEAP_CHAT)
    assert [s["channel"] for s in steps(log, "attempt")] == [channel_a.id, channel_b.id]
    assert steps(log, "steer")[0]["tries"] == [DEAR, CHEAP]
    assert world.balance() == 10_000_000 - CHEAP_CHAT
    assert_money_consistent(world.relay.redis)


def test_models_without_model_tries_the_list_in_order(world):
    factories.channel(world.a.url, models=(CHEAP,))
    factories.channel(world.b.url, models=(DEAR,))
    body = {"models": [DEAR, CHEAP], "messages": [{"role": "user", "content": "hi"}]}
    reply = world.post("/v1/chat/completions", body)
    assert reply.status_code == 200 and reply.headers["x-switchboard-model"] == DEAR
    assert request_log(reply.headers["X-Request-Id"]).cost == DEAR_CHAT


def test_a_stream_fails_over_to_the_next_model_before_its_first_byte(world):
    factories.channel(world.a.url, models=(CHEAP,))
    factories.channel(world.b.url, models=(DEAR,))
    world.a.default = Behaviour(status=503)
    reply = world.relay.chat(world.key, model=CHEAP, stream=True, models=[DEAR])
    assert reply.status_code == 200 and reply.headers["x-switchboard-model"] == DEAR
    chunks = [e for e in events_of(reply.get_data()) if isinstance(e, dict)]
    assert chunks and {e["model"] for e in chunks} == {DEAR}
    assert models_sent(world.b) == [DEAR]
    log = request_log(reply.headers["X-Request-Id"])
    assert log.model == DEAR and log.status == 200


def test_the_hold_covers_the_dearest_model_of_the_list(world, app):
    factories.channel(world.a.url, models=(CHEAP, DEAR))
    poor = factories.funded_user("0.01")
    _, secret = factories.api_key(poor)
    # $0.01 holds a cheap chat of 300 output tokens, but not even the least a dear one may run on.
    alone = world.relay.chat(secret, model=CHEAP, max_tokens=300)
    assert alone.status_code == 200
    both = world.relay.chat(secret, model=CHEAP, max_tokens=300, models=[DEAR])
    assert both.status_code == 403 and both.json["error"]["code"] == "insufficient_quota"


def test_the_output_cap_is_what_the_dearest_model_can_pay_for(world):
    factories.channel(world.a.url, models=(CHEAP, DEAR))
    poor = factories.funded_user("0.05")
    _, secret = factories.api_key(poor)
    reply = world.relay.chat(secret, model=CHEAP, max_tokens=100_000, models=[DEAR])
    assert reply.status_code == 200
    sent = world.a.chat_requests()[-1]["body"]["max_tokens"]
    assert 256 <= sent < 100_000 and sent * 150 <= 50_000  # what $0.05 pays for at the dear model's $150 / 1M
    assert "models" not in world.a.chat_requests()[-1]["body"]


@pytest.mark.parametrize("path,body,answered", [
    ("/v1/messages", {"model": "x", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}, lambda r: r.json["type"] == "message"),
    ("/v1/responses", {"model": "x", "input": "hi"}, lambda r: r.json["object"] == "response"),
    ("/v1beta/models/x:generateContent", {"contents": [{"parts": [{"text": "hi"}]}]}, lambda r: "candidates" in r.json),
], ids=["anthropic-messages", "openai-responses", "gemini"])
def test_every_inbound_format_takes_a_fallback_list(world, path, body, answered):
    factories.channel(world.a.url, models=(CHEAP,))
    factories.channel(world.b.url, models=(DEAR,))
    world.a.default = Behaviour(status=500)
    body = {**body, "models": [CHEAP, DEAR]}
    path = path.replace("/x:", f"/{CHEAP}:")
    if "model" in body:
        body["model"] = CHEAP
    reply = world.post(path, body)
    assert reply.status_code == 200, reply.get_data()
    assert answered(reply) and reply.headers["x-switchboard-model"] == DEAR
    assert [r["body"].get("model") for r in world.b.requests if r["body"]] == [DEAR]
    assert all("models" not in r["body"] for r in world.b.requests if r["body"])
    log = request_log(reply.headers["X-Request-Id"])
    assert log.model == DEAR and log.status == 200


def test_an_operators_alias_stands_for_its_models(world):
    factories.channel(world.a.url, models=(DEAR,))
    factories.channel(world.b.url, models=(CHEAP,))
    model_routes.set_route(factories.ACTOR, "smart", targets=f"{DEAR}\n{CHEAP}")
    world.relay.app.holder.refresh()
    listed = world.relay.client.get("/v1/models", headers={"Authorization": f"Bearer {world.key}"}).json
    assert "smart" in [m["id"] for m in listed["data"]]
    first = world.relay.chat(world.key, model="smart")
    assert first.status_code == 200 and first.headers["x-switchboard-model"] == DEAR
    world.a.default = Behaviour(status=500)
    second = world.relay.chat(world.key, model="smart")
    assert second.status_code == 200 and second.headers["x-switchboard-model"] == CHEAP
    assert request_log(second.headers["X-Request-Id"]).cost == CHEAP_CHAT


def test_an_alias_skips_models_the_key_may_not_use(world, app):
    factories.channel(world.a.url, models=(DEAR,))
    factories.channel(world.b.url, models=(CHEAP,))
    model_routes.set_route(factories.ACTOR, "smart", targets=[DEAR, CHEAP])
    _, narrow = factories.api_key(factories.funded_user("1"), models=[CHEAP])
    reply = world.relay.chat(narrow, model="smart")
    assert reply.status_code == 200 and reply.headers["x-switchboard-model"] == CHEAP
    assert world.a.chat_requests() == []
    _, none = factories.api_key(factories.funded_user("1"), models=["other"])
    refused = world.relay.chat(none, model="smart")
    assert refused.status_code == 403 and refused.json["error"]["code"] == "model_not_allowed"


def test_a_listed_model_the_key_may_not_use_is_a_400_naming_it(world):
    factories.channel(world.a.url, models=(CHEAP, DEAR))
    _, narrow = factories.api_key(factories.funded_user("1"), models=[CHEAP])
    reply = world.relay.chat(narrow, model=CHEAP, models=[CHEAP, DEAR])
    assert reply.status_code == 400 and reply.json["error"]["param"] == "models[1]"
    unknown = world.relay.chat(world.key, model=CHEAP, models=["nope"])
    assert unknown.status_code == 400 and unknown.json["error"]["param"] == "models[0]"
    assert world.a.chat_requests() == []


@pytest.mark.parametrize("provider,param", [
    ({"sort": "fastest"}, "provider.sort"),
    ({"only": ["nobody"]}, "provider.only[0]"),
    ({"order": ["secret"]}, "provider.order[0]"),  # a channel not made public cannot be named
    ({"colour": "red"}, "provider"),
    ({"max_price": {"prompt": -1}}, "provider.max_price.prompt"),
    ({"allow_fallbacks": "no"}, "provider.allow_fallbacks"),
], ids=["sort", "only-unknown", "order-private", "unknown-field", "max-price", "allow-fallbacks"])
def test_unknown_or_disallowed_provider_values_are_a_400_naming_the_field(world, provider, param):
    factories.channel(world.a.url, models=(CHEAP,), name="secret")
    reply = world.relay.chat(world.key, model=CHEAP, provider=provider)
    assert reply.status_code == 400, reply.get_data()
    error = reply.json["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error" and param in error["message"]
    assert world.a.chat_requests() == []


def public(fake: FakeOpenAI, name: str, tag: str | None = None, **kwargs):
    return factories.channel(fake.url, models=(CHEAP,), name=name, tag=tag, config={"public": True}, **kwargs)


def test_only_ignore_and_order_name_public_channels_and_tags(world):
    a = public(world.a, "Alpha", tag="eu", priority=10)
    b = public(world.b, "Beta", tag="us")
    c = public(world.c, "Gamma", tag="eu")
    only = world.relay.chat(world.key, model=CHEAP, provider={"only": ["us"]})
    assert only.status_code == 200 and request_log(only.headers["X-Request-Id"]).channel_id == b.id
    ignored = world.relay.chat(world.key, model=CHEAP, provider={"ignore": ["alpha"]})
    assert request_log(ignored.headers["X-Request-Id"]).channel_id in (b.id, c.id)
    world.c.default = Behaviour(status=500)
    ordered = world.relay.chat(world.key, model=CHEAP, provider={"order": ["Gamma", "beta"]})
    log = request_log(ordered.headers["X-Request-Id"])
    assert [s["channel"] for s in steps(log, "attempt")] == [c.id, b.id]  # the caller's order beats priority
    skipped = steps(request_log(only.headers["X-Request-Id"]), "candidates")[0]["skipped"]
    assert [a.id, "provider_only"] in skipped


def test_the_model_list_names_the_providers_a_caller_may_steer_by(world):
    public(world.a, "Alpha", tag="eu", priority=10)
    public(world.b, "Beta", tag="us")
    factories.channel(world.c.url, models=(CHEAP,), name="secret")  # not public: never listed
    factories.channel(world.c.url, models=(DEAR,), name="dear")
    world.relay.app.holder.refresh()
    reply = world.relay.client.get("/v1/models", headers={"Authorization": f"Bearer {world.key}"})
    listed = {m["id"]: m["providers"] for m in reply.json["data"]}
    assert listed == {CHEAP: ["alpha", "eu", "beta", "us"], DEAR: []}


def test_without_fallbacks_only_the_named_providers_are_tried(world):
    a = public(world.a, "Alpha", priority=10)
    public(world.b, "Beta")
    world.a.default = Behaviour(status=500)
    reply = world.relay.chat(world.key, model=CHEAP, provider={"order": ["alpha"], "allow_fallbacks": False})
    assert reply.status_code >= 500 and world.b.chat_requests() == []
    fallback = world.relay.chat(world.key, model=CHEAP, provider={"order": ["alpha"]})
    assert fallback.status_code == 200 and len(world.b.chat_requests()) == 1
    assert a.id in [s["channel"] for s in steps(request_log(fallback.headers["X-Request-Id"]), "attempt")]


def test_sort_by_latency_follows_what_this_relay_measured(world):
    a = public(world.a, "Alpha", priority=10)  # the operator's first choice: slow to answer
    b = public(world.b, "Beta")
    c = public(world.c, "Gamma")  # never measured: last for either sort
    world.a.default = Behaviour(content=" ".join(["w"] * 30), first_byte_delay=0.25, chunk_gap=0.05)
    world.b.default = Behaviour(content=" ".join(["w"] * 30), chunk_gap=0.01)
    for name in ("alpha", "beta"):
        for _ in range(2):
            measured = world.relay.chat(world.key, model=CHEAP, stream=True, provider={"only": [name]})
            assert measured.status_code == 200
    world.c.default = Behaviour(status=500)  # so that every route is tried: the attempts show the order
    world.a.default = world.b.default = Behaviour(status=500)
    tried = world.relay.chat(world.key, model=CHEAP, provider={"sort": "latency"})
    assert [s["channel"] for s in steps(request_log(tried.headers["X-Request-Id"]), "attempt")] == [b.id, a.id, c.id]


def test_sort_by_throughput_puts_the_fastest_writer_first(world):
    a = public(world.a, "Alpha", priority=10)  # the operator's first choice: quick to start, slow to write
    b = public(world.b, "Beta")
    c = public(world.c, "Gamma")  # never measured: last
    world.a.default = Behaviour(content=" ".join(["w"] * 30), chunk_gap=0.05)
    world.b.default = Behaviour(content=" ".join(["w"] * 30), first_byte_delay=0.25, chunk_gap=0.005)
    for name in ("alpha", "beta"):
        for _ in range(2):
            measured = world.relay.chat(world.key, model=CHEAP, stream=True, provider={"only": [name]})
            assert measured.status_code == 200
    world.a.default = world.b.default = world.c.default = Behaviour(status=500)
    tried = world.relay.chat(world.key, model=CHEAP, provider={"sort": "throughput"})
    assert [s["channel"] for s in steps(request_log(tried.headers["X-Request-Id"]), "attempt")] == [b.id, a.id, c.id]
    by_latency = world.relay.chat(world.key, model=CHEAP, provider={"sort": "latency"})
    assert [s["channel"] for s in steps(request_log(by_latency.headers["X-Request-Id"]), "attempt")] == [a.id, b.id, c.id]


def test_sort_by_price_tries_the_cheapest_upstream_first(world):
    dear = factories.channel(world.a.url, models=(CHEAP,), priority=10, cost_bp=9000)
    cheap = factories.channel(world.b.url, models=(CHEAP,), cost_bp=4000)
    for _ in range(3):
        reply = world.relay.chat(world.key, model=CHEAP, provider={"sort": "price"})
        assert request_log(reply.headers["X-Request-Id"]).channel_id == cheap.id
    plain = world.relay.chat(world.key, model=CHEAP)
    assert request_log(plain.headers["X-Request-Id"]).channel_id == dear.id  # without it, priority rules


def test_max_price_leaves_out_models_priced_above_it(world):
    factories.channel(world.a.url, models=(CHEAP, DEAR))
    reply = world.relay.chat(world.key, model=DEAR, models=[CHEAP], provider={"max_price": {"prompt": 10_000_000, "completion": 20_000_000}})
    assert reply.status_code == 200 and reply.headers["x-switchboard-model"] == CHEAP
    assert steps(request_log(reply.headers["X-Request-Id"]), "steer")[0]["over_max_price"] == [DEAR]
    none = world.relay.chat(world.key, model=DEAR, provider={"max_price": {"completion": 1}})
    assert none.status_code == 400 and none.json["error"]["param"] == "provider.max_price"
    assert models_sent(world.a) == [CHEAP]


def test_max_price_is_the_callers_own_price_after_their_groups_multiplier(world):
    from controlplane.services import groups

    factories.channel(world.a.url, models=(CHEAP, DEAR))
    groups.create_group(factories.ACTOR, "half", "0.5")
    _, halved = factories.api_key(factories.funded_user("1", group="half"))
    limit = {"max_price": {"prompt": 20_000_000, "completion": 80_000_000}}  # the dear model lists at $30 / $150, costs "half" $15 / $75
    assert world.relay.chat(halved, model=DEAR, provider=limit).status_code == 200
    assert world.relay.chat(world.key, model=DEAR, provider=limit).status_code == 400


def test_a_plain_request_is_not_steered_and_costs_two_round_trips(world):
    factories.channel(world.a.url, models=(CHEAP, DEAR))
    world.relay.chat(world.key, model=CHEAP)
    reply = world.relay.chat(world.key, model=CHEAP)
    assert "x-switchboard-model" not in reply.headers
    assert world.relay.count_round_trips(lambda: world.relay.chat(world.key, model=CHEAP, refresh=False)) == ["EVALSHA", "EVALSHA"]
    steered = world.relay.count_round_trips(lambda: world.relay.chat(world.key, model=CHEAP, models=[DEAR], refresh=False))
    assert steered == ["EVALSHA", "EVALSHA"]


def test_a_models_cost_strategy_weighs_its_tier_by_upstream_cost_and_the_trace_says_so(world):
    cheap = factories.channel(world.a.url, models=(CHEAP,), cost_bp=2500)
    dear = factories.channel(world.b.url, models=(CHEAP,), cost_bp=10_000)
    model_routes.set_route(factories.ACTOR, CHEAP, strategy="cost")
    # 40 conversations (a `user` each), so that no affinity pin repeats the first pick
    served = [request_log(world.relay.chat(world.key, model=CHEAP, user=f"u{i}").headers["X-Request-Id"]) for i in range(40)]
    select = steps(served[0], "select")[0]["tiers"][0]
    assert select == {"strategy": "cost", "weights": {str(cheap.id): 1.0, str(dear.id): 0.062}}  # rounded for the trace
    assert sum(log.channel_id == cheap.id for log in served) >= 30  # 16:1
    model_routes.set_route(factories.ACTOR, CHEAP, strategy="priority")
    plain = request_log(world.relay.chat(world.key, model=CHEAP).headers["X-Request-Id"])
    assert steps(plain, "select") == []
