"""The relay's lean Redis client against a real Redis: scripts load themselves, replies and errors
arrive as redis-py's would, the database index and a lost connection are handled."""
from __future__ import annotations

import uuid

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from relay.metrics import COUNTERS
from relay.resp import RespPool, Script, encode


def test_encoding_is_resp():
    assert encode("EVALSHA", b"ab", 2, "é") == b"*4\r\n$7\r\nEVALSHA\r\n$2\r\nab\r\n$1\r\n2\r\n$2\r\n\xc3\xa9\r\n"
    # Floats as repr writes them (every digit Lua's tonumber reads back); what hiredis does not pack
    # goes as its str().
    assert encode(1733368000.123456, 0.1, -3) == b"*3\r\n$17\r\n1733368000.123456\r\n$3\r\n0.1\r\n$2\r\n-3\r\n"
    assert encode("X", None) == b"*2\r\n$1\r\nX\r\n$4\r\nNone\r\n"


def test_a_keys_slot_is_redis_clusters_with_its_tags_slot_remembered():
    from redis.crc import key_slot

    from relay.resp import key_slot_of

    names = ["sb:{m3}:acct:19", "sb:{c5}:hk:51", "sb:{g:default}:lim:g:default:cc", "sb:key:abc", "a{}b", "{}", "x{", "x}{y}",
             "{a}{b}", "é{ü}x", "sb:{sb}:cfg:version", "plain"]
    for name in names * 2:  # the second time from the remembered tags
        assert key_slot_of(name) == key_slot(name.encode()), name
    assert key_slot_of(b"sb:{m3}:acct:19") == key_slot(b"sb:{m3}:acct:19") and key_slot_of(None) == 0


def test_a_script_loads_itself_once_then_runs_by_sha(redis_slot, redis_client):
    # A body Redis has never seen (no SCRIPT FLUSH: the server is shared with parallel tests).
    fresh = f"-- {uuid.uuid4().hex}\n"
    pool = RespPool(redis_slot.url, size=2)
    script = Script(pool, fresh + "redis.call('SET', KEYS[1], ARGV[1]) return {1, ARGV[1], redis.call('GET', KEYS[1])}")
    before = COUNTERS.redis_round_trips
    assert script(keys=["k"], args=["v1"]) == [1, b"v1", b"v1"]  # NOSCRIPT, then EVAL: two round trips
    assert script(keys=["k"], args=[42]) == [1, b"42", b"42"]  # EVALSHA: one
    assert COUNTERS.redis_round_trips - before == 3
    assert redis_client.get("k") == b"42"  # the same database index as the URL names


def test_script_errors_are_response_errors(redis_slot):
    script = Script(RespPool(redis_slot.url), "return redis.error_reply('boom')")
    with pytest.raises(ResponseError, match="boom"):
        script()


def test_a_lost_connection_is_a_connection_error_and_the_next_call_reconnects(redis_slot, redis_client):
    pool = RespPool(redis_slot.url, size=1)
    script = Script(pool, "return 7")
    assert script() == 7
    # Only this pool's connection: the Redis is shared with tests running in parallel.
    host, port = pool.idle[0][0].getsockname()[:2]
    assert redis_client.client_kill_filter(addr=f"{host}:{port}") == 1
    with pytest.raises(RedisConnectionError):
        script()
    assert script() == 7


def test_unreachable_redis_is_a_connection_error():
    with pytest.raises(RedisConnectionError):
        Script(RespPool("redis://127.0.0.1:1/0", timeout=1), "return 1")()


@pytest.mark.parametrize("refusal", [b"-LOADING Redis is loading the dataset in memory\r\n",
                                     b"-MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.\r\n"])
def test_a_redis_that_is_not_serving_yet_is_a_connection_error(refusal):
    """A Redis restarting answers every command with LOADING until its data is in: the relay treats
    that as Redis being away (a 503 for the caller, the settle journaled), never as a script error.
    Played by a socket that answers as such a Redis does."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            while conn.recv(65536):
                conn.sendall(refusal)

    threading.Thread(target=serve, daemon=True).start()
    try:
        script = Script(RespPool(f"redis://127.0.0.1:{listener.getsockname()[1]}", size=1, timeout=2), "return 1")
        with pytest.raises(RedisConnectionError, match="not serving yet"):
            script()
    finally:
        listener.close()
