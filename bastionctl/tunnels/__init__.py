"""The tunnel feature in one place, over the SSH mechanics of bastionctl.ssh.

    spec        a request (host, service, ports) -> TunnelSpec
    ports       remembered local ports
    manager     tunnels, shared logins, keepalive and reconnect
    protocol    the typed messages between processes
    control     the control sockets that carry them
    service     a process's tunnels served on its control socket
    agent       the per-user background process
    client      the front ends' side: open detached, answer, list, stop, log out
    attachment  the agent's side of a tunnel attached to a terminal
    attached    a foreground tunnel: the agent's, held by this terminal (shared login)
    foreground  a foreground tunnel that logs in by itself (--standalone, no agent)
    holding     what a terminal holding a tunnel does: signals, banner, launched client
    handover    a process's tunnels moved to the agent
    launch      the client programs (RDP, mysql, sqlcmd)
    affinity    CPU placement

Nothing is imported here: `tunnel list` and `--help` must not pay for paramiko.
"""
