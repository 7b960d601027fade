"""What a running lab is: the record `up` writes as lab.json, and the config it implies."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bastionctl.errors import LabError

from .spec import BASTION, DOMAIN


@dataclass(frozen=True)
class HostInfo:
    alias: str
    ns: str
    ipv6: str
    fqdn: str
    platform: str
    sshd_log: Path
    services: dict[int, str]
    config_services: tuple[str, ...] = ()


@dataclass(frozen=True)
class LabInfo:
    root: Path
    name: str
    net_id: int
    bastion_ns: str
    bastion_ipv6: str
    bastion_ipv4: str
    bastion_private_ipv6: str
    bastion_sshd_log: Path
    op_user: str
    bulk_user: str
    op_secret_file: Path
    bulk_secret_file: Path
    known_hosts: Path
    client_keys: dict[str, Path]
    mysql_defaults_file: Path
    hosts: dict[str, HostInfo]
    pids: dict[str, int]
    xrdp_real: bool
    bastion_alias: str = BASTION
    bastion_port: int = 22
    bastion_reverse_port: int = 2222
    mysql_database: str = "labdb"
    mysql_expected_row: tuple[int, str] = (1, "hello from server-02")
    domain: str = DOMAIN
    notes: list[str] = field(default_factory=list)

    @property
    def file(self) -> Path:
        return self.root / "lab.json"

    def save(self) -> None:
        data = asdict(self)
        self.file.write_text(json.dumps(data, indent=2, default=str) + "\n")

    @classmethod
    def load(cls, root: Path) -> LabInfo:
        path = root / "lab.json"
        try:
            data: dict[str, Any] = json.loads(path.read_text())
            hosts = {
                alias: HostInfo(
                    **{
                        **h,
                        "sshd_log": Path(h["sshd_log"]),
                        "services": {int(k): v for k, v in h["services"].items()},
                        "config_services": tuple(h["config_services"]),
                    }
                )
                for alias, h in data.pop("hosts").items()
            }
            paths = (
                "root",
                "bastion_sshd_log",
                "op_secret_file",
                "bulk_secret_file",
                "known_hosts",
                "mysql_defaults_file",
            )
            for key in paths:
                data[key] = Path(data[key])
            data["client_keys"] = {k: Path(v) for k, v in data["client_keys"].items()}
            data["mysql_expected_row"] = tuple(data["mysql_expected_row"])
            return cls(hosts=hosts, **data)
        except FileNotFoundError:
            raise LabError(f"no lab under {root}", "bring it up with `bastionctl lab up`") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise LabError(
                f"{path} is not a lab record ({exc})", "run `bastionctl lab down`"
            ) from None

    def read_secret(self, bulk: bool) -> str:
        """The base32 TOTP secret of the op (or bulk) user, from the bastion's own file."""
        path = self.bulk_secret_file if bulk else self.op_secret_file
        return path.read_text().splitlines()[0].strip()


def render_config(info: LabInfo, bulk: bool = False) -> str:
    """The bastionctl config for this lab, as the op user or the bulk-test user."""
    user = info.bulk_user if bulk else info.op_user
    who = "bulk-test user (no reuse ban, no rate limit)" if bulk else "operator user"
    lines = [
        f"# Written by `bastionctl lab up`: the local 2FA lab under {info.root},",
        f"# as its {who}. Bastion {info.bastion_alias} asks for the key and a TOTP code.",
        "",
        "[settings]",
        f'known_hosts = ["{info.known_hosts}"]',
        "",
        f"[bastions.{info.bastion_alias}]",
        f'ipv6 = "{info.bastion_ipv6}"',
        f'ipv4 = "{info.bastion_ipv4}"',
        f'fqdn = "{info.bastion_alias}.{info.domain}"',
        f'user = "{user}"',
        f'identity_file = "{info.client_keys[info.bastion_alias]}"',
    ]
    if bulk:
        lines.append("otp_single_use = false")
    for host in info.hosts.values():
        services = ", ".join(f'"{s}"' for s in host.config_services)
        lines += [
            "",
            f"[hosts.{host.alias}]",
            f'ipv6 = "{host.ipv6}"',
            f'fqdn = "{host.fqdn}"',
            f'user = "{user}"',
            f'identity_file = "{info.client_keys[host.alias]}"',
            f'bastion = "{info.bastion_alias}"',
            f'platform = "{host.platform}"',
            f"services = [{services}]",
        ]
    return "\n".join(lines) + "\n"
