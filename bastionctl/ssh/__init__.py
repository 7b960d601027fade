"""SSH on paramiko: logins, jump channels, forwarding."""

import sys

# paramiko.config imports Invoke, only for `Match exec` in ssh config files, which bastionctl
# never has paramiko read. Invoke and what it pulls in (asyncio, yaml, unittest.mock) were
# half of paramiko's import time, on the path of every cold tunnel; without it paramiko
# raises its own ImportError only if `Match exec` were ever evaluated.
sys.modules.setdefault("invoke", None)  # type: ignore[arg-type]
