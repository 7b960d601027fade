"""A host key no known_hosts file lists: shown to the person, who may accept it.

Only first contact is ever asked about: a key EC2 attests (pinned by `known-hosts sync`) or
one known otherwise is simply known; a key that differs from a known or pinned one, or one
revoked, is refused without a question (hostkeys.KnownHosts.verify). The question names the
host, the address its key is listed under, the path (via which bastion), the key's type and
SHA256 fingerprint and what EC2 says of it. Only `yes` or the fingerprint itself accepts; the
key is then pinned as `accepted` in the managed known_hosts file. Any other answer, or nobody
to ask (no terminal, an agent whose front end has left), refuses in one line.

The question ends "(yes/no/[fingerprint])? " as OpenSSH's does, so no askpass or TOTP logic
ever answers it with a code (otp.is_yes_no_question).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import paramiko

from bastionctl import paths, sanitise
from bastionctl.errors import AuthError, HostKeyError, LoginCancelled, NeedsInput
from bastionctl.model import Bastion, Endpoint, hostport
from bastionctl.ssh import pinned
from bastionctl.ssh.hostkeys import (
    KnownHosts,
    UnknownHostKey,
    fingerprint,
    host_key_names,
    parse_line,
)

log = logging.getLogger(__name__)

QUESTION_END = "(yes/no/[fingerprint])? "


def check(
    known: KnownHosts,
    endpoint: Endpoint,
    key: paramiko.PKey,
    via: Bastion | None,
    ask: Callable[[str, bool], str],
    notify: Callable[[str], None],
) -> None:
    """Return when `key` is known or the person accepts it here; raise HostKeyError else."""
    names = host_key_names(endpoint)
    try:
        known.verify(endpoint.alias, names, key, endpoint.known_hosts_name)
        return
    except UnknownHostKey as unknown:
        refusal = HostKeyError(unknown.message, _unknown_hint(endpoint, via, unknown.hint))
    question = _question(endpoint, names[0], key, via)
    try:
        answer = ask(question, True)
    except NeedsInput:
        raise refusal from None  # an agent whose front end has gone: nobody to ask
    except LoginCancelled:
        answer = ""
    except AuthError:
        raise refusal from None  # no terminal
    shown = fingerprint(key)
    if answer.strip() not in ("yes", shown):
        # The answer is not repeated: it may be a code or a password typed in the wrong place.
        raise HostKeyError(
            f"the host key {shown} of {endpoint.alias} was not accepted (only `yes` or the "
            "fingerprint accepts it); refusing to connect"
        )
    managed = paths.managed_known_hosts()
    name = names[0]
    kind, data = key.get_name(), key.get_base64()
    pin = pinned.pin(
        name,
        kind,
        data,
        pinned.ACCEPTED,
        pinned.now_utc(),
        alias=endpoint.alias,
        via=via.alias if via is not None else None,
    )
    pinned.add(pin, managed)
    entry = parse_line(f"{name} {kind} {data}", managed, 0, (pinned.ACCEPTED, pin.at or "-"))
    if entry is not None:
        known.add(entry)
    log.info("host key %s of %s accepted and pinned in %s", shown, endpoint.alias, managed)
    notify(f"accepted the host key {shown} of {endpoint.alias}; pinned in {managed}")
    if managed not in known.files:
        notify(
            f"the config's known_hosts does not list {managed}: the next run asks again; "
            "add it to [settings] known_hosts"
        )


def _question(endpoint: Endpoint, name: str, key: paramiko.PKey, via: Bastion | None) -> str:
    alias = sanitise.line(endpoint.alias)
    if via is None:
        path = "direct (no bastion)"
    else:
        path = f"via bastion {sanitise.line(via.alias)} ({hostport(via.connect_host, via.port)})"
    lines = [
        f"{alias} offers a host key no known_hosts file lists.",
        f"  host:         {alias}",
        f"  address:      {sanitise.line(name)}",
        f"  path:         {path}",
        f"  key type:     {key.get_name()}",
        f"  fingerprint:  {fingerprint(key)}",
        f"  EC2 attests:  {_attestation(endpoint)}",
        "Compare the fingerprint with one you trust before accepting it: only",
        "`yes` or the fingerprint itself accepts it, anything else refuses.",
        f"Accept and pin this key {QUESTION_END}",
    ]
    return "\n".join(lines)


def _attestation(endpoint: Endpoint) -> str:
    if endpoint.origin is None:
        return "no (not an EC2 instance of the inventory)"
    return "no key of it yet (`bastionctl known-hosts sync` reads it)"


def _unknown_hint(endpoint: Endpoint, via: Bastion | None, keyscan: str | None) -> str:
    """What to do about an unknown key: EC2's console output for an instance, ssh-keyscan
    only for a bastion reached directly, else the question on a terminal."""
    ask = "or run this on a terminal (or the TUI) to check and accept it"
    if endpoint.origin is not None:
        return (
            "`bastionctl known-hosts sync` pins the keys EC2 attests for it from its console "
            f"output, {ask}"
        )
    if via is None and keyscan:
        return keyscan
    return f"verify its fingerprint with its administrator, {ask}"
