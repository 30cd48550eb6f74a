"""Prompt-cache affinity through the real relay (in this process) against a fake upstream whose usage
reports input as cached only when the same upstream key saw the prompt's prefix before
(tests/fakes/prompt_cache.py): a conversation stays on one channel key while that key can serve,
moves when it is ejected or full, and every relay process agrees on where it is."""
from __future__ import annotations

import threading

import pytest

from controlplane.services import limits as limit_service
from relay.affinity import affinity_of
from relay.settings import Timeouts
from tests import factories
from tests.fakes.openai_server import Behaviour, FakeOpenAI
from tests.fakes.prompt_cache import STRICT, PromptCache
from tests.relay_harness import Relay, assert_money_consistent, request_log, steps

# Each test runs with admission in one script and split (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("admission_layout")

KEYS = ("sk-aff-1", "sk-aff-2", "sk-aff-3", "sk-aff-4")
SYSTEM = "You are a careful assistant. " * 120  # a long, stable system prompt: the part worth caching
TIMEOUTS = Timeouts(connect=1.0, first_byte=3.0, idle=2.0, total=8.0)


@pytest.fixture(scope="module")
def upstream():
    fake = FakeOpenAI(prompt_cache=PromptCache(STRICT))
    yield fake
    fake.close()


@pytest.fixture
def setup(app, upstream):
    upstream.reset_log()
    upstream.prompt_cache.clear()
    factories.price("gpt-4o-mini", input="3", output="15")
    user = factories.funded_user("50")
    _, secret = factories.api_key(user)
    return secret


class Conversation:
    """A chat whose every turn resends the whole history, as chat clients do."""

    def __init__(self, relay: Relay, secret: str, opening: str = "Plan a trip to Lisbon.", **extra):
        self.relay, self.secret, self.extra = relay, secret, extra
        self.messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": opening}]
        self.prompt = self.cached = 0
        self.request_ids: list[str] = []

    def turn(self, relay: Relay | None = None, n: int = 0):
        reply = (relay or self.relay).chat(self.secret, messages=list(self.messages), **self.extra)
        assert reply.status_code == 200, reply.get_data()
        usage = reply.json["usage"]
        self.prompt += usage["prompt_tokens"]
        self.cached += usage["prompt_tokens_details"]["cached_tokens"]
        self.request_ids.append(reply.headers["X-Request-Id"])
        self.messages += [reply.json["choices"][0]["message"], {"role": "user", "content": f"And on day {n + 2}, what next?"}]
        return reply

    @property
    def cached_share(self) -> float:
        return self.cached / self.prompt


def test_a_conversation_stays_on_one_key_and_its_input_is_cached(setup, upstream):
    factories.channel(upstream.url, keys_=KEYS, config={"key_selection": "random"})
    relay = Relay(setup_app(), timeouts=TIMEOUTS)
    talk = Conversation(relay, setup)
    for n in range(20):
        talk.turn(n=n)
    assert len(set(upstream.keys_seen())) == 1
    assert talk.cached_share > 0.9
    first, later = request_log(talk.request_ids[0]), request_log(talk.request_ids[-1])
    assert steps(first, "affinity") == [{"step": "affinity", "result": "new", "via": "prefix"}]
    assert steps(later, "affinity") == [{"step": "affinity", "result": "kept", "via": "prefix"}]
    assert_money_consistent(relay.redis)


def test_without_affinity_the_turns_spread_and_little_is_cached(setup, upstream):
    factories.channel(upstream.url, keys_=KEYS, config={"key_selection": "random"})
    relay = Relay(setup_app(), timeouts=TIMEOUTS, affinity_ttl_seconds=0)
    talk = Conversation(relay, setup)
    for n in range(20):
        talk.turn(n=n)
    assert len(set(upstream.keys_seen())) > 1
    assert talk.cached_share < 0.6
    assert steps(request_log(talk.request_ids[-1]), "affinity") == []


def test_conversations_are_pinned_apart_and_a_named_one_survives_a_new_prefix(setup, upstream):
    factories.channel(upstream.url, keys_=KEYS)  # round robin: without pins, turns rotate over the keys
    relay = Relay(setup_app(), timeouts=TIMEOUTS)
    talks = [Conversation(relay, setup, opening=f"Question {i}") for i in range(4)]
    for n in range(3):
        for talk in talks:
            talk.turn(n=n)
    seen = upstream.keys_seen()
    per_talk = [set(seen[i::4]) for i in range(4)]
    assert all(len(keys) == 1 for keys in per_talk)  # each conversation kept its key
    assert len(set().union(*per_talk)) > 1  # and they did not all land on one
    upstream.reset_log()
    named = Conversation(relay, setup, user="end-user-7")
    named.turn()
    named.messages[0]["content"] = "A different system prompt entirely."  # the prefix changes, the caller's name does not
    named.turn()
    assert len(set(upstream.keys_seen())) == 1
    assert steps(request_log(named.request_ids[-1]), "affinity")[0] == {"step": "affinity", "result": "kept", "via": "user"}


