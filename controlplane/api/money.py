"""Admin API: money and access — top-ups, adjustments, refunds, goodwill, and bans."""
from __future__ import annotations

from flask import g, jsonify, request
from sqlalchemy import select

from controlplane.api import READERS, REFUNDERS, WRITERS, actor, payload, route
from controlplane.api.schema import BOOL, INT, PAGE, STR, USD, WHEN, described, obj
from controlplane.models import Ban, Refund, RefundKind, Role
from controlplane.queries.pagination import page_number, paginate, per_page
from controlplane.services import ServiceError, bans, billing, refunds, users
from controlplane.services.billing import entry_dict
from controlplane.validation import timestamp

MONEY_BODY = obj(("amount_usd", "reason"), amount_usd=USD, reason=described(STR, "The user sees it"))


def _expiry(value):
    return timestamp(value, "expires_at") if value else None


@route("/v1/users/<int:user_id>/topup", "POST", summary="Add money to a user's balance", tag="money", roles=WRITERS, status=201, body=MONEY_BODY)
def topup(user_id: int):
    data = payload()
    entry = billing.topup(actor(), users.user_by_id(user_id).account, str(data.get("amount_usd") or ""), data.get("reason"))
    return jsonify(entry_dict(entry)), 201


@route("/v1/users/<int:user_id>/adjust", "POST", summary="Adjust a balance (negative takes money away)", tag="money", roles=WRITERS,
       status=201, body=MONEY_BODY)
def adjust(user_id: int):
    data = payload()
    entry = billing.adjust(actor(), users.user_by_id(user_id).account, str(data.get("amount_usd") or ""), data.get("reason"))
    return jsonify(entry_dict(entry)), 201


@route("/v1/refunds", "GET", summary="Refunds, newest first", tag="money", roles=READERS, query=dict(kind=STR, **PAGE))
def list_refunds():
    query = select(Refund).order_by(Refund.id.desc())
    if request.args.get("kind") in [k.value for k in RefundKind]:
        query = query.where(Refund.kind == request.args["kind"])
    page = paginate(query, page_number(request.args), per_page(request.args))
    return jsonify(data=[refunds.describe(r) for r in page.items], **page.meta())


@route("/v1/refunds/request", "POST", summary="Refund a request's charge, fully or partly, once", tag="money", roles=REFUNDERS, status=201,
       body=obj(("request_id", "reason"), request_id=STR, amount_usd=described(USD, "Default: all that was charged"), reason=STR))
def refund_request():
    data = payload()
    amount = data.get("amount_usd")
    row = refunds.refund_request(actor(), str(data.get("request_id") or ""), None if amount in (None, "") else str(amount), data.get("reason"))
    return jsonify(refunds.describe(row)), 201


@route("/v1/refunds/topup", "POST", summary="Refund a top-up's unused part (14 days; later: admin override)", tag="money", roles=WRITERS,
       status=201, body=obj(("topup_entry_id", "reason"), topup_entry_id=INT, reason=STR, override=described(BOOL, "admins only")))
def refund_topup():
    data = payload()
    override = bool(data.get("override"))
    if override and g.api_user.role != Role.ADMIN.value:
        raise ServiceError("Only an admin can override the 14-day limit.", "override", 403)
    entry_id = data.get("topup_entry_id")
    if not isinstance(entry_id, int):
        raise ServiceError("topup_entry_id is the ledger entry id of the top-up.", "topup_entry_id")
    row = refunds.refund_topup(actor(), entry_id, data.get("reason"), override=override)
    return jsonify(refunds.describe(row)), 201


@route("/v1/refunds/goodwill", "POST", summary="Give goodwill credit", tag="money", roles=WRITERS, status=201,
       body=obj(("user", "amount_usd", "reason"), user=described(STR, "email"), amount_usd=USD, reason=STR))
def goodwill():
    data = payload()
    user = users.user_by_email(str(data.get("user") or ""))
    row = refunds.goodwill(actor(), user.account, str(data.get("amount_usd") or ""), data.get("reason"))
    return jsonify(refunds.describe(row)), 201


@route("/v1/bans", "GET", summary="Bans (state: active or ended)", tag="bans", roles=READERS, query=dict(state=STR, kind=STR, **PAGE))
def list_bans():
    query = bans.ended_query() if request.args.get("state") == "ended" else bans.active_query()
    if request.args.get("kind") in bans.KINDS:
        query = query.where(Ban.kind == request.args["kind"])
    page = paginate(query.order_by(Ban.id.desc()), page_number(request.args), per_page(request.args))
    return jsonify(data=[bans.describe(b) for b in page.items], **page.meta())


@route("/v1/bans", "POST", summary="Ban a user, an organisation, a key, or an IP address/range", tag="bans", roles=WRITERS, status=201,
       body=obj(("kind", "subject", "reason"), kind=described(STR, "user, org, key or ip"),
                subject=described(STR, "user email or id; organisation id or name; key id or prefix; IP or CIDR"), reason=STR, expires_at=WHEN))
def create_ban():
    data = payload()
    row = bans.ban(actor(), str(data.get("kind") or ""), str(data.get("subject") or ""), data.get("reason"), _expiry(data.get("expires_at")))
    return jsonify(bans.describe(row)), 201


@route("/v1/bans/<int:ban_id>/lift", "POST", summary="Lift a ban", tag="bans", roles=WRITERS)
def lift_ban(ban_id: int):
    return jsonify(bans.describe(bans.lift(actor(), bans.ban_by_id(ban_id))))


@route("/v1/users/<int:user_id>/ban", "POST", summary="Ban a user", tag="bans", roles=WRITERS, status=201,
       body=obj(("reason",), reason=STR, expires_at=WHEN))
def ban_user(user_id: int):
    data = payload()
    row = bans.ban(actor(), "user", str(users.user_by_id(user_id).id), data.get("reason"), _expiry(data.get("expires_at")))
    return jsonify(bans.describe(row)), 201


@route("/v1/users/<int:user_id>/unban", "POST", summary="Lift every ban of a user", tag="bans", roles=WRITERS)
def unban_user(user_id: int):
    return jsonify(lifted=bans.unban_user(actor(), users.user_by_id(user_id)))
