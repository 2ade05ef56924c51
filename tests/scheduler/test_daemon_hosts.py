"""Several hosts against one PostgreSQL, and the target database going away under a running daemon."""

from __future__ import annotations

import collections
import signal
import time

import pytest

from helpers_daemon import DaemonProcess, ledger_rows, wait_until, write_config
from test_daemon import only_ping


@pytest.fixture
def daemons():
    started: list[DaemonProcess] = []
    yield started
    for daemon in started:
        daemon.stop()


def test_two_daemons_on_one_database_run_every_fire_exactly_once(tmp_path, database_url, daemons):
    interval = 0.4
    states = {}
    for host in ("host-1", "host-2"):
        states[host] = tmp_path / f"state-{host}.db"
        config = write_config(tmp_path / f"{host}.toml", database_url, states[host],
                              '[scheduler]\nstop_grace = "2s"\n\n' + only_ping(f"every {int(interval * 1000)}ms",
                                                                                misfire_grace="5s"))
        daemons.append(DaemonProcess(tmp_path, config, host).start())
    for daemon in daemons:
        daemon.wait_for_notify("READY=1")

    def fires() -> dict[str, list[dict]]:
        by_fire = collections.defaultdict(list)
        for host, state in states.items():
            for row in ledger_rows(state, "ping_database"):
                if row["scheduled_for"]:
                    by_fire[row["scheduled_for"]].append(row)
        return by_fire

    # both daemons up: count the fires from the first one both could see
    start = time.monotonic()
    wait_until(lambda: len([f for f, rows in fires().items() if any(r["status"] == "ok" for r in rows)]) >= 56,
               60, "fewer than 56 fires ran", process=daemons[0].process)
    for daemon in daemons:
        daemon.signal(signal.SIGTERM)
    for daemon in daemons:
        assert daemon.wait(15) == 0
    elapsed = time.monotonic() - start

    by_fire = fires()
    ordered = sorted(by_fire)
    window = ordered[3:-3]  # both daemons were up and running for these
    assert len(window) >= 50, f"only {len(window)} fires in {elapsed:.1f}s"
    ran_twice = [fire for fire in window if sum(r["status"] == "ok" for r in by_fire[fire]) > 1]
    ran_once = [fire for fire in window if sum(r["status"] == "ok" for r in by_fire[fire]) == 1]
    assert not ran_twice, f"fires run on both hosts: {ran_twice[:5]}"
    assert len(ran_once) >= 50
    # a fire that ran nowhere is one that found the job still running (no overlap): recorded, never lost
    for fire in set(window) - set(ran_once):
        assert any(r["status"] == "skipped" and "running" in r["message"] for r in by_fire[fire]), by_fire[fire]
    # each host saw the same fire and recorded the one it did not run as claimed by the other
    hosts_that_ran = collections.Counter(next(r["host"] for r in by_fire[fire] if r["status"] == "ok") for fire in ran_once)
    assert set(hosts_that_ran) <= {"host-1", "host-2"}
    losers = [r for fire in window for r in by_fire[fire] if r["status"] == "skipped"]
    assert losers and all("claimed by host" in r["message"] or "running" in r["message"] for r in losers)
    # consecutive fires are one interval apart: the schedule is the same grid on both hosts
    from datetime import datetime

    moments = [datetime.fromisoformat(fire) for fire in window]
    gaps = [round((b - a).total_seconds() / interval, 6) for a, b in zip(moments, moments[1:])]
    assert all(gap == int(gap) for gap in gaps), "the hosts' fire times are not on one grid"
    assert gaps.count(1.0) >= len(gaps) * 0.9


def test_target_database_stopped_under_a_running_daemon_is_survived_and_caught_up_once(tmp_path):
    from scheduler.pgcluster import PostgresCluster, free_port

    # a dedicated cluster on a fixed port, so that it comes back where the daemon expects it
    cluster = PostgresCluster(port=free_port())
    cluster.start()
    try:
        url = cluster.create_database("outage")
        state = tmp_path / "state.db"
        config = write_config(tmp_path / "config.toml", url, state,
                              '[scheduler]\nretry_initial = "500ms"\nretry_max = "1s"\n\n'
                              + only_ping("every 1s", misfire_grace="1m"))
        config.write_text(config.read_text().replace("[database]\n", '[database]\nconnect_timeout = "1s"\n'))
        daemon = DaemonProcess(tmp_path, config, "host-o").start()
        try:
            daemon.wait_for_notify("READY=1")
            wait_until(lambda: sum(r["status"] == "ok" for r in ledger_rows(state)) >= 2, 15,
                       "no run before the outage", process=daemon.process)

            cluster.pg_ctl_stop("fast")
            wait_until(lambda: any(r["status"] == "failed" and (r["error_code"] or "").startswith("J001")
                                   for r in ledger_rows(state)), 15, "the outage was not noticed",
                       process=daemon.process)
            stopped_at = time.monotonic()
            time.sleep(max(0.0, 3.0 - (time.monotonic() - stopped_at)))
            assert daemon.process.poll() is None, "the daemon died with its database"
            failed_during_outage = [r for r in ledger_rows(state) if r["status"] == "failed"]
            assert len(failed_during_outage) <= 2, "the daemon kept running database jobs into a dead database"

            cluster.pg_ctl_start()
            wait_until(lambda: any(r["trigger"] == "catch-up" and r["status"] == "ok" for r in ledger_rows(state)), 20,
                       "no catch-up after the database came back", process=daemon.process)
            wait_until(lambda: sum(r["status"] == "ok" and r["trigger"] == "scheduled" for r in ledger_rows(state))
                       >= 4, 15, "scheduled runs did not resume", process=daemon.process)
            rows = ledger_rows(state)
            assert sum(r["trigger"] == "catch-up" for r in rows) == 1
            missed = [r for r in rows if r["status"] == "missed"]
            assert len(missed) == 1 and "target database was unreachable" in missed[0]["message"]
            log = daemon.log()
            assert "J001" in log and "answers again" in log
            daemon.signal(signal.SIGTERM)
            assert daemon.wait(15) == 0
        finally:
            daemon.stop()
    finally:
        cluster.stop()
