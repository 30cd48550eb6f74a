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
