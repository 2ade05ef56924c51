"""validate_data: the guide's integrity checks ("Invalid Jackpot Amounts", "Version Conflicts"), with an
opt-in repair that can be undone.

Validation is one read-only statement, one pass over the table: every rule is a
`count(*) FILTER (WHERE rule)` plus a sample of ids, aggregated over the rows that break at least one
rule (the WHERE clause is all rules OR-ed), so a healthy table costs about what a hand-written
`SELECT count(*) ... WHERE <rules OR-ed>` costs.

Repair (`--repair`, or `repair = true` for scheduled runs) applies the guide's fixes, set-based, in short
primary-key batches, each its own transaction:
- the rows to fix are locked with FOR UPDATE SKIP LOCKED: a row the service holds is skipped, reported,
  and fixed by a later run; nothing ever waits on the service;
- one UPDATE per batch writes every fix of a row at once and bumps `version` (and stamps
  `last_modified_at = now()`), so the service's optimistic locking sees the change;
- every changed value goes into jackpot_maint.repair_audit in the same statement (same transaction),
  with the version the repair left, so `jackpot-maint repairs revert RUN_ID` can restore it exactly
  unless the service changed the row since.
The version rule is the exception to "bump the version": the guide resets an out-of-range version to 0
with last_modified_at = updated_at. That reset is itself the change every optimistic writer sees (0
differs from the corrupt value any of them holds); both old values are audited, and a revert restores
both exactly (the restored version again differs from 0, which a writer that read the repaired row holds).

Rules without a safe automatic fix (NULLs, current_amount above max_amount, histories that are not
arrays, histories over the trim limit: trim_history handles those) are reported, never guessed.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from config.types import Duration, Schedule
from jobs.base import Cancelled, Finding, JobContext, JobOptions, JobResult
from jobs.maint_schema import REPAIR_AUDIT, ensure_schema, missing_grants, required_privileges
from scheduler.db import quote_table
from scheduler.errors import DatabaseError, UsageError, classify, sqlstate_of

NAME = "validate_data"
SCOPE = "database"
DESCRIPTION = "Check the guide's integrity rules in one pass; with --repair apply its fixes, reversibly"

DEFAULT_HISTORY_LIMIT = 1000  # jobs.trim_history.max_entries when trim_history is not installed
VERSION_LIMIT = 1_000_000  # the guide: version < 0 OR version > 1000000 is corrupt


class Options(JobOptions):
    schedule: Schedule = Field("0 * * * *", description="When to run (cron or 'every 6h'); default hourly")
    timeout: Duration = Field(1800.0, description="Cancel the run after this long")
    repair: bool = Field(False, description="Apply the guide's fixes (reversible: jackpot-maint repairs revert RUN_ID); "
                         "`jobs run validate_data --repair` does it for one run")
    sample_size: int = Field(10, ge=1, le=100, description="How many ids of the rows breaking a rule to report")
    batch_size: int = Field(500, ge=1, le=10000, description="Rows repaired per short transaction")


@dataclass(frozen=True)
class Fix:
    """How a rule's rows are repaired: {column: SQL expression of its new value} over the row's old values."""

    columns: dict[str, str]
    # what was done, for the finding's attempts; {count} is the number of rows
    done: str
    would: str


@dataclass(frozen=True)
class Rule:
    """One integrity rule: a SQL condition over a row's columns (unqualified, "group" quoted)."""

    key: str
    condition: str
    title: str
    code: str = "J003"
    fix: Fix | None = None
    # why there is no automatic fix (reported in the finding)
    no_fix_reason: str = ""


def _over_limit(column: str, limit: int) -> str:
    # jsonb_array_length raises on a non-array: CASE guarantees the type check comes first
    return f"(CASE WHEN jsonb_typeof({column}) = 'array' THEN jsonb_array_length({column}) > {int(limit)} END)"


def _not_array(column: str) -> str:
    return f"({column} IS NULL OR jsonb_typeof({column}) <> 'array')"


VERSION_CONDITION = f"(version < 0 OR version > {VERSION_LIMIT})"


