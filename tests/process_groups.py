"""Stopping a test's child process together with everything it started (children run in a session
of their own, `start_new_session=True`, so their process group is theirs alone)."""
from __future__ import annotations

import os
import signal
import subprocess


def kill(proc: subprocess.Popen, wait: float = 5) -> None:
    """Gone at once, as a crashed machine is."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(wait)


def stop(proc: subprocess.Popen, grace: float = 10) -> None:
    """SIGTERM, and SIGKILL after `grace` seconds."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            kill(proc)
