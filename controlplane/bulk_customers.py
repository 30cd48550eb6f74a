"""Many customers and keys at once, for demos and the scale benchmark: the product's own rows and
key records, written in bulk — SQLAlchemy Core inserts in batches (accounts opened through the
ledger), then the same record writer the services use, pipelined to Redis a chunk at a time.

A realistic spread: one user in ten in a second group when there is one, keys per user uneven
(some have none, a few have many), one key in ten with a monthly budget, one in fifty disabled,
one in twenty expiring in a year. Never for a production database: the secrets are returned (or
written to a file) so a benchmark can use them.
"""
from __future__ import annotations

import hashlib
import os
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import select

from controlplane import key_records, ledger
from controlplane.bulk_sql import insert_rows
from controlplane.extensions import db
from controlplane.models import ApiKey, Group, KeyStatus, Role, User, UserStatus, utcnow
from controlplane.services.keys import ALPHABET, KEY_PREFIX, PREFIX_SHOWN
from relay.keys import KeyView

BATCH = 5_000  # users per transaction
# Each byte maps onto the key alphabet: 40 random characters from 40 random bytes without a Python
# loop per character (a million keys in about a second). The modulo bias leaves ~235 bits.
_TABLE = bytes(ord(ALPHABET[b % len(ALPHABET)]) for b in range(256))


@dataclass
class BulkResult:
    users: int = 0
    keys: int = 0
    seconds: float = 0.0
    sample: list[str] = field(default_factory=list)  # secrets of some enabled keys, for benchmarks


def _secret() -> str:
    return KEY_PREFIX + os.urandom(40).translate(_TABLE).decode()


def _keys_per_user(rng: random.Random, users: int, keys: int) -> list[int]:
    """`keys` spread unevenly over `users`: most have a few, some none, a few many."""
    weights = [rng.paretovariate(1.5) for _ in range(users)]
    total = sum(weights)
    counts = [int(keys * w / total) for w in weights]
    for i in rng.sample(range(users), k=min(users, keys - sum(counts))):
        counts[i] += 1
    return counts


def create(redis, users: int, keys: int, credit: int = 10_000_000, sample: int = 100, secrets_out=None,
           progress: Callable[[int, int], None] | None = None, rng_seed: int | None = None) -> BulkResult:
    """Create `users` customers (each with an account opened with `credit` µ$) and `keys` keys."""
    started = time.monotonic()
    rng = random.Random(rng_seed)  # shapes test data (key counts, flags); secrets come from os.urandom  # nosec B311
    groups = dict(db.session.execute(select(Group.name, Group.id)).all())
    default = db.session.scalar(select(Group).where(Group.is_default.is_(True)))
    if default is None:
        from controlplane.services.groups import default_group

        default = default_group()
        groups[default.name] = default.id
    other = next((name for name in groups if name != default.name), None)
    run = secrets.token_hex(3)
    per_user = _keys_per_user(rng, users, keys) if users else []
    result = BulkResult()
    for start in range(0, users, BATCH):
        count = min(BATCH, users - start)
        names = [f"bulk-{run}-{start + i}@example.test" for i in range(count)]
        account_ids = ledger.open_accounts([{"name": n} for n in names], credit, "bulk seed")
        in_other = [other is not None and rng.random() < 0.1 for _ in range(count)]
        user_rows = [{"email": n, "role": Role.USER.value, "status": UserStatus.ACTIVE.value, "account_id": a,
                      "group_id": groups[other] if o else default.id} for n, a, o in zip(names, account_ids, in_other, strict=True)]
        user_ids = insert_rows(User.__table__, user_rows)
        key_rows, views_meta = [], []
        year = utcnow() + timedelta(days=365)
        for i, (user_id, account_id) in enumerate(zip(user_ids, account_ids, strict=True)):
            for _ in range(per_user[start + i]):
                secret = _secret()
                disabled, expiring, budget = rng.random() < 0.02, rng.random() < 0.05, rng.random() < 0.1
                key_rows.append({"account_id": account_id, "user_id": user_id, "name": "bulk", "key_hash": hashlib.sha256(secret.encode()).hexdigest(),
                                 "prefix": secret[:PREFIX_SHOWN], "status": KeyStatus.DISABLED.value if disabled else KeyStatus.ENABLED.value,
                                 "expires_at": year if expiring else None, "monthly_budget": 50_000_000 if budget else None,
                                 "models": [], "ip_allow": []})
                views_meta.append((secret, other if in_other[i] else default.name))
        key_ids = insert_rows(ApiKey.__table__, key_rows)
        db.session.commit()
        records = [key_records.KeyRecord(key_id, row["key_hash"], row["account_id"], 0, KeyView(
            id=key_id, account_id=row["account_id"], user_id=row["user_id"], group=group, prefix=row["prefix"], status=row["status"],
            expires_at=row["expires_at"].timestamp() if row["expires_at"] else None, monthly_budget=row["monthly_budget"]), credit)
            for key_id, row, (_, group) in zip(key_ids, key_rows, views_meta, strict=True)]
        for chunk in range(0, len(records), key_records.CHUNK):
            # New hashes: no relay can have cached them, so nothing to announce; no spend to seed.
            key_records.write(redis, records[chunk:chunk + key_records.CHUNK], announce=False, fresh=True)
        if secrets_out is not None:
            secrets_out.writelines(f"{s}\n" for s, _ in views_meta)
        for (secret, _), row in zip(views_meta, key_rows, strict=True):
            if len(result.sample) < sample and row["status"] == KeyStatus.ENABLED.value and row["expires_at"] is None:
                result.sample.append(secret)
        result.users += count
        result.keys += len(key_rows)
        if progress is not None:
            progress(result.users, result.keys)
    result.seconds = time.monotonic() - started
    return result
