"""EC2 instances to bastions and hosts. Pure: instance records in, inventory and warnings out.

Every tag value is untrusted. A bad value falls back to the default for its field, or drops
the instance when there is no safe default, and always produces a warning that names the
instance and the tag but never repeats the value.

Names are claimed, not taken: an alias (Name tag) or fqdn that the config's own entries use
stays theirs; one that two instances claim goes to neither (aliases get a generated
NAME.REGION / NAME.INSTANCE-ID that no other name uses, fqdns are dropped). A host whose VPC
offers several bastions, none chosen by a tag or by the config, is kept as ambiguous.
"""

from __future__ import annotations

import socket
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from bastionctl import validate
from bastionctl.config import InventorySettings
from bastionctl.inventory import tags
from bastionctl.model import Bastion, Host, Inventory, Origin, Platform
from bastionctl.services import ServiceCatalogue

T = TypeVar("T")
RUNNING = "running"
# The states `include_stopped` adds to running (the fetch filters on the same list).
WITH_STOPPED = ("pending", RUNNING, "stopping", "stopped")


def trim(
    instance: Mapping[str, Any], *, source: str, region: str, owner: str | None
) -> dict[str, Any]:
    """The fields bastionctl uses from one `describe_instances` instance, JSON-ready."""
    interfaces = []
    for eni in instance.get("NetworkInterfaces") or ():
        interfaces.append(
            {
                "DeviceIndex": (eni.get("Attachment") or {}).get("DeviceIndex"),
                "Ipv6Addresses": [
                    {
                        "Ipv6Address": entry.get("Ipv6Address"),
                        "IsPrimaryIpv6": bool(entry.get("IsPrimaryIpv6")),
                    }
                    for entry in eni.get("Ipv6Addresses") or ()
                ],
            }
        )
    return {
        "InstanceId": instance.get("InstanceId"),
        "State": (instance.get("State") or {}).get("Name"),
        "Tags": {t.get("Key"): t.get("Value") for t in instance.get("Tags") or ()},
        "Platform": instance.get("Platform"),
        "PlatformDetails": instance.get("PlatformDetails"),
        "KeyName": instance.get("KeyName"),
        "VpcId": instance.get("VpcId"),
        "PrivateIpAddress": instance.get("PrivateIpAddress"),
        "PublicIpAddress": instance.get("PublicIpAddress"),
        "Ipv6Address": instance.get("Ipv6Address"),
        "NetworkInterfaces": interfaces,
        "OwnerId": owner,
        "Region": region,
        "Source": source,
    }


@dataclass
class Mapped:
    bastions: dict[str, Bastion] = field(default_factory=dict)
    hosts: dict[str, Host] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Candidate:
    origin: Origin
    where: str
    name: str
    role: str
    platform: Platform
    user: str
    port: int
    identity_file: Path | None
    ipv6: str | None
    ipv4: str | None
    fqdn: str | None
    address: str | None
    bastion_tag: str | None
    services: tuple[str, ...]
    alias: str = ""

    @property
    def network(self) -> tuple[str | None, str, str | None]:
        return (self.origin.account, self.origin.region, self.origin.vpc_id)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


_FAMILY = {4: socket.AF_INET, 6: socket.AF_INET6}


def _ip(value: Any, version: int) -> str | None:
    """The canonical form of an IPv4/IPv6 literal, or None (inet_pton: C speed at 10,000s)."""
    text = _text(value)
    if text is None:
        return None
    family = _FAMILY[version]
    try:
        return socket.inet_ntop(family, socket.inet_pton(family, text))
    except (OSError, ValueError):
        return None


def _device_index(eni: Mapping[str, Any]) -> int:
    index = eni.get("DeviceIndex")
    return index if isinstance(index, int) else 99


def _ipv6_of(instance: Mapping[str, Any]) -> str | None:
    """The top-level Ipv6Address, else the primary ENI's primary (or first) IPv6 address."""
    top = _ip(instance.get("Ipv6Address"), 6)
    if top:
        return top
    interfaces = [e for e in instance.get("NetworkInterfaces") or () if isinstance(e, Mapping)]
    interfaces.sort(key=_device_index)
    for eni in interfaces[:1]:
        entries = [a for a in eni.get("Ipv6Addresses") or () if isinstance(a, Mapping)]
        entries.sort(key=lambda a: not a.get("IsPrimaryIpv6"))
        for entry in entries:
            address = _ip(entry.get("Ipv6Address"), 6)
            if address:
                return address
    return None


