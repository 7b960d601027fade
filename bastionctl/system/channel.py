"""The control channel between one user's bastionctl processes, whatever the OS offers.

It leads to authenticated paths into a private network, so only the user may use it, and each
end checks the other: a client talks only to its own user's processes, a server answers only
its own user.

- Transport: a Unix socket file where AF_UNIX exists (in a 0700 directory, the socket 0600);
  otherwise (Windows) TCP on 127.0.0.1, its port published in a file beside where the socket
  would be.
- Identity: the peer's uid from the kernel where an API gives it (SO_PEERCRED on Linux,
  LOCAL_PEERCRED on macOS and the BSDs); otherwise a challenge-response over fresh random
  nonces with HMAC-SHA256 and the user's token, 256 random bits in a file only the user may
  read (in the user data directory). Neither end reveals the token, and a recorded exchange
  cannot be replayed.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import socket
import stat
import struct
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from bastionctl import paths
from bastionctl.errors import BastionctlError
from bastionctl.system import api
from bastionctl.system.home import user_id

log = logging.getLogger(__name__)

UNIX_SUFFIX = ".sock"
TCP_SUFFIX = ".tcp"
HELLO = b"BCL1"
HANDSHAKE_TIMEOUT = 5.0
LINE_LIMIT = 256
# One staging name per process: its servers start one after another.
_staging_lock = threading.Lock()


class PeerRefused(BastionctlError):
    """The other end is not this user's bastionctl (or could not show it is)."""


def unix_sockets() -> bool:
    return api.has("AF_UNIX")


def peer_credentials() -> bool:
    """Whether the kernel tells who is at the other end of a Unix socket."""
    return unix_sockets() and (api.has("SO_PEERCRED") or api.has("LOCAL_PEERCRED"))


def endpoint(directory: Path, name: str) -> Path:
    """The file a server named `name` publishes in `directory` (socket or port file)."""
    return directory / f"{name}{UNIX_SUFFIX if unix_sockets() else TCP_SUFFIX}"


def endpoints(directory: Path) -> list[Path]:
    """Every endpoint file in `directory` of the kind this process uses."""
    suffix = UNIX_SUFFIX if unix_sockets() else TCP_SUFFIX
    return sorted(directory.glob(f"*{suffix}"))


def name_of(path: Path) -> str:
    return path.name.removesuffix(UNIX_SUFFIX).removesuffix(TCP_SUFFIX)


# ------------------------------------------------------------ serving


def listen(path: Path) -> socket.socket:
    """A listening socket published at `path` (from `endpoint()`) only once it accepts."""
    if path.suffix == UNIX_SUFFIX:
        if not peer_credentials():
            _token()  # made before any client needs it
        return _listen_unix(path)
    _token()
    return _listen_tcp(path)


def _listen_unix(path: Path) -> socket.socket:
    if sys.platform == "win32":
        raise BastionctlError("no Unix sockets here")
    # Bound and listening under a temporary name first, then renamed into place: whoever sees
    # the file can connect. The name is no longer than the final one: Unix socket paths are
    # short (108 bytes).
    staging = path.with_name(f".{os.getpid()}.s")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with _staging_lock:
        staging.unlink(missing_ok=True)
        # The umask makes the socket 0600 from the moment it exists, with no window.
        old = os.umask(0o177)
        try:
            sock.bind(str(staging))
        finally:
            os.umask(old)
        try:
            sock.listen(16)
            os.replace(staging, path)
        except OSError:
            sock.close()
            staging.unlink(missing_ok=True)
            raise
    return sock


def _listen_tcp(path: Path) -> socket.socket:
    from bastionctl.atomic import write_atomic

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        write_atomic(path, f"{sock.getsockname()[1]}\n", mode=0o600)
    except OSError:
        sock.close()
        raise
    return sock


def unpublish(path: Path) -> None:
    path.unlink(missing_ok=True)


def admit(client: socket.socket) -> bool:
    """On a freshly accepted connection: whether the peer is this user (logged if not)."""
    try:
        if client.family != socket.AF_INET and peer_credentials():
            uid = _peer_uid(client)
            if uid == user_id():
                return True
            log.warning("refused a control connection from uid %s", uid)
            return False
        client.settimeout(HANDSHAKE_TIMEOUT)
        ok = _answer_challenge(client)
        client.settimeout(None)
    except (OSError, BastionctlError) as exc:
        log.info("a control connection failed its check: %s", exc)
        return False
    if not ok:
        log.warning("refused a control connection that did not know the user's token")
    return ok


# ------------------------------------------------------------ connecting


