"""Every Redis name Switchboard uses: keys, streams, the pub/sub channel, locks.

This is the only module that spells a name. Python builds names with the functions here and hands
them to Lua scripts as KEYS[]: a script touches only keys it was given (what Redis Cluster routes
by; tests/integration/test_script_keys.py watches it on a real Redis).

The names are those a running deployment already stores (balances, key records, spend windows), so
an upgrade moves no data. docs/redis.md has the layout, which script touches what, the round trips
per request, and how the names change for Redis Cluster (hash tags by account and by channel).
"""
from __future__ import annotations

import os
import time
from urllib.parse import urlsplit

ROOT = "sb:"
# Under Redis Cluster (a `redis-cluster://` REDIS_URL, read once as the process starts) the names
# carry hash tags, so that every script's keys are in one slot and the per-request work spreads over
# the masters: the money of an account (balance, its keys' spend, holds, the usage stream its
# settles append to, idempotency claims, generation records, its API keys' limits, its
# conversations' pins) under its bucket's tag `{m<n>}`; a channel's limits and health, and its
# keys', under the channel's `{c<id>}`; a user's and a group's limits and a capacity queue each
# under a tag of their own; what is left (the config and key-change log, reports) under `{sb}`.
# The key records, a few hundred bytes for each of up to millions of keys and read one at a time,
# stay untagged and spread over the cluster. On one server the names are those earlier versions
# stored, and there is one bucket. docs/redis.md: the layout and the round trips per request.
CLUSTER = urlsplit(os.environ.get("REDIS_URL", "")).scheme.lower() in ("redis-cluster", "rediss-cluster")
_S = "sb:{sb}:" if CLUSTER else ROOT
# Fixed for a deployment's life: a change moves every account's money to other names (docs/redis.md,
# migration). More buckets spread the money more evenly; ingestion reads one stream per bucket. 0
# keeps the money under `{sb}` with everything else: one master does all the per-request work, in
# one script per admit and settle, which costs Redis less in all (docs/redis.md has the figures).
_BUCKETS = max(0, int(os.environ.get("SWITCHBOARD_REDIS_MONEY_BUCKETS") or 16))
SPREAD = CLUSTER and _BUCKETS > 0  # the money spread over buckets: admit and settle split in halves
MONEY_BUCKETS = _BUCKETS if SPREAD else 1
# Routing state follows the money: spread, each channel's state is under its own tag (admit walks
# the channels, one call each); with 0 buckets everything stays under `{sb}`, in one script.
SHARED = _S  # the prefix of what has no tag of its own


def _tag(tag: str) -> str:
    """The prefix of names under a tag of their own when routing state is spread, else `SHARED`."""
    return f"sb:{{{tag}}}:" if SPREAD else _S


def money_bucket(account_id: int) -> int:
    """The bucket whose hash tag an account's money names carry."""
    return account_id % MONEY_BUCKETS


def _money(bucket: int) -> str:
    return f"sb:{{m{bucket}}}:" if SPREAD else _S


# --- the routing snapshot (relay/config_store.py) ------------------------------------------------
CONFIG_CHANNEL = "sb:cfg"  # pub/sub: snapshot versions and key-change wake-ups
CONFIG_COUNTER = f"{_S}cfg:counter"
CONFIG_VERSION = f"{_S}cfg:version"
CONFIG_SNAPSHOT = f"{_S}cfg:snapshot"
CONFIG_DIGEST = f"{_S}cfg:digest"

# --- key records (relay/keys.py, controlplane/key_records.py) ------------------------------------
KEY_RECORD_PREFIX = "sb:key:"  # + sha256 of the API key
KEY_ID_PREFIX = "sb:keyid:"  # + key id → the hash (the console's playground tokens name keys by id)
# The change log and its sequence share a hash tag: the script appending to both touches one slot.
KEY_CHANGES = f"{_S}{{keys}}:changes"
KEY_CHANGES_SEQ = f"{_S}{{keys}}:seq"
KEYS_READY = f"{_S}keys:ready"  # set once every record has been (re)built from SQL
KEYS_REBUILD_CURSOR = f"{_S}keys:rebuild"  # hash: phase (accounts | keys), after (the last id done)
KEYS_SWEEP_CURSOR = f"{_S}keys:sweep"  # the last key id the drift sweep compared

