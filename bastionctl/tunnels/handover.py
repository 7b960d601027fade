"""Handing a process's tunnels to the agent: each closes here and reopens there on its port."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bastionctl.errors import BastionctlError
from bastionctl.tunnels.client import Ask, Notify, open_detached
from bastionctl.tunnels.manager import TunnelManager
from bastionctl.tunnels.protocol import TunnelInfo, TunnelRequest


@dataclass(frozen=True)
class Moved:
    """One tunnel handed over: the agent's tunnel, or why it could not move (then it is closed)."""

    label: str
    tunnel: TunnelInfo | None = None
    error: str | None = None


def hand_over(
    manager: TunnelManager, config_path: Path | None, ask: Ask, notify: Notify
) -> Iterator[Moved]:
    """Move every tunnel of `manager` to the agent, one by one; open connections are cut once."""
    config = str(config_path) if config_path else None
    for tunnel in manager.list():
        spec, port = tunnel.spec, tunnel.local_port
        manager.close(tunnel.id)
        try:
            moved = open_detached(TunnelRequest.for_spec(spec, port, config), ask, notify)
        except BastionctlError as exc:
            yield Moved(spec.label, error=str(exc))
            continue
        yield Moved(spec.label, tunnel=moved)
