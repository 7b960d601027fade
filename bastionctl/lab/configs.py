"""The text of the lab's server-side files: sshd configs, PAM service, TOTP files, hosts."""

from __future__ import annotations

from pathlib import Path

from .spec import BASTION, DOMAIN, TARGETS, LabSpec

PAM_SERVICE = """\
# bastionctl lab: key first (sshd), then the TOTP code; no nullok, no password.
auth    required  pam_google_authenticator.so
account required  pam_unix.so
session required  pam_unix.so
"""


def totp_file(secret: str, defaults: bool) -> str:
    """A ~/.google_authenticator file; `defaults` = the tool's recommended answers."""
    options = ['" WINDOW_SIZE 3', '" TOTP_AUTH']
    if defaults:
        options = ['" RATE_LIMIT 3 30', '" WINDOW_SIZE 3', '" DISALLOW_REUSE', '" TOTP_AUTH']
    return "\n".join([secret, *options]) + "\n"


def bastion_sshd(spec: LabSpec, host_key: Path, keys_dir: Path) -> str:
    permit = []
    for target in TARGETS:
        permit += [
            f"[{spec.private6(target.index)}]:22",
            f"{target.alias}.{DOMAIN}:22",
            f"{target.alias}:22",
        ]
    listen = []
    for port in (22, 2222):
        listen += [
            f"ListenAddress [{spec.public6(2)}]:{port}",
            f"ListenAddress {spec.public4(2)}:{port}",
        ]
    return "\n".join(
        [
            f"# bastionctl lab: {BASTION}, the 2FA bastion",
            *listen,
            f"HostKey {host_key}",
            "PidFile none",
            f"AuthorizedKeysFile {keys_dir}/%u",
            "AuthenticationMethods publickey,keyboard-interactive",
            "PubkeyAuthentication yes",
            "KbdInteractiveAuthentication yes",
            "PasswordAuthentication no",
            "PermitRootLogin no",
            "UsePAM yes",
            "LoginGraceTime 60",
            "MaxStartups 100",
            "AllowTcpForwarding local",
            "AllowAgentForwarding no",
            "X11Forwarding no",
            f"PermitOpen {' '.join(permit)}",
            f"AllowUsers {spec.op_user} {spec.bulk_user}",
            "LogLevel VERBOSE",
            "# The reverse order, for clients that must handle both.",
            "Match LocalPort 2222",
            "    AuthenticationMethods keyboard-interactive,publickey",
            "",
        ]
    )


def target_sshd(spec: LabSpec, index: int, host_key: Path, keys_dir: Path) -> str:
    bastion = spec.private6(1)
    return "\n".join(
        [
            "# bastionctl lab: a private host, keys only, from the bastion only",
            f"ListenAddress [{spec.private6(index)}]:22",
            f"HostKey {host_key}",
            "PidFile none",
            f"AuthorizedKeysFile {keys_dir}/%u",
            "AuthenticationMethods publickey",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin no",
            "UsePAM no",
            "AllowTcpForwarding local",
            "AllowAgentForwarding no",
            "X11Forwarding no",
            f"AllowUsers {spec.op_user}@{bastion} {spec.bulk_user}@{bastion}",
            "LogLevel VERBOSE",
            "",
        ]
    )


def bastion_hosts_file(spec: LabSpec) -> str:
    lines = [
        "127.0.0.1 localhost",
        "::1 localhost ip6-localhost ip6-loopback",
        f"{spec.public6(2)} {BASTION}.{DOMAIN} {BASTION}",
    ]
    lines += [f"{spec.private6(t.index)} {t.alias}.{DOMAIN} {t.alias}" for t in TARGETS]
    return "\n".join(lines) + "\n"


def xrdp_ini(cert: Path, key: Path, log: Path) -> str:
    text = Path("/etc/xrdp/xrdp.ini").read_text()
    out = []
    section = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            section = stripped
        if section == "[Globals]":
            if stripped.startswith("port="):
                line = "port=tcp://127.0.0.1:3389"
            elif stripped.startswith("fork="):
                line = "fork=false"
            elif stripped.startswith("certificate="):
                line = f"certificate={cert}"
            elif stripped.startswith("key_file="):
                line = f"key_file={key}"
            elif stripped.startswith("security_layer="):
                line = "security_layer=negotiate"
        if section == "[Logging]" and stripped.startswith("LogFile="):
            line = f"LogFile={log}"
        out.append(line)
    return "\n".join(out) + "\n"
