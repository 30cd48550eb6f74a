"""Two-factor sign-in for a person's own account: enrolling a TOTP authenticator, the codes that
prove it at sign-in (or a single-use recovery code), and turning it off with password and code.

The secret is encrypted with the same key as upstream credentials. A code's time step is claimed
with one conditional UPDATE, so a code that has been accepted once is refused after, even by a
request racing the first; a recovery code is spent the same way.
"""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, func, or_, select, update
from werkzeug.security import check_password_hash

from controlplane import totp
from controlplane.extensions import db
from controlplane.models import RecoveryCode, Role, User, utcnow
from controlplane.runtime import runtime
from controlplane.services.base import Actor, ServiceError, audit, commit


@dataclass(frozen=True)
class Enrolment:
    secret: str  # base32, for typing into an authenticator
    uri: str  # otpauth://, for the QR code


@dataclass(frozen=True)
class Proof:
    """How a code checked out: by the authenticator, or by spending a recovery code."""

    ok: bool
    recovery: bool = False
    recovery_left: int = 0


def required(user: User, require_2fa: bool) -> bool:
    """Whether this person must have two-factor sign-in before doing anything else."""
    return require_2fa and user.role == Role.ADMIN.value and not user.two_factor_enabled


def start(actor: Actor, user: User) -> Enrolment:
    """A new secret, kept (encrypted) but not in force until a code from it is confirmed."""
    if user.two_factor_enabled:
        raise ServiceError("Two-factor sign-in is already on. Turn it off first to move to another authenticator.")
    secret = totp.new_secret()
    user.totp_secret = runtime().cipher.encrypt(secret)
    user.totp_last_step = None
    commit(publish=False)
    return Enrolment(secret=secret, uri=totp.provisioning_uri(secret, user.email))


def pending(user: User) -> Enrolment | None:
    """The enrolment in progress, to show its secret again (e.g. after a mistyped code)."""
    if user.two_factor_enabled or not user.totp_secret:
        return None
    secret = runtime().cipher.decrypt(user.totp_secret)
    return Enrolment(secret=secret, uri=totp.provisioning_uri(secret, user.email))


def _claim_step(user: User, code: str) -> bool:
    """Accept `code` if it is the authenticator's for a step not used before; claims that step."""
    if not user.totp_secret:
        return False
    step = totp.matching_step(runtime().cipher.decrypt(user.totp_secret), code)
    if step is None:
        return False
    claimed = db.session.execute(update(User).where(
        User.id == user.id, or_(User.totp_last_step.is_(None), User.totp_last_step < step)).values(totp_last_step=step)).rowcount
    return claimed == 1


def _replace_recovery_codes(user: User) -> list[str]:
    db.session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    codes = totp.new_recovery_codes()
    db.session.add_all([RecoveryCode(user_id=user.id, code_hash=totp.recovery_hash(c)) for c in codes])
    return codes


def confirm(actor: Actor, user: User, code: str) -> list[str]:
    """Turn two-factor sign-in on with a code from the new authenticator; returns the recovery codes,
    which are shown once and never again."""
    if user.two_factor_enabled:
        raise ServiceError("Two-factor sign-in is already on.")
    if not user.totp_secret:
        raise ServiceError("Start the setup first.")
    if not _claim_step(user, code or ""):
        db.session.commit()
        raise ServiceError("That code does not match. Check the time on your phone and enter the current code.", "code")
    user.totp_enabled_at = utcnow()
    codes = _replace_recovery_codes(user)
    audit(actor, "two_factor.enable", "user", user.id)
    commit(publish=False)
    return codes


def recovery_left(user: User) -> int:
    return db.session.scalar(select(func.count()).select_from(RecoveryCode).where(
        RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None))) or 0


def _spend_recovery_code(actor: Actor, user: User, code: str) -> bool:
    spent = db.session.execute(update(RecoveryCode).where(
        RecoveryCode.user_id == user.id, RecoveryCode.code_hash == totp.recovery_hash(code), RecoveryCode.used_at.is_(None))
        .values(used_at=utcnow())).rowcount
    if spent != 1:
        return False
    audit(actor, "two_factor.recovery_used", "user", user.id, after={"left": recovery_left(user)})
    return True


def verify(actor: Actor, user: User, code: str) -> Proof:
    """Check a sign-in code: six digits from the authenticator, or one recovery code (spent)."""
    code = (code or "")[: totp.MAX_CODE_LENGTH]
    if not user.two_factor_enabled or not code.strip():
        return Proof(ok=False)
    if totp.looks_like_totp(code):
        ok = _claim_step(user, code)
        db.session.commit()
        return Proof(ok=ok)
    if _spend_recovery_code(actor, user, code):
        commit(publish=False)
        return Proof(ok=True, recovery=True, recovery_left=recovery_left(user))
    return Proof(ok=False)


def disable(actor: Actor, user: User, password: str, code: str) -> None:
    """Turn two-factor sign-in off: the password and a current code (or a recovery code) both."""
    if not user.two_factor_enabled:
        raise ServiceError("Two-factor sign-in is not on.")
    if not user.password_hash or not check_password_hash(user.password_hash, password or ""):
        raise ServiceError("That is not your current password.", "password")
    if not verify(actor, user, code).ok:
        raise ServiceError("That code does not match.", "code")
    user.totp_secret = None
    user.totp_enabled_at = None
    user.totp_last_step = None
    db.session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    audit(actor, "two_factor.disable", "user", user.id)
    commit(publish=False)


def reset(actor: Actor, user: User) -> None:
    """Turn two-factor sign-in off for someone who lost both phone and recovery codes (the CLI's
    `user reset-2fa`: whoever runs it has the server, so no code is asked for)."""
    if not user.totp_secret and not user.two_factor_enabled:
        return
    user.totp_secret = None
    user.totp_enabled_at = None
    user.totp_last_step = None
    db.session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    audit(actor, "two_factor.reset", "user", user.id)
    commit(publish=False)
