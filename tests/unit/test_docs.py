"""README and the shipped example configs: self-contained, and only reserved names and
addresses in examples (nothing there reaches someone's real machine)."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest

from bastionctl.config import load_config
from bastionctl.starter import templates

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text(encoding="utf-8")
RESERVED_NETS = [
    ipaddress.ip_network(n)
    for n in (
        "2001:db8::/32", "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24",
        "127.0.0.0/8", "::1/128", "fe80::/10", "64:ff9b::/96",
    )
]  # fmt: skip
RESERVED_DOMAINS = (
    "example.com", "example.net", "example.org", ".example", ".test", ".invalid",
    "ipv4only.arpa",  # RFC 7050's name, which the DNS64 check asks for
)  # fmt: skip
# Names that are not DNS names: file names and TOML keys with a dot in examples.
NOT_DOMAINS = re.compile(
    r".*\.(toml|pem|conf|py|rdp|tcss|md|sh|json|cnf|svg|exe|whl|d|ssh)$|^\d"
    r"|^(services|hosts|bastions|settings|inventory|ec2)\."
)
DOMAIN_RE = re.compile(r"(?<![\w.@/%-])(?:[a-z0-9-]+\.)+[a-z]{2,}(?![\w-])", re.IGNORECASE)
ADDRESS_RE = re.compile(
    r"(?<![\w:.])(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9a-f]{0,4}(?::[0-9a-f]{0,4}){2,7})"
)


def examples() -> list[tuple[str, str]]:
    blocks = re.findall(r"```[a-z]*\n(.*?)```", README, re.DOTALL)
    return [("README example", b) for b in blocks] + [
        (f"templates/{name}", templates.text(name)) for name in templates.NAMES
    ]


def test_readme_points_nowhere_outside_the_repository() -> None:
    assert "../" not in README
    for word in (r"shared/", r"SPEC\.md", r"\bseed\b", r"\bseed's", r"field notes"):
        assert not re.search(word, README), word
    for target in re.findall(r"\]\(([^)]+)\)", README):
        assert not target.startswith(("/", "..")), target
        assert target.startswith(("http", "#")) or (REPO / target).exists(), target


@pytest.mark.parametrize(("where", "text"), examples(), ids=lambda v: v if len(v) < 40 else "")
def test_examples_use_reserved_names_and_addresses_only(where: str, text: str) -> None:
    for name in DOMAIN_RE.findall(text):
        lowered = name.lower().rstrip(".")
        if NOT_DOMAINS.match(lowered) or "." not in lowered:
            continue
        assert lowered.endswith(RESERVED_DOMAINS), f"{where}: {name}"
    for candidate in ADDRESS_RE.findall(text):
        try:
            address = ipaddress.ip_address(candidate.split("%")[0])
        except ValueError:
            continue
        # README's sample output of the lab shows its private (RFC 1918, ULA) subnets.
        lab_output = where.startswith("README") and address.is_private
        assert lab_output or any(address in net for net in RESERVED_NETS), f"{where}: {candidate}"


@pytest.mark.parametrize("name", templates.NAMES)
def test_each_template_is_a_valid_config(name: str, tmp_path: Path) -> None:
    path = tmp_path / name
    path.write_text(templates.text(name))
    load_config(path)
