"""Service endpoint checks against the simulated service as a real process."""

from __future__ import annotations

import time

from helpers_monitor import by_name, service_dir, simulator, write_settings  # noqa: F401 - fixtures
from jobs.monitor import run_checks


def endpoint_results(settings):
    return by_name(run_checks(settings, settings.jobs.monitor.model_copy(update={
        "database": settings.jobs.monitor.database.model_copy(update={"enabled": False})})))


def test_healthy_service_passes_every_endpoint_check(make_config, simulator, service_dir):
    settings = write_settings(make_config, simulator, service_dir)
    results = endpoint_results(settings)
    for name in ("service.health", "service.health_database", "service.health_jackpot", "service.metrics",
                 "service.health.response_time", "service.error_rate"):
        assert results[name].state == "ok", results[name]
    assert results["service.health"].details["text"] == "healthy"
    assert results["service.error_rate"].value == 0.0


def test_degraded_is_a_warning_and_down_is_critical_and_both_come_back(make_config, simulator, service_dir):
    settings = write_settings(make_config, simulator, service_dir)
    simulator.set_mode("degraded", endpoint="/health/jackpot")
    results = endpoint_results(settings)
    assert results["service.health_jackpot"].state == "warning"
    assert "degraded" in results["service.health_jackpot"].message
    assert results["service.health"].state == "ok"

    simulator.set_mode("down")
    results = endpoint_results(settings)
    assert results["service.health"].state == "critical"
    assert "HTTP 503" in results["service.health"].message

    simulator.set_mode("healthy")
    results = endpoint_results(settings)
    assert results["service.health"].state == "ok" and results["service.health_jackpot"].state == "ok"


def test_slow_endpoint_crosses_the_response_time_threshold_and_comes_back(make_config, simulator, service_dir):
    settings = write_settings(make_config, simulator, service_dir)
    simulator.set_slow_seconds(0.7)
    simulator.set_mode("slow", endpoint="/health")
    results = endpoint_results(settings)
    latency = results["service.health.response_time"]
    assert (latency.state, latency.warning) == ("warning", 0.5) and latency.value >= 0.7
    assert results["service.health"].state == "ok"  # slow, but up

    simulator.set_mode("healthy")
    assert endpoint_results(settings)["service.health.response_time"].state == "ok"


def test_error_rate_above_one_percent_is_critical_and_comes_back(make_config, simulator, service_dir):
    settings = write_settings(make_config, simulator, service_dir)
    simulator.set_error_rate(2.5)
    result = endpoint_results(settings)["service.error_rate"]
    assert (result.state, result.value, result.critical) == ("critical", 2.5, 1.0)
    simulator.set_error_rate(0.4)
    assert endpoint_results(settings)["service.error_rate"].state == "ok"


def test_hanging_endpoint_is_bounded_by_its_timeout_and_does_not_stall_other_checks(make_config, simulator, service_dir):
    settings = write_settings(make_config, simulator, service_dir, request_timeout="500ms")
    simulator.set_mode("hang", endpoint="/health")
    started = time.perf_counter()
    results = endpoint_results(settings)
    elapsed = time.perf_counter() - started
    assert elapsed < 0.5 + 0.5, elapsed
    assert results["service.health"].state == "critical"
    assert "no answer within 0.5s" in results["service.health"].message
    assert results["service.metrics"].state == "ok"  # the other endpoints answered meanwhile
    simulator.set_mode("healthy")


def test_stopped_service_is_critical_on_every_endpoint(make_config, simulator, service_dir):
    settings = write_settings(make_config, simulator, service_dir)
    simulator.stop()
    results = endpoint_results(settings)
    assert results["service.health"].state == "critical"
    assert "not reachable" in results["service.health"].message
    assert results["service.health.response_time"].state == "unknown"
