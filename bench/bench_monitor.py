"""Benchmark the monitor: a full cycle, a cycle with one hanging endpoint, and its database queries.

Targets (issue 6): a full cycle with every check against a healthy local setup <= 1 s; with one
endpoint hanging <= its timeout + 0.5 s; the cycle's database queries together <= 50 ms with
1,000,000 rows in jackpots.

Side by side, the best hand-written alternative: the guide's diagnostic done by hand in Python,
one step after another (each endpoint with urllib, the same statistics queries on one open psycopg
connection, psutil), with no hysteresis, no state store and no thread per check.

Run: .venv/bin/python bench/bench_monitor.py [--quick] [--rows N] [--cycles N]
It starts its own throwaway PostgreSQL cluster (scheduler/pgcluster.py) and the simulated service.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
import psycopg  # noqa: E402

from config.loader import load_settings  # noqa: E402
from jobs import monitor  # noqa: E402
from jobs.base import JobContext  # noqa: E402
from jobs.checks import database as database_checks  # noqa: E402
from scheduler import sample_data  # noqa: E402
from scheduler.pgcluster import PostgresCluster  # noqa: E402
from scheduler.simulator import SimulatorProcess  # noqa: E402
from scheduler.state import StateStore  # noqa: E402
from machine import cpu_model  # noqa: E402 - bench/machine.py, beside this script


def write_config(directory: Path, url: str, service_url: str, request_timeout: str = "1s") -> Path:
    path = directory / f"config-{uuid.uuid4().hex[:6]}.toml"
    path.write_text(f"""
[database]
url = "{url}"

[state]
url = "sqlite:///{directory / 'state.db'}"

[service]
base_url = "{service_url}"
directory = "{directory}"
process_pattern = "scheduler\\\\.simulator .*--log {directory}"
request_timeout = "{request_timeout}"
""")
    return path


def monitor_cycle(settings, state: StateStore, host: str = "bench") -> tuple[float, monitor.JobResult]:
    context = JobContext(settings=settings, options=settings.jobs.monitor, run_id=uuid.uuid4().hex, job="monitor",
                         host=host, state=state)
    started = time.perf_counter()
    try:
        result = monitor.run(context)
    finally:
        context.close()
    return time.perf_counter() - started, result


def hand_written_cycle(settings, libpq_url: str, connection: psycopg.Connection | None) -> float:
    """The guide's checks by hand, one after another, on an already open database connection."""
    started = time.perf_counter()
    psutil.cpu_percent(interval=settings.jobs.monitor.cpu_sample)
    psutil.virtual_memory()
    for path in settings.service.disk_paths:
        psutil.disk_usage(path)
    for path in settings.service.endpoints().values():
        try:
            with urllib.request.urlopen(settings.service.base_url + path, timeout=settings.service.request_timeout) as response:
                response.read()
        except OSError:
            pass
    if connection is not None:
        hand_written_queries(connection, settings)
    log = settings.service.resolve(settings.service.log_file)
    with open(log, "rb") as handle:  # the guide's tail -100 | grep ERROR
        handle.seek(max(os.path.getsize(log) - 65536, 0))
        sum(b"ERROR" in line for line in handle.read().splitlines()[-100:])
    return time.perf_counter() - started


def hand_written_queries(connection: psycopg.Connection, settings) -> float:
    started = time.perf_counter()
    connection.execute("SELECT 1").fetchall()
    connection.execute(database_checks.ACTIVITY_SQL.text.replace(":service_pattern", "'%jackpot%'")).fetchall()
    connection.execute(database_checks.STATISTICS_SQL.text.replace(":table_name", "'public.jackpots'")).fetchall()
    return time.perf_counter() - started


