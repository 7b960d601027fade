"""What front ends and tunnel-holding processes say to each other: typed messages, one codec.

Every message is a frozen dataclass. On the wire it is one JSON object per line carrying the
protocol version and the message type, `{"v": 1, "type": "open", ...}`. A message of another
version, of an unknown type, or with a field missing, unknown or of the wrong type is refused
with one ProtocolError; nothing loose (no `dict[str, Any]`) crosses the boundary.

A conversation on a control connection: the front end sends a request (list, stop, open,
answer, logout); the serving process may send prompts (answered with Answer) and notices before
its one reply (Listed, Stopped, Opened, LoggedOut or Failed). An attach request is the one
conversation that goes on after its Opened: the agent sends the tunnel's News (and prompts of
its later logins) until either side closes the connection, which closes the tunnel.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import re
import time
import types
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar, Union, get_args, get_origin, get_type_hints

from bastionctl import errors, sanitise
from bastionctl.errors import BastionctlError, ProtocolError, UsageError
from bastionctl.model import TunnelSpec, hostport, is_loopback
from bastionctl.prompting import Origin, origin_of

VERSION = 1
# A tunnel list of thousands of tunnels still fits; a runaway peer does not fill memory.
MAX_LINE = 1 << 20

JsonObject = dict[str, object]


class TunnelState(enum.StrEnum):
    CONNECTING = "connecting"
    UP = "up"
    RECONNECTING = "reconnecting"
    # The login asked something and nobody who could answer is attached.
    NEEDS_INPUT = "needs-input"
    FAILED = "failed"
    CLOSED = "closed"


@dataclass(frozen=True, order=True)
class TunnelId:
    """A tunnel of one process: `PID.N` on the command line and in lists."""

    pid: int
    number: int

    def __str__(self) -> str:
        return f"{self.pid}.{self.number}"

    @classmethod
    def parse(cls, text: str) -> TunnelId:
        match = re.fullmatch(r"([0-9]{1,10})\.([0-9]{1,10})", text)
        if match is None:
            raise UsageError(f"{text!r} is not a tunnel id (PID.N)", "see `bastionctl tunnel list`")
        return cls(int(match[1]), int(match[2]))


@dataclass(frozen=True)
class TunnelRequest:
    """A tunnel as a front end asks for it: names from the inventory, resolved by the server."""

    host: str
    service: str | None = None
    remote_port: int | None = None
    # None: the remembered or default port, moving on when taken; a number: exactly that one.
    local_port: int | None = None
    bind: str | None = None
    allow_non_loopback: bool = False
    # The config file the server loads the inventory from; None: its default.
    config: str | None = None

    @classmethod
    def for_spec(cls, spec: TunnelSpec, local_port: int, config: str | None) -> TunnelRequest:
        """The same tunnel again, on `local_port` exactly (handing a tunnel to another process)."""
        return cls(
            host=spec.host.alias,
            service=spec.service.name if spec.service else None,
            remote_port=None if spec.service else spec.remote_port,
            local_port=local_port,
            bind=spec.bind,
            # The spec's bind was checked when it was made: a wider one was allowed then.
            allow_non_loopback=not is_loopback(spec.bind),
            config=config,
        )


@dataclass(frozen=True)
class TunnelInfo:
    """One tunnel's state, as `tunnel list` and the TUI show it."""

    id: TunnelId
    process: str  # agent | foreground | tui
    service: str | None
    host: str
    bastion: str
    remote_host: str
    remote_port: int
    bind: str
    local_port: int
    connection: str
    state: TunnelState
    started: float
    bytes_in: int
    bytes_out: int
    connections: int
    last_error: str | None = None
    last_error_at: float | None = None
    # Forwarded connections that failed (the target refused, the path was down).
    errors: int = 0
    # What a needs-input tunnel waits for an answer to.
    waiting_for: str | None = None
    # The pid of the command whose terminal holds this tunnel (a foreground tunnel in the agent).
    attached: int | None = None

    @property
    def remote(self) -> str:
        return hostport(self.remote_host, self.remote_port)

    @property
    def local(self) -> str:
        return hostport(self.bind, self.local_port)

    def error_summary(self) -> str | None:
        """The last error with its local time and how many clients were not served."""
        if self.last_error is None:
            return None
        when = ""
        if self.last_error_at is not None:
            when = time.strftime("%H:%M:%S", time.localtime(self.last_error_at))
        if self.errors:
            count = "1 client" if self.errors == 1 else f"{self.errors} clients"
            lead = f"{count} not served; last error at {when}" if when else f"{count} not served"
        else:
            lead = when
        return f"{lead}: {self.last_error}" if lead else self.last_error

    def public(self, now: float | None = None) -> JsonObject:
        """The object `tunnel list --json` prints for this tunnel."""
        return {
            "id": str(self.id),
            "pid": self.id.pid,
            "process": self.process,
            "service": self.service,
            "host": self.host,
            "bastion": self.bastion,
            "remote": self.remote,
            "local": self.local,
            "local_port": self.local_port,
            "connection": self.connection,
            "state": self.state.value,
            "started": self.started,
            "uptime": round((time.time() if now is None else now) - self.started, 1),
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "connections": self.connections,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "errors": self.errors,
            "waiting_for": self.waiting_for,
            "attached": self.attached,
        }