class _Mapper:
    def __init__(
        self,
        settings: InventorySettings,
        services: ServiceCatalogue,
        static_bastions: Collection[str],
        static: Inventory,
    ) -> None:
        self.settings = settings
        self.prefix = settings.tag_prefix
        self.services = services
        self.static_bastions = [
            *static_bastions,
            *(b for b in static.bastions if b not in static_bastions),
        ]
        # The config's bastions, which win a choice between bastions: lower-cased (ssh matches
        # host names without regard to case) -> the config's alias.
        self.declared = {b.lower(): b for b in self.static_bastions}
        # Names the config's own entries use, which no tag may claim: lower-cased name -> whose.
        self.config_aliases: dict[str, str] = {}
        self.config_fqdns: dict[str, str] = {}
        for section, entries in (("bastions", static.bastions), ("hosts", static.hosts)):
            for alias, entry in entries.items():
                self.config_aliases.setdefault(alias.lower(), f"config {section}.{alias}")
                if entry.fqdn:
                    self.config_fqdns.setdefault(entry.fqdn.lower(), f"config {section}.{alias}")
        self.warnings: list[str] = []
        self._key_files: dict[str, Path] = {}

    def warn(self, where: str, message: str) -> None:
        self.warnings.append(f"{where}: {message}")

    def tag(
        self,
        where: str,
        values: Mapping[str, Any],
        name: str,
        check: Callable[[str], T],
        fallback: str,
    ) -> T | None:
        key = f"{self.prefix}{name}"
        raw = values.get(key)
        if raw is None:
            return None
        if not isinstance(raw, str):
            self.warn(where, f"tag {key} is not text; {fallback}")
            return None
        try:
            return check(raw.strip())
        except ValueError as exc:
            self.warn(where, f"tag {key} {exc}; {fallback}")
            return None

    def candidate(self, instance: Mapping[str, Any]) -> _Candidate | None:
        instance_id = _text(instance.get("InstanceId"))
        source = _text(instance.get("Source")) or "ec2"
        region = _text(instance.get("Region")) or "?"
        if instance_id is None or not tags.INSTANCE_ID_RE.fullmatch(instance_id):
            self.warnings.append(f"{source}/{region}: an instance without a valid id is skipped")
            return None
        where = f"instance {instance_id} ({source}/{region})"
        state = instance.get("State")
        if state not in (WITH_STOPPED if self.settings.include_stopped else (RUNNING,)):
            return None
        values = instance.get("Tags")
        if not isinstance(values, Mapping):
            values = {}

        name = instance_id
        raw_name = values.get("Name")
        if isinstance(raw_name, str) and raw_name:
            try:
                name = validate.alias(raw_name.strip())
            except ValueError as exc:
                self.warn(where, f"tag Name {exc}; using the instance id as its alias")
            else:
                try:
                    name = tags.name(name, instance_id, self.settings.domains)
                except ValueError as exc:
                    # A claim on a name outside the domains: no alias of its own to fall back
                    # to that would not hide what it tried.
                    self.warn(where, f"tag Name {exc}; skipped")
                    return None

        role = self.tag(where, values, "role", tags.role, "treated as a host") or "host"
        platform: Platform = "linux"
        details = _text(instance.get("PlatformDetails"))
        if instance.get("Platform") == "windows" or (details and "windows" in details.lower()):
            platform = "windows"
        default_user = (
            self.settings.windows_user if platform == "windows" else self.settings.linux_user
        )
        user = (
            self.tag(where, values, "user", validate.user, f"using {default_user}") or default_user
        )
        port = self.tag(where, values, "port", tags.port, "using 22") or 22
        fqdn = self.tag(
            where, values, "fqdn", lambda v: tags.fqdn(v, self.settings.domains), "no fqdn"
        )
        bastion_tag = self.tag(
            where, values, "bastion", validate.alias, "using the bastion of its VPC"
        )
        choices = tags.BASTION_ADDRESSES if role == "bastion" else tags.HOST_ADDRESSES
        address = self.tag(
            where,
            values,
            "address",
            lambda v: tags.address(v, choices),
            "using the configured address choice",
        )

        key_name = None
        raw_key_name = _text(instance.get("KeyName"))
        if raw_key_name:
            try:
                key_name = tags.key_name(raw_key_name)
            except ValueError as exc:
                self.warn(where, f"KeyName {exc}; no default identity file")
        key_tag = self.tag(where, values, "key", tags.key_path, "using the KeyName's key file")
        identity_file = (
            Path(key_tag).expanduser() if key_tag else self.key_file(key_name) if key_name else None
        )

        services = self.service_list(where, values)
        if services is None:
            services = ("rdp",) if platform == "windows" else ()

        public_ipv4 = _ip(instance.get("PublicIpAddress"), 4)
        private_ipv4 = _ip(instance.get("PrivateIpAddress"), 4)
        vpc_id = _text(instance.get("VpcId"))
        owner = _text(instance.get("OwnerId"))
        origin = Origin(
            source=source,
            instance_id=instance_id,
            region=region,
            account=owner if owner and tags.ACCOUNT_RE.fullmatch(owner) else None,
            vpc_id=vpc_id if vpc_id and tags.VPC_ID_RE.fullmatch(vpc_id) else None,
            platform_details=details if details and tags.PLATFORM_RE.fullmatch(details) else None,
            key_name=key_name,
            public_ipv4=public_ipv4,
        )
        return _Candidate(
            origin=origin,
            where=where,
            name=name,
            role=role,
            platform=platform,
            user=user,
            port=port,
            identity_file=identity_file,
            ipv6=_ipv6_of(instance),
            ipv4=private_ipv4,
            fqdn=fqdn,
            address=address,
            bastion_tag=bastion_tag,
            services=services,
        )

    def key_file(self, key_name: str) -> Path:
        if key_name not in self._key_files:
            path = self.settings.key_path.format(key_name=key_name)
            self._key_files[key_name] = Path(path).expanduser()
        return self._key_files[key_name]

    def service_list(self, where: str, values: Mapping[str, Any]) -> tuple[str, ...] | None:
        key = f"{self.prefix}services"

        def known(raw: str) -> tuple[str, ...]:
            names: list[str] = []
            for item in raw.split(","):
                item = item.strip().lower()
                if not item:
                    continue
                if item not in self.services:
                    self.warn(
                        where, f"tag {key} names an unknown service {tags.shown(item)}; skipped"
                    )
                    continue
                canonical = self.services.get(item).name
                if canonical not in names:
                    names.append(canonical)
            return tuple(names)

        return self.tag(where, values, "services", known, "using the platform's default services")

    def settle_names(self, candidates: list[_Candidate]) -> list[_Candidate]:
        """Give every candidate a unique alias and drop fqdns that are not theirs alone; the
        candidates that keep a place. Names compare without case, as ssh and DNS do.

        The config's names are the user's: an fqdn tag naming one is dropped, a Name equal to
        a config fqdn drops its instance (a Name equal to a config alias is replaced by that
        entry in the merge, which reports it). A name two instances claim goes to neither:
        fqdns are dropped, aliases become NAME.REGION, else NAME.INSTANCE-ID, else the
        instance id, whichever no other name (claimed, generated or the config's) uses.
        """
        fqdn_key = f"{self.prefix}fqdn"
        by_fqdn: dict[str, list[_Candidate]] = defaultdict(list)
        by_name: dict[str, list[_Candidate]] = defaultdict(list)
        for candidate in candidates:
            by_name[candidate.name.lower()].append(candidate)
            if candidate.fqdn:
                by_fqdn[candidate.fqdn.lower()].append(candidate)
        taken = {*self.config_aliases, *self.config_fqdns, *by_fqdn, *by_name}

        contested: dict[str, list[_Candidate]] = {}
        for name, claimants in sorted(by_fqdn.items()):
            owner = self.config_aliases.get(name) or self.config_fqdns.get(name)
            if owner is not None:
                for candidate in claimants:
                    self.warn(candidate.where, f"tag {fqdn_key} is a name {owner} uses; no fqdn")
                    candidate.fqdn = None
                continue
            named = by_name.get(name, [])
            everyone = sorted({id(c): c for c in [*claimants, *named]}.values(), key=_order)
            if len(everyone) == 1:
                continue  # one instance's Name and fqdn tags may agree
            how = ", ".join(_claim(c, {"Name": named, fqdn_key: claimants}) for c in everyone)
            self.warnings.append(
                f"name {name} is claimed by {len(everyone)} instances ({how}); given to none"
            )
            for candidate in claimants:
                candidate.fqdn = None
            if named:
                contested[name] = [c for c in everyone if all(c is not n for n in named)]

        kept: list[_Candidate] = []
        for name, group in sorted(by_name.items()):
            owner = self.config_fqdns.get(name)
            if owner is not None and name not in self.config_aliases:
                for candidate in group:
                    self.warn(candidate.where, f"tag Name is a name {owner} uses; skipped")
                continue
            if len(group) == 1 and name not in contested:
                group[0].alias = group[0].name
                kept.append(group[0])
                continue
            group.sort(key=_order)
            regions = [c.origin.region for c in group]
            renamed: list[_Candidate] = []
            for candidate in group:
                options = [f"{candidate.name}.{candidate.origin.instance_id}"]
                if regions.count(candidate.origin.region) == 1:
                    options.insert(0, f"{candidate.name}.{candidate.origin.region}")
                options.append(candidate.origin.instance_id)
                alias = next(
                    (a for a in options if tags.is_alias(a) and a.lower() not in taken), None
                )
                if alias is None:
                    self.warn(candidate.where, "every name it could have is taken; skipped")
                    continue
                taken.add(alias.lower())
                candidate.alias = alias
                renamed.append(candidate)
            names = ", ".join(c.alias for c in renamed) or "none"
            if len(group) > 1:
                where = ", ".join(
                    f"{c.origin.instance_id} ({c.origin.source}/{c.origin.region})" for c in group
                )
                self.warnings.append(
                    f"alias {name} is used by {len(group)} instances ({where}); named {names}"
                )
            else:
                self.warnings.append(
                    f"alias {name} of instance {group[0].origin.instance_id} is another "
                    f"instance's fqdn ({_ids(contested[name])}); named {names}"
                )
            kept += renamed
        return kept

    def address_of(self, candidate: _Candidate) -> str | None:
        if candidate.role == "bastion":
            choice = candidate.address or self.settings.bastion_address
            order = {
                "public": (candidate.fqdn, candidate.origin.public_ipv4, candidate.ipv6),
                "ipv6": (candidate.ipv6, candidate.origin.public_ipv4, candidate.fqdn),
                "ipv4": (candidate.origin.public_ipv4, candidate.ipv4, candidate.ipv6),
                "fqdn": (candidate.fqdn, candidate.origin.public_ipv4, candidate.ipv6),
            }[choice]
            fallback = candidate.ipv4
        else:
            choice = candidate.address or self.settings.host_address
            order = {
                "ipv6": (candidate.ipv6, candidate.ipv4, candidate.fqdn),
                "ipv4": (candidate.ipv4, candidate.ipv6, candidate.fqdn),
                "fqdn": (candidate.fqdn, candidate.ipv6, candidate.ipv4),
            }[choice]
            fallback = None
        for value in (*order, fallback):
            if value:
                return value
        return None

    def choose(self, options: list[tuple[str, str]]) -> str | tuple[str, ...]:
        """Of candidate bastions (alias, Name), the one; of several, the one the config
        declares, by alias or by the Name instances share with it (a copy of its Name next
        to it changes nothing: the config's entry, with the config's address, is the
        bastion). Else an ambiguous choice: every candidate (the declared ones if several
        are), sorted."""
        if len(options) == 1:
            return options[0][0]
        declared = {
            alias: self.declared.get(alias.lower()) or self.declared.get(name.lower())
            for alias, name in options
        }
        chosen = {d for d in declared.values() if d}
        if len(chosen) == 1:
            return chosen.pop()
        return tuple(sorted(a for a, d in declared.items() if d) or sorted(declared))

    def bastion_of(
        self,
        host: _Candidate,
        bastions: list[_Candidate],
        by_network: Mapping[Any, list[_Candidate]],
    ) -> str | tuple[str, ...] | None:
        """The host's bastion alias; a tuple of candidates when that is ambiguous; None (with
        a warning) when it has none."""
        tag_key = f"{self.prefix}bastion"
        ambiguous = "listed as ambiguous (no ssh config, no tunnel)"
        if host.bastion_tag:
            matches = [b for b in bastions if host.bastion_tag in (b.name, b.alias)]
            if len(matches) > 1:
                same = [b for b in matches if b.network == host.network] or [
                    b for b in matches if b.origin.region == host.origin.region
                ]
                matches = same if same else matches
            if not matches and host.bastion_tag in self.static_bastions:
                return host.bastion_tag
            if matches:
                choice = self.choose([(b.alias, b.name) for b in matches])
                if isinstance(choice, tuple):
                    names = " and ".join(choice)
                    self.warn(host.where, f"tag {tag_key} matches {names}; {ambiguous}")
                return choice
            self.warn(
                host.where,
                f"tag {tag_key} names an unknown bastion {tags.shown(host.bastion_tag)}; "
                "using the bastion of its VPC",
            )
        local = by_network.get(host.network, [])
        if local:
            choice = self.choose([(b.alias, b.name) for b in local])
            if isinstance(choice, tuple):
                self.warn(
                    host.where,
                    f"VPC {host.origin.vpc_id} has {len(local)} bastions "
                    f"({' and '.join(choice)}) and no tag {tag_key} chooses one; {ambiguous}",
                )
            return choice
        known = {b.alias.lower() for b in bastions}
        everywhere = [(b.alias, b.name) for b in bastions] + [
            (b, b) for b in self.static_bastions if b.lower() not in known
        ]
        if everywhere:
            choice = self.choose(everywhere)
            if isinstance(choice, tuple):
                self.warn(
                    host.where,
                    f"no bastion in VPC {host.origin.vpc_id or '?'} and {len(everywhere)} "
                    f"elsewhere ({' and '.join(choice)}); no tag {tag_key} chooses one; "
                    f"{ambiguous}",
                )
            return choice
        self.warn(
            host.where,
            f"no bastion in VPC {host.origin.vpc_id or '?'}; set tag {tag_key} to the "
            "bastion's alias; skipped",
        )
        return None


