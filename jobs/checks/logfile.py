"""Service log check: ERROR lines written since the last cycle.

The log is read incrementally: the state store remembers the file's device, inode and the offset
after the last complete line read. Each cycle reads only what was appended since.
- Rotation (the file was renamed and a new one created): the rest of the old file is still read
  when it can be found next to the log (same inode, e.g. application.log.1), then the new file from
  its start.
- Truncation in place (copytruncate): the file is shorter than the offset: read from the start.
- A new file that reuses the old inode number: the digest of its first bytes differs: read it
  from the start.
- A partial last line is left for the next cycle.
On the first cycle the monitor starts following at the end of the file (old errors are not news);
`diagnose` (which remembers nothing) looks at the last `tail_lines` lines instead, like the guide's
`tail -100 logs/application.log | grep ERROR`.
"""

from __future__ import annotations

import collections
import hashlib
import os
import re
from dataclasses import dataclass, field
from typing import Any

from jobs.checks import CheckContext, CheckResult, Probe, graded
from scheduler.redact import redact

CHUNK = 1 << 20
HEAD_BYTES = 256
EVIDENCE_LINES = 5


@dataclass
class LogPosition:
    """Where reading stopped. head is a digest of the file's first head_length bytes: a new file that
    reuses the old inode number (common after delete + create) is told apart by its content."""

    device: int
    inode: int
    offset: int
    head: str = ""
    head_length: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "inode": self.inode, "offset": self.offset, "head": self.head,
                "head_length": self.head_length}


def _head_digest(handle, length: int) -> str:
    handle.seek(0)
    return hashlib.sha1(handle.read(length)).hexdigest()


@dataclass
class ReadResult:
    """What one incremental read saw."""

    lines: int = 0
    matches: int = 0
    last_matches: list[str] = field(default_factory=list)
    bytes_read: int = 0
    events: list[str] = field(default_factory=list)  # "rotated", "truncated", "started"
    position: LogPosition | None = None


class LogFollower:
    """Reads ERROR lines appended to a file since a remembered position; survives rotation and truncation."""

    def __init__(self, path: str, pattern: str = r"\bERROR\b", *, max_bytes: int = 256 * CHUNK):
        self.path = path
        self.pattern = re.compile(pattern.encode())
        self.max_bytes = max_bytes

    def read(self, position: LogPosition | None, *, tail_lines: int | None = None) -> ReadResult:
        """Given the position remembered last time (None on the first cycle), return what was appended
        since, and the new position. tail_lines: with no position, count over the file's last lines
        instead of starting at its end. Raise FileNotFoundError when the log does not exist."""
        result = ReadResult(last_matches=[])
        tail: collections.deque[bytes] = collections.deque(maxlen=EVIDENCE_LINES)
        with open(self.path, "rb") as handle:
            status = os.fstat(handle.fileno())
            if position is None:
                if tail_lines:
                    self._read_tail(handle, status.st_size, tail_lines, result, tail)
                else:
                    result.events.append("started")
                offset = status.st_size
            elif (position.device, position.inode) != (status.st_dev, status.st_ino):
                result.events.append("rotated")
                old = self._find_rotated(position)
                if old is not None:
                    with open(old, "rb") as rotated:
                        self._scan(rotated, position.offset, os.fstat(rotated.fileno()).st_size, result, tail)
                offset = self._scan(handle, 0, status.st_size, result, tail)
            elif status.st_size < position.offset:
                result.events.append("truncated")
                offset = self._scan(handle, 0, status.st_size, result, tail)
            elif position.head and _head_digest(handle, position.head_length) != position.head:
                result.events.append("replaced")  # a new file under a reused inode number
                offset = self._scan(handle, 0, status.st_size, result, tail)
            else:
                offset = self._scan(handle, position.offset, status.st_size, result, tail)
            head_length = min(offset, HEAD_BYTES)
            result.position = LogPosition(status.st_dev, status.st_ino, offset, _head_digest(handle, head_length),
                                          head_length)
        result.last_matches = [redact(line.decode("utf-8", "replace").rstrip()[:500]) for line in tail]
        return result

    def _scan(self, handle, start: int, end: int, result: ReadResult, tail: collections.deque) -> int:
        """Count lines and matches between start and end; return the offset after the last complete line."""
        end = min(end, start + self.max_bytes)
        handle.seek(start)
        offset = start
        pending = b""
        while offset + len(pending) < end:
            chunk = handle.read(min(CHUNK, end - offset - len(pending)))
            if not chunk:
                break
            data = pending + chunk
            lines = data.split(b"\n")
            pending = lines.pop()
            for line in lines:
                offset += len(line) + 1
                result.lines += 1
                if self.pattern.search(line):
                    result.matches += 1
                    tail.append(line)
        result.bytes_read += offset - start
        return offset

    def _read_tail(self, handle, size: int, tail_lines: int, result: ReadResult, tail: collections.deque) -> None:
        start = size
        newlines = 0
        while start > 0 and newlines <= tail_lines:
            step = min(CHUNK, start)
            start -= step
            handle.seek(start)
            newlines += handle.read(step).count(b"\n")
        handle.seek(start)
        lines = handle.read(size - start).split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        for line in lines[-tail_lines:]:
            result.lines += 1
            if self.pattern.search(line):
                result.matches += 1
                tail.append(line)

    def _find_rotated(self, position: LogPosition) -> str | None:
        directory = os.path.dirname(os.path.abspath(self.path))
        base = os.path.basename(self.path)
        try:
            names = sorted(name for name in os.listdir(directory) if name.startswith(base) and name != base)
        except OSError:
            return None
        for name in names:
            candidate = os.path.join(directory, name)
            try:
                status = os.stat(candidate)
            except OSError:
                continue
            if (status.st_dev, status.st_ino) == (position.device, position.inode) and status.st_size >= position.offset:
                return candidate
        return None


