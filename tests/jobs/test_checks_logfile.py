"""The incremental log reader across appends, partial lines, rotation and truncation, and the
log.errors check remembering its place in the state store between cycles."""

from __future__ import annotations

import os

from config.loader import load_settings
from jobs.checks import CheckContext
from jobs.checks.logfile import LogFollower, check_log
from scheduler.state import StateStore


def append(path, *lines: str) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        for line in lines:
            handle.write(line + "\n")


def test_reader_starts_at_the_end_then_counts_only_new_error_lines(tmp_path):
    log = tmp_path / "application.log"
    append(log, "old ERROR that is not news", "INFO fine")
    follower = LogFollower(str(log))
    first = follower.read(None)
    assert (first.matches, first.events) == (0, ["started"])
    append(log, "2026 INFO ok", "2026 ERROR Database query failed", "2026 WARN slow", "2026 ERROR again")
    second = follower.read(first.position)
    assert (second.lines, second.matches) == (4, 2)
    assert second.last_matches == ["2026 ERROR Database query failed", "2026 ERROR again"]
    assert follower.read(second.position).matches == 0


def test_a_partial_last_line_is_read_once_it_is_complete(tmp_path):
    log = tmp_path / "application.log"
    log.write_text("")
    follower = LogFollower(str(log))
    position = follower.read(None).position
    with open(log, "a") as handle:
        handle.write("2026 ERROR half a li")
    read = follower.read(position)
    assert read.matches == 0 and read.position.offset == 0
    append(log, "ne")
    read = follower.read(read.position)
    assert read.matches == 1 and read.last_matches == ["2026 ERROR half a line"]


def test_rotation_reads_the_rest_of_the_old_file_then_the_new_one(tmp_path):
    log = tmp_path / "application.log"
    append(log, "INFO start")
    follower = LogFollower(str(log))
    position = follower.read(None).position
    append(log, "ERROR before rotation 1", "ERROR before rotation 2")
    os.rename(log, tmp_path / "application.log.1")
    append(log, "ERROR after rotation", "INFO fine")
    read = follower.read(position)
    assert read.events == ["rotated"]
    assert read.matches == 3
    assert read.last_matches[-1] == "ERROR after rotation"
    append(log, "ERROR next")
    assert follower.read(read.position).matches == 1


def test_rotation_with_the_old_file_gone_starts_the_new_file_from_its_beginning(tmp_path):
    log = tmp_path / "application.log"
    append(log, "INFO start")
    follower = LogFollower(str(log))
    position = follower.read(None).position
    os.remove(log)
    append(log, "ERROR in the new file")
    read = follower.read(position)
    assert read.events in (["rotated"], ["replaced"]) and read.matches == 1


def test_truncation_in_place_reads_from_the_start_again(tmp_path):
    log = tmp_path / "application.log"
    append(log, "INFO " + "x" * 200, "ERROR one")
    follower = LogFollower(str(log))
    position = follower.read(None).position
    with open(log, "r+") as handle:  # copytruncate
        handle.truncate(0)
    append(log, "ERROR after truncation")
    read = follower.read(position)
    assert (read.events, read.matches) == (["truncated"], 1)


def test_only_the_last_five_error_lines_are_kept_as_evidence(tmp_path):
    log = tmp_path / "application.log"
    log.write_text("")
    follower = LogFollower(str(log))
    position = follower.read(None).position
    append(log, *[f"ERROR number {index}" for index in range(12)])
    read = follower.read(position)
    assert read.matches == 12 and read.last_matches == [f"ERROR number {index}" for index in range(7, 12)]


def test_log_check_remembers_offset_and_inode_in_the_state_store_across_cycles(make_config, tmp_path):
    directory = tmp_path / "svc"
    (directory / "logs").mkdir(parents=True)
    log = directory / "logs" / "application.log"
    append(log, "ERROR stale")
    settings = load_settings(str(make_config(f'[service]\ndirectory = "{directory}"\n')), environ={}).settings
    state = StateStore.open(settings)
    minutes = iter(range(0, 100, 5))

    def cycle():
        from datetime import datetime, timedelta, timezone

        clock = datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(minutes=next(minutes))
        context = CheckContext(settings=settings, options=settings.jobs.monitor, host="h1", state=state,
                               clock=lambda: clock)
        return check_log(context)

    first = cycle()
    assert first.state == "ok" and "now following" in first.message
    append(log, "ERROR Database query failed: timeout", "ERROR Database query failed: timeout")
    second = cycle()
    assert (second.state, second.value, second.details["rate_per_minute"]) == ("warning", 2, 0.4)
    assert second.evidence[-1] == "ERROR Database query failed: timeout"
    os.rename(log, str(log) + ".1")
    append(log, "ERROR after rotation")
    third = cycle()
    assert third.value == 1 and "rotated" in third.message
    assert cycle().state == "ok"  # nothing new: the check comes back
    diagnose = CheckContext(settings=settings, options=settings.jobs.monitor, host="h1", state=state, persist=False)
    looked = check_log(diagnose)
    assert looked.value == 1 and "last 1 lines" in looked.message  # diagnose: the tail, nothing remembered
    assert cycle().value == 0
    state.dispose()


def test_missing_log_file_is_unknown(make_config, tmp_path):
    settings = load_settings(str(make_config(f'[service]\ndirectory = "{tmp_path}"\n')), environ={}).settings
    result = check_log(CheckContext(settings=settings, options=settings.jobs.monitor, host="h1"))
    assert result.state == "unknown" and "does not exist" in result.message
