"""Database checks: the guide's pg_isready, connection pool, slow queries, locks, bloat and more.

One probe, one session, three cheap queries on statistics views (pg_stat_activity, pg_stat_database,
pg_database, pg_stat_user_tables); the jackpots table itself is never scanned. The session has a
short statement_timeout (jobs.monitor.database_statement_timeout) and the daemon's application_name.

Query checks (long queries, idle in transaction, blocking) look at client backends of the target
database only, and never at the daemon's own sessions (application_name starting with
database.application_name); autovacuum, replication and other background workers are not client
backends. They may still appear as the *blocker* at the head of a chain, which is worth knowing.
"""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import Any

import sqlalchemy
from sqlalchemy import text

from jobs.checks import CheckContext, CheckResult, Probe, graded
from scheduler.db import create_target_engine, quote_table
from scheduler.redact import redact

DEADLOCKS_KEY = "database.deadlocks"
IDLE_IN_TRANSACTION = ("idle in transaction", "idle in transaction (aborted)")
SNAPSHOT_QUERIES = 5

# The statistics functions rather than the pg_stat_* views: the same numbers, without the views'
# joins, which a fresh session pays for in catalog lookups (about 3x slower on a cold backend).
ACTIVITY_SQL = text("""
    SELECT a.pid, a.datid = (SELECT oid FROM pg_database WHERE datname = current_database()) AS here,
           a.usesysid::regrole::text AS usename, a.application_name,
           host(a.client_addr) AS client, a.backend_type, a.state,
           extract(epoch FROM now() - a.query_start)::float8 AS query_seconds,
           extract(epoch FROM now() - a.xact_start)::float8 AS xact_seconds,
           extract(epoch FROM now() - a.state_change)::float8 AS state_seconds,
           a.wait_event_type, a.wait_event, left(a.query, 300) AS query,
           coalesce(a.application_name LIKE :service_pattern, false) AS is_service,
           CASE WHEN a.wait_event_type = 'Lock' THEN pg_blocking_pids(a.pid) END AS blocked_by
    FROM pg_stat_get_activity(NULL::integer) a
    WHERE a.pid <> pg_backend_pid()
""")

STATISTICS_SQL = text("""
    SELECT current_setting('max_connections')::int AS max_connections,
           pg_stat_get_db_deadlocks(d.oid) AS deadlocks,
           pg_stat_get_db_blocks_hit(d.oid) AS blks_hit,
           pg_stat_get_db_blocks_fetched(d.oid) - pg_stat_get_db_blocks_hit(d.oid) AS blks_read,
           pg_stat_get_db_stat_reset_time(d.oid) AS stats_reset,
           w.xid_age, w.oldest_database, t.oid IS NOT NULL AS table_found,
           pg_stat_get_live_tuples(t.oid) AS n_live_tup, pg_stat_get_dead_tuples(t.oid) AS n_dead_tup,
           pg_stat_get_last_vacuum_time(t.oid) AS last_vacuum,
           pg_stat_get_last_autovacuum_time(t.oid) AS last_autovacuum,
           pg_stat_get_last_analyze_time(t.oid) AS last_analyze,
           pg_stat_get_last_autoanalyze_time(t.oid) AS last_autoanalyze
    FROM pg_database d
    CROSS JOIN LATERAL (SELECT age(datfrozenxid)::bigint AS xid_age, datname AS oldest_database
                        FROM pg_database ORDER BY age(datfrozenxid) DESC LIMIT 1) w
    CROSS JOIN LATERAL (SELECT to_regclass(:table_name)::oid AS oid) t
    WHERE d.datname = current_database()
""")

DATABASE_CHECKS = ["database.reachable", "database.response_time", "database.connections",
                   "database.service_connections", "database.long_queries", "database.idle_in_transaction",
                   "database.blocking", "database.dead_tuples", "database.wraparound", "database.cache_hit",
                   "database.deadlocks"]
CHECK_SECTIONS = {
    "database.response_time": "database_response_time", "database.connections": "connections",
    "database.service_connections": "service_connections", "database.long_queries": "long_queries",
    "database.idle_in_transaction": "idle_in_transaction", "database.blocking": "blocking",
    "database.dead_tuples": "dead_tuples", "database.wraparound": "wraparound", "database.cache_hit": "cache_hit",
    "database.deadlocks": "deadlocks",
}
UNITS = {"database.response_time": "s", "database.connections": "%", "database.long_queries": "s",
         "database.idle_in_transaction": "s", "database.blocking": "s", "database.dead_tuples": "%",
         "database.cache_hit": "%"}


