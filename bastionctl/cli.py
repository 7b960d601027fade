"""The command line: parses, calls the core, prints. Heavy modules are imported late."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import click

from bastionctl import __version__
from bastionctl.config import Config, load_config, resolve_config_path
from bastionctl.errors import BastionctlError, ConnectError, ExitStatus, UsageError
from bastionctl.model import Bastion, Host, TunnelSpec, hostport

FIXED_TUNNEL_COMMANDS = ("port",)


@dataclass
class App:
    config_option: Path | None
    debug: bool = False
    # How the inventory is loaded; `hosts` sets these before first use.
    refresh: bool = False
    only_sources: tuple[str, ...] | None = None
    show_progress: bool = False
    all_warnings: bool = False
    quiet: bool = False
    _static: Config | None = field(default=None, repr=False)
    _config: Config | None = field(default=None, repr=False)

    @property
    def static_config(self) -> Config:
        """Settings, services and the config file's own inventory; nothing fetched."""
        if self._static is None:
            self._static = load_config(resolve_config_path(self.config_option))
        return self._static

    @property
    def config(self) -> Config:
        """The config with the whole inventory: static entries merged with EC2."""
        if self._config is None:
            from bastionctl.inventory.load import load_inventory

            progress = (lambda line: _err(f"bastionctl: {line}")) if self.show_progress else None
            loaded = load_inventory(
                self.static_config,
                refresh=self.refresh,
                only=self.only_sources,
                progress=progress,
            )
            if self.all_warnings:
                for warning in loaded.warnings:
                    _err(f"bastionctl: warning: {warning}")
            elif loaded.warnings and not self.quiet:
                count = len(loaded.warnings)
                _err(
                    f"bastionctl: warning: the inventory has {count} warning"
                    f"{'s' * (count != 1)} (bastionctl hosts shows them)"
                )
            self._config = loaded.config
        return self._config

    def host(self, alias: str) -> Host:
        from bastionctl.tunnels import find_host

        try:
            return find_host(self.config, alias)
        except UsageError as exc:
            if self.config.path is None and not self.config.inventory.hosts:
                exc.hint = f"no hosts in the inventory ({_config_hint(self.config)})"
            raise

    def endpoint_alias(self, alias: str) -> str:
        inventory = self.config.inventory
        if alias in inventory.bastions or alias in inventory.hosts:
            return alias
        raise UsageError(
            f"unknown bastion '{alias}'",
            f"bastions: {', '.join(sorted(inventory.bastions)) or 'none'}"
            + ("" if inventory.bastions else f" ({_config_hint(self.config)})"),
        )


def _config_hint(config: Config) -> str:
    if config.path is None:
        return "no config found: run `bastionctl lab up` or write config.toml (see configs/)"
    return f"config: {config.path}"


def _err(message: str) -> None:
    click.echo(message, err=True)


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Config file (default: $BASTIONCTL_CONFIG, then the user config dir).",
)
@click.option("--debug", is_flag=True, help="Debug logging and tracebacks on errors.")
@click.option("-v", "--verbose", is_flag=True, help="Say what is happening.")
@click.version_option(__version__, prog_name="bastionctl")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, debug: bool, verbose: bool) -> None:
    """Inventory, ssh config and 2FA tunnels for hosts behind an SSH bastion."""
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if not debug:
        logging.getLogger("paramiko").setLevel(logging.WARNING)
    ctx.obj = App(config_option=config_path, debug=debug)
    if ctx.invoked_subcommand is None:
        if not (sys.stdin.isatty() and sys.stdout.isatty()):
            click.echo(ctx.get_help())
            _err("bastionctl: the TUI needs a terminal; the commands above work without one")
            return
        from bastionctl.affinity import CpuKeeper
        from bastionctl.tui.app import create_app

        CpuKeeper().start()  # the TUI holds tunnels itself (see affinity)
        create_app(config_path).run()


