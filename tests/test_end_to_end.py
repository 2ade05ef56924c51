"""The whole daemon, end to end, as an operator would see it.

A real `jackpot-maint run` process against a throwaway PostgreSQL and the simulated jackpot service,
on a fast schedule: it trims, validates and repairs, vacuums, rotates, monitors; alerts reach a real
local webhook receiver through apprise; an escalation steps up on a sped-up policy; removing the fault
resolves the alert; SIGHUP reloads; SIGTERM stops it cleanly.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from scheduler import sample_data
from scheduler.pgcluster import free_port

from conftest import clean_env


class Receiver:
    """A webhook receiver on 127.0.0.1: apprise's json:// posts land here."""

    def __init__(self):
        self.messages: list[dict] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    receiver.messages.append(json.loads(body or b"{}"))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):  # noqa: ANN002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def titles(self) -> list[str]:
        with self.lock:
            return [message.get("title", "") for message in self.messages]

    def close(self) -> None:
        self.server.shutdown()


def wait_for(predicate, timeout: float, what: str, daemon=None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if daemon is not None and daemon.poll() is not None:
            break
        time.sleep(0.25)
    tail = log.read_text()[-3000:] if log and log.exists() else ""
    pytest.fail(f"timed out waiting for {what}\n--- daemon log ---\n{tail}")


def history(config: Path, *args: str) -> list[dict]:
    result = subprocess.run([sys.executable, "-m", "scheduler", "--config", str(config), "history", "--json",
                             "--limit", "500", *args], capture_output=True, text=True, env=clean_env(), timeout=60)
    return json.loads(result.stdout) if result.returncode == 0 else []


def config_text(database_url: str, state_url: str, service_url: str, service_dir: Path, hook: str,
                extra: str = "") -> str:
    teams = ["oncall", "database-team", "devops-team", "security-team", "platform-team", "team-lead",
             "engineering", "external"]
    contacts = "\n".join(f'[alerts.contacts.{team}]\ntargets = ["hook"]\nresponse_time = "1h"\n' for team in teams)
    return f"""
[database]
url = "{database_url}"
[state]
url = "{state_url}"
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
flap_window = "1s"
repeat_interval = "1h"
[alerts.levels.1]
until = "4s"
[alerts.levels.2]
until = "1h"
[alerts.levels.3]
until = "2h"
{contacts}
[notifiers.hook]
type = "apprise"
urls = ["{hook}"]
[jobs.monitor]
schedule = "every 1s"
for_cycles = 2
recover_cycles = 2
[jobs.monitor.cpu]
warning = 101
critical = 101
[jobs.monitor.memory]
warning = 101
critical = 101
[jobs.monitor.disk]
warning = 101
critical = 101
[jobs.monitor.log_errors]
warning = 1000
critical = 1000
[jobs.validate_data]
schedule = "every 2s"
repair = true
[jobs.trim_history]
schedule = "every 2s"
[jobs.vacuum_analyze]
schedule = "every 3s"
[jobs.rotate_logs]
schedule = "every 2s"
directory = "{service_dir}"
files = ["logs/debug.log"]
max_size = "16KB"
free_space_margin = "1MB"
{extra}
"""


def test_the_daemon_maintains_monitors_alerts_escalates_resolves_reloads_and_stops(tmp_path, database_url):
    from scheduler.simulator import SimulatorProcess

    sample_data.create_table(database_url)
    sample_data.insert_rows(database_url, rows=200, contribution_entries=5)
    sample_data.insert_rows(database_url, rows=5, contribution_entries=1300, win_entries=2)
    faults = sample_data.insert_faults(database_url)
    service_dir = tmp_path / "service"
    (service_dir / "logs").mkdir(parents=True)
    (service_dir / "logs" / "debug.log").write_text("".join(f"debug line {n}\n" for n in range(3000)))

    receiver = Receiver()
    simulator = SimulatorProcess.start(port=free_port(), log_path=str(service_dir / "logs" / "application.log"),
                                       database_url=database_url)
    simulator.set_mode("down", endpoint="/health")
    config = tmp_path / "config.toml"
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    hook = f"json://127.0.0.1:{receiver.port}/hook"
    config.write_text(config_text(database_url, state_url, simulator.url, service_dir, hook))
    log = tmp_path / "daemon.log"
    subprocess.run([sys.executable, "-m", "scheduler", "--config", str(config), "db", "init"], check=True,
                   env=clean_env(), capture_output=True)
    with open(log, "w") as log_handle:
        daemon = subprocess.Popen([sys.executable, "-m", "scheduler", "--config", str(config), "run"],
                                  stdout=log_handle, stderr=subprocess.STDOUT, env=clean_env())
    try:
        def run_statuses(job: str) -> list[str]:
            return [run["status"] for run in history(config, "--job", job)]

        # the service's health endpoint is down: a P1 page reaches the webhook, then escalates
        wait_for(lambda: any("[P1][L1] Service down" in title for title in receiver.titles()), 30,
                 "the service-down page", daemon, log)
        wait_for(lambda: any(title.startswith("[P1][L2] Escalated: Service down") for title in receiver.titles()), 30,
                 "the escalation to level 2", daemon, log)

        # maintenance happened in the database
        check = sample_data_check(database_url)
        wait_for(lambda: check("SELECT count(*) FROM jackpot_maint.history_archive") >= 5, 30,
                 "trimmed histories in the archive", daemon, log)
        assert check("SELECT max(jsonb_array_length(contribution_history)) FROM jackpots "
                     "WHERE jsonb_typeof(contribution_history) = 'array'") <= 1000
        wait_for(lambda: check(f"SELECT current_amount FROM jackpots WHERE id = {faults['negative_amount'][0]}") == 0, 30,
                 "the negative amount repaired", daemon, log)
        assert check("SELECT count(*) FROM jackpot_maint.repair_audit") >= 1
        wait_for(lambda: "ok" in run_statuses("vacuum_analyze"), 30, "a vacuum", daemon, log)
        wait_for(lambda: any(path.name.startswith("debug.log.1") for path in (service_dir / "logs").iterdir()), 30,
                 "debug.log rotated", daemon, log)
        assert any("Data corruption" in title for title in receiver.titles())

        # removing the fault resolves the alert, and the people paged get a resolved notice
        simulator.set_mode("healthy")
        wait_for(lambda: any("RESOLVED" in title and "Service down" in title for title in receiver.titles()), 30,
                 "the resolved notice", daemon, log)

        # SIGHUP reloads: a job enabled in the new configuration starts running without a restart
        config.write_text(config_text(database_url, state_url, simulator.url, service_dir, hook,
                                      extra='[jobs.ping_database]\nenabled = true\nschedule = "every 1s"\n'))
        daemon.send_signal(signal.SIGHUP)
        wait_for(lambda: "ok" in run_statuses("ping_database"), 30, "ping_database after the reload", daemon, log)
        assert daemon.poll() is None

        # SIGTERM stops it cleanly
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
        pages = receiver.titles()
        assert len([title for title in pages if title.startswith("[P1][L1] Service down")]) == 1, pages
    finally:
        if daemon.poll() is None:
            daemon.kill()
        simulator.stop()
        receiver.close()


def sample_data_check(url: str):
    import psycopg

    def scalar(sql: str):
        with psycopg.connect(url, autocommit=True) as connection:
            return connection.execute(sql).fetchone()[0]
    return scalar
