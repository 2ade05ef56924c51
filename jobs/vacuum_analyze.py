"""vacuum_analyze: VACUUM (ANALYZE, SKIP_LOCKED) of the configured tables, never waiting on the service.

The guide's "Automated Maintenance" (VACUUM ANALYZE jackpots), made safe for a live service:
- SKIP_LOCKED: a table whose lock is not available at once is skipped, and the skip is detected
  (PostgreSQL's WARNING "skipping vacuum of ... lock not available", SQLSTATE 55P03, delivered to a
  notice handler) and reported, never silently passed;
- autocommit (VACUUM cannot run inside a transaction block) with its own, longer statement_timeout;
- before and after, per table: live and dead tuples, table / TOAST / index sizes, last (auto)vacuum
  and (auto)analyze, and the duration;
- min_dead_tuples / min_dead_ratio skip tables that do not need it (and say so);
- VACUUM FULL rewrites the table under an ACCESS EXCLUSIVE lock: only when full = true AND allow_full = true.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy.exc
from pydantic import Field
from sqlalchemy import text

from config.types import Duration, Schedule, TableName
from jobs.base import Finding, JobContext, JobOptions, JobResult
from jobs.maint_schema import Privilege
from scheduler.db import create_target_engine, quote_table, split_table
from scheduler.errors import classify, sqlstate_of

NAME = "vacuum_analyze"
SCOPE = "database"
DESCRIPTION = "VACUUM (ANALYZE, SKIP_LOCKED) the jackpots table, reporting before/after statistics (guide: VACUUM ANALYZE)"

# Reading a table's size needs a share lock: give up on it quickly when the table is held exclusively.
STATS_LOCK_TIMEOUT = 0.1
# SQLSTATE of the WARNING a SKIP_LOCKED vacuum or analyze gives for a table it skipped: lock_not_available
LOCK_NOT_AVAILABLE = "55P03"


class Options(JobOptions):
    enabled: bool = Field(True, description="Run on the schedule (`jobs run` works either way)")
    schedule: Schedule = Field("0 4 * * *", description="When to run (cron or 'every 12h'); default daily 04:00, after trim_history")
    timeout: Duration = Field(7200.0, description="Cancel the run after this long")
    misfire_grace: Duration | None = Field(None, description="How late a missed run may still be caught up after "
                                           "downtime; empty: sized to the schedule")
    tables: list[TableName] = Field(default_factory=list, description="Tables to vacuum; empty: database.table")
    statement_timeout: Duration = Field(3600.0, description="statement_timeout of each VACUUM (longer than the "
                                        "daemon's default)")
    min_dead_tuples: int = Field(0, ge=0, description="Skip a table with fewer dead tuples than this")
    min_dead_ratio: float = Field(0.0, ge=0, le=1, description="Skip a table whose dead / (live + dead) is below this")
    full: bool = Field(False, description="VACUUM FULL (rewrites the table under an exclusive lock); "
                       "needs allow_full = true too")
    allow_full: bool = Field(False, description="Second switch for VACUUM FULL, so one mistaken key cannot lock "
                             "the service out")
    alert_after_skips: int = Field(3, ge=1, description="Raise an alert when a table was skipped (locked) this "
                                   "many runs in a row")


_STATS_SQL = """
SELECT c.oid,
       coalesce(s.n_live_tup, 0) AS live_tuples,
       coalesce(s.n_dead_tup, 0) AS dead_tuples,
       pg_relation_size(c.oid) AS table_bytes,
       coalesce(pg_total_relation_size(nullif(c.reltoastrelid, 0)), 0) AS toast_bytes,
       pg_indexes_size(c.oid) AS index_bytes,
       pg_total_relation_size(c.oid) AS total_bytes,
       s.last_vacuum, s.last_autovacuum, s.last_analyze, s.last_autoanalyze,
       s.vacuum_count, s.analyze_count,
       c.relowner::regrole::text AS owner,
       pg_has_role(c.relowner, 'USAGE')
         OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
         OR pg_has_role((SELECT datdba FROM pg_database WHERE datname = current_database()), 'USAGE')
         OR (current_setting('server_version_num')::int >= 170000 AND has_table_privilege(c.oid, 'MAINTAIN'))
         AS may_vacuum
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_all_tables s ON s.relid = c.oid
WHERE n.nspname = :schema AND c.relname = :name AND c.relkind IN ('r', 'm', 'p')
"""


def _stats(connection, table: str) -> dict[str, Any] | None:
    # by name, not to_regclass(), which raises an error instead of answering when USAGE on the schema is missing
    schema, name = split_table(table)
    row = connection.execute(text(_STATS_SQL), {"schema": schema, "name": name}).mappings().first()
    if row is None:
        return None
    stats = dict(row)
    total = stats["live_tuples"] + stats["dead_tuples"]
    stats["dead_ratio"] = round(stats["dead_tuples"] / total, 4) if total else 0.0
    for key in ("last_vacuum", "last_autovacuum", "last_analyze", "last_autoanalyze"):
        stats[key] = stats[key].isoformat() if stats[key] is not None else None
    stats.pop("oid")
    return stats


def _public(stats: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in stats.items() if key not in ("owner", "may_vacuum")}


def run(context: JobContext) -> JobResult:
    options: Options = context.options  # type: ignore[assignment]
    tables = list(dict.fromkeys(options.tables or [context.settings.database.table]))
    full = options.full and options.allow_full
    notes = []
    if options.full and not options.allow_full:
        notes.append("full = true ignored: VACUUM FULL also needs allow_full = true (it locks the table exclusively)")
    # VACUUM cannot run inside a transaction block; it gets its own, longer statement timeout
    # (SKIP_LOCKED makes VACUUM itself never wait; the short lock_timeout is for the statistics queries)
    engine = create_target_engine(context.settings, job=NAME, autocommit=True, pool_size=1,
                                  statement_timeout=options.statement_timeout, lock_timeout=STATS_LOCK_TIMEOUT,
                                  on_connect=context.backend_pids.add)
    results: dict[str, dict[str, Any]] = {}
    findings: list[Finding] = []
    try:
        with engine.connect() as connection:
            notices: list[Notice] = []
            # psycopg's Diagnostic is only valid during the callback: copy what is needed
            connection.connection.driver_connection.add_notice_handler(
                lambda diagnostic: notices.append(Notice(diagnostic.severity, diagnostic.sqlstate,
                                                         diagnostic.message_primary)))
            for table in tables:
                context.check_cancelled()
                results[table] = _one_table(context, connection, notices, table, options, full)
                findings += _skip_findings(context, table, results[table], options)
    except Exception as error:  # noqa: BLE001 - classified with the resource named
        from jobs.base import Cancelled

        if isinstance(error, Cancelled):
            raise
        raise classify(error, resource=context.settings.database_display()) from None
    finally:
        engine.dispose()
    return _result(context, results, notes, findings, full)


def _locked_stats(connection, table: str) -> tuple[dict[str, Any] | None, bool]:
    """Return (statistics, False), or (None, True) when another session holds the table exclusively
    (the size functions need a share lock, and they must not wait for it)."""
    try:
        return _stats(connection, table), False
    except sqlalchemy.exc.DBAPIError as error:
        if sqlstate_of(error) == LOCK_NOT_AVAILABLE:
            return None, True
        raise


def _one_table(context: JobContext, connection, notices: list, table: str, options: Options, full: bool) -> dict[str, Any]:
    before, locked = _locked_stats(connection, table)
    if locked:
        reason = (f"another session holds an exclusive lock on {table} (not even its size could be read within "
                  f"{STATS_LOCK_TIMEOUT * 1000:.0f} ms)")
        context.report(f"{table}: skipped: {reason}")
        return {"outcome": "skipped_locked", "reason": reason}
    if before is None:
        return {"outcome": "missing", "reason": f"table {table} does not exist (check the table name and schema)"}
    if not before["may_vacuum"]:
        grant = Privilege(NAME, "maintain", table, "MAINTAIN", "").grant(
            connection.execute(text("SELECT current_user")).scalar_one(), owner=before["owner"],
            server_version=int(connection.execute(text("SHOW server_version_num")).scalar_one()))
        return {"outcome": "not_permitted", "before": _public(before),
                "reason": f"the role may not VACUUM {table} (owner {before['owner']}). An administrator runs: {grant}"}
    reasons = []
    if before["dead_tuples"] < options.min_dead_tuples:
        reasons.append(f"{before['dead_tuples']} dead tuples < min_dead_tuples {options.min_dead_tuples}")
    if options.min_dead_ratio and before["dead_ratio"] < options.min_dead_ratio:
        reasons.append(f"dead ratio {before['dead_ratio']:.2%} < min_dead_ratio {options.min_dead_ratio:.2%}")
    if reasons:
        context.report(f"{table}: not needed ({'; '.join(reasons)})")
        return {"outcome": "not_needed", "reason": "; ".join(reasons), "before": _public(before)}
    statement = f"VACUUM ({'FULL, ' if full else ''}ANALYZE, SKIP_LOCKED) {quote_table(table)}"
    why = (f"{before['dead_tuples']} dead tuples ({before['dead_ratio']:.2%}), "
           f"{before['total_bytes']} bytes in total")
    if context.dry_run:
        context.report(f"{table}: would run {statement}: {why}")
        return {"outcome": "would_vacuum", "statement": statement, "reason": why, "before": _public(before)}
    context.report(f"{table}: {statement} ({why})")
    notices.clear()
    started = time.perf_counter()
    connection.exec_driver_sql(statement)
    seconds = round(time.perf_counter() - started, 3)
    after = _locked_stats(connection, table)[0] or before
    skipped = [_notice_text(notice) for notice in notices if _is_lock_skip(notice)]
    other_warnings = [_notice_text(notice) for notice in notices if not _is_lock_skip(notice)]
    if not skipped and after["vacuum_count"] == before["vacuum_count"] and not full:
        # no notice seen but the counters did not move either: say so rather than claim success
        skipped = ["pg_stat_all_tables shows no new vacuum"]
    result = {"statement": statement, "seconds": seconds, "before": _public(before), "after": _public(after)}
    if other_warnings:
        result["warnings"] = other_warnings
    if skipped:
        result.update(outcome="skipped_locked", reason="; ".join(skipped))
        context.report(f"{table}: skipped, lock not available: {'; '.join(skipped)}")
    else:
        result["outcome"] = "vacuumed"
        result["dead_tuples_removed"] = max(before["dead_tuples"] - after["dead_tuples"], 0)
        result["bytes_freed"] = before["total_bytes"] - after["total_bytes"]
    return result


@dataclass(frozen=True)
class Notice:
    severity: str | None
    sqlstate: str | None
    message_primary: str | None


def _is_lock_skip(notice: Notice) -> bool:
    return notice.sqlstate == LOCK_NOT_AVAILABLE or "lock not available" in (notice.message_primary or "")


def _notice_text(notice: Notice) -> str:
    return f"{notice.severity}: {notice.message_primary}"


def _skip_findings(context: JobContext, table: str, result: dict[str, Any], options: Options) -> list[Finding]:
    """A table skipped because locked is retried next run; only a streak of skips becomes an alert."""
    if context.dry_run or context.state is None or result["outcome"] not in ("skipped_locked", "vacuumed"):
        return []
    key = f"skipped_locked:{table}"
    streak = int(context.state.get_value(NAME, key) or 0)
    if result["outcome"] == "vacuumed":
        if streak:
            context.state.set_value(NAME, key, 0)
        return [Finding(key=key, ok=True, title=f"VACUUM of {table} ran again")] if streak >= options.alert_after_skips else []
    streak += 1
    result["consecutive_skips"] = streak
    context.state.set_value(NAME, key, streak)
    if streak < options.alert_after_skips:
        return []
    return [Finding(key=key, ok=False, title=f"VACUUM of {table} skipped {streak} runs in a row: the table is always locked",
                    category="performance", severity="P3", code="J006",
                    symptoms=[f"VACUUM (ANALYZE, SKIP_LOCKED) of {table} found its lock unavailable {streak} times"],
                    logs=[result.get("reason", "")],
                    details={"table": table, "consecutive_skips": streak, "before": result.get("before")})]


def _result(context: JobContext, results: dict[str, dict[str, Any]], notes: list[str], findings: list[Finding],
            full: bool) -> JobResult:
    outcomes = [result["outcome"] for result in results.values()]
    summary: dict[str, Any] = {
        "tables": len(results),
        "vacuumed": outcomes.count("vacuumed"),
        "skipped_locked": outcomes.count("skipped_locked"),
        "not_needed": outcomes.count("not_needed"),
        "not_permitted": outcomes.count("not_permitted"),
        "missing": outcomes.count("missing"),
        "full": full,
        "dead_tuples_removed": sum(result.get("dead_tuples_removed", 0) for result in results.values()),
        "bytes_freed": sum(result.get("bytes_freed", 0) for result in results.values()),
        "details": results,
    }
    if context.dry_run:
        summary["would_vacuum"] = outcomes.count("would_vacuum")
    parts = []
    for table, result in results.items():
        if result["outcome"] == "vacuumed":
            parts.append(f"{table}: vacuumed in {result['seconds']}s, dead tuples "
                         f"{result['before']['dead_tuples']} -> {result['after']['dead_tuples']}")
        elif result["outcome"] == "skipped_locked":
            parts.append(f"{table}: SKIPPED, its lock was not available (the service held it); retried next run")
        elif result["outcome"] == "would_vacuum":
            parts.append(f"{table}: would run {result['statement']} ({result['reason']})")
        else:
            parts.append(f"{table}: {result['outcome'].replace('_', ' ')}: {result.get('reason', '')}")
    parts += notes
    problems = summary["skipped_locked"] + summary["not_permitted"] + summary["missing"]
    status = "problems" if problems else "ok"
    return JobResult(status=status, summary=summary, message="; ".join(parts), findings=findings,
                     error_code="J004" if summary["not_permitted"] else ("J006" if summary["skipped_locked"] else None))
