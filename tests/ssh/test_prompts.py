"""Whose prompt is it: a login's questions reach the front end that asked for the tunnel, and no
other. A tunnel whose front end has gone waits in needs-input until one answers.

The bastion here asks for a code on every login and the keyring holds no secret, so every
bastion login is a prompt some front end must answer.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bastionctl.errors import LoginCancelled, UsageError
from bastionctl.tunnels.client import all_tunnels, answer_tunnel, open_detached
from bastionctl.tunnels.protocol import TunnelId, TunnelInfo, TunnelRequest, TunnelState
from tests.lab.helpers import run_cli
from tests.ssh.helpers import PROMPT, echo_roundtrip, wait_for
from tests.ssh.world import World


@dataclass
class FrontEnd:
    """A front end that answers prompts with the current code and remembers them."""

    world: World
    prompts: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    decline: bool = False

    def ask(self, prompt: str, echo: bool) -> str:
        self.prompts.append(prompt)
        if self.decline:
            raise LoginCancelled("declined in the test")
        return self.world.totp_code("bulk")

    def notify(self, text: str) -> None:
        self.notices.append(text)


def listed(tunnel_id: TunnelId) -> TunnelInfo:
    [info] = [t for t in all_tunnels() if t.id == tunnel_id]
    return info


def wait_state(tunnel_id: TunnelId, state: TunnelState) -> None:
    """Until the agent lists the tunnel in `state` (15 s at the most)."""
    reached = wait_for(lambda: listed(tunnel_id).state is state, 15, 0.05)
    assert reached, f"tunnel {tunnel_id} not {state.value} within 15 s"


def request(config: Path, host: str = "server-02") -> TunnelRequest:
    return TunnelRequest(host, "echo", config=str(config))


@pytest.mark.usefixtures("agent")
def test_a_prompt_without_its_front_end_waits_and_never_reaches_another(
    ssh_world: World, asking_config: Path
) -> None:
    first, second = FrontEnd(ssh_world), FrontEnd(ssh_world)
    one = open_detached(request(asking_config), first.ask, first.notify)
    assert first.prompts == [PROMPT] and one.state is TunnelState.UP
    # The first front end has gone (its command ended). The bastion drops the connection:
    # the reconnect's prompt has nobody to go to, so the tunnel waits, port still bound.
    ssh_world.bastion.drop_connections()
    wait_state(one.id, TunnelState.NEEDS_INPUT)
    waiting = listed(one.id)
    assert waiting.waiting_for == f"the login to server-01: {PROMPT}"
    assert waiting.local_port == one.local_port
    with socket.create_connection(("127.0.0.1", one.local_port), timeout=5) as early:
        assert early.recv(1) == b""  # refused cleanly meanwhile, not left hanging
    # Another front end opens its own tunnel through the same bastion: it is asked once,
    # for its own login, and the waiting tunnel rides on that login without a prompt.
    two = open_detached(request(asking_config, "server-03"), second.ask, second.notify)
    assert second.prompts == [PROMPT] and two.state is TunnelState.UP
    wait_state(one.id, TunnelState.UP)
    assert first.prompts == [PROMPT] and second.prompts == [PROMPT]
    assert listed(one.id).waiting_for is None
    echo_roundtrip(one.local_port, os.urandom(64 * 1024))
    echo_roundtrip(two.local_port, os.urandom(64 * 1024))


@pytest.mark.usefixtures("agent")
def test_a_later_front_end_answers_a_waiting_tunnel(ssh_world: World, asking_config: Path) -> None:
    opener, answerer = FrontEnd(ssh_world), FrontEnd(ssh_world)
    one = open_detached(request(asking_config), opener.ask, opener.notify)
    with pytest.raises(UsageError, match="waits for no answer"):
        answer_tunnel(one.id, answerer.ask, answerer.notify)
    assert answerer.prompts == []
    ssh_world.bastion.drop_connections()
    wait_state(one.id, TunnelState.NEEDS_INPUT)
    before = ssh_world.bastion.logins(user="bulk")
    answered = answer_tunnel(one.id, answerer.ask, answerer.notify)
    assert answered.state is TunnelState.UP and answered.local_port == one.local_port
    assert answerer.prompts == [PROMPT] and opener.prompts == [PROMPT]
    assert ssh_world.bastion.logins(user="bulk") == before + 1
    echo_roundtrip(one.local_port, os.urandom(64 * 1024))


@pytest.mark.usefixtures("agent")
def test_a_declined_answer_leaves_the_tunnel_waiting(ssh_world: World, asking_config: Path) -> None:
    opener, decliner = FrontEnd(ssh_world), FrontEnd(ssh_world, decline=True)
    one = open_detached(request(asking_config), opener.ask, opener.notify)
    ssh_world.bastion.drop_connections()
    wait_state(one.id, TunnelState.NEEDS_INPUT)
    attempts_before = ssh_world.bastion.attempts(user="bulk")
    answered = answer_tunnel(one.id, decliner.ask, decliner.notify)
    assert decliner.prompts == [PROMPT]
    assert answered.state is TunnelState.NEEDS_INPUT  # nothing sent, still answerable
    assert ssh_world.bastion.attempts(user="bulk") == attempts_before  # no code tried
    assert answer_tunnel(one.id, FrontEnd(ssh_world).ask, print).state is TunnelState.UP


@pytest.mark.usefixtures("agent")
def test_a_cancelled_open_closes_its_tunnel(ssh_world: World, asking_config: Path) -> None:
    decliner = FrontEnd(ssh_world, decline=True)
    with pytest.raises(LoginCancelled):
        open_detached(request(asking_config), decliner.ask, decliner.notify)
    assert decliner.prompts == [PROMPT]
    assert all_tunnels() == []


@pytest.mark.usefixtures("agent")
def test_tunnel_list_and_answer_from_the_command_line(
    ssh_world: World, asking_config: Path
) -> None:
    one = open_detached(request(asking_config), FrontEnd(ssh_world).ask, print)
    ssh_world.bastion.drop_connections()
    wait_state(one.id, TunnelState.NEEDS_INPUT)
    shown = run_cli("tunnel", "list")
    assert shown.returncode == 0, shown.stderr
    assert "needs-input" in shown.stdout
    assert f"bastionctl tunnel answer {one.id}" in shown.stderr
    [as_json] = json.loads(run_cli("tunnel", "list", "--json").stdout)["tunnels"]
    assert as_json["state"] == "needs-input" and PROMPT in as_json["waiting_for"]
    # No terminal here: the code comes on standard input, as terminal_ask reads it.
    answered = run_cli("tunnel", "answer", str(one.id), stdin=ssh_world.totp_code("bulk") + "\n")
    assert answered.returncode == 0, answered.stderr
    assert answered.stdout == f"Tunnel {one.id} (echo on server-02) is up.\n"
    assert PROMPT in answered.stderr  # the prompt, shown where a person would type
    echo_roundtrip(one.local_port, os.urandom(64 * 1024))