# --- live money (relay/quota.py), by bucket ------------------------------------------------------
USAGE_DEAD = f"{_S}usage:dead"  # events ingestion refused, with the error
USAGE_DEAD_NOTIFIED = f"{_S}usage:dead:notified"  # id of the newest dead letter operators were told about
_DAY, _MONTH = ":d:", ":m:"


def holds_key(bucket: int) -> str:
    """Zset: the bucket's open holds (request ids) scored by expiry, for the sweeper."""
    return f"{_money(bucket)}holds"


def usage_stream(bucket: int) -> str:
    """The bucket's settled requests, for the usage consumer (workers/consumer.py)."""
    return f"{_money(bucket)}usage"


HOLDS_INDEXES = tuple(holds_key(b) for b in range(MONEY_BUCKETS))
USAGE_STREAMS = tuple(usage_stream(b) for b in range(MONEY_BUCKETS))


def _of_account(account_id: int) -> str:
    return _money(money_bucket(account_id))


def account_key(account_id: int) -> str:
    """Hash: `bal` (live balance, µ$), `held` (open holds)."""
    return f"{_of_account(account_id)}acct:{account_id}"


def api_key_key(account_id: int, key_id: int) -> str:
    """Hash: `spent` and `held` against the key's credit limit (in its account's bucket)."""
    return f"{_of_account(account_id)}akey:{key_id}"


def hold_key(bucket: int, request_id: str) -> str:
    """Hash: one open hold (amount, the account and key names, the windows it reserved)."""
    return f"{_money(bucket)}hold:{request_id}"


# Spend windows are named by the UTC day / month the request started in.
def day_of(now: float) -> str:
    return time.strftime("%Y%m%d", time.gmtime(now))


def month_of(now: float) -> str:
    return time.strftime("%Y%m", time.gmtime(now))


def key_day_key(account_id: int, key_id: int, now: float) -> str:
    return f"{api_key_key(account_id, key_id)}{_DAY}{day_of(now)}"


def key_month_key(account_id: int, key_id: int, now: float) -> str:
    return f"{api_key_key(account_id, key_id)}{_MONTH}{month_of(now)}"


def member_month_key(account_id: int, user_id: int | None, now: float) -> str:
    return f"{_of_account(account_id)}member:{account_id}:{user_id or 0}{_MONTH}{month_of(now)}"


def is_day_window(name: str) -> bool:
    return _DAY in name


# --- per request -------------------------------------------------------------------------------------
def generation_key(account_id: int, request_id: str) -> str:
    """The settled request's record for GET /v1/generation (relay/generation.py), written by the
    money settle, so in the caller's bucket."""
    return f"{_of_account(account_id)}gen:{request_id}"


def idempotency_key(account_id: int, key_id: int, digest: str) -> str:
    """An Idempotency-Key's claim and outcome, per API key (relay/idempotency.py)."""
    return f"{_of_account(account_id)}idem:{key_id}:{digest}"


def affinity_key(account_id: int, digest: str) -> str:
    """A conversation's pinned channel key (relay/affinity.py): the key id, with a TTL. With the
    account's money: split, admit's money call reads it, and settle's writes it."""
    return f"{_of_account(account_id)}aff:{digest}"


def queue_keys(name: str) -> tuple[str, str, str, str]:
    """A capacity queue (relay/capacity_queue.py), all under one hash tag: the waiting tickets in
    fair order, their beat deadlines, the fair-queuing state, the serving rate."""
    tag = f"sb:{{q:{name}}}" if SPREAD else f"{_S}{{q:{name}}}"
    return f"{tag}:wait", f"{tag}:beat", f"{tag}:state", f"{tag}:rate"


# --- limits (relay/limits.py): scopes are k:<id> u:<id> g:<name> c:<id> ck:<id> -----------------
# A scope's keys share its prefix: tagged, an API key's are with its account's money, a channel
# key's with its channel, and a user's and a group's have a tag each.
_LEASES = ":cc"


def account_limits_prefix(account_id: int) -> str:
    return _of_account(account_id)


