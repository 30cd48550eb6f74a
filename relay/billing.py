"""The one owner of a request's charge: settling it exactly once — price its usage, release its hold
and limit slots, queue its usage event, tell passive health how the final attempt went — and, when
Redis cannot take the settle, keeping it in the settle journal for replay.

`Charges` is the process's: the gate's settle script, the journal (relay/journal.py) and its
replayer. For each admitted request the pipeline opens a `Charge` around the routed attempts: it
takes the router's typed result (relay/attempt.py) — an answer is settled at once, a stream becomes
the stream's one end hook, an unanswered request is settled as failed — and an error raised out of
the block settles the request as failed on the way out. Nothing else in the relay settles,
releases or journals a hold (tests/test_architecture.py checks it).
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from relay import charges, generation, pricing
from relay.attempt import Answer, Routed, Streamed, Terms
from relay.channel_stats import STATS
from relay.context import RequestContext, Response
from relay.errors import RelayError, UpstreamError
from relay.health import Outcome, outcome_of
from relay.journal import Abandoned, JournalEntry, Replayer, SettleJournal
from relay.pricing import Usage
from relay.quota import Hold
from relay.streaming import COMPLETE, StreamEnd
from relay.telemetry import TELEMETRY
from relay.usage import UsageEvent

if TYPE_CHECKING:
    from types import TracebackType

    from relay.admission import Admission, Gate
    from relay.routing import RetryBudget

log = logging.getLogger(__name__)
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError)


def usage_event(ctx: RequestContext, status: int, error_code: str | None = None, usage: Usage | None = None,
                source: str = "upstream", cost: int = 0, held: int = 0) -> UsageEvent:
    usage = usage or Usage()
    key = ctx.key
    event = UsageEvent(
        request_id=ctx.request_id,
        started_at=ctx.started_at,
        finished_at=time.time(),
        endpoint=ctx.endpoint,
        status=status,
        api_key_id=key.id if key else None,
        account_id=key.account_id if key else None,
        user_id=key.user_id if key else None,
        model=ctx.model,
        upstream_model=ctx.upstream_model,
        channel_id=ctx.channel_id,
        channel_key_id=ctx.channel_key_id,
        stream=ctx.stream,
        error_code=error_code,
        input_tokens=usage.input,
        cache_read_tokens=usage.cache_read,
        cache_write_tokens=usage.cache_write,
        output_tokens=usage.output,
        reasoning_tokens=usage.reasoning,
        usage_source=source,
        cost=cost,
        held=held,
        latency_ms=ctx.elapsed_ms(),
        ttft_ms=ctx.ttft_ms,
        queue_ms=ctx.queued_ms or None,
        client_ip=ctx.client_ip,
        trace=ctx.trace,
    )
    TELEMETRY.observe(event)  # the request's metrics (relay/telemetry.py): its one observation
    if ctx.stream and status == 200 and ctx.channel_id is not None and ctx.ttft_ms is not None:
        STATS.streamed(ctx.channel_id, usage.output + usage.reasoning, ctx.elapsed_ms() - ctx.ttft_ms)  # output speed, for selection
    return event


def close_open_attempt(ctx: RequestContext, status: int) -> None:
    """An attempt noted but not finished when the request settles ended with this settlement."""
    for entry in reversed(ctx.trace):
        if entry.get("step") == "attempt":
            if "status" not in entry:
                entry["status"] = status
                entry["ms"] = ctx.elapsed_ms()
            return


class Charges:
    """The process's side of settling: the gate's settle script, the journal behind it for when
    Redis cannot take a settle, and the retry budget's count of requests in flight."""

    def __init__(self, gate: Gate, journal: SettleJournal, replayer: Replayer, budget: RetryBudget):
        self.gate = gate
        self.journal = journal
        self.replayer = replayer
        self.budget = budget

    def open(self, ctx: RequestContext, admission: Admission, terms: Terms) -> Charge:
        """The charge of an admitted request (its hold is in Redis); use it as a context manager."""
        return Charge(self, admission, ctx, terms)

    def replay_orphans(self) -> int:
        """Journaled settles of relay processes that are gone; raises while Redis still fails."""
        return self.journal.replay_orphans(self.replayer)

    def replay_own(self) -> int:
        """This process's journaled settles; raises while Redis still fails (they stay for later)."""
        return self.journal.replay_own(self.replayer)

    def abandon(self, request_id: str, account_id: int, claim: str = "", leases: tuple[str, ...] = ()) -> None:
        """The admission's reply was lost: the caller is refused, and whatever hold Redis made for
        it (and `claim`, the idempotency record it may have marked in progress, and `leases`, the
        concurrency slots it may have taken) is released by the replayer once Redis answers, not
        left until it expires."""
        try:
            self.journal.append(Abandoned(request_id, account_id, claim, leases))
            log.warning("admission of %s lost its reply; its hold, if any, is journaled for release", request_id)
        except OSError:
            log.exception("admission of %s lost its reply and could not be journaled: its hold waits for the sweeper", request_id)


