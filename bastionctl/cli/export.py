"""Plain OpenSSH: `ssh-config`, `bastion-hosts`, `ssh` and the `askpass` helper."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from bastionctl import sanitise
from bastionctl.cli.app import App, cli, err
from bastionctl.errors import BastionctlError, ExitStatus, UsageError


def render_ssh_config(app: App, service_hosts: bool = False) -> str:
    from bastionctl.render.ssh_config import render_config

    app.warn_if_unconfigured()
    rendered = render_config(app.config, service_hosts)
    for warning in rendered.warnings:
        err(f"bastionctl: warning: {warning}")
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
            err(f"bastionctl: stale: {', '.join(str(c.path) for c in stale)} (run with --write)")
            raise click.exceptions.Exit(ExitStatus.FAILURE)
        click.echo("ssh config is up to date")
    if show_diff or check:
        return
    for change, backup in write.install(changes, control_dir(app.static_config.settings)):
        if change.changed:
            click.echo(f"wrote {change.path}" + (f" (backup {backup})" if backup else ""))
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

    app.warn_if_unconfigured()
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
            f"cannot answer {sanitise.line(prompt, 200)!r}: it is no TOTP prompt with a stored "
            "secret, and there is no terminal to ask"
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
    from bastionctl.system import api

    inventory = app.config.inventory
    if host not in inventory.hosts and host not in inventory.bastions:
        raise UsageError(f"unknown host '{host}'", f"hosts: {', '.join(inventory.names())}")
    if host in inventory.hosts:
        app.host(host)  # refuses a host with an ambiguous bastion: it has no ssh config block
    if shutil.which("ssh") is None:
        raise BastionctlError("the ssh client is not installed", "install openssh-client")
    config_file, env = plain_ssh_environment(
        render_ssh_config(app), app.static_config.settings, app.static_config.path
    )
    argv = ["ssh", "-F", str(config_file), host, *ssh_args]  # HOST is an inventory alias
    sys.stdout.flush()
    if api.family() == "windows":
        # Windows has no exec: os.execvpe starts ssh and ends this process, and the shell
        # would take the console back while ssh still runs. So wait for ssh, whose exit
        # status is ours; a Ctrl-C reaches ssh too (same console), which decides.
        import subprocess

        child = subprocess.Popen(argv, env=env)
        while True:
            try:
                status = child.wait()
                break
            except KeyboardInterrupt:
                continue
        raise click.exceptions.Exit(status)
    # Replaces this process: ssh owns the terminal from here.
    os.execvpe("ssh", argv, env)  # noqa: S606
