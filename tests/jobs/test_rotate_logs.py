"""rotate_logs on real files with real writer processes: no line lost with create + reopen signal,
copytruncate's loss measured, naming, retention, compression, owner/mode, free space, dry run."""

from __future__ import annotations

import gzip
import os
import stat
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import config  # noqa: F401 - loads the settings model (and the job registry) in the right order
from config.loader import load_settings
from jobs import rotate_logs
from jobs.base import JobContext
from jobs.logrotate import space
from scheduler.state import StateStore

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers_logwriter import count_lines, format_line, start_writer, write_numbered_lines  # noqa: E402

LINE_SIZE = len(format_line(1))


class Job:
    """Runs rotate_logs in this process against a real state store, with a clock the test sets."""

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.logs = tmp_path / "svc" / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        config_path = tmp_path / "config.toml"
        config_path.write_text(f'[state]\nurl = "sqlite:///{tmp_path / "state.db"}"\n\n[scheduler]\ntimezone = "UTC"\n')
        self.settings = load_settings(str(config_path), environ={}).settings
        self.state = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
        self.state.upgrade()
        self.now = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)
        self.reports: list[str] = []

    def run(self, *, dry_run: bool = False, **options):
        defaults = {"directory": str(self.tmp_path / "svc"), "files": ["logs/application.log"],
                    "max_size": None, "every": "daily", "free_space_margin": 0, "reopen_timeout": 5}
        defaults.update(options)
        context = JobContext(settings=self.settings, options=rotate_logs.Options(**defaults), run_id="test",
                             job="rotate_logs", dry_run=dry_run, state=self.state, clock=lambda: self.now,
                             progress=self.reports.append)
        return rotate_logs.run(context)

    def names(self, folder: Path | None = None) -> list[str]:
        return sorted(path.name for path in (folder or self.logs).iterdir())


@pytest.fixture
def job(tmp_path):
    helper = Job(tmp_path)
    yield helper
    helper.state.dispose()


def assert_every_line_once(log: Path, last: int, folders: list[Path] | None = None) -> None:
    counted = count_lines(log, folders)
    missing = counted.missing(last)
    assert not missing, f"{len(missing)} lines lost, first {missing[:10]} (files {counted.files})"
    assert not counted.duplicated(), f"duplicated lines: {counted.duplicated()[:10]}"
    assert counted.torn == 0


# ---- no line lost --------------------------------------------------------------------------------


def test_create_with_a_reopen_signal_loses_no_line_while_a_writer_appends(job):
    log = job.logs / "application.log"
    writer = start_writer(log, rate=2000, reopen_delay=0.1)
    try:
        for _ in range(4):
            writer.wait_for_lines(200)
            result = job.run(max_size="8k", reopen_pid=writer.pid, reopen_signal="HUP")
            assert result.status == "ok", result.message
            assert result.summary["rotated"] == 1
    finally:
        written = writer.stop()
    assert written["reopens"] == 4
    names = job.names()
    assert "application.log.1.gz" in names and "application.log.4.gz" in names, names
    assert not any(name.endswith((".jackpot-tmp", ".jackpot-copy")) for name in names)
    assert_every_line_once(log, written["last"])


def test_create_with_a_reopen_command_and_delay_compress_loses_no_line(job, tmp_path):
    log = job.logs / "application.log"
    pid_file = tmp_path / "writer.pid"
    writer = start_writer(log, rate=2000, pid_file=pid_file, reopen_delay=0.1)
    try:
        for _ in range(3):
            writer.wait_for_lines(150)
            # the guide's `pm2 reloadLogs` is a command; here it is kill, sending the writer USR1
            result = job.run(max_size="4k", delay_compress=True,
                             reopen_command=f"kill -USR1 {pid_file.read_text().strip()}")
            assert result.status == "ok", result.message
        writer.wait_for_lines(1)  # delay_compress does not wait: see the last reopen happen
    finally:
        written = writer.stop()
    assert written["reopens"] == 3
    assert {"application.log.1", "application.log.2.gz", "application.log.3.gz"} <= set(job.names())
    assert_every_line_once(log, written["last"])


