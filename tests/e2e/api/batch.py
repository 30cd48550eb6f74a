"""Setting up a gateway's world faster: independent CLI commands run a few at a time (each one is
a Python process that starts the control plane, about a second of imports)."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from tests.gateway import Gateway


def cli_all(gateway: Gateway, commands: list[tuple[str, ...]], workers: int = 4) -> list[dict]:
    """Run independent `switchboard` commands concurrently; results in the order given."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda args: gateway.cli(*args), commands))
