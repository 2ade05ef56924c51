"""Alerts on a PostgreSQL state store shared by several processes (hosts): one page per database
problem, one escalation per step, and the whole life of an alert on PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

import config.settings  # noqa: F401 - loads the job registry before jobs.base
from jobs.base import Finding
from scheduler import alerts
from scheduler.state import StateStore

sys.path.insert(0, str(Path(__file__).parent))
from helpers_alerts import Receiver, at, load, notifier_toml, write_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]

RACER = r"""
import sys, time
import config.settings
sys.path.insert(0, "tests/scheduler")
from helpers_alerts import load, at
from jobs.base import Finding
from scheduler import alerts
from scheduler.state import StateStore

config_path, start, keys = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
settings = load(config_path)
state = StateStore.open(settings)
for index in range(keys):
    time.sleep(max(start + index * 0.25 - time.time(), 0))   # both processes at the same instant
    alerts.report(settings, state, Finding(key=f"db:race:{index}", ok=False, title=f"race {index}",
                  category="performance", severity="P2", code="J006", scope="database"),
                  source="monitor", now=at(0))
time.sleep(max(start + keys * 0.25 + 0.5 - time.time(), 0))
alerts.process(settings, state, now=at(31))
state.dispose()
"""


@pytest.fixture
def pg_state(pg):
    name = f"alerts_state_{uuid.uuid4().hex[:8]}"
    url = pg.create_database(name)
    yield url
    pg.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def receiver():
    server = Receiver().start()
    yield server
    server.stop()


def test_two_hosts_sharing_a_postgresql_state_store_page_once_for_a_database_problem(pg_state, receiver, tmp_path):
    path = write_config(tmp_path / "config.toml", pg_state, notifier_toml(receiver, ["devops-team", "team-lead"]))
    StateStore.open(load(path)).dispose()  # create the tables once, as the first daemon would
    keys = 8
    start = time.time() + 3.0
    hosts = [subprocess.Popen([sys.executable, "-c", RACER, str(path), str(start), str(keys)], cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT), "JACKPOT_MAINT_HOST": f"host-{number}"},
                              stderr=subprocess.PIPE, text=True) for number in (1, 2)]
    for host in hosts:
        _, errors = host.communicate(timeout=90)
        assert host.returncode == 0, errors
    # per problem: level 1 to the devops team, then level 2 (30 min) to the devops team and the team lead
    got = receiver.wait_for(keys * 3, timeout=5)
    time.sleep(0.3)
    assert len(receiver.received) == keys * 3
    titles = [item["title"] for item in got]
    for index in range(keys):
        mine = [title for title in titles if f": race {index} (" in title]
        assert sum("[L1]" in title for title in mine) == 1 and sum("[L2]" in title for title in mine) == 2
    state = StateStore.open(load(path))
    try:
        found = alerts.list_alerts(state)
        assert len(found) == keys and all(alert.occurrences == 2 for alert in found)
        assert all(alert.level == 2 for alert in found)
    finally:
        state.dispose()


def test_an_alerts_whole_life_on_postgresql(pg_state, receiver, tmp_path):
    path = write_config(tmp_path / "config.toml", pg_state,
                        notifier_toml(receiver, ["oncall", "team-lead"]) + '\n[alerts]\nack_timeout = "1h"\n')
    settings = load(path)
    state = StateStore.open(settings)
    try:
        finding = Finding(key="monitor:health", ok=False, title="health down", category="service_down", severity="P1",
                          code="J001", scope="host")
        alerts.report(settings, state, finding, source="monitor", now=at(0))
        alerts.report(settings, state, finding, source="monitor", now=at(1))
        alerts.process(settings, state, now=at(15))
        alerts.acknowledge(settings, state, 1, by="carol", now=at(16))
        alerts.process(settings, state, now=at(40))
        alerts.process(settings, state, now=at(77))  # ack_timeout reminder
        finding.ok = True
        alerts.report(settings, state, finding, source="monitor", now=at(80))
        alerts.process(settings, state, now=at(95))
        got = receiver.wait_for(7)
        titles = [item["title"] for item in got]
        assert len(titles) == 7, titles
        assert sum("RESOLVED" in title for title in titles) == 2 and sum("Reminder" in title for title in titles) == 2
        [alert] = alerts.list_alerts(state, include_closed=True)
        assert alert.status == "resolved" and not alert.open and alert.occurrences == 2 and alert.acked_by == "carol"
    finally:
        state.dispose()
