"""The paramiko seam: each private name bastionctl uses still fits, or the plain path is taken.

These tests need no network: they look at the installed paramiko. A paramiko upgrade that
moves one of the names fails here, loudly, instead of hanging a tunnel.
"""

from __future__ import annotations

import inspect
import logging
import re
import socket
import subprocess
import sys
import threading

import paramiko
import paramiko.config
import pytest
from paramiko.buffered_pipe import BufferedPipe

from bastionctl.ssh import datapath, seam
from bastionctl.ssh.pipe import ChunkPipe
from tests.ssh.helpers import wait_for


def test_every_private_name_fits_the_installed_paramiko() -> None:
    assert seam.problems() == []


def test_paramiko_reads_no_private_socket_attribute_but_closed() -> None:
    """ssh.wire's socket wrappers forward unknown attributes to a real socket; paramiko's
    Transport reads `sock._closed` while stopping. Another private read needs a look there."""
    source = inspect.getsource(paramiko.Transport)
    assert set(re.findall(r"self\.sock\.(_\w+)", source)) == {"_closed"}


def test_paramiko_imports_invoke_only_if_it_can() -> None:
    """ssh.seam imports paramiko with Invoke hidden; paramiko must take that as optional."""
    source = inspect.getsource(paramiko.config)
    assert re.search(r"try:\s+import invoke\s+except ImportError", source)


def test_an_eof_from_the_prompt_handler_ends_the_login_quietly() -> None:
    """ssh.auth ends a login from inside paramiko's transport thread with an EOFError."""
    run = inspect.getsource(paramiko.Transport.run)
    assert re.search(r"except EOFError as e:\s+self\._log\(DEBUG", run)
    wait = inspect.getsource(paramiko.auth_handler.AuthHandler.wait_for_response)
    assert "EOFError" in wait


def test_a_missing_name_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(paramiko.Channel, "_check_add_window")
    monkeypatch.setattr(paramiko.Transport, "_send_message", lambda self, other, extra: None)
    assert seam.problems() == ["_check_add_window", "_send_message"]


def test_chunk_pipes_only_for_channels_bastionctl_opens() -> None:
    seam.install()
    assert type(paramiko.Channel(1).in_buffer) is BufferedPipe
    with seam.chunk_pipes():
        assert type(paramiko.Channel(2).in_buffer) is ChunkPipe
    assert type(paramiko.Channel(3).in_buffer) is BufferedPipe


@pytest.fixture
def fresh_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    """datapath.install() chooses again in this test; the process's choice comes back after."""
    monkeypatch.setattr(datapath, "_active", None)
    monkeypatch.delenv(datapath.SETTING, raising=False)


@pytest.mark.usefixtures("fresh_choice")
def test_a_seam_that_no_longer_fits_means_the_plain_path_and_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delattr(paramiko.Transport, "_send_user_message")
    with caplog.at_level(logging.WARNING, "bastionctl.ssh.datapath"):
        assert datapath.install() is datapath.PLAIN
        assert datapath.install() is datapath.PLAIN  # chosen once per process
    [warning] = caplog.records
    assert "_send_user_message" in warning.getMessage() and "plain path" in warning.getMessage()


@pytest.mark.usefixtures("fresh_choice")
def test_the_plain_path_on_request(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(datapath.SETTING, "plain")
    with caplog.at_level(logging.WARNING):
        assert datapath.install() is datapath.PLAIN
    assert caplog.records == []


@pytest.mark.usefixtures("fresh_choice")
def test_an_unknown_data_path_setting_is_said_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(datapath.SETTING, "turbo")
    with caplog.at_level(logging.WARNING, "bastionctl.ssh.datapath"):
        assert datapath.install() is datapath.FAST
    [warning] = caplog.records
    assert "BASTIONCTL_DATA_PATH=turbo" in warning.getMessage()


def test_importing_the_ssh_layer_changes_nothing_in_paramiko() -> None:
    code = (
        "import paramiko.channel, sys\n"
        "before = paramiko.channel.BufferedPipe\n"
        "import bastionctl.tunnels.manager, bastionctl.ssh.connect\n"
        "assert paramiko.channel.BufferedPipe is before\n"
        "assert 'invoke' in sys.modules  # paramiko came first here: nothing hidden\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_a_watched_send_lock_tells_when_a_sender_waits() -> None:
    near, far = socket.socketpair()
    transport = paramiko.Transport(far)
    try:
        contended = seam.watch_senders(transport)
        lock = transport.clear_to_send_lock
        assert lock.acquire() and not contended()  # held, nobody waits
        assert not lock.acquire(blocking=False) and not contended()  # a try is no waiter
        results: list[bool] = []

        def sender(timeout: float) -> None:
            results.append(lock.acquire(True, timeout))

        waiter = threading.Thread(target=sender, args=(0.2,))
        waiter.start()
        assert wait_for(contended, 5, interval=0.001)
        waiter.join(5)
        assert results == [False] and not contended()  # timed out, and no longer waiting
        waiter = threading.Thread(target=sender, args=(-1,))
        waiter.start()
        assert wait_for(contended, 5, interval=0.001)
        lock.release()
        waiter.join(5)
        assert results == [False, True] and not contended()
        lock.release()
    finally:
        transport.close()
        near.close()
