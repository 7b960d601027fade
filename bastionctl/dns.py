"""DNS lookups for the doctor: A/AAAA with clear failure kinds, and DNS64 (RFC 6052/7050)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

from bastionctl.errors import ConfigError

WELL_KNOWN_PREFIX = ipaddress.IPv6Network("64:ff9b::/96")
# RFC 7050: ipv4only.arpa has only these A records, so a AAAA for it is synthesised.
IPV4ONLY_ADDRESSES = (ipaddress.IPv4Address("192.0.0.170"), ipaddress.IPv4Address("192.0.0.171"))
PREFIX_LENGTHS = (96, 64, 56, 48, 40, 32)


@dataclass(frozen=True)
class Lookup:
    """The answer to one query: addresses, or why there are none."""

    name: str
    rdtype: str
    addresses: tuple[str, ...] = ()
    # "" when answered; else nxdomain, nodata, timeout, servfail or error.
    problem: str = ""
    detail: str = ""

    @property
    def ok(self) -> bool:
        return not self.problem


def parse_server(value: str) -> tuple[str, int]:
    """`192.0.2.53`, `192.0.2.53:5353`, `2001:db8::53` or `[2001:db8::53]:5353`."""
    host, port = value, 53
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        if rest:
            port = int(rest.removeprefix(":"))
    elif value.count(":") == 1:
        host, _, port_text = value.partition(":")
        port = int(port_text)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(
            f"DNS server {value!r} is not an IP address (with optional :port)"
        ) from None
    if not 0 < port < 65536:
        raise ConfigError(f"DNS server {value!r} has a bad port")
    return str(address), port


@dataclass
class Resolver:
    """One configured nameserver (or the system's) with a per-query time limit."""

    servers: Sequence[str] = ()
    timeout: float = 2.0
    _resolvers: list[object] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        import dns.resolver

        if not self.servers:
            resolver = dns.resolver.Resolver()
            resolver.lifetime = self.timeout
            self._resolvers = [resolver]
            return
        for server in self.servers:
            address, port = parse_server(server)
            resolver = dns.resolver.Resolver(configure=False)
            resolver.nameservers = [address]
            resolver.port = port
            resolver.lifetime = self.timeout
            self._resolvers.append(resolver)

    def names(self) -> list[str]:
        return list(self.servers) or ["system resolver"]

    def lookup(self, name: str, rdtype: str) -> Lookup:
        import dns.exception
        import dns.resolver

        last = Lookup(name, rdtype, problem="error", detail="no resolver")
        for resolver in self._resolvers:
            try:
                answer = resolver.resolve(name, rdtype, raise_on_no_answer=False)  # type: ignore[attr-defined]
            except dns.resolver.NXDOMAIN:
                return Lookup(name, rdtype, problem="nxdomain", detail="the name does not exist")
            except dns.resolver.LifetimeTimeout:
                last = Lookup(
                    name, rdtype, problem="timeout", detail=f"no answer within {self.timeout:g} s"
                )
                continue
            except dns.resolver.NoNameservers as exc:
                last = Lookup(name, rdtype, problem="servfail", detail=str(exc).split(";")[0])
                continue
            except dns.exception.DNSException as exc:
                last = Lookup(name, rdtype, problem="error", detail=type(exc).__name__)
                continue
            addresses = tuple(sorted(str(r.address) for r in answer))
            if not addresses:
                return Lookup(name, rdtype, problem="nodata", detail=f"no {rdtype} record")
            return Lookup(name, rdtype, addresses)
        return last


def embedded_ipv4(
    address: ipaddress.IPv6Address, prefix: ipaddress.IPv6Network
) -> ipaddress.IPv4Address | None:
    """The IPv4 address RFC 6052 embeds in `address` under `prefix`, if it is inside it."""
    if address not in prefix or prefix.prefixlen not in PREFIX_LENGTHS:
        return None
    raw = address.packed
    start = prefix.prefixlen // 8
    # Bits 64-71 (byte 8) are the reserved "u" octet and never carry address bits.
    octets = [i for i in range(start, 16) if i != 8][:4]
    return ipaddress.IPv4Address(bytes(raw[i] for i in octets))


def prefixes_from_ipv4only(addresses: Sequence[str]) -> list[ipaddress.IPv6Network]:
    """RFC 7050: find the NAT64 prefix(es) in the AAAA answers for ipv4only.arpa."""
    found: list[ipaddress.IPv6Network] = []
    for text in addresses:
        address = ipaddress.IPv6Address(text)
        for length in PREFIX_LENGTHS:
            network = ipaddress.IPv6Network(
                (int(address) >> (128 - length) << (128 - length), length)
            )
            if embedded_ipv4(address, network) in IPV4ONLY_ADDRESSES:
                if network not in found:
                    found.append(network)
                break
    return found


@dataclass(frozen=True)
class Dns64View:
    prefixes: tuple[ipaddress.IPv6Network, ...]  # the ones found, plus 64:ff9b::/96
    found: tuple[ipaddress.IPv6Network, ...] = ()  # the ones ipv4only.arpa showed (RFC 7050)
    # Why ipv4only.arpa got no answer at all (timeout, servfail...): then nothing is known.
    unanswered: str | None = None

    @property
    def discovered(self) -> bool:
        return bool(self.found)

    def synthesised(self, text: str) -> ipaddress.IPv4Address | None:
        address = ipaddress.IPv6Address(text)
        for prefix in self.prefixes:
            embedded = embedded_ipv4(address, prefix)
            if embedded is not None:
                return embedded
        return None


def discover_dns64(resolver: Resolver) -> Dns64View:
    answer = resolver.lookup("ipv4only.arpa", "AAAA")
    found = prefixes_from_ipv4only(answer.addresses) if answer.ok else []
    prefixes = list(found)
    if WELL_KNOWN_PREFIX not in prefixes:
        prefixes.append(WELL_KNOWN_PREFIX)
    unanswered = None
    if not answer.ok and answer.problem not in ("nodata", "nxdomain"):
        unanswered = f"{answer.problem}: {answer.detail}"
    return Dns64View(tuple(prefixes), tuple(found), unanswered)
