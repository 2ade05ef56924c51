"""`jackpot-maint repairs list|show|revert` on a real PostgreSQL: values come back exactly, versions move
forward, rows the service changed or holds are reported and left alone."""

from __future__ import annotations

import json

import psycopg
import pytest

from scheduler import sample_data

COLUMNS = 'id, "group", current_amount, seed_amount, max_amount, contribution_rate, contribution_history, ' \
          'win_history, version, last_modified_at, updated_at'
VERSION = 8  # index of version in COLUMNS
LAST_MODIFIED = 9


def snapshot(helper) -> dict[int, tuple]:
    return {row[0]: row for row in helper.query(f"SELECT {COLUMNS} FROM jackpots ORDER BY id")}


@pytest.fixture
def repaired(jackpots, make_config):
    """The fault rows of sample_data, a repair run over them; returns (helper, settings, run id, faults, before)."""
    from config.loader import load_settings
    from scheduler.runner import run_job

    faults = sample_data.insert_faults(jackpots.url)
    # a version-reset row whose other values are broken too: one UPDATE, one version_after
    both = jackpots.scalar("INSERT INTO jackpots (\"group\", current_amount, seed_amount, max_amount, "
                           "contribution_rate, version, last_modified_at) "
                           "VALUES ('g', -7.25, 1000, NULL, 1.25, -3, '2026-01-02 03:04:05.123456+00') RETURNING id")
    faults["version_and_values"] = [both]
    before = snapshot(jackpots)
    settings = load_settings(str(make_config()), environ={}).settings
    outcome = run_job(settings, "validate_data", options_override={"repair": True})
    assert outcome.result.summary["rows_repaired"] == 6
    return jackpots, settings, outcome.record.id, faults, before


def engine_for(settings):
    from scheduler.db import create_target_engine

    return create_target_engine(settings, job="repairs")


def test_revert_restores_every_value_exactly_and_bumps_versions(repaired):
    from jobs.validate_data import revert_repair

    helper, settings, run_id, faults, before = repaired
    after_repair = snapshot(helper)
    engine = engine_for(settings)
    try:
        [outcome] = revert_repair(engine, run_id)
    finally:
        engine.dispose()

    after_revert = snapshot(helper)
    assert outcome.not_reverted == 0 and len(outcome.reverted) == 6 and outcome.rows == 6
    for name in ("negative_amount", "rate_above_one", "rate_below_zero", "cap_below_seed"):
        row_id = faults[name][0]
        # every column back exactly, except the version, which moved forward again
        assert after_revert[row_id][:VERSION] == before[row_id][:VERSION], name
        assert after_revert[row_id][VERSION] == after_repair[row_id][VERSION] + 1 == before[row_id][VERSION] + 2
    for name in ("version_out_of_range", "version_and_values"):
        row_id = faults[name][0]
        # the version reset is undone: the old version and last_modified_at come back exactly
        assert after_repair[row_id][VERSION] == 0
        assert after_revert[row_id][:LAST_MODIFIED + 1] == before[row_id][:LAST_MODIFIED + 1], name
    assert str(after_revert[faults["version_and_values"][0]][2]) == "-7.25"
    untouched = set(before) - {ids[0] for name, ids in faults.items() if name in (
        "negative_amount", "rate_above_one", "rate_below_zero", "cap_below_seed", "version_out_of_range",
        "version_and_values")}
    assert all(after_revert[row_id] == before[row_id] for row_id in untouched)
    audit = helper.query("SELECT reverted_at IS NOT NULL, reverted_by_run FROM jackpot_maint.repair_audit "
                         "WHERE run_id = %s", (run_id,))
    assert audit and all(row[0] and row[1] == outcome.revert_id for row in audit)


