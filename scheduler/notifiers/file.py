"""The `file` notifier: append one JSON object per notification to a file (an audit trail, and what
tests read)."""

from __future__ import annotations

import fcntl
import json
import os
from datetime import datetime, timezone

from scheduler.notifiers.base import Message, NotifyFailed, Target


class FileTarget(Target):
    kind = "file"

    def __init__(self, name: str, path: str):
        super().__init__(name, f"file {path}")
        self.path = path

    def send(self, message: Message, timeout: float) -> None:
        line = json.dumps({"time": datetime.now(timezone.utc).isoformat(), "target": self.id, "title": message.title,
                           "kind": message.kind, "body": message.body, "alert": message.data}, default=str)
        try:
            directory = os.path.dirname(self.path)
            if directory:
                os.makedirs(directory, exist_ok=True)
            descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX)  # whole lines even with several writers
                os.write(descriptor, (line + "\n").encode())
            finally:
                os.close(descriptor)
        except OSError as error:
            raise NotifyFailed(f"cannot append to {self.path}: {error.strerror}") from None


def create(name: str, settings) -> list[Target]:
    return [FileTarget(name, settings.path)]
