"""EC2 instances to bastions and hosts. Pure: instance records in, inventory and warnings out.

Every tag value is untrusted. A bad value falls back to the default for its field, or drops
the instance when there is no safe default, and always produces a warning that names the
instance and the tag but never repeats the value.
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
from bastionctl.model import Bastion, Host, Origin, Platform
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
    ) -> None:
        self.settings = settings
        self.prefix = settings.tag_prefix
        self.services = services
        self.static_bastions = static_bastions
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
        fqdn = self.tag(where, values, "fqdn", validate.fqdn, "no fqdn")
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

    def disambiguate(self, candidates: list[_Candidate]) -> None:
        """Give every candidate a unique alias; clashing names get the region, then the id."""
        groups: dict[str, list[_Candidate]] = defaultdict(list)
        for candidate in candidates:
            groups[candidate.name].append(candidate)
        used = {name for name, group in groups.items() if len(group) == 1}
        for name, group in sorted(groups.items()):
            if len(group) == 1:
                group[0].alias = name
                continue
            group.sort(key=lambda c: (c.origin.region, c.origin.source, c.origin.instance_id))
            regions = [c.origin.region for c in group]
            for candidate in group:
                alias = f"{name}.{candidate.origin.region}"
                if regions.count(candidate.origin.region) > 1 or alias in used:
                    alias = f"{name}.{candidate.origin.instance_id}"
                if alias in used or not tags.is_alias(alias):
                    alias = candidate.origin.instance_id
                used.add(alias)
                candidate.alias = alias
            where = ", ".join(
                f"{c.origin.instance_id} ({c.origin.source}/{c.origin.region})" for c in group
            )
            renamed = ", ".join(c.alias for c in group)
            self.warnings.append(
                f"alias {name} is used by {len(group)} instances ({where}); named {renamed}"
            )

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

    def bastion_of(
        self,
        host: _Candidate,
        bastions: list[_Candidate],
        by_network: Mapping[Any, list[_Candidate]],
    ) -> str | None:
        tag_key = f"{self.prefix}bastion"
        if host.bastion_tag:
            matches = [b for b in bastions if host.bastion_tag in (b.name, b.alias)]
            if len(matches) > 1:
                same = [b for b in matches if b.network == host.network] or [
                    b for b in matches if b.origin.region == host.origin.region
                ]
                matches = same if same else matches
            if len(matches) == 1:
                return matches[0].alias
            if not matches and host.bastion_tag in self.static_bastions:
                return host.bastion_tag
            if matches:
                names = ", ".join(sorted(b.alias for b in matches))
                self.warn(host.where, f"tag {tag_key} matches several bastions ({names}); skipped")
                return None
            self.warn(
                host.where,
                f"tag {tag_key} names an unknown bastion {tags.shown(host.bastion_tag)}; "
                "using the bastion of its VPC",
            )
        local = by_network.get(host.network, [])
        if len(local) == 1:
            return local[0].alias
        if len(local) > 1:
            names = " and ".join(sorted(b.alias for b in local))
            self.warn(
                host.where,
                f"VPC {host.origin.vpc_id} has two or more bastions ({names}) and no tag "
                f"{tag_key} chooses one; skipped",
            )
            return None
        everywhere = [b.alias for b in bastions] + [
            b for b in self.static_bastions if b not in {c.alias for c in bastions}
        ]
        if len(everywhere) == 1:
            return everywhere[0]
        self.warn(
            host.where,
            f"no bastion in VPC {host.origin.vpc_id or '?'}; set tag {tag_key} to the "
            "bastion's alias; skipped",
        )
        return None


def map_instances(
    instances: Iterable[Mapping[str, Any]],
    settings: InventorySettings,
    services: ServiceCatalogue,
    static_bastions: Collection[str] = (),
) -> Mapped:
    """Bastions and hosts for `instances` (records shaped like `trim()`), sorted by alias.

    `static_bastions` (from the config) may be named by bastion tags too.
    """
    mapper = _Mapper(settings, services, static_bastions)
    candidates = [c for c in (mapper.candidate(i) for i in instances) if c is not None]
    mapper.disambiguate(candidates)
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
        bastion = mapper.bastion_of(candidate, usable, by_network)
        if bastion is None:
            continue
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
        )
    out.warnings = mapper.warnings
    return out