# ---------------------------------------------------------------- hosts


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--refresh", is_flag=True, help="Fetch from EC2 even if the cache is fresh.")
@click.option(
    "--source",
    "sources",
    multiple=True,
    metavar="NAME",
    help="Only this source: 'static' or an [[ec2]] name (repeatable).",
)
@click.pass_obj
def hosts(app: App, as_json: bool, refresh: bool, sources: tuple[str, ...]) -> None:
    """List the bastions and hosts of the inventory (static config and EC2 tags)."""
    app.refresh = refresh
    app.only_sources = sources or None
    app.show_progress = True
    app.all_warnings = True
    inventory = app.config.inventory
    rows = [_endpoint_row(b, "bastion") for b in inventory.bastions.values()]
    rows += [_endpoint_row(h, "host") for h in inventory.hosts.values()]
    rows.sort(key=lambda r: (r["role"] != "bastion", r["alias"]))
    if as_json:
        click.echo(json.dumps(rows, indent=2, sort_keys=True))
        return
    if not rows:
        _err(f"the inventory is empty ({_config_hint(app.config)})")
        return
    _print_table(
        ("alias", "role", "platform", "ipv6", "ipv4", "bastion", "services", "region"), rows
    )


def _print_table(columns: Sequence[str], rows: list[dict[str, Any]]) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for column in columns:
        table.add_column(column.upper(), no_wrap=True)
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column)
            text = ",".join(value) if isinstance(value, list) else str(value or "")
            cells.append(text or "-")
        table.add_row(*cells)
    # Values are data, never markup or :emoji: codes (an IPv6 "::100::" is not a smiley).
    console = Console(highlight=False, soft_wrap=True, markup=False, emoji=False)
    if not console.is_terminal:
        console.width = 1000
    console.print(table)


def _endpoint_row(endpoint: Bastion | Host, role: str) -> dict[str, Any]:
    origin = endpoint.origin
    return {
        "alias": endpoint.alias,
        "role": role,
        "platform": getattr(endpoint, "platform", None),
        "address": endpoint.connect_host,
        "ipv6": endpoint.ipv6,
        "ipv4": endpoint.ipv4,
        "public_ipv4": origin.public_ipv4 if origin else None,
        "fqdn": endpoint.fqdn,
        "user": endpoint.user,
        "port": endpoint.port,
        "identity_file": str(endpoint.identity_file) if endpoint.identity_file else None,
        "bastion": getattr(endpoint, "bastion", None),
        "services": list(getattr(endpoint, "services", ())),
        "source": origin.source if origin else "static",
        "region": origin.region if origin else None,
        "vpc_id": origin.vpc_id if origin else None,
        "instance_id": origin.instance_id if origin else None,
        "account": origin.account if origin else None,
        "platform_details": origin.platform_details if origin else None,
    }


