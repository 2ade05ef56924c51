"""`jackpot-maint config validate|show` as an operator runs them."""

from __future__ import annotations

import json


def test_validate_reports_every_problem_with_its_key_and_source_and_exits_2(cli, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('[database]\nurl = "postgresql://u:hunter2-secret@[bad:5432/x"\ntabel = "jackpots"\n')
    result = cli("config", "validate", "--config", str(config),
                 env={"JACKPOT_DB_PORT": "abc", "JACKPOT_DATABASE_URL": ""})
    assert result.returncode == 2
    output = result.stderr
    assert "4 problem(s)" in output
    assert f"At 'database.tabel' (from file {config}): unknown key; did you mean 'table'?" in output
    assert "At 'database.port' (from environment variable JACKPOT_DB_PORT)" in output and "'abc'" in output
    assert "At 'database.url' (from environment variable JACKPOT_DATABASE_URL): empty value" in output
    assert f"At 'database.url' (from file {config}): cannot parse" in output
    assert "hunter2-secret" not in result.stdout + result.stderr
    assert "Traceback" not in output


def test_validate_json_lists_problems_for_scripts(cli, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text("[state]\nretention_days = -1\n")
    result = cli("config", "validate", "--json", "--config", str(config))
    assert result.returncode == 2
    payload = json.loads(result.stdout)
    assert payload["valid"] is False
    assert any("state.retention_days" in problem for problem in payload["problems"])


def test_validate_accepts_a_good_file_and_exits_0(cli, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('[database]\nurl = "postgresql://maint:pw-123456@db.internal:5432/jackpot_db"\ntable = "games.jackpots"\n')
    result = cli("config", "validate", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "configuration is valid" in result.stdout


def test_a_missing_config_file_named_explicitly_is_an_error(cli, tmp_path):
    result = cli("config", "validate", "--config", str(tmp_path / "nope.toml"))
    assert result.returncode == 2
    assert "nope.toml" in result.stderr and "does not exist" in result.stderr


def test_broken_toml_names_the_file_and_line(cli, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text("[database\nurl = 1\n")
    result = cli("config", "validate", "--config", str(config))
    assert result.returncode == 2
    assert "not valid TOML" in result.stderr and "line 1" in result.stderr


def test_hostile_table_name_is_rejected_before_any_sql(cli, tmp_path):
    result = cli("config", "validate", env={"JACKPOT_DB_TABLE": "jackpots; DROP TABLE x"})
    assert result.returncode == 2
    assert "At 'database.table' (from environment variable JACKPOT_DB_TABLE)" in result.stderr
    assert "not a valid table name" in result.stderr


def test_show_masks_secrets_and_sources_say_where_each_value_came_from(cli, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('[database]\ntable = "games.jackpots"\n[logging]\nlevel = "info"\n')
    result = cli("config", "show", "--sources", "--config", str(config),
                 env={"JACKPOT_DB_PASSWORD": "s3cret-pass-word", "JACKPOT_DB_HOST": "db.internal",
                      "JACKPOT_JOBS__PING_DATABASE__TIMEOUT": "45s"})
    assert result.returncode == 0, result.stderr
    lines = {line.split(" = ")[0]: line for line in result.stdout.splitlines() if " = " in line}
    assert "env JACKPOT_DB_HOST" in lines["database.host"] and '"db.internal"' in lines["database.host"]
    assert f"file {config}" in lines["database.table"]
    assert "# default" in lines["database.port"]
    assert "env JACKPOT_JOBS__PING_DATABASE__TIMEOUT" in lines["jobs.ping_database.timeout"]
    assert "45.0" in lines["jobs.ping_database.timeout"]
    assert '"***"' in lines["database.password"]
    assert "s3cret-pass-word" not in result.stdout + result.stderr


def test_show_json_masks_the_url_password(cli):
    result = cli("config", "show", "--json", "--sources",
                 env={"JACKPOT_DATABASE_URL": "postgresql://maint:pw-abcdef123@db:5432/jackpot_db"})
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["settings"]["database"]["url"] == "postgresql://maint:***@db:5432/jackpot_db"
    assert payload["sources"]["database.url"] == "env JACKPOT_DATABASE_URL"
    assert "pw-abcdef123" not in result.stdout


def test_flags_override_environment_which_overrides_the_file(cli, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('[database]\nhost = "from-file"\nname = "from-file"\nuser = "from-file"\n')
    result = cli("config", "show", "--json", "--sources", "--config", str(config),
                 "--set", "database.name=from-flag", env={"JACKPOT_DB_NAME": "from-env", "JACKPOT_DB_USER": "from-env"})
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    database = payload["settings"]["database"]
    assert (database["host"], database["user"], database["name"]) == ("from-file", "from-env", "from-flag")
    assert payload["sources"]["database.name"] == "flag --set database.name"


def test_jackpot_config_environment_variable_names_the_file(cli, tmp_path):
    config = tmp_path / "elsewhere.toml"
    config.write_text('[database]\nhost = "via-env-file"\n')
    result = cli("config", "show", "--json", env={"JACKPOT_CONFIG": str(config)})
    assert json.loads(result.stdout)["settings"]["database"]["host"] == "via-env-file"


def test_unknown_nested_environment_key_is_an_error_but_the_services_own_variables_are_not(cli):
    result = cli("config", "validate", env={"JACKPOT_DATABASE__TABEL": "x", "JACKPOT_CACHE_TTL": "300"})
    assert result.returncode == 2
    assert "At 'database.tabel' (from environment variable JACKPOT_DATABASE__TABEL): unknown key" in result.stderr
    assert "JACKPOT_CACHE_TTL" in result.stderr  # a note, not an error
    assert "problem(s)" in result.stderr and "1 problem(s)" in result.stderr


def test_example_config_lists_every_key_and_is_valid(cli, tmp_path):
    from pathlib import Path

    from config.reference import example_toml, setting_rows

    example = Path(__file__).resolve().parents[2] / "config" / "example.toml"
    assert example.read_text() == example_toml(), "config/example.toml is stale: run `jackpot-maint config example > config/example.toml`"
    text = example.read_text()
    for row in setting_rows():
        assert row.key.rpartition(".")[2] in text
    copy = tmp_path / "example.toml"
    copy.write_text(text)
    result = cli("config", "validate", "--config", str(copy))
    assert result.returncode == 0, result.stderr


def test_readme_configuration_reference_is_in_sync_with_the_settings_model():
    from pathlib import Path

    from config.reference import markdown_reference

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert markdown_reference() in readme, "README's configuration reference is stale: run `jackpot-maint config reference`"
