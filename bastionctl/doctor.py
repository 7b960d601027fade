"""The doctor's checks, as data: DNS and DNS64, reachability, keys, secrets, clock."""

from __future__ import annotations

import enum
import ipaddress
import socket
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from bastionctl import sanitise
from bastionctl.config import Config
from bastionctl.dns import Dns64View, Lookup, Resolver, discover_dns64
from bastionctl.errors import BastionctlError, ConnectError
from bastionctl.model import Bastion, Endpoint, Host, hostport
from bastionctl.system.home import user_id

BANNER_TIMEOUT = 5.0
CLOCK_TOLERANCE = 15.0  # half a TOTP step


class Status(enum.StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True)
class Check:
    subject: str
    check: str
    status: Status
    detail: str
    advice: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status.value}


# ---------------------------------------------------------------- DNS


def route_exists(address: str) -> bool:
    """Whether this machine has a route to `address`; a UDP connect sends no packet."""
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((address, 443))
        except OSError:
            return False
    return True


def nat64_route_check(view: Dns64View) -> Check | None:
    """DNS64 without a NAT64 path: synthesised answers that lead nowhere from here."""
    for prefix in view.found:
        sample = str(prefix.network_address + 0xC000020A)  # 192.0.2.10 under /96
        if not route_exists(sample):
            return Check(
                "resolver",
                "NAT64 route",
                Status.WARN,
                f"DNS64 answers with {prefix}, but this machine has no route to it",
                "synthesised addresses only work where a NAT64 gateway is routed",
            )
    return None


def dns64_check(resolver: Resolver, view: Dns64View) -> Check:
    servers = ", ".join(resolver.names())
    if view.unanswered:
        return Check(
            "resolver",
            "DNS64",
            Status.FAIL,
            f"{servers} did not answer ipv4only.arpa ({view.unanswered})",
            "check settings.dns_servers and that the resolver is reachable",
        )
    if view.discovered:
        found = ", ".join(
            str(p) for p in view.prefixes if p != view.prefixes[-1] or len(view.prefixes) == 1
        )
        return Check(
            "resolver",
            "DNS64",
            Status.OK,
            f"{servers} synthesises AAAA with {found} (found via ipv4only.arpa, RFC 7050)",
        )
    return Check("resolver", "DNS64", Status.OK, f"{servers}: no DNS64 (ipv4only.arpa has no AAAA)")


def _resolver_failure(subject: str, lookup: Lookup) -> Check:
    return Check(
        subject,
        f"{lookup.rdtype} {lookup.name}",
        Status.FAIL,
        f"resolver {lookup.problem}: {lookup.detail}",
        "check settings.dns_servers and that the resolver answers",
    )


def _split(view: Dns64View, addresses: Iterable[str]) -> tuple[list[str], list[tuple[str, str]]]:
    native: list[str] = []
    synthesised: list[tuple[str, str]] = []
    for address in addresses:
        embedded = view.synthesised(address)
        if embedded is None:
            native.append(address)
        else:
            synthesised.append((address, str(embedded)))
    return native, synthesised


