"""`known-hosts sync`: pin the host keys EC2 attests (each instance's console output) in the
known_hosts file bastionctl manages, under the name bastionctl looks each endpoint up by.

The console output reaches us over the authenticated EC2 API, so its key block vouches for the
instance's keys as far as the instance's own boot does. A key block that is missing, cut off or
inconsistent pins nothing for that instance (its old pins stay), and says why.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from bastionctl import paths
from bastionctl.config import Config
from bastionctl.inventory import console_fetch, console_keys
from bastionctl.inventory.load import STATIC, implicit_sources
from bastionctl.model import Endpoint, Host
from bastionctl.rdp import attested
from bastionctl.ssh import pinned
from bastionctl.ssh.hostkeys import KnownHosts, fingerprint, host_key_names

Status = Literal["pinned", "no-block", "refused", "failed"]


@dataclass
class Outcome:
    alias: str
    instance_id: str
    name: str  # the known_hosts name the keys go under
    status: Status
    message: str
    keys: list[console_keys.ConsoleKey] = field(default_factory=list)
    rdp_thumbprint: str | None = None


@dataclass
class SyncReport:
    path: Path
    outcomes: list[Outcome] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    changed: bool = False
    # RDP certificate thumbprints EC2 attests (Windows instances), and where they are kept.
    rdp_path: Path | None = None
    rdp_recorded: int = 0

    def count(self, status: Status) -> int:
        return sum(1 for o in self.outcomes if o.status == status)


def ec2_endpoints(config: Config, only: tuple[str, ...] | None = None) -> list[Endpoint]:
    """The inventory's endpoints that are EC2 instances (of the sources `only` names)."""
    inventory = config.inventory
    endpoints: list[Endpoint] = [*inventory.bastions.values(), *inventory.hosts.values()]
    return [
        e for e in endpoints if e.origin is not None and (only is None or e.origin.source in only)
    ]


def _target(config: Config, endpoint: Endpoint) -> console_fetch.Target | None:
    origin = endpoint.origin
    if origin is None:
        return None
    for source in implicit_sources(config):
        if source.name == origin.source:
            return console_fetch.Target(endpoint.alias, origin.instance_id, source, origin.region)
    return None


def sync(
    config: Config,
    *,
    only: tuple[str, ...] | None = None,
    progress: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.time,
    path: Path | None = None,
    rdp_path: Path | None = None,
) -> SyncReport:
    path = path or paths.managed_known_hosts()
    report = SyncReport(path)
    if path not in config.settings.known_hosts:
        report.warnings.append(
            f"the config's known_hosts does not list {path}: neither bastionctl nor the "
            "exported ssh config will use these keys; add it to [settings] known_hosts"
        )
    wanted = tuple(s for s in only if s != STATIC) if only is not None else None
    endpoints = {e.alias: e for e in ec2_endpoints(config, wanted)}
    targets = [t for t in (_target(config, e) for e in endpoints.values()) if t is not None]

    def said(result: console_fetch.Fetched) -> None:
        if progress is not None:
            what = "failed" if result.error else "read"
            progress(
                f"console {result.target.instance_id} ({result.target.alias}): {what} "
                f"in {result.seconds:.1f} s"
            )

    fetched = console_fetch.fetch(targets, said)
    with pinned.locked(path):  # the same file as forget and a key accepted
        pins = pinned.read(path)
        at = pinned.now_utc(clock())
        others = KnownHosts([p for p in config.settings.known_hosts if p != path])
        for result in fetched:
            endpoint = endpoints[result.target.alias]
            outcome = _outcome(endpoint, result)
            report.outcomes.append(outcome)
            if outcome.status != "pinned":
                continue
            new = [
                pinned.pin(
                    outcome.name,
                    key.key_type,
                    key.base64,
                    pinned.EC2_CONSOLE,
                    at,
                    alias=endpoint.alias,
                    instance=result.target.instance_id,
                    source=result.target.source.name,
                    region=result.target.region,
                )
                for key in outcome.keys
            ]
            before = [p for p in pins if p.name.lower() == outcome.name.lower()]
            # A key pinned before keeps its first date.
            new = [next((b for b in before if b.key_base64 == n.key_base64), n) for n in new]
            pins, dropped = pinned.replace_for(pins, outcome.name, new)
            if {p.key_base64 for p in before} != {p.key_base64 for p in new}:
                report.changed = True
            for old in dropped:
                report.warnings.append(
                    f"{endpoint.alias}: dropped the {old.origin} {old.key_type} key {old.sha256} "
                    f"pinned for {outcome.name}{' at ' + old.at if old.at else ''}: EC2 attests "
                    "other keys"
                )
            report.warnings += _conflicts(others, endpoint, outcome)
        if report.changed or (
            not path.exists() and any(o.status == "pinned" for o in report.outcomes)
        ):
            pinned.write(pins, path)
            report.changed = True
    _record_thumbprints(report, endpoints, fetched, pinned.now_utc(clock()), rdp_path)
    return report


