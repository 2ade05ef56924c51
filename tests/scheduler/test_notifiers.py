"""Notifiers: apprise (privacy form, no token in logs at DEBUG), file, command, entry-point plugins."""

from __future__ import annotations

import io
import json
import sys
import textwrap
import time
from pathlib import Path

import pytest

import config.settings  # noqa: F401 - loads the job registry before jobs.base
from jobs.base import Finding
from scheduler import alerts
from scheduler.state import StateStore

sys.path.insert(0, str(Path(__file__).parent))
from helpers_alerts import TOKEN, Receiver, at, load, notifier_toml, settled_notifications, write_config  # noqa: E402


@pytest.fixture
def receiver():
    server = Receiver().start()
    yield server
    server.stop()


def problem(**overrides) -> Finding:
    values = dict(key="db:slow", ok=False, title="queries slower than 5 min", category="service_down",
                  severity="P1", code="J006", scope="database", symptoms=["3 queries over 5 min"])
    values.update(overrides)
    return Finding(**values)


def open_settings(tmp_path: Path, extra: str):
    path = write_config(tmp_path / "config.toml", f"sqlite:///{tmp_path / 'state.db'}", extra)
    settings = load(path)
    return settings, StateStore.open(settings), path


def test_file_notifier_appends_one_json_object_per_notification(tmp_path):
    audit = tmp_path / "audit" / "alerts.jsonl"
    settings, state, _ = open_settings(tmp_path, f'[notifiers.oncall]\ntype = "file"\npath = "{audit}"\n')
    try:
        alerts.report(settings, state, problem(), source="monitor", now=at(0))
        alerts.resolve(settings, state, 1, by="dave", now=at(5))
    finally:
        state.dispose()
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [line["alert"]["event"] for line in lines] == ["level:1", "resolved"]
    assert lines[0]["title"].startswith("[P1][L1] Service down: queries slower than 5 min (J006)")
    assert lines[0]["alert"]["symptoms"] == ["3 queries over 5 min"] and lines[1]["kind"] == "success"
    assert oct(audit.stat().st_mode & 0o777) == "0o600"


def test_command_notifier_gets_the_alert_as_json_on_stdin(tmp_path):
    out = tmp_path / "stdin.json"
    script = f"import sys, os; open({str(out)!r}, 'w').write(sys.stdin.read() + os.environ['JACKPOT_ALERT_TITLE'])"
    settings, state, _ = open_settings(tmp_path, f'[notifiers.oncall]\ntype = "command"\n'
                                                 f'command = {json.dumps([sys.executable, "-c", script])}\n')
    try:
        alerts.report(settings, state, problem(), source="monitor", now=at(0))
    finally:
        state.dispose()
    text = out.read_text()
    payload = json.loads(text[:text.rindex("}") + 1])
    assert payload["alert"]["key"] == "db:slow" and payload["alert"]["level"] == 1
    assert text.endswith(payload["title"])


def test_command_notifier_failure_and_timeout_are_failed_sends_retried_later(tmp_path):
    settings, state, _ = open_settings(tmp_path, f'[alerts]\nsend_timeout = "500ms"\n\n'
                                                 f'[notifiers.oncall]\ntype = "command"\ncommand = ["sleep", "10"]\n\n'
                                                 f'[notifiers.team-lead]\ntype = "command"\n'
                                                 f'command = {json.dumps([sys.executable, "-c", "import sys; sys.exit(3)"])}\n'
                                                 '[alerts.start_level]\nJ006 = 2\n')
    try:
        started = time.monotonic()
        alerts.report(settings, state, problem(), source="monitor", now=at(0))
        assert time.monotonic() - started < 3
        rows = settled_notifications(state, 1)
    finally:
        state.dispose()
    assert rows["oncall"]["status"] == "pending" and "did not finish within 0.5s" in rows["oncall"]["error"]
    assert rows["team-lead"]["status"] == "pending" and "exited with 3" in rows["team-lead"]["error"]


