"""Admin API: organisations — search, one organisation (members and roles, balance, keys, ban
state), its ledger and usage, and the operator's money and ban actions, as for users."""
from __future__ import annotations

from flask import jsonify, request
from sqlalchemy import select

from controlplane.api import WRITERS, actor, payload, route
from controlplane.api.money import MONEY_BODY, _expiry
from controlplane.api.schema import PAGE, STR, WHEN, described, obj
from controlplane.models import Account, LedgerEntry
from controlplane.queries import organisations as org_queries
from controlplane.queries.pagination import page_number, paginate, per_page
from controlplane.services import bans, billing, closure, keys, organisations, refunds
from controlplane.services.billing import entry_dict


def org_dict(account: Account, full: bool = False, members: int | None = None) -> dict:
    out = {"id": account.id, "name": account.name, "balance_micro_usd": account.balance, "created_at": account.created_at.isoformat(),
           "closed_at": account.closed_at.isoformat() if account.closed_at else None}
    if members is not None:
        out["members"] = members
    if full:
        live, held = billing.live_balance(account.id)
        out.update(live_balance_micro_usd=live, held_micro_usd=held, banned=bool(bans.active_for("org", str(account.id))),
                   members=[{"member_id": m.id, "user_id": m.user_id, "email": m.user.email, "role": m.role, "monthly_allowance_micro_usd": m.monthly_allowance,
                             "joined_at": m.created_at.isoformat()} for m in org_queries.members(account.id)],
                   keys=[keys.describe(k) for k in org_queries.keys(account.id)])
    return out


@route("/v1/organisations", "GET", summary="Search organisations", tag="organisations", query=dict(q=STR, banned=STR, **PAGE))
def list_organisations():
    page = paginate(org_queries.search(request.args), page_number(request.args), per_page(request.args))
    counts = org_queries.member_counts([a.id for a in page.items])
    return jsonify(data=[org_dict(a, members=counts.get(a.id, 0)) for a in page.items], **page.meta())


@route("/v1/organisations/<int:account_id>", "GET", summary="One organisation: members and roles, balance, holds, keys, ban state",
       tag="organisations")
def get_organisation(account_id: int):
    return jsonify(org_dict(organisations.organisation_by_id(account_id), full=True))


@route("/v1/organisations/<int:account_id>/ledger", "GET", summary="An organisation's ledger entries, newest first", tag="organisations",
       query=PAGE)
def organisation_ledger(account_id: int):
    account = organisations.organisation_by_id(account_id)
    page = paginate(select(LedgerEntry).where(LedgerEntry.account_id == account.id).order_by(LedgerEntry.id.desc()),
                    page_number(request.args), per_page(request.args))
    return jsonify(data=[entry_dict(e) for e in page.items], **page.meta())


@route("/v1/organisations/<int:account_id>/usage", "GET", summary="An organisation's usage by model, last 30 days", tag="organisations")
def organisation_usage(account_id: int):
    account = organisations.organisation_by_id(account_id)
    rows = org_queries.usage_by_model(account.id)
    return jsonify(data=[{"model": m, "requests": int(r or 0), "errors": int(e or 0), "input_tokens": int(i or 0), "output_tokens": int(o or 0),
                          "cost_micro_usd": int(c or 0)} for m, r, e, i, o, c in rows])


@route("/v1/organisations/<int:account_id>/topup", "POST", summary="Add money to an organisation's balance", tag="organisations",
       roles=WRITERS, status=201, body=MONEY_BODY)
def organisation_topup(account_id: int):
    data = payload()
    entry = billing.topup(actor(), organisations.organisation_by_id(account_id), str(data.get("amount_usd") or ""), data.get("reason"))
    return jsonify(entry_dict(entry)), 201


@route("/v1/organisations/<int:account_id>/adjust", "POST", summary="Adjust an organisation's balance (negative takes money away)",
       tag="organisations", roles=WRITERS, status=201, body=MONEY_BODY)
def organisation_adjust(account_id: int):
    data = payload()
    entry = billing.adjust(actor(), organisations.organisation_by_id(account_id), str(data.get("amount_usd") or ""), data.get("reason"))
    return jsonify(entry_dict(entry)), 201


@route("/v1/organisations/<int:account_id>/goodwill", "POST", summary="Give an organisation goodwill credit", tag="organisations",
       roles=WRITERS, status=201, body=MONEY_BODY)
def organisation_goodwill(account_id: int):
    data = payload()
    row = refunds.goodwill(actor(), organisations.organisation_by_id(account_id), str(data.get("amount_usd") or ""), data.get("reason"))
    return jsonify(refunds.describe(row)), 201


@route("/v1/organisations/<int:account_id>/ban", "POST", summary="Ban an organisation: every key charged to it is refused",
       tag="organisations", roles=WRITERS, status=201, body=obj(("reason",), reason=STR, expires_at=WHEN))
def ban_organisation(account_id: int):
    data = payload()
    account = organisations.organisation_by_id(account_id)
    row = bans.ban(actor(), "org", str(account.id), data.get("reason"), _expiry(data.get("expires_at")))
    return jsonify(bans.describe(row)), 201


@route("/v1/organisations/<int:account_id>/unban", "POST", summary="Lift every ban of an organisation", tag="organisations",
       roles=WRITERS)
def unban_organisation(account_id: int):
    return jsonify(lifted=bans.unban_organisation(actor(), organisations.organisation_by_id(account_id)))


@route("/v1/organisations/<int:account_id>/members/<int:member_id>", "PATCH", summary="Change a member's role (the organisation keeps an owner)",
       tag="organisations", roles=WRITERS, body=obj(("role",), role=described(STR, "owner, admin or member")))
def update_member(account_id: int, member_id: int):
    row = organisations.operator_set_role(actor(), organisations.organisation_by_id(account_id), member_id, str(payload().get("role") or ""))
    return jsonify({"member_id": row.id, "user_id": row.user_id, "email": row.user.email, "role": row.role})


@route("/v1/organisations/<int:account_id>/close", "POST", summary="Close an organisation: keys revoked, members removed, ledger kept",
       tag="organisations", roles=WRITERS, body=obj(("reason",), reason=STR))
def close_organisation(account_id: int):
    account = organisations.organisation_by_id(account_id)
    done = closure.close_organisation(actor(), account, str(payload().get("reason") or ""))
    return jsonify(org_dict(account) | {"keys_revoked": done.keys, "members_removed": len(done.members), "unused_balance_micro_usd": done.balance,
                                        "refundable_topups": [{"entry_id": t.entry_id, "unused_micro_usd": t.unused} for t in done.refundable]})