def _order(candidate: _Candidate) -> tuple[str, str, str]:
    return (candidate.origin.region, candidate.origin.source, candidate.origin.instance_id)


def _claim(candidate: _Candidate, by_tag: Mapping[str, list[_Candidate]]) -> str:
    """`i-... by tag Name and bastionctl:fqdn`: how `candidate` claims a name."""
    chosen = [tag for tag, group in by_tag.items() if any(candidate is c for c in group)]
    return f"{candidate.origin.instance_id} by tag {' and '.join(chosen)}"


def _ids(candidates: Iterable[_Candidate]) -> str:
    return ", ".join(c.origin.instance_id for c in candidates)


def map_instances(
    instances: Iterable[Mapping[str, Any]],
    settings: InventorySettings,
    services: ServiceCatalogue,
    static_bastions: Collection[str] = (),
    static: Inventory | None = None,
) -> Mapped:
    """Bastions and hosts for `instances` (records shaped like `trim()`), sorted by alias.

    `static_bastions` and the bastions of `static` (the config's entries) may be named by
    bastion tags too, and win a choice between bastions; no tag may claim a name (alias or
    fqdn) that an entry of `static` uses.
    """
    mapper = _Mapper(settings, services, static_bastions, static or Inventory())
    candidates = [c for c in (mapper.candidate(i) for i in instances) if c is not None]
    candidates = mapper.settle_names(candidates)
    out = Mapped()
    bastion_candidates = sorted(
        (c for c in candidates if c.role == "bastion"), key=lambda c: c.alias
    )
    by_network: dict[Any, list[_Candidate]] = defaultdict(list)
    for candidate in bastion_candidates:
        address = mapper.address_of(candidate)
        if address is None:
            mapper.warn(candidate.where, "bastion has no address to connect to; skipped")
            continue
        by_network[candidate.network].append(candidate)
        out.bastions[candidate.alias] = Bastion(
            alias=candidate.alias,
            user=candidate.user,
            port=candidate.port,
            ipv6=candidate.ipv6,
            ipv4=candidate.origin.public_ipv4 or candidate.ipv4,
            fqdn=candidate.fqdn,
            hostname=address,
            identity_file=candidate.identity_file,
            origin=candidate.origin,
        )
    usable = [c for c in bastion_candidates if c.alias in out.bastions]
    for candidate in sorted((c for c in candidates if c.role == "host"), key=lambda c: c.alias):
        address = mapper.address_of(candidate)
        if address is None:
            mapper.warn(candidate.where, "host has no IPv6, IPv4 or fqdn to reach it by; skipped")
            continue
        choice = mapper.bastion_of(candidate, usable, by_network)
        if choice is None:
            continue
        bastion, ambiguous = (choice, ()) if isinstance(choice, str) else ("", choice)
        out.hosts[candidate.alias] = Host(
            alias=candidate.alias,
            user=candidate.user,
            port=candidate.port,
            ipv6=candidate.ipv6,
            ipv4=candidate.ipv4,
            fqdn=candidate.fqdn,
            hostname=address,
            identity_file=candidate.identity_file,
            origin=candidate.origin,
            bastion=bastion,
            platform=candidate.platform,
            services=candidate.services,
            ambiguous_bastions=ambiguous,
        )
    out.warnings = mapper.warnings
    return out
