"""Schedules, misfire grace and the catch-up plan: pure functions, driven by explicit times."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

import config  # noqa: F401 - the settings model first: it imports the job modules
from scheduler.daemon import EveryTrigger, build_trigger, misfire_grace_seconds, plan_catch_up, schedule_period

UTC = timezone.utc


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_cron_weekday_0_is_sunday_as_in_crontab_not_monday_as_in_apscheduler_3():
    trigger = build_trigger("30 3 * * 0", "UTC")
    fire = trigger.get_next_fire_time(None, at("2026-11-25 12:00:00"))  # a Wednesday
    assert fire == at("2026-11-29 03:30:00") and fire.strftime("%A") == "Sunday"
    weekdays = build_trigger("0 9 * * 1-5", "UTC")
    fires, previous = [], at("2026-11-27 10:00:00")  # Friday after 09:00
    for _ in range(5):
        previous = weekdays.get_next_fire_time(previous, previous)
        fires.append(previous.strftime("%a"))
    assert fires == ["Mon", "Tue", "Wed", "Thu", "Fri"]
    assert build_trigger("0 0 * * 5-0", "UTC").get_next_fire_time(None, at("2026-11-28 12:00:00")) == at("2026-11-29 00:00:00")


def test_cron_schedule_follows_the_configured_time_zone():
    trigger = build_trigger("30 3 * * *", "Europe/Berlin")
    assert trigger.get_next_fire_time(None, at("2026-11-28 12:00:00")) == at("2026-11-29 02:30:00")


def test_interval_schedule_is_anchored_so_every_host_computes_the_same_fires():
    first_host = build_trigger("every 10m", None)
    second_host = build_trigger("every 600s", "UTC")
    now = at("2026-11-28 12:03:17.123456")
    assert first_host.get_next_fire_time(None, now) == second_host.get_next_fire_time(None, now) == at("2026-11-28 12:10:00")
    fast = build_trigger("every 300ms", None)
    fire = fast.get_next_fire_time(None, now)
    assert fire == at("2026-11-28 12:03:17.400000")
    assert fast.get_next_fire_time(fire, fire) == at("2026-11-28 12:03:17.700000")


def test_invalid_schedule_is_rejected_with_the_expected_forms():
    with pytest.raises(ValueError, match="5-field cron"):
        build_trigger("every fortnight", None)
    with pytest.raises(ValueError):
        build_trigger("61 * * * *", None)


def test_default_misfire_grace_is_half_the_period_between_1s_and_12h():
    from jobs.base import JobOptions

    options = JobOptions()
    assert misfire_grace_seconds(options, build_trigger("30 3 * * *", "UTC")) == 12 * 3600
    assert misfire_grace_seconds(options, build_trigger("0 * * * *", "UTC")) == 1800
    assert misfire_grace_seconds(options, build_trigger("every 5m", None)) == 150
    assert misfire_grace_seconds(options, build_trigger("every 1s", None)) == 1.0
    assert misfire_grace_seconds(options, build_trigger("0 4 * * 0", "UTC")) == 12 * 3600
    assert misfire_grace_seconds(JobOptions(misfire_grace="2h"), build_trigger("30 3 * * *", "UTC")) == 7200
    assert schedule_period(build_trigger("0 4 * * 0", "UTC")) == 7 * 86400


def test_daily_job_down_over_its_fire_is_caught_up_once_within_grace():
    trigger = build_trigger("30 3 * * *", "UTC")
    plan = plan_catch_up(trigger, at("2026-11-27 03:30:00"), at("2026-11-28 09:00:00"), 12 * 3600)
    assert plan.fire == at("2026-11-28 03:30:00") and plan.missed == 0


def test_daily_job_down_for_three_days_catches_up_the_latest_and_counts_the_rest_missed():
    trigger = build_trigger("30 3 * * *", "UTC")
    plan = plan_catch_up(trigger, at("2026-11-24 03:30:00"), at("2026-11-28 04:00:00"), 12 * 3600)
    assert plan.fire == at("2026-11-28 03:30:00")
    assert plan.missed == 3 and plan.first_missed == at("2026-11-25 03:30:00") and plan.last_missed == at("2026-11-27 03:30:00")


def test_missed_fire_older_than_the_grace_is_not_caught_up():
    trigger = build_trigger("0 * * * *", "UTC")
    plan = plan_catch_up(trigger, at("2026-11-28 08:00:00"), at("2026-11-28 09:45:00"), 1800)
    assert plan.fire is None and plan.missed == 1 and plan.last_missed == at("2026-11-28 09:00:00")


def test_nothing_to_catch_up_for_a_new_job_or_a_fire_not_yet_due():
    trigger = build_trigger("every 5m", None)
    assert plan_catch_up(trigger, None, at("2026-11-28 09:00:00"), 150).fire is None
    plan = plan_catch_up(trigger, at("2026-11-28 09:00:00"), at("2026-11-28 09:04:59"), 150)
    assert plan.fire is None and plan.missed == 0


def test_interval_job_down_for_a_day_is_planned_without_walking_every_fire():
    trigger = build_trigger("every 1s", None)
    assert isinstance(trigger, EveryTrigger)
    now = at("2026-11-28 09:00:00.500000")
    plan = plan_catch_up(trigger, now - timedelta(days=1), now, 60)
    assert plan.fire == at("2026-11-28 09:00:00") and plan.missed == 86399


def test_readme_schedule_table_matches_each_jobs_scope_schedule_and_timeout():
    import re
    from pathlib import Path

    from config.types import format_duration
    from jobs.registry import all_jobs

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("<!-- section: daemon -->", 1)[1].split("<!-- section:", 1)[0]
    rows = {match.group(1): match.groups()[1:] for match in
            re.finditer(r"^\| (\w+) \| (database|host) \| `([^`]+)`[^|]*\| ([^|]+) \|$", section, re.MULTILINE)}
    units = {"h": "h", "min": "m", "s": "s"}
    for name, module in all_jobs().items():
        options = module.Options()
        assert name in rows, f"README's schedule table lacks {name}"
        scope, schedule, timeout = rows[name]
        number, unit = timeout.strip().split(" ")
        assert (scope, schedule, f"{number}{units[unit]}") == (module.SCOPE, options.schedule, format_duration(options.timeout)), name