def _record_thumbprints(
    report: SyncReport,
    endpoints: dict[str, Endpoint],
    fetched: list[console_fetch.Fetched],
    at: str,
    path: Path | None,
) -> None:
    """Keep the RDP certificate thumbprint each console output printed (whatever became of
    its SSH key block): `tunnel rdp` and `doctor --deep` compare the server's with it."""
    outcomes = {o.alias: o for o in report.outcomes}
    new: list[attested.Attested] = []
    for result in fetched:
        outcome = outcomes[result.target.alias]
        if outcome.rdp_thumbprint is None:
            continue
        entry = attested.Attested(
            result.target.instance_id,
            endpoints[result.target.alias].alias,
            outcome.rdp_thumbprint,
            at,
            result.target.source.name,
            result.target.region,
        )
        if not attested.valid(entry):  # an id or name no EC2 gives: kept nowhere, said here
            outcome.message += "; its RDP certificate thumbprint is not recorded (unusual id)"
            continue
        new.append(entry)
        outcome.message += f"; RDP certificate thumbprint {outcome.rdp_thumbprint} recorded"
    if not new:
        return
    report.rdp_path = path or attested.default_path()
    report.rdp_recorded = len(new)
    for old, entry in attested.record(new, report.rdp_path):
        report.warnings.append(
            f"{entry.alias}: EC2 now attests the RDP certificate thumbprint {entry.thumbprint} "
            f"for {entry.instance_id}, not {old.thumbprint} (read {old.at})"
        )


def _outcome(endpoint: Endpoint, result: console_fetch.Fetched) -> Outcome:
    name = host_key_names(endpoint)[0]
    base = Outcome(endpoint.alias, result.target.instance_id, name, "failed", "")
    if result.error is not None or result.text is None:
        base.message = f"cannot read the console output: {result.error}"
        return base
    parsed = console_keys.parse(result.text)
    base.rdp_thumbprint = parsed.rdp_thumbprint
    if parsed.problem is not None:
        base.status = "refused"
        base.message = f"nothing pinned: {parsed.problem}"
        return base
    if not parsed.keys:
        base.status = "no-block"
        windows = isinstance(endpoint, Host) and endpoint.platform == "windows"
        base.message = "no SSH host key block in the console output" + (
            " (a Windows instance)"
            if windows
            else ""
            if result.latest
            else " (this instance type gives the boot-time output only)"
        )
        return base
    base.status = "pinned"
    base.keys = parsed.keys
    checked = (
        "cross-checked with its fingerprint block"
        if parsed.cross_checked
        else ("no fingerprint block to cross-check")
    )
    kinds = ", ".join(k.key_type for k in parsed.keys)
    count = len(parsed.keys)
    base.message = f"pinned {count} key{'s' * (count != 1)} ({kinds}) for {name}; {checked}"
    if parsed.notes:
        base.message += "; " + "; ".join(parsed.notes)
    return base


def _conflicts(others: KnownHosts, endpoint: Endpoint, outcome: Outcome) -> list[str]:
    """Keys the user's own known_hosts lists for the same name that EC2 does not attest: they
    would still be accepted, so the user hears of them."""
    attested = {k.blob for k in outcome.keys}
    names = host_key_names(endpoint)
    lines: list[str] = []
    for entry in others.entries:
        if entry.revoked or not any(entry.matches(n) for n in names):
            continue
        if entry.key.asbytes() not in attested:
            lines.append(
                f"{endpoint.alias}: {entry.where} lists a {entry.key.get_name()} key "
                f"{fingerprint(entry.key)} for {outcome.name} that EC2 does not attest; "
                f"check it, and remove it with `ssh-keygen -f {entry.path} -R {outcome.name}`"
            )
    return lines
