"""Fixtures shared by every layer: real Redis and PostgreSQL, apps on both SQL back ends."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.services import PostgresDatabase, RedisSlot, unavailable

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def redis_slot():
    try:
        slot = RedisSlot()
    except Exception as error:  # noqa: BLE001 - any failure means "not reachable"
        unavailable("Redis", error)
    yield slot
    slot.release()


@pytest.fixture
def redis_client(redis_slot):
    redis_slot.client.flushdb()
    yield redis_slot.client


@pytest.fixture(scope="session")
def postgres_db():
    try:
        database = PostgresDatabase()
    except Exception as error:  # noqa: BLE001
        unavailable("PostgreSQL", error)
    yield database
    database.drop()


class FreshContextClient:
    """Mixin for the test client: each request runs in an app context of its own, as in a server.

    Tests hold an app context for direct database access; without this, requests would share its
    `g` (and Flask-WTF's cached CSRF token) across requests. After a request the test's own
    session ends its transaction so it sees what the request committed.
    """

    def open(self, *args, **kwargs):
        from flask import has_app_context

        from controlplane.extensions import db

        with self.application.app_context():
            response = super().open(*args, **kwargs)
        if has_app_context():
            db.session.commit()
        return response


def build_app(database_url: str, redis_url: str, instance: Path):
    from flask_migrate import upgrade

    from controlplane.app import create_app
    from controlplane.settings import Settings
    from relay.cipher import Cipher
    from relay.client_ip import parse_networks
    from relay.settings import RelaySettings
    from tests.fakes import dns

    key = Cipher.generate_key()
    # The fake upstreams listen on loopback: opened explicitly, as an operator opens a range.
    loopback = parse_networks("127.0.0.0/8 ::1/128")
    settings = Settings(
        database_url=database_url,
        redis_url=redis_url,
        secret_key="test-secret",
        encryption_key=key,
        instance_dir=instance,
        testing=True,
        relay=RelaySettings(redis_url=redis_url, encryption_key=key, instance_dir=instance, egress_allow=loopback),
    )
    from flask.testing import FlaskClient

    app = create_app(settings)
    app.extensions["switchboard"].resolver = dns.resolve  # names in tests never need the machine's DNS
    app.test_client_class = type("TestClient", (FreshContextClient, FlaskClient), {})
    with app.app_context():
        upgrade()
    return app


def clean_tables(app) -> None:
    from controlplane.extensions import db

    with app.app_context():
        for table in reversed(db.metadata.sorted_tables):
            db.session.execute(table.delete())
        db.session.commit()


@pytest.fixture(scope="session")
def sqlite_app(tmp_path_factory, redis_slot):
    instance = tmp_path_factory.mktemp("sqlite-instance")
    return build_app(f"sqlite:///{instance / 'test.db'}", redis_slot.url, instance)


@pytest.fixture(scope="session")
def postgres_app(tmp_path_factory, redis_slot, postgres_db):
    instance = tmp_path_factory.mktemp("pg-instance")
    return build_app(postgres_db.sqlalchemy_url, redis_slot.url, instance)


@pytest.fixture
def app(sqlite_app, redis_client):
    """The control plane on SQLite, with empty tables and an empty Redis, inside an app context."""
    clean_tables(sqlite_app)
    with sqlite_app.app_context():
        yield sqlite_app


@pytest.fixture(params=["sqlite", "postgres"])
def sql_app(request, redis_client):
    """The control plane on each SQL back end in turn (the SQL matrix)."""
    backend = request.getfixturevalue(f"{request.param}_app")
    clean_tables(backend)
    with backend.app_context():
        yield backend


@pytest.fixture
def client(app):
    return app.test_client()
