"""The lab's links and addresses: host <-> bastion (public), bastion <-> hosts (private)."""

from __future__ import annotations

from . import system
from .spec import TARGETS, LabSpec


def create_network(spec: LabSpec) -> None:
    run = system.run
    b = spec.bastion_ns
    run("ip", "netns", "add", b)
    for target in TARGETS:
        run("ip", "netns", "add", spec.target_ns(target))
    for ns in (b, *(spec.target_ns(t) for t in TARGETS)):
        run("ip", "-n", ns, "link", "set", "lo", "up")
    # Public side: host <-> bastion, IPv6 and IPv4.
    run("ip", "link", "add", spec.host_veth, "type", "veth", "peer", "name", "eth0", "netns", b)
    # Fault tests take this link down and up; without this its IPv6 address would be gone.
    run("sysctl", "-q", "-w", f"net.ipv6.conf.{spec.host_veth}.keep_addr_on_down=1")
    run("ip", "addr", "add", f"{spec.public6(1)}/64", "dev", spec.host_veth, "nodad")
    run("ip", "addr", "add", f"{spec.public4(1)}/24", "dev", spec.host_veth)
    run("ip", "link", "set", spec.host_veth, "up")
    run("ip", "-n", b, "addr", "add", f"{spec.public6(2)}/64", "dev", "eth0", "nodad")
    run("ip", "-n", b, "addr", "add", f"{spec.public4(2)}/24", "dev", "eth0")
    run("ip", "-n", b, "link", "set", "eth0", "up")
    # The bastion is not a router: the private subnet is reachable only through SSH.
    run("sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=0", ns=b)
    run("sysctl", "-q", "-w", "net.ipv4.ip_forward=0", ns=b)
    # Private side: a bridge in the bastion, one veth per private host, IPv6 only.
    run("ip", "-n", b, "link", "add", "br0", "type", "bridge")
    run("ip", "-n", b, "addr", "add", f"{spec.private6(1)}/64", "dev", "br0", "nodad")
    run("ip", "-n", b, "link", "set", "br0", "up")
    for target in TARGETS:
        ns, port = spec.target_ns(target), f"p{target.index}"
        run("ip", "-n", b, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
        run("ip", "-n", b, "link", "set", port, "master", "br0", "up")
        run(
            "ip",
            "-n",
            ns,
            "addr",
            "add",
            f"{spec.private6(target.index)}/64",
            "dev",
            "eth0",
            "nodad",
        )
        run("ip", "-n", ns, "link", "set", "eth0", "up")
    # The host has no way into the private subnet, and nothing for it leaves the machine.
    # The connected /64 of the public link is more specific and wins while the link is up;
    # when a test takes it down, lab traffic hits these instead of the default route.
    run("ip", "-6", "route", "add", "unreachable", spec.fence6)
    run("ip", "-4", "route", "add", "unreachable", spec.fence4, "metric", "4242")
