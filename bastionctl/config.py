"""Settings and the static inventory: TOML in, typed and validated frozen objects out."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bastionctl import paths, validate
from bastionctl.errors import ConfigError
from bastionctl.model import Bastion, Host, Inventory, Service
from bastionctl.services import ServiceCatalogue

DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"


def default_known_hosts() -> tuple[Path, ...]:
    """The user's own known_hosts, then the one bastionctl manages (`known-hosts sync`)."""
    return (Path(DEFAULT_KNOWN_HOSTS).expanduser(), paths.managed_known_hosts())


@dataclass(frozen=True)
class Settings:
    known_hosts: tuple[Path, ...] = field(default_factory=default_known_hosts)
    connect_timeout: float = 15.0
    keepalive_interval: int = 15
    bind: str = "127.0.0.1"
    default_user: str | None = None
    # Resolvers the doctor asks ("addr" or "addr:port"); empty: the system's.
    dns_servers: tuple[str, ...] = ()
    dns_timeout: float = 2.0
    # ssh config export: how long a bastion's shared connection outlives its last user.
    control_persist: str = "10m"
    # Where ssh keeps the bastions' shared connections (a private directory; %C = a hash).
    control_path: str = "~/.ssh/bastionctl-cm/%C"
    # The zone `bastion-hosts --format zone` writes records for.
    dns_domain: str | None = None
    # A regex (matched whole) for a TOTP prompt other than "Verification code:".
    totp_prompt: str | None = None
    # Seconds the agent keeps a bastion login after its last tunnel closes (0: closes at once).
    persist: float = 600.0


HostAddress = Literal["ipv6", "ipv4", "fqdn"]
BastionAddress = Literal["public", "ipv6", "ipv4", "fqdn"]


@dataclass(frozen=True)
class InventorySettings:
    """How EC2 instances become hosts: tag names, defaults, which address to jump to."""

    tag_prefix: str = "bastionctl:"
    # Identity file for an instance's KeyName when no key tag says otherwise.
    key_path: str = "~/.ssh/{key_name}"
    linux_user: str = "ec2-user"
    windows_user: str = "Administrator"
    host_address: HostAddress = "ipv6"
    # public: the fqdn tag, else the public IPv4, else the IPv6 address.
    bastion_address: BastionAddress = "public"
    cache_ttl: int = 300
    include_stopped: bool = False
    # DNS domains EC2 tags may name things in: a dotted Name (alias) or an fqdn tag is
    # accepted only strictly under one of them (`web.example.com` for `example.com`).
    domains: tuple[str, ...] = ()


@dataclass(frozen=True)
class Ec2Source:
    """One AWS profile and its regions; `regions` empty means the profile's own region."""

    name: str
    profile: str | None = None
    regions: tuple[str, ...] = ()
    filters: tuple[tuple[str, tuple[str, ...]], ...] = ()
    endpoint_url: str | None = None


@dataclass(frozen=True)
class Config:
    path: Path | None
    settings: Settings = field(default_factory=Settings)
    services: ServiceCatalogue = field(default_factory=ServiceCatalogue.with_builtins)
    inventory: Inventory = field(default_factory=Inventory)
    inventory_settings: InventorySettings = field(default_factory=InventorySettings)
    ec2: tuple[Ec2Source, ...] = ()


def resolve_config_path(explicit: Path | None) -> Path | None:
    """--config, then $BASTIONCTL_CONFIG, then config.toml, then the lab's config if any."""
    for candidate, must_exist in (
        (explicit, True),
        (paths.env_config_file(), True),
        (paths.default_config_file(), False),
        (paths.lab_config_file(), False),
    ):
        if candidate is None:
            continue
        if candidate.is_file():
            return candidate
        if must_exist:
            raise ConfigError(
                f"config file {candidate} does not exist",
                "check --config / BASTIONCTL_CONFIG, or write it with `bastionctl init`",
            )
    return None


def load_config(path: Path | None) -> Config:
    if path is None:
        return Config(path=None)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config {path} is not UTF-8 text") from None
    return parse_config(text, path)


