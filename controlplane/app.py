"""The Flask application factory for the control plane."""
from __future__ import annotations

import logging
from pathlib import Path

from flask import Flask, jsonify, request
from sqlalchemy import event
from sqlalchemy.engine import Engine

from controlplane import instance
from controlplane.extensions import csrf, db, login_manager, migrate
from controlplane.proxies import TrustedProxies
from controlplane.runtime import Runtime
from controlplane.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS = Path(__file__).resolve().parent / "migrations"


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection, connection_record):
    """SQLite serves several processes (web, worker): WAL and a busy timeout keep them polite."""
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        cursor = dbapi_connection.cursor()
        # The database file owner-only before WAL mode: SQLite gives -wal and -shm the file's mode.
        for _, name, path in cursor.execute("PRAGMA database_list").fetchall():
            if name == "main" and path:
                instance.owner_only(Path(path))
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    app = Flask(
        __name__,
        template_folder=str(ROOT / "templates"),
        static_folder=str(Path(__file__).resolve().parent / "static"),
    )
    app.config.update(
        SECRET_KEY=settings.secret_key,
        SQLALCHEMY_DATABASE_URI=settings.database_url,
        SQLALCHEMY_ENGINE_OPTIONS={"pool_pre_ping": True},
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.secure_cookies,
        REMEMBER_COOKIE_SECURE=settings.secure_cookies,
        WTF_CSRF_TIME_LIMIT=None,
        TESTING=settings.testing,
        SWITCHBOARD=settings,
    )
    db.init_app(app)
    from controlplane import changes

    changes.install(db.session)
    migrate.init_app(app, db, directory=str(MIGRATIONS), render_as_batch=True)
    login_manager.init_app(app)
    csrf.init_app(app)
    app.extensions["switchboard"] = Runtime.build(settings)
    app.wsgi_app = TrustedProxies(app.wsgi_app, settings.trusted_proxies)

    from controlplane import auth, filters, headers, stripe_webhook
    from controlplane.admin import register as register_admin
    from controlplane.api import register as register_api
    from controlplane.console import register as register_console

    auth.init_app(app)
    filters.init_app(app)
    headers.init_app(app)
    register_admin(app)
    register_console(app)
    register_api(app)
    stripe_webhook.init_app(app)  # POST /stripe/webhook: card payments credited from Stripe's signed events

    from controlplane import operations

    operations.init_app(app)  # /healthz, /readyz, /metrics, request ids

    @app.errorhandler(404)
    def not_found(error):
        if request.accept_mimetypes.best == "application/json" or request.path.startswith("/admin/api"):
            return jsonify(error={"message": "Not found", "code": "not_found"}), 404
        from flask import render_template

        return render_template("errors/404.html"), 404

    @app.errorhandler(403)
    def forbidden(error):
        if request.accept_mimetypes.best == "application/json" or request.path.startswith("/admin/api"):
            return jsonify(error={"message": "Your role does not allow this.", "code": "forbidden"}), 403
        from flask import render_template

        return render_template("errors/403.html"), 403

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    return app
