"""Names are a trust boundary: which alias, fqdn and bastion a tag may claim (pure mapping)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bastionctl.cli.hosts import _endpoint_row
from bastionctl.config import Config, InventorySettings, load_config, parse_config
from bastionctl.errors import ConfigError, UsageError
from bastionctl.inventory.ec2_map import Mapped
from bastionctl.inventory.load import merge
from bastionctl.model import Bastion, Host, Inventory
from bastionctl.render.hosts import hosts_file
from bastionctl.render.ssh_config import Flavour, SshOptions, render
from bastionctl.tui.rows import details, host_rows, matches
from bastionctl.tunnels.protocol import TunnelRequest
from bastionctl.tunnels.spec import build_spec, find_host
from tests.unit.test_ec2_map import bastion, instance, mapped

DOMAINS = InventorySettings(domains=("example.com", "corp.example"))
OTHER_VPC = "vpc-00000000000000001"


def the_id(record: dict[str, Any]) -> str:
    return str(record["InstanceId"])


def listed_ids(result: Mapped) -> set[str]:
    return {
        e.origin.instance_id
        for e in [*result.bastions.values(), *result.hosts.values()]
        if e.origin is not None
    }


def warnings_for(result: Mapped, record: dict[str, Any]) -> list[str]:
    return [w for w in result.warnings if the_id(record) in w]


# ------------------------------------------------------------------ dotted aliases


@pytest.mark.parametrize(
    "name",
    ["web.example.com", "WEB.Example.COM", "a.b.example.com", "db.corp.example", "plain-name"],
)
def test_a_dotted_name_under_a_configured_domain_is_an_alias(name: str) -> None:
    result = mapped(bastion(), instance(name), settings=DOMAINS)
    assert result.hosts[name].bastion == "jump"
    assert not [w for w in result.warnings if "tag Name" in w]


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("github.com", "is not a name under example.com, corp.example"),
        ("webexample.com", "is not a name under"),  # a suffix, but not on a label boundary
        ("example.com", "is not a name under"),  # the domain itself is not under it
        ("web.example.com.evil.org", "is not a name under"),
        ("web.example.com.", "is not a name under"),  # ssh would not match it as written
        ("web_1.example.com", "is not a DNS name"),
        ("web..example.com", "is not a DNS name"),
    ],
)
def test_a_dotted_name_elsewhere_refuses_its_instance(name: str, why: str) -> None:
    record = instance(name)
    result = mapped(bastion(), record, settings=DOMAINS)
    assert the_id(record) not in listed_ids(result)
    (warning,) = warnings_for(result, record)
    assert warning.startswith(f"instance {the_id(record)} (prod/eu-central-1): tag Name has a dot")
    assert why in warning and warning.endswith("; skipped")
    assert name not in warning.replace("example.com, corp.example", "")


def test_without_domains_no_dotted_name_and_no_fqdn_tag() -> None:
    dotted = instance("web.example.com")
    tagged = instance("db", tags={"fqdn": "db.example.com"})
    result = mapped(bastion(), dotted, tagged)
    assert the_id(dotted) not in listed_ids(result)
    assert "none are set" in warnings_for(result, dotted)[0]
    assert result.hosts["db"].fqdn is None
    (warning,) = warnings_for(result, tagged)
    assert "tag bastionctl:fqdn" in warning and "[inventory] domains" in warning
    assert "db.example.com" not in warning


def test_a_name_like_another_instances_id_is_refused() -> None:
    impostor = instance("i-0123456789abcdef0")
    result = mapped(bastion(), impostor, instance(None))
    assert the_id(impostor) not in listed_ids(result)
    assert "looks like the id of another instance" in warnings_for(result, impostor)[0]
    # Its own id as its Name is just its alias.
    own = instance(None)
    own["Tags"]["Name"] = the_id(own)
    assert the_id(own) in mapped(bastion(), own).hosts


# ------------------------------------------------------------------ fqdn tags


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        ("db.example.com", "db.example.com"),
        ("DB.Corp.Example.", "db.corp.example"),
        ("example.com", None),
        ("db.example.com.evil.org", None),
        ("github.com", None),
    ],
)
def test_fqdn_tags_only_under_the_domains(value: str, kept: str | None) -> None:
    record = instance("db", tags={"fqdn": value})
    result = mapped(bastion(), record, settings=DOMAINS)
    assert result.hosts["db"].fqdn == kept
    if kept is None:
        (warning,) = warnings_for(result, record)
        assert "tag bastionctl:fqdn is not a name under example.com, corp.example" in warning


def test_an_fqdn_two_instances_claim_goes_to_neither() -> None:
    first = instance("db-a", tags={"fqdn": "db.example.com", "address": "fqdn"})
    second = instance("db-b", tags={"fqdn": "db.example.com"})
    result = mapped(bastion(), first, second, settings=DOMAINS)
    a, b = result.hosts["db-a"], result.hosts["db-b"]
    assert a.fqdn is None and b.fqdn is None
    assert a.hostname == a.ipv4, "its address is not the name it lost"
    (warning,) = [w for w in result.warnings if "db.example.com" in w]
    assert the_id(first) in warning and the_id(second) in warning and "given to none" in warning
    text = hosts_file(merge(Inventory(), result, []), ipv4=True)
    assert "db.example.com" not in text
    assert "db-a" in text and "db-b" in text


def test_an_alias_that_is_another_instances_fqdn_goes_to_neither() -> None:
    named = instance("db.example.com")
    claimer = instance("other", tags={"fqdn": "db.example.com"})
    result = mapped(bastion(), named, claimer, settings=DOMAINS)
    assert "db.example.com" not in result.hosts
    renamed = result.hosts["db.example.com.eu-central-1"]
    assert renamed.origin is not None and renamed.origin.instance_id == the_id(named)
    assert result.hosts["other"].fqdn is None
    assert [w for w in result.warnings if the_id(named) in w and the_id(claimer) in w]
    # One instance's Name and fqdn may agree.
    same = mapped(
        bastion(), instance("db.example.com", tags={"fqdn": "db.example.com"}), settings=DOMAINS
    )
    assert same.hosts["db.example.com"].fqdn == "db.example.com"
    assert not same.warnings


# ------------------------------------------------------------------ generated aliases


def test_generated_aliases_take_no_name_someone_else_has() -> None:
    # `eu-central-1` as a domain makes the tag-chosen Name web.eu-central-1 legal: the
    # generated name for the Frankfurt `web` must then be another one.
    settings = InventorySettings(domains=("eu-central-1",))
    squatter = instance("WEB.eu-central-1")
    frankfurt = instance("web", region="eu-central-1")
    virginia = instance("web", region="us-east-1")
    static = Inventory(hosts={"web.us-east-1": Host(alias="web.us-east-1", user="u", ipv6="::1")})
    result = mapped(
        bastion(),
        bastion("jump-us", region="us-east-1"),
        squatter,
        frankfurt,
        virginia,
        settings=settings,
        static=static,
    )
    aliases = {h.origin.instance_id: a for a, h in result.hosts.items() if h.origin}
    assert aliases[the_id(squatter)] == "WEB.eu-central-1"
    assert aliases[the_id(frankfurt)] == f"web.{the_id(frankfurt)}"
    assert aliases[the_id(virginia)] == f"web.{the_id(virginia)}", "the config has web.us-east-1"
    lowered = [a.lower() for a in result.hosts] + [a.lower() for a in result.bastions]
    assert len(lowered) == len(set(lowered))


def test_names_differing_in_case_are_one_name() -> None:
    upper, lower = instance("Web"), instance("web")
    result = mapped(bastion(), upper, lower)
    assert "Web" not in result.hosts and "web" not in result.hosts
    assert {f"Web.{the_id(upper)}", f"web.{the_id(lower)}"} <= set(result.hosts)


# ------------------------------------------------------------------ the config's names


def test_the_configs_names_beat_every_tag() -> None:
    static = Inventory(
        {"jump": Bastion(alias="jump", user="root", ipv6="2001:db8::1")},
        {
            "db": Host(alias="db", user="dba", ipv6="2001:db8::d", bastion="jump"),
            "legacy": Host(
                alias="legacy",
                user="u",
                ipv6="2001:db8::e",
                bastion="jump",
                fqdn="legacy.example.com",
            ),
            "api.example.com": Host(alias="api.example.com", user="u", ipv6="::2", bastion="jump"),
        },
    )
    upper_db = instance("DB")
    fqdn_of_static = instance("shadow", tags={"fqdn": "legacy.example.com"})
    fqdn_is_static_alias = instance("api", tags={"fqdn": "API.example.com"})
    name_is_static_fqdn = instance("legacy.example.com")
    ec2 = mapped(
        bastion("Jump"),
        upper_db,
        fqdn_of_static,
        fqdn_is_static_alias,
        name_is_static_fqdn,
        instance("behind"),
        settings=DOMAINS,
        static=static,
    )
    assert ec2.hosts["shadow"].fqdn is None and ec2.hosts["api"].fqdn is None
    assert "config hosts.legacy" in warnings_for(ec2, fqdn_of_static)[0]
    assert "config hosts.api.example.com" in warnings_for(ec2, fqdn_is_static_alias)[0]
    assert the_id(name_is_static_fqdn) not in listed_ids(ec2)
    assert (
        "tag Name is a name config hosts.legacy uses" in warnings_for(ec2, name_is_static_fqdn)[0]
    )

    warnings: list[str] = []
    inventory = merge(static, ec2, warnings)
    # ssh matches names without case: the config's `db` and `jump` replace EC2's DB and Jump.
    assert "DB" not in inventory.hosts and inventory.hosts["db"].user == "dba"
    assert "Jump" not in inventory.bastions and inventory.bastions["jump"].user == "root"
    assert any(f"config hosts.db overrides EC2 instance {the_id(upper_db)}" in w for w in warnings)
    assert any("config bastions.jump overrides EC2 instance" in w for w in warnings)
    assert inventory.hosts["behind"].bastion == "jump", "follows the config's spelling"


# ------------------------------------------------------------------ a second bastion


def ambiguous_world(**kw: Any) -> Mapped:
    return mapped(
        bastion("jump"),
        bastion("rogue"),
        instance("app"),
        instance("pinned", tags={"bastion": "jump"}),
        **kw,
    )


def test_a_second_bastion_leaves_its_vpcs_hosts_ambiguous() -> None:
    result = ambiguous_world()
    app = result.hosts["app"]
    assert (app.bastion, app.ambiguous_bastions, app.ambiguous) == ("", ("jump", "rogue"), True)
    assert result.hosts["pinned"].bastion == "jump" and not result.hosts["pinned"].ambiguous
    (warning,) = [w for w in result.warnings if app.origin and app.origin.instance_id in w]
    assert "jump and rogue" in warning and "ambiguous" in warning

    warnings: list[str] = []
    inventory = merge(Inventory(), result, warnings)
    assert "app" in inventory.hosts and not warnings, "kept, not dropped for want of a bastion"
    rendered = render(inventory, SshOptions(), [], flavour=Flavour.POSIX)
    assert "Host app\n" not in rendered.text and "Host pinned\n" in rendered.text
    assert rendered.warnings == ["host 'app' left out: its bastion is ambiguous (jump or rogue)"]
    assert app.ipv4 and app.ipv4 not in hosts_file(inventory, ipv4=True)

    config = Config(path=None, inventory=inventory)
    for attempt in (
        lambda: find_host(config, "app"),
        lambda: build_spec(config, TunnelRequest("app", "rdp", None)),
    ):
        with pytest.raises(UsageError) as caught:
            attempt()
        assert str(caught.value).startswith("host app has an ambiguous bastion: jump or rogue;")
        assert "bastionctl:bastion" in str(caught.value)

    row = _endpoint_row(app, "host")
    assert (row["bastion"], row["ambiguous_bastions"]) == (None, ["jump", "rogue"])
    assert _endpoint_row(inventory.hosts["pinned"], "host")["ambiguous_bastions"] == []
    assert _endpoint_row(inventory.bastions["jump"], "bastion")["ambiguous_bastions"] is None

    rows = host_rows(inventory)
    assert rows[-1].alias == "app" and rows[-1].group == "ambiguous: jump|rogue"
    assert [r.alias for r in matches(rows, "ambiguous")] == ["app"]
    assert [r.alias for r in matches(host_rows(inventory, "region"), "rogue app")] == ["app"]
    assert (
        "bastion",
        "ambiguous: jump or rogue; no ssh config or tunnel until a bastion tag or "
        "the config chooses one",
    ) in details(app)


def test_the_bastion_the_config_declares_wins() -> None:
    declared = ambiguous_world(static_bastions=["jump"])
    assert declared.hosts["app"].bastion == "jump" and not declared.hosts["app"].ambiguous
    static = Inventory({"jump": Bastion(alias="jump", user="root", ipv6="2001:db8::1")})
    inventory = merge(static, ambiguous_world(static=static), [])
    assert inventory.hosts["app"].bastion == "jump"
    # A rogue copy of the declared bastion's Name in the same VPC: both EC2 instances are
    # renamed, and the hosts go to the config's own `jump` (its address from the config).
    copied = mapped(bastion("jump"), bastion("jump"), instance("app"), static=static)
    assert copied.hosts["app"].bastion == "jump" and not copied.hosts["app"].ambiguous
    assert merge(static, copied, []).bastions["jump"].user == "root"
    # One bastion in the config for every EC2 host; an instance tagged bastion elsewhere
    # changes nothing for hosts whose VPC has none.
    static = Inventory({"office": Bastion(alias="office", user="op", ipv6="2001:db8::1")})
    result = mapped(bastion("rogue", vpc=OTHER_VPC), instance("db"), static=static)
    assert result.hosts["db"].bastion == "office"


def test_a_bastion_tag_matching_two_bastions_is_ambiguous_not_dropped() -> None:
    result = mapped(bastion("jump"), bastion("jump"), instance("app", tags={"bastion": "jump"}))
    app = result.hosts["app"]
    assert app.ambiguous and len(app.ambiguous_bastions) == 2
    assert all(b.startswith("jump.i-") for b in app.ambiguous_bastions)


def test_no_bastion_in_the_vpc_and_several_elsewhere_is_ambiguous() -> None:
    result = mapped(
        bastion("jump-a", vpc="vpc-0000000000000000a"),
        bastion("jump-b", vpc="vpc-0000000000000000b"),
        instance("far", vpc=OTHER_VPC),
    )
    assert result.hosts["far"].ambiguous_bastions == ("jump-a", "jump-b")


# ------------------------------------------------------------------ config


def test_domains_in_the_config() -> None:
    config = parse_config(
        '[inventory]\ndomains = ["Example.COM.", "example.com", "corp.example"]\n', Path("c.toml")
    )
    assert config.inventory_settings.domains == ("example.com", "corp.example")
    one = parse_config('[inventory]\ndomains = "example.com"\n', Path("c.toml"))
    assert one.inventory_settings.domains == ("example.com",)
    shipped = load_config(
        Path(__file__).resolve().parents[2] / "bastionctl" / "templates" / "ec2.toml"
    )
    assert shipped.inventory_settings.domains == ("example.com",)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[inventory]\ndomains = ["exa mple.com"]\n', "inventory.domains: must be a DNS name"),
        ('[inventory]\ndomains = ["10.0.0.1"]\n', "the last label is not all digits"),
        ("[inventory]\ndomains = [1]\n", "inventory.domains: must be a string or a list"),
        ('[inventory]\ndomain = "example.com"\n', "inventory.domain: unknown key"),
    ],
)
def test_bad_domains_are_config_errors(body: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(body, Path("/etc/c.toml"))
    assert message in caught.value.message
    assert caught.value.message.startswith("/etc/c.toml:2:")