class Charge:
    """Owns a request's admission until it is settled; every path through the pipeline ends here once.

    Settling is one Redis round trip (relay/admission.py): the charge, the caller's and the route's
    limit slots, and what the final attempt did to the channel's health.
    """

    __slots__ = ("owner", "admission", "ctx", "terms", "settled", "status", "charged")

    def __init__(self, owner: Charges, admission: Admission, ctx: RequestContext, terms: Terms):
        self.owner = owner
        self.admission = admission
        self.ctx = ctx
        self.terms = terms
        self.settled = False
        self.status: int | None = None  # how the request ended, once settled
        self.charged = 0  # µ$, once settled

    @property
    def hold(self) -> Hold:
        return self.admission.hold

    # --- the request's end, whichever way it comes -------------------------------------------
    def __enter__(self) -> Charge:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        """An error out of the block ends the request before anything reached the caller."""
        if error is not None:
            status = error.status if isinstance(error, RelayError) else 500
            code = error.code if isinstance(error, RelayError) else "internal_error"
            self._fail(status, code, None)

    def take(self, result: Routed) -> Response:
        """The router's result: an answer is settled now and carries its cost; a stream is settled
        when it ends (its cost rides in its usage event); an unanswered request is settled as failed
        and its error raised."""
        if isinstance(result, Answer):
            self._succeed(result.usage, result.output_tokens)
            return charges.charged_response(result.response, self.charged)
        if isinstance(result, Streamed):
            result.body.ends_with(self.stream_ended)
            return result.response
        self._fail(result.error.status, result.error.code, result.unrecorded)
        raise result.error

    def stream_ended(self, end: StreamEnd) -> None:
        """The stream's one end hook: a complete answer is charged as reported; one that ended early
        is charged for its input and the output delivered."""
        if end.status == COMPLETE:
            self._succeed(end.usage, end.delivered)
        else:
            self._partial(end.delivered, end.status, end.error_code, end.failure)

    # --- how each end is priced ---------------------------------------------------------------
    def _route_outcome(self, error: UpstreamError | None) -> Outcome:
        route = self.admission.route
        return outcome_of(route.channel.id, route.key.id, route.key.since, error)

    def _succeed(self, usage: Usage | None, local_output_tokens: int) -> int:
        """Charge what the upstream reported, or what the relay counted when it reported nothing."""
        source = "upstream"
        if usage is None:
            usage = Usage(input=self.terms.prompt_estimate, output=local_output_tokens)
            source = "local"
        return self._settle(200, None, usage, source, outcome=self._route_outcome(None))

    def _partial(self, delivered_output_tokens: int, status: int, error_code: str | None, failure: UpstreamError | None) -> int:
        """The stream ended early: input plus what was delivered. `failure` is the upstream's fault
        (it counts against the channel); None is the caller going away (it counts against no one)."""
        usage = Usage(input=self.terms.prompt_estimate, output=delivered_output_tokens)
        outcome = self._route_outcome(failure) if failure is not None else None
        return self._settle(status, error_code, usage, "local", outcome=outcome)

    def _fail(self, status: int, error_code: str, unrecorded: Outcome | None) -> None:
        """Nothing reached the caller: charge nothing. `unrecorded` is the last attempt's failure
        when no failover script recorded it in health."""
        self._settle(status, error_code, None, "upstream", charge=False, outcome=unrecorded)

    def _journal(self, amount: int, event: bytes) -> None:
        """Keep the settle on disk for the replayer; only if even that fails is it lost (and said so)."""
        try:
            self.owner.journal.append(JournalEntry(self.hold, amount, event))
            log.warning("Redis could not take the settle of %s; journaled for replay", self.ctx.request_id)
        except OSError:
            log.exception("settle of %s could not be journaled: the request goes unbilled", self.ctx.request_id)

    def _settle(self, status: int, error_code: str | None, usage: Usage | None, source: str, charge: bool = True,
                outcome: Outcome | None = None) -> int:
        if self.settled:
            return 0
        self.settled = True
        # Priced as the model that answered: a request with fallback models is charged for the one that served it.
        terms = self.terms.at(self.admission.route.model)
        amount = pricing.cost(usage, terms.price, terms.multiplier_bp) if charge and usage is not None else 0
        self.status, self.charged = status, amount
        close_open_attempt(self.ctx, status)
        event = usage_event(self.ctx, status, error_code, usage, source, amount, self.hold.amount)
        tokens = usage.input + usage.cache_read + usage.cache_write + usage.output + usage.reasoning if usage is not None else 0
        encoded = event.encode()
        try:
            settled, _, charged = self.owner.gate.settle(self.admission, amount, encoded, tokens, outcome,
                                                         record=generation.settle_args(event, self.owner.gate.generation_ttl))
            if not settled:
                # No hold in Redis: it lost its data while the request ran (or another settle took it).
                # Nothing moved live; the event went to ingestion `unheld`, which decides the charge.
                log.warning("settle of %s found no hold: its usage is queued for ingestion to charge", self.ctx.request_id)
                amount = self.charged = 0
            elif charged != amount:
                # The input outgrew its estimate and the account could not cover the rest: the charge
                # stopped at zero and the usage event carries what was charged (relay/quota.py).
                log.warning("charge of %s cut from %d to %d µ$ (hold %d)", self.ctx.request_id, amount, charged, self.hold.amount)
                amount = charged
                self.charged = charged
        except REDIS_DOWN:
            self._journal(amount, encoded)
        except Exception:
            log.exception("settle failed for %s", self.ctx.request_id)
            self._journal(amount, encoded)
        finally:
            self.owner.budget.end_request()
        return amount
