"""Benchmark: the daemon itself, against hand-written alternatives measured side by side.

    .venv/bin/python bench/bench_daemon.py            # idle 60 s, 120 fires, 1,000 runs (about 5 minutes)
    .venv/bin/python bench/bench_daemon.py --full     # the issue's sizes: 500 fires, 5,000 runs (20-25 minutes)
    .venv/bin/python bench/bench_daemon.py --quick    # idle 15 s, 60 fires, 300 runs (about 2 minutes)

(A run through the runner costs 100-200 ms on a loaded 2-CPU machine, most of it opening SQLite
connections of the state store and a new target engine per run, so 5,000 runs take a while.)

A throwaway PostgreSQL cluster (scheduler/pgcluster.py) is the target database; the state store is a
SQLite file. Three measurements:
  1. Idle: `jackpot-maint run` with every job enabled on its default schedule, READY, then resident
     memory and CPU over the window (targets: <= 80 MB, <= 1 %), with MALLOC_ARENA_MAX=2 as the unit
     sets it. A job whose fire falls in the window (monitor, every 5 minutes) runs and counts. Side by side: a hand-written idle
     process importing the same libraries and sleeping in a 0.5 s loop.
  2. Start lateness: `jackpot-maint run` with ping_database `every 1s`; lateness = the ledger's
     started_at - scheduled_for (the lock, the cross-host claim and the ledger insert included);
     p50/p99/max (target p99 <= 100 ms). Side by side, in this process, a hand-written loop that
     sleeps to each whole second and measures how late it woke up (no database work at all).
  3. Leak: scheduler.runner.run_job(ping_database) in a loop in this process; resident memory after
     a warm-up and after N more runs (target growth <= 5 %). Side by side, in a subprocess, a
     hand-written loop doing what ping_database does with psycopg directly (connect, SELECT 1,
     SHOW server_version, close).
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from scheduler.pgcluster import PostgresCluster  # noqa: E402

IDLE_BASELINE = """
import time, sqlalchemy, psycopg, apscheduler.schedulers.blocking, pydantic, loguru, config  # noqa
while True:
    time.sleep(0.5)
"""

LEAK_BASELINE = """
import sys, psutil, psycopg
url, warmup, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
process = psutil.Process()
def once():
    with psycopg.connect(url, autocommit=True, application_name="baseline") as connection:
        connection.execute("SELECT 1")
        connection.execute("SHOW server_version").fetchone()
for _ in range(warmup):
    once()
before = process.memory_info().rss
import time
started = time.perf_counter()
for _ in range(runs):
    once()