def rules(history_limit: int) -> list[Rule]:
    """Given the trim limit (jobs.trim_history.max_entries), return the guide's rules in report order."""
    no_null_fix = "no safe value to guess: fix it in the service or by hand"
    trim_fix = "trim_history trims it (archiving the removed entries)"
    not_array_fix = "not an array: nothing can trim or repair it safely; fix it by hand"
    return [
        Rule("current_amount_negative", "current_amount < 0", "negative current_amount",
             fix=Fix({"current_amount": "0"}, "clamped {count} negative amounts to 0",
                     "would clamp {count} negative amounts to 0")),
        Rule("contribution_rate_out_of_range", "(contribution_rate < 0 OR contribution_rate > 1)",
             "contribution_rate outside [0, 1]",
             fix=Fix({"contribution_rate": "GREATEST(LEAST(contribution_rate, 1.0), 0.0)"},
                     "clamped {count} contribution rates to [0, 1]", "would clamp {count} contribution rates to [0, 1]")),
        Rule("max_amount_below_seed", "max_amount < seed_amount", "max_amount below seed_amount",
             fix=Fix({"max_amount": "seed_amount * 10"}, "set max_amount = seed_amount * 10 on {count} rows",
                     "would set max_amount = seed_amount * 10 on {count} rows")),
        Rule("group_null", '"group" IS NULL', '"group" is NULL', no_fix_reason=no_null_fix),
        Rule("current_amount_null", "current_amount IS NULL", "current_amount is NULL", no_fix_reason=no_null_fix),
        Rule("seed_amount_null", "seed_amount IS NULL", "seed_amount is NULL", no_fix_reason=no_null_fix),
        Rule("contribution_rate_null", "contribution_rate IS NULL", "contribution_rate is NULL",
             no_fix_reason=no_null_fix),
        Rule("contribution_history_over_limit", _over_limit("contribution_history", history_limit),
             f"contribution_history longer than {history_limit} entries", no_fix_reason=trim_fix),
        Rule("win_history_over_limit", _over_limit("win_history", history_limit),
             f"win_history longer than {history_limit} entries", no_fix_reason=trim_fix),
        Rule("contribution_history_not_array", _not_array("contribution_history"),
             "contribution_history is not an array (SQL NULL, JSON null, object or scalar)", no_fix_reason=not_array_fix),
        Rule("win_history_not_array", _not_array("win_history"),
             "win_history is not an array (SQL NULL, JSON null, object or scalar)", no_fix_reason=not_array_fix),
        Rule("version_out_of_range", VERSION_CONDITION, f"version outside [0, {VERSION_LIMIT}]", code="J002",
             fix=Fix({"version": "0", "last_modified_at": "updated_at"},
                     "reset {count} out-of-range versions to 0 (last_modified_at = updated_at)",
                     "would reset {count} out-of-range versions to 0 (last_modified_at = updated_at)")),
        Rule("current_amount_above_max", "(max_amount IS NOT NULL AND current_amount > max_amount)",
             "current_amount above max_amount",
             no_fix_reason="the guide has no fix: whether to pay out or raise the cap is the service's decision"),
    ]


# ---- validation ---------------------------------------------------------------------------------

def checked_table(table: str) -> str:
    """Given a table name from configuration or the audit, return it quoted. Raise UsageError (exit 2)
    for anything that is not one or two plain identifiers, before it can reach SQL."""
    try:
        return quote_table(table)
    except ValueError:
        raise UsageError(f"database.table {table!r} is not a valid table name",
                         hint="use letters, digits and underscores, optionally schema-qualified like games.jackpots") from None


def validation_sql(table: str, rule_list: list[Rule], sample_size: int) -> str:
    """Given a validated table name and the rules, return the one-pass validation statement.

    Its columns: rows (rows breaking any rule), then <key>_count and <key>_sample for every rule.
    """
    aggregates = ["count(*) AS rows"]
    for rule in rule_list:
        aggregates.append(f"count(*) FILTER (WHERE {rule.condition}) AS {rule.key}_count")
        aggregates.append(f"(array_agg(id ORDER BY id) FILTER (WHERE {rule.condition}))[1:{int(sample_size)}] "
                          f"AS {rule.key}_sample")
    any_rule = "\n   OR ".join(rule.condition for rule in rule_list)
    select_list = ",\n  ".join(aggregates)
    return f"SELECT\n  {select_list}\nFROM {quote_table(table)}\nWHERE {any_rule}"


def validate(connection: Connection, table: str, rule_list: list[Rule], sample_size: int) -> dict[str, Any]:
    """Run the one-pass validation in the connection's transaction. Return {"rows": n, <key>: (count, ids)}."""
    # For this transaction only (one round trip): JIT would compile ~30 aggregate expressions for a
    # single scan, costing more than it saves; and the planner, multiplying the default selectivities of
    # 13 OR-ed conditions, expects nearly every row to break a rule and so refuses to ship rows from
    # parallel workers, when in fact few rows do.
    connection.execute(text("SELECT set_config('jit', 'off', true), set_config('parallel_tuple_cost', '0.0001', true)"))
    row = connection.execute(text(validation_sql(table, rule_list, sample_size))).mappings().one()
    found: dict[str, Any] = {"rows": int(row["rows"])}
    for rule in rule_list:
        found[rule.key] = (int(row[f"{rule.key}_count"]), list(row[f"{rule.key}_sample"] or []))
    return found


