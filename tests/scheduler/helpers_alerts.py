"""Helpers for the alerting tests: a real HTTP receiver on 127.0.0.1 for apprise's json:// URLs, and
settings with notifiers pointing at it."""

from __future__ import annotations

import json
import socket
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

TOKEN = "s3cretT0ken9876xyz"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Receiver:
    """An HTTP server that records every JSON POST (path, body, arrival time). mode: "ok", "error"
    (answers 503) or "hang" (never answers). stop() then start() simulates an outage."""

    def __init__(self, port: int | None = None, mode: str = "ok"):
        self.port = port or free_port()
        self.mode = mode
        self.received: list[dict] = []
        self.arrived = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self._release = threading.Event()

    def url(self, path: str = "hook") -> str:
        return f"json://127.0.0.1:{self.port}/{path}/{TOKEN}"

    def start(self) -> "Receiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if receiver.mode == "hang":
                    receiver._release.wait(30)
                    return
                if receiver.mode == "error":
                    self.send_response(503)
                    self.end_headers()
                    return
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    body = {"raw": raw.decode(errors="replace")}
                with receiver.arrived:
                    receiver.received.append({"path": self.path, "at": time.monotonic(), "wall": time.time(), **body})
                    receiver.arrived.notify_all()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: object) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._release.set()
            self._server.shutdown()
            self._server.server_close()
            self._server = None
            self._release = threading.Event()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        with self.arrived:
            while len(self.received) < count and time.monotonic() < deadline:
                self.arrived.wait(max(deadline - time.monotonic(), 0.01))
        return list(self.received)

    def titles(self, path: str | None = None) -> list[str]:
        return [item.get("title", "") for item in self.received if path is None or item["path"].startswith(f"/{path}/")]


def notifier_toml(receiver: Receiver, names: list[str]) -> str:
    """[notifiers.<name>] for each name, each posting to the receiver under /<name>/TOKEN."""
    return "\n".join(f'[notifiers.{name}]\nurls = ["{receiver.url(name)}"]\n' for name in names)


def write_config(path: Path, state_url: str, extra: str = "", database_url: str = "postgresql://u:p@127.0.0.1:9/none") -> Path:
    path.write_text(f'[database]\nurl = "{database_url}"\n\n[state]\nurl = "{state_url}"\n\n{extra}\n')
    return path


def load(path: Path):
    from config.loader import load_settings

    return load_settings(str(path), environ={}).settings


T0 = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)


def at(minutes: float) -> datetime:
    """The injected clock: T0 plus minutes."""
    return T0 + timedelta(minutes=minutes)


def settled_notifications(state, alert_id: int, timeout: float = 5.0) -> dict[str, dict]:
    """The alert's notifications by target once none is still being sent (a send that outlived the
    send timeout records its own outcome when it ends)."""
    from scheduler import alerts

    deadline = time.monotonic() + timeout
    while True:
        rows = {row["target"]: row for row in alerts.notifications_of(state, alert_id)}
        if all(row["status"] != "sending" for row in rows.values()) or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)
