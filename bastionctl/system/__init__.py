"""The one seam for OS differences: everything that is not the same on Linux, macOS and Windows.

    api         which facilities exist (by capability), the platform family, WSL
    files       private directories and files: owner and mode checked where those exist
    locks       file locks (fcntl, msvcrt, or a lock file)
    channel     the control channel: a Unix socket with peer credentials, or loopback TCP
                with a token challenge where there are no Unix sockets
    processes   starting the agent: fork, or a detached child
    cpu         CPU placement and scheduling policy, where the kernel offers them
    terminal    reading a secret from the terminal
    home        the user's home and ssh directory, the user id
    clients     the client programs for RDP, MySQL and SQL Server on each OS

Nothing outside this package imports fcntl, termios or pwd, or calls fork, getuid,
sched_*affinity or sched_setscheduler.
"""
