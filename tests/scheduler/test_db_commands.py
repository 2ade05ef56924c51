"""`jackpot-maint db init` and `db check` against a real PostgreSQL, as a superuser and as a bare role."""

from __future__ import annotations

import json
import uuid

import psycopg


def test_db_check_before_init_says_to_run_it_init_creates_the_schema_once_and_check_passes(cli, make_config, jackpots):
    config = make_config()
    before = cli("db", "check", "--config", str(config))
    assert before.returncode == 1
    assert "jackpot_maint.history_archive" in before.stdout and "run `jackpot-maint db init`" in before.stdout

    first = cli("db", "init", "--config", str(config))
    assert first.returncode == 0, first.stderr
    assert "schema jackpot_maint" in first.stdout
    assert "table jackpot_maint.history_archive" in first.stdout
    assert "table jackpot_maint.repair_audit" in first.stdout
    second = cli("db", "init", "--config", str(config), "--json")
    assert second.returncode == 0
    assert json.loads(second.stdout)["created"] == []
    columns = jackpots.query("""SELECT table_name, column_name FROM information_schema.columns
                                WHERE table_schema = 'jackpot_maint'""")
    assert ("history_archive", "entries") in columns and ("repair_audit", "version_after") in columns

    after = cli("db", "check", "--config", str(config), "--json")
    assert after.returncode == 0, after.stdout
    report = json.loads(after.stdout)
    assert report["ok"] is True and report["problems"] == []
    assert report["table"]["exists"] is True
    assert set(report["jobs"]) >= {"vacuum_analyze", "trim_history", "validate_data", "monitor"}


def test_db_check_as_a_bare_role_prints_the_grants_and_passes_once_they_are_run(cli, make_config, jackpots, pg):
    config = make_config()
    assert cli("db", "init", "--config", str(config)).returncode == 0
    role = f"maint_{uuid.uuid4().hex[:8]}"
    database = jackpots.url.rsplit("/", 1)[1]
    pg.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'role-secret-773'")
    enabled = "[jobs.vacuum_analyze]\nenabled = true\n[jobs.trim_history]\nenabled = true\n"
    limited = make_config(enabled, database=pg.url(database, user=role, password="role-secret-773"),
                          name="limited.toml")
    result = cli("db", "check", "--config", str(limited))
    assert result.returncode == 1
    expected = [
        f'GRANT SELECT ON TABLE "public"."jackpots" TO "{role}";',
        f'GRANT UPDATE ON TABLE "public"."jackpots" TO "{role}";',
        f'GRANT USAGE ON SCHEMA "jackpot_maint" TO "{role}";',
        f'GRANT INSERT ON TABLE "jackpot_maint"."history_archive" TO "{role}";',
        f'GRANT "postgres" TO "{role}";',
        f'GRANT pg_read_all_stats TO "{role}";',
    ]
    for grant in expected:
        assert grant in result.stdout, grant
    assert "role-secret-773" not in result.stdout + result.stderr

    # an administrator runs exactly what was printed; then the check passes
    report = json.loads(cli("db", "check", "--config", str(limited), "--json").stdout)
    grants = [entry["grant"] for job in report["jobs"].values() for entry in job["privileges"] if "grant" in entry]
    for grant in dict.fromkeys(grants):
        pg.execute(grant.split("--")[0], database=database)
    after = cli("db", "check", "--config", str(limited))
    assert after.returncode == 0, after.stdout
    assert "all checks passed" in after.stdout


def test_db_check_reports_a_missing_column_and_a_wrong_type(cli, make_config, jackpots):
    jackpots.query("ALTER TABLE jackpots DROP COLUMN win_history")
    jackpots.query("ALTER TABLE jackpots ALTER COLUMN version TYPE bigint")
    config = make_config()
    cli("db", "init", "--config", str(config))
    result = cli("db", "check", "--config", str(config))
    assert result.returncode == 1
    assert 'column "win_history" is missing, expected jsonb' in result.stdout
    assert 'column "version" is bigint, expected integer' in result.stdout


def test_db_check_of_a_missing_table_says_so(cli, make_config, database_url):
    config = make_config()
    result = cli("db", "check", "--config", str(config), "--set", "database.table=games.jackpots", "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["table"]["exists"] is False
    assert any("games.jackpots does not exist" in problem for problem in report["problems"])


def test_db_check_of_an_unreachable_database_exits_3(cli, make_config, pg):
    config = make_config(database="postgresql://postgres:x@127.0.0.1:1/nowhere")
    result = cli("db", "check", "--config", str(config))
    assert result.returncode == 3
    assert "J001" in result.stderr
    assert "Traceback" not in result.stderr
