"""`jackpot-maint demo`: the whole product, working, in a minute.

It starts a throwaway PostgreSQL cluster and the simulated jackpot service, loads a jackpots table
with realistic data and the guide's known faults, runs the real daemon (`jackpot-maint run`, the same
code path as production) on a fast schedule with a sped-up escalation policy, prints a live account
of what ran, what it found and fixed and which alerts fired, escalated and resolved, then fixes the
service halfway through so that the alerts resolve, and cleans everything up: at the end, on Ctrl-C
or on SIGTERM.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from scheduler import sample_data
from scheduler.pgcluster import PostgresCluster, free_port

DEMO_DATABASE = "jackpot_demo"


class Stop(Exception):
    """Ctrl-C or SIGTERM: stop the demo and clean up."""


@dataclass
class Account:
    """What the demo saw, for the live lines and the closing summary."""

    runs: dict[str, dict[str, int]] = field(default_factory=dict)
    alerts: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: dict[str, int] = field(default_factory=dict)
    repair_runs: list[str] = field(default_factory=list)
    seen_runs: set[str] = field(default_factory=set)
    alert_offset: int = 0
    last_line: dict[str, str] = field(default_factory=dict)
    shown_events: set[tuple[Any, ...]] = field(default_factory=set)


def demo_config(*, database_url: str, state_url: str, service_url: str, service_dir: Path, alerts_file: Path,
                simulator_pid: int) -> str:
    """The daemon's configuration for the demo: every job on a fast schedule, escalation in seconds."""
    teams = ["oncall", "database-team", "devops-team", "security-team", "platform-team", "team-lead",
             "engineering", "external"]
    notifiers = "\n".join(f'[notifiers.{team}]\ntype = "file"\npath = "{alerts_file}"\ndescription = "{team} (demo: a JSON-lines file)"\n'
                          for team in teams)
    contacts = "\n".join(f'[alerts.contacts.{team}]\nresponse_time = "8s"\n' for team in teams)
    return f"""# jackpot-maint demo configuration (generated)
[database]
url = "{database_url}"
lock_timeout = "1s"

[state]
url = "{state_url}"

[logging]
level = "INFO"

[scheduler]
alerts_interval = "1s"
stop_grace = "5s"

[service]
base_url = "{service_url}"
directory = "{service_dir}"
log_file = "logs/application.log"
disk_paths = ["{service_dir}"]
request_timeout = "2s"

[alerts]
repeat_interval = "30s"
flap_window = "4s"
[alerts.levels.1]
until = "8s"
[alerts.levels.2]
until = "16s"
[alerts.levels.3]
until = "40s"
{contacts}
{notifiers}
[jobs.monitor]
schedule = "every 2s"
timeout = "20s"
for_cycles = 2
recover_cycles = 2
[jobs.monitor.long_queries]
warning = "4s"
critical = "60s"
[jobs.monitor.blocking]
warning = "5s"
[jobs.monitor.log_errors]
warning = 0
critical = 10
[jobs.monitor.cpu]
warning = 101
critical = 101
[jobs.monitor.memory]
warning = 101
critical = 101
[jobs.monitor.disk]
warning = 101
critical = 101
[jobs.monitor.terminate_queries]
enabled = true
older_than = "10s"
pattern = "pg_sleep"

[jobs.validate_data]
schedule = "every 6s"
repair = true

[jobs.trim_history]
schedule = "every 5s"
max_entries = 1000

[jobs.vacuum_analyze]
schedule = "every 9s"

[jobs.rotate_logs]
schedule = "every 4s"
directory = "{service_dir}"
files = ["logs/*.log"]
max_size = "32KB"
keep = 3
free_space_margin = "1MB"
"""


