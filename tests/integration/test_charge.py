"""A request's charge (relay/billing.py) against real Redis: whichever way the request ends — an
answer taken, a stream's end hook, the router giving up, an error out of the block — it is settled
exactly once: one usage event, the hold released, the balance moved at most once."""
from __future__ import annotations

import pytest

from relay import pricing
from relay.admission import Gate, MoneyHold
from relay.attempt import Answer, Terms, Unanswered
from relay.billing import Charges
from relay.charges import COST_HEADER
from relay.context import RequestContext, json_response
from relay.errors import RelayError
from relay.health import Effect, HealthPolicy, Outcome
from relay.journal import Replayer, SettleJournal
from relay.pricing import Price, Usage
from relay.quota import Quota
from relay.routing import RetryBudget
from relay.selector import Plan, Route
from relay.snapshot import ChannelKeyView, ChannelView
from relay.streaming import CALLER_GONE, COMPLETE, StreamEnd
from relay.usage import USAGE_STREAMS, UsageEvent

ACCOUNT, KEY, FUNDS, HELD = 1, 7, 1_000_000, 5_000
PRICE = Price("m", input=1_000_000, output=2_000_000)  # µ$ per million tokens: 1 µ$ in, 2 µ$ out
PROMPT_ESTIMATE = 40
CHANNEL = ChannelView(id=1, name="c1", type="openai", base_url="http://x", models=("m",),
                      keys=(ChannelKeyView(id=10, secret="sk", since=0.0),))
PLAN = Plan((CHANNEL,), (Route(CHANNEL, CHANNEL.keys[0], "m"),))

_ids = iter(range(1, 10_000))


@pytest.fixture
def charges(redis_client, tmp_path):
    Quota(redis_client).seed_account(ACCOUNT, FUNDS)
    gate = Gate(redis_client, HealthPolicy(), lease_seconds=600)
    return Charges(gate, SettleJournal(tmp_path / "journal"), Replayer(redis_client.register_script, Quota(redis_client).release), RetryBudget())


def admitted(charges: Charges):
    request_id = f"req_charge_{next(_ids)}"
    ctx = RequestContext(request_id, "/v1/chat/completions", "127.0.0.1")
    charges.budget.begin_request()
    admission = charges.gate.admit(MoneyHold(request_id, ACCOUNT, KEY, HELD, None, 2e9), (), PLAN)
    return ctx, admission


def events(redis_client) -> list[UsageEvent]:
    return [UsageEvent.from_stream(fields) for _, fields in redis_client.xrange(USAGE_STREAMS[0])]


def assert_settled_once(redis_client, charges: Charges, charged: int, status: int) -> UsageEvent:
    [event] = events(redis_client)
    assert (event.status, event.cost) == (status, charged)
    assert Quota(redis_client).account(ACCOUNT) == (FUNDS - charged, 0)  # the hold is gone, the charge taken once
    assert charges.budget.requests == 0
    return event


def test_an_answer_is_settled_when_taken_and_nothing_after_settles_it_again(charges, redis_client):
    ctx, admission = admitted(charges)
    usage = Usage(input=100, output=50)
    with pytest.raises(RuntimeError):
        with charges.open(ctx, admission, Terms(PRICE, 10_000, PROMPT_ESTIMATE)) as charge:
            response = charge.take(Answer(json_response(200, b'{"id":"x"}'), usage))
            charge.stream_ended(StreamEnd(usage, 50, COMPLETE))  # a second end is ignored
            raise RuntimeError("after the answer")  # and so is an error on the way out
    cost = pricing.cost(usage, PRICE, 10_000)
    assert dict(response.headers)[COST_HEADER] == str(cost) and charge.status == 200
    assert_settled_once(redis_client, charges, cost, 200)


def test_an_answer_without_usage_is_billed_from_the_local_count(charges, redis_client):
    ctx, admission = admitted(charges)
    with charges.open(ctx, admission, Terms(PRICE, 10_000, PROMPT_ESTIMATE)) as charge:
        charge.take(Answer(json_response(200, b"{}"), None, output_tokens=9))
    event = assert_settled_once(redis_client, charges, pricing.cost(Usage(input=PROMPT_ESTIMATE, output=9), PRICE), 200)
    assert event.usage_source == "local"


def test_an_error_out_of_the_block_settles_the_request_as_failed_for_nothing(charges, redis_client):
    ctx, admission = admitted(charges)
    with pytest.raises(RelayError):
        with charges.open(ctx, admission, Terms(PRICE, 10_000, PROMPT_ESTIMATE)):
            raise RelayError(400, "invalid_request", "refused before any attempt")
    event = assert_settled_once(redis_client, charges, 0, 400)
    assert event.error_code == "invalid_request"


def test_an_unanswered_request_raises_its_error_and_is_settled_once_for_nothing(charges, redis_client):
    ctx, admission = admitted(charges)
    error = RelayError(502, "upstream_error", "every attempt failed")
    with pytest.raises(RelayError) as raised:
        with charges.open(ctx, admission, Terms(PRICE, 10_000, PROMPT_ESTIMATE)) as charge:
            charge.take(Unanswered(error, Outcome(Effect.FAILURE, CHANNEL.id, 10)))
    assert raised.value is error
    assert_settled_once(redis_client, charges, 0, 502)


def test_a_stream_is_settled_by_its_end_hook_once_for_its_input_and_what_was_delivered(charges, redis_client):
    ctx, admission = admitted(charges)
    with charges.open(ctx, admission, Terms(PRICE, 10_000, PROMPT_ESTIMATE)) as charge:
        pass  # the block ends when the stream's body goes out; the stream has not ended yet
    assert events(redis_client) == [] and Quota(redis_client).account(ACCOUNT) == (FUNDS, HELD)
    charge.stream_ended(StreamEnd(Usage(input=100, output=80), 7, CALLER_GONE, "client_disconnected"))
    charge.stream_ended(StreamEnd(Usage(input=100, output=80), 80, COMPLETE))  # told twice: settled once
    event = assert_settled_once(redis_client, charges, pricing.cost(Usage(input=PROMPT_ESTIMATE, output=7), PRICE), 499)
    assert event.error_code == "client_disconnected"
