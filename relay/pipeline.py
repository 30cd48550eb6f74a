"""A request's life: auth → checks → hold → route → call → stream → settle.

Everything here reads the in-memory snapshot; the only I/O is Redis (hold, settle) and the
upstream call. No SQL, no Flask. Endpoint-specific work lives in relay/endpoints/.
"""
from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import orjson

from relay import charges, holds, idempotency, playground, pricing
from relay.admission import Admission, Gate, LimitRefused, MoneyHold, NoRoute
from relay.billing import Settlement
from relay.config_store import SnapshotHolder
from relay.context import RequestContext, Response, json_response
from relay.endpoints import Endpoint, HoldEstimate
from relay.errors import RelayError
from relay.journal import Replayer, SettleJournal
from relay.keys import KeyView
from relay.limits import SCOPE_LABELS, WHICH_LABELS, caller_scopes
from relay.quota import Budgets, HoldRefused, Quota
from relay.routing import RetryBudget, Router, no_route_error, note_skips, supports
from relay.selector import Plan, Selector
from relay.settings import RelaySettings
from relay.snapshot import GroupView, Snapshot, Status
from relay.upstream import UpstreamClient

if TYPE_CHECKING:
    from wsgiref.types import WSGIEnvironment

    from relay.adapters.base import Adapter, Target
    from relay.errors import UpstreamError


def api_key_from(environ: WSGIEnvironment, query_key: bool = False) -> str | None:
    """The caller's key: `Authorization: Bearer …`, Anthropic's `x-api-key`, Google's
    `x-goog-api-key`, or — on the Gemini endpoints, as Google allows — the `key` query parameter."""
    header: str | None = environ.get("HTTP_AUTHORIZATION")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    key: str | None = environ.get("HTTP_X_API_KEY") or environ.get("HTTP_X_GOOG_API_KEY")
    if key and key.strip():
        return key.strip()
    if query_key and "key=" in (environ.get("QUERY_STRING") or ""):
        key = dict(parse_qsl(environ["QUERY_STRING"])).get("key")
        return key.strip() if key and key.strip() else None
    return None


def key_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


_REFUSALS = {
    "key_limit": ("key_credit_limit_reached", "This API key has reached its credit limit."),
    "key_daily_budget": ("key_daily_budget_reached", "This API key has reached its daily budget; it resets at 00:00 UTC."),
    "key_monthly_budget": ("key_monthly_budget_reached", "This API key has reached its monthly budget; it resets on the 1st (UTC)."),
    "member_allowance": ("member_allowance_reached", "You have used your monthly allowance in this organisation; ask an admin to raise it."),
}


def hold_refusal(reason: str) -> RelayError:
    code, message = _REFUSALS.get(reason, ("insufficient_quota", "Your credit balance is too low for this request. Top up your account and try again."))
    return RelayError(403, code, message)


