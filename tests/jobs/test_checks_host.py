"""Host checks (psutil): CPU, memory and disk cross thresholds set via config and come back."""

from __future__ import annotations

from config.loader import load_settings
from jobs.checks import CheckContext, grade
from jobs.checks import host as host_checks


def context_for(make_config, extra: str = "") -> CheckContext:
    settings = load_settings(str(make_config(extra)), environ={}).settings
    return CheckContext(settings=settings, options=settings.jobs.monitor, host="test-host")


def test_default_thresholds_are_the_guides_80_85_90():
    from jobs.monitor import Options

    options = Options()
    assert (options.cpu.warning, options.memory.warning, options.disk.warning) == (80, 85, 90)
    assert options.cpu.for_cycles == 3 and options.for_cycles == 2 and options.recover_cycles == 2
    assert options.error_rate.critical == 1.0 and options.response_time.warning == 0.5
    assert options.long_queries.warning == 300


def test_a_partial_threshold_table_keeps_the_other_defaults(make_config):
    context = context_for(make_config, '[jobs.monitor.cpu]\nwarning = 70\n')
    assert (context.options.cpu.warning, context.options.cpu.critical, context.options.cpu.for_cycles) == (70, 95, 3)


def test_cpu_crosses_a_threshold_set_low_and_comes_back_when_set_high(make_config):
    low = context_for(make_config, '[jobs.monitor]\ncpu_sample = "50ms"\n[jobs.monitor.cpu]\nwarning = -1\ncritical = 101\n')
    result = host_checks.cpu(low)
    assert result.state == "warning" and 0 <= result.value <= 100 and result.unit == "%"
    high = context_for(make_config, '[jobs.monitor]\ncpu_sample = "50ms"\n[jobs.monitor.cpu]\nwarning = 101\ncritical = 101\n')
    assert host_checks.cpu(high).state == "ok"


def test_memory_crosses_its_thresholds_and_comes_back(make_config):
    critical = context_for(make_config, '[jobs.monitor.memory]\nwarning = 0\ncritical = 0.01\n')
    result = host_checks.memory(critical)
    assert result.state == "critical" and "MB" in result.message
    assert host_checks.memory(context_for(make_config, '[jobs.monitor.memory]\nwarning = 100\ncritical = 100\n')).state == "ok"


def test_disk_checks_each_configured_mount_point_and_reports_a_missing_one_as_unknown(make_config, tmp_path):
    context = context_for(make_config, f'[service]\ndisk_paths = ["/", "{tmp_path}/absent"]\n'
                                       '[jobs.monitor.disk]\nwarning = 0\ncritical = 100\n')
    root, missing = host_checks.disks(context, context.settings.service.disk_paths)
    assert root.name == "host.disk:/" and root.state == "warning" and root.details["free_gb"] > 0
    assert missing.state == "unknown" and "absent" in missing.message
    context = context_for(make_config, '[jobs.monitor.disk]\nwarning = 100\ncritical = 100\n')
    assert host_checks.disks(context, ["/"])[0].state == "ok"


def test_grade_is_strict_and_knows_lower_is_worse():
    assert grade(80, 80, 95) == "ok" and grade(80.1, 80, 95) == "warning" and grade(96, 80, 95) == "critical"
    assert grade(94, 95, 90, lower_is_worse=True) == "warning" and grade(89, 95, 90, lower_is_worse=True) == "critical"
    assert grade(None, 1, 2) == "unknown" and grade(5, None, None) == "ok"