def history_limit(settings) -> int:
    """The trim limit: jobs.trim_history.max_entries, or 1000 when trim_history is not installed."""
    trim = getattr(settings.jobs, "trim_history", None)
    return int(getattr(trim, "max_entries", DEFAULT_HISTORY_LIMIT))


# ---- repair -------------------------------------------------------------------------------------

@dataclass
class RepairTotals:
    rows_repaired: int = 0
    values_by_rule: dict[str, int] = field(default_factory=dict)
    rows_by_rule: dict[str, int] = field(default_factory=dict)
    skipped_locked: list[int] = field(default_factory=list)
    batches: int = 0
    longest_batch_ms: float = 0.0


# What the fixable rules read: the repair locks and reads only these (never the large histories).
REPAIR_INPUT_COLUMNS = ("id", "current_amount", "contribution_rate", "max_amount", "seed_amount", "version",
                        "last_modified_at", "updated_at")


def _fixable(rule_list: list[Rule]) -> list[Rule]:
    return [rule for rule in rule_list if rule.fix is not None]


def candidates_sql(table: str, fixable: list[Rule]) -> str:
    """The next batch of ids that a fix applies to, in primary-key order (no locks)."""
    any_fix = " OR ".join(rule.condition for rule in fixable)
    return (f"SELECT id FROM {quote_table(table)} WHERE id > :after AND ({any_fix}) "
            "ORDER BY id LIMIT :batch_size")


def repair_batch_sql(table: str, fixable: list[Rule]) -> str:
    """One statement per batch: lock the candidate rows (SKIP LOCKED), compute every fix from the locked
    (newest) row version, update the rows and write the audit, and return what happened."""
    quoted = quote_table(table)
    fixed_columns: dict[str, tuple[Rule, str]] = {}
    for rule in fixable:
        for column, expression in rule.fix.columns.items():  # type: ignore[union-attr]
            fixed_columns[column] = (rule, expression)
    fires = ",\n    ".join(f"({rule.condition}) IS TRUE AS fire_{rule.key}" for rule in fixable)
    new_values = []
    for column, (rule, expression) in fixed_columns.items():
        if column in ("version", "last_modified_at"):
            continue
        new_values.append(f"CASE WHEN ({rule.condition}) IS TRUE THEN {expression} ELSE {column} END AS new_{column}")
    version_rule = next((rule for rule in fixable if "version" in rule.fix.columns), None)  # type: ignore[union-attr]
    if version_rule is not None:
        reset = version_rule.fix.columns  # type: ignore[union-attr]
        new_values.append(f"CASE WHEN {version_rule.condition} THEN {reset['version']} ELSE version + 1 END "
                          "AS version_after")
        new_values.append(f"CASE WHEN {version_rule.condition} THEN {reset['last_modified_at']} ELSE now() END "
                          "AS new_last_modified_at")
    else:
        new_values += ["version + 1 AS version_after", "now() AS new_last_modified_at"]
    any_fix = " OR ".join(f"({rule.condition})" for rule in fixable)
    set_columns = [f"{column} = changes.new_{column}" for column in fixed_columns
                   if column not in ("version", "last_modified_at")]
    set_columns += ["version = changes.version_after", "last_modified_at = changes.new_last_modified_at"]
    audit_values = []
    for column, (rule, _) in fixed_columns.items():
        # the new value as stored (after the column's type rounded it), read back from the UPDATE
        audit_values.append(f"('{column}', to_jsonb(changes.old_{column}), to_jsonb(updated.{column}), '{rule.key}', "
                            f"changes.fire_{rule.key})")
    old_columns = ", ".join(f"{column} AS old_{column}" for column in fixed_columns)
    newline = ",\n    "
    return f"""
WITH locked AS (
  SELECT {", ".join(REPAIR_INPUT_COLUMNS)} FROM {quoted}
  WHERE id = ANY(CAST(:ids AS bigint[]))
  ORDER BY id
  FOR UPDATE SKIP LOCKED
),
changes AS MATERIALIZED (
  SELECT id, version AS version_before, {old_columns},
    {fires},
    {newline.join(new_values)}
  FROM locked
  WHERE {any_fix}
),
updated AS (
  UPDATE {quoted} AS t
  SET {", ".join(set_columns)}
  FROM changes
  WHERE t.id = changes.id
  RETURNING t.id, {", ".join(f"t.{column}" for column in fixed_columns)}
),
audited AS (
  INSERT INTO {REPAIR_AUDIT}
    (source_table, row_id, column_name, old_value, new_value, rule, run_id, version_before, version_after)
  SELECT :source_table, changes.id, fixed.column_name, fixed.old_value, fixed.new_value, fixed.rule, :run_id,
         changes.version_before, changes.version_after
  FROM changes
  JOIN updated ON updated.id = changes.id
  CROSS JOIN LATERAL (VALUES
    {newline.join(audit_values)}
  ) AS fixed(column_name, old_value, new_value, rule, fired)
  WHERE fixed.fired
  ORDER BY changes.id, fixed.column_name
  RETURNING row_id, rule
)
SELECT
  (SELECT coalesce(array_agg(id), '{{}}') FROM locked) AS locked_ids,
  (SELECT count(*) FROM updated) AS rows_repaired,
  (SELECT coalesce(jsonb_object_agg(rule, values_count), '{{}}')
     FROM (SELECT rule, count(*) AS values_count FROM audited GROUP BY rule) AS per_rule) AS values_by_rule,
  (SELECT coalesce(jsonb_object_agg(rule, rows_count), '{{}}')
     FROM (SELECT rule, count(DISTINCT row_id) AS rows_count FROM audited GROUP BY rule) AS per_rule) AS rows_by_rule
"""


