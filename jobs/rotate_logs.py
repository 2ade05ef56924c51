"""rotate_logs: logrotate-grade rotation of the jackpot service's log files, without losing a line.

The guide's maintenance script runs `logrotate /etc/logrotate.d/jackpot-service` and `pm2 flush`;
this job does that work itself on every host. Each run, for each configured file:

1. recover: finish or undo whatever a killed run left (a journal entry in the state store says a
   rename or copy was under way; temporary names say a compression was under way);
2. decide whether the file is due (max_size, every, min_size, not_if_empty), remembering each
   file's last rotation in the state store;
3. rotate it: `create` renames it and creates an empty file with the old owner and mode, then the
   writer is told to reopen (signal or command); `copytruncate` copies it, copies what was appended
   meanwhile, then truncates it (for writers that cannot reopen; a few lines may be lost);
4. compress rotated files (gzip level 6, streamed, written under a temporary name, fsynced and
   renamed; the original is removed only after that) once no process holds them open;
5. prune rotated files beyond `keep` or older than `max_age` days.

Free space is checked before copying or compressing: when the filesystem lacks room, the file is
not rotated and a J007 finding says so. Nothing is changed in a dry run; the plan says what would be.
"""

from __future__ import annotations

import errno
import glob
import os
import re
import signal
import socket
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, PlainSerializer, field_validator, model_validator

from config.types import Duration, Schedule
from jobs.base import Finding, JobContext, JobOptions, JobResult
from jobs.logrotate import naming, space, streams, writers

NAME = "rotate_logs"
SCOPE = "host"
DESCRIPTION = "Rotate, compress and prune the service's log files (logrotate-grade, create or copytruncate)"

STATE_NAMESPACE = "rotate_logs"
# Tests only: kill this process with SIGKILL when the run reaches the named step (see _crash_point).
CRASH_ENV = "JACKPOT_TEST_CRASH_AT"

