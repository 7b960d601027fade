"""The RDP thumbprints EC2 attests, kept per instance in bastionctl's data dir: recorded,
replaced, forgotten, found by instance id; a file bastionctl did not write is not trusted."""

from __future__ import annotations

import json
import stat
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pytest

from bastionctl.errors import ConfigError
from bastionctl.model import Host, Origin
from bastionctl.rdp import attested
from bastionctl.rdp.attested import Attested, default_path, for_endpoint, forget, read, record

INSTANCE = "i-0123456789abcdef0"
OTHER_INSTANCE = "i-0fedcba9876543210"
THUMBPRINT = "3F2A9C0D1E4B5A6978C8D7E6F5A4B3C2D1E0F9A8"
NEW_THUMBPRINT = "0123456789ABCDEF0123456789ABCDEF01234567"

SERVER_03 = Attested(
    instance_id=INSTANCE,
    alias="server-03",
    thumbprint=THUMBPRINT,
    at="2026-12-01T12:00:00Z",
    source="prod",
    region="eu-west-1",
)
SERVER_04 = Attested(
    instance_id=OTHER_INSTANCE,
    alias="server-04",
    thumbprint=NEW_THUMBPRINT,
    at="2026-12-01T12:00:00Z",
)


def _host(instance_id: str | None, alias: str = "server-03") -> Host:
    origin = Origin("prod", instance_id, "eu-west-1") if instance_id else None
    return Host(
        alias=alias,
        user="Administrator",
        origin=origin,
        bastion="bastion-1",
        platform="windows",
    )


def _write_raw(body: Any) -> Path:
    path = default_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(body), encoding="utf-8")
    return path


def test_the_file_is_in_the_data_dir(isolated_dirs: Path) -> None:
    assert default_path() == isolated_dirs / "data" / "bastionctl" / "rdp_certificates.json"


def test_nothing_recorded_reads_as_nothing() -> None:
    assert read() == []
    assert for_endpoint(_host(INSTANCE)) is None


def test_record_then_read_round_trip() -> None:
    assert record([SERVER_03, SERVER_04]) == []
    assert read() == [SERVER_03, SERVER_04]
    assert for_endpoint(_host(INSTANCE)) == SERVER_03


def test_the_file_is_private_json() -> None:
    record([SERVER_03])
    path = default_path()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text(encoding="utf-8")) == {"certificates": [asdict(SERVER_03)]}


def test_the_same_thumbprint_again_keeps_its_first_date() -> None:
    record([SERVER_03])
    again = replace(SERVER_03, at="2027-01-15T08:30:00Z", alias="server-03-renamed")
    assert record([again]) == []
    # The alias is the tag's as of now; the date is when EC2 first showed this thumbprint.
    assert read() == [replace(again, at=SERVER_03.at)]


def test_a_new_thumbprint_replaces_the_old_and_is_returned_as_a_change() -> None:
    record([SERVER_03, SERVER_04])
    renewed = replace(SERVER_03, thumbprint=NEW_THUMBPRINT, at="2027-01-15T08:30:00Z")
    assert record([renewed]) == [(SERVER_03, renewed)]
    assert read() == [renewed, SERVER_04]


def test_forget_by_endpoint_drops_its_instance_only() -> None:
    moved_alias = replace(SERVER_04, alias="server-03")  # the tag now on another instance
    record([SERVER_03, moved_alias])
    assert forget(_host(INSTANCE), "server-03") == 1
    assert read() == [moved_alias]
    assert forget(_host(INSTANCE), "server-03") == 0
    assert read() == [moved_alias]


@pytest.mark.parametrize("name", ["server-03", INSTANCE])
def test_forget_a_name_no_longer_in_the_inventory(name: str) -> None:
    record([SERVER_03, SERVER_04])
    assert forget(None, name) == 1
    assert read() == [SERVER_04]
    assert forget(None, name) == 0


def test_forget_a_name_recorded_nowhere_leaves_the_file_alone() -> None:
    record([SERVER_03])
    before = default_path().stat().st_mtime_ns
    assert forget(None, "server-99") == 0
    assert forget(_host(None), "server-03") == 0  # no instance: nothing is its
    assert default_path().stat().st_mtime_ns == before
    assert read() == [SERVER_03]


def test_for_endpoint_goes_by_instance_id_only() -> None:
    record([SERVER_03])
    assert for_endpoint(_host(INSTANCE, alias="renamed")) == SERVER_03
    assert for_endpoint(_host(OTHER_INSTANCE, alias="server-03")) is None
    assert for_endpoint(_host(None, alias="server-03")) is None


@pytest.mark.parametrize(
    "bad",
    [
        {"thumbprint": THUMBPRINT.lower()},
        {"thumbprint": THUMBPRINT[:39]},
        {"thumbprint": THUMBPRINT + "00"},
        {"thumbprint": None},
        {"instance_id": "i-XYZ"},
        {"instance_id": "server-03"},
        {"instance_id": INSTANCE + "\n"},
        {"alias": "server 03"},
        {"alias": "server-03\n"},
        {"alias": ""},
        {"at": "yesterday"},
        {"source": "prod env"},
        {"region": 5},
    ],
    ids=repr,
)
def test_entries_bastionctl_did_not_write_are_left_out(bad: dict[str, Any]) -> None:
    good = asdict(SERVER_04)
    _write_raw({"certificates": [good, {**asdict(SERVER_03), **bad}]})
    assert read() == [SERVER_04]
    assert for_endpoint(_host(INSTANCE)) is None


@pytest.mark.parametrize("bad", ["server-03", 5, None, [asdict(SERVER_03)]], ids=repr)
def test_an_entry_that_is_not_an_object_is_left_out(bad: Any) -> None:
    _write_raw({"certificates": [bad, asdict(SERVER_04)]})
    assert read() == [SERVER_04]


@pytest.mark.parametrize(
    "text",
    [
        "not json {",
        "",
        json.dumps([asdict(SERVER_03)]),
        json.dumps({}),
        json.dumps({"certificates": {"i-0123456789abcdef0": asdict(SERVER_03)}}),
    ],
    ids=["not-json", "empty", "a-list", "no-certificates", "certificates-not-a-list"],
)
def test_a_file_bastionctl_did_not_write_is_an_error_naming_it(text: str) -> None:
    path = default_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        read()
    error = caught.value
    assert str(path) in error.message
    assert error.hint is not None and "known-hosts sync" in error.hint
    assert "\n" not in str(error)
    # Nothing is recorded over it: the person decides what to do with the file.
    with pytest.raises(ConfigError):
        record([SERVER_03])
    assert path.read_text(encoding="utf-8") == text


def test_an_explicit_path_is_used_instead_of_the_data_dir(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere" / "rdp.json"
    record([SERVER_03], elsewhere)
    assert read(elsewhere) == [SERVER_03]
    assert not default_path().exists()
    assert attested.forget(None, INSTANCE, elsewhere) == 1
    assert read(elsewhere) == []