def endpoint_dns(endpoint: Endpoint, resolver: Resolver, view: Dns64View) -> list[Check]:
    subject = endpoint.alias
    if not endpoint.fqdn:
        return [Check(subject, "DNS", Status.SKIP, "no fqdn in the inventory")]
    checks: list[Check] = []
    aaaa = resolver.lookup(endpoint.fqdn, "AAAA")
    name = f"AAAA {endpoint.fqdn}"
    want = str(ipaddress.ip_address(endpoint.ipv6)) if endpoint.ipv6 else None
    if aaaa.problem in ("timeout", "servfail", "error"):
        checks.append(_resolver_failure(subject, aaaa))
    elif aaaa.problem == "nxdomain":
        checks.append(
            Check(
                subject,
                name,
                Status.FAIL,
                "the name does not exist",
                "add it to the zone (bastionctl bastion-hosts --format zone)",
            )
        )
    elif aaaa.problem == "nodata":
        status = Status.FAIL if want else Status.WARN
        detail = f"missing AAAA (the inventory has {want})" if want else "no AAAA: IPv4 only"
        checks.append(Check(subject, name, status, detail, f"add AAAA {want}" if want else ""))
    else:
        native, synthesised = _split(view, aaaa.addresses)
        if want and want in native:
            extra = [a for a in native if a != want]
            detail = "matches the inventory" + (f"; also {', '.join(extra)}" if extra else "")
            checks.append(
                Check(
                    subject,
                    name,
                    Status.WARN if extra else Status.OK,
                    detail,
                    "remove the extra records" if extra else "",
                )
            )
        elif want and native:
            checks.append(
                Check(
                    subject,
                    name,
                    Status.FAIL,
                    f"stale: DNS says {', '.join(native)}, the inventory {want}",
                    f"update the AAAA record to {want}",
                )
            )
        elif synthesised:
            address, v4 = synthesised[0]
            checks.append(
                Check(
                    subject,
                    name,
                    Status.WARN,
                    f"only a DNS64-synthesised AAAA {address} (embeds {v4} from the A record)",
                    "reachable over IPv6 only through NAT64; publish a native AAAA if it has IPv6",
                )
            )
        else:
            checks.append(Check(subject, name, Status.OK, f"native {', '.join(native)}"))
    if endpoint.ipv4:
        a = resolver.lookup(endpoint.fqdn, "A")
        if a.problem in ("timeout", "servfail", "error"):
            checks.append(_resolver_failure(subject, a))
        elif endpoint.ipv4 in a.addresses:
            checks.append(Check(subject, f"A {endpoint.fqdn}", Status.OK, "matches the inventory"))
        else:
            seen = ", ".join(a.addresses) or a.detail
            checks.append(
                Check(
                    subject,
                    f"A {endpoint.fqdn}",
                    Status.WARN,
                    f"DNS has {seen}, the inventory {endpoint.ipv4}",
                    f"update the A record to {endpoint.ipv4}",
                )
            )
    return checks


def name_check(name: str, resolver: Resolver, view: Dns64View) -> Check:
    """The seed's `dig AAAA` by hand: native AAAA, only a synthesised one, or none."""
    aaaa = resolver.lookup(name, "AAAA")
    if aaaa.problem in ("timeout", "servfail", "error"):
        return _resolver_failure(name, aaaa)
    if aaaa.problem == "nxdomain":
        return Check(name, "AAAA", Status.FAIL, "the name does not exist")
    native, synthesised = _split(view, aaaa.addresses)
    if native:
        return Check(name, "AAAA", Status.OK, f"native AAAA {', '.join(native)}")
    if synthesised:
        address, v4 = synthesised[0]
        return Check(
            name,
            "AAAA",
            Status.WARN,
            f"only synthesised by DNS64: {address} (embeds {v4}); needs NAT64",
            "IPv6-only hosts reach it only through a NAT64 gateway (or a VPC endpoint)",
        )
    return Check(
        name,
        "AAAA",
        Status.FAIL,
        "no AAAA at all, native or synthesised",
        "IPv6-only hosts cannot reach it: use DNS64 + NAT64, a VPC endpoint, or IPv4",
    )


# ---------------------------------------------------------------- reachability


@dataclass(frozen=True)
class Address:
    """An address to try an endpoint's SSH port at: its family, and where it came from."""

    family: str  # IPv6 | IPv4
    address: str
    source: str = ""  # "AAAA of NAME" when resolved from a name; "" for the inventory's

    def shown(self, port: int) -> str:
        where = hostport(self.address, port)
        return f"{where} ({self.source})" if self.source else where


