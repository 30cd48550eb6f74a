"""Concurrent calls of a per-request script share one Redis call (relay/script_batch.py), on a real
Redis: each caller gets its own reply or its own error, a call that arrives while others are on
their way waits for the next batch, and the money stays exact when admits and settles are batched."""
from __future__ import annotations

import threading
import time

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from relay.admission import Gate, MoneyHold
from relay.health import ARG_READER_LUA, Effect, HealthPolicy, Outcome
from relay.quota import Quota
from relay.resp import ReplyLost
from relay.script_batch import BatchedScript, batch_lua
from relay.selector import Plan, Route
from relay.snapshot import ChannelKeyView, ChannelView, Limits

# Each call: its key and a word; the reply is the word and the key's counter after one more.
COUNT = batch_lua(ARG_READER_LUA, """
local word = nxt()
if word == 'bad' then error('this call is bad') end
return {word, redis.call('INCR', K[1])}
""")


class Recorder:
    """Runs the batch script; the first call waits until `hold` more callers queue behind it."""

    def __init__(self, script, hold: int = 0):
        self.script, self.hold, self.sizes = script, hold, []
        self.batcher: BatchedScript | None = None

    def __call__(self, keys, args):
        self.sizes.append(int(args[0]))
        if len(self.sizes) == 1 and self.hold:
            deadline = time.monotonic() + 10
            while len(self.batcher.queue) < self.hold and time.monotonic() < deadline:
                time.sleep(0.005)
        return self.script(keys=keys, args=args)


def batched(redis_client, text: str, hold: int = 0, in_flight: int = 1, max_batch: int = 32) -> tuple[BatchedScript, Recorder]:
    recorder = Recorder(redis_client.register_script(text), hold)
    batcher = BatchedScript(recorder, max_batch=max_batch, in_flight=in_flight)
    recorder.batcher = batcher
    return batcher, recorder


def in_threads(n: int, work) -> list:
    results: list = [None] * n

    def run(i: int) -> None:
        try:
            results[i] = work(i)
        except Exception as error:  # each thread's outcome is checked by the test
            results[i] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
        time.sleep(0.002)  # the first caller goes first
    for t in threads:
        t.join(20)
    return results


def test_an_idle_caller_goes_alone_at_once(redis_client):
    script, recorder = batched(redis_client, COUNT)
    assert script(keys=["n"], args=["hello"]) == [b"hello", 1]
    assert script(keys=["n"], args=["again"]) == [b"again", 2]
    assert recorder.sizes == [1, 1]


def test_callers_that_arrive_while_a_call_is_out_go_together_each_with_its_own_reply(redis_client):
    script, recorder = batched(redis_client, COUNT, hold=5)
    results = in_threads(6, lambda i: script(keys=[f"n{i % 2}"], args=[f"w{i}"]))
    assert recorder.sizes == [1, 5]  # one round trip for the five that queued
    assert [r[0] for r in results] == [f"w{i}".encode() for i in range(6)]
    assert sorted(r[1] for i, r in enumerate(results) if i % 2 == 0) == [1, 2, 3]
    assert sorted(r[1] for i, r in enumerate(results) if i % 2 == 1) == [1, 2, 3]


def test_a_batch_is_never_larger_than_its_limit(redis_client):
    script, recorder = batched(redis_client, COUNT, hold=7, max_batch=3)
    results = in_threads(8, lambda i: script(keys=["n"], args=[f"w{i}"]))
    assert recorder.sizes == [1, 3, 3, 1]
    assert sorted(r[1] for r in results) == list(range(1, 9))


def test_an_error_in_one_call_is_that_callers_alone(redis_client):
    script, _ = batched(redis_client, COUNT, hold=3)
    words = ["first", "ok1", "bad", "ok2"]
    results = in_threads(4, lambda i: script(keys=["n"], args=[words[i]]))
    assert isinstance(results[2], ResponseError) and "this call is bad" in str(results[2])
    assert [r[0] for i, r in enumerate(results) if i != 2] == [b"first", b"ok1", b"ok2"]
    assert int(redis_client.get("n")) == 3


def test_a_lost_connection_fails_every_call_of_the_batch_each_with_its_own_error(redis_client):
    calls = []

    def unreachable(keys, args):
        calls.append(args[0])
        if len(calls) == 1:
            time.sleep(0.3)  # the others queue meanwhile
        raise RedisConnectionError("Redis connection lost before the reply")

    script = BatchedScript(unreachable, in_flight=1)
    results = in_threads(4, lambda i: script(keys=["n"], args=[f"w{i}"]))
    assert all(isinstance(r, RedisConnectionError) for r in results)
    assert len({id(r) for r in results}) == 4
    assert calls == [1, 3]
    # Nothing is left queued or counted as on its way: the next caller goes at once.
    assert script.in_flight == 0 and not script.queue


class Pipelined(Recorder):
    """A batch script with `many`, as relay/resp.py's Script has: records each pipeline's calls (by
    their key) and fails the calls of the slots in `failing` as an unreachable master would."""

    def __init__(self, script, hold: int = 0, failing: tuple[str, ...] = ()):
        super().__init__(script, hold)
        self.pipelines: list[list[str]] = []
        self.failing = failing

    def many(self, calls):
        self.pipelines.append([keys[0] for keys, _ in calls])
        out = []
        for keys, args in calls:
            if keys[0] in self.failing:
                out.append(RedisConnectionError("Redis connection lost before the reply"))
            else:
                out.append(self(keys, args))
        return out