def test_revert_skips_a_row_the_service_changed_since_and_reports_it(repaired, cli, make_config):
    helper, settings, run_id, faults, before = repaired
    changed = faults["negative_amount"][0]
    # the service writes the row after the repair, the way it always does
    helper.query("UPDATE jackpots SET current_amount = current_amount + 10, version = version + 1 WHERE id = %s",
                 (changed,))
    config = str(make_config())

    result = cli("repairs", "revert", run_id, "--config", config, "--json")

    assert result.returncode == 1, result.stderr
    [table] = json.loads(result.stdout)["tables"]
    assert table["reverted"] == 5 and table["not_reverted"] == 1
    assert table["changed_since_repair"] == [{"row_id": changed, "version_after_repair": 2, "version_now": 3}]
    assert str(helper.scalar("SELECT current_amount FROM jackpots WHERE id = %s", (changed,))) == "10.00"
    assert helper.scalar("SELECT version FROM jackpots WHERE id = %s", (changed,)) == 3
    other = faults["rate_above_one"][0]
    assert str(helper.scalar("SELECT contribution_rate FROM jackpots WHERE id = %s", (other,))) == "1.500000"
    assert helper.scalar("SELECT count(*) FROM jackpot_maint.repair_audit WHERE run_id = %s AND reverted_at IS NULL",
                         (run_id,)) == 1

    # the human output names the row and why; a second revert still reports it (and only it)
    again = cli("repairs", "revert", run_id[:8], "--config", config)
    assert again.returncode == 1
    assert f"row {changed}: not reverted, changed since the repair (version 2 after the repair, 3 now)" in again.stdout
    assert "restored 0 of 6 rows (5 reverted before)" in again.stdout


def test_revert_skips_a_row_locked_by_another_session_without_waiting(repaired):
    from jobs.validate_data import revert_repair

    helper, settings, run_id, faults, before = repaired
    held = faults["cap_below_seed"][0]
    settings.database.lock_timeout = 30.0
    engine = engine_for(settings)
    try:
        with psycopg.connect(helper.url) as service:
            service.execute("SELECT * FROM jackpots WHERE id = %s FOR UPDATE", (held,))
            [outcome] = revert_repair(engine, run_id)
            service.rollback()
        assert outcome.locked == [held] and len(outcome.reverted) == 5
        assert str(helper.scalar("SELECT max_amount FROM jackpots WHERE id = %s", (held,))) == "10000.00"

        # once the service lets go, reverting again finishes the job
        [outcome] = revert_repair(engine, run_id)
    finally:
        engine.dispose()
    assert outcome.reverted == [held] and outcome.not_reverted == 0
    assert str(helper.scalar("SELECT max_amount FROM jackpots WHERE id = %s", (held,))) == "500.00"


def test_revert_dry_run_changes_nothing(repaired):
    from jobs.validate_data import revert_repair

    helper, settings, run_id, faults, before = repaired
    helper.query("UPDATE jackpots SET version = version + 1 WHERE id = %s", (faults["rate_below_zero"][0],))
    after_repair = snapshot(helper)
    engine = engine_for(settings)
    try:
        [outcome] = revert_repair(engine, run_id, dry_run=True)
    finally:
        engine.dispose()

    assert snapshot(helper) == after_repair
    assert len(outcome.reverted) == 5 and [row["row_id"] for row in outcome.changed] == faults["rate_below_zero"]
    assert helper.scalar("SELECT count(*) FROM jackpot_maint.repair_audit WHERE reverted_at IS NOT NULL") == 0


def test_repairs_list_and_show_describe_the_run(repaired, cli, make_config):
    helper, settings, run_id, faults, before = repaired
    config = str(make_config())

    listing = cli("repairs", "list", "--config", config, "--json")
    assert listing.returncode == 0, listing.stderr
    [run] = json.loads(listing.stdout)
    assert run["run_id"] == run_id and run["table"] == "jackpots" and run["status"] == "applied"
    assert run["rows"] == 6 and run["values"] == 10
    assert run["rules"] == ["contribution_rate_out_of_range", "current_amount_negative", "max_amount_below_seed",
                            "version_out_of_range"]

    shown = cli("repairs", "show", run_id, "--config", config)
    assert shown.returncode == 0, shown.stderr
    negative = faults["negative_amount"][0]
    line = next(text for text in shown.stdout.splitlines() if text.startswith(f"{negative} "))
    assert line.split()[:5] == [str(negative), "current_amount", "-50.00", "0.00", "current_amount_negative"]
    assert line.split()[-1] == "revertible"
    assert f"undo: jackpot-maint repairs revert {run_id}" in shown.stdout


def test_revert_of_an_unknown_run_exits_2_and_an_unreachable_database_exits_3(jackpots, cli, make_config):
    config = str(make_config())

    unknown = cli("repairs", "revert", "no-such-run", "--config", config)
    assert unknown.returncode == 2
    assert "no repairs recorded for run 'no-such-run'" in unknown.stderr and "repairs list" in unknown.stderr
    assert "Traceback" not in unknown.stderr

    empty = cli("repairs", "list", "--config", config)
    assert empty.returncode == 0 and "no repairs recorded" in empty.stdout

    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    down = cli("repairs", "list", "--config", config, "--database-url", f"postgresql://u:p@127.0.0.1:{port}/db")
    assert down.returncode == 3 and "J001" in down.stderr
