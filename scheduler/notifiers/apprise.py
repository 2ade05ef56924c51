"""The `apprise` notifier: each URL of [notifiers.<name>] urls is one target.

apprise URLs carry tokens, so a target is only ever shown in apprise's privacy form
(`Apprise.instantiate(url).url(privacy=True)`). apprise's socket timeouts follow the send timeout
unless the URL sets its own `cto` / `rto`.
"""

from __future__ import annotations

import threading
from urllib.parse import parse_qs, urlsplit

from scheduler.notifiers.base import Message, NotifyFailed, Target
from scheduler.redact import MASK, redact, register_url_secrets

_KINDS = {"failure": "failure", "warning": "warning", "success": "success", "info": "info"}


def _scheme(url: str) -> str:
    return url.split("://", 1)[0] + "://" if "://" in url else "(no scheme)"


def privacy_form(url: str) -> str:
    """apprise's privacy form hides passwords and API keys but prints the path tokens of generic
    webhooks (json://host/hook/TOKEN) in full: mask those too, and drop apprise's default options."""
    scheme, _, rest = url.partition("://")
    location, _, query = rest.partition("?")
    host, _, path = location.partition("/")
    pieces = [MASK if len(piece) >= 8 and not piece.isalpha() else piece for piece in path.split("/")]
    shown = f"{scheme}://{host}" + ("/" + "/".join(pieces) if path else "")
    kept = [item for item in query.split("&") if item and item.split("=")[0] not in _APPRISE_DEFAULTS]
    return redact(shown + ("?" + "&".join(kept) if kept else ""))


_APPRISE_DEFAULTS = {"method", "overflow", "retry", "wait", "optional", "format", "image", "footer", "timestamp",
                     "blocks", "mode", "verify", "rto", "cto", "emojis", "tz", "store"}


class AppriseTarget(Target):
    kind = "apprise"

    def __init__(self, target_id: str, url: str):
        import apprise

        register_url_secrets(url)
        self._url = url
        self._plugin = apprise.Apprise.instantiate(url)
        if self._plugin is None:
            from scheduler.errors import ConfigError

            raise ConfigError(f"At 'notifiers.{target_id.split('#')[0]}.urls': apprise cannot use the URL starting "
                              f"{_scheme(url)} (unknown service or missing parts)",
                              hint="see https://github.com/caronc/apprise/wiki for the URL of each service")
        query = parse_qs(urlsplit(url).query)
        self._own_timeouts = "cto" in query or "rto" in query
        self._lock = threading.Lock()  # one plugin instance: its throttle state is not thread-safe
        super().__init__(target_id, privacy_form(self._plugin.url(privacy=True)))

    def send(self, message: Message, timeout: float) -> None:
        import apprise

        with self._lock:
            if not self._own_timeouts:
                self._plugin.socket_connect_timeout = min(timeout, 4.0)
                self._plugin.socket_read_timeout = timeout
            try:
                delivered = self._plugin.notify(body=message.body, title=message.title,
                                                notify_type=_KINDS.get(message.kind, "info"),
                                                body_format=apprise.NotifyFormat.TEXT)
            except Exception as error:  # noqa: BLE001 - a plugin's bug is a failed send, never a crash
                raise NotifyFailed(f"apprise failed sending to {self.display}: {type(error).__name__}") from None
        if not delivered:
            raise NotifyFailed(f"apprise could not deliver to {self.display} (its reason is in the log)")


def create(name: str, settings) -> list[Target]:
    urls = [url.get_secret_value() if hasattr(url, "get_secret_value") else str(url) for url in settings.urls]
    if len(urls) == 1:
        return [AppriseTarget(name, urls[0])]
    return [AppriseTarget(f"{name}#{index}", url) for index, url in enumerate(urls, start=1)]
