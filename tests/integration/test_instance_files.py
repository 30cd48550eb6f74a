"""The instance folder is the owner's alone: the folder 0700, every file in it 0600 — secrets, the
SQLite database with its WAL files, and the embedded Redis's append-only file — whatever the umask
of the process that created them, and files an older version left readable are tightened."""
from __future__ import annotations

import os
import stat
from contextlib import contextmanager
from pathlib import Path

import redis

from controlplane import instance
from controlplane.embedded_redis import EmbeddedRedis


@contextmanager
def lax_umask():
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def modes(folder: Path) -> dict[str, str]:
    found = {}
    for path in (folder, *folder.rglob("*")):
        mode = path.lstat().st_mode
        if stat.S_ISDIR(mode) or stat.S_ISREG(mode):
            found[str(path.relative_to(folder))] = oct(stat.S_IMODE(mode))
    return found


def test_secrets_and_the_sqlite_database_are_owner_only(tmp_path, redis_slot):
    from flask_migrate import upgrade
    from sqlalchemy import text

    from controlplane.app import create_app
    from controlplane.extensions import db
    from controlplane.settings import Settings

    folder = tmp_path / "instance"
    with lax_umask():
        settings = Settings.from_env({"SWITCHBOARD_INSTANCE": str(folder), "REDIS_URL": redis_slot.url})
        app = create_app(settings)
        with app.app_context():
            upgrade()
            db.session.execute(text("SELECT 1"))
            db.session.remove()
            db.engine.dispose()
    found = modes(folder)
    assert {"switchboard.db", "secret.key", "encryption.key"} <= set(found)
    assert found.pop(".") == "0o700"
    assert set(found.values()) == {"0o600"}, found


def test_files_an_older_version_left_readable_are_tightened(tmp_path):
    folder = tmp_path / "old"
    folder.mkdir(mode=0o755)
    (folder / "switchboard.db").write_bytes(b"")
    (folder / "switchboard.db").chmod(0o644)
    (folder / "redis").mkdir(mode=0o755)
    (folder / "redis" / "appendonly.aof").write_bytes(b"")
    (folder / "redis" / "appendonly.aof").chmod(0o644)
    instance.ensure_dir(folder)
    assert modes(folder) == {".": "0o700", "switchboard.db": "0o600", "redis": "0o700", "redis/appendonly.aof": "0o600"}


def test_the_embedded_redis_writes_owner_only_files(tmp_path):
    folder = tmp_path / "instance"
    embedded = EmbeddedRedis(folder)
    with lax_umask():
        url = embedded.acquire()
    try:
        client = redis.Redis.from_url(url)
        client.set("balance", "1")
        client.execute_command("BGREWRITEAOF")
        client.close()
    finally:
        embedded.release()
    found = modes(folder / "redis")
    assert any("aof" in name for name in found), found
    assert found.pop(".") == "0o700"
    assert {name: mode for name, mode in found.items() if mode not in ("0o600", "0o700")} == {}
    assert all(mode == "0o600" for name, mode in found.items() if (folder / "redis" / name).is_file())
