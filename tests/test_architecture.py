"""The import direction of style.md: the relay depends on nothing of the control plane or workers."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {"relay": {"controlplane", "workers"}}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_does_not_import_what_it_must_not(package):
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) & FORBIDDEN[package])
        for path in (ROOT / package).rglob("*.py")
        if imported_packages(path) & FORBIDDEN[package]
    }
    assert offenders == {}


def test_relay_package_import_is_light():
    """Importing `relay` must not patch gevent or pull in the server."""
    tree = ast.parse((ROOT / "relay" / "__init__.py").read_text())
    assert not [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]


def test_every_channel_type_has_an_adapter_with_capabilities():
    from relay.adapters import CHANNEL_TYPES, REGISTRY

    assert CHANNEL_TYPES
    for channel_type in CHANNEL_TYPES:
        adapter = REGISTRY[channel_type]
        assert adapter.info.type == channel_type
        assert adapter.info.capabilities, f"{channel_type} declares no capability"


# A request's charge has one owner (relay/billing.py): nothing else in the relay settles a hold,
# releases one, or writes or replays the settle journal. The primitives, by the name they are
# called by: the gate's and the quota's settle scripts, the hold sweep, the ways a charge is
# settled (a success, a partial stream, a failure), and the journal's own.
SETTLE_PRIMITIVES = {"settle", "release_expired", "succeed", "partial", "fail", "_succeed", "_partial", "_fail"}
JOURNAL_PRIMITIVES = {"append", "replay_own", "replay_orphans"}
CHARGE_OWNER = "relay/billing.py"


def _receiver_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return None


def settle_calls(path: Path) -> list[str]:
    """The settle primitives `path` calls, as `receiver.name` at line N."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        name, receiver = node.func.attr, _receiver_name(node.func.value)
        if name in SETTLE_PRIMITIVES or (name in JOURNAL_PRIMITIVES and receiver == "journal"):
            found.append(f"{receiver}.{name} at line {node.lineno}")
    return found


def test_only_the_charge_settles_releases_or_journals_a_hold():
    callers = {str(path.relative_to(ROOT)): calls for path in sorted((ROOT / "relay").rglob("*.py")) if (calls := settle_calls(path))}
    assert set(callers) == {CHARGE_OWNER}, callers


def test_attempts_the_router_and_streams_do_not_know_the_charge():
    """They return typed results (relay/attempt.py) and a stream calls its one end hook; only the
    pipeline opens a charge (and the idempotency record reads how it ended)."""
    importers = {
        str(path.relative_to(ROOT))
        for path in (ROOT / "relay").rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.ImportFrom) and node.module == "relay.billing"
        and {alias.name for alias in node.names} & {"Charge", "Charges"}
    }
    assert importers == {"relay/pipeline.py", "relay/idempotency.py"}
