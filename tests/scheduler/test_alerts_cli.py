"""`jackpot-maint alerts ...` as an operator uses it: a real subprocess over a real state store."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import config.settings  # noqa: F401 - loads the job registry before jobs.base
from jobs.base import Finding
from scheduler import alerts
from scheduler.state import StateStore

sys.path.insert(0, str(Path(__file__).parent))
from helpers_alerts import TOKEN, Receiver, load, notifier_toml, write_config  # noqa: E402


@pytest.fixture
def receiver():
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture
def firing(tmp_path, receiver):
    """A config with notifiers on the receiver and one firing alert (#1); returns the config path."""
    path = write_config(tmp_path / "config.toml", f"sqlite:///{tmp_path / 'state.db'}",
                        notifier_toml(receiver, ["oncall", "team-lead"]))
    settings = load(path)
    state = StateStore.open(settings)
    try:
        alerts.report(settings, state, Finding(
            key="monitor:health", ok=False, title="health endpoint not responding", category="service_down",
            severity="P1", code="J001", scope="host", symptoms=["connection refused"],
            details={"snapshot": {"connections": "97 of 100 in use", "blocking_chain": ["pid 12 blocks pid 40"]},
                     "hint": "check the process: systemctl status jackpot-service"}),
            source="monitor")
    finally:
        state.dispose()
    receiver.wait_for(1)
    return path


def test_list_show_ack_resolve(firing, cli, receiver):
    config = ["--config", str(firing)]
    listed = cli("alerts", "list", *config)
    assert listed.returncode == 1  # something is firing
    assert "firing" in listed.stdout and "P1" in listed.stdout and "health endpoint not responding" in listed.stdout

    shown = cli("alerts", "show", "1", *config)
    assert shown.returncode == 0
    assert "[P1][L1] Service down: health endpoint not responding (J001)" in shown.stdout
    assert "DATABASE SNAPSHOT" in shown.stdout and "pid 12 blocks pid 40" in shown.stdout
    assert "NEXT STEP (the guide's resolution):\n- check the process: systemctl status jackpot-service" in shown.stdout
    assert "NOTIFICATIONS" in shown.stdout and "sent" in shown.stdout

    acked = cli("alerts", "ack", "1", "--by", "erin", *config)
    assert acked.returncode == 0 and "acknowledged by erin" in acked.stdout
    data = json.loads(cli("alerts", "list", "--json", *config).stdout)
    assert data[0]["status"] == "acknowledged" and data[0]["acknowledged_by"] == "erin"

    resolved = cli("alerts", "resolve", "1", "--by", "erin", *config)
    assert resolved.returncode == 0 and "resolved notice to oncall: sent" in resolved.stdout
    assert any("RESOLVED" in item["title"] for item in receiver.wait_for(2))

    missing = cli("alerts", "show", "99", *config)
    assert missing.returncode == 2 and "no alert #99" in missing.stderr
    for result in (listed, shown, acked, resolved):
        assert TOKEN not in result.stdout + result.stderr


def test_silence_list_and_remove(firing, cli):
    config = ["--config", str(firing)]
    created = cli("alerts", "silence", "monitor:*", "--for", "2h", "--reason", "deploy", "--json", *config)
    assert created.returncode == 0
    silence = json.loads(created.stdout)
    assert silence["match"] == "monitor:*" and silence["reason"] == "deploy"
    listed = cli("alerts", "silences", *config)
    assert "monitor:*" in listed.stdout and "deploy" in listed.stdout
    assert "firing (silenced)" in cli("alerts", "list", *config).stdout  # still recorded and shown
    removed = cli("alerts", "unsilence", str(silence["id"]), *config)
    assert removed.returncode == 0 and f"silence #{silence['id']} ended" in removed.stdout
    bad = cli("alerts", "silence", "x", "--for", "soon", *config)
    assert bad.returncode == 2 and "--for 'soon'" in bad.stderr


def test_alerts_help_explains_escalation(capsys):
    from scheduler.cli import build_parser

    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["alerts", "--help"])
    out = capsys.readouterr().out
    assert exited.value.code == 0 and "acknowledged within" in out
    for action in ("list", "show", "ack", "resolve", "silence", "silences", "unsilence", "test"):
        assert action in out
