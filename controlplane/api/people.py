"""Admin API: users, groups, operators and API tokens."""
from __future__ import annotations

from flask import g, jsonify, request
from sqlalchemy import select

from controlplane.api import ADMINS, READERS, WRITERS, actor, payload, route
from controlplane.api.schema import BOOL, INT, PAGE, STR, WHEN, arr, described, obj
from controlplane.extensions import db
from controlplane.models import ApiKey, ApiToken, LedgerEntry, Role, User
from controlplane.queries.pagination import page_number, paginate, per_page
from controlplane.queries.users import search
from controlplane.services import ServiceError, api_tokens, bans, billing, closure, groups, keys, users
from controlplane.services.billing import entry_dict


def user_dict(user: User, full: bool = False) -> dict:
    out = {"id": user.id, "email": user.email, "role": user.role, "status": user.status, "group": user.group.name,
           "account_id": user.account_id, "balance_micro_usd": user.account.balance, "created_at": user.created_at.isoformat()}
    if full:
        live, held = billing.live_balance(user.account_id)
        out.update(live_balance_micro_usd=live, held_micro_usd=held, banned=bool(bans.active_for("user", str(user.id))),
                   keys=[keys.describe(k) for k in db.session.scalars(select(ApiKey).where(ApiKey.user_id == user.id).order_by(ApiKey.id))])
    return out


@route("/v1/users", "GET", summary="Search users", tag="users", query=dict(q=STR, role=STR, group=STR, status=STR, **PAGE))
def list_users():
    page = paginate(search(request.args), page_number(request.args), per_page(request.args))
    return jsonify(data=[user_dict(u) for u in page.items], **page.meta())


@route("/v1/users", "POST", summary="Create a user", tag="users", roles=WRITERS, status=201,
       body=obj(("email",), email=STR, password=STR, group=STR))
def create_user():
    data = payload()
    user = users.create_user(actor(), str(data.get("email") or ""), data.get("password"), data.get("group"))
    return jsonify(user_dict(user, full=True)), 201


@route("/v1/users/<int:user_id>", "GET", summary="One user: balance, holds, keys, ban state", tag="users")
def get_user(user_id: int):
    return jsonify(user_dict(users.user_by_id(user_id), full=True))


@route("/v1/users/<int:user_id>", "PATCH", summary="Change group, role (admins) or whether the user may sign in", tag="users",
       roles=WRITERS, body=obj(group=STR, role=described(STR, "admins only"), active=BOOL))
def update_user(user_id: int):
    user, data = users.user_by_id(user_id), payload()
    admin = g.api_user.role == Role.ADMIN.value
    if not admin and ("role" in data or ("active" in data and user.is_operator)):
        raise ServiceError("Only an admin changes roles or operator accounts.", "role", 403)
    if "group" in data:
        users.set_group(actor(), user, groups.group_by_name(str(data["group"])))
    if "role" in data:
        users.set_role(actor(), user, str(data["role"]))
    if "active" in data:
        users.set_active(actor(), user, bool(data["active"]))
    return jsonify(user_dict(user, full=True))


@route("/v1/users/<int:user_id>/ledger", "GET", summary="A user's ledger entries, newest first", tag="users", query=PAGE)
def user_ledger(user_id: int):
    user = users.user_by_id(user_id)
    page = paginate(select(LedgerEntry).where(LedgerEntry.account_id == user.account_id).order_by(LedgerEntry.id.desc()),
                    page_number(request.args), per_page(request.args))
    return jsonify(data=[entry_dict(e) for e in page.items], **page.meta())


@route("/v1/users/<int:user_id>/close", "POST", summary="Close a customer's account: keys revoked, personal data removed, ledger kept",
       tag="users", roles=WRITERS, body=obj(("reason",), reason=STR))
def close_user(user_id: int):
    data = payload()
    user = users.user_by_id(user_id)
    if not str(data.get("reason") or "").strip():
        raise ServiceError("Say why the account is closed.", "reason")
    done = closure.close(actor(), user, str(data["reason"]))
    return jsonify(user_dict(user) | {"keys_revoked": done.keys, "unused_balance_micro_usd": done.balance,
                                      "refundable_topups": [{"entry_id": t.entry_id, "unused_micro_usd": t.unused} for t in done.refundable]})


GROUP_FIELDS = dict(multiplier=described(STR, "e.g. \"0.9\" for 10% off"), model_patterns=arr(STR), rpm=INT, tpm=INT, concurrency=INT,
                    queue_seconds=described(INT, "seconds a request waits when every channel of its model is full (0: 429 at once; default 10)"),
                    priority=described(INT, "0–1000: higher groups are served first from the capacity queue"), is_default=BOOL)