def connect(path: Path, timeout: float | None) -> socket.socket:
    """A connection to the server published at `path`, checked to be this user's.

    OSError when nothing listens there; PeerRefused when someone else's process does.
    """
    if path.suffix == UNIX_SUFFIX:
        if sys.platform == "win32":
            raise FileNotFoundError(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        address: str | tuple[str, int] = str(path)
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        address = ("127.0.0.1", _published_port(path))
    sock.settimeout(timeout)
    try:
        sock.connect(address)
        _check_server(sock, path)
    except BaseException:
        sock.close()
        raise
    return sock


def _published_port(path: Path) -> int:
    text = path.read_text().strip()  # FileNotFoundError: nothing published
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ConnectionRefusedError(f"{path} holds no port")
    return int(text)


def _check_server(sock: socket.socket, path: Path) -> None:
    if sock.family != socket.AF_INET and peer_credentials():
        uid = _peer_uid(sock)
        if uid != user_id():
            raise PeerRefused(
                f"the process behind {path} belongs to another user (uid {uid}); not talking to it",
                f"remove {path} if it is not yours",
            )
        return
    timeout = sock.gettimeout()
    sock.settimeout(HANDSHAKE_TIMEOUT)
    try:
        if not _pose_challenge(sock):
            raise PeerRefused(
                f"the process behind {path} does not know this user's control token; "
                "not talking to it",
                f"remove {path} if it is not yours",
            )
    finally:
        sock.settimeout(timeout)


# ------------------------------------------------------------ peer credentials


def _peer_uid(sock: socket.socket) -> int:
    if sys.platform == "linux" and api.has("SO_PEERCRED"):
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
        return int(uid)
    if sys.platform == "darwin" and api.has("LOCAL_PEERCRED"):
        # struct xucred: u_int cr_version; uid_t cr_uid; short cr_ngroups; gid_t groups[16]
        size = struct.calcsize("IiH16I")
        creds = sock.getsockopt(0, socket.LOCAL_PEERCRED, size)  # 0: SOL_LOCAL
        _version, uid = struct.unpack_from("Ii", creds)
        return int(uid)
    raise OSError("no way to learn a peer's uid here")


# ------------------------------------------------------------ the token challenge


def token_file() -> Path:
    return paths.data_dir() / "control-token"


def _token() -> bytes:
    """The user's control token, created on first use; refused when others may read it."""
    from bastionctl.system.files import private_dir

    path = token_file()
    private_dir(path.parent)
    if not path.exists():
        # Written whole under another name, then linked into place: a process that sees the
        # file reads all of it, and of two processes creating it at once one wins.
        from bastionctl.atomic import write_atomic

        draft = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
        write_atomic(draft, secrets.token_hex(32) + "\n", mode=0o600)
        with contextlib.suppress(FileExistsError):
            os.link(draft, path)
        draft.unlink()
    info = os.lstat(path)
    uid = user_id()
    if uid is not None and (
        stat.S_ISLNK(info.st_mode) or info.st_uid != uid or stat.S_IMODE(info.st_mode) & 0o077
    ):
        raise PeerRefused(
            f"the control token {path} may be read or replaced by others (mode "
            f"{stat.S_IMODE(info.st_mode):o}, owner uid {info.st_uid}); not using it",
            "remove it; bastionctl makes a new one, readable by you only",
        )
    try:
        token = bytes.fromhex(path.read_text().strip())
    except ValueError:
        token = b""
    if len(token) != 32:
        raise PeerRefused(f"the control token {path} is malformed", "remove it")
    return token


def _mac(token: bytes, role: bytes, first: bytes, second: bytes) -> bytes:
    return hmac.new(token, role + first + second, hashlib.sha256).digest()


def _pose_challenge(sock: socket.socket) -> bool:
    """Client: the server must prove it knows the token; then the client proves it."""
    token = _token()
    ours = secrets.token_bytes(32)
    sock.sendall(HELLO + b" " + ours.hex().encode() + b"\n")
    fields = _read_fields(sock, 3)
    if fields is None:
        return False
    theirs, proof = fields[1], fields[2]
    if not hmac.compare_digest(proof, _mac(token, b"server", ours, theirs)):
        return False
    sock.sendall(_mac(token, b"client", theirs, ours).hex().encode() + b"\n")
    return True


def _answer_challenge(sock: socket.socket) -> bool:
    """Server: prove knowledge of the token, then check the client's proof."""
    token = _token()
    fields = _read_fields(sock, 2)
    if fields is None:
        return False
    theirs, ours = fields[1], secrets.token_bytes(32)
    proof = _mac(token, b"server", theirs, ours)
    sock.sendall(HELLO + b" " + ours.hex().encode() + b" " + proof.hex().encode() + b"\n")
    answer = _read_fields(sock, 1, hello=False)
    return answer is not None and hmac.compare_digest(
        answer[0], _mac(token, b"client", ours, theirs)
    )


def _read_fields(sock: socket.socket, count: int, hello: bool = True) -> list[bytes] | None:
    """A handshake line: `count` fields (after BCL1 when `hello`), each 32 bytes in hex."""
    parts = _read_line(sock).split()
    if hello:
        if not parts or parts[0] != HELLO:
            return None
        parts = parts[1:]
        count -= 1
    if len(parts) != count:
        return None
    try:
        fields = [bytes.fromhex(part.decode()) for part in parts]
    except ValueError:
        return None
    if any(len(field) != 32 for field in fields):
        return None
    return [HELLO, *fields] if hello else fields


def _read_line(sock: socket.socket) -> bytes:
    """One short line, byte by byte: nothing after it may be consumed (messages follow)."""
    line = bytearray()
    while not line.endswith(b"\n"):
        byte = sock.recv(1)
        if not byte or len(line) >= LINE_LIMIT:
            raise ConnectionError("the control handshake broke off")
        line += byte
    return bytes(line)


def live(directory: Path) -> Iterator[Path]:
    """Published endpoints with a process behind them; those of dead processes are removed."""
    for path in endpoints(directory):
        try:
            sock = connect(path, timeout=2)
        except (ConnectionRefusedError, FileNotFoundError):
            # Its process is gone (killed: it could not clean up); so is its pid file.
            for stale in (path, path.with_suffix(".pid")):
                stale.unlink(missing_ok=True)
            continue
        except (OSError, BastionctlError):
            continue
        sock.close()
        yield path
