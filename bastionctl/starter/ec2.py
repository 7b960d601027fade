"""The `[[ec2]]` source for the AWS set-up of this shell: its profile and region."""

from __future__ import annotations

import os
from typing import Any

from bastionctl import validate
from bastionctl.errors import ConfigError


def current_source() -> dict[str, Any]:
    """The profile and region boto3 would use now; one clear error without either."""
    import boto3
    import botocore.exceptions

    try:
        session = boto3.Session()
        profile = session.profile_name
        region = session.region_name
        credentials = session.get_credentials()
    except botocore.exceptions.BotoCoreError as exc:
        raise ConfigError(
            f"cannot read the AWS set-up: {exc}", "check AWS_PROFILE and ~/.aws/config"
        ) from None
    named = f"the AWS profile {profile}" if os.environ.get("AWS_PROFILE") else "AWS"
    if region is None:
        raise ConfigError(
            f"{named} has no region",
            "set one with `aws configure` or AWS_DEFAULT_REGION, then run init again",
        )
    if credentials is None:
        raise ConfigError(
            f"{named} has no credentials",
            "run `aws configure` (or `aws sso login`) or set AWS_PROFILE, then run init again",
        )
    source: dict[str, Any] = {}
    # Without AWS_PROFILE boto3 says "default" even when the credentials come from AWS_*
    # variables; naming that profile would make boto3 skip those variables.
    if os.environ.get("AWS_PROFILE"):
        source["name"] = profile if validate.ALIAS_RE.fullmatch(profile) else "aws"
        source["profile"] = profile
    source["regions"] = [region]
    return source