def repair(context: JobContext, table: str, rule_list: list[Rule], batch_size: int, totals: RepairTotals) -> None:
    """Apply the fixable rules' repairs in short batched transactions, adding up what was done in `totals`
    (so that what committed before a failure is known)."""
    fixable = _fixable(rule_list)
    with context.engine.begin() as connection:
        ensure_schema(connection)
    select_candidates = text(candidates_sql(table, fixable))
    batch_statement = text(repair_batch_sql(table, fixable))
    after = 0
    while True:
        context.check_cancelled()
        with context.engine.connect() as connection:
            ids = list(connection.execute(select_candidates, {"after": after, "batch_size": batch_size}).scalars())
            connection.rollback()
            if not ids:
                break
            started = time.perf_counter()
            with connection.begin():
                row = connection.execute(batch_statement, {"ids": ids, "source_table": table,
                                                           "run_id": context.run_id}).mappings().one()
            totals.longest_batch_ms = max(totals.longest_batch_ms, (time.perf_counter() - started) * 1000)
        totals.batches += 1
        totals.rows_repaired += int(row["rows_repaired"])
        for key, count in (row["values_by_rule"] or {}).items():
            totals.values_by_rule[key] = totals.values_by_rule.get(key, 0) + int(count)
        for key, count in (row["rows_by_rule"] or {}).items():
            totals.rows_by_rule[key] = totals.rows_by_rule.get(key, 0) + int(count)
        locked = set(row["locked_ids"] or [])
        totals.skipped_locked += [row_id for row_id in ids if row_id not in locked]
        context.report(f"repair batch {totals.batches}: {row['rows_repaired']} rows repaired, "
                       f"{len(ids) - len(locked)} skipped (locked by another session)")
        after = ids[-1]
        if len(ids) < batch_size:
            break


# ---- the job ------------------------------------------------------------------------------------

def run(context: JobContext) -> JobResult:
    options: Options = context.options  # type: ignore[assignment]
    settings = context.settings
    table = settings.database.table
    checked_table(table)  # a hostile name never reaches SQL (config validation rejects it first)
    rule_list = rules(history_limit(settings))
    repairing = options.repair and not context.dry_run
    totals: RepairTotals | None = None
    try:
        started = time.perf_counter()
        with context.engine.begin() as connection:
            found = validate(connection, table, rule_list, options.sample_size)
        scan_seconds = time.perf_counter() - started
        context.report(f"validated {table} in {scan_seconds:.2f}s: {found['rows']} rows break at least one rule")
        for rule in rule_list:
            count, sample = found[rule.key]
            if count:
                context.report(f"{rule.key}: {count} rows where {rule.condition} (ids {', '.join(map(str, sample))})")
        if repairing and any(found[rule.key][0] for rule in _fixable(rule_list)):
            totals = RepairTotals()
            repair(context, table, rule_list, options.batch_size, totals)
    except Cancelled:
        _log_partial_repair(context, totals)
        raise
    except Exception as error:  # noqa: BLE001 - classified, with the missing GRANTs named
        _log_partial_repair(context, totals)
        raise _explain(context, error, table, options.repair) from None
    return _result(context, table, rule_list, found, scan_seconds, totals, options)


def _log_partial_repair(context: JobContext, totals: RepairTotals | None) -> None:
    """The run stopped during repair: the batches that committed are audited and revertible; say so."""
    if totals is not None and totals.rows_repaired and context.logger is not None:
        context.logger.warning("{} rows were repaired before the run stopped; they are audited under run {}: "
                               "jackpot-maint repairs revert {}", totals.rows_repaired, context.run_id, context.run_id)