def endpoint_addresses(
    endpoint: Endpoint, resolver: Resolver | None, view: Dns64View | None
) -> tuple[list[Address], list[Check]]:
    """Where to try `endpoint`'s SSH port, one address per family it has: the inventory's
    literal addresses, else its name (hostname, else fqdn) resolved to AAAA and A through
    the configured resolver; failures to resolve as checks."""
    literal = [Address(f, a) for f, a in (("IPv6", endpoint.ipv6), ("IPv4", endpoint.ipv4)) if a]
    name = endpoint.hostname or endpoint.fqdn
    if literal or not name:
        return literal, []
    try:
        parsed = ipaddress.ip_address(name.split("%")[0])
    except ValueError:
        pass
    else:
        return [Address("IPv6" if parsed.version == 6 else "IPv4", name)], []
    if resolver is None:
        return [], [Check(endpoint.alias, "ssh", Status.SKIP, f"{name} not resolved")]
    found: list[Address] = []
    failures: list[Lookup] = []
    for family, rdtype in (("IPv6", "AAAA"), ("IPv4", "A")):
        lookup = resolver.lookup(name, rdtype)
        if lookup.addresses:
            address = lookup.addresses[0]
            synthesised = (
                family == "IPv6" and view is not None and view.synthesised(address) is not None
            )
            source = f"{rdtype} of {name}" + (", synthesised by DNS64" if synthesised else "")
            found.append(Address(family, address, source))
        elif lookup.problem in ("timeout", "servfail", "error"):
            failures.append(lookup)
    if found:
        return found, []
    if failures:
        return [], [_resolver_failure(endpoint.alias, failures[0])]
    return [], [
        Check(
            endpoint.alias,
            "ssh",
            Status.FAIL,
            f"{name} has neither an AAAA nor an A record ({', '.join(resolver.names())})",
            "check the name in the inventory and its DNS records",
        )
    ]


def ssh_reachability(
    bastion: Bastion,
    timeout: float,
    resolver: Resolver | None = None,
    view: Dns64View | None = None,
) -> list[Check]:
    """The bastion's SSH port over each family it has (a name is resolved first)."""
    addresses, checks = endpoint_addresses(bastion, resolver, view)
    for entry in addresses:
        family, address = entry.family, entry.address
        check = f"ssh over {family}"
        target = entry.shown(bastion.port)
        started = time.perf_counter()
        try:
            with socket.create_connection((address, bastion.port), timeout=timeout) as conn:
                connected = (time.perf_counter() - started) * 1000
                conn.settimeout(BANNER_TIMEOUT)
                banner = sanitise.line(conn.recv(256).split(b"\r\n")[0].decode(errors="replace"))
        except ConnectionRefusedError:
            checks.append(
                Check(
                    bastion.alias,
                    check,
                    Status.FAIL,
                    f"{target}: connection refused",
                    "is sshd running and listening on that address?",
                )
            )
            continue
        except TimeoutError:
            checks.append(
                Check(
                    bastion.alias,
                    check,
                    Status.FAIL,
                    f"{target}: no answer within {timeout:g} s",
                    "a firewall or security group may drop it",
                )
            )
            continue
        except OSError as exc:
            checks.append(
                Check(
                    bastion.alias,
                    check,
                    Status.FAIL,
                    f"{target}: {exc.strerror or exc}",
                    "check routes and addresses",
                )
            )
            continue
        if not banner.startswith("SSH-"):
            checks.append(
                Check(
                    bastion.alias,
                    check,
                    Status.FAIL,
                    f"{target} answered, but not with an SSH banner",
                )
            )
            continue
        checks.append(
            Check(bastion.alias, check, Status.OK, f"{target} in {connected:.1f} ms: {banner[:60]}")
        )
    return checks


