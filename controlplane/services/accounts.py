"""A person's own account: signing up (open, invite-only or closed, as the operator set it),
changing their password or email. Nothing here can change a role, group, balance or status."""
from __future__ import annotations

from enum import Enum

from sqlalchemy import select
from werkzeug.security import check_password_hash

from controlplane import validation
from controlplane.extensions import db
from controlplane.models import Invitation, User
from controlplane.services import organisations, sessions, terms
from controlplane.services.base import Actor, ServiceError, audit, commit
from controlplane.services.users import create_user, hash_password


class SignupMode(str, Enum):
    OPEN = "open"
    INVITE = "invite"
    CLOSED = "closed"


def sign_up(email: str, password: str, mode: SignupMode, invitation_token: str | None = None, ip: str | None = None) -> User:
    """Create a user account; with an invitation, join its organisation too."""
    if mode == SignupMode.CLOSED:
        raise ServiceError("Sign-up is closed. Ask the operator for an account.", status=403)
    invitation: Invitation | None = organisations.open_invitation(invitation_token) if invitation_token else None
    if mode == SignupMode.INVITE and invitation is None:
        raise ServiceError("Sign-up is by invitation only. Use the link in your invitation.", status=403)
    email = validation.email(email)
    if invitation is not None and invitation.email and invitation.email != email:
        raise ServiceError("This invitation is for another email address.", "email")
    user = create_user(Actor(name=f"signup:{email}", ip=ip), email, validation.password(password))
    terms.accept_current(user, ip)  # the page said which version signing up accepts
    if invitation is not None and invitation.account_id is not None:
        organisations.accept(Actor(name=user.email, id=user.id, ip=ip), user, invitation)
    elif invitation is not None:
        organisations.mark_accepted(invitation, user)
    return user


def _check_password(user: User, password: str, field: str) -> None:
    if not user.password_hash or not check_password_hash(user.password_hash, password or ""):
        raise ServiceError("That is not your current password.", field)


def change_password(actor: Actor, user: User, current: str, new: str) -> None:
    """Set a new password and end every other session (this one continues)."""
    _check_password(user, current, "current_password")
    user.password_hash = hash_password(validation.password(new, "new_password"))
    audit(actor, "user.password", "user", user.id)
    sessions.revoke_all(actor, user, keep_current=True)


def reauthenticate(actor: Actor, user: User, password: str, code: str | None) -> None:
    """Prove it is the person before something that cannot be undone: the password, and a current
    two-factor code (or a recovery code) when two-factor sign-in is on."""
    from controlplane.services import two_factor

    _check_password(user, password, "password")
    if user.two_factor_enabled and not two_factor.verify(actor, user, code or "").ok:
        raise ServiceError("That code does not match: enter the six digits your authenticator app shows now.", "code")


def change_email(actor: Actor, user: User, new_email: str, password: str) -> None:
    _check_password(user, password, "password")
    email = validation.email(new_email)
    if email == user.email:
        return
    if db.session.scalar(select(User.id).where(User.email == email)) is not None:
        raise ServiceError("Another account uses that email address.", "email", status=409)
    before = {"email": user.email}
    user.email = email
    audit(actor, "user.email", "user", user.id, before=before, after={"email": email})
    commit(publish=False)