def _explain(context: JobContext, error: Exception, table: str, repairing: bool) -> Exception:
    """Turn a failure into the error an operator needs: a permission failure names the missing GRANTs."""
    if sqlstate_of(error) != "42501":
        return classify(error, resource=context.settings.database_display())
    detail = classify(error, resource=context.settings.database_display()).message
    try:
        with context.engine.connect() as connection:
            try:
                grants = missing_grants(connection, NAME, table, repair=repairing)
            except Exception:  # noqa: BLE001 - a probe itself denied: list everything the job needs
                connection.rollback()
                role = connection.execute(text("SELECT current_user")).scalar_one()
                grants = [privilege.grant(role) for privilege in
                          required_privileges(table, repair=repairing).get(NAME, [])]
    except Exception:  # noqa: BLE001 - the original error is the one to report
        grants = []
    hint = ("an administrator runs: " + " ".join(grants)) if grants else \
        "grant the privilege named above to the configured role; see `jackpot-maint db check`"
    if repairing:
        hint += " (the jackpot_maint schema and its tables come from `jackpot-maint db init`, run as their owner)"
    return DatabaseError(detail, code="J004", hint=hint)


def _result(context: JobContext, table: str, rule_list: list[Rule], found: dict[str, Any], scan_seconds: float,
            totals: RepairTotals | None, options: Options) -> JobResult:
    findings: list[Finding] = []
    problems: dict[str, int] = {}
    would: list[str] = []
    for rule in rule_list:
        count, sample = found[rule.key]
        symptoms: list[str] = []
        attempts: list[str] = []
        details: dict[str, Any] = {"rule": rule.key, "table": table, "condition": rule.condition, "count": count,
                                   "sample_ids": sample}
        if count:
            problems[rule.key] = count
            symptoms = [f"{count} rows in {table} where {rule.condition}",
                        f"sample ids: {', '.join(str(row_id) for row_id in sample)}"]
            if rule.fix is None:
                symptoms.append(f"not repaired automatically: {rule.no_fix_reason}")
            elif totals is not None:
                repaired = totals.rows_by_rule.get(rule.key, 0)
                details["repaired"] = repaired
                if repaired:
                    attempts.append(rule.fix.done.format(count=repaired)
                                    + f", run {context.run_id}; revert with jackpot-maint repairs revert {context.run_id}")
                left = count - repaired
                if left > 0:
                    attempts.append(f"{left} rows not repaired (locked by the service, or changed meanwhile): "
                                    "the next run retries them")
            elif options.repair and context.dry_run:
                would.append(rule.fix.would.format(count=count) + f" (sample ids {', '.join(map(str, sample))})")
                symptoms.append("dry run: " + rule.fix.would.format(count=count))
            else:
                symptoms.append("repairable: run `jackpot-maint jobs run validate_data --repair` "
                                "(reversible with `jackpot-maint repairs revert RUN_ID`)")
        findings.append(Finding(
            key=f"rule:{rule.key}", ok=count == 0,
            title=f"{rule.title} in {table}",
            category="data_corruption", severity="P2", code=rule.code, scope="database",
            symptoms=symptoms, attempts=attempts, details=details))
    summary: dict[str, Any] = {
        "rows_with_problems": found["rows"],
        "rules_failing": len(problems),
        "scan_seconds": round(scan_seconds, 3),
        "table": table,
        "history_limit": history_limit(context.settings),
        "problems": problems,
        "sample_ids": {key: found[key][1] for key in problems},
    }
    if totals is not None:
        summary.update({
            "rows_repaired": totals.rows_repaired,
            "values_repaired": sum(totals.values_by_rule.values()),
            "repaired_by_rule": totals.rows_by_rule,
            "rows_skipped_locked": len(totals.skipped_locked),
            "skipped_locked_ids": totals.skipped_locked[:options.sample_size],
            "repair_batches": totals.batches,
            "longest_batch_ms": round(totals.longest_batch_ms, 1),
        })
        if totals.rows_repaired:
            summary["revert_command"] = f"jackpot-maint repairs revert {context.run_id}"
    if would:
        summary["would_repair"] = would
    if not problems:
        return JobResult(status="ok", summary=summary, findings=findings,
                         message=f"{table}: all {len(rule_list)} rules pass")
    message = f"{table}: " + ", ".join(f"{key} {count}" for key, count in problems.items())
    if totals is not None:
        message += f"; repaired {totals.rows_repaired} rows"
        if totals.rows_repaired:
            message += f" (undo: jackpot-maint repairs revert {context.run_id})"
        if totals.skipped_locked:
            message += f"; {len(totals.skipped_locked)} locked rows skipped (retried next run)"
    elif would:
        message += "; dry run: " + "; ".join(would)
    return JobResult(status="problems", summary=summary, findings=findings, message=message,
                     error_code="J002" if set(problems) == {"version_out_of_range"} else "J003")


# ---- revert (used by `jackpot-maint repairs`) ----------------------------------------------------

