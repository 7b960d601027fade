"""The control protocol's messages and codec, without any socket."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from bastionctl import errors
from bastionctl.errors import (
    AuthError,
    BastionctlError,
    ExitStatus,
    LoginCancelled,
    NeedsInput,
    PortInUseError,
    ProtocolError,
    UsageError,
)
from bastionctl.model import Bastion, Host, Service, TunnelSpec
from bastionctl.tunnels import protocol
from bastionctl.tunnels.protocol import (
    MESSAGES,
    VERSION,
    Answer,
    AnswerTunnel,
    AttachTunnel,
    Failed,
    Listed,
    ListTunnels,
    LoggedOut,
    LoginInfo,
    Logout,
    Message,
    News,
    Notice,
    Opened,
    OpenTunnel,
    Prompt,
    Stopped,
    StopTunnels,
    TunnelId,
    TunnelInfo,
    TunnelRequest,
    TunnelState,
    expect,
)

FULL_INFO = TunnelInfo(
    id=TunnelId(4242, 7),
    process="agent",
    service="rdp",
    host="server-02",
    bastion="server-01",
    remote_host="localhost",
    remote_port=3389,
    bind="::1",
    local_port=53389,
    connection="[::1]:53389",
    state=TunnelState.RECONNECTING,
    started=1_700_000_000.25,
    bytes_in=123_456_789_012,
    bytes_out=42,
    connections=3,
    last_error="the path to server-02 was lost",
    last_error_at=1_700_000_100.5,
    errors=2,
    waiting_for="the login to server-01: Verification code: ",
    attached=31337,
)
# The optional fields left at None (and a raw-port tunnel: no service).
BARE_INFO = TunnelInfo(
    id=TunnelId(1, 1),
    process="foreground",
    service=None,
    host="server-03",
    bastion="server-01",
    remote_host="localhost",
    remote_port=8080,
    bind="127.0.0.1",
    local_port=58080,
    connection="127.0.0.1:58080",
    state=TunnelState.UP,
    started=1_700_000_000.0,
    bytes_in=0,
    bytes_out=0,
    connections=0,
)
FULL_REQUEST = TunnelRequest(
    host="server-02",
    service=None,
    remote_port=5432,
    local_port=15432,
    bind="0.0.0.0",
    allow_non_loopback=True,
    config="/etc/bastionctl/config.toml",
)

EXAMPLES: list[Message] = [
    ListTunnels(),
    StopTunnels(),
    StopTunnels(TunnelId(99, 3)),
    OpenTunnel(TunnelRequest("server-02", "echo")),
    OpenTunnel(FULL_REQUEST),
    AnswerTunnel(TunnelId(1234, 5)),
    AttachTunnel(FULL_REQUEST, 31337),
    Logout(),
    Logout("server-01"),
    News(TunnelState.RECONNECTING, "the path to server-02 was lost"),
    News(TunnelState.UP, "client connection closed: refused", failure=True),
    Listed(4242, "agent", (), (LoginInfo("server-01", 2), LoginInfo("server-09", 0, 1.7e9))),
    LoggedOut(("server-01",), ("server-09",)),
    LoggedOut(()),
    Prompt("Verification code: ", False),
    Prompt("Passphrase for id_ed25519: ", True),
    Answer("123456"),
    Answer(None),
    Notice("logging in to server-01"),
    Listed(4242, "agent", (FULL_INFO, BARE_INFO)),
    Listed(1, "tui", ()),
    Stopped((TunnelId(1, 1), TunnelId(4242, 7))),
    Stopped(()),
    Opened(FULL_INFO),
    Opened(BARE_INFO),
    Failed("UsageError", "no tunnel with id 1.2", "see `bastionctl tunnel list`", 2),
    Failed("AuthError", "rejected", None, 1),
]


def wire(body: dict[str, object]) -> bytes:
    return json.dumps(body).encode() + b"\n"


def opened_body() -> dict[str, object]:
    """A valid `opened` message as a dict, to be spoiled by a test."""
    body = json.loads(protocol.encode(Opened(FULL_INFO)))
    assert isinstance(body, dict)
    return body


def refused(line: bytes) -> str:
    with pytest.raises(ProtocolError) as caught:
        protocol.decode(line)
    return str(caught.value)


# --- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips_unchanged(message: Message) -> None:
    line = protocol.encode(message)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    body = json.loads(line)
    assert body["v"] == VERSION and body["type"] == message.TYPE
    assert protocol.decode(line) == message


def test_the_examples_cover_every_message_type() -> None:
    assert {type(m) for m in EXAMPLES} == set(MESSAGES.values())
    assert {m.TYPE for m in EXAMPLES} == set(MESSAGES)


@pytest.mark.parametrize("state", list(TunnelState), ids=str)
def test_every_tunnel_state_round_trips(state: TunnelState) -> None:
    info = dataclasses.replace(BARE_INFO, state=state)
    decoded = protocol.decode(protocol.encode(Opened(info)))
    assert isinstance(decoded, Opened)
    assert decoded.tunnel.state is state
    assert json.loads(protocol.encode(Opened(info)))["tunnel"]["state"] == state.value


def test_tunnel_ids_and_infos_keep_their_types() -> None:
    decoded = protocol.decode(protocol.encode(Listed(4242, "agent", (FULL_INFO, BARE_INFO))))
    assert isinstance(decoded, Listed)
    assert isinstance(decoded.tunnels, tuple)
    assert all(isinstance(t, TunnelInfo) for t in decoded.tunnels)
    assert decoded.tunnels[0].id == TunnelId(4242, 7)
    assert isinstance(decoded.tunnels[0].started, float)
    body = json.loads(protocol.encode(Stopped((TunnelId(1, 1),))))
    assert body["tunnels"] == ["1.1"]


# --- what decode refuses -------------------------------------------------------------------


def test_another_version_is_refused_naming_both_versions() -> None:
    body = opened_body()
    body["v"] = 2
    message = refused(wire(body))
    assert "version 2" in message and f"speaks {VERSION}" in message


def test_a_missing_version_is_refused() -> None:
    body = opened_body()
    del body["v"]
    message = refused(wire(body))
    assert "carries no protocol version" in message


def test_a_boolean_version_is_refused() -> None:
    refused(wire({"v": True, "type": "list"}))


def test_an_unknown_type_is_refused() -> None:
    assert "unknown bastionctl control message type 'explode'" in refused(
        wire({"v": VERSION, "type": "explode"})
    )
    assert "type None" in refused(wire({"v": VERSION}))
    assert "type 3" in refused(wire({"v": VERSION, "type": 3}))


def test_an_unknown_field_is_refused_naming_it() -> None:
    body = opened_body()
    body["colour"] = "blue"
    assert "unknown field opened.colour" in refused(wire(body))
    body = opened_body()
    body["tunnel"]["colour"] = "blue"  # type: ignore[index]
    assert "unknown field opened.tunnel.colour" in refused(wire(body))


@pytest.mark.parametrize("field", ["id", "host", "state", "started", "connections"])
def test_a_missing_required_field_is_refused_naming_it(field: str) -> None:
    body = opened_body()
    del body["tunnel"][field]  # type: ignore[attr-defined]
    assert f"opened.tunnel.{field} is missing" in refused(wire(body))


def test_missing_optional_fields_take_their_defaults() -> None:
    body = opened_body()
    for field in ("last_error", "last_error_at", "errors", "waiting_for"):
        del body["tunnel"][field]  # type: ignore[attr-defined]
    decoded = protocol.decode(wire(body))
    assert isinstance(decoded, Opened)
    assert decoded.tunnel.errors == 0 and decoded.tunnel.last_error is None
    assert protocol.decode(wire({"v": VERSION, "type": "stop"})) == StopTunnels(None)


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("local_port", "53389", "opened.tunnel.local_port has the wrong type"),
        ("local_port", True, "opened.tunnel.local_port has the wrong type"),
        ("local_port", 1.5, "opened.tunnel.local_port has the wrong type"),
        ("started", "now", "opened.tunnel.started has the wrong type"),
        ("started", False, "opened.tunnel.started has the wrong type"),
        ("host", 2, "opened.tunnel.host has the wrong type"),
        ("service", 7, "opened.tunnel.service has the wrong type"),
        ("last_error_at", "yesterday", "opened.tunnel.last_error_at has the wrong type"),
        ("id", "x", "opened.tunnel.id is not a tunnel id"),
        ("id", "1.", "opened.tunnel.id is not a tunnel id"),
        ("id", 12, "opened.tunnel.id is not a tunnel id"),
        ("state", "sleeping", "opened.tunnel.state = 'sleeping'"),
    ],
)
def test_a_field_of_the_wrong_type_is_refused_naming_it(
    field: str, value: object, needle: str
) -> None:
    body = opened_body()
    body["tunnel"][field] = value  # type: ignore[index]
    assert needle in refused(wire(body))


def test_nested_values_of_the_wrong_shape_are_refused() -> None:
    body = opened_body()
    body["tunnel"] = [body["tunnel"]]
    assert "opened.tunnel is not an object" in refused(wire(body))
    listed = {"v": VERSION, "type": "listed", "pid": 1, "process": "agent", "tunnels": {}}
    assert "listed.tunnels is not a list" in refused(wire(listed))
    listed["tunnels"] = [7]
    assert "listed.tunnels[] is not an object" in refused(wire(listed))
    stopped = {"v": VERSION, "type": "stopped", "tunnels": ["1.2", "1.2.3"]}
    assert "stopped.tunnels[] is not a tunnel id" in refused(wire(stopped))
    stop = {"v": VERSION, "type": "stop", "tunnel": "one"}
    assert "stop.tunnel has the wrong type" in refused(wire(stop))
    answer = {"v": VERSION, "type": "answer", "text": 123456}
    assert "answer.text has the wrong type" in refused(wire(answer))
    prompt = {"v": VERSION, "type": "prompt", "text": "code", "echo": 0}
    assert "prompt.echo has the wrong type" in refused(wire(prompt))


@pytest.mark.parametrize(
    "line", [b"", b"\n", b"hello\n", b'{"v": 1, "type": "list"\n', b"\xff\xfe{}\n"]
)
def test_bytes_that_are_not_json_are_refused(line: bytes) -> None:
    assert "is not JSON" in refused(line)


@pytest.mark.parametrize("line", [b"[]\n", b"1\n", b'"list"\n', b"null\n", b"[{}]\n"])
def test_json_that_is_not_an_object_is_refused(line: bytes) -> None:
    assert "is not a JSON object" in refused(line)


def test_deeply_nested_json_is_refused_as_a_protocol_error() -> None:
    refused(b"[" * 100_000 + b"\n")


# --- Failed and expect ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        UsageError("no tunnel with id 1.2", "see `bastionctl tunnel list`"),
        AuthError("server-01 rejected the login", None),
        PortInUseError("local port 3389 is in use", "choose one with --local-port"),
        ProtocolError("garbage"),
        BastionctlError("plain", "hint"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_failed_rebuilds_the_same_error(error: BastionctlError) -> None:
    failed = Failed.from_error(error)
    assert failed.kind == type(error).__name__
    assert failed.exit_status == int(error.exit_status)
    decoded = protocol.decode(protocol.encode(failed))
    assert isinstance(decoded, Failed)
    rebuilt = decoded.error()
    assert type(rebuilt) is type(error)
    assert (rebuilt.message, rebuilt.hint) == (error.message, error.hint)
    assert rebuilt.exit_status == error.exit_status


@pytest.mark.parametrize("kind", ["SomethingNew", "ExitStatus", "Path", "__class__", ""])
def test_an_unknown_kind_becomes_a_bastionctl_error(kind: str) -> None:
    rebuilt = Failed(kind, "it broke", "try again", 1).error()
    assert type(rebuilt) is BastionctlError
    assert (rebuilt.message, rebuilt.hint) == ("it broke", "try again")


def test_needs_input_crosses_as_login_cancelled() -> None:
    rebuilt = Failed.from_error(NeedsInput("Verification code: ")).error()
    assert type(rebuilt) is LoginCancelled
    assert "Verification code: " in rebuilt.message


def test_expect_returns_raises_and_refuses() -> None:
    opened = Opened(FULL_INFO)
    assert expect(opened, Opened, "the agent") is opened
    failed = Failed.from_error(UsageError("no such host", "hosts: a, b"))
    with pytest.raises(UsageError) as caught:
        expect(failed, Opened, "the agent")
    assert (caught.value.message, caught.value.hint) == ("no such host", "hosts: a, b")
    with pytest.raises(ProtocolError, match="the agent sent a 'stopped' message where 'opened'"):
        expect(Stopped(()), Opened, "the agent")
    with pytest.raises(BastionctlError, match="the agent hung up without an answer") as gone:
        expect(None, Opened, "the agent")
    assert type(gone.value) is BastionctlError


def test_every_error_class_survives_the_wire() -> None:
    """Each BastionctlError subclass with a (message, hint) constructor comes back as itself."""
    for name in dir(errors):
        cls = getattr(errors, name)
        if not (isinstance(cls, type) and issubclass(cls, BastionctlError)):
            continue
        if cls is NeedsInput:
            continue  # its own constructor; covered above
        rebuilt = protocol.decode(protocol.encode(Failed.from_error(cls("m", "h"))))
        assert isinstance(rebuilt, Failed)
        assert type(rebuilt.error()) is cls
    assert Failed.from_error(UsageError("x")).exit_status == ExitStatus.USAGE


# --- TunnelId ------------------------------------------------------------------------------


def test_tunnel_id_parse() -> None:
    assert TunnelId.parse("123.4") == TunnelId(123, 4)
    assert str(TunnelId(123, 4)) == "123.4"
    assert TunnelId(2, 1) < TunnelId(10, 1) < TunnelId(10, 2)


@pytest.mark.parametrize("text", ["x", "1.", ".2", "1.2.3", "", ".", "-1.2", "1.-2", "1 .2"])
def test_tunnel_id_parse_refuses(text: str) -> None:
    with pytest.raises(UsageError, match=r"is not a tunnel id \(PID\.N\)"):
        TunnelId.parse(text)


def test_tunnel_id_parse_refuses_digits_int_cannot_read() -> None:
    with pytest.raises(UsageError):
        TunnelId.parse("².1")


def test_decode_refuses_a_tunnel_id_int_cannot_read() -> None:
    refused(wire({"v": VERSION, "type": "answer-tunnel", "tunnel": "².1"}))


# --- TunnelInfo.public and TunnelRequest.for_spec --------------------------------------------


def test_public_has_exactly_the_documented_keys() -> None:
    public = FULL_INFO.public(now=FULL_INFO.started + 12.34)
    assert set(public) == {
        "id",
        "pid",
        "process",
        "service",
        "host",
        "bastion",
        "remote",
        "local",
        "local_port",
        "connection",
        "state",
        "started",
        "uptime",
        "bytes_in",
        "bytes_out",
        "connections",
        "last_error",
        "last_error_at",
        "errors",
        "waiting_for",
        "attached",
    }
    assert public["id"] == "4242.7" and public["pid"] == 4242
    assert public["attached"] == 31337
    assert public["state"] == "reconnecting"
    assert public["local"] == "[::1]:53389" and public["remote"] == "localhost:3389"
    assert public["uptime"] == 12.3
    assert public["errors"] == 2 and public["last_error_at"] == 1_700_000_100.5
    json.dumps(public)  # all of it is JSON
    bare = BARE_INFO.public()
    assert bare["service"] is None and bare["waiting_for"] is None and bare["errors"] == 0
    assert bare["attached"] is None


def test_a_login_says_when_it_closes() -> None:
    idle = LoginInfo("server-01", 0, 1_700_000_600.0).public(now=1_700_000_000.04)
    assert idle == {
        "bastion": "server-01",
        "tunnels": 0,
        "closes_at": 1_700_000_600.0,
        "closes_in": 600.0,
    }
    used = LoginInfo("server-01", 3).public()
    assert used["closes_at"] is None and used["closes_in"] is None and used["tunnels"] == 3


BASTION = Bastion(alias="server-01", user="bulk", ipv4="127.0.0.1")
HOST = Host(alias="server-02", user="bulk", ipv4="127.0.0.1", bastion="server-01")
ECHO = Service(name="echo", remote_port=7, local_port=10007)


@pytest.mark.parametrize(
    ("spec", "non_loopback"),
    [
        (TunnelSpec(HOST, BASTION, remote_port=7, local_port=10007, service=ECHO), False),
        (TunnelSpec(HOST, BASTION, remote_port=8080, local_port=58080, bind="::1"), False),
        (TunnelSpec(HOST, BASTION, remote_port=8080, local_port=58080, bind="localhost"), False),
        (TunnelSpec(HOST, BASTION, remote_port=8080, local_port=0, bind="0.0.0.0"), True),
        (
            TunnelSpec(HOST, BASTION, remote_port=7, local_port=1, bind="10.1.2.3", service=ECHO),
            True,
        ),
    ],
)
def test_for_spec_gives_the_same_request_back(spec: TunnelSpec, non_loopback: bool) -> None:
    request = TunnelRequest.for_spec(spec, 40000, "/tmp/config.toml")
    assert request == TunnelRequest(
        host="server-02",
        service=spec.service.name if spec.service else None,
        remote_port=None if spec.service else spec.remote_port,
        local_port=40000,
        bind=spec.bind,
        allow_non_loopback=non_loopback,
        config="/tmp/config.toml",
    )
    assert protocol.decode(protocol.encode(OpenTunnel(request))) == OpenTunnel(request)
    assert TunnelRequest.for_spec(spec, 40000, None).config is None


def test_for_spec_rebuilds_the_spec(tmp_path: Path) -> None:
    """The request, built into a spec again from the same inventory, is the same tunnel."""
    from bastionctl.config import load_config
    from bastionctl.tunnels.spec import build_spec

    config_file = tmp_path / "config.toml"
    config_file.write_text(
        "[bastions.server-01]\n"
        'ipv4 = "127.0.0.1"\nuser = "bulk"\n\n'
        "[hosts.server-02]\n"
        'ipv4 = "127.0.0.1"\nuser = "bulk"\nbastion = "server-01"\nservices = ["echo"]\n\n'
        '[services.echo]\nport = 7\nlocal_port = 10007\ndescription = "echo"\n'
    )
    config = load_config(config_file)
    for request in (
        TunnelRequest("server-02", "echo"),
        TunnelRequest("server-02", remote_port=8080, bind="0.0.0.0", allow_non_loopback=True),
    ):
        spec = build_spec(config, request)
        again = build_spec(config, TunnelRequest.for_spec(spec, 41000, str(config_file)))
        assert again.host == spec.host and again.bastion == spec.bastion
        assert again.service == spec.service and again.remote_port == spec.remote_port
        assert again.bind == spec.bind
        assert (again.local_port, again.local_port_fixed) == (41000, True)