def test_a_writer_that_was_not_told_to_reopen_keeps_its_rotated_file_uncompressed_and_loses_nothing(job, tmp_path):
    log = job.logs / "application.log"
    pid_file = tmp_path / "writer.pid"
    writer = start_writer(log, rate=2000, pid_file=pid_file)
    try:
        writer.wait_for_lines(100)
        # a stale pid file: the signal cannot be sent, the writer keeps appending to application.log.1
        failed = job.run(max_size="1k", reopen_pid_file=str(tmp_path / "gone.pid"))
        assert failed.status == "problems" and "cannot read the writer's pid file" in failed.message
        held = job.logs / "application.log.1"
        assert "still in use (open by pid" in failed.summary["skipped_reasons"][str(held)]
        size = held.stat().st_size
        deadline = time.monotonic() + 5
        while held.stat().st_size == size and time.monotonic() < deadline:
            time.sleep(0.01)
        assert held.stat().st_size > size  # still being written: compressing it now would lose lines
        # the next run (pid file fixed) sends the reopen it still owes, then compresses
        fixed = job.run(max_size="1k", reopen_pid_file=str(pid_file))
        assert fixed.status == "ok", fixed.message
        assert fixed.summary["recovered"] == 1 and fixed.summary["compressed"] == 1
    finally:
        written = writer.stop()
    assert job.names() == ["application.log", "application.log.1.gz"]
    assert_every_line_once(log, written["last"])


def test_copytruncate_under_a_fast_writer_loses_few_lines_and_reports_them(job):
    log = job.logs / "application.log"
    rate = 20000
    writer = start_writer(log, rate=rate)
    rotations = 5
    reported = 0
    try:
        for _ in range(rotations):
            writer.wait_for_lines(2000)
            result = job.run(max_size="64k", method="copytruncate")
            assert result.summary["rotated"] == 1, result.message
            reported += result.summary["copytruncate_lost_bytes_at_least"]
    finally:
        written = writer.stop()
    counted = count_lines(log)
    lost = len(counted.missing(written["last"]))
    print(f"\ncopytruncate at {rate} lines/s: {lost} of {written['last']} lines lost over {rotations} rotations "
          f"({lost / rotations:.1f} per rotation), {counted.torn} torn; the job saw at least {reported} bytes lost")
    assert not counted.duplicated()
    # the window is one copy_file_range of the last few lines plus ftruncate: on a quiet machine a
    # line or two; bounded here by 50 ms of writing per rotation, the job being descheduled in it
    assert lost + counted.torn <= rate * 0.05 * rotations


# ---- kill -9 at each step, then a rerun ------------------------------------------------------------


def _cli_config(tmp_path: Path, options: str) -> Path:
    path = tmp_path / "cli.toml"
    path.write_text(f'[state]\nurl = "sqlite:///{tmp_path / "cli-state.db"}"\n\n'
                    f'[jobs.rotate_logs]\ndirectory = "{tmp_path / "svc"}"\nfiles = ["logs/application.log"]\n'
                    f'every = "hourly"\nfree_space_margin = 0\nreopen_timeout = "5s"\n{options}\n')
    return path


