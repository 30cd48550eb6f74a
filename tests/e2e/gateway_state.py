"""Looking inside a running `switchboard up`: a control-plane app on the same SQLite file and embedded
Redis, for assertions on request logs, channel states and the ledger; plus a second relay process."""
from __future__ import annotations

import subprocess
import sys
import time
from contextlib import contextmanager

import requests

from tests.gateway import ROOT, Gateway, free_port


def state_app(gateway: Gateway):
    from controlplane.app import create_app
    from controlplane.settings import Settings
    from relay.settings import RelaySettings

    instance = gateway.instance
    settings = Settings(
        database_url=f"sqlite:///{instance / 'switchboard.db'}",
        redis_url=f"unix://{instance / 'redis' / 'redis.sock'}",
        secret_key="inspector",
        encryption_key=(instance / "encryption.key").read_text().strip(),
        instance_dir=instance,
        relay=RelaySettings.from_env(gateway.env),
    )
    return create_app(settings)


@contextmanager
def inspecting(app):
    """An app context whose session sees what the gateway committed, fresh on entry."""
    from controlplane.extensions import db

    with app.app_context():
        db.session.expire_all()
        yield
        db.session.rollback()


class SecondRelay:
    """`switchboard relay` on its own port, sharing the gateway's Redis and configuration."""

    def __init__(self, gateway: Gateway):
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, "-m", "controlplane", "relay", "--port", str(self.port), "--host", "127.0.0.1"],
                                     cwd=ROOT, env=gateway.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if requests.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                time.sleep(0.1)
        raise RuntimeError("the second relay did not start")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def wait_for_snapshot(redis, *relay_urls: str, timeout: float = 10) -> None:
    """Until every relay has loaded the latest published snapshot."""
    from relay import config_store

    wanted = int(redis.get(config_store.VERSION_KEY) or 0)
    deadline = time.time() + timeout
    for url in relay_urls:
        while requests.get(url + "/v1/healthz", timeout=2).json()["snapshot_version"] < wanted:
            if time.time() > deadline:
                raise AssertionError(f"{url} never loaded snapshot v{wanted}")
            time.sleep(0.05)