def deep_checks(
    bastion: Bastion,
    hosts: list[Host],
    session: Any,
    resolver: Resolver | None = None,
    view: Dns64View | None = None,
    rdp_port: int | None = None,
) -> list[Check]:
    """Log in to the bastion, then ask it for a channel to each host's SSH port: at its
    address, or for a host known by name only, at each family's address the name resolves
    to here (else at the name, which the bastion resolves). An RDP host whose certificate
    thumbprint EC2 attests is logged in to, and its RDP server's certificate compared."""
    from bastionctl.ssh import datapath
    from bastionctl.ssh.connect import connect_bastion
    from bastionctl.ssh.forward import ChannelRefused, ChannelTimeout, open_direct

    try:
        transport = connect_bastion(bastion, session)
    except BastionctlError as exc:
        return [Check(bastion.alias, "login", Status.FAIL, exc.message, exc.hint or "")]
    checks = [Check(bastion.alias, "login", Status.OK, f"logged in as {bastion.user}")]
    try:
        checks.append(_clock_check(bastion, transport))
        for host, target, check in _channel_targets(hosts, resolver, view):
            try:
                channel = open_direct(
                    transport,
                    datapath.PLAIN,
                    bastion.alias,
                    target,
                    ("127.0.0.1", 0),
                    session.settings.connect_timeout,
                )
            except ChannelRefused as exc:
                failure = _channel_failure(exc.code, exc.text, hostport(*target))
                checks.append(Check(host.alias, check, Status.FAIL, *failure))
                continue
            except ChannelTimeout:
                checks.append(
                    Check(
                        host.alias,
                        check,
                        Status.FAIL,
                        f"timeout: no connection within {session.settings.connect_timeout:g} s",
                        "the host or a security group drops the bastion's packets",
                    )
                )
                continue
            except ConnectError as exc:
                checks.append(Check(host.alias, check, Status.FAIL, exc.message))
                continue
            channel.settimeout(BANNER_TIMEOUT)
            try:
                raw = channel.recv(256).split(b"\r\n")[0].decode(errors="replace")
                banner = sanitise.line(raw)  # the server's words
            except OSError:
                banner = "(no banner)"
            finally:
                channel.close()
            checks.append(Check(host.alias, check, Status.OK, f"sshd answers: {banner[:60]}"))
        if rdp_port is not None:
            for rdp_host in hosts:
                if offers_rdp(rdp_host) and rdp_host.origin is not None:
                    checks.append(
                        rdp_certificate_check(transport, bastion, rdp_host, session, rdp_port)
                    )
    finally:
        transport.close()
    return checks


def offers_rdp(host: Host) -> bool:
    return host.platform == "windows" or "rdp" in host.services


def rdp_certificate_check(
    transport: Any, bastion: Bastion, host: Host, session: Any, rdp_port: int
) -> Check:
    """The certificate `host`'s RDP server (an EC2 instance) shows through the host's sshd, as
    a tunnel goes, against the thumbprint EC2 attests; hosts without one are not logged in to."""
    from bastionctl.rdp.attested import for_endpoint
    from bastionctl.rdp.check import check
    from bastionctl.ssh import datapath
    from bastionctl.ssh.connect import connect_through
    from bastionctl.ssh.forward import open_direct

    name = "RDP certificate"
    attested = for_endpoint(host)
    if attested is None:
        return Check(
            host.alias,
            name,
            Status.SKIP,
            "EC2 attests no thumbprint for it",
            "bastionctl known-hosts sync (reads a Windows instance's thumbprint)",
        )
    timeout = session.settings.connect_timeout
    try:
        inner = connect_through(transport, bastion, host, session)
        try:
            channel = open_direct(
                inner,
                datapath.PLAIN,
                host.alias,
                ("localhost", rdp_port),
                ("127.0.0.1", 0),
                timeout,
            )
            try:
                line = check(host, channel, attested)
            finally:
                channel.close()
        finally:
            inner.close()
    except BastionctlError as exc:
        return Check(host.alias, name, Status.FAIL, exc.message, exc.hint or "")
    return Check(host.alias, name, Status.OK, line.removeprefix("RDP certificate: "))


def _channel_targets(
    hosts: list[Host], resolver: Resolver | None, view: Dns64View | None
) -> list[tuple[Host, tuple[str, int], str]]:
    """(host, address to ask the bastion for, the check's name) for each channel to try."""
    targets = []
    for host in hosts:
        resolved: list[Address] = []
        if not (host.ipv6 or host.ipv4):
            resolved, _failures = endpoint_addresses(host, resolver, view)
        if not resolved:
            target = (host.connect_host, host.port)
            targets.append((host, target, f"channel to {hostport(*target)}"))
        for entry in resolved:
            targets.append(
                (host, (entry.address, host.port), f"channel to {entry.shown(host.port)}")
            )
    return targets