def by_slot(redis_client, hold: int = 0, failing: tuple[str, ...] = ()) -> tuple[BatchedScript, Pipelined]:
    recorder = Pipelined(redis_client.register_script(COUNT), hold, failing)
    batcher = BatchedScript(recorder, in_flight=1, slot_of=lambda keys: keys[0])
    recorder.batcher = batcher
    return batcher, recorder


def test_a_batch_over_several_slots_is_one_call_per_slot_sent_together(redis_client):
    script, recorder = by_slot(redis_client, hold=6)
    results = in_threads(7, lambda i: script(keys=[f"s{i % 3}"], args=[f"w{i}"]))
    # The first went alone; the six that queued meanwhile went in one pipeline of one call per slot.
    assert recorder.pipelines == [["s0"], ["s1", "s2", "s0"]]
    assert recorder.sizes == [1, 2, 2, 2]
    assert [r[0] for r in results] == [f"w{i}".encode() for i in range(7)]
    assert sorted(r[1] for i, r in enumerate(results) if i % 3 == 0) == [1, 2, 3]
    assert [int(redis_client.get(f"s{n}")) for n in range(3)] == [3, 2, 2]


def test_a_slot_that_fails_fails_its_own_callers_only(redis_client):
    script, recorder = by_slot(redis_client, hold=5, failing=("s1",))
    results = in_threads(6, lambda i: script(keys=[f"s{i % 2}"], args=[f"w{i}"]))
    assert all(isinstance(r, RedisConnectionError) for i, r in enumerate(results) if i % 2 == 1)
    assert len({id(r) for i, r in enumerate(results) if i % 2 == 1}) == 3  # each its own exception
    assert [r[1] for i, r in enumerate(results) if i % 2 == 0] == [1, 2, 3]
    assert redis_client.get("s1") is None and script.in_flight == 0 and not script.queue


def test_without_a_pipeline_each_slots_call_goes_in_turn(redis_client):
    recorder = Recorder(redis_client.register_script(COUNT), hold=4)
    script = BatchedScript(recorder, in_flight=1, slot_of=lambda keys: keys[0])
    recorder.batcher = script
    results = in_threads(5, lambda i: script(keys=[f"t{i % 2}"], args=[f"w{i}"]))
    assert recorder.sizes == [1, 2, 2]
    assert [r[0] for r in results] == [f"w{i}".encode() for i in range(5)]


def channel() -> ChannelView:
    return ChannelView(id=1, name="c1", type="openai", base_url="http://x", models=("m",),
                       keys=(ChannelKeyView(id=10, secret="sk", since=0.0),), limits=Limits(), key_limits=Limits())


@pytest.mark.parametrize("in_flight", [1, 2])
def test_batched_admits_and_settles_keep_the_money_exact(redis_client, in_flight):
    """Eight threads admit and settle 200 requests against one balance that covers only some of
    them: every hold that was granted is settled, nothing stays held, and the balance is the
    starting one minus exactly the charges the settles reported."""
    start = 150_000
    Quota(redis_client).seed_account(1, start)
    gate = Gate(redis_client, HealthPolicy(), lease_seconds=600, batch_in_flight=in_flight)
    c = channel()
    plan = Plan((c,), (Route(c, c.keys[0], "m"),))
    charged, refused, lock = [], [], threading.Lock()

    def work(t: int) -> None:
        for i in range(25):
            try:
                admission = gate.admit(MoneyHold(f"req_{in_flight}_{t}_{i}", 1, 7, 1_000, None, 2e9), (), plan)
            except Exception as error:
                with lock:
                    refused.append(type(error).__name__)
                continue
            settled, _, amount = gate.settle(admission, 997 + t, b"{}", 10, Outcome(Effect.OK, 1, 10))
            assert settled
            with lock:
                charged.append(amount)

    in_threads(8, work)
    assert len(charged) + len(refused) == 200 and set(refused) <= {"HoldRefused"}
    assert len(charged) >= 140  # the balance covers about 150 holds of 1,000
    assert Quota(redis_client).account(1) == (start - sum(charged), 0)


def test_a_sender_stopped_mid_call_leaves_the_others_a_lost_reply(redis_client):
    """The greenlet (here: thread) carrying a batch is stopped before the reply: it stops as it
    was told, and every other call of the batch is a lost reply — Redis may or may not have run it."""
    calls = []

    class Stopped(BaseException):
        pass

    def stopped(keys, args):
        calls.append(args[0])
        if len(calls) == 2:
            raise Stopped()
        if len(calls) == 1:
            time.sleep(0.3)
        return [[b"ok"]] * int(args[0])

    script = BatchedScript(stopped, in_flight=1)
    outcomes: list = [None] * 4

    def run(i: int) -> None:
        try:
            outcomes[i] = script(keys=["n"], args=[f"w{i}"])
        except BaseException as error:
            outcomes[i] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
        time.sleep(0.002)
    for t in threads:
        t.join(20)
    assert calls == [1, 3] and outcomes[0] == [b"ok"]
    assert isinstance(outcomes[1], Stopped)  # the first queued caller carried the second batch
    assert all(isinstance(o, ReplyLost) for o in outcomes[2:])
    assert script.in_flight == 0 and not script.queue