def probes(context: CheckContext) -> list[Probe]:
    options = context.options.log_errors
    if not options.enabled or not context.settings.service.log_file:
        return []
    return [Probe("log.errors", context.options.check_timeout, lambda: [check_log(context)],
                  lambda timeout: [CheckResult(name="log.errors", state="unknown", warning=options.warning,
                                               critical=options.critical, message=f"no answer within {timeout:g}s")])]


def check_log(context: CheckContext) -> CheckResult:
    options = context.options.log_errors
    path = context.settings.service.resolve(context.settings.service.log_file)
    key = f"log:{path}"
    stored = context.recall(key)
    # diagnose looks at the tail, like the guide; only the monitor follows the file
    position = LogPosition(**stored["position"]) if stored and stored.get("position") and context.persist else None
    follower = LogFollower(path, options.pattern)
    try:
        read = follower.read(position, tail_lines=None if context.persist else options.tail_lines)
    except FileNotFoundError:
        return CheckResult(name="log.errors", state="unknown", warning=options.warning, critical=options.critical,
                           message=f"log file {path} does not exist", details={"path": path})
    except OSError as error:
        return CheckResult(name="log.errors", state="unknown", warning=options.warning, critical=options.critical,
                           message=f"cannot read {path}: {error.strerror or error}", details={"path": path})
    now = context.clock().timestamp()
    minutes = (now - stored["at"]) / 60 if stored and stored.get("at") and now > stored["at"] else None
    context.remember(key, {"position": read.position.to_dict(), "at": now})
    rate = round(read.matches / minutes, 3) if minutes else None
    if "started" in read.events:
        span = "now following from its end"
    elif position is None:
        span = f"in the last {read.lines} lines"
    else:
        span = "since the last cycle" + (f" ({', '.join(read.events)})" if read.events else "")
    message = f"{read.matches} ERROR line(s) in {path} {span}" + (f", {rate:g}/min" if rate is not None else "")
    return graded("log.errors", read.matches, options, unit="", message=message, evidence=read.last_matches,
                  details={"path": path, "lines_read": read.lines, "bytes_read": read.bytes_read, "rate_per_minute": rate,
                           "events": read.events})
