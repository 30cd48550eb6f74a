"""User groups: price multiplier, model access, rate limits, and the default for new users."""
from __future__ import annotations

import re

from sqlalchemy import select

from controlplane import validation
from controlplane.extensions import db
from controlplane.models import Group
from controlplane.services.base import Actor, NotFound, ServiceError, audit, commit

NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
DEFAULT_GROUP = "default"


def group_by_name(name: str) -> Group:
    group = db.session.scalar(select(Group).where(Group.name == name))
    if group is None:
        raise NotFound(f"group {name}")
    return group


def default_group() -> Group:
    """The group new users join; created on first use so a fresh install needs no setup."""
    group = db.session.scalar(select(Group).where(Group.is_default.is_(True)))
    if group is None:
        group = db.session.scalar(select(Group).where(Group.name == DEFAULT_GROUP))
    if group is None:
        group = Group(name=DEFAULT_GROUP, multiplier_bp=10_000, model_patterns=[], is_default=True)
        db.session.add(group)
        db.session.flush()
    return group


def describe(group: Group) -> dict:
    return {
        "id": group.id,
        "name": group.name,
        "multiplier_bp": group.multiplier_bp,
        "model_patterns": list(group.model_patterns or []),
        "rpm": group.rpm,
        "tpm": group.tpm,
        "concurrency": group.concurrency,
        "is_default": group.is_default,
    }


def create_group(actor: Actor, name: str, multiplier: str = "1.0", model_patterns: list[str] | None = None, is_default: bool = False) -> Group:
    name = (name or "").strip()
    if not NAME.match(name):
        raise ServiceError("A group name is 1–64 letters, digits, '.', '_' or '-'.", "name")
    if db.session.scalar(select(Group.id).where(Group.name == name)) is not None:
        raise ServiceError(f"A group named {name} already exists.", "name", status=409)
    bp = validation.multiplier_bp(multiplier)
    patterns = [p.strip() for p in (model_patterns or []) if p.strip()]
    if is_default:
        for other in db.session.scalars(select(Group).where(Group.is_default.is_(True))):
            other.is_default = False
    group = Group(name=name, multiplier_bp=bp, model_patterns=patterns, is_default=is_default)
    db.session.add(group)
    db.session.flush()
    audit(actor, "group.create", "group", group.id, after=describe(group))
    commit()
    return group
