"""The command line: parses, calls the core, prints. Heavy modules are imported late.

One module per command group (hosts, tunnel, otp, export, doctor, lab) registers its commands
on the group in `app`; `main` turns every error into one line on stderr and an exit status.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence

import click

from bastionctl.cli import doctor, export, hosts, known_hosts, lab, otp, setup, tunnel
from bastionctl.cli.app import cli, err
from bastionctl.errors import BastionctlError, ExitStatus

__all__ = [
    "cli",
    "doctor",
    "export",
    "hosts",
    "known_hosts",
    "lab",
    "main",
    "otp",
    "setup",
    "tunnel",
]

# bastionctl.askpass.ASKPASS_ENV (that module loads paramiko, so it is not imported here).
ASKPASS_ENV = "BASTIONCTL_ASKPASS"


def askpass_args(args: list[str]) -> list[str]:
    """Run as ssh's SSH_ASKPASS program (Windows: ssh runs a program, not a script): with
    BASTIONCTL_ASKPASS=1 and exactly one argument that is not an option, that argument is
    the prompt and this is `bastionctl askpass PROMPT`; anything else is the normal CLI."""
    if os.environ.get(ASKPASS_ENV) == "1" and len(args) == 1 and not args[0].startswith("-"):
        return ["askpass", "--", args[0]]
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = askpass_args(list(sys.argv[1:] if argv is None else argv))
    debug = "--debug" in args
    try:
        result = cli.main(args=args, prog_name="bastionctl", standalone_mode=False)
        status = int(result) if isinstance(result, int) else ExitStatus.OK
    except click.exceptions.Exit as exc:
        status = exc.exit_code
    except click.UsageError as exc:
        exc.show()
        status = ExitStatus.USAGE
    except click.Abort:
        err("bastionctl: interrupted")
        status = ExitStatus.INTERRUPTED
    except BastionctlError as exc:
        if debug:
            err(traceback.format_exc().rstrip())
        err(f"bastionctl: error: {exc}")
        status = exc.exit_status
    except KeyboardInterrupt:
        err("bastionctl: interrupted")
        status = ExitStatus.INTERRUPTED
    except Exception as exc:
        if debug:
            err(traceback.format_exc().rstrip())  # sanitised: it may quote a server
        err(
            f"bastionctl: internal error: {type(exc).__name__}: {exc} "
            "(run with --debug for the traceback and report it)"
        )
        status = ExitStatus.FAILURE
    sys.exit(status)
