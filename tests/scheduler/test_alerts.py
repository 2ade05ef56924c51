"""Alerts end to end in one process: real apprise posting to a real HTTP receiver on 127.0.0.1, a
real SQLite state store, and an injected clock instead of sleeping."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import config.settings  # noqa: F401 - loads the job registry before jobs.base
from jobs.base import Finding
from scheduler import alerts, ledger
from scheduler.errors import ConnectionFailed
from scheduler.silences import add_silence, remove_silence
from scheduler.state import StateStore

sys.path.insert(0, str(Path(__file__).parent))
from helpers_alerts import TOKEN, Receiver, at, load, notifier_toml, settled_notifications, write_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
LEVEL_TARGETS = ["oncall", "database-team", "devops-team", "team-lead", "engineering", "external"]


@pytest.fixture
def receiver():
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture
def setup(tmp_path, receiver):
    """Returns make(extra_toml) -> (settings, state, config path); the notifiers post to the receiver."""
    opened = []

    def make(extra: str = "", names: list[str] | None = None, state_url: str | None = None):
        path = write_config(tmp_path / "config.toml", state_url or f"sqlite:///{tmp_path / 'state.db'}",
                            notifier_toml(receiver, names or LEVEL_TARGETS) + "\n" + extra)
        settings = load(path)
        state = StateStore.open(settings)
        opened.append(state)
        return settings, state, path

    yield make
    for state in opened:
        state.dispose()


def health_down(**overrides) -> Finding:
    values = dict(key="monitor:health", ok=False, title="health endpoint not responding", category="service_down",
                  severity="P1", code="J001", scope="host",
                  symptoms=["GET http://localhost:3001/health: connection refused (expected status healthy)"],
                  attempts=["retried 3 times"], logs=["2026-11-28 ERROR connect ECONNREFUSED 127.0.0.1:5432"])
    values.update(overrides)
    return Finding(**values)


def paths(receiver: Receiver) -> list[str]:
    return [item["path"].split("/")[1] for item in receiver.received]


def test_new_alert_is_sent_within_a_second_with_the_guides_template(setup, receiver):
    settings, state, _ = setup()
    alerts.process(settings, state, now=at(-1))  # as the daemon does when it starts: apprise is loaded
    started = time.monotonic()
    alerts.report(settings, state, health_down(), source="monitor", now=at(0))
    got = receiver.wait_for(1)
    assert got and got[0]["at"] - started < 1.0
    host = ledger.hostname()
    assert got[0]["title"] == f"[P1][L1] Service down: health endpoint not responding (J001) on {host}"
    body = got[0]["message"]
    for section in ("ISSUE:", "SEVERITY: P1", "TIMELINE:", "IMPACT:", "ENVIRONMENT:", "SYMPTOMS:", "ATTEMPTS MADE:",
                    "LOGS:"):
        assert section in body
    assert "connection refused" in body and "retried 3 times" in body and "ECONNREFUSED" in body
    assert f"host {host}" in body and "jackpot-maint " in body
    assert paths(receiver) == ["oncall"]  # level 1 of service down: the on-call engineer only
    assert TOKEN not in body


def test_same_problem_again_updates_the_alert_and_sends_nothing_new(setup, receiver):
    settings, state, _ = setup()
    alerts.report(settings, state, health_down(), source="monitor", now=at(0))
    alerts.report(settings, state, health_down(symptoms=["now timing out"]), source="monitor", now=at(5))
    receiver.wait_for(2, timeout=1)
    [alert] = alerts.list_alerts(state)
    assert alert.occurrences == 2 and alert.last_seen == at(5) and alert.first_seen == at(0)
    assert alert.evidence["symptoms"] == ["now timing out"]
    assert len(receiver.received) == 1


def test_host_problems_are_keyed_by_host_and_database_problems_are_not(setup):
    settings, state, _ = setup()
    alerts.report(settings, state, health_down(), source="monitor", now=at(0))
    alerts.report(settings, state, health_down(key="db:long_queries", scope="database", category="performance",
                                               code="J006", severity="P2"), source="monitor", now=at(0))
    keys = sorted(alert.dedup_key for alert in alerts.list_alerts(state))
    assert keys == ["db:long_queries", f"monitor:health@{ledger.hostname()}"]


def test_unacknowledged_alert_climbs_a_level_per_response_time_and_tells_each_new_level(setup, receiver):
    settings, state, _ = setup()
    alerts.report(settings, state, health_down(), source="monitor", now=at(0))
    alerts.process(settings, state, now=at(14))
    assert alerts.list_alerts(state)[0].level == 1 and len(receiver.received) == 1
    alerts.process(settings, state, now=at(15))  # the on-call engineer's 15 minutes are up
    receiver.wait_for(3)
    alert = alerts.list_alerts(state)[0]
    assert alert.level == 2
    assert sorted(paths(receiver)[1:]) == ["oncall", "team-lead"]
    assert receiver.received[1]["title"].startswith("[P1][L2] Escalated: Service down")
    assert "not acknowledged within 15m" in receiver.received[1]["message"]
    alerts.process(settings, state, now=at(16))
    assert len(receiver.received) == 3


def test_alert_moves_up_when_open_past_its_levels_bound(setup, receiver):
    settings, state, _ = setup()  # performance: devops team, 1 h response; level 1 ends at 30 min
    alerts.report(settings, state, health_down(key="db:slow", category="performance", code="J006", severity="P2",
                                               scope="database"), source="monitor", now=at(0))
    alerts.process(settings, state, now=at(29))
    assert alerts.list_alerts(state)[0].level == 1
    alerts.process(settings, state, now=at(30))
    alert = alerts.list_alerts(state)[0]
    assert alert.level == 2
    assert [entry["detail"] for entry in alert.history if entry["event"] == "escalated"] == ["open longer than 30m"]


def test_data_corruption_starts_at_level_4_and_invalid_amounts_at_level_2(setup, receiver):
    settings, state, _ = setup()
    alerts.report(settings, state, Finding(key="db:wraparound", ok=False, title="transaction ID wraparound near",
                                           category="data_corruption", severity="P1", code="J005"),
                  source="monitor", now=at(0))
    alerts.report(settings, state, Finding(key="rule:negative_amount", ok=False, title="3 negative amounts",
                                           category="data_corruption", severity="P2", code="J003"),
                  source="validate_data", now=at(0))
    by_key = {alert.dedup_key: alert for alert in alerts.list_alerts(state)}
    assert by_key["db:wraparound"].level == 4 and by_key["rule:negative_amount"].level == 2
    receiver.wait_for(6)
    level4 = [item for item in receiver.received if "[L4]" in item["title"]]
    assert sorted(item["path"].split("/")[1] for item in level4) == ["database-team", "engineering", "external",
                                                                       "team-lead"]


def test_restart_in_the_middle_of_an_escalation_keeps_the_schedule_and_sends_nothing_twice(setup, receiver, tmp_path):
    settings, state, path = setup()
    alerts.report(settings, state, health_down(), source="monitor", now=at(0))
    alerts.process(settings, state, now=at(15))  # level 2
    receiver.wait_for(3)
    state.dispose()

    def daemon_process(*minutes: float) -> list[int]:
        """A new process over the same state store, as after a restart, running process() at each time."""
        code = ("import sys, config.settings; sys.path.insert(0, 'tests/scheduler');"
                "from helpers_alerts import load, at; from scheduler import alerts; from scheduler.state import StateStore;"
                f"s = load({str(path)!r}); st = StateStore.open(s)\n"
                f"for m in {list(minutes)!r}:\n    alerts.process(s, st, now=at(m))\n"
                f"    print(len(alerts.notifications_of(st, 1)), flush=True)")
        result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60, capture_output=True,
                                text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        return [int(line) for line in result.stdout.split()]

    # nothing due at 20; level 3 at 30: 15 min after level 2 without an acknowledgement
    assert daemon_process(20, 30) == [3, 6]
    assert daemon_process(30) == [6]  # another process (another host) at the same moment: nothing more
    receiver.wait_for(6, timeout=2)
    titles = [item["title"] for item in receiver.received]
    assert len(titles) == 6 and sum("[L3]" in title for title in titles) == 3
    reopened = StateStore.open(load(path))
    try:
        assert alerts.list_alerts(reopened)[0].level == 3
        sent = alerts.notifications_of(reopened, 1)
        assert len({(item["event"], item["target"]) for item in sent}) == len(sent) == 6
        assert all(item["status"] == "sent" for item in sent)
    finally:
        reopened.dispose()


def test_receiver_down_then_up_the_notification_arrives_later(setup, receiver):
    settings, state, _ = setup()
    receiver.stop()
    alerts.report(settings, state, health_down(), source="monitor", now=at(0))
    [row] = alerts.notifications_of(state, 1)
    assert row["status"] == "pending" and row["attempts"] == 1 and row["error"]
    alerts.process(settings, state, now=at(0.2))  # not yet due: backoff 30s
    assert alerts.notifications_of(state, 1)[0]["attempts"] == 1
    receiver.start()
    alerts.process(settings, state, now=at(1))
    got = receiver.wait_for(1)
    assert len(got) == 1 and got[0]["title"].startswith("[P1][L1]")
    assert alerts.notifications_of(state, 1)[0]["status"] == "sent"
    alerts.process(settings, state, now=at(2))
    assert len(receiver.received) == 1


def test_fallback_target_gets_the_page_while_every_target_of_the_level_fails(setup, receiver, tmp_path):
    audit = tmp_path / "fallback.jsonl"
    settings, state, _ = setup(f'[alerts]\nfallback = "audit"\n\n[notifiers.audit]\ntype = "file"\npath = "{audit}"\n',
                               names=["team-lead"])
    settings.notifiers["oncall"] = settings.notifiers["team-lead"].model_copy(
        update={"urls": [type(settings.notifiers["team-lead"].urls[0])("json://127.0.0.1:9/down/x")]})
    alerts.report(settings, state, health_down(), source="monitor", now=at(0))
    assert audit.exists() and "[P1][L1] Service down" in audit.read_text()
    statuses = {item["target"]: item["status"] for item in alerts.notifications_of(state, 1)}
    assert statuses == {"oncall": "pending", "audit": "sent"}


def test_a_hung_target_does_not_delay_the_others(setup, receiver):
    hanging = Receiver(mode="hang").start()
    try:
        settings, state, _ = setup(f'[alerts]\nsend_timeout = "1s"\n\n[notifiers.external]\n'
                                   f'urls = ["{hanging.url("external")}"]\n', names=["database-team", "team-lead",
                                                                                      "engineering"])
        started = time.monotonic()
        alerts.report(settings, state, Finding(key="db:corrupt", ok=False, title="index corrupt",
                                               category="data_corruption", severity="P1", code="J005"),
                      source="monitor", now=at(0))
        blocked = time.monotonic() - started
        got = receiver.wait_for(3)
        assert len(got) == 3 and max(item["at"] for item in got) - started < 1.0
        assert 0.9 < blocked < 2.0  # report() waited for the send timeout (1 s), not for the hang (30 s)
        # the hung send ends at apprise's read timeout and records itself
        statuses = {target: row["status"] for target, row in settled_notifications(state, 1).items()}
        assert statuses["external"] == "pending" and statuses["team-lead"] == "sent"
    finally:
        hanging.stop()


def test_acknowledgement_stops_the_escalation_and_reminds_after_ack_timeout(setup, receiver):
    settings, state, _ = setup('[alerts]\nack_timeout = "4h"\n')
    alerts.report(settings, state, health_down(), source="monitor", now=at(0))
    alerts.acknowledge(settings, state, 1, by="alice", now=at(5))
    for minutes in (15, 30, 60, 120, 200):
        alerts.process(settings, state, now=at(minutes))
    alert = alerts.get_alert(state, 1)
    assert alert.status == "acknowledged" and alert.level == 1 and alert.acked_by == "alice"
    assert len(receiver.received) == 1
    alerts.process(settings, state, now=at(5 + 240))
    got = receiver.wait_for(2)
    assert len(got) == 2 and "Reminder" in got[1]["title"] and "ACKNOWLEDGED by alice" in got[1]["message"]


def test_recovery_sends_a_resolved_notice_to_everyone_notified(setup, receiver):
    settings, state, _ = setup()
    alerts.report(settings, state, health_down(), source="monitor", now=at(0))
    alerts.process(settings, state, now=at(15))  # oncall + team-lead at level 2
    receiver.wait_for(3)
    alerts.report(settings, state, health_down(ok=True), source="monitor", now=at(20))
    assert alerts.get_alert(state, 1).status == "resolved"
    alerts.process(settings, state, now=at(25))  # within the flap window (10 min): nothing yet
    assert len(receiver.received) == 3
    alerts.process(settings, state, now=at(30))
    got = receiver.wait_for(5)
    resolved = [item for item in got if "RESOLVED" in item["title"]]
    assert sorted(item["path"].split("/")[1] for item in resolved) == ["oncall", "team-lead"]
    assert alerts.list_alerts(state) == []  # closed
    alerts.report(settings, state, health_down(), source="monitor", now=at(40))  # a new occurrence: a new alert
    assert [alert.id for alert in alerts.list_alerts(state)] == [2]


def test_manual_resolve_notifies_at_once(setup, receiver):
    settings, state, _ = setup()
    alerts.report(settings, state, health_down(), source="monitor", now=at(0))
    alerts.resolve(settings, state, 1, by="bob", now=at(3))
    got = receiver.wait_for(2)
    assert "RESOLVED" in got[1]["title"] and "RESOLVED by bob" in got[1]["message"]


def test_silence_suppresses_notifications_but_records_the_alert(setup, receiver):
    settings, state, _ = setup()
    silence = add_silence(state, "monitor:*", 2 * 3600, reason="deploying", now=at(-1))
    alerts.report(settings, state, health_down(), source="monitor", now=at(0))
    alerts.process(settings, state, now=at(15))
    alert = alerts.get_alert(state, 1)
    assert alert.status == "firing" and alert.level == 2
    assert {item["status"] for item in alerts.notifications_of(state, 1)} == {"suppressed"}
    time.sleep(0.3)
    assert receiver.received == []
    remove_silence(state, silence.id, now=at(20))
    alerts.process(settings, state, now=at(20))  # silence over and still firing: the current level hears now
    got = receiver.wait_for(2)
    assert sorted(item["path"].split("/")[1] for item in got) == ["oncall", "team-lead"]


def test_maintenance_window_suppresses_matching_alerts(setup, receiver):
    settings, state, _ = setup('[[alerts.maintenance_windows]]\ncron = "0 12 * * *"\nduration = "1h"\n'
                               'match = "service_down"\nreason = "weekly deploy"\n\n[scheduler]\ntimezone = "UTC"\n')
    alerts.report(settings, state, health_down(), source="monitor", now=at(10))
    rows = alerts.notifications_of(state, 1)
    assert [row["status"] for row in rows] == ["suppressed"] and "weekly deploy" in rows[0]["error"]
    alerts.report(settings, state, health_down(key="other", category="performance", code="J006"),
                  source="monitor", now=at(10))
    assert len(receiver.wait_for(1)) == 1


def test_reminders_go_every_repeat_interval_while_firing(setup, receiver):
    settings, state, _ = setup('[alerts.contacts.devops-team]\nresponse_time = "1d"\n\n'
                               '[alerts.levels.1]\nuntil = "1d"\n[alerts.levels.2]\nuntil = "2d"\n[alerts.levels.3]\nuntil = "3d"\n')
    alerts.report(settings, state, health_down(category="maintenance", code="J005", severity="P3"),
                  source="monitor", now=at(0))
    for minutes in range(5, 185, 5):  # three hours of a 15 s-ish daemon loop, coarsely
        alerts.process(settings, state, now=at(minutes))
    got = receiver.wait_for(4)
    assert len(got) == 4 and sum("Reminder" in item["title"] for item in got) == 3


def test_a_flapping_check_sends_no_more_than_the_clocks_allow(setup, receiver):
    settings, state, _ = setup()
    # fails and recovers every other minute for 14 minutes: inside the on-call's 15 min response time
    for minute in range(0, 14):
        alerts.report(settings, state, health_down(ok=minute % 2 == 1), source="monitor", now=at(minute))
        alerts.process(settings, state, now=at(minute + 0.5))
    time.sleep(0.3)
    assert len(receiver.received) == 1
    alert = alerts.get_alert(state, 1)
    assert alert.flaps == 6 and alert.occurrences == 7 and len(alerts.list_alerts(state, include_closed=True)) == 1
    alerts.report(settings, state, health_down(), source="monitor", now=at(14))
    alerts.process(settings, state, now=at(15))  # the escalation clock, not the flaps, sends the next message
    assert len(receiver.wait_for(3)) == 3


def test_failed_job_raises_by_error_code_and_the_next_good_run_resolves_it(setup, receiver):
    settings, state, _ = setup('[alerts]\nflap_window = "0s"\n')
    record = ledger.start_run(state, "ping_database", "scheduled")
    error = ConnectionFailed("cannot connect to 127.0.0.1:9/none: connection refused", db_code="DB001",
                             hint="check that the database is running")
    record = ledger.finish_run(state, record, "failed", error_code=error.codes, message=error.message)
    alerts.on_run_finished(settings, state, record, None, error)
    [alert] = alerts.list_alerts(state)
    assert (alert.category, alert.severity, alert.code, alert.dedup_key) == ("service_down", "P1", "J001",
                                                                             "job:ping_database")
    got = receiver.wait_for(1)
    assert got[0]["title"].startswith("[P1][L1] Service down: ping_database failed: cannot connect")
    assert "check that the database is running" in got[0]["message"]
    from jobs.base import JobResult

    good = ledger.finish_run(state, ledger.start_run(state, "ping_database", "scheduled"), "ok")
    alerts.on_run_finished(settings, state, good, JobResult(findings=[Finding(
        key="db:slow", ok=False, title="slow", category="performance", code="J006", severity="P2")]), None)
    assert alerts.get_alert(state, alert.id).status == "resolved"
    assert [alert.dedup_key for alert in alerts.list_alerts(state)] == ["db:slow"]
    got = receiver.wait_for(3)
    assert any("RESOLVED" in item["title"] for item in got)


def test_repeatedly_skipped_runs_raise_an_alert(setup):
    settings, state, _ = setup()
    for _ in range(3):
        record = ledger.start_run(state, "ping_database", "scheduled", status="skipped",
                                  message="ping_database is already running on host x")
        alerts.on_run_finished(settings, state, record, None, None)
    [alert] = alerts.list_alerts(state)
    assert alert.dedup_key == "job:ping_database:not-running" and "skipped 3 times" in alert.title


def test_message_length_is_bounded(setup, receiver):
    settings, state, _ = setup('[alerts]\nmessage_max_chars = 1500\n')
    alerts.report(settings, state, health_down(logs=["ERROR " + "x" * 500] * 50, symptoms=["y" * 1000] * 30),
                  source="monitor", now=at(0))
    body = receiver.wait_for(1)[0]["message"]
    assert len(body) <= 1500 and "cut to alerts.message_max_chars" in body
