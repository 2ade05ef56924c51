"""`jackpot-maint db init|check`: the maintenance schema, and whether the jobs can do their work.

`db init` creates the jackpot_maint schema and its tables (history archive, repair audit) when missing.
`db check` finds at install time what would otherwise fail at 3 a.m.: a table that is not there or
has the wrong columns, a maintenance table not created yet, a privilege the configured role lacks
(each printed with the GRANT that fixes it).
"""

from __future__ import annotations

import argparse
from typing import Any

from scheduler.commands._common import add_json_flag, load, print_json
from scheduler.errors import EXIT_OK, EXIT_PROBLEMS, classify

# The service's table as the jobs expect it: column -> type (without modifiers, as format_type says).
EXPECTED_COLUMNS = {
    "id": "bigint",
    "group": "text",
    "current_amount": "numeric",
    "seed_amount": "numeric",
    "max_amount": "numeric",
    "contribution_rate": "numeric",
    "contribution_history": "jsonb",
    "win_history": "jsonb",
    "version": "integer",
    "last_modified_at": "timestamp with time zone",
    "created_at": "timestamp with time zone",
    "updated_at": "timestamp with time zone",
}


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser("db", parents=[common], help="create the maintenance schema, check table and privileges",
                                   description="Set up and check the target database for the maintenance jobs.")
    actions = parser.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    init = actions.add_parser(
        "init", parents=[common], help="create the jackpot_maint schema and tables (idempotent)",
        description="Create, when missing, the schema jackpot_maint in the target database with the tables the "
                    "jobs need: history_archive (trim_history's removed entries) and repair_audit (validate_data's "
                    "repairs, for `repairs revert`). Safe to repeat; says what it created. Run it as a role that "
                    "may CREATE in the database, then `db check` as the daemon's role.")
    add_json_flag(init)
    init.set_defaults(handler=init_command)
    check = actions.add_parser(
        "check", parents=[common], help="check the table's columns and the role's privileges for every job",
        description="Check that the configured table exists with the expected columns and types, that the "
                    "maintenance tables exist, and that the configured role has the privileges each job needs. "
                    "Each missing privilege is printed with the GRANT statement that fixes it. Exit 0 when all is "
                    "well, 1 when something is missing, 3 when the database is unreachable.")
    add_json_flag(check)
    check.set_defaults(handler=check_command)


def _engine(settings):
    from scheduler.db import check_connection, create_target_engine

    engine = create_target_engine(settings, job="db", pool_size=1)
    check_connection(engine, settings.database_display())
    return engine


def init_command(args: argparse.Namespace) -> int:
    from jobs.maint_schema import SCHEMA, ensure_schema

    settings = load(args).settings
    engine = _engine(settings)
    try:
        with engine.begin() as connection:
            created = ensure_schema(connection)
    except Exception as error:  # noqa: BLE001 - classified for the operator
        failure = classify(error, resource=settings.database_display())
        if failure.code == "J004":
            failure.hint = (f"`db init` needs a role that may create schema {SCHEMA} (e.g. the database owner): "
                            "run it once with --database-url of such a role")
        raise failure from None
    finally:
        engine.dispose()
    if args.json:
        print_json({"database": settings.database_display(), "created": created})
    elif created:
        print(f"created in {settings.database_display()}:")
        for item in created:
            print(f"  {item}")
    else:
        print(f"nothing to do: schema {SCHEMA} and its tables already exist in {settings.database_display()}")
    return EXIT_OK


def check_command(args: argparse.Namespace) -> int:
    settings = load(args).settings
    engine = _engine(settings)
    try:
        with engine.connect() as connection:
            report = run_checks(connection, settings)
    except Exception as error:  # noqa: BLE001
        raise classify(error, resource=settings.database_display()) from None
    finally:
        engine.dispose()
    if args.json:
        print_json(report)
    else:
        _print_report(report)
    return EXIT_OK if report["ok"] else EXIT_PROBLEMS


def _job_enabled(settings, job: str) -> bool:
    if job == "daemon":
        return True
    options = getattr(settings.jobs, job, None)
    return bool(options.enabled) if options is not None else False