@dataclass(frozen=True)
class LoginInfo:
    """A bastion login the agent holds: in use by `tunnels`, or idle until `closes_at`."""

    bastion: str
    tunnels: int
    # Unix time the idle login closes (the `persist` setting); None while tunnels use it.
    closes_at: float | None = None

    def public(self, now: float | None = None) -> JsonObject:
        """The object `tunnel list --json` prints for this login."""
        left = None
        if self.closes_at is not None:
            left = max(0.0, round(self.closes_at - (time.time() if now is None else now), 1))
        return {
            "bastion": self.bastion,
            "tunnels": self.tunnels,
            "closes_at": self.closes_at,
            "closes_in": left,
        }


@dataclass(frozen=True)
class TunnelEvent:
    """A tunnel changed state (or, while connecting, has news): what front ends show."""

    tunnel: TunnelId
    state: TunnelState
    message: str
    at: float = dataclasses.field(default_factory=time.time)
    # A client's connection could not be carried (the state is unchanged); rate-limited.
    failure: bool = False


class Message:
    """Base of every message; TYPE names it on the wire."""

    TYPE: ClassVar[str]


# ------------------------------------------------------------ requests (front end -> server)


@dataclass(frozen=True)
class ListTunnels(Message):
    TYPE: ClassVar[str] = "list"


@dataclass(frozen=True)
class StopTunnels(Message):
    """Stop one tunnel of the serving process, or all of them when `tunnel` is None."""

    TYPE: ClassVar[str] = "stop"
    tunnel: TunnelId | None = None


@dataclass(frozen=True)
class OpenTunnel(Message):
    TYPE: ClassVar[str] = "open"
    request: TunnelRequest


@dataclass(frozen=True)
class AttachTunnel(Message):
    """Open a tunnel held by the asking command (`pid`): it lives as long as this connection."""

    TYPE: ClassVar[str] = "attach"
    request: TunnelRequest
    pid: int


@dataclass(frozen=True)
class Logout(Message):
    """Close the idle login to `bastion` now, or every idle login when None."""

    TYPE: ClassVar[str] = "logout"
    bastion: str | None = None


@dataclass(frozen=True)
class AnswerTunnel(Message):
    """This front end answers the login a needs-input tunnel waits on."""

    TYPE: ClassVar[str] = "answer-tunnel"
    tunnel: TunnelId


# ------------------------------------------------------------ during a request


