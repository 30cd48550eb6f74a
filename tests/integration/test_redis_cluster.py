"""The relay's lean RESP client and the redis-py clients against a real 3-master Redis Cluster:
commands go to the master serving their first key's slot, and follow the cluster when a slot moves
(MOVED) or is half-way through moving (ASK)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from redis.crc import key_slot

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from relay.metrics import COUNTERS
from relay.redis_connect import parse, redis_py_client
from relay.resp import ClusterPool, ReplyLost, Script, connect_pool, encode
from tests.redis_servers import RedisClusterNodes, wait_until

ROOT = Path(__file__).resolve().parents[2]
COUNT = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    nodes = RedisClusterNodes(tmp_path_factory.mktemp("cluster"))
    yield nodes
    nodes.stop()


def owner(cluster, key: str):
    """The node serving `key`'s slot now."""
    slot = key_slot(key.encode())
    for node in cluster.nodes:
        for start, end, master, *_ in node.client().execute_command("CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return next(n for n in cluster.nodes if n.port == int(master[1]))
    raise AssertionError(f"no node serves slot {slot}")


def test_a_cluster_url_names_its_nodes():
    target = parse("rediss-cluster://:pw@10.0.0.1:7000,10.0.0.2?ssl_cert_reqs=none")
    assert target.cluster and target.cluster_nodes == (("10.0.0.1", 7000), ("10.0.0.2", 6379))
    assert target.password == "pw" and target.tls is not None and not target.tls.verify
    with pytest.raises(ValueError):
        parse("redis-cluster://10.0.0.1:7000/3")


def test_scripts_run_on_the_master_of_their_keys_slot_on_every_master(cluster):
    pool = connect_pool(cluster.url)
    assert isinstance(pool, ClusterPool)
    count = Script(pool, COUNT)
    keys = [f"sb:test:{n}" for n in range(60)]
    assert len({owner(cluster, k).port for k in keys}) == 3  # the keys span all three masters
    for key in keys:
        assert count(keys=[key], args=[2]) == 2
    for key in keys:
        assert int(owner(cluster, key).client().get(key)) == 2


def test_a_moved_slot_is_followed_and_a_slot_half_way_through_moving_is_asked_for(cluster):
    pool = connect_pool(cluster.url)
    count = Script(pool, COUNT)
    key = "sb:test:moving"
    assert count(keys=[key], args=[1]) == 1
    source = owner(cluster, key)
    target = next(n for n in cluster.nodes if n is not source)
    slot = key_slot(key.encode())
    source_id = source.client().execute_command("CLUSTER", "MYID").decode()
    target_id = target.client().execute_command("CLUSTER", "MYID").decode()
    # Half-way: the target imports, the source migrates, and the key has not moved yet. A new key of
    # that slot belongs to the target already: the source answers ASK for it.
    target.client().execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
    source.client().execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
    newcomer = next(f"sb:test:moving:{n}" for n in range(100_000) if key_slot(f"sb:test:moving:{n}".encode()) == slot)
    assert count(keys=[newcomer], args=[5]) == 5
    asked = target.client().pipeline(transaction=False)
    asked.execute_command("ASKING")
    asked.get(newcomer)
    assert asked.execute()[1] == b"5"  # on the target (the source answers ASK for it: it has no such key)
    assert count(keys=[key], args=[1]) == 2  # the old key is still the source's
    # Moved: the key goes over and the slot is the target's everywhere; the pool still thinks source.
    source.client().execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", key)
    for node in cluster.nodes:
        node.client().execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
    assert count(keys=[key], args=[1]) == 3
    assert count(keys=[newcomer], args=[1]) == 6
    assert pool.slots[slot] == ("127.0.0.1", target.port)
    wait_until(lambda: owner(cluster, key) is target, what="the slot to be the target's everywhere")


def test_calls_for_many_slots_go_in_one_pipeline_per_master_and_follow_a_moved_slot(cluster):
    pool = connect_pool(cluster.url)
    # A script no node has seen yet: each master loads it on the first call that meets NOSCRIPT.
    count = Script(pool, COUNT + " -- pipelined")
    keys = [f"sb:many:{n}" for n in range(30)]
    masters = {owner(cluster, k).port for k in keys}
    assert len(masters) == 3
    calls = [([k], [n + 1]) for n, k in enumerate(keys)] + [([keys[0]], ["not a number"])]
    pool.refresh()
    before = COUNTERS.redis_round_trips
    replies = count.many(calls)
    assert replies[:30] == list(range(1, 31))
    assert isinstance(replies[30], ResponseError)  # that call's error, in its place
    assert COUNTERS.redis_round_trips - before == 3 + 3  # one pipeline per master, and each loading the script
    before = COUNTERS.redis_round_trips
    assert count.many([([k], [1]) for k in keys]) == [n + 2 for n in range(30)]
    assert COUNTERS.redis_round_trips - before == 3
    # A slot moved (no keys in it): the pool still maps it to its old master, which answers MOVED,
    # and that call goes again alone to the new one while the rest of the pipeline has run.
    moving = next(f"sb:many:empty:{n}" for n in range(100_000)
                  if owner(cluster, f"sb:many:empty:{n}").port == owner(cluster, keys[0]).port)
    source = owner(cluster, moving)
    target = next(n for n in cluster.nodes if n is not source)
    target_id = target.client().execute_command("CLUSTER", "MYID").decode()
    for node in cluster.nodes:
        node.client().execute_command("CLUSTER", "SETSLOT", key_slot(moving.encode()), "NODE", target_id)
    assert count.many([([keys[0]], [1]), ([moving], [7]), ([keys[1]], [1])]) == [3, 7, 4]
    assert int(target.client().get(moving)) == 7
    assert pool.slots[key_slot(moving.encode())] == ("127.0.0.1", target.port)


def test_a_master_lost_fails_its_share_of_a_pipeline_once_and_the_others_run(tmp_path):
    """One master of three is gone (the others told to serve their slots regardless): the calls of a
    pipeline for the other two run; the lost master's fail, once the slot map read again names no
    other master for them, without waiting out reconnects."""
    nodes = RedisClusterNodes(tmp_path)
    try:
        for node in nodes.nodes:
            node.client().config_set("cluster-require-full-coverage", "no")
        pool = connect_pool(nodes.url)
        count = Script(pool, COUNT)
        keys = [f"sb:lost:{n}" for n in range(30)]
        assert count.many([([k], [1]) for k in keys]) == [1] * 30
        lost = next(n for n in nodes.nodes if n.port == owner(nodes, keys[0]).port)
        lost_keys = {k for k in keys if owner(nodes, k) is lost}
        lost.kill()
        # Sent on the pooled connection the master's death broke: whether they ran, nobody knows.
        replies = count.many([([k], [1]) for k in keys])
        assert [r for k, r in zip(keys, replies, strict=True) if k not in lost_keys] == [2] * (30 - len(lost_keys))
        assert len(lost_keys) > 1 and all(isinstance(r, ReplyLost) for k, r in zip(keys, replies, strict=True) if k in lost_keys)
        # Now no connection can be made: the slot map, read again, still names the lost master, so its
        # calls fail at once, not sent, and the others' do not wait behind reconnects.
        before = COUNTERS.redis_round_trips
        replies = count.many([([k], [1]) for k in keys])
        assert [r for k, r in zip(keys, replies, strict=True) if k not in lost_keys] == [3] * (30 - len(lost_keys))
        failed = [r for k, r in zip(keys, replies, strict=True) if k in lost_keys]
        assert all(isinstance(r, RedisConnectionError) and not isinstance(r, ReplyLost) and "not sent" in str(r) for r in failed)
        assert COUNTERS.redis_round_trips - before == 2 + 1 + 1  # the two live masters' pipelines, CLUSTER SLOTS twice
    finally:
        nodes.stop()


def test_redis_py_clients_reach_every_slot(cluster):
    client = redis_py_client(cluster.url)
    for n in range(30):
        client.set(f"sb:py:{n}", n)
    assert [int(client.get(f"sb:py:{n}")) for n in range(30)] == list(range(30))
    pipe = client.pipeline(transaction=False)
    for n in range(30):
        pipe.incr(f"sb:py:{n}")
    assert pipe.execute() == list(range(1, 31))
    assert encode("PING")  # the lean client's encoder is what the pool sends


def test_both_clients_follow_a_failover_to_the_promoted_replica(tmp_path):
    """A master killed: the cluster promotes its replica, and the lean client and redis-py's, once
    their commands to the dead node fail, learn the new slot map and serve from the new master."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    nodes = RedisClusterNodes(tmp_path / "cluster", masters=3, replicas=1)
    try:
        pool = connect_pool(nodes.url, timeout=2)
        count = Script(pool, COUNT)
        key = "sb:{sb}:failover"
        assert count(keys=[key], args=[1]) == 1
        # The usage consumer's read: redis-py finds XREADGROUP's keys by asking a node (COMMAND
        # GETKEYS), which left it asking the dead master for ever unless the slot map is read again.
        py = redis_py_client(nodes.url, health_check_interval=30)
        stream = "sb:{sb}:failover:stream"
        py.xadd(stream, {"e": "before"})
        py.xgroup_create(stream, "g", id="0")
        assert len(py.xreadgroup("g", "c", {stream: ">"}, count=10)[0][1]) == 1
        py.xadd(stream, {"e": "after"})
        doomed = owner(nodes, key)
        wait_until(lambda: doomed.client().execute_command("WAIT", 1, 1000) >= 1, what="the write replicated")
        doomed.kill()
        survivors = [n for n in nodes.nodes if n is not doomed]

        def served():
            try:
                return count(keys=[key], args=[1])
            except RedisConnectionError:
                return None

        assert wait_until(served, timeout=30, what="the lean client on the promoted replica") == 2
        def read_by_redis_py():
            try:
                return py.xreadgroup("g", "c", {stream: ">"}, count=10, block=100)
            except RedisConnectionError:
                return None

        assert wait_until(read_by_redis_py, timeout=30, what="redis-py on the promoted replica")[0][1][0][1] == {b"e": b"after"}
        now_serving = pool.slots[key_slot(key.encode())]
        promoted = next(n for n in survivors if ("127.0.0.1", n.port) == now_serving)
        assert promoted.client().execute_command("ROLE")[0] == b"master" and now_serving != ("127.0.0.1", doomed.port)
    finally:
        nodes.stop()


def test_rq_gets_a_redis_server_of_its_own_under_a_cluster(cluster, tmp_path, redis_slot):
    """RQ cannot use a cluster: under a cluster REDIS_URL its jobs need SWITCHBOARD_QUEUE_REDIS_URL,
    and a process without one is told so instead of failing on RQ's first command."""
    from controlplane.runtime import Runtime
    from controlplane.settings import Settings
    from relay.cipher import Cipher

    env = {"REDIS_URL": cluster.url, "SWITCHBOARD_INSTANCE": str(tmp_path), "SWITCHBOARD_SECRET_KEY": "x",
           "SWITCHBOARD_ENCRYPTION_KEY": Cipher.generate_key()}
    with pytest.raises(RuntimeError, match="SWITCHBOARD_QUEUE_REDIS_URL"):
        assert Runtime.build(Settings.from_env(env)).queue_redis is None  # raises before
    queue_url = redis_slot.url
    runtime = Runtime.build(Settings.from_env({**env, "SWITCHBOARD_QUEUE_REDIS_URL": queue_url}))
    assert runtime.queue_redis.ping() and runtime.queue_redis is not runtime.redis


# Run with the cluster's REDIS_URL: every account's books and the usage streams, as JSON.
_BOOKS = """
import json, os
from bench.redis_cost import ACCOUNTS
from relay import redis_keys
from relay.redis_connect import redis_py_client
client = redis_py_client(os.environ['REDIS_URL'])
books = [client.hmget(redis_keys.account_key(a), 'bal', 'held') for a in range(1, ACCOUNTS + 1)]
print(json.dumps({'spent': sum(10**13 - int(b) for b, _ in books), 'held': sum(int(h or 0) for _, h in books),
                  'open': sum(client.zcard(k) for k in redis_keys.HOLDS_INDEXES),
                  'events': sum(client.xlen(k) for k in redis_keys.USAGE_STREAMS), 'streams': len(redis_keys.USAGE_STREAMS)}))
"""


@pytest.mark.parametrize("buckets", ["16", "0"])
def test_the_relays_admits_and_settles_keep_every_account_exact_on_a_cluster(cluster, buckets):
    """The relay's Gate through its lean client, 32 requests at a time over 1,000 accounts, with the
    money spread over 16 buckets (money halves pipelined per master) and with none (all under one
    tag): each settled request took exactly its 105 µ$ and queued one usage event, and no hold is
    left."""
    for node in cluster.nodes:
        node.client().flushall()
    env = {**os.environ, "REDIS_URL": cluster.url, "SWITCHBOARD_REDIS_MONEY_BUCKETS": buckets}

    def run(*args: str) -> str:
        return subprocess.run([sys.executable, *args], env=env, cwd=ROOT, check=True, capture_output=True, text=True, timeout=120).stdout

    run("-m", "bench.redis_cost", "--seed", cluster.url)
    done = int(run("-m", "bench.redis_cost", "--client", cluster.url, "2", "32", "32", "2", "1").split()[-1])
    books = json.loads(run("-c", _BOOKS))
    assert done > 100
    assert books == {"spent": 105 * done, "held": 0, "open": 0, "events": done, "streams": 16 if buckets == "16" else 1}
    # Spread, every master carries accounts' money; unspread, the money is on one master.
    holding = sum(1 for node in cluster.nodes if node.client().dbsize() > 50)
    assert holding == (3 if buckets == "16" else 1)


# Run with the cluster's REDIS_URL (argv: the port of the master the test will stop): the relay's
# Gate admits and settles for accounts whose money is on the other masters while an admit for one
# on the stopped master waits; prints what it saw.
_HUNG = """
from gevent import monkey
monkey.patch_all()
import os, sys, gevent
from relay import redis_keys
from relay.admission import Gate, MoneyHold
from relay.health import Effect, HealthPolicy, Outcome
from relay.quota import Quota
from relay.redis_connect import redis_py_client
from relay.resp import Script, connect_pool
from relay.selector import Plan, Route
from relay.snapshot import ChannelKeyView, ChannelView, Limits

url, stopped = os.environ['REDIS_URL'], int(sys.argv[1])
pool = connect_pool(url)
gate = Gate(redis_py_client(url), HealthPolicy(), lease_seconds=600, register=lambda text: Script(pool, text))
channel = ChannelView(id=1, name='c1', type='openai', base_url='http://x', models=('m',),
                      keys=(ChannelKeyView(id=10, secret='sk', since=0.0),), limits=Limits(), key_limits=Limits())
plan = Plan((channel,), (Route(channel, channel.keys[0], 'm'),))
pool.refresh()
on = lambda account: pool.node_of(redis_keys.account_key(account))[1]
stuck = next(a for a in range(1, 200) if on(a) == stopped)
live = [a for a in range(1, 200) if on(a) != stopped][:20]
quota = Quota(redis_py_client(url))
n = [0]
def request(account):
    n[0] += 1
    admission = gate.admit(MoneyHold(f'req_{account}_{n[0]}', account, account, 1_000, None, 2e9), (), plan)
    gate.settle(admission, 105, b'{}', 1, Outcome(Effect.OK, 1, 10))
for account in [stuck, *live]:
    quota.seed_account(account, 10**9)
    request(account)  # scripts loaded, connections pooled
print('ready', flush=True)
sys.stdin.readline()  # the master is stopped now
# Two waves, each with a request for the stopped master among them: the first's call is out and
# waits; the second's would share a batch with the live ones if batches mixed masters.
waiting = [gevent.spawn(request, stuck)]
gevent.sleep(0.2)
waiting.append(gevent.spawn(request, stuck))
gevent.joinall([gevent.spawn(request, a) for a in live], raise_error=True)
print('live served', len(live), 'while stuck ready:', any(g.ready() for g in waiting), flush=True)
sys.stdin.readline()  # the master runs again
gevent.joinall(waiting)
print('stuck served:', all(g.successful() for g in waiting), flush=True)
"""


def test_a_hung_master_holds_up_its_own_accounts_only(cluster):
    """A master that stops answering (SIGSTOP: its connections stay open, nothing is refused) holds up
    the calls of its own buckets and channels: the relay batches them per master, so requests of
    accounts on the other masters (over a channel elsewhere too) are admitted and settled meanwhile,
    and the waiting one is served once the master runs again."""
    channel_master = owner(cluster, "sb:{c1}:x")
    stopped = next(n for n in cluster.nodes if n is not channel_master)
    env = {**os.environ, "REDIS_URL": cluster.url, "SWITCHBOARD_REDIS_MONEY_BUCKETS": "16"}
    proc = subprocess.Popen([sys.executable, "-c", _HUNG, str(stopped.port)], env=env, cwd=ROOT, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == "ready"
        os.kill(stopped.proc.pid, signal.SIGSTOP)
        try:
            proc.stdin.write("stopped\n")
            proc.stdin.flush()
            assert proc.stdout.readline().strip() == "live served 20 while stuck ready: False"
        finally:
            os.kill(stopped.proc.pid, signal.SIGCONT)
        proc.stdin.write("running\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "stuck served: True"
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()


# Run with the cluster's REDIS_URL: the relay's Gate, through its lean client, over six channels
# with limits on everything (the caller's key, user and group, each channel and its keys), a pin
# per conversation and the capacity queue's plain path; a failover from one channel to the next for
# every fifth request and a dead key once. Prints what the test checks.
_SPREAD = """
from gevent import monkey
monkey.patch_all()
import json, os, gevent
from relay import redis_keys
from relay.admission import Gate, MoneyHold
from relay.affinity import Affinity
from relay.capacity_queue import spot_for
from relay.health import Effect, HealthPolicy, Outcome
from relay.limits import Scope
from relay.quota import Quota
from relay.redis_connect import redis_py_client
from relay.resp import Script, connect_pool
from relay.selector import Plan, Route
from relay.snapshot import ChannelKeyView, ChannelView, Limits

url = os.environ['REDIS_URL']
pool = connect_pool(url)
client = redis_py_client(url)
gate = Gate(client, HealthPolicy(), lease_seconds=600, register=lambda text: Script(pool, text))
limited = Limits(rpm=10_000, tpm=10_000_000, concurrency=100)
channels = [ChannelView(id=c, name=f'c{c}', type='openai', base_url='http://x', models=('m',), limits=limited, key_limits=limited,
                        keys=tuple(ChannelKeyView(id=10 * c + i, secret='sk', since=0.0) for i in range(2))) for c in range(1, 7)]
quota = Quota(client)
for account in range(1, 61):
    quota.seed_account(account, 10**9)
outcomes = {'served': 0, 'failovers': 0, 'dead': 0, 'pins': set()}
def request(n):
    account = n % 60 + 1
    first, second = channels[n % 6], channels[(n + 1) % 6]
    plan = Plan((first, second), tuple(Route(c, k, 'm') for c in (first, second) for k in c.keys))
    scopes = (Scope(f'k:{account}', limited, redis_keys.account_limits_prefix(account)),
              Scope('u:3', limited, redis_keys.user_limits_prefix(3)), Scope('g:default', limited, redis_keys.group_limits_prefix('default')))
    pin = Affinity(redis_keys.affinity_key(account, 'conversation'), 'prefix', 60)
    admission = gate.admit(MoneyHold(f'req_{n}', account, account, 1_000, None, 2e9), scopes, plan, affinity=pin,
                           queue=spot_for('m', plan.channels))
    outcomes['pins'].add(admission.pinned)
    if n % 5 == 0:
        route = admission.route
        dead = n == 25
        failed = Outcome(Effect.DEAD_KEY if dead else Effect.FAILURE, route.channel.id, route.key.id, kind='auth' if dead else 'transient')
        remaining = [r for r in plan.routes if r.channel.id != route.channel.id]
        nxt, _, record = gate.failover(admission, failed, remaining)
        assert nxt is not None and nxt.channel.id != route.channel.id, (nxt, record)
        outcomes['failovers'] += 1
        outcomes['dead'] += record[0] == 'dead'
    route = admission.route
    assert gate.settle(admission, 105, b'{}', 50, Outcome(Effect.OK, route.channel.id, route.key.id))[0]
    outcomes['served'] += 1
for wave in range(10):
    gevent.joinall([gevent.spawn(request, wave * 30 + g) for g in range(30)], raise_error=True)
now = gate.clock()
leases = [redis_keys.lease_key(redis_keys.channel_prefix(c.id), f'c:{c.id}') for c in channels]
leases += [redis_keys.lease_key(redis_keys.user_limits_prefix(3), 'u:3'), redis_keys.lease_key(redis_keys.group_limits_prefix('default'), 'g:default')]
leases += [redis_keys.lease_key(redis_keys.account_limits_prefix(a), f'k:{a}') for a in range(1, 61)]
books = [client.hmget(redis_keys.account_key(a), 'bal', 'held') for a in range(1, 61)]
print(json.dumps({'served': outcomes['served'], 'failovers': outcomes['failovers'], 'dead': outcomes['dead'],
                  'pins': sorted(outcomes['pins']), 'leased': sum(client.zcard(k) for k in leases),
                  'spent': sum(10**9 - int(b) for b, _ in books), 'held': sum(int(h or 0) for _, h in books),
                  'reports': client.xlen(redis_keys.HEALTH_REPORTS),
                  'channel_masters': len({pool.node_of(redis_keys.channel_health_key(c.id)) for c in channels})}))
"""


def test_routing_state_spreads_over_the_masters_with_a_tag_per_channel(cluster):
    """With the money spread, each channel's limits and health (and its keys') are under the
    channel's tag, a user's and a group's limits and a capacity queue under their own, so every call
    of a request touches one slot and the channels' calls land on several masters. 300 requests with
    limits on every scope, pins, the queue's plain path, a failover for every fifth and a dead key:
    all served, each charged once, every lease given back, the dead key reported once."""
    for node in cluster.nodes:
        node.client().flushall()
    env = {**os.environ, "REDIS_URL": cluster.url, "SWITCHBOARD_REDIS_MONEY_BUCKETS": "16"}
    out = subprocess.run([sys.executable, "-c", _SPREAD], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout)
    assert seen == {"served": 300, "failovers": 60, "dead": 1, "pins": seen["pins"], "leased": 0, "spent": 105 * 300,
                    "held": 0, "reports": 1, "channel_masters": seen["channel_masters"]}
    # Each account's conversation: new the first time, then mostly back on the key that served it
    # (moved when the failures ejected its key or channel).
    assert {"kept", "new"} <= set(seen["pins"]) <= {"kept", "moved", "new"}
    assert seen["channel_masters"] >= 2
    # Nothing a request touches is under `{sb}` but the dead key's report.
    shared = [k for node in cluster.nodes for k in node.client().scan_iter(match="sb:{sb}:*")]
    assert shared == [b"sb:{sb}:health:reports"]