class Demo:
    def __init__(self, seconds: float = 60.0, *, out: TextIO = sys.stdout, keep: bool = False, rows: int = 2000):
        self.seconds = max(seconds, 20.0)
        self.out = out
        self.keep = keep
        self.rows = rows
        self.started = time.monotonic()
        self.base = Path(tempfile.mkdtemp(prefix="jackpot-demo-"))
        self.cluster: PostgresCluster | None = None
        self.simulator = None
        self.daemon: subprocess.Popen | None = None
        self.account = Account()
        self.stop_requested = threading.Event()

    # ---- output ------------------------------------------------------------------------------

    def say(self, text: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"[{elapsed:5.1f}s] {text}", file=self.out, flush=True)

    # ---- set-up ------------------------------------------------------------------------------

    def set_up(self) -> None:
        from scheduler.simulator import SimulatorProcess

        self.say("starting a throwaway PostgreSQL cluster ...")
        self.cluster = PostgresCluster()
        self.cluster.start()
        database_url = self.cluster.create_database(DEMO_DATABASE)
        self.say(f"PostgreSQL is up on 127.0.0.1:{self.cluster.port}; loading the jackpots table ...")
        sample_data.create_table(database_url)
        sample_data.insert_rows(database_url, rows=self.rows, contribution_entries=20, win_entries=3)
        sample_data.insert_rows(database_url, rows=40, contribution_entries=1500, win_entries=1100)
        faults = sample_data.insert_faults(database_url)
        self.database_url = database_url
        self.say(f"{self.rows + 40 + len(faults)} jackpots, with known faults: negative amounts, rates out of range, "
                 "caps below seeds, NULLs, a version out of range, a non-array history, 41 histories over 1,000 entries")

        service_dir = self.base / "service"
        (service_dir / "logs").mkdir(parents=True)
        debug_log = service_dir / "logs" / "debug.log"
        with open(debug_log, "w") as handle:
            for number in range(1200):
                handle.write(f"2026-11-28T03:00:{number % 60:02d}Z DEBUG jackpot pool refresh {number} ok\n")
        self.service_dir = service_dir
        self.say(f"debug.log is {debug_log.stat().st_size // 1024} KB: due for rotation (max_size 32KB)")

        port = free_port()
        self.simulator = SimulatorProcess.start(port=port, log_path=str(service_dir / "logs" / "application.log"),
                                                database_url=database_url)
        self.service_url = f"http://127.0.0.1:{port}"
        self.simulator.set_mode("down", endpoint="/health")
        self.simulator.set_error_rate(3.5)
        self.simulator.log_errors(12, "Database query failed: connection timeout (J006)")
        over_limit_id = sample_data_first_over_limit(database_url)
        self.simulator.hold_lock(row_id=over_limit_id)
        self.simulator.start_long_query(600)
        self.say(f"simulated jackpot service on {self.service_url}: /health DOWN, error rate 3.5 %, 12 ERROR lines, "
                 f"a lock held on jackpot {over_limit_id}, a query running pg_sleep(600)")

        self.alerts_file = self.base / "alerts.jsonl"
        self.state_url = f"sqlite:///{self.base / 'state.db'}"
        config = self.base / "config.toml"
        config.write_text(demo_config(database_url=database_url, state_url=self.state_url, service_url=self.service_url,
                                      service_dir=service_dir, alerts_file=self.alerts_file,
                                      simulator_pid=self.simulator.pid))
        self.config_path = config

    def start_daemon(self) -> None:
        self.daemon_log = open(self.base / "daemon.log", "w")
        env = {key: value for key, value in os.environ.items() if not key.startswith("JACKPOT_")}
        # the install step: the maintenance schema (archive and repair audit tables)
        init = subprocess.run([sys.executable, "-m", "scheduler", "--config", str(self.config_path), "db", "init"],
                              capture_output=True, text=True, env=env)
        self.say("jackpot-maint db init: " + (init.stdout.strip().splitlines() or ["done"])[-1]
                 if init.returncode == 0 else f"jackpot-maint db init failed: {init.stderr.strip()}")
        self.daemon = subprocess.Popen([sys.executable, "-m", "scheduler", "--config", str(self.config_path), "run"],
                                       stdout=self.daemon_log, stderr=subprocess.STDOUT, env=env,
                                       start_new_session=True)
        self.say(f"started the daemon: jackpot-maint run (pid {self.daemon.pid}); its log: {self.base / 'daemon.log'}")
        self.say("schedules: monitor every 2s, rotate_logs 4s, trim_history 5s, validate_data 6s (repair on), "
                 "vacuum_analyze 9s; escalation: level 2 after 8s, 3 after 16s, 4 after 40s")

    # ---- the live account --------------------------------------------------------------------

    def follow(self) -> None:
        from scheduler.state import StateStore

        state = StateStore(self.state_url)
        fixed = False
        begun = time.monotonic()  # the phases count from the daemon's start, not the set-up's
        deadline = begun + self.seconds
        try:
            while time.monotonic() < deadline:
                if self.stop_requested.is_set():
                    raise Stop()
                if self.daemon is not None and self.daemon.poll() is not None:
                    self.say(f"the daemon exited unexpectedly (code {self.daemon.returncode}); see {self.base / 'daemon.log'}")
                    break
                if not fixed and time.monotonic() >= begun + self.seconds * 0.55:
                    self.fix_service()
                    fixed = True
                self._new_runs(state)
                self._new_alerts()
                time.sleep(0.5)
            self._new_runs(state)
            self._new_alerts()
        finally:
            state.dispose()

    def fix_service(self) -> None:
        self.say("=== fixing the service: /health healthy, error rate 0, lock released (the daemon should resolve its alerts) ===")
        self.simulator.set_mode("healthy")
        self.simulator.set_error_rate(0.0)
        self.simulator.release_lock()
        self.simulator.stop_long_query()

    def _new_runs(self, state) -> None:
        from scheduler import ledger

        try:
            runs = ledger.list_runs(state, limit=100)
        except Exception:  # noqa: BLE001 - the daemon creates the store; it may not exist yet
            return
        for run in reversed(runs):
            if run.status == "running" or run.id in self.account.seen_runs:
                continue
            self.account.seen_runs.add(run.id)
            counts = self.account.runs.setdefault(run.job, {})
            counts[run.status] = counts.get(run.status, 0) + 1
            line = describe_run(run)
            if line is None or self.account.last_line.get(run.job) == line:
                continue  # nothing new to tell
            self.account.last_line[run.job] = line
            if run.job == "validate_data" and run.summary.get("rows_repaired"):
                self.account.repair_runs.append(run.id)
            self.say(line)

    def _new_alerts(self) -> None:
        if not self.alerts_file.exists():
            return
        with open(self.alerts_file, encoding="utf-8") as handle:
            handle.seek(self.account.alert_offset)
            lines = handle.readlines()
            self.account.alert_offset = handle.tell()
        shown = self.account.shown_events
        for line in lines:
            if not line.endswith("\n"):
                break
            notification = json.loads(line)
            data = notification.get("alert", {})
            event = data.get("event", notification.get("kind"))
            key = (data.get("id"), event, data.get("level"))
            self.account.events[event] = self.account.events.get(event, 0) + 1
            self.account.alerts[str(data.get("id"))] = data
            if key in shown:
                continue  # the same event to several recipients: one line, with everyone named
            shown.add(key)
            recipients = sorted({json.loads(other).get("target", "?") for other in lines
                                 if json.loads(other).get("alert", {}).get("id") == data.get("id")
                                 and json.loads(other).get("alert", {}).get("event") == event
                                 and json.loads(other).get("alert", {}).get("level") == data.get("level")})
            self.say(f"ALERT {_event_word(event, notification['title']):<9} {notification['title']}  -> {', '.join(recipients)}")

    # ---- the end -----------------------------------------------------------------------------

    def stop_daemon(self) -> None:
        if self.daemon is None or self.daemon.poll() is not None:
            return
        self.say("stopping the daemon with SIGTERM ...")
        self.daemon.send_signal(signal.SIGTERM)
        try:
            code = self.daemon.wait(timeout=30)
            self.say(f"the daemon stopped cleanly (exit {code})")
        except subprocess.TimeoutExpired:
            self.daemon.kill()
            self.say("the daemon did not stop within 30 s: killed")

    def summary(self) -> None:
        out = self.out
        print("\n=== summary ===", file=out)
        for job, counts in sorted(self.account.runs.items()):
            print(f"  {job:<15} " + ", ".join(f"{count} {status}" for status, count in sorted(counts.items())), file=out)
        try:
            archived = _scalar(self.database_url, "SELECT coalesce(sum(entry_count), 0) FROM jackpot_maint.history_archive")
            audited = _scalar(self.database_url, "SELECT count(*) FROM jackpot_maint.repair_audit")
            print(f"  history entries moved to jackpot_maint.history_archive: {archived}", file=out)
            print(f"  repaired values recorded in jackpot_maint.repair_audit: {audited}", file=out)
        except Exception:  # noqa: BLE001 - the schema exists only once the jobs ran
            pass
        for run_id in self.account.repair_runs[:3]:
            print(f"  undo a repair run: jackpot-maint repairs revert {run_id}", file=out)
        rotated = sorted(path.name for path in (self.service_dir / "logs").iterdir() if not path.name.endswith(".log"))
        if rotated:
            print(f"  rotated log files: {', '.join(rotated[:6])}{' ...' if len(rotated) > 6 else ''}", file=out)
        words: dict[str, int] = {}
        for event, count in self.account.events.items():
            word = event.replace("level:", "at level ")
            words[word] = words.get(word, 0) + count
        print("  notifications sent: " + (", ".join(f"{count} {event}" for event, count in sorted(words.items())) or "none"),
              file=out)
        try:
            from scheduler.alerts import list_alerts
            from scheduler.state import StateStore

            state = StateStore(self.state_url)
            alerts = list_alerts(state, include_closed=True)
            state.dispose()
        except Exception:  # noqa: BLE001
            alerts = []
        if alerts:
            print(f"  alerts ({len(alerts)}), as the state store has them (`jackpot-maint alerts list --all`):", file=out)
            for alert in sorted(alerts, key=lambda item: item.id):
                print(f"    #{alert.id:<3} {alert.status:<12} L{alert.level}  {alert.severity}  {alert.title[:90]}", file=out)

    def clean_up(self) -> None:
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.kill()
        if self.simulator is not None:
            try:
                self.simulator.stop()
            except Exception:  # noqa: BLE001
                pass
        if self.cluster is not None:
            self.cluster.stop()
        if not self.keep:
            shutil.rmtree(self.base, ignore_errors=True)
        else:
            print(f"kept {self.base} (config, state, daemon log, alerts.jsonl)", file=self.out)

    def run(self) -> int:
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.set_up()
            self.start_daemon()
            self.follow()
            self.stop_daemon()
            self.summary()
            return 0
        except (Stop, KeyboardInterrupt):
            print("\ninterrupted: cleaning up ...", file=self.out, flush=True)
            self.stop_daemon()
            return 130
        finally:
            self.clean_up()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.stop_requested.set()
        if signum == signal.SIGINT:
            raise KeyboardInterrupt


