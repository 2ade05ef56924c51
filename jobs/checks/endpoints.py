"""Service endpoint checks: /health, /health/database, /health/jackpot and /metrics.

Each endpoint is one GET with a timeout (service.request_timeout), in its own probe. It yields the
endpoint's availability (reachable, HTTP 2xx, `status` == "healthy"; "degraded" is a warning) and
its response time (the guide's slow-response symptom: over 500 ms). /metrics also yields the
service's error rate (critical over 1.0 %, the guide's threshold).
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from typing import Any

from jobs.checks import CheckContext, CheckResult, Probe, graded

USER_AGENT = "jackpot-maint-monitor"
WARNING_STATUSES = {"degraded", "warning", "warn"}


def probes(context: CheckContext) -> list[Probe]:
    service = context.settings.service
    timeout = service.request_timeout
    result = []
    for name, path in service.endpoints().items():
        url = service.base_url + path
        result.append(Probe(
            f"service.{name}", timeout + 0.25,
            lambda name=name, url=url: check_endpoint(context, name, url),
            lambda limit, name=name, url=url: _no_answer(context, name, url, f"no complete answer within {timeout:g}s"),
        ))
    return result


def fetch(url: str, timeout: float) -> tuple[int, Any, float]:
    """GET url; return (HTTP status, parsed JSON body or None, seconds). Raise OSError when unreachable."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept": "application/json"})
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - configured http(s) URL
            status, raw = response.status, response.read(1_000_000)
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read(1_000_000) if error.fp else b""
    elapsed = time.perf_counter() - started
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    return status, body, elapsed


def check_endpoint(context: CheckContext, name: str, url: str) -> list[CheckResult]:
    """Given an endpoint, return its availability and response-time results (and error rate for metrics)."""
    options = context.options
    try:
        status, body, elapsed = fetch(url, context.settings.service.request_timeout)
    except (socket.timeout, TimeoutError):
        return _no_answer(context, name, url, f"no answer within {context.settings.service.request_timeout:g}s (timeout)")
    except urllib.error.URLError as error:
        reason = error.reason
        if isinstance(reason, (socket.timeout, TimeoutError)):
            return _no_answer(context, name, url, f"no answer within {context.settings.service.request_timeout:g}s (timeout)")
        return _no_answer(context, name, url, f"not reachable: {reason}")
    except (OSError, ValueError) as error:
        return _no_answer(context, name, url, f"not reachable: {error}")

    reported = body.get("status") if isinstance(body, dict) else None
    if status >= 400:
        state, text = "critical", f"HTTP {status}" + (f", status {reported!r}" if reported else "")
    elif name == "metrics":
        state, text = ("ok", f"HTTP {status}") if isinstance(body, dict) else ("warning", f"HTTP {status}, body is not JSON")
    elif reported == "healthy":
        state, text = "ok", "healthy"
    elif isinstance(reported, str) and reported.lower() in WARNING_STATUSES:
        state, text = "warning", f"status {reported!r}"
    else:
        state, text = "critical", f"status {reported!r}" if reported is not None else f"HTTP {status} without a status field"
    availability = CheckResult(name=f"service.{name}", state=state, value=float(status), unit="",
                               message=f"{url}: {text} in {elapsed * 1000:.0f} ms",
                               details={"url": url, "http_status": status, "text": text,
                                        "body": _short(body)})
    latency = graded(f"service.{name}.response_time", elapsed, options.response_time, unit="s",
                     message=f"{url} answered in {elapsed * 1000:.0f} ms", details={"url": url})
    results = [availability, latency]
    if name == "metrics":
        results.append(_error_rate(context, url, body))
    return results


def _error_rate(context: CheckContext, url: str, body: Any) -> CheckResult:
    threshold = context.options.error_rate
    value = body.get("error_rate") if isinstance(body, dict) else None
    try:
        rate = None if value is None or isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        rate = None
    if rate is None:
        return CheckResult(name="service.error_rate", state="unknown", unit="%", warning=threshold.warning,
                           critical=threshold.critical, message=f"{url} reports no numeric error_rate")
    return graded("service.error_rate", rate, threshold, unit="%", message=f"error rate {rate:.2f} % ({url})",
                  details={"url": url})


def _no_answer(context: CheckContext, name: str, url: str, reason: str) -> list[CheckResult]:
    threshold = context.options.response_time
    results = [
        CheckResult(name=f"service.{name}", state="critical", message=f"{url}: {reason}",
                    details={"url": url, "text": "no answer"}),
        CheckResult(name=f"service.{name}.response_time", state="unknown", unit="s", warning=threshold.warning,
                    critical=threshold.critical, message=f"{url}: {reason}", details={"url": url}),
    ]
    if name == "metrics":
        results.append(CheckResult(name="service.error_rate", state="unknown", unit="%",
                                   warning=context.options.error_rate.warning,
                                   critical=context.options.error_rate.critical, message=f"{url}: {reason}"))
    return results


def _short(body: Any) -> Any:
    text = json.dumps(body, default=str) if body is not None else ""
    return body if len(text) <= 500 else text[:500] + "…"