@dataclass(frozen=True)
class Prompt(Message):
    """The server asks the person (a TOTP code, a passphrase); answered with Answer.

    `text` is the question as any front end shows it ("ALIAS: PROMPT"); `origin` says which
    server asks (bastion or target) and its own words, or is None for bastionctl's own
    questions. Both are sanitised by the sender and again where shown.
    """

    TYPE: ClassVar[str] = "prompt"
    text: str
    echo: bool
    origin: Origin | None = None


@dataclass(frozen=True)
class Answer(Message):
    """The person's answer to a Prompt; None when they declined."""

    TYPE: ClassVar[str] = "answer"
    text: str | None


def prompt_for(prompt: str, echo: bool) -> Prompt:
    """The Prompt a login's question crosses the control channel as: sanitised before it
    leaves (and again where shown), with the asking server when a Question says which."""
    origin = origin_of(prompt)
    return Prompt(sanitise.prompt(prompt), echo, origin.clean() if origin else None)


def answer_text(reply: Message | None, prompt: Prompt) -> str:
    """The answer `reply` carries. NeedsInput when it is none (the front end left, or said
    something else); LoginCancelled when the person declined."""
    if not isinstance(reply, Answer):
        raise errors.NeedsInput(prompt.text)
    if reply.text is None:
        raise errors.LoginCancelled(f"the answer to {prompt.text!r} was declined")
    return reply.text


@dataclass(frozen=True)
class Notice(Message):
    TYPE: ClassVar[str] = "notice"
    text: str


@dataclass(frozen=True)
class News(Message):
    """An attached tunnel's TunnelEvent, for the terminal that holds it."""

    TYPE: ClassVar[str] = "news"
    state: TunnelState
    message: str
    failure: bool = False


# ------------------------------------------------------------ replies (server -> front end)


@dataclass(frozen=True)
class Listed(Message):
    TYPE: ClassVar[str] = "listed"
    pid: int
    process: str
    tunnels: tuple[TunnelInfo, ...]
    logins: tuple[LoginInfo, ...] = ()


@dataclass(frozen=True)
class Stopped(Message):
    TYPE: ClassVar[str] = "stopped"
    tunnels: tuple[TunnelId, ...]


@dataclass(frozen=True)
class Opened(Message):
    TYPE: ClassVar[str] = "opened"
    tunnel: TunnelInfo


@dataclass(frozen=True)
class LoggedOut(Message):
    """The logins closed, and those left because tunnels still use them."""

    TYPE: ClassVar[str] = "logged-out"
    closed: tuple[str, ...]
    in_use: tuple[str, ...] = ()


@dataclass(frozen=True)
class Failed(Message):
    """The request failed with a BastionctlError; `error()` raises it again on this side."""

    TYPE: ClassVar[str] = "failed"
    kind: str
    message: str
    hint: str | None
    exit_status: int

    @classmethod
    def from_error(cls, exc: BastionctlError) -> Failed:
        return cls(type(exc).__name__, exc.message, exc.hint, int(exc.exit_status))

    def error(self) -> BastionctlError:
        kind = getattr(errors, self.kind, None)
        if not (isinstance(kind, type) and issubclass(kind, BastionctlError)):
            kind = BastionctlError
        if kind is errors.NeedsInput:
            kind = errors.LoginCancelled  # its own constructor takes the prompt, not a message
        return kind(self.message, self.hint)


Request = ListTunnels | StopTunnels | OpenTunnel | AttachTunnel | AnswerTunnel | Logout
REQUESTS = (ListTunnels, StopTunnels, OpenTunnel, AttachTunnel, AnswerTunnel, Logout)
Reply = Listed | Stopped | Opened | LoggedOut | Failed

MESSAGES: dict[str, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        ListTunnels,
        StopTunnels,
        OpenTunnel,
        AttachTunnel,
        AnswerTunnel,
        Logout,
        Prompt,
        Answer,
        Notice,
        News,
        Listed,
        Stopped,
        Opened,
        LoggedOut,
        Failed,
    )
}

M = TypeVar("M", bound=Message)


