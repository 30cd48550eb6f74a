"""What each kind of upstream failure does to a channel and its key: the one table (style.md habit 4)."""
from __future__ import annotations

import pytest

from relay.errors import ErrorKind, UpstreamError
from relay.health import Effect, effect_of, outcome_of, retryable

TABLE = [
    # kind, effect, retried on another channel/key
    (None, Effect.OK, False),
    (ErrorKind.AUTH, Effect.DEAD_KEY, True),  # invalid key / deactivated account: never the caller's error
    (ErrorKind.QUOTA, Effect.DEAD_KEY, True),  # the operator's upstream billing is exhausted
    (ErrorKind.RATE_LIMIT, Effect.COOLDOWN, True),
    (ErrorKind.OVERLOADED, Effect.FAILURE, True),
    (ErrorKind.TRANSIENT, Effect.FAILURE, True),
    (ErrorKind.TIMEOUT, Effect.FAILURE, True),
    (ErrorKind.CONNECT, Effect.FAILURE, True),
    (ErrorKind.INVALID_RESPONSE, Effect.FAILURE, True),
    (ErrorKind.NOT_FOUND, Effect.MISROUTE, True),
    (ErrorKind.PERMISSION, Effect.MISROUTE, True),  # a 403 for one model: try elsewhere, keep the key
    (ErrorKind.BAD_REQUEST, Effect.CLIENT, False),  # the caller's fault: same answer anywhere
    (ErrorKind.CONTENT_POLICY, Effect.CLIENT, False),
]


@pytest.mark.parametrize("kind, effect, retried", TABLE)
def test_each_kind_has_its_effect(kind, effect, retried):
    assert effect_of(kind) is effect
    assert retryable(effect) is retried


def test_the_table_covers_every_kind():
    assert {row[0] for row in TABLE} - {None} == set(ErrorKind)


def test_only_failures_without_an_http_answer_count_as_network_trouble():
    refused = outcome_of(1, 2, 0.0, UpstreamError(ErrorKind.CONNECT, 0, "connection refused"))
    five_hundred = outcome_of(1, 2, 0.0, UpstreamError(ErrorKind.TRANSIENT, 500, "boom"))
    assert refused.network and not five_hundred.network
    assert five_hundred.effect is Effect.FAILURE


def test_a_429_carries_its_retry_after_into_the_outcome():
    limited = outcome_of(1, 2, 0.0, UpstreamError(ErrorKind.RATE_LIMIT, 429, "slow down", retry_after=7.0))
    assert limited.effect is Effect.COOLDOWN and limited.retry_after == 7.0
    assert limited.args()[:5] == ["cooldown", 1, 2, 0.0, 7.0]
