"""Keep secrets out of everything a person or a log can read.

Two nets: every secret the configuration holds is registered here when it is loaded (passwords,
notifier URLs and their path/query tokens), and a pattern masks the password of any URL of the form
scheme://user:password@host that reaches a log line or an error message anyway.
"""

from __future__ import annotations

import re
import threading
from urllib.parse import urlsplit

MASK = "***"

_lock = threading.Lock()
_secrets: set[str] = set()

_URL_PASSWORD = re.compile(r"(?P<prefix>[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s\"']*:)(?P<password>[^@\s\"']+)(?P<at>@)")
_KEYWORD_PASSWORD = re.compile(r"(?P<key>\bpassword\s*[=:]\s*['\"]?)(?P<value>[^\s'\",;]+)", re.IGNORECASE)


def register_secret(value: str | None) -> None:
    """Remember a secret so that redact() masks it wherever it appears. Short values are ignored."""
    if not value or len(value) < 4:
        return
    with _lock:
        _secrets.add(value)


def register_url_secrets(url: str | None, *, tokens: bool = True) -> None:
    """Register a URL and its password as secrets; with tokens=True (notifier URLs) also the
    token-like pieces of its path, query and user name (Slack, webhooks, ...)."""
    if not url:
        return
    register_secret(url)
    try:
        parts = urlsplit(url)
    except ValueError:
        return
    if parts.password:
        register_secret(parts.password)
    if not tokens:
        return
    for piece in re.split(r"[/?&=#]", parts.path + "?" + parts.query):
        # path segments and query values of notifier URLs are usually tokens (Slack, webhooks, ...)
        if len(piece) >= 8 and any(character.isdigit() for character in piece):
            register_secret(piece)
    if parts.username and len(parts.username) >= 8 and any(character.isdigit() for character in parts.username):
        register_secret(parts.username)


def redact(text: str) -> str:
    """Given any text, return it with every registered secret and any URL password masked."""
    if not text:
        return text
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    text = _URL_PASSWORD.sub(lambda m: m.group("prefix") + MASK + m.group("at"), text)
    text = _KEYWORD_PASSWORD.sub(lambda m: m.group("key") + MASK, text)
    return text


def mask_url(url: str) -> str:
    """Given a DSN, return it with the password replaced by ***."""
    return _URL_PASSWORD.sub(lambda m: m.group("prefix") + MASK + m.group("at"), url)
