"""The front ends' side of the control sockets: open in the agent, answer, list, stop, log out.

(A foreground tunnel attached to the agent has its own: tunnels.attached.)"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bastionctl import sanitise
from bastionctl.errors import BastionctlError, LoginCancelled, ProtocolError, UsageError
from bastionctl.prompting import Question
from bastionctl.tunnels import control
from bastionctl.tunnels.agent import ensure_agent
from bastionctl.tunnels.protocol import (
    Answer,
    AnswerTunnel,
    Listed,
    ListTunnels,
    LoggedOut,
    LoginInfo,
    Logout,
    Message,
    Notice,
    Opened,
    OpenTunnel,
    Prompt,
    Stopped,
    StopTunnels,
    TunnelId,
    TunnelInfo,
    TunnelRequest,
    expect,
)

# Asks the person; (prompt, echo) -> answer. Raises a BastionctlError when nobody can answer.
Ask = Callable[[str, bool], str]
Notify = Callable[[str], None]


def open_detached(request: TunnelRequest, ask: Ask, notify: Notify) -> TunnelInfo:
    """Ask the agent (started if needed) to open a tunnel, answering its login's prompts."""
    return _converse(ensure_agent(), OpenTunnel(request), ask, notify)


def answer_tunnel(tunnel_id: TunnelId, ask: Ask, notify: Notify) -> TunnelInfo:
    """Answer the login a needs-input tunnel of the agent waits on; its state afterwards."""
    agent = control.agent_socket()
    if agent not in set(control.live_sockets()) or tunnel_id.pid != _agent_pid():
        raise UsageError(
            f"tunnel {tunnel_id} is not one of the agent's; only those wait for answers",
            "see `bastionctl tunnel list`",
        )
    return _converse(agent, AnswerTunnel(tunnel_id), ask, notify)


def _agent_pid() -> int | None:
    try:
        return int(control.agent_socket().with_suffix(".pid").read_text())
    except (OSError, ValueError):
        return None


def _converse(
    path: Path, request: OpenTunnel | AnswerTunnel, ask: Ask, notify: Notify
) -> TunnelInfo:
    try:
        conn = control.connect(path, timeout=None)
    except OSError as exc:
        raise BastionctlError(f"cannot reach the bastionctl agent: {exc.strerror or exc}") from None
    try:
        conn.send(request)
        while True:
            message: Message | None = conn.receive()
            if isinstance(message, Prompt):
                # From another process: sanitised again; a server's question says who asks.
                origin = message.origin.clean() if message.origin else None
                question = Question(origin) if origin else sanitise.prompt(message.text)
                try:
                    answer: str | None = ask(question, message.echo)
                except LoginCancelled:
                    answer = None  # the agent ends the login and says so in its reply
                conn.send(Answer(answer))
            elif isinstance(message, Notice):
                notify(message.text)
            else:
                return expect(message, Opened, "the bastionctl agent").tunnel
    except OSError as exc:
        raise BastionctlError(f"lost the bastionctl agent: {exc.strerror or exc}") from None
    finally:
        conn.close()


def all_tunnels() -> list[TunnelInfo]:
    """The tunnels of every bastionctl process of this user that answers."""
    return listing()[0]


def listing() -> tuple[list[TunnelInfo], list[LoginInfo]]:
    """The tunnels of every bastionctl process of this user that answers, and the agent's
    bastion logins (used and idle)."""
    tunnels: list[TunnelInfo] = []
    logins: list[LoginInfo] = []
    for path in control.live_sockets():
        try:
            reply = control.request(path, ListTunnels(), timeout=5)
            listed = expect(reply, Listed, f"the bastionctl process behind {path.name}")
        except ProtocolError:
            raise  # another version: say so rather than hide its tunnels
        except (OSError, BastionctlError):
            continue
        tunnels.extend(listed.tunnels)
        logins.extend(listed.logins)
    return sorted(tunnels, key=lambda t: t.id), logins


def logout(bastion: str | None) -> LoggedOut:
    """Close the agent's idle login to `bastion` (every idle one when None) now."""
    agent = control.agent_socket()
    if agent not in set(control.live_sockets()):
        return LoggedOut(())
    try:
        reply = control.request(agent, Logout(bastion))
    except OSError:
        return LoggedOut(())  # it has just left, and its logins with it
    return expect(reply, LoggedOut, "the bastionctl agent")


def stop_tunnels(tunnel_id: TunnelId | None) -> list[TunnelId]:
    """Stop one tunnel, or every tunnel of every process when `tunnel_id` is None."""
    stopped: list[TunnelId] = []
    for tunnel in all_tunnels():
        if tunnel_id is not None and tunnel.id != tunnel_id:
            continue
        path = (
            control.agent_socket()
            if tunnel.process == "agent"
            else control.process_socket(tunnel.id.pid)
        )
        reply = control.request(path, StopTunnels(tunnel.id))
        stopped.extend(expect(reply, Stopped, f"the bastionctl process {tunnel.id.pid}").tunnels)
    if tunnel_id is not None and not stopped:
        raise UsageError(f"no tunnel with id {tunnel_id}", "see `bastionctl tunnel list`")
    return stopped