# How each repairable column's old value (to_jsonb of it) is turned back into its SQL type.
COLUMN_TYPES = {"current_amount": "numeric", "contribution_rate": "numeric", "max_amount": "numeric",
                "version": "integer", "last_modified_at": "timestamptz"}


def _audit_exists(connection: Connection) -> bool:
    return bool(connection.execute(text(f"SELECT to_regclass('{REPAIR_AUDIT}') IS NOT NULL")).scalar())


def list_repairs(engine: Engine, *, limit: int = 50) -> list[dict[str, Any]]:
    """Return the repair runs recorded in repair_audit, newest first: run id, table, when, rows, values,
    rules, and how many rows were reverted since."""
    with engine.connect() as connection:
        if not _audit_exists(connection):
            return []
        rows = connection.execute(text(f"""
            SELECT run_id, source_table, min(repaired_at) AS repaired_at,
                   count(DISTINCT row_id) AS rows, count(*) AS values,
                   count(DISTINCT row_id) FILTER (WHERE reverted_at IS NOT NULL) AS rows_reverted,
                   max(reverted_at) AS last_reverted_at,
                   array_agg(DISTINCT rule ORDER BY rule) AS rules
            FROM {REPAIR_AUDIT}
            GROUP BY run_id, source_table
            ORDER BY min(repaired_at) DESC, run_id
            LIMIT :limit"""), {"limit": limit}).mappings().all()
    return [_run_entry(row) for row in rows]


def _run_entry(row: Any) -> dict[str, Any]:
    rows, reverted = int(row["rows"]), int(row["rows_reverted"])
    status = "reverted" if reverted == rows else ("partly reverted" if reverted else "applied")
    return {"run_id": row["run_id"], "table": row["source_table"], "repaired_at": row["repaired_at"].isoformat(),
            "rows": rows, "values": int(row["values"]), "rows_reverted": reverted, "status": status,
            "last_reverted_at": row["last_reverted_at"].isoformat() if row["last_reverted_at"] else None,
            "rules": list(row["rules"])}


def resolve_run_id(connection: Connection, run_id: str) -> str:
    """Given a run id or a unique prefix of one (as `history` shows), return the full run id.
    Raise UsageError (exit 2) when no repair run matches, or several do."""
    if not _audit_exists(connection):
        raise UsageError(f"no repairs recorded for run {run_id!r}: the repair audit "
                         f"({REPAIR_AUDIT}) does not exist yet", hint="see `jackpot-maint repairs list`")
    matches = list(connection.execute(text(
        f"SELECT DISTINCT run_id FROM {REPAIR_AUDIT} WHERE run_id = :run_id "
        f"OR (length(:run_id) >= 4 AND starts_with(run_id, :run_id)) ORDER BY run_id LIMIT 5"),
        {"run_id": run_id}).scalars())
    if run_id in matches:
        return run_id
    if not matches:
        raise UsageError(f"no repairs recorded for run {run_id!r}",
                         hint="see `jackpot-maint repairs list` for the runs that repaired something")
    if len(matches) > 1:
        raise UsageError(f"run id prefix {run_id!r} is ambiguous: {', '.join(matches)}", hint="give more characters")
    return matches[0]


def show_repair(engine: Engine, run_id: str) -> dict[str, Any]:
    """Given a run id (or unique prefix), return the run's entry and every audited value, with the row's
    current version and whether a revert would restore it. Raise UsageError for an unknown run."""
    with engine.connect() as connection:
        run_id = resolve_run_id(connection, run_id)
        summary = connection.execute(text(f"""
            SELECT run_id, source_table, min(repaired_at) AS repaired_at,
                   count(DISTINCT row_id) AS rows, count(*) AS values,
                   count(DISTINCT row_id) FILTER (WHERE reverted_at IS NOT NULL) AS rows_reverted,
                   max(reverted_at) AS last_reverted_at, array_agg(DISTINCT rule ORDER BY rule) AS rules
            FROM {REPAIR_AUDIT} WHERE run_id = :run_id GROUP BY run_id, source_table"""),
            {"run_id": run_id}).mappings().all()
        entry = _run_entry(summary[0])
        if len(summary) > 1:  # one run repairs one table; merged defensively
            entry["table"] = ", ".join(row["source_table"] for row in summary)
        values = []
        for table_row in summary:
            table = table_row["source_table"]
            audit = connection.execute(text(f"""
                SELECT a.row_id, a.column_name, a.old_value #>> '{{}}' AS old_value, a.new_value #>> '{{}}' AS new_value,
                       a.rule, a.version_before, a.version_after,
                       a.repaired_at, a.reverted_at, a.reverted_by_run, t.version AS version_now
                FROM {REPAIR_AUDIT} AS a
                LEFT JOIN {checked_table(table)} AS t ON t.id = a.row_id
                WHERE a.run_id = :run_id AND a.source_table = :table
                ORDER BY a.row_id, a.column_name"""), {"run_id": run_id, "table": table}).mappings().all()
            for row in audit:
                if row["reverted_at"] is not None:
                    state = "reverted"
                elif row["version_now"] is None:
                    state = "row deleted"
                elif row["version_now"] == row["version_after"]:
                    state = "revertible"
                else:
                    state = "changed since"
                values.append({"table": table, "row_id": row["row_id"], "column": row["column_name"],
                               "old_value": row["old_value"], "new_value": row["new_value"], "rule": row["rule"],
                               "version_before": row["version_before"], "version_after": row["version_after"],
                               "version_now": row["version_now"], "state": state,
                               "reverted_at": row["reverted_at"].isoformat() if row["reverted_at"] else None,
                               "reverted_by_run": row["reverted_by_run"]})
    entry["values_detail"] = values
    return entry


