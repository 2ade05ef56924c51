"""Service process checks against the simulator as a real process: found by command line or pid
file, resident memory, and a leak told apart from one high reading."""

from __future__ import annotations

import os
from datetime import datetime, timezone

from helpers_monitor import (FakeClock, by_name, service_dir, simulator, with_monitor,  # noqa: F401 - fixtures
                             write_settings)
from jobs.checks import CheckContext
from jobs.checks.process import check_process, least_squares, memory_growth
from scheduler.state import StateStore


def process_results(settings, state=None, clock=None, persist=True):
    context = CheckContext(settings=settings, options=settings.jobs.monitor, host="h1", state=state, persist=persist,
                           clock=clock or (lambda: datetime.now(timezone.utc)))
    return by_name(check_process(context))


def test_process_found_by_command_line_and_by_pid_file(make_config, simulator, service_dir):
    results = process_results(write_settings(make_config, simulator, service_dir))
    assert results["process.running"].state == "ok"
    assert results["process.running"].details["pids"] == [simulator.pid]
    assert results["process.memory"].state == "ok" and results["process.memory"].value > 5
    (service_dir / "service.pid").write_text(f"{simulator.pid}\n")
    by_pid_file = write_settings(make_config, simulator, service_dir, process_pattern=None, pid_file="service.pid")
    assert process_results(by_pid_file)["process.running"].details["pids"] == [simulator.pid]


def test_stopped_process_is_critical_and_memory_unknown(make_config, simulator, service_dir):
    settings = write_settings(make_config, simulator, service_dir)
    simulator.stop()
    results = process_results(settings)
    assert results["process.running"].state == "critical" and "not running" in results["process.running"].message
    assert results["process.memory"].state == "unknown"


def test_nothing_configured_to_find_the_process_is_unknown_with_what_to_set(make_config, simulator, service_dir):
    settings = write_settings(make_config, simulator, service_dir, process_pattern=None)
    result = process_results(settings)["process.running"]
    assert result.state == "unknown" and "service.process_pattern" in result.message


def test_resident_memory_crosses_its_threshold_and_comes_back(make_config, simulator, service_dir):
    settings = write_settings(make_config, simulator, service_dir)
    simulator.leak(40)
    low = with_monitor(settings, process_memory={"warning": 30, "critical": 1000})
    assert process_results(low)["process.memory"].state == "warning"
    simulator.free()
    assert process_results(with_monitor(settings, process_memory={"warning": 1000}))["process.memory"].state == "ok"


def test_memory_growing_every_cycle_is_a_leak_and_a_drop_ends_it(make_config, simulator, service_dir):
    settings = with_monitor(write_settings(make_config, simulator, service_dir),
                            memory_growth={"window": 4, "min_samples": 3, "min_span": 600, "warning": 50,
                                           "critical": 200})
    state = StateStore.open(settings)
    clock = FakeClock()
    states = []
    for _ in range(4):
        simulator.leak(25)  # 25 MB every 5 minutes: 300 MB/h
        states.append(process_results(settings, state, clock)["process.memory_growth"])
        clock.advance(300)
    assert [result.state for result in states[:2]] == ["ok", "ok"]  # still collecting samples
    assert states[-1].state == "critical" and states[-1].value > 200 and states[-1].details["fit"] > 0.9
    simulator.free()
    for _ in range(3):
        result = process_results(settings, state, clock)["process.memory_growth"]
        clock.advance(300)
    assert result.state == "ok"
    state.dispose()


def test_one_high_reading_is_not_a_leak(make_config, simulator, service_dir):
    settings = with_monitor(write_settings(make_config, simulator, service_dir),
                            memory_growth={"window": 8, "min_samples": 6})
    state = StateStore.open(settings)
    clock = FakeClock()
    context = CheckContext(settings=settings, options=settings.jobs.monitor, host="h1", state=state, clock=clock)
    readings = [200, 201, 199, 900, 200, 201, 200]
    for megabytes in readings:
        result = memory_growth(context, [4242], megabytes)
        clock.advance(300)
    assert result.state == "ok" and result.details["fit"] < 0.9
    state.dispose()


def test_growth_is_not_judged_before_the_samples_span_min_span(make_config, simulator, service_dir):
    settings = with_monitor(write_settings(make_config, simulator, service_dir),
                            memory_growth={"window": 6, "min_samples": 3})
    state = StateStore.open(settings)
    clock = FakeClock()
    context = CheckContext(settings=settings, options=settings.jobs.monitor, host="h1", state=state, clock=clock)
    for megabytes in (100, 110, 120, 130):  # steep, but over two minutes: manual runs, not a trend
        result = memory_growth(context, [4242], megabytes)
        clock.advance(40)
    assert result.state == "ok" and result.value is None and "spanning 2 of 20 min" in result.message
    state.dispose()


def test_least_squares_slope_and_fit():
    slope, fit = least_squares([(0, 100), (3600, 150), (7200, 200)])
    assert abs(slope * 3600 - 50) < 1e-9 and abs(fit - 1) < 1e-9
    assert least_squares([(5, 1), (5, 2)]) == (0.0, 0.0)


def test_process_found_as_a_systemd_units_main_pid(make_config, simulator, service_dir, tmp_path, monkeypatch):
    # no systemd in the test environment: a stand-in systemctl answers `show --property MainPID --value UNIT`
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    systemctl = bin_dir / "systemctl"
    systemctl.write_text(f'#!/bin/sh\n[ "$5" = "jackpot-service" ] && echo {simulator.pid} && exit 0\necho 0\n')
    systemctl.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    settings = write_settings(make_config, simulator, service_dir, process_pattern=None, systemd_unit="jackpot-service")
    result = process_results(settings)["process.running"]
    assert result.details["pids"] == [simulator.pid] and "systemd unit jackpot-service" in result.message
    stopped = write_settings(make_config, simulator, service_dir, process_pattern=None, systemd_unit="other")
    assert process_results(stopped)["process.running"].state == "critical"
