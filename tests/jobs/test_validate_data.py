"""validate_data on a real PostgreSQL: every rule, every repair, the audit, locks, odd tables, the CLI."""

from __future__ import annotations

import json
import time

import psycopg

from scheduler import sample_data

FAULT_RULES = {
    # fault row from sample_data.insert_faults -> rules it must break
    "negative_amount": {"current_amount_negative"},
    "rate_above_one": {"contribution_rate_out_of_range"},
    "rate_below_zero": {"contribution_rate_out_of_range"},
    "cap_below_seed": {"max_amount_below_seed", "current_amount_above_max"},
    "amount_above_cap": {"current_amount_above_max"},
    "null_group": {"group_null"},
    "null_amount": {"current_amount_null"},
    "version_out_of_range": {"version_out_of_range"},
    "history_not_array": {"contribution_history_not_array", "win_history_not_array"},
    "history_sql_null": {"contribution_history_not_array", "win_history_not_array"},
    "history_over_limit": {"contribution_history_over_limit"},
}


def settings_for(make_config, extra: str = ""):
    from config.loader import load_settings

    return load_settings(str(make_config(extra)), environ={}).settings


def run_validate(settings, *, repair: bool = False, dry_run: bool = False):
    from scheduler.runner import run_job

    return run_job(settings, "validate_data", dry_run=dry_run, options_override={"repair": True} if repair else None)


def findings_by_rule(outcome) -> dict:
    return {finding.key.removeprefix("rule:"): finding for finding in outcome.result.findings}


def rows_by_id(helper, table: str = "jackpots") -> dict[int, tuple]:
    from scheduler.db import quote_table

    return {row[0]: row for row in helper.query(
        f'SELECT id, "group", current_amount, seed_amount, max_amount, contribution_rate, contribution_history, '
        f"win_history, version, last_modified_at, updated_at FROM {quote_table(table)} ORDER BY id")}


def test_validate_data_on_a_healthy_table_passes_every_rule_and_resolves_alerts(jackpots, make_config):
    outcome = run_validate(settings_for(make_config))

    assert outcome.exit_code == 0
    assert outcome.result.status == "ok"
    assert outcome.result.summary["rows_with_problems"] == 0
    assert len(outcome.result.findings) == 13
    assert all(finding.ok and finding.category == "data_corruption" for finding in outcome.result.findings)


def test_validate_data_counts_every_rule_with_sample_ids(jackpots, make_config):
    faults = sample_data.insert_faults(jackpots.url)
    # more rows of one rule than the sample holds: the sample is the first ids, the count is all of them
    extra = [row[0] for row in jackpots.query(
        "INSERT INTO jackpots (\"group\", current_amount, seed_amount, max_amount, contribution_rate, version) "
        "SELECT 'g', -1 * g, 1000, NULL, 0.02, 3 FROM generate_series(1, 12) AS g RETURNING id")]
    # NULL seed and NULL rate, and a scalar history: one rule per column
    odd = jackpots.query(
        "INSERT INTO jackpots (\"group\", current_amount, seed_amount, max_amount, contribution_rate, "
        "contribution_history, win_history) VALUES "
        "('g', 10, NULL, NULL, 0.5, '[]', '[]'), ('g', 10, 100, NULL, NULL, '[]', '[]'), "
        "('g', 10, 100, NULL, 0.5, '\"text\"', '42') RETURNING id")
    seed_null, rate_null, scalar_history = (row[0] for row in odd)

    outcome = run_validate(settings_for(make_config))

    assert outcome.exit_code == 1 and outcome.result.status == "problems"
    findings = findings_by_rule(outcome)
    expected: dict[str, list[int]] = {}
    for fault, fault_rules in FAULT_RULES.items():
        for rule in fault_rules:
            expected.setdefault(rule, []).extend(faults[fault])
    expected["current_amount_negative"] += extra
    expected["seed_amount_null"] = [seed_null]
    expected["contribution_rate_null"] = [rate_null]
    expected["contribution_history_not_array"].append(scalar_history)
    expected["win_history_not_array"].append(scalar_history)
    for rule, finding in findings.items():
        ids = sorted(expected.get(rule, []))
        assert finding.details["count"] == len(ids), rule
        assert finding.details["sample_ids"] == ids[:10], rule
        assert finding.ok is (not ids), rule
        if ids:
            assert f"{len(ids)} rows in jackpots" in finding.symptoms[0]
    assert findings["version_out_of_range"].code == "J002"
    assert {finding.code for key, finding in findings.items() if key != "version_out_of_range"} == {"J003"}
    assert all(finding.scope == "database" and finding.category == "data_corruption" for finding in findings.values())
    assert outcome.result.summary["problems"]["current_amount_negative"] == 13
    # validation only reads
    assert jackpots.scalar("SELECT to_regclass('jackpot_maint.repair_audit')") is None


