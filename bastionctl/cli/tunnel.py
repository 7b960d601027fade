"""`bastionctl tunnel`: open (foreground or detached), list, stop and answer tunnels."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from bastionctl import sanitise
from bastionctl.cli.app import App, cli, err
from bastionctl.errors import UsageError
from bastionctl.model import is_loopback


class TunnelGroup(click.Group):
    """`tunnel SERVICE HOST` for any service in the catalogue, plus fixed subcommands."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), "rdp", "mysql", "mssql"})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, cmd_name) or _service_command(cmd_name)


def _tunnel_options(func: Any) -> Any:
    for option in reversed(
        (
            click.option(
                "--local-port", type=click.IntRange(0, 65535), default=None, help="Local port."
            ),
            click.option("--bind", default=None, help="Local address (default 127.0.0.1)."),
            click.option(
                "--allow-non-loopback",
                is_flag=True,
                help="Allow --bind on an address other hosts can reach.",
            ),
            click.option("--detach", is_flag=True, help="Keep it running in the background."),
            click.option("--launch", is_flag=True, help="Start the client (args after --)."),
            click.option(
                "--rdp-file",
                type=click.Path(path_type=Path, dir_okay=False),
                help="Write a .rdp file for this tunnel.",
            ),
        )
    ):
        func = option(func)
    return func


def _service_command(name: str) -> click.Command:
    @click.command(name=name, help=f"Forward a local port to the {name} service of HOST.")
    @click.argument("host")
    @click.argument("client_args", nargs=-1, type=click.UNPROCESSED)
    @_tunnel_options
    @click.pass_obj
    def command(app: App, /, host: str, **options: Any) -> None:
        service = app.static_config.services.get(name)
        target = app.host(host)
        if service.name not in target.services:
            err(
                f"note: {target.alias} does not list {service.name} among its services "
                f"({', '.join(target.services) or 'none'}); trying anyway"
            )
        run_tunnel(app, target.alias, service.name, None, **options)

    return command


@cli.group(cls=TunnelGroup)
def tunnel() -> None:
    """Forward a local port through the bastion: tunnel rdp|mysql|mssql|SERVICE HOST."""


@tunnel.command("port")
@click.argument("host")
@click.argument("remote_port", type=click.IntRange(1, 65535))
@_tunnel_options
@click.pass_obj
def tunnel_port(app: App, /, host: str, remote_port: int, **options: Any) -> None:
    """Forward a local port to REMOTE_PORT on HOST's loopback."""
    run_tunnel(app, app.host(host).alias, None, remote_port, client_args=(), **options)


@tunnel.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def tunnel_list(as_json: bool) -> None:
    """Tunnels of every bastionctl process of this user."""
    from bastionctl.tunnels.client import all_tunnels

    now = time.time()
    tunnels = [tunnel.public(now) for tunnel in all_tunnels()]
    if as_json:
        click.echo(json.dumps(tunnels, indent=2))
        return
    if not tunnels:
        click.echo("no tunnels")
        return
    columns = ("id", "service", "host", "local", "state", "uptime", "bytes_in", "bytes_out")
    # Other processes' reports: shown as plain, sanitised text (JSON escapes on its own).
    table = [
        [sanitise.line(str(t[c] if t[c] is not None else "-")) for c in columns] for t in tunnels
    ]
    widths = [max(len(c), *(len(r[i]) for r in table)) for i, c in enumerate(columns)]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in table:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    for t in tunnels:
        if t["waiting_for"]:
            err(f"bastionctl: tunnel {t['id']} waits for {t['waiting_for']}")
            err(f"  answer it with: bastionctl tunnel answer {t['id']}")


@tunnel.command("stop")
@click.argument("tunnel_id", required=False)
@click.option("--all", "stop_all", is_flag=True, help="Stop every tunnel of every process.")
def tunnel_stop(tunnel_id: str | None, stop_all: bool) -> None:
    """Stop tunnel ID (from `tunnel list`), or all of them."""
    from bastionctl.tunnels.client import stop_tunnels
    from bastionctl.tunnels.protocol import TunnelId

    if stop_all == (tunnel_id is not None):
        raise UsageError("give a tunnel ID or --all (not both)", "see `bastionctl tunnel list`")
    stopped = [str(i) for i in stop_tunnels(TunnelId.parse(tunnel_id) if tunnel_id else None)]
    click.echo(f"stopped {len(stopped)} tunnel(s){': ' + ', '.join(stopped) if stopped else ''}")


