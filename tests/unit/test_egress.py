"""The egress policy: public addresses pass; private space only where an operator opened it; link-local,
metadata, unspecified, multicast and reserved never; hidden encodings are judged as what they hide."""
from __future__ import annotations

import ipaddress

import pytest

from relay.client_ip import parse_networks
from relay.egress import Egress, EgressPolicy, EgressRefused, target_of

STRICT = EgressPolicy()
OPENED = EgressPolicy(parse_networks("127.0.0.0/8 ::1/128 10.0.0.0/8 fc00::/7 100.64.0.0/10 0.0.0.0/0 ::/0"))


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.215.14", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"])
def test_public_addresses_pass(address):
    assert STRICT.permits(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.0.0.2", "::1",  # loopback
    "10.1.2.3", "172.16.0.1", "192.168.1.1", "fd12::1", "fc00::1",  # RFC 1918, unique local
    "100.64.0.1", "100.127.255.254",  # CGNAT
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "64:ff9b::7f00:1", "2002:7f00:1::1",  # IPv4 inside IPv6
    "192.0.2.1", "198.18.0.1",  # documentation, benchmarking
])
def test_private_space_is_refused_unless_opened(address):
    assert not STRICT.permits(ipaddress.ip_address(address))
    assert OPENED.permits(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", [
    "169.254.169.254", "169.254.1.1", "fe80::1", "fd00:ec2::254", "100.100.100.200",  # link-local and metadata
    "0.0.0.0", "0.1.2.3", "::",  # unspecified
    "224.0.0.1", "239.255.255.250", "ff02::1",  # multicast
    "240.0.0.1", "255.255.255.255",  # reserved, broadcast
    "::ffff:169.254.169.254",
])
def test_never_even_when_everything_is_opened(address):
    assert not OPENED.permits(ipaddress.ip_address(address))


@pytest.mark.parametrize("host", ["2130706433", "0x7f000001", "0177.0.0.1", "127.1", "0x7f.1", "017700000001"])
def test_numeric_forms_that_hide_an_address_are_refused_by_name(host):
    with pytest.raises(EgressRefused) as refused:
        Egress(OPENED).check_name(host)
    assert refused.value.code == "numeric"


@pytest.mark.parametrize("host", ["metadata.google.internal", "metadata.google.internal.", "METADATA.GOOGLE.INTERNAL..", "metadata",
                                  "instance-data.ec2.internal"])
def test_metadata_names_are_refused_before_any_lookup(host):
    with pytest.raises(EgressRefused) as refused:
        Egress(OPENED, resolver=lambda *a: pytest.fail("looked up")).check_url(f"http://{host}/computeMetadata/v1/")
    assert refused.value.code == "metadata"


@pytest.mark.parametrize("url", ["ftp://example.com/", "file:///etc/passwd", "gopher://x/", "http://", "javascript:alert(1)",
                                 "http://host:99999/", ""])
def test_only_http_and_https_to_a_host(url):
    with pytest.raises(EgressRefused) as refused:
        target_of(url)
    assert refused.value.code == "scheme"


def test_names_that_look_numeric_but_are_names_are_names():
    assert Egress(STRICT).check_name("bad.cafe") is None and Egress(STRICT).check_name("api.deepseek.com") is None


def test_an_address_literal_is_connected_to_without_a_lookup():
    """A lookup under gevent goes through its thread pool; a literal has nothing to look up."""
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    try:
        egress = Egress(EgressPolicy((ipaddress.ip_network("127.0.0.0/8"),)), resolver=lambda *a: pytest.fail("looked up"))
        sock = egress.connect("127.0.0.1", listener.getsockname()[1], timeout=5)
        assert sock.getpeername() == listener.getsockname()
        sock.close()
        with pytest.raises(EgressRefused):
            Egress(resolver=lambda *a: pytest.fail("looked up")).connect("127.0.0.1", listener.getsockname()[1], timeout=5)
    finally:
        listener.close()