def probes(context: CheckContext) -> list[Probe]:
    options = context.options
    if not options.database.enabled:
        return []
    timeout = options.database_statement_timeout + context.settings.database.connect_timeout + 1
    return [Probe("database", timeout, lambda: check_database(context),
                  lambda limit: unreachable(context, f"no answer within {limit:g}s", state="critical"))]


def monitor_engine(context: CheckContext) -> sqlalchemy.Engine:
    """An autocommit engine for the monitor's statistics queries, with a short statement_timeout."""
    options = context.options
    return create_target_engine(context.settings, job="monitor", statement_timeout=options.database_statement_timeout,
                                lock_timeout=min(1.0, options.database_statement_timeout), autocommit=True,
                                on_connect=context.on_connect, pool_size=1)


def check_database(context: CheckContext) -> list[CheckResult]:
    from scheduler.errors import ConnectionFailed, classify

    engine = monitor_engine(context)
    try:
        started = time.perf_counter()
        try:
            connection = engine.connect()
        except Exception as error:  # noqa: BLE001 - classified: unreachable is a finding, not a crash
            failure = classify(error, resource=context.settings.database_display())
            return unreachable(context, failure.message, state="critical")
        with connection:
            response = None
            try:
                connection.exec_driver_sql("SELECT 1")
                response = time.perf_counter() - started
                queries_started = time.perf_counter()
                activity = [dict(row._mapping) for row in connection.execute(
                    ACTIVITY_SQL, {"service_pattern": context.settings.service.database_application_name})]
                statistics = dict(connection.execute(
                    STATISTICS_SQL, {"table_name": quote_table(context.settings.database.table)}).one()._mapping)
            except Exception as error:  # noqa: BLE001
                failure = classify(error, resource=context.settings.database_display())
                if isinstance(failure, ConnectionFailed) or response is None:
                    return unreachable(context, failure.message, state="critical")
                results = unreachable(context, f"statistics queries failed: {failure}", state="unknown")
                results[0] = _reachable(context, response)
                results[1] = graded("database.response_time", response, context.options.database_response_time,
                                    unit="s", message=f"answered SELECT 1 in {response * 1000:.0f} ms")
                return results
            queries_ms = round((time.perf_counter() - queries_started) * 1000, 2)
    finally:
        engine.dispose()
    results = evaluate(context, activity, statistics, response)
    for result in results:
        result.details.setdefault("queries_ms", queries_ms)
    return results


def _reachable(context: CheckContext, response: float) -> CheckResult:
    return CheckResult(name="database.reachable", state="ok", value=1, message=(
        f"{context.settings.database_display()} accepts connections ({response * 1000:.0f} ms)"),
        details={"text": "accepting"})


