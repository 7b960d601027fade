"""`bastionctl init --from-ec2` against moto: the source it writes is the one `hosts` reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.ec2.conftest import Aws
from tests.lab.helpers import run_cli


def test_init_from_ec2_writes_the_current_profile_and_region(
    aws: Aws, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", aws.url)
    monkeypatch.setenv("AWS_PROFILE", "prod")
    config = tmp_path / "config.toml"
    result = run_cli("--config", str(config), "init", "--from-ec2")
    assert result.returncode == 0, result.stderr
    text = config.read_text()
    assert '[[ec2]]\nname = "prod"\nprofile = "prod"\nregions = ["eu-central-1"]\n' in text
    assert "\n# domains = " in text  # the example's domain is not the user's
    listed = run_cli("--config", str(config), "hosts", "--json")
    assert listed.returncode == 0, listed.stderr
    aliases = {row["alias"] for row in json.loads(listed.stdout)}
    assert "server-01" in aliases and "jump-dev" not in aliases


def test_init_from_ec2_without_a_region_or_credentials_is_one_line(
    aws: Aws, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.toml"
    (aws.home / ".aws" / "config").write_text("[profile bare]\n")
    (aws.home / ".aws" / "credentials").write_text("")
    monkeypatch.setenv("AWS_PROFILE", "bare")
    result = run_cli("--config", str(config), "init", "--from-ec2")
    assert (result.returncode, result.stderr) == (
        2,
        "bastionctl: error: the AWS profile bare has no region; set one with `aws configure` "
        "or AWS_DEFAULT_REGION, then run init again\n",
    )
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    result = run_cli("--config", str(config), "init", "--from-ec2")
    assert (result.returncode, result.stderr) == (
        2,
        "bastionctl: error: the AWS profile bare has no credentials; run `aws configure` (or "
        "`aws sso login`) or set AWS_PROFILE, then run init again\n",
    )
    assert not config.exists()
