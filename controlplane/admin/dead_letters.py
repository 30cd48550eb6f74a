"""Operator console: usage events ingestion could not write (the dead letters) — each with the
database's error and what the event says, a retry that puts it back on the usage stream, and a
confirmed discard that gives its charge back to the live balance."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from sqlalchemy import select

from controlplane import dead_letters
from controlplane.admin import OPERATORS, WRITERS
from controlplane.admin.common import actor, confirm, confirmed, found
from controlplane.auth import require_roles
from controlplane.dead_letters import DeadLetter
from controlplane.extensions import db
from controlplane.models import Account, User
from controlplane.runtime import runtime
from controlplane.services import NotFound
from controlplane.services import dead_letters as dead_letter_service
from relay.pricing import usd_text
from relay.usage import UsageEvent

bp = Blueprint("dead_letters", __name__, url_prefix="/dead-letters")


@dataclass(frozen=True)
class Row:
    letter: DeadLetter
    event: UsageEvent | None
    at: datetime  # when it was dead-lettered
    started: datetime | None  # when the request started
    email: str | None  # the account owner's


def _when(ts) -> datetime | None:
    try:
        return datetime.fromtimestamp(float(ts), tz=UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def _rows(letters: list[DeadLetter]) -> list[Row]:
    events = [letter.event for letter in letters]
    accounts = {e.account_id for e in events if e is not None and type(e.account_id) is int}
    emails = {}
    if accounts:  # a personal account by its owner's email, an organisation's by its name
        emails = dict(db.session.execute(select(Account.id, Account.name).where(Account.id.in_(accounts))).all())
        emails.update(db.session.execute(select(User.account_id, User.email).where(User.account_id.in_(accounts))).all())
    return [Row(letter, e, _when(letter.at), _when(e.started_at) if e else None, emails.get(e.account_id) if e else None)
            for letter, e in zip(letters, events, strict=True)]


@bp.get("/")
@require_roles(*OPERATORS)
def index():
    before = request.args.get("before")
    letters, next_before = dead_letters.newest(runtime().redis, before)
    return render_template("admin/dead_letters/list.html", rows=_rows(letters), next_before=next_before, before=before,
                           total=dead_letters.count(runtime().redis))


@bp.get("/<entry_id>")
@require_roles(*OPERATORS)
def detail(entry_id: str):
    row = _rows([found(dead_letter_service.letter, entry_id)])[0]
    return render_template("admin/dead_letters/detail.html", row=row)


@bp.post("/<entry_id>/retry")
@require_roles(*WRITERS)
def retry(entry_id: str):
    try:
        letter = dead_letter_service.retry(actor(), entry_id)
    except NotFound:
        abort(404)
    flash(f"Usage event {_name(letter)} is back on the usage stream: it is written within seconds, or comes back here with the new error.")
    return redirect(url_for(".index"))


@bp.post("/<entry_id>/discard")
@require_roles(*WRITERS)
def discard(entry_id: str):
    row = _rows([found(dead_letter_service.letter, entry_id)])[0]
    if not confirmed():
        cost = row.letter.live_charge
        whom = row.email or (f"account {row.event.account_id}" if row.event and row.event.account_id else "nobody")
        effect = (f"Its {usd_text(cost)} charge is never written and goes back to the live balance of {whom}."
                  if cost > 0 else "It took nothing from a live balance.")
        return confirm(f"Discard usage event {_name(row.letter)} for good? {effect} This cannot be undone.", "Discard",
                       url_for(".detail", entry_id=entry_id), details=[("Error", row.letter.error)])
    try:
        dead_letter_service.discard(actor(), entry_id)
    except NotFound:
        abort(404)
    flash(f"Usage event {_name(row.letter)} discarded.")
    return redirect(url_for(".index"))


def _name(letter: DeadLetter) -> str:
    event = letter.event
    return event.request_id if event and isinstance(event.request_id, str) else letter.id
