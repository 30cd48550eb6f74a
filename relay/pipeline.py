"""A request's life (design.md §3): auth → checks → hold → route → call → stream → settle.

Everything here reads the in-memory snapshot; the only I/O is Redis (hold, settle) and the
upstream call. No SQL, no Flask.
"""
from __future__ import annotations

import hashlib
import logging
import time

import orjson

from relay import pricing, tokens
from relay.adapters import ChatRequest, Target, adapter_for
from relay.adapters.base import Operation
from relay.billing import Settlement
from relay.config_store import SnapshotHolder
from relay.context import RequestContext, Response, json_response
from relay.errors import ErrorKind, RelayError, UpstreamError, bad_request, upstream_failure
from relay.quota import HoldRefused, Quota
from relay.selector import Selector
from relay.settings import RelaySettings
from relay.snapshot import GroupView, KeyView, Snapshot, Status
from relay.streaming import StreamBody
from relay.upstream import UpstreamCallFailed, UpstreamClient

log = logging.getLogger(__name__)


def bearer_token(environ) -> str | None:
    header = environ.get("HTTP_AUTHORIZATION")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return None


def key_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_chat(body: bytes) -> ChatRequest:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise bad_request("The request body is not valid JSON.", code="invalid_json") from None
    if not isinstance(payload, dict):
        raise bad_request("The request body must be a JSON object.")
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("You must provide a model parameter.", param="model", code="missing_required_parameter")
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' must be a non-empty array.", param="messages", code="missing_required_parameter")
    stream = payload.get("stream") is True
    options = payload.get("stream_options")
    wants_usage = bool(stream and isinstance(options, dict) and options.get("include_usage") is True)
    max_tokens = payload.get("max_completion_tokens", payload.get("max_tokens"))
    if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1):
        raise bad_request("max_tokens must be a positive integer.", param="max_tokens")
    return ChatRequest(model=model, payload=payload, stream=stream, wants_usage=wants_usage, max_tokens=max_tokens)


