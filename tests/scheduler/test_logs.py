"""Secrets never reach a log line: passwords and notifier tokens, at DEBUG, through failures."""

from __future__ import annotations

import json

from scheduler.pgcluster import free_port

PASSWORD = "Pa55-known-to-the-test-81f2"
TOKEN = "T0KEN-abcdef0123456789"


def _leaky_config(tmp_path, port: int) -> str:
    config = tmp_path / "config.toml"
    config.write_text(f"""
[database]
url = "postgresql://maint:{PASSWORD}@127.0.0.1:{port}/jackpot_db"
connect_timeout = "1s"

[state]
url = "sqlite:///{tmp_path}/state.db"

[notifiers.oncall]
urls = ["json://127.0.0.1:{port}/hooks/{TOKEN}", "slack://{TOKEN}/B0000000/XXXXXXXXXXXX"]
""")
    return str(config)


def test_debug_logs_of_a_failing_connection_never_show_the_password_or_a_notifier_token(cli, tmp_path):
    config = _leaky_config(tmp_path, free_port())
    for log_format in ("human", "json"):
        result = cli("--config", config, "--log-level", "DEBUG", "--log-format", log_format, "jobs", "run", "ping_database")
        output = result.stdout + result.stderr
        assert result.returncode == 3, output
        assert "J001" in output
        assert PASSWORD not in output
        assert TOKEN not in output


def test_config_show_never_prints_the_password_or_a_notifier_token(cli, tmp_path):
    config = _leaky_config(tmp_path, free_port())
    for extra in ([], ["--json"], ["--sources"]):
        result = cli("--config", config, "config", "show", *extra)
        assert result.returncode == 0, result.stderr
        assert PASSWORD not in result.stdout + result.stderr
        assert TOKEN not in result.stdout + result.stderr


def test_json_log_format_writes_one_json_object_per_line(cli, tmp_path):
    config = _leaky_config(tmp_path, free_port())
    result = cli("--config", config, "--log-format", "json", "jobs", "run", "ping_database")
    lines = [line for line in result.stderr.splitlines() if line.startswith("{")]
    assert lines, result.stderr
    records = [json.loads(line) for line in lines]
    assert any(record.get("job") == "ping_database" and record["level"] == "ERROR" for record in records)


def test_redact_masks_registered_secrets_and_any_url_password():
    from scheduler.redact import redact, register_url_secrets

    register_url_secrets(f"json://host/hooks/{TOKEN}")
    text = redact(f"posting to json://host/hooks/{TOKEN} and postgresql://u:other-pass@db/x password=abc123")
    assert TOKEN not in text and "other-pass" not in text and "abc123" not in text