@tunnel.command("answer")
@click.argument("tunnel_id")
def tunnel_answer(tunnel_id: str) -> None:
    """Answer the login a detached tunnel waits on (state needs-input)."""
    from bastionctl.prompting import terminal_ask
    from bastionctl.tunnels.client import answer_tunnel
    from bastionctl.tunnels.protocol import TunnelId, TunnelState

    info = answer_tunnel(
        TunnelId.parse(tunnel_id), terminal_ask, lambda message: err(f"bastionctl: {message}")
    )
    what = info.service or f"port {info.remote_port}"
    click.echo(f"Tunnel {info.id} ({what} on {info.host}) is {info.state.value}.")
    if info.state is not TunnelState.UP:
        raise click.exceptions.Exit(1)


@cli.command("agent", hidden=True)
def agent_command() -> None:
    """The background process that owns detached tunnels (started by --detach)."""
    from bastionctl.tunnels.agent import run_agent

    run_agent()


def run_tunnel(
    app: App,
    host: str,
    service_name: str | None,
    remote_port: int | None,
    local_port: int | None,
    bind: str | None,
    allow_non_loopback: bool,
    detach: bool,
    launch: bool,
    rdp_file: Path | None,
    client_args: tuple[str, ...],
) -> None:
    from bastionctl.prompting import terminal_ask
    from bastionctl.tunnels.launch import check_options
    from bastionctl.tunnels.protocol import TunnelRequest
    from bastionctl.tunnels.spec import build_spec

    if client_args and not launch:
        raise UsageError(
            f"unexpected arguments {' '.join(client_args)!r}", "client args need --launch"
        )
    config = app.config
    request = TunnelRequest(
        host=host,
        service=service_name,
        remote_port=remote_port,
        local_port=local_port,
        bind=bind,
        allow_non_loopback=allow_non_loopback,
        config=str(config.path) if config.path else None,
    )
    # Validates everything (host, service, bind, client options) before any process or login.
    spec = build_spec(config, request)
    check_options(spec, launch, rdp_file, client_args)
    if not is_loopback(spec.bind):
        err(f"bastionctl: warning: the tunnel listens on {spec.bind}, reachable beyond loopback")

    def notify(message: str) -> None:
        err(f"bastionctl: {message}")

    if detach:
        from bastionctl.tunnels import launch as launching
        from bastionctl.tunnels.client import open_detached

        info = open_detached(request, ask=terminal_ask, notify=notify)
        click.echo(f"Tunnel {info.id} open in the background: {spec.label}")
        click.echo(f"  listening on {info.local}")
        click.echo(f"  connect with: {info.connection}")
        note = launching.wsl_note(spec.bind, info.local_port)
        if note is not None:
            click.echo(f"  {note}")
        click.echo(f"Stop it with: bastionctl tunnel stop {info.id}")
        launching.write_requested_rdp_file(spec, info.local_port, rdp_file, err)
        if not launch:
            return
        client = launching.start_client(spec, info.local_port, client_args, err, rdp_file)
        if client is None:
            return
        if not client.command.hands_off:
            raise click.exceptions.Exit(client.process.wait())
        # A launcher that hands the client to the OS (macOS `open`): its status says only
        # whether the hand-off worked; the tunnel lives on in the agent either way.
        status = launching.wait_handoff(client)
        stays = f"the tunnel stays up until `bastionctl tunnel stop {info.id}`"
        err(f"bastionctl: {launching.handoff_message(client, status)}; {stays}")
        if status:
            raise click.exceptions.Exit(1)
        return
    from bastionctl.tunnels.foreground import run_foreground

    status = run_foreground(
        spec,
        app.static_config.settings,
        terminal_ask,
        click.echo,
        err,
        launch_client=launch,
        rdp_file=rdp_file,
        client_args=client_args,
    )
    if status:
        raise click.exceptions.Exit(status)