_SIZE = re.compile(r"^\s*(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>[kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(value: object) -> int:
    """Given 1048576, "100M", "100MB", "1.5GiB" or "64k" (binary units, as logrotate), return bytes.
    Raise ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError("expected a size like 100M or 1G")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    if isinstance(value, str):
        match = _SIZE.match(value)
        if match:
            return int(float(match.group("number")) * _UNITS[match.group("unit").lower()])
    raise ValueError(f"expected a size like 100M, 1G or a number of bytes, got {value!r}")


def format_size(size: float) -> str:
    """Given bytes, return a short human form: 1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def format_size_setting(size: int) -> str:
    """Given bytes, return the setting's shortest exact form: 104857600 -> '100M', 1000 -> '1000'."""
    for unit, factor in (("G", 1 << 30), ("M", 1 << 20), ("k", 1 << 10)):
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


ByteSize = Annotated[int, BeforeValidator(parse_size), PlainSerializer(format_size_setting, when_used="json")]


class Options(JobOptions):
    schedule: Schedule = "0 * * * *"
    timeout: Duration = 1800.0
    directory: str = Field("/opt/jackpot-service", description="The service's working directory: relative paths "
                           "and globs in `files` (the guide's logs/...) are taken from here")
    files: list[str] = Field(["logs/application.log", "logs/debug.log", "logs/Startup.log"],
                             description="Log files to rotate: paths or globs, absolute or relative to `directory`")
    every: Literal["hourly", "daily", "weekly"] | None = Field(
        "daily", description="Rotate once per hour/day/week (scheduler.timezone); \"none\": only by size")
    max_size: ByteSize | None = Field("100M", description="Rotate whenever a file is bigger than this "
                                      "(e.g. 100M), even before its period is over; \"none\": only by time")
    min_size: ByteSize | None = Field(None, description="Never rotate a file smaller than this (e.g. 1M)")
    naming: Literal["numbered", "dated"] = Field(
        "numbered", description="numbered: application.log.1, .2.gz...; dated: application.log-20261128 "
        "(-20261128-1300 when hourly, -N when taken)")
    keep: int = Field(14, ge=0, description="Keep this many rotated files per log; older ones are deleted")
    max_age: int | None = Field(None, ge=1, description="Delete rotated files older than this many days")
    compress: bool = Field(True, description="gzip rotated files (level 6, streamed)")
    delay_compress: bool = Field(False, description="Leave the newest rotated file uncompressed until the next rotation")
    olddir: str | None = Field(None, description="Put rotated files in this folder (relative to the log's folder; "
                               "same filesystem for method create)")
    missing_ok: bool = Field(True, description="A configured file that does not exist is not a problem")
    not_if_empty: bool = Field(True, description="Do not rotate empty files")
    method: Literal["create", "copytruncate"] = Field(
        "create", description="create: rename and recreate, then reopen (loses nothing); copytruncate: copy then "
        "truncate, for writers that cannot reopen (may lose the lines written during the truncate)")
    reopen_signal: str = Field("HUP", description="Signal that makes the writer reopen its log (HUP, USR1, USR2...)")
    reopen_pid: int | None = Field(None, ge=1, description="Send reopen_signal to this pid after rotating")
    reopen_pid_file: str | None = Field(None, description="Send reopen_signal to the pid in this file after rotating")
    reopen_command: str | None = Field(None, description="Run this instead of a signal after rotating, e.g. "
                                       "'pm2 reloadLogs' (no shell)")
    reopen_timeout: Duration = Field(30.0, description="Wait this long for the reopen command and for the writer "
                                     "to let go of the rotated file before compressing it")
    free_space_margin: ByteSize = Field("64M", description="Leave at least this much free on the filesystem "
                                        "after a copy or compression; else do not rotate (J007)")

    @field_validator("every", "max_size", "min_size", mode="before")
    @classmethod
    def _none_spelled_out(cls, value: object) -> object:
        # TOML has no null: "none" (or "off") switches a criterion off
        return None if isinstance(value, str) and value.strip().lower() in ("none", "off", "") else value

    @model_validator(mode="after")
    def _rotates_at_all(self) -> "Options":
        if self.every is None and self.max_size is None:
            raise ValueError("set `every` (hourly, daily, weekly) or `max_size` (e.g. 100M): with neither, "
                             "nothing is ever rotated")
        return self

    @field_validator("reopen_signal")
    @classmethod
    def _known_signal(cls, value: str) -> str:
        return signal.Signals(writers.signal_number(value)).name


@dataclass
class LogFile:
    path: str  # absolute
    rotated_dir: str
    explicit: bool = True


@dataclass
class Rotation:
    """One run's work and what it saw."""

    context: JobContext
    options: Options
    now: datetime  # local time of the run (dated names, periods)
    checked: int = 0
    rotated: int = 0
    compressed: int = 0
    deleted: int = 0
    recovered: int = 0
    bytes_freed: int = 0
    copytruncate_lost_bytes: int = 0
    skipped: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    plan: list[str] = field(default_factory=list)
    # rotated by rename this run (or a recovered run): wait for the writer to let go before compressing
    renamed: dict[str, str] = field(default_factory=dict)
    planned: set[str] = field(default_factory=set)  # dry run: logs that would be rotated
    copied: set[str] = field(default_factory=set)  # copytruncate copies made this run: no writer has them
    needs_reopen: bool = False
    reopen_sent: bool = False
    disk_findings: dict[str, Finding] = field(default_factory=dict)
    journals: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def dry_run(self) -> bool:
        return self.context.dry_run

    def say(self, message: str) -> None:
        if self.dry_run:
            self.plan.append(message)
        self.context.report(message)

    def skip(self, path: str, reason: str, *, problem: bool = False) -> None:
        self.skipped[path] = reason
        if self.dry_run:
            self.plan.append(f"would not rotate {path}: {reason}")
        self.context.report(f"{path}: skipped: {reason}")
        if problem:
            self.problems.append(f"{path}: {reason}")

    # ---- state store journal -------------------------------------------------------------------
    # One entry per host and log ("host:/path"): the state store may be shared by several hosts,
    # each with its own files at the same paths.

    @property
    def key_prefix(self) -> str:
        return f"{self.context.host or socket.gethostname()}:"

    def journal(self, path: str) -> dict[str, Any]:
        if path not in self.journals:
            stored = self.context.state.get_value(STATE_NAMESPACE, self.key_prefix + path) if self.context.state else None
            self.journals[path] = dict(stored or {})
        return self.journals[path]

    def save_journal(self, path: str) -> None:
        if self.dry_run or self.context.state is None:
            return
        self.context.state.set_value(STATE_NAMESPACE, self.key_prefix + path, self.journals[path])

    def pending_paths(self) -> list[str]:
        """Logs this host has an unfinished rotation journaled for."""
        if self.context.state is None:
            return []
        return [key[len(self.key_prefix):] for key, journal in self.context.state.values(STATE_NAMESPACE).items()
                if key.startswith(self.key_prefix) and isinstance(journal, dict) and journal.get("pending")]


def run(context: JobContext) -> JobResult:
    options: Options = context.options  # type: ignore[assignment]
    rotation = Rotation(context, options, _local_now(context))
    files = _resolve_files(rotation)
    for log in files:
        context.check_cancelled()
        _recover(rotation, log)
    for log in files:
        context.check_cancelled()
        if not os.path.lexists(log.path):
            rotation.skip(log.path, "missing", problem=log.explicit and not options.missing_ok)
            continue
        if not _is_regular(log.path):
            rotation.skip(log.path, "not a regular file (symlink, folder or device): not rotated", problem=True)
            continue
        rotation.checked += 1
        if log.path in rotation.renamed:
            continue  # an interrupted rotation was just finished: that is this run's rotation
        is_due, reason = _due(rotation, log)
        if is_due:
            _rotate(rotation, log, reason)
        elif reason:
            rotation.skip(log.path, reason)
    _reopen(rotation)
    for log in files:
        context.check_cancelled()
        if os.path.isdir(log.rotated_dir):
            _compress_rotated(rotation, log)
            _prune(rotation, log)
    return _result(rotation)


# ---- files ---------------------------------------------------------------------------------------


def _local_now(context: JobContext) -> datetime:
    zone = getattr(getattr(context.settings, "scheduler", None), "timezone", None)
    if zone:
        from zoneinfo import ZoneInfo

        return context.clock().astimezone(ZoneInfo(zone))
    return context.clock().astimezone()


def _resolve_files(rotation: Rotation) -> list[LogFile]:
    """The configured files, globs expanded, plus any file a crashed run left a journal entry for."""
    options = rotation.options
    found: dict[str, LogFile] = {}
    for pattern in options.files:
        path = pattern if os.path.isabs(pattern) else os.path.join(options.directory, pattern)
        path = os.path.abspath(path)
        if glob.has_magic(path):
            matches = [match for match in sorted(glob.glob(path))
                       if os.path.isfile(match) and not naming.is_rotated_name(os.path.basename(match))]
            if not matches:
                rotation.skip(path, "no file matches", problem=not options.missing_ok)
            for match in matches:
                found.setdefault(match, LogFile(match, _rotated_dir(options, match), explicit=False))
        else:
            found.setdefault(path, LogFile(path, _rotated_dir(options, path)))
    for path in rotation.pending_paths():
        found.setdefault(path, LogFile(path, _rotated_dir(options, path), explicit=False))
    return list(found.values())


def _rotated_dir(options: Options, log_path: str) -> str:
    folder = os.path.dirname(log_path)
    if options.olddir:
        return os.path.abspath(os.path.join(folder, options.olddir))
    return folder


def _is_regular(path: str) -> bool:
    import stat

    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


# ---- crash safety --------------------------------------------------------------------------------


def _crash_point(step: str) -> None:
    """Tests only: die here, like a kill -9, when JACKPOT_TEST_CRASH_AT names this step."""
    if os.environ.get(CRASH_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


def _recover(rotation: Rotation, log: LogFile) -> None:
    """Finish or undo what a killed run left for this log. Every line is in some file at every
    step; this puts each back where it belongs."""
    journal = rotation.journal(log.path)
    pending = journal.get("pending")
    if pending:
        if pending.get("method") == "copytruncate":
            _recover_copy(rotation, log, journal, pending)
        else:
            _recover_rename(rotation, log, journal, pending)
    for temporary in naming.temporaries(log.path, log.rotated_dir):
        if temporary.endswith(naming.COMPRESS_TEMP_SUFFIX):
            original = temporary[: -len(naming.COMPRESS_TEMP_SUFFIX)]
            if os.path.exists(original) or os.path.exists(original + naming.COMPRESSED_SUFFIX):
                rotation.say(f"{temporary}: removing an interrupted compression (the original is intact)")
                if not rotation.dry_run:
                    os.unlink(temporary)
                    rotation.recovered += 1
        elif temporary.endswith(naming.COPY_TEMP_SUFFIX) and not (pending and pending.get("temp") == temporary):
            rotation.problems.append(f"{temporary}: a copy with no journal entry; left in place for you to inspect")
    # X.gz is only ever renamed into place complete and fsynced: an X next to it is a leftover
    for item in naming.list_rotated(log.path, log.rotated_dir, rotation.options.naming):
        if not item.compressed and os.path.exists(item.path + naming.COMPRESSED_SUFFIX):
            rotation.say(f"{item.path}: removing, {item.name}.gz is complete (an interrupted run had not yet)")
            if not rotation.dry_run:
                os.unlink(item.path)
                rotation.recovered += 1


def _recover_rename(rotation: Rotation, log: LogFile, journal: dict[str, Any], pending: dict[str, Any]) -> None:
    rotated = pending["rotated"]
    if not os.path.exists(rotated) and not os.path.exists(rotated + naming.COMPRESSED_SUFFIX):
        rotation.say(f"{log.path}: an interrupted run had not renamed it yet; nothing to finish")
        if not rotation.dry_run:
            journal.pop("pending", None)
            rotation.save_journal(log.path)
        return
    rotation.say(f"{log.path}: finishing an interrupted rotation to {rotated} (recreate if missing, reopen)")
    if rotation.dry_run:
        return
    if not os.path.exists(log.path):
        _create_like(log.path, rotated if os.path.exists(rotated) else rotated + naming.COMPRESSED_SUFFIX)
    journal["last_rotated"] = pending.get("at")
    # the entry stays until this run's reopen has been sent (_reopen clears it)
    rotation.save_journal(log.path)
    rotation.renamed[log.path] = rotated
    rotation.needs_reopen = True
    rotation.recovered += 1


def _recover_copy(rotation: Rotation, log: LogFile, journal: dict[str, Any], pending: dict[str, Any]) -> None:
    temporary, target = pending["temp"], pending["rotated"]
    if os.path.exists(temporary):
        if _truncate_happened(log.path, temporary):
            rotation.say(f"{log.path}: an interrupted copytruncate had truncated it; keeping the copy as {target}")
            if not rotation.dry_run:
                os.rename(temporary, target)
                streams.fsync_directory(os.path.dirname(target))
                journal["last_rotated"] = pending.get("at")
        else:
            rotation.say(f"{log.path}: an interrupted copytruncate had not truncated it; dropping the partial copy")
            if not rotation.dry_run:
                os.unlink(temporary)
        if not rotation.dry_run:
            rotation.recovered += 1
    elif os.path.exists(target) or os.path.exists(target + naming.COMPRESSED_SUFFIX):
        journal["last_rotated"] = pending.get("at")  # it finished; only the journal was not updated
    if not rotation.dry_run:
        journal.pop("pending", None)
        rotation.save_journal(log.path)


def _truncate_happened(log_path: str, copy_path: str) -> bool:
    """Whether the log was truncated after being copied: if it still holds at least the copy's
    bytes and begins with the same bytes, it was not (and it still has every line)."""
    copy_size = os.path.getsize(copy_path)
    try:
        log_size = os.path.getsize(log_path)
    except FileNotFoundError:
        return True
    if log_size < copy_size:
        return True
    sample = min(copy_size, 1 << 16)
    with open(log_path, "rb") as log_file, open(copy_path, "rb") as copy_file:
        return log_file.read(sample) != copy_file.read(sample)


# ---- when ----------------------------------------------------------------------------------------


def _period(moment: datetime, every: str) -> tuple:
    if every == "hourly":
        return (moment.year, moment.month, moment.day, moment.hour)
    if every == "daily":
        return (moment.year, moment.month, moment.day)
    year, week, _ = moment.isocalendar()
    return (year, week)


def _due(rotation: Rotation, log: LogFile) -> tuple[bool, str]:
    """Given a log, return (due, why or why not)."""
    options = rotation.options
    size = os.path.getsize(log.path)
    if size == 0 and options.not_if_empty:
        return False, "empty (not_if_empty)"
    if options.min_size is not None and size < options.min_size:
        return False, f"{format_size(size)} is under min_size {format_size(options.min_size)}"
    if options.max_size is not None and size > options.max_size:
        return True, f"{format_size(size)} is over max_size {format_size(options.max_size)}"
    if options.every is None:
        return False, f"{format_size(size)} is not over max_size {format_size(options.max_size or 0)}"
    journal = rotation.journal(log.path)
    last_text = journal.get("last_rotated") or journal.get("first_seen")
    if last_text is None:
        # like logrotate: a file seen for the first time starts its period now
        journal["first_seen"] = rotation.now.isoformat()
        rotation.save_journal(log.path)
        return False, f"first seen now; rotates when the {options.every} period turns"
    last = datetime.fromisoformat(last_text).astimezone(rotation.now.tzinfo)
    if _period(last, options.every) != _period(rotation.now, options.every) and rotation.now > last:
        return True, f"{options.every} rotation due (last {last:%Y-%m-%d %H:%M})"
    unit = {"hourly": "hour", "daily": "day", "weekly": "week"}[options.every]
    return False, f"already rotated this {unit} (last {last:%Y-%m-%d %H:%M})"


# ---- rotate --------------------------------------------------------------------------------------


def _rotate(rotation: Rotation, log: LogFile, reason: str) -> bool:
    """Rotate one due log. Return True when it was rotated (or would be, in a dry run)."""
    options = rotation.options
    size = os.path.getsize(log.path)
    if not os.path.isdir(log.rotated_dir):
        if rotation.dry_run:
            rotation.say(f"would create olddir {log.rotated_dir}")
        else:
            os.makedirs(log.rotated_dir, mode=0o755, exist_ok=True)
    if options.method == "create" and os.path.isdir(log.rotated_dir) and \
            os.stat(log.rotated_dir).st_dev != os.stat(os.path.dirname(log.path)).st_dev:
        rotation.skip(log.path, f"olddir {log.rotated_dir} is on another filesystem: method create renames, "
                                "which cannot cross filesystems (use method copytruncate or move olddir)", problem=True)
        return False
    if options.method == "create":
        status = os.stat(log.path)
        if not can_give_owner(status.st_uid, status.st_gid, os.geteuid(), os.getegid(), os.getgroups()):
            rotation.skip(log.path, f"cannot create the new log owned by uid {status.st_uid} gid {status.st_gid} "
                                    f"as uid {os.geteuid()} (not root): the service could not write to it. Run "
                                    "rotate_logs as root or as the log's owner, or use method copytruncate",
                          problem=True)
            return False
    # log text compresses 5-20x: half the size is a safe guess for the .gz, and a compression that
    # runs out of room anyway is undone cleanly
    needed = (size if options.method == "copytruncate" else 0) + (size // 2 if options.compress else 0)
    folder = log.rotated_dir if os.path.isdir(log.rotated_dir) else os.path.dirname(log.path)
    if needed and not _has_room(rotation, log, folder, needed,
                                "copy" if options.method == "copytruncate" else "compressed file"):
        return False
    target = _target_name(rotation, log)
    if rotation.dry_run:
        rotation.say(f"would rotate {log.path} ({reason}) to {target} by {options.method}")
        rotation.planned.add(log.path)
        rotation.rotated += 1
        return True
    rotation.context.report(f"rotating {log.path} ({reason}) to {target} by {options.method}")
    try:
        if options.method == "create":
            _rotate_by_rename(rotation, log, target)
        else:
            _rotate_by_copy(rotation, log, target)
    except OSError as error:
        _failed(rotation, log, log.path, f"not rotated: {options.method} failed", error)
        return False
    rotation.rotated += 1
    return True


def can_give_owner(uid: int, gid: int, euid: int, egid: int, groups: list[int]) -> bool:
    """Whether a process with these ids can create a file owned by uid:gid (root can; anyone else
    only their own uid and one of their groups)."""
    return euid == 0 or (uid == euid and (gid == egid or gid in groups))


def _failed(rotation: Rotation, log: LogFile, path: str, what: str, error: OSError) -> None:
    """Record that one file's step failed (the other files carry on); a full disk is a J007 finding."""
    where = f" ({error.filename})" if error.filename else ""
    reason = f"{what}: {error.strerror or error}{where}"
    rotation.skip(path, reason, problem=True)
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        key = f"disk_space:{log.path}"
        rotation.disk_findings[key] = Finding(
            key=key, ok=False, title=f"Log rotation ran out of space next to {path}", category="infrastructure",
            severity="P2", code="J007", scope="host", symptoms=[reason],
            attempts=["rotate_logs removed its partial file and left the log as it was"], details={"path": path})


def _has_room(rotation: Rotation, log: LogFile, folder: str, needed: int, what: str,
              subject: str | None = None) -> bool:
    """Whether the filesystem of `folder` has room for `needed` bytes plus the margin. When it has
    not, the file is skipped and a J007 finding (one per log) says so."""
    free = space.free_bytes(folder)
    margin = rotation.options.free_space_margin
    key = f"disk_space:{log.path}"
    if free >= needed + margin:
        rotation.disk_findings.setdefault(key, Finding(
            key=key, ok=True, title=f"Room to rotate {log.path}", category="infrastructure", severity="P2",
            code="J007", scope="host"))
        return True
    reason = (f"not enough free space for the {what}: {format_size(free)} free, needs {format_size(needed)} "
              f"plus free_space_margin {format_size(margin)}")
    rotation.skip(subject or log.path, reason, problem=True)
    rotation.disk_findings[key] = Finding(
        key=key, ok=False, title=f"Log rotation refused: the filesystem of {folder} is almost full",
        category="infrastructure", severity="P2", code="J007", scope="host",
        symptoms=[f"{log.path}: {reason}"], attempts=["rotate_logs left the file as it is rather than fill the disk"],
        details={"path": log.path, "folder": folder, "free_bytes": free, "needed_bytes": needed,
                 "margin_bytes": margin})
    return False


def _target_name(rotation: Rotation, log: LogFile) -> str:
    if rotation.options.naming == "dated":
        return naming.dated_name(log.path, log.rotated_dir, rotation.now, rotation.options.every == "hourly")
    return naming.numbered_name(log.path, log.rotated_dir, 1)


def _shift_numbered(rotation: Rotation, log: LogFile) -> None:
    """application.log.N[.gz] -> .N+1 from the highest down, so .1 is free. Files past `keep`
    are pruned afterwards, once no writer holds them."""
    if rotation.options.naming != "numbered":
        return
    for item in sorted(naming.list_rotated(log.path, log.rotated_dir, "numbered"), key=lambda item: -item.index):
        suffix = naming.COMPRESSED_SUFFIX if item.compressed else ""
        destination = naming.numbered_name(log.path, log.rotated_dir, item.index + 1) + suffix
        os.rename(item.path, destination)
    streams.fsync_directory(log.rotated_dir)
    _crash_point("after_shift")


def _rotate_by_rename(rotation: Rotation, log: LogFile, target: str) -> None:
    _shift_numbered(rotation, log)
    journal = rotation.journal(log.path)
    at = rotation.now.isoformat()
    journal["pending"] = {"method": "create", "rotated": target, "at": at}
    rotation.save_journal(log.path)
    _crash_point("after_journal")
    try:
        os.rename(log.path, target)
    except OSError:
        journal.pop("pending", None)
        rotation.save_journal(log.path)
        raise
    streams.fsync_directory(log.rotated_dir)
    if log.rotated_dir != os.path.dirname(log.path):
        streams.fsync_directory(os.path.dirname(log.path))
    _crash_point("after_rename")
    _create_like(log.path, target)
    _crash_point("after_create")
    journal["last_rotated"] = at
    rotation.save_journal(log.path)
    rotation.renamed[log.path] = target
    rotation.needs_reopen = True


def _create_like(path: str, model: str) -> None:
    """Create an empty `path` with the owner, group and mode of `model`. If the writer already
    created it, leave it."""
    status = os.stat(model)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    try:
        _copy_owner(descriptor, status)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    streams.fsync_directory(os.path.dirname(path))


def _copy_owner(descriptor: int, status: os.stat_result) -> None:
    try:
        os.fchown(descriptor, status.st_uid, status.st_gid)
    except PermissionError:
        pass  # not root: the file stays ours, which is what a non-root writer can use anyway
    os.fchmod(descriptor, status.st_mode & 0o7777)


def _rotate_by_copy(rotation: Rotation, log: LogFile, target: str) -> None:
    """copytruncate: copy, copy what was appended meanwhile until it is little, then copy the last
    bit and truncate at once. Lines written between that last read and the truncate are lost."""
    _shift_numbered(rotation, log)
    journal = rotation.journal(log.path)
    at = rotation.now.isoformat()
    temporary = target + naming.COPY_TEMP_SUFFIX
    journal["pending"] = {"method": "copytruncate", "rotated": target, "temp": temporary, "at": at}
    rotation.save_journal(log.path)
    _crash_point("after_journal")
    truncated = False
    try:
        source = os.open(log.path, os.O_RDWR)
    except OSError:
        journal.pop("pending", None)
        rotation.save_journal(log.path)
        raise
    try:
        copy = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            _copy_owner(copy, os.fstat(source))
            copied = streams.copy_range(source, copy, 0)
            _crash_point("after_copy")
            os.fsync(copy)  # the bulk is durable before anything is truncated
            for _ in range(16):  # catch up until what arrives during one pass is a few lines
                appended = streams.copy_range(source, copy, copied)
                copied += appended
                if appended < (4 << 10):
                    break
            # the race window: keep these three calls back to back
            copied += streams.copy_range(source, copy, copied)
            size_seen = os.fstat(source).st_size
            os.ftruncate(source, 0)
            truncated = True
            rotation.copytruncate_lost_bytes += max(size_seen - copied, 0)
            _crash_point("after_truncate")
            os.fsync(copy)
        finally:
            os.close(copy)
    except BaseException:
        if not truncated:  # the log still has every line: drop the partial copy
            _remove_quietly(temporary)
            journal.pop("pending", None)
            rotation.save_journal(log.path)
        raise
    finally:
        os.close(source)
    os.rename(temporary, target)
    streams.fsync_directory(log.rotated_dir)
    rotation.copied.add(target)
    journal.pop("pending", None)
    journal["last_rotated"] = at
    rotation.save_journal(log.path)


def _reopen(rotation: Rotation) -> None:
    """Tell the writer to reopen, once for all files renamed this run; then the journals' pending
    entries are done."""
    if not rotation.needs_reopen:
        if rotation.dry_run and rotation.rotated and rotation.options.method == "create":
            rotation.say(_reopen_description(rotation.options))
        return
    options = rotation.options
    outcome = writers.reopen(signal_name=options.reopen_signal, pid=options.reopen_pid,
                             pid_file=options.reopen_pid_file, command=options.reopen_command,
                             timeout=options.reopen_timeout)
    rotation.context.report(outcome.message)
    if outcome.problem:
        # the journal entries stay: the next run tries the reopen again
        rotation.problems.append(outcome.message + " (nothing is lost: the writer keeps writing to the rotated "
                                                   "file; the next run tries again)")
        return
    _crash_point("after_signal")
    for path in rotation.renamed:
        journal = rotation.journal(path)
        journal.pop("pending", None)
        rotation.save_journal(path)
    rotation.reopen_sent = outcome.done


def _reopen_description(options: Options) -> str:
    if options.reopen_command:
        return f"would run {options.reopen_command!r} so the writer reopens its logs"
    if options.reopen_pid or options.reopen_pid_file:
        return f"would send {options.reopen_signal} to {options.reopen_pid or options.reopen_pid_file}"
    return "no reopen configured: the writer would keep writing to the rotated file"


# ---- compress ------------------------------------------------------------------------------------


def _compress_rotated(rotation: Rotation, log: LogFile) -> None:
    """Compress this log's uncompressed rotated files (all but the newest with delay_compress)."""
    options = rotation.options
    if not options.compress:
        return
    rotated = _rotated_after_this_run(rotation, log)
    if options.delay_compress and rotated:
        newest, rotated = rotated[0], rotated[1:]
        if rotation.dry_run and not newest.compressed and newest.path != _BEING_ROTATED:
            rotation.say(f"would leave {newest.path} uncompressed until the next rotation (delay_compress)")
    for position, item in enumerate(rotated):
        rotation.context.check_cancelled()
        if item.compressed or position + (1 if options.delay_compress else 0) >= max(options.keep, 1):
            continue  # already done, or about to be pruned
        if item.path == _BEING_ROTATED:
            rotation.say(f"would compress the file rotated from {log.path} once the writer has let go of it")
            rotation.compressed += 1
            continue
        try:
            _compress_one(rotation, log, item.path)
        except OSError as error:
            _failed(rotation, log, item.path, "not compressed", error)


_BEING_ROTATED = "(the file being rotated)"


def _rotated_after_this_run(rotation: Rotation, log: LogFile) -> list[naming.RotatedFile]:
    """The log's rotated files, newest first; in a dry run, with the one this run would add."""
    rotated = naming.list_rotated(log.path, log.rotated_dir, rotation.options.naming)
    if rotation.dry_run and _would_rotate(rotation, log):
        rotated = [naming.RotatedFile(_BEING_ROTATED, (), False)] + rotated
    return rotated


def _would_rotate(rotation: Rotation, log: LogFile) -> bool:
    return log.path in rotation.planned


def _compress_one(rotation: Rotation, log: LogFile, path: str) -> None:
    """gzip one rotated file once no writer holds it: into X.gz.jackpot-tmp, fsynced, renamed to
    X.gz, and only then X removed. Skips (with the reason) when it is in use or there is no room."""
    if rotation.dry_run:
        rotation.say(f"would compress {path} to {os.path.basename(path)}.gz")
        rotation.compressed += 1
        return
    just_renamed = path in rotation.renamed.values()
    wait = rotation.options.reopen_timeout if just_renamed and rotation.reopen_sent else 0.0
    in_use = None if path in rotation.copied else writers.wait_until_let_go(path, wait)
    if in_use:
        reason = (f"{path} is still in use ({in_use}): not compressed yet (the writer has not reopened its "
                  "log); a later run compresses it")
        rotation.context.report(reason)
        rotation.skipped[path] = reason
        if just_renamed and rotation.reopen_sent:
            rotation.problems.append(reason)
        return
    size = os.path.getsize(path)
    if not _has_room(rotation, log, os.path.dirname(path), size // 2, "compressed file", path):
        return
    temporary = path + naming.COMPRESS_TEMP_SUFFIX
    if os.path.exists(temporary):
        os.unlink(temporary)
    first_chunk = [True]

    def after_chunk(done: int) -> None:
        if first_chunk[0]:
            first_chunk[0] = False
            _crash_point("during_compress")
        rotation.context.check_cancelled()

    try:
        bytes_read, bytes_written = streams.gzip_file(path, temporary, after_chunk=after_chunk)
        status = os.stat(path)
        if status.st_size != bytes_read:
            raise _StillWritten()
        if os.geteuid() == 0:
            os.chown(temporary, status.st_uid, status.st_gid)
        os.chmod(temporary, status.st_mode & 0o7777)
        os.utime(temporary, ns=(status.st_atime_ns, status.st_mtime_ns))  # max_age counts from the last line
    except _StillWritten:
        _remove_quietly(temporary)
        rotation.skipped[path] = f"{path} grew while being compressed: left uncompressed; a later run compresses it"
        return
    except OSError as error:
        _remove_quietly(temporary)
        _failed(rotation, log, path, "not compressed (the partial .gz was removed, the file kept)", error)
        return
    except BaseException:
        _remove_quietly(temporary)
        raise
    compressed_path = path + naming.COMPRESSED_SUFFIX
    os.rename(temporary, compressed_path)
    streams.fsync_directory(os.path.dirname(path))
    _crash_point("after_compress_rename")
    os.unlink(path)
    streams.fsync_directory(os.path.dirname(path))
    rotation.compressed += 1
    rotation.bytes_freed += bytes_read - bytes_written
    rotation.context.report(f"compressed {path}: {format_size(bytes_read)} -> {format_size(bytes_written)}")


class _StillWritten(Exception):
    pass


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# ---- prune ---------------------------------------------------------------------------------------


def _prune(rotation: Rotation, log: LogFile) -> None:
    options = rotation.options
    # in a dry run the file about to be rotated counts as the newest: one more of the old ones goes
    rotated = _rotated_after_this_run(rotation, log)
    oldest_allowed = rotation.now - timedelta(days=options.max_age) if options.max_age else None
    for position, item in enumerate(rotated):
        if item.path == _BEING_ROTATED:
            continue
        reason = None
        if position >= options.keep:
            reason = f"beyond keep={options.keep}"
        elif oldest_allowed is not None:
            modified = datetime.fromtimestamp(os.path.getmtime(item.path), tz=rotation.now.tzinfo)
            if modified < oldest_allowed:
                reason = f"older than max_age={options.max_age} days (last written {modified:%Y-%m-%d %H:%M})"
        if reason is None:
            continue
        if rotation.dry_run:
            rotation.say(f"would delete {item.path} ({reason})")
            rotation.deleted += 1
            continue
        in_use = None if item.compressed else writers.wait_until_let_go(item.path, 0)
        if in_use:
            rotation.skipped[item.path] = f"not deleted ({reason}): still in use ({in_use})"
            continue
        try:
            size = os.path.getsize(item.path)
            os.unlink(item.path)
        except OSError as error:
            _failed(rotation, log, item.path, f"not deleted ({reason})", error)
            continue
        rotation.deleted += 1
        rotation.bytes_freed += size
        rotation.context.report(f"deleted {item.path} ({reason})")


# ---- result --------------------------------------------------------------------------------------


def _result(rotation: Rotation) -> JobResult:
    summary: dict[str, Any] = {
        "files_checked": rotation.checked, "rotated": rotation.rotated, "compressed": rotation.compressed,
        "deleted": rotation.deleted, "bytes_freed": rotation.bytes_freed, "skipped": len(rotation.skipped),
        "skipped_reasons": rotation.skipped,
    }
    if rotation.recovered:
        summary["recovered"] = rotation.recovered
    if rotation.options.method == "copytruncate" and rotation.rotated and not rotation.dry_run:
        summary["copytruncate_lost_bytes_at_least"] = rotation.copytruncate_lost_bytes
    if rotation.problems:
        summary["problems"] = rotation.problems
    if rotation.dry_run:
        summary["plan"] = rotation.plan
    verb = "would be " if rotation.dry_run else ""
    message = (f"{rotation.checked} checked, {rotation.rotated} {verb}rotated, {rotation.compressed} {verb}compressed, "
               f"{rotation.deleted} {verb}deleted, {format_size(rotation.bytes_freed)} freed, "
               f"{len(rotation.skipped)} skipped")
    if rotation.problems:
        message += "; problems: " + "; ".join(rotation.problems)
    findings = list(rotation.disk_findings.values())
    status = "problems" if rotation.problems or any(not finding.ok for finding in findings) else "ok"
    return JobResult(status=status, summary=summary, message=message, findings=findings)
