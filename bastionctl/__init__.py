"""bastionctl: EC2 inventory, ssh config and managed 2FA tunnels through an SSH bastion."""

__version__ = "0.1.0"
