"""What the lab is made of: names, addresses, users, paths. Pure data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

BASTION = "server-01"
DOMAIN = "lab.bastionctl.test"


@dataclass(frozen=True)
class TargetPlan:
    alias: str
    index: int  # last group of the private IPv6 address
    platform: str
    # port -> kind; "-standin" kinds are echo servers named as such, "bench-" the
    # benchmark's sink and source
    services: dict[int, str]
    config_services: tuple[str, ...]


TARGETS = (
    TargetPlan("server-02", 2, "linux", {3306: "mariadb"}, ("mysql",)),
    TargetPlan("server-03", 3, "windows", {3389: "xrdp", 1433: "mssql-standin"}, ("rdp", "mssql")),
    TargetPlan(
        "server-04",
        4,
        "windows",
        # 9000/9001: the benchmark's sink and source (bench/), reached with `tunnel port`.
        {3389: "rdp-standin", 1433: "mssql-standin", 9000: "bench-sink", 9001: "bench-source"},
        ("rdp", "mssql"),
    ),
)


@dataclass(frozen=True)
class LabSpec:
    name: str = "bcl"
    net_id: int = 1
    root: Path = Path("/var/lib/bastionctl-lab/bcl")

    def __post_init__(self) -> None:
        if not (self.name.isalnum() and self.name.islower() and 2 <= len(self.name) <= 6):
            raise ValueError("lab name must be 2-6 lower-case letters or digits")
        if not 1 <= self.net_id <= 255:
            raise ValueError("lab net_id must be 1..255")

    # Namespaces and links.
    @property
    def bastion_ns(self) -> str:
        return f"{self.name}-bastion"

    def target_ns(self, target: TargetPlan) -> str:
        return f"{self.name}-srv{target.index:02d}"

    @property
    def host_veth(self) -> str:
        return f"{self.name}-h0"

    # Addresses.
    def public6(self, last: int) -> str:
        return f"fd00:bc1:{self.net_id:x}:1::{last:x}"

    def private6(self, last: int) -> str:
        return f"fd00:bc1:{self.net_id:x}:2::{last:x}"

    @property
    def fence6(self) -> str:
        """Every lab IPv6 address; unreachable from the host except via the lab's own links."""
        return f"fd00:bc1:{self.net_id:x}::/48"

    @property
    def fence4(self) -> str:
        return f"10.213.{self.net_id}.0/24"

    def public4(self, last: int) -> str:
        return f"10.213.{self.net_id}.{last}"

    # Users.
    @property
    def op_user(self) -> str:
        return f"{self.name}-op"

    @property
    def bulk_user(self) -> str:
        return f"{self.name}-bulk"

    @property
    def journal(self) -> Path:
        """Every pid `up` started, written as it starts each one."""
        return pid_journal(self.root)

    @property
    def netns_etc(self) -> Path:
        return Path("/etc/netns") / self.bastion_ns


def pid_journal(root: Path) -> Path:
    return root / "run" / "pids"
