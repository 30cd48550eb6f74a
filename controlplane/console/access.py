"""Who is looking at which account, in what role: the scope every console page reads through.

A person works in their personal account or in an organisation they belong to (chosen with the
account switcher, kept in the session and re-checked on every request). Owners and admins of an
organisation see all of it; members see their own keys and usage, charged to the organisation.
Objects outside the scope are 404, never 403, so ids reveal nothing.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

from flask import abort, flash, g, redirect, session, url_for
from flask_login import current_user, login_required
from sqlalchemy import and_, select

from controlplane.extensions import db
from controlplane.models import Account, ApiKey, KeyStatus, LedgerEntry, MemberRole, Membership, RequestLog, UsageRollup, User
from controlplane.runtime import runtime
from controlplane.services.base import Actor

PERSONAL = "personal"
ACCOUNT_KEY = "account_id"  # session key of the chosen organisation account


@dataclass(frozen=True)
class Scope:
    user: User
    account: Account
    role: str  # personal | owner | admin | member
    membership: Membership | None = None

    @property
    def is_org(self) -> bool:
        return self.membership is not None

    @property
    def manages(self) -> bool:
        """Sees and changes the whole account: its owner (personal), or an org's owner/admin."""
        return self.role in (PERSONAL, MemberRole.OWNER.value, MemberRole.ADMIN.value)

    @property
    def allowance(self) -> int | None:
        return self.membership.monthly_allowance if self.membership else None

    def keys_clause(self, include_deleted: bool = False):
        clause = ApiKey.account_id == self.account.id
        if not include_deleted:  # deleted keys stay visible in usage history only
            clause = and_(clause, ApiKey.status != KeyStatus.DELETED.value)
        return clause if self.manages else and_(clause, ApiKey.user_id == self.user.id)

    def logs_clause(self):
        clause = RequestLog.account_id == self.account.id
        return clause if self.manages else and_(clause, RequestLog.user_id == self.user.id)

    def rollups_clause(self):
        clause = UsageRollup.account_id == self.account.id
        return clause if self.manages else and_(clause, UsageRollup.user_id == self.user.id)


def _load_scope() -> Scope:
    user = current_user._get_current_object()
    account_id = session.get(ACCOUNT_KEY)
    if account_id is not None:
        membership = db.session.scalar(select(Membership).where(Membership.account_id == account_id, Membership.user_id == user.id))
        if membership is not None:
            return Scope(user, membership.account, membership.role, membership)
        session.pop(ACCOUNT_KEY, None)  # removed from the organisation meanwhile
    return Scope(user, user.account, PERSONAL)


def current_scope() -> Scope:
    if "console_scope" not in g:
        g.console_scope = _load_scope()
    return g.console_scope


def actor() -> Actor:
    from flask import request

    return Actor(name=current_user.email, id=current_user.id, ip=request.remote_addr)


def console_view(view):
    """Signed-in customers only; operators have their own console."""

    @functools.wraps(view)
    @login_required
    def wrapped(*args, **kwargs):
        if current_user.is_operator:
            flash("That page is part of the user console; operators work in the operator console.")
            return redirect(url_for("admin.home"))
        return view(*args, **kwargs)

    return wrapped


def managers_only() -> Scope:
    """The scope, or 403 for organisation members (pages about the whole organisation's money)."""
    scope = current_scope()
    if not scope.manages:
        abort(403)
    return scope


def key_or_404(key_id: int, include_deleted: bool = False) -> ApiKey:
    key = db.session.scalar(select(ApiKey).where(ApiKey.id == key_id, current_scope().keys_clause(include_deleted)))
    return key if key is not None else abort(404)


def entry_or_404(entry_id: int) -> LedgerEntry:
    scope = current_scope()
    entry = db.session.scalar(select(LedgerEntry).where(LedgerEntry.id == entry_id, LedgerEntry.account_id == scope.account.id))
    if entry is None or not scope.manages:
        abort(404)
    return entry


def log_or_404(request_id: str) -> RequestLog:
    row = db.session.scalar(select(RequestLog).where(RequestLog.request_id == request_id, current_scope().logs_clause()))
    return row if row is not None else abort(404)


def live_balance(account_id: int) -> tuple[int, int]:
    return runtime().quota.account(account_id)


def template_helpers() -> dict:
    def console_scope():
        return current_scope() if current_user.is_authenticated and not current_user.is_operator else None

    def console_balance():
        scope = console_scope()
        return live_balance(scope.account.id)[0] if scope is not None else None

    def console_accounts():
        from controlplane.services import organisations

        return organisations.memberships_of(current_user) if current_user.is_authenticated else []

    def console_ban():
        """The signed-in customer's active ban, so the console says why their keys are refused."""
        if not current_user.is_authenticated or current_user.is_operator:
            return None
        from controlplane.services import bans

        found = bans.active_for("user", str(current_user.id))
        scope = console_scope()
        if not found and scope is not None and scope.is_org:  # an organisation's ban stops every key charged to it
            found = bans.active_for("org", str(scope.account.id))
        return found[0] if found else None

    return {"console_scope": console_scope, "console_balance": console_balance, "console_accounts": console_accounts,
            "console_ban": console_ban}
