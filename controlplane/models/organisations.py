"""Organisations: an account of kind `organisation`, its members (with a role and an optional
monthly allowance), and invitations to join it (by link or by email).

An invitation with no account is a platform invitation: it lets someone sign up while sign-up is
invite-only, without joining any organisation.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from controlplane.extensions import db
from controlplane.models.types import Money, StrEnum, UTCDateTime, utcnow


class MemberRole(StrEnum):
    OWNER = "owner"  # everything, including other owners and admins
    ADMIN = "admin"  # members, invitations, allowances, the bill; not owners
    MEMBER = "member"  # their own keys and usage, charged to the organisation


class Membership(db.Model):
    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("account_id", "user_id", name="uq_memberships_account_user"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    role: Mapped[str] = mapped_column(String(16), default=MemberRole.MEMBER.value)
    # µ$ this member's keys may spend per calendar month (UTC); None is no limit beyond the balance.
    monthly_allowance: Mapped[int | None] = mapped_column(Money, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    user = relationship("User", lazy="joined")
    account = relationship("Account", lazy="joined")


class Invitation(db.Model):
    __tablename__ = "invitations"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"), index=True, nullable=True)
    email: Mapped[str | None] = mapped_column(String(254), nullable=True)  # None: anyone with the link
    role: Mapped[str] = mapped_column(String(16), default=MemberRole.MEMBER.value)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # the link's secret is never stored
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    accepted_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    account = relationship("Account")

    def open_at(self, now: datetime) -> bool:
        return self.accepted_at is None and self.revoked_at is None and self.expires_at > now
