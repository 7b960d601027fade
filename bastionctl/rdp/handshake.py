"""The certificate an RDP server shows: an X.224 Connection Request asking for TLS (MS-RDPBCGR
2.2.1.1), then a TLS handshake whose only product is the server's certificate.

Nothing is trusted or sent over that TLS session: the certificate is compared with the
thumbprint EC2 attests, so verification is off and the session is dropped after the handshake.
The stream is anything with sendall/recv/settimeout: a socket to a tunnel's local port, or an
SSH channel.
"""

from __future__ import annotations

import contextlib
import hashlib
import ssl
import time
from dataclasses import dataclass
from typing import Protocol

from bastionctl.errors import BastionctlError

PROTOCOL_SSL = 0x1
PROTOCOL_HYBRID = 0x2  # CredSSP: TLS first, so the certificate shows all the same
PROTOCOL_HYBRID_EX = 0x8
_TLS_PROTOCOLS = PROTOCOL_SSL | PROTOCOL_HYBRID | PROTOCOL_HYBRID_EX

# TPKT (version 3, length 19), X.224 Connection Request (LI 14, code 0xE0, references and
# class 0), RDP_NEG_REQ (type 1, flags 0, length 8, requestedProtocols SSL | HYBRID).
CONNECTION_REQUEST = bytes([3, 0, 0, 19, 14, 0xE0, 0, 0, 0, 0, 0, 1, 0, 8, 0]) + (
    PROTOCOL_SSL | PROTOCOL_HYBRID
).to_bytes(4, "little")

_CONNECTION_CONFIRM = 0xD0
_NEG_RSP = 0x02
_NEG_FAILURE = 0x03
MAX_TPKT = 1024  # a Connection Confirm is 19 bytes
# RDP_NEG_FAILURE codes (MS-RDPBCGR 2.2.1.2.2).
_FAILURES = {
    1: "the server requires TLS",
    2: "the server does not allow TLS",
    3: "the server has no certificate for TLS",
    4: "the server found the request inconsistent",
    5: "the server requires CredSSP",
    6: "the server requires TLS with client certificates",
}


class Stream(Protocol):
    def sendall(self, data: bytes, /) -> object: ...
    def recv(self, size: int, /) -> bytes: ...
    def settimeout(self, timeout: float | None, /) -> object: ...


class RdpHandshakeError(BastionctlError):
    """The RDP server did not show a certificate; the message says what it did instead."""


@dataclass(frozen=True)
class Certificate:
    der: bytes

    @property
    def thumbprint(self) -> str:
        """SHA-1 of the DER, 40 upper-case hex digits: what Windows (and EC2's console) call
        the certificate's thumbprint."""
        return hashlib.sha1(self.der, usedforsecurity=False).hexdigest().upper()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.der).hexdigest().upper()


def server_certificate(stream: Stream, timeout: float, what: str = "the RDP server") -> Certificate:
    """The certificate `what` shows on `stream` within `timeout` seconds (in all)."""
    deadline = time.monotonic() + timeout
    try:
        _send(stream, CONNECTION_REQUEST, deadline)
        _negotiate(_read_tpkt(stream, deadline, what), what)
        return Certificate(_tls_certificate(stream, deadline, what))
    except TimeoutError:
        raise RdpHandshakeError(f"{what} did not answer within {timeout:g} s") from None
    except OSError as exc:
        raise RdpHandshakeError(
            f"the connection to {what} failed: {exc.strerror or type(exc).__name__}"
        ) from None


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


def _send(stream: Stream, data: bytes, deadline: float) -> None:
    stream.settimeout(_left(deadline))
    stream.sendall(data)


def _recv(stream: Stream, size: int, deadline: float, what: str) -> bytes:
    stream.settimeout(_left(deadline))
    data = stream.recv(size)
    if not data:
        raise RdpHandshakeError(f"{what} closed the connection during the RDP handshake")
    return data


def _read_exactly(stream: Stream, size: int, deadline: float, what: str) -> bytes:
    data = b""
    while len(data) < size:
        data += _recv(stream, size - len(data), deadline, what)
    return data


def _read_tpkt(stream: Stream, deadline: float, what: str) -> bytes:
    header = _read_exactly(stream, 4, deadline, what)
    length = int.from_bytes(header[2:4], "big")
    if header[0] != 3 or not 7 <= length <= MAX_TPKT:
        raise RdpHandshakeError(f"{what} does not speak RDP (it answered {header.hex()})")
    return _read_exactly(stream, length - 4, deadline, what)


def _negotiate(x224: bytes, what: str) -> None:
    """Check the Connection Confirm selects a protocol that starts with TLS."""
    if x224[1] & 0xF0 != _CONNECTION_CONFIRM:
        raise RdpHandshakeError(f"{what} answered the RDP connection request with no confirm")
    negotiation = x224[7:]
    if len(negotiation) < 8:
        raise RdpHandshakeError(
            f"{what} offers standard RDP security only: it shows no TLS certificate to check"
        )
    value = int.from_bytes(negotiation[4:8], "little")
    if negotiation[0] == _NEG_FAILURE:
        reason = _FAILURES.get(value, f"failure code {value}")
        raise RdpHandshakeError(f"{what} refused the TLS negotiation: {reason}")
    if negotiation[0] != _NEG_RSP:
        raise RdpHandshakeError(f"{what} answered the negotiation with type {negotiation[0]}")
    if not value & _TLS_PROTOCOLS:
        raise RdpHandshakeError(
            f"{what} chose standard RDP security: it shows no TLS certificate to check"
        )


def _tls_certificate(stream: Stream, deadline: float, what: str) -> bytes:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # Only the certificate is wanted, to compare with EC2's thumbprint; nothing is sent.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing)
    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            pending = outgoing.read()
            if pending:
                _send(stream, pending, deadline)
            incoming.write(_recv(stream, 16_384, deadline, what))
        except ssl.SSLError as exc:
            raise RdpHandshakeError(
                f"the TLS handshake with {what} failed: {exc.reason or exc.strerror}"
            ) from None
    # TLS 1.3: the client's Finished is still here; a server sees an abandoned handshake
    # without it. The certificate is had already, so a failed send changes nothing.
    with contextlib.suppress(OSError):
        pending = outgoing.read()
        if pending:
            _send(stream, pending, deadline)
    der = tls.getpeercert(binary_form=True)
    if not der:
        raise RdpHandshakeError(f"{what} completed TLS without a certificate")
    return der