# The reason codes of a refused channel (RFC 4254, 5.1).
OPEN_PROHIBITED = 1
OPEN_CONNECT_FAILED = 2


def _channel_failure(code: int, text: str, target: str) -> tuple[str, str]:
    """What a refused channel means, from the code the bastion answered with."""
    if code == OPEN_PROHIBITED:
        return f"the bastion refuses to forward to {target} ({text.lower()})", "check PermitOpen"
    if code == OPEN_CONNECT_FAILED:
        return (
            f"channel refused: the bastion could not connect to {target} ({text.lower()})",
            "is sshd running on the host, and can the bastion route to (and resolve) it?",
        )
    return f"channel failed: {text.lower()} (code {code})", ""


def _clock_check(bastion: Bastion, transport: Any) -> Check:
    try:
        channel = transport.open_session(timeout=10)
        channel.settimeout(10)
        channel.exec_command("date -u +%s")
        before = time.time()
        output = channel.makefile("rb").read(64)
        channel.close()
        remote = float(output.strip())
    except Exception:  # no shell, ForceCommand, odd output: say so rather than guess
        return Check(
            bastion.alias,
            "clock",
            Status.SKIP,
            "cannot read the bastion's clock (no command execution there)",
        )
    skew = before - remote
    if abs(skew) > CLOCK_TOLERANCE:
        return Check(
            bastion.alias,
            "clock",
            Status.FAIL,
            f"this machine is {skew:+.0f} s off the bastion's clock",
            "TOTP codes need synchronised clocks: fix NTP on the wrong side",
        )
    return Check(bastion.alias, "clock", Status.OK, f"within {abs(skew):.0f} s of the bastion")


# ---------------------------------------------------------------- local


def local_checks(endpoint: Endpoint, config: Config, secrets: Any) -> list[Check]:
    checks = []
    key = endpoint.identity_file
    if key is None:
        checks.append(Check(endpoint.alias, "identity file", Status.SKIP, "none set (ssh-agent)"))
    elif not key.exists():
        checks.append(
            Check(
                endpoint.alias,
                "identity file",
                Status.FAIL,
                f"{key} does not exist",
                "fix identity_file or create the key",
            )
        )
    else:
        mode = stat.S_IMODE(key.stat().st_mode)
        if mode & 0o077:
            checks.append(
                Check(
                    endpoint.alias,
                    "identity file",
                    Status.FAIL,
                    f"{key} is mode {mode:04o}: others can read it",
                    f"chmod 600 {key}",
                )
            )
        elif (uid := user_id()) is not None and key.stat().st_uid != uid:
            checks.append(
                Check(
                    endpoint.alias, "identity file", Status.WARN, f"{key} belongs to another user"
                )
            )
        else:
            checks.append(Check(endpoint.alias, "identity file", Status.OK, f"{key} ({mode:04o})"))
    if isinstance(endpoint, Bastion):
        checks.append(_known_hosts_check(endpoint, config))
        checks.append(_secret_check(endpoint, secrets))
    return checks


def _known_hosts_check(endpoint: Endpoint, config: Config) -> Check:
    """Is a key listed under the name the login looks it up by (host_key_names: the config's
    host_key_alias, else the address connected to; never a tag-chosen alias or fqdn)?"""
    from bastionctl.ssh.hostkeys import KnownHosts, host_key_names

    names = host_key_names(endpoint)
    shown = names[0]
    if shown != endpoint.known_hosts_name:
        shown += f" (host_key_alias of {endpoint.known_hosts_name})"
    if KnownHosts(config.settings.known_hosts).known_types(names):
        return Check(endpoint.alias, "known_hosts", Status.OK, f"host key known for {shown}")
    return Check(
        endpoint.alias,
        "known_hosts",
        Status.FAIL,
        f"no host key for {shown}",
        f"verify its fingerprint and add it to known_hosts under {names[0]}",
    )