@dataclass
class RevertOutcome:
    run_id: str
    revert_id: str
    table: str
    dry_run: bool
    rows: int = 0
    reverted: list[int] = field(default_factory=list)
    already_reverted: int = 0
    changed: list[dict[str, Any]] = field(default_factory=list)
    locked: list[int] = field(default_factory=list)
    deleted: list[int] = field(default_factory=list)

    @property
    def not_reverted(self) -> int:
        return len(self.changed) + len(self.locked) + len(self.deleted)

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "revert_id": self.revert_id, "table": self.table, "dry_run": self.dry_run,
                "rows": self.rows, "reverted": len(self.reverted), "reverted_ids": self.reverted,
                "already_reverted": self.already_reverted, "not_reverted": self.not_reverted,
                "changed_since_repair": self.changed, "locked": self.locked, "deleted": self.deleted}


def _restore_expressions() -> str:
    """SET clauses restoring each audited column from the run's old values (a jsonb object per row);
    a column the run did not change keeps its value; version and last_modified_at, when the run did not
    reset them, are bumped and stamped like any other write."""
    clauses = []
    for column, sql_type in COLUMN_TYPES.items():
        otherwise = {"version": "t.version + 1", "last_modified_at": "now()"}.get(column, f"t.{column}")
        clauses.append(f"{column} = CASE WHEN revertible.old_values ? '{column}' "
                       f"THEN CAST(revertible.old_values ->> '{column}' AS {sql_type}) ELSE {otherwise} END")
    return ",\n      ".join(clauses)


def revert_batch_sql(table: str) -> str:
    """One statement per batch of row ids: lock the rows (SKIP LOCKED), restore those whose version is still
    the one the repair left, mark their audit entries reverted, and return what happened to each row."""
    quoted = quote_table(table)
    return f"""
WITH entries AS (
  SELECT row_id, max(version_after) AS version_after, jsonb_object_agg(column_name, old_value) AS old_values
  FROM {REPAIR_AUDIT}
  WHERE run_id = :run_id AND source_table = :source_table AND reverted_at IS NULL
    AND row_id = ANY(CAST(:ids AS bigint[]))
  GROUP BY row_id
),
locked AS (
  SELECT t.id, t.version FROM {quoted} AS t
  WHERE t.id = ANY(CAST(:ids AS bigint[]))
  ORDER BY t.id
  FOR UPDATE OF t SKIP LOCKED
),
revertible AS MATERIALIZED (
  SELECT entries.* FROM entries JOIN locked ON locked.id = entries.row_id AND locked.version = entries.version_after
),
restored AS (
  UPDATE {quoted} AS t
  SET {_restore_expressions()}
  FROM revertible
  WHERE t.id = revertible.row_id
  RETURNING t.id
),
marked AS (
  UPDATE {REPAIR_AUDIT} AS a
  SET reverted_at = now(), reverted_by_run = :revert_id
  FROM restored
  WHERE a.run_id = :run_id AND a.source_table = :source_table AND a.row_id = restored.id AND a.reverted_at IS NULL
  RETURNING a.id
)
SELECT
  (SELECT coalesce(jsonb_object_agg(id, version), '{{}}') FROM locked) AS locked_versions,
  (SELECT coalesce(jsonb_object_agg(row_id, version_after), '{{}}') FROM entries) AS expected_versions,
  (SELECT coalesce(array_agg(id ORDER BY id), '{{}}') FROM restored) AS restored_ids,
  (SELECT count(*) FROM marked) AS values_marked
"""