def _event_word(event: str, title: str) -> str:
    if event == "resolved":
        return "RESOLVED"
    if event.startswith("level:"):
        return "ESCALATED" if "Escalated" in title else "FIRING"
    return event.upper()


def describe_run(run) -> str | None:
    """One line for the live account: what a run did, found and fixed."""
    summary = run.summary or {}
    status = run.status.upper()
    if run.status in ("skipped", "missed"):
        return f"{run.job:<15} {status}: {run.message or ''}"
    text = run.message or ", ".join(f"{key}={value}" for key, value in list(summary.items())[:5]
                                    if not isinstance(value, (dict, list)))
    if run.job == "monitor" and run.status == "ok":
        return None  # a healthy cycle every 2 s would drown the rest
    code = f" [{run.error_code}]" if run.error_code else ""
    return f"{run.job:<15} {status}{code}: {text}"[:240]


def sample_data_first_over_limit(url: str) -> int:
    # CASE, not AND: PostgreSQL does not promise to test jsonb_typeof first
    return int(_scalar(url, "SELECT min(id) FROM jackpots WHERE CASE WHEN jsonb_typeof(contribution_history) = 'array' "
                            "THEN jsonb_array_length(contribution_history) > 1000 ELSE false END"))


def _scalar(url: str, sql: str) -> Any:
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        return connection.execute(sql).fetchone()[0]
