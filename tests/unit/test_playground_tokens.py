"""Playground tokens: signed for one key until a time; anything else is not a token."""
from __future__ import annotations

from relay import playground

KEY = playground.signing_key("an encryption key")


def test_a_token_names_its_key_until_it_expires():
    token = playground.mint(KEY, 42, 1_000)
    assert token.startswith(playground.PREFIX)
    assert playground.verify(KEY, token, 999.9) == 42
    assert playground.verify(KEY, token, 1_000) is None


def test_changed_or_foreign_tokens_are_refused():
    token = playground.mint(KEY, 42, 1_000)
    body, _, signature = token.rpartition(".")
    assert playground.verify(KEY, token.replace(".1000.", ".9999."), 0) is None
    assert playground.verify(KEY, token.replace("-42.", "-43."), 0) is None
    assert playground.verify(KEY, body + "." + signature[::-1], 0) is None
    assert playground.verify(playground.signing_key("another key"), token, 0) is None
    for junk in ("", "sk-sbpg-", "sk-sbpg-x.y.z", "sk-sb-abc", "sk-sbpg-42.1000"):
        assert playground.verify(KEY, junk, 0) is None


def test_the_signing_key_is_not_the_encryption_key():
    assert b"an encryption key" not in KEY and len(KEY) == 32


def test_text_that_is_not_ascii_is_not_a_token():
    """Both were a 500 at the relay: "²" passes str.isdigit but not int(), and compare_digest refuses
    non-ASCII text."""
    token = playground.mint(KEY, 42, 1_000)
    assert playground.verify(KEY, token + "é", 0) is None
    assert playground.verify(KEY, f"{playground.PREFIX}4².1000.{token.rpartition('.')[2]}", 0) is None
