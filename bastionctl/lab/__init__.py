"""The local lab: a 2FA OpenSSH bastion and private hosts in network namespaces."""

from .build import LabStatus, check_prerequisites, down, status, up
from .daemons import restart_target_sshd, start_sshd, stop_sshd
from .info import HostInfo, LabInfo, render_config
from .spec import LabSpec

__all__ = [
    "HostInfo",
    "LabInfo",
    "LabSpec",
    "LabStatus",
    "check_prerequisites",
    "down",
    "render_config",
    "restart_target_sshd",
    "start_sshd",
    "status",
    "stop_sshd",
    "up",
]
