"""The daemon as a real process for tests: `python -m scheduler run`, a real unix datagram socket as
$NOTIFY_SOCKET, its log in a file, and its ledger read back from its SQLite state store."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[2]


def daemon_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("JACKPOT_", "NOTIFY_", "WATCHDOG_", "RUNTIME_DIRECTORY", "STATE_DIRECTORY"))}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def write_config(path: Path, database_url: str, state_path: Path, extra: str = "") -> Path:
    path.write_text(f'[database]\nurl = "{database_url}"\n\n[state]\nurl = "sqlite:///{state_path}"\n\n{extra}\n')
    return path


class DaemonProcess:
    """One daemon: start(), wait_for_notify(), runs(), signal(), wait() and log()."""

    def __init__(self, workdir: Path, config: Path, host: str, *, watchdog_usec: int = 1_000_000,
                 extra_env: dict[str, str] | None = None):
        self.workdir = workdir
        self.config = config
        self.host = host
        self.runtime = workdir / f"run-{host}"
        self.runtime.mkdir(exist_ok=True)
        self.notify_path = workdir / f"notify-{host}.sock"
        self.logfile = workdir / f"daemon-{host}.log"
        self.env = daemon_env(NOTIFY_SOCKET=str(self.notify_path), WATCHDOG_USEC=str(watchdog_usec),
                              RUNTIME_DIRECTORY=str(self.runtime), JACKPOT_MAINT_HOST=host, **(extra_env or {}))
        self.messages: list[tuple[float, str]] = []
        self.process: subprocess.Popen | None = None
        self._socket: socket.socket | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> "DaemonProcess":
        if self.notify_path.exists():
            self.notify_path.unlink()
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(str(self.notify_path))
        self._socket.settimeout(0.2)
        self.messages = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        log = open(self.logfile, "a")
        self.process = subprocess.Popen([sys.executable, "-m", "scheduler", "run", "--config", str(self.config)],
                                        env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=str(self.workdir))
        log.close()
        return self

    def _read(self) -> None:
        sock = self._socket
        while sock is not None and sock.fileno() >= 0:
            try:
                data = sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            for line in data.decode().splitlines():
                self.messages.append((time.monotonic(), line))

    def notified(self, prefix: str) -> list[str]:
        return [line for _, line in list(self.messages) if line.startswith(prefix)]

    def wait_for_notify(self, prefix: str, timeout: float = 20.0, *, count: int = 1) -> list[str]:
        wait_until(lambda: len(self.notified(prefix)) >= count, timeout,
                   f"{self.host}: {prefix} x{count} never sent; got {[m for _, m in self.messages][-10:]}\n{self.log()[-3000:]}",
                   process=self.process)
        return self.notified(prefix)

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self, timeout: float = 20.0) -> int:
        assert self.process is not None
        try:
            return self.process.wait(timeout)
        finally:
            self.close_socket()

    def kill9(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self.close_socket()

    def close_socket(self) -> None:
        if self._socket is not None:
            sock, self._socket = self._socket, None
            sock.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.close_socket()

    def log(self) -> str:
        return self.logfile.read_text() if self.logfile.exists() else ""


def ledger_rows(state_path: Path, job: str | None = None) -> list[dict]:
    """The daemon's run ledger, oldest first (read-only, straight from its SQLite file)."""
    if not state_path.exists():
        return []
    connection = sqlite3.connect(f"file:{state_path}?mode=ro", uri=True, timeout=10)
    connection.row_factory = sqlite3.Row
    try:
        query = "SELECT * FROM runs" + (" WHERE job = ?" if job else "") + " ORDER BY started_at"
        return [dict(row) for row in connection.execute(query, (job,) if job else ())]
    except sqlite3.OperationalError:
        return []
    finally:
        connection.close()


def wait_until(predicate: Callable[[], object], timeout: float, message: str, *, process=None, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the daemon exited with {process.returncode}: {message}")
        time.sleep(interval)
    raise AssertionError(message)
