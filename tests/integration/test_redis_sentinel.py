"""Redis behind Sentinel: real redis-servers (a master and its replica) and a sentinel on local
ports. The relay's lean client and redis-py ask the sentinel for the master (relay/redis_connect.py),
and after a failover — ordered (SENTINEL FAILOVER) or forced (the master killed) — they find the new
one and the relay keeps serving, every request charged exactly once."""
from __future__ import annotations

import pytest
import requests
from redis.sentinel import MasterNotFoundError
from redis.exceptions import ConnectionError as RedisConnectionError

from relay.quota import Quota
from relay.redis_connect import parse, redis_py_client
from relay.resp import RespPool, Script
from tests.redis_servers import RedisServer, sentinel_config, wait_until

SERVICE = "sb"
SMALL_CHAT = 111  # the fake's usage (12 in, 5 out) at $3 / $15 per 1M tokens, in µ$
FUNDS = 10_000_000


class Pair:
    """A master, its replica and a sentinel watching them."""

    def __init__(self, folder):
        self.nodes = [RedisServer(folder / "a")]
        self.nodes.append(RedisServer(folder / "b", "--replicaof", "127.0.0.1", str(self.nodes[0].port)))
        self.sentinel = RedisServer(folder / "sentinel", config=sentinel_config(SERVICE, self.nodes[0].port), sentinel=True)
        wait_until(lambda: self.nodes[1].client().info("replication")["master_link_status"] == "up", what="the replica in sync")
        # The sentinel must know the replica before it can promote it.
        wait_until(lambda: any("s_down" not in r["flags"] for r in self.sentinel.client().sentinel_slaves(SERVICE)), what="the sentinel to see the replica")

    @property
    def url(self) -> str:
        return f"redis-sentinel://127.0.0.1:{self.sentinel.port}/{SERVICE}"

    def master_port(self) -> int:
        return int(self.sentinel.client().sentinel_get_master_addr_by_name(SERVICE)[1])

    def node(self, port: int) -> RedisServer:
        return next(n for n in self.nodes if n.port == port)

    def replicated(self) -> None:
        """Every write so far is on the replica too (so a failover loses none)."""
        assert self.node(self.master_port()).client().wait(1, 5000) == 1

    def failed_over_from(self, old: int) -> int:
        """Waits until the sentinel names another master and that node says it is one."""
        def moved():
            port = self.master_port()
            return port if port != old and self.node(port).client().execute_command("ROLE")[0] == b"master" else None
        return wait_until(moved, timeout=30, what="the failover")

    def stop(self) -> None:
        self.sentinel.stop()
        for node in self.nodes:
            node.stop()


@pytest.fixture
def pair(tmp_path):
    found = Pair(tmp_path)
    yield found
    found.stop()


def test_the_url_names_sentinels_service_and_database():
    target = parse("redis-sentinel://:secret@10.0.0.1:26379,10.0.0.2,[::1]:26380/main/2?sentinel_password=s3", env={})
    assert target.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26379), ("::1", 26380))
    assert (target.service, target.db, target.password, target.sentinel_password, target.tls) == ("main", 2, "secret", "s3", None)
    assert parse("rediss-sentinel://h/main", env={"SWITCHBOARD_REDIS_CA": "/ca.pem"}).tls.ca == "/ca.pem"
    with pytest.raises(ValueError, match="names the service"):
        parse("redis-sentinel://h:26379", env={})


def read_by_redis_py(url: str, key: str) -> bytes:
    """redis-py's read after a failover, once the sentinel has settled it (for a moment it can flag
    the new master down, and redis-py then finds no master)."""
    def read():
        try:
            return redis_py_client(url).get(key)
        except MasterNotFoundError:
            return None
    return wait_until(read, timeout=10, what="redis-py on the new master")


def test_the_lean_client_follows_the_master_when_it_dies(pair):
    pool = RespPool(pair.url, size=4, timeout=2)
    incr = Script(pool, "return redis.call('INCR', KEYS[1])")
    assert [incr(keys=["n"]) for _ in range(3)] == [1, 2, 3]
    pair.replicated()
    old = pair.master_port()
    pair.node(old).kill()
    new = pair.failed_over_from(old)

    def served():
        try:
            return incr(keys=["n"])
        except RedisConnectionError:
            return None  # the connections to the dead master, one by one; then the sentinel's answer
    assert wait_until(served, timeout=10, what="the lean client on the new master") == 4
    assert pool.master == ("127.0.0.1", new)
    assert read_by_redis_py(pair.url, "n") == b"4"  # redis-py, through the same URL


