"""The control plane: the SQL data model, the ledger, the consoles, the admin API and the CLI.

Import-light: `create_app` is imported lazily so the `switchboard` entry point can patch gevent
before Flask, SQLAlchemy or Redis are loaded.
"""


def create_app(settings=None):
    from controlplane.app import create_app as _create_app

    return _create_app(settings)


__all__ = ["create_app"]