def test_apprise_at_debug_level_never_logs_the_token(tmp_path, receiver):
    from scheduler.logs import setup_logging

    captured = io.StringIO()
    setup_logging("DEBUG", "human", stream=captured)
    settings, state, _ = open_settings(tmp_path, notifier_toml(receiver, ["oncall"]) +
                                       f'\n[notifiers.team-lead]\nurls = ["json://127.0.0.1:9/down/{TOKEN}"]\n'
                                       '[alerts.start_level]\nJ006 = 2\n')
    try:
        alerts.report(settings, state, problem(), source="monitor", now=at(0))
        alerts.process(settings, state, now=at(1))
    finally:
        state.dispose()
        setup_logging("INFO")
    log = captured.getvalue()
    assert receiver.wait_for(1) and "sent to json://127.0.0.1" in log and "failed" in log  # it did log, at DEBUG
    assert TOKEN not in log
    assert "/oncall/***" in log


def test_entry_point_plugin_is_found_and_an_unknown_type_lists_the_known_ones(tmp_path, monkeypatch):
    plugins = tmp_path / "plugins"
    (plugins / "pager_plugin-1.0.dist-info").mkdir(parents=True)
    (plugins / "pager_plugin-1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: pager-plugin\nVersion: 1.0\n")
    (plugins / "pager_plugin-1.0.dist-info" / "entry_points.txt").write_text(
        "[jackpot_maint.notifiers]\npager = pager_plugin:create\n")
    (plugins / "pager_plugin.py").write_text(textwrap.dedent("""
        from scheduler.notifiers import Target

        class Pager(Target):
            def __init__(self, name, path):
                super().__init__(name, "pager " + name)
                self.path = path

            def send(self, message, timeout):
                with open(self.path, "a") as handle:
                    handle.write(message.title + "\\n")

        def create(name, settings):
            return [Pager(name, settings.options["path"])]
    """))
    paged = tmp_path / "paged.txt"
    config = write_config(tmp_path / "config.toml", f"sqlite:///{tmp_path / 'state.db'}",
                          f'[notifiers.oncall]\ntype = "pager"\noptions = {{ path = "{paged}" }}\n')
    monkeypatch.syspath_prepend(str(plugins))  # as if pip-installed: importlib.metadata finds the dist-info
    [result], problems = alerts.send_test(load(config))
    assert problems == [] and result.ok and (result.target, result.display) == ("oncall", "pager oncall")
    assert paged.read_text().startswith("[TEST] jackpot-maint")

    from scheduler.errors import ConfigError

    config.write_text(config.read_text().replace('type = "pager"', 'type = "pagr"'))
    with pytest.raises(ConfigError) as invalid:
        load(config)
    assert "unknown notifier type 'pagr'; available: apprise, file, command, pager" in " ".join(invalid.value.problems)


def test_alerts_test_prints_each_target_in_privacy_form_and_its_result(tmp_path, cli, receiver):
    config = write_config(tmp_path / "config.toml", f"sqlite:///{tmp_path / 'state.db'}",
                          notifier_toml(receiver, ["oncall", "team-lead"]) +
                          f'\n[notifiers.external]\nurls = ["json://127.0.0.1:9/down/{TOKEN}", "{receiver.url("ext2")}"]\n')
    result = cli("alerts", "test", "--config", str(config), "--log-level", "DEBUG")
    assert result.returncode == 1  # one target is down
    lines = result.stdout.splitlines()
    assert any(line.startswith("ok   oncall: json://127.0.0.1:") and "/oncall/***" in line and "level 1" in line
               for line in lines)
    assert any(line.startswith("FAIL external#1: json://127.0.0.1:9/down/***") for line in lines)
    assert any(line.startswith("ok   external#2") for line in lines)
    assert TOKEN not in result.stdout + result.stderr
    assert len(receiver.wait_for(3)) == 3

    result = cli("alerts", "test", "--config", str(config), "--contact", "team-lead", "--json")
    assert result.returncode == 0
    [only] = json.loads(result.stdout)["results"]
    assert only["target"] == "team-lead" and only["ok"] and TOKEN not in result.stdout


def test_an_apprise_url_apprise_cannot_use_is_named_without_its_secret(tmp_path):
    config = write_config(tmp_path / "config.toml", f"sqlite:///{tmp_path / 'state.db'}",
                          f'[notifiers.oncall]\nurls = ["nosuchservice://{TOKEN}@x"]\n')
    results, [problem] = alerts.send_test(load(config))
    assert results == []
    assert "notifiers.oncall" in problem and "nosuchservice://" in problem and TOKEN not in problem
