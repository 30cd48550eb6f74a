"""Alerts, run on a schedule. Low balance: each account's alert goes out once per crossing of its
threshold (email and/or signed webhook) and re-arms when the balance is back at or above it. Dead
letters: the operators' alert addresses and webhook hear about usage events ingestion could not write,
once per new batch of them."""
from __future__ import annotations

import logging
import time

from sqlalchemy import select, update

from controlplane import dead_letters
from controlplane.extensions import db
from controlplane.models import Account, AlertSetting, utcnow
from controlplane.notify import send_email, send_webhook
from controlplane.runtime import runtime
from relay import redis_keys
from relay.pricing import usd_text
from relay.quota import account_key
from workers.context import in_app_context
from workers.locks import Lock
from workers.mail import account_recipients

log = logging.getLogger(__name__)
DEAD_NOTICE_MARK = redis_keys.USAGE_DEAD_NOTIFIED  # id of the newest dead letter operators were told about
DEAD_NOTICE_LOCK = redis_keys.LOCK_DEAD_LETTER_NOTICE
DEAD_NOTICE_LISTED = 10  # dead letters described in one notice
DEAD_NOTICE_GIVE_UP = 3600  # seconds: a notice nobody could receive is not retried longer


def current_balance(account_id: int) -> int:
    """The live balance (every settled charge applied) from Redis; SQL's when Redis has none."""
    live = runtime().redis.hget(account_key(account_id), "bal")
    if live is not None:
        return int(live)
    return int(db.session.scalar(select(Account.balance).where(Account.id == account_id)) or 0)


def _deliver(row: AlertSetting, balance: int) -> str:
    rt = runtime()
    account = db.session.get(Account, row.account_id)
    summary = f"The balance of {account.name} is {usd_text(balance)}, below your alert threshold of {usd_text(row.threshold)}."
    results = []
    if row.email:
        for address in account_recipients(row.account_id):
            sent = send_email(rt.settings.smtp, address, f"Low balance: {usd_text(balance)} left",
                              summary + "\n\nTop up or redeem a code to keep your keys working.")
            results.append(f"email {address}: {'sent' if sent.ok else sent.detail}")
    if row.webhook_url:
        payload = {"account_id": account.id, "account_name": account.name, "balance_micro_usd": balance, "threshold_micro_usd": row.threshold}
        # A customer's URL: public addresses only, whatever the operator opened for upstreams.
        sent = send_webhook(row.webhook_url, "balance.low", payload, egress=rt.egress(customer=True), secret=rt.settings.webhook_secret)
        results.append(f"webhook: {'sent' if sent.ok else sent.detail}")
    return "; ".join(results) or "nothing to send"


@in_app_context
def check_low_balances() -> int:
    """Returns how many alerts went out."""
    sent = 0
    for row in list(db.session.scalars(select(AlertSetting).where(AlertSetting.threshold.is_not(None)))):
        balance = current_balance(row.account_id)
        if balance < row.threshold and not row.below:
            # Claim the crossing first: of two workers checking at once, one sends.
            claimed = db.session.execute(update(AlertSetting).where(AlertSetting.id == row.id, AlertSetting.below.is_(False))
                                         .values(below=True, last_sent_at=utcnow())).rowcount
            db.session.commit()
            if claimed != 1:
                continue
            outcome = _deliver(row, balance)
            db.session.execute(update(AlertSetting).where(AlertSetting.id == row.id).values(last_result=outcome[:2000]))
            db.session.commit()
            sent += 1
        elif balance >= row.threshold and row.below:
            db.session.execute(update(AlertSetting).where(AlertSetting.id == row.id).values(below=False))
            db.session.commit()
    return sent


def _dead_letter_notice(settings, letters: list, waiting: int) -> bool:
    """Email the alert addresses and call the alert webhook; True when every delivery worked."""
    lines = [f"{letter.as_dict()['request_id'] or letter.id}: {letter.error}" for letter in letters]
    url = f"{settings.public_url.rstrip('/')}/admin/dead-letters/"
    body = (f"Switchboard could not write {waiting} usage event(s) to the database. They were charged to live balances but are "
            f"not yet in the ledger. Newest:\n\n" + "\n".join(lines) + f"\n\nFix the cause, then retry or discard them at {url}\n")
    delivered = True
    if settings.alert_emails and settings.smtp.configured:
        for address in settings.alert_emails:
            delivered &= send_email(settings.smtp, address, f"Switchboard: {waiting} usage event(s) not written", body).ok
    if settings.alert_webhook_url:
        payload = {"waiting": waiting, "newest": [letter.as_dict() for letter in letters], "console": url}
        delivered &= send_webhook(settings.alert_webhook_url, "usage.dead_lettered", payload, egress=runtime().egress(),
                                  secret=settings.webhook_secret).ok
    return delivered


@in_app_context
def notify_dead_letters() -> int:
    """Tell operators about dead letters added since the last notice; returns how many were new."""
    rt = runtime()
    redis = rt.redis
    with Lock(redis, DEAD_NOTICE_LOCK, 120) as lock:
        if not lock.acquire():
            return 0
        mark = redis.get(DEAD_NOTICE_MARK)
        fresh = redis.xrange(dead_letters.DEAD_STREAM, min=f"({mark.decode()}" if mark else "-", max="+", count=1000)
        if not fresh:
            return 0
        letters, _ = dead_letters.newest(redis, limit=DEAD_NOTICE_LISTED)
        waiting = dead_letters.count(redis)
        log.error("%d usage event(s) could not be written and wait in the dead letters (%d new); newest: %s",
                  waiting, len(fresh), letters[0].error if letters else "")
        delivered = _dead_letter_notice(rt.settings, letters, waiting)
        oldest_new = int(fresh[0][0].split(b"-")[0]) / 1000
        if delivered or time.time() - oldest_new > DEAD_NOTICE_GIVE_UP:
            redis.set(DEAD_NOTICE_MARK, fresh[-1][0])
        return len(fresh)
