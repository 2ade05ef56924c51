"""trim_history on a real PostgreSQL: what is kept, what is archived, what is never touched."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import psycopg
import pytest

from scheduler import sample_data

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_json(cli, config, *args):
    """Run the job through the real CLI; return (CompletedProcess, its --json output)."""
    result = cli("jobs", "run", "trim_history", "--json", "--config", str(config), *args)
    assert result.stdout, result.stderr
    return result, json.loads(result.stdout)


class Outcome:
    def __init__(self, outcome):
        self.returncode = outcome.exit_code
        self.stderr = str(outcome.error or "")


def run_here(url, state_url, *, table="jackpots", dry_run=False, **options):
    """Run the job in this process (faster than the CLI; same runner, ledger and database).
    Return (an object with returncode, the payload the CLI's --json would print)."""
    import config.settings  # noqa: F401 - loads the job registry before the job module
    from config.settings import Settings
    from scheduler.runner import run_job

    settings = Settings(database={"url": url, "table": table}, state={"url": state_url})
    outcome = run_job(settings, "trim_history", dry_run=dry_run, options_override={"max_entries": 5, **options})
    payload = outcome.record.to_dict()
    payload["findings"] = [finding.to_dict() for finding in outcome.result.findings] if outcome.result else []
    return Outcome(outcome), payload


def init_schema(url):
    import config.settings  # noqa: F401
    from sqlalchemy import create_engine

    from jobs.maint_schema import ensure_schema

    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as connection:
        ensure_schema(connection)
    engine.dispose()


def histories(url, table="jackpots"):
    with psycopg.connect(url) as connection:
        rows = connection.execute(f"""SELECT id, contribution_history, win_history, version, last_modified_at
                                      FROM {table} ORDER BY id""").fetchall()
    return {row[0]: {"contribution_history": row[1], "win_history": row[2], "version": row[3],
                     "last_modified_at": row[4]} for row in rows}


def archived(url, source_table="jackpots"):
    """{(jackpot_id, column): [entries...]} concatenated in archive order."""
    result: dict = {}
    with psycopg.connect(url) as connection:
        for jackpot_id, column, entries, count, group in connection.execute("""
                SELECT jackpot_id, history_column, entries, entry_count, "group"
                FROM jackpot_maint.history_archive WHERE source_table = %s ORDER BY id""", (source_table,)):
            assert count == len(entries)
            result.setdefault((jackpot_id, column), []).extend(entries)
    return result


def assert_nothing_lost(original, now, archive):
    for row_id, before in original.items():
        for column in ("contribution_history", "win_history"):
            restored = archive.get((row_id, column), []) + (now[row_id][column] or [])
            if isinstance(before[column], list):
                assert restored == before[column], f"row {row_id} {column}"


@pytest.fixture
def over_limit(database_url):
    """40 rows: 12 contribution entries and 7 win entries each (limit 5 in these tests), plus 5 rows within it."""
    sample_data.create_table(database_url)
    sample_data.insert_rows(database_url, rows=40, contribution_entries=12, win_entries=7)
    sample_data.insert_rows(database_url, rows=5, contribution_entries=3, win_entries=5)
    return database_url


def test_trim_history_keeps_the_newest_entries_archives_the_rest_in_order_and_bumps_versions(cli, make_config, over_limit,
                                                                                               state_url):
    config = make_config("[jobs.trim_history]\nmax_entries = 5\n")
    init_schema(over_limit)
    original = histories(over_limit)
    result, payload = run_json(cli, config)
    assert result.returncode == 0, result.stderr
    now = histories(over_limit)
    archive = archived(over_limit)
    assert_nothing_lost(original, now, archive)
    trimmed = [row_id for row_id, row in original.items() if len(row["contribution_history"]) > 5
               or len(row["win_history"]) > 5]
    assert len(trimmed) == 40
    for row_id, before in original.items():
        after = now[row_id]
        for column in ("contribution_history", "win_history"):
            assert after[column] == before[column][-5:]
        if row_id in trimmed:
            assert after["version"] == before["version"] + 1
            assert after["last_modified_at"] > before["last_modified_at"]
        else:  # within the limit: not touched at all
            assert after == before
    summary = payload["summary"]
    assert summary["rows_scanned"] == 45
    assert summary["rows_trimmed"] == 40
    assert summary["entries_archived_contribution_history"] == 40 * 7
    assert summary["entries_archived_win_history"] == 40 * 2
    assert summary["rows_skipped_locked"] == 0
    assert summary["batches"] >= 1 and summary["longest_batch_lock_ms"] > 0
    # the reserved word "group" is carried into the archive
    with psycopg.connect(over_limit) as connection:
        mismatched = connection.execute("""
            SELECT count(*) FROM jackpot_maint.history_archive a JOIN jackpots j ON j.id = a.jackpot_id
            WHERE a."group" IS DISTINCT FROM j."group" """).fetchone()[0]
        run_ids = {row[0] for row in connection.execute("SELECT DISTINCT run_id FROM jackpot_maint.history_archive")}
    assert mismatched == 0
    assert run_ids == {payload["id"]}

    # a rerun finds nothing to do and changes nothing
    result, payload = run_here(over_limit, state_url)
    assert result.returncode == 0
    assert payload["summary"]["rows_trimmed"] == 0
    assert histories(over_limit) == now


def test_trim_history_never_modifies_null_or_non_array_histories_and_counts_them(jackpots, state_url):
    init_schema(jackpots.url)
    faults = sample_data.insert_faults(jackpots.url, over_limit_entries=20)
    # an object with many keys: lax jsonpath would wrap it into a one-element array
    big_object = json.dumps({f"k{i}": i for i in range(50)})
    jackpots.query("""INSERT INTO jackpots ("group", contribution_history, win_history)
                      VALUES ('group-x', %s, '"a scalar"') """, (big_object,))
    odd_ids = faults["history_not_array"] + faults["history_sql_null"] + [
        jackpots.scalar("SELECT max(id) FROM jackpots")]
    original = histories(jackpots.url)
    result, payload = run_here(jackpots.url, state_url)
    assert result.returncode == 1, "invalid histories make the run report problems"
    now = histories(jackpots.url)
    for row_id in odd_ids:
        assert now[row_id] == original[row_id]
    summary = payload["summary"]
    assert summary["rows_not_array_contribution_history"] == 3
    assert summary["rows_not_array_win_history"] == 3
    assert "not a JSON array" in payload["message"]
    # the over-limit fault row was trimmed (its win_history was [] and stays [])
    over = faults["history_over_limit"][0]
    assert now[over]["contribution_history"] == original[over]["contribution_history"][-5:]
    assert now[over]["win_history"] == []
    assert now[over]["version"] == original[over]["version"] + 1


def test_trim_history_skips_a_row_locked_by_another_session_without_waiting_and_reports_it(over_limit, state_url):
    init_schema(over_limit)
    original = histories(over_limit)
    with psycopg.connect(over_limit) as service:
        service.execute("SELECT 1 FROM jackpots WHERE id = 7 FOR UPDATE")
        started = time.monotonic()
        result, payload = run_here(over_limit, state_url)
        elapsed = time.monotonic() - started
        assert result.returncode == 0, result.stderr
        assert payload["summary"]["rows_skipped_locked"] == 1
        assert payload["summary"]["rows_trimmed"] == 39
        assert "locked by the service and skipped" in payload["message"]
        assert elapsed < 10  # it did not sit on the lock (lock_timeout 2s would have failed it anyway)
        service.rollback()
    assert histories(over_limit)[7] == original[7]
    # the next run picks the row up
    result, payload = run_here(over_limit, state_url)
    assert payload["summary"]["rows_trimmed"] == 1
    assert_nothing_lost(original, histories(over_limit), archived(over_limit))


def _cli_env():
    env = {key: value for key, value in os.environ.items() if not key.startswith("JACKPOT_")}
    env["PYTHONPATH"] = ROOT
    return env


def _archived_rows(url):
    with psycopg.connect(url) as connection:
        return connection.execute("SELECT count(DISTINCT jackpot_id) FROM jackpot_maint.history_archive").fetchone()[0]


def test_trim_history_killed_between_batches_then_rerun_loses_nothing(make_config, over_limit, tmp_path, state_url):
    sample_data.insert_rows(over_limit, rows=60, contribution_entries=9, win_entries=8)
    config = make_config("[jobs.trim_history]\nmax_entries = 5\nbatch_size = 2\nmax_batch_size = 2\npause = 0.05\n")
    init_schema(over_limit)
    original = histories(over_limit)
    process = subprocess.Popen([sys.executable, "-m", "scheduler", "jobs", "run", "trim_history", "--quiet",
                                "--config", str(config)], env=_cli_env(), cwd=str(tmp_path),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while _archived_rows(over_limit) < 10:
            assert process.poll() is None, "the trim finished before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    partly = histories(over_limit)
    trimmed_rows = sum(1 for row_id in partly if partly[row_id]["version"] != original[row_id]["version"])
    assert 10 <= trimmed_rows < 100, "killed in the middle"
    assert_nothing_lost(original, partly, archived(over_limit))

    result, payload = run_here(over_limit, state_url)
    assert result.returncode == 0, result.stderr
    assert payload["summary"]["rows_trimmed"] == 100 - trimmed_rows
    now = histories(over_limit)
    assert_nothing_lost(original, now, archived(over_limit))
    for row_id, before in original.items():
        assert now[row_id]["contribution_history"] == before["contribution_history"][-5:]
        assert now[row_id]["win_history"] == before["win_history"][-5:]
        # every row was modified at most once: by the killed run or by the rerun
        assert now[row_id]["version"] - before["version"] == (1 if len(before["contribution_history"]) > 5 else 0)


def test_trim_history_dry_run_counts_and_changes_nothing(over_limit, state_url):
    init_schema(over_limit)
    original = histories(over_limit)
    result, payload = run_here(over_limit, state_url, dry_run=True)
    assert result.returncode == 0, result.stderr
    assert histories(over_limit) == original
    assert archived(over_limit) == {}
    assert payload["summary"]["rows_over_limit"] == 40
    assert payload["summary"]["entries_removed_contribution_history"] == 40 * 7
    assert "would trim 40 of 45 rows" in payload["message"]


def test_trim_history_with_archive_off_keeps_nothing_and_says_so(over_limit, state_url):
    result, payload = run_here(over_limit, state_url, archive=False)  # no `db init` needed without the archive
    assert result.returncode == 0, result.stderr
    assert payload["summary"]["rows_trimmed"] == 40
    assert payload["summary"]["entries_removed_win_history"] == 80
    assert payload["summary"]["entries_archived_win_history"] == 0
    assert "archive off" in payload["message"]
    with psycopg.connect(over_limit) as connection:
        assert connection.execute("SELECT to_regclass('jackpot_maint.history_archive')").fetchone()[0] is None


def test_trim_history_without_the_archive_table_says_to_run_db_init(over_limit, state_url):
    original = histories(over_limit)
    result, _ = run_here(over_limit, state_url)
    assert result.returncode == 1
    assert "jackpot-maint db init" in result.stderr
    assert histories(over_limit) == original


def test_trim_history_works_on_a_table_in_another_schema(database_url, state_url):
    sample_data.create_table(database_url, "games.jackpots")
    sample_data.insert_rows(database_url, "games.jackpots", rows=10, contribution_entries=8, win_entries=2)
    init_schema(database_url)
    original = histories(database_url, "games.jackpots")
    result, payload = run_here(database_url, state_url, table="games.jackpots")
    assert result.returncode == 0, result.stderr
    assert payload["summary"]["rows_trimmed"] == 10
    assert_nothing_lost(original, histories(database_url, "games.jackpots"), archived(database_url, "games.jackpots"))


def test_trim_history_rejects_a_hostile_table_name_before_any_sql(cli, make_config, over_limit):
    config = make_config()
    original = histories(over_limit)
    result = cli("jobs", "run", "trim_history", "--config", str(config), "--set", "database.table=jackpots; DROP TABLE x")
    assert result.returncode == 2
    assert "database.table" in result.stderr and "not a valid table name" in result.stderr
    assert "Traceback" not in result.stderr
    assert histories(over_limit) == original


def test_trim_history_as_a_role_without_update_names_the_grants_it_needs(cli, make_config, over_limit, pg):
    init_schema(over_limit)
    role = f"maint_{uuid.uuid4().hex[:8]}"
    database = over_limit.rsplit("/", 1)[1]
    pg.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'role-secret-771'")
    pg.execute(f"GRANT SELECT ON jackpots TO {role}", database=database)
    limited = make_config("[jobs.trim_history]\nmax_entries = 5\n",
                          database=pg.url(database, user=role, password="role-secret-771"), name="limited.toml")
    original = histories(over_limit)
    result = cli("jobs", "run", "trim_history", "--config", str(limited))
    assert result.returncode == 1
    assert "J004" in result.stderr
    assert f'GRANT UPDATE ON TABLE "public"."jackpots" TO "{role}";' in result.stderr
    assert f'GRANT INSERT ON TABLE "jackpot_maint"."history_archive" TO "{role}";' in result.stderr
    assert "role-secret-771" not in result.stderr + result.stdout
    assert histories(over_limit) == original


def test_trim_history_asked_to_stop_finishes_its_batch_reports_what_it_did_and_a_rerun_completes(over_limit, state_url):
    import threading

    import config.settings  # noqa: F401
    from config.settings import Settings
    from scheduler.runner import run_job

    init_schema(over_limit)
    original = histories(over_limit)
    settings = Settings(database={"url": over_limit}, state={"url": state_url})
    stop = threading.Event()
    outcomes = []
    worker = threading.Thread(target=lambda: outcomes.append(run_job(
        settings, "trim_history", cancel_event=stop,
        options_override={"max_entries": 5, "batch_size": 2, "max_batch_size": 2, "pause": 0.1})))
    worker.start()
    deadline = time.monotonic() + 30
    while _archived_rows(over_limit) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    worker.join(timeout=30)
    outcome = outcomes[0]
    assert outcome.record.status == "cancelled"
    assert "the next run finishes the work" in outcome.record.message
    done = outcome.record.summary["rows_trimmed"]
    assert 4 <= done < 40
    assert _archived_rows(over_limit) == done, "every trimmed row is archived, nothing half-done"
    assert_nothing_lost(original, histories(over_limit), archived(over_limit))

    result, payload = run_here(over_limit, state_url)
    assert payload["summary"]["rows_trimmed"] == 40 - done
    assert_nothing_lost(original, histories(over_limit), archived(over_limit))


def test_trim_history_rolls_back_a_batch_that_runs_past_twice_max_lock_ms_and_retries_it_smaller(database_url, state_url):
    sample_data.create_table(database_url)
    sample_data.insert_rows(database_url, rows=30, contribution_entries=2000, win_entries=10)
    init_schema(database_url)
    original = histories(database_url)
    result, payload = run_here(database_url, state_url, max_entries=1000, max_lock_ms=10, batch_size=30)
    assert result.returncode == 0, result.stderr
    summary = payload["summary"]
    assert summary["batches_retried_smaller"] >= 1, "30 rows of 2000 entries take longer than 20 ms"
    assert summary["rows_trimmed"] == 30
    now = histories(database_url)
    assert_nothing_lost(original, now, archived(database_url))
    for row_id, before in original.items():
        assert now[row_id]["version"] == before["version"] + 1, "a rolled-back batch left no trace"
