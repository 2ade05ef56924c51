"""Database checks against the test PostgreSQL: real sessions, real locks, real long queries."""

from __future__ import annotations

import threading

import time

import psycopg
import pytest
from pydantic import SecretStr

from helpers_monitor import (by_name, service_dir, simulator, wait_for, with_monitor,  # noqa: F401 - fixtures
                             write_settings)
from jobs.checks.database import DATABASE_CHECKS
from jobs.monitor import run_checks


def database_results(settings, state=None, persist=False):
    options = settings.jobs.monitor
    off = {name: getattr(options, name).model_copy(update={"enabled": False})
           for name in ("cpu", "memory", "disk", "endpoints", "process", "log_errors")}
    return by_name(run_checks(settings, options.model_copy(update=off), state=state, persist=persist))


@pytest.fixture
def settings(make_config, simulator, service_dir, jackpots):
    return write_settings(make_config, simulator, service_dir)


def session_pid(url: str, application_name: str, state: str | None = None) -> int:
    def find():
        with psycopg.connect(url, autocommit=True) as connection:
            row = connection.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND (%s::text IS NULL OR state = %s)",
                (application_name, state, state)).fetchone()
        return row[0] if row else None
    return wait_for(find)


def test_healthy_database_passes_every_check(settings):
    results = database_results(settings)
    assert set(DATABASE_CHECKS) <= set(results)
    for name in DATABASE_CHECKS:
        assert results[name].state == "ok", results[name]
    snapshot = results["database.connections"].details["snapshot"]
    assert snapshot["connections"]["max_connections"] == 100
    assert snapshot["longest_queries"] == []


def test_blocking_chain_is_reported_as_who_blocks_whom_and_clears(settings, simulator, database_url):
    settings = with_monitor(settings, blocking={"warning": 0.2})
    simulator.hold_lock(row_id=1)
    holder = session_pid(database_url, "jackpot-service", "idle in transaction")
    victim = psycopg.connect(database_url, application_name="jackpot-worker", autocommit=True)
    victim_pid = victim.info.backend_pid
    worker = threading.Thread(target=victim.execute, args=("UPDATE jackpots SET version = version + 1 WHERE id = 1",),
                              daemon=True)
    worker.start()
    try:
        wait_for(lambda: database_results(settings)["database.blocking"].value > 0.3)
        results = database_results(settings)
        blocking = results["database.blocking"]
        assert blocking.state == "warning"
        edge = blocking.details["chain"][0]
        assert (edge["blocker"]["pid"], edge["blocked"]["pid"]) == (holder, victim_pid)
        assert edge["head"] is True and edge["blocker"]["application_name"] == "jackpot-service"
        assert f"pid {holder} (jackpot-service, idle in transaction" in blocking.message
        assert f"blocks pid {victim_pid} (jackpot-worker, waiting" in blocking.message
        # every database result carries the chain in its snapshot, for any database alert
        assert results["database.connections"].details["snapshot"]["blocking_chain"] == blocking.details["lines"]
        # the waiting UPDATE is reported as blocked, not as a long-running query
        assert results["database.long_queries"].details["count"] == 0
        assert results["database.service_connections"].value >= 1
    finally:
        simulator.release_lock()
        worker.join(10)
        victim.close()
    assert database_results(settings)["database.blocking"].state == "ok"


def test_long_query_over_a_short_threshold_is_found_with_its_text_and_clears(settings, simulator, database_url):
    settings = with_monitor(settings, long_queries={"warning": 1.0, "critical": 60.0})
    simulator.start_long_query(30)
    try:
        result = wait_for(lambda: (r := database_results(settings)["database.long_queries"]).state == "warning" and r)
        assert result.details["count"] == 1
        query = result.details["queries"][0]
        assert query["application_name"] == "jackpot-service" and "pg_sleep" in query["query"]
        assert "jackpot-service" in result.message
        snapshot = result.details["snapshot"]
        assert snapshot["longest_queries"][0]["pid"] == query["pid"]
    finally:
        simulator.stop_long_query()
    assert database_results(settings)["database.long_queries"].state == "ok"


def test_the_daemons_own_long_queries_are_not_reported(settings, database_url):
    settings = with_monitor(settings, long_queries={"warning": 0.3})
    own = psycopg.connect(database_url, application_name="jackpot-maint:vacuum_analyze", autocommit=True)
    worker = threading.Thread(target=own.execute, args=("SELECT pg_sleep(1)",), daemon=True)
    worker.start()
    try:
        session_pid(database_url, "jackpot-maint:vacuum_analyze", "active")
        time.sleep(0.5)
        results = database_results(settings)
        assert results["database.long_queries"].state == "ok"
        assert results["database.connections"].details["snapshot"]["connections"]["daemon"] >= 2
    finally:
        worker.join(5)
        own.close()


