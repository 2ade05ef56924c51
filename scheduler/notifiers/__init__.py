"""Notifiers: how a message reaches people.

Built in: `apprise` (one target per URL: email, Slack, PagerDuty, Teams, webhooks, ...), `file` (one
JSON object per line: audit and tests) and `command` (a program with the alert as JSON on stdin).
Third-party notifiers register a factory in the entry point group `jackpot_maint.notifiers`:

    [project.entry-points."jackpot_maint.notifiers"]
    sms = "my_package.sms:create"      # create(name, settings: NotifierSettings) -> list[Target]

Every target has the same shape (scheduler.notifiers.base.Target): a stable `id`, a `display` safe
to print, and `send(message, timeout)` raising NotifyFailed.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any, Callable

from scheduler.notifiers.base import Message, NotifyFailed, Target

__all__ = ["Message", "NotifyFailed", "Target", "build_targets", "plugin_names", "known_types"]

BUILTIN = ("apprise", "file", "command")


def _plugins() -> dict[str, Any]:
    return {point.name: point for point in entry_points(group="jackpot_maint.notifiers")}


def plugin_names() -> list[str]:
    """The notifier types third-party packages registered, sorted."""
    return sorted(_plugins())


def known_types() -> list[str]:
    return [*BUILTIN, *plugin_names()]


def _factory(kind: str) -> Callable[..., list[Target]]:
    from scheduler.errors import ConfigError

    if kind == "apprise":
        from scheduler.notifiers.apprise import create
        return create
    if kind == "file":
        from scheduler.notifiers.file import create
        return create
    if kind == "command":
        from scheduler.notifiers.command import create
        return create
    plugins = _plugins()
    if kind not in plugins:
        raise ConfigError(f"unknown notifier type {kind!r}. Available notifiers: {', '.join(known_types())}",
                          hint="install the plugin that provides it, or fix notifiers.<name>.type")
    try:
        return plugins[kind].load()
    except Exception as error:  # noqa: BLE001 - a broken plugin is a configuration problem
        raise ConfigError(f"the notifier plugin {kind!r} ({plugins[kind].value}) failed to load: {error}") from None


def build_targets(name: str, notifier_settings: Any, default_timeout: float) -> list[Target]:
    """Given a notifier's name and its [notifiers.<name>] settings, return its targets (an apprise
    notifier with three URLs is three targets). Raise ConfigError for an unknown type or bad URL."""
    targets = _factory(notifier_settings.type)(name, notifier_settings)
    for target in targets:
        if target.timeout is None:
            target.timeout = notifier_settings.timeout or default_timeout
    return list(targets)