def test_a_relay_keeps_serving_through_failovers(pair, tmp_path):
    """Ordered failover first (the old master lives on, demoted: pooled connections to it answer
    READONLY), then the new master killed (connections drop): the relay serves on, and the live
    balance on whichever node is master is exact."""
    from tests import factories
    from tests.conftest import build_app
    from tests.fakes.openai_server import FakeOpenAI
    from tests.relay_process import RelayProcess

    app = build_app(f"sqlite:///{tmp_path / 'sentinel.db'}", pair.url, tmp_path)
    upstream = FakeOpenAI()
    try:
        with app.app_context():
            factories.price("gpt-4o-mini", input="3", output="15")
            user = factories.funded_user("10")
            _, secret = factories.api_key(user)
            factories.channel(upstream.url, keys_=("sk-up-1",))
            account_id = user.account_id
        served = 0

        def chat() -> int:
            reply = requests.post(relay.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {secret}"},
                                  json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}, timeout=20)
            return reply.status_code

        def balance() -> tuple[int, int]:
            return Quota(pair.node(pair.master_port()).client()).account(account_id)

        with RelayProcess(app.config["SWITCHBOARD"].relay_settings()) as relay:
            assert [chat() for _ in range(3)] == [200] * 3
            served += 3
            pair.replicated()
            first = pair.master_port()
            pair.sentinel.client().execute_command("SENTINEL", "FAILOVER", SERVICE)
            second = pair.failed_over_from(first)
            wait_until(lambda: pair.node(first).client().execute_command("ROLE")[0] == b"slave", what="the old master demoted")
            # Every request after an ordered failover is served: a READONLY answer is sent again to the new master.
            assert [chat() for _ in range(5)] == [200] * 5
            served += 5
            assert balance() == (FUNDS - served * SMALL_CHAT, 0)

            wait_until(lambda: pair.node(first).client().info("replication")["master_link_status"] == "up", what="the old master re-synced")
            pair.replicated()
            pair.node(second).kill()
            assert pair.failed_over_from(second) == first
            # Requests in the gap fail before anything is held; once the sentinel names the new master they are served.
            wait_until(lambda: chat() == 200, timeout=20, what="the relay serving again")
            served += 1
            assert [chat() for _ in range(3)] == [200] * 3
            served += 3
            assert balance() == (FUNDS - served * SMALL_CHAT, 0)
    finally:
        upstream.close()


def test_a_dead_sentinel_is_skipped_and_an_unknown_service_is_a_connection_error(pair):
    from tests.gateway import free_port

    dead = free_port()
    url = f"redis-sentinel://127.0.0.1:{dead},127.0.0.1:{pair.sentinel.port}/{SERVICE}/1"
    assert Script(RespPool(url, timeout=2), "return redis.call('SET', KEYS[1], 'one')")(keys=["k"]) == b"OK"
    assert pair.node(pair.master_port()).client(db=1).get("k") == b"one"  # on the master, in the URL's database
    assert redis_py_client(url).get("k") == b"one"
    with pytest.raises(RedisConnectionError, match="no sentinel named a master for nobody"):
        Script(RespPool(f"redis-sentinel://127.0.0.1:{pair.sentinel.port}/nobody", timeout=2), "return 1")()


def test_a_replica_the_sentinel_still_names_is_not_written_to(pair):
    """A sentinel's answer can be stale: the lean client checks ROLE and refuses a node that is not master."""
    pool = RespPool(pair.url, size=1, timeout=2)
    pool.master = ("127.0.0.1", pair.nodes[1].port)  # as if the sentinel had named the replica
    with pytest.raises(RedisConnectionError, match="is not the master"):
        Script(pool, "return redis.call('SET', KEYS[1], 'x')")(keys=["k"])
    assert Script(pool, "return redis.call('SET', KEYS[1], 'x')")(keys=["k"]) == b"OK"  # asked again: the real master
    assert pool.master == ("127.0.0.1", pair.nodes[0].port)


def test_sentinel_over_tls(tmp_path):
    """rediss-sentinel://: TLS to the sentinel and to the master (CA and client certificate named in
    the URL), for the lean client and redis-py, and the master found again after it dies."""
    from urllib.parse import urlencode

    from tests.redis_servers import make_certificates

    certs = make_certificates(tmp_path)
    master = RedisServer(tmp_path / "a", tls=certs)
    replica = RedisServer(tmp_path / "b", "--replicaof", "127.0.0.1", str(master.port), "--tls-replication", "yes", tls=certs)
    sentinel = RedisServer(tmp_path / "s", config=sentinel_config(SERVICE, master.port), sentinel=True, tls=certs)
    try:
        wait_until(lambda: replica.client().info("replication")["master_link_status"] == "up", what="the replica in sync")
        wait_until(lambda: any("s_down" not in r["flags"] for r in sentinel.client().sentinel_slaves(SERVICE)), what="the sentinel to see the replica")
        query = urlencode({"ssl_ca_certs": certs.ca, "ssl_certfile": certs.client_cert, "ssl_keyfile": certs.client_key})
        url = f"rediss-sentinel://127.0.0.1:{sentinel.port}/{SERVICE}?{query}"
        incr = Script(RespPool(url, size=2, timeout=2), "return redis.call('INCR', KEYS[1])")
        assert incr(keys=["n"]) == 1
        assert redis_py_client(url).get("n") == b"1"
        assert master.client().wait(1, 5000) == 1
        master.kill()

        def served():
            try:
                return incr(keys=["n"])
            except RedisConnectionError:
                return None
        assert wait_until(served, timeout=30, what="the lean client on the new master") == 2
        assert replica.client().get("n") == b"2"  # the replica is the master now
        assert read_by_redis_py(url, "n") == b"2"
    finally:
        sentinel.stop()
        replica.stop()
        master.stop()
