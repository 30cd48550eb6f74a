"""Seeds and reads a Switchboard whose Redis is a Cluster, as a process of its own.

Redis names are chosen as a process starts, from its REDIS_URL (relay/redis_keys.py): the test
process, on the one-server layout, cannot write or read the cluster's names itself. So it runs this
with the deployment's environment:

    python -m tests.e2e.cluster_world seed <upstream url>     → JSON: key secret, ids, operator token
    python -m tests.e2e.cluster_world group-rpm <n>           → the default group's requests per minute
    python -m tests.e2e.cluster_world money <account id>      → JSON: SQL balance, live balance, held
    python -m tests.e2e.cluster_world lose-records <key id>   → the key's record lost, then rebuilt from SQL
"""
from __future__ import annotations

import json
import sys

from controlplane.app import create_app
from controlplane.settings import Settings


def main() -> None:
    command, *args = sys.argv[1:]
    app = create_app(Settings.from_env())
    with app.app_context():
        from controlplane import ledger
        from controlplane.runtime import runtime
        from controlplane.services import api_tokens, groups
        from tests import factories
        from tests.console import person

        if command == "seed":
            factories.price("gpt-4o-mini", input="3", output="15")
            user = factories.funded_user("100")
            key, secret = factories.api_key(user)
            channel = factories.channel(args[0], keys_=("sk-up-1",))
            _, token = api_tokens.create_token(factories.ACTOR, person("operator", "ops@example.com"), "cluster e2e")
            print(json.dumps({"secret": secret, "user_id": user.id, "account_id": user.account_id, "channel_id": channel.id,
                              "token": token, "key_id": key.id}))
        elif command == "group-rpm":
            group = groups.default_group()
            groups.update_group(factories.ACTOR, group, multiplier=f"{group.multiplier_bp / 10_000:g}",
                                model_patterns=list(group.model_patterns or []), rpm=int(args[0]) or None, tpm=group.tpm,
                                concurrency=group.concurrency)
        elif command == "money":
            account_id = int(args[0])
            live, held = runtime().quota.account(account_id)
            print(json.dumps({"sql": ledger.stored_balance(account_id), "entries": ledger.sum_of_entries(account_id),
                              "live": live, "held": held, "backlog": _usage_backlog(runtime().redis)}))
        elif command == "lose-records":
            # What a Redis that lost its data looks like to the rebuild: no records, not ready.
            from controlplane import key_rebuild
            from relay import keys as rk

            redis = runtime().redis
            key_hash = redis.get(rk.id_key(int(args[0]))).decode()
            redis.delete(rk.record_key(key_hash))
            redis.delete(rk.id_key(int(args[0])))
            redis.delete(rk.READY_KEY)
            key_rebuild.ensure(redis)
            print(json.dumps({"ready": key_rebuild.is_ready(redis), "record": bool(redis.exists(rk.record_key(key_hash))),
                              "swept": key_rebuild.sweep(redis)}))
        else:
            raise SystemExit(f"unknown command {command!r}")


def _usage_backlog(redis) -> int:
    from relay.redis_keys import USAGE_STREAMS

    return sum(int(redis.xlen(stream)) for stream in USAGE_STREAMS)


if __name__ == "__main__":
    main()
