"""Running N relay processes on one port: bind once, fork, every child serves the shared socket.

SIGTERM (or SIGINT) drains: the parent closes its copy of the listening socket and tells every
child, each child closes its own and lets what is in flight finish (up to `drain_seconds`), so once
all copies are closed new connections are refused; the parent exits 0 when every child has.
Metrics: each process writes its own files under one directory the parent empties at start
(relay/telemetry.py), and a scrape of any process reads them all.
"""
from __future__ import annotations

import gc
import logging
import os
import signal
import sys
from types import FrameType
from typing import Any

from relay.settings import RelaySettings

log = logging.getLogger(__name__)

GC_THRESHOLDS = (20_000, 20, 20)


def metrics_dir(settings: RelaySettings) -> Any:
    """Where this relay's processes keep their metric files: SWITCHBOARD_METRICS_DIR, or `metrics/`
    under the instance folder, then one folder per port (two relays on one machine do not mix)."""
    from pathlib import Path

    base = Path(os.environ.get("SWITCHBOARD_METRICS_DIR") or settings.instance_dir / "metrics")
    return base / f"relay-{settings.port}"


def serve_processes(settings: RelaySettings, processes: int = 1) -> None:
    from gevent import socket as gsocket

    from relay.telemetry import prepare_multiprocess, process_ended

    listener = gsocket.socket(gsocket.AF_INET, gsocket.SOCK_STREAM)
    listener.setsockopt(gsocket.SOL_SOCKET, gsocket.SO_REUSEADDR, 1)
    listener.bind((settings.host, settings.port))
    listener.listen(2048)
    # The port is ours: so is its metrics folder (emptied before anything builds a metric).
    prepare_multiprocess(metrics_dir(settings))

    from relay.server import build_relay, make_server, start_follower

    log.info("relay on %s:%s with %d process(es)", settings.host, settings.port, processes)

    def run() -> None:
        import gevent

        serving: list[tuple[Any, Any]] = []
        draining: list[bool] = []

        def drain() -> None:
            if draining:
                return  # the parent forwards the signal the process group may also have sent
            draining.append(True)
            if serving:
                app, server = serving[0]
                gevent.spawn(_drain, app, server, settings.drain_seconds)

        # Before the slow start (the snapshot's load): a signal that arrives while a process is still
        # starting must not find SIGTERM's default action and kill it; it stops before serving instead.
        # Held for the process's life, as gevent asks of a handler that should keep working.
        handlers = [gevent.signal_handler(signal.SIGTERM, drain), gevent.signal_handler(signal.SIGINT, drain)]
        app = build_relay(settings)
        server = make_server(listener, app, settings)
        app.attach(server)
        serving.append((app, server))
        if draining:
            log.info("stopped while starting: nothing was served")
            return
        start_follower(app)
        # Everything loaded so far (modules, the snapshot) lives as long as the process: keep it out
        # of the collector's full passes, which otherwise walk it every time and stall every stream.
        gc.freeze()
        # The default young-generation pass every 700 allocations re-walks every in-flight request's
        # objects many times over; every 20,000 cost ~6% less relay CPU per stream on average over
        # five alternating bench runs. Garbage in cycles waits a little longer; nothing else changes.
        gc.set_threshold(*GC_THRESHOLDS)
        server.serve_forever()
        for handler in handlers:
            handler.cancel()

    if processes == 1:
        run()
        return
    children = []
    for _ in range(processes):
        pid = os.fork()
        if pid == 0:
            try:
                from gevent import reinit

                reinit()
                run()
            finally:
                os._exit(0)
        children.append(pid)

    def forward(signum: int, _frame: FrameType | None) -> None:
        try:
            listener.close()  # the children's copies close as they drain: then nothing accepts
        except OSError:
            pass
        for pid in children:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    failed = 0
    for pid in children:
        while True:
            try:
                _, status = os.waitpid(pid, 0)
            except InterruptedError:
                continue
            except ChildProcessError:
                break
            code = os.waitstatus_to_exitcode(status)
            if code != 0:
                failed += 1
                log.error("relay process %d ended %s", pid, f"by signal {-code}" if code < 0 else f"with status {code}")
            process_ended(pid)
            break
    sys.exit(1 if failed else 0)


def _drain(app: Any, server: Any, seconds: float) -> None:
    log.info("draining: %d request(s) in flight, up to %g s", server.in_flight, seconds)
    clean = server.drain(seconds)
    app.flush_metrics()
    log.info("drained%s", "" if clean else " (requests past the deadline were cut and settled for what they delivered)")
