"""Where bastionctl keeps config, cache, state and runtime files (platformdirs + overrides)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import platformdirs

APP = "bastionctl"
CONFIG_ENV = "BASTIONCTL_CONFIG"


def config_dir() -> Path:
    return Path(platformdirs.user_config_dir(APP))


def default_config_file() -> Path:
    return config_dir() / "config.toml"


def lab_config_file() -> Path:
    """The config `bastionctl lab up` writes; used when no other config exists."""
    return config_dir() / "lab.toml"


def ssh_include_file() -> Path:
    """Where `ssh-config --write` installs the generated config by default."""
    return Path.home() / ".ssh" / "config.d" / "bastionctl.conf"


def cache_dir() -> Path:
    return Path(platformdirs.user_cache_dir(APP))


def state_dir() -> Path:
    return Path(platformdirs.user_state_dir(APP))


def runtime_dir() -> Path:
    # Without XDG_RUNTIME_DIR (a headless root shell, cron) platformdirs falls back to
    # /tmp/runtime-UID and warns on stderr each time; the fallback is fine (made 0700 where used).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Path(platformdirs.user_runtime_dir(APP))


def env_config_file() -> Path | None:
    value = os.environ.get(CONFIG_ENV)
    return Path(value).expanduser() if value else None


def private_dir(path: Path) -> Path:
    """Create `path` (and parents) and make it readable by its owner only."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path
