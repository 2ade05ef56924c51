"""A real log writer for rotation tests, and a line counter to check what it wrote.

Run as a process (start_writer): it appends numbered lines ("000000001 ...") to a file at a steady
rate, one write() per line with O_APPEND like a logger, and reopens the file by name on SIGHUP or
SIGUSR1 (the way a service reopens its log after `create` rotation). On SIGTERM it prints
{"last": N, "reopens": R} and exits.

count_lines() reads the log and every rotated file next to it (plain or .gz) and says which line
numbers are missing, duplicated or torn.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

LINE = re.compile(rb"^(\d{9}) \d+\.\d{6} INFO \[jackpot-service\] writer line seq=(\d+) (x*)$")
PADDING = 60


def format_line(sequence: int) -> bytes:
    return (f"{sequence:09d} {time.time():.6f} INFO [jackpot-service] writer line seq={sequence} "
            + "x" * PADDING + "\n").encode()


class Writer:
    """A running writer process."""

    def __init__(self, path: Path, rate: float, pid_file: Path | None = None, reopen_delay: float = 0.0):
        self.path = path
        command = [sys.executable, __file__, str(path), "--rate", str(rate), "--reopen-delay", str(reopen_delay)]
        if pid_file is not None:
            command += ["--pid-file", str(pid_file)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        ready = self.process.stdout.readline()
        assert ready.strip() == "ready", f"writer did not start: {ready!r}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_for_lines(self, count: int, timeout: float = 10.0) -> None:
        """Wait until the current file holds at least `count` bytes' worth of lines."""
        deadline = time.monotonic() + timeout
        line_size = len(format_line(1))
        while time.monotonic() < deadline:
            if self.path.exists() and self.path.stat().st_size >= count * line_size:
                return
            time.sleep(0.01)
        raise AssertionError(f"writer wrote fewer than {count} lines to {self.path} in {timeout}s")

    def stop(self) -> dict:
        """Stop the writer; return {"last": last line number written, "reopens": count}."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        output, _ = self.process.communicate(timeout=10)
        return json.loads(output.strip().splitlines()[-1])


def start_writer(path: Path, rate: float = 1000, pid_file: Path | None = None, reopen_delay: float = 0.0) -> Writer:
    """Start a writer appending `rate` lines a second to path; it reopens `reopen_delay` seconds after
    a SIGHUP/SIGUSR1 (a real service finishes what it is doing first)."""
    return Writer(path, rate, pid_file, reopen_delay)


@dataclass
class LineCount:
    seen: dict[int, int] = field(default_factory=dict)  # sequence -> times seen
    torn: int = 0
    files: list[str] = field(default_factory=list)

    def missing(self, last: int) -> list[int]:
        return [sequence for sequence in range(1, last + 1) if sequence not in self.seen]

    def duplicated(self) -> list[int]:
        return sorted(sequence for sequence, times in self.seen.items() if times > 1)


def count_lines(log: Path, folders: list[Path] | None = None) -> LineCount:
    """Read `log` and every file named like it (rotated, compressed, temporary) in its folder and
    `folders`; return what line numbers they hold."""
    result = LineCount()
    for folder in [log.parent, *(folders or [])]:
        for candidate in sorted(folder.iterdir()):
            if not candidate.is_file() or not candidate.name.startswith(log.name):
                continue
            if candidate.name.endswith(".jackpot-tmp"):
                continue  # an unfinished compression: its original is still there
            opener = gzip.open if candidate.name.endswith(".gz") else open
            with opener(candidate, "rb") as handle:
                data = handle.read()
            result.files.append(candidate.name)
            for line in data.split(b"\n"):
                if not line:
                    continue
                match = LINE.match(line)
                if not match or match.group(1) != match.group(2).rjust(9, b"0") or len(match.group(3)) != PADDING:
                    result.torn += 1
                    continue
                sequence = int(match.group(1))
                result.seen[sequence] = result.seen.get(sequence, 0) + 1
    return result


def write_numbered_lines(path: Path, count: int, start: int = 1) -> None:
    """Append `count` numbered lines to path (a writer that is not running)."""
    with open(path, "ab") as handle:
        for sequence in range(start, start + count):
            handle.write(format_line(sequence))


def _main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="append numbered lines at a steady rate; reopen on HUP/USR1")
    parser.add_argument("path")
    parser.add_argument("--rate", type=float, default=1000.0, help="lines per second")
    parser.add_argument("--pid-file")
    parser.add_argument("--reopen-delay", type=float, default=0.0, help="reopen this long after the signal")
    args = parser.parse_args()
    flags: dict = {"reopen": None, "stop": False}

    def on_reopen(_signum, _frame) -> None:
        flags["reopen"] = time.monotonic() + args.reopen_delay

    def on_stop(_signum, _frame) -> None:
        flags["stop"] = True

    signal.signal(signal.SIGHUP, on_reopen)
    signal.signal(signal.SIGUSR1, on_reopen)
    signal.signal(signal.SIGTERM, on_stop)
    if args.pid_file:
        Path(args.pid_file).write_text(f"{os.getpid()}\n")

    def open_log() -> int:
        return os.open(args.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    descriptor = open_log()
    sequence = 0
    reopens = 0
    started = time.monotonic()
    print("ready", flush=True)
    while not flags["stop"]:
        due = int((time.monotonic() - started) * args.rate) + 1
        while sequence < due and not flags["stop"]:
            if flags["reopen"] is not None and time.monotonic() >= flags["reopen"]:
                flags["reopen"] = None
                os.close(descriptor)
                descriptor = open_log()
                reopens += 1
            sequence += 1
            os.write(descriptor, format_line(sequence))
        time.sleep(0.001)
    os.close(descriptor)
    print(json.dumps({"last": sequence, "reopens": reopens}), flush=True)


if __name__ == "__main__":
    _main()