def test_idle_in_transaction_and_service_connections_cross_their_thresholds(settings, simulator, database_url):
    settings = with_monitor(settings, idle_in_transaction={"warning": 0.2}, service_connections={"warning": 0})
    simulator.hold_lock()
    try:
        result = wait_for(lambda: (r := database_results(settings))["database.idle_in_transaction"].state == "warning" and r)
        assert result["database.service_connections"].state == "warning"
        assert result["database.idle_in_transaction"].details["sessions"][0]["application_name"] == "jackpot-service"
    finally:
        simulator.release_lock()
    results = database_results(settings)
    assert results["database.idle_in_transaction"].state == "ok"
    assert results["database.service_connections"].state == "ok"


def test_statistics_checks_cross_thresholds_set_via_config_and_come_back(settings):
    strict = with_monitor(settings, connections={"warning": 0.5}, wraparound={"warning": 1},
                          cache_hit={"warning": 100.01, "min_blocks": 0}, database_response_time={"warning": 0.0001})
    results = database_results(strict)
    assert results["database.connections"].state == "warning"
    assert results["database.wraparound"].state == "warning" and results["database.wraparound"].value > 1
    assert results["database.cache_hit"].state == "warning" and results["database.cache_hit"].details["lower_is_worse"]
    assert results["database.response_time"].state == "warning"
    results = database_results(settings)
    for name in ("database.connections", "database.wraparound", "database.cache_hit", "database.response_time"):
        assert results[name].state == "ok"


def test_dead_tuple_ratio_rises_after_updates_and_falls_after_vacuum(settings, jackpots):
    settings = with_monitor(settings, dead_tuples={"warning": 10, "critical": 30, "min_dead_rows": 10})
    with psycopg.connect(jackpots.url, autocommit=True) as connection:
        connection.execute("UPDATE jackpots SET version = version + 1")
        connection.execute("SELECT pg_stat_force_next_flush()")
    result = wait_for(lambda: (r := database_results(settings)["database.dead_tuples"]).state == "critical" and r)
    assert result.details["dead"] >= 100 and "last vacuum never" in result.message
    jackpots.query("VACUUM jackpots")
    result = wait_for(lambda: (r := database_results(settings)["database.dead_tuples"]).state == "ok" and r)
    assert result.details["last_vacuum"] is not None


def test_a_real_deadlock_is_counted_once_since_the_last_cycle(settings, database_url, tmp_path):
    from scheduler.state import StateStore

    state = StateStore.open(settings)
    assert database_results(settings, state, persist=True)["database.deadlocks"].value == 0  # the baseline
    first = psycopg.connect(database_url, autocommit=False)
    second = psycopg.connect(database_url, autocommit=False)
    for connection in (first, second):
        connection.execute("SET deadlock_timeout = '50ms'")
    first.execute("UPDATE jackpots SET version = version + 1 WHERE id = 1")
    second.execute("UPDATE jackpots SET version = version + 1 WHERE id = 2")
    errors = []

    def cross(connection, row):
        try:
            connection.execute("UPDATE jackpots SET version = version + 1 WHERE id = %s", (row,))
        except psycopg.errors.DeadlockDetected as error:
            errors.append(error)
            connection.rollback()
            connection.execute("SELECT pg_stat_force_next_flush()")
            connection.commit()

    threads = [threading.Thread(target=cross, args=(first, 2)), threading.Thread(target=cross, args=(second, 1))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    for connection in (first, second):
        connection.rollback()
        connection.close()
    assert len(errors) == 1
    result = wait_for(lambda: (r := database_results(settings, state, persist=True)["database.deadlocks"]).value == 1 and r)
    assert result.state == "warning" and "since the last cycle" in result.message
    assert database_results(settings, state, persist=True)["database.deadlocks"].state == "ok"
    state.dispose()


def test_unreachable_database_is_critical_and_the_rest_unknown(make_config, simulator, service_dir, pg):
    from scheduler.pgcluster import free_port

    settings = write_settings(make_config, simulator, service_dir)
    url = f"postgresql://postgres:nope@127.0.0.1:{free_port()}/nothing"
    database = settings.database.model_copy(update={"url": SecretStr(url), "connect_timeout": 1})
    settings = settings.model_copy(update={"database": database})
    results = database_results(settings)
    assert results["database.reachable"].state == "critical"
    assert "cannot connect" in results["database.reachable"].message and "nope" not in results["database.reachable"].message
    assert all(results[name].state == "unknown" for name in DATABASE_CHECKS[1:])


def test_a_missing_jackpots_table_makes_dead_tuples_unknown_not_a_crash(settings):
    settings = settings.model_copy(update={"database": settings.database.model_copy(update={"table": "games.jackpots"})})
    results = database_results(settings)
    assert results["database.dead_tuples"].state == "unknown"
    assert "games.jackpots not found" in results["database.dead_tuples"].message
    assert results["database.blocking"].state == "ok"
