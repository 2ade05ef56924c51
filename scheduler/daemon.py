"""The daemon: `jackpot-maint run`. Decides *when* each job runs, and keeps running whatever happens.

The loop is boring on purpose (see STYLE.md). APScheduler 3.x holds the schedule in memory, rebuilt
from the configuration at start and on every reload. Its loop is this module's loop too: each turn
(at most every TICK seconds) first acts on the flags the signal handlers set (stop, reload), pings
the systemd watchdog, then starts the jobs that are due. A hung loop therefore stops pinging and
systemd restarts the daemon. Slow work (alert escalation, heartbeat, metrics file, probing an
unreachable database, pruning) happens in one housekeeping thread so it never delays a fire.

Which jobs run where: each job module's SCOPE says it. "database" jobs (vacuum_analyze, trim_history,
validate_data, monitor, ping_database) run once across all hosts for each scheduled fire (advisory
lock + a claim row in the target database, see scheduler.locks); "host" jobs (rotate_logs) run on
every host.

Catch-up: what was missed is read from the run ledger (the last scheduled_for of each job against its
schedule). After downtime, or after the target database was unreachable, the latest missed fire is
run once (trigger=catch-up) when it is no older than the job's misfire_grace; the other missed fires
are recorded as one 'missed' entry. misfire_grace unset means half the schedule's period, at least 1 s
and at most 12 h: a daily job is caught up within 12 hours, an hourly one within 30 minutes, a
5-minute one within 150 seconds.
"""

from __future__ import annotations

import concurrent.futures
import fcntl
import importlib
import json
import logging
import math
import os
import signal
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from traceback import format_tb
from typing import Any

from apscheduler.events import (EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED,
                                JobExecutionEvent)
from apscheduler.executors.pool import BasePoolExecutor
from apscheduler.schedulers.base import STATE_STOPPED
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from loguru import logger

from scheduler import __version__

TICK = 0.5  # seconds: how quickly the loop notices a signal flag
EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)  # interval schedules are anchored here, on every host
MAX_DEFAULT_GRACE = 12 * 3600.0
HEARTBEAT_NAMESPACE = "daemon"
PID_FILE = "daemon.pid"


# ---- schedules ---------------------------------------------------------------------------------


