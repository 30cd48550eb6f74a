"""Redis over TLS: a real redis-server that speaks only TLS and wants a client certificate, reached
by the relay's lean client and by redis-py through the same URL (relay/redis_connect.py)."""
from __future__ import annotations

from urllib.parse import urlencode

import pytest
import requests
from redis.exceptions import ConnectionError as RedisConnectionError

from relay.quota import Quota
from relay.redis_connect import parse, redis_py_client
from relay.resp import RespPool, Script
from tests.redis_servers import Certificates, RedisServer, make_certificates

ENV = ("SWITCHBOARD_REDIS_CA", "SWITCHBOARD_REDIS_CERT", "SWITCHBOARD_REDIS_KEY")


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory):
    folder = tmp_path_factory.mktemp("redis-tls")
    certs = make_certificates(folder)
    server = RedisServer(folder / "server", tls=certs)
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def no_tls_env(monkeypatch):
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


def url_of(server: RedisServer, certs: Certificates, db: int = 0, host: str = "127.0.0.1") -> str:
    query = urlencode({"ssl_ca_certs": certs.ca, "ssl_certfile": certs.client_cert, "ssl_keyfile": certs.client_key})
    return f"rediss://{host}:{server.port}/{db}?{query}"


def test_the_url_names_the_tls_options():
    target = parse("rediss://u:p%40ss@redis.internal:6380/3?ssl_ca_certs=/ca.pem&ssl_certfile=/c.pem&ssl_keyfile=/k.pem", env={})
    assert (target.host, target.port, target.db, target.username, target.password) == ("redis.internal", 6380, 3, "u", "p@ss")
    assert target.tls is not None and (target.tls.ca, target.tls.cert, target.tls.key) == ("/ca.pem", "/c.pem", "/k.pem")
    from_env = parse("rediss://redis.internal", env={"SWITCHBOARD_REDIS_CA": "/env-ca.pem"})
    assert from_env.tls is not None and from_env.tls.ca == "/env-ca.pem" and from_env.port == 6379
    assert parse("redis://redis.internal", env={"SWITCHBOARD_REDIS_CA": "/env-ca.pem"}).tls is None


def test_the_lean_client_runs_scripts_over_tls(tls_redis):
    pool = RespPool(url_of(tls_redis, tls_redis.tls, db=1), size=2)
    script = Script(pool, "redis.call('SET', KEYS[1], ARGV[1]) return redis.call('GET', KEYS[1])")
    assert script(keys=["tls:k"], args=["over tls"]) == b"over tls"
    assert script(keys=["tls:k"], args=["again"]) == b"again"  # the pooled TLS connection, by sha
    assert tls_redis.client(db=1).get("tls:k") == b"again"


def test_the_options_may_come_from_the_environment(tls_redis, monkeypatch):
    certs = tls_redis.tls
    monkeypatch.setenv("SWITCHBOARD_REDIS_CA", certs.ca)
    monkeypatch.setenv("SWITCHBOARD_REDIS_CERT", certs.client_cert)
    monkeypatch.setenv("SWITCHBOARD_REDIS_KEY", certs.client_key)
    url = f"rediss://localhost:{tls_redis.port}/2"  # the certificate names localhost too
    client = redis_py_client(url)
    client.set("tls:env", "from redis-py")
    assert Script(RespPool(url), "return redis.call('GET', KEYS[1])")(keys=["tls:env"]) == b"from redis-py"
    assert tls_redis.client(db=2).get("tls:env") == b"from redis-py"


def test_a_server_the_ca_does_not_vouch_for_is_refused(tls_redis, tmp_path):
    stranger = make_certificates(tmp_path)  # another CA: right names, wrong signer
    query = urlencode({"ssl_ca_certs": stranger.ca, "ssl_certfile": tls_redis.tls.client_cert, "ssl_keyfile": tls_redis.tls.client_key})
    url = f"rediss://127.0.0.1:{tls_redis.port}/0?{query}"
    with pytest.raises(RedisConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        Script(RespPool(url, timeout=2), "return 1")()
    with pytest.raises(RedisConnectionError):
        redis_py_client(url, socket_timeout=2).ping()


def test_without_a_client_certificate_the_server_refuses(tls_redis):
    url = f"rediss://127.0.0.1:{tls_redis.port}/0?{urlencode({'ssl_ca_certs': tls_redis.tls.ca})}"
    with pytest.raises(RedisConnectionError):
        Script(RespPool(url, timeout=2), "return 1")()


def test_plain_tcp_to_a_tls_port_fails_rather_than_talking_in_clear(tls_redis):
    with pytest.raises(RedisConnectionError):
        Script(RespPool(f"redis://127.0.0.1:{tls_redis.port}/0", timeout=2), "return 1")()


def test_a_relay_and_the_control_plane_work_over_tls(tls_redis, tmp_path):
    """The whole path: the control plane publishes and credits over TLS (redis-py), a relay process
    admits and settles over TLS (the lean client) and follows the snapshot (redis-py)."""
    from tests import factories
    from tests.conftest import build_app
    from tests.fakes.openai_server import FakeOpenAI
    from tests.relay_process import RelayProcess

    url = url_of(tls_redis, tls_redis.tls, db=3)
    app = build_app(f"sqlite:///{tmp_path / 'tls.db'}", url, tmp_path)
    upstream = FakeOpenAI()
    try:
        with app.app_context():
            factories.price("gpt-4o-mini", input="3", output="15")
            user = factories.funded_user("10")
            _, secret = factories.api_key(user)
            factories.channel(upstream.url, keys_=("sk-up-1",))
            account_id = user.account_id
        with RelayProcess(app.config["SWITCHBOARD"].relay_settings()) as relay:
            for _ in range(3):
                reply = requests.post(relay.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {secret}"},
                                      json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}, timeout=15)
                assert reply.status_code == 200, reply.text
        # 12 in, 5 out at $3 / $15 per 1M tokens: 111 µ$ a request, settled in the TLS Redis.
        assert Quota(tls_redis.client(db=3)).account(account_id) == (10_000_000 - 3 * 111, 0)
    finally:
        upstream.close()
