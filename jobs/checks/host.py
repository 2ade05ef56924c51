"""Host checks through psutil (not parsing top/free/df): CPU %, memory %, disk % per mount point."""

from __future__ import annotations

import psutil

from jobs.checks import CheckContext, CheckResult, Probe, graded


def probes(context: CheckContext) -> list[Probe]:
    options = context.options
    result: list[Probe] = []
    if options.cpu.enabled:
        result.append(Probe("host.cpu", options.check_timeout, lambda: [cpu(context)],
                            lambda timeout: [_timed_out("host.cpu", "%", options.cpu, timeout)]))
    if options.memory.enabled:
        result.append(Probe("host.memory", options.check_timeout, lambda: [memory(context)],
                            lambda timeout: [_timed_out("host.memory", "%", options.memory, timeout)]))
    if options.disk.enabled:
        paths = list(context.settings.service.disk_paths)
        result.append(Probe("host.disk", options.check_timeout, lambda: disks(context, paths),
                            lambda timeout: [_timed_out(f"host.disk:{path}", "%", options.disk, timeout) for path in paths]))
    return result


def cpu(context: CheckContext) -> CheckResult:
    """CPU busy % over a short sample (jobs.monitor.cpu_sample), all cores together."""
    percent = psutil.cpu_percent(interval=context.options.cpu_sample)
    load = psutil.getloadavg()
    return graded("host.cpu", percent, context.options.cpu, unit="%",
                  message=f"CPU {percent:.1f} % busy (load average {load[0]:.2f}, {psutil.cpu_count()} CPUs)",
                  details={"load_average": [round(value, 2) for value in load], "cpus": psutil.cpu_count()})


def memory(context: CheckContext) -> CheckResult:
    """Memory in use %, as `free` computes it from total and available."""
    virtual = psutil.virtual_memory()
    used_mb = (virtual.total - virtual.available) / 2**20
    return graded("host.memory", virtual.percent, context.options.memory, unit="%",
                  message=f"memory {virtual.percent:.1f} % used ({used_mb:,.0f} of {virtual.total / 2**20:,.0f} MB)",
                  details={"total_mb": round(virtual.total / 2**20), "available_mb": round(virtual.available / 2**20)})


def disks(context: CheckContext, paths: list[str]) -> list[CheckResult]:
    """Disk usage % of each configured mount point; a missing path is unknown, not a crash."""
    results = []
    for path in paths:
        name = f"host.disk:{path}"
        try:
            usage = psutil.disk_usage(path)
        except OSError as error:
            results.append(CheckResult(name=name, state="unknown", unit="%", warning=context.options.disk.warning,
                                       critical=context.options.disk.critical,
                                       message=f"cannot read disk usage of {path}: {error.strerror or error}"))
            continue
        free_gb = usage.free / 2**30
        results.append(graded(name, usage.percent, context.options.disk, unit="%",
                              message=f"{path} {usage.percent:.1f} % used ({free_gb:,.1f} GB free)",
                              details={"path": path, "free_gb": round(free_gb, 2), "total_gb": round(usage.total / 2**30, 2)}))
    return results


def _timed_out(name: str, unit: str, threshold, timeout: float) -> CheckResult:
    return CheckResult(name=name, state="unknown", unit=unit, warning=threshold.warning, critical=threshold.critical,
                       message=f"no answer within {timeout:g}s")
