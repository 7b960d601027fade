"""boto3: describe_instances for every source and region at once, errors as one line each."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import boto3
import botocore.config
import botocore.exceptions
import botocore.parsers

from bastionctl.config import Ec2Source
from bastionctl.inventory.ec2_map import RUNNING, WITH_STOPPED, trim

MAX_WORKERS = 8
PAGE_SIZE = 1000
CONNECT_TIMEOUT = 5
READ_TIMEOUT = 30
DEFAULT_MAX_ATTEMPTS = 5
EXPIRED = {"ExpiredToken", "ExpiredTokenException", "RequestExpired", "TokenRefreshRequired"}
DENIED = {
    "AuthFailure",
    "UnauthorizedOperation",
    "AccessDenied",
    "AccessDeniedException",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
}
THROTTLED = {"Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests"}


@dataclass(frozen=True)
class Job:
    source: Ec2Source
    region: str


@dataclass(frozen=True)
class Result:
    job: Job
    instances: list[dict[str, Any]] | None
    error: str | None
    seconds: float
    pages: int = 0


class SourceError(Exception):
    """A source cannot even start (unknown profile, no region): one line for the user."""


def _clean(text: str, limit: int = 160) -> str:
    """Server-provided text, fit for one line of a terminal."""
    text = re.sub(r"[\x00-\x1f\x7f-\x9f]+", " ", text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe(exc: BaseException, source: Ec2Source) -> str:
    """What went wrong, in words an operator can act on."""
    profile = source.profile or os.environ.get("AWS_PROFILE") or "default"
    if isinstance(exc, botocore.exceptions.ProfileNotFound):
        return f"AWS profile {profile!r} is not configured (aws configure --profile {profile})"
    if isinstance(
        exc, botocore.exceptions.NoCredentialsError | botocore.exceptions.PartialCredentialsError
    ):
        return (
            f"no AWS credentials for profile {profile!r} "
            "(aws configure, aws sso login, or AWS_PROFILE)"
        )
    sso = ("SSOTokenLoadError", "UnauthorizedSSOTokenError", "TokenRetrievalError")
    if type(exc).__name__ in sso:
        return (
            f"the SSO session of profile {profile!r} has expired "
            f"(aws sso login --profile {profile})"
        )
    if isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error", {})
        code = _clean(str(error.get("Code", "")), 60)
        message = _clean(str(error.get("Message", "")))
        if code in EXPIRED:
            return f"the credentials of profile {profile!r} have expired ({code}); refresh them"
        if code in DENIED:
            return f"access denied ({code}): the identity needs ec2:DescribeInstances"
        if code in THROTTLED:
            return f"throttled by AWS ({code}) after retries; try again later"
        return f"{code or 'error'}: {message}" if message else code or "error"
    if isinstance(
        exc, botocore.exceptions.EndpointConnectionError | botocore.exceptions.ConnectTimeoutError
    ):
        return f"endpoint unreachable ({_clean(str(exc))})"
    if isinstance(exc, botocore.exceptions.ReadTimeoutError):
        return "the endpoint did not answer in time"
    if isinstance(exc, botocore.parsers.ResponseParserError):
        return "the endpoint answered with something that is not an EC2 response (server error)"
    if isinstance(exc, botocore.exceptions.BotoCoreError):
        return _clean(str(exc))
    return f"{type(exc).__name__}: {_clean(str(exc))}"


def _client_config() -> botocore.config.Config:
    mode = os.environ.get("AWS_RETRY_MODE", "standard")
    try:
        attempts = int(os.environ.get("AWS_MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS))
    except ValueError:
        attempts = DEFAULT_MAX_ATTEMPTS
    return botocore.config.Config(
        retries={"mode": mode, "max_attempts": max(1, attempts)},
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        user_agent_extra="bastionctl",
    )


def plan(source: Ec2Source) -> tuple[Any, list[str]]:
    """The boto3 session of `source` and its regions; SourceError when it cannot start."""
    try:
        session = boto3.Session(profile_name=source.profile)
    except botocore.exceptions.BotoCoreError as exc:
        raise SourceError(describe(exc, source)) from None
    regions = list(source.regions)
    if not regions:
        if not session.region_name:
            raise SourceError("no region: set regions in [[ec2]] or AWS_DEFAULT_REGION")
        regions = [session.region_name]
    return session, regions


def _filters(source: Ec2Source, include_stopped: bool) -> list[dict[str, Any]]:
    states = list(WITH_STOPPED) if include_stopped else [RUNNING]
    filters = [{"Name": "instance-state-name", "Values": states}]
    filters += [{"Name": name, "Values": list(values)} for name, values in source.filters]
    return filters


def _fetch(client: Any, job: Job, include_stopped: bool) -> Result:
    started = time.monotonic()
    instances: list[dict[str, Any]] = []
    count = 0
    try:
        pages = client.get_paginator("describe_instances").paginate(
            Filters=_filters(job.source, include_stopped),
            PaginationConfig={"PageSize": PAGE_SIZE},
        )
        for page in pages:
            count += 1
            for reservation in page.get("Reservations", ()):
                owner = reservation.get("OwnerId")
                for instance in reservation.get("Instances", ()):
                    instances.append(
                        trim(instance, source=job.source.name, region=job.region, owner=owner)
                    )
    except Exception as exc:  # every failure of one region is one warning, never a crash
        return Result(job, None, describe(exc, job.source), time.monotonic() - started, count)
    return Result(job, instances, None, time.monotonic() - started, count)


def fetch(
    jobs: Sequence[tuple[Job, Any]],
    include_stopped: bool,
    on_result: Callable[[Result], None] | None = None,
) -> list[Result]:
    """Run every (job, session) at once; results in the order of `jobs`."""
    config = _client_config()
    clients = []
    for job, session in jobs:
        # Clients are thread-safe; sessions are not, so create them all here first.
        try:
            clients.append(
                session.client(
                    "ec2",
                    region_name=job.region,
                    endpoint_url=job.source.endpoint_url,
                    config=config,
                )
            )
        except Exception as exc:
            clients.append(exc)

    def run(index: int) -> Result:
        job = jobs[index][0]
        client = clients[index]
        if isinstance(client, Exception):
            result = Result(job, None, describe(client, job.source), 0.0)
        else:
            result = _fetch(client, job, include_stopped)
        if on_result is not None:
            on_result(result)
        return result

    with ThreadPoolExecutor(max_workers=min(MAX_WORKERS, max(1, len(jobs)))) as pool:
        return list(pool.map(run, range(len(jobs))))
