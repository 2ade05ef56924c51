"""Shared fixtures: a real throwaway PostgreSQL for the whole session, a fresh database per test,
the service's table with generated data, and the CLI as a real subprocess."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scheduler.pgcluster import PostgresCluster  # noqa: E402
from scheduler import sample_data  # noqa: E402

_counter = itertools.count()


class ExternalCluster:
    """JACKPOT_TEST_DATABASE_URL: an existing server (its role must be able to CREATE DATABASE)."""

    def __init__(self, url: str):
        from sqlalchemy.engine import make_url

        self._url = make_url(url)
        self.password = self._url.password or ""
        self.port = self._url.port or 5432

    def url(self, database: str = "postgres", user: str | None = None, password: str | None = None) -> str:
        url = self._url.set(database=database)
        if user is not None:
            url = url.set(username=user, password=password if password is not None else url.password)
        return url.render_as_string(hide_password=False)

    def execute(self, sql: str, database: str = "postgres", autocommit: bool = True) -> list[tuple]:
        import psycopg

        with psycopg.connect(self.url(database), autocommit=autocommit) as connection:
            cursor = connection.execute(sql)
            return cursor.fetchall() if cursor.description else []

    def create_database(self, name: str) -> str:
        self.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@pytest.fixture(scope="session")
def pg():
    """The session's PostgreSQL server (started here unless JACKPOT_TEST_DATABASE_URL is set)."""
    external = os.environ.get("JACKPOT_TEST_DATABASE_URL")
    if external:
        yield ExternalCluster(external)
        return
    cluster = PostgresCluster()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def database_url(pg) -> str:
    """A fresh, empty database for this test; returns its URL (superuser, with password)."""
    name = f"t_{os.getpid()}_{next(_counter)}_{uuid.uuid4().hex[:6]}"
    url = pg.create_database(name)
    yield url
    try:
        pg.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except Exception:  # noqa: BLE001 - a stopped server in a test that stops it
        pass


@pytest.fixture
def jackpots(database_url):
    """The service's table in the fresh database, with 100 healthy rows; returns a helper."""
    sample_data.create_table(database_url)
    sample_data.insert_rows(database_url, rows=100)
    return TableHelper(database_url, "jackpots")


class TableHelper:
    def __init__(self, url: str, table: str):
        self.url = url
        self.table = table

    def query(self, sql: str, params: Any = None) -> list[tuple]:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as connection:
            cursor = connection.execute(sql, params)
            return cursor.fetchall() if cursor.description else []

    def scalar(self, sql: str, params: Any = None) -> Any:
        rows = self.query(sql, params)
        return rows[0][0] if rows else None


@pytest.fixture
def state_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'state.db'}"


@pytest.fixture
def make_config(tmp_path, database_url, state_url):
    """Write a TOML config for this test's database and state store; returns its path."""
    def write(extra: str = "", *, database: str | None = None, name: str = "config.toml") -> Path:
        path = tmp_path / name
        path.write_text(
            f'[database]\nurl = "{database or database_url}"\n\n[state]\nurl = "{state_url}"\n\n{extra}\n')
        return path
    return write


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a CLI subprocess: no JACKPOT_* from outside, plus `extra`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("JACKPOT_")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


@pytest.fixture
def cli(tmp_path):
    """Run `jackpot-maint ARGS` as a real subprocess; returns CompletedProcess (text)."""
    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 120, input: str | None = None):
        return subprocess.run([sys.executable, "-m", "scheduler", *args], capture_output=True, text=True,
                              env=clean_env(**(env or {})), timeout=timeout, cwd=str(tmp_path), input=input)
    return run
