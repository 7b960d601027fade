"""The forwarding data path under stress: slow clients, key re-exchanges mid-transfer."""

from __future__ import annotations

import dataclasses
import hashlib
import socket
import threading
import time
from pathlib import Path

import pytest

from bastionctl.lab import LabInfo
from bastionctl.lab.standin import pattern
from bastionctl.ssh.datapath import WINDOW_SIZE
from bastionctl.tunnels.manager import ManagedTunnel, TunnelManager
from bastionctl.tunnels.protocol import TunnelEvent

from .test_manager import manager_for

pytestmark = pytest.mark.lab
MIB = 1024 * 1024
SOURCE = 9001  # the lab's pattern source on server-04


def source_tunnel(lab: LabInfo, tmp_path: Path) -> tuple[TunnelManager, ManagedTunnel]:
    events: list[TunnelEvent] = []
    manager, specs, session = manager_for(lab, tmp_path, events)
    spec = dataclasses.replace(specs["rdp4"], remote_port=SOURCE, service=None)
    return manager, manager.open(spec, session)


def read_all(conn: socket.socket, size: int) -> str:
    digest = hashlib.sha256()
    got = 0
    while got < size:
        chunk = conn.recv(1 << 20)
        if not chunk:
            break
        digest.update(chunk)
        got += len(chunk)
    assert got == size
    return digest.hexdigest()


def test_a_client_that_stops_reading_holds_the_server_back(lab: LabInfo, tmp_path: Path) -> None:
    size = 48 * MIB
    manager, tunnel = source_tunnel(lab, tmp_path)
    with manager, socket.create_connection(("127.0.0.1", tunnel.local_port), timeout=60) as conn:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        conn.sendall(f"{size}\n".encode())
        time.sleep(0.5)  # the client's socket fills, then only the channel window is let in
        held = []
        for _ in range(10):
            held.append((tunnel.forwarder.buffered(), tunnel.forwarder.bytes_in))
            time.sleep(0.1)
        # The server sends no more than one window beyond what the client accepted.
        assert max(buffered for buffered, _ in held) <= WINDOW_SIZE
        assert held[0][1] == held[-1][1] < size  # nothing delivered while nobody reads
        assert read_all(conn, size) == hashlib.sha256(pattern(size)).hexdigest()
    assert tunnel.forwarder.bytes_in == size


def test_key_re_exchange_on_both_hops_mid_transfer(lab: LabInfo, tmp_path: Path) -> None:
    # paramiko re-keys on its own only after 512 MB; here both hops re-key repeatedly
    # while the window adjustments for the transfer keep flowing through them.
    size = 64 * MIB
    manager, tunnel = source_tunnel(lab, tmp_path)
    with manager, socket.create_connection(("127.0.0.1", tunnel.local_port), timeout=60) as conn:
        transports = [t for link in tunnel._links() if (t := link.transport) is not None]
        assert len(transports) == 2
        done = threading.Event()
        rekeys = 0

        def rekey() -> None:
            nonlocal rekeys
            while not done.is_set():
                for transport in transports:
                    transport.renegotiate_keys()
                    rekeys += 1
                time.sleep(0.05)

        thread = threading.Thread(target=rekey)
        conn.sendall(f"{size}\n".encode())
        thread.start()
        try:
            digest = read_all(conn, size)
        finally:
            done.set()
            thread.join(timeout=30)
        assert digest == hashlib.sha256(pattern(size)).hexdigest()
        assert rekeys >= 4
        assert all(transport.is_active() for transport in transports)
        assert tunnel.state.value == "up"
