"""The TUI application: host list, details, tunnel panel and session log over the core API.

Everything that touches the network or the disk (inventory, logins, tunnel lists of other
processes, stopping tunnels) runs in worker threads; results come back as messages or through
`call_from_thread`, so the screen never freezes.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, RichLog

from bastionctl import sanitise
from bastionctl.config import Config, load_config, resolve_config_path
from bastionctl.errors import BastionctlError, LoginCancelled
from bastionctl.model import Bastion, Host
from bastionctl.otp import SecretStore, UsedSteps, is_yes_no_question
from bastionctl.paths import default_config_file
from bastionctl.prompting import origin_of
from bastionctl.sanitise import SafeFormatter
from bastionctl.tui.help_screen import HelpScreen
from bastionctl.tui.host_details import HostDetails
from bastionctl.tui.host_key_dialog import HostKeyDialog
from bastionctl.tui.host_table import HostTable
from bastionctl.tui.input_dialog import InputDialog
from bastionctl.tui.otp_screen import OtpScreen
from bastionctl.tui.quit_dialog import QuitDialog
from bastionctl.tui.report_screen import ReportScreen
from bastionctl.tui.rows import GROUPINGS, HostRow, host_rows, matches
from bastionctl.tui.totp_dialog import STEP, TotpDialog
from bastionctl.tui.tunnel_panel import TunnelPanel
from bastionctl.tunnels.manager import TunnelManager
from bastionctl.tunnels.protocol import (
    TunnelEvent,
    TunnelId,
    TunnelInfo,
    TunnelRequest,
    TunnelState,
)

if TYPE_CHECKING:
    from bastionctl.render.write import Change
    from bastionctl.ssh.connect import Session
    from bastionctl.tunnels.control import ControlServer
    from bastionctl.tunnels.launch import ClientCommand

OTHERS_INTERVAL = 2.0
LOG_DRAIN_INTERVAL = 0.2
# Seconds the cursor must rest on a host before its DNS is looked up.
DNS_SETTLE = 0.3


class PanelLogHandler(logging.Handler):
    """Log records (paramiko's too) go to the session log panel, never over the screen;
    sanitised, as paramiko logs what servers send."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.pending: deque[str] = deque(maxlen=1000)
        self.setFormatter(SafeFormatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.pending.append(self.format(record))
        except Exception:  # a broken record must not break the caller
            self.handleError(record)


class TunnelChanged(Message):
    def __init__(self, event: TunnelEvent) -> None:
        super().__init__()
        self.event = event


class BastionApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "bastionctl"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "filter", "Filter", key_display="/"),
        Binding("g", "group", "Group by bastion / region / role", show=False),
        Binding("r", "tunnel('rdp')", "RDP tunnel"),
        Binding("m", "tunnel('mysql')", "MySQL tunnel"),
        Binding("s", "tunnel('mssql')", "SQL Server tunnel"),
        Binding("p", "port_tunnel", "Tunnel to a port", show=False),
        Binding("x", "stop", "Stop tunnel"),
        Binding("a", "answer", "Answer a waiting login", show=False),
        Binding("c", "copy", "Copy connection string", show=False),
        Binding("o", "launch", "Launch client", show=False),
        Binding("f5", "refresh", "Refresh inventory", show=False),
        Binding("e", "export", "Export ssh config"),
        Binding("b", "bastion_hosts", "Bastion hosts entries", show=False),
        Binding("d", "doctor", "Doctor", show=False),
        Binding("t", "otp", "TOTP secrets", show=False),
        Binding("l", "toggle_log", "Session log", show=False),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("q", "quit_app", "Quit"),
    ]

    def __init__(
        self,
        config_path: Path | None = None,
        *,
        secrets: SecretStore | None = None,
        used_steps: UsedSteps | None = None,
        clock: Callable[[], float] = time.time,
        watch_others: bool = True,
        check_dns: bool = True,
    ) -> None:
        super().__init__()
        self.config_path = config_path
        self.secrets = secrets if secrets is not None else SecretStore()
        self.used_steps = used_steps if used_steps is not None else UsedSteps()
        self.clock = clock
        self.watch_others = watch_others
        self.dns_checks = check_dns
        self.config: Config | None = None
        self.manager: TunnelManager | None = None
        self.rows: list[HostRow] = []
        self.group_by = GROUPINGS[0]
        self._dns: tuple[Any, Any] | None = None
        self.others: list[TunnelInfo] = []
        # This process's control socket, once it has a manager (see serve_control).
        self.control: ControlServer | None = None
        self.log_handler = PanelLogHandler()
        self._saved_handlers: list[logging.Handler] = []
        # The bastion whose login may show the TOTP dialog (for "this step's code is used").
        self._asking_for: str | None = None

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        """The command palette (ctrl+p) offers every key's action by name, too."""
        yield from super().get_system_commands(screen)
        for binding in self.BINDINGS:
            if isinstance(binding, Binding):
                yield SystemCommand(
                    binding.description,
                    f"key: {binding.key_display or binding.key}",
                    partial(self.run_action, binding.action),
                )

    # ------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(placeholder="filter hosts (/)", id="filter")
        with Horizontal(id="top"):
            yield HostTable(id="hosts")
            yield HostDetails("loading the inventory…", id="details")
        with Vertical(id="bottom"):
            yield TunnelPanel(id="tunnels")
            yield RichLog(id="log", wrap=True, markup=False)
        yield Footer()

    def on_mount(self) -> None:
        root = logging.getLogger()
        self._saved_handlers = root.handlers[:]
        root.handlers = [self.log_handler]
        self.set_interval(LOG_DRAIN_INTERVAL, self.drain_log)
        self.query_one(HostTable).focus()
        self.load_inventory(refresh=False)
        self.set_interval(1.0, self.show_tunnels)
        if self.watch_others:
            self.set_interval(OTHERS_INTERVAL, self.fetch_others)

    def on_unmount(self) -> None:
        # However the app ends (q, ctrl+q, an error), its own tunnels end with it.
        if self.control is not None:
            self.control.close()
        if self.manager is not None:
            self.manager.close_all()
        logging.getLogger().handlers = self._saved_handlers

    def drain_log(self) -> None:
        while self.log_handler.pending:
            self.log_line(self.log_handler.pending.popleft())

    def log_line(self, text: str) -> None:
        """A line in the session log: plain, sanitised text (it may quote a server)."""
        stamp = time.strftime("%H:%M:%S", time.localtime(self.clock()))
        for log in self.query(RichLog):
            log.write(Text(f"{stamp} {sanitise.line(text, sanitise.LOG_LIMIT)}"))

    def say(self, text: str, severity: str = "information") -> None:
        """A notification, and the same line in the session log: plain text, never markup."""
        self.log_line(text)
        self.notify(sanitise.line(text), severity=severity, markup=False)  # type: ignore[arg-type]

    # ------------------------------------------------------------ inventory

    @work(thread=True, exclusive=True, group="inventory")
    def load_inventory(self, refresh: bool) -> None:
        from bastionctl.inventory.load import load_inventory

        try:
            config = load_config(resolve_config_path(self.config_path))
            loaded = load_inventory(
                config,
                refresh=refresh,
                progress=self.log_handler.pending.append,
            )
        except BastionctlError as exc:
            self.call_from_thread(self.say, str(exc), "error")
            return
        self.call_from_thread(self.inventory_loaded, loaded.config, loaded.warnings)

    def inventory_loaded(self, config: Config, warnings: list[str]) -> None:
        self.config = config
        self._dns = None
        if self.manager is None:
            self.manager = TunnelManager(self.tunnel_event_from_thread, process="tui")
            if self.watch_others:
                self.serve_control(self.manager)
        for warning in warnings:
            self.log_line(f"warning: {warning}")
        if warnings:
            self.notify(
                f"the inventory has {len(warnings)} warnings (see the log: l)",
                severity="warning",
                markup=False,
            )
        if not config.inventory.hosts and not config.inventory.bastions:
            if config.path:
                where = f"config {config.path}"
            else:
                where = f"no config file: `bastionctl init` writes one to {default_config_file()}"
            self.say(f"the inventory is empty ({where})", "warning")
        self.rows = host_rows(config.inventory, self.group_by)
        self.apply_filter(self.filter_text())
        hosts = len(config.inventory.hosts)
        self.sub_title = f"{hosts} hosts, {len(config.inventory.bastions)} bastions"

    def filter_text(self) -> str:
        return next((i.value for i in self.query("#filter").results(Input)), "")

    def apply_filter(self, text: str) -> None:
        for table in self.query(HostTable):
            table.show(matches(self.rows, text), self.group_by)

    @on(Input.Changed, "#filter")
    def filter_changed(self, event: Input.Changed) -> None:
        self.apply_filter(event.value)

    @on(Input.Submitted, "#filter")
    def filter_done(self) -> None:
        self.query_one(HostTable).focus()

    def on_host_table_highlighted(self, message: HostTable.Highlighted) -> None:
        self.show_details(message.alias)

    def endpoint(self, alias: str | None) -> Bastion | Host | None:
        if self.config is None or alias is None:
            return None
        inventory = self.config.inventory
        return inventory.hosts.get(alias) or inventory.bastions.get(alias)

    def show_details(self, alias: str | None) -> None:
        endpoint = self.endpoint(alias)
        # Messages can still arrive while the app is shutting down and its widgets are gone.
        for details in self.query(HostDetails):
            details.show(endpoint, dns_pending=self.dns_checks)
        if self.dns_checks and endpoint is not None and endpoint.fqdn:
            self.check_dns(endpoint)

    @work(thread=True, exclusive=True, group="dns")
    def check_dns(self, endpoint: Bastion | Host) -> None:
        """The doctor's DNS checks for the selected host, once the cursor rests on it."""
        from textual.worker import get_current_worker

        from bastionctl import doctor
        from bastionctl.dns import Resolver, discover_dns64

        time.sleep(DNS_SETTLE)
        if get_current_worker().is_cancelled or self.config is None:
            return
        settings = self.config.settings
        if self._dns is None:
            resolver = Resolver(list(settings.dns_servers), timeout=settings.dns_timeout)
            self._dns = (resolver, discover_dns64(resolver))
        resolver, view = self._dns
        checks = doctor.endpoint_dns(endpoint, resolver, view)
        summary = "; ".join(f"{c.check} {c.status.value}: {c.detail}" for c in checks)
        if not get_current_worker().is_cancelled:
            self.call_from_thread(self.dns_checked, endpoint.alias, summary)

    def dns_checked(self, alias: str, summary: str) -> None:
        for details in self.query(HostDetails):
            details.show_dns(alias, summary)

    # ------------------------------------------------------------ tunnels

    def ask_from_thread(self, prompt: str, echo: bool) -> str:
        """Session.ask for a login in a worker thread: the TOTP dialog, waited for. It names
        the server that asks (a prompting.Question says which)."""
        answer: Future[str | None] = Future()
        origin = origin_of(prompt)
        asking_for = origin.host if origin is not None else self._asking_for

        def step_used() -> bool:
            last = self.used_steps.last(asking_for) if asking_for else None
            return last is not None and last == int(self.clock()) // STEP

        def show() -> None:
            if origin is None and is_yes_no_question(prompt):  # ssh.first_contact's question
                self.push_screen(HostKeyDialog(prompt), callback=answer.set_result)
                return
            self.push_screen(
                TotpDialog(prompt, echo, self.clock, step_used, origin),
                callback=answer.set_result,
            )

        self.call_from_thread(show)
        text = answer.result()
        if text is None:
            raise LoginCancelled("login cancelled at the TOTP prompt")
        return text

    def selected_host(self) -> str | None:
        alias = self.query_one(HostTable).selected_alias()
        if self.config is None or alias is None:
            self.say("no host selected", "warning")
            return None
        return alias

    def action_tunnel(self, service: str) -> None:
        alias = self.selected_host()
        if alias is not None:
            self.open_tunnel(alias, service)

    def action_port_tunnel(self) -> None:
        alias = self.selected_host()
        if alias is None:
            return

        def check(text: str) -> str | None:
            ok = text.strip().isdigit() and 1 <= int(text) <= 65535
            return None if ok else "a port number from 1 to 65535"

        def opened(text: str | None) -> None:
            if text is not None:
                self.open_tunnel(alias, None, int(text))

        self.push_screen(
            InputDialog(f"Remote port on {alias}", placeholder="e.g. 5432", check=check), opened
        )

    @work(thread=True, exclusive=True, group="control")
    def serve_control(self, manager: TunnelManager) -> None:
        """`tunnel list` and `tunnel stop` in other terminals see this window's tunnels too."""
        from bastionctl.tunnels import control
        from bastionctl.tunnels.service import TunnelService

        server = control.ControlServer(
            control.process_socket(manager.pid), TunnelService(manager).handle
        )
        try:
            server.start()
        except (OSError, BastionctlError) as exc:
            self.call_from_thread(self.log_line, f"no control socket for other terminals: {exc}")
            return
        self.control = server

    def session(self) -> Session:
        """This window's login context: prompts come to the TOTP dialog."""
        from bastionctl.ssh.connect import Session

        assert self.config is not None
        return Session(
            settings=self.config.settings,
            ask=self.ask_from_thread,
            # Called from login threads and tunnel supervisors alike: queue, never block.
            notify=self.log_handler.pending.append,
            secrets=self.secrets,
            used_steps=self.used_steps,
        )

    @work(thread=True, group="tunnels")
    def open_tunnel(self, alias: str, service: str | None, remote_port: int | None = None) -> None:
        from bastionctl.tunnels.spec import build_spec

        assert self.config is not None and self.manager is not None
        try:
            spec = build_spec(self.config, TunnelRequest(alias, service, remote_port))
            self._asking_for = spec.bastion.alias
            self.call_from_thread(
                self.log_line, f"opening {spec.label} through {spec.bastion.alias}"
            )
            tunnel = self.manager.open(spec, self.session())
        except LoginCancelled as exc:
            self.call_from_thread(self.say, exc.message, "warning")
            return
        except BastionctlError as exc:
            self.call_from_thread(self.say, str(exc), "error")
            return
        from bastionctl.tunnels.holding import check_rdp_certificate

        def warn(line: str) -> None:
            self.call_from_thread(self.say, line.removeprefix("bastionctl: "), "warning")

        try:
            checked = check_rdp_certificate(spec, tunnel.local_port, warn)
        except BastionctlError as exc:  # not the certificate EC2 attests: nobody connects
            self.manager.close(tunnel.id)
            self.call_from_thread(self.say, str(exc), "error")
            return
        connection = spec.connection_string(tunnel.local_port)
        said = f"; {checked}" if checked is not None else ""
        self.call_from_thread(self.say, f"{spec.label} is up: {connection}{said}")

    def tunnel_event_from_thread(self, event: TunnelEvent) -> None:
        self.post_message(TunnelChanged(event))

    def on_tunnel_changed(self, message: TunnelChanged) -> None:
        event = message.event
        self.log_line(f"tunnel {event.tunnel} {event.state.value}: {event.message}")
        self.show_tunnels()

    def own_tunnels(self) -> list[TunnelInfo]:
        if self.manager is None:
            return []
        return [tunnel.info() for tunnel in self.manager.list()]

    def show_tunnels(self) -> None:
        for panel in self.query(TunnelPanel):
            panel.show(self.own_tunnels() + self.others, self.clock())

    @work(thread=True, exclusive=True, group="others")
    def fetch_others(self) -> None:
        from bastionctl.tunnels.client import all_tunnels

        own = self.manager.pid if self.manager is not None else None
        try:
            others = [t for t in all_tunnels() if t.id.pid != own]
        except BastionctlError as exc:
            self.call_from_thread(self.log_line, f"cannot list other tunnels: {exc}")
            return
        self.call_from_thread(setattr, self, "others", others)

    def action_stop(self) -> None:
        selected = self.query_one(TunnelPanel).selected_id()
        if selected is None:
            self.say("no tunnel selected", "warning")
            return
        self.stop_tunnel(selected)

    @work(thread=True, group="tunnels")
    def stop_tunnel(self, tunnel_id: TunnelId) -> None:
        try:
            if self.manager is not None and tunnel_id.pid == self.manager.pid:
                self.manager.close(tunnel_id)
            else:
                from bastionctl.tunnels.client import stop_tunnels

                stop_tunnels(tunnel_id)
                self.fetch_others()
        except BastionctlError as exc:
            self.call_from_thread(self.say, f"cannot stop {tunnel_id}: {exc}", "error")
            return
        self.call_from_thread(self.log_line, f"stopped tunnel {tunnel_id}")

    def selected_tunnel(self) -> TunnelInfo | None:
        selected = self.query_one(TunnelPanel).selected_id()
        found = next((t for t in self.own_tunnels() + self.others if t.id == selected), None)
        if found is None:
            self.say("no tunnel selected", "warning")
        return found

    def action_answer(self) -> None:
        tunnel = self.selected_tunnel()
        if tunnel is None:
            return
        if tunnel.state is not TunnelState.NEEDS_INPUT:
            self.say(f"tunnel {tunnel.id} is {tunnel.state.value}: it waits for no answer")
            return
        self.answer_tunnel(tunnel.id)

    @work(thread=True, group="tunnels")
    def answer_tunnel(self, tunnel_id: TunnelId) -> None:
        """The agent's waiting login asks here (the TOTP dialog); this window answers it."""
        from bastionctl.tunnels.client import answer_tunnel

        try:
            info = answer_tunnel(
                tunnel_id,
                ask=self.ask_from_thread,
                notify=lambda text: self.call_from_thread(self.log_line, text),
            )
        except BastionctlError as exc:
            self.call_from_thread(self.say, f"tunnel {tunnel_id}: {exc}", "error")
            return
        self.call_from_thread(self.say, f"tunnel {info.id} is {info.state.value}")
        self.fetch_others()

    def action_copy(self) -> None:
        tunnel = self.selected_tunnel()
        if tunnel is not None:
            # OSC 52: the terminal puts it on the clipboard, over ssh too.
            self.copy_to_clipboard(tunnel.connection)
            self.say(f"copied {tunnel.connection}")

    def action_launch(self) -> None:
        tunnel = self.selected_tunnel()
        if tunnel is not None:
            self.launch_client(tunnel)

    @work(thread=True, group="clients")
    def launch_client(self, tunnel: TunnelInfo) -> None:
        from bastionctl.tunnels import launch

        host = self.endpoint(tunnel.host)  # the Windows user a .rdp file names (macOS)
        windows = isinstance(host, Host) and host.platform == "windows"
        username = host.user if windows and host is not None else None
        try:
            command = launch.ready_command(
                tunnel.service, tunnel.bind, tunnel.local_port, tunnel.host, username
            )
            if command.terminal:
                launch.check_installed(command)
                self.call_from_thread(self.run_in_terminal, command, tunnel.connection)
                return
            process = launch.launch(command)
        except BastionctlError as exc:
            self.call_from_thread(self.say, str(exc), "error")
            return
        except OSError as exc:
            self.call_from_thread(self.say, f"cannot start the client: {exc}", "error")
            return
        note = launch.wsl_note(tunnel.bind, tunnel.local_port)
        if note is not None:
            self.call_from_thread(self.log_line, note)
        if not command.hands_off:
            self.call_from_thread(self.say, f"started {command.argv[0]} for {tunnel.host}")
            return
        # macOS `open` returns once the client has it: its status says whether that worked.
        launched = launch.Launched(command, process, launch.client_name(tunnel.service))
        status = launch.wait_handoff(launched)
        message = f"{launch.handoff_message(launched, status)} for {tunnel.host}"
        self.call_from_thread(self.say, message, "error" if status else "information")

    def run_in_terminal(self, command: ClientCommand, connection: str) -> None:
        """A terminal client (mysql, sqlcmd) gets the terminal until it exits; then we resume."""
        import subprocess

        from textual.app import SuspendNotSupported

        from bastionctl.system.cpu import unpinned

        try:
            with self.suspend(), unpinned():
                status = subprocess.run(command.argv, check=False).returncode
        except SuspendNotSupported:
            self.say(
                f"{command.argv[0]} needs this terminal, which cannot be handed over here; "
                f"connect with: {connection}",
                "warning",
            )
            return
        self.log_line(f"{command.argv[0]} exited with status {status}")

    # ------------------------------------------------------------ other actions

    @work(thread=True, exclusive=True, group="export")
    def action_export(self) -> None:
        from bastionctl.render.ssh_config import render_config
        from bastionctl.render.write import install_changes

        if self.config is None:
            return
        try:
            rendered = render_config(self.config)
            changes = install_changes(rendered.text)
        except BastionctlError as exc:
            self.call_from_thread(self.say, str(exc), "error")
            return
        stale = [c for c in changes if c.changed]
        if not stale:
            self.call_from_thread(self.say, "the exported ssh config is up to date")
            return
        diff = "".join(c.diff() for c in stale)

        def answered(write: bool | None) -> None:
            if write:
                self.write_export(changes)

        self.call_from_thread(
            self.push_screen,
            ReportScreen("Export ssh config: this would change", diff, confirm="write it"),
            answered,
        )

    @work(thread=True, exclusive=True, group="export")
    def write_export(self, changes: list[Change]) -> None:
        from bastionctl.render import write
        from bastionctl.render.ssh_config import control_dir

        assert self.config is not None
        try:
            for change, backup in write.install(changes, control_dir(self.config.settings)):
                if change.changed:
                    note = f" (backup {backup.name})" if backup else ""
                    self.call_from_thread(self.say, f"wrote {change.path}{note}")
        except BastionctlError as exc:
            self.call_from_thread(self.say, str(exc), "error")

    def action_bastion_hosts(self) -> None:
        from bastionctl.render import hosts

        if self.config is None:
            return
        text = hosts.hosts_file(self.config.inventory)
        self.push_screen(ReportScreen("/etc/hosts entries for the bastion", text))

    @work(thread=True, exclusive=True, group="doctor")
    def action_doctor(self) -> None:
        from bastionctl import doctor

        if self.config is None:
            return
        self.call_from_thread(self.log_line, "doctor: running checks")
        alias = self.call_from_thread(self.query_one(HostTable).selected_alias)
        host = alias if alias in self.config.inventory.hosts else None
        try:
            checks = doctor.run(self.config, host, [], False, secrets=self.secrets)
        except BastionctlError as exc:
            self.call_from_thread(self.say, str(exc), "error")
            return
        lines = [
            f"{c.status.value:<5} {c.subject:<12} {c.check:<28} {c.detail}"
            + (f"\n{'':<47}-> {c.advice}" if c.advice else "")
            for c in checks
        ]
        title = f"Doctor: {host or 'all bastions'}"
        self.call_from_thread(self.push_screen, ReportScreen(title, "\n".join(lines)))

    def action_otp(self) -> None:
        if self.config is not None:
            self.push_screen(OtpScreen(sorted(self.config.inventory.bastions), self.secrets))

    def action_group(self) -> None:
        self.group_by = GROUPINGS[(GROUPINGS.index(self.group_by) + 1) % len(GROUPINGS)]
        if self.config is not None:
            self.rows = host_rows(self.config.inventory, self.group_by)
            self.apply_filter(self.filter_text())
        self.log_line(f"grouped by {self.group_by}")

    def action_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def action_refresh(self) -> None:
        self.log_line("refreshing the inventory")
        self.load_inventory(refresh=True)

    def action_toggle_log(self) -> None:
        log = self.query_one(RichLog)
        log.display = not log.display

    def action_help(self) -> None:
        self.push_screen(HelpScreen(list(self.BINDINGS)))

    def action_quit_app(self) -> None:
        up = self.own_tunnels()
        if not up:
            self.exit()
            return

        def answered(choice: str | None) -> None:
            if choice == "stop":
                self.close_and_exit()
            elif choice == "detach":
                self.detach_and_exit()

        self.push_screen(QuitDialog(len(up)), callback=answered)

    @work(thread=True, group="tunnels")
    def close_and_exit(self) -> None:
        if self.manager is not None:
            self.manager.close_all()
        self.call_from_thread(self.exit)

    @work(thread=True, group="tunnels")
    def detach_and_exit(self) -> None:
        """Each tunnel closes here and reopens in the agent on its port; then the TUI ends."""
        from bastionctl.tunnels.handover import hand_over

        assert self.manager is not None and self.config is not None
        failed = 0
        moves = hand_over(
            self.manager,
            self.config.path,
            ask=self.ask_from_thread,
            notify=lambda text: self.call_from_thread(self.log_line, text),
        )
        for moved in moves:
            if moved.tunnel is None:
                failed += 1
                self.call_from_thread(
                    self.say, f"{moved.label} could not move: {moved.error}", "error"
                )
                continue
            self.call_from_thread(self.log_line, f"{moved.label} now runs as {moved.tunnel.id}")
        if failed:
            self.call_from_thread(self.say, f"{failed} tunnel(s) are closed; not quitting", "error")
            return
        self.call_from_thread(self.exit)


def create_app(config_path: Path | None = None, **options: Any) -> BastionApp:
    """The one way to build the app: the entry point and every test use it."""
    return BastionApp(config_path, **options)