@route("/v1/groups", "GET", summary="User groups", tag="groups")
def list_groups():
    from controlplane.models import Group

    counts = groups.member_counts()
    return jsonify(data=[groups.describe(x) | {"users": counts.get(x.id, 0)} for x in db.session.scalars(select(Group).order_by(Group.name))])


@route("/v1/groups", "POST", summary="Create a group", tag="groups", roles=WRITERS, status=201, body=obj(("name",), name=STR, **GROUP_FIELDS))
def create_group():
    data = payload()
    group = groups.create_group(actor(), str(data.get("name") or ""), str(data.get("multiplier", "1.0")), data.get("model_patterns") or [],
                                bool(data.get("is_default")), data.get("rpm"), data.get("tpm"), data.get("concurrency"),
                                data.get("queue_seconds"), data.get("priority"))
    return jsonify(groups.describe(group)), 201


@route("/v1/groups/<int:group_id>", "PATCH", summary="Change a group (its name stays)", tag="groups", roles=WRITERS, body=obj(**GROUP_FIELDS))
def update_group(group_id: int):
    group, data = groups.group_by_id(group_id), payload()
    current = groups.describe(group)
    merged = {k: data.get(k, current.get(k)) for k in ("model_patterns", "rpm", "tpm", "concurrency", "queue_seconds", "priority")}
    multiplier = str(data.get("multiplier", f"{group.multiplier_bp / 10_000:g}"))
    changed = groups.update_group(actor(), group, multiplier=multiplier, is_default=data.get("is_default"), **merged)
    return jsonify(groups.describe(changed))


@route("/v1/groups/<int:group_id>", "DELETE", summary="Delete an empty group", tag="groups", roles=WRITERS, status=204)
def delete_group(group_id: int):
    groups.delete_group(actor(), groups.group_by_id(group_id))
    return "", 204


@route("/v1/operators", "GET", summary="Operators and their roles", tag="operators", roles=ADMINS)
def list_operators():
    rows = db.session.scalars(select(User).where(User.role.in_(["admin", "operator", "support"])).order_by(User.email))
    return jsonify(data=[user_dict(u) for u in rows])


@route("/v1/operators", "POST", summary="Add an operator", tag="operators", roles=ADMINS, status=201,
       body=obj(("email", "password", "role"), email=STR, password=STR, role=described(STR, "admin, operator or support")))
def create_operator():
    data = payload()
    role = str(data.get("role") or "")
    if role not in ("admin", "operator", "support"):
        raise ServiceError("role is admin, operator or support.", "role")
    user = users.create_operator(actor(), str(data.get("email") or ""), str(data.get("password") or ""), Role(role))
    return jsonify(user_dict(user)), 201


@route("/v1/tokens", "GET", summary="Your API tokens (admins: everyone's)", tag="tokens", roles=READERS)
def list_tokens():
    query = select(ApiToken).order_by(ApiToken.id.desc())
    if g.api_user.role != Role.ADMIN.value:
        query = query.where(ApiToken.user_id == g.api_user.id)
    return jsonify(data=[api_tokens.describe(t) for t in db.session.scalars(query)])


@route("/v1/tokens/<int:token_id>", "DELETE", summary="Revoke a token", tag="tokens", roles=READERS, status=204)
def revoke_token(token_id: int):
    token = api_tokens.token_by_id(token_id)
    if token.user_id != g.api_user.id and g.api_user.role != Role.ADMIN.value:
        raise ServiceError("You can revoke only your own tokens.", status=403)
    api_tokens.revoke(actor(), token)
    return "", 204



@route("/v1/terms", "GET", summary="Versions of the terms of service, with how many accepted each", tag="terms")
def list_terms():
    from controlplane.services import terms

    counts = terms.acceptance_counts()
    return jsonify(data=[terms.describe(t) | {"acceptances": counts.get(t.id, 0)} for t in terms.versions()])


@route("/v1/terms", "POST", summary="Announce a version of the terms (at least 14 days ahead; the first may take effect at once)",
       tag="terms", roles=WRITERS, status=201,
       body=obj(("version", "summary"), version=STR, summary=described(STR, "What changed; customers read it"), url=STR, effective_at=WHEN))
def publish_terms():
    from controlplane.services import terms
    from controlplane.validation import timestamp

    data = payload()
    when = timestamp(str(data["effective_at"]), "effective_at") if data.get("effective_at") else None
    row = terms.publish(actor(), str(data.get("version") or ""), str(data.get("summary") or ""), data.get("url"), when)
    return jsonify(terms.describe(row)), 201
