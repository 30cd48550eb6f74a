"""Low-balance alerts: each account's alert goes out once per crossing of its threshold (email
and/or signed webhook) and re-arms when the balance is back at or above it. Run on a schedule."""
from __future__ import annotations

import logging

from sqlalchemy import select, update

from controlplane.extensions import db
from controlplane.models import Account, AlertSetting, utcnow
from controlplane.notify import send_email, send_webhook
from controlplane.runtime import runtime
from relay.pricing import micro_to_usd
from relay.quota import account_key
from workers.context import in_app_context
from workers.mail import account_recipients

log = logging.getLogger(__name__)


def current_balance(account_id: int) -> int:
    """The live balance (every settled charge applied) from Redis; SQL's when Redis has none."""
    live = runtime().redis.hget(account_key(account_id), "bal")
    if live is not None:
        return int(live)
    return int(db.session.scalar(select(Account.balance).where(Account.id == account_id)) or 0)


def _deliver(row: AlertSetting, balance: int) -> str:
    rt = runtime()
    account = db.session.get(Account, row.account_id)
    summary = f"The balance of {account.name} is {micro_to_usd(balance, 2)}, below your alert threshold of {micro_to_usd(row.threshold, 2)}."
    results = []
    if row.email:
        for address in account_recipients(row.account_id):
            sent = send_email(rt.settings.smtp, address, f"Low balance: {micro_to_usd(balance, 2)} left", summary + "\n\nTop up or redeem a code to keep your keys working.")
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
