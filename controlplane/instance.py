"""The instance folder: generated secrets (written once, 0600) and the embedded SQLite database."""
from __future__ import annotations

import os
import secrets
from pathlib import Path

from relay.cipher import Cipher


def ensure_dir(instance_dir: Path) -> Path:
    instance_dir.mkdir(parents=True, exist_ok=True)
    return instance_dir


def ensure_secret(instance_dir: Path, name: str, make) -> str:
    """Return the secret stored under `name`, generating it the first time (owner-only file)."""
    path = ensure_dir(instance_dir) / name
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        value = make()
        handle.write(value + "\n")
    return value


def session_secret(instance_dir: Path) -> str:
    return ensure_secret(instance_dir, "secret.key", lambda: secrets.token_urlsafe(48))


def encryption_secret(instance_dir: Path) -> str:
    return ensure_secret(instance_dir, "encryption.key", Cipher.generate_key)
