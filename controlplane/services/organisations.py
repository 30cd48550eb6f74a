"""Organisations: an account of kind `organisation` with members. Owners and admins invite (by link
or email), set roles and monthly allowances, and remove members; members' keys charge the
organisation. Every write checks the acting member's role here, not only in the views."""
from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from sqlalchemy import func, select, update

from controlplane import validation
from controlplane.extensions import db
from controlplane.models import Account, AccountKind, ApiKey, Invitation, KeyDecider, KeyStatus, MemberRole, Membership, User, utcnow
from controlplane.services.base import Actor, NotFound, ServiceError, audit, commit

INVITATION_TTL = timedelta(days=7)
MANAGERS = (MemberRole.OWNER.value, MemberRole.ADMIN.value)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def memberships_of(user: User) -> list[Membership]:
    return list(db.session.scalars(select(Membership).join(Account, Account.id == Membership.account_id)
                                   .where(Membership.user_id == user.id).order_by(Account.name)))


def membership(account_id: int, user_id: int) -> Membership | None:
    return db.session.scalar(select(Membership).where(Membership.account_id == account_id, Membership.user_id == user_id))


def members(account_id: int) -> list[Membership]:
    return list(db.session.scalars(select(Membership).where(Membership.account_id == account_id).order_by(Membership.id)))


def _require(by: Membership, *roles: str) -> None:
    if by.role not in roles:
        raise ServiceError("Your role in this organisation does not allow this.", status=403)


def _owners(account_id: int) -> int:
    return db.session.scalar(select(func.count()).select_from(Membership).where(
        Membership.account_id == account_id, Membership.role == MemberRole.OWNER.value))


def create_organisation(actor: Actor, user: User, name: str) -> Account:
    name = (name or "").strip()
    if not 1 <= len(name) <= 100:
        raise ServiceError("Name the organisation (at most 100 characters).", "name")
    account = Account(kind=AccountKind.ORGANISATION.value, name=name)
    db.session.add(account)
    db.session.flush()
    db.session.add(Membership(account_id=account.id, user_id=user.id, role=MemberRole.OWNER.value))
    audit(actor, "org.create", "account", account.id, after={"name": name, "owner": user.email})
    commit(publish=False)
    from controlplane.runtime import runtime

    runtime().quota.seed_account(account.id, 0)
    return account


def invite(actor: Actor, by: Membership, email: str | None, role: str) -> tuple[Invitation, str]:
    """A single-use invitation; returns it and the token for its link (never stored in clear)."""
    _require(by, *MANAGERS)
    if role not in {r.value for r in MemberRole}:
        raise ServiceError("Choose owner, admin or member.", "role")
    if role == MemberRole.OWNER.value:
        _require(by, MemberRole.OWNER.value)
    email = validation.email(email) if email else None
    token = secrets.token_urlsafe(24)
    row = Invitation(account_id=by.account_id, email=email, role=role, token_hash=token_hash(token),
                     created_by=by.user_id, expires_at=utcnow() + INVITATION_TTL)
    db.session.add(row)
    db.session.flush()
    audit(actor, "org.invite", "account", by.account_id, after={"invitation_id": row.id, "email": email, "role": role})
    commit(publish=False)
    return row, token


def platform_invite(actor: Actor, email: str | None = None) -> tuple[Invitation, str]:
    """An operator's invitation to sign up (while sign-up is invite-only), joining no organisation."""
    email = validation.email(email) if email else None
    token = secrets.token_urlsafe(24)
    row = Invitation(account_id=None, email=email, role=MemberRole.MEMBER.value, token_hash=token_hash(token),
                     created_by=actor.id, expires_at=utcnow() + INVITATION_TTL)
    db.session.add(row)
    db.session.flush()
    audit(actor, "signup.invite", "invitation", row.id, after={"email": email})
    commit(publish=False)
    return row, token


def open_invitation(token: str | None) -> Invitation:
    row = db.session.scalar(select(Invitation).where(Invitation.token_hash == token_hash(token or "")))
    if row is None or not row.open_at(utcnow()):
        raise NotFound("invitation")
    return row


def invitations(account_id: int) -> list[Invitation]:
    now = utcnow()
    rows = db.session.scalars(select(Invitation).where(Invitation.account_id == account_id).order_by(Invitation.id.desc()))
    return [r for r in rows if r.open_at(now)]


def mark_accepted(invitation: Invitation, user: User) -> None:
    """Claim a single-use invitation: one UPDATE wins even when two people click at once."""
    claimed = db.session.execute(update(Invitation).where(Invitation.id == invitation.id, Invitation.accepted_at.is_(None),
                                                          Invitation.revoked_at.is_(None))
                                 .values(accepted_at=utcnow(), accepted_by=user.id)).rowcount
    if claimed != 1:
        db.session.rollback()
        raise ServiceError("This invitation has already been used.", status=409)