def run_checks(connection, settings) -> dict[str, Any]:
    """Given a connection as the configured role, return the check report (see `db check --json`)."""
    from sqlalchemy import text

    from jobs.maint_schema import RELATION_BY_NAME, has_privilege, required_privileges, schema_status
    from scheduler.db import split_table

    table = settings.database.table
    schema, name = split_table(table)
    role, version = connection.execute(text("SELECT current_user, current_setting('server_version_num')::int")).one()
    problems: list[str] = []

    # by name, not to_regclass(): that fails without USAGE on the schema, which is checked below
    oid = connection.execute(text(f"SELECT c.oid FROM {RELATION_BY_NAME}"), {"schema": schema, "name": name}).scalar()
    table_exists = oid is not None
    columns = {row.column_name: row.data_type for row in connection.execute(text("""
        SELECT a.attname AS column_name, format_type(a.atttypid, NULL) AS data_type
        FROM pg_attribute a WHERE a.attrelid = :oid AND a.attnum > 0 AND NOT a.attisdropped"""), {"oid": oid})}
    column_problems = []
    if not table_exists:
        problems.append(f"table {table} does not exist in {settings.database_display()}: check database.table")
    else:
        for column, expected in EXPECTED_COLUMNS.items():
            actual = columns.get(column)
            if actual is None:
                column_problems.append({"column": column, "expected": expected, "actual": None})
                problems.append(f"table {table} has no column \"{column}\" ({expected})")
            elif actual != expected:
                column_problems.append({"column": column, "expected": expected, "actual": actual})
                problems.append(f"column {table}.\"{column}\" is {actual}, expected {expected}")

    maintenance = schema_status(connection)
    for maint_table, missing in maintenance.items():
        if missing:
            problems.append(f"{maint_table} is missing or incomplete (columns: {', '.join(missing)}): "
                            "run `jackpot-maint db init`")

    validate_options = getattr(settings.jobs, "validate_data", None)
    repair = bool(getattr(validate_options, "repair", False))
    monitor_options = getattr(settings.jobs, "monitor", None)
    # pg_signal_backend only matters when the monitor may terminate queries
    terminate = bool(getattr(getattr(monitor_options, "terminate_queries", None), "enabled", True))
    jobs: dict[str, Any] = {}
    for job, privileges in required_privileges(table, repair=repair, terminate=terminate).items():
        enabled = _job_enabled(settings, job)
        entries = []
        for privilege in privileges:
            ok, details = has_privilege(connection, privilege)
            entry = {"privilege": privilege.privilege if privilege.kind != "role" else f"member of {privilege.target}",
                     "on": privilege.target if privilege.kind != "role" else None, "kind": privilege.kind,
                     "reason": privilege.reason, "ok": ok}
            if details.get("missing_object"):
                entry["missing_object"] = True
            elif not ok:
                entry["grant"] = privilege.grant(role, owner=details.get("owner"), server_version=version)
            entries.append(entry)
        missing = [entry for entry in entries if not entry["ok"] and not entry.get("missing_object")]
        jobs[job] = {"enabled": enabled, "available": job == "daemon" or getattr(settings.jobs, job, None) is not None,
                     "ok": not missing, "privileges": entries}
        if missing and enabled:
            problems.append(f"{job}: the role {role} lacks " + ", ".join(
                f"{entry['privilege']}" + (f" on {entry['on']}" if entry["on"] else "") for entry in missing))
    return {"database": settings.database_display(), "role": role, "server_version_num": version,
            "table": {"name": table, "exists": table_exists, "column_problems": column_problems},
            "maintenance_tables": {key: {"missing_columns": value} for key, value in maintenance.items()},
            "jobs": jobs, "problems": problems, "ok": not problems}


def _print_report(report: dict[str, Any]) -> None:
    print(f"database {report['database']} as role {report['role']} (PostgreSQL {report['server_version_num']})")
    table = report["table"]
    if not table["exists"]:
        print(f"  FAIL table {table['name']}: does not exist")
    elif table["column_problems"]:
        for problem in table["column_problems"]:
            actual = problem["actual"] or "missing"
            print(f"  FAIL table {table['name']}: column \"{problem['column']}\" is {actual}, expected {problem['expected']}")
    else:
        print(f"  ok   table {table['name']}: all {len(EXPECTED_COLUMNS)} expected columns with their types")
    for maint_table, status in report["maintenance_tables"].items():
        if status["missing_columns"]:
            print(f"  FAIL {maint_table}: missing: run `jackpot-maint db init`")
        else:
            print(f"  ok   {maint_table}")
    for job, status in report["jobs"].items():
        label = "" if status["enabled"] else (" (disabled: not counted)" if status["available"]
                                              else " (job not installed: not counted)")
        if status["ok"]:
            print(f"  ok   {job}: all privileges{label}")
            continue
        print(f"  {'FAIL' if status['enabled'] else 'note'} {job}{label}:")
        for entry in status["privileges"]:
            if entry["ok"] or entry.get("missing_object"):
                continue
            on = f" on {entry['on']}" if entry["on"] else ""
            print(f"         missing {entry['privilege']}{on} ({entry['reason']})")
            print(f"           fix: {entry['grant']}")
    if report["ok"]:
        print("all checks passed")
    else:
        print(f"{len(report['problems'])} problem(s)")
