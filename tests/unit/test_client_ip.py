"""Behind trusted proxies the client is the client; spoofed headers from anyone else are ignored."""
from __future__ import annotations

import pytest

from relay.client_ip import client_address, parse_networks

PROXIES = parse_networks("10.0.0.0/8, fd00::/8")


@pytest.mark.parametrize("peer,xff,fwd,expected", [
    # no trusted proxies configured: the peer, whatever it claims
    ("203.0.113.9", "1.2.3.4", None, "203.0.113.9"),
    # an untrusted peer's spoofed headers are ignored
    ("198.51.100.7", "1.2.3.4", 'for=1.2.3.4', "198.51.100.7"),
    # one trusted hop: the address it appended
    ("10.0.0.2", "203.0.113.9", None, "203.0.113.9"),
    # a client-sent entry left of the real one is not believed
    ("10.0.0.2", "6.6.6.6, 203.0.113.9", None, "203.0.113.9"),
    # several trusted hops walked from the right
    ("10.0.0.2", "6.6.6.6, 203.0.113.9, 10.1.1.1, 10.2.2.2", None, "203.0.113.9"),
    # ports and brackets as some proxies write them
    ("10.0.0.2", "[2001:db8::1]:443", None, "2001:db8::1"),
    ("10.0.0.2", "203.0.113.9:5123", None, "203.0.113.9"),
    # garbage ends the walk at the last trusted hop
    ("10.0.0.2", "6.6.6.6, not-an-ip, 10.3.3.3", None, "10.3.3.3"),
    ("10.0.0.2", "", None, "10.0.0.2"),
    # only trusted hops: the leftmost one
    ("10.0.0.2", "10.9.9.9", None, "10.9.9.9"),
    # RFC 7239 when there is no X-Forwarded-For
    ("10.0.0.2", None, 'for=6.6.6.6, for="[2001:db8:cafe::17]:4711";proto=https', "2001:db8:cafe::17"),
    ("10.0.0.2", None, 'for=6.6.6.6;by=10.0.0.2, for=unknown', "10.0.0.2"),
    ("fd00::5", None, 'For="198.51.100.4"', "198.51.100.4"),
    # IPv4-mapped peers (dual-stack sockets) match IPv4 networks
    ("::ffff:10.0.0.2", "203.0.113.9", None, "203.0.113.9"),
    ("::ffff:198.51.100.7", "1.2.3.4", None, "198.51.100.7"),
])
def test_client_address(peer, xff, fwd, expected):
    trusted = PROXIES if peer != "203.0.113.9" else ()
    assert client_address(peer, xff, fwd, trusted) == expected


def test_unreadable_peer_is_returned_as_is():
    assert client_address("", "1.2.3.4", None, PROXIES) == ""
    assert client_address("unix", "1.2.3.4", None, PROXIES) == "unix"


def test_parse_networks_rejects_garbage():
    assert parse_networks("") == ()
    assert [str(n) for n in parse_networks("127.0.0.1 192.168.0.0/16")] == ["127.0.0.1/32", "192.168.0.0/16"]
    with pytest.raises(ValueError, match="nope"):
        parse_networks("10.0.0.0/8,nope")
