"""The certificate an RDP server shows, read from a fake RDP server on loopback that answers the
X.224 Connection Request as a real one would (TLS, CredSSP, standard security, a refusal) or as
something else would; and that certificate against the thumbprint EC2 attests."""

from __future__ import annotations

import contextlib
import datetime
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bastionctl.model import Host, Origin
from bastionctl.rdp import attested, handshake
from bastionctl.rdp.check import CertificateMismatch, check_local_port, compare
from bastionctl.rdp.handshake import (
    PROTOCOL_HYBRID,
    PROTOCOL_SSL,
    Certificate,
    RdpHandshakeError,
    server_certificate,
)

INSTANCE = "i-0123456789abcdef0"
HOST = Host(
    alias="server-03",
    user="Administrator",
    origin=Origin(source="prod", instance_id=INSTANCE, region="eu-west-1"),
    bastion="bastion-1",
    platform="windows",
)
OTHER_THUMBPRINT = "0123456789ABCDEF0123456789ABCDEF01234567"


@dataclass(frozen=True)
class ServerCert:
    cert: x509.Certificate
    cert_file: Path
    key_file: Path

    @property
    def thumbprint(self) -> str:
        return self.cert.fingerprint(hashes.SHA1()).hex().upper()

    @property
    def sha256(self) -> str:
        return self.cert.fingerprint(hashes.SHA256()).hex().upper()


@pytest.fixture(scope="module")
def server_cert(tmp_path_factory: pytest.TempPathFactory) -> ServerCert:
    """A self-signed certificate as a Windows RDP server makes for itself."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "EC2AMAZ-TEST03")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=180))
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("rdp-cert")
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ServerCert(cert, cert_file, key_file)


def _confirm(negotiation: bytes = b"") -> bytes:
    """TPKT + X.224 Connection Confirm (LI, 0xD0, references, class 0) + `negotiation`."""
    x224 = bytes([6 + len(negotiation), 0xD0, 0, 0, 0, 0, 0]) + negotiation
    return bytes([3, 0]) + (4 + len(x224)).to_bytes(2, "big") + x224


def _negotiation(kind: int, value: int) -> bytes:
    """RDP_NEG_RSP (2) or RDP_NEG_FAILURE (3): type, flags 0, length 8, u32 LE value."""
    return bytes([kind, 0, 8, 0]) + value.to_bytes(4, "little")


@dataclass
class FakeRdp:
    """A fake RDP server's port and what it saw: each Connection Request, in order."""

    mode: str
    port: int
    requests: list[bytes] = field(default_factory=list)
    handshakes: int = 0  # TLS handshakes the server side completed