def accept(actor: Actor, user: User, invitation: Invitation) -> Membership:
    if invitation.email and invitation.email != user.email:
        raise ServiceError(f"This invitation is for {invitation.email}; sign in with that address.", status=403)
    if membership(invitation.account_id, user.id) is not None:
        raise ServiceError("You are already a member of this organisation.", status=409)
    mark_accepted(invitation, user)
    row = Membership(account_id=invitation.account_id, user_id=user.id, role=invitation.role)
    db.session.add(row)
    audit(actor, "org.join", "account", invitation.account_id, after={"user": user.email, "role": invitation.role})
    commit()
    return row


def revoke_invitation(actor: Actor, by: Membership, invitation_id: int) -> None:
    _require(by, *MANAGERS)
    row = db.session.scalar(select(Invitation).where(Invitation.id == invitation_id, Invitation.account_id == by.account_id))
    if row is None or row.accepted_at is not None:
        raise NotFound("invitation")
    row.revoked_at = utcnow()
    audit(actor, "org.invitation_revoke", "account", by.account_id, after={"invitation_id": row.id})
    commit(publish=False)


def _target(by: Membership, member_id: int) -> Membership:
    row = db.session.scalar(select(Membership).where(Membership.id == member_id, Membership.account_id == by.account_id))
    if row is None:
        raise NotFound("member")
    return row


def set_role(actor: Actor, by: Membership, member_id: int, role: str) -> Membership:
    """Only owners change roles; an organisation always keeps one owner."""
    _require(by, MemberRole.OWNER.value)
    row = _target(by, member_id)
    if role not in {r.value for r in MemberRole}:
        raise ServiceError("Choose owner, admin or member.", "role")
    if row.role == MemberRole.OWNER.value and role != row.role and _owners(by.account_id) == 1:
        raise ServiceError("An organisation needs an owner: make someone else owner first.", "role", status=409)
    before = {"role": row.role}
    row.role = role
    audit(actor, "org.role", "account", by.account_id, before=before, after={"member": row.user.email, "role": role})
    commit(publish=False)
    return row


def set_allowance(actor: Actor, by: Membership, member_id: int, usd: str | None) -> Membership:
    """A member's monthly allowance (empty: none); the relay enforces it within seconds."""
    _require(by, *MANAGERS)
    row = _target(by, member_id)
    before = {"monthly_allowance": row.monthly_allowance}
    row.monthly_allowance = None if usd in (None, "") else validation.usd(usd, "allowance")
    audit(actor, "org.allowance", "account", by.account_id, before=before,
          after={"member": row.user.email, "monthly_allowance": row.monthly_allowance})
    commit()
    return row


def remove_member(actor: Actor, by: Membership, member_id: int) -> None:
    """Managers remove members (only owners remove owners); anyone may leave. Their keys on the
    organisation's account are disabled at once."""
    row = _target(by, member_id)
    if row.id != by.id:
        _require(by, *MANAGERS)
        if row.role == MemberRole.OWNER.value:
            _require(by, MemberRole.OWNER.value)
    if row.role == MemberRole.OWNER.value and _owners(by.account_id) == 1:
        raise ServiceError("The last owner cannot leave: make someone else owner first.", status=409)
    db.session.execute(update(ApiKey).where(ApiKey.account_id == row.account_id, ApiKey.user_id == row.user_id,
                                            ApiKey.status == KeyStatus.ENABLED.value)
                       .values(status=KeyStatus.DISABLED.value, disabled_by=KeyDecider.OWNER.value))
    audit(actor, "org.remove", "account", by.account_id, before={"member": row.user.email, "role": row.role})
    db.session.delete(row)
    commit()


def organisation_by_id(account_id: int) -> Account:
    """An organisation's account (operators' pages and the admin API); a personal account is not one."""
    account = db.session.get(Account, account_id)
    if account is None or account.kind != AccountKind.ORGANISATION.value:
        raise NotFound(f"organisation {account_id}")
    return account


def operator_set_role(actor: Actor, account: Account, member_id: int, role: str) -> Membership:
    """An operator changes a member's role (e.g. hands an organisation to a new owner when its owner
    left); the organisation still keeps an owner."""
    row = db.session.scalar(select(Membership).where(Membership.id == member_id, Membership.account_id == account.id))
    if row is None:
        raise NotFound("member")
    if role not in {r.value for r in MemberRole}:
        raise ServiceError("Choose owner, admin or member.", "role")
    if row.role == MemberRole.OWNER.value and role != row.role and _owners(account.id) == 1:
        raise ServiceError("An organisation needs an owner: make someone else owner first.", "role", status=409)
    before = {"member": row.user.email, "role": row.role}
    row.role = role
    audit(actor, "org.role", "account", account.id, before=before, after={"member": row.user.email, "role": role})
    commit(publish=False)
    return row
