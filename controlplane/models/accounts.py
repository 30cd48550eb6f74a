"""Accounts (who pays), users (who signs in) and groups (what they may use, at what multiplier)."""
from __future__ import annotations

from datetime import datetime

from flask_login import UserMixin
from sqlalchemy import BigInteger, Boolean, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from controlplane.extensions import db
from controlplane.models.types import JsonType, Money, StrEnum, UTCDateTime, utcnow


class Role(StrEnum):
    ADMIN = "admin"
    OPERATOR = "operator"
    SUPPORT = "support"
    USER = "user"


OPERATOR_ROLES = (Role.ADMIN, Role.OPERATOR, Role.SUPPORT)


class UserStatus(StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"
    CLOSED = "closed"  # the person closed their account (or an operator did): anonymised, never active again


class AccountKind(StrEnum):
    PERSONAL = "personal"
    ORGANISATION = "organisation"


class Account(db.Model):
    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), default=AccountKind.PERSONAL.value)
    name: Mapped[str] = mapped_column(String(200))
    # A cache of Σ ledger entries, updated in the same transaction as each entry; reconcile proves it.
    balance: Mapped[int] = mapped_column(Money, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Closed accounts keep their ledger and request metadata; nothing is charged to them again.
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Group(db.Model):
    __tablename__ = "groups"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    multiplier_bp: Mapped[int] = mapped_column(Integer, default=10_000)
    model_patterns: Mapped[list] = mapped_column(JsonType, default=list)  # fnmatch globs; [] = all
    rpm: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tpm: Mapped[int | None] = mapped_column(Integer, nullable=True)
    concurrency: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # The capacity queue (relay/capacity_queue.py): how long a request waits for a full model's
    # channels before its 429 (0: at once), and which groups are served first while requests wait.
    queue_seconds: Mapped[int] = mapped_column(Integer, default=10, server_default="10")
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    on_status_page: Mapped[bool] = mapped_column(Boolean, default=False)  # its own section on the public status page
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class User(UserMixin, db.Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(255), nullable=True)
    role: Mapped[str] = mapped_column(String(16), default=Role.USER.value)
    status: Mapped[str] = mapped_column(String(16), default=UserStatus.ACTIVE.value)
    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id"))
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    # Bumped to invalidate every session of this user ("log out everywhere", password change).
    session_version: Mapped[int] = mapped_column(Integer, default=1)
    # rate limits of this user across all their keys (None: unlimited)
    rpm: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tpm: Mapped[int | None] = mapped_column(Integer, nullable=True)
    concurrency: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Two-factor sign-in (services/two_factor.py): the TOTP secret, encrypted like upstream keys; set
    # but not enabled while the person is enrolling. The last accepted time step stops a replay.
    totp_secret: Mapped[str | None] = mapped_column(String(255), nullable=True)
    totp_enabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger, nullable=True)

    group: Mapped[Group] = relationship(lazy="joined")
    account: Mapped[Account] = relationship(lazy="joined")

    def get_id(self) -> str:
        return f"{self.id}:{self.session_version}"

    @property
    def is_operator(self) -> bool:
        return self.role in {r.value for r in OPERATOR_ROLES}

    @property
    def two_factor_enabled(self) -> bool:
        return self.totp_enabled_at is not None

    @property
    def is_active(self) -> bool:
        return self.status == UserStatus.ACTIVE.value
