"""vacuum_analyze on a real PostgreSQL: it vacuums, it never waits on the service's locks, it says what it did."""

from __future__ import annotations

import json
import time
import uuid

import psycopg
import pytest

from scheduler import sample_data


def run_json(cli, config, *args):
    result = cli("jobs", "run", "vacuum_analyze", "--json", "--config", str(config), *args)
    assert result.stdout, result.stderr
    return result, json.loads(result.stdout)


class Outcome:
    def __init__(self, outcome):
        self.returncode = outcome.exit_code
        self.stderr = str(outcome.error or "")


def run_here(url, state_url, *, dry_run=False, **options):
    """Run the job in this process (faster than the CLI; same runner, ledger and database).
    Return (an object with returncode, the payload the CLI's --json would print)."""
    import config.settings  # noqa: F401 - loads the job registry before the job module
    from config.settings import Settings
    from scheduler.runner import run_job

    settings = Settings(database={"url": url}, state={"url": state_url})
    outcome = run_job(settings, "vacuum_analyze", dry_run=dry_run, options_override=options or None)
    payload = outcome.record.to_dict()
    payload["findings"] = [finding.to_dict() for finding in outcome.result.findings] if outcome.result else []
    return Outcome(outcome), payload


def make_dead_tuples(url, table="jackpots"):
    with psycopg.connect(url, autocommit=True) as connection:
        # autovacuum must not clean up before the job does
        connection.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
        connection.execute(f"UPDATE {table} SET version = version + 1")
        connection.execute(f"ANALYZE {table}")


def stat(url, column, table="jackpots"):
    with psycopg.connect(url, autocommit=True) as connection:
        return connection.execute(f"SELECT {column} FROM pg_stat_user_tables WHERE relid = %s::regclass",
                                  (table,)).fetchone()[0]


def test_vacuum_analyze_removes_dead_tuples_and_reports_before_and_after(cli, make_config, jackpots):
    make_dead_tuples(jackpots.url)
    result, payload = run_json(cli, make_config())
    assert result.returncode == 0, result.stderr
    summary = payload["summary"]
    assert summary["vacuumed"] == 1 and summary["skipped_locked"] == 0
    details = summary["details"]["jackpots"]
    assert details["statement"] == 'VACUUM (ANALYZE, SKIP_LOCKED) "public"."jackpots"'
    assert details["before"]["dead_tuples"] == 100
    assert details["after"]["dead_tuples"] == 0
    assert details["before"]["last_vacuum"] is None and details["after"]["last_vacuum"] is not None
    for key in ("live_tuples", "table_bytes", "toast_bytes", "index_bytes", "total_bytes", "last_autovacuum",
                "last_analyze", "last_autoanalyze"):
        assert key in details["after"]
    assert details["seconds"] >= 0
    assert stat(jackpots.url, "vacuum_count") == 1


@pytest.mark.parametrize("mode", ["SHARE UPDATE EXCLUSIVE", "ACCESS EXCLUSIVE"])
def test_vacuum_analyze_skips_a_table_another_session_locks_and_reports_it_without_waiting(jackpots, state_url, mode):
    with psycopg.connect(jackpots.url) as service:
        service.execute(f"LOCK TABLE jackpots IN {mode} MODE")
        started = time.monotonic()
        result, payload = run_here(jackpots.url, state_url)
        elapsed = time.monotonic() - started
        service.rollback()
    assert result.returncode == 1, "a skipped table is a problem to see"
    assert payload["summary"]["skipped_locked"] == 1 and payload["summary"]["vacuumed"] == 0
    assert "SKIPPED" in payload["message"] and "lock was not available" in payload["message"]
    assert elapsed < 10, "it must not wait for the lock"
    assert stat(jackpots.url, "vacuum_count") == 0


def test_vacuum_analyze_skipped_three_runs_in_a_row_raises_a_finding(jackpots, state_url):
    with psycopg.connect(jackpots.url) as service:
        service.execute("LOCK TABLE jackpots IN SHARE UPDATE EXCLUSIVE MODE")
        findings = [run_here(jackpots.url, state_url)[1]["findings"] for _ in range(3)]
        service.rollback()
    assert findings[0] == [] and findings[1] == []
    assert findings[2][0]["ok"] is False and "skipped 3 runs in a row" in findings[2][0]["title"]
    _, payload = run_here(jackpots.url, state_url)
    assert payload["summary"]["vacuumed"] == 1
    assert payload["findings"][0]["ok"] is True, "a successful vacuum resolves it"