def test_history_limit_comes_from_trim_history_max_entries(jackpots, make_config):
    settings = settings_for(make_config, "[jobs.trim_history]\nmax_entries = 5\n")

    outcome = run_validate(settings)

    # every sample row holds 10 contribution entries and 2 win entries
    findings = findings_by_rule(outcome)
    assert findings["contribution_history_over_limit"].details["count"] == 100
    assert findings["win_history_over_limit"].details["count"] == 0
    assert "longer than 5 entries" in findings["contribution_history_over_limit"].title


def test_repair_applies_the_guides_fixes_audits_every_value_and_bumps_versions(jackpots, make_config):
    faults = sample_data.insert_faults(jackpots.url)
    before = rows_by_id(jackpots)

    outcome = run_validate(settings_for(make_config), repair=True)

    run_id = outcome.record.id
    after = rows_by_id(jackpots)
    negative, above, below, cap = (faults[name][0] for name in
                                   ("negative_amount", "rate_above_one", "rate_below_zero", "cap_below_seed"))
    version_row = faults["version_out_of_range"][0]
    assert str(after[negative][2]) == "0.00"
    assert str(after[above][5]) == "1.000000" and str(after[below][5]) == "0.000000"
    assert str(after[cap][4]) == "10000.00"  # seed_amount * 10
    for row_id in (negative, above, below, cap):
        assert after[row_id][8] == before[row_id][8] + 1
        assert after[row_id][9] is not None and after[row_id][9] != before[row_id][9]
    # the guide's version reset: version 0, last_modified_at = updated_at
    assert after[version_row][8] == 0 and after[version_row][9] == after[version_row][10]
    # everything else, including NULLs, non-array histories and over-limit histories, is untouched
    repaired = {negative, above, below, cap, version_row}
    for row_id, row in before.items():
        if row_id not in repaired:
            assert after[row_id] == row, row_id
    audit = jackpots.query(
        "SELECT row_id, column_name, old_value #>> '{}', new_value #>> '{}', rule, version_before, version_after, "
        "source_table FROM jackpot_maint.repair_audit WHERE run_id = %s ORDER BY row_id, column_name", (run_id,))
    assert [(row[0], row[1], row[2], row[3], row[4]) for row in audit] == [
        (negative, "current_amount", "-50.00", "0.00", "current_amount_negative"),
        (above, "contribution_rate", "1.500000", "1.000000", "contribution_rate_out_of_range"),
        (below, "contribution_rate", "-0.200000", "0.000000", "contribution_rate_out_of_range"),
        (cap, "max_amount", "500.00", "10000.00", "max_amount_below_seed"),
        (version_row, "last_modified_at", None, audit[4][3], "version_out_of_range"),
        (version_row, "version", "2000000", "0", "version_out_of_range"),
    ]
    assert all(row[7] == "jackpots" for row in audit)
    assert jackpots.scalar("SELECT %s::timestamptz", (audit[4][3],)) == after[version_row][10]
    assert [(row[5], row[6]) for row in audit[:4]] == [(1, 2)] * 4
    assert [(row[5], row[6]) for row in audit[4:]] == [(2000000, 0)] * 2
    # the run still reports what it found (exit 1), and says what it did and how to undo it
    assert outcome.exit_code == 1
    findings = findings_by_rule(outcome)
    assert not findings["current_amount_negative"].ok
    assert findings["current_amount_negative"].attempts == [
        f"clamped 1 negative amounts to 0, run {run_id}; revert with jackpot-maint repairs revert {run_id}"]
    assert findings["contribution_rate_out_of_range"].details["repaired"] == 2
    assert outcome.result.summary["rows_repaired"] == 5 and outcome.result.summary["values_repaired"] == 6
    assert "no safe value" in " ".join(findings["group_null"].symptoms)

    # the next validation no longer sees the repaired rules, and resolves their alerts
    again = findings_by_rule(run_validate(settings_for(make_config)))
    for rule in ("current_amount_negative", "contribution_rate_out_of_range", "max_amount_below_seed",
                 "version_out_of_range"):
        assert again[rule].ok, rule
    assert not again["group_null"].ok


