"""Benchmark: trim_history against the best hand-written alternative, one single UPDATE.

    .venv/bin/python bench/bench_trim_history.py            # 20,000 rows x 2 histories x 3,000 entries
    .venv/bin/python bench/bench_trim_history.py --quick    # 2,000 rows

A throwaway PostgreSQL cluster (scheduler/pgcluster.py) holds three identical copies of the table.
On each copy, while a writer updates random rows the way the service does
(current_amount = current_amount + x, version = version + 1, one short transaction each), one of:
  1. the hand-written statement: UPDATE t SET contribution_history = jsonb_path_query_array(
     contribution_history, '$[last - 999 to last]'), win_history = ... (one statement, one transaction)
  2. trim_history with archive = false
  3. trim_history with archive = true (the default)
Printed: each time and its ratio to 1 (targets: <= 1.2 archive off, <= 2.0 archive on), the longest
batch lock time (target <= 1 s), and the writer's p99 latency during each (target < 1 s during trims).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402

from scheduler.pgcluster import PostgresCluster  # noqa: E402
from scheduler.sample_data import TABLE_DDL  # noqa: E402

VARIANTS = 16  # distinct history contents (rows cycle through them); generating one per row is slow


class Writer(threading.Thread):
    """Updates random rows like the service, one short transaction each, at a steady intended rate.

    Latency is measured from when a write was due, not when it was sent (no "coordinated omission"):
    while one write is blocked, the writes due meanwhile queue up, as the service's requests would,
    and each counts the time it waited."""

    def __init__(self, url: str, table: str, rows: int, interval: float = 0.01):
        super().__init__(daemon=True)
        self.url, self.table, self.rows, self.interval = url, table, rows, interval
        self.latencies: list[tuple[float, float]] = []  # (due, seconds from due to done)
        self.stop_event = threading.Event()
        self.errors = 0
        self.due = 0.0

    def run(self) -> None:
        import random

        with psycopg.connect(self.url, autocommit=True) as connection:
            due = self.due = time.perf_counter()
            while not self.stop_event.is_set():
                now = time.perf_counter()
                if now < due:
                    time.sleep(due - now)
                row = random.randint(1, self.rows)
                try:
                    connection.execute(f"UPDATE {self.table} SET current_amount = current_amount + %s, "
                                       "version = version + 1 WHERE id = %s", (round(random.random(), 2), row))
                except psycopg.Error:
                    self.errors += 1
                self.latencies.append((due, time.perf_counter() - due))
                due = self.due = due + self.interval

    def stop(self, window: tuple[float, float]) -> dict[str, float]:
        """Stop once every write due during the measured operation is done (the queue drained); return
        their latencies."""
        while self.is_alive() and self.due <= window[1]:
            time.sleep(0.01)
        self.stop_event.set()
        self.join()
        values = sorted(seconds for due, seconds in self.latencies if window[0] <= due <= window[1])
        if not values:
            return {"count": 0, "p99_ms": 0.0, "max_ms": 0.0, "median_ms": 0.0}
        p99 = values[math.ceil(0.99 * len(values)) - 1]  # nearest rank
        return {"count": len(values), "p99_ms": p99 * 1000, "max_ms": values[-1] * 1000,
                "median_ms": statistics.median(values) * 1000}


def build(url: str, rows: int, entries: int) -> None:
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(TABLE_DDL.format(table="source"))
        connection.execute("""
            CREATE TEMP TABLE variants AS
            SELECT v,
                   (SELECT jsonb_agg(jsonb_build_object('i', e, 'amount', mod(e + v, 97) + 0.5, 'at', 1700000000 + e)
                                     ORDER BY e) FROM generate_series(0, %(entries)s - 1) AS e) AS contributions,
                   (SELECT jsonb_agg(jsonb_build_object('i', e, 'amount', 5000 + e + v, 'at', 1700000000 + e)
                                     ORDER BY e) FROM generate_series(0, %(entries)s - 1) AS e) AS wins
            FROM generate_series(0, %(variants)s - 1) AS v""", {"entries": entries, "variants": VARIANTS})
        connection.execute("""
            INSERT INTO source ("group", current_amount, seed_amount, max_amount, contribution_rate,
                                contribution_history, win_history, version, last_modified_at)
            SELECT 'group-' || mod(g, 5), 1000 + mod(g, 997), 1000, 100000, 0.02, contributions, wins, 0, now()
            FROM generate_series(1, %(rows)s) AS g JOIN variants ON v = mod(g, %(variants)s)""",
                           {"rows": rows, "variants": VARIANTS})


def copy(url: str, name: str) -> None:
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(TABLE_DDL.format(table=name))
        connection.execute(f"INSERT INTO {name} OVERRIDING SYSTEM VALUE SELECT * FROM source")
        connection.execute(f"VACUUM ANALYZE {name}")


def checkpoint(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("CHECKPOINT")


def single_update(url: str, table: str, keep: int) -> float:
    with psycopg.connect(url, autocommit=True) as connection:
        started = time.perf_counter()
        connection.execute(f"""
            UPDATE {table} SET
              contribution_history = jsonb_path_query_array(contribution_history, '$[last - {keep - 1} to last]'),
              win_history = jsonb_path_query_array(win_history, '$[last - {keep - 1} to last]')""")
        return time.perf_counter() - started


def trim(url: str, table: str, keep: int, archive: bool, state_dir: str):
    from config.settings import Settings
    from scheduler.runner import run_job

    settings = Settings(database={"url": url, "table": table},
                        state={"url": f"sqlite:///{state_dir}/state-{table}.db"})
    started = time.perf_counter()
    outcome = run_job(settings, "trim_history", options_override={"max_entries": keep, "archive": archive})
    elapsed = time.perf_counter() - started
    if outcome.error is not None:
        raise SystemExit(f"trim_history failed: {outcome.error}")
    return elapsed, outcome.result.summary


def verify(url: str, table: str, keep: int, rows: int) -> None:
    with psycopg.connect(url, autocommit=True) as connection:
        wrong = connection.execute(f"""
            SELECT count(*) FROM {table} t JOIN source s USING (id)
            WHERE t.contribution_history <> jsonb_path_query_array(s.contribution_history, '$[last - {keep - 1} to last]')
               OR t.win_history <> jsonb_path_query_array(s.win_history, '$[last - {keep - 1} to last]')""").fetchone()[0]
    if wrong:
        raise SystemExit(f"{table}: {wrong} of {rows} rows differ from the expected result")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2,000 rows instead of 20,000")
    parser.add_argument("--rows", type=int, help="rows (default 20000, 2000 with --quick)")
    parser.add_argument("--entries", type=int, default=3000, help="entries in each history (default 3000)")
    parser.add_argument("--keep", type=int, default=1000, help="max_entries (default 1000)")
    args = parser.parse_args()
    rows = args.rows or (2000 if args.quick else 20000)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    print(f"machine: {os.cpu_count()} CPUs ({cpu}), PostgreSQL throwaway cluster (fsync=off)")
    print(f"data: {rows} rows, 2 histories x {args.entries} entries each, trimmed to {args.keep}")
    state_dir = tempfile.mkdtemp(prefix="bench-trim-")
    with PostgresCluster(extra_settings={"max_wal_size": "'8GB'", "checkpoint_timeout": "'30min'"}) as pg:
        url = pg.create_database("bench")
        started = time.perf_counter()
        build(url, rows, args.entries)
        for name in ("by_update", "by_trim", "by_trim_archive", "by_update_again"):
            copy(url, name)
        with psycopg.connect(url, autocommit=True) as connection:
            size = connection.execute("SELECT pg_size_pretty(pg_total_relation_size('by_update'))").fetchone()[0]
        print(f"set-up: {time.perf_counter() - started:.0f} s (each copy {size})")
        from jobs.maint_schema import ensure_schema
        from sqlalchemy import create_engine

        engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
        with engine.begin() as connection:
            ensure_schema(connection)
        engine.dispose()

        results = {}
        for label, table, action in (
                ("single UPDATE (hand-written)", "by_update", lambda: (single_update(url, "by_update", args.keep), None)),
                ("trim_history, archive off", "by_trim", lambda: trim(url, "by_trim", args.keep, False, state_dir)),
                ("trim_history, archive on", "by_trim_archive",
                 lambda: trim(url, "by_trim_archive", args.keep, True, state_dir)),
                # measured again at the end: the machine's load may change during the run
                ("single UPDATE, again", "by_update_again",
                 lambda: (single_update(url, "by_update_again", args.keep), None))):
            checkpoint(url)
            writer = Writer(url, table, rows)
            writer.start()
            time.sleep(0.5)
            started = time.perf_counter()
            seconds, summary = action()
            latency = writer.stop((started, time.perf_counter()))
            if summary and summary["rows_skipped_locked"]:
                # rows the writer held were skipped, as designed: the next run trims them (not timed)
                trim(url, table, args.keep, table == "by_trim_archive", state_dir)
            verify(url, table, args.keep, rows)
            results[label] = (seconds, summary, latency)
            print(f"  {label}: {seconds:.1f} s", flush=True)

        baseline = (results["single UPDATE (hand-written)"][0] + results["single UPDATE, again"][0]) / 2
        print(f"baseline: mean of the two single UPDATEs = {baseline:.1f} s")
        print()
        print("writer: one UPDATE every 10 ms, latency counted from when each write was due")
        print(f"{'method':<30} {'time s':>8} {'ratio':>7} {'target':>7} {'longest batch lock':>19} "
              f"{'writer p50 ms':>14} {'writer p99 ms':>14} {'writer max ms':>14} {'writes':>7}")
        targets = {"single UPDATE (hand-written)": "", "single UPDATE, again": "", "trim_history, archive off": "<= 1.2",
                   "trim_history, archive on": "<= 2.0"}
        for label, (seconds, summary, latency) in results.items():
            lock = f"{summary['longest_batch_lock_ms']:.0f} ms" if summary else f"{seconds * 1000:.0f} ms (all)"
            print(f"{label:<30} {seconds:>8.1f} {seconds / baseline:>7.2f} {targets[label]:>7} {lock:>19} "
                  f"{latency['median_ms']:>14.0f} {latency['p99_ms']:>14.0f} {latency['max_ms']:>14.0f} "
                  f"{latency['count']:>7}")
        for label, (seconds, summary, latency) in results.items():
            if summary:
                print(f"{label}: {summary['batches']} batches, last batch {summary['last_batch_size']} rows, "
                      f"{summary['rows_trimmed']} rows trimmed, {summary['rows_skipped_locked']} skipped locked, "
                      f"archived {summary['entries_archived_contribution_history']} + "
                      f"{summary['entries_archived_win_history']} entries")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