class Pipeline:
    def __init__(
        self,
        settings: RelaySettings,
        holder: SnapshotHolder,
        quota: Quota,
        client: UpstreamClient,
        selector: Selector | None = None,
    ):
        self.settings = settings
        self.holder = holder
        self.quota = quota
        self.client = client
        self.selector = selector or Selector()

    # --- who is calling, and may they ---------------------------------------------------------
    def authenticate(self, ctx: RequestContext, environ, snap: Snapshot, now: float) -> KeyView:
        secret = bearer_token(environ)
        if secret is None:
            raise RelayError(401, "missing_api_key", "You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY'.")
        key = snap.keys.get(key_hash(secret))
        if key is None:
            raise RelayError(401, "invalid_api_key", "Incorrect API key provided.")
        if key.status != Status.ENABLED:
            raise RelayError(401, "api_key_disabled", "This API key is disabled.")
        if key.expires_at is not None and now >= key.expires_at:
            raise RelayError(401, "api_key_expired", "This API key has expired.")
        ctx.key = key
        if key.user_id is not None and key.user_id in snap.disabled_users:
            raise RelayError(403, "user_disabled", "This account is disabled.")
        ip = ctx.ip_address()
        ban = snap.bans.for_request(key.user_id, key.id, ip, now)
        if ban is not None:
            raise RelayError(403, "banned", "Access is suspended for this " + {"user": "account", "key": "API key", "ip": "address"}[ban.kind] + ".")
        if not key.allows_ip(ip):
            raise RelayError(403, "ip_not_allowed", "This API key may not be used from this address.")
        return key

    def authorize_model(self, snap: Snapshot, key: KeyView, model: str, now: float) -> tuple[GroupView, pricing.Price]:
        group = snap.groups.get(key.group)
        if group is None:
            raise RelayError(403, "group_not_found", "This key's group no longer exists.")
        channels = snap.channels_for(key.group, model)
        price = snap.price_at(model, now)
        if price is None or not (channels or model in snap.served_models()):
            raise RelayError(404, "model_not_found", f"The model '{model}' does not exist or you do not have access to it.", param="model")
        if not group.allows(model) or not key.allows_model(model) or not channels:
            raise RelayError(403, "model_not_allowed", f"This key may not use the model '{model}'.", param="model")
        return group, price

    # --- endpoints -----------------------------------------------------------------------------
    def models(self, ctx: RequestContext, environ) -> Response:
        snap = self.holder.current
        now = time.time()
        key = self.authenticate(ctx, environ, snap, now)
        created = int(snap.built_at or now)
        data = [{"id": m, "object": "model", "created": created, "owned_by": "switchboard"} for m in snap.models_for_key(key, now)]
        return json_response(200, orjson.dumps({"object": "list", "data": data}))

    def chat(self, ctx: RequestContext, environ, body: bytes) -> Response:
        snap = self.holder.current
        now = ctx.started_at
        key = self.authenticate(ctx, environ, snap, now)
        request = parse_chat(body)
        ctx.model = request.model
        ctx.stream = request.stream
        group, price = self.authorize_model(snap, key, request.model, now)

        messages = request.payload["messages"]
        tools = request.payload.get("tools")
        max_out = request.max_tokens or price.max_output_tokens or self.settings.default_hold_output_tokens
        amount = pricing.hold_amount(tokens.hold_prompt_tokens(messages, tools), max_out, price, group.multiplier_bp)
        try:
            hold = self.quota.hold(ctx.request_id, key.account_id, key.id, amount, key.credit_limit, now + self.settings.hold_ttl_seconds)
        except HoldRefused as refused:
            if refused.reason == "key_limit":
                raise RelayError(403, "key_credit_limit_reached", "This API key has reached its credit limit.") from None
            raise RelayError(403, "insufficient_quota", "Your credit balance is too low for this request. Top up your account and try again.") from None

        ctx.held = True
        settlement = Settlement(self.quota, hold, ctx, price, group.multiplier_bp, tokens.prompt_tokens(messages, tools))
        try:
            return self._call(ctx, snap, request, settlement)
        except BaseException as exc:
            status = exc.status if isinstance(exc, RelayError) else 500
            code = exc.code if isinstance(exc, RelayError) else "internal_error"
            settlement.fail(status, code)
            raise

    def _call(self, ctx: RequestContext, snap: Snapshot, request: ChatRequest, settlement: Settlement) -> Response:
        channels = snap.channels_for(ctx.key.group, request.model)
        tried: set[tuple[int, int]] = set()
        last_error: UpstreamError | None = None
        deadline = time.monotonic() + self.settings.timeouts.total
        for attempt in range(self.settings.max_attempts):
            route = self.selector.pick(channels, request.model, tried)
            if route is None or time.monotonic() >= deadline:
                break
            tried.add((route.channel.id, route.key.id))
            target = Target(route.channel, route.key, route.upstream_model)
            ctx.channel_id, ctx.channel_key_id, ctx.upstream_model = route.channel.id, route.key.id, route.upstream_model
            adapter = adapter_for(route.channel.type)
            if Operation.CHAT not in adapter.info.capabilities:
                raise RelayError(501, "not_implemented", f"Channel type '{route.channel.type}' cannot serve chat completions.")
            started = time.monotonic()
            outcome = self._attempt(ctx, adapter, target, request, settlement)
            if isinstance(outcome, Response):
                return outcome
            last_error = outcome
            ctx.note(step="attempt", channel=route.channel.id, key=route.key.id, status=outcome.status, kind=outcome.kind.value, ms=int((time.monotonic() - started) * 1000), error=outcome.message[:200])
            if not outcome.retryable:
                break
        if last_error is None:
            ctx.note(step="route", result="no channel with a usable key")
            raise RelayError(503, "no_channel_available", "No upstream channel is available for this model right now.")
        raise upstream_failure(last_error)

    def _attempt(self, ctx, adapter, target: Target, request: ChatRequest, settlement: Settlement) -> Response | UpstreamError:
        """One upstream call: a Response for the caller, or the error that ended the attempt."""
        timeouts = self.settings.timeouts
        try:
            response = self.client.send(adapter.chat_request(target, request), timeouts)
        except UpstreamCallFailed as failed:
            return failed.error
        if response.status != 200:
            try:
                body = response.read_all()
            except UpstreamCallFailed as failed:
                return failed.error
            return adapter.classify_error(response.status, body, response.headers)

        if request.stream:
            stream = StreamBody(ctx, adapter.chat_stream(target, request), response, settlement, timeouts)
            error = stream.prime()
            if error is not None:
                return error
            ctx.note(step="attempt", channel=target.channel.id, key=target.key.id, status=200, ms=ctx.elapsed_ms())
            return Response(200, stream.headers(), stream)

        try:
            body = response.read_all()
        except UpstreamCallFailed as failed:
            return failed.error
        try:
            result = adapter.chat_response(target, request, body)
        except (ValueError, KeyError, TypeError):
            return UpstreamError(ErrorKind.INVALID_RESPONSE, 200, "the upstream's response is not a chat completion")
        ctx.note(step="attempt", channel=target.channel.id, key=target.key.id, status=200, ms=ctx.elapsed_ms())
        settlement.succeed(result.usage, result.output_text_tokens, status=200)
        return json_response(200, result.body)
