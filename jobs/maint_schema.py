"""The `jackpot_maint` schema in the target database: what the jobs keep next to the service's table.

Created (idempotently) by `jackpot-maint db init`; checked by `jackpot-maint db check`.

history_archive  -- trim_history moves every entry it removes here, in the same transaction as the trim.
    id              bigint identity: insertion order. For one (source_table, jackpot_id, history_column),
                    the archived arrays ordered by id, concatenated, followed by the row's current array,
                    give back the original history exactly.
    source_table    the trimmed table as configured, e.g. 'jackpots' or 'games.jackpots'
    jackpot_id      the row's id
    "group"         the row's "group" at the time of the trim (a reserved word: always quoted)
    history_column  'contribution_history' or 'win_history'
    entries         jsonb array: the removed entries, oldest first, in their original order
    entry_count     jsonb_array_length(entries)
    run_id          the trim_history run that removed them (see `jackpot-maint history`)
    archived_at     when

    Undo one run: UPDATE t SET col = a.entries || t.col ... for the run's rows, oldest archive first
    (the README's trim_history section has the statement).

repair_audit  -- validate_data --repair writes one row per changed value, in the same transaction as the
    repair; `jackpot-maint repairs revert RUN_ID` reads it. Nothing else is needed for revert.
    id              bigint identity
    source_table    the repaired table as configured
    row_id          the jackpot's id
    column_name     the repaired column, e.g. 'current_amount' (never quoted in this text)
    old_value       to_jsonb(old value); SQL NULL when the column was NULL. Restore it with
                    (old_value #>> '{}')::<column type>, e.g. ::numeric for amounts and rates,
                    ::integer for version
    new_value       to_jsonb(new value), same convention
    rule            the validate_data rule that fired, e.g. 'current_amount_negative'
    run_id          the validate_data run that repaired it
    repaired_at     when
    version_before  the row's version before the repair
    version_after   the version the repair set (version_before + 1, or the reset value for the
                    version rule). Revert only rows whose version still equals version_after: any other
                    value means the service changed the row since, and revert must report it instead.
    reverted_at     NULL until reverted; set by `repairs revert` (with reverted_by_run) so a second
    reverted_by_run revert of the same run does nothing.

schedule_claims  -- the daemon's claims of scheduled fires, so that several hosts run each fire once
    (owned by scheduler/locks.py, which defines its columns; `db init` creates it for a daemon role that
    may not create tables).

Privileges: `required_privileges()` lists, per job, the privileges the configured role needs, each
with the GRANT that gives it (used by `db check` and by the jobs' permission-denied messages).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from scheduler.db import quote_identifier, quote_table, split_table

SCHEMA = "jackpot_maint"
HISTORY_ARCHIVE = f"{SCHEMA}.history_archive"
REPAIR_AUDIT = f"{SCHEMA}.repair_audit"
SCHEDULE_CLAIMS = f"{SCHEMA}.schedule_claims"  # the daemon's; see scheduler/locks.py
HISTORY_COLUMNS = ("contribution_history", "win_history")

# Each step: (what it creates, whether it exists already (SQL returning a boolean), the DDL).
# IF NOT EXISTS makes every step safe to repeat; the existence probe only serves to say what was created.
_STEPS: list[tuple[str, str, str | None]] = [
    (f"schema {SCHEMA}",
     f"SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = '{SCHEMA}')",
     f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"),
    (f"table {HISTORY_ARCHIVE}",
     f"SELECT to_regclass('{HISTORY_ARCHIVE}') IS NOT NULL",
     f"""CREATE TABLE IF NOT EXISTS {HISTORY_ARCHIVE} (
           id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
           source_table   text NOT NULL,
           jackpot_id     bigint NOT NULL,
           "group"        text,
           history_column text NOT NULL CHECK (history_column IN ('contribution_history', 'win_history')),
           entries        jsonb NOT NULL CHECK (jsonb_typeof(entries) = 'array'),
           entry_count    integer NOT NULL,
           run_id         text NOT NULL,
           archived_at    timestamptz NOT NULL DEFAULT now()
         )"""),
    # lz4 compresses the archived arrays several times faster than the default pglz (it halves the cost
    # of archiving in bench/bench_trim_history.py); skipped on a server built without lz4
    (f"lz4 compression of {HISTORY_ARCHIVE}.entries",
     f"""SELECT NOT EXISTS (SELECT 1 FROM pg_settings WHERE name = 'default_toast_compression'
                           AND 'lz4' = ANY(enumvals))
               OR (SELECT attcompression = 'l' FROM pg_attribute
                   WHERE attrelid = '{HISTORY_ARCHIVE}'::regclass AND attname = 'entries')""",
     f"ALTER TABLE {HISTORY_ARCHIVE} ALTER COLUMN entries SET COMPRESSION lz4"),
    (f"index {SCHEMA}.history_archive_row",
     f"SELECT to_regclass('{SCHEMA}.history_archive_row') IS NOT NULL",
     f"CREATE INDEX IF NOT EXISTS history_archive_row ON {HISTORY_ARCHIVE} "
     "(source_table, jackpot_id, history_column, id)"),
    (f"index {SCHEMA}.history_archive_run",
     f"SELECT to_regclass('{SCHEMA}.history_archive_run') IS NOT NULL",
     f"CREATE INDEX IF NOT EXISTS history_archive_run ON {HISTORY_ARCHIVE} (run_id)"),
    (f"table {REPAIR_AUDIT}",
     f"SELECT to_regclass('{REPAIR_AUDIT}') IS NOT NULL",
     f"""CREATE TABLE IF NOT EXISTS {REPAIR_AUDIT} (
           id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
           source_table    text NOT NULL,
           row_id          bigint NOT NULL,
           column_name     text NOT NULL,
           old_value       jsonb,
           new_value       jsonb,
           rule            text NOT NULL,
           run_id          text NOT NULL,
           repaired_at     timestamptz NOT NULL DEFAULT now(),
           version_before  integer,
           version_after   integer NOT NULL,
           reverted_at     timestamptz,
           reverted_by_run text
         )"""),
    (f"index {SCHEMA}.repair_audit_run",
     f"SELECT to_regclass('{SCHEMA}.repair_audit_run') IS NOT NULL",
     f"CREATE INDEX IF NOT EXISTS repair_audit_run ON {REPAIR_AUDIT} (run_id)"),
    (f"index {SCHEMA}.repair_audit_row",
     f"SELECT to_regclass('{SCHEMA}.repair_audit_row') IS NOT NULL",
     f"CREATE INDEX IF NOT EXISTS repair_audit_row ON {REPAIR_AUDIT} (source_table, row_id)"),
    # the daemon's claims of scheduled fires (several hosts); it creates the table itself when its role
    # may, and `db init` creates it for a role that may not (the DDL is scheduler/locks.py's)
    (f"table {SCHEDULE_CLAIMS}",
     f"SELECT to_regclass('{SCHEDULE_CLAIMS}') IS NOT NULL",
     None),
]

# FROM clause finding a relation by :schema and :name without needing USAGE on the schema.
RELATION_BY_NAME = ("pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = :schema AND c.relname = :name")

# Tables and the columns `db check` expects in them.
MAINT_TABLES = {
    HISTORY_ARCHIVE: ["id", "source_table", "jackpot_id", "group", "history_column", "entries", "entry_count",
                      "run_id", "archived_at"],
    REPAIR_AUDIT: ["id", "source_table", "row_id", "column_name", "old_value", "new_value", "rule", "run_id",
                   "repaired_at", "version_before", "version_after", "reverted_at", "reverted_by_run"],
    SCHEDULE_CLAIMS: ["job", "scheduled_for", "host", "pid", "claimed_at"],
}


def ensure_schema(connection: Connection) -> list[str]:
    """Given a connection to the target database (in a transaction), create the jackpot_maint schema,
    tables and indexes that are missing. Return what was created (empty when all existed).

    Raise the database's error (42501 insufficient_privilege) when the role may not create them.
    """
    created = []
    # two `db init` at once: the second waits here instead of failing on a duplicate catalog entry
    connection.execute(text("SELECT pg_advisory_xact_lock(74231, 1)"))
    for what, probe, ddl in _STEPS:
        existed = bool(connection.execute(text(probe)).scalar())
        if not existed:
            if ddl is None:
                from scheduler.locks import _CLAIMS_DDL

                ddl = _CLAIMS_DDL[-1]
            connection.execute(text(ddl))
            created.append(what)
    return created


def schema_status(connection: Connection) -> dict[str, list[str]]:
    """Return {table: [missing columns]} for the maintenance tables; a missing table lists all its columns."""
    status: dict[str, list[str]] = {}
    for table, expected in MAINT_TABLES.items():
        schema, name = split_table(table)
        # the catalogs, not information_schema: that hides tables the role has no privilege on
        present = set(connection.execute(text(
            f"SELECT a.attname FROM pg_attribute a JOIN ({('SELECT c.oid FROM ' + RELATION_BY_NAME)}) AS r "
            "ON a.attrelid = r.oid WHERE a.attnum > 0 AND NOT a.attisdropped"),
            {"schema": schema, "name": name}).scalars())
        status[table] = [column for column in expected if column not in present]
    return status


@dataclass(frozen=True)
class Privilege:
    """One privilege a job needs.

    kind: "table" (privilege on relation `target`), "schema" (USAGE on schema `target`),
    "role" (membership in the predefined role `target`), "maintain" (VACUUM/ANALYZE of table `target`:
    ownership before PostgreSQL 17, the MAINTAIN privilege from 17).
    """

    job: str
    kind: str
    target: str
    privilege: str
    reason: str

    def grant(self, role: str, *, owner: str | None = None, server_version: int = 150000) -> str:
        """The statement that gives `role` this privilege (an administrator runs it)."""
        grantee = quote_identifier(role) if _plain(role) else _quote_any(role)
        if self.kind == "table":
            return f"GRANT {self.privilege} ON TABLE {_quote_relation(self.target)} TO {grantee};"
        if self.kind == "schema":
            return f"GRANT USAGE ON SCHEMA {_quote_any(self.target)} TO {grantee};"
        if self.kind == "role":
            return f"GRANT {self.target} TO {grantee};"
        if self.kind == "maintain":
            if server_version >= 170000:
                return f"GRANT MAINTAIN ON TABLE {_quote_relation(self.target)} TO {grantee};"
            owner_text = _quote_any(owner) if owner else '"<owner of the table>"'
            return (f"GRANT {owner_text} TO {grantee};  -- before PostgreSQL 17 only the table's owner (or a member "
                    f"of the owning role) may VACUUM it; from 17: GRANT MAINTAIN ON TABLE {_quote_relation(self.target)} "
                    f"TO {grantee}")
        raise ValueError(f"unknown privilege kind {self.kind!r}")


def required_privileges(table: str, *, repair: bool = False, terminate: bool = True) -> dict[str, list[Privilege]]:
    """Given the configured table, return {job: [Privilege]} the configured role needs for each job.

    repair: validate_data also repairs (UPDATE on the table, INSERT into repair_audit; revert reads and
    updates repair_audit). terminate: monitor may terminate sessions (pg_signal_backend).
    """
    schema, _ = split_table(table)
    table_schema = [Privilege(job, "schema", schema, "USAGE", f"see the table's schema {schema}")
                    for job in ("trim_history", "validate_data", "vacuum_analyze")] if schema != "public" else []

    def schema_usage(job: str) -> list[Privilege]:
        return [p for p in table_schema if p.job == job]

    trim = schema_usage("trim_history") + [
        Privilege("trim_history", "table", table, "SELECT", "read the histories"),
        Privilege("trim_history", "table", table, "UPDATE", "write the trimmed histories"),
        Privilege("trim_history", "schema", SCHEMA, "USAGE", "reach the archive"),
        Privilege("trim_history", "table", HISTORY_ARCHIVE, "INSERT", "archive the removed entries"),
    ]
    validate = schema_usage("validate_data") + [Privilege("validate_data", "table", table, "SELECT", "read the rows")]
    if repair:
        validate += [
            Privilege("validate_data", "table", table, "UPDATE", "repair (jobs.validate_data.repair = true)"),
            Privilege("validate_data", "schema", SCHEMA, "USAGE", "reach the repair audit"),
            Privilege("validate_data", "table", REPAIR_AUDIT, "INSERT", "record every repaired value"),
            Privilege("validate_data", "table", REPAIR_AUDIT, "SELECT", "`repairs revert` reads the audit"),
            Privilege("validate_data", "table", REPAIR_AUDIT, "UPDATE", "`repairs revert` marks reverted values"),
        ]
    vacuum = schema_usage("vacuum_analyze") + [
        Privilege("vacuum_analyze", "maintain", table, "MAINTAIN", "VACUUM and ANALYZE the table"),
    ]
    monitor = [Privilege("monitor", "role", "pg_read_all_stats", "MEMBER",
                         "see other sessions' queries and states in pg_stat_activity (pg_monitor includes it)")]
    if terminate:
        monitor.append(Privilege("monitor", "role", "pg_signal_backend", "MEMBER", "terminate runaway queries"))
    # the daemon itself, for every scheduled fire of a database job (claims shared by all hosts)
    daemon = [
        Privilege("daemon", "schema", SCHEMA, "USAGE", "reach the schedule claims"),
        Privilege("daemon", "table", SCHEDULE_CLAIMS, "SELECT", "see which host claimed a fire"),
        Privilege("daemon", "table", SCHEDULE_CLAIMS, "INSERT", "claim a scheduled fire"),
        Privilege("daemon", "table", SCHEDULE_CLAIMS, "DELETE", "delete claims past scheduler.claim_retention_days"),
    ]
    return {"vacuum_analyze": vacuum, "trim_history": trim, "validate_data": validate, "monitor": monitor,
            "daemon": daemon}


def has_privilege(connection: Connection, privilege: Privilege) -> tuple[bool, dict[str, Any]]:
    """Given a Privilege, return (whether the current role has it, details such as the table's owner)."""
    details: dict[str, Any] = {}
    if privilege.kind == "table":
        # looked up by name, not to_regclass(): that needs USAGE on the schema, which may be what is missing
        schema, name = split_table(privilege.target)
        row = connection.execute(text(f"SELECT has_table_privilege(c.oid, :privilege) FROM {RELATION_BY_NAME}"),
                                 {"schema": schema, "name": name, "privilege": privilege.privilege}).first()
        ok = row[0] if row else None
        if ok is None:
            details["missing_object"] = True
        return bool(ok), details
    if privilege.kind == "schema":
        ok = connection.execute(text(
            "SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = :name) THEN NULL "
            "ELSE has_schema_privilege(:name, 'USAGE') END"), {"name": privilege.target}).scalar()
        if ok is None:
            details["missing_object"] = True
        return bool(ok), details
    if privilege.kind == "role":
        ok = connection.execute(text(
            "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :name) AND pg_has_role(:name, 'USAGE')"),
            {"name": privilege.target}).scalar()
        return bool(ok), details
    if privilege.kind == "maintain":
        row = connection.execute(text("""
            SELECT c.relowner::regrole::text AS owner,
                   pg_has_role(c.relowner, 'USAGE')
                   OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
                   OR pg_has_role((SELECT datdba FROM pg_database WHERE datname = current_database()), 'USAGE')
                   OR (current_setting('server_version_num')::int >= 170000
                       AND has_table_privilege(c.oid, 'MAINTAIN')) AS allowed
            FROM """ + RELATION_BY_NAME),
            dict(zip(("schema", "name"), split_table(privilege.target)))).mappings().first()
        if row is None:
            details["missing_object"] = True
            return False, details
        details["owner"] = row["owner"]
        return bool(row["allowed"]), details
    raise ValueError(f"unknown privilege kind {privilege.kind!r}")


def missing_grants(connection: Connection, job: str, table: str, *, repair: bool = False) -> list[str]:
    """Given a job, return the GRANT statements the current role lacks for it (empty when none)."""
    role = connection.execute(text("SELECT current_user")).scalar_one()
    version = int(connection.execute(text("SHOW server_version_num")).scalar_one())
    grants = []
    for privilege in required_privileges(table, repair=repair).get(job, []):
        ok, details = has_privilege(connection, privilege)
        if not ok and not details.get("missing_object"):
            grants.append(privilege.grant(role, owner=details.get("owner"), server_version=version))
    return grants


def _plain(name: str) -> bool:
    try:
        quote_identifier(name)
        return True
    except ValueError:
        return False


def _quote_any(name: str) -> str:
    """Quote any identifier text (a role or owner read from the catalog may hold any character)."""
    if name.startswith('"') and name.endswith('"') and len(name) > 1:
        return name
    return '"' + name.replace('"', '""') + '"'


def _quote_relation(name: str) -> str:
    if "." in name or _plain(name):
        return quote_table(name)
    return _quote_any(name)