def evaluate(context: CheckContext, activity: list[dict[str, Any]], statistics: dict[str, Any],
             response: float) -> list[CheckResult]:
    """Given the activity rows, the statistics row and the round trip, return every database result."""
    options = context.options
    own_prefix = context.settings.database.application_name
    by_pid = {row["pid"]: row for row in activity}
    clients = [row for row in activity if row["backend_type"] == "client backend"]
    watched = [row for row in clients if row["here"] and not (row["application_name"] or "").startswith(own_prefix)]
    chain, lines = blocking_chain(watched, by_pid)
    snapshot = _snapshot(context, clients, watched, statistics)
    snapshot["blocking_chain"] = lines[:SNAPSHOT_QUERIES * 2]
    results = [_reachable(context, response),
               graded("database.response_time", response, options.database_response_time, unit="s",
                      message=f"answered SELECT 1 in {response * 1000:.0f} ms")]

    # connections against max_connections, and the service's own
    total = len(clients) + 1  # and this session
    maximum = statistics["max_connections"]
    percent = 100.0 * total / maximum
    results.append(graded("database.connections", percent, options.connections, unit="%",
                          message=f"{total} of max_connections {maximum} in use ({percent:.0f} %)",
                          details={"total": total, "max_connections": maximum, **snapshot["connections"]}))
    service = snapshot["connections"]["service"]
    results.append(graded("database.service_connections", service["total"], options.service_connections, unit="",
                          message=(f"the service holds {service['total']} connection(s): {service['active']} active, "
                                   f"{service['idle']} idle, {service['idle_in_transaction']} idle in transaction"),
                          details=service))

    # queries running too long
    # a query waiting for a lock is reported by the blocking check, with who holds it
    active = sorted((row for row in watched if row["state"] == "active" and row["query_seconds"] is not None
                     and row["wait_event_type"] != "Lock"),
                    key=lambda row: row["query_seconds"], reverse=True)
    longest = active[0]["query_seconds"] if active else 0.0
    over = [row for row in active if options.long_queries.warning is not None and row["query_seconds"] > options.long_queries.warning]
    message = (f"{len(over)} quer{'y' if len(over) == 1 else 'ies'} running longer than "
               f"{_seconds(options.long_queries.warning)}; longest {describe(active[0])}" if over else
               f"no query running longer than {_seconds(options.long_queries.warning)}"
               + (f" (longest {_seconds(longest)})" if active else ""))
    results.append(graded("database.long_queries", longest, options.long_queries, unit="s", message=message,
                          details={"count": len(over), "queries": [_session(row) for row in over[:SNAPSHOT_QUERIES]]}))

    # sessions idle in transaction
    idle = sorted((row for row in watched if row["state"] in IDLE_IN_TRANSACTION and row["xact_seconds"] is not None),
                  key=lambda row: row["xact_seconds"], reverse=True)
    oldest = idle[0]["xact_seconds"] if idle else 0.0
    results.append(graded("database.idle_in_transaction", oldest, options.idle_in_transaction, unit="s",
                          message=(f"{len(idle)} session(s) idle in transaction; oldest {describe(idle[0], 'xact_seconds')}"
                                   if idle else "no session idle in transaction"),
                          details={"count": len(idle), "sessions": [_session(row) for row in idle[:SNAPSHOT_QUERIES]]}))

    # blocking chains: who blocks whom
    waits = [edge["blocked"]["waiting_seconds"] for edge in chain]
    longest_wait = max(waits) if waits else 0.0
    blocked_count = len({edge["blocked"]["pid"] for edge in chain})
    results.append(graded("database.blocking", longest_wait, options.blocking, unit="s",
                          message=(f"{blocked_count} session(s) blocked; " + "; ".join(lines[:3]) if chain
                                   else "no session waiting on another's lock"),
                          details={"blocked": blocked_count, "chain": chain, "lines": lines}))

    results.append(_dead_tuples(context, statistics))
    xid_age = statistics["xid_age"]
    results.append(graded("database.wraparound", xid_age, options.wraparound, unit="",
                          message=f"oldest transaction ID age {xid_age:,} (database {statistics['oldest_database']}); "
                                  f"wraparound at 2,147,483,647",
                          details={"oldest_database": statistics["oldest_database"]}))
    results.append(_cache_hit(context, statistics))
    results.append(_deadlocks(context, statistics))
    for result in results:
        result.details["snapshot"] = snapshot
    return results


def blocking_chain(watched: list[dict[str, Any]], by_pid: dict[int, dict[str, Any]]) -> tuple[list[dict], list[str]]:
    """Given the watched sessions, return (edges blocker -> blocked, one readable line per edge),
    heads of chains first."""
    edges = []
    for row in watched:
        for blocker_pid in row.get("blocked_by") or []:
            blocker = by_pid.get(blocker_pid, {"pid": blocker_pid, "application_name": "?", "state": "?",
                                                "query_seconds": None, "xact_seconds": None, "state_seconds": None,
                                                "query": "", "backend_type": "?", "usename": "?"})
            edges.append((blocker, row))
    blocked_pids = {row["pid"] for _, row in edges}
    # heads (blockers that are not waiting themselves) first, then by how long the victim waits
    edges.sort(key=lambda edge: (edge[0]["pid"] in blocked_pids, -(edge[1]["query_seconds"] or 0)))
    chain, lines = [], []
    for blocker, blocked in edges:
        entry = {"blocker": _session(blocker), "blocked": {**_session(blocked), "waiting_seconds": round(blocked["query_seconds"] or 0.0, 3)},
                 "head": blocker["pid"] not in blocked_pids}
        chain.append(entry)
        lines.append(f"pid {blocker['pid']} ({_who(blocker)}, {_state_text(blocker)}) blocks "
                     f"pid {blocked['pid']} ({_who(blocked)}, waiting {_seconds(blocked['query_seconds'] or 0)}: "
                     f"{_query(blocked)})")
    return chain, lines