elapsed = time.perf_counter() - started
print(before, process.memory_info().rss, elapsed)
"""


def environment(runtime: Path, notify: Path | None = None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("JACKPOT_", "NOTIFY_", "WATCHDOG_"))}
    env["PYTHONPATH"] = str(ROOT)
    env["RUNTIME_DIRECTORY"] = str(runtime)
    env["JACKPOT_MAINT_HOST"] = "bench"
    env.setdefault("MALLOC_ARENA_MAX", "2")  # as the systemd unit sets it
    if notify:
        env["NOTIFY_SOCKET"] = str(notify)
    return env


def start_daemon(workdir: Path, config: Path, name: str) -> tuple[subprocess.Popen, socket.socket]:
    runtime = workdir / f"run-{name}"
    runtime.mkdir(exist_ok=True)
    notify = workdir / f"notify-{name}.sock"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(notify))
    receiver.settimeout(60)
    log = open(workdir / f"daemon-{name}.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "scheduler", "run", "--config", str(config)],
                               env=environment(runtime, notify), stdout=log, stderr=subprocess.STDOUT, cwd=str(workdir))
    while True:
        if b"READY=1" in receiver.recv(4096):
            return process, receiver


def stop_daemon(process: subprocess.Popen, receiver: socket.socket) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
    receiver.close()


def sample(process: psutil.Process, seconds: float) -> tuple[float, float]:
    """Return (peak RSS MB, CPU %) of a process over a window."""
    cpu_before = sum(process.cpu_times()[:2])
    wall_before = time.monotonic()
    peak = 0
    deadline = wall_before + seconds
    while time.monotonic() < deadline:
        peak = max(peak, process.memory_info().rss)
        time.sleep(min(1.0, max(deadline - time.monotonic(), 0)))
    cpu = (sum(process.cpu_times()[:2]) - cpu_before) / (time.monotonic() - wall_before) * 100
    return peak / 1e6, cpu


def config_text(database_url: str, state: Path, extra: str) -> str:
    return f'[database]\nurl = "{database_url}"\n\n[state]\nurl = "sqlite:///{state}"\n\n{extra}\n'


def bench_idle(workdir: Path, database_url: str, seconds: float) -> None:
    import config  # noqa: F401
    from jobs.registry import all_jobs

    log_dir = workdir / "service-logs"
    log_dir.mkdir()
    extra = "\n".join(f"[jobs.{name}]\nenabled = true\n" for name in all_jobs())
    path = workdir / "idle.toml"
    path.write_text(config_text(database_url, workdir / "idle-state.db", extra))
    baseline = subprocess.Popen([sys.executable, "-c", IDLE_BASELINE], env=environment(workdir), cwd=str(ROOT))
    process, receiver = start_daemon(workdir, path, "idle")
    try:
        time.sleep(3)  # both past their start-up
        results: dict[str, tuple[float, float]] = {}

        def measure(label: str, pid: int) -> None:
            results[label] = sample(psutil.Process(pid), seconds)

        threads = [threading.Thread(target=measure, args=("daemon", process.pid)),
                   threading.Thread(target=measure, args=("baseline", baseline.pid))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        baseline.kill()
        stop_daemon(process, receiver)
    rss, cpu = results["daemon"]
    base_rss, base_cpu = results["baseline"]
    print(f"idle daemon, all {len(all_jobs())} jobs scheduled, {seconds:g} s:")
    print(f"  resident memory  {rss:7.1f} MB   target 80 MB: ratio {rss / 80:.2f}   "
          f"hand-written idle process with the same imports {base_rss:.1f} MB: ratio {rss / base_rss:.2f}")
    print(f"  CPU              {cpu:7.2f} %    target 1 %: ratio {cpu / 1:.2f}    "
          f"hand-written 0.5 s sleep loop {base_cpu:.2f} %")


def bench_lateness(workdir: Path, database_url: str, fires: int) -> None:
    import config  # noqa: F401
    from jobs.registry import all_jobs

    extra = "".join(f"[jobs.{name}]\nenabled = false\n\n" for name in all_jobs() if name != "ping_database")
    extra += '[jobs.ping_database]\nenabled = true\nschedule = "every 1s"\n'
    state = workdir / "lateness-state.db"
    path = workdir / "lateness.toml"
    path.write_text(config_text(database_url, state, extra))
    process, receiver = start_daemon(workdir, path, "lateness")
    hand_written: list[float] = []

    def hand_written_loop() -> None:
        while len(hand_written) < fires:
            target = int(time.time()) + 1
            time.sleep(max(target - time.time(), 0))
            hand_written.append(time.time() - target)

    thread = threading.Thread(target=hand_written_loop, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + fires * 1.5 + 30
        while time.monotonic() < deadline:
            if count_fires(state) >= fires + 1:
                break
            time.sleep(1)
    finally:
        stop_daemon(process, receiver)
    thread.join(5)
    lateness = daemon_lateness(state)[1:fires + 1]  # the first fire includes creating the claims table
    p50, p99, worst = percentile(lateness, 50), percentile(lateness, 99), max(lateness)
    hand_p99 = percentile(hand_written, 99)
    print(f"start lateness over {len(lateness)} fires of a 1-second interval job:")
    print(f"  daemon        p50 {p50 * 1000:6.1f} ms  p99 {p99 * 1000:6.1f} ms  max {worst * 1000:6.1f} ms   "
          f"target p99 100 ms: ratio {p99 / 0.1:.2f}")
    print(f"  hand-written  p50 {percentile(hand_written, 50) * 1000:6.1f} ms  p99 {hand_p99 * 1000:6.1f} ms   "
          f"(sleep to the second, no lock, claim or ledger): daemon/hand-written p99 {p99 / max(hand_p99, 1e-6):.1f}x")


def count_fires(state: Path) -> int:
    try:
        with sqlite3.connect(f"file:{state}?mode=ro", uri=True) as connection:
            return connection.execute("SELECT count(*) FROM runs WHERE trigger = 'scheduled' AND status = 'ok'").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def daemon_lateness(state: Path) -> list[float]:
    with sqlite3.connect(f"file:{state}?mode=ro", uri=True) as connection:
        rows = connection.execute("SELECT scheduled_for, started_at FROM runs WHERE trigger = 'scheduled' "
                                  "AND status = 'ok' ORDER BY scheduled_for").fetchall()
    return [(datetime.fromisoformat(started) - datetime.fromisoformat(scheduled)).total_seconds()
            for scheduled, started in rows]


def percentile(values: list[float], percent: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, int(round(percent / 100 * len(ordered) + 0.5)) - 1))
    return ordered[index]


def bench_leak(workdir: Path, database_url: str, runs: int) -> None:
    from config.loader import load_settings
    from scheduler.logs import setup_logging
    from scheduler.runner import run_job
    from scheduler.state import StateStore

    os.environ["RUNTIME_DIRECTORY"] = str(workdir)
    setup_logging("WARNING", "human", stream=open(os.devnull, "w"))
    settings = load_settings(None, {"database.url": (database_url, "bench"),
                                    "state.url": (f"sqlite:///{workdir / 'leak-state.db'}", "bench"),
                                    "jobs.ping_database.enabled": (True, "bench")}, environ={}).settings
    state = StateStore.open(settings)
    process = psutil.Process()
    warmup = max(runs // 10, 100)
    for _ in range(warmup):
        run_job(settings, "ping_database", trigger="manual", state=state)
    before = process.memory_info().rss
    started = time.perf_counter()
    for _ in range(runs):
        outcome = run_job(settings, "ping_database", trigger="manual", state=state)
        assert outcome.record.status == "ok", outcome.record.message
    elapsed = time.perf_counter() - started
    after = process.memory_info().rss
    state.dispose()
    growth = (after - before) / before * 100
    baseline = subprocess.run([sys.executable, "-c", LEAK_BASELINE, database_url, str(warmup), str(runs)],
                              capture_output=True, text=True, check=True)
    base_before, base_after, base_elapsed = (float(value) for value in baseline.stdout.split())
    base_growth = (base_after - base_before) / base_before * 100
    print(f"resident memory over {runs} runs of ping_database through the runner (after {warmup} warm-up runs):")
    print(f"  runner        {before / 1e6:6.1f} MB -> {after / 1e6:6.1f} MB  growth {growth:5.2f} %   "
          f"target 5 %: ratio {growth / 5:.2f}   {elapsed / runs * 1000:5.1f} ms per run (lock, ledger, alerts hook)")
    print(f"  hand-written  {base_before / 1e6:6.1f} MB -> {base_after / 1e6:6.1f} MB  growth {base_growth:5.2f} %   "
          f"{base_elapsed / runs * 1000:5.1f} ms per run (psycopg connect + 2 queries): "
          f"runner/hand-written time {elapsed / max(base_elapsed, 1e-9):.1f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="idle 15 s, 60 fires, 300 runs")
    parser.add_argument("--full", action="store_true", help="the issue's sizes: idle 60 s, 500 fires, 5,000 runs")
    parser.add_argument("--idle-seconds", type=float, default=None)
    parser.add_argument("--fires", type=int, default=None)
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--only", choices=["idle", "lateness", "leak"], action="append")
    args = parser.parse_args()
    idle_seconds = args.idle_seconds or (15 if args.quick else 60)
    fires = args.fires or (60 if args.quick else 500 if args.full else 120)
    runs = args.runs or (300 if args.quick else 5000 if args.full else 1000)
    only = set(args.only or ["idle", "lateness", "leak"])
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    print(f"machine: {os.cpu_count()} CPU(s), {cpu}; Python {platform.python_version()}")
    workdir = Path(tempfile.mkdtemp(prefix="bench-daemon-"))
    with PostgresCluster() as cluster:
        database_url = cluster.create_database("bench")
        if "idle" in only:
            bench_idle(workdir, database_url, idle_seconds)
        if "lateness" in only:
            bench_lateness(workdir, database_url, fires)
        if "leak" in only:
            # over the unix socket (trust): the loop measures the runner, not TCP and SCRAM authentication
            socket_url = f"postgresql://postgres@/bench?host={cluster.socketdir}&port={cluster.port}"
            bench_leak(workdir, socket_url, runs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
