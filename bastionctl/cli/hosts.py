"""`bastionctl hosts`: the inventory as a table or JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import click

from bastionctl.cli.app import App, cli, config_hint, err
from bastionctl.model import Bastion, Host


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
        err(f"the inventory is empty ({config_hint(app.config)})")
        return
    for row in rows:
        if row["ambiguous_bastions"]:
            row["bastion"] = f"ambiguous: {' or '.join(row['ambiguous_bastions'])}"
    print_table(
        ("alias", "role", "platform", "ipv6", "ipv4", "bastion", "services", "region"), rows
    )


def print_table(columns: Sequence[str], rows: list[dict[str, Any]]) -> None:
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
        # A host with an ambiguous bastion has none (null) and its candidates here; [] for
        # every other host, null for bastions.
        "bastion": (endpoint.bastion or None) if isinstance(endpoint, Host) else None,
        "ambiguous_bastions": (
            list(endpoint.ambiguous_bastions) if isinstance(endpoint, Host) else None
        ),
        "services": list(getattr(endpoint, "services", ())),
        "source": origin.source if origin else "static",
        "region": origin.region if origin else None,
        "vpc_id": origin.vpc_id if origin else None,
        "instance_id": origin.instance_id if origin else None,
        "account": origin.account if origin else None,
        "platform_details": origin.platform_details if origin else None,
    }