def _dead_tuples(context: CheckContext, statistics: dict[str, Any]) -> CheckResult:
    options = context.options.dead_tuples
    table = context.settings.database.table
    if not statistics["table_found"]:
        return CheckResult(name="database.dead_tuples", state="unknown", unit="%", warning=options.warning,
                           critical=options.critical, message=f"table {table} not found (database.table)")
    live, dead = statistics["n_live_tup"], statistics["n_dead_tup"]
    ratio = 100.0 * dead / (live + dead) if live + dead else 0.0
    vacuumed = _latest(statistics["last_vacuum"], statistics["last_autovacuum"])
    analyzed = _latest(statistics["last_analyze"], statistics["last_autoanalyze"])
    details = {"table": table, "live": live, "dead": dead, "last_vacuum": _iso(statistics["last_vacuum"]),
               "last_autovacuum": _iso(statistics["last_autovacuum"]), "last_analyze": _iso(statistics["last_analyze"]),
               "last_autoanalyze": _iso(statistics["last_autoanalyze"]), "min_dead_rows": options.min_dead_rows}
    result = graded("database.dead_tuples", ratio, options, unit="%", details=details,
                    message=(f"{table}: {dead:,} dead of {live + dead:,} rows ({ratio:.1f} %); last vacuum "
                             f"{_iso(vacuumed) or 'never'}, last analyze {_iso(analyzed) or 'never'}"))
    if dead < options.min_dead_rows:
        result.state = "ok"
    return result


def _cache_hit(context: CheckContext, statistics: dict[str, Any]) -> CheckResult:
    options = context.options.cache_hit
    hit, read = statistics["blks_hit"] or 0, statistics["blks_read"] or 0
    if hit + read < options.min_blocks:
        return CheckResult(name="database.cache_hit", state="ok", unit="%", warning=options.warning,
                           critical=options.critical, details={"lower_is_worse": True, "text": "too few reads"},
                           message=f"{hit + read:,} block reads so far: too few to judge (min_blocks {options.min_blocks:,})")
    ratio = 100.0 * hit / (hit + read)
    return graded("database.cache_hit", ratio, options, unit="%", lower_is_worse=True,
                  message=f"{ratio:.2f} % of {hit + read:,} block reads served from shared buffers",
                  details={"blks_hit": hit, "blks_read": read})


def _deadlocks(context: CheckContext, statistics: dict[str, Any]) -> CheckResult:
    count = int(statistics["deadlocks"] or 0)
    reset = _iso(statistics["stats_reset"])
    previous = context.recall(DEADLOCKS_KEY)
    context.remember(DEADLOCKS_KEY, {"count": count, "stats_reset": reset})
    if previous is None:
        delta, since = 0, f"(no previous cycle to compare; {count} since statistics reset)"
    elif count < previous.get("count", 0) or previous.get("stats_reset") != reset:
        delta, since = count, "since statistics were reset"
    else:
        delta, since = count - previous["count"], "since the last cycle"
    return graded("database.deadlocks", delta, context.options.deadlocks, unit="",
                  message=f"{delta} deadlock(s) {since}", details={"total": count})


def _snapshot(context: CheckContext, clients: list[dict], watched: list[dict], statistics: dict) -> dict[str, Any]:
    """What a database alert carries: connection counts and the longest-running queries."""
    own_prefix = context.settings.database.application_name

    def counts(rows: list[dict]) -> dict[str, int]:
        return {"total": len(rows), "active": sum(row["state"] == "active" for row in rows),
                "idle": sum(row["state"] == "idle" for row in rows),
                "idle_in_transaction": sum(row["state"] in IDLE_IN_TRANSACTION for row in rows)}

    service = [row for row in clients if row["is_service"] and not (row["application_name"] or "").startswith(own_prefix)]
    longest = sorted((row for row in watched if row["state"] != "idle" and row["xact_seconds"] is not None),
                     key=lambda row: row["query_seconds"] or 0, reverse=True)[:SNAPSHOT_QUERIES]
    return {"connections": {**counts(clients), "max_connections": statistics["max_connections"],
                            "service": counts(service),
                            "daemon": sum((row["application_name"] or "").startswith(own_prefix) for row in clients) + 1},
            "longest_queries": [_session(row) for row in longest]}


