"""SSH on paramiko: logins, host keys, jump channels, forwarding and the data path."""

# paramiko is imported first by ssh.seam, without Invoke (see there), before any module of this
# package imports it; importing changes nothing in paramiko.
from bastionctl.ssh import seam as seam
