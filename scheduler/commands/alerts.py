"""`jackpot-maint alerts`: list, show, acknowledge, resolve, silence, and test the notifiers."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone

from scheduler.commands._common import add_json_flag, load, print_json, print_table
from scheduler.errors import EXIT_OK, EXIT_PROBLEMS, UsageError

DESCRIPTION = """Alerts raised by failed jobs, monitoring checks and data validation, with their escalation.

An alert starts at level 1 (or higher for its category or error code), notifies the level's
recipients, moves up a level when it stays open past the level's bound or is not acknowledged within
its contact's response time, and reminds every alerts.repeat_interval while firing. `ack` stops the
escalation; recovery or `resolve` resolves it and sends a resolved notice to everyone notified."""


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser("alerts", parents=[common], help="list, acknowledge, resolve and silence alerts; "
                                   "test notifiers", description=DESCRIPTION,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = parser.add_subparsers(dest="alerts_command", metavar="ACTION", required=True)

    listing = actions.add_parser("list", parents=[common], help="open alerts (firing, acknowledged, recently resolved)",
                                 description="Open alerts, newest first. Exit 1 when any is firing.")
    listing.add_argument("--all", action="store_true", help="include closed (resolved) alerts")
    listing.add_argument("--limit", type=int, default=100, metavar="N", help="at most N alerts (default 100)")
    add_json_flag(listing)
    listing.set_defaults(handler=list_command)

    show = actions.add_parser("show", parents=[common], help="one alert: the full message and every notification",
                              description="Show an alert as its recipients see it, plus each notification's "
                                          "target, status and attempts.")
    show.add_argument("id", type=int, help="the alert's number (see `alerts list`)")
    add_json_flag(show)
    show.set_defaults(handler=show_command)

    ack = actions.add_parser("ack", parents=[common], help="acknowledge: stop the escalation",
                             description="Acknowledge a firing alert: it stops moving up levels and stops "
                                         "reminding (until alerts.ack_timeout, when set).")
    ack.add_argument("id", type=int, help="the alert's number")
    ack.add_argument("--by", metavar="NAME", help="who acknowledges (default $USER)")
    add_json_flag(ack)
    ack.set_defaults(handler=ack_command)

    resolve = actions.add_parser("resolve", parents=[common], help="resolve by hand; notified people get a resolved notice",
                                 description="Resolve an alert now. Everyone who was notified about it gets a "
                                             "resolved notice. If the problem is seen again, a new alert opens.")
    resolve.add_argument("id", type=int, help="the alert's number")
    resolve.add_argument("--by", metavar="NAME", help="who resolves (default $USER)")
    add_json_flag(resolve)
    resolve.set_defaults(handler=resolve_command)

    silence = actions.add_parser("silence", parents=[common], help="suppress notifications for matching alerts for a while",
                                 description="Suppress notifications of alerts whose key, category, code, host or "
                                             "source matches MATCH (a glob: 'monitor:*', performance, J006, host-2, *). "
                                             "Alerts are still recorded and shown.")
    silence.add_argument("match", help="glob over key, category, code, host or source")
    silence.add_argument("--for", dest="duration", required=True, metavar="DURATION", help="how long, e.g. 30m, 2h, 1d")
    silence.add_argument("--reason", metavar="TEXT", help="why (shown with suppressed notifications)")
    silence.add_argument("--by", metavar="NAME", help="who (default $USER)")
    add_json_flag(silence)
    silence.set_defaults(handler=silence_command)

    silences = actions.add_parser("silences", parents=[common], help="list active silences",
                                  description="Active silences (with --all, expired and removed ones too).")
    silences.add_argument("--all", action="store_true", help="include expired and removed silences")
    add_json_flag(silences)
    silences.set_defaults(handler=silences_command)

    unsilence = actions.add_parser("unsilence", parents=[common], help="end a silence now",
                                   description="End a silence now; notifications of matching alerts resume at their "
                                               "next reminder or escalation.")
    unsilence.add_argument("id", type=int, help="the silence's number (see `alerts silences`)")
    unsilence.set_defaults(handler=unsilence_command)

    test = actions.add_parser("test", parents=[common], help="send a test message through each notifier and print each result",
                              description="Send a test message through every configured notifier target (or only "
                                          "those of a contact or a level) and print each result. Exit 1 if any failed.")
    test.add_argument("--contact", metavar="NAME", help="only this contact's targets")
    test.add_argument("--level", type=int, metavar="N", help="only the targets level N reaches (for every category)")
    add_json_flag(test)
    test.set_defaults(handler=test_command)


def _open(args: argparse.Namespace):
    from scheduler.state import StateStore

    loaded = load(args)
    return loaded.settings, StateStore.open(loaded.settings)


def _ago(moment: datetime | None) -> str:
    if moment is None:
        return ""
    from scheduler.escalation import format_duration

    return format_duration((datetime.now(timezone.utc) - moment).total_seconds()) + " ago"


def list_command(args: argparse.Namespace) -> int:
    from scheduler import alerts

    from scheduler.silences import silenced_by

    settings, state = _open(args)
    try:
        found = alerts.list_alerts(state, include_closed=args.all, limit=max(args.limit, 1))
        silenced = {alert.id: silenced_by(settings, state, alert.match_fields()) for alert in found if alert.open}
    finally:
        state.dispose()
    firing = any(alert.status == "firing" for alert in found)
    if args.json:
        print_json([{**alert.to_dict(), "silenced": silenced.get(alert.id)} for alert in found])
        return EXIT_PROBLEMS if firing else EXIT_OK
    if not found:
        print("no open alerts" if not args.all else "no alerts recorded")
        return EXIT_OK
    rows = []
    for alert in found:
        status = alert.status if alert.open or alert.status != "resolved" else "closed"
        if silenced.get(alert.id):
            status += " (silenced)"
        rows.append([alert.id, status, alert.severity, f"L{alert.level}", alert.category, alert.code,
                     alert.host if alert.scope == "host" else "(database)", _ago(alert.first_seen), alert.occurrences,
                     alert.title[:70]])
    print_table(["id", "status", "sev", "level", "category", "code", "host", "since", "seen", "title"], rows)
    return EXIT_PROBLEMS if firing else EXIT_OK


def show_command(args: argparse.Namespace) -> int:
    from scheduler import alerts

    settings, state = _open(args)
    try:
        alert = alerts.get_alert(state, args.id)
        if alert is None:
            raise UsageError(f"there is no alert #{args.id}; see `jackpot-maint alerts list --all`")
        sent = alerts.notifications_of(state, args.id)
        from scheduler.silences import silenced_by

        silenced = silenced_by(settings, state, alert.match_fields()) if alert.open else None
    finally:
        state.dispose()
    if args.json:
        print_json({**alert.to_dict(), "silenced": silenced, "notifications": sent})
        return EXIT_OK
    title, body = alerts.render_message(settings, alert, "show", alert.level)
    print(title)
    print()
    print(body)
    print()
    if silenced:
        print(f"SILENCED: {silenced}")
    if sent:
        print("NOTIFICATIONS:")
        print_table(["event", "target", "level", "status", "tries", "sent", "error"],
                    [[item["event"], item["target"], item["level"], item["status"], item["attempts"],
                      (item["sent_at"] or "")[:19], (item["error"] or "")[:60]] for item in sent])
    else:
        print("NOTIFICATIONS: none (no configured notifier reaches this alert's level, or it was silenced)")
    return EXIT_OK


def ack_command(args: argparse.Namespace) -> int:
    from scheduler import alerts

    settings, state = _open(args)
    try:
        alert = alerts.acknowledge(settings, state, args.id, by=args.by)
    finally:
        state.dispose()
    if args.json:
        print_json(alert.to_dict())
    else:
        print(f"alert #{alert.id} acknowledged by {alert.acked_by}: escalation stopped at level {alert.level}")
    return EXIT_OK


def resolve_command(args: argparse.Namespace) -> int:
    from scheduler import alerts

    settings, state = _open(args)
    try:
        alert = alerts.resolve(settings, state, args.id, by=args.by)
        sent = [item for item in alerts.notifications_of(state, args.id) if item["event"] == "resolved"]
    finally:
        state.dispose()
    if args.json:
        print_json({**alert.to_dict(), "resolved_notices": sent})
        return EXIT_OK
    print(f"alert #{alert.id} resolved by {alert.resolved_by}")
    for item in sent:
        print(f"  resolved notice to {item['target']}: {item['status']}")
    return EXIT_OK


def silence_command(args: argparse.Namespace) -> int:
    from config.types import parse_duration
    from scheduler.silences import add_silence

    try:
        seconds = parse_duration(args.duration)
    except ValueError as error:
        raise UsageError(f"--for {args.duration!r}: {error}") from None
    if seconds <= 0:
        raise UsageError("--for must be longer than zero, e.g. --for 2h")
    settings, state = _open(args)
    try:
        silence = add_silence(state, args.match, seconds, reason=args.reason, created_by=args.by)
    finally:
        state.dispose()
    if args.json:
        print_json(silence.to_dict())
    else:
        print(f"silence #{silence.id}: alerts matching {silence.match!r} are not sent until "
              f"{silence.expires_at.astimezone():%Y-%m-%d %H:%M %Z} (they are still recorded); "
              f"end it early with `jackpot-maint alerts unsilence {silence.id}`")
    return EXIT_OK


def silences_command(args: argparse.Namespace) -> int:
    from scheduler.silences import list_silences

    settings, state = _open(args)
    try:
        found = list_silences(state, include_expired=args.all)
    finally:
        state.dispose()
    if args.json:
        print_json([silence.to_dict() for silence in found])
        return EXIT_OK
    if not found and not settings.alerts.maintenance_windows:
        print("no active silences")
        return EXIT_OK
    if found:
        print_table(["id", "match", "until", "by", "reason"],
                    [[silence.id, silence.match, f"{silence.expires_at.astimezone():%Y-%m-%d %H:%M}"
                      + (" (removed)" if silence.removed_at else ""), silence.created_by or "", silence.reason or ""]
                     for silence in found])
    for window in settings.alerts.maintenance_windows:
        print(f"maintenance window: '{window.cron}' for {window.duration:g}s matching {window.match!r}: {window.reason}")
    return EXIT_OK


def unsilence_command(args: argparse.Namespace) -> int:
    from scheduler.silences import remove_silence

    settings, state = _open(args)
    try:
        removed = remove_silence(state, args.id)
    finally:
        state.dispose()
    if not removed:
        raise UsageError(f"there is no active silence #{args.id}; see `jackpot-maint alerts silences`")
    print(f"silence #{args.id} ended")
    return EXIT_OK


def test_command(args: argparse.Namespace) -> int:
    from scheduler import alerts

    loaded = load(args)
    results, problems = alerts.send_test(loaded.settings, contact=args.contact, level=args.level)
    if args.json:
        print_json({"results": [{"target": result.target, "display": result.display, "ok": result.ok,
                                 "seconds": round(result.seconds, 3), "error": result.error,
                                 "reached_by": result.reached_by} for result in results],
                    "problems": problems})
    else:
        for problem in problems:
            print(f"problem: {problem}", file=sys.stderr)
        if args.contact is None and args.level is None:
            settings = loaded.settings
            for category in settings.alerts.routes:
                first = alerts.start_level(settings, category, "")
                if not alerts.recipients_of_level(settings, category, first):
                    contact, _ = alerts.contact_for(settings, category)
                    print(f"note: new {category} alerts (level {first}) reach no configured notifier (contact "
                          f"{contact}: targets {', '.join(settings.alerts.contacts[contact].targets) or 'none'}); "
                          f"they are recorded and shown, not sent, unless alerts.fallback is set", file=sys.stderr)
        if not results:
            print("no notifier targets to test: configure [notifiers.<name>] (see the README's alerts section)")
        for result in results:
            mark = "ok  " if result.ok else "FAIL"
            via = f" [{', '.join(result.reached_by)}]" if result.reached_by else ""
            line = f"{mark} {result.target}: {result.display} ({result.seconds:.2f}s){via}"
            if result.error:
                line += f": {result.error}"
            print(line)
    if problems or not results or not all(result.ok for result in results):
        return EXIT_PROBLEMS
    return EXIT_OK