def test_vacuum_analyze_skips_a_table_below_min_dead_tuples_and_says_so(jackpots, state_url):
    make_dead_tuples(jackpots.url)
    result, payload = run_here(jackpots.url, state_url, min_dead_tuples=500)
    assert result.returncode == 0
    assert payload["summary"]["not_needed"] == 1
    assert "100 dead tuples < min_dead_tuples 500" in payload["message"]
    assert stat(jackpots.url, "vacuum_count") == 0
    result, payload = run_here(jackpots.url, state_url, min_dead_ratio=0.2)
    assert payload["summary"]["vacuumed"] == 1, "100 dead of 200 is a ratio of 0.5"


def test_vacuum_full_needs_both_switches(jackpots, state_url):
    relfilenode = "SELECT relfilenode FROM pg_class WHERE oid = 'jackpots'::regclass"
    before = jackpots.scalar(relfilenode)
    result, payload = run_here(jackpots.url, state_url, full=True)
    assert result.returncode == 0
    assert "allow_full" in payload["message"]
    assert payload["summary"]["details"]["jackpots"]["statement"].startswith("VACUUM (ANALYZE")
    assert jackpots.scalar(relfilenode) == before, "no rewrite"
    result, payload = run_here(jackpots.url, state_url, full=True, allow_full=True)
    assert result.returncode == 0, result.stderr
    assert payload["summary"]["details"]["jackpots"]["statement"].startswith("VACUUM (FULL, ANALYZE, SKIP_LOCKED)")
    assert jackpots.scalar(relfilenode) != before, "VACUUM FULL rewrote the table"


def test_vacuum_analyze_dry_run_says_what_it_would_do_and_does_nothing(cli, make_config, jackpots):
    make_dead_tuples(jackpots.url)
    result, payload = run_json(cli, make_config(), "--dry-run")
    assert result.returncode == 0
    assert 'would run VACUUM (ANALYZE, SKIP_LOCKED) "public"."jackpots"' in payload["message"]
    assert "100 dead tuples" in payload["message"]
    assert stat(jackpots.url, "vacuum_count") == 0
    assert stat(jackpots.url, "n_dead_tup") == 100


def test_vacuum_analyze_of_several_tables_in_another_schema(database_url, state_url):
    sample_data.create_table(database_url, "games.jackpots")
    sample_data.insert_rows(database_url, "games.jackpots", rows=10)
    result, payload = run_here(database_url, state_url, tables=["games.jackpots", "games.missing"])
    assert result.returncode == 1
    assert payload["summary"]["vacuumed"] == 1 and payload["summary"]["missing"] == 1
    assert "games.missing" in payload["message"] and "does not exist" in payload["message"]
    assert stat(database_url, "vacuum_count", "games.jackpots") == 1


def test_vacuum_analyze_rejects_a_hostile_table_name(cli, make_config, jackpots):
    config = make_config('[jobs.vacuum_analyze]\ntables = ["jackpots; DROP TABLE jackpots"]\n')
    result = cli("jobs", "run", "vacuum_analyze", "--config", str(config))
    assert result.returncode == 2
    assert "jobs.vacuum_analyze.tables" in result.stderr and "not a valid table name" in result.stderr
    assert jackpots.scalar("SELECT count(*) FROM jackpots") == 100


def test_vacuum_analyze_as_a_role_that_does_not_own_the_table_names_the_grant(jackpots, pg, state_url):
    role = f"maint_{uuid.uuid4().hex[:8]}"
    database = jackpots.url.rsplit("/", 1)[1]
    pg.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'role-secret-772'")
    pg.execute(f"GRANT SELECT ON jackpots TO {role}", database=database)
    result, payload = run_here(pg.url(database, user=role, password="role-secret-772"), state_url)
    assert result.returncode == 1
    assert payload["summary"]["not_permitted"] == 1
    assert f'GRANT "postgres" TO "{role}";' in payload["message"]
    assert stat(jackpots.url, "vacuum_count") == 0