class EveryTrigger(BaseTrigger):
    """'every 10m': fire at EPOCH + k * interval. Anchored to a fixed epoch (not to the start time),
    so every host computes the same fire times and a fire can be claimed once across hosts."""

    __slots__ = ("step", "timezone", "text")

    def __init__(self, seconds: float, tz: Any, text: str = ""):
        self.step = max(int(round(seconds * 1_000_000)), 1)  # microseconds: exact integer arithmetic
        self.timezone = tz
        self.text = text or f"every {seconds:g}s"

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime:
        if previous_fire_time is not None:
            ticks = _microseconds_since_epoch(previous_fire_time) // self.step + 1
        else:
            ticks = -(-_microseconds_since_epoch(now) // self.step)  # ceil: a fire exactly now is due
        return (EPOCH + timedelta(microseconds=ticks * self.step)).astimezone(self.timezone)

    def latest_at_or_before(self, moment: datetime) -> datetime:
        ticks = _microseconds_since_epoch(moment) // self.step
        return (EPOCH + timedelta(microseconds=ticks * self.step)).astimezone(self.timezone)

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"<EveryTrigger ({self.text})>"


def _microseconds_since_epoch(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


_CRON_WEEKDAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def _cron_weekdays(field: str) -> str:
    """Given a crontab weekday field (0 and 7 = Sunday), return APScheduler 3's spelling (names).

    APScheduler 3.x counts 0 as Monday (a documented historical mistake), so numbers are translated
    to names; ranges are expanded so that '0-6' or '5-0' never become an invalid 'sun-sat' range.
    """
    if field == "*" or not any(character.isdigit() for character in field):
        return field
    days: list[str] = []
    for item in field.split(","):
        part, _, step_text = item.partition("/")
        step = int(step_text) if step_text else 1
        if part == "*":
            numbers = list(range(0, 7, step))
        elif "-" in part:
            first, last = part.split("-", 1)
            if not (first.isdigit() and last.isdigit()):
                days.append(item)
                continue
            start, end = int(first), int(last)
            numbers = list(range(start, end + 1, step)) if start <= end else list(range(start, 7, step)) + list(range(0, end + 1, step))
        elif part.isdigit():
            numbers = [int(part)]
        else:
            days.append(item)
            continue
        for number in numbers:
            if not 0 <= number <= 7:
                raise ValueError(f"day of week {number} out of range 0-7 (0 and 7 are Sunday)")
            name = _CRON_WEEKDAYS[number]
            if name not in days:
                days.append(name)
    return ",".join(days)


def resolve_timezone(name: str | None) -> Any:
    """Given an IANA name or None, return the tzinfo (None: the host's)."""
    if name:
        from zoneinfo import ZoneInfo

        return ZoneInfo(name)
    from tzlocal import get_localzone

    return get_localzone()


def build_trigger(schedule: str, timezone: str | None) -> BaseTrigger:
    """Given a 5-field cron expression ('30 3 * * *', weekday 0 = Sunday) or 'every 10m', and an IANA
    time zone (None: the host's), return the APScheduler trigger. Raise ValueError for anything else."""
    from config.types import _EVERY, parse_duration

    text = " ".join(str(schedule).split())
    tz = resolve_timezone(timezone)
    match = _EVERY.match(text)
    if match:
        return EveryTrigger(parse_duration(match.group("amount")), tz, text)
    fields = text.split(" ")
    if len(fields) != 5:
        raise ValueError(f"expected a 5-field cron expression (minute hour day month weekday) or 'every 10m', got {schedule!r}")
    minute, hour, day, month, weekday = fields
    return CronTrigger(minute=minute, hour=hour, day=day, month=month, day_of_week=_cron_weekdays(weekday), timezone=tz)


def schedule_period(trigger: BaseTrigger, now: datetime | None = None) -> float:
    """The time between the next two fires of a trigger, in seconds (its period, for sizing grace)."""
    if isinstance(trigger, EveryTrigger):
        return trigger.step / 1_000_000
    now = now or datetime.now(timezone.utc)
    first = trigger.get_next_fire_time(None, now)
    second = trigger.get_next_fire_time(first, first) if first else None
    if first is None or second is None:
        return MAX_DEFAULT_GRACE * 2
    return (second - first).total_seconds()


def misfire_grace_seconds(options: Any, trigger: BaseTrigger) -> float:
    """The job's misfire_grace, or when unset half its schedule's period (at least 1 s, at most 12 h)."""
    if options.misfire_grace is not None:
        return max(float(options.misfire_grace), 0.001)
    return min(max(schedule_period(trigger) / 2, 1.0), MAX_DEFAULT_GRACE)


@dataclass
class CatchUpPlan:
    """What to do about fires missed since the ledger's last scheduled_for."""

    fire: datetime | None = None  # run this one fire now, trigger=catch-up
    missed: int = 0  # fires that will not run (coalesced into the catch-up, or too old)
    first_missed: datetime | None = None
    last_missed: datetime | None = None


def plan_catch_up(trigger: BaseTrigger, last_scheduled_for: datetime | None, now: datetime, grace: float,
                  *, limit: int = 100_000) -> CatchUpPlan:
    """Given a trigger, the last fire the ledger knows of, the time now and the misfire grace in seconds,
    return the plan: the latest missed fire is caught up once when it is within the grace; the rest
    are counted as missed. No ledger entry yet (a new job) means nothing to catch up."""
    if last_scheduled_for is None:
        return CatchUpPlan()
    first = latest = previous = None
    count = 0
    if isinstance(trigger, EveryTrigger):
        first = trigger.get_next_fire_time(last_scheduled_for, now)
        if first <= now:
            latest = trigger.latest_at_or_before(now)
            count = (_microseconds_since_epoch(latest) - _microseconds_since_epoch(first)) // trigger.step + 1
            if count > 1:
                previous = latest - timedelta(microseconds=trigger.step)
    else:
        # a cron schedule: walk its fire times (at most ~5 weeks back, which also bounds the work)
        start = max(last_scheduled_for, now - timedelta(days=35))
        moment = trigger.get_next_fire_time(start, now)
        while moment is not None and moment <= now and count < limit:
            if first is None:
                first = moment
            previous, latest = latest, moment
            count += 1
            moment = trigger.get_next_fire_time(moment, now)
    if latest is None:
        return CatchUpPlan()
    if (now - latest).total_seconds() <= grace:
        return CatchUpPlan(fire=latest, missed=count - 1, first_missed=first if count > 1 else None, last_missed=previous)
    return CatchUpPlan(fire=None, missed=count, first_missed=first, last_missed=latest)


# ---- APScheduler plumbing ----------------------------------------------------------------------


def _run_with_fire_time(job: Any, jobstore_alias: str, run_times: list[datetime], logger_name: str) -> list:
    """apscheduler.executors.base.run_job, passing each run's scheduled time to the function
    (APScheduler 3 does not), so the ledger and the cross-host claim know which fire this is."""
    events = []
    log = logging.getLogger(logger_name)
    for run_time in run_times:
        if job.misfire_grace_time is not None:
            difference = datetime.now(timezone.utc) - run_time
            if difference > timedelta(seconds=job.misfire_grace_time):
                events.append(JobExecutionEvent(EVENT_JOB_MISSED, job.id, jobstore_alias, run_time))
                log.warning('Run time of job "%s" was missed by %s', job, difference)
                continue
        try:
            retval = job.func(*job.args, fire_time=run_time, **job.kwargs)
        except BaseException:
            exc, tb = sys.exc_info()[1:]
            events.append(JobExecutionEvent(EVENT_JOB_ERROR, job.id, jobstore_alias, run_time, exception=exc,
                                            traceback="".join(format_tb(tb))))
            log.exception('Job "%s" raised an exception', job)
            del tb
        else:
            events.append(JobExecutionEvent(EVENT_JOB_EXECUTED, job.id, jobstore_alias, run_time, retval=retval))
    return events


class FireTimeExecutor(BasePoolExecutor):
    """A thread pool executor whose jobs receive their scheduled fire time."""

    def __init__(self, max_workers: int):
        super().__init__(concurrent.futures.ThreadPoolExecutor(int(max_workers), thread_name_prefix="job"))

    def _do_submit_job(self, job: Any, run_times: list[datetime]) -> None:
        def callback(future: concurrent.futures.Future) -> None:
            error = future.exception()
            if error is not None:
                self._run_job_error(job.id, error, error.__traceback__)
            else:
                self._run_job_success(job.id, future.result())

        future = self._pool.submit(_run_with_fire_time, job, job._jobstore_alias, run_times, self._logger.name)
        future.add_done_callback(callback)


class DaemonScheduler(BlockingScheduler):
    """BlockingScheduler whose loop also turns the daemon's crank (flags, watchdog) at least every TICK."""

    def __init__(self, on_tick: Any, **options: Any):
        super().__init__(**options)
        self._on_tick = on_tick

    def _main_loop(self) -> None:
        wait_seconds: float | None = 0.0
        while self.state != STATE_STOPPED:
            self._event.wait(TICK if wait_seconds is None else min(wait_seconds, TICK))
            self._event.clear()
            self._on_tick()
            if self.state == STATE_STOPPED:
                break
            wait_seconds = self._process_jobs()


# ---- the daemon --------------------------------------------------------------------------------


def _alerts_module():
    """scheduler.alerts, or None while it does not exist (alerting lands separately)."""
    try:
        return importlib.import_module("scheduler.alerts")
    except ModuleNotFoundError as missing:
        if missing.name != "scheduler.alerts":
            logger.error("alerting unavailable: {}", missing)
        return None


class Daemon:
    """One `jackpot-maint run` process. Build it with the loaded settings; run() returns the exit code."""

    def __init__(self, loaded: Any, *, config_path: str | None = None, overrides: dict | None = None,
                 environ: dict[str, str] | None = None):
        from scheduler.ledger import hostname
        from scheduler.metrics import Metrics
        from scheduler.sdnotify import Notifier

        self.settings = loaded.settings
        self.config_path = config_path
        self.overrides = overrides or {}
        self.host = hostname()
        self.notifier = Notifier(environ)
        self.metrics = Metrics(self.host)
        self.metrics_server = None
        self.state = None
        self.scheduler: DaemonScheduler | None = None
        self.started_at = datetime.now(timezone.utc)
        self._lock = threading.RLock()
        self._stop_requested = 0
        self._reload_requested = False
        self.stopping = False
        self._stop_deadline = 0.0
        self._cancel_deadline: float | None = None
        # running fires by token: (job, cancel event, started); a catch-up and a fire may overlap briefly
        self.active: dict[int, tuple[str, threading.Event, datetime]] = {}
        self._tokens = iter(range(1, 1 << 62))
        self._job_specs: dict[str, tuple] = {}
        self._missed_alerted: set[str] = set()
        self._missed_while_down: dict[str, int] = {}
        self.target_state = "unknown"  # unknown | up | down
        self._target_down_since: datetime | None = None
        self._probe_attempts = 0
        self._next_probe = 0.0
        self._target_error = ""
        self._next_watchdog = 0.0
        self._housekeeping_stop = threading.Event()
        self._housekeeping_wakeup = threading.Event()
        self._housekeeping_thread: threading.Thread | None = None
        self._pid_descriptor: int | None = None
        self.unfinished_runs: list[str] = []

    # ---- signals: handlers only set flags -----------------------------------------------------

    def install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            logger.debug("not the main thread: no signal handlers (call request_stop() / request_reload())")
            return
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGHUP, self._on_reload_signal)

    def _on_stop_signal(self, signum: int, _frame: Any) -> None:
        self._stop_requested += 1

    def _on_reload_signal(self, signum: int, _frame: Any) -> None:
        self._reload_requested = True

    def request_stop(self) -> None:
        """Stop as SIGTERM would (for a daemon embedded in another program's thread)."""
        self._stop_requested += 1

    def request_reload(self) -> None:
        """Reload as SIGHUP would."""
        self._reload_requested = True

    # ---- start --------------------------------------------------------------------------------

    def run(self) -> int:
        """Run until SIGTERM/SIGINT. Return the exit code (0 after a clean stop)."""
        from scheduler import ledger
        from scheduler.errors import EXIT_OK

        self.install_signal_handlers()
        self._acquire_pid_file()
        try:
            self.notifier.status("starting: opening the state store")
            if not self._open_state_store():
                return EXIT_OK  # asked to stop while waiting for the state store
            for record in ledger.mark_abandoned(self.state):
                logger.warning("{}: run {} from pid {} was left running by a process that ended; marked abandoned",
                               record.job, record.id, record.pid)
            try:
                self.metrics.seed_last_success(self.state, list(self._enabled_jobs()))
            except Exception as error:  # noqa: BLE001 - metrics never stop the daemon
                logger.warning("could not read last successes for metrics: {}", error)
            self._start_metrics()
            self.scheduler = self._build_scheduler()
            self._sync_jobs()
            self._catch_up(list(self._enabled_jobs()), reason="the daemon was not running")
            self._housekeeping_thread = threading.Thread(target=self._housekeeping_loop, name="housekeeping", daemon=True)
            self._housekeeping_thread.start()
            self._write_heartbeat("running")
            logger.info("jackpot-maint {} daemon started on {} (pid {}): {}", __version__, self.host, os.getpid(),
                        self.status_line())
            self.notifier.ready(self.status_line())
            self.scheduler.start()  # blocks: the loop runs until stop() shuts it down
        finally:
            self._shutdown()
        return EXIT_OK

    def _acquire_pid_file(self) -> None:
        from scheduler.errors import JobLocked
        from scheduler.locks import runtime_directory

        path = runtime_directory() / PID_FILE
        descriptor = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                other = json.loads(os.read(descriptor, 4096).decode() or "{}")
            except (OSError, ValueError):
                other = {}
            os.close(descriptor)
            raise JobLocked(f"a jackpot-maint daemon is already running on this host (pid {other.get('pid', '?')} "
                            f"since {other.get('started_at', '?')}, pid file {path})",
                            hint="stop it first, or give this one its own RUNTIME_DIRECTORY") from None
        os.ftruncate(descriptor, 0)
        os.write(descriptor, json.dumps({"pid": os.getpid(), "host": self.host, "started_at": self.started_at.isoformat(),
                                         "config": self.config_path}).encode() + b"\n")
        self._pid_descriptor = descriptor
        self._pid_path = path

    def _open_state_store(self) -> bool:
        """Open the state store, retrying with backoff while it is unreachable. False if asked to stop."""
        from scheduler.errors import JackpotError, classify
        from scheduler.state import StateStore

        attempt = 0
        while True:
            try:
                self.state = StateStore.open(self.settings)
                if attempt:
                    logger.info("the state store answered after {} failed attempt(s)", attempt)
                return True
            except Exception as error:  # noqa: BLE001
                failure = error if isinstance(error, JackpotError) else classify(error, resource="the state store")
                attempt += 1
                delay = self._backoff(attempt)
                logger.error("J001: the state store is unreachable (attempt {}): {}; retrying in {:g}s",
                             attempt, failure.message, delay)
                self.notifier.status(f"waiting for the state store (attempt {attempt}, retry in {delay:g}s)")
                deadline = time.monotonic() + delay
                while time.monotonic() < deadline:
                    if self._stop_requested:
                        self.notifier.stopping("stopped while waiting for the state store")
                        return False
                    self._ping_watchdog()
                    time.sleep(min(TICK, max(deadline - time.monotonic(), 0)))

    def _backoff(self, attempt: int) -> float:
        settings = self.settings.scheduler
        return min(settings.retry_initial * (2 ** max(attempt - 1, 0)), settings.retry_max)

    def _build_scheduler(self) -> DaemonScheduler:
        scheduler = DaemonScheduler(
            self._tick, executors={"default": FireTimeExecutor(self.settings.scheduler.max_workers)},
            job_defaults={"coalesce": True, "max_instances": 1},
            timezone=resolve_timezone(self.settings.scheduler.timezone))
        scheduler.add_listener(self._on_scheduler_event, EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES | EVENT_JOB_ERROR)
        return scheduler

    def _start_metrics(self) -> None:
        from scheduler.metrics import MetricsServer

        settings = self.settings.scheduler
        if settings.metrics_port:
            try:
                self.metrics_server = MetricsServer(self.metrics, settings.metrics_address, settings.metrics_port).start()
                logger.info("metrics on http://{}:{}/metrics", settings.metrics_address, self.metrics_server.port)
            except OSError as error:
                logger.error("cannot serve metrics on {}:{}: {} (the daemon runs on without them)",
                             settings.metrics_address, settings.metrics_port, error.strerror)

    # ---- jobs ---------------------------------------------------------------------------------

    def _enabled_jobs(self) -> dict[str, Any]:
        from jobs.registry import all_jobs

        return {name: module for name, module in all_jobs().items() if getattr(self.settings.jobs, name).enabled}

    def _sync_jobs(self) -> None:
        """Make the in-memory schedule match the configuration: add, change and remove jobs."""
        assert self.scheduler is not None
        wanted = self._enabled_jobs()
        timezone_name = self.settings.scheduler.timezone
        for name in list(self._job_specs):
            if name not in wanted:
                self.scheduler.remove_job(name)
                del self._job_specs[name]
                logger.info("{}: removed from the schedule", name)
        for name in wanted:
            options = getattr(self.settings.jobs, name)
            trigger = build_trigger(options.schedule, timezone_name)
            grace = max(int(math.ceil(misfire_grace_seconds(options, trigger))), 1)
            spec = (options.schedule, timezone_name, grace)
            if self._job_specs.get(name) == spec:
                continue
            verb = "rescheduled" if name in self._job_specs else "scheduled"
            self.scheduler.add_job(self._fire, trigger, id=name, name=name, args=[name], misfire_grace_time=grace,
                                   coalesce=True, max_instances=1, replace_existing=True)
            self._job_specs[name] = spec
            logger.info("{}: {} ({}, misfire grace {}s)", name, verb, options.schedule, grace)

    def next_fire_times(self) -> dict[str, str | None]:
        if self.scheduler is None:
            return {}
        result = {}
        for job in self.scheduler.get_jobs():
            if job.id in self._job_specs:
                next_time = getattr(job, "next_run_time", None)
                result[job.id] = next_time.isoformat() if next_time else None
        return result

    def _fire(self, name: str, *, fire_time: datetime | None = None, scheduled_for: datetime | None = None,
              trigger: str = "scheduled") -> None:
        """Run one fire of a job (in an executor thread). Never raises: one job never stops the scheduler."""
        from jobs.registry import get_job
        from scheduler.errors import ConnectionFailed, JackpotError, classify
        from scheduler.locks import FireClaimed
        from scheduler.runner import run_job

        scheduled_for = scheduled_for or fire_time
        if self.stopping:
            return
        try:
            module = get_job(name)
        except JackpotError as error:
            logger.error("{}: {}", name, error)
            return
        if module.SCOPE == "database" and self.target_state == "down":
            # counted, and caught up once when the database is back (see _target_reachable)
            with self._lock:
                self._missed_while_down[name] = self._missed_while_down.get(name, 0) + 1
            return
        since = self.running_since(name)
        if since is not None:
            # the previous run (e.g. a catch-up) is still going here: no need to ask the database
            self._record_not_run(name, trigger, scheduled_for, "skipped",
                                 f"the previous run of {name} is still running on this host since "
                                 f"{since:%Y-%m-%d %H:%M:%S} UTC; fire skipped")
            return
        cancel_event = threading.Event()
        with self._lock:
            token = next(self._tokens)
            self.active[token] = (name, cancel_event, datetime.now(timezone.utc))
            self.metrics.running[name] = 1
        settings = self.settings
        try:
            outcome = run_job(settings, name, trigger=trigger, scheduled_for=scheduled_for, state=self.state,
                              cancel_event=cancel_event, claim=True)
        except Exception as error:  # noqa: BLE001 - e.g. the state store went away mid-run
            failure = error if isinstance(error, JackpotError) else classify(error, resource="the state store")
            logger.error("{}: could not run or record the {} fire: {}", name, trigger, failure)
            return
        finally:
            with self._lock:
                self.active.pop(token, None)
                if self.running_since(name) is None:
                    self.metrics.running.pop(name, None)
        record = outcome.record
        self.metrics.record_run(record)
        if isinstance(outcome.error, ConnectionFailed) and module.SCOPE == "database":
            self._target_unreachable(outcome.error.message)
        elif module.SCOPE == "database" and not isinstance(outcome.error, FireClaimed):
            self._target_answered()
        if record.status in ("ok", "problems"):
            if name in self._missed_alerted:
                self._missed_alerted.discard(name)
                self._report(f"daemon:missed:{name}", ok=True, title=f"{name} runs again", category="maintenance",
                             severity="P3", code="J005", scope="host")
            if name in settings.scheduler.deadman_jobs:
                self._ping_deadman(name)
        self._housekeeping_wakeup.set()  # refresh the metrics file soon

    def running_since(self, name: str) -> datetime | None:
        """When the oldest running fire of this job started on this host, or None."""
        with self._lock:
            starts = [started for job, _event, started in self.active.values() if job == name]
        return min(starts) if starts else None

    def _record_not_run(self, name: str, trigger: str, scheduled_for: datetime | None, status: str, message: str) -> None:
        """Record a fire that did not run (skipped, missed) in the ledger, and hand it to alerting,
        which raises an alert when it happens several times in a row."""
        from scheduler import ledger
        from scheduler.runner import _after_run

        try:
            record = ledger.start_run(self.state, name, trigger, scheduled_for=scheduled_for, status=status,
                                      message=message)
        except Exception as error:  # noqa: BLE001
            logger.error("{}: could not record a {} fire: {}", name, status, error)
            return
        logger.warning("{}: {}", name, message)
        self.metrics.record_run(record)
        _after_run(self.settings, self.state, record, None, None)

    def _on_scheduler_event(self, event: Any) -> None:
        """APScheduler's missed / max-instances / error events: recorded in the ledger and alerted."""
        name = str(event.job_id).split(":")[0]
        try:
            if event.code == EVENT_JOB_MAX_INSTANCES:
                since = self.running_since(name)
                since_text = f" since {since:%Y-%m-%d %H:%M:%S} UTC" if since else ""
                for run_time in event.scheduled_run_times[-1:]:
                    self._record_not_run(name, "scheduled", run_time, "skipped",
                                         f"the previous run of {name} is still running on this host{since_text}; fire skipped")
            elif event.code == EVENT_JOB_MISSED:
                late = (datetime.now(timezone.utc) - event.scheduled_run_time).total_seconds()
                message = f"fire missed: the scheduler reached it {late:.1f}s late, past its misfire grace"
                self._record_not_run(name, "scheduled", event.scheduled_run_time, "missed", message)
                self._alert_missed(name, message)
            elif event.code == EVENT_JOB_ERROR:
                logger.error("{}: the scheduler caught an error: {}", name, event.exception)
        except Exception as error:  # noqa: BLE001 - recording must never break the scheduler's loop
            logger.error("{}: could not record a scheduler event: {}", name, error)

    def _alert_missed(self, name: str, message: str) -> None:
        self._missed_alerted.add(name)
        self._report(f"daemon:missed:{name}", ok=False, title=f"{name}: a scheduled run was missed",
                     category="maintenance", severity="P3", code="J005", scope="host", symptoms=[message],
                     attempts=["the run is not caught up (older than its misfire_grace); it runs at its next fire"])

    # ---- catch-up -----------------------------------------------------------------------------

    def _last_scheduled_for(self, name: str) -> datetime | None:
        from sqlalchemy import func, select

        from scheduler.ledger import runs

        with self.state.connect() as connection:
            return connection.execute(select(func.max(runs.c.scheduled_for)).where(
                runs.c.job == name, runs.c.trigger.in_(("scheduled", "catch-up")),
                runs.c.scheduled_for.is_not(None))).scalar()

    def _catch_up(self, names: list[str], *, reason: str) -> None:
        """Plan each job's catch-up from the ledger; record what is missed; run the latest fire once."""

        now = datetime.now(timezone.utc)
        for name in names:
            if name not in self._job_specs:
                continue
            try:
                options = getattr(self.settings.jobs, name)
                trigger = build_trigger(options.schedule, self.settings.scheduler.timezone)
                grace = misfire_grace_seconds(options, trigger)
                last = self._last_scheduled_for(name)
                plan = plan_catch_up(trigger, last, now, grace)
                with self._lock:
                    self._missed_while_down.pop(name, None)
                if plan.missed:
                    span = (f"between {plan.first_missed:%Y-%m-%d %H:%M:%S %Z} and {plan.last_missed:%Y-%m-%d %H:%M:%S %Z}"
                            if plan.first_missed and plan.last_missed and plan.first_missed != plan.last_missed
                            else f"at {plan.last_missed:%Y-%m-%d %H:%M:%S %Z}" if plan.last_missed else "")
                    tail = ("; the latest fire is caught up once" if plan.fire
                            else f"; older than the misfire grace of {grace:g}s, not caught up")
                    message = f"{plan.missed} fire(s) {span} missed ({reason}){tail}"
                    self._record_not_run(name, "scheduled", plan.last_missed, "missed", message)
                    if not plan.fire:
                        self._alert_missed(name, message)
                if plan.fire:
                    logger.info("{}: catching up the {} fire once ({})", name, plan.fire.isoformat(), reason)
                    self.scheduler.add_job(self._fire, DateTrigger(run_date=now), id=f"{name}:catch-up", name=f"{name} catch-up",
                                           args=[name], kwargs={"scheduled_for": plan.fire, "trigger": "catch-up"},
                                           misfire_grace_time=None, replace_existing=True)
            except Exception as error:  # noqa: BLE001 - a catch-up problem never stops the daemon
                logger.error("{}: could not plan its catch-up: {}", name, error)

    # ---- the target database ------------------------------------------------------------------

    def _target_unreachable(self, message: str) -> None:
        with self._lock:
            if self.target_state == "down":
                return
            self.target_state = "down"
            self.metrics.target_up = 0
            self._target_down_since = datetime.now(timezone.utc)
            self._target_error = message
            self._probe_attempts = 0
            self._next_probe = time.monotonic() + self._backoff(1)
        logger.error("J001: the target database {} is unreachable: {}; database jobs wait, retrying with backoff",
                     self.settings.database_display(), message)
        self._report_unreachable()
        self.notifier.status(self.status_line())

    def _report_unreachable(self) -> None:
        since = self._target_down_since or datetime.now(timezone.utc)
        self._report("daemon:target-database-unreachable", ok=False,
                     title=f"target database {self.settings.database_display()} unreachable", category="service_down",
                     severity="P1", code="J001", scope="database",
                     symptoms=[f"cannot connect since {since:%Y-%m-%d %H:%M:%S} UTC: {self._target_error}"],
                     attempts=[f"{self._probe_attempts} reconnection attempt(s) failed; retrying with backoff "
                               f"{self.settings.scheduler.retry_initial:g}s..{self.settings.scheduler.retry_max:g}s; "
                               "database jobs are paused and will be caught up once"])

    def _target_answered(self) -> None:
        if self.target_state == "up":
            return
        self._target_reachable()

    def _target_reachable(self) -> None:
        with self._lock:
            previous = self.target_state
            if previous == "up":
                return
            self.target_state = "up"
            self.metrics.target_up = 1
        if previous == "down":
            logger.info("the target database {} answers again after {} attempt(s); resuming database jobs",
                        self.settings.database_display(), self._probe_attempts)
            self._report("daemon:target-database-unreachable", ok=True,
                         title=f"target database {self.settings.database_display()} reachable again",
                         category="service_down", severity="P1", code="J001", scope="database")
            self._catch_up([name for name, module in self._enabled_jobs().items() if module.SCOPE == "database"],
                           reason="the target database was unreachable")
        self.notifier.status(self.status_line())

    def _probe_target(self) -> None:
        from scheduler.db import check_connection, create_target_engine

        try:
            engine = create_target_engine(self.settings, job="probe", autocommit=True, pool_size=1)
            try:
                check_connection(engine, self.settings.database_display())
            finally:
                engine.dispose()
        except Exception as error:  # noqa: BLE001
            message = getattr(error, "message", str(error))
            if self.target_state != "down":
                self._target_unreachable(message)
                return
            self._probe_attempts += 1
            delay = self._backoff(self._probe_attempts + 1)
            self._next_probe = time.monotonic() + delay
            self._target_error = message
            logger.warning("J001: the target database is still unreachable (attempt {}); next try in {:g}s",
                           self._probe_attempts, delay)
            self._report_unreachable()
            return
        self._probe_attempts += 1
        self._target_reachable()

    # ---- the loop -----------------------------------------------------------------------------

    def _tick(self) -> None:
        """One turn of the scheduler's loop: flags, watchdog. Cheap: no I/O but a datagram."""
        self.metrics.loop_heartbeat = time.time()
        if self._reload_requested and not self.stopping:
            self._reload_requested = False
            self.reload()
        if self._stop_requested:
            self._stop_step()
        self._ping_watchdog()

    def _ping_watchdog(self) -> None:
        interval = self.notifier.watchdog_interval
        if interval is None:
            return
        now = time.monotonic()
        if now >= self._next_watchdog:
            self.notifier.watchdog()
            self._next_watchdog = now + interval

    def _stop_step(self) -> None:
        now = time.monotonic()
        if not self.stopping:
            self.stopping = True
            grace = self.settings.scheduler.stop_grace
            self._stop_deadline = now + grace
            running = sorted({job for job, _event, _started in self.active.values()})
            self.notifier.stopping(f"stopping: waiting up to {grace:g}s for {len(running)} running job(s)")
            logger.info("stopping: no new runs; {}", f"waiting up to {grace:g}s for {', '.join(running)}" if running
                        else "no job is running")
            self.scheduler.pause()
            self._housekeeping_wakeup.set()
        with self._lock:
            active = {job: cancel_event for job, cancel_event, _started in self.active.values()}
        if not active:
            self.scheduler.shutdown(wait=False)
            return
        if self._cancel_deadline is None and (now >= self._stop_deadline or self._stop_requested > 1):
            logger.warning("stop grace over: cancelling {} (their queries are cancelled in PostgreSQL)", ", ".join(sorted(active)))
            with self._lock:
                for _job, cancel_event, _started in self.active.values():
                    cancel_event.set()
            self._cancel_deadline = now + self.settings.scheduler.stop_cancel_wait
        elif self._cancel_deadline is not None and now >= self._cancel_deadline:
            self.unfinished_runs = sorted(active)
            logger.error("{} did not end after cancellation; exiting anyway (marked abandoned at next start)",
                         ", ".join(self.unfinished_runs))
            self.scheduler.shutdown(wait=False)

    # ---- reload -------------------------------------------------------------------------------

    def reload(self) -> bool:
        """Load the configuration again. Valid: apply it without a restart; invalid: reject it whole,
        log every problem, keep the running configuration, raise a J004 alert. Return whether applied."""
        from config.loader import load_settings
        from scheduler.errors import ConfigError

        self.notifier.reloading()
        logger.info("reloading the configuration ({})", self.config_path or "defaults and environment")
        problems: list[str] = []
        loaded = None
        try:
            loaded = load_settings(self.config_path, self.overrides)
            problems = _cross_checks(loaded.settings)
        except ConfigError as error:
            problems = list(error.problems)
        except Exception as error:  # noqa: BLE001
            problems = [f"cannot load the configuration: {error}"]
        if not problems:
            try:
                for name in self._enabled_jobs_of(loaded.settings):
                    options = getattr(loaded.settings.jobs, name)
                    build_trigger(options.schedule, loaded.settings.scheduler.timezone)
            except ValueError as error:
                problems = [str(error)]
        if problems:
            logger.error("reload rejected: {} problem(s); the previous configuration stays in force", len(problems))
            for problem in problems:
                logger.error("  - {}", problem)
            self._report("daemon:reload-rejected", ok=False, title="configuration reload rejected",
                         category="configuration", severity="P3", code="J004", scope="host",
                         symptoms=problems, attempts=["kept the previous configuration; fix the file and reload again"])
            self.notifier.ready(f"reload rejected ({len(problems)} problem(s)); {self.status_line()}")
            return False
        old = self.settings
        self.settings = loaded.settings
        self._apply_logging(old)
        for key, description in (("state", "state store"), ("scheduler.metrics_port", "metrics port")):
            if _dig(old, key) != _dig(self.settings, key):
                logger.warning("the {} changed: it takes effect after a restart", description)
        self._sync_jobs()
        self._report("daemon:reload-rejected", ok=True, title="configuration reloaded", category="configuration",
                     severity="P3", code="J004", scope="host")
        logger.info("configuration reloaded: {}", self.status_line())
        self.notifier.ready(self.status_line())
        return True

    @staticmethod
    def _enabled_jobs_of(settings: Any) -> list[str]:
        from jobs.registry import all_jobs

        return [name for name in all_jobs() if getattr(settings.jobs, name).enabled]

    def _apply_logging(self, old: Any) -> None:
        if old.logging == self.settings.logging:
            return
        from scheduler.logs import setup_logging

        logging_settings = self.settings.logging
        setup_logging(logging_settings.level, logging_settings.format, file=logging_settings.file,
                      file_rotation=logging_settings.file_rotation, file_retention=logging_settings.file_retention)

    # ---- housekeeping (its own thread) --------------------------------------------------------

    def _housekeeping_loop(self) -> None:
        settings_now = lambda: self.settings.scheduler  # noqa: E731 - reload swaps settings
        next_alerts = next_heartbeat = next_metrics = 0.0
        next_prune = time.monotonic() + 60
        next_trim = time.monotonic() + 5  # once start-up garbage is gone
        last_trim = 0.0
        self._next_probe = 0.0  # probe the target database right away
        while not self._housekeeping_stop.is_set():
            now = time.monotonic()
            try:
                if self._housekeeping_wakeup.is_set() and next_trim == 0.0 and now - last_trim > 60:
                    next_trim = now + 2  # a run just finished: give back what it used (at most once a minute)
                if next_trim and now >= next_trim:
                    next_trim, last_trim = 0.0, now
                    release_memory()
                if self.target_state != "up" and now >= self._next_probe and not self.stopping:
                    self._next_probe = now + self._backoff(1)
                    self._probe_target()
                if now >= next_alerts:
                    next_alerts = now + settings_now().alerts_interval
                    self._process_alerts()
                if now >= next_heartbeat:
                    next_heartbeat = now + settings_now().heartbeat_interval
                    self._write_heartbeat("stopping" if self.stopping else "running")
                    self.notifier.status(self.status_line())
                if settings_now().metrics_textfile and (now >= next_metrics or self._housekeeping_wakeup.is_set()):
                    next_metrics = now + 15
                    self.metrics.write_textfile(settings_now().metrics_textfile)
                if now >= next_prune and self.target_state == "up":
                    next_prune = now + 3600
                    self._prune()
            except Exception as error:  # noqa: BLE001 - housekeeping never stops the daemon
                logger.error("housekeeping: {}", error)
            self._housekeeping_wakeup.clear()
            self._housekeeping_wakeup.wait(1.0)

    def _process_alerts(self) -> None:
        alerts = _alerts_module()
        if alerts is None:
            return
        try:
            alerts.process(self.settings, self.state)
        except Exception as error:  # noqa: BLE001
            logger.error("alert processing failed: {}", error)
        self.metrics.open_alerts = count_open_alerts(self.settings, self.state)

    def _prune(self) -> None:
        from scheduler import ledger
        from scheduler.locks import prune_claims

        try:
            removed = ledger.prune(self.state, self.settings.state.retention_days)
            claims = prune_claims(self.settings, self.settings.scheduler.claim_retention_days)
            if removed or claims:
                logger.info("pruned {} old run(s) and {} old claim(s)", removed, claims)
        except Exception as error:  # noqa: BLE001
            logger.warning("pruning failed (retried in an hour): {}", error)

    def _write_heartbeat(self, state_text: str) -> None:
        if self.state is None:
            return
        try:
            self.state.set_value(HEARTBEAT_NAMESPACE, self.host, {
                "host": self.host, "pid": os.getpid(), "version": __version__, "state": state_text,
                "started_at": self.started_at.isoformat(), "heartbeat_at": datetime.now(timezone.utc).isoformat(),
                "heartbeat_interval": self.settings.scheduler.heartbeat_interval, "config": self.config_path,
                "target_database": self.target_state,
                "running": sorted({job for job, _event, _started in self.active.values()}),
                "next_fire_times": self.next_fire_times(),
            })
        except Exception as error:  # noqa: BLE001
            logger.warning("could not record the heartbeat in the state store: {}", error)

    def _ping_deadman(self, job: str) -> None:
        url_secret = self.settings.scheduler.deadman_url
        if url_secret is None:
            return
        url = url_secret.get_secret_value()
        timeout = self.settings.scheduler.deadman_timeout

        def ping() -> None:
            from scheduler.redact import redact

            try:
                request = urllib.request.Request(url, headers={"User-Agent": f"jackpot-maint/{__version__}"})
                with urllib.request.urlopen(request, timeout=timeout) as response:
                    response.read(1024)
                logger.debug("dead-man's switch pinged after {}", job)
            except Exception as error:  # noqa: BLE001 - a monitoring outage never stops the work
                logger.warning("dead-man's switch ping failed: {}", redact(str(error)))

        threading.Thread(target=ping, name="deadman", daemon=True).start()

    def _report(self, key: str, *, ok: bool, title: str, category: str, severity: str, code: str, scope: str,
                symptoms: list[str] | None = None, attempts: list[str] | None = None) -> None:
        """Raise (ok=False) or resolve (ok=True) one of the daemon's own alerts; never raises."""
        alerts = _alerts_module()
        if alerts is None or self.state is None:
            return
        from jobs.base import Finding

        finding = Finding(key=key, ok=ok, title=title, category=category, severity=severity, code=code, scope=scope,
                          symptoms=symptoms or [], attempts=attempts or [])
        try:
            alerts.report(self.settings, self.state, finding, source="daemon")
        except Exception as error:  # noqa: BLE001 - alerting never stops the daemon
            logger.error("could not report {} to alerting: {}", key, error)

    # ---- status -------------------------------------------------------------------------------

    def status_line(self) -> str:
        upcoming = [(time_text, name) for name, time_text in self.next_fire_times().items() if time_text]
        upcoming.sort()
        next_text = ""
        if upcoming:
            moment = datetime.fromisoformat(upcoming[0][0]).astimezone(timezone.utc)
            next_text = f"; next {upcoming[0][1]} at {moment:%H:%M:%S} UTC"
        return (f"{len(self._job_specs)} job(s) scheduled, {len(self.active)} running; "
                f"target database {self.target_state}{next_text}")

    # ---- stop ---------------------------------------------------------------------------------

    def _shutdown(self) -> None:
        self._housekeeping_stop.set()
        self._housekeeping_wakeup.set()
        if self._housekeeping_thread is not None:
            self._housekeeping_thread.join(timeout=5)
        if self.scheduler is not None and self.scheduler.state != STATE_STOPPED:
            self.scheduler.shutdown(wait=False)
        self._write_heartbeat("stopped")
        if self.settings.scheduler.metrics_textfile:
            try:
                self.metrics.write_textfile(self.settings.scheduler.metrics_textfile)
            except OSError:
                pass
        if self.metrics_server is not None:
            self.metrics_server.stop()
        if self.state is not None and not self.unfinished_runs:
            self.state.dispose()
        if self._pid_descriptor is not None:
            try:
                os.unlink(self._pid_path)
            except OSError:
                pass
            os.close(self._pid_descriptor)
            self._pid_descriptor = None
        logger.info("daemon stopped")
        self.notifier.close()


def release_memory() -> None:
    """Collect garbage and hand freed heap back to the system (glibc keeps it per thread arena
    otherwise, so each job run in a new executor thread would leave the resident size higher)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _cross_checks(settings: Any) -> list[str]:
    try:
        from scheduler.commands.config import cross_checks
    except ImportError:  # pragma: no cover
        return []
    return cross_checks(settings)


def _dig(model: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        model = getattr(model, part, None)
    return model


def count_open_alerts(settings: Any, state: Any) -> int | None:
    """How many alerts are open (firing or acknowledged), or None when alerting is not available."""
    alerts = _alerts_module()
    if alerts is None or not hasattr(alerts, "open_alert_count"):
        return None
    try:
        return int(alerts.open_alert_count(state))
    except Exception:  # noqa: BLE001 - a number on a dashboard is not worth a failure
        return None


def open_alerts(settings: Any, state: Any) -> list[dict] | None:
    """The open alerts as dicts (from scheduler.alerts when present), or None when unavailable."""
    alerts = _alerts_module()
    if alerts is None or not hasattr(alerts, "list_alerts"):
        return None
    try:
        items = alerts.list_alerts(state)
    except Exception:  # noqa: BLE001
        return None
    result = []
    for item in items:
        data = item.to_dict() if hasattr(item, "to_dict") else dict(item)
        if str(data.get("status", "firing")) != "resolved":
            result.append(data)
    return result
