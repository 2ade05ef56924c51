"""trim_history: keep the newest `max_entries` entries of contribution_history and win_history.

The guide's `cleanup-history --max-entries=1000`, made safe for a live service:
- nothing is lost: the removed entries move into jackpot_maint.history_archive in the same statement
  (and so the same transaction) as the trim, unless `archive = false` says otherwise;
- the service is not hurt: the table is walked in primary-key batches, each its own short transaction
  that locks only the rows it trims, with FOR UPDATE SKIP LOCKED (a row the service holds is skipped and
  left for the next run); the batch size adapts so that a batch holds its locks at most `max_lock_ms`,
  and a batch still running at twice that is rolled back and retried smaller;
- both arrays of a row change in one UPDATE, with version = version + 1 and last_modified_at = now(),
  so the service's optimistic locking sees the change instead of overwriting it;
- a history that is not an array (SQL NULL, JSON null, an object, a scalar) is never modified, only
  counted: every check uses strict jsonpath with a type() guard, because lax jsonpath would silently
  wrap an object into a one-element array.
Stopping between batches loses nothing; a rerun finishes the work (rows within the limit are not touched).
"""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy.exc
from pydantic import Field
from sqlalchemy import text

from config.types import Duration, Schedule
from jobs.base import JobContext, JobOptions, JobResult
from jobs.maint_schema import HISTORY_ARCHIVE, HISTORY_COLUMNS, missing_grants
from scheduler.db import quote_table
from scheduler.errors import DatabaseError, classify, sqlstate_of

NAME = "trim_history"
SCOPE = "database"
DESCRIPTION = "Keep the newest max_entries entries of each history, archiving the rest (guide: cleanup-history)"


class Options(JobOptions):
    enabled: bool = Field(True, description="Run on the schedule (`jobs run` works either way)")
    schedule: Schedule = Field("30 3 * * *", description="When to run (cron or 'every 6h'); default daily 03:30")
    timeout: Duration = Field(7200.0, description="Cancel the run after this long; a rerun finishes the work")
    misfire_grace: Duration | None = Field(None, description="How late a missed run may still be caught up after "
                                           "downtime; empty: sized to the schedule")
    max_entries: int = Field(1000, ge=1, description="Keep this many newest entries of each history")
    archive: bool = Field(True, description="Move removed entries into jackpot_maint.history_archive; "
                          "false deletes them for good")
    max_lock_ms: int = Field(500, ge=10, description="A batch holds its row locks at most this long (ms); "
                             "the batch size adapts to stay under it")
    batch_size: int = Field(10, ge=1, description="Rows in the first batch (then adapted to max_lock_ms)")
    max_batch_size: int = Field(5000, ge=1, description="Never more rows in one batch")
    pause: Duration = Field(0.0, description="Pause between batches, to leave the service more room")


# A strict-mode size that is NULL unless the value is an array: lax mode would wrap an object or a
# JSON null into a one-element array and report size 1.
_SIZE = """(jsonb_path_query_first({column}, 'strict $ ? (@.type() == "array").size()'))::int"""


