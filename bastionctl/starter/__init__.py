"""`bastionctl init`: a starter config from the shipped example, the user's ssh config or the
AWS set-up, checked by the config's own parser before anything is written."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bastionctl.config import parse_config
from bastionctl.starter import templates
from bastionctl.starter.from_ssh import Imported, Importer
from bastionctl.starter.sshconf import SshConfig
from bastionctl.starter.toml import table, tables

__all__ = ["Imported", "Starter", "build"]


@dataclass(frozen=True)
class Starter:
    text: str
    imported: Imported | None = None


def build(
    target: Path,
    *,
    ssh_config: Path | None = None,
    ssh_home: Path | None = None,
    from_ec2: bool = False,
    local_user: str | None = None,
) -> Starter:
    """The config text for `target`; the shipped example when nothing is imported."""
    if ssh_config is None and not from_ec2:
        text = templates.text(templates.EXAMPLE)
        parse_config(text, target)
        return Starter(text)
    imported: Imported | None = None
    made_from = []
    parts = []
    if ssh_config is not None:
        home = ssh_home or Path.home()
        imported = Importer(SshConfig(ssh_config, home), target, local_user).run()
        made_from.append(f"--from-ssh-config {ssh_config}")
    ec2_source = None
    if from_ec2:
        from bastionctl.starter.ec2 import current_source

        ec2_source = current_source()
        made_from.append("--from-ec2")
    parts.append(
        f"# bastionctl config, written by `bastionctl init {' '.join(made_from)}`.\n"
        "# Unknown keys are errors, so a typo is caught; `bastionctl hosts` lists the inventory.\n"
    )
    parts.append(templates.section(templates.EXAMPLE, "settings"))
    if ec2_source is not None:
        inventory = templates.section(templates.EC2, "inventory")
        # The example's domain is not yours: tags may name things under none until you say.
        parts.append(inventory.replace("\ndomains = ", "\n# domains = "))
        parts.append(
            "# The AWS profile and region of the shell `init` ran in (add regions, filters).\n"
            + table("[[ec2]]", ec2_source)
        )
    if imported is not None:
        if imported.bastions:
            parts.append(tables({"bastions": imported.bastions}))
        if imported.hosts:
            parts.append(tables({"hosts": imported.hosts}))
    text = "\n".join(parts)
    parse_config(text, target)
    return Starter(text, imported)
