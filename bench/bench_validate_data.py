"""Benchmark: validate_data on 1,000,000 rows against one hand-written SELECT count(*) with all rules OR-ed.

    .venv/bin/python bench/bench_validate_data.py            # 1,000,000 rows, 7 interleaved repetitions
    .venv/bin/python bench/bench_validate_data.py --quick    # 100,000 rows, 5 repetitions (a smoke test:
                                                             # at that size the job's fixed cost of connecting
                                                             # and building findings weighs ~0.05 s)

A throwaway PostgreSQL cluster (scheduler/pgcluster.py) holds the service's table with small histories
(scheduler.sample_data.insert_rows) and 0.1% of rows broken in the ways the rules look for. Each repetition
runs, in turn: the hand-written count with the server's defaults (as typed in psql), the same count with
JIT off (its best form here), and the whole validate_data job (JobContext + run(): connecting, the one-pass
statement with per-rule counts and sample ids, building findings). Medians are compared; the target is
validate_data / best hand-written <= 1.3. Then, for information, the repair of the broken rows, its
revert, and the guide's four UPDATE statements on the same rows.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import config  # noqa: E402,F401 - loads the settings model (and with it the job registry) first

import psycopg  # noqa: E402

from config.loader import load_settings  # noqa: E402
from jobs import validate_data  # noqa: E402
from jobs.base import JobContext  # noqa: E402
from scheduler import sample_data  # noqa: E402
from scheduler.db import create_target_engine  # noqa: E402
from scheduler.pgcluster import PostgresCluster  # noqa: E402
from machine import cpu_model  # noqa: E402 - bench/machine.py, beside this script

TARGET = 1.3
GUIDE_UPDATES = [
    "UPDATE jackpots SET current_amount = GREATEST(current_amount, 0) WHERE current_amount < 0",
    "UPDATE jackpots SET contribution_rate = GREATEST(LEAST(contribution_rate, 1.0), 0.0) "
    "WHERE contribution_rate < 0 OR contribution_rate > 1",
    "UPDATE jackpots SET max_amount = seed_amount * 10 WHERE max_amount IS NOT NULL AND max_amount < seed_amount",
    "UPDATE jackpots SET version = 0, last_modified_at = updated_at WHERE version < 0 OR version > 1000000",
]


def load_table(url: str, rows: int) -> None:
    sample_data.create_table(url)
    sample_data.insert_rows(url, rows=rows, contribution_entries=3, win_entries=1)
    sample_data.insert_faults(url)
    with psycopg.connect(url, autocommit=True) as connection:
        # 0.1% of rows broken, spread over the table and the rules
        connection.execute("UPDATE jackpots SET current_amount = -1 WHERE id % 5000 = 1")
        connection.execute("UPDATE jackpots SET contribution_rate = 1.5 WHERE id % 5000 = 2")
        connection.execute('UPDATE jackpots SET "group" = NULL WHERE id % 5000 = 3')
        connection.execute("UPDATE jackpots SET version = -1 WHERE id % 5000 = 4")
        connection.execute("UPDATE jackpots SET win_history = 'null' WHERE id % 5000 = 5")
        connection.execute("VACUUM ANALYZE jackpots")


def hand_written_count(history_limit: int) -> str:
    any_rule = " OR ".join(f"({rule.condition})" for rule in validate_data.rules(history_limit))
    return f"SELECT count(*) FROM jackpots WHERE {any_rule}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100,000 rows and 5 repetitions")
    parser.add_argument("--rows", type=int, help="rows in the table (default 1,000,000; 100,000 with --quick)")
    parser.add_argument("--repetitions", type=int, help="interleaved repetitions (default 7; 5 with --quick)")
    args = parser.parse_args()
    rows = args.rows or (100_000 if args.quick else 1_000_000)
    repetitions = args.repetitions or (5 if args.quick else 7)

    print(f"machine: {os.cpu_count()} CPUs ({cpu_model()}), Python {platform.python_version()}")
    with PostgresCluster() as cluster:
        url = cluster.create_database("bench")
        started = time.perf_counter()
        load_table(url, rows)
        server = cluster.execute("SHOW server_version")[0][0]
        print(f"PostgreSQL {server}; loaded {rows:,} rows (+ faults) in {time.perf_counter() - started:.1f}s")

        settings = load_settings(None, {"database.url": (url, "--database-url")}, environ={}).settings
        options = validate_data.Options()
        count_sql = hand_written_count(validate_data.history_limit(settings))
        plain = psycopg.connect(url, autocommit=True)
        no_jit = psycopg.connect(url, autocommit=True)
        no_jit.execute("SET jit = off")

        def run_job() -> tuple[float, object]:
            context = JobContext(settings=settings, options=options, run_id=f"bench-{time.time_ns()}",
                                 job=validate_data.NAME)
            begin = time.perf_counter()
            try:
                result = validate_data.run(context)
            finally:
                context.close()
            return time.perf_counter() - begin, result

        def timed(connection: psycopg.Connection) -> tuple[float, int]:
            begin = time.perf_counter()
            count = connection.execute(count_sql).fetchone()[0]
            return time.perf_counter() - begin, count

        # warm the cache and check that both sides agree on what is broken
        _, result = run_job()
        _, expected = timed(plain)
        assert result.summary["rows_with_problems"] == expected, (result.summary, expected)
        print(f"rows breaking at least one rule: {expected:,}; rules failing: {result.summary['rules_failing']}")

        times: dict[str, list[float]] = {"count_default": [], "count_jit_off": [], "validate_data": []}
        for _ in range(repetitions):
            times["count_default"].append(timed(plain)[0])
            times["count_jit_off"].append(timed(no_jit)[0])
            times["validate_data"].append(run_job()[0])

        # Repair (no target, for operators): the job with --repair (batched, SKIP LOCKED, audited), its
        # revert, and the guide's four UPDATE statements (no audit, no batches) in a transaction rolled back.
        repair_options = validate_data.Options(repair=True)
        repair_times: dict[str, list[float]] = {"repair": [], "revert": [], "guide_updates": []}
        repaired = longest_batch = 0
        for _ in range(3):
            context = JobContext(settings=settings, options=repair_options, run_id=f"bench-repair-{time.time_ns()}",
                                 job=validate_data.NAME)
            begin = time.perf_counter()
            try:
                result = validate_data.run(context)
            finally:
                context.close()
            repair_times["repair"].append(time.perf_counter() - begin)
            repaired, longest_batch = result.summary["rows_repaired"], result.summary["longest_batch_ms"]
            engine = create_target_engine(settings, job="repairs")
            begin = time.perf_counter()
            [outcome] = validate_data.revert_repair(engine, context.run_id)
            repair_times["revert"].append(time.perf_counter() - begin)
            engine.dispose()
            assert outcome.not_reverted == 0 and len(outcome.reverted) == repaired
            with psycopg.connect(url) as connection:
                begin = time.perf_counter()
                for statement in GUIDE_UPDATES:
                    connection.execute(statement)
                repair_times["guide_updates"].append(time.perf_counter() - begin)
                connection.rollback()
        plain.close()
        no_jit.close()

    medians = {name: statistics.median(values) for name, values in times.items()}
    best_name = min(("count_default", "count_jit_off"), key=medians.get)
    print(f"\nmedians of {repetitions} interleaved repetitions on {rows:,} rows:")
    for name, value in medians.items():
        spread = ", ".join(f"{sample:.3f}" for sample in times[name])
        print(f"  {name:<15} {value:8.3f}s   ({spread})")
    ratio = medians["validate_data"] / medians[best_name]
    ratio_default = medians["validate_data"] / medians["count_default"]
    print(f"\nvalidate_data / best hand-written count ({best_name}): {ratio:.2f}  (target <= {TARGET})")
    print(f"validate_data / count with server defaults:             {ratio_default:.2f}")
    print("PASS" if ratio <= TARGET else "ABOVE TARGET")
    repair_medians = {name: statistics.median(values) for name, values in repair_times.items()}
    print(f"\nrepair of {repaired:,} rows (medians of 3; no target): validate_data --repair "
          f"{repair_medians['repair']:.3f}s (longest batch {longest_batch:.0f} ms), repairs revert "
          f"{repair_medians['revert']:.3f}s, the guide's four UPDATEs {repair_medians['guide_updates']:.3f}s "
          f"(ratio {repair_medians['repair'] / repair_medians['guide_updates']:.2f}, with the audit, batches "
          "and the validation scan)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
