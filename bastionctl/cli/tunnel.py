"""`bastionctl tunnel`: open (foreground or detached), list, stop and answer tunnels."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from bastionctl import sanitise
from bastionctl.cli.app import App, cli, err
from bastionctl.errors import BastionctlError, UsageError
from bastionctl.model import is_loopback

if TYPE_CHECKING:
    from bastionctl.tunnels.protocol import LoginInfo


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
            click.option(
                "--standalone",
                is_flag=True,
                help="Log in from this command, not through the agent's shared login.",
            ),
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
    """Tunnels of every bastionctl process of this user, and the agent's bastion logins."""
    from bastionctl.tunnels.client import listing

    now = time.time()
    infos, logins = listing()
    tunnels = [tunnel.public(now) for tunnel in infos]
    if as_json:
        public = [login.public(now) for login in logins]
        click.echo(json.dumps({"tunnels": tunnels, "logins": public}, indent=2))
        return
    idle = [login for login in logins if login.closes_at is not None]
    if not tunnels:
        click.echo("no tunnels")
        _idle_lines(idle, now)
        return
    columns = (
        "id",
        "service",
        "host",
        "local",
        "state",
        "uptime",
        "bytes_in",
        "bytes_out",
        "attached",
    )
    # Other processes' reports: shown as plain, sanitised text (JSON escapes on its own).
    table = [
        [sanitise.line(str(t[c] if t[c] is not None else "-")) for c in columns] for t in tunnels
    ]
    widths = [max(len(c), *(len(r[i]) for r in table)) for i, c in enumerate(columns)]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in table:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    for info in infos:
        summary = info.error_summary()
        if summary is not None and info.waiting_for is None:
            click.echo(f"{info.id}: {sanitise.line(summary)}")
    _idle_lines(idle, now)
    for t in tunnels:
        if t["waiting_for"]:
            err(f"bastionctl: tunnel {t['id']} waits for {t['waiting_for']}")
            err(f"  answer it with: bastionctl tunnel answer {t['id']}")


def _idle_lines(idle: list[LoginInfo], now: float) -> None:
    """One line per idle bastion login of the agent: when it closes, how to close it now."""
    for login in idle:
        closes = login.closes_at or now
        left = max(0, round(closes - now))
        at = time.strftime("%H:%M:%S", time.localtime(closes))
        bastion = sanitise.line(login.bastion)
        click.echo(
            f"idle login to {bastion}: closes at {at} (in {left // 60}m{left % 60:02d}s); "
            f"`bastionctl logout {bastion}` closes it now"
        )


@cli.command("logout")
@click.argument("bastion", required=False)
@click.pass_obj
def logout_command(app: App, bastion: str | None) -> None:
    """Close the agent's idle login to BASTION (or every idle login) now."""
    from bastionctl.tunnels.client import logout

    done = logout(bastion)
    if bastion is not None and not done.closed and not done.in_use:
        bastions = app.config.inventory.bastions
        if bastion not in bastions:
            raise UsageError(
                f"unknown bastion {sanitise.line(bastion)!r}",
                f"bastions: {', '.join(sorted(bastions)) or 'none'}",
            )
    closed = ", ".join(sanitise.line(alias) for alias in done.closed)
    in_use = ", ".join(sanitise.line(alias) for alias in done.in_use)
    if closed:
        line = f"closed the idle login to {closed}"
    elif bastion is not None:
        line = f"no idle login to {bastion}; nothing closed"
    else:
        line = "no idle logins; nothing closed"
    if in_use:
        line += f" (tunnels still use the login to {in_use}: `bastionctl tunnel stop` them first)"
    click.echo(line)


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


