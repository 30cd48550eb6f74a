"""The control plane as a WSGI application for gunicorn: `gunicorn -k gevent wsgi:app`, which is what
`switchboard web` runs. gevent is patched before anything else is imported, as every gevent worker
needs; with no REDIS_URL the embedded Redis under the instance folder is used (shared by workers)."""
from gevent import monkey

monkey.patch_all()

from controlplane.cli.group import make_app  # noqa: E402 - after the patch, on purpose
from relay import logs  # noqa: E402

logs.configure()  # SWITCHBOARD_LOG_FORMAT=json: one JSON object a line, with the request id
app = make_app()
