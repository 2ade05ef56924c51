"""The shape every notifier target has."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any


class NotifyFailed(Exception):
    """A send did not get through (its text must be safe to log: no secrets)."""


@dataclass
class Message:
    """One notification: a title, a plain-text body, the kind (for colours and icons) and the alert
    itself as data (for `command`, `file` and plugins)."""

    title: str
    body: str
    kind: str = "failure"  # failure | warning | success | info
    data: dict[str, Any] = field(default_factory=dict)


class Target(ABC):
    """One place a message goes. Subclasses implement send(); id is stable across restarts (it keys
    the outbox), display is safe to print (apprise's privacy form, never a token)."""

    kind = "target"

    def __init__(self, id: str, display: str, timeout: float | None = None):
        self.id = id
        self.display = display
        self.timeout = timeout

    @abstractmethod
    def send(self, message: Message, timeout: float) -> None:
        """Deliver the message within timeout seconds. Raise NotifyFailed when it did not get through."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} {self.display}>"
