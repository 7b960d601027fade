"""boto3: GetConsoleOutput for many instances at once, each failure one line."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import botocore.exceptions

from bastionctl.config import Ec2Source
from bastionctl.inventory import ec2_fetch
from bastionctl.inventory.console_keys import console_text

# Errors that mean "this instance type has no Latest console output": ask again without it.
LATEST_UNSUPPORTED = {
    "UnsupportedOperation",
    "InvalidParameter",
    "InvalidParameterValue",
    "InvalidParameterCombination",
}


@dataclass(frozen=True)
class Target:
    alias: str
    instance_id: str
    source: Ec2Source
    region: str


@dataclass(frozen=True)
class Fetched:
    target: Target
    text: str | None  # decoded console output ('' when the instance has none yet)
    error: str | None
    seconds: float
    latest: bool = True  # whether the output is the latest (not the boot-time snapshot)


def _get(client: Any, target: Target) -> Fetched:
    started = time.monotonic()
    latest = True
    try:
        try:
            answer = client.get_console_output(InstanceId=target.instance_id, Latest=True)
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in LATEST_UNSUPPORTED:
                raise
            latest = False
            answer = client.get_console_output(InstanceId=target.instance_id)
        text = console_text(answer.get("Output"))
    except ValueError as exc:
        return Fetched(target, None, str(exc), time.monotonic() - started, latest)
    except Exception as exc:  # every failure of one instance is one line, never a crash
        why = ec2_fetch.describe(exc, target.source)
        why = why.replace("ec2:DescribeInstances", "ec2:GetConsoleOutput")
        return Fetched(target, None, why, time.monotonic() - started, latest)
    return Fetched(target, text, None, time.monotonic() - started, latest)


def fetch(
    targets: Sequence[Target], on_result: Callable[[Fetched], None] | None = None
) -> list[Fetched]:
    """Every target's console output, at most MAX_WORKERS at once; in the order of `targets`."""
    config = ec2_fetch._client_config()
    clients: dict[tuple[str, str], Any] = {}
    for target in targets:
        key = (target.source.name, target.region)
        if key in clients:
            continue
        # Sessions are not thread-safe, clients are: make them all here first.
        try:
            session, _regions = ec2_fetch.plan(target.source)
            clients[key] = session.client(
                "ec2",
                region_name=target.region,
                endpoint_url=target.source.endpoint_url,
                config=config,
            )
        except ec2_fetch.SourceError as exc:
            clients[key] = str(exc)
        except Exception as exc:
            clients[key] = ec2_fetch.describe(exc, target.source)

    def run(target: Target) -> Fetched:
        client = clients[(target.source.name, target.region)]
        if isinstance(client, str):
            result = Fetched(target, None, client, 0.0)
        else:
            result = _get(client, target)
        if on_result is not None:
            on_result(result)
        return result

    workers = min(ec2_fetch.MAX_WORKERS, max(1, len(targets)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(run, targets))
