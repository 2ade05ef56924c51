"""The monitor job: hysteresis over several cycles, findings that raise and resolve alerts, the run
summary, and opt-in remediation (terminating long queries, restarting the service)."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timezone

import psycopg
import pytest

from helpers_monitor import (Cycles, python_command, service_dir, simulator, wait_for,  # noqa: F401 - fixtures
                             with_monitor, write_settings)
from jobs.monitor import advance
from scheduler.state import StateStore

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def findings_by_key(result):
    return {finding.key: finding for finding in result.findings}


@pytest.fixture
def cycles(make_config, simulator, service_dir, jackpots):
    settings = write_settings(make_config, simulator, service_dir)
    state = StateStore.open(settings)
    yield Cycles(settings, state)
    state.dispose()


def test_hysteresis_raises_after_for_cycles_and_clears_after_recover_cycles():
    record, transitions = None, []
    for state in ["critical", "critical", "ok", "warning", "ok", "ok", "ok"]:
        record, transition = advance(record, state, 2, 2, NOW)
        transitions.append(transition)
    assert transitions == [None, "raised", None, None, None, "recovered", None]
    assert record["firing"] is False and record["passing"] == 3


def test_cpu_needs_three_failing_cycles_and_unknown_changes_nothing():
    record = None
    for expected in [None, None, "raised"]:
        record, transition = advance(record, "warning", 3, 2, NOW)
        assert transition == expected
    record, transition = advance(record, "unknown", 3, 2, NOW)
    assert transition is None and record["firing"] and record["failing"] == 3


def test_a_flapping_check_never_raises():
    record = None
    for state in ["critical", "ok"] * 5:
        record, transition = advance(record, state, 2, 2, NOW)
        assert transition is None
    assert record["firing"] is False


def test_health_down_raises_a_p1_service_down_finding_on_the_second_cycle_and_resolves_after_two_good(cycles, simulator):
    simulator.set_mode("down")
    first = cycles.run()
    assert first.status == "problems"
    assert first.summary["checks"]["service.health"]["state"] == "critical"
    assert first.summary["checks"]["service.health"]["failing_cycles"] == 1
    assert "service.health" not in findings_by_key(first)  # one bad cycle is not an alert yet

    second = findings_by_key(cycles.run())["service.health"]
    assert (second.ok, second.category, second.severity, second.code, second.scope) == (False, "service_down", "P1", "J001", "host")
    assert "HTTP 503" in second.title and second.details["hint"]
    assert any("failing for 2 consecutive cycle(s)" in line for line in second.symptoms)

    simulator.set_mode("healthy")
    recovering = cycles.run()
    assert "service.health" not in findings_by_key(recovering)  # one good cycle: still firing, no news
    assert recovering.summary["checks"]["service.health"]["firing"] is True
    resolved = findings_by_key(cycles.run())["service.health"]
    assert resolved.ok is True and "recovered" in resolved.title
    assert "service.health" not in findings_by_key(cycles.run())


def test_counters_survive_between_cycles_in_the_state_store(cycles, simulator):
    simulator.set_error_rate(3.0)
    cycles.run()
    stored = cycles.state.get_value("monitor", "test-host:hysteresis")
    assert stored["service.error_rate"]["failing"] == 1
    finding = findings_by_key(cycles.run())["service.error_rate"]
    assert (finding.category, finding.severity, finding.code) == ("performance", "P2", "J006")
    assert cycles.state.get_value("monitor", "test-host:hysteresis")["service.error_rate"]["firing"] is True


def test_summary_holds_every_check_and_a_database_snapshot(cycles):
    result = cycles.run()
    assert result.status == "ok", result.message
    summary = result.summary
    assert summary["checks_run"] == len(summary["checks"]) >= 25
    assert {"host.memory", "service.health", "process.running", "log.errors", "database.blocking"} <= set(summary["checks"])
    assert summary["database_snapshot"]["connections"]["max_connections"] == 100
    assert "snapshot" not in summary["checks"]["database.blocking"].get("details", {})
    json.dumps(summary)  # it goes to the ledger as JSON


def test_database_findings_carry_scope_database_and_the_snapshot(cycles, simulator):
    settings = with_monitor(cycles.settings, idle_in_transaction={"warning": 0.0001}, for_cycles=1)
    simulator.hold_lock()
    try:
        finding = findings_by_key(cycles.run(settings=settings))["database.idle_in_transaction"]
    finally:
        simulator.release_lock()
    assert (finding.scope, finding.category, finding.code) == ("database", "performance", "J006")
    assert finding.details["snapshot"]["connections"]["service"]["idle_in_transaction"] == 1


def test_long_query_is_terminated_when_remediation_is_on_and_recorded_as_an_attempt(cycles, simulator, database_url, service_dir):
    settings = with_monitor(cycles.settings, for_cycles=1, long_queries={"warning": 0.5},
                            terminate_queries={"enabled": True, "older_than": 0.5, "pattern": "pg_sleep"})
    simulator.start_long_query(60)
    own = psycopg.connect(database_url, application_name="jackpot-maint:other", autocommit=True)
    daemon_query = threading.Thread(target=own.execute, args=("SELECT pg_sleep(1.5)",), daemon=True)
    daemon_query.start()

    def long_query_pid():
        with psycopg.connect(database_url, autocommit=True) as connection:
            row = connection.execute("SELECT pid FROM pg_stat_activity WHERE application_name = 'jackpot-service' "
                                     "AND state = 'active' AND now() - query_start > interval '0.6 s'").fetchone()
        return row and row[0]

    pid = wait_for(long_query_pid)
    dry = cycles.run(settings=settings, dry_run=True)
    assert dry.summary["actions"][0]["text"].split(" ", 1)[1].startswith(f"would terminate pid {pid}")
    assert long_query_pid() == pid  # a dry run changes nothing

    result = cycles.run(settings=settings)
    actions = [action for action in result.summary["actions"] if action["action"] == "terminate_query"]
    assert [action["target"]["pid"] for action in actions] == [pid] and actions[0]["done"] is True
    finding = findings_by_key(result)["database.long_queries"]
    assert any(f"terminated pid {pid} (jackpot-service)" in attempt for attempt in finding.attempts)
    wait_for(lambda: not long_query_pid())
    daemon_query.join(5)
    assert own.execute("SELECT 1").fetchone() == (1,)  # the daemon's own session was never touched
    own.close()
    # the service saw its query killed, as the real one would log it
    wait_for(lambda: "terminating connection" in (service_dir / "logs" / "application.log").read_text())


def test_restart_command_runs_after_n_failed_health_checks_at_most_m_times_an_hour(cycles, simulator, tmp_path):
    marker = tmp_path / "restarts.txt"
    command = python_command(f"open({str(marker)!r}, 'a').write('restarted\\n')")
    settings = with_monitor(cycles.settings, restart_service={"enabled": True, "command": command,
                                                              "after_failures": 2, "max_per_hour": 1})
    simulator.set_mode("down")
    first = cycles.run(settings=settings)
    assert first.summary["actions"] == [] and not marker.exists()
    second = cycles.run(settings=settings)
    assert second.summary["actions"][0]["done"] is True
    assert marker.read_text() == "restarted\n"
    finding = findings_by_key(second)["service.health"]
    assert any("after 2 failed health checks: exit 0" in attempt for attempt in finding.attempts)
    cycles.run(settings=settings)
    fourth = cycles.run(settings=settings)  # due again, but the hourly limit says no
    assert "restart not run" in fourth.summary["actions"][0]["text"]
    assert marker.read_text() == "restarted\n"
    assert len(findings_by_key(fourth)["service.health"].attempts) == 2


def test_remediation_is_off_by_default(cycles, simulator):
    simulator.set_mode("down")
    for _ in range(4):
        result = cycles.run()
    assert result.summary["actions"] == []


def test_monitor_through_the_real_cli_with_the_database_down_still_runs_and_reports_it(cli, make_config, simulator, service_dir):
    from helpers_monitor import QUIET_MONITOR, service_section
    from scheduler.pgcluster import free_port

    path = make_config(service_section(simulator, service_dir) + QUIET_MONITOR,
                       database=f"postgresql://postgres:secret-pw@127.0.0.1:{free_port()}/jackpot_db")
    simulator.set_mode("down", endpoint="/health/database")  # the service sees it too
    completed = cli("jobs", "run", "monitor", "--json", "--config", str(path), "--set", "jobs.monitor.for_cycles=1",
                    "--set", "database.connect_timeout=1")
    assert completed.returncode == 1, completed.stderr  # problems found, not "dependency unreachable"
    payload = json.loads(completed.stdout)
    assert payload["status"] == "problems"
    assert payload["summary"]["checks"]["service.health"]["state"] == "ok"
    findings = {item["key"]: item for item in payload["findings"]}
    database = findings["database.reachable"]
    assert (database["category"], database["severity"], database["code"], database["scope"]) == ("service_down", "P1", "J001", "database")
    service = findings["service.health_database"]
    assert (service["ok"], service["scope"], service["severity"]) == (False, "host", "P1")
    assert "secret-pw" not in completed.stdout + completed.stderr


def test_a_firing_check_that_is_disabled_is_resolved_not_left_open(cycles, simulator):
    simulator.set_error_rate(5.0)
    cycles.run()
    assert findings_by_key(cycles.run())["service.error_rate"].ok is False
    disabled = with_monitor(cycles.settings, error_rate={"enabled": False})
    finding = findings_by_key(cycles.run(settings=disabled))["service.error_rate"]
    assert finding.ok is True and "no longer checked" in finding.title
    assert "service.error_rate" not in cycles.state.get_value("monitor", "test-host:hysteresis")


def test_only_consecutive_critical_health_checks_count_towards_a_restart(cycles, simulator, tmp_path):
    marker = tmp_path / "restarts.txt"
    command = python_command(f"open({str(marker)!r}, 'a').write('restarted\\n')")
    settings = with_monitor(cycles.settings, restart_service={"enabled": True, "command": command, "after_failures": 2})
    simulator.set_mode("degraded", endpoint="/health")  # a warning, not a failed health check
    cycles.run(settings=settings)
    cycles.run(settings=settings)
    simulator.set_mode("down")
    assert cycles.run(settings=settings).summary["actions"] == []
    assert cycles.run(settings=settings).summary["actions"][0]["done"] is True
    assert marker.read_text() == "restarted\n"


def test_each_host_keeps_its_own_counters_in_a_shared_state_store(cycles, simulator):
    other_host = Cycles(cycles.settings, cycles.state, cycles.clock, host="host-2")
    simulator.set_error_rate(4.0)
    cycles.run()
    assert "service.error_rate" in findings_by_key(cycles.run())  # test-host: second failing cycle
    first_on_other = other_host.run()
    assert "service.error_rate" not in findings_by_key(first_on_other)  # host-2 counts its own cycles
    assert first_on_other.summary["checks"]["service.error_rate"]["failing_cycles"] == 1