def revert_repair(engine: Engine, run_id: str, *, dry_run: bool = False, batch_size: int = 500,
                  revert_id: str | None = None) -> list[RevertOutcome]:
    """Given a repair run id (or unique prefix), restore the old values of the rows it repaired that
    nobody changed since (their version is still the one the repair left), bump their version, and mark
    the audit entries reverted. Rows the service changed, holds locked, or deleted are reported, untouched.
    With dry_run, say what would happen and change nothing. Return one outcome per repaired table.
    Raise UsageError (exit 2) for an unknown run id."""
    revert_id = revert_id or str(uuid.uuid4())
    outcomes = []
    with engine.connect() as connection:
        run_id = resolve_run_id(connection, run_id)
        tables = list(connection.execute(text(
            f"SELECT DISTINCT source_table FROM {REPAIR_AUDIT} WHERE run_id = :run_id ORDER BY 1"),
            {"run_id": run_id}).scalars())
        connection.rollback()
    for table in tables:
        checked_table(table)  # validated before it reaches SQL
        outcome = RevertOutcome(run_id=run_id, revert_id=revert_id, table=table, dry_run=dry_run)
        with engine.connect() as connection:
            counts = connection.execute(text(f"""
                SELECT count(DISTINCT row_id) AS rows,
                       count(DISTINCT row_id) FILTER (WHERE reverted_at IS NOT NULL) AS already
                FROM {REPAIR_AUDIT} WHERE run_id = :run_id AND source_table = :table"""),
                {"run_id": run_id, "table": table}).mappings().one()
            connection.rollback()
        outcome.rows, outcome.already_reverted = int(counts["rows"]), int(counts["already"])
        if dry_run:
            _revert_preview(engine, outcome)
        else:
            _revert_batches(engine, outcome, batch_size)
        outcomes.append(outcome)
    return outcomes


def _pending_ids(connection: Connection, outcome: RevertOutcome, after: int, batch_size: int) -> list[int]:
    return list(connection.execute(text(f"""
        SELECT DISTINCT row_id FROM {REPAIR_AUDIT}
        WHERE run_id = :run_id AND source_table = :table AND reverted_at IS NULL AND row_id > :after
        ORDER BY row_id LIMIT :batch_size"""),
        {"run_id": outcome.run_id, "table": outcome.table, "after": after, "batch_size": batch_size}).scalars())


def _revert_batches(engine: Engine, outcome: RevertOutcome, batch_size: int) -> None:
    statement = text(revert_batch_sql(outcome.table))
    after = 0
    while True:
        with engine.connect() as connection:
            ids = _pending_ids(connection, outcome, after, batch_size)
            connection.rollback()
            if not ids:
                return
            with connection.begin():
                row = connection.execute(statement, {"run_id": outcome.run_id, "source_table": outcome.table,
                                                     "revert_id": outcome.revert_id, "ids": ids}).mappings().one()
            locked_versions = {int(key): value for key, value in (row["locked_versions"] or {}).items()}
            expected = {int(key): value for key, value in (row["expected_versions"] or {}).items()}
            restored = set(row["restored_ids"] or [])
            missing = [row_id for row_id in ids if row_id not in locked_versions]
            existing = set(connection.execute(text(
                f"SELECT id FROM {quote_table(outcome.table)} WHERE id = ANY(CAST(:ids AS bigint[]))"),
                {"ids": missing}).scalars()) if missing else set()
            connection.rollback()
        for row_id in ids:
            if row_id in restored:
                outcome.reverted.append(row_id)
            elif row_id in locked_versions:
                outcome.changed.append({"row_id": row_id, "version_after_repair": expected.get(row_id),
                                        "version_now": locked_versions[row_id]})
            elif row_id in existing:
                outcome.locked.append(row_id)
            else:
                outcome.deleted.append(row_id)
        after = ids[-1]


def _revert_preview(engine: Engine, outcome: RevertOutcome) -> None:
    """Dry run: compare each pending row's version with the one the repair left; no locks, no writes."""
    with engine.connect() as connection:
        rows = connection.execute(text(f"""
            SELECT a.row_id, max(a.version_after) AS version_after, max(t.version) AS version_now,
                   bool_or(t.id IS NOT NULL) AS present
            FROM {REPAIR_AUDIT} AS a LEFT JOIN {quote_table(outcome.table)} AS t ON t.id = a.row_id
            WHERE a.run_id = :run_id AND a.source_table = :table AND a.reverted_at IS NULL
            GROUP BY a.row_id ORDER BY a.row_id"""), {"run_id": outcome.run_id, "table": outcome.table}).mappings().all()
        connection.rollback()
    for row in rows:
        if not row["present"]:
            outcome.deleted.append(row["row_id"])
        elif row["version_now"] == row["version_after"]:
            outcome.reverted.append(row["row_id"])
        else:
            outcome.changed.append({"row_id": row["row_id"], "version_after_repair": row["version_after"],
                                    "version_now": row["version_now"]})