def median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100,000 rows and 3 cycles instead of 1,000,000 and 7")
    parser.add_argument("--rows", type=int, help="rows in jackpots (default 1,000,000; --quick 100,000)")
    parser.add_argument("--cycles", type=int, help="cycles measured per figure (default 7; --quick 3)")
    args = parser.parse_args()
    rows = args.rows or (100_000 if args.quick else 1_000_000)
    cycles = args.cycles or (3 if args.quick else 7)
    print(f"machine: {os.cpu_count()} CPUs ({cpu_model()}), load average {os.getloadavg()[0]:.2f}")
    directory = Path(tempfile.mkdtemp(prefix="bench-monitor-"))
    (directory / "logs").mkdir()
    cluster = PostgresCluster().start()
    service = None
    try:
        url = cluster.create_database("bench")
        started = time.perf_counter()
        sample_data.create_table(url)
        sample_data.insert_rows(url, rows=rows, contribution_entries=3, win_entries=1)
        print(f"set-up: {rows:,} rows in jackpots in {time.perf_counter() - started:.1f}s")
        service = SimulatorProcess.start(log_path=str(directory / "logs" / "application.log"), database_url=url)
        settings = load_settings(str(write_config(directory, url, service.url)), environ={}).settings
        state = StateStore.open(settings)
        connection = psycopg.connect(url, autocommit=True, application_name="bench-hand-written")

        monitor_cycle(settings, state)  # warm-up: imports, first connection
        full = []
        for _ in range(cycles):
            elapsed, result = monitor_cycle(settings, state)
            full.append(elapsed)
        bad = [name for name, check in result.summary["checks"].items() if check["state"] not in ("ok",)]
        hand = [hand_written_cycle(settings, url, connection) for _ in range(cycles)]
        print()
        print(f"full cycle, {result.summary['checks_run']} checks (cpu_sample {settings.jobs.monitor.cpu_sample:g}s), "
              f"{cycles} cycles; not ok on this machine: {', '.join(bad) or 'none'}")
        print(f"  monitor:      median {median(full) * 1000:7.1f} ms, max {max(full) * 1000:7.1f} ms   "
              f"target <= 1000 ms: ratio {max(full) / 1.0:.2f}")
        print(f"  hand-written: median {median(hand) * 1000:7.1f} ms (sequential, connection already open)   "
              f"monitor/hand-written {median(full) / median(hand):.2f}")

        service.set_mode("hang", endpoint="/health")
        hanging, hand_hanging = [], []
        for _ in range(max(2, cycles // 2)):
            elapsed, result = monitor_cycle(settings, state)
            hanging.append(elapsed)
            hand_hanging.append(hand_written_cycle(settings, url, connection))
        service.set_mode("healthy")
        timeout = settings.service.request_timeout
        print()
        print(f"cycle with /health hanging (request_timeout {timeout:g}s): "
              f"health check {result.summary['checks']['service.health']['state']}")
        print(f"  monitor:      median {median(hanging) * 1000:7.1f} ms, max {max(hanging) * 1000:7.1f} ms   "
              f"target <= {(timeout + 0.5) * 1000:.0f} ms: ratio {max(hanging) / (timeout + 0.5):.2f}")
        print(f"  hand-written: median {median(hand_hanging) * 1000:7.1f} ms   "
              f"monitor/hand-written {median(hanging) / median(hand_hanging):.2f}")

        queries, connect_and_queries, raw = [], [], []
        for _ in range(cycles * 3):
            check_started = time.perf_counter()
            results = monitor.run_checks(settings, settings.jobs.monitor.model_copy(update={
                name: getattr(settings.jobs.monitor, name).model_copy(update={"enabled": False})
                for name in ("cpu", "memory", "disk", "endpoints", "process", "log_errors")}))
            connect_and_queries.append(time.perf_counter() - check_started)
            reachable = next(result for result in results if result.name == "database.connections")
            queries.append(reachable.details["queries_ms"] / 1000)
            raw.append(hand_written_queries(connection, settings))
        with psycopg.connect(url, autocommit=True) as check:
            count_started = time.perf_counter()
            check.execute("SELECT count(*) FROM jackpots").fetchone()
            count_time = time.perf_counter() - count_started
        print()
        print(f"database queries with {rows:,} rows in jackpots ({cycles * 3} runs)")
        print(f"  monitor statistics queries: median {median(queries) * 1000:6.2f} ms, max {max(queries) * 1000:6.2f} ms   "
              f"target <= 50 ms: ratio {max(queries) / 0.05:.2f}")
        print(f"  with connecting + SELECT 1: median {median(connect_and_queries) * 1000:6.2f} ms   "
              f"(a fresh session each cycle, as the daemon does)")
        print(f"  hand-written, open connection, SELECT 1 + the same queries: median {median(raw) * 1000:6.2f} ms   "
              f"monitor/hand-written {median(queries) / median(raw):.2f}")
        print(f"  for scale, the guide's SELECT COUNT(*) FROM jackpots (never run by the monitor): {count_time * 1000:.1f} ms")
        connection.close()
        state.dispose()
    finally:
        if service is not None:
            service.stop()
        cluster.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
