"""Code arithmetic: the ±1 step window, malformed input, and recovery codes people can type back."""
from __future__ import annotations

from controlplane import totp

SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
NOW = 1_790_000_000.0


def test_a_code_matches_its_own_step_and_one_either_side():
    step = totp.current_step(NOW)
    for offset in (-1, 0, 1):
        assert totp.matching_step(SECRET, totp.code_at(SECRET, step + offset), NOW) == step + offset


def test_a_code_two_steps_away_is_refused():
    step = totp.current_step(NOW)
    assert totp.matching_step(SECRET, totp.code_at(SECRET, step - 2), NOW) is None
    assert totp.matching_step(SECRET, totp.code_at(SECRET, step + 2), NOW) is None


def test_spaces_are_ignored_and_anything_but_six_digits_refused():
    code = totp.code_at(SECRET, totp.current_step(NOW))
    assert totp.matching_step(SECRET, f" {code[:3]} {code[3:]} ", NOW) is not None
    for bad in ("", "12345", "1234567", "abcdef", code + "0", "²²²²²²", "١٢٣٤٥٦"):  # other digits were a 500
        assert totp.matching_step(SECRET, bad, NOW) is None
    assert not totp.looks_like_totp("²²²²²²")


def test_the_setup_uri_names_the_issuer_and_the_person():
    uri = totp.provisioning_uri(SECRET, "ana@example.com")
    assert uri.startswith("otpauth://totp/Switchboard:ana%40example.com?") and f"secret={SECRET}" in uri and "issuer=Switchboard" in uri


def test_recovery_codes_are_distinct_and_hash_the_same_however_typed():
    codes = totp.new_recovery_codes()
    assert len(codes) == len(set(codes)) == 10
    assert all(len(c) == 19 and c.count("-") == 3 for c in codes)
    code = codes[0]
    assert totp.recovery_hash(code) == totp.recovery_hash(code.upper().replace("-", " ")) != totp.recovery_hash(codes[1])
    assert not totp.looks_like_totp(code)
