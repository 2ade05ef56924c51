"""`jackpot-maint simulate`: run the simulated jackpot service, or steer a running one."""

from __future__ import annotations

import argparse
import json

from scheduler.commands._common import print_json
from scheduler.errors import EXIT_OK, UsageError


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    from scheduler import simulator

    parser = subparsers.add_parser(
        "simulate", parents=[common], help="run the simulated jackpot service (tests, the demo, trying alerts)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="A stand-in for the jackpot service: /health, /health/database, /health/jackpot and /metrics on "
                    "127.0.0.1, with answers switchable at run time, an application log with ERROR lines on demand, "
                    "and a held row lock or a long query in the target database on demand.",
        epilog="examples:\n"
               "  jackpot-maint simulate serve --port 3001 --application-log /tmp/svc/logs/application.log --database-url URL\n"
               "  jackpot-maint simulate control http://127.0.0.1:3001 set mode=down\n"
               "  jackpot-maint simulate control http://127.0.0.1:3001 set mode=slow endpoint=/health\n"
               "  jackpot-maint simulate control http://127.0.0.1:3001 set error_rate=2.5\n"
               "  jackpot-maint simulate control http://127.0.0.1:3001 log count=5 message='Database query failed'\n"
               "  jackpot-maint simulate control http://127.0.0.1:3001 lock row_id=1   (then: release)\n"
               "  jackpot-maint simulate control http://127.0.0.1:3001 long_query seconds=600   (then: stop_query)")
    actions = parser.add_subparsers(dest="simulate_command", metavar="ACTION", required=True)
    serve = actions.add_parser("serve", parents=[common], help="run the simulator in the foreground until SIGTERM",
                               description="Run the simulator in the foreground; it prints 'listening on URL' when ready. "
                                           "--database-url gives the database for held locks and long queries.")
    simulator.add_arguments(serve, database_flag=False)
    serve.set_defaults(handler=serve_command)
    control = actions.add_parser("control", parents=[common], help="send an action to a running simulator",
                                 description="Send one action to a running simulator and print its new state (JSON). "
                                             "Actions: set (mode=healthy|degraded|slow|down|hang, endpoint=/health, "
                                             "error_rate=N, slow_seconds=N), log (count, level, message), lock (row_id), "
                                             "release, long_query (seconds), stop_query, leak (mb), free, reset, state.")
    control.add_argument("url", help="the simulator's base URL, e.g. http://127.0.0.1:3001")
    control.add_argument("action", help="set, log, lock, release, long_query, stop_query, leak, free, reset, state")
    control.add_argument("values", nargs="*", metavar="KEY=VALUE", help="the action's arguments")
    control.set_defaults(handler=control_command)


def serve_command(args: argparse.Namespace) -> int:
    from scheduler import simulator

    return simulator.serve(args)


def control_command(args: argparse.Namespace) -> int:
    from scheduler.simulator import SimulatorClient

    payload = {}
    for item in args.values:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"{item!r}: expected KEY=VALUE, e.g. mode=down")
        try:
            payload[key] = json.loads(value)
        except json.JSONDecodeError:
            payload[key] = value
    try:
        state = SimulatorClient(args.url)._control(args.action, payload)
    except RuntimeError as error:
        raise UsageError(str(error)) from None
    except OSError as error:
        from scheduler.errors import ConnectionFailed

        raise ConnectionFailed(f"cannot reach the simulator at {args.url}: {error}",
                               hint="start it with `jackpot-maint simulate serve`") from None
    print_json(state)
    return EXIT_OK