def parse_config(text: str, path: Path) -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    return _Parser(text, path).config(data)


# A field: how to check and convert its raw TOML value.
Converter = Callable[[Any], Any]


def _str(check: Callable[[str], Any]) -> Converter:
    def convert(value: Any) -> Any:
        if not isinstance(value, str):
            raise ValueError("must be a string")
        return check(value)

    return convert


def _positive_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError("must be a positive number")
    return float(value)


def _non_negative_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1e9:
        raise ValueError("must be a number of seconds, 0 or more")
    return float(value)


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError("must be a positive integer")
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def _str_list(check: Callable[[str], Any]) -> Converter:
    def convert(value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError("must be a string or a list of strings")
        return tuple(check(v) for v in value)

    return convert


def _platform(value: Any) -> str:
    if value not in ("linux", "windows"):
        raise ValueError("must be 'linux' or 'windows'")
    return str(value)


def _connection_template(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    try:
        value.format(host="127.0.0.1", port=1)
    except (KeyError, IndexError, ValueError):
        raise ValueError("may only use the placeholders {host} and {port}") from None
    return value


def _bind(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return validate.hostname(value) if value not in ("localhost",) else value


def _duration(value: str) -> str:
    if not re.fullmatch(r"(yes|no|\d+[smhdw]?)", value):
        raise ValueError("must be yes, no, or a time such as 600, 10m, 1h")
    return value


def _dns_server(value: str) -> str:
    from bastionctl.dns import parse_server

    try:
        host, _port = parse_server(value)
    except ConfigError as exc:
        raise ValueError(exc.message.split(" is ")[-1]) from None
    except ValueError:
        raise ValueError("must be an IP address with an optional :port") from None
    validate.hostname(host)  # a zone id (after %) only if it is an interface name
    return value


def _regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"must be a regular expression ({exc})") from None
    return value


def _choice(*choices: str) -> Converter:
    def convert(value: Any) -> Any:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return value

    return convert


def _non_negative_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("must be an integer of 0 or more")
    return value


def _tag_prefix(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.:/=+@-]{0,64}", value):
        raise ValueError("must be letters, digits and _.:/=+@- (at most 64)")
    return value


def _path(value: str) -> str:
    """A file path for ssh config (validate.path), `/`-separated; on Windows a backslash
    separates anywhere, elsewhere only in a Windows absolute path (C:\\...)."""
    from bastionctl.system import api  # late: `import bastionctl.cli` stays without it

    return validate.path(value, backslash_separates=api.family() == "windows")


def _key_path(value: str) -> str:
    try:
        sample = value.format(key_name="k")
    except (KeyError, IndexError, ValueError):
        raise ValueError("may only use the placeholder {key_name}") from None
    # Every file it names must be one ssh config can carry, with `~` expanded.
    _path(sample)
    try:
        _path(str(Path(sample).expanduser()))
    except RuntimeError:
        raise ValueError("has a ~ that names no known user") from None
    return value.replace("\\", "/")


def _domains(value: Any) -> tuple[str, ...]:
    """DNS names (lower-cased, no trailing dot, no duplicates); the last label not all digits,
    so that no domain makes an address-looking name (10.0.0.1) acceptable."""
    names: list[str] = []
    for name in _str_list(validate.fqdn)(value):
        if name.rsplit(".", 1)[-1].isdigit():
            raise ValueError("must be DNS names (the last label is not all digits)")
        if name not in names:
            names.append(name)
    return tuple(names)


def _profile(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.@+-]{1,128}", value):
        raise ValueError("must be an AWS profile name (letters, digits, _.@+-)")
    return value


def _region(value: str) -> str:
    if not re.fullmatch(r"[a-z]{2}(-[a-z0-9]+)+-\d{1,2}", value):
        raise ValueError("must be an AWS region such as eu-central-1")
    return value


def _endpoint_url(value: str) -> str:
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
        raise ValueError("must be an http(s) URL")
    return value


def _local_ports(value: Any) -> dict[str, int]:
    if not isinstance(value, dict):
        raise ValueError("must be a table such as { mysql = 54134 }")
    out: dict[str, int] = {}
    for name, port in value.items():
        try:
            out[validate.service_name(name)] = validate.port(port)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    return out


def _filters(value: Any) -> tuple[tuple[str, tuple[str, ...]], ...]:
    if not isinstance(value, dict):
        raise ValueError('must be a table such as { "tag:env" = ["prod"] }')
    out: list[tuple[str, tuple[str, ...]]] = []
    for key, values in sorted(value.items()):
        if isinstance(values, str):
            values = [values]
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ValueError(f"filter {key!r} must be a string or a list of strings")
        out.append((key, tuple(values)))
    return tuple(out)


SETTINGS_FIELDS: dict[str, Converter] = {
    "known_hosts": _str_list(_path),
    "connect_timeout": _positive_number,
    "keepalive_interval": _positive_int,
    "bind": _bind,
    "default_user": _str(validate.user),
    "dns_servers": _str_list(_dns_server),
    "dns_timeout": _positive_number,
    "control_persist": _str(_duration),
    "control_path": _str(_path),
    "dns_domain": _str(validate.fqdn),
    "totp_prompt": _str(_regex),
    "persist": _non_negative_number,
}
ENDPOINT_FIELDS: dict[str, Converter] = {
    "user": _str(validate.user),
    "port": validate.port,
    "ipv6": _str(validate.ipv6),
    "ipv4": _str(validate.ipv4),
    "fqdn": _str(validate.fqdn),
    "hostname": _str(validate.hostname),
    "identity_file": _str(_path),
    "host_key_alias": _str(validate.host_key_alias),
}
BASTION_FIELDS: dict[str, Converter] = {**ENDPOINT_FIELDS, "otp_single_use": _bool}
HOST_FIELDS: dict[str, Converter] = {
    **ENDPOINT_FIELDS,
    "bastion": _str(validate.alias),
    "platform": _platform,
    "services": _str_list(validate.service_name),
    "local_ports": _local_ports,
}
SERVICE_FIELDS: dict[str, Converter] = {
    "port": validate.port,
    "local_port": validate.port,
    "connection": _connection_template,
    "aliases": _str_list(validate.service_name),
    "description": _str(str),
}
INVENTORY_FIELDS: dict[str, Converter] = {
    "tag_prefix": _str(_tag_prefix),
    "key_path": _str(_key_path),
    "linux_user": _str(validate.user),
    "windows_user": _str(validate.user),
    "host_address": _choice("ipv6", "ipv4", "fqdn"),
    "bastion_address": _choice("public", "ipv6", "ipv4", "fqdn"),
    "cache_ttl": _non_negative_int,
    "include_stopped": _bool,
    "domains": _domains,
}
EC2_FIELDS: dict[str, Converter] = {
    "name": _str(validate.alias),
    "profile": _str(_profile),
    "regions": _str_list(_region),
    "filters": _filters,
    "endpoint_url": _str(_endpoint_url),
}
TOP_LEVEL = ("settings", "inventory", "ec2", "services", "bastions", "hosts")


class _Parser:
    def __init__(self, text: str, path: Path) -> None:
        self.lines = text.splitlines()
        self.path = path

    def error(self, table: tuple[str, ...], key: str | None, why: str) -> ConfigError:
        line = self._line_of(table, key)
        where = f"{self.path}:{line}" if line else str(self.path)
        name = ".".join((*table, key) if key else table)
        return ConfigError(f"{where}: {name}: {why}")

    def _line_of(self, table: tuple[str, ...], key: str | None) -> int | None:
        """Best-effort line number of `key` inside `[table]` (or of the table header)."""
        header_re = re.compile(r"^\s*\[\[?\s*(.+?)\s*\]\]?\s*(#.*)?$")
        current: tuple[str, ...] = ()
        header_line: int | None = None
        for number, raw in enumerate(self.lines, start=1):
            match = header_re.match(raw)
            if match:
                current = tuple(p.strip().strip("\"'") for p in match.group(1).split("."))
                if current == table and key is None:
                    return number
                if current == table:
                    header_line = number
                continue
            if key is not None and current == table:
                key_match = re.match(r"^\s*[\"']?([^\"'=\s]+)[\"']?\s*=", raw)
                if key_match and key_match.group(1) == key:
                    return number
        return header_line

    def fields(
        self, table: tuple[str, ...], raw: Any, spec: Mapping[str, Converter]
    ) -> dict[str, Any]:
        if not isinstance(raw, dict):
            raise self.error(table, None, "must be a table")
        out: dict[str, Any] = {}
        for key, value in raw.items():
            if key not in spec:
                raise self.error(table, key, f"unknown key (valid: {', '.join(sorted(spec))})")
            try:
                out[key] = spec[key](value)
            except ValueError as exc:
                raise self.error(table, key, f"{exc}, got {value!r}") from None
        return out

    def named_tables(self, data: Mapping[str, Any], section: str) -> dict[str, Any]:
        raw = data.get(section, {})
        if not isinstance(raw, dict):
            raise self.error((section,), None, "must be a table of named tables")
        for name in raw:
            try:
                validate.alias(name)
            except ValueError as exc:
                raise self.error((section, name), None, f"bad name: {exc}") from None
        return raw

    def config(self, data: Mapping[str, Any]) -> Config:
        for key in data:
            if key not in TOP_LEVEL:
                raise self.error((), key, f"unknown section (valid: {', '.join(TOP_LEVEL)})")
        settings = self.settings(data.get("settings", {}))
        inventory_settings = InventorySettings(
            **self.fields(("inventory",), data.get("inventory", {}), INVENTORY_FIELDS)
        )
        ec2 = self.ec2_sources(data.get("ec2", []))
        services = self.services(data)
        bastions = {
            name: self.bastion(name, raw, settings)
            for name, raw in self.named_tables(data, "bastions").items()
        }
        hosts = {
            name: self.host(name, raw, settings, bastions, services, bool(ec2))
            for name, raw in self.named_tables(data, "hosts").items()
        }
        for name in hosts:
            if name in bastions:
                raise self.error(("hosts", name), None, "is also defined as a bastion")
        return Config(
            self.path, settings, services, Inventory(bastions, hosts), inventory_settings, ec2
        )

    def ec2_sources(self, raw: Any) -> tuple[Ec2Source, ...]:
        if isinstance(raw, dict):
            raw = [raw]
        if not isinstance(raw, list):
            raise self.error(("ec2",), None, "must be [[ec2]] tables")
        sources: list[Ec2Source] = []
        for entry in raw:
            values = self.fields(("ec2",), entry, EC2_FIELDS)
            values.setdefault("name", values.get("profile", "default"))
            if any(s.name == values["name"] for s in sources):
                why = f"two sources are named {values['name']!r} (set name = ...)"
                raise self.error(("ec2",), "name", why)
            sources.append(Ec2Source(**values))
        return tuple(sources)

    def settings(self, raw: Any) -> Settings:
        values = self.fields(("settings",), raw, SETTINGS_FIELDS)
        if "known_hosts" in values:
            values["known_hosts"] = tuple(
                self.local_path(("settings",), "known_hosts", p) for p in values["known_hosts"]
            )
        else:
            for default in default_known_hosts():
                self.expanded(("settings",), "known_hosts", str(default), "the default")
        return Settings(**values)

    def services(self, data: Mapping[str, Any]) -> ServiceCatalogue:
        extra: list[Service] = []
        for name, raw in self.named_tables(data, "services").items():
            table = ("services", name)
            try:
                validate.service_name(name)
            except ValueError as exc:
                raise self.error(table, None, f"bad service name: {exc}") from None
            values = self.fields(table, raw, SERVICE_FIELDS)
            if "port" not in values:
                raise self.error(table, "port", "missing (the service's port on the host)")
            extra.append(
                Service(
                    name=name,
                    remote_port=values["port"],
                    local_port=values.get("local_port", _default_local_port(values["port"])),
                    connection=values.get("connection", "{host}:{port}"),
                    aliases=values.get("aliases", ()),
                    description=values.get("description", ""),
                )
            )
        return ServiceCatalogue.with_builtins(extra)

    def local_path(self, table: tuple[str, ...], key: str, value: str) -> Path:
        """A checked (`/`-separated) path: `~` expanded, a relative one taken from the config
        file's directory. A Windows absolute path (C:/...) stays as written on every OS: on
        Linux it is no relative path to put under the config's directory."""
        if validate.is_windows_absolute(value):
            return Path(value)
        try:
            path = Path(value).expanduser()
        except RuntimeError:  # ~name of no known user, or no home at all
            raise self.error(table, key, f"cannot expand ~ in {value!r}") from None
        path = path if path.is_absolute() else (self.path.parent / path)
        self.expanded(table, key, str(path))
        return path

    def expanded(self, table: tuple[str, ...], key: str, value: str, what: str = "") -> None:
        """`value` once `~` or the config's directory is in it: the ssh config renderer
        checks that too, so a home or a directory it cannot write is refused here."""
        try:
            _path(value)
        except ValueError as exc:
            got = f"{what} {value!r}" if what else repr(value)
            raise self.error(table, key, f"{exc}, got {got}") from None

    def endpoint_values(
        self, table: tuple[str, ...], values: dict[str, Any], settings: Settings
    ) -> dict[str, Any]:
        if "user" not in values:
            if settings.default_user is None:
                raise self.error(table, "user", "missing (or set settings.default_user)")
            values["user"] = settings.default_user
        if "identity_file" in values:
            values["identity_file"] = self.local_path(
                table, "identity_file", values["identity_file"]
            )
        if not any(values.get(k) for k in ("hostname", "ipv6", "ipv4", "fqdn")):
            raise self.error(table, None, "needs an address: one of hostname, ipv6, ipv4, fqdn")
        return values

    def bastion(self, name: str, raw: Any, settings: Settings) -> Bastion:
        table = ("bastions", name)
        values = self.endpoint_values(table, self.fields(table, raw, BASTION_FIELDS), settings)
        return Bastion(alias=name, **values)

    def host(
        self,
        name: str,
        raw: Any,
        settings: Settings,
        bastions: Mapping[str, Bastion],
        services: ServiceCatalogue,
        ec2_bastions: bool = False,
    ) -> Host:
        table = ("hosts", name)
        values = self.endpoint_values(table, self.fields(table, raw, HOST_FIELDS), settings)
        if "bastion" not in values:
            if len(bastions) != 1:
                why = "no bastion is defined" if not bastions else "missing (several bastions)"
                raise self.error(table, "bastion", why)
            values["bastion"] = next(iter(bastions))
        elif values["bastion"] not in bastions and not ec2_bastions:
            known = ", ".join(sorted(bastions)) or "none defined"
            raise self.error(table, "bastion", f"unknown bastion {values['bastion']!r} ({known})")
        platform = values.get("platform", "linux")
        if "services" not in values:
            values["services"] = ("rdp",) if platform == "windows" else ()
        for service in values["services"]:
            if service not in services:
                known = ", ".join(services.names())
                raise self.error(table, "services", f"unknown service {service!r} ({known})")
        values["services"] = tuple(services.get(s).name for s in values["services"])
        ports = values.get("local_ports", {})
        for service in ports:
            if service not in services:
                known = ", ".join(services.names())
                raise self.error(table, "local_ports", f"unknown service {service!r} ({known})")
        values["local_ports"] = tuple(sorted((services.get(s).name, p) for s, p in ports.items()))
        return Host(alias=name, **values)


def _default_local_port(remote_port: int) -> int:
    """The seed's scheme: 3389 -> 53389, 3306 -> 53306, 1433 -> 51433."""
    return 50000 + remote_port if remote_port <= 15535 else remote_port