def _secret_check(bastion: Bastion, secrets: Any) -> Check:
    from bastionctl.errors import SecretStoreError

    try:
        stored = secrets.get(bastion.alias) is not None
    except SecretStoreError as exc:
        return Check(
            bastion.alias,
            "TOTP secret",
            Status.WARN,
            exc.message,
            "codes will be asked for at each login",
        )
    if stored:
        return Check(bastion.alias, "TOTP secret", Status.OK, "stored in the keyring")
    return Check(
        bastion.alias,
        "TOTP secret",
        Status.WARN,
        "not stored: codes are asked for",
        f"bastionctl otp set {bastion.alias}",
    )


def ssh_config_check(config: Config) -> Check:
    """Is the installed include file (`ssh-config --write`) what the inventory says now?"""
    from bastionctl.paths import ssh_include_file
    from bastionctl.render.ssh_config import render_config

    installed = ssh_include_file()
    try:
        current = installed.read_text()
    except FileNotFoundError:
        return Check(
            "ssh config",
            "exported",
            Status.SKIP,
            f"{installed} is not installed",
            "bastionctl ssh-config --write",
        )
    except OSError as exc:
        return Check("ssh config", "exported", Status.WARN, f"cannot read {installed}: {exc}")
    if current == render_config(config).text:
        return Check("ssh config", "exported", Status.OK, f"{installed} is up to date")
    return Check(
        "ssh config",
        "exported",
        Status.WARN,
        f"{installed} is stale",
        "bastionctl ssh-config --write",
    )


def host_keys_check(config: Config, endpoints: list[Bastion | Host]) -> Check:
    """How many endpoints' host keys EC2 attests, are pinned otherwise, or are unknown."""
    from bastionctl.ssh.pinned import key_states

    states = list(key_states(endpoints, config.settings.known_hosts).values())
    attested, pinned, unknown = (states.count(s) for s in ("attested", "pinned", "unknown"))
    detail = f"{attested} attested by EC2, {pinned} pinned, {unknown} unknown"
    if not unknown:
        return Check("host keys", "known", Status.OK, detail)
    return Check("host keys", "known", Status.WARN, detail, "bastionctl known-hosts sync")


# ---------------------------------------------------------------- all of it


def run(
    config: Config,
    host: str | None = None,
    names: Iterable[str] = (),
    deep: bool = False,
    secrets: Any = None,
    session_factory: Callable[[], Any] | None = None,
) -> list[Check]:
    inventory = config.inventory
    if host is not None:
        from bastionctl.tunnels.spec import find_host

        if host in inventory.bastions:
            bastions = [inventory.bastions[host]]
            hosts = [h for h in inventory.hosts.values() if h.bastion == host]
        else:
            target = find_host(config, host)
            bastions, hosts = [inventory.bastion_for(target)], [target]
    else:
        bastions = sorted(inventory.bastions.values(), key=lambda b: b.alias)
        hosts = sorted(inventory.hosts.values(), key=lambda h: h.alias)
    resolver = Resolver(config.settings.dns_servers, config.settings.dns_timeout)
    view = discover_dns64(resolver)
    checks = [dns64_check(resolver, view)]
    nat64 = nat64_route_check(view)
    if nat64 is not None:
        checks.append(nat64)
    checks += [name_check(name, resolver, view) for name in names]
    if names and host is None:
        return checks
    for endpoint in [*bastions, *hosts]:
        checks += endpoint_dns(endpoint, resolver, view)
    for bastion in bastions:
        checks += local_checks(bastion, config, secrets)
        checks += ssh_reachability(bastion, config.settings.connect_timeout, resolver, view)
    for host_entry in hosts:
        checks += local_checks(host_entry, config, secrets)
    checks.append(ssh_config_check(config))
    checks.append(host_keys_check(config, [*bastions, *hosts]))
    if deep and session_factory is not None:
        session = session_factory()
        for bastion in bastions:
            checks += deep_checks(
                bastion,
                [h for h in hosts if h.bastion == bastion.alias],
                session,
                resolver,
                view,
                rdp.remote_port if (rdp := config.services.get("rdp")) else None,
            )
    else:
        checks += [
            Check(b.alias, "clock", Status.SKIP, "not checked (--deep reads the bastion's clock)")
            for b in bastions
        ]
    return checks