def _run_cli(tmp_path: Path, config_path: Path, *args: str, crash_at: str | None = None):
    env = {key: value for key, value in os.environ.items() if not key.startswith("JACKPOT_")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    env["RUNTIME_DIRECTORY"] = str(tmp_path / "run")
    if crash_at:
        env[rotate_logs.CRASH_ENV] = crash_at
    return subprocess.run([sys.executable, "-m", "scheduler", "--config", str(config_path), "jobs", "run",
                           "rotate_logs", *args], capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path)


def _crash(tmp_path: Path, config_path: Path, step: str) -> int:
    """Run `jackpot-maint jobs run rotate_logs` told to die with SIGKILL at `step`; return its exit
    status (-9 when it died there). One step goes through a fresh interpreter (the real command
    line, end to end); the others run the same CLI entry point in a forked process, which dies just
    the same but skips the second of interpreter start-up, to keep the suite fast."""
    if step == "after_rename":
        completed = _run_cli(tmp_path, config_path, crash_at=step)
        return completed.returncode
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 99
        try:
            os.environ[rotate_logs.CRASH_ENV] = step
            os.environ["RUNTIME_DIRECTORY"] = str(tmp_path / "run")
            quiet = os.open(os.devnull, os.O_WRONLY)
            os.dup2(quiet, 1)
            os.dup2(quiet, 2)
            from scheduler.cli import main

            code = main(["--config", str(config_path), "jobs", "run", "rotate_logs"])
        finally:
            os._exit(code)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        finished, status = os.waitpid(pid, os.WNOHANG)
        if finished:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    # a lock some other thread of pytest held at fork time: do it the slow way instead
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return _run_cli(tmp_path, config_path, crash_at=step).returncode


def _rerun(config_path: Path, monkeypatch) -> dict:
    """The next run, in this process through the real runner (lock, ledger); return its summary."""
    from scheduler.runner import run_job

    monkeypatch.setenv("RUNTIME_DIRECTORY", str(config_path.parent / "run"))
    outcome = run_job(load_settings(str(config_path), environ={}).settings, "rotate_logs")
    assert outcome.exit_code == 0, outcome.record.message
    return outcome.result.summary


@pytest.mark.parametrize("step", ["after_shift", "after_journal", "after_rename", "after_create", "after_signal",
                                  "during_compress", "after_compress_rename"])
def test_kill_9_during_create_rotation_then_a_rerun_loses_no_line(tmp_path, monkeypatch, step):
    logs = tmp_path / "svc" / "logs"
    logs.mkdir(parents=True)
    log = logs / "application.log"
    write_numbered_lines(log, 100)
    (logs / "application.log.1").write_bytes(b"")  # an older rotation, so the shift has work to do
    pid_file = tmp_path / "writer.pid"
    config_path = _cli_config(tmp_path, f'max_size = "1k"\nreopen_pid_file = "{pid_file}"\nkeep = 30')
    writer = start_writer(log, rate=1000, pid_file=pid_file, reopen_delay=0.05)
    try:
        assert _crash(tmp_path, config_path, step) == -9
        time.sleep(0.2)  # the writer keeps writing wherever its descriptor points
        _rerun(config_path, monkeypatch)
    finally:
        written = writer.stop()
    names = sorted(path.name for path in logs.iterdir())
    assert not any(name.endswith((".jackpot-tmp", ".jackpot-copy")) for name in names), names
    assert written["reopens"] >= 1
    # lines 1-100 came before the writer started; the writer's own start again at 1: count only the writer's
    counted = count_lines(log)
    assert all(times in (1, 2) for times in counted.seen.values())
    assert not counted.missing(written["last"]) and counted.torn == 0


@pytest.mark.parametrize("step", ["after_journal", "after_copy", "after_truncate"])
def test_kill_9_during_copytruncate_then_a_rerun_keeps_every_line_once(tmp_path, monkeypatch, step):
    logs = tmp_path / "svc" / "logs"
    logs.mkdir(parents=True)
    log = logs / "application.log"
    write_numbered_lines(log, 3000)
    config_path = _cli_config(tmp_path, 'max_size = "1k"\nmethod = "copytruncate"')
    assert _crash(tmp_path, config_path, step) == -9
    write_numbered_lines(log, 500, start=3001)  # the service keeps logging between the runs
    assert _rerun(config_path, monkeypatch).get("recovered", 0) == (0 if step == "after_journal" else 1)
    names = sorted(path.name for path in logs.iterdir())
    assert not any(name.endswith((".jackpot-tmp", ".jackpot-copy")) for name in names), names
    assert_every_line_once(log, 3500)


# ---- naming, retention, compression ----------------------------------------------------------------


def test_numbered_rotation_shifts_compresses_and_keeps_only_keep_files(job):
    log = job.logs / "application.log"
    for round_number in range(5):
        write_numbered_lines(log, 50, start=round_number * 50 + 1)
        result = job.run(max_size="1k", keep=3)
        assert result.status == "ok", result.message
    assert job.names() == ["application.log", "application.log.1.gz", "application.log.2.gz", "application.log.3.gz"]
    with gzip.open(job.logs / "application.log.1.gz", "rb") as newest:
        assert newest.read().startswith(format_line(201)[:9])
    with gzip.open(job.logs / "application.log.3.gz", "rb") as oldest:
        assert oldest.read().startswith(format_line(101)[:9])
    assert result.summary["deleted"] == 1 and result.summary["bytes_freed"] > 0


def test_max_age_deletes_rotated_files_older_than_that(job):
    log = job.logs / "application.log"
    write_numbered_lines(log, 50)
    job.run(max_size="1k")
    write_numbered_lines(log, 50, start=51)
    job.run(max_size="1k")
    old = job.logs / "application.log.2.gz"
    ten_days_ago = (job.now - timedelta(days=10)).timestamp()
    os.utime(old, (ten_days_ago, ten_days_ago))
    result = job.run(max_age=7)
    assert result.summary["deleted"] == 1
    assert job.names() == ["application.log", "application.log.1.gz"]


def test_dated_names_follow_the_injected_clock_across_a_day_boundary(job):
    log = job.logs / "application.log"
    write_numbered_lines(log, 10)
    job.now = datetime(2026, 11, 28, 23, 30, tzinfo=timezone.utc)
    first = job.run(every="daily", naming="dated")
    assert first.summary["rotated"] == 0 and "first seen" in first.summary["skipped_reasons"][str(log)]
    job.now = datetime(2026, 11, 28, 23, 59, tzinfo=timezone.utc)
    assert job.run(every="daily", naming="dated").summary["rotated"] == 0  # same day: not due
    job.now = datetime(2026, 11, 29, 0, 1, tzinfo=timezone.utc)
    assert job.run(every="daily", naming="dated").summary["rotated"] == 1
    write_numbered_lines(log, 10, start=11)
    job.now = datetime(2026, 11, 29, 13, 0, tzinfo=timezone.utc)
    assert job.run(every="daily", naming="dated").summary["rotated"] == 0  # rotated today already
    assert job.run(every="daily", naming="dated", max_size="100").summary["rotated"] == 1  # too big: -1 suffix
    write_numbered_lines(log, 10, start=21)
    job.now = datetime(2026, 11, 29, 14, 0, tzinfo=timezone.utc)
    assert job.run(every="hourly", naming="dated").summary["rotated"] == 1
    assert job.names() == ["application.log", "application.log-20261129-1.gz", "application.log-20261129-1400.gz",
                           "application.log-20261129.gz"]


def test_delay_compress_leaves_the_newest_rotation_plain_until_the_next(job):
    log = job.logs / "application.log"
    write_numbered_lines(log, 50)
    job.run(max_size="1k", delay_compress=True)
    assert job.names() == ["application.log", "application.log.1"]
    write_numbered_lines(log, 50, start=51)
    result = job.run(max_size="1k", delay_compress=True)
    assert job.names() == ["application.log", "application.log.1", "application.log.2.gz"]
    assert result.summary["compressed"] == 1


def test_olddir_holds_the_rotated_files(job):
    log = job.logs / "application.log"
    write_numbered_lines(log, 50)
    result = job.run(max_size="1k", olddir="old")
    assert result.status == "ok", result.message
    assert job.names(job.logs / "old") == ["application.log.1.gz"]
    assert log.exists() and log.stat().st_size == 0


def test_globs_missing_files_and_empty_files(job):
    write_numbered_lines(job.logs / "application.log", 50)
    (job.logs / "debug.log").write_bytes(b"")
    result = job.run(files=["logs/*.log", "logs/Startup.log"], max_size="1k", missing_ok=False)
    assert result.summary["rotated"] == 1
    reasons = result.summary["skipped_reasons"]
    assert reasons[str(job.logs / "debug.log")] == "empty (not_if_empty)"
    assert reasons[str(job.logs / "Startup.log")] == "missing"
    assert result.status == "problems"  # missing_ok = false
    again = job.run(files=["logs/*.log*"], max_size="1k")  # the glob must not pick up application.log.1.gz
    assert again.summary["files_checked"] == 2 and again.status == "ok"


def test_dry_run_lists_what_would_be_rotated_compressed_and_deleted_and_changes_nothing(job):
    log = job.logs / "application.log"
    for round_number in range(3):
        write_numbered_lines(log, 50, start=round_number * 50 + 1)
        job.run(max_size="1k", keep=2, delay_compress=True)
    write_numbered_lines(log, 50, start=151)
    before = {name: (job.logs / name).stat().st_size for name in job.names()}
    result = job.run(max_size="1k", keep=2, delay_compress=True, dry_run=True)
    after = {name: (job.logs / name).stat().st_size for name in job.names()}
    assert before == after
    plan = "\n".join(result.summary["plan"])
    assert f"would rotate {log}" in plan
    assert f"would compress {job.logs / 'application.log.1'}" in plan
    assert f"would delete {job.logs / 'application.log.2.gz'} (beyond keep=2)" in plan
    assert result.summary["rotated"] == 1 and result.summary["deleted"] == 1


# ---- owner, mode, disk -----------------------------------------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
@pytest.mark.parametrize("method", ["create", "copytruncate"])
def test_rotation_keeps_the_owner_and_mode_of_the_log(job, method):
    log = job.logs / "application.log"
    write_numbered_lines(log, 50)
    os.chown(log, 65534, 65534)
    os.chmod(log, 0o640)
    result = job.run(max_size="1k", method=method)
    assert result.status == "ok", result.message
    for path in (log, job.logs / "application.log.1.gz"):
        status = path.stat()
        assert (status.st_uid, status.st_gid, stat.S_IMODE(status.st_mode)) == (65534, 65534, 0o640), path


def _mount_small_tmpfs(folder: Path, size: str) -> str | None:
    """Mount a size-limited tmpfs on folder; return None, or why it could not be mounted."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        completed = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                                   capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"mount -t tmpfs not available: {error}"
    if completed.returncode != 0:
        return f"mount -t tmpfs -o size={size} not permitted here: {completed.stderr.strip()}"
    return None


def test_too_little_free_space_on_a_small_tmpfs_refuses_to_rotate(tmp_path, monkeypatch):
    small = tmp_path / "svc"
    why_not = _mount_small_tmpfs(small, "2m")
    if why_not:
        pytest.skip(why_not + " (test_too_little_free_space_injected covers this with an injected figure)")
    try:
        helper = Job(tmp_path)
        log = helper.logs / "application.log"
        write_numbered_lines(log, 1_300_000 // LINE_SIZE)  # 1.3 MB of a 2 MB filesystem
        before = log.read_bytes()
        result = helper.run(max_size="1k", method="copytruncate", free_space_margin="64k")
        assert result.status == "problems"
        assert result.summary["rotated"] == 0 and result.summary["skipped"] == 1
        assert "not enough free space for the copy" in result.summary["skipped_reasons"][str(log)]
        [finding] = result.findings
        assert (finding.ok, finding.code, finding.category, finding.scope) == (False, "J007", "infrastructure", "host")
        assert log.read_bytes() == before and helper.names() == ["application.log"]
        # the create method needs room only for the compressed file: 1.3 MB / 2 is still too much
        assert helper.run(max_size="1k", free_space_margin="512k").summary["rotated"] == 0
        # if the check is fooled (another writer fills the disk meanwhile), the copy hits ENOSPC: the
        # partial copy is removed and the log keeps every byte
        monkeypatch.setattr(space, "free_bytes", lambda path: 1 << 40)
        filled = helper.run(max_size="1k", method="copytruncate")
        assert filled.status == "problems" and filled.summary["rotated"] == 0
        assert "No space left on device" in filled.summary["skipped_reasons"][str(log)]
        assert [(finding.ok, finding.code) for finding in filled.findings] == [(False, "J007")]
        assert log.read_bytes() == before and helper.names() == ["application.log"]
        # the same for a compression: incompressible lines leave no room for the .gz; the partial
        # .gz is removed and the rotated file kept as it is
        log.write_bytes(b"")
        noise = helper.logs / "debug.log"
        noise.write_bytes(os.urandom(1_200_000))
        squeezed = helper.run(files=["logs/debug.log"], max_size="1k")
        assert squeezed.status == "problems" and squeezed.summary["rotated"] == 1
        rotated = helper.logs / "debug.log.1"
        assert "No space left on device" in squeezed.summary["skipped_reasons"][str(rotated)]
        assert [(finding.ok, finding.code) for finding in squeezed.findings] == [(False, "J007")]
        assert sorted(path.name for path in helper.logs.iterdir() if path.name.startswith("debug")) == \
            ["debug.log", "debug.log.1"]
        monkeypatch.undo()
        # without compression a rename needs no room at all
        log.write_bytes(before[:100_000])
        assert helper.run(max_size="1k", compress=False).summary["rotated"] == 1
        helper.state.dispose()
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)


def test_too_little_free_space_injected_refuses_to_rotate_and_recovers(job, monkeypatch):
    log = job.logs / "application.log"
    write_numbered_lines(log, 20_000)
    size = log.stat().st_size
    monkeypatch.setattr(space, "free_bytes", lambda path: size // 4)
    refused = job.run(max_size="1k", free_space_margin="1k")
    assert refused.status == "problems" and refused.summary["rotated"] == 0
    assert "not enough free space for the compressed file" in refused.message
    assert [finding.ok for finding in refused.findings] == [False]
    monkeypatch.setattr(space, "free_bytes", lambda path: size * 4)
    accepted = job.run(max_size="1k", free_space_margin="1k")
    assert accepted.status == "ok" and accepted.summary["rotated"] == 1 and accepted.summary["compressed"] == 1
    assert [finding.ok for finding in accepted.findings] == [True]  # resolves the alert
    assert accepted.summary["bytes_freed"] > size // 2


def test_cli_dry_run_prints_the_plan_as_json(tmp_path):
    logs = tmp_path / "svc" / "logs"
    logs.mkdir(parents=True)
    write_numbered_lines(logs / "application.log", 100)
    result = _run_cli(tmp_path, _cli_config(tmp_path, 'max_size = "1k"'), "--dry-run", "--json")
    assert result.returncode == 0, result.stderr
    import json

    payload = json.loads(result.stdout)
    assert payload["dry_run"] is True and payload["status"] == "ok"
    assert any(line.startswith("would rotate") for line in payload["summary"]["plan"])
    assert sorted(path.name for path in logs.iterdir()) == ["application.log"]


def test_olddir_on_another_filesystem_refuses_create_but_allows_copytruncate(job):
    old = job.logs / "old"
    why_not = _mount_small_tmpfs(old, "4m")
    if why_not:
        pytest.skip(why_not)
    try:
        log = job.logs / "application.log"
        write_numbered_lines(log, 50)
        refused = job.run(max_size="1k", olddir="old")
        assert refused.status == "problems" and refused.summary["rotated"] == 0
        assert "on another filesystem" in refused.summary["skipped_reasons"][str(log)]
        copied = job.run(max_size="1k", olddir="old", method="copytruncate")
        assert copied.status == "ok", copied.message
        assert job.names(old) == ["application.log.1.gz"] and log.stat().st_size == 0
    finally:
        subprocess.run(["umount", "-l", str(old)], check=False)


def test_a_reopen_command_that_hangs_is_cut_at_reopen_timeout_and_retried_next_run(job):
    log = job.logs / "application.log"
    write_numbered_lines(log, 50)
    started = time.monotonic()
    hung = job.run(max_size="1k", reopen_command="sleep 30", reopen_timeout="300ms")
    assert time.monotonic() - started < 5
    assert hung.status == "problems" and "did not finish within 0.3s" in hung.message
    retried = job.run(max_size="1k", reopen_command="true")
    assert retried.status == "ok" and retried.summary["recovered"] == 1
    assert job.names() == ["application.log", "application.log.1.gz"]


def test_weekly_rotation_waits_for_the_iso_week_to_turn_and_min_size_holds_it_back(job):
    log = job.logs / "application.log"
    write_numbered_lines(log, 10)
    job.now = datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)  # a Monday: first seen
    assert job.run(every="weekly").summary["rotated"] == 0
    job.now = datetime(2026, 11, 29, 23, 0, tzinfo=timezone.utc)  # Sunday, same ISO week
    assert job.run(every="weekly").summary["rotated"] == 0
    job.now = datetime(2026, 11, 30, 0, 30, tzinfo=timezone.utc)  # Monday: a new week
    held = job.run(every="weekly", min_size="1M")
    assert held.summary["rotated"] == 0 and "under min_size" in held.summary["skipped_reasons"][str(log)]
    assert job.run(every="weekly").summary["rotated"] == 1
    assert job.names() == ["application.log", "application.log.1.gz"]


def test_leftovers_of_a_killed_compression_are_listed_by_a_dry_run_and_cleaned_by_a_run(job):
    log = job.logs / "application.log"
    write_numbered_lines(log, 10)
    rotated = job.logs / "application.log.1"
    write_numbered_lines(rotated, 50, start=100)
    original = rotated.read_bytes()
    (job.logs / "application.log.1.gz.jackpot-tmp").write_bytes(b"\x1f\x8b half a gzip")
    before = job.names()
    plan = job.run(dry_run=True).summary["plan"]
    assert any("removing an interrupted compression" in line for line in plan)
    assert f"would compress {rotated} to application.log.1.gz" in plan
    assert job.names() == before
    result = job.run()
    assert result.status == "ok" and result.summary["recovered"] == 1 and result.summary["compressed"] == 1
    assert job.names() == ["application.log", "application.log.1.gz"]
    with gzip.open(job.logs / "application.log.1.gz", "rb") as handle:
        assert handle.read() == original


def test_create_is_refused_when_the_new_log_could_not_get_the_services_owner():
    # the daemon's own user (the unit's User=jackpot-maint, uid 990 here) rotating logs of the service (uid 1001)
    assert not rotate_logs.can_give_owner(1001, 1001, euid=990, egid=990, groups=[990])
    assert not rotate_logs.can_give_owner(990, 1001, euid=990, egid=990, groups=[990])  # wrong group
    assert rotate_logs.can_give_owner(990, 1001, euid=990, egid=990, groups=[990, 1001])
    assert rotate_logs.can_give_owner(1001, 1001, euid=0, egid=0, groups=[])


@pytest.mark.skipif(os.geteuid() != 0 or not Path("/usr/bin/python3").exists(),
                    reason="needs root (to start a process as nobody) and a system /usr/bin/python3")
def test_without_root_a_file_counts_as_let_go_only_once_it_has_been_quiet_for_a_second():
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="rotate-nobody-"))
    try:
        folder.chmod(0o755)
        log = folder / "application.log"
        writer = start_writer(log, rate=500)
        check = ("import sys; sys.path.insert(0, sys.argv[1]); import writers; "
                 "print(repr(writers.wait_until_let_go(sys.argv[2], float(sys.argv[3]))))")

        def as_nobody(timeout: float) -> str:
            # this process cannot see root's descriptors in /proc, like the daemon's own user
            return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3",
                                   "-c", check, str(Path(rotate_logs.__file__).parent / "logrotate"), str(log),
                                   str(timeout)], capture_output=True, text=True, timeout=30, check=True).stdout
        try:
            writer.wait_for_lines(20)
            assert "written to" in as_nobody(0.3)  # /proc shows it no holder, but it is being written
        finally:
            writer.stop()
        assert as_nobody(5).strip() == "None"  # quiet for a second: let go
    finally:
        shutil.rmtree(folder)
