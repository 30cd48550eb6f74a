"""Probing a channel: one minimal request per key, to a model the channel serves, on an endpoint it
supports — the same request for the scheduled health check and the console's "Test now".

No SQL here: probing is network I/O on the relay's own adapters and HTTP client, so it runs in
worker threads; what the results mean for channel state is controlplane/services/channel_health.py.
"""
from __future__ import annotations

import enum
import time
from dataclasses import asdict, dataclass

import orjson

from relay.adapters import ChatRequest, Operation, Target, adapter_for
from relay.egress import Egress
from relay.errors import ErrorKind, UpstreamError
from relay.health import Effect, effect_of
from relay.settings import Timeouts
from relay.snapshot import ChannelKeyView, ChannelView
from relay.upstream import UpstreamCallFailed, UpstreamClient

# A probe's answer is a few hundred bytes; anything near this is not an answer to it.
RESPONSE_LIMIT = 4 * 1024 * 1024


def probe_client(egress: Egress, pool_size: int) -> UpstreamClient:
    """The HTTP client probes use: the relay's, through the same egress guard."""
    return UpstreamClient(pool_size=pool_size, egress=egress, max_response_bytes=RESPONSE_LIMIT)


class Verdict(str, enum.Enum):
    PASS = "pass"  # the upstream served the probe (or answered our key and refused only the request)  # nosec B105
    KEY_FAIL = "key_fail"  # this key is refused (invalid, deactivated, out of upstream credit)
    CHANNEL_FAIL = "channel_fail"  # the channel is down or cannot serve its model, whatever the key
    INCONCLUSIVE = "inconclusive"  # rate limited: says nothing either way
    UNPROBEABLE = "unprobeable"  # no probe fits this channel: reported, never disabled


_VERDICTS = {
    Effect.OK: Verdict.PASS,
    Effect.CLIENT: Verdict.PASS,
    Effect.DEAD_KEY: Verdict.KEY_FAIL,
    Effect.FAILURE: Verdict.CHANNEL_FAIL,
    Effect.MISROUTE: Verdict.CHANNEL_FAIL,
    Effect.COOLDOWN: Verdict.INCONCLUSIVE,
}


def verdict_of(kind: ErrorKind | None) -> Verdict:
    """What one probe's answer says about the channel and key (the relay's effect table, reread)."""
    return _VERDICTS[effect_of(kind)]


@dataclass(frozen=True)
class ProbeResult:
    channel_id: int
    key_id: int | None
    verdict: Verdict
    latency_ms: int = 0
    status: int = 0
    kind: str | None = None
    message: str = ""
    model: str | None = None
    operation: str | None = None

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.PASS

    def as_dict(self) -> dict:
        data = asdict(self)
        data["verdict"] = self.verdict.value
        data["ok"] = self.ok
        return data


@dataclass(frozen=True)
class ProbePlan:
    operation: str  # an Operation value: "chat" | "embeddings"
    model: str  # the public model name; the channel's mapping gives the upstream one


def _operation(value: str) -> Operation | None:
    try:
        return Operation(value)
    except ValueError:
        return None


def probe_plan(channel: ChannelView) -> ProbePlan | str:
    """Which request probes this channel, or why none can (then it is reported, not disabled)."""
    models = channel.public_models
    model = channel.config.probe_model or (models[0] if models else None)
    if not model:
        return "the channel lists no model to probe"
    wanted = channel.config.probe_endpoint or ("embeddings" if "embed" in model.lower() else "chat")
    operation = _operation(wanted)
    try:
        adapter = adapter_for(channel.type)
    except LookupError:
        return f"no adapter for channel type {channel.type!r}"
    if operation is None or operation not in adapter.info.capabilities or _request_builder(adapter, wanted) is None:
        return f"channel type {channel.type!r} cannot be probed with {wanted}"
    return ProbePlan(wanted, model)


def _request_builder(adapter, operation: str):
    if operation == "chat":
        return lambda target, model: adapter.chat_request(target, _chat(model))
    forward = getattr(adapter, "forward_request", None)  # OpenAI-shaped endpoints other than chat
    op = _operation(operation)
    if operation == "embeddings" and forward is not None and op is not None:
        return lambda target, model: forward(target, op, orjson.dumps({"model": target.upstream_model, "input": "ping"}))
    return None


def _chat(model: str) -> ChatRequest:
    payload = {"model": model, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}
    return ChatRequest(model=model, payload=payload, max_tokens=1)


def _check_body(adapter, plan: ProbePlan, target: Target, body: bytes) -> None:
    if plan.operation == "chat":
        adapter.chat_response(target, _chat(plan.model), body)
        return
    data = orjson.loads(body)
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise ValueError("not an embeddings list")


def probe_key(client: UpstreamClient, channel: ChannelView, key: ChannelKeyView, plan: ProbePlan, timeout: float) -> ProbeResult:
    """One probe request with one key; never raises for upstream trouble."""
    adapter = adapter_for(channel.type)
    target = Target(channel, key, channel.upstream_model(plan.model))
    timeouts = Timeouts(connect=min(10.0, timeout), first_byte=timeout, idle=timeout, total=timeout)
    started = time.monotonic()
    error: UpstreamError | None = None
    status = 0
    try:
        response = client.send(_request_builder(adapter, plan.operation)(target, plan.model), timeouts)
        status = response.status
        body = response.read_all()
        if status != 200:
            error = adapter.classify_error(status, body, response.headers)
        else:
            try:
                _check_body(adapter, plan, target, body)
            except (ValueError, KeyError, TypeError):
                error = UpstreamError(ErrorKind.INVALID_RESPONSE, 200, "the upstream's answer is not a valid response")
    except UpstreamCallFailed as failed:
        error = failed.error
    latency = int((time.monotonic() - started) * 1000)
    verdict = verdict_of(error.kind if error else None)
    message = "ok" if error is None else (error.message or f"upstream status {status}")[:500]
    return ProbeResult(channel.id, key.id, verdict, latency, status, error.kind.value if error else None, message, plan.model, plan.operation)


def probe_channel(client: UpstreamClient, channel: ChannelView, keys: list[ChannelKeyView], timeout: float,
                  budget_seconds: float | None = None) -> list[ProbeResult]:
    """Probe each key in turn. A failure without an HTTP answer (refused, reset, timed out) ends the
    run: the other keys would only wait for the same dead server. One with an answer does not — a
    5xx may be this key's alone (its upstream account, its region), which only its siblings passing
    can show. Running out of `budget_seconds` ends it too (the rest wait for the next run rather
    than outlive the prober's lock)."""
    plan = probe_plan(channel)
    if isinstance(plan, str):
        return [ProbeResult(channel.id, None, Verdict.UNPROBEABLE, message=plan)]
    stop_at = time.monotonic() + budget_seconds if budget_seconds else None
    results = []
    for key in keys:
        key_timeout = timeout
        if stop_at is not None:  # each probe ends within the budget; at least one always runs
            remaining = stop_at - time.monotonic()
            if remaining < 1.0 and results:
                break
            key_timeout = max(min(timeout, remaining), 1.0)
        result = probe_key(client, channel, key, plan, key_timeout)
        results.append(result)
        if result.verdict is Verdict.CHANNEL_FAIL and result.status == 0:
            break
    return results