def _batch_sql(table: str, archive: bool, max_entries: int) -> str:
    """One statement per batch: scan the key range, lock the rows over the limit (SKIP LOCKED),
    archive what they lose and trim both arrays in one UPDATE, and return the batch's counts.

    The new arrays are computed inside the UPDATE from the row it updates (the locked version: FOR UPDATE
    follows a concurrent update to the newest one), so no large value is materialized on the way."""
    quoted = quote_table(table)
    keep, keep_last = int(max_entries), int(max_entries) - 1  # validated integers, safe in a jsonpath literal
    scan_sizes = ",\n".join(f"    {_SIZE.format(column=column)} AS {column}_size" for column in HISTORY_COLUMNS)
    over = " OR ".join(f"{column}_size > :max_entries" for column in HISTORY_COLUMNS)
    sized_over = " OR ".join(f"sized.{column}_size > :max_entries" for column in HISTORY_COLUMNS)
    # the scan's sizes hold when the locked row is the version the scan read (same xmin); a row the
    # service changed in between is measured again
    locked_sizes = ",\n".join(
        f"    CASE WHEN locked.xmin = scanned.xmin THEN scanned.{column}_size "
        f"ELSE {_SIZE.format(column=f'locked.{column}')} END AS {column}_size" for column in HISTORY_COLUMNS)
    set_columns = ",\n    ".join(
        f"{column} = CASE WHEN sized.{column}_size > :max_entries "
        f"THEN jsonb_path_query_array(t.{column}, 'strict $[last - {keep_last} to last]') ELSE t.{column} END"
        for column in HISTORY_COLUMNS)
    if archive:
        removed_values = ",\n    ".join(
            f"('{column}', CASE WHEN {column}_size > :max_entries "
            f"THEN jsonb_path_query_array({column}, 'strict $[0 to last - {keep}]') END, {column}_size - :max_entries)"
            for column in HISTORY_COLUMNS)
        archive_cte = f""",
archived AS (
  INSERT INTO {HISTORY_ARCHIVE} (source_table, jackpot_id, "group", history_column, entries, entry_count, run_id)
  SELECT :table_name, id, "group", history_column, entries, entry_count, :run_id
  FROM sized CROSS JOIN LATERAL (VALUES
    {removed_values}
  ) AS removed(history_column, entries, entry_count)
  WHERE entries IS NOT NULL
  RETURNING history_column, entry_count
)"""
        archived = ",\n".join(
            f"  (SELECT coalesce(sum(entry_count), 0) FROM archived WHERE history_column = '{column}') "
            f"AS {column}_archived" for column in HISTORY_COLUMNS)
    else:
        archive_cte = ""
        archived = ",\n".join(f"  0 AS {column}_archived" for column in HISTORY_COLUMNS)
    removed = ",\n".join(
        f"  (SELECT coalesce(sum({column}_size - :max_entries) FILTER (WHERE {column}_size > :max_entries), 0) "
        f"FROM sized WHERE id IN (SELECT id FROM updated)) AS {column}_removed" for column in HISTORY_COLUMNS)
    not_arrays = ",\n".join(f"  (SELECT count(*) FROM scanned WHERE {column}_size IS NULL) AS {column}_not_array"
                             for column in HISTORY_COLUMNS)
    return f"""
WITH scanned AS MATERIALIZED (
  SELECT id, xmin,
{scan_sizes}
  FROM {quoted} WHERE id > :after AND id <= :upto
),
candidates AS (
  SELECT id FROM scanned WHERE {over}
),
locked AS (
  SELECT t.id, t.xmin, t."group", t.contribution_history, t.win_history
  FROM {quoted} AS t
  WHERE t.id IN (SELECT id FROM candidates)
  ORDER BY t.id
  FOR UPDATE OF t SKIP LOCKED
),
sized AS MATERIALIZED (
  -- the locked version's sizes (NULL unless an array)
  SELECT locked.id, locked."group", locked.contribution_history, locked.win_history,
{locked_sizes}
  FROM locked JOIN scanned ON scanned.id = locked.id
){archive_cte},
updated AS (
  UPDATE {quoted} AS t SET
    {set_columns},
    version = t.version + 1,
    last_modified_at = now()
  FROM sized
  WHERE t.id = sized.id AND ({sized_over})
  RETURNING t.id
)
SELECT
  (SELECT count(*) FROM scanned) AS scanned,
{not_arrays},
  (SELECT count(*) FROM candidates) AS over_limit,
  (SELECT count(*) FROM locked) AS locked,
  (SELECT count(*) FROM updated) AS trimmed,
{removed},
{archived}
"""


def _dry_run_sql(table: str) -> str:
    sizes = ",\n".join(f"    {_SIZE.format(column=column)} AS {column}_size" for column in HISTORY_COLUMNS)
    over = " OR ".join(f"{column}_size > :max_entries" for column in HISTORY_COLUMNS)
    removed = ",\n".join(
        f"  coalesce(sum({column}_size - :max_entries) FILTER (WHERE {column}_size > :max_entries), 0) AS {column}_removed"
        for column in HISTORY_COLUMNS)
    not_arrays = ",\n".join(f"  count(*) FILTER (WHERE {column}_size IS NULL) AS {column}_not_array"
                            for column in HISTORY_COLUMNS)
    return f"""
WITH scanned AS MATERIALIZED (
  SELECT id,
{sizes}
  FROM {quote_table(table)} WHERE id > :after AND id <= :upto
)
SELECT count(*) AS scanned,
{not_arrays},
  count(*) FILTER (WHERE {over}) AS over_limit,
  0 AS locked, 0 AS trimmed,
{removed}
FROM scanned
"""


