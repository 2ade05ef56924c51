"""Names of rotated files, numbered (application.log.1, application.log.2.gz) or dated
(application.log-20261128, application.log-20261128-1300, with -N when the name is taken), and the
temporary names that tell the next run which step a crashed run was in."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime

COMPRESSED_SUFFIX = ".gz"
# X.gz.jackpot-tmp: a compression of X in progress. Incomplete by definition (the finished file is
# renamed to X.gz only after fsync), so the next run deletes it and compresses X again.
COMPRESS_TEMP_SUFFIX = ".gz.jackpot-tmp"
# X.jackpot-copy: a copytruncate copy in progress; the next run looks at the log to tell whether
# the truncate happened (keep the copy) or not (the log still has every line: drop the copy).
COPY_TEMP_SUFFIX = ".jackpot-copy"


@dataclass(frozen=True)
class RotatedFile:
    path: str
    order: tuple  # larger is newer
    compressed: bool
    index: int | None = None  # numbered naming only

    @property
    def name(self) -> str:
        return os.path.basename(self.path)


def _numbered_pattern(base: str) -> re.Pattern[str]:
    return re.compile(re.escape(base) + r"\.(?P<index>\d+)(?P<gz>\.gz)?$")


def _dated_pattern(base: str) -> re.Pattern[str]:
    return re.compile(re.escape(base) + r"-(?P<date>\d{8})(?:-(?P<time>\d{4}))?(?:-(?P<n>\d{1,3}))?(?P<gz>\.gz)?$")


def is_rotated_name(name: str) -> bool:
    """Whether a file name looks like a rotated or temporary file (so a glob never rotates one)."""
    if name.endswith((COMPRESSED_SUFFIX, COMPRESS_TEMP_SUFFIX, COPY_TEMP_SUFFIX)):
        return True
    return bool(re.search(r"\.\d+$", name) or re.search(r"-\d{8}(?:-\d{4})?(?:-\d{1,3})?$", name))


def list_rotated(log_path: str, rotated_dir: str, naming: str) -> list[RotatedFile]:
    """Given a log, the folder its rotations live in and the naming scheme, return its rotated
    files, newest first."""
    base = os.path.basename(log_path)
    pattern = _numbered_pattern(base) if naming == "numbered" else _dated_pattern(base)
    found: list[RotatedFile] = []
    try:
        names = os.listdir(rotated_dir)
    except FileNotFoundError:
        return []
    for name in names:
        match = pattern.match(name)
        if not match:
            continue
        path = os.path.join(rotated_dir, name)
        compressed = bool(match.group("gz"))
        if naming == "numbered":
            index = int(match.group("index"))
            found.append(RotatedFile(path, (-index,), compressed, index))
        else:
            order = (match.group("date"), match.group("time") or "", int(match.group("n") or 0))
            found.append(RotatedFile(path, order, compressed))
    found.sort(key=lambda item: (item.order, not item.compressed), reverse=True)
    return found


def temporaries(log_path: str, rotated_dir: str) -> list[str]:
    """Given a log and its rotation folder, return the leftover temporary files of its rotations."""
    base = os.path.basename(log_path)
    try:
        names = os.listdir(rotated_dir)
    except FileNotFoundError:
        return []
    return sorted(os.path.join(rotated_dir, name) for name in names
                  if name.startswith(base) and name.endswith((COMPRESS_TEMP_SUFFIX, COPY_TEMP_SUFFIX)))


def dated_name(log_path: str, rotated_dir: str, now: datetime, hourly: bool) -> str:
    """Given a log and the local time of the rotation, return a free dated path for it:
    base-YYYYMMDD (base-YYYYMMDD-HHMM when hourly), with -1, -2... when the name is taken (by
    the file or its .gz)."""
    base = os.path.basename(log_path)
    stamp = now.strftime("%Y%m%d-%H%M" if hourly else "%Y%m%d")
    candidate = os.path.join(rotated_dir, f"{base}-{stamp}")
    suffix = 0
    while _taken(candidate):
        suffix += 1
        candidate = os.path.join(rotated_dir, f"{base}-{stamp}-{suffix}")
    return candidate


def numbered_name(log_path: str, rotated_dir: str, index: int) -> str:
    return os.path.join(rotated_dir, f"{os.path.basename(log_path)}.{index}")


def _taken(path: str) -> bool:
    return any(os.path.lexists(path + suffix) for suffix in ("", COMPRESSED_SUFFIX, COMPRESS_TEMP_SUFFIX,
                                                             COPY_TEMP_SUFFIX))
