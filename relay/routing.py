"""Trying routes for one request: attempt, classify, fail over or stop, and explain it all.

The hold script has already chosen the first usable route (relay/admission.py). This loop runs
the endpoint's `attempt(adapter, target)`; on a failure before the first byte it decides, with
`relay.health.effect_of`, whether another channel/key may be tried — within the attempt cap, the
request's deadline and the process's retry budget — and asks the gate for the next usable route.
Every step goes into the request's decision trace (`ctx.note`), which ends up in its request log.
"""
from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, Callable

from relay.adapters import Target, adapter_for
from relay.adapters.base import Adapter, Operation
from relay.admission import Admission, Gate
from relay.attempt import Attempted, Routed, Unanswered
from relay.channel_stats import STATS
from relay.context import RequestContext, Response
from relay.errors import RelayError, UpstreamError, upstream_failure
from relay.health import Effect, Outcome, effect_of, outcome_of, retryable
from relay.selector import Plan, Route
from relay.settings import Timeouts
from relay.snapshot import ChannelView
from relay.upstream import timeouts_for

Attempt = Callable[[Adapter, Target], Attempted]
BLAMED = (Effect.FAILURE, Effect.COOLDOWN, Effect.DEAD_KEY)  # effects that count in a channel's error rate


class RetryBudget:
    """Envoy's retry budget, per process: retries in flight ≤ max(minimum, percent% of requests in flight).
    A request's first failover is outside the budget (relay/routing.py `Router.run`): the budget bounds
    the second and third attempts, which is where a bad minute multiplies upstream calls.

    A burst of failures then costs at most a fifth more upstream calls instead of multiplying them
    by the attempt cap, which is what turns an upstream's bad minute into an outage.
    """

    def __init__(self, percent: float = 20.0, minimum: int = 3):
        self.percent = percent
        self.minimum = minimum
        self.requests = 0
        self.retries = 0

    def begin_request(self) -> None:
        self.requests += 1

    def end_request(self) -> None:
        self.requests = max(0, self.requests - 1)

    def try_retry(self) -> str | None:
        """A ticket for one retry (given back with `end_retry`), or None when the budget is spent."""
        if self.retries >= max(self.minimum, self.requests * self.percent / 100):
            return None
        self.retries += 1
        return "local"

    def end_retry(self, ticket: str | None = None) -> None:
        self.retries = max(0, self.retries - 1)


def supports(operation: Operation) -> Callable[[ChannelView], bool]:
    def check(channel: ChannelView) -> bool:
        try:
            return operation in adapter_for(channel.type).info.capabilities
        except LookupError:
            return False

    return check


def note_skips(ctx: RequestContext, skips: Iterable[tuple[Route, str]]) -> None:
    for route, why in skips:
        ctx.note(step="skip", channel=route.channel.id, key=route.key.id, why=why)


def remaining_routes(plan: Plan, tried: list[Any], failed_channels: set[int], attempted: set[tuple[int, int, str]] | None = None) -> list[Route]:
    """Routes not tried yet; those on a channel that just failed as a whole go last. With
    `attempted` (route attempt keys), a key tried for one model may still serve the next model."""
    if attempted is not None:
        untried = [r for r in plan.routes if r.attempt_key not in attempted]
    else:
        untried = [r for r in plan.routes if r.ids not in tried]
    return [r for r in untried if r.channel.id not in failed_channels] + [r for r in untried if r.channel.id in failed_channels]


