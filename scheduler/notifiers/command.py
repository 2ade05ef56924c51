"""The `command` notifier: run a program with the alert as JSON on stdin.

The title and kind are also in the environment (JACKPOT_ALERT_TITLE, JACKPOT_ALERT_KIND) for
simple shell scripts. A non-zero exit or a timeout is a failed send (retried later).
"""

from __future__ import annotations

import json
import os
import subprocess

from scheduler.notifiers.base import Message, NotifyFailed, Target
from scheduler.redact import redact


class CommandTarget(Target):
    kind = "command"

    def __init__(self, name: str, command: list[str]):
        super().__init__(name, "command " + os.path.basename(command[0]))
        self.command = command

    def send(self, message: Message, timeout: float) -> None:
        payload = json.dumps({"title": message.title, "kind": message.kind, "body": message.body,
                              "alert": message.data}, default=str)
        environment = dict(os.environ, JACKPOT_ALERT_TITLE=message.title, JACKPOT_ALERT_KIND=message.kind)
        try:
            completed = subprocess.run(self.command, input=payload, capture_output=True, text=True, timeout=timeout,
                                       env=environment, check=False)
        except subprocess.TimeoutExpired:
            raise NotifyFailed(f"{self.display} did not finish within {timeout:g}s (killed)") from None
        except OSError as error:
            raise NotifyFailed(f"cannot run {self.command[0]}: {error.strerror}") from None
        if completed.returncode != 0:
            tail = " ".join((completed.stderr or completed.stdout or "").strip().splitlines()[-3:])[:300]
            raise NotifyFailed(f"{self.display} exited with {completed.returncode}: {redact(tail)}")


def create(name: str, settings) -> list[Target]:
    return [CommandTarget(name, list(settings.command))]