def test_repair_dry_run_says_what_would_change_and_changes_nothing(jackpots, make_config):
    sample_data.insert_faults(jackpots.url)
    before = rows_by_id(jackpots)

    outcome = run_validate(settings_for(make_config), repair=True, dry_run=True)

    assert rows_by_id(jackpots) == before
    assert jackpots.scalar("SELECT to_regclass('jackpot_maint.repair_audit')") is None
    would = outcome.result.summary["would_repair"]
    assert any(line.startswith("would clamp 1 negative amounts to 0") for line in would)
    assert any(line.startswith("would clamp 2 contribution rates") for line in would)
    assert any("would reset 1 out-of-range versions to 0" in line for line in would)
    assert "dry run" in outcome.result.message


def test_repair_skips_a_row_locked_by_another_session_without_waiting(jackpots, make_config):
    faults = sample_data.insert_faults(jackpots.url)
    held, free = faults["negative_amount"][0], faults["rate_above_one"][0]
    # a long lock_timeout: if the repair waited on the lock, the test would take 30 s
    settings = settings_for(make_config, "")
    settings.database.lock_timeout = 30.0
    with psycopg.connect(jackpots.url) as service:
        service.execute("SELECT * FROM jackpots WHERE id = %s FOR UPDATE", (held,))
        started = time.monotonic()
        outcome = run_validate(settings, repair=True)
        elapsed = time.monotonic() - started
        service.rollback()

    assert elapsed < 10
    summary = outcome.result.summary
    assert summary["rows_skipped_locked"] == 1 and summary["skipped_locked_ids"] == [held]
    assert str(jackpots.scalar("SELECT current_amount FROM jackpots WHERE id = %s", (held,))) == "-50.00"
    assert str(jackpots.scalar("SELECT contribution_rate FROM jackpots WHERE id = %s", (free,))) == "1.000000"
    finding = findings_by_rule(outcome)["current_amount_negative"]
    assert "1 rows not repaired" in " ".join(finding.attempts)
    assert "locked rows skipped" in outcome.result.message

    # the lock is gone: the next run repairs it
    run_validate(settings, repair=True)
    assert str(jackpots.scalar("SELECT current_amount FROM jackpots WHERE id = %s", (held,))) == "0.00"


def test_repair_in_small_batches_covers_every_row(jackpots, make_config):
    jackpots.query("UPDATE jackpots SET current_amount = -5 WHERE id % 3 = 0")  # 33 rows

    outcome = run_validate(settings_for(make_config, "[jobs.validate_data]\nbatch_size = 4\n"), repair=True)

    assert outcome.result.summary["rows_repaired"] == 33
    assert outcome.result.summary["repair_batches"] == 9
    assert jackpots.scalar("SELECT count(*) FROM jackpots WHERE current_amount < 0") == 0
    assert jackpots.scalar("SELECT count(*) FROM jackpot_maint.repair_audit") == 33


def test_schema_qualified_table_with_group_column_is_validated_and_repaired(database_url, make_config, pg):
    from conftest import TableHelper

    sample_data.create_table(database_url, "games.jackpots")
    sample_data.insert_rows(database_url, "games.jackpots", rows=20)
    faults = sample_data.insert_faults(database_url, "games.jackpots")
    # a public table of the same name must not be read or changed
    sample_data.create_table(database_url, "jackpots")
    sample_data.insert_faults(database_url, "jackpots")
    helper = TableHelper(database_url, "games.jackpots")
    public_before = rows_by_id(helper, "jackpots")

    outcome = run_validate(_qualified_settings(make_config), repair=True)

    findings = findings_by_rule(outcome)
    assert findings["group_null"].details["sample_ids"] == faults["null_group"]
    assert findings["group_null"].details["table"] == "games.jackpots"
    assert str(helper.scalar('SELECT current_amount FROM games.jackpots WHERE id = %s',
                             (faults["negative_amount"][0],))) == "0.00"
    assert rows_by_id(helper, "jackpots") == public_before
    assert helper.scalar("SELECT DISTINCT source_table FROM jackpot_maint.repair_audit") == "games.jackpots"

    from jobs.validate_data import revert_repair
    from scheduler.db import create_target_engine

    engine = create_target_engine(_qualified_settings(make_config))
    try:
        [reverted] = revert_repair(engine, outcome.record.id)
    finally:
        engine.dispose()
    assert reverted.table == "games.jackpots" and reverted.not_reverted == 0 and len(reverted.reverted) == 5
    assert str(helper.scalar('SELECT current_amount FROM games.jackpots WHERE id = %s',
                             (faults["negative_amount"][0],))) == "-50.00"
    assert rows_by_id(helper, "jackpots") == public_before


