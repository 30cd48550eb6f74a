"""Fixtures shared by every layer: real Redis and PostgreSQL, apps on both SQL back ends."""
from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest
from hypothesis import settings

from tests.services import PostgresDatabase, RedisSlot, unavailable

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
E2E_TIMEOUT_SECONDS = 360
PACKAGE_FIXTURE = re.compile(r"@pytest\.fixture\(.*scope=.package.")

# Properties are checked on their examples, never on how long one took: Hypothesis's per-example
# deadline fails pure arithmetic when the machine is busy (parallel workers, other runs).
settings.register_profile("switchboard", deadline=None)
settings.load_profile("switchboard")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Under pytest-xdist (`make test` runs `-n 2`), a test module runs whole on one worker, as in a
    serial run: its module-scoped fixtures (a gateway, fake upstreams) start once, and tests that read
    what earlier tests of the module left find it. A package whose conftest.py has a package-scoped
    fixture (one `switchboard up` for the package) runs whole on one worker too."""
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        def __init__(self, config, log=None):
            super().__init__(config, log)
            # Units go out in collection order: the long ones first (pytest_collection_modifyitems).
            config.option.loadscopereorder = False

        def _split_scope(self, nodeid: str) -> str:
            return xdist_unit(nodeid.split("::", 1)[0])

    return ModuleScheduling(config, log)


@functools.cache
def xdist_unit(module: str) -> str:
    """The module, or the package sharing a package-scoped fixture that holds it."""
    folder = (ROOT / module).parent
    while folder != TESTS:
        conftest = folder / "conftest.py"
        if conftest.exists() and PACKAGE_FIXTURE.search(conftest.read_text()):
            return str(folder.relative_to(ROOT))
        folder = folder.parent
    return module


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    # pytest-xdist runs one item per node id: two items sharing one would leave tests silently unrun.
    seen: set[str] = set()
    shared = sorted({item.nodeid for item in items if item.nodeid in seen or seen.add(item.nodeid)})
    if shared:
        raise pytest.UsageError(f"tests share node ids (pytest-xdist would run only one of each): {shared[:5]}")
    heavy = set()
    for item in items:
        if item.get_closest_marker("e2e") or item.get_closest_marker("browser"):
            heavy.add(xdist_unit(item.nodeid.split("::", 1)[0]))
            # The first test of a module or package bears the setup of its fixtures (a gateway, its
            # channels and prices: a CLI process each), which takes minutes on a busy machine. The
            # timeout is there to stop a hang, not to time a setup.
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(E2E_TIMEOUT_SECONDS))
    if hasattr(config, "workerinput"):
        # Under pytest-xdist the units that start real processes come first, so that no worker is
        # left running a long one after the other has run out of work.
        items.sort(key=lambda item: xdist_unit(item.nodeid.split("::", 1)[0]) not in heavy)


@pytest.fixture(scope="module")
def upstream():
    """A fake OpenAI-compatible upstream on a real socket, one per test module (modules needing
    another shape define their own `upstream`)."""
    from tests.fakes.openai_server import FakeOpenAI

    fake = FakeOpenAI()
    yield fake
    fake.close()


@pytest.fixture(params=["one-script", "split"])
def admission_layout(request, monkeypatch):
    """A module that asks for this (`pytestmark = pytest.mark.usefixtures("admission_layout")`) runs
    each test twice: with the relays it makes admitting and settling in one script each, as on one
    Redis server, and split into a call per slot touched, as on a Redis Cluster with the money
    spread (relay/admission.py), here on the one server."""
    from tests import relay_harness

    monkeypatch.setattr(relay_harness, "ADMISSION_SPLIT", request.param == "split")
    return request.param


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


def build_app(database_url: str, redis_url: str, instance: Path, encryption_key: str | None = None):
    from flask_migrate import upgrade

    from controlplane.app import create_app
    from controlplane.settings import Settings
    from relay.cipher import Cipher
    from relay.client_ip import parse_networks
    from relay.settings import RelaySettings
    from tests.fakes import dns

    key = encryption_key or Cipher.generate_key()
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
    """Empty every table a test wrote to. Most tests touch a few of the tables: one query finds
    those, and only they are emptied (a DELETE on each of the others would cost a write each)."""
    from controlplane.extensions import db

    tables = [table.name for table in reversed(db.metadata.sorted_tables)]  # children before their parents
    with app.app_context():
        connection = db.session.connection()
        written = " UNION ALL ".join(f"SELECT '{name}' WHERE EXISTS (SELECT 1 FROM \"{name}\")" for name in tables)
        dirty = {name for (name,) in connection.exec_driver_sql(written)}
        for name in tables:
            if name in dirty:
                connection.exec_driver_sql(f'DELETE FROM "{name}"')
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
