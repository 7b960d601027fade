"""The control channel without peer credentials: loopback TCP (or a Unix socket) and the token.

Run in the Windows view (no Unix sockets: TCP on 127.0.0.1) and the macOS view (Unix sockets,
but no SO_PEERCRED on this Linux to stand in for LOCAL_PEERCRED): both ends must prove they
know the user's token, and nothing else gets through.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastionctl.errors import BastionctlError
from bastionctl.system import api, channel


def set_view(monkeypatch: pytest.MonkeyPatch, name: str | None) -> None:
    if name is None:
        monkeypatch.delenv(api.VIEW_SETTING, raising=False)
    else:
        monkeypatch.setenv(api.VIEW_SETTING, name)
    api.view.cache_clear()
    api.has.cache_clear()


@pytest.fixture(params=["win32", "darwin"])
def view(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    set_view(monkeypatch, request.param)
    yield str(request.param)
    set_view(monkeypatch, None)  # the caches must not keep the view for later tests
    monkeypatch.undo()
    api.view.cache_clear()
    api.has.cache_clear()


class Server:
    """A channel server in a thread: admits connections, then echoes one line on each."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = channel.endpoint(directory, "test")
        self.sock = channel.listen(self.path)
        self.admitted: list[bool] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            with client, contextlib.suppress(OSError):
                ok = channel.admit(client)
                self.admitted.append(ok)
                if ok:
                    line = client.makefile("rb").readline()
                    client.sendall(b"echo " + line)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept(); close() alone does not
        self.sock.close()
        channel.unpublish(self.path)
        self._thread.join(5)


@pytest.fixture
def server(view: str, tmp_path: Path) -> Iterator[Server]:
    served = Server(tmp_path / "run")
    try:
        yield served
    finally:
        served.close()


def test_the_kind_of_channel_follows_the_view(server: Server, view: str) -> None:
    expected = ".tcp" if view == "win32" else ".sock"
    assert server.path.suffix == expected
    assert not channel.peer_credentials()


def test_both_ends_that_know_the_token_talk(server: Server) -> None:
    with channel.connect(server.path, timeout=5) as sock:
        sock.sendall(b"hello\n")
        assert sock.makefile("rb").readline() == b"echo hello\n"
    assert server.admitted == [True]
    token = channel.token_file()
    assert os.stat(token).st_mode & 0o777 == 0o600


def test_a_client_with_another_token_is_refused_and_refuses(server: Server, tmp_path: Path) -> None:
    """A process with a token of its own (another user's, a stale copy): neither end accepts
    the other. The client is a process of its own, with its own data directory."""
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from bastionctl.system import channel\n"
        "try:\n"
        "    channel.connect(Path(sys.argv[1]), timeout=5)\n"
        "except channel.PeerRefused as exc:\n"
        "    print(exc.message)\n"
    )
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "other-data")}
    result = subprocess.run(
        [sys.executable, "-c", code, str(server.path)], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr
    assert "does not know this user's control token" in result.stdout
    assert server.admitted == [False]


@pytest.mark.parametrize("view", ["darwin"], indirect=True)  # Windows: no file modes
def test_a_token_others_may_read_is_not_used(server: Server) -> None:
    channel.token_file().chmod(0o644)
    with pytest.raises(channel.PeerRefused, match="may be read or replaced by others"):
        channel.connect(server.path, timeout=5)


def test_a_recorded_handshake_cannot_be_replayed(server: Server) -> None:
    """A man in the middle records one good exchange; played again, it gets nowhere."""
    recorded: list[bytes] = []

    class Recorder:
        def __init__(self, real: socket.socket) -> None:
            self.real = real

        def __getattr__(self, name: str) -> object:
            return getattr(self.real, name)

        def sendall(self, data: bytes) -> None:
            recorded.append(data)
            self.real.sendall(data)

    real = raw_connect(server.path)
    channel._check_server(Recorder(real), server.path)  # type: ignore[arg-type]
    real.close()
    assert len(recorded) == 2  # the client's hello and its proof
    replay = raw_connect(server.path)
    with replay:
        replay.sendall(recorded[0])
        replay.makefile("rb").readline()  # the server's fresh nonce and proof
        replay.sendall(recorded[1] + b"hello\n")
        try:
            answer = replay.recv(100)
        except ConnectionResetError:  # dropped with our line unread
            answer = b""
        assert answer == b""  # no echo: the proof was for another nonce
    assert server.admitted == [True, False]


def test_an_impostor_server_is_refused(view: str, tmp_path: Path) -> None:
    """A listener in the user's place that does not know the token gets no proof from us."""
    directory = tmp_path / "run"
    directory.mkdir(mode=0o700)
    path = channel.endpoint(directory, "agent")
    if path.suffix == channel.TCP_SUFFIX:
        impostor = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        impostor.bind(("127.0.0.1", 0))
        path.write_text(f"{impostor.getsockname()[1]}\n")
    else:
        impostor = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        impostor.bind(str(path))
    impostor.listen(1)
    heard: list[bytes] = []

    def answer() -> None:
        client, _ = impostor.accept()
        with client:
            reader = client.makefile("rb")
            heard.append(reader.readline())
            client.sendall(b"BCL1 " + b"00" * 32 + b" " + b"11" * 32 + b"\n")
            client.settimeout(2)
            heard.append(reader.readline())  # a client's proof would come here: none must

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    with pytest.raises(channel.PeerRefused, match="does not know this user's control token"):
        channel.connect(path, timeout=5)
    thread.join(5)
    impostor.close()
    assert heard[0].startswith(b"BCL1 ") and len(heard[0].split()) == 2
    assert heard[1] == b""  # the client hung up without proving anything


@pytest.mark.parametrize("view", ["win32"], indirect=True)
def test_a_published_port_file_with_junk_is_no_process(view: str, tmp_path: Path) -> None:
    directory = tmp_path / "run"
    directory.mkdir(mode=0o700)
    (directory / "agent.tcp").write_text("not a port\n")
    assert list(channel.live(directory)) == []
    assert not (directory / "agent.tcp").exists()


def raw_connect(path: Path) -> socket.socket:
    if path.suffix == channel.UNIX_SUFFIX:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(path))
    else:
        sock = socket.create_connection(("127.0.0.1", int(path.read_text())), timeout=5)
    sock.settimeout(5)
    return sock


def test_a_bad_view_setting_is_one_error(monkeypatch: pytest.MonkeyPatch) -> None:
    set_view(monkeypatch, "beos")
    try:
        with pytest.raises(BastionctlError, match="BASTIONCTL_PLATFORM_VIEW=beos"):
            api.view()
    finally:
        set_view(monkeypatch, None)
