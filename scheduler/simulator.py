"""A simulated jackpot service, for tests and the demo.

It serves the guide's endpoints on 127.0.0.1 -- /health, /health/database, /health/jackpot and
/metrics -- with answers that can be switched at run time, appends to an application log, and can
make trouble in the target database the way the real service does.

Modes (for every endpoint, or one endpoint): healthy, degraded (200, status "degraded"), slow
(healthy after `slow_seconds`), down (503, status "unhealthy"), hang (no answer until the mode
changes). /metrics reports `error_rate` (a percentage, settable).

Run it:
    python -m scheduler.simulator --port 3001 --log /tmp/app/logs/application.log [--database-url URL]
    jackpot-maint simulate --port 3001 --log ...            (the same)

Control it over HTTP (POST JSON to /control/<action>) or from Python:
    with Simulator(log_path=path, database_url=url) as service:        # in this process
    service = SimulatorProcess.start(log_path=path, database_url=url)  # a real process; .stop()
    service.set_mode("down"); service.set_mode("slow", endpoint="/health"); service.set_error_rate(2.5)
    service.log_errors(3, "Database query failed: timeout")
    service.hold_lock(row_id=1); service.release_lock()
    service.start_long_query(600); service.stop_long_query()
    service.leak(50); service.free()

Actions: set {mode, endpoint, error_rate, slow_seconds}, log {level, message, count}, lock {row_id},
release, long_query {seconds}, stop_query, leak {mb}, free, reset, state.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODES = ("healthy", "degraded", "slow", "down", "hang")
ENDPOINTS = ("/health", "/health/database", "/health/jackpot", "/metrics")
APPLICATION_NAME = "jackpot-service"


class SimulatedService:
    """The service's behaviour and the trouble it can make; thread-safe. The HTTP layer is below."""

    def __init__(self, *, log_path: str | None = None, database_url: str | None = None, table: str = "jackpots"):
        self.log_path = log_path
        self.database_url = _libpq_url(database_url) if database_url else None
        self.table = table
        self.started = time.time()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self.mode = "healthy"
        self.endpoint_modes: dict[str, str] = {}
        self.error_rate = 0.0
        self.slow_seconds = 0.8
        self.requests = 0
        self._leaks: list[bytes] = []
        self._lock_connection = None
        self._locked_row: int | None = None
        self._query_connection = None
        self._query_thread: threading.Thread | None = None
        self._closing = False

    # ---- endpoints ---------------------------------------------------------------------------

    def answer(self, path: str) -> tuple[int, dict[str, Any]]:
        """Given an endpoint path, wait as the mode says, and return (HTTP status, JSON body)."""
        with self._lock:
            self.requests += 1
        mode = self._mode_for(path)
        if mode == "hang":
            with self._changed:
                self._changed.wait_for(lambda: self._closing or self._mode_for(path) != "hang", timeout=3600)
            mode = self._mode_for(path)
        if mode == "slow":
            time.sleep(self.slow_seconds)
        if path == "/metrics":
            return 200, self._metrics()
        if mode == "down":
            return 503, {"status": "unhealthy", "error": "service unavailable", "timestamp": _now()}
        status = "degraded" if mode == "degraded" else "healthy"
        body: dict[str, Any] = {"status": status, "timestamp": _now()}
        if path == "/health":
            body["uptime"] = round(time.time() - self.started, 1)
        elif path == "/health/database":
            body.update({"connection_count": 1 + (self._lock_connection is not None) + (self._query_connection is not None),
                         "response_time": 2})
        elif path == "/health/jackpot":
            body.update({"pools": {"group-0": "active", "group-1": "active"}, "last_update": _now()})
        return 200, body

    def _mode_for(self, path: str) -> str:
        return self.endpoint_modes.get(path, self.mode)

    def _metrics(self) -> dict[str, Any]:
        return {"error_rate": self.error_rate, "requests_total": self.requests,
                "response_times": {"p50": 12, "p95": 40 if self.mode != "slow" else int(self.slow_seconds * 1000)},
                "memory": {"rss_mb": round(_rss_mb(), 1), "leaked_mb": sum(len(chunk) for chunk in self._leaks) // 2**20},
                "uptime": round(time.time() - self.started, 1), "mode": self.mode}

    # ---- control -----------------------------------------------------------------------------

    def control(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Apply one control action (see the module docstring); return the new state."""
        handler = getattr(self, f"_do_{action}", None)
        if handler is None:
            raise ValueError(f"unknown action {action!r}; known: set, log, lock, release, long_query, stop_query, "
                             "leak, free, reset, state")
        handler(**payload)
        return self.state()

    def state(self) -> dict[str, Any]:
        query_running = self._query_thread is not None and self._query_thread.is_alive()
        return {"mode": self.mode, "endpoints": dict(self.endpoint_modes), "error_rate": self.error_rate,
                "slow_seconds": self.slow_seconds, "locked_row": self._locked_row, "long_query": query_running,
                "leaked_mb": sum(len(chunk) for chunk in self._leaks) // 2**20, "pid": os.getpid(),
                "log_path": self.log_path}

    def _do_state(self) -> None:
        return None

    def _do_set(self, mode: str | None = None, endpoint: str | None = None, error_rate: float | None = None,
                slow_seconds: float | None = None) -> None:
        if mode is not None and mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; known: {', '.join(MODES)}")
        if endpoint is not None and endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}; known: {', '.join(ENDPOINTS)}")
        with self._changed:
            if mode is not None:
                if endpoint:
                    self.endpoint_modes[endpoint] = mode
                else:
                    self.mode = mode
                    self.endpoint_modes.clear()
            if error_rate is not None:
                self.error_rate = float(error_rate)
            if slow_seconds is not None:
                self.slow_seconds = float(slow_seconds)
            self._changed.notify_all()
        if mode is not None:
            self.write_log("WARN" if mode != "healthy" else "INFO", f"health mode set to {mode}" + (f" for {endpoint}" if endpoint else ""))

    def _do_reset(self) -> None:
        self._do_set(mode="healthy", error_rate=0.0)
        self._do_release()
        self._do_stop_query()
        self._do_free()

    def _do_log(self, message: str = "Database query failed: connection timeout (J006)", level: str = "ERROR",
                count: int = 1) -> None:
        for index in range(int(count)):
            self.write_log(level, message if count == 1 else f"{message} [{index + 1}/{count}]")

    def write_log(self, level: str, message: str) -> None:
        """Append one line to the application log (opened per write, so a rotated log is recreated)."""
        if not self.log_path:
            return
        os.makedirs(os.path.dirname(os.path.abspath(self.log_path)), exist_ok=True)
        with self._lock, open(self.log_path, "a", encoding="utf-8") as handle:
            handle.write(f"{_now()} {level:<5} [{APPLICATION_NAME}] {message}\n")

    def _do_leak(self, mb: float = 10) -> None:
        # bytes of a repeated value are written, so the pages are really resident
        self._leaks.append(b"\x01" * int(float(mb) * 2**20))

    def _do_free(self) -> None:
        self._leaks.clear()

    # ---- database trouble ----------------------------------------------------------------------

    def _connect(self):
        if not self.database_url:
            raise ValueError("the simulator was started without --database-url")
        import psycopg

        return psycopg.connect(self.database_url, application_name=APPLICATION_NAME, connect_timeout=5)

    def _do_lock(self, row_id: int | None = None) -> None:
        """Hold a row lock on the jackpots table in an open transaction (idle in transaction)."""
        from scheduler.db import quote_table

        self._do_release()
        connection = self._connect()
        table = quote_table(self.table)
        if row_id is None:
            row = connection.execute(f"SELECT id FROM {table} ORDER BY id LIMIT 1 FOR UPDATE").fetchone()
        else:
            row = connection.execute(f"SELECT id FROM {table} WHERE id = %s FOR UPDATE", (int(row_id),)).fetchone()
        if row is None:
            connection.close()
            raise ValueError(f"no row {row_id} in {self.table} to lock")
        self._lock_connection, self._locked_row = connection, row[0]
        self.write_log("INFO", f"holding a lock on {self.table} id {row[0]}")

    def _do_release(self) -> None:
        connection, self._lock_connection, self._locked_row = self._lock_connection, None, None
        if connection is not None:
            try:
                connection.rollback()
                connection.close()
            except Exception:  # noqa: BLE001 - terminated by someone else: nothing left to release
                pass

    def _do_long_query(self, seconds: float = 600) -> None:
        """Run SELECT pg_sleep(seconds) against the jackpots table in the background."""
        from scheduler.db import quote_table

        self._do_stop_query()
        connection = self._connect()
        connection.autocommit = True
        self._query_connection = connection
        sql = f"SELECT count(*), pg_sleep(%s) FROM (SELECT 1 FROM {quote_table(self.table)} LIMIT 1) AS jackpots_probe"

        def run() -> None:
            try:
                connection.execute(sql, (float(seconds),))
            except Exception as error:  # noqa: BLE001 - terminated or cancelled: the service logs it
                if not self._closing and self._query_connection is connection:
                    self.write_log("ERROR", f"Database query failed: {str(error).strip().splitlines()[0]} (J006)")
            finally:
                try:
                    connection.close()
                except Exception:  # noqa: BLE001
                    pass

        self._query_thread = threading.Thread(target=run, name="long-query", daemon=True)
        self._query_thread.start()
        # return once the query is really running, so a caller can observe it at once
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and self._query_thread.is_alive():
            info = connection.pgconn.transaction_status
            if info != 0:  # not idle: the statement is on the server
                break
            time.sleep(0.01)

    def _do_stop_query(self) -> None:
        connection, thread = self._query_connection, self._query_thread
        self._query_connection, self._query_thread = None, None
        if connection is not None:
            try:
                connection.cancel_safe() if hasattr(connection, "cancel_safe") else connection.cancel()
            except Exception:  # noqa: BLE001
                pass
        if thread is not None:
            thread.join(5)

    def close(self) -> None:
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        self._do_release()
        self._do_stop_query()


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        if path in ENDPOINTS:
            status, body = self.server.service.answer(path)
            self._send(status, body)
        elif path == "/control":
            self._send(200, self.server.service.state())
        else:
            self._send(404, {"error": f"no such endpoint {path}", "endpoints": list(ENDPOINTS)})

    def do_POST(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0].rstrip("/")
        if not path.startswith("/control"):
            self._send(404, {"error": "POST only to /control/<action>"})
            return
        action = path[len("/control"):].strip("/") or "set"
        length = int(self.headers.get("Content-Length") or 0)
        try:
            payload = json.loads(self.rfile.read(length) or b"{}") if length else {}
            self._send(200, self.server.service.control(action, payload))
        except (ValueError, TypeError) as error:
            self._send(400, {"error": str(error)})
        except Exception as error:  # noqa: BLE001 - a database error while making trouble
            self._send(500, {"error": f"{type(error).__name__}: {error}"})

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a monitor's timeout)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], service: SimulatedService):
        super().__init__(address, _Handler)
        self.service = service


class _Controls(ABC):
    """The control API, shared by the in-process Simulator and the SimulatorProcess client."""

    @abstractmethod
    def _control(self, action: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        """Perform one control action and return the service's state."""

    def set_mode(self, mode: str, *, endpoint: str | None = None) -> dict[str, Any]:
        """healthy, degraded, slow, down or hang; for every endpoint, or only `endpoint` (e.g. '/health')."""
        return self._control("set", {"mode": mode, "endpoint": endpoint})

    def set_error_rate(self, percent: float) -> dict[str, Any]:
        return self._control("set", {"error_rate": percent})

    def set_slow_seconds(self, seconds: float) -> dict[str, Any]:
        return self._control("set", {"slow_seconds": seconds})

    def log(self, message: str, *, level: str = "INFO", count: int = 1) -> dict[str, Any]:
        return self._control("log", {"message": message, "level": level, "count": count})

    def log_errors(self, count: int = 1, message: str = "Database query failed: connection timeout (J006)") -> dict[str, Any]:
        return self._control("log", {"message": message, "level": "ERROR", "count": count})

    def hold_lock(self, row_id: int | None = None) -> dict[str, Any]:
        return self._control("lock", {"row_id": row_id})

    def release_lock(self) -> dict[str, Any]:
        return self._control("release")

    def start_long_query(self, seconds: float = 600) -> dict[str, Any]:
        return self._control("long_query", {"seconds": seconds})

    def stop_long_query(self) -> dict[str, Any]:
        return self._control("stop_query")

    def leak(self, mb: float) -> dict[str, Any]:
        return self._control("leak", {"mb": mb})

    def free(self) -> dict[str, Any]:
        return self._control("free")

    def reset(self) -> dict[str, Any]:
        return self._control("reset")

    def state(self) -> dict[str, Any]:
        return self._control("state")


class Simulator(_Controls):
    """The simulated service in this process (a background thread). Use as a context manager."""

    def __init__(self, *, port: int = 0, log_path: str | None = None, database_url: str | None = None,
                 table: str = "jackpots", host: str = "127.0.0.1"):
        self.service = SimulatedService(log_path=log_path, database_url=database_url, table=table)
        self._server = _Server((host, port), self.service)
        self.host, self.port = self._server.server_address[:2]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "Simulator":
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="simulator", daemon=True)
        self._thread.start()
        self.service.write_log("INFO", f"jackpot service simulator listening on {self.url}")
        return self

    def stop(self) -> None:
        self.service.close()
        self._server.shutdown()
        self._server.server_close()

    def serve_forever(self) -> None:
        self._server.serve_forever(poll_interval=0.2)

    def _control(self, action: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.service.control(action, {key: value for key, value in (payload or {}).items() if value is not None})

    def __enter__(self) -> "Simulator":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class SimulatorClient(_Controls):
    """Control a simulator running elsewhere, through its /control endpoint."""

    def __init__(self, url: str, *, timeout: float = 15):
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _control(self, action: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        data = json.dumps({key: value for key, value in (payload or {}).items() if value is not None}).encode()
        request = urllib.request.Request(f"{self.url}/control/{action}", data=data, method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 - local simulator
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            detail = json.loads(error.read() or b"{}").get("error", error.reason)
            raise RuntimeError(f"simulator refused {action}: {detail}") from None


class SimulatorProcess(SimulatorClient):
    """The simulator as a real process (`python -m scheduler.simulator`). Use start(); stop() ends it."""

    def __init__(self, process: subprocess.Popen, url: str):
        super().__init__(url)
        self.process = process
        self.pid = process.pid
        self.port = int(url.rsplit(":", 1)[1])
        self._errors = None  # the process's stderr (a temporary file)

    @classmethod
    def start(cls, *, port: int = 0, log_path: str | None = None, database_url: str | None = None,
              table: str = "jackpots", python: str | None = None, startup_timeout: float = 15) -> "SimulatorProcess":
        """Start the simulator process and wait until it listens. Raise RuntimeError if it does not."""
        command = [python or sys.executable, "-m", "scheduler.simulator", "--port", str(port), "--table", table]
        if log_path:
            command += ["--log", str(log_path)]
        if database_url:
            command += ["--database-url", database_url]
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""), PYTHONUNBUFFERED="1")
        # stderr goes to a file, not a pipe nobody drains (a full pipe would block the simulator)
        errors = tempfile.TemporaryFile(mode="w+")
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, text=True, env=env, cwd=root)
        line = _read_line(process, startup_timeout)
        if not line.startswith("listening on "):
            process.kill()
            process.wait(5)
            errors.seek(0)
            raise RuntimeError(f"the simulator did not start: {line or ''}{errors.read()[-1000:]}")
        started = cls(process, line.split("listening on ", 1)[1].strip())
        started._errors = errors
        return started

    def stop(self, timeout: float = 10) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.process.stdout:
            self.process.stdout.close()
        if self._errors is not None:
            self._errors.close()

    def __enter__(self) -> "SimulatorProcess":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _read_line(process: subprocess.Popen, timeout: float) -> str:
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(process.stdout.readline() if process.stdout else ""), daemon=True)
    reader.start()
    reader.join(timeout)
    return box[0] if box else ""


