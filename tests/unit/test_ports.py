"""Remembered and configured local ports: the port book, which port wins, `tunnel ports`."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bastionctl import paths
from bastionctl.config import parse_config
from bastionctl.errors import ConfigError
from bastionctl.model import TunnelSpec
from bastionctl.tunnels.ports import PortBook
from bastionctl.tunnels.protocol import TunnelRequest
from bastionctl.tunnels.spec import build_spec, choose_local_port, remembered_note

CONFIG = """
[bastions.server-01]
ipv4 = "192.0.2.1"
user = "op"

[hosts.server-02]
ipv4 = "192.0.2.2"
user = "op"
services = ["mysql"]
local_ports = { sqlserver = 51999 }

[hosts.server-04]
ipv4 = "192.0.2.4"
user = "op"
"""


def book_file() -> Path:
    return paths.state_dir() / "ports.json"


def spec_for(host: str, service: str, local_port: int | None = None) -> TunnelSpec:
    config = parse_config(CONFIG, Path("/nonexistent/c.toml"))
    return build_spec(config, TunnelRequest(host, service, local_port=local_port))


def test_only_a_chosen_port_is_remembered_with_its_date(isolated_dirs: Path) -> None:
    book = PortBook()
    book.remember("server-02/mysql", 53307, replace=False)  # a collision's stand-in
    assert book.entries() == {}
    book.remember("server-02/mysql", 54134, replace=True)
    entry = book.entry("server-02/mysql")
    assert entry is not None and entry.port == 54134
    today = datetime.date.today().isoformat()
    assert entry.reason == f"chosen with --local-port on {today}"
    assert json.loads(book_file().read_text()) == {
        "server-02/mysql": {"port": 54134, "why": "local-port", "date": today}
    }


def test_the_old_format_is_still_read_and_forgotten(isolated_dirs: Path) -> None:
    book_file().parent.mkdir(parents=True, exist_ok=True)
    book_file().write_text(json.dumps({"server-02/mysql": 54134, "server-04/rdp": 53390}))
    book = PortBook()
    assert book.get("server-02/mysql") == 54134
    assert "no reason recorded" in book.entries()["server-04/rdp"].reason
    assert [e.key for e in book.forget("SERVER-02")] == ["server-02/mysql"]  # any case
    assert [e.key for e in book.forget("server-04/rdp")] == ["server-04/rdp"]
    assert book.forget("server-04") == []
    assert json.loads(book_file().read_text()) == {}


def test_config_beats_remembered_beats_scheme(isolated_dirs: Path) -> None:
    book = PortBook()
    assert spec_for("server-02", "mysql").local_port == 53306
    assert remembered_note(spec_for("server-02", "mysql")) is None
    book.remember("server-02/mysql", 54134, replace=True)
    book.remember("server-02/mssql", 54133, replace=True)
    spec = spec_for("server-02", "mysql")
    assert spec.local_port == 54134
    note = remembered_note(spec)
    assert note is not None and note.startswith(
        "server-02/mysql uses remembered local port 54134 (chosen with --local-port on "
    )
    assert note.endswith(
        "instead of the scheme's 53306; go back with "
        "`bastionctl tunnel ports --forget server-02/mysql`"
    )
    # The config's port (given under an alias of the service) wins, and needs no note.
    configured = spec_for("server-02", "mssql")
    assert configured.local_port == 51999 and remembered_note(configured) is None
    host = configured.host
    assert choose_local_port(host, configured.service, 1433).source == "config"
    # An explicit --local-port needs no note either.
    assert remembered_note(spec_for("server-02", "mysql", 55000)) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("{ redis = 1 }", r"hosts.h.local_ports: unknown service 'redis'"),
        ("{ mysql = 0 }", r"hosts.h.local_ports: mysql: must be an integer from 1 to 65535"),
        ("{ mysql = 65536 }", r"mysql: must be an integer from 1 to 65535"),
        ('{ mysql = "1" }', r"mysql: must be an integer"),
        ("{ MySQL = 1 }", r"MySQL: must be lower-case"),
        ("54134", r"hosts.h.local_ports: must be a table such as \{ mysql = 54134 \}"),
    ],
)
def test_bad_local_ports_are_one_clear_error(tmp_path: Path, value: str, expected: str) -> None:
    text = '[bastions.b]\nipv4 = "192.0.2.1"\nuser = "u"\n[hosts.h]\nipv4 = "192.0.2.2"\n'
    text += f'user = "u"\nlocal_ports = {value}\n'
    with pytest.raises(ConfigError, match=expected):
        parse_config(text, tmp_path / "c.toml")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bastionctl", *args], capture_output=True, text=True, timeout=60
    )


def test_tunnel_ports_lists_and_forgets(isolated_dirs: Path, tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(CONFIG)
    PortBook().remember("server-02/mysql", 54134, replace=True)
    shown = cli("--config", str(config), "tunnel", "ports")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].split()[:2] == ["server-02/mssql", "51999"]
    assert f"set in {config} (local_ports)" in lines[0]
    assert lines[1].split()[:2] == ["server-02/mysql", "54134"]
    assert "chosen with --local-port on " in lines[1]
    as_json = json.loads(cli("--config", str(config), "tunnel", "ports", "--json").stdout)
    assert [(r["host"], r["service"], r["port"], r["source"]) for r in as_json] == [
        ("server-02", "mssql", 51999, "config"),
        ("server-02", "mysql", 54134, "remembered"),
    ]
    unknown = cli("--config", str(config), "tunnel", "ports", "--forget", "server-04/rdp")
    assert unknown.returncode == 2
    assert unknown.stderr == (
        "bastionctl: error: no remembered port for server-04/rdp; see `bastionctl tunnel ports`\n"
    )
    forgot = cli("--config", str(config), "tunnel", "ports", "--forget", "server-02")
    assert forgot.returncode == 0 and forgot.stderr == ""
    assert forgot.stdout.splitlines() == [
        "forgot server-02/mysql (54134); the scheme's port (or the config's) applies again"
    ]
    assert PortBook().entries() == {}
