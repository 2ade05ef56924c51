"""Running a job by hand: the ledger, error codes, exit codes, locks."""

from __future__ import annotations

import fcntl
import json
import os

import pytest

from scheduler.pgcluster import PostgresCluster


def test_ping_database_runs_and_history_shows_it(cli, make_config, jackpots):
    config = make_config()
    result = cli("--config", str(config), "jobs", "run", "ping_database")
    assert result.returncode == 0, result.stderr
    assert "ping_database: ok" in result.stdout
    history = cli("--config", str(config), "history", "--json")
    runs = json.loads(history.stdout)
    assert [(run["job"], run["trigger"], run["status"]) for run in runs] == [("ping_database", "manual", "ok")]
    assert runs[0]["summary"]["server_version"].startswith("15")


def test_ping_against_a_stopped_server_exits_3_with_j001_and_history_shows_the_failure(cli, tmp_path):
    cluster = PostgresCluster()
    cluster.start()
    url = cluster.url()
    cluster.stop()
    config = tmp_path / "config.toml"
    config.write_text(f'[database]\nurl = "{url}"\nconnect_timeout = "2s"\n[state]\nurl = "sqlite:///{tmp_path}/state.db"\n')
    result = cli("--config", str(config), "jobs", "run", "ping_database")
    assert result.returncode == 3, result.stdout + result.stderr
    assert "J001" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert cluster.password not in result.stdout + result.stderr
    history = json.loads(cli("--config", str(config), "history", "--json").stdout)
    assert history[0]["status"] == "failed"
    assert history[0]["error_code"].startswith("J001")
    text = cli("--config", str(config), "history").stdout
    assert "failed" in text and "J001" in text


def test_unknown_job_lists_the_known_ones_and_exits_2(cli, make_config):
    result = cli("--config", str(make_config()), "jobs", "run", "vacum")
    assert result.returncode == 2
    assert "unknown job 'vacum'" in result.stderr and "ping_database" in result.stderr


def test_wrong_password_is_a_connection_failure_and_never_printed(cli, tmp_path, pg, database_url):
    bad = database_url.replace(pg.password, "wrong-password-777")
    config = tmp_path / "config.toml"
    config.write_text(f'[database]\nurl = "{bad}"\n[state]\nurl = "sqlite:///{tmp_path}/state.db"\n')
    result = cli("--config", str(config), "jobs", "run", "ping_database", "--json")
    assert result.returncode == 3
    payload = json.loads(result.stdout)
    assert payload["error_code"] == "J001/DB001"
    assert "password authentication failed" in payload["message"]
    assert "wrong-password-777" not in result.stdout + result.stderr


def test_state_store_unreachable_exits_3_naming_it(cli, tmp_path, database_url):
    config = tmp_path / "config.toml"
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    config.write_text(f'[database]\nurl = "{database_url}"\n[state]\nurl = "sqlite:///{blocker}/state.db"\n')
    result = cli("--config", str(config), "jobs", "run", "ping_database")
    assert result.returncode == 3
    assert "state store" in result.stderr and str(blocker) in result.stderr


def test_a_job_already_running_on_this_host_makes_a_manual_run_exit_4_and_is_recorded(cli, make_config, tmp_path):
    from scheduler.locks import runtime_directory

    config = make_config()
    # hold the host lock of a host-scoped job the way a running daemon would
    path = runtime_directory() / "ping_database.lock"
    result_lock = _hold_database_lock_and_run(cli, config)
    assert result_lock.returncode == 4, result_lock.stdout + result_lock.stderr
    assert "already running" in result_lock.stdout + result_lock.stderr
    history = json.loads(cli("--config", str(config), "history", "--json").stdout)
    assert history[0]["status"] == "skipped"
    assert path.parent.exists()


def _hold_database_lock_and_run(cli, config):
    """Take ping_database's advisory lock in another session, then run it by hand."""
    import tomllib

    import psycopg

    from scheduler.locks import advisory_key

    url = tomllib.loads(config.read_text())["database"]["url"]
    key1, key2 = advisory_key("ping_database")
    with psycopg.connect(url, autocommit=True, application_name="jackpot-maint:lock:other-host") as holder:
        holder.execute("SELECT pg_advisory_lock(%s, %s)", (key1, key2))
        return cli("--config", str(config), "jobs", "run", "ping_database")


def test_locked_message_says_where_and_since_when(cli, make_config):
    result = _hold_database_lock_and_run(cli, make_config())
    assert "on host other-host since" in result.stdout + result.stderr


def test_a_run_left_running_by_a_killed_process_is_marked_abandoned(tmp_path, make_config):
    from config.loader import load_settings
    from scheduler import ledger
    from scheduler.runner import run_job
    from scheduler.state import StateStore

    loaded = load_settings(str(make_config()), environ={})
    state = StateStore.open(loaded.settings)
    crashed = ledger.start_run(state, "ping_database", "scheduled")
    # pretend the run belonged to a process that no longer exists
    with state.begin() as connection:
        connection.execute(ledger.runs.update().where(ledger.runs.c.id == crashed.id).values(pid=2 ** 22 + 12345))
    outcome = run_job(loaded.settings, "ping_database", state=state)
    assert outcome.exit_code == 0
    record = ledger.get_run(state, crashed.id)
    assert record.status == "abandoned"
    assert "ended while the run was in progress" in record.message
    state.dispose()


def test_json_output_of_a_run_is_machine_readable(cli, make_config):
    result = cli("--config", str(make_config()), "jobs", "run", "ping_database", "--json")
    payload = json.loads(result.stdout)
    assert payload["status"] == "ok" and payload["exit_code"] == 0 and payload["trigger"] == "manual"
