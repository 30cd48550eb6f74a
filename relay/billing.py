"""Settling one request exactly once: price its usage, release its hold, queue its usage event."""
from __future__ import annotations

import logging
import time

from relay import pricing
from relay.context import RequestContext
from relay.pricing import Usage
from relay.quota import Hold, Quota
from relay.usage import UsageEvent

log = logging.getLogger(__name__)


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


class Settlement:
    """Owns a request's hold until it is settled; every path through the pipeline ends here once."""

    __slots__ = ("quota", "hold", "ctx", "price", "multiplier_bp", "prompt_estimate", "settled")

    def __init__(self, quota: Quota, hold: Hold, ctx: RequestContext, price: pricing.Price, multiplier_bp: int, prompt_estimate: int):
        self.quota = quota
        self.hold = hold
        self.ctx = ctx
        self.price = price
        self.multiplier_bp = multiplier_bp
        self.prompt_estimate = prompt_estimate
        self.settled = False

    def succeed(self, usage: Usage | None, local_output_tokens: int, status: int = 200, error_code: str | None = None) -> int:
        """Charge what the upstream reported, or what the relay counted when it reported nothing."""
        source = "upstream"
        if usage is None:
            usage = Usage(input=self.prompt_estimate, output=local_output_tokens)
            source = "local"
        return self._settle(status, error_code, usage, source)

    def partial(self, delivered_output_tokens: int, status: int, error_code: str) -> int:
        """The stream ended early (client gone, upstream failed): input plus what was delivered."""
        usage = Usage(input=self.prompt_estimate, output=delivered_output_tokens)
        return self._settle(status, error_code, usage, "local")

    def fail(self, status: int, error_code: str) -> None:
        """Nothing reached the caller: charge nothing."""
        self._settle(status, error_code, None, "upstream", charge=False)

    def _settle(self, status: int, error_code: str | None, usage: Usage | None, source: str, charge: bool = True) -> int:
        if self.settled:
            return 0
        self.settled = True
        amount = pricing.cost(usage, self.price, self.multiplier_bp) if charge and usage is not None else 0
        event = usage_event(self.ctx, status, error_code, usage, source, amount, self.hold.amount)
        try:
            self.quota.settle(self.hold, amount, event.encode())
        except Exception:
            # The hold stays in Redis and the sweeper releases it; the request goes unbilled.
            log.exception("settle failed for %s", self.ctx.request_id)
        return amount
