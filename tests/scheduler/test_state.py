"""The state store: private file, versioned schema that upgrades in place, retention."""

from __future__ import annotations

import os
import stat
from datetime import timedelta

import sqlalchemy

from scheduler import ledger
from scheduler.state import StateStore, register_component, utcnow


def test_sqlite_state_file_is_private(tmp_path):
    store = StateStore(f"sqlite:///{tmp_path}/sub/state.db")
    store.upgrade()
    ledger.start_run(store, "ping_database", "manual")
    mode = stat.S_IMODE(os.stat(tmp_path / "sub" / "state.db").st_mode)
    assert mode == 0o600
    store.dispose()


def test_schema_upgrades_in_place_and_keeps_data(tmp_path):
    url = f"sqlite:///{tmp_path}/state.db"
    store = StateStore(url)
    store.upgrade()
    record = ledger.start_run(store, "ping_database", "manual")
    store.dispose()

    added = sqlalchemy.Table("test_extra", sqlalchemy.MetaData(), sqlalchemy.Column("x", sqlalchemy.Integer))
    register_component("test_component", [lambda connection: added.create(connection, checkfirst=True),
                                          lambda connection: connection.exec_driver_sql("ALTER TABLE test_extra ADD COLUMN y INTEGER")])
    try:
        again = StateStore(url)
        again.upgrade()
        again.upgrade()  # idempotent
        assert again.schema_version("test_component") == 2
        assert again.schema_version("ledger") >= 1
        assert ledger.get_run(again, record.id).job == "ping_database"
        again.dispose()
    finally:
        from scheduler import state as state_module

        state_module._components.pop("test_component", None)


def test_state_store_on_postgresql(pg, database_url):
    store = StateStore(database_url.replace("postgresql://", "postgresql+psycopg://"))
    store.upgrade()
    record = ledger.start_run(store, "ping_database", "manual")
    ledger.finish_run(store, record, "ok", summary={"n": 1})
    assert ledger.list_runs(store)[0].summary == {"n": 1}
    assert ledger.list_runs(store)[0].started_at.tzinfo is not None
    store.set_value("ns", "k", {"a": 1})
    assert store.get_value("ns", "k") == {"a": 1}
    store.dispose()


def test_retention_prunes_old_finished_runs_only(tmp_path):
    store = StateStore(f"sqlite:///{tmp_path}/state.db")
    store.upgrade()
    old = ledger.start_run(store, "ping_database", "manual")
    ledger.finish_run(store, old, "ok")
    fresh = ledger.start_run(store, "ping_database", "manual")
    with store.begin() as connection:
        connection.execute(ledger.runs.update().where(ledger.runs.c.id == old.id)
                           .values(started_at=utcnow() - timedelta(days=100)))
    assert ledger.prune(store, 90) == 1
    assert [run.id for run in ledger.list_runs(store)] == [fresh.id]
    store.dispose()
