"""The real coding agents, at pinned versions, installed from npm into a cache reused between runs.

Each version lives in its own folder (`~/.cache/switchboard-e2e-clients/<package>@<version>`); a
new pin installs beside the old ones. Installing needs the npm registry: where it cannot be reached
the tests skip, saying so, except in CI (`CI` or `SWITCHBOARD_TEST_REQUIRE_SERVICES=1`), where a
run that tried no real client must not pass.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

CACHE = Path(os.environ.get("SWITCHBOARD_E2E_CLIENTS_CACHE") or Path.home() / ".cache" / "switchboard-e2e-clients")
REQUIRED = bool(os.environ.get("CI")) or os.environ.get("SWITCHBOARD_TEST_REQUIRE_SERVICES") == "1"


@dataclass(frozen=True)
class Program:
    package: str
    version: str
    command: str

    @property
    def folder(self) -> Path:
        return CACHE / f"{self.package.replace('/', '+')}@{self.version}"

    @property
    def executable(self) -> Path:
        return self.folder / "node_modules" / ".bin" / self.command


# The versions docs/clients.md records as tried. Raise a pin there and here together.
CLAUDE_CODE = Program("@anthropic-ai/claude-code", "2.1.332", "claude")
CODEX = Program("@openai/codex", "0.171.0", "codex")
GEMINI_CLI = Program("@google/gemini-cli", "0.61.0", "gemini")


def unavailable(reason: str):
    if REQUIRED:
        pytest.fail(reason + " (CI: the real-client tests may not be skipped)")
    pytest.skip(reason)


def _npm(*args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(["npm", *args, "--no-audit", "--no-fund", "--no-update-notifier", "--loglevel=error"],
                          check=False, capture_output=True, text=True, timeout=timeout)


def install(program: Program) -> Path:
    """The program's executable, installed on first use (one installer at a time per version)."""
    done = program.folder / ".installed"
    if done.exists() and program.executable.exists():
        return program.executable
    if shutil.which("npm") is None:
        unavailable("npm is not installed: cannot install " + program.package)
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f".{program.folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists() and program.executable.exists():  # another session installed it meanwhile
            return program.executable
        spec = f"{program.package}@{program.version}"
        try:
            seen = _npm("view", spec, "version", timeout=60)
        except subprocess.TimeoutExpired:
            seen = None
        if seen is None or seen.returncode != 0:
            unavailable(f"the npm registry is not reachable, cannot install {spec}: {seen.stderr.strip()[-300:] if seen else 'timed out'}")
        if seen.stdout.strip() != program.version:
            pytest.fail(f"npm has no {spec} (it answered {seen.stdout.strip()!r})")
        shutil.rmtree(program.folder, ignore_errors=True)
        program.folder.mkdir(parents=True)
        # Install scripts stay on: Claude Code's postinstall links its platform binary into place.
        result = _npm("install", "--prefix", str(program.folder), "--no-save", spec, timeout=600)
        if result.returncode != 0 or not program.executable.exists():
            pytest.fail(f"npm install {spec} failed:\n{result.stderr[-2000:]}")
        done.write_text(spec + "\n")
    return program.executable
