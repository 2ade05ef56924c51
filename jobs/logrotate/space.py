"""Free space on a filesystem. The one boundary tests may replace (when no small filesystem can be
mounted): rotate_logs calls `free_bytes` through this module, never os.statvfs directly."""

from __future__ import annotations

import os


def free_bytes(path: str) -> int:
    """Given a path on a filesystem, return the bytes an unprivileged writer may still use there."""
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize
