"""The project as a user installs it: a wheel built from the checkout, installed into a fresh
virtualenv by an unprivileged user (nobody, when the tests run as root), run from there.

Offline: the wheel is built without build isolation (hatchling comes with the test extras) and
installed without its dependencies, which the new virtualenv finds in the project's .venv
through a .pth file (the project's own editable install there is not followed: .pth files are
read only in site directories)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def scratch() -> Iterator[tuple[Path, list[str]]]:
    """A directory the unprivileged user owns, and the argv prefix that runs as that user."""
    path = Path(tempfile.mkdtemp(prefix="bastionctl-install-"))
    path.chmod(0o755)
    prefix: list[str] = []
    if os.getuid() == 0:
        import pwd

        nobody = pwd.getpwnam("nobody")
        os.chown(path, nobody.pw_uid, nobody.pw_gid)
        prefix = [
            "setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups"
        ]  # fmt: skip
    try:
        yield path, prefix
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.slow
def test_a_wheel_installs_and_runs_as_an_unprivileged_user(
    scratch: tuple[Path, list[str]],
) -> None:
    root, as_user = scratch
    home = root / "home"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}

    def run(*argv: str | Path) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*as_user, *map(str, argv)],
            capture_output=True, text=True, env=env, cwd=root, timeout=300,
        )  # fmt: skip
        assert result.returncode == 0, f"{argv}: {result.stderr}"
        return result

    if run("id", "-u").stdout.strip() == "0":
        pytest.fail("the install must run as an unprivileged user")
    if subprocess.run([*as_user, "test", "-r", str(REPO / "pyproject.toml")]).returncode:
        pytest.skip(f"the unprivileged user cannot read {REPO} (scripts/test tests a copy)")
    run("mkdir", "-m", "700", home)
    python = sys.executable
    run(python, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
        "--no-cache-dir", "-q", "-w", root / "dist", REPO)  # fmt: skip
    [wheel] = (root / "dist").glob("bastionctl-*.whl")
    venv = root / "venv"
    run(python, "-m", "venv", "--without-pip", venv)
    site = Path(
        run(venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))")
        .stdout.strip()
    )  # fmt: skip
    deps = sysconfig.get_path("purelib")  # the project .venv's, where the dependencies are
    run("sh", "-c", f'echo "{deps}" > "{site}/project-deps.pth"')
    run(python, "-m", "pip", "--python", venv / "bin" / "python", "install", "--no-deps",
        "--no-index", "--no-cache-dir", "-q", wheel)  # fmt: skip

    where = run(venv / "bin" / "python", "-c", "import bastionctl; print(bastionctl.__file__)")
    assert Path(where.stdout.strip()).is_relative_to(site)
    bastionctl = venv / "bin" / "bastionctl"
    default = home / ".config" / "bastionctl" / "config.toml"
    assert f"else{default})." in "".join(run(bastionctl, "--help").stdout.split())
    shown = run(bastionctl, "config", "path")
    assert shown.stdout == f"{default}\n"
    # The example config is package data: it comes with the wheel, not from the checkout.
    printed = run(bastionctl, "init", "--print").stdout
    assert "[bastions.server-01]" in printed and "example.com" in printed
    run(bastionctl, "init")
    listed = json.loads(run(bastionctl, "hosts", "--json").stdout)
    assert [row["alias"] for row in listed] == ["server-01", "server-02", "server-03"]
