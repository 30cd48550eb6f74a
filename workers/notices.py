"""Notices the terms promise, run on a schedule: customers who used a model in the last 30 days are
emailed when a change to its price is scheduled, and every customer is emailed when a new version of
the terms is announced (14 days ahead). Each notice is claimed in SQL before it is sent, so a run
sends what earlier runs did not, once; nothing is claimed while SMTP is not configured."""
from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from controlplane import lifecycle_notices
from controlplane.extensions import db
from controlplane.models import Account, PriceNotice, Role, TermsVersion, UsageRollup, User, UserStatus, utcnow
from controlplane.notify import send_email
from controlplane.runtime import runtime
from relay import redis_keys
from workers.context import in_app_context
from workers.locks import Lock
from workers.mail import account_recipients

log = logging.getLogger(__name__)
CHUNK = 1000
TERMS_CHUNK = 200  # people told per claim: a run cut short by its timeout loses at most this many
LOCK_LEASE = 600


def _per_million(micro: int | None) -> str:
    from controlplane.filters import per_million

    return per_million(micro)


def price_notice_text(change: lifecycle_notices.PriceChange, account: Account, public_url: str) -> str:
    before = (f"input {_per_million(change.input_before)}, output {_per_million(change.output_before)}"
              if change.input_before is not None else "no price")
    return "\n".join([
        f"The price of {change.model} changes on {change.effective_from:%Y-%m-%d %H:%M} UTC.",
        f"Now: {before} (USD per 1M tokens).",
        f"From then: input {_per_million(change.input_after)}, output {_per_million(change.output_after)} (USD per 1M tokens).",
        "",
        f"You get this because {account.name} used {change.model} in the last 30 days.",
        f"Current and scheduled prices: {public_url.rstrip('/')}/models",
    ])


def _accounts_using(model: str, since: datetime, after: int) -> list[int]:
    return list(db.session.scalars(select(UsageRollup.account_id).distinct().join(Account, Account.id == UsageRollup.account_id)
                                   .where(UsageRollup.model == model, UsageRollup.bucket >= since, UsageRollup.account_id > after,
                                          Account.closed_at.is_(None))
                                   .order_by(UsageRollup.account_id).limit(CHUNK)))


def _claim_price_notice(price_id: int, model: str, account_id: int) -> PriceNotice | None:
    if db.session.scalar(select(PriceNotice.id).where(PriceNotice.model_price_id == price_id, PriceNotice.account_id == account_id)):
        return None
    row = PriceNotice(model_price_id=price_id, model=model, account_id=account_id)
    try:
        with db.session.begin_nested():
            db.session.add(row)
    except IntegrityError:
        return None
    return row


def _send_price_notices(now: datetime) -> int:
    rt = runtime()
    sent = 0
    for price in lifecycle_notices.scheduled_prices(now):
        change = lifecycle_notices.change_of(price)
        if (change.input_before, change.output_before) == (change.input_after, change.output_after):
            continue  # a reschedule of the same token prices tells nobody anything
        since, after = now - lifecycle_notices.USED_WITHIN, 0
        while accounts := _accounts_using(price.model, since, after):
            after = accounts[-1]
            claimed = [row for account_id in accounts if (row := _claim_price_notice(price.id, price.model, account_id)) is not None]
            db.session.commit()
            subject = f"Price change for {price.model} on {price.effective_from:%Y-%m-%d}"
            for row in claimed:
                text = price_notice_text(change, db.session.get(Account, row.account_id), rt.settings.public_url)
                results = []
                for address in account_recipients(row.account_id):
                    delivery = send_email(rt.settings.smtp, address, subject, text)
                    results.append(f"{address}: {'sent' if delivery.ok else delivery.detail}")
                row.result = "; ".join(results)[:2000] or "nobody to tell"
                db.session.commit()
                sent += 1
    return sent


def terms_notice_text(row: TermsVersion) -> str:
    return "\n".join([f"New terms of service, version {row.version}, take effect on {row.effective_at:%Y-%m-%d %H:%M} UTC.", "",
                      row.summary, *(["", f"Read them: {row.url}"] if row.url else []), "",
                      "Using the service after that date means you accept them; you may close your account before then."])


def _send_terms_notices(now: datetime) -> int:
    """Each announced version goes to every active customer, a chunk of people at a time: a chunk is
    claimed (the last id told moves on) before it is sent, so a run cut short resumes after it."""
    rt = runtime()
    sent = 0
    for row in list(db.session.scalars(select(TermsVersion).where(TermsVersion.effective_at > now, TermsVersion.notified_at.is_(None)))):
        text = terms_notice_text(row)
        subject = f"New terms of service from {row.effective_at:%Y-%m-%d}"
        while True:
            through = row.notified_through
            people = list(db.session.execute(select(User.id, User.email).where(
                User.id > through, User.role == Role.USER.value, User.status == UserStatus.ACTIVE.value).order_by(User.id).limit(TERMS_CHUNK)).all())
            values = {"notified_through": people[-1].id} if people else {"notified_at": now}
            claimed = db.session.execute(update(TermsVersion).where(TermsVersion.id == row.id, TermsVersion.notified_through == through,
                                                                    TermsVersion.notified_at.is_(None)).values(**values)).rowcount
            db.session.commit()
            if claimed != 1 or not people:
                break
            db.session.refresh(row)
            for _, email in people:
                if not send_email(rt.settings.smtp, email, subject, text).ok:
                    log.warning("terms notice %s not delivered to %s", row.version, email)
                sent += 1
    return sent


@in_app_context
def send_notices(now: datetime | None = None) -> int:
    """Returns how many notices went out (price notices count per account, terms notices per person)."""
    if not runtime().settings.smtp.configured:
        return 0
    now = now or utcnow()
    with Lock(runtime().redis, redis_keys.LOCK_LIFECYCLE_NOTICES, LOCK_LEASE) as lock:
        if not lock.acquire():
            return 0
        return _send_price_notices(now) + _send_terms_notices(now)
