"""The instance folder: generated secrets, the embedded SQLite database and Redis's files — all
readable by the owner only (the folder 0700, every file in it 0600)."""
from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from relay.cipher import Cipher

DIR_MODE = 0o700
FILE_MODE = 0o600
_tightened: set[Path] = set()


def ensure_dir(instance_dir: Path) -> Path:
    """The folder, created owner-only; the first call in a process also tightens what an older
    version left readable to others."""
    instance_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    if instance_dir not in _tightened:
        tighten(instance_dir)
        _tightened.add(instance_dir)
    return instance_dir


def tighten(folder: Path) -> None:
    """Folders 0700, regular files 0600, below and including `folder` (sockets keep their own mode)."""
    for path in (folder, *folder.rglob("*")):
        try:
            mode = path.lstat().st_mode
            if stat.S_ISDIR(mode) and stat.S_IMODE(mode) != DIR_MODE:
                path.chmod(DIR_MODE)
            elif stat.S_ISREG(mode) and stat.S_IMODE(mode) != FILE_MODE:
                path.chmod(FILE_MODE)
        except OSError:  # gone meanwhile, or not ours
            continue


def owner_only(path: Path) -> None:
    """A file another program created (SQLite, Redis): 0600 if it is not already."""
    try:
        if stat.S_IMODE(path.stat().st_mode) != FILE_MODE:
            path.chmod(FILE_MODE)
    except OSError:
        pass


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
