"""A tunnel's RDP certificate against the thumbprint EC2 attests for its instance."""

from __future__ import annotations

import socket

from bastionctl.errors import BastionctlError
from bastionctl.model import Host
from bastionctl.rdp.attested import Attested, for_endpoint
from bastionctl.rdp.handshake import Certificate, RdpHandshakeError, Stream, server_certificate

CHECK_TIMEOUT = 15.0


class CertificateMismatch(BastionctlError):
    """The RDP server shows another certificate than the one EC2 attests."""


def compare(alias: str, seen: Certificate, attested: Attested) -> str:
    """The line saying `seen` is the certificate EC2 attests; CertificateMismatch if not."""
    if seen.thumbprint != attested.thumbprint:
        raise CertificateMismatch(
            f"{alias}'s RDP server shows a certificate with thumbprint {seen.thumbprint}, "
            f"not {attested.thumbprint} as EC2 attests ({attested.origin}): do not connect",
            f"if the instance renewed its certificate, `bastionctl known-hosts sync` reads the "
            f"new thumbprint once its console shows it; `bastionctl known-hosts forget {alias}` "
            "stops this check",
        )
    return f"RDP certificate: thumbprint {seen.thumbprint}, as EC2 attests ({attested.origin})"


def check(host: Host, stream: Stream, attested: Attested, timeout: float = CHECK_TIMEOUT) -> str:
    """Compare the certificate `host`'s RDP server shows on `stream` with `attested`.
    RdpHandshakeError when it shows none, CertificateMismatch when it shows another."""
    seen = server_certificate(stream, timeout, f"{host.alias}'s RDP server")
    return compare(host.alias, seen, attested)


def check_local_port(
    host: Host, address: str, port: int, timeout: float = CHECK_TIMEOUT
) -> tuple[str, bool] | None:
    """For an RDP tunnel to `host` listening on `address`:`port`: None when EC2 attests no
    thumbprint for it; else the line to say and whether it is a warning (the certificate could
    not be seen). CertificateMismatch when the server shows another certificate."""
    attested = for_endpoint(host)
    if attested is None:
        return None
    try:
        with socket.create_connection((address, port), timeout=timeout) as sock:
            return check(host, sock, attested, timeout), False
    except RdpHandshakeError as exc:
        reason = exc.message
    except OSError as exc:
        reason = f"cannot connect to the tunnel at port {port}: {exc.strerror or exc}"
    return f"cannot check {host.alias}'s RDP certificate against EC2's thumbprint: {reason}", True
