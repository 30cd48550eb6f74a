"""An admission whose reply never reaches the relay: Redis ran the admit script (the hold is made)
but the connection broke before the answer came back, as when Redis is killed between writing its
append-only file and replying. The caller gets a 503 and nobody will settle that request, so the
relay journals the request as abandoned and releases its hold once Redis answers, instead of
leaving the customer's money held until the hold expires.

The fault is real: a TCP proxy in front of a real Redis passes the admit command on and then cuts
the relay's connection instead of passing Redis's reply back. The relay uses its own lean RESP
client (relay/resp.py) through it, as in production."""
from __future__ import annotations

import hashlib
import socket
import threading
from dataclasses import replace

import pytest
from werkzeug.test import Client

from relay import admission_scripts
from relay.journal import PREFIX, Abandoned, decode_line
from relay.quota import Quota
from relay.server import build_relay, replay_journals
from controlplane.services import limits as limit_service
from tests import factories
from tests.fakes.openai_server import FakeOpenAI
from tests.relay_harness import assert_money_consistent, ingest

ADMIT_SHA = hashlib.sha1(admission_scripts.PER_REQUEST.encode(), usedforsecurity=False).hexdigest().encode()


class ReplyCutter:
    """A TCP proxy to Redis. Armed with a marker, it forwards the next command that contains it and
    then closes that caller's connection instead of handing back Redis's reply."""

    def __init__(self, port: int):
        self.target = ("127.0.0.1", port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.marker: bytes | None = None
        self.cut = threading.Event()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                caller, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            doomed = threading.Event()  # this connection's next reply is not passed on
            threading.Thread(target=self._to_server, args=(caller, server, doomed), daemon=True).start()
            threading.Thread(target=self._to_caller, args=(server, caller, doomed), daemon=True).start()

    def _to_server(self, caller: socket.socket, server: socket.socket, doomed: threading.Event) -> None:
        try:
            while data := caller.recv(65536):
                if self.marker is not None and self.marker in data:
                    self.marker = None
                    doomed.set()
                server.sendall(data)
        except OSError:
            pass

    def _to_caller(self, server: socket.socket, caller: socket.socket, doomed: threading.Event) -> None:
        try:
            while data := server.recv(65536):
                if doomed.is_set():
                    self.cut.set()
                    break
                caller.sendall(data)
        except OSError:
            pass
        for end in (caller, server):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            end.close()

    def close(self) -> None:
        self.closed = True
        self.listener.close()


@pytest.fixture
def world(sql_app, redis_client):
    app = sql_app
    where = redis_client.connection_pool.connection_kwargs
    cutter = ReplyCutter(where["port"])
    fake = FakeOpenAI()
    try:
        factories.price("gpt-4o-mini", input="3", output="15")
        user = factories.funded_user("10")
        api_key, secret = factories.api_key(user)
        limit_service.set_limits(factories.ACTOR, api_key, concurrency=1)  # a lost admission's slot shows
        factories.channel(fake.url)
        settings = replace(app.config["SWITCHBOARD"].relay_settings(), redis_url=f"redis://127.0.0.1:{cutter.port}/{where['db']}")
        relay = build_relay(settings)  # no Redis client given: the per-request scripts go through the lean client
        yield relay, Client(relay), cutter, secret, user.account_id
    finally:
        cutter.close()
        fake.close()


def chat(client: Client, key: str):
    return client.post("/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                       json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}]})


def journal_lines(relay) -> list[bytes]:
    folder = relay.settings.instance_dir / "journal"
    return [line for path in folder.glob(f"{PREFIX}*") for line in path.read_bytes().splitlines() if line.strip()]


def test_an_admission_whose_reply_was_lost_is_refused_and_its_hold_released_once_redis_answers(world, redis_client):
    relay, client, cutter, key, account_id = world
    relay.holder.refresh()
    assert chat(client, key).status_code == 200  # the scripts are loaded and a connection is pooled
    quota = Quota(redis_client)
    balance = quota.account(account_id)[0]

    cutter.marker = ADMIT_SHA
    refused = chat(client, key)
    assert cutter.cut.is_set()
    assert refused.status_code == 503 and refused.json["error"]["code"] == "service_unavailable"
    assert quota.open_holds() == 1 and quota.account(account_id)[1] > 0  # Redis did make the hold
    lines = journal_lines(relay)
    assert len(lines) == 1 and isinstance(decode_line(lines[0]), Abandoned)
    assert chat(client, key).status_code == 429  # the key's one concurrent request: the lost admission took it

    replay_journals(relay.pipeline, once=True)
    assert quota.open_holds() == 0 and quota.account(account_id) == (balance, 0)  # released, uncharged
    assert journal_lines(relay) == []
    replay_journals(relay.pipeline, once=True)  # a second replay changes nothing
    assert quota.account(account_id) == (balance, 0)

    assert chat(client, key).status_code == 200  # its slot given back too: the relay serves on
    ingest()
    assert_money_consistent(redis_client)


def test_a_lost_admission_with_an_idempotency_key_frees_the_key_once_redis_answers(world, redis_client):
    """The lost admit had marked the Idempotency-Key in progress: until the journal's replay a retry
    is told so (the relay cannot know whether Redis ran it); after it, the retry runs and is charged
    once, instead of the key reading "in progress" until the request's lease ends."""
    relay, client, cutter, key, account_id = world
    relay.holder.refresh()
    assert chat(client, key).status_code == 200
    headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": "retry-me"}
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}]}

    cutter.marker = ADMIT_SHA
    assert client.post("/v1/chat/completions", headers=headers, json=body).status_code == 503
    assert client.post("/v1/chat/completions", headers=headers, json=body).status_code == 409  # in progress, as far as Redis knows
    [line] = journal_lines(relay)
    assert decode_line(line).claim  # journaled with the hold

    replay_journals(relay.pipeline, once=True)
    retried = client.post("/v1/chat/completions", headers=headers, json=body)
    assert retried.status_code == 200 and "Idempotent-Replayed" not in retried.headers
    assert client.post("/v1/chat/completions", headers=headers, json=body).headers["Idempotent-Replayed"] == "true"
    ingest()
    assert_money_consistent(redis_client)
