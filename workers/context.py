"""Running a job inside an app context, making one (once per process) when none is active."""
from __future__ import annotations

import functools

from flask import has_app_context


@functools.lru_cache(maxsize=1)
def process_app():
    from controlplane.cli.group import ensure_redis_url
    from controlplane.app import create_app

    ensure_redis_url()
    return create_app()


def in_app_context(job):
    @functools.wraps(job)
    def wrapped(*args, **kwargs):
        if has_app_context():
            return job(*args, **kwargs)
        with process_app().app_context():
            return job(*args, **kwargs)

    return wrapped