class Router:
    def __init__(self, gate: Gate, max_attempts: int, defaults: Timeouts, deadline_seconds: float, budget: RetryBudget):
        self.gate = gate
        self.max_attempts = max_attempts
        self.defaults = defaults
        self.deadline_seconds = deadline_seconds
        self.budget = budget

    def run(self, ctx: RequestContext, admission: Admission, attempt: Attempt) -> Routed:
        """Attempts until one answers, or `Unanswered` with the caller-facing error (nothing is sent
        yet). Settling is not the router's: it hands its result to the request's charge."""
        # Time spent waiting in the capacity queue is not the upstream's: the deadline starts after it.
        deadline = ctx.started_mono + ctx.queued_ms / 1000 + self.deadline_seconds
        failed_channels: set[int] = set()
        retrying: str | None = None  # a retry's ticket: it counts against the budget until its attempt is over
        note_skips(ctx, admission.skips)
        try:
            while True:
                route = admission.route
                ctx.note(step="pick", channel=route.channel.id, key=route.key.id, panic=admission.panic or None)
                outcome = self._attempt(ctx, route, attempt, deadline, len(admission.tried))
                if retrying is not None:
                    self.budget.end_retry(retrying)
                    retrying = None
                if not isinstance(outcome, UpstreamError):
                    return outcome
                failed = outcome_of(route.channel.id, route.key.id, route.key.since, outcome)
                stop = self._stop_reason(failed.effect, len(admission.tried), deadline)
                # Every request may fail over once: the budget governs the retries after that, so a
                # healthy alternative is always tried however busy the process is with retries.
                first_retry = len(admission.tried) == 1
                ticket = self.budget.try_retry() if stop is None and not first_retry else None
                if stop is None and not first_retry and ticket is None:
                    stop = "retry budget exhausted"
                if stop is not None:
                    ctx.note(step="stop", why=stop)
                    return Unanswered(upstream_failure(outcome), failed)  # the settle script records it in health
                retrying = ticket
                if failed.effect in (Effect.FAILURE, Effect.MISROUTE):
                    failed_channels.add(route.channel.id)
                nxt, _, record = self.gate.failover(admission, failed, remaining_routes(admission.plan, admission.tried, failed_channels,
                                                                                        admission.attempted))
                self._note_record(ctx, failed, record)
                note_skips(ctx, admission.skips)
                if nxt is None:
                    ctx.note(step="stop", why="no other usable route")
                    return Unanswered(upstream_failure(outcome), None)  # failover recorded it
        finally:
            if retrying is not None:
                self.budget.end_retry(retrying)

    def run_unbilled(self, ctx: RequestContext, plan: Plan, attempt: Attempt) -> Response:
        """A free metadata call (count_tokens): the plan's routes in order, no hold, limits or health."""
        deadline = ctx.started_mono + self.deadline_seconds
        outcome: UpstreamError | None = None  # the last failure
        for number, route in enumerate(plan.routes[: self.max_attempts], start=1):
            result = self._attempt(ctx, route, attempt, deadline, number)
            if not isinstance(result, UpstreamError):
                return result.response
            outcome = result
            if not retryable(effect_of(outcome.kind)) or time.monotonic() >= deadline:
                break
        if outcome is None:
            raise no_route_error(0)
        raise upstream_failure(outcome)

    def _stop_reason(self, effect: Effect, attempts: int, deadline: float) -> str | None:
        if not retryable(effect):
            return "not retryable"
        if attempts >= self.max_attempts:
            return "attempt cap reached"
        if time.monotonic() >= deadline:
            return "deadline passed"
        return None

    def _attempt(self, ctx: RequestContext, route: Route, attempt: Attempt, deadline: float, number: int) -> Attempted:
        adapter = adapter_for(route.channel.type)
        ctx.channel_id, ctx.channel_key_id, ctx.upstream_model = route.channel.id, route.key.id, route.upstream_model
        if route.model and route.model != ctx.model:  # a fallback model: the request is now this model's
            ctx.model = route.model
        # The channel's own time limits, none beyond the request's deadline, travel with the target.
        timeouts = timeouts_for(route.channel, self.defaults).within(deadline - time.monotonic())
        # Noted before the call: a request that ends inside it (an error raised out of the attempt)
        # is settled with this attempt still open, and the settle closes it (relay/billing.py).
        entry = {"step": "attempt", "n": number, "channel": route.channel.id, "key": route.key.id}
        ctx.note(**entry)
        entry = ctx.trace[-1]
        started = time.monotonic()
        outcome = attempt(adapter, Target(route.channel, route.key, route.upstream_model, timeouts))
        entry["ms"] = ms = int((time.monotonic() - started) * 1000)
        entry["status"] = outcome.status
        if isinstance(outcome, UpstreamError):
            effect = effect_of(outcome.kind)
            entry.update(kind=outcome.kind.value, effect=effect.value, error=outcome.message[:200])
            if effect in BLAMED:
                STATS.failed(route.channel.id)
        else:
            STATS.answered(route.channel.id, ms)  # a stream is primed with its first output: this is its time to it
        return outcome

    @staticmethod
    def _note_record(ctx: RequestContext, failed: Outcome, record: list[Any]) -> None:
        what = record[0] if record else "none"
        entry = {"step": "health", "channel": failed.channel_id, "key": failed.key_id, "result": what}
        if what == "failure" and record[1]:
            entry["key_ejected_until"] = record[1]
        if what == "failure" and record[2]:
            entry["channel_ejected_until"] = record[2]
        if what == "cooldown":
            entry["cooling_until"] = record[1]
        ctx.note(**entry)


def no_route_error(retry_after: int) -> RelayError:
    if retry_after > 0:
        return RelayError(429, "upstream_capacity_reached", "Every upstream channel for this model is at capacity; retry shortly.",
                          retry_after=retry_after)
    return RelayError(503, "no_channel_available", "No upstream channel is available for this model right now.")
