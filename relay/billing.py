"""Settling one request exactly once: price its usage, release its hold and limit slots, queue its
usage event, and tell passive health how the final attempt went."""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Callable

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from relay import generation, pricing
from relay.context import RequestContext
from relay.errors import UpstreamError
from relay.health import Outcome, outcome_of
from relay.journal import JournalEntry, SettleJournal
from relay.pricing import Usage
from relay.quota import Hold
from relay.usage import UsageEvent

if TYPE_CHECKING:
    from relay.admission import Admission, Gate

log = logging.getLogger(__name__)
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError)


def usage_event(ctx: RequestContext, status: int, error_code: str | None = None, usage: Usage | None = None,
                source: str = "upstream", cost: int = 0, held: int = 0) -> UsageEvent:
    usage = usage or Usage()
    key = ctx.key
    return UsageEvent(
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
        client_ip=ctx.client_ip,
        trace=ctx.trace,
    )


def close_open_attempt(ctx: RequestContext, status: int) -> None:
    """An attempt noted but not finished when the request settles ended with this settlement."""
    for entry in reversed(ctx.trace):
        if entry.get("step") == "attempt":
            if "status" not in entry:
                entry["status"] = status
                entry["ms"] = ctx.elapsed_ms()
            return


class Settlement:
    """Owns a request's admission until it is settled; every path through the pipeline ends here once.

    Settling is one Redis round trip (relay/admission.py): the charge, the caller's and the route's
    limit slots, and what the final attempt did to the channel's health.
    """

    __slots__ = ("gate", "admission", "ctx", "price", "multiplier_bp", "prompt_estimate", "settled", "pending", "on_settled", "status",
                 "charged", "journal")

    def __init__(self, gate: Gate, admission: Admission, ctx: RequestContext, price: pricing.Price, multiplier_bp: int, prompt_estimate: int,
                 on_settled: Callable[[], None] | None = None, journal: SettleJournal | None = None):
        self.gate = gate
        self.admission = admission
        self.ctx = ctx
        self.price = price
        self.multiplier_bp = multiplier_bp
        self.prompt_estimate = prompt_estimate
        self.settled = False
        self.pending: Outcome | None = None  # a failed last attempt the router did not record
        self.on_settled = on_settled
        self.status: int | None = None  # how the request ended, once settled
        self.charged = 0  # µ$, once settled
        self.journal = journal  # where a settle goes when Redis cannot take it (relay/journal.py)

    @property
    def hold(self) -> Hold:
        return self.admission.hold

    def _route_outcome(self, error: UpstreamError | None) -> Outcome:
        route = self.admission.route
        return outcome_of(route.channel.id, route.key.id, route.key.since, error)

    def succeed(self, usage: Usage | None, local_output_tokens: int, status: int = 200, error_code: str | None = None) -> int:
        """Charge what the upstream reported, or what the relay counted when it reported nothing."""
        source = "upstream"
        if usage is None:
            usage = Usage(input=self.prompt_estimate, output=local_output_tokens)
            source = "local"
        return self._settle(status, error_code, usage, source, outcome=self._route_outcome(None))

    def partial(self, delivered_output_tokens: int, status: int, error_code: str, failure: UpstreamError | None = None) -> int:
        """The stream ended early: input plus what was delivered. `failure` is the upstream's fault
        (it counts against the channel); None is the caller going away (it counts against no one)."""
        usage = Usage(input=self.prompt_estimate, output=delivered_output_tokens)
        outcome = self._route_outcome(failure) if failure is not None else None
        return self._settle(status, error_code, usage, "local", outcome=outcome)

    def _journal(self, amount: int, event: bytes) -> None:
        """Keep the settle on disk for the replayer; only if even that fails is it lost (and said so)."""
        if self.journal is None:
            log.error("settle of %s failed and no journal is set: the request goes unbilled", self.ctx.request_id)
            return
        try:
            self.journal.append(JournalEntry(self.hold, amount, event))
            log.warning("Redis could not take the settle of %s; journaled for replay", self.ctx.request_id)
        except OSError:
            log.exception("settle of %s could not be journaled: the request goes unbilled", self.ctx.request_id)

    def fail(self, status: int, error_code: str) -> None:
        """Nothing reached the caller: charge nothing."""
        self._settle(status, error_code, None, "upstream", charge=False, outcome=self.pending)

    def _settle(self, status: int, error_code: str | None, usage: Usage | None, source: str, charge: bool = True,
                outcome: Outcome | None = None) -> int:
        if self.settled:
            return 0
        self.settled = True
        amount = pricing.cost(usage, self.price, self.multiplier_bp) if charge and usage is not None else 0
        self.status, self.charged = status, amount
        close_open_attempt(self.ctx, status)
        event = usage_event(self.ctx, status, error_code, usage, source, amount, self.hold.amount)
        tokens = usage.input + usage.cache_read + usage.cache_write + usage.output + usage.reasoning if usage is not None else 0
        encoded = event.encode()
        try:
            _, _, charged = self.gate.settle(self.admission, amount, encoded, tokens, outcome,
                                             record=generation.settle_args(event, self.gate.generation_ttl))
            if charged != amount:
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
            if self.on_settled is not None:
                self.on_settled()
        return amount
