"""Connection caps: per client address (an IPv6 /64 counts as one client), trusted proxies counted
only in the total, and a released connection makes room again."""
from __future__ import annotations

from relay.client_ip import parse_networks
from relay.edge import ConnectionCaps


def test_one_address_is_capped_and_release_makes_room():
    caps = ConnectionCaps(total=10, per_ip=2)
    first, second = caps.admit("198.51.100.7"), caps.admit("198.51.100.7")
    assert first[0] and second[0]
    assert caps.admit("198.51.100.7") == (False, None)
    assert caps.admit("198.51.100.8")[0]  # another client is not affected
    caps.release(first[1])
    assert caps.admit("198.51.100.7")[0]


def test_an_ipv6_64_is_one_client():
    caps = ConnectionCaps(total=10, per_ip=2)
    assert caps.admit("2001:db8:1:2::1")[0] and caps.admit("2001:db8:1:2:ffff::9")[0]
    assert not caps.admit("2001:db8:1:2::77")[0]
    assert caps.admit("2001:db8:1:3::1")[0]


def test_trusted_proxies_count_only_toward_the_total():
    caps = ConnectionCaps(total=3, per_ip=1, exempt=parse_networks("10.0.0.0/8"))
    assert [caps.admit("10.0.0.2")[0] for _ in range(3)] == [True, True, True]
    assert caps.admit("10.0.0.2") == (False, None)  # the total still holds
    assert caps.open == 3 and caps.by_ip == {}
