"""User groups: price multiplier, model access, rate limits, the capacity queue, and the default for new users."""
from __future__ import annotations

import re

from sqlalchemy import func, select

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
        "queue_seconds": group.queue_seconds,
        "priority": group.priority,
        "is_default": group.is_default,
    }


def _limit(value, field: str) -> int | None:
    return None if value in (None, "") else validation.non_negative_int(value, field, minimum=1)


def _limits(rpm, tpm, concurrency) -> dict:
    return {"rpm": _limit(rpm, "rpm"), "tpm": _limit(tpm, "tpm"), "concurrency": _limit(concurrency, "concurrency")}


MAX_QUEUE_SECONDS = 300
MAX_PRIORITY = 1000


def _queue(queue_seconds, priority, current: Group | None = None) -> dict:
    """The capacity queue's settings; a value left out keeps the group's (or the default)."""
    values = {"queue_seconds": current.queue_seconds if current else 10, "priority": current.priority if current else 0}
    if queue_seconds not in (None, ""):
        values["queue_seconds"] = validation.non_negative_int(queue_seconds, "queue_seconds")
        if values["queue_seconds"] > MAX_QUEUE_SECONDS:
            raise ServiceError(f"A request waits at most {MAX_QUEUE_SECONDS} seconds in the capacity queue.", "queue_seconds")
    if priority not in (None, ""):
        values["priority"] = validation.non_negative_int(priority, "priority")
        if values["priority"] > MAX_PRIORITY:
            raise ServiceError(f"A group's priority is 0 – {MAX_PRIORITY}.", "priority")
    return values


def _patterns(model_patterns) -> list[str]:
    patterns = list(dict.fromkeys(p.strip() for p in (model_patterns or []) if p and p.strip()))
    if any(len(p) > 200 for p in patterns):
        raise ServiceError("A model pattern is at most 200 characters.", "model_patterns")
    return patterns


def _make_default(group: Group) -> None:
    for other in db.session.scalars(select(Group).where(Group.is_default.is_(True))):
        other.is_default = other.id == group.id
    group.is_default = True


def create_group(actor: Actor, name: str, multiplier: str = "1.0", model_patterns: list[str] | None = None, is_default: bool = False,
                 rpm=None, tpm=None, concurrency=None, queue_seconds=None, priority=None) -> Group:
    name = (name or "").strip()
    if not NAME.match(name):
        raise ServiceError("A group name is 1–64 letters, digits, '.', '_' or '-'.", "name")
    if db.session.scalar(select(Group.id).where(Group.name == name)) is not None:
        raise ServiceError(f"A group named {name} already exists.", "name", status=409)
    bp = validation.multiplier_bp(multiplier)
    patterns = _patterns(model_patterns)
    if is_default:
        for other in db.session.scalars(select(Group).where(Group.is_default.is_(True))):
            other.is_default = False
    group = Group(name=name, multiplier_bp=bp, model_patterns=patterns, is_default=is_default, **_limits(rpm, tpm, concurrency),
                  **_queue(queue_seconds, priority))
    db.session.add(group)
    db.session.flush()
    audit(actor, "group.create", "group", group.id, after=describe(group))
    commit()
    return group


def group_by_id(group_id: int) -> Group:
    group = db.session.get(Group, group_id)
    if group is None:
        raise NotFound(f"group {group_id}")
    return group


def update_group(actor: Actor, group: Group, *, multiplier: str, model_patterns: list[str], rpm=None, tpm=None, concurrency=None,
                 is_default: bool | None = None, queue_seconds=None, priority=None) -> Group:
    """Change what a group pays and may use. The name stays: keys and channels refer to it."""
    before = describe(group)
    bp = validation.multiplier_bp(multiplier)
    patterns = _patterns(model_patterns)
    limits = _limits(rpm, tpm, concurrency) | _queue(queue_seconds, priority, group)
    group.multiplier_bp, group.model_patterns = bp, patterns
    for field, value in limits.items():
        setattr(group, field, value)
    if is_default:
        _make_default(group)
    elif is_default is False and group.is_default:
        raise ServiceError("Make another group the default instead; new users always need one.", "is_default")
    audit(actor, "group.update", "group", group.id, before=before, after=describe(group))
    commit()
    return group


def delete_group(actor: Actor, group: Group) -> None:
    from controlplane.models import User

    members = db.session.scalar(select(func.count()).select_from(User).where(User.group_id == group.id))
    if members:
        raise ServiceError(f"{members} user(s) are in {group.name}: move them to another group first.", status=409)
    if group.is_default:
        raise ServiceError("The default group cannot be deleted: make another group the default first.", status=409)
    audit(actor, "group.delete", "group", group.id, before=describe(group))
    db.session.delete(group)
    commit()


def member_counts() -> dict[int, int]:
    from controlplane.models import User

    return dict(db.session.execute(select(User.group_id, func.count()).group_by(User.group_id)).all())