def unreachable(context: CheckContext, reason: str, *, state: str) -> list[CheckResult]:
    """Results when the database cannot be asked: reachable gets `state`, the others are unknown."""
    options = context.options
    results = [CheckResult(name="database.reachable", state=state, value=0 if state == "critical" else None,
                           message=redact(reason), details={"text": "not accepting" if state == "critical" else "?"})]
    for name in DATABASE_CHECKS[1:]:
        section = getattr(options, CHECK_SECTIONS[name])
        results.append(CheckResult(name=name, state="unknown", unit=UNITS.get(name, ""), warning=section.warning,
                                   critical=section.critical, message="database not reachable" if state == "critical" else redact(reason)))
    return results


def terminate_long_queries(context: CheckContext, *, older_than: float, pattern: str, dry_run: bool) -> list[dict[str, Any]]:
    """Terminate client sessions of the target database whose active query has run longer than
    older_than seconds and whose text matches pattern (a PostgreSQL regular expression, case-insensitive).
    Never the daemon's own sessions, never autovacuum, replication or other background workers.
    Return one entry per matching session: pid, application, duration, query, terminated."""
    re.compile(pattern)  # reject a broken pattern before it reaches the server
    own = context.settings.database.application_name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    action = "false" if dry_run else "pg_terminate_backend(a.pid)"
    sql = text(f"""
        SELECT a.pid, a.application_name, a.usename, extract(epoch FROM now() - a.query_start)::float8 AS query_seconds,
               left(a.query, 300) AS query, {action} AS terminated
        FROM pg_stat_activity a
        WHERE a.datname = current_database() AND a.backend_type = 'client backend' AND a.pid <> pg_backend_pid()
          AND a.state = 'active' AND a.query_start < now() - make_interval(secs => :older_than)
          AND a.wait_event_type IS DISTINCT FROM 'Lock' 
          AND coalesce(a.application_name, '') NOT LIKE :own
          AND a.query ~* :pattern
        ORDER BY a.query_start
    """)
    engine = monitor_engine(context)
    try:
        with engine.connect() as connection:
            rows = connection.execute(sql, {"older_than": older_than, "own": own, "pattern": pattern}).all()
    finally:
        engine.dispose()
    return [{"pid": row.pid, "application_name": row.application_name, "query_seconds": round(row.query_seconds, 1),
             "query": redact(row.query or ""), "terminated": bool(row.terminated)} for row in rows]


def describe(row: dict[str, Any], duration_field: str = "query_seconds") -> str:
    return f"pid {row['pid']} ({_who(row)}) {_seconds(row[duration_field] or 0)}: {_query(row)}"


def _session(row: dict[str, Any]) -> dict[str, Any]:
    return {"pid": row["pid"], "application_name": row.get("application_name"), "user": row.get("usename"),
            "state": row.get("state"), "backend_type": row.get("backend_type"),
            "query_seconds": None if row.get("query_seconds") is None else round(row["query_seconds"], 3),
            "xact_seconds": None if row.get("xact_seconds") is None else round(row["xact_seconds"], 3),
            "wait": f"{row.get('wait_event_type')}:{row.get('wait_event')}" if row.get("wait_event_type") else None,
            "query": redact(row.get("query") or "")}


def _who(row: dict[str, Any]) -> str:
    name = row.get("application_name") or row.get("backend_type") or "?"
    return name if row.get("backend_type") in (None, "client backend", "?") else f"{name}, {row['backend_type']}"


def _state_text(row: dict[str, Any]) -> str:
    state = row.get("state") or "?"
    if state in IDLE_IN_TRANSACTION:
        return f"{state} {_seconds(row.get('xact_seconds') or 0)}"
    if state == "active":
        return f"running {_seconds(row.get('query_seconds') or 0)}: {_query(row)}"
    return state


def _query(row: dict[str, Any]) -> str:
    query = " ".join((row.get("query") or "").split())
    return redact(query[:120] + ("…" if len(query) > 120 else ""))


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f}ms"
    if value < 120:
        return f"{value:.1f}s"
    if value < 7200:
        return f"{value / 60:.1f}min"
    return f"{value / 3600:.1f}h"


def _latest(*values: datetime | None) -> datetime | None:
    present = [value for value in values if value is not None]
    return max(present) if present else None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value is not None else None
