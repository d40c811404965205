"""Run the server under test as a child process pinned to one core; observe it via /proc.

The server is started exactly as an operator would start it (`evflex serve`), on
loopback ports picked here, with a fresh database. It is told to die with this
process (PR_SET_PDEATHSIG) so an interrupted benchmark leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

HOST = "127.0.0.1"
_PR_SET_PDEATHSIG = 1


def free_port(host: str = HOST) -> int:
    """A port the kernel considers free right now (bound to 0, read, released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of `pid`, from /proc/<pid>/stat, in seconds."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        # the command name (field 2) may contain spaces: split after its ')'
        fields = f.read().rsplit(b")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def system_busy_seconds() -> float:
    """CPU time all cores spent not idle since boot (/proc/stat), in seconds.

    Minus the server's and the loader's own CPU, this is what everything else on
    the machine (other processes, kernel softirq work) took during a window.
    """
    with open("/proc/stat", "rb") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    """Resident set size of `pid` (VmRSS), in bytes."""
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


# Read once, at import: after the loader pins itself, its own affinity no longer
# tells which cores the machine has (and a child would inherit the loader's core).
_MACHINE_CPUS = frozenset(os.sched_getaffinity(0))


def usable_cpus() -> frozenset[int]:
    """The cores this process could use before any pinning."""
    return _MACHINE_CPUS


def pin_self(cpu: int | None) -> bool:
    """Pin this process to `cpu` when that core exists; returns whether it did."""
    if cpu is None or cpu not in usable_cpus():
        return False
    os.sched_setaffinity(0, {cpu})
    return True


def _child_setup(cpu: int | None) -> Callable[[], None]:
    def setup() -> None:
        # runs in the child between fork and exec: only async-signal-safe work
        # unpinned still means "every core", not the loader's core it would inherit
        os.sched_setaffinity(0, {cpu} if cpu is not None else _MACHINE_CPUS)
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)

    return setup


def spawn_pinned(
    cmd: list[str], cpu: int | None, log_path: Path, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start `cmd` pinned to `cpu`, output to `log_path`, killed if this process dies."""
    # a plain fork+exec: quick enough to do on the event loop before any load runs
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            preexec_fn=_child_setup(cpu),
            env=_server_env(),
        )


def _server_env() -> dict[str, str]:
    """The core scenarios measure the OCPP path, so telemetry provisioning (issue 4's
    GetConfiguration/monitoring calls after every boot) is off unless the caller's
    environment sets EVFLEX_TELEMETRY_PROVISIONING; benchmarks/telemetry_provisioning.py
    measures provisioning itself."""
    env = dict(os.environ)
    env.setdefault("EVFLEX_TELEMETRY_PROVISIONING", "false")
    return env


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> int:
    """SIGTERM, then SIGKILL after `timeout_s`; returns the exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def evflex_command(*args: str) -> list[str]:
    """`evflex ARGS...` with this interpreter, so the benchmark uses its own venv."""
    return [sys.executable, "-m", "evflex", *args]


@contextlib.asynccontextmanager
async def fresh_database(url: str) -> AsyncIterator[str]:
    """`url` itself for SQLite (the caller makes a fresh file); for PostgreSQL, the URL
    of a new, empty database created next to the one `url` names, dropped afterwards.

    A run must not find an earlier run's rows: the server would resume that run's
    grid services (they are saved to be resumed after a restart) and meet its
    stations' history. Needs the CREATEDB privilege on that server.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        yield url
        return
    name = f"{parsed.database or 'evflex'}_bench_{secrets.token_hex(4)}"
    admin = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    await _pg_execute(admin, f'CREATE DATABASE "{name}"')
    try:
        yield parsed.set(database=name).render_as_string(hide_password=False)
    finally:
        # FORCE (PostgreSQL 13+): a server that outlived its stop must not keep it
        await _pg_execute(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _pg_execute(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@dataclass
class ServerOptions:
    db: str | None = None  # None: a fresh SQLite file in the work directory
    cpu: int | None = 0
    startup_timeout_s: float = 60.0


class EvflexServer:
    """One `evflex serve` child: ports, admin token, CPU and memory readings."""

    def __init__(self, options: ServerOptions, workdir: Path) -> None:
        self.options = options
        self.workdir = workdir
        self.db = options.db or f"sqlite+aiosqlite:///{workdir / 'bench.db'}"
        self.ocpp_port = free_port()
        self.http_port = free_port()
        while self.http_port == self.ocpp_port:
            self.http_port = free_port()
        self.log_path = workdir / "server.log"
        self.token = ""
        self.pinned = options.cpu is not None and options.cpu in usable_cpus()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("server not started")
        return self._proc.pid

    @property
    def ws_prefix(self) -> str:
        return f"ws://{HOST}:{self.ocpp_port}/ocpp/"

    @property
    def http_base(self) -> str:
        return f"http://{HOST}:{self.http_port}"

    async def start(self) -> None:
        """Create the admin token, start the server, wait until both ports accept."""
        self.token = await self._create_token()
        cmd = evflex_command(
            "serve",
            "--host",
            HOST,
            "--ocpp-port",
            str(self.ocpp_port),
            "--http-port",
            str(self.http_port),
            "--db",
            self.db,
        )
        self._proc = self._spawn(cmd)
        await self._wait_ready()

    def _spawn(self, cmd: list[str]) -> subprocess.Popen[bytes]:
        # cwd = the work directory: a developer's ./evflex.toml must not leak in
        return spawn_pinned(
            cmd, self.options.cpu if self.pinned else None, self.log_path, self.workdir
        )

    async def _create_token(self) -> str:
        proc = await asyncio.create_subprocess_exec(
            *evflex_command("token", "create", "--role", "admin", "--db", self.db),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=self.workdir,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), self.options.startup_timeout_s)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise RuntimeError("`evflex token create` timed out") from None
        lines = out.decode().strip().splitlines()
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"`evflex token create` failed:\n{err.decode()[-2000:]}")
        return lines[-1].strip()

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.options.startup_timeout_s
        for port in (self.ocpp_port, self.http_port):
            while True:
                if self._proc is not None and self._proc.poll() is not None:
                    raise RuntimeError("evflex serve exited early")  # the caller appends the log
                if time.monotonic() > deadline:
                    raise RuntimeError("evflex serve not ready in time")
                try:
                    _, writer = await asyncio.open_connection(HOST, port)
                except OSError:
                    await asyncio.sleep(0.05)
                    continue
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
                break

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def rss_bytes(self) -> int:
        return rss_bytes(self.pid)

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout_s`; returns the exit status.

        With EVFLEX_BENCH_KEEP_LOGS=DIR the server's log is copied into DIR (the
        work directory itself is temporary).
        """
        proc, self._proc = self._proc, None
        status = None if proc is None else stop_process(proc, timeout_s)
        keep = os.environ.get("EVFLEX_BENCH_KEEP_LOGS")
        if keep:
            with contextlib.suppress(OSError):
                Path(keep).mkdir(parents=True, exist_ok=True)
                shutil.copy(self.log_path, Path(keep) / f"server-{self.ocpp_port}.log")
        return status
