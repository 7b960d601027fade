"""`bastionctl otp`: TOTP secrets in the keyring."""

from __future__ import annotations

import json

import click

from bastionctl.cli.app import App, cli, err


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
    err(f"({secret.seconds_left():.0f} s left in this step)")


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
    failure = store.readable()
    for alias in aliases:
        try:
            stored: bool | None = store.get(alias) is not None
            problem = None
        except SecretStoreError as exc:
            stored, problem = None, exc.message
            failure = failure or exc
        rows.append({"bastion": alias, "stored": stored, "problem": problem})
    try:
        backend = store.backend_name()
    except Exception:  # keyring may fail to even name its backend
        backend = "unavailable"
    if as_json:
        click.echo(json.dumps({"backend": backend, "bastions": rows}, indent=2))
    else:
        click.echo(f"keyring backend: {backend}")
        for row in rows:
            state = row["problem"] or (
                "secret stored" if row["stored"] else "no secret (asks for codes)"
            )
            click.echo(f"  {row['bastion']}: {state}")
    if failure is not None:
        raise failure
