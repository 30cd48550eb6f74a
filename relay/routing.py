"""Trying routes for one request: pick a channel/key not tried yet, attempt, record, maybe retry.

The endpoint supplies `attempt(target) -> Response | UpstreamError`; this loop owns which target
comes next, when to stop, and the decision trace.
"""
from __future__ import annotations

import time
from typing import Callable

from relay.adapters import Target, adapter_for
from relay.adapters.base import Operation
from relay.context import RequestContext, Response
from relay.errors import RelayError, UpstreamError, upstream_failure
from relay.selector import Selector
from relay.snapshot import ChannelView

Attempt = Callable[[object, Target], "Response | UpstreamError"]


class Router:
    def __init__(self, selector: Selector, max_attempts: int, total_timeout: float):
        self.selector = selector
        self.max_attempts = max_attempts
        self.total_timeout = total_timeout

    def run(self, ctx: RequestContext, channels: tuple[ChannelView, ...], model: str, operation: Operation, attempt: Attempt) -> Response:
        tried: set[tuple[int, int]] = set()
        last_error: UpstreamError | None = None
        deadline = ctx.started_mono + self.total_timeout
        ctx.note(step="candidates", channels=[c.id for c in channels])
        for _ in range(self.max_attempts):
            route = self.selector.pick(channels, model, tried)
            if route is None or time.monotonic() >= deadline:
                break
            tried.add((route.channel.id, route.key.id))
            adapter = adapter_for(route.channel.type)
            if operation not in adapter.info.capabilities:
                raise RelayError(501, "not_implemented", f"This model's channel type '{route.channel.type}' does not support this endpoint.")
            ctx.channel_id, ctx.channel_key_id, ctx.upstream_model = route.channel.id, route.key.id, route.upstream_model
            started = time.monotonic()
            outcome = attempt(adapter, Target(route.channel, route.key, route.upstream_model))
            elapsed = int((time.monotonic() - started) * 1000)
            if isinstance(outcome, Response):
                ctx.note(step="attempt", channel=route.channel.id, key=route.key.id, status=outcome.status, ms=elapsed)
                return outcome
            last_error = outcome
            ctx.note(step="attempt", channel=route.channel.id, key=route.key.id, status=outcome.status,
                     kind=outcome.kind.value, ms=elapsed, error=outcome.message[:200])
            if not outcome.retryable:
                break
        if last_error is None:
            ctx.note(step="route", result="no channel with a usable key")
            raise RelayError(503, "no_channel_available", "No upstream channel is available for this model right now.")
        raise upstream_failure(last_error)
