"""`bastionctl config path` and `bastionctl init`: where things live, and a first config."""

from __future__ import annotations

from pathlib import Path

import click

from bastionctl import paths
from bastionctl.cli.app import App, cli, err
from bastionctl.errors import BastionctlError, UsageError

NOT_CREATED = "(not created yet)"


def config_in_use(explicit: Path | None) -> Path:
    """The config file bastionctl reads (with none yet: the one `init` writes)."""
    target = init_target(explicit)
    if explicit is None and paths.env_config_file() is None and not target.is_file():
        lab = paths.lab_config_file()
        if lab.is_file():
            return lab
    return target


def init_target(explicit: Path | None) -> Path:
    return explicit or paths.env_config_file() or paths.default_config_file()


@cli.group("config")
def config_group() -> None:
    """Where bastionctl's files are."""


@config_group.command("path")
@click.option("--all", "show_all", is_flag=True, help="Also the cache, state, data, runtime dirs.")
@click.pass_obj
def config_path(app: App, show_all: bool) -> None:
    """Print the config file's path (the help names the default: see below)."""
    from bastionctl.system.files import runtime_dir_path

    config = config_in_use(app.config_option)
    if not show_all:
        click.echo(str(config))
        if not config.is_file():
            err(f"bastionctl: {config} does not exist yet; `bastionctl init` writes it")
        return
    rows = (
        ("config", config),
        ("cache", paths.cache_dir()),
        ("state", paths.state_dir()),
        ("data", paths.data_dir()),
        ("runtime", runtime_dir_path()),
    )
    for name, path in rows:
        click.echo(f"{name:<8} {path}{'' if path.exists() else ' ' + NOT_CREATED}")


# click reads the help from the docstring, which an f-string is not.
config_path.help = (
    "Print the config file's path: --config, else $BASTIONCTL_CONFIG, else "
    f"{paths.default_config_file()}."
)


@cli.command()
@click.option(
    "--from-ssh-config",
    "ssh_config",
    is_flag=False,
    flag_value="",
    default=None,
    metavar="[PATH]",
    help="Import every host that jumps through a bastion (default PATH: ~/.ssh/config).",
)
@click.option("--from-ec2", is_flag=True, help="Add an [[ec2]] source for the AWS profile now set.")
@click.option("--print", "to_stdout", is_flag=True, help="Print the config instead of writing it.")
@click.pass_obj
def init(app: App, ssh_config: str | None, from_ec2: bool, to_stdout: bool) -> None:
    """Write a commented starter config (never over an existing one)."""
    from bastionctl import starter
    from bastionctl.system.home import ssh_home

    target = init_target(app.config_option)
    if not to_stdout and target.exists():
        raise _exists(target)
    home = ssh_home()
    source = None
    if ssh_config is not None:
        source = Path(ssh_config).expanduser() if ssh_config else home / ".ssh" / "config"
    made = starter.build(target, ssh_config=source, ssh_home=home, from_ec2=from_ec2)
    if made.imported is not None:
        for warning in made.imported.warnings:
            err(f"bastionctl: warning: {warning}")
        err(f"bastionctl: {made.imported.summary(str(source))}")
        if not made.imported.hosts and not from_ec2:
            raise BastionctlError(
                f"nothing to import from {source}: no host there jumps through one bastion",
                "`bastionctl init` alone writes the example config to start from",
            )
    if to_stdout:
        click.echo(made.text, nl=False)
        return
    from bastionctl.atomic import write_atomic

    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        write_atomic(target, made.text, 0o600, exclusive=True)
    except FileExistsError:
        raise _exists(target) from None
    except OSError as exc:
        raise BastionctlError(f"cannot write {target}: {exc.strerror}") from None
    err(f"bastionctl: wrote {target}; `bastionctl hosts` lists its inventory")


def _exists(target: Path) -> UsageError:
    return UsageError(
        f"{target} already exists; init never replaces a config",
        "edit it, or see the starter with `bastionctl init --print`",
    )
