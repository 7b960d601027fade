"""bastionctl.dns against real unbound resolvers (plain and DNS64)."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from bastionctl.dns import (
    Resolver,
    discover_dns64,
    embedded_ipv4,
    prefixes_from_ipv4only,
)

from .unbound import ZONE, Unbound


@pytest.mark.parametrize(
    ("prefix", "address"),
    [  # RFC 6052 section 2.4's examples, 192.0.2.33 under each prefix length
        ("2001:db8::/32", "2001:db8:c000:221::"),
        ("2001:db8:100::/40", "2001:db8:1c0:2:21::"),
        ("2001:db8:122::/48", "2001:db8:122:c000:2:2100::"),
        ("2001:db8:122:300::/56", "2001:db8:122:3c0:0:221::"),
        ("2001:db8:122:344::/64", "2001:db8:122:344:c0:2:2100:0"),
        ("2001:db8:122:344::/96", "2001:db8:122:344::192.0.2.33"),
        ("64:ff9b::/96", "64:ff9b::192.0.2.33"),
    ],
)
def test_rfc6052_embedding(prefix: str, address: str) -> None:
    network = ipaddress.IPv6Network(prefix)
    assert embedded_ipv4(ipaddress.IPv6Address(address), network) == ipaddress.IPv4Address(
        "192.0.2.33"
    )
    found = prefixes_from_ipv4only([str(_embed(network, "192.0.0.170"))])
    assert found == [network]


def _embed(network: ipaddress.IPv6Network, v4: str) -> ipaddress.IPv6Address:
    raw = bytearray(network.network_address.packed)
    octets = [i for i in range(network.prefixlen // 8, 16) if i != 8][:4]
    for index, byte in zip(octets, ipaddress.IPv4Address(v4).packed, strict=True):
        raw[index] = byte
    return ipaddress.IPv6Address(bytes(raw))


def test_plain_resolver_answers_and_reports_nodata(resolvers: dict[str, Unbound]) -> None:
    resolver = Resolver([resolvers["plain"].server])
    assert resolver.lookup(f"server-02.{ZONE}", "AAAA").addresses == ("fd00:bc1:2:2::2",)
    legacy = resolver.lookup(f"legacy.{ZONE}", "AAAA")
    assert legacy.problem == "nodata"
    assert resolver.lookup(f"nope.{ZONE}", "AAAA").problem == "nxdomain"
    view = discover_dns64(resolver)
    assert not view.discovered


@pytest.mark.parametrize(
    ("which", "prefix", "synthesised"),
    [("wkp", "64:ff9b::/96", "64:ff9b::c000:20a"), ("nsp", "fd64:1:2:3::/64", None)],
)
def test_dns64_is_detected_and_decoded(
    resolvers: dict[str, Unbound], which: str, prefix: str, synthesised: str | None
) -> None:
    resolver = Resolver([resolvers[which].server])
    view = discover_dns64(resolver)
    assert view.discovered and ipaddress.IPv6Network(prefix) in view.prefixes
    answer = resolver.lookup(f"legacy.{ZONE}", "AAAA")
    assert answer.ok, answer
    if synthesised:
        assert answer.addresses == (synthesised,)
    assert view.synthesised(answer.addresses[0]) == ipaddress.IPv4Address("192.0.2.10")
    native = resolver.lookup(f"dual.{ZONE}", "AAAA")
    assert native.addresses == ("2001:db8::10",) and view.synthesised("2001:db8::10") is None


def test_a_silent_server_is_a_timeout() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))  # bound, never answers
        port = silent.getsockname()[1]
        answer = Resolver([f"127.0.0.1:{port}"], timeout=0.5).lookup("x.example", "AAAA")
    assert answer.problem == "timeout"
