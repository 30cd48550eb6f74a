"""`up`'s child processes: started, restarted when they die, stopped with `up` — and never outliving it.

Parent side: `Supervisor` runs each child, restarts one that exits with an exponential backoff (reset
once it has stayed up a while), and on stop sends SIGTERM, waits, then kills what is left.

Child side: `die_with_parent()` makes a child of `up` exit when `up` does, however `up` ended: the
kernel sends it SIGTERM when its parent dies (PR_SET_PDEATHSIG on Linux; a watcher thread that notices
the new parent sends it elsewhere), the child shuts down as on any SIGTERM, and the watcher ends it
hard if that has not happened within a minute.
"""
from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess  # starts our own commands with fixed arguments, never a shell  # nosec B404
import sys
import threading
import time
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

PARENT_ENV = "SWITCHBOARD_SUPERVISOR_PID"
FIRST_DELAY = 1.0  # seconds before the first restart
MAX_DELAY = 30.0
STABLE_AFTER = 30.0  # a child up this long starts again from FIRST_DELAY when it next dies
STOP_GRACE = 10.0  # seconds a stopping child gets before `up` kills it
ORPHAN_GRACE = 60.0  # seconds an orphaned child gets to finish its job and shut down before it exits hard
_PR_SET_PDEATHSIG = 1


@dataclass
class Child:
    name: str
    args: list[str]  # `switchboard` arguments
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    delay: float = FIRST_DELAY
    restart_at: float | None = None  # when a dead child is due to start again
    restarts: int = 0
    pids: list[int] = field(default_factory=list)  # every process it has been, newest last


class Supervisor:
    def __init__(self, children: dict[str, list[str]], env: dict[str, str], poll_seconds: float = 0.2):
        self.children = [Child(name, list(args)) for name, args in children.items()]
        self.env = {**env, PARENT_ENV: str(os.getpid())}
        self.poll_seconds = poll_seconds
        self.stopping = False

    def _spawn(self, child: Child) -> None:
        child.proc = subprocess.Popen([sys.executable, "-m", "controlplane", *child.args], env=self.env)  # our own CLI, argv from code  # nosec B603
        child.started_at = time.monotonic()
        child.restart_at = None
        child.pids.append(child.proc.pid)

    def start(self) -> None:
        for child in self.children:
            self._spawn(child)

    def check(self) -> None:
        """Notice dead children and restart the ones whose backoff has passed."""
        now = time.monotonic()
        for child in self.children:
            if self.stopping:
                return
            if child.restart_at is None:
                code = child.proc.poll()
                if code is None:
                    continue
                if now - child.started_at >= STABLE_AFTER:
                    child.delay = FIRST_DELAY
                child.restart_at = now + child.delay
                log.warning("%s (pid %s) exited with %s; restarting in %.0f s", child.name, child.proc.pid, code, child.delay)
                child.delay = min(child.delay * 2, MAX_DELAY)
            elif now >= child.restart_at:
                self._spawn(child)
                child.restarts += 1

    def watch(self) -> None:
        """Run `check` until stopped (in a greenlet under `up`)."""
        while not self.stopping:
            try:
                self.check()
            except Exception:  # the watch must outlive any one failed start
                log.exception("supervising the child processes failed; trying again")
            time.sleep(self.poll_seconds)

    def stop(self, grace: float = STOP_GRACE) -> None:
        self.stopping = True
        running = [c.proc for c in self.children if c.proc is not None and c.proc.poll() is None]
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in running:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _set_parent_death_signal(sig: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent: int, every: float, grace: float, signalled: bool) -> None:
    while os.getppid() == parent:
        time.sleep(every)
    log.warning("the supervising process %s is gone; stopping", parent)
    if not signalled:  # the kernel sent nothing: ask for the process's own clean shutdown
        os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(grace)  # a clean shutdown (its last job, unregistering from Redis) gets this long
    os._exit(1)


def _exit(*_) -> None:
    """SIGTERM before the command installed its own handler: unregister from the embedded Redis (the
    last one out stops it) and exit at once, whatever the process was in the middle of starting."""
    group = sys.modules.get("controlplane.cli.group")
    embedded = getattr(group, "_embedded", None)
    if embedded is not None:
        embedded.release()
    os._exit(0)


def die_with_parent(every: float = 1.0, grace: float = ORPHAN_GRACE) -> bool:
    """In a child of `up` (PARENT_ENV names it): exit when `up` exits, and say True. Elsewhere: False."""
    parent = int(os.environ.get(PARENT_ENV) or 0)
    if not parent:
        return False
    # Until the command installs its own handler (RQ's warm shutdown), SIGTERM unregisters and exits;
    # so does SIGINT, which Ctrl-C sends the whole process group (`up` and a child still starting).
    signal.signal(signal.SIGTERM, _exit)
    signal.signal(signal.SIGINT, _exit)
    armed = _set_parent_death_signal(signal.SIGTERM)
    if os.getppid() != parent:  # it died before the signal was armed
        sys.exit(0)
    threading.Thread(target=_watch_parent, args=(parent, every, grace, armed), name="parent-watch", daemon=True).start()
    return True


__all__ = ["PARENT_ENV", "Supervisor", "die_with_parent"]
