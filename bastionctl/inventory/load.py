"""The inventory every command uses: the config's static entries merged with EC2 (cached).

boto3 is imported only when a region has to be fetched, so commands on a static inventory or a
fresh cache start fast.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bastionctl.config import Config, Ec2Source
from bastionctl.errors import BastionctlError
from bastionctl.inventory import cache
from bastionctl.inventory.ec2_map import Mapped, map_instances
from bastionctl.model import Bastion, Host, Inventory

STATIC = "static"
# Signs that this machine is set up for AWS; without any, no config means no EC2 source
# (and no credential lookup that would reach for the instance metadata service).
AWS_SIGNS_ENV = (
    "AWS_PROFILE",
    "AWS_ACCESS_KEY_ID",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_ENDPOINT_URL_EC2",
    "AWS_ENDPOINT_URL",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
)


class InventoryError(BastionctlError):
    """No source of the inventory could be loaded."""


@dataclass
class Loaded:
    config: Config
    warnings: list[str] = field(default_factory=list)


Progress = Callable[[str], None]


def implicit_sources(config: Config) -> tuple[Ec2Source, ...]:
    """The configured EC2 sources; with no config file, boto3's defaults when AWS is set up."""
    if config.ec2 or config.path is not None:
        return config.ec2
    home_aws = Path.home() / ".aws"
    if (
        any(os.environ.get(n) for n in AWS_SIGNS_ENV)
        or (home_aws / "config").is_file()
        or (home_aws / "credentials").is_file()
    ):
        return (Ec2Source(name="default"),)
    return ()


def load_inventory(
    config: Config,
    *,
    refresh: bool = False,
    only: Collection[str] | None = None,
    progress: Progress | None = None,
    now: Callable[[], float] = time.time,
) -> Loaded:
    """`config` with its inventory merged from every source; warnings for what was skipped."""
    sources = implicit_sources(config)
    if only is not None:
        known = {STATIC, *(s.name for s in sources)}
        unknown = sorted(set(only) - known)
        if unknown:
            from bastionctl.errors import UsageError

            raise UsageError(
                f"unknown source {', '.join(unknown)}", f"sources: {', '.join(sorted(known))}"
            )
        sources = tuple(s for s in sources if s.name in only)
    static = config.inventory if only is None or STATIC in only else Inventory()
    if not sources:
        return Loaded(dataclasses.replace(config, inventory=static))

    warnings: list[str] = []
    instances, loaded_any = _instances(config, sources, refresh, progress, now, warnings)
    mapped = map_instances(instances, config.inventory_settings, config.services, static=static)
    warnings += mapped.warnings
    inventory = merge(static, mapped, warnings)
    if not loaded_any and not static.bastions and not static.hosts:
        raise InventoryError(
            "no inventory could be loaded: " + "; ".join(warnings[-3:] or ["no source answered"]),
            "fix the sources above, or add a static inventory (`bastionctl init --print`)",
        )
    return Loaded(dataclasses.replace(config, inventory=inventory), warnings)


def _instances(
    config: Config,
    sources: tuple[Ec2Source, ...],
    refresh: bool,
    progress: Progress | None,
    now: Callable[[], float],
    warnings: list[str],
) -> tuple[list[dict[str, Any]], bool]:
    """The instance records of every source (cache or fetch), and whether any source answered."""
    settings = config.inventory_settings
    ttl = settings.cache_ttl
    stored: dict[str, dict[str, cache.RegionEntry]] = {}
    files: dict[str, Path] = {}
    stale: list[Ec2Source] = []
    for source in sources:
        files[source.name] = cache.cache_file(source, settings.include_stopped)
        entries, problem = cache.read(files[source.name])
        if problem:
            warnings.append(problem)
        stored[source.name] = entries
        fresh = (
            not refresh
            and ttl > 0
            and entries
            and all(
                r in entries and now() - entries[r].fetched_at < ttl
                for r in _regions(source, entries)
            )
        )
        if not fresh:
            stale.append(source)
    if stale:
        _fetch_into(stale, stored, files, settings.include_stopped, progress, now, warnings)

    instances: list[dict[str, Any]] = []
    loaded_any = False
    for source in sources:
        entries = stored[source.name]
        for region in _regions(source, entries):
            entry = entries.get(region)
            if entry is not None:
                loaded_any = True
                instances.extend(entry.instances)
    return instances, loaded_any


def _regions(source: Ec2Source, entries: dict[str, cache.RegionEntry]) -> list[str]:
    """The source's regions; for "the profile's region", the one region its cache holds."""
    return list(source.regions) or sorted(entries)[:1]


