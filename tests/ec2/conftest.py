"""moto in server mode on loopback (a real HTTP endpoint), seeded once per session."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from moto.server import ThreadedMotoServer

from tests.ec2 import world


@dataclass
class Aws:
    url: str
    made: world.Made
    home: Path


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def made(moto_url: str) -> world.Made:
    result = world.build(moto_url)
    world.build_hostile(moto_url, result)
    world.build_claims(moto_url, result)
    return result


def write_profiles(home: Path) -> None:
    aws = home / ".aws"
    aws.mkdir(parents=True, exist_ok=True)
    (aws / "config").write_text(
        "[profile prod]\nregion = eu-central-1\n\n[profile dev]\nregion = us-east-1\n"
    )
    (aws / "credentials").write_text(
        "[prod]\naws_access_key_id = AKIAPRODEXAMPLE00001\naws_secret_access_key = prod\n\n"
        "[dev]\naws_access_key_id = AKIADEVEXAMPLE000001\naws_secret_access_key = dev\n"
    )


@pytest.fixture
def aws(
    moto_url: str, made: world.Made, isolated_dirs: Path, monkeypatch: pytest.MonkeyPatch
) -> Aws:
    """Two profiles in ~/.aws of an isolated home; few retries so failing regions fail fast."""
    monkeypatch.setenv("HOME", str(isolated_dirs))
    write_profiles(isolated_dirs)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    return Aws(moto_url, made, isolated_dirs)