def _range_sql(table: str) -> str:
    # the next key range, read from the primary key index only: no row is locked or detoasted here
    return (f"SELECT max(id) AS upto, count(*) AS rows FROM "
            f"(SELECT id FROM {quote_table(table)} WHERE id > :after ORDER BY id LIMIT :limit) AS batch")


class _Batches:
    """Chooses batch sizes so a batch's transaction (the upper bound of its lock time) stays under max_lock_ms.

    Rows differ in size and the server in load, so it aims at half the limit, remembers the slowest
    recent time per row (decaying slowly), grows at most by doubling and shrinks at once."""

    def __init__(self, options: Options):
        self.size = min(options.batch_size, options.max_batch_size)
        self.maximum = options.max_batch_size
        self.target_seconds = options.max_lock_ms / 1000 * 0.5
        # a batch (of more than one row) still running at twice the limit is cancelled and retried smaller
        self.cap_ms = options.max_lock_ms * 2
        self.seconds_per_row = 0.0

    def shrink(self) -> None:
        self.size = max(1, self.size // 4)

    def next_size(self, rows: int, seconds: float) -> int:
        if rows > 0 and seconds > 0:
            self.seconds_per_row = max(seconds / rows, self.seconds_per_row * 0.7)
            ideal = int(self.target_seconds / self.seconds_per_row)
            self.size = max(1, min(ideal, self.size * 2, self.maximum))
        return self.size


def run(context: JobContext) -> JobResult:
    options: Options = context.options  # type: ignore[assignment]
    table = context.settings.database.table
    archive = options.archive and not context.dry_run
    summary: dict[str, Any] = {
        "table": table, "max_entries": options.max_entries, "archive": options.archive, "dry_run": context.dry_run,
        "rows_scanned": 0, "rows_over_limit": 0, "rows_trimmed": 0, "rows_skipped_locked": 0,
        **{f"rows_not_array_{column}": 0 for column in HISTORY_COLUMNS},
        **{f"entries_removed_{column}": 0 for column in HISTORY_COLUMNS},
        **{f"entries_archived_{column}": 0 for column in HISTORY_COLUMNS},
        "batches": 0, "batches_retried_smaller": 0, "longest_batch_lock_ms": 0.0, "last_batch_size": 0,
    }
    try:
        _check_archive_exists(context, archive)
        statement = text(_dry_run_sql(table) if context.dry_run else _batch_sql(table, archive, options.max_entries))
        batches = _Batches(options)
        after = -(2 ** 63)  # below any bigint id: explicit ids may be zero or negative
        with context.engine.connect() as connection:
            while True:
                if context.cancelled():
                    return _result(summary, context, cancelled=True)
                started = time.perf_counter()
                try:
                    with connection.begin():
                        if batches.size > 1:
                            # a hard cap: a batch slowed down by a load spike is rolled back (nothing
                            # changes) and retried smaller, instead of holding its locks longer
                            connection.execute(text(f"SET LOCAL statement_timeout = {batches.cap_ms}"))
                        upto, rows = connection.execute(text(_range_sql(table)),
                                                        {"after": after, "limit": batches.size}).one()
                        if not rows:
                            break
                        counts = connection.execute(statement, {
                            "after": after, "upto": upto, "max_entries": options.max_entries,
                            "table_name": table, "run_id": context.run_id}).mappings().one()
                except sqlalchemy.exc.DBAPIError as error:
                    if sqlstate_of(error) != "57014" or context.cancelled() or batches.size <= 1:
                        raise
                    summary["batches_retried_smaller"] += 1
                    summary["longest_batch_lock_ms"] = max(summary["longest_batch_lock_ms"],
                                                           round((time.perf_counter() - started) * 1000, 1))
                    batches.shrink()
                    continue
                elapsed = time.perf_counter() - started
                _add(summary, counts, elapsed, context.dry_run)
                summary["last_batch_size"] = rows
                after = upto
                batches.next_size(rows, elapsed)
                if summary["batches"] % 50 == 0:
                    context.report(f"{summary['rows_scanned']} rows scanned, {summary['rows_trimmed']} trimmed")
                if options.pause:
                    time.sleep(options.pause)
    except Exception as error:  # noqa: BLE001 - re-raised with what the operator needs to know
        raise _explained(error, context, table, archive) from None
    return _result(summary, context)


def _check_archive_exists(context: JobContext, archive: bool) -> None:
    if not archive:
        return
    with context.engine.connect() as connection:
        exists = connection.execute(text(f"SELECT to_regclass('{HISTORY_ARCHIVE}') IS NOT NULL")).scalar()
    if not exists:
        raise DatabaseError(f"the archive table {HISTORY_ARCHIVE} does not exist in "
                            f"{context.settings.database_display()}",
                            hint="run `jackpot-maint db init` once, or set jobs.trim_history.archive = false "
                                 "to delete trimmed entries without keeping them")


def _add(summary: dict[str, Any], counts: Any, elapsed: float, dry_run: bool) -> None:
    summary["batches"] += 1
    summary["rows_scanned"] += counts["scanned"]
    summary["rows_over_limit"] += counts["over_limit"]
    summary["rows_trimmed"] += counts["trimmed"]
    if not dry_run:
        summary["rows_skipped_locked"] += counts["over_limit"] - counts["locked"]
    for column in HISTORY_COLUMNS:
        summary[f"rows_not_array_{column}"] += counts[f"{column}_not_array"]
        summary[f"entries_removed_{column}"] += int(counts[f"{column}_removed"] or 0)
        if f"{column}_archived" in counts:
            summary[f"entries_archived_{column}"] += int(counts[f"{column}_archived"] or 0)
    summary["longest_batch_lock_ms"] = max(summary["longest_batch_lock_ms"], round(elapsed * 1000, 1))


def _result(summary: dict[str, Any], context: JobContext, *, cancelled: bool = False) -> JobResult:
    removed = sum(summary[f"entries_removed_{column}"] for column in HISTORY_COLUMNS)
    if context.dry_run:
        parts = [f"dry run: would trim {summary['rows_over_limit']} of {summary['rows_scanned']} rows, "
                 f"removing {removed} entries" + (" (archived)" if summary["archive"] else " (not archived)")]
    else:
        parts = [f"trimmed {summary['rows_trimmed']} of {summary['rows_scanned']} rows, removed {removed} entries"
                 + (" into " + HISTORY_ARCHIVE if summary["archive"] else " (archive off: not kept)")
                 + f" in {summary['batches']} batches, longest lock {summary['longest_batch_lock_ms']} ms"]
    if summary["rows_skipped_locked"]:
        parts.append(f"{summary['rows_skipped_locked']} rows were locked by the service and skipped; "
                     "the next run trims them")
    not_arrays = {column: summary[f"rows_not_array_{column}"] for column in HISTORY_COLUMNS
                  if summary[f"rows_not_array_{column}"]}
    if not_arrays:
        parts.append("invalid data, left untouched: " + ", ".join(
            f"{count} rows whose {column} is NULL or not a JSON array" for column, count in not_arrays.items())
            + " (see validate_data)")
    if cancelled:
        parts.append("stopped between batches (nothing lost); the next run finishes the work")
    status = "cancelled" if cancelled else ("problems" if not_arrays else "ok")
    return JobResult(status=status, summary=summary, message="; ".join(parts))


def _explained(error: Exception, context: JobContext, table: str, archive: bool) -> Exception:
    """Given a failure, return the JackpotError to raise; a missing privilege names the GRANTs that fix it."""
    classified = classify(error, resource=context.settings.database_display())
    if sqlstate_of(error) != "42501":
        return classified
    try:
        with context.engine.connect() as connection:
            grants = missing_grants(connection, NAME, table)
        if not archive:
            grants = [grant for grant in grants if "jackpot_maint" not in grant]
    except Exception:  # noqa: BLE001 - the original error is what matters
        grants = []
    if not grants:
        return classified
    return DatabaseError(f"permission denied: trim_history on {table} needs privileges the configured role lacks. "
                         f"An administrator runs: {' '.join(grants)}", code="J004",
                         hint="`jackpot-maint db check` lists every job's privileges")