# ---------------------------------------------------------------- tunnel


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
            _err(
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
    from bastionctl.agent import all_tunnels

    tunnels = all_tunnels()
    if as_json:
        click.echo(json.dumps(tunnels, indent=2))
        return
    if not tunnels:
        click.echo("no tunnels")
        return
    columns = ("id", "service", "host", "local", "state", "uptime", "bytes_in", "bytes_out")
    table = [[str(t.get(c) if t.get(c) is not None else "-") for c in columns] for t in tunnels]
    widths = [max(len(c), *(len(r[i]) for r in table)) for i, c in enumerate(columns)]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in table:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


@tunnel.command("stop")
@click.argument("tunnel_id", required=False)
@click.option("--all", "stop_all", is_flag=True, help="Stop every tunnel of every process.")
def tunnel_stop(tunnel_id: str | None, stop_all: bool) -> None:
    """Stop tunnel ID (from `tunnel list`), or all of them."""
    from bastionctl.agent import stop_tunnels

    if stop_all == (tunnel_id is not None):
        raise UsageError("give a tunnel ID or --all (not both)", "see `bastionctl tunnel list`")
    stopped = stop_tunnels(None if stop_all else tunnel_id)
    click.echo(f"stopped {len(stopped)} tunnel(s){': ' + ', '.join(stopped) if stopped else ''}")


@cli.command("agent", hidden=True)
def agent_command() -> None:
    """The background process that owns detached tunnels (started by --detach)."""
    from bastionctl.agent import run_agent

    run_agent()


class _Terminated(Exception):
    pass


def _raise_terminated(_signum: int, _frame: FrameType | None) -> None:
    raise _Terminated


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
    from bastionctl.tunnels import build_spec

    if client_args and not launch:
        raise UsageError(
            f"unexpected arguments {' '.join(client_args)!r}", "client args need --launch"
        )
    config = app.config
    # Validates everything (host, service, bind) here, before any process or login.
    spec = build_spec(config, host, service_name, remote_port, local_port, bind, allow_non_loopback)
    if spec.bind not in ("127.0.0.1", "::1", "localhost"):
        _err(f"bastionctl: warning: the tunnel listens on {spec.bind}, reachable beyond loopback")
    if detach:
        from bastionctl.agent import open_detached

        summary = open_detached(
            {
                "config": str(config.path) if config.path else None,
                "host": host,
                "service": service_name,
                "remote_port": remote_port,
                "local_port": local_port,
                "bind": bind,
                "allow_non_loopback": allow_non_loopback,
            },
            ask=terminal_ask,
            notify=lambda message: _err(f"bastionctl: {message}"),
        )
        click.echo(f"Tunnel {summary['id']} open in the background: {spec.label}")
        click.echo(f"  listening on {summary['local']}")
        click.echo(f"  connect with: {summary['connection']}")
        click.echo(f"Stop it with: bastionctl tunnel stop {summary['id']}")
        client = _start_client(spec, int(summary["local_port"]), launch, rdp_file, client_args)
        if client is not None:
            raise click.exceptions.Exit(client.wait())
        return
    _run_foreground(app, spec, launch, rdp_file, client_args)


def _start_client(
    spec: TunnelSpec, port: int, launch: bool, rdp_file: Path | None, args: tuple[str, ...]
) -> subprocess.Popen[bytes] | None:
    from bastionctl import clients

    if rdp_file is not None:
        clients.write_rdp_file(rdp_file, spec, port)
        _err(f"bastionctl: wrote {rdp_file}")
    if not launch:
        return None
    command = clients.client_for(spec, port, args)
    sys.stdout.flush()
    try:
        return clients.launch(command)
    except BastionctlError as exc:
        _err(f"bastionctl: {exc}")
        return None


def _run_foreground(
    app: App, spec: TunnelSpec, launch: bool, rdp_file: Path | None, args: tuple[str, ...]
) -> None:
    from bastionctl import control
    from bastionctl.affinity import CpuKeeper
    from bastionctl.agent import TunnelHost
    from bastionctl.otp import SecretStore, UsedSteps
    from bastionctl.prompting import terminal_ask
    from bastionctl.ssh.connect import Session
    from bastionctl.ssh.manager import TunnelEvent, TunnelManager, TunnelState
    from bastionctl.tunnels import PortBook, spec_key

    def on_event(event: TunnelEvent) -> None:
        # The first "up" is the ready banner on stdout; later ones are recoveries.
        noisy = (TunnelState.CONNECTING, TunnelState.RECONNECTING, TunnelState.FAILED)
        if event.state in noisy or (event.state is TunnelState.UP and reconnected.is_set()):
            _err(f"bastionctl: {event.message}")

    reconnected = threading.Event()
    session = Session(
        settings=app.static_config.settings,
        ask=terminal_ask,
        notify=lambda message: _err(f"bastionctl: {message}"),
        secrets=SecretStore(),
        used_steps=UsedSteps(),
    )
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    manager = TunnelManager(session, on_event)
    CpuKeeper().start()  # clients it launches start unpinned (clients.launch)
    host = TunnelHost(manager, "foreground")
    server = control.ControlServer(control.sockets_dir() / f"{os.getpid()}.sock", host.handle)
    try:
        server.start()
        active = manager.open(spec)
        reconnected.set()
        # A port the user chose becomes the stable one; a collision's stand-in does not.
        PortBook().remember(spec_key(spec), active.local_port, replace=spec.local_port_fixed)
        port = active.local_port
        # Written before the banner: whoever waits for "connect with" finds the file.
        _start_client(spec, port, False, rdp_file, ())
        click.echo(f"Tunnel open: {spec.label} via {spec.bastion.alias}")
        listening = " and ".join(hostport(a, port) for a in active.forwarder.addresses())
        click.echo(
            f"  listening on {listening} -> "
            f"{spec.remote_host}:{spec.remote_port} on {spec.host.alias}"
        )
        click.echo(f"  connect with: {spec.connection_string(port)}")
        click.echo("Press Ctrl-C to close.")
        sys.stdout.flush()
        client = _start_client(spec, port, launch, None, args)
        try:
            while active.state not in (TunnelState.FAILED, TunnelState.CLOSED):
                if client is not None and client.poll() is not None:
                    # The client was the point of this tunnel: its end is ours.
                    click.echo(f"Client exited with status {client.returncode}; tunnel closed.")
                    raise click.exceptions.Exit(client.returncode)
                time.sleep(0.2)
        except (KeyboardInterrupt, _Terminated):
            pass
        if active.state is TunnelState.FAILED:
            raise ConnectError(f"tunnel {spec.label} failed: {active.last_error}")
        if active.state is TunnelState.CLOSED:
            click.echo("Tunnel stopped by `bastionctl tunnel stop`.")
        else:
            click.echo("Tunnel closed.")
    except _Terminated:
        raise KeyboardInterrupt from None
    finally:
        manager.close_all()
        server.close()
        signal.signal(signal.SIGTERM, previous)


# ---------------------------------------------------------------- otp


@cli.group()
def otp() -> None:
    """TOTP secrets for bastions, kept in the OS keyring."""


@otp.command("set")
@click.argument("bastion")
@click.pass_obj
def otp_set(app: App, bastion: str) -> None:
    """Store the TOTP secret (base32 or otpauth:// URI) read from a prompt or stdin."""
    from bastionctl.otp import SecretStore, parse_secret
    from bastionctl.prompting import read_secret_input

    alias = app.endpoint_alias(bastion)
    secret = parse_secret(read_secret_input(f"TOTP secret or otpauth:// URI for {alias}: "))
    store = SecretStore()
    store.set(alias, secret)
    click.echo(f"Stored the TOTP secret for {alias} in the keyring ({store.backend_name()}).")


@otp.command("code")
@click.argument("bastion")
@click.pass_obj
def otp_code(app: App, bastion: str) -> None:
    """Print the current TOTP code for BASTION (seconds left go to stderr)."""
    from bastionctl.errors import SecretStoreError
    from bastionctl.otp import SecretStore

    alias = app.endpoint_alias(bastion)
    secret = SecretStore().get(alias)
    if secret is None:
        raise SecretStoreError(
            f"no TOTP secret stored for {alias}", f"store it with `bastionctl otp set {alias}`"
        )
    click.echo(secret.code(secret.step()))
    _err(f"({secret.seconds_left():.0f} s left in this step)")


@otp.command("remove")
@click.argument("bastion")
@click.pass_obj
def otp_remove(app: App, bastion: str) -> None:
    """Remove the stored TOTP secret of BASTION."""
    from bastionctl.errors import SecretStoreError
    from bastionctl.otp import SecretStore

    alias = app.endpoint_alias(bastion)
    if not SecretStore().delete(alias):
        raise SecretStoreError(f"no TOTP secret stored for {alias}; nothing removed")
    click.echo(f"Removed the TOTP secret for {alias}.")


@otp.command("status")
@click.argument("bastion", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def otp_status(app: App, bastion: str | None, as_json: bool) -> None:
    """Whether a TOTP secret is stored, per bastion (never shows the secret)."""
    from bastionctl.errors import SecretStoreError
    from bastionctl.otp import SecretStore

    store = SecretStore()
    aliases = [app.endpoint_alias(bastion)] if bastion else sorted(app.config.inventory.bastions)
    rows = []
    for alias in aliases:
        try:
            stored: bool | None = store.get(alias) is not None
            problem = None
        except SecretStoreError as exc:
            stored, problem = None, exc.message
        rows.append({"bastion": alias, "stored": stored, "problem": problem})
    try:
        backend = store.backend_name()
    except Exception:  # keyring may fail to even name its backend
        backend = "unavailable"
    if as_json:
        click.echo(json.dumps({"backend": backend, "bastions": rows}, indent=2))
        return
    click.echo(f"keyring backend: {backend}")
    for row in rows:
        state = row["problem"] or (
            "secret stored" if row["stored"] else "no secret (asks for codes)"
        )
        click.echo(f"  {row['bastion']}: {state}")


# ---------------------------------------------------------------- export


def render_ssh_config(app: App, service_hosts: bool = False) -> str:
    from bastionctl.render.ssh_config import render_config

    rendered = render_config(app.config, service_hosts)
    for warning in rendered.warnings:
        _err(f"bastionctl: warning: {warning}")
    return rendered.text


@cli.command("ssh-config")
@click.option(
    "--write",
    "write_to",
    is_flag=False,
    flag_value="",
    default=None,
    metavar="[PATH]",
    help="Install as an include file (default ~/.ssh/config.d/bastionctl.conf).",
)
@click.option("--block", is_flag=True, help="Install as a managed block in ~/.ssh/config.")
@click.option("--diff", "show_diff", is_flag=True, help="Show what would change; write nothing.")
@click.option("--check", is_flag=True, help="Exit 1 when the installed config is stale.")
@click.option("--service-hosts", is_flag=True, help="Add HOST-SERVICE hosts with LocalForward.")
@click.pass_obj
def ssh_config_command(
    app: App,
    write_to: str | None,
    block: bool,
    show_diff: bool,
    check: bool,
    service_hosts: bool,
) -> None:
    """Print the ssh config for the inventory, or install it into ~/.ssh."""
    from bastionctl.render import write
    from bastionctl.render.ssh_config import control_dir

    text = render_ssh_config(app, service_hosts)
    if write_to is None and not block and not show_diff and not check:
        click.echo(text, nl=False)
        return
    target = Path(write_to).expanduser() if write_to else None
    changes = write.install_changes(text, target, block)
    stale = [c for c in changes if c.changed]
    if show_diff:
        for change in stale:
            click.echo(change.diff(), nl=False)
    if check:
        if stale:
            _err(f"bastionctl: stale: {', '.join(str(c.path) for c in stale)} (run with --write)")
            raise click.exceptions.Exit(ExitStatus.FAILURE)
        click.echo("ssh config is up to date")
    if show_diff or check:
        return
    for change, backup in write.install(changes, control_dir(app.static_config.settings)):
        if change.changed:
            click.echo(f"wrote {change.path}" + (f" (backup {backup.name})" if backup else ""))
    if not stale:
        click.echo("ssh config is up to date; nothing written")


@cli.command("bastion-hosts")
@click.option("--format", "fmt", type=click.Choice(["hosts", "dnsmasq", "zone"]), default="hosts")
@click.option("--domain", default=None, help="Zone origin (default: settings.dns_domain).")
@click.option("--ipv4", is_flag=True, help="Also IPv4 addresses (always in zones).")
@click.pass_obj
def bastion_hosts(app: App, fmt: str, domain: str | None, ipv4: bool) -> None:
    """The bastion's /etc/hosts lines, or the same records for dnsmasq or a BIND zone."""
    from bastionctl.render import hosts

    inventory = app.config.inventory
    if fmt == "hosts":
        click.echo(hosts.hosts_file(inventory, ipv4), nl=False)
    elif fmt == "dnsmasq":
        click.echo(hosts.dnsmasq(inventory, ipv4), nl=False)
    else:
        origin = domain or app.config.settings.dns_domain
        if not origin:
            raise UsageError("a zone needs a domain", "give --domain or set settings.dns_domain")
        try:
            click.echo(hosts.zone(inventory, origin), nl=False)
        except ValueError as exc:
            raise UsageError(f"--domain {origin!r}: {exc}") from None


@cli.command("askpass", hidden=True)
@click.argument("prompt", required=False, default="")
@click.pass_obj
def askpass_command(app: App, prompt: str) -> None:
    """SSH_ASKPASS helper: answers a bastion's TOTP prompt from the keyring."""
    from bastionctl.askpass import answer

    app.quiet = True  # ssh shows our stderr in the middle of its login
    reply = answer(app.config, prompt)
    if reply is None:
        raise BastionctlError(
            f"cannot answer {prompt.strip()!r}: no stored secret for it and no terminal"
        )
    click.echo(reply)


@cli.command(
    "ssh", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False}
)
@click.argument("host")
@click.argument("ssh_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def ssh_command(app: App, host: str, ssh_args: tuple[str, ...]) -> None:
    """Run the real ssh with the exported config; TOTP prompts come from the keyring."""
    import shutil

    from bastionctl.askpass import plain_ssh_environment

    inventory = app.config.inventory
    if host not in inventory.hosts and host not in inventory.bastions:
        raise UsageError(f"unknown host '{host}'", f"hosts: {', '.join(inventory.names())}")
    if shutil.which("ssh") is None:
        raise BastionctlError("the ssh client is not installed", "install openssh-client")
    config_file, env = plain_ssh_environment(
        render_ssh_config(app), app.static_config.settings, app.static_config.path
    )
    sys.stdout.flush()
    # Replaces this process: ssh owns the terminal from here; HOST is an inventory alias.
    os.execvpe("ssh", ["ssh", "-F", str(config_file), host, *ssh_args], env)  # noqa: S606


# ---------------------------------------------------------------- doctor


@cli.command()
@click.argument("host", required=False)
@click.option("--name", "names", multiple=True, help="Also check a DNS name (repeatable).")
@click.option("--deep", is_flag=True, help="Log in to the bastion and probe each host from it.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def doctor(app: App, host: str | None, names: tuple[str, ...], deep: bool, as_json: bool) -> None:
    """DNS, DNS64 and reachability checks; exit 1 when any check fails."""
    from bastionctl import doctor as checks_module
    from bastionctl.otp import SecretStore, UsedSteps
    from bastionctl.prompting import terminal_ask
    from bastionctl.ssh.connect import Session

    def session() -> Session:
        return Session(
            settings=app.static_config.settings,
            ask=terminal_ask,
            notify=lambda message: _err(f"bastionctl: {message}"),
            secrets=SecretStore(),
            used_steps=UsedSteps(),
        )

    results = checks_module.run(
        app.config, host, names, deep, secrets=SecretStore(), session_factory=session
    )
    if as_json:
        click.echo(json.dumps([c.as_dict() for c in results], indent=2))
    else:
        width = max(len(c.subject) for c in results)
        check_width = max(len(c.check) for c in results)
        for c in results:
            click.echo(
                f"{c.status.value.upper():<4}  {c.subject:<{width}}  {c.check:<{check_width}}  "
                f"{c.detail}"
            )
            if c.advice and c.status is not checks_module.Status.OK:
                click.echo(f"{'':<4}  {'':<{width}}  {'':<{check_width}}  -> {c.advice}")
    if any(c.status is checks_module.Status.FAIL for c in results):
        raise click.exceptions.Exit(ExitStatus.FAILURE)


# ---------------------------------------------------------------- lab


def _lab_spec() -> Any:
    from bastionctl.lab import LabSpec

    # One lab per name; tests run their own beside the operator's.
    name = os.environ.get("BASTIONCTL_LAB_NAME", "bcl")
    try:
        net_id = int(os.environ.get("BASTIONCTL_LAB_NET_ID", "1"))
    except ValueError:
        raise UsageError("BASTIONCTL_LAB_NET_ID must be a number from 1 to 255") from None
    root = os.environ.get("BASTIONCTL_LAB_DIR")
    default_root = Path("/var/lib/bastionctl-lab") / name
    return LabSpec(name=name, net_id=net_id, root=Path(root) if root else default_root)


@cli.group()
def lab() -> None:
    """The local 2FA lab: bastion + private hosts in network namespaces (root, Linux)."""


@lab.command("up")
@click.pass_obj
def lab_up(app: App) -> None:
    """Build the lab (idempotent) and write a config that points bastionctl at it."""
    from bastionctl import lab as lab_module
    from bastionctl import paths
    from bastionctl.atomic import write_atomic
    from bastionctl.errors import SecretStoreError
    from bastionctl.otp import SecretStore, parse_secret

    lab_module.check_prerequisites()
    info = lab_module.up(_lab_spec())
    config_file = paths.lab_config_file()
    write_atomic(config_file, lab_module.render_config(info))
    click.echo(f"Lab is up under {info.root}.")
    click.echo(f"  config: {config_file} (used when no config.toml exists)")
    try:
        SecretStore().set(info.bastion_alias, parse_secret(info.read_secret(bulk=False)))
        click.echo(f"  TOTP secret of {info.bastion_alias} stored in the keyring")
    except SecretStoreError as exc:
        click.echo(
            f"  {exc.message}: you will be asked for codes; the secret is the first line of "
            f"{info.op_secret_file} (root only)"
        )
    click.echo("Try: bastionctl hosts; bastionctl tunnel mysql server-02")


@lab.command("down")
def lab_down() -> None:
    """Stop every lab process and remove its namespaces, users and files."""
    from bastionctl import lab as lab_module
    from bastionctl import paths

    lab_module.check_prerequisites()
    for line in lab_module.down(_lab_spec()):
        click.echo(line)
    config_file = paths.lab_config_file()
    if config_file.exists():
        config_file.unlink()
        click.echo(f"removed {config_file}")


@lab.command("status")
def lab_status() -> None:
    """Show each lab component; exit 1 when the lab is not fully up."""
    from bastionctl import lab as lab_module

    state = lab_module.status(_lab_spec())
    for line in state.lines():
        click.echo(line)
    if not state.healthy:
        raise click.exceptions.Exit(ExitStatus.FAILURE)


# ---------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        result = cli.main(args=args, prog_name="bastionctl", standalone_mode=False)
        status = int(result) if isinstance(result, int) else ExitStatus.OK
    except click.exceptions.Exit as exc:
        status = exc.exit_code
    except click.UsageError as exc:
        exc.show()
        status = ExitStatus.USAGE
    except click.Abort:
        _err("bastionctl: interrupted")
        status = ExitStatus.INTERRUPTED
    except BastionctlError as exc:
        if debug:
            traceback.print_exc()
        _err(f"bastionctl: error: {exc}")
        status = exc.exit_status
    except KeyboardInterrupt:
        _err("bastionctl: interrupted")
        status = ExitStatus.INTERRUPTED
    except Exception as exc:
        if debug:
            traceback.print_exc()
        _err(
            f"bastionctl: internal error: {type(exc).__name__}: {exc} "
            "(run with --debug for the traceback and report it)"
        )
        status = ExitStatus.FAILURE
    sys.exit(status)
