"""The EC2 answers on disk: one JSON file per source, an entry per region with its fetch time."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bastionctl import paths
from bastionctl.atomic import write_atomic
from bastionctl.config import Ec2Source
from bastionctl.system.files import private_dir

VERSION = 1
# What else decides what a source returns when the config leaves it to the AWS defaults.
AWS_ENV = ("AWS_PROFILE", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_ENDPOINT_URL_EC2")


@dataclass(frozen=True)
class RegionEntry:
    fetched_at: float
    instances: list[dict[str, Any]]


def cache_file(source: Ec2Source, include_stopped: bool) -> Path:
    key = {
        "source": asdict(source),
        "include_stopped": include_stopped,
        "env": {name: os.environ.get(name) for name in AWS_ENV},
        "endpoint": os.environ.get("AWS_ENDPOINT_URL"),
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return paths.cache_dir() / "ec2" / f"{source.name}-{digest}.json"


def read(path: Path) -> tuple[dict[str, RegionEntry], str | None]:
    """The entries of `path`, and a warning when the file exists but cannot be used."""
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}, None
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not JSON"
        return {}, f"cache {path} is unreadable ({why}); ignored, it will be rewritten"
    entries = _entries(data)
    if entries is None:
        return {}, f"cache {path} is corrupt; ignored, it will be rewritten"
    return entries, None


def _entries(data: Any) -> dict[str, RegionEntry] | None:
    if not isinstance(data, dict) or data.get("version") != VERSION:
        return None
    regions = data.get("regions")
    if not isinstance(regions, dict):
        return None
    out: dict[str, RegionEntry] = {}
    for region, entry in regions.items():
        if not isinstance(entry, dict):
            return None
        fetched_at = entry.get("fetched_at")
        instances = entry.get("instances")
        if not isinstance(fetched_at, int | float) or not isinstance(instances, list):
            return None
        if not all(isinstance(i, dict) for i in instances):
            return None
        out[region] = RegionEntry(float(fetched_at), instances)
    return out


def write(path: Path, entries: dict[str, RegionEntry]) -> None:
    data = {
        "version": VERSION,
        "regions": {
            region: {"fetched_at": entry.fetched_at, "instances": entry.instances}
            for region, entry in sorted(entries.items())
        },
    }
    private_dir(path.parent)
    write_atomic(path, json.dumps(data, separators=(",", ":")))
