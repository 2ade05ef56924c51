"""`jackpot-maint diagnose` through the real CLI: exit 0 all ok, 1 warnings, 2 critical."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scheduler.simulator import SimulatorProcess

QUIET = """
[jobs.monitor]
cpu_sample = "50ms"

[jobs.monitor.cpu]
warning = 101
critical = 101
"""


@pytest.fixture
def setup(tmp_path, database_url, jackpots, make_config):
    directory = tmp_path / "svc"
    (directory / "logs").mkdir(parents=True)
    service = SimulatorProcess.start(log_path=str(directory / "logs" / "application.log"), database_url=database_url)
    service_section = (f'[service]\nbase_url = "{service.url}"\ndirectory = "{directory}"\n'
                       f'process_pattern = "scheduler\\\\.simulator .*--log {directory}"\n')
    path = make_config(service_section + QUIET)
    yield service, path
    service.stop()


def test_all_checks_ok_exits_0_with_a_table_even_without_a_usable_state_store(cli, setup, tmp_path):
    _, path = setup
    text = Path(path).read_text().replace('[state]\nurl = "', '[state]\nurl = "sqlite:////proc/no-such-dir/state.db" #')
    broken = tmp_path / "broken-state.toml"
    broken.write_text(text)
    completed = cli("diagnose", "--config", str(broken))
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "all checks ok" in completed.stdout and "state store unavailable" in completed.stdout
    for name in ("service.health", "process.running", "log.errors", "database.blocking", "host.disk:/"):
        assert name in completed.stdout


def test_a_warning_exits_1_and_shows_the_guides_hint(cli, setup):
    service, path = setup
    service.set_mode("degraded", endpoint="/health/jackpot")
    service.log_errors(2, "Database query failed: timeout")
    completed = cli("diagnose", "--config", str(path))
    assert completed.returncode == 1, completed.stdout + completed.stderr
    line = next(line for line in completed.stdout.splitlines() if "service.health_jackpot " in line)
    assert "jackpot pools unhealthy" in line
    assert "| " in completed.stdout and "Database query failed: timeout [2/2]" in completed.stdout


def test_a_critical_check_exits_2_and_json_says_why(cli, setup):
    service, path = setup
    service.set_mode("down")
    completed = cli("diagnose", "--json", "--config", str(path))
    assert completed.returncode == 2, completed.stderr
    report = json.loads(completed.stdout)
    assert report["exit_code"] == 2 and report["counts"]["critical"] >= 1
    health = {check["name"]: check for check in report["checks"]}["service.health"]
    assert (health["state"], health["category"], health["code"]) == ("critical", "service_down", "J001")
    assert "restart the service" in health["hint"]
    assert report["database_snapshot"]["connections"]["max_connections"] == 100
