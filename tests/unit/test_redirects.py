"""A `next` target is a path on this site or nothing: every form a browser reads as elsewhere is refused."""
from __future__ import annotations

import pytest

from controlplane.redirects import safe_next


@pytest.mark.parametrize("target", [
    "/\t/evil.example/", "/\n/evil.example/", "/\r\n/evil.example/", "/x\x00", "/x\x7f",
    "//evil.example/", "/\\evil.example/", "\\\\evil.example", "/\\/evil.example",
    "https://evil.example/", "javascript:alert(1)", "http:/evil.example", "evil.example",
    " /admin/", "", None, "/" + "a" * 3000,
])
def test_unsafe_targets_are_refused(target):
    assert safe_next(target) is None


@pytest.mark.parametrize("target", ["/", "/keys?page=2", "/admin/channels/3#keys", "/%2F%2Fevil.example"])
def test_paths_on_this_site_pass(target):
    assert safe_next(target) == target


def test_a_prefix_narrows_the_targets():
    assert safe_next("/admin/channels/", prefix="/admin/") == "/admin/channels/"
    assert safe_next("/keys", prefix="/admin/") is None