class Pipeline:
    def __init__(self, settings: RelaySettings, holder: SnapshotHolder, quota: Quota, client: UpstreamClient, selector: Selector | None = None,
                 register_script: Callable[[str], Callable[..., Any]] | None = None) -> None:
        self.settings = settings
        self.holder = holder
        self.quota = quota
        self.client = client
        self.selector = selector or Selector()
        self.gate = Gate(quota.redis, settings.health, settings.lease_seconds, register=register_script,
                         generation_ttl=settings.generation_ttl_seconds)
        self.idempotency = idempotency.Idempotency(register_script or quota.redis.register_script, settings.idempotency_ttl_seconds,
                                                   settings.idempotency_max_bytes)
        self.budget = RetryBudget(settings.retry_budget_percent, settings.retry_budget_min)
        self.router = Router(self.gate, settings.max_attempts, settings.timeouts, settings.timeouts.total, self.budget)
        self.journal = SettleJournal(settings.instance_dir / "journal")
        self.replayer = Replayer(register_script or quota.redis.register_script)
        # No encryption key, no playground tokens (an empty key would make them forgeable).
        self.playground_key = playground.signing_key(settings.encryption_key) if settings.encryption_key else None

    # --- who is calling, and may they ---------------------------------------------------------
    def authenticate(self, ctx: RequestContext, environ: WSGIEnvironment, snap: Snapshot, now: float, query_key: bool = False) -> KeyView:
        secret = api_key_from(environ, query_key)
        if secret is None:
            raise RelayError(401, "missing_api_key", "You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY'.")
        if secret.startswith(playground.PREFIX):  # the console's playground (relay/playground.py)
            key_id = playground.verify(self.playground_key, secret, now) if self.playground_key else None
            key = self.holder.keys.by_id(key_id) if key_id is not None else None
        else:
            key = self.holder.keys.get(key_hash(secret))
        if key is None:
            raise RelayError(401, "invalid_api_key", "Incorrect API key provided.")
        if key.status != Status.ENABLED:
            raise RelayError(401, "api_key_disabled", "This API key is disabled.")
        if key.expires_at is not None and now >= key.expires_at:
            raise RelayError(401, "api_key_expired", "This API key has expired.")
        ctx.key = key
        if key.user_disabled:
            raise RelayError(403, "user_disabled", "This account is disabled.")
        ip = ctx.ip_address()
        banned = key.banned_at(now) or (ban.kind if (ban := snap.bans.for_ip(ip, now)) else None)
        if banned is not None:
            what = {"user": "account", "key": "API key", "ip": "address"}[banned]
            raise RelayError(403, "banned", f"Access is suspended for this {what}.")
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
    def models(self, ctx: RequestContext, environ: WSGIEnvironment) -> Response:
        """The models this key may use, in OpenAI's list format or, for a caller that sends
        `anthropic-version`, Anthropic's."""
        snap = self.holder.current
        now = time.time()
        key = self.authenticate(ctx, environ, snap, now)
        created = int(snap.built_at or now)
        models = snap.models_for_key(key, now)
        if environ.get("HTTP_ANTHROPIC_VERSION"):
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created))
            data: list[dict[str, Any]] = [{"type": "model", "id": m, "display_name": m, "created_at": stamp} for m in models]
            body = {"data": data, "has_more": False, "first_id": models[0] if models else None, "last_id": models[-1] if models else None}
            return json_response(200, orjson.dumps(body))
        data = [{"id": m, "object": "model", "created": created, "owned_by": "switchboard"} for m in models]
        return json_response(200, orjson.dumps({"object": "list", "data": data}))

    def handle(self, endpoint: Endpoint, ctx: RequestContext, environ: WSGIEnvironment, read_body: Callable[[], bytes]) -> Response:
        """A billed call: authenticate, read the body, check, hold, route with retries, settle exactly once."""
        snap = self.holder.current
        now = ctx.started_at
        key = self.authenticate(ctx, environ, snap, now, getattr(endpoint, "accepts_query_key", False))
        body = read_body()
        request = endpoint.parse(body, environ)
        model = endpoint.model_of(request)
        ctx.model = model
        ctx.stream = endpoint.is_stream(request)
        group, price = self.authorize_model(snap, key, model, now)
        if not endpoint.billed:
            # Free metadata calls (count_tokens): routed in the same order, never held, limited or charged.
            plan = self.plan(ctx, snap, key, model, endpoint)
            return self.router.run_unbilled(
                ctx, plan, lambda adapter, target: endpoint.attempt(self.client, self.settings, ctx, adapter, target, request, None))

        claim = idempotency.claim_of(environ, key.id, body, self.settings.lease_seconds)
        estimate = endpoint.estimate(request, price, self.settings)
        wanted = holds.size(estimate, price, group.multiplier_bp, self.settings.min_hold_output_tokens)
        plan = self.plan(ctx, snap, key, model, endpoint)
        self.budget.begin_request()
        try:
            admission = self.admit(ctx, snap, key, group, plan, wanted, now, claim)
        except idempotency.Prior as prior:
            self.budget.end_request()
            return self.idempotency.replay(ctx, prior)
        except BaseException:
            self.budget.end_request()
            raise
        ctx.held = True
        if estimate.cappable:
            self.cap_output(ctx, endpoint, request, estimate, admission.hold.amount, price, group.multiplier_bp)

        settlement = Settlement(self.gate, admission, ctx, price, group.multiplier_bp, estimate.local_prompt_tokens,
                                on_settled=self.budget.end_request, journal=self.journal)
        try:
            def attempt(adapter: Adapter, target: Target) -> Response | UpstreamError:
                return endpoint.attempt(self.client, self.settings, ctx, adapter, target, request, settlement)

            response = self.router.run(ctx, admission, settlement, attempt)
        except BaseException as exc:
            status = exc.status if isinstance(exc, RelayError) else 500
            code = exc.code if isinstance(exc, RelayError) else "internal_error"
            settlement.fail(status, code)
            if claim is not None:
                self.idempotency.failed(claim, ctx.request_id, exc, exc.body(ctx.request_id, endpoint.error_format) if isinstance(exc, RelayError) else b"")
            raise
        if settlement.settled:  # a whole answer; a stream reports its cost in its usage event
            response = charges.charged_response(response, settlement.charged)
        if claim is not None:
            response = self.idempotency.keep(claim, ctx, response, settlement)
        return response

    # --- routing and admission -------------------------------------------------------
    def plan(self, ctx: RequestContext, snap: Snapshot, key: KeyView, model: str, endpoint: Endpoint) -> Plan:
        channels = snap.channels_for(key.group, model)
        plan = self.selector.plan(channels, model, supports(endpoint.operation))
        ctx.note(step="candidates", channels=[c.id for c in channels], routes=len(plan.routes),
                 skipped=[list(s) for s in plan.skipped] or None)
        if not plan.routes:
            if plan.skipped and all(why == "unsupported_endpoint" for _, why in plan.skipped):
                raise RelayError(501, "not_implemented", "This model's channels do not support this endpoint.")
            raise no_route_error(0)
        return plan

    def cap_output(self, ctx: RequestContext, endpoint: Endpoint, request: Any, estimate: HoldEstimate, reserved: int,
                   price: pricing.Price, multiplier_bp: int) -> None:
        """Hold the upstream to the output the reservation pays for: the request is rewritten so it
        may write no more, and the caller is told the cap when the relay set or lowered it."""
        budget = holds.output_budget(estimate, reserved, price, multiplier_bp)
        if endpoint.cap_output(request, budget):  # type: ignore[attr-defined]  # only endpoints with cap_output make cappable estimates
            ctx.output_cap = budget
            ctx.note(step="output_cap", tokens=budget, reserved=reserved)

    def admit(self, ctx: RequestContext, snap: Snapshot, key: KeyView, group: GroupView, plan: Plan, wanted: holds.HoldSize,
              now: float, claim: idempotency.Claim | None = None) -> Admission:
        """One round trip: the caller's limits, the first usable route, the credit hold — and the
        idempotency key's record, which answers before all of them when it exists."""
        money = MoneyHold(ctx.request_id, key.account_id, key.id, wanted.amount, key.credit_limit, now + self.settings.hold_seconds,
                          Budgets(key.daily_budget, key.monthly_budget, key.member_allowance), key.user_id, now, wanted.least)
        try:
            return self.gate.admit(money, caller_scopes(key, group), plan, claim)
        except LimitRefused as refused:
            ctx.note(step="limit", scope=refused.scope, which=refused.which, retry_after=refused.retry_after)
            who = SCOPE_LABELS.get(refused.scope.split(":", 1)[0], "key")
            raise RelayError(429, f"rate_limit_{refused.which}", f"This {who} is over its limit of {WHICH_LABELS[refused.which]}; retry shortly.",
                             retry_after=refused.retry_after, type="rate_limit_error") from None
        except NoRoute as none:
            note_skips(ctx, none.skips)
            ctx.note(step="route", result="no usable route", panic=none.panic or None)
            raise no_route_error(none.retry_after) from None
        except HoldRefused as refused:
            raise hold_refusal(refused.reason) from None
