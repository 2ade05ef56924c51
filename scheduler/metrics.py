"""The daemon's own metrics in the Prometheus text format: runs, failures and duration per job, the
time of the last success per job, open alerts. Served on a local port or written to a node-exporter
textfile; off unless configured ([scheduler] metrics_port / metrics_textfile).
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FAILED_STATUSES = ("failed", "abandoned", "missed", "cancelled")


class Metrics:
    """Counters and gauges, updated by the daemon after each run, rendered on demand."""

    def __init__(self, host: str = ""):
        self._lock = threading.Lock()
        self.host = host
        self.started_at = time.time()
        self.runs: dict[tuple[str, str], int] = {}
        self.failures: dict[str, int] = {}
        self.duration_sum: dict[str, float] = {}
        self.duration_count: dict[str, int] = {}
        self.last_duration: dict[str, float] = {}
        self.last_success: dict[str, float] = {}
        self.running: dict[str, int] = {}
        self.open_alerts: int | None = None
        self.target_up: int | None = None
        self.loop_heartbeat: float = time.time()

    def seed_last_success(self, state: Any, jobs: list[str]) -> None:
        """Read each job's last successful run from the ledger, so a restart keeps the gauge."""
        from scheduler import ledger

        for job in jobs:
            record = ledger.last_run(state, job, statuses=("ok", "problems"))
            if record is not None and record.finished_at is not None:
                with self._lock:
                    self.last_success[job] = record.finished_at.timestamp()

    def record_run(self, record: Any) -> None:
        """Count a finished (or skipped / missed) run from the ledger record."""
        with self._lock:
            key = (record.job, record.status)
            self.runs[key] = self.runs.get(key, 0) + 1
            if record.status in FAILED_STATUSES:
                self.failures[record.job] = self.failures.get(record.job, 0) + 1
            duration = record.duration_seconds
            if duration is not None and record.status not in ("skipped", "missed"):
                self.duration_sum[record.job] = self.duration_sum.get(record.job, 0.0) + duration
                self.duration_count[record.job] = self.duration_count.get(record.job, 0) + 1
                self.last_duration[record.job] = duration
            if record.status in ("ok", "problems") and record.finished_at is not None:
                self.last_success[record.job] = record.finished_at.timestamp()

    def render(self) -> str:
        """Return the metrics in the Prometheus text exposition format."""
        lines: list[str] = []

        def family(name: str, kind: str, help_text: str, samples: list[tuple[dict[str, str], float]]) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            for labels, value in samples:
                label_text = ",".join(f'{key}="{_escape(val)}"' for key, val in sorted(labels.items()))
                lines.append(f"{name}{{{label_text}}} {_number(value)}" if label_text else f"{name} {_number(value)}")

        with self._lock:
            family("jackpot_maint_up", "gauge", "1 while the daemon runs", [({"host": self.host}, 1)])
            family("jackpot_maint_start_time_seconds", "gauge", "When the daemon started (unix time)",
                   [({}, self.started_at)])
            family("jackpot_maint_runs_total", "counter", "Runs by job and status (ok, problems, failed, skipped, missed, ...)",
                   [({"job": job, "status": status}, count) for (job, status), count in sorted(self.runs.items())])
            family("jackpot_maint_failures_total", "counter", "Runs that failed, were cancelled, missed or abandoned",
                   [({"job": job}, count) for job, count in sorted(self.failures.items())])
            lines.append("# HELP jackpot_maint_run_duration_seconds How long runs took")
            lines.append("# TYPE jackpot_maint_run_duration_seconds summary")
            for job in sorted(self.duration_count):
                lines.append(f'jackpot_maint_run_duration_seconds_sum{{job="{_escape(job)}"}} {_number(self.duration_sum[job])}')
                lines.append(f'jackpot_maint_run_duration_seconds_count{{job="{_escape(job)}"}} {self.duration_count[job]}')
            family("jackpot_maint_last_run_duration_seconds", "gauge", "Duration of each job's latest run",
                   [({"job": job}, value) for job, value in sorted(self.last_duration.items())])
            family("jackpot_maint_last_success_timestamp_seconds", "gauge", "When each job last succeeded (unix time)",
                   [({"job": job}, value) for job, value in sorted(self.last_success.items())])
            family("jackpot_maint_running_jobs", "gauge", "Jobs running now",
                   [({}, sum(self.running.values()))])
            if self.open_alerts is not None:
                family("jackpot_maint_open_alerts", "gauge", "Alerts firing or acknowledged, not yet resolved",
                       [({}, self.open_alerts)])
            if self.target_up is not None:
                family("jackpot_maint_target_database_up", "gauge", "1 when the target database answered the last check",
                       [({}, self.target_up)])
            family("jackpot_maint_loop_heartbeat_timestamp_seconds", "gauge", "Last turn of the scheduler loop (unix time)",
                   [({}, self.loop_heartbeat)])
        return "\n".join(lines) + "\n"

    def write_textfile(self, path: str) -> None:
        """Write the metrics atomically (node-exporter must never read half a file)."""
        directory = os.path.dirname(os.path.abspath(path))
        descriptor, temporary = tempfile.mkstemp(prefix=".jackpot-maint-", suffix=".prom.tmp", dir=directory)
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                handle.write(self.render())
            os.chmod(temporary, 0o644)
            os.replace(temporary, path)
        except BaseException:
            try:
                os.unlink(temporary)
            except FileNotFoundError:
                pass
            raise


class MetricsServer:
    """GET /metrics on a local address, in a background thread."""

    def __init__(self, metrics: Metrics, address: str, port: int):
        metrics_ref = metrics

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                if self.path.split("?")[0] not in ("/metrics", "/"):
                    self.send_error(404, "try /metrics")
                    return
                body = metrics_ref.render().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:  # scrapes are not worth a log line
                return

        self.server = ThreadingHTTPServer((address, port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 1.0},
                                        name="metrics", daemon=True)

    def start(self) -> "MetricsServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    return repr(float(value))