def _qualified_settings(make_config):
    from config.loader import load_settings

    path = make_config()
    text = path.read_text().replace("[database]\n", '[database]\ntable = "games.jackpots"\n', 1)
    path.write_text(text)
    return load_settings(str(path), environ={}).settings


def test_cli_exit_codes_clean_problems_hostile_table_and_unreachable(jackpots, make_config, cli, pg):
    config = str(make_config())

    clean = cli("jobs", "run", "validate_data", "--config", config, "--json")
    assert clean.returncode == 0, clean.stderr
    assert json.loads(clean.stdout)["status"] == "ok"

    sample_data.insert_faults(jackpots.url)
    found = cli("jobs", "run", "validate_data", "--config", config, "--repair", "--json")
    assert found.returncode == 1, found.stderr
    payload = json.loads(found.stdout)
    assert payload["summary"]["rows_repaired"] == 5
    negative = next(f for f in payload["findings"] if f["key"] == "rule:current_amount_negative")
    assert negative["ok"] is False and negative["code"] == "J003"
    assert f"repairs revert {payload['id']}" in negative["attempts"][0]

    hostile = cli("jobs", "run", "validate_data", "--config", config, "--set", "database.table=jackpots; DROP TABLE x")
    assert hostile.returncode == 2
    assert "database.table" in hostile.stderr and "not a valid table name" in hostile.stderr
    assert jackpots.scalar("SELECT count(*) FROM jackpots") == 111

    stopped = cli("jobs", "run", "validate_data", "--config", config,
                  "--database-url", f"postgresql://postgres:x@127.0.0.1:{_closed_port()}/nowhere")
    assert stopped.returncode == 3, stopped.stderr
    assert "J001" in stopped.stderr + stopped.stdout


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_validation_is_one_statement_over_the_table(jackpots, make_config):
    from jobs.validate_data import rules, validation_sql

    sql = validation_sql("jackpots", rules(1000), 10)

    assert sql.count("FROM") == 1 and sql.count("SELECT") == 1
    assert sql.count("count(*) FILTER") == 13
    plan = "\n".join(row[0] for row in jackpots.query("EXPLAIN " + sql))
    assert plan.count("Scan on jackpots") == 1


def test_repair_by_a_role_without_update_names_the_grant_it_lacks(jackpots, make_config, pg):
    import uuid

    from sqlalchemy import create_engine

    from jobs.maint_schema import ensure_schema

    sample_data.insert_faults(jackpots.url)
    admin = create_engine(jackpots.url.replace("postgresql://", "postgresql+psycopg://"))
    with admin.begin() as connection:
        ensure_schema(connection)
    admin.dispose()
    role = f"reader_{uuid.uuid4().hex[:8]}"
    jackpots.query(f"CREATE ROLE {role} LOGIN PASSWORD 'reader-pass-1234'")
    jackpots.query(f"GRANT SELECT ON jackpots TO {role}; GRANT USAGE ON SCHEMA jackpot_maint TO {role}; "
                   f"GRANT SELECT, INSERT, UPDATE ON jackpot_maint.repair_audit TO {role}")
    settings = settings_for(make_config)
    from pydantic import SecretStr

    database = jackpots.url.rsplit("/", 1)[1]
    settings.database.url = SecretStr(pg.url(database, user=role, password="reader-pass-1234"))

    outcome = run_validate(settings, repair=True)

    assert outcome.exit_code == 1 and outcome.record.status == "failed"
    assert outcome.record.error_code.startswith("J004")
    assert f'GRANT UPDATE ON TABLE "public"."jackpots" TO "{role}"' in str(outcome.error)
    assert "GRANT SELECT ON TABLE" not in str(outcome.error)  # it has that one
    assert str(jackpots.scalar("SELECT min(current_amount) FROM jackpots")) == "-50.00"


def test_a_hostile_table_name_that_bypassed_configuration_never_reaches_sql(jackpots, make_config):
    settings = settings_for(make_config)
    settings.database.table = 'jackpots"; DROP TABLE jackpots; --'

    outcome = run_validate(settings, repair=True)

    assert outcome.exit_code == 2
    assert "not a valid table name" in str(outcome.error)
    assert jackpots.scalar("SELECT count(*) FROM jackpots") == 100
