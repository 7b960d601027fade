"""`bastionctl lab`: the local 2FA lab."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from bastionctl.cli.app import App, cli
from bastionctl.errors import ExitStatus, UsageError


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
    from bastionctl.system import api

    # Before anything of the lab is imported: it is made of Linux namespaces and accounts.
    if api.family() != "linux":
        raise UsageError(
            "the lab needs Linux (network namespaces); bastionctl itself works here",
            "run the lab on a Linux machine or VM",
        )


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