def user_limits_prefix(user_id: int) -> str:
    return _tag(f"u{user_id}")


def group_limits_prefix(name: str) -> str:
    return _tag(f"g:{name}")


def channel_prefix(channel_id: int | str) -> str:
    """A channel's limits and health, and its keys'."""
    return _tag(f"c{channel_id}")


def limit_window_key(prefix: str, scope: str, kind: str, minute: int) -> str:
    """Counter of `kind` (r: requests, t: tokens) in one minute (`now // 60`)."""
    return f"{prefix}lim:{scope}:{kind}:{minute}"


def lease_key(prefix: str, scope: str) -> str:
    """Zset of the scope's concurrent requests scored by lease expiry."""
    return f"{prefix}lim:{scope}{_LEASES}"


# --- passive health (relay/health.py) ---------------------------------------------------------------
# Tagged, the relays watch for their own network going away in each process (relay/health.py's
# NetworkWatch): these two are the one-server layout's shared watch.
HEALTH_LAST_OK = f"{_S}hok"  # when any attempt last succeeded
HEALTH_NETWORK = f"{_S}hnet"  # zset: channels that gave no answer at all lately
HEALTH_REPORTS = f"{_S}health:reports"  # dead keys, for workers/health.py to disable in SQL


def key_health_key(channel_id: int | str, key_id: int | str) -> str:
    return f"{channel_prefix(channel_id)}hk:{key_id}"


def channel_health_key(channel_id: int | str) -> str:
    return f"{channel_prefix(channel_id)}hc:{channel_id}"


def key_dead_key(channel_id: int | str, key_id: int | str) -> str:
    return f"{channel_prefix(channel_id)}hdead:{key_id}"


# --- the retry budget shared by every relay process (relay/retry_budget.py) ------------------------
# One hash tag: the script that reads both touches one slot.
RETRY_INFLIGHT = f"{_S}{{retry}}:inflight"  # hash: relay process → "requests in flight:when it said so"
RETRY_ACTIVE = f"{_S}{{retry}}:active"  # zset: retries in flight, scored by when their lease lapses


# --- the control plane and workers ------------------------------------------------------------------
def lock_key(name: str) -> str:
    """A lease lock (workers/locks.py, scripts/)."""
    return f"{_S}lock:{name}"


LOCK_KEY_REBUILD = lock_key("key-rebuild")
LOCK_PROBE_RUN = lock_key("probe-run")
LOCK_NOTIFY = lock_key("notify")
LOCK_DEAD_LETTER_NOTICE = lock_key("dead-letter-notice")
LOCK_APPLY_REPORTS = lock_key("apply-reports")
LOCK_BUDGET_ALERTS = lock_key("budget-alerts")
LOCK_LIFECYCLE_NOTICES = lock_key("lifecycle-notices")


def probe_lock_key(channel_id: int) -> str:
    return lock_key(f"probe:{channel_id}")


def cron_lock_key(name: str) -> str:
    return f"{_S}cron:{name}"


STATUS_PAGE = f"{_S}status:page"  # the public status document, cached for a minute (controlplane/console/status.py)


def throttle_key(action: str, window: int, subject: str) -> str:
    return f"{_S}throttle:{action}:{window}:{subject}"


def login_keys(minute: int, quarter: int, who: str, ip: str) -> tuple[str, str, str]:
    """Sign-in throttle counters: email+address and address per minute, email per quarter hour."""
    return f"{_S}login:{minute}:pair:{who}:{ip}", f"{_S}login:{minute}:ip:{ip}", f"{_S}login:q{quarter}:email:{who}"


def receipt_mark_key(entry_id: int) -> str:
    return f"{_S}mail:receipt:{entry_id}"


def invitation_mark_key(invitation_id: int) -> str:
    return f"{_S}mail:invitation:{invitation_id}"


def invoice_mark_key(invoice_id: int) -> str:
    return f"{_S}mail:invoice:{invoice_id}"


def refund_decision_mark_key(request_id: int) -> str:
    return f"{_S}mail:refund-decision:{request_id}"


def payment_alert_mark_key(payment_id: int) -> str:
    return f"{_S}mail:payment-alert:{payment_id}"
