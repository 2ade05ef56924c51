"""sd_notify over a real unix datagram socket: a path socket and an abstract one."""

from __future__ import annotations

import os
import socket
import uuid

import pytest

from scheduler.sdnotify import Notifier, watchdog_interval


@pytest.fixture(params=["path", "abstract"])
def notify_socket(request, tmp_path):
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        address = str(tmp_path / "notify.sock")
        receiver.bind(address)
        name = address
    else:
        name = f"@jackpot-test-{uuid.uuid4().hex}"
        receiver.bind("\0" + name[1:])
    receiver.settimeout(2)
    yield name, receiver
    receiver.close()


def test_notifier_sends_ready_status_reloading_watchdog_and_stopping(notify_socket):
    name, receiver = notify_socket
    notifier = Notifier({"NOTIFY_SOCKET": name})
    assert notifier.enabled
    assert notifier.ready("3 jobs scheduled\nnext monitor")
    assert receiver.recv(4096).decode().splitlines() == ["READY=1", "STATUS=3 jobs scheduled next monitor"]
    assert notifier.reloading()
    reloading = receiver.recv(4096).decode().splitlines()
    assert reloading[0] == "RELOADING=1" and reloading[1].startswith("MONOTONIC_USEC=")
    notifier.watchdog()
    assert receiver.recv(4096) == b"WATCHDOG=1"
    notifier.stopping("stopping")
    assert receiver.recv(4096).decode().splitlines() == ["STOPPING=1", "STATUS=stopping"]
    notifier.close()


def test_without_notify_socket_or_with_a_vanished_one_nothing_fails(tmp_path):
    assert not Notifier({}).ready("x")
    gone = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens.sock")})
    assert gone.enabled and not gone.watchdog()


def test_watchdog_interval_is_half_watchdog_usec_for_this_process_only():
    assert watchdog_interval({"WATCHDOG_USEC": "60000000"}) == 30.0
    assert watchdog_interval({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid())}) == 30.0
    assert watchdog_interval({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({}) is None and watchdog_interval({"WATCHDOG_USEC": "junk"}) is None
