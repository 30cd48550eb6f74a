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

from relay import holds, idempotency, playground, pricing, steering
from relay.affinity import Affinity, affinity_of
from relay.admission import Admission, Gate, LimitRefused, MoneyHold, NoRoute, lease_keys
from relay.attempt import Terms
from relay.capacity_queue import CapacityQueue, Overflow, Queued, QueueSpot, spot_for
from relay.billing import Charges
from relay.config_store import SnapshotHolder
from relay.context import RequestContext, Response, json_response
from relay.endpoints import Endpoint, HoldEstimate
from relay.errors import GEMINI, GEMINI_ARRAY, RelayError
from relay.journal import Replayer, SettleJournal
from relay.keys import KeyView
from relay.limits import SCOPE_LABELS, WHICH_LABELS, caller_scopes
from relay.pricing import BP_ONE
from relay.quota import Budgets, HoldRefused, Quota
from relay.resp import ReplyLost
from relay.retry_budget import SharedRetryBudget
from relay.routing import RetryBudget, Router, no_route_error, note_skips, supports
from relay.selector import MAX_ROUTES, Plan, Route, Selector
from relay.settings import RelaySettings
from relay.snapshot import GroupView, Snapshot, Status
from relay.upstream import UpstreamClient

if TYPE_CHECKING:
    from wsgiref.types import WSGIEnvironment


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
                         generation_ttl=settings.generation_ttl_seconds, batch_size=settings.redis_batch_size,
                         batch_in_flight=settings.redis_batch_in_flight, split=settings.admission_split)
        self.idempotency = idempotency.Idempotency(register_script or quota.redis.register_script, settings.idempotency_ttl_seconds,
                                                   settings.idempotency_max_bytes)
        self.budget = SharedRetryBudget(register_script or quota.redis.register_script, settings.retry_budget_percent, settings.retry_budget_min) \
            if settings.retry_budget_shared else RetryBudget(settings.retry_budget_percent, settings.retry_budget_min)
        self.router = Router(self.gate, settings.max_attempts, settings.timeouts, settings.timeouts.total, self.budget)
        self.queue = CapacityQueue(register_script or quota.redis.register_script)
        # The one settler of every request's charge, and the settle journal behind it.
        self.charges = Charges(self.gate, SettleJournal(settings.instance_dir / "journal"),
                               Replayer(register_script or quota.redis.register_script, quota.release), self.budget)
        self.gate.strand = self.charges.abandon
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
        # `providers`: the names this key may steer by for the model (an extra field OpenAI's SDKs keep).
        data = [{"id": m, "object": "model", "created": created, "owned_by": "switchboard", "providers": snap.providers_for(key.group, m)}
                for m in models]
        return json_response(200, orjson.dumps({"object": "list", "data": data}))

    def handle(self, endpoint: Endpoint, ctx: RequestContext, environ: WSGIEnvironment, read_body: Callable[[], bytes]) -> Response:
        """A billed call: authenticate, read the body, check, hold, route with retries, settle exactly once."""
        snap = self.holder.current
        now = ctx.started_at
        key = self.authenticate(ctx, environ, snap, now, getattr(endpoint, "accepts_query_key", False))
        body = read_body()
        # The caller's fallback models and provider preferences leave the body here (relay/steering.py).
        steer, request_body = steering.extract(body, endpoint.error_format, endpoint.error_format in (GEMINI, GEMINI_ARRAY))
        request = endpoint.parse(request_body, environ)
        model = endpoint.model_of(request)
        ctx.model = model
        ctx.stream = endpoint.is_stream(request)
        if steer is None and not snap.alias_targets(model):
            group, price = self.authorize_model(snap, key, model, now)
            prices: tuple[pricing.Price, ...] = (price,)
        else:
            steer = steer or steering.Steering()
            group, prices = self.candidates(ctx, snap, key, model, steer, now)
            price = prices[0]
        if not endpoint.billed:
            # Free metadata calls (count_tokens): routed in the same order, never held, limited or charged.
            plan = self.plan(ctx, snap, key, model, endpoint) if steer is None else self.plan_steered(ctx, snap, key, prices, endpoint, steer)
            return self.router.run_unbilled(
                ctx, plan, lambda adapter, target: endpoint.attempt(self.client, ctx, adapter, target, request, None))

        claim = idempotency.claim_of(environ, key.account_id, key.id, body, self.settings.lease_seconds)
        estimate = endpoint.estimate(request, price, self.settings)
        if steer is None:
            wanted = holds.size(estimate, price, group.multiplier_bp, self.settings.min_hold_output_tokens)
            plan = self.plan(ctx, snap, key, model, endpoint)
            estimates: tuple[tuple[HoldEstimate, pricing.Price], ...] = ((estimate, price),)
        else:
            # The hold covers the dearest model the request may end up on.
            estimates = tuple((endpoint.estimate(request, p, self.settings), p) for p in prices)
            wanted = steered_hold(estimates, group.multiplier_bp, self.settings.min_hold_output_tokens)
            plan = self.plan_steered(ctx, snap, key, prices, endpoint, steer)
        pin = None if steer is not None and steer.provider is not None and steer.provider.orders else \
            affinity_of(getattr(request, "payload", None), key.account_id, key.group, model, self.settings.affinity_ttl_seconds)
        self.budget.begin_request()
        try:
            admission = self.admit(ctx, snap, key, group, plan, wanted, now, claim, pin)
        except idempotency.Prior as prior:
            self.budget.end_request()
            return self.idempotency.replay(ctx, prior)
        except BaseException as refused:
            self.budget.end_request()
            if isinstance(refused, ReplyLost):
                self.charges.abandon(ctx.request_id, key.account_id, claim.redis_key if claim is not None else "",
                                     lease_keys(caller_scopes(key, group), plan))
            raise
        ctx.held = True
        terms = Terms(price, group.multiplier_bp, estimate.local_prompt_tokens, prices if len(prices) > 1 else ())
        try:
            # From the admission on, the request's charge owns the hold: whatever happens, it settles once.
            with self.charges.open(ctx, admission, terms) as charge:
                if estimate.cappable:
                    self.cap_output(ctx, endpoint, request, estimates, admission.hold.amount, group.multiplier_bp)
                routed = self.router.run(ctx, admission, lambda adapter, target: endpoint.attempt(self.client, ctx, adapter, target, request,
                                                                                                  terms.at(ctx.model)))
                response = charge.take(routed)
                if steer is not None and ctx.model:
                    response = Response(response.status, [*response.headers, steering.header_naming(ctx.model)], response.body)
        except BaseException as exc:
            if claim is not None:
                self.idempotency.failed(claim, ctx.request_id, exc, exc.body(ctx.request_id, endpoint.error_format) if isinstance(exc, RelayError) else b"")
            raise
        if claim is not None:
            response = self.idempotency.keep(claim, ctx, response, charge)
        return response

    # --- routing and admission -------------------------------------------------------
    def plan(self, ctx: RequestContext, snap: Snapshot, key: KeyView, model: str, endpoint: Endpoint) -> Plan:
        channels = snap.channels_for(key.group, model)
        plan = self.selector.plan(channels, model, supports(endpoint.operation), snap.strategy_of(model))
        ctx.note(step="candidates", channels=[c.id for c in channels], routes=len(plan.routes),
                 skipped=[list(s) for s in plan.skipped] or None)
        if plan.selection:
            ctx.note(step="select", tiers=list(plan.selection))
        return checked_plan(plan)

    # --- steering: fallback models, aliases and provider preferences (relay/steering.py) ------------
    def candidates(self, ctx: RequestContext, snap: Snapshot, key: KeyView, model: str, steer: steering.Steering,
                   now: float) -> tuple[GroupView, tuple[pricing.Price, ...]]:
        """The models to try, in order, each with its price: `model`, then the `models` list, an
        alias standing for its models. Every one must be a model this key may use (an alias's
        models it may not use are left out); `provider.max_price` leaves out those priced above it."""
        asked = [(model, "model"), *((m, f"models[{i}]") for i, m in enumerate(steer.models))]
        found: dict[str, pricing.Price] = {}
        group: GroupView | None = None
        for name, param in asked:
            targets = snap.alias_targets(name)
            if not targets:
                if name not in found:
                    group, found[name] = self.authorize_steered(snap, key, name, param, now)
                continue
            usable = 0
            for target in targets:
                try:
                    group, price = self.authorize_model(snap, key, target, now)
                except RelayError:
                    continue  # the operator's alias may name models this key may not use
                usable += 1
                found.setdefault(target, price)
            if not usable:
                raise RelayError(403 if param == "model" else 400, "model_not_allowed", f"This key may not use the model '{name}'.", param=param)
        assert group is not None  # nosec B101  # at least one model was authorized
        prefs, bp = steer.provider, group.multiplier_bp
        # The caller's own price: the list price times their group's multiplier.
        kept = tuple(p for p in found.values() if steering.within_price(prefs, p.input * bp // BP_ONE, p.output * bp // BP_ONE))
        left = [m for m, p in found.items() if p not in kept]
        ctx.note(step="steer", **steering.as_dict(steer), tries=[p.model for p in kept], over_max_price=left or None)
        if not kept:
            raise RelayError(400, "invalid_value", "provider.max_price: no model asked for is priced within it.", param="provider.max_price")
        return group, kept

    def authorize_steered(self, snap: Snapshot, key: KeyView, model: str, param: str, now: float) -> tuple[GroupView, pricing.Price]:
        """`authorize_model`, the error naming the field: a model of the `models` list is a 400."""
        try:
            return self.authorize_model(snap, key, model, now)
        except RelayError as error:
            if param == "model":
                raise
            raise RelayError(400, error.code, f"{param}: {error.message}", param=param) from None

    def plan_steered(self, ctx: RequestContext, snap: Snapshot, key: KeyView, prices: tuple[pricing.Price, ...], endpoint: Endpoint,
                     steer: steering.Steering) -> Plan:
        """Each model's routes in turn, its channels as the caller prefers them."""
        prefs = steer.provider
        public = snap.public_providers() if prefs is not None else {}
        if prefs is not None:
            steering.check_names(prefs, public)
        channels: dict[int, Any] = {}
        routes: list[Route] = []
        skipped: list[tuple[int, str]] = []
        selection: list[dict[str, object]] = []
        for price in prices:
            model = price.model
            found = snap.channels_for(key.group, model)
            ordered = False
            if prefs is not None:
                preferred = steering.prefer(found, prefs, public, self.measure)
                found, ordered = preferred.channels, preferred.ordered
                skipped += preferred.left_out
            plan = self.selector.plan(found, model, supports(endpoint.operation), snap.strategy_of(model), ordered)
            channels.update((c.id, c) for c in plan.channels)
            routes += plan.routes
            skipped += plan.skipped
            selection += [dict(s, model=model) for s in plan.selection]
        plan = Plan(tuple(channels.values()), tuple(routes[:MAX_ROUTES]), tuple(dict.fromkeys(skipped)), tuple(selection))
        ctx.note(step="candidates", channels=list(channels), routes=len(plan.routes), skipped=[list(s) for s in plan.skipped] or None)
        if plan.selection:
            ctx.note(step="select", tiers=list(plan.selection))
        return checked_plan(plan)

    def measure(self, sort: str, channel: Any) -> float:
        """`provider.sort`'s key for a channel, smaller first; a channel not measured yet goes last."""
        if sort == "price":
            return float(steering.cost_of(channel))
        seen = self.selector.stats.get(channel.id)
        if sort == "latency":
            return seen.ttft_ms if seen is not None and seen.ttft_ms is not None else float("inf")
        return -seen.tokens_per_second if seen is not None and seen.tokens_per_second is not None else 0.0

    def cap_output(self, ctx: RequestContext, endpoint: Endpoint, request: Any, estimates: tuple[tuple[HoldEstimate, pricing.Price], ...],
                   reserved: int, multiplier_bp: int) -> None:
        """Hold the upstream to the output the reservation pays for: the request is rewritten so it
        may write no more, and the caller is told the cap when the relay set or lowered it. With
        fallback models, the least any of them may write for it."""
        budget = min(holds.output_budget(estimate, reserved, price, multiplier_bp) for estimate, price in estimates)
        if endpoint.cap_output(request, budget):  # type: ignore[attr-defined]  # only endpoints with cap_output make cappable estimates
            ctx.output_cap = budget
            ctx.note(step="output_cap", tokens=budget, reserved=reserved)

    def admit(self, ctx: RequestContext, snap: Snapshot, key: KeyView, group: GroupView, plan: Plan, wanted: holds.HoldSize,
              now: float, claim: idempotency.Claim | None = None, pin: Affinity | None = None) -> Admission:
        """One round trip: the caller's limits, the first usable route (the conversation's pinned
        one first), the credit hold — and the idempotency key's record, which answers before all of
        them when it exists."""
        scopes = caller_scopes(key, group)
        spot = spot_for(ctx.model or "", plan.channels) if group.queue_seconds > 0 else None

        def attempt(queue: QueueSpot | None, at: float) -> Admission:
            money = MoneyHold(ctx.request_id, key.account_id, key.id, wanted.amount, key.credit_limit, at + self.settings.hold_seconds,
                              Budgets(key.daily_budget, key.monthly_budget, key.member_allowance), key.user_id, now, wanted.least)
            return self.gate.admit(money, scopes, plan, claim, pin, queue)

        def queued_attempt(queue: QueueSpot) -> Admission:
            try:
                return attempt(queue, time.time())
            except NoRoute as none:
                if none.retry_after <= 0:  # nothing will free up (every route ejected or dead): no use waiting
                    raise
                raise Queued(0) from None

        try:
            try:
                admission = attempt(spot, now)
            except (Queued, NoRoute) as first:
                # No use waiting when nothing will free up (every route ejected or dead: 503), or not
                # within the group's limit (keys cooling down for longer: 429 with their Retry-After).
                if spot is None or (isinstance(first, NoRoute) and not 0 < first.retry_after <= group.queue_seconds):
                    raise
                # Every route is full, or others already wait for them: wait a turn (relay/capacity_queue.py).
                admission = self.queue.wait(ctx, spot, group, key, queued_attempt)
            if pin is not None:
                ctx.note(step="affinity", result=admission.pinned, via=pin.source)
            return admission
        except LimitRefused as refused:
            ctx.note(step="limit", scope=refused.scope, which=refused.which, retry_after=refused.retry_after)
            who = SCOPE_LABELS.get(refused.scope.split(":", 1)[0], "key")
            raise RelayError(429, f"rate_limit_{refused.which}", f"This {who} is over its limit of {WHICH_LABELS[refused.which]}; retry shortly.",
                             retry_after=refused.retry_after, type="rate_limit_error") from None
        except NoRoute as none:
            note_skips(ctx, none.skips)
            ctx.note(step="route", result="no usable route", panic=none.panic or None)
            raise no_route_error(none.retry_after) from None
        except Overflow as full:
            raise no_route_error(full.retry_after) from None
        except HoldRefused as refused:
            raise hold_refusal(refused.reason) from None


def checked_plan(plan: Plan) -> Plan:
    if not plan.routes:
        if plan.skipped and all(why == "unsupported_endpoint" for _, why in plan.skipped):
            raise RelayError(501, "not_implemented", "This model's channels do not support this endpoint.")
        raise no_route_error(0)
    return plan


def steered_hold(estimates: tuple[tuple[HoldEstimate, pricing.Price], ...], multiplier_bp: int, min_output_tokens: int) -> holds.HoldSize:
    """The hold of a request that may end up on any of several models: enough for the dearest, and
    at least enough for each one's least."""
    sizes = [holds.size(estimate, price, multiplier_bp, min_output_tokens) for estimate, price in estimates]
    amount = max(s.amount for s in sizes)
    least = max(s.least if s.least is not None else s.amount for s in sizes)
    return holds.HoldSize(amount, least if least < amount else None)
