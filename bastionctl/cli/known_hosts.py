"""`bastionctl known-hosts`: host keys pinned from EC2's console output, listed, forgotten."""

from __future__ import annotations

import json
from typing import Any

import click

from bastionctl.cli.app import App, cli, err
from bastionctl.errors import ExitStatus, UsageError


@cli.group("known-hosts")
def known_hosts() -> None:
    """Host keys: pinned from EC2's console output, accepted, or in your known_hosts."""


@known_hosts.command("sync")
@click.option(
    "--source",
    "sources",
    multiple=True,
    metavar="NAME",
    help="Only the instances of this [[ec2]] source (repeatable).",
)
@click.pass_obj
def sync(app: App, sources: tuple[str, ...]) -> None:
    """Pin the host keys each running EC2 instance printed to its console (cloud-init)."""
    from bastionctl.known_hosts_sync import sync as run_sync

    app.only_sources = sources or None
    app.show_progress = True
    config = app.config
    report = run_sync(
        config, only=app.only_sources, progress=lambda line: err(f"bastionctl: {line}")
    )
    for outcome in sorted(report.outcomes, key=lambda o: o.alias):
        click.echo(f"{outcome.alias} ({outcome.instance_id}): {outcome.message}")
    for warning in report.warnings:
        err(f"bastionctl: warning: {warning}")
    if not report.outcomes:
        err("bastionctl: no EC2 instance in the inventory; nothing to sync")
        return
    counts = {s: report.count(s) for s in ("pinned", "no-block", "refused", "failed")}
    written = f"{report.path}" if report.changed else f"{report.path} (unchanged)"
    click.echo(
        f"{counts['pinned']} pinned, {counts['no-block']} without a key block, "
        f"{counts['refused']} refused, {counts['failed']} failed: {written}"
    )
    if report.rdp_path is not None:
        count = report.rdp_recorded
        click.echo(f"{count} RDP certificate thumbprint{'s' * (count != 1)}: {report.rdp_path}")
    if counts["refused"] or counts["failed"]:
        raise click.exceptions.Exit(ExitStatus.FAILURE)


def _rows(app: App) -> list[dict[str, Any]]:
    from bastionctl import paths
    from bastionctl.ssh import pinned
    from bastionctl.ssh.hostkeys import KnownHosts, fingerprint, host_key_names

    config = app.config
    managed = paths.managed_known_hosts()
    pins = pinned.read(managed)
    own = KnownHosts([p for p in config.settings.known_hosts if p != managed])
    inventory = config.inventory
    rows: list[dict[str, Any]] = []
    claimed: set[int] = set()
    for endpoint in [*inventory.bastions.values(), *inventory.hosts.values()]:
        names = host_key_names(endpoint)
        lowered = {n.lower() for n in names}
        for index, pin in enumerate(pins):
            if pin.name.lower() in lowered:
                claimed.add(index)
                rows.append(_row(endpoint.alias, pin.name, pin.key_type, pin.sha256, pin))
        for entry in own.entries:
            if not entry.revoked and any(entry.matches(n) for n in names):
                kind = entry.key.get_name()
                rows.append(
                    {
                        "alias": endpoint.alias,
                        "address": names[0],
                        "key_type": kind,
                        "fingerprint": fingerprint(entry.key),
                        "origin": str(entry.path),
                        "pinned_at": None,
                        "instance_id": None,
                    }
                )
    for index, pin in enumerate(pins):
        if index not in claimed:
            rows.append(_row(None, pin.name, pin.key_type, pin.sha256, pin))
    rows += _rdp_rows(app)
    rows.sort(key=lambda r: (r["alias"] or "~", r["address"], r["key_type"]))
    return rows


def _rdp_rows(app: App) -> list[dict[str, Any]]:
    """The RDP certificate thumbprints EC2 attests, under the instance's alias and address."""
    from bastionctl.rdp import attested
    from bastionctl.ssh.hostkeys import host_key_names

    inventory = app.config.inventory
    by_instance = {
        e.origin.instance_id: e
        for e in [*inventory.bastions.values(), *inventory.hosts.values()]
        if e.origin is not None
    }
    rows = []
    for entry in attested.read():
        endpoint = by_instance.get(entry.instance_id)
        rows.append(
            {
                "alias": endpoint.alias if endpoint else None,
                "address": host_key_names(endpoint)[0] if endpoint else entry.alias,
                "key_type": "rdp-certificate",
                "fingerprint": f"SHA1:{entry.thumbprint}",
                "origin": "ec2-console",
                "pinned_at": entry.at,
                "instance_id": entry.instance_id,
            }
        )
    return rows


def _row(alias: str | None, name: str, kind: str, sha: str, pin: Any) -> dict[str, Any]:
    return {
        "alias": alias,
        "address": name,
        "key_type": kind,
        "fingerprint": sha,
        "origin": pin.origin,
        "pinned_at": pin.at,
        "instance_id": pin.detail("instance"),
    }


@known_hosts.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_obj
def list_(app: App, as_json: bool) -> None:
    """The host keys of the inventory's hosts and where each comes from."""
    from bastionctl.cli.hosts import print_table

    rows = _rows(app)
    if as_json:
        click.echo(json.dumps(rows, indent=2, sort_keys=True))
        return
    if not rows:
        err("bastionctl: no host key is known for any host (`bastionctl known-hosts sync`)")
        return
    shown = [{**r, "alias": r["alias"] or "-", "pinned": r["pinned_at"]} for r in rows]
    print_table(("alias", "address", "key_type", "fingerprint", "origin", "pinned"), shown)


@known_hosts.command("forget")
@click.argument("host")
@click.pass_obj
def forget(app: App, host: str) -> None:
    """Drop the keys bastionctl pinned for HOST (an alias, or the name they are listed under),
    and the RDP certificate thumbprint recorded for its instance."""
    from bastionctl.rdp import attested
    from bastionctl.ssh import pinned
    from bastionctl.ssh.hostkeys import host_key_names

    inventory = app.config.inventory
    endpoint = inventory.bastions.get(host) or inventory.hosts.get(host)
    names = host_key_names(endpoint) if endpoint is not None else [host]
    lowered = {n.lower() for n in names}
    with pinned.locked() as managed:
        pins = pinned.read(managed)
        kept = [p for p in pins if p.name.lower() not in lowered]
        if len(kept) != len(pins):
            pinned.write(kept, managed)
    certificates = attested.forget(endpoint, host)
    dropped = len(pins) - len(kept)
    if not dropped and not certificates:
        raise UsageError(
            f"no key is pinned for {host} ({', '.join(names)}) in {managed}",
            "`bastionctl known-hosts list` shows what is pinned and where",
        )
    said = [f"{dropped} key{'s' * (dropped != 1)}"] if dropped else []
    if certificates:
        said.append("its RDP certificate thumbprint")
    click.echo(f"Forgot {' and '.join(said)} pinned for {host} ({', '.join(names)}).")
