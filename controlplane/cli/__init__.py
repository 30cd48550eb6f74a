"""`switchboard`: the management CLI and the process launcher (a Flask CLI group).

`main()` patches gevent before anything else is imported when the command serves traffic, and turns
every error into one line on stderr with a non-zero exit: never a traceback.
"""
from __future__ import annotations

import os
import sys

SERVING = {"up", "relay", "web"}


def _serving(argv: list[str]) -> bool:
    return any(arg in SERVING for arg in argv[:3])


def main(argv: list[str] | None = None) -> None:
    from controlplane.cli.supervision import die_with_parent

    if die_with_parent():  # a child of `up` follows it from its first moment, before the slow imports,
        from controlplane.cli.group import ensure_redis_url

        ensure_redis_url()  # and registers with the embedded Redis at once, so the last one out stops it
    argv = list(sys.argv[1:] if argv is None else argv)
    os.umask(0o077)  # whatever we write (instance folder, SQLite, exports) is the owner's alone
    if _serving(argv):
        from gevent import monkey

        monkey.patch_all()
        try:
            from psycogreen.gevent import patch_psycopg  # optional: only if psycopg2 is used

            patch_psycopg()
        except ImportError:
            pass
    os.environ.setdefault("FLASK_RUN_FROM_CLI", "false")

    import click

    from controlplane.cli.group import cli
    from controlplane.errors import ServiceError

    try:
        code = cli.main(args=argv, prog_name="switchboard", standalone_mode=False)
        if isinstance(code, int) and code:  # a command's `Exit(n)`: click returns it rather than raising it here
            sys.exit(code)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.exceptions.Abort:
        print("error: aborted", file=sys.stderr)
        sys.exit(130)
    except click.ClickException as error:
        print(f"error: {error.format_message()}", file=sys.stderr)
        sys.exit(error.exit_code or 2)
    except ServiceError as error:
        where = f" ({error.field})" if error.field else ""
        print(f"error: {error.message}{where}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as error:  # the last line of defence: one line, and a hint where to look
        print(f"error: {type(error).__name__}: {error}", file=sys.stderr)
        sys.exit(1)