def expect(message: Message | None, kind: type[M], peer: str) -> M:
    """`message` as a `kind`; a Failed reply raises its error, anything else is refused."""
    if isinstance(message, Failed):
        raise message.error()
    if message is None:
        raise BastionctlError(f"{peer} hung up without an answer")
    if not isinstance(message, kind):
        raise ProtocolError(f"{peer} sent a {message.TYPE!r} message where {kind.TYPE!r} belongs")
    return message


# ------------------------------------------------------------ the codec


def encode(message: Message) -> bytes:
    body: JsonObject = {"v": VERSION, "type": message.TYPE}
    body.update(_object(message))
    return json.dumps(body, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> Message:
    try:
        data = json.loads(line)
    except (ValueError, RecursionError):
        raise ProtocolError("a bastionctl control message is not JSON") from None
    if not isinstance(data, dict):
        raise ProtocolError("a bastionctl control message is not a JSON object")
    if "v" not in data:
        raise ProtocolError("a bastionctl control message carries no protocol version")
    version = data.pop("v")
    if type(version) is not int or version != VERSION:
        raise ProtocolError(
            f"another bastionctl process speaks control protocol version {version!r}; "
            f"this one speaks {VERSION}",
            "stop the other version's tunnels (with that version's `bastionctl tunnel stop "
            "--all`) or use the same bastionctl in both",
        )
    kind = data.pop("type", None)
    cls = MESSAGES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ProtocolError(f"unknown bastionctl control message type {kind!r}")
    message = _build(cls, data, str(kind))
    assert isinstance(message, Message)
    return message


def _object(value: object) -> JsonObject:
    return {f.name: _json(getattr(value, f.name)) for f in dataclasses.fields(value)}  # type: ignore[arg-type]


def _json(value: object) -> object:
    if isinstance(value, TunnelId):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _object(value)
    if isinstance(value, tuple):
        return [_json(item) for item in value]
    return value


def _build(cls: type, data: object, where: str) -> object:
    if not isinstance(data, dict):
        raise ProtocolError(f"bastionctl control message: {where} is not an object")
    hints, fields = _shape(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ProtocolError(f"bastionctl control message: unknown field {where}.{unknown[0]}")
    values: dict[str, Any] = {}
    for name, field in fields.items():
        if name in data:
            values[name] = _value(hints[name], data[name], f"{where}.{name}")
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ProtocolError(f"bastionctl control message: {where}.{name} is missing")
    return cls(**values)


@functools.cache
def _shape(cls: type) -> tuple[dict[str, Any], dict[str, dataclasses.Field[Any]]]:
    """A message class's field types and fields (resolving the annotations once per class)."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    return get_type_hints(cls), fields


def _value(kind: Any, value: object, where: str) -> object:
    origin = get_origin(kind)
    if origin in (Union, types.UnionType):
        options = get_args(kind)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _value(option, value, where)
            except ProtocolError:
                continue
        raise ProtocolError(f"bastionctl control message: {where} has the wrong type")
    if origin is tuple:
        (item, _ellipsis) = get_args(kind)
        if not isinstance(value, list):
            raise ProtocolError(f"bastionctl control message: {where} is not a list")
        return tuple(_value(item, entry, f"{where}[]") for entry in value)
    if kind is TunnelId:
        if isinstance(value, str):
            try:
                return TunnelId.parse(value)
            except UsageError:
                pass
        raise ProtocolError(f"bastionctl control message: {where} is not a tunnel id")
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        try:
            return kind(value)
        except ValueError:
            raise ProtocolError(f"bastionctl control message: {where} = {value!r}") from None
    if dataclasses.is_dataclass(kind):
        return _build(kind, value, where)  # type: ignore[arg-type]
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value  # type: ignore[arg-type]
    elif kind is str:
        ok = isinstance(value, str)
    else:
        raise ProtocolError(f"bastionctl control message: {where} has an unsupported type")
    if not ok:
        raise ProtocolError(f"bastionctl control message: {where} has the wrong type")
    return value