@tunnel.command("ports")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--forget", metavar="HOST[/SERVICE]", help="Drop remembered ports.")
@click.pass_obj
def tunnel_ports(app: App, as_json: bool, forget: str | None) -> None:
    """Local ports that differ from the scheme: set in the config or chosen with --local-port."""
    from bastionctl.tunnels.ports import PortBook

    book = PortBook()
    if forget is not None:
        dropped = book.forget(forget)
        if not dropped:
            raise UsageError(f"no remembered port for {forget}", "see `bastionctl tunnel ports`")
        listed = ", ".join(f"{e.key} ({e.port})" for e in dropped)
        click.echo(f"forgot {listed}; the scheme's port (or the config's) applies again")
        return
    rows = _port_rows(app, book)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no remembered or configured ports; tunnels use the scheme's (3306 -> 53306)")
        return
    width = max(len(f"{r['host']}/{r['service']}") for r in rows)
    for row in rows:
        name = f"{row['host']}/{row['service']}"
        click.echo(f"{name:<{width}}  {row['port']:>5}  {row['why']}")
    if any(r["source"] == "remembered" for r in rows):
        click.echo("forget one with: bastionctl tunnel ports --forget HOST[/SERVICE]")


def _port_rows(app: App, book: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    configured: dict[str, int] = {}
    for host in app.static_config.inventory.hosts.values():
        for service, port in host.local_ports:
            configured[f"{host.alias}/{service}"] = port
            where = app.static_config.path or "the config"
            rows.append(
                {
                    "host": host.alias,
                    "service": service,
                    "port": port,
                    "source": "config",
                    "date": None,
                    "why": f"set in {where} (local_ports)",
                }
            )
    for entry in book.entries().values():
        host, service = entry.key.split("/", 1) if "/" in entry.key else (entry.key, "")
        why = entry.reason
        if entry.key in configured:
            why += f"; the config's {configured[entry.key]} applies instead"
        rows.append(
            {
                "host": host,
                "service": service,
                "port": entry.port,
                "source": "remembered",
                "date": entry.date or None,
                "why": why,
            }
        )
    return sorted(rows, key=lambda r: (r["host"], r["service"], r["source"]))


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
    standalone: bool,
    launch: bool,
    rdp_file: Path | None,
    client_args: tuple[str, ...],
) -> None:
    from bastionctl.prompting import terminal_ask
    from bastionctl.tunnels.launch import check_options
    from bastionctl.tunnels.protocol import TunnelRequest
    from bastionctl.tunnels.spec import build_spec, remembered_note

    if client_args and not launch:
        raise UsageError(
            f"unexpected arguments {' '.join(client_args)!r}", "client args need --launch"
        )
    if detach and standalone:
        raise UsageError(
            "--standalone is for a tunnel in the foreground",
            "a --detach tunnel lives in the agent and shares its login",
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
    note = remembered_note(spec)
    if note is not None:
        err(f"bastionctl: {note}")
    if not is_loopback(spec.bind):
        err(f"bastionctl: warning: the tunnel listens on {spec.bind}, reachable beyond loopback")

    def notify(message: str) -> None:
        err(f"bastionctl: {message}")

    if detach:
        from bastionctl.tunnels import launch as launching
        from bastionctl.tunnels.client import open_detached, stop_tunnels
        from bastionctl.tunnels.holding import check_rdp_certificate

        info = open_detached(request, ask=terminal_ask, notify=notify)
        try:
            checked = check_rdp_certificate(spec, info.local_port, err)
        except BastionctlError:
            stop_tunnels(info.id)  # the certificate is not EC2's: nobody should connect
            raise
        click.echo(f"Tunnel {info.id} open in the background: {spec.label}")
        click.echo(f"  listening on {info.local}")
        click.echo(f"  connect with: {info.connection}")
        if checked is not None:
            click.echo(f"  {checked}")
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
    status = None
    if standalone:
        err("bastionctl: --standalone: this tunnel logs in by itself, not with the agent's login")
    elif logging.getLogger().isEnabledFor(logging.INFO):
        # The agent's records go to its log file: a login looked at with -v or --debug is
        # made here, where its records (and with --debug the library's) show.
        logging.getLogger(__name__).info(
            "-v/--debug: this tunnel logs in by itself, not with the agent's login"
        )
    else:
        from bastionctl.tunnels.attached import AgentUnavailable, run_attached

        try:
            status = run_attached(
                request,
                spec,
                terminal_ask,
                click.echo,
                err,
                launch_client=launch,
                rdp_file=rdp_file,
                client_args=client_args,
            )
        except AgentUnavailable as exc:
            err(f"bastionctl: {exc}; this tunnel logs in by itself instead")
    if status is None:
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
