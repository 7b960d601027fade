"""`bastionctl doctor`: DNS, DNS64 and reachability checks."""

from __future__ import annotations

import json

import click

from bastionctl.cli.app import App, cli, err
from bastionctl.errors import ExitStatus


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
            notify=lambda message: err(f"bastionctl: {message}"),
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