def _libpq_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _rss_mb() -> float:
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except Exception:  # noqa: BLE001
        return 0.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m scheduler.simulator", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser, *, database_flag: bool = True) -> None:
    """The simulator's options. Within jackpot-maint (database_flag=False) --database-url is a global
    option already, and --log would be an ambiguous abbreviation of --log-level: it is --application-log."""
    parser.add_argument("--port", type=int, default=3001, help="port on 127.0.0.1 (0: any free port; default 3001)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    log_flags = ["--log", "--application-log"] if database_flag else ["--application-log"]
    parser.add_argument(*log_flags, dest="log", metavar="PATH",
                        help="application log to append to (e.g. logs/application.log)")
    if database_flag:
        parser.add_argument("--database-url", metavar="URL", help="target database, for held locks and long queries")
    parser.add_argument("--table", default="jackpots", help="the jackpots table (default jackpots)")
    parser.add_argument("--mode", choices=MODES, default="healthy", help="initial mode (default healthy)")
    parser.add_argument("--error-rate", type=float, default=0.0, help="initial error_rate in %% (default 0)")


def serve(args: argparse.Namespace) -> int:
    """Run the simulator in the foreground until SIGTERM/SIGINT. Print 'listening on URL' first."""
    simulator = Simulator(port=args.port, log_path=args.log, database_url=getattr(args, "database_url", None),
                          table=args.table, host=args.host)
    simulator.service.mode = args.mode
    simulator.service.error_rate = args.error_rate
    stopping = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    simulator.start()
    print(f"listening on {simulator.url}", flush=True)
    try:
        while not stopping.wait(0.2):
            pass
    finally:
        simulator.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    return serve(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