def _fetch_into(
    sources: list[Ec2Source],
    stored: dict[str, dict[str, cache.RegionEntry]],
    files: dict[str, Path],
    include_stopped: bool,
    progress: Progress | None,
    now: Callable[[], float],
    warnings: list[str],
) -> None:
    from bastionctl.inventory import ec2_fetch

    jobs: list[tuple[ec2_fetch.Job, Any]] = []
    for source in sources:
        try:
            session, regions = ec2_fetch.plan(source)
        except ec2_fetch.SourceError as exc:
            warnings.append(f"ec2 {source.name}: {exc}{_stale_note(stored[source.name], now)}")
            continue
        if not source.regions:
            # The default region may differ from what the cache holds: keep only this one.
            stored[source.name] = {r: e for r, e in stored[source.name].items() if r in regions}
        jobs += [(ec2_fetch.Job(source, region), session) for region in regions]
    if not jobs:
        return

    def report(result: ec2_fetch.Result) -> None:
        if progress is None:
            return
        where = f"ec2 {result.job.source.name}/{result.job.region}"
        if result.error:
            progress(f"{where}: failed after {result.seconds:.1f} s")
        else:
            count = len(result.instances or ())
            pages = f"{result.pages} page{'s' * (result.pages != 1)}"
            progress(
                f"{where}: {count} instance{'s' * (count != 1)} ({pages}) in {result.seconds:.1f} s"
            )

    changed: set[str] = set()
    for result in ec2_fetch.fetch(jobs, include_stopped, report):
        name, region = result.job.source.name, result.job.region
        if result.instances is None:
            old = stored[name].get(region)
            note = _stale_note({region: old} if old else {}, now)
            warnings.append(f"ec2 {name}/{region}: {result.error}{note}")
            continue
        stored[name][region] = cache.RegionEntry(now(), result.instances)
        changed.add(name)
    for name in sorted(changed):
        try:
            cache.write(files[name], stored[name])
        except OSError as exc:
            warnings.append(f"cannot write the inventory cache {files[name]}: {exc.strerror}")


def _stale_note(entries: dict[str, cache.RegionEntry], now: Callable[[], float]) -> str:
    if not entries:
        return ""
    age = now() - min(e.fetched_at for e in entries.values())
    return f"; using the cached answer from {_age(age)} ago"


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def merge(static: Inventory, ec2: Mapped, warnings: list[str]) -> Inventory:
    """EC2 entries, with the config's entries of the same alias taking their place.

    Aliases compare without case (ssh matches host names so): `[hosts.web]` replaces an EC2
    `Web` too, and EC2 hosts behind a replaced bastion follow the config's spelling of it.
    Hosts with an ambiguous bastion stay as they are (they have no bastion to check).
    """
    bastions: dict[str, Bastion] = dict(ec2.bastions)
    hosts: dict[str, Host] = dict(ec2.hosts)
    ec2_aliases = {alias.lower(): alias for alias in [*bastions, *hosts]}
    respelled: dict[str, str] = {}
    for section, entries in (("bastions", static.bastions), ("hosts", static.hosts)):
        for alias, entry in entries.items():
            old = ec2_aliases.get(alias.lower())
            replaced = (bastions.pop(old, None) or hosts.pop(old, None)) if old else None
            _note_override(section, alias, replaced, warnings)
            if isinstance(entry, Bastion) and old is not None and old != alias:
                respelled[old] = alias
            if isinstance(entry, Bastion):
                bastions[alias] = entry
            else:
                hosts[alias] = entry
    for alias, host in list(hosts.items()):
        if host.origin is not None and respelled:
            host = dataclasses.replace(
                host,
                bastion=respelled.get(host.bastion, host.bastion),
                ambiguous_bastions=tuple(respelled.get(b, b) for b in host.ambiguous_bastions),
            )
            hosts[alias] = host
        if host.ambiguous:
            continue
        if host.bastion not in bastions:
            what = f"config hosts.{alias}" if host.origin is None else f"host {alias}"
            warnings.append(f"{what}: bastion {host.bastion} is not in the inventory; skipped")
            del hosts[alias]
    return Inventory(dict(sorted(bastions.items())), dict(sorted(hosts.items())))


def _note_override(
    section: str, alias: str, replaced: Bastion | Host | None, warnings: list[str]
) -> None:
    if replaced is not None and replaced.origin is not None:
        origin = replaced.origin
        warnings.append(
            f"config {section}.{alias} overrides EC2 instance {origin.instance_id} "
            f"({origin.source}/{origin.region})"
        )
