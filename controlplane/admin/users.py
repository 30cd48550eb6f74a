"""Operator console: users — search, detail (balance, holds, ledger, keys, usage, bans), creation.
The actions on one user (money, bans, group, role) are in user_actions.py."""
from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, flash, redirect, render_template, request, url_for
from sqlalchemy import func, select

from controlplane.admin import OPERATORS, WRITERS
from controlplane.admin.common import actor, failed, found
from controlplane.admin.forms import choices, scoped
from controlplane.admin.user_forms import AdjustForm, BanForm, CloseAccountForm, CreateUserForm, GroupChangeForm, NewKeyForm, RoleForm, TopupForm
from controlplane.auth import require_roles
from controlplane.extensions import db
from controlplane.models import ApiKey, Ban, Group, LedgerEntry, Payment, Refund, UsageRollup, User, utcnow
from controlplane.queries.pagination import page_number, paginate
from controlplane.queries.users import FILTERS, ROLES, search
from controlplane.services import ServiceError, bans, billing, users as user_service

bp = Blueprint("users", __name__, url_prefix="/users")


def group_choices() -> list[tuple[str, str]]:
    return [(g.name, g.name) for g in db.session.scalars(select(Group).order_by(Group.name))]


@bp.get("/")
@require_roles(*OPERATORS)
def index():
    page = paginate(search(request.args), page_number(request.args))
    banned = {b.subject for b in db.session.scalars(bans.active_query().where(
        Ban.kind == "user", Ban.subject.in_([str(u.id) for u in page.items])))}
    filtered = any(request.args.get(k) for k in FILTERS)
    return render_template("admin/users/list.html", page=page, args=request.args, roles=ROLES, groups=group_choices(), banned=banned,
                           filtered=filtered)


@bp.route("/new", methods=["GET", "POST"])
@require_roles(*WRITERS)
def create():
    form = CreateUserForm()
    existing = group_choices()
    # With no group yet, "default" is offered and created with the first user.
    form.group.choices = choices(existing or [("default", "default")])
    status = 200
    if form.validate_on_submit():
        group = form.group.data if (form.group.data, form.group.data) in existing else None
        try:
            user = user_service.create_user(actor(), form.email.data, form.password.data or None, group)
        except ServiceError as error:
            db.session.rollback()
            status = failed(form, error)
        else:
            flash(f"User {user.email} created.")
            return redirect(url_for(".detail", user_id=user.id))
    elif request.method == "POST":
        status = 400
    return render_template("admin/users/new.html", form=form), status


def usage_by_model(account_id: int, days: int = 30) -> list:
    since = (utcnow() - timedelta(days=days)).replace(minute=0, second=0, microsecond=0)
    R = UsageRollup
    return list(db.session.execute(
        select(R.model, func.sum(R.requests), func.sum(R.errors),
               func.sum(R.input_tokens + R.cache_read_tokens + R.cache_write_tokens), func.sum(R.output_tokens + R.reasoning_tokens),
               func.sum(R.cost))
        .where(R.account_id == account_id, R.bucket >= since).group_by(R.model).order_by(func.sum(R.cost).desc())))


def render_detail(user: User, status: int = 200, **forms):
    """The user page, with any submitted form (and its errors) in place of a blank one."""
    groups = group_choices()
    defaults = {"topup": TopupForm(formdata=None), "adjust": AdjustForm(formdata=None), "ban": BanForm(formdata=None),
                "group": GroupChangeForm(formdata=None, group=user.group.name), "role": RoleForm(formdata=None, role=user.role),
                "new_key": NewKeyForm(formdata=None), "close": CloseAccountForm(formdata=None)}
    defaults.update(forms)
    defaults["group"].group.choices = choices(groups)
    for name, form in defaults.items():
        scoped(form, name)
    live, held = billing.live_balance(user.account_id)
    entries = paginate(select(LedgerEntry).where(LedgerEntry.account_id == user.account_id).order_by(LedgerEntry.id.desc()),
                       page_number(request.args), 25)
    refunded = set(db.session.scalars(select(Refund.topup_entry_id).where(Refund.topup_entry_id.in_([e.id for e in entries.items]))))
    charged = [e.request_id for e in entries.items if e.request_id]
    refunded |= set(db.session.scalars(select(Refund.request_id).where(Refund.request_id.in_(charged)))) if charged else set()
    keys = list(db.session.scalars(select(ApiKey).where(ApiKey.user_id == user.id).order_by(ApiKey.id)))
    disputed = list(db.session.scalars(select(Payment).where(Payment.account_id == user.account_id, Payment.flagged_at.is_not(None))))
    return render_template("admin/users/detail.html", user=user, live=live, held=held, entries=entries, keys=keys, refunded=refunded,
                           usage=usage_by_model(user.account_id), active_bans=bans.active_for("user", str(user.id)), forms=defaults,
                           disputed=disputed), status


@bp.get("/<int:user_id>")
@require_roles(*OPERATORS)
def detail(user_id: int):
    return render_detail(found(user_service.user_by_id, user_id))
