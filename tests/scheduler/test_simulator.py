"""The simulated jackpot service: a real process on 127.0.0.1, switched at run time."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

import psycopg
import pytest

from conftest import clean_env
from scheduler.simulator import Simulator, SimulatorProcess


def get(url: str, timeout: float = 5) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture
def service(tmp_path, database_url, jackpots):
    process = SimulatorProcess.start(log_path=str(tmp_path / "logs" / "application.log"), database_url=database_url)
    yield process
    process.stop()


def test_serves_the_guides_endpoints_with_their_expected_shapes(service):
    assert get(service.url + "/health")[1]["status"] == "healthy"
    assert "uptime" in get(service.url + "/health")[1]
    assert {"status", "connection_count", "response_time"} <= set(get(service.url + "/health/database")[1])
    assert {"status", "pools", "last_update"} <= set(get(service.url + "/health/jackpot")[1])
    assert get(service.url + "/metrics")[1]["error_rate"] == 0.0
    assert get(service.url + "/nothing")[0] == 404


def test_modes_switch_at_run_time_for_all_or_one_endpoint(service):
    service.set_mode("down")
    status, body = get(service.url + "/health")
    assert (status, body["status"]) == (503, "unhealthy")
    service.set_mode("degraded", endpoint="/health/jackpot")
    assert get(service.url + "/health/jackpot")[1]["status"] == "degraded"
    assert get(service.url + "/health")[0] == 503  # the others keep the global mode
    service.set_slow_seconds(0.3)
    service.set_mode("slow")
    started = time.perf_counter()
    assert get(service.url + "/health")[1]["status"] == "healthy"
    assert time.perf_counter() - started >= 0.3
    service.set_error_rate(2.5)
    assert get(service.url + "/metrics")[1]["error_rate"] == 2.5
    with pytest.raises(RuntimeError, match="unknown mode"):
        service.set_mode("sideways")


def test_hang_holds_the_request_until_the_mode_changes(service):
    service.set_mode("hang", endpoint="/health")
    with pytest.raises((TimeoutError, urllib.error.URLError)):
        urllib.request.urlopen(service.url + "/health", timeout=0.3)
    assert get(service.url + "/metrics")[0] == 200  # other endpoints still answer
    service.set_mode("healthy")
    assert get(service.url + "/health")[1]["status"] == "healthy"


def test_error_lines_are_appended_to_the_log_on_demand_and_survive_rotation(service, tmp_path):
    log = tmp_path / "logs" / "application.log"
    service.log_errors(3, "Database query failed: timeout")
    lines = [line for line in log.read_text().splitlines() if " ERROR " in line]
    assert len(lines) == 3 and lines[0].endswith("Database query failed: timeout [1/3]")
    log.rename(tmp_path / "logs" / "application.log.1")
    service.log_errors(1)
    assert " ERROR " in log.read_text()


def test_holds_a_row_lock_and_runs_a_long_query_in_the_database(service, database_url):
    service.hold_lock(row_id=2)
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute("SET lock_timeout = '200ms'")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            connection.execute("UPDATE jackpots SET version = version + 1 WHERE id = 2")
    assert service.state()["locked_row"] == 2
    service.release_lock()
    service.start_long_query(30)
    with psycopg.connect(database_url, autocommit=True) as connection:
        rows = connection.execute("SELECT query FROM pg_stat_activity WHERE application_name = 'jackpot-service' "
                                  "AND state = 'active'").fetchall()
    assert rows and "pg_sleep" in rows[0][0]
    service.stop_long_query()
    assert service.state()["long_query"] is False


def test_in_process_simulator_has_the_same_api(tmp_path):
    with Simulator(log_path=str(tmp_path / "app.log")) as service:
        service.set_mode("down", endpoint="/health")
        assert get(service.url + "/health")[0] == 503
        assert get(service.url + "/health/jackpot")[0] == 200
        service.log_errors(2)
    assert (tmp_path / "app.log").read_text().count(" ERROR ") == 2


def test_module_and_cli_entry_points_start_and_stop_cleanly(cli, tmp_path):
    from scheduler.pgcluster import free_port

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "scheduler", "simulate", "serve", "--port", str(port),
                               "--application-log", str(tmp_path / "app.log")], stdout=subprocess.PIPE, text=True,
                              env=clean_env())
    try:
        assert server.stdout.readline().strip() == f"listening on http://127.0.0.1:{port}"
        completed = cli("simulate", "control", f"http://127.0.0.1:{port}", "set", "mode=down", "error_rate=4")
        assert completed.returncode == 0, completed.stderr
        assert json.loads(completed.stdout)["mode"] == "down"
        assert get(f"http://127.0.0.1:{port}/metrics")[1]["error_rate"] == 4
    finally:
        server.terminate()
        assert server.wait(10) == 0
        server.stdout.close()
