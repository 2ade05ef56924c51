"""Telling the service to reopen its logs, and seeing which processes still hold a file open.

After a rename the writer keeps writing to the rotated file until it reopens its log: nothing is
lost, but that file must not be compressed or deleted before the writer lets go of it. /proc says
who holds it (as root every process; otherwise the daemon's own user's processes)."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass


@dataclass
class ReopenOutcome:
    done: bool  # a signal was sent or the command succeeded
    message: str
    problem: bool = False  # configured, but it failed


def signal_number(name: str) -> int:
    """Given HUP, SIGHUP, USR1 or a number, return the signal number. Raise ValueError otherwise."""
    text = str(name).strip().upper()
    if text.isdigit():
        return int(text)
    if not text.startswith("SIG"):
        text = "SIG" + text
    try:
        return int(getattr(signal.Signals, text))
    except AttributeError:
        raise ValueError(f"unknown signal {name!r}; use e.g. HUP or USR1") from None


def read_pid_file(path: str) -> int:
    """Given a pid file, return the pid in it. Raise OSError or ValueError naming the file."""
    with open(path, encoding="ascii", errors="replace") as handle:
        text = handle.read().strip().split()
    if not text or not text[0].isdigit():
        raise ValueError(f"pid file {path} holds no pid")
    return int(text[0])


def reopen(*, signal_name: str, pid: int | None, pid_file: str | None, command: str | None,
           timeout: float) -> ReopenOutcome:
    """Ask the writer to reopen its log: run `command` (e.g. pm2 reloadLogs) within `timeout`,
    or send `signal_name` to `pid` / the pid in `pid_file`. Never raises."""
    if command:
        try:
            completed = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=timeout,
                                       stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return ReopenOutcome(False, f"reopen command {command!r} did not finish within {timeout:g}s", True)
        except OSError as error:
            return ReopenOutcome(False, f"reopen command {command!r} could not start: {error.strerror}", True)
        if completed.returncode != 0:
            output = (completed.stderr or completed.stdout).strip().splitlines()
            detail = f": {output[-1][:200]}" if output else ""
            return ReopenOutcome(False, f"reopen command {command!r} exited {completed.returncode}{detail}", True)
        return ReopenOutcome(True, f"ran {command!r}")
    if pid is None and pid_file:
        try:
            pid = read_pid_file(pid_file)
        except (OSError, ValueError) as error:
            reason = error.strerror if isinstance(error, OSError) else str(error)
            return ReopenOutcome(False, f"cannot read the writer's pid file {pid_file}: {reason}", True)
    if pid is None:
        return ReopenOutcome(False, "no reopen configured (reopen_pid, reopen_pid_file or reopen_command): "
                                    "the writer keeps writing to the rotated file until it reopens its log")
    number = signal_number(signal_name)
    try:
        os.kill(pid, number)
    except ProcessLookupError:
        return ReopenOutcome(False, f"writer pid {pid} does not exist (stale pid file?)", True)
    except PermissionError:
        return ReopenOutcome(False, f"not allowed to signal pid {pid}: run as the service's user or root", True)
    return ReopenOutcome(True, f"sent {signal.Signals(number).name} to pid {pid}")


def holders(path: str) -> list[int]:
    """Given a file, return the pids (other than ours) that have it open, as far as /proc shows."""
    target = os.path.realpath(path)
    own = os.getpid()
    found: list[int] = []
    try:
        entries = os.scandir("/proc")
    except OSError:
        return []
    with entries:
        for entry in entries:
            if not entry.name.isdigit() or int(entry.name) == own:
                continue
            fd_dir = f"/proc/{entry.name}/fd"
            try:
                descriptors = os.listdir(fd_dir)
            except OSError:
                continue  # gone, or not ours to look at
            for descriptor in descriptors:
                try:
                    if os.readlink(f"{fd_dir}/{descriptor}") == target:
                        found.append(int(entry.name))
                        break
                except OSError:
                    continue
    return found


# Without root, /proc hides other users' descriptors: a file counts as let go only once nothing has
# been written to it for this long as well.
QUIET_SECONDS = 1.0


def wait_until_let_go(path: str, timeout: float, poll: float = 0.02) -> str | None:
    """Wait up to `timeout` seconds until no other process holds `path` open (and, when this process
    cannot see every process's descriptors, until it has not been written to for QUIET_SECONDS).
    Return None when it was let go, else why not (e.g. "open by pid 123")."""
    deadline = time.monotonic() + timeout
    sees_everything = os.geteuid() == 0
    while True:
        pids = holders(path)
        if pids:
            reason = f"open by pid {', '.join(map(str, pids))}"
        elif sees_everything:
            return None
        else:
            idle = time.time() - os.stat(path).st_mtime
            if idle >= QUIET_SECONDS:
                return None
            reason = f"written to {idle:.1f}s ago (other users' processes are not visible without root)"
        if time.monotonic() >= deadline:
            return reason
        time.sleep(poll)
