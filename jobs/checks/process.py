"""Service process checks: running, resident memory, and memory growing steadily (a leak).

The process is found by pid file, systemd unit (MainPID) or a regular expression over command
lines (service.pid_file / systemd_unit / process_pattern; the first one configured wins). Its
children are counted with it (a Node.js cluster). A leak is a sustained upward slope: the
least-squares slope of resident memory over the last `window` samples (one per cycle, kept in the
state store), judged once there are `min_samples` spanning at least `min_span`, and reported only
when the samples fit a line well (r >= min_fit), so one high reading or a sawtooth of garbage
collection does not alarm.
"""

from __future__ import annotations

import math
import os
import re
import subprocess

import psutil

from jobs.checks import CheckContext, CheckResult, Probe, graded

SAMPLES_KEY = "process.memory_samples"


class DiscoveryError(Exception):
    """The configured way of finding the process could not be used (not: the process is not running)."""


def probes(context: CheckContext) -> list[Probe]:
    options = context.options
    if not options.process.enabled:
        return []
    return [Probe("process", options.check_timeout, lambda: check_process(context), lambda timeout: _unknown(
        context, f"no answer within {timeout:g}s"))]


def find_processes(service) -> tuple[list[psutil.Process], str]:
    """Given the [service] settings, return (the service's processes with their children, how found).

    An empty list means: configured, and not running. Raise DiscoveryError when nothing is configured
    or the configured source cannot be read.
    """
    if service.pid_file:
        path = service.resolve(service.pid_file)
        how = f"pid file {path}"
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read().strip()
        except FileNotFoundError:
            return [], how + " (missing)"
        except OSError as error:
            raise DiscoveryError(f"cannot read pid file {path}: {error.strerror}") from None
        if not text.isdigit():
            raise DiscoveryError(f"pid file {path} does not hold a pid: {text[:40]!r}")
        roots = _existing([int(text)])
    elif service.systemd_unit:
        how = f"systemd unit {service.systemd_unit}"
        try:
            completed = subprocess.run(["systemctl", "show", "--property", "MainPID", "--value", service.systemd_unit],
                                       capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise DiscoveryError(f"cannot ask systemd about {service.systemd_unit}: {error}") from None
        pid_text = completed.stdout.strip()
        if completed.returncode != 0 or not pid_text.isdigit():
            raise DiscoveryError(f"systemctl show {service.systemd_unit} failed: {completed.stderr.strip()[:200]}")
        roots = _existing([int(pid_text)]) if int(pid_text) > 0 else []
    elif service.process_pattern:
        how = f"command line matching {service.process_pattern!r}"
        try:
            pattern = re.compile(service.process_pattern)
        except re.error as error:
            raise DiscoveryError(f"service.process_pattern is not a valid regular expression: {error}") from None
        mine = _own_lineage()
        roots = []
        for process in psutil.process_iter(["pid", "cmdline"]):
            command = " ".join(process.info.get("cmdline") or [])
            if process.info["pid"] not in mine and command and pattern.search(command):
                roots.append(process)
        matched = {process.pid for process in roots}
        # keep the top of each matching tree; its children are counted with it below
        roots = [process for process in roots if _safe_ppid(process) not in matched]
    else:
        raise DiscoveryError("no way to find the service's process is configured "
                             "(set service.pid_file, service.systemd_unit or service.process_pattern)")
    processes: dict[int, psutil.Process] = {}
    for root in roots:
        processes[root.pid] = root
        try:
            for child in root.children(recursive=True):
                processes[child.pid] = child
        except psutil.Error:
            pass
    return list(processes.values()), how


def check_process(context: CheckContext) -> list[CheckResult]:
    try:
        processes, how = find_processes(context.settings.service)
    except DiscoveryError as error:
        return _unknown(context, str(error))
    if not processes:
        context.remember(SAMPLES_KEY, {"pids": [], "samples": []})
        return [CheckResult(name="process.running", state="critical", value=0, message=f"not running ({how})",
                            details={"found_by": how, "text": "not running"}),
                *_unknown(context, "the process is not running")[1:]]
    rss_bytes = 0
    pids = []
    for process in processes:
        try:
            rss_bytes += process.memory_info().rss
            pids.append(process.pid)
        except psutil.Error:
            continue
    rss_mb = rss_bytes / 2**20
    pids.sort()
    running = CheckResult(name="process.running", state="ok", value=len(pids), unit="",
                          message=f"running: pid {', '.join(map(str, pids[:5]))}{' …' if len(pids) > 5 else ''} ({how})",
                          details={"pids": pids, "found_by": how, "text": f"{len(pids)} process(es)"})
    memory = graded("process.memory", rss_mb, context.options.process_memory, unit="MB",
                    message=f"resident memory {rss_mb:,.0f} MB across {len(pids)} process(es)",
                    details={"pids": pids})
    return [running, memory, memory_growth(context, pids, rss_mb)]


def memory_growth(context: CheckContext, pids: list[int], rss_mb: float) -> CheckResult:
    """Add this cycle's sample and judge the slope of the last `window` samples (MB per hour)."""
    options = context.options.memory_growth
    now = context.clock().timestamp()
    stored = context.recall(SAMPLES_KEY) or {}
    samples = [tuple(sample) for sample in stored.get("samples", [])] if stored.get("pids") == pids else []
    samples = [sample for sample in samples if sample[0] < now]  # a clock step back starts over
    samples.append((now, round(rss_mb, 3)))
    samples = samples[-options.window:]
    context.remember(SAMPLES_KEY, {"pids": pids, "samples": samples})
    base = {"samples": len(samples), "window": options.window}
    span = samples[-1][0] - samples[0][0]
    if len(samples) < options.min_samples or span < options.min_span:
        return CheckResult(name="process.memory_growth", state="ok", value=None, unit="MB/h", warning=options.warning,
                           critical=options.critical, details={**base, "text": f"{len(samples)}/{options.min_samples} samples"},
                           message=(f"collecting samples ({len(samples)} of {options.min_samples} needed, spanning "
                                    f"{span / 60:.0f} of {options.min_span / 60:.0f} min)"))
    slope_per_second, fit = least_squares(samples)
    slope = slope_per_second * 3600
    sustained = fit >= options.min_fit
    result = graded("process.memory_growth", slope, options, unit="MB/h",
                    message=(f"memory {'rising' if slope > 0 else 'changing'} {slope:+,.1f} MB/h over {len(samples)} samples "
                             f"(fit r={fit:.2f}{'' if sustained else ', not sustained'}), now {rss_mb:,.0f} MB"),
                    details={**base, "fit": round(fit, 3), "first_mb": samples[0][1], "last_mb": samples[-1][1]})
    if not sustained and result.state != "ok":
        result.state = "ok"
    return result


def least_squares(samples: list[tuple[float, float]]) -> tuple[float, float]:
    """Given (time, value) samples, return (slope per time unit, correlation r). r is 0 when undefined."""
    count = len(samples)
    mean_t = sum(t for t, _ in samples) / count
    mean_v = sum(v for _, v in samples) / count
    cov = sum((t - mean_t) * (v - mean_v) for t, v in samples)
    var_t = sum((t - mean_t) ** 2 for t, _ in samples)
    var_v = sum((v - mean_v) ** 2 for _, v in samples)
    if var_t == 0:
        return 0.0, 0.0
    slope = cov / var_t
    fit = cov / math.sqrt(var_t * var_v) if var_v > 0 else 0.0
    return slope, fit


def _unknown(context: CheckContext, reason: str) -> list[CheckResult]:
    options = context.options
    return [
        CheckResult(name="process.running", state="unknown", message=reason),
        CheckResult(name="process.memory", state="unknown", unit="MB", warning=options.process_memory.warning,
                    critical=options.process_memory.critical, message=reason),
        CheckResult(name="process.memory_growth", state="unknown", unit="MB/h", warning=options.memory_growth.warning,
                    critical=options.memory_growth.critical, message=reason),
    ]


def _existing(pids: list[int]) -> list[psutil.Process]:
    processes = []
    for pid in pids:
        try:
            process = psutil.Process(pid)
            if process.status() != psutil.STATUS_ZOMBIE:
                processes.append(process)
        except psutil.Error:
            continue
    return processes


def _own_lineage() -> set[int]:
    """This process and its ancestors (a shell running us has the pattern in its command line)."""
    pids = {os.getpid()}
    try:
        for parent in psutil.Process().parents():
            pids.add(parent.pid)
    except psutil.Error:
        pass
    return pids


def _safe_ppid(process: psutil.Process) -> int | None:
    try:
        return process.ppid()
    except psutil.Error:
        return None