def test_an_ejected_key_breaks_the_pin_and_the_conversation_moves_with_it(setup, upstream):
    factories.channel(upstream.url, keys_=KEYS)
    relay = Relay(setup_app(), timeouts=TIMEOUTS)
    talk = Conversation(relay, setup)
    talk.turn()
    pinned = upstream.keys_seen()[-1]
    upstream.by_key[pinned] = Behaviour(status=500)
    talk.turn(n=1)  # the pinned key fails; the request fails over to another key, and the pin follows
    moved_to = upstream.keys_seen()[-1]
    assert moved_to != pinned
    del upstream.by_key[pinned]
    upstream.reset_log()
    talk.turn(n=2)
    assert upstream.keys_seen() == [moved_to]
    assert steps(request_log(talk.request_ids[-1]), "affinity")[0]["result"] == "kept"


def test_a_full_key_breaks_the_pin_for_capacity(setup, upstream):
    ch = factories.channel(upstream.url, keys_=KEYS[:2])
    limit_service.set_limits(factories.ACTOR, ch, each_key=True, concurrency=1)
    relay = Relay(setup_app(), timeouts=TIMEOUTS)
    talk = Conversation(relay, setup, prompt_cache_key="trip-1")
    talk.turn()
    pinned = upstream.keys_seen()[-1]
    upstream.by_key[pinned] = Behaviour(first_byte_delay=0.8)
    # Another request of the same conversation holds the pinned key's only slot.
    slow = threading.Thread(target=lambda: relay.chat(setup, prompt_cache_key="trip-1", refresh=False))
    slow.start()
    wait_until(lambda: upstream.in_flight == 1)
    talk.turn(n=1)  # its key is full: served by the other key, and the pin moves there
    slow.join()
    assert upstream.keys_seen()[-1] != pinned
    log = request_log(talk.request_ids[-1])
    assert steps(log, "affinity")[0]["result"] == "moved"
    assert all(s["why"] == "key_concurrency" for s in steps(log, "skip"))  # the full pinned key, when it came first


def test_two_relays_agree_on_where_a_conversation_is(setup, upstream):
    factories.channel(upstream.url, keys_=KEYS, config={"key_selection": "random"})
    one, two = Relay(setup_app(), timeouts=TIMEOUTS), Relay(setup_app(), timeouts=TIMEOUTS)
    talk = Conversation(one, setup)
    for n in range(8):
        talk.turn(one if n % 2 == 0 else two, n=n)
    assert len(set(upstream.keys_seen())) == 1


def test_the_prefix_ignores_later_turns_and_requests_without_turns_have_none():
    base = {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q1"}]}
    later = {"messages": base["messages"] + [{"role": "assistant", "content": "a1"}, {"role": "user", "content": "q2"}]}
    assert affinity_of(base, 1, "g", "m", 60) == affinity_of(later, 1, "g", "m", 60)
    assert affinity_of(base, 1, "g", "m", 60) != affinity_of(base, 2, "g", "m", 60)  # scoped to the account
    assert affinity_of(base, 1, "g", "m", 60) != affinity_of(base, 1, "g", "other", 60)
    assert affinity_of({"input": ["a", "b"]}, 1, "g", "m", 60) is None  # embeddings
    assert affinity_of(base, 1, "g", "m", 0) is None  # off
    anthropic = {"system": "s", "messages": [{"role": "user", "content": "q1"}], "metadata": {"user_id": "u-1"}}
    assert affinity_of(anthropic, 1, "g", "m", 60).source == "metadata.user_id"
    assert affinity_of({"prompt_cache_key": "k", "user": "u"}, 1, "g", "m", 60).source == "prompt_cache_key"
    agent = {"tools": [{"type": "function", "function": {"name": "read_file", "parameters": {"type": "object"}}}],
             "messages": [{"role": "system", "content": "x" * 50_000}, {"role": "user", "content": "fix the bug"}]}
    renamed = {**agent, "tools": [{"type": "function", "function": {"name": "write_file", "parameters": {"type": "object"}}}]}
    other_task = {**agent, "messages": [agent["messages"][0], {"role": "user", "content": "add a test"}]}
    pins = {affinity_of(body, 1, "g", "m", 60).redis_key for body in (agent, renamed, other_task)}
    assert len(pins) == 3  # tools and the first question tell conversations apart, however long the prompt


# --- helpers -------------------------------------------------------------------------------------------
def setup_app():
    from flask import current_app

    return current_app._get_current_object()


def wait_until(check, tries: int = 400) -> None:
    import time

    for _ in range(tries):
        if check():
            return
        time.sleep(0.01)
    raise AssertionError("condition never held")
