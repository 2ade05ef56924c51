"""Benchmark: from a problem detected (alerts.report() called) to the first notification received by a
local HTTP receiver, through the real path (state store, outbox, apprise json://). Target: <= 1 s.
And: one target that hangs until its timeout does not delay the others.

Each figure is printed next to the best hand-written alternative measured in the same run: a bare
HTTP POST of the same JSON (no state store, no outbox, no apprise) for latency, and a plain loop
over the targets (what a simple script does) for the hanging target.

    .venv/bin/python bench/bench_alerts.py [--quick] [--alerts N] [--state-url URL]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "scheduler"))

import config.settings  # noqa: E402,F401 - loads the job registry before jobs.base
from helpers_alerts import Receiver, load, notifier_toml, write_config  # noqa: E402
from jobs.base import Finding  # noqa: E402
from scheduler import alerts  # noqa: E402
from scheduler.logs import setup_logging  # noqa: E402
from scheduler.state import StateStore  # noqa: E402


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(round(fraction * (len(ordered) - 1))), len(ordered) - 1)]


def finding(index: int, prefix: str) -> Finding:
    return Finding(key=f"{prefix}:{index}", ok=False, title=f"bench problem {index}", category="performance",
                   severity="P2", code="J006", scope="database", symptoms=["p99 response 2.3 s (threshold 500 ms)"],
                   logs=["ERROR slow query"] * 5)


def detect_to_receive(settings, state, receiver: Receiver, count: int, prefix: str) -> tuple[list[float], list[float]]:
    """Return (latencies to the first notification, time report() blocked), in seconds."""
    latencies, blocked = [], []
    for index in range(count):
        before = len(receiver.received)
        started = time.monotonic()
        alerts.report(settings, state, finding(index, prefix), source="bench")
        blocked.append(time.monotonic() - started)
        got = receiver.wait_for(before + 1, timeout=15)
        if len(got) <= before:
            raise SystemExit(f"alert {index} never arrived")
        latencies.append(got[before]["at"] - started)
    return latencies, blocked


def bare_post(receiver: Receiver, count: int) -> list[float]:
    """The hand-written alternative: one HTTP POST of the same JSON, nothing remembered."""
    latencies = []
    for index in range(count):
        body = json.dumps({"version": "1.0", "title": f"bench {index}", "message": "x" * 1500, "type": "failure"})
        before = len(receiver.received)
        started = time.monotonic()
        request = urllib.request.Request(f"http://127.0.0.1:{receiver.port}/bare/x", data=body.encode(),
                                         headers={"Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=5).read()
        latencies.append(receiver.wait_for(before + 1)[before]["at"] - started)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer alerts (10)")
    parser.add_argument("--alerts", type=int, default=100, help="alerts to time (default 100)")
    parser.add_argument("--state-url", help="state store URL (default a SQLite file in a temp dir)")
    parser.add_argument("--postgres", action="store_true",
                        help="also measure part 1 with a PostgreSQL state store (a throwaway local server)")
    parser.add_argument("--hang-timeout", type=float, default=3.0, help="send timeout with a hanging target (s)")
    args = parser.parse_args()
    count = 10 if args.quick else args.alerts
    setup_logging("CRITICAL")
    print(f"nproc {os.cpu_count()}, python {sys.version.split()[0]}")

    with tempfile.TemporaryDirectory() as directory:
        state_url = args.state_url or f"sqlite:///{directory}/state.db"
        receiver = Receiver().start()
        hanging = Receiver(mode="hang").start()
        try:
            # 1. detection to first notification
            path = write_config(Path(directory) / "one.toml", state_url, notifier_toml(receiver, ["devops-team"]))
            settings = load(path)
            state = StateStore.open(settings)
            cold, _ = detect_to_receive(settings, state, receiver, 1, "cold")
            latencies, blocked = detect_to_receive(settings, state, receiver, count, "warm")
            bare = bare_post(receiver, count)
            print(f"\n1. problem detected -> first notification received ({count} alerts, {state.engine.dialect.name} "
                  f"state store, apprise json:// to 127.0.0.1)")
            print(f"   first alert after start (imports apprise): {cold[0] * 1000:.1f} ms")
            p50, p99 = statistics.median(latencies), percentile(latencies, 0.99)
            bare50, bare99 = statistics.median(bare), percentile(bare, 0.99)
            print(f"   jackpot-maint: p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms"
                  f"  (target <= 1000 ms: {'met' if max(latencies) <= 1.0 else 'NOT met'})")
            print(f"   bare HTTP POST: p50 {bare50 * 1000:.2f} ms, p99 {bare99 * 1000:.2f} ms")
            print(f"   ratio (jackpot-maint / bare POST): p50 {p50 / bare50:.1f}x, p99 {p99 / bare99:.1f}x "
                  f"(the difference is the durable outbox: insert-or-update, claim, mark sent)")
            print(f"   report() returned after: p50 {statistics.median(blocked) * 1000:.1f} ms")
            state.dispose()
            if args.postgres:
                from scheduler.pgcluster import PostgresCluster

                with PostgresCluster() as cluster:
                    pg_url = cluster.create_database("bench_alerts_state")
                    path = write_config(Path(directory) / "pg.toml", pg_url, notifier_toml(receiver, ["devops-team"]))
                    settings = load(path)
                    state = StateStore.open(settings)
                    detect_to_receive(settings, state, receiver, 1, "pg-cold")
                    pg_latencies, _ = detect_to_receive(settings, state, receiver, count, "pg")
                    state.dispose()
                print(f"   with a PostgreSQL state store: p50 {statistics.median(pg_latencies) * 1000:.1f} ms, "
                      f"p99 {percentile(pg_latencies, 0.99) * 1000:.1f} ms, max {max(pg_latencies) * 1000:.1f} ms "
                      f"(ratio to bare POST p50 {statistics.median(pg_latencies) / bare50:.1f}x)")

            # 2. a hanging target
            rounds = max(count // 10, 3)
            healthy_only = write_config(Path(directory) / "healthy.toml", f"sqlite:///{directory}/healthy.db",
                                        f'[alerts]\nsend_timeout = "{args.hang_timeout}s"\n\n'
                                        + notifier_toml(receiver, ["devops-team"]))
            with_hang = write_config(Path(directory) / "hang.toml", f"sqlite:///{directory}/hang.db",
                                     f'[alerts]\nsend_timeout = "{args.hang_timeout}s"\n\n'
                                     f'[alerts.contacts.devops-team]\ntargets = ["stuck", "devops-team"]\n\n'
                                     f'[notifiers.stuck]\nurls = ["{hanging.url("stuck")}"]\n\n'
                                     + notifier_toml(receiver, ["devops-team"]))
            figures = {}
            for label, config_path in (("without", healthy_only), ("with", with_hang)):
                settings = load(config_path)
                state = StateStore.open(settings)
                detect_to_receive(settings, state, receiver, 1, f"warm-{label}")
                figures[label] = detect_to_receive(settings, state, receiver, rounds, f"hang-{label}")
                state.dispose()
            # the hand-written alternative: a loop that sends to each target in turn (hanging one first)
            import apprise

            loop = []
            for index in range(rounds):
                before = len(receiver.received)
                started = time.monotonic()
                for url in (hanging.url("stuck") + f"?rto={args.hang_timeout}", receiver.url("loop")):
                    apprise.Apprise.instantiate(url).notify(body="x", title=f"loop {index}")
                loop.append(receiver.wait_for(before + 1)[before]["at"] - started)
            without, blocked_without = figures["without"]
            with_, blocked_with = figures["with"]
            print(f"\n2. healthy target's latency, with a second target that hangs until its {args.hang_timeout:g} s "
                  f"timeout ({rounds} alerts each)")
            print(f"   without the hanging target: p50 {statistics.median(without) * 1000:.1f} ms, "
                  f"max {max(without) * 1000:.1f} ms")
            print(f"   with the hanging target:    p50 {statistics.median(with_) * 1000:.1f} ms, "
                  f"max {max(with_) * 1000:.1f} ms  (ratio {statistics.median(with_) / statistics.median(without):.2f}x)")
            print(f"   report() returned after: {statistics.median(blocked_without) * 1000:.0f} ms without, "
                  f"{statistics.median(blocked_with) * 1000:.0f} ms with (bounded by the send timeout)")
            print(f"   hand-written sequential loop, hanging target first: p50 {statistics.median(loop) * 1000:.0f} ms "
                  f"(ratio to jackpot-maint with the hang: {statistics.median(loop) / statistics.median(with_):.0f}x)")
        finally:
            hanging.stop()
            receiver.stop()


if __name__ == "__main__":
    main()
