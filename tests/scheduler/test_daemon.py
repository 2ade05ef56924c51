"""The daemon as a real process: systemd notifications, reload, stop, kill -9, and manual runs beside it.

Each test starts `python -m scheduler run` with a real unix datagram socket as $NOTIFY_SOCKET and
ping_database (a real small job) on a short schedule, against the session's PostgreSQL.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from helpers_daemon import DaemonProcess, daemon_env, ledger_rows, wait_until, write_config


def only_ping(schedule: str = "every 1s", **options: object) -> str:
    """Config text enabling ping_database alone (the other jobs are tested by their own tests)."""
    import config  # noqa: F401 - the settings model first: it imports the job modules itself
    from jobs.registry import all_jobs

    lines = []
    for name in all_jobs():
        if name != "ping_database":
            lines.append(f"[jobs.{name}]\nenabled = false\n")
    extra = "".join(f"{key} = {json.dumps(value)}\n" for key, value in options.items())
    lines.append(f'[jobs.ping_database]\nenabled = true\nschedule = "{schedule}"\n{extra}')
    return "\n".join(lines)


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scheduler", *args], capture_output=True, text=True,
                          env=daemon_env(**(env or {})), timeout=timeout)


@pytest.fixture
def daemons():
    started: list[DaemonProcess] = []
    yield started
    for daemon in started:
        daemon.stop()


class PingReceiver:
    """A real HTTP endpoint on 127.0.0.1 standing in for a healthchecks-style dead-man's switch."""

    def __init__(self):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.paths: list[str] = []
        paths = self.paths

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                paths.append(self.path)
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"OK")

            def log_message(self, *args):
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_daemon_notifies_systemd_reloads_valid_config_rejects_invalid_one_and_stops_cleanly(
        tmp_path, database_url, daemons):
    from scheduler.pgcluster import free_port

    deadman = PingReceiver()
    metrics_port = free_port()
    state = tmp_path / "state.db"
    config = write_config(tmp_path / "config.toml", database_url, state,
                          f'[scheduler]\nheartbeat_interval = "1s"\nmetrics_port = {metrics_port}\n'
                          f'metrics_textfile = "{tmp_path / "jackpot_maint.prom"}"\n'
                          f'deadman_url = "http://127.0.0.1:{deadman.port}/ping/0f3c9a77-token-5521"\n'
                          'deadman_jobs = ["ping_database"]\n\n' + only_ping("every 1s"))
    daemon = DaemonProcess(tmp_path, config, "host-a", watchdog_usec=1_000_000).start()
    daemons.append(daemon)

    daemon.wait_for_notify("READY=1")
    daemon.wait_for_notify("WATCHDOG=1", count=3, timeout=5)
    wait_until(lambda: len([r for r in ledger_rows(state, "ping_database") if r["status"] == "ok"]) >= 2, 15,
               "ping_database never ran twice on its 1s schedule", process=daemon.process)
    status_lines = daemon.notified("STATUS=")
    assert any("scheduled" in line and "target database" in line for line in status_lines)

    # its own metrics, on the local port and in the textfile; the dead-man's switch pinged after runs
    import urllib.request

    def scrape() -> str:
        return urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()

    def ok_runs() -> int:
        found = re.search(r'jackpot_maint_runs_total\{job="ping_database",status="ok"\} (\d+)', scrape())
        return int(found.group(1)) if found else 0

    wait_until(lambda: ok_runs() >= 2, 10, "the metrics do not count the runs")
    scraped = scrape()
    assert 'jackpot_maint_last_success_timestamp_seconds{job="ping_database"}' in scraped
    assert 'jackpot_maint_run_duration_seconds_count{job="ping_database"}' in scraped
    wait_until(lambda: (tmp_path / "jackpot_maint.prom").exists(), 5, "no metrics textfile")
    assert "jackpot_maint_runs_total" in (tmp_path / "jackpot_maint.prom").read_text()
    wait_until(lambda: deadman.paths, 5, "the dead-man's switch was never pinged")
    assert deadman.paths[0] == "/ping/0f3c9a77-token-5521"
    deadman.close()

    # status sees the running daemon, the job's last and next run
    result = run_cli("status", "--json", "--config", str(config), env={"RUNTIME_DIRECTORY": str(daemon.runtime),
                                                                        "JACKPOT_MAINT_HOST": "host-a"})
    status = json.loads(result.stdout)
    assert status["daemon"]["running"] is True and status["daemon"]["pid"] == daemon.process.pid
    # healthy: exit 0; a loaded machine may have made a fire skip (an open alert): exit 1, and says why
    assert result.returncode == (0 if status["healthy"] else 1) and (status["healthy"] or status["problems"])
    ping = next(job for job in status["jobs"] if job["name"] == "ping_database")
    assert ping["last_run"]["status"] == "ok" and ping["next_run"]
    listing = json.loads(run_cli("jobs", "list", "--json", "--config", str(config)).stdout)
    fires = next(job for job in listing if job["name"] == "ping_database")["next_fire_times"]
    from datetime import datetime

    assert [(datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds()
            for a, b in zip(fires, fires[1:])] == [1.0, 1.0]

    # valid reload: the job is removed without a restart...
    config.write_text(config.read_text().replace('enabled = true\nschedule = "every 1s"', "enabled = false"))
    daemon.signal(signal.SIGHUP)
    daemon.wait_for_notify("RELOADING=1")
    daemon.wait_for_notify("READY=1", count=2)
    wait_until(lambda: "ping_database: removed from the schedule" in daemon.log(), 5, "job not removed on reload")
    from datetime import datetime, timezone

    removed_at = datetime.now(timezone.utc).replace(tzinfo=None)
    time.sleep(2.5)
    later_fires = [r for r in ledger_rows(state, "ping_database")
                   if datetime.fromisoformat(r["scheduled_for"]) > removed_at]
    assert not later_fires, "a removed job kept running"
    count_after_removal = len(ledger_rows(state, "ping_database"))

    # ...and added back with another schedule
    config.write_text(config.read_text().replace("[jobs.ping_database]\nenabled = false",
                                                 '[jobs.ping_database]\nenabled = true\nschedule = "every 2s"'))
    daemon.signal(signal.SIGHUP)
    daemon.wait_for_notify("READY=1", count=3)
    wait_until(lambda: len(ledger_rows(state, "ping_database")) > count_after_removal, 6,
               "job not scheduled again after reload", process=daemon.process)

    # invalid reload: rejected whole, every problem logged, the old configuration kept
    valid_text = config.read_text()
    config.write_text(valid_text.replace('schedule = "every 2s"', 'schedule = "every fortnight"')
                      .replace("[database]\n", "[database]\nbogus_key = 1\n")
                      .replace("[scheduler]\n", '[scheduler]\nstop_grace = "soon"\n'))
    before = len(ledger_rows(state, "ping_database"))
    daemon.signal(signal.SIGHUP)
    daemon.wait_for_notify("RELOADING=1", count=3)
    daemon.wait_for_notify("READY=1", count=4)
    wait_until(lambda: "reload rejected" in daemon.log(), 5, "invalid reload not reported")
    log = daemon.log()
    assert "jobs.ping_database.schedule" in log and "database.bogus_key" in log and "scheduler.stop_grace" in log
    assert any("reload rejected" in line for line in daemon.notified("STATUS="))
    wait_until(lambda: len(ledger_rows(state, "ping_database")) >= before + 1, 6,
               "the old configuration stopped running after a rejected reload", process=daemon.process)
    assert daemon.process.poll() is None

    daemon.signal(signal.SIGTERM)
    assert daemon.wait(15) == 0
    assert daemon.notified("STOPPING=1")
    assert "daemon stopped" in daemon.log()
    assert "0f3c9a77-token-5521" not in daemon.log(), "the dead-man's switch URL is a secret"


def test_manual_run_beside_daemon_exits_4_and_kill_9_leaves_an_abandoned_run_and_sigterm_cancels_the_query(
        tmp_path, database_url, pg, daemons):
    state = tmp_path / "state.db"
    config = write_config(tmp_path / "config.toml", database_url, state,
                          '[scheduler]\nstop_grace = "1s"\nstop_cancel_wait = "5s"\n\n'
                          + only_ping("every 1s", sleep="30s", timeout="60s"))
    daemon = DaemonProcess(tmp_path, config, "host-k").start()
    daemons.append(daemon)
    daemon.wait_for_notify("READY=1")
    running = wait_until(lambda: [r for r in ledger_rows(state, "ping_database") if r["status"] == "running"], 15,
                         "ping_database never started", process=daemon.process)

    # a manual run takes the same lock: exit 4, saying where and since when
    manual = run_cli("jobs", "run", "ping_database", "--config", str(config), env={"JACKPOT_MAINT_HOST": "host-m"})
    assert manual.returncode == 4, manual.stdout + manual.stderr
    said = manual.stdout + manual.stderr
    assert "already running on host host-k" in said and "since" in said

    # kill -9 in the middle of the job; the restarted daemon marks the interrupted run abandoned
    database = database_url.rsplit("/", 1)[1]

    def sleeping_backends() -> set[int]:
        return {row[0] for row in pg.execute("SELECT pid FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%%' "
                                             f"AND state = 'active' AND datname = '{database}'")}

    daemon.kill9()
    orphans = sleeping_backends()  # PostgreSQL notices the dead client only when pg_sleep ends
    restarted = DaemonProcess(tmp_path, config, "host-k").start()
    daemons.append(restarted)
    restarted.wait_for_notify("READY=1")
    interrupted = next(r for r in ledger_rows(state, "ping_database") if r["id"] == running[0]["id"])
    assert interrupted["status"] == "abandoned"
    history = json.loads(run_cli("history", "--json", "--job", "ping_database", "--config", str(config)).stdout)
    assert any(run["id"] == running[0]["id"] and run["status"] == "abandoned" for run in history)

    # SIGTERM during a running job: bounded grace, then its query is cancelled in PostgreSQL; exit 0
    wait_until(lambda: [r for r in ledger_rows(state, "ping_database")
                        if r["status"] == "running" and r["pid"] == restarted.process.pid], 40,
               "the restarted daemon never started the job", process=restarted.process)
    started = time.monotonic()
    restarted.signal(signal.SIGTERM)
    assert restarted.wait(20) == 0
    assert time.monotonic() - started < 10
    assert restarted.notified("STOPPING=1")
    ran = [r for r in ledger_rows(state, "ping_database")
           if r["pid"] == restarted.process.pid and r["status"] not in ("skipped", "missed")]
    assert [r["status"] for r in ran] == ["cancelled"] and ran[0]["error_code"].startswith("J006")
    assert sleeping_backends() <= orphans, "the stopped daemon's query is still running"


def test_daemon_waits_for_an_unreachable_state_store_before_ready_and_still_stops_on_sigterm(tmp_path, database_url,
                                                                                           daemons):
    from scheduler.pgcluster import free_port

    config = tmp_path / "config.toml"
    config.write_text(f'[database]\nurl = "{database_url}"\n\n[state]\n'
                      f'url = "postgresql://maint:state-secret-77@127.0.0.1:{free_port()}/state"\n\n'
                      '[scheduler]\nretry_initial = "200ms"\nretry_max = "400ms"\n\n' + only_ping("every 1s"))
    daemon = DaemonProcess(tmp_path, config, "host-s").start()
    daemons.append(daemon)
    wait_until(lambda: daemon.log().count("J001: the state store is unreachable") >= 3, 20,
               "no retries while the state store is unreachable", process=daemon.process)
    assert not daemon.notified("READY=1"), "READY before the state store answered"
    assert any("waiting for the state store" in line for line in daemon.notified("STATUS="))
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(10) == 0
    assert "state-secret-77" not in daemon.log()
