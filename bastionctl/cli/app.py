"""The command group, its options and what every command shares: the loaded config, stderr lines."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import click

from bastionctl import __version__, paths, sanitise
from bastionctl.config import Config, load_config, resolve_config_path
from bastionctl.errors import UsageError
from bastionctl.model import Host


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

            progress = (lambda line: err(f"bastionctl: {line}")) if self.show_progress else None
            loaded = load_inventory(
                self.static_config,
                refresh=self.refresh,
                only=self.only_sources,
                progress=progress,
            )
            if self.all_warnings:
                for warning in loaded.warnings:
                    err(f"bastionctl: warning: {warning}")
            elif loaded.warnings and not self.quiet:
                count = len(loaded.warnings)
                err(
                    f"bastionctl: warning: the inventory has {count} warning"
                    f"{'s' * (count != 1)} (bastionctl hosts shows them)"
                )
            self._config = loaded.config
        return self._config

    def host(self, alias: str) -> Host:
        from bastionctl.tunnels.spec import find_host

        try:
            return find_host(self.config, alias)
        except UsageError as exc:
            if self.config.path is None and not self.config.inventory.hosts:
                exc.hint = f"no hosts in the inventory ({config_hint(self.config)})"
            raise

    def explain_missing_config(self, exc: UsageError) -> None:
        loaded = self._config or self._static
        if loaded is None or loaded.path is not None or "bastionctl init" in str(exc):
            return
        if not loaded.inventory.hosts and not loaded.inventory.bastions:
            exc.hint = f"the inventory is empty ({config_hint(loaded)})"

    def warn_if_unconfigured(self) -> None:
        """One line for a command that would print an empty result for want of a config."""
        config = self.config
        if config.path is None and not config.inventory.hosts and not config.inventory.bastions:
            err(f"bastionctl: warning: the inventory is empty ({config_hint(config)})")

    def endpoint_alias(self, alias: str) -> str:
        inventory = self.config.inventory
        if alias in inventory.bastions or alias in inventory.hosts:
            return alias
        raise UsageError(
            f"unknown bastion '{alias}'",
            f"bastions: {', '.join(sorted(inventory.bastions)) or 'none'}"
            + ("" if inventory.bastions else f" ({config_hint(self.config)})"),
        )


def config_hint(config: Config) -> str:
    if config.path is None:
        return f"no config file: `bastionctl init` writes one to {paths.default_config_file()}"
    return f"config: {config.path}"


class Group(click.Group):
    """The command group; an unknown name with no config and nothing in the inventory says
    where the config goes and how to start one, whichever command it came from."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except UsageError as exc:
            app = ctx.obj
            if isinstance(app, App) and exc.message.startswith("unknown "):
                app.explain_missing_config(exc)
            raise


def err(message: str) -> None:
    """A line on stderr, sanitised: messages quote servers, tags and other processes."""
    click.echo(sanitise.text(message), err=True)


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def own_records(record: logging.LogRecord) -> bool:
    """bastionctl's own log records; those of libraries reach stderr only with --debug."""
    return record.name == "bastionctl" or record.name.startswith("bastionctl.")


@click.group(
    cls=Group,
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help=f"Config file (default: $BASTIONCTL_CONFIG, else {paths.default_config_file()}).",
)
@click.option("--debug", is_flag=True, help="Debug logging and tracebacks on errors.")
@click.option("-v", "--verbose", is_flag=True, help="Say what is happening.")
@click.version_option(__version__, prog_name="bastionctl")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, debug: bool, verbose: bool) -> None:
    """Inventory, ssh config and 2FA tunnels for hosts behind an SSH bastion."""
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    # paramiko logs what servers send (version lines, disconnect reasons, refusal texts).
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(sanitise.SafeFormatter(LOG_FORMAT))
    if not debug:
        # A library's records (paramiko's tracebacks from its transport thread, botocore's
        # retries) would repeat, at length, the one line the error already says.
        handler.addFilter(own_records)
    logging.basicConfig(level=level, handlers=[handler])
    if not debug:
        logging.getLogger("paramiko").setLevel(logging.WARNING)
    ctx.obj = App(config_option=config_path, debug=debug)
    if ctx.invoked_subcommand is None:
        if not (sys.stdin.isatty() and sys.stdout.isatty()):
            click.echo(ctx.get_help())
            err("bastionctl: the TUI needs a terminal; the commands above work without one")
            return
        from bastionctl.system.cpu import CpuKeeper
        from bastionctl.tui.app import create_app

        CpuKeeper().start()  # the TUI holds tunnels itself (see affinity)
        create_app(config_path).run()