def _read_request(conn: socket.socket) -> bytes:
    data = b""
    while len(data) < len(handshake.CONNECTION_REQUEST):
        chunk = conn.recv(len(handshake.CONNECTION_REQUEST) - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _wait_for_close(conn: socket.socket, stop: threading.Event, limit: float = 10.0) -> None:
    conn.settimeout(0.05)
    deadline = time.monotonic() + limit
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            if not conn.recv(4096):
                return
        except TimeoutError:
            continue


def _answer(
    conn: socket.socket, server: FakeRdp, tls: ssl.SSLContext, stop: threading.Event
) -> None:
    server.requests.append(_read_request(conn))
    mode = server.mode
    if mode == "close":
        return
    if mode == "silent":
        # Not for ever: a client that ignored its timeout would fail the test, not hang it.
        _wait_for_close(conn, stop, limit=3.0)
        return
    if mode == "not-rdp":
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    elif mode == "not-rdp-binary":  # a length-prefixed protocol: only the TPKT version tells
        conn.sendall(bytes([0, 0, 0, 11]) + bytes(7))
    elif mode == "standard":
        conn.sendall(_confirm())
    elif mode == "failure":
        conn.sendall(_confirm(_negotiation(3, 2)))
    elif mode == "garbage":
        conn.sendall(_confirm(_negotiation(2, PROTOCOL_SSL)) + b"HTTP/1.1 400 Bad Request\r\n\r\n")
    elif mode in ("tls", "tls-1.2", "hybrid"):
        selected = PROTOCOL_HYBRID if mode == "hybrid" else PROTOCOL_SSL
        conn.sendall(_confirm(_negotiation(2, selected)))
        # Without the client's Finished (TLS 1.3 sends it last) this handshake ends with the
        # client gone, an OSError the serving loop drops, and is not counted.
        with tls.wrap_socket(conn, server_side=True, do_handshake_on_connect=False) as secure:
            secure.do_handshake()
            server.handshakes += 1
            _wait_for_close(secure, stop)
        return
    else:
        raise AssertionError(f"unknown mode {mode}")
    _wait_for_close(conn, stop)


def _serve(
    listener: socket.socket, server: FakeRdp, tls: ssl.SSLContext, stop: threading.Event
) -> None:
    listener.settimeout(0.05)
    while not stop.is_set():
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        # Each wait in a handler ends within 5 s, or within 0.05 s of `stop`.
        with conn, contextlib.suppress(OSError):  # a client gone: what it saw is its business
            conn.settimeout(5)
            _answer(conn, server, tls, stop)


@contextmanager
def fake_rdp(mode: str, cert: ServerCert) -> Iterator[FakeRdp]:
    """A fake RDP server answering each connection per `mode`, stopped and joined on exit."""
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert.cert_file, cert.key_file)
    if mode == "tls-1.2":  # one more round trip than TLS 1.3: the client's Finished, then ours
        tls.maximum_version = ssl.TLSVersion.TLSv1_2
    listener = socket.create_server(("127.0.0.1", 0))
    server = FakeRdp(mode, listener.getsockname()[1])
    stop = threading.Event()
    thread = threading.Thread(target=_serve, args=(listener, server, tls, stop), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        stop.set()
        thread.join(10)
        listener.close()
        assert not thread.is_alive(), "the fake RDP server did not stop"


def _certificate_from(server: FakeRdp, timeout: float = 5.0) -> Certificate:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        return server_certificate(sock, timeout)


def _error_from(server: FakeRdp, timeout: float = 5.0) -> str:
    with pytest.raises(RdpHandshakeError) as caught:
        _certificate_from(server, timeout)
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message and "Error(" not in message
    assert "the RDP server " in message
    return message


def _assert_connection_request(request: bytes) -> None:
    """The bytes a server reads are an X.224 Connection Request asking for TLS."""
    assert request == handshake.CONNECTION_REQUEST
    assert request[:4] == bytes([3, 0, 0, 19]) and len(request) == 19  # TPKT v3, 19 bytes
    assert request[4:6] == bytes([14, 0xE0])  # LI 14, Connection Request
    assert request[11:15] == bytes([1, 0, 8, 0])  # RDP_NEG_REQ, length 8
    assert int.from_bytes(request[15:19], "little") & PROTOCOL_SSL


@pytest.mark.parametrize("mode", ["tls", "tls-1.2", "hybrid"])
def test_a_server_negotiating_tls_shows_its_certificate(mode: str, server_cert: ServerCert) -> None:
    with fake_rdp(mode, server_cert) as server:
        seen = _certificate_from(server)
    assert [len(r) for r in server.requests] == [19]
    _assert_connection_request(server.requests[0])
    assert seen.der == server_cert.cert.public_bytes(serialization.Encoding.DER)
    assert seen.thumbprint == server_cert.thumbprint
    assert len(seen.thumbprint) == 40 and seen.thumbprint == seen.thumbprint.upper()
    assert seen.sha256 == server_cert.sha256
    assert server.handshakes == 1, "the server saw the handshake abandoned"


class _Channel:
    """Not a socket: only the three calls a paramiko Channel shares with one."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.calls: list[str] = []

    def sendall(self, data: bytes, /) -> None:
        self.calls.append("sendall")
        self._sock.sendall(data)

    def recv(self, size: int, /) -> bytes:
        self.calls.append("recv")
        return self._sock.recv(size)

    def settimeout(self, timeout: float | None, /) -> None:
        self._sock.settimeout(timeout)


def test_the_certificate_comes_through_a_stream_that_is_not_a_socket(
    server_cert: ServerCert,
) -> None:
    with (
        fake_rdp("tls", server_cert) as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock,
    ):
        channel = _Channel(sock)
        seen = server_certificate(channel, 5.0, "server-03's RDP server")
    assert seen.thumbprint == server_cert.thumbprint
    assert "sendall" in channel.calls and "recv" in channel.calls
    _assert_connection_request(server.requests[0])


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("standard", "offers standard RDP security only: it shows no TLS certificate to check"),
        ("failure", "refused the TLS negotiation: the server does not allow TLS"),
        ("not-rdp", "does not speak RDP"),
        ("not-rdp-binary", "does not speak RDP (it answered 0000000b)"),
        ("close", "closed the connection during the RDP handshake"),
        ("garbage", "the TLS handshake with the RDP server failed"),
    ],
)
def test_a_server_that_shows_no_certificate_is_one_line_saying_why(
    mode: str, expected: str, server_cert: ServerCert
) -> None:
    with fake_rdp(mode, server_cert) as server:
        message = _error_from(server)
    assert expected in message
    _assert_connection_request(server.requests[0])


def test_a_silent_server_is_a_timeout_in_the_time_given(server_cert: ServerCert) -> None:
    with fake_rdp("silent", server_cert) as server:
        started = time.monotonic()
        message = _error_from(server, timeout=0.5)
        took = time.monotonic() - started
    assert message == "the RDP server did not answer within 0.5 s"
    assert 0.4 <= took < 2.0
    _assert_connection_request(server.requests[0])


def _attested(thumbprint: str) -> attested.Attested:
    return attested.Attested(
        instance_id=INSTANCE,
        alias="server-03",
        thumbprint=thumbprint,
        at="2026-12-01T12:00:00Z",
        source="prod",
        region="eu-west-1",
    )


def test_compare_says_the_certificate_is_the_one_ec2_attests(server_cert: ServerCert) -> None:
    seen = Certificate(server_cert.cert.public_bytes(serialization.Encoding.DER))
    line = compare("server-03", seen, _attested(server_cert.thumbprint))
    assert server_cert.thumbprint in line and "as EC2 attests" in line and INSTANCE in line


def test_compare_refuses_another_certificate_naming_both_and_the_way_out(
    server_cert: ServerCert,
) -> None:
    seen = Certificate(server_cert.cert.public_bytes(serialization.Encoding.DER))
    with pytest.raises(CertificateMismatch) as caught:
        compare("server-03", seen, _attested(OTHER_THUMBPRINT))
    error = caught.value
    assert server_cert.thumbprint in error.message and OTHER_THUMBPRINT in error.message
    assert INSTANCE in error.message and "do not connect" in error.message
    assert error.hint is not None and "known-hosts forget server-03" in error.hint
    assert "\n" not in str(error)


def test_check_local_port_checks_nothing_when_ec2_attests_nothing(
    server_cert: ServerCert,
) -> None:
    with fake_rdp("tls", server_cert) as server:
        assert check_local_port(HOST, "127.0.0.1", server.port, timeout=5) is None
    assert server.requests == []  # nothing to compare with: the tunnel is left alone


def test_check_local_port_with_the_attested_certificate(server_cert: ServerCert) -> None:
    attested.record([_attested(server_cert.thumbprint)])
    with fake_rdp("tls", server_cert) as server:
        result = check_local_port(HOST, "127.0.0.1", server.port, timeout=5)
    assert result is not None
    line, warning = result
    assert not warning
    assert server_cert.thumbprint in line and "as EC2 attests" in line
    assert len(server.requests) == 1


def test_check_local_port_with_another_certificate_is_a_mismatch(
    server_cert: ServerCert,
) -> None:
    attested.record([_attested(OTHER_THUMBPRINT)])
    with fake_rdp("tls", server_cert) as server, pytest.raises(CertificateMismatch) as caught:
        check_local_port(HOST, "127.0.0.1", server.port, timeout=5)
    assert server_cert.thumbprint in caught.value.message
    assert OTHER_THUMBPRINT in caught.value.message


def test_check_local_port_warns_when_the_server_shows_no_certificate(
    server_cert: ServerCert,
) -> None:
    attested.record([_attested(server_cert.thumbprint)])
    with fake_rdp("standard", server_cert) as server:
        result = check_local_port(HOST, "127.0.0.1", server.port, timeout=5)
    assert result is not None
    line, warning = result
    assert warning
    assert line.startswith("cannot check server-03's RDP certificate")
    assert "server-03's RDP server offers standard RDP security only" in line
    assert "\n" not in line


def test_check_local_port_warns_when_nothing_listens(server_cert: ServerCert) -> None:
    attested.record([_attested(server_cert.thumbprint)])
    # Bound but not listening: a connection to it is refused, and no one else can take it.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        result = check_local_port(HOST, "127.0.0.1", port, timeout=5)
    assert result is not None
    line, warning = result
    assert warning
    assert line.startswith("cannot check server-03's RDP certificate")
    assert f"cannot connect to the tunnel at port {port}" in line and "refused" in line
