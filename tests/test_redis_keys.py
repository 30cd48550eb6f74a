"""One module names every Redis key (relay/redis_keys.py): no other product module spells one.

Statically, over the source: a string constant (or the text of an f-string) that starts with the
names' root, or a Lua literal inside a script text that does. Docstrings may mention names.
"""
from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from redis.crc import key_slot

from relay import redis_keys

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("relay", "controlplane", "workers", "scripts", "bench")
HOME = ROOT / "relay" / "redis_keys.py"
# A name at the start of a Python string, or quoted inside Lua text.
_NAME = re.compile(r"""(^|['"])""" + re.escape(redis_keys.ROOT))


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def key_literals(path: Path, base: Path = ROOT) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    skip = _docstrings(tree)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)) and id(node) not in skip:
            text = node.value.decode("latin-1") if isinstance(node.value, bytes) else node.value
            if _NAME.search(text):
                out.append(f"{path.relative_to(base)}:{node.lineno}: {text[:60]!r}")
    return out


def test_no_redis_key_literal_outside_the_names_module():
    sources = [p for package in PACKAGES for p in (ROOT / package).rglob("*.py") if p != HOME]
    sources += [p for p in (ROOT / "bench").rglob("*.lua")]
    offenders = []
    for path in sources:
        if path.suffix == ".lua":
            offenders += [f"{path.relative_to(ROOT)}: {line}" for line in path.read_text().splitlines() if _NAME.search(line)]
        else:
            offenders += key_literals(path)
    assert offenders == []


def test_the_check_sees_python_and_lua_spellings(tmp_path):
    sample = tmp_path / "sample.py"
    root = redis_keys.ROOT
    sample.write_text(f'A = "{root}acct:1"\nB = f"{root}hold:{{1}}"\nC = """\nredis.call(\'GET\', \'{root}hok\')\n"""\n')
    assert sorted(line.split(":")[1] for line in key_literals(sample, tmp_path)) == ["1", "2", "3"]


def test_names_are_those_deployments_already_store():
    """Renaming a stored key would strand balances and records: these spellings are the contract."""
    now = 1_780_000_000.0  # 2026-05-28 UTC
    assert redis_keys.account_key(5) == "sb:acct:5"
    assert redis_keys.api_key_key(5, 9) == "sb:akey:9"
    assert redis_keys.key_day_key(5, 9, now) == "sb:akey:9:d:20260528"
    assert redis_keys.key_month_key(5, 9, now) == "sb:akey:9:m:202605"
    assert redis_keys.member_month_key(5, None, now) == "sb:member:5:0:m:202605"
    assert redis_keys.hold_key(0, "r1") == "sb:hold:r1"
    assert redis_keys.generation_key(0, "r1") == "sb:gen:r1"
    assert redis_keys.idempotency_key(5, 9, "ab") == "sb:idem:9:ab"
    assert (redis_keys.HOLDS_INDEXES, redis_keys.USAGE_STREAMS, redis_keys.KEY_RECORD_PREFIX) == (("sb:holds",), ("sb:usage",), "sb:key:")


def test_under_a_cluster_an_accounts_money_shares_its_buckets_slot_and_the_buckets_spread():
    """Each per-request script's keys must be in one slot: the money call's in the account's bucket
    (with its API keys' limits and its conversations' pins), a channel's in the channel's slot (with
    its keys'), a user's or group's limits and a queue each in one; and the buckets must land on
    different slots."""
    code = """
import json
from relay import redis_keys as k
now = 1_780_000_000.0
money = {a: [k.account_key(a), k.api_key_key(a, 9), k.key_day_key(a, 9, now), k.key_month_key(a, 9, now),
             k.member_month_key(a, 3, now), k.hold_key(k.money_bucket(a), "r1"), k.holds_key(k.money_bucket(a)),
             k.usage_stream(k.money_bucket(a)), k.generation_key(a, "r1"), k.idempotency_key(a, 9, "ab"),
             k.limit_window_key(k.account_limits_prefix(a), "k:9", "r", 5), k.lease_key(k.account_limits_prefix(a), "k:9"),
             k.affinity_key(a, "d")]
         for a in range(40)}
channels = {c: [k.key_health_key(c, 10 * c), k.key_dead_key(c, 10 * c + 1), k.channel_health_key(c),
                k.limit_window_key(k.channel_prefix(c), f"c:{c}", "t", 5), k.lease_key(k.channel_prefix(c), f"ck:{10 * c}")]
            for c in range(1, 30)}
own = [[k.limit_window_key(k.group_limits_prefix("x"), "g:x", "r", 5), k.lease_key(k.group_limits_prefix("x"), "g:x")],
       [k.limit_window_key(k.user_limits_prefix(3), "u:3", "r", 5), k.lease_key(k.user_limits_prefix(3), "u:3")], list(k.queue_keys("q"))]
shared = [k.HEALTH_REPORTS, k.USAGE_DEAD, k.CONFIG_SNAPSHOT, k.RETRY_ACTIVE]
print(json.dumps({"buckets": k.MONEY_BUCKETS, "money": money, "channels": channels, "own": own, "shared": shared,
                  "streams": list(k.USAGE_STREAMS)}))
"""
    env = {**os.environ, "REDIS_URL": "redis-cluster://127.0.0.1:7000", "SWITCHBOARD_REDIS_MONEY_BUCKETS": "8"}
    out = json.loads(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout)
    assert out["buckets"] == 8 and len(set(out["streams"])) == 8
    slots_of_accounts = set()
    for account, names in out["money"].items():
        slots = {key_slot(n.encode()) for n in names}
        assert len(slots) == 1, (account, names)
        slots_of_accounts |= slots
    assert len(slots_of_accounts) == 8  # accounts 0..39 fill every bucket, each bucket its own slot
    slots_of_channels = set()
    for channel, names in out["channels"].items():
        slots = {key_slot(n.encode()) for n in names}
        assert len(slots) == 1, (channel, names)
        slots_of_channels |= slots
    assert len(slots_of_channels) == 29  # every channel a slot of its own: routing spreads like the money
    for names in out["own"]:
        assert len({key_slot(n.encode()) for n in names}) == 1, names
    shared = {key_slot(n.encode()) for n in out["shared"]}
    assert len(shared) == 1 and not (slots_of_accounts | slots_of_channels) & shared


def test_under_a_cluster_with_no_buckets_the_money_stays_with_everything_else():
    code = """
import json
from relay import redis_keys as k
print(json.dumps({"spread": k.SPREAD, "streams": list(k.USAGE_STREAMS), "names": [k.account_key(7), k.hold_key(k.money_bucket(7), "r"),
                  k.api_key_key(7, 9), k.key_health_key(1, 10), k.channel_health_key(1), k.affinity_key(7, "d"),
                  k.lease_key(k.group_limits_prefix("x"), "g:x"), k.USAGE_DEAD]}))
"""
    env = {**os.environ, "REDIS_URL": "redis-cluster://127.0.0.1:7000", "SWITCHBOARD_REDIS_MONEY_BUCKETS": "0"}
    out = json.loads(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout)
    assert out["spread"] is False and out["streams"] == ["sb:{sb}:usage"]  # and routing state with it, in one script
    assert len({key_slot(n.encode()) for n in out["names"]}) == 1 and out["names"][0] == "sb:{sb}:acct:7"
