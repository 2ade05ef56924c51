"""Tell systemd how the daemon is doing: sd_notify in pure Python over $NOTIFY_SOCKET.

The protocol is one datagram per message, newline-separated KEY=VALUE lines, sent to the unix socket
named by $NOTIFY_SOCKET: a path (/run/systemd/notify) or, when it starts with '@', an abstract socket.
Without $NOTIFY_SOCKET (not started by systemd, or NotifyAccess lets nobody talk) every call is a no-op.
"""

from __future__ import annotations

import os
import socket
import time


class Notifier:
    """A connection to systemd's notification socket; every method is harmless without one."""

    def __init__(self, environ: dict[str, str] | None = None):
        environ = dict(os.environ if environ is None else environ)
        self.address = _socket_address(environ.get("NOTIFY_SOCKET", ""))
        self.watchdog_interval = watchdog_interval(environ)
        self._socket: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *lines: str) -> bool:
        """Send the given KEY=VALUE lines as one message. Return False if there is no socket or it failed."""
        if self.address is None:
            return False
        payload = "\n".join(lines).encode("utf-8", "replace")
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.sendto(payload, self.address)
            return True
        except OSError:
            # systemd gone or the socket replaced: never let telling systemd break the daemon
            self.close()
            return False

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *([f"STATUS={_one_line(status)}"] if status else []))

    def reloading(self) -> bool:
        # MONOTONIC_USEC lets systemd (Type=notify-reload) tell this reload from an older one
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def stopping(self, status: str | None = None) -> bool:
        return self.notify("STOPPING=1", *([f"STATUS={_one_line(status)}"] if status else []))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={_one_line(text)}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def close(self) -> None:
        if self._socket is not None:
            try:
                self._socket.close()
            finally:
                self._socket = None


def _socket_address(value: str) -> str | bytes | None:
    if not value:
        return None
    if value.startswith("@"):
        # abstract namespace: a leading NUL byte instead of '@'
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None  # vsock and other families are not used for services on one host


def watchdog_interval(environ: dict[str, str] | None = None) -> float | None:
    """Given the environment, return how often to send WATCHDOG=1 (half of $WATCHDOG_USEC), or None.

    $WATCHDOG_PID, when set, must be this process: otherwise the watchdog is meant for another one.
    """
    environ = os.environ if environ is None else environ
    raw = environ.get("WATCHDOG_USEC", "")
    pid = environ.get("WATCHDOG_PID", "")
    if not raw:
        return None
    if pid and pid != str(os.getpid()):
        return None
    try:
        microseconds = int(raw)
    except ValueError:
        return None
    if microseconds <= 0:
        return None
    return microseconds / 1_000_000 / 2


def _one_line(text: str) -> str:
    return " ".join(str(text).split())[:400]
