"""Users, operators and their accounts."""
from __future__ import annotations

from sqlalchemy import select
from werkzeug.security import generate_password_hash

from controlplane import validation
from controlplane.extensions import db
from controlplane.models import Account, Group, Role, User, UserStatus
from controlplane.services.base import Actor, NotFound, ServiceError, audit, commit
from controlplane.services.groups import default_group, group_by_name


def hash_password(plain: str) -> str:
    return generate_password_hash(plain, method="scrypt")


def user_by_email(email: str) -> User:
    user = db.session.scalar(select(User).where(User.email == (email or "").strip().lower()))
    if user is None:
        raise NotFound(f"user {email}")
    return user


def _describe(user: User) -> dict:
    return {"email": user.email, "role": user.role, "status": user.status, "group_id": user.group_id}


def create_user(actor: Actor, email: str, password: str | None = None, group: str | None = None, role: Role = Role.USER) -> User:
    email = validation.email(email)
    if password is not None:
        validation.password(password)
    if db.session.scalar(select(User.id).where(User.email == email)) is not None:
        raise ServiceError(f"A user with the email {email} already exists.", "email", status=409)
    target_group: Group = group_by_name(group) if group else default_group()
    account = Account(name=email)
    db.session.add(account)
    db.session.flush()
    user = User(
        email=email,
        password_hash=hash_password(password) if password else None,
        role=str(role),
        status=UserStatus.ACTIVE.value,
        group_id=target_group.id,
        account_id=account.id,
    )
    db.session.add(user)
    db.session.flush()
    audit(actor, "user.create", "user", user.id, after=_describe(user))
    commit()
    from controlplane.runtime import runtime

    runtime().quota.seed_account(account.id, 0)
    return user


def create_operator(actor: Actor, email: str, password: str, role: Role = Role.OPERATOR) -> User:
    if role not in (Role.ADMIN, Role.OPERATOR, Role.SUPPORT):
        raise ServiceError("An operator's role is admin, operator or support.", "role")
    return create_user(actor, email, password, role=role)


def set_status(actor: Actor, user: User, status: UserStatus) -> User:
    if user.status == UserStatus.CLOSED.value:
        raise ServiceError("This account is closed: its details are gone and it cannot be enabled again.", "status", status=409)
    before = _describe(user)
    user.status = str(status)
    if status != UserStatus.ACTIVE:
        user.session_version += 1
    audit(actor, "user.status", "user", user.id, before=before, after=_describe(user))
    commit()
    return user


def operators_exist() -> bool:
    return db.session.scalar(select(User.id).where(User.role.in_([r.value for r in (Role.ADMIN, Role.OPERATOR)])).limit(1)) is not None


def user_by_id(user_id: int) -> User:
    user = db.session.get(User, user_id)
    if user is None:
        raise NotFound(f"user {user_id}")
    return user


def set_group(actor: Actor, user: User, group: Group) -> User:
    before = _describe(user)
    user.group_id = group.id
    user.group = group
    audit(actor, "user.group", "user", user.id, before=before, after=_describe(user))
    commit()
    return user


def _admins_left(excluding: int) -> int:
    from sqlalchemy import func

    return db.session.scalar(select(func.count()).select_from(User).where(
        User.role == Role.ADMIN.value, User.status == UserStatus.ACTIVE.value, User.id != excluding))


def set_role(actor: Actor, user: User, role: str) -> User:
    """Change someone's role (admins only, checked by the caller). Never leaves no active admin."""
    if role not in {r.value for r in Role}:
        raise ServiceError("Choose a role: admin, operator, support or user.", "role")
    if user.role == Role.ADMIN.value and role != Role.ADMIN.value and _admins_left(user.id) == 0:
        raise ServiceError("This is the last admin: make someone else admin first.", "role", status=409)
    if role != Role.USER.value and not user.password_hash:
        raise ServiceError("Operators sign in with a password: this user has none.", "role")
    before = _describe(user)
    user.role = role
    user.session_version += 1  # a new role starts with a new session
    audit(actor, "user.role", "user", user.id, before=before, after=_describe(user))
    commit()
    return user


def set_active(actor: Actor, user: User, active: bool) -> User:
    """Enable or disable signing in (and, for customers, their keys on the relay)."""
    if not active and user.role == Role.ADMIN.value and _admins_left(user.id) == 0:
        raise ServiceError("This is the last admin: make someone else admin first.", "status", status=409)
    if not active and actor.id == user.id:
        raise ServiceError("You cannot disable yourself.", "status", status=409)
    return set_status(actor, user, UserStatus.ACTIVE if active else UserStatus.DISABLED)
