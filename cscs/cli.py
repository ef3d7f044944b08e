"""The ``cscs`` command: run CSCs, the embedded broker, the operators' tools.

Subcommands of installed packages join it through the ``cscs.commands`` entry-point
group (``cscs demo`` comes that way from the simulators), and ``cscs run NAME`` finds
CSCs through ``cscs.components`` (:mod:`cscs.components`): this module imports no
component and no simulator.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from cscs import components
from cscs.camera.memory import keep_freed_memory
from cscs.core.broker import EmbeddedBroker
from cscs.core.broker_address import DEFAULT_BROKER_URL, BrokerAddress
from cscs.core.bus import Bus
from cscs.core.errors import ExpectedError
from cscs.core.interface_doc import render
from cscs.core.settings import Settings, read_password_file, settings_from_env, with_credentials
from cscs.core.states import State
from cscs.core.tai import current_tai
from cscs.core.tasks import until_stop_signal
from cscs.core.topics import CscAddress
from cscs.core.transport import BrokerUnavailableError
from cscs.efd.command import add_efd_command
from cscs.efd.store import EfdStoreError
from cscs.ocs.alarms import follow_alarms, show_alarms
from cscs.ocs.broker_config import BrokerUsers, write_broker_config
from cscs.ocs.command import parse_params, send_command
from cscs.ocs.jobs import follow_job, show_jobs
from cscs.ocs.progress import Progress
from cscs.ocs.runner import run_script
from cscs.ocs.script import ScriptStepError, load_script
from cscs.ocs.status import show_status
from cscs.ocs.watch import watch

__all__ = ["Command", "add_broker_options", "build_parser", "main"]

#: What a subcommand runs: given the parsed arguments and the process settings, an exit code.
Command = Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]


def _broker(args: argparse.Namespace, settings: Settings) -> BrokerAddress:
    """The broker and credentials: ``--broker`` over ``$CSCS_BROKER``; the password only
    from a file or the environment (a command line is visible to anyone on the host)."""
    if args.broker is None:
        address = settings.broker
    else:
        address = BrokerAddress.from_url(args.broker)
        if address.password is not None:
            raise ValueError(
                "--broker holds a password, which `ps` shows to anyone on this host: give "
                "it in a file (--password-file or $CSCS_BROKER_PASSWORD_FILE) or in "
                "$CSCS_BROKER_PASSWORD"
            )
        address = with_credentials(
            address, settings.broker_username, settings.broker_password, settings.broker_ca
        )
    password = (
        read_password_file(args.password_file, "--password-file") if args.password_file else None
    )
    return with_credentials(address, args.username, password, args.ca_file)


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    cls = components.find(args.name)
    csc = cls(
        args.index,
        settings=settings,
        broker=_broker(args, settings),
        initial_state=State[args.state.upper()],
        connect_timeout=args.connect_timeout,
    )
    loop = asyncio.get_running_loop()
    stopping: set[asyncio.Task[None]] = set()

    def on_signal(sig: signal.Signals) -> None:
        task = asyncio.create_task(csc.stop(f"signal {sig.name}"), name="stop")
        stopping.add(task)
        task.add_done_callback(stopping.discard)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    # What is imported by now (astropy, numpy, pydantic's schemas: hundreds of thousands
    # of objects) lives as long as the process: out of the cyclic collector's way. Each
    # full collection walked all of it; on the archiver's ComCam catch-up that was ~6%
    # of its CPU (perf: gc_collect_main, visit_decref, visit_reachable).
    gc.collect()  # what importing left as garbage goes now, not frozen with the rest
    gc.freeze()
    await csc.run()
    return 0


async def _broker_cmd(args: argparse.Namespace, settings: Settings) -> int:
    async with EmbeddedBroker(args.backend, host=args.host, port=args.port) as broker:
        print(f"{broker.backend} broker listening at {broker.url} (Ctrl-C stops it)\n"
              "NO AUTHENTICATION: anyone who reaches this port can publish anything, under "
              "any CSC's name. A site runs Mosquitto with `cscs broker-config`.",
              flush=True)  # fmt: skip
        await until_stop_signal()
    return 0


def _text_params(csc: str, command: str) -> frozenset[str]:
    """The parameters ``command`` of ``csc`` declares as strings, when that CSC is
    installed here (none otherwise): a JSON object typed for one of them is sent as the
    text it is. Looked up only when a value reads as an object or a list, so that an
    ordinary command does not pay for importing its CSC."""
    try:
        spec = components.find(csc).interface.command(command)
    except (ValueError, TypeError, ImportError):
        return frozenset()
    if spec is None:
        return frozenset()
    return frozenset(n for n, f in spec.params.model_fields.items() if f.annotation is str)


async def _ocs(args: argparse.Namespace, settings: Settings) -> int:
    async with Bus(_broker(args, settings), connect_timeout=args.connect_timeout) as bus:
        if args.ocs_command == "command":
            target = CscAddress.parse(args.target, settings.prefix)
            params = parse_params(args.params)
            if any(isinstance(value, dict | list) for value in params.values()):
                params = parse_params(args.params, _text_params(target.name, args.command))
            return await send_command(
                bus, target, args.command, params, out=sys.stdout, timeout=args.timeout,
                identity=args.identity,
            )  # fmt: skip
        if args.ocs_command == "run-script":
            return await _run_script(bus, args, settings)
        if args.ocs_command == "jobs":
            if args.follow:
                return await follow_job(bus, settings.prefix, args.follow, sys.stdout)
            return await show_jobs(bus, settings.prefix, sys.stdout)
        if args.ocs_command == "alarms":
            if args.follow:
                return await follow_alarms(bus, settings.prefix, sys.stdout)
            return await show_alarms(bus, settings.prefix, sys.stdout)
        if args.ocs_command == "status":
            return await show_status(
                bus, settings.prefix, out=sys.stdout, listen=args.listen, follow=args.follow,
                interval=args.interval,
            )  # fmt: skip
        watched = CscAddress.parse(args.target, settings.prefix) if args.target else None
        return await watch(
            bus, settings.prefix, watched, out=sys.stdout, count=args.count,
            telemetry=args.telemetry, heartbeats=args.heartbeats,
        )  # fmt: skip


async def _dashboard(args: argparse.Namespace, settings: Settings) -> int:
    from cscs.dashboard.run import serve_dashboard  # aiohttp and the page: only when asked

    return await serve_dashboard(_broker(args, settings), settings, args)


async def _run_script(bus: Bus, args: argparse.Namespace, settings: Settings) -> int:
    from cscs.camera.observatory import local_sidereal_deg  # astropy: only scripts need it

    script = load_script(args.file)  # a ScriptError (bad file) is a ValueError: exit 2
    progress = Progress(sys.stdout)
    progress.say(f"running {script.source} ({script.name})")
    try:
        steps = await run_script(
            bus, script, prefix=settings.prefix, overrides=parse_params(args.set),
            progress=progress, lst_deg=lambda: local_sidereal_deg(current_tai()),
        )  # fmt: skip
    except ScriptStepError as exc:
        print(f"script failed: {exc}", file=sys.stderr)
        return 1
    print(f"script done: {steps} steps", flush=True)
    return 0


def interface_doc(args: argparse.Namespace) -> int:
    text = render(cls.interface for cls in components.all_classes(components.PROJECT))
    if args.check:
        current = Path(args.check).read_text() if Path(args.check).exists() else ""
        if current != text:
            print(
                f"{args.check} is out of date with the schemas in the code; "
                "regenerate it with `make docs` (cscs interface-doc --output ...)",
                file=sys.stderr,
            )
            return 1
        print(f"{args.check} matches the schemas")
        return 0
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def add_broker_options(parser: argparse.ArgumentParser) -> None:
    """``--broker`` and the login options, for any subcommand that talks to the bus."""
    parser.add_argument(
        "--broker",
        help=f"broker URL, mqtt://host:port or mqtts://… (default: $CSCS_BROKER or "
        f"{DEFAULT_BROKER_URL}); no password here: see --password-file",
    )
    parser.add_argument(
        "--username", help="broker user name (default: $CSCS_BROKER_USERNAME, or the URL's)"
    )
    parser.add_argument(
        "--password-file",
        help="file whose first line is the broker password (default: "
        "$CSCS_BROKER_PASSWORD_FILE or $CSCS_BROKER_PASSWORD; never on the command line)",
    )
    parser.add_argument(
        "--ca-file", help="certificate authority for mqtts:// (default: $CSCS_BROKER_CA)"
    )
    parser.add_argument("--password", action=_NoPasswordHere, help=argparse.SUPPRESS)


class _NoPasswordHere(argparse.Action):
    """``--password`` is refused by name (argparse would otherwise take it for an
    abbreviation of ``--password-file``)."""

    def __call__(self, parser: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        parser.error("--password: a password on the command line shows in `ps` to anyone on "
                     "this host; put it in a file (--password-file, $CSCS_BROKER_PASSWORD_FILE) "
                     "or in $CSCS_BROKER_PASSWORD")  # fmt: skip


def _add_broker_config(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    config = sub.add_parser(
        "broker-config",
        help="write a site's Mosquitto configuration: users, hashed passwords, ACLs by "
        "role, TLS (docs/security.md)",
    )
    config.add_argument("users", type=Path, help="YAML file: prefix, and users with roles")
    config.add_argument("--out", type=Path, required=True, help="directory to write into")
    config.add_argument("--host", default="0.0.0.0", help="address to listen on")
    config.add_argument("--port", type=int, default=1883)
    config.add_argument("--tls", nargs=3, type=Path, metavar=("CA", "CERT", "KEY"),
                        help="serve TLS with this CA, server certificate and key")  # fmt: skip
    config.set_defaults(func=_broker_config)


async def _broker_config(args: argparse.Namespace, settings: Settings) -> int:
    users = BrokerUsers.load(args.users)
    conf = write_broker_config(users, args.out, host=args.host, port=args.port,
                               tls=args.tls or ())  # fmt: skip
    print(f"wrote {conf}, {args.out / 'passwd'} and {args.out / 'acl'}; each user's "
          f"password is in {args.out / 'credentials'}/USER (give it to that process as "
          "CSCS_BROKER_PASSWORD_FILE). Run: mosquitto -c " + str(conf))  # fmt: skip
    return 0


def _add_ocs(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ocs = sub.add_parser("ocs", help="the operators' tools")
    ocs_sub = ocs.add_subparsers(dest="ocs_command", required=True)
    command = ocs_sub.add_parser("command", help="send a command, print its acks")
    command.add_argument("target", help="NAME:INDEX, e.g. Archiver:1")
    command.add_argument("command", help="e.g. start, enable, setLogLevel")
    command.add_argument("params", nargs="*", help="key=value (values read as JSON if they parse)")
    command.add_argument("--timeout", type=float, default=10.0)
    command.add_argument("--identity", help="who commands (default user@host)")
    script = ocs_sub.add_parser("run-script", help="run an observing script (YAML steps)")
    script.add_argument("file", help="e.g. sim/site/scripts/night.yaml")
    script.add_argument(
        "--set", nargs="*", default=[], metavar="NAME=VALUE",
        help="script variables, e.g. index=2 config=fast",
    )  # fmt: skip
    status = ocs_sub.add_parser("status", help="table of every CSC seen on the bus")
    status.add_argument("--listen", type=float, default=2.0, help="seconds to listen first")
    status.add_argument("--follow", "-f", action="store_true", help="redraw live until Ctrl-C")
    status.add_argument("--interval", type=float, default=1.0, help="seconds between redraws")
    watcher = ocs_sub.add_parser("watch", help="print events and acks as they come")
    watcher.add_argument("target", nargs="?", help="NAME:INDEX (default: every CSC)")
    watcher.add_argument("--count", type=int, help="stop after this many messages")
    watcher.add_argument("--telemetry", action="store_true", help="show telemetry too")
    watcher.add_argument("--heartbeats", action="store_true", help="show heartbeats too")
    jobs = ocs_sub.add_parser("jobs", help="OCS Batch's jobs, or one followed to its end")
    jobs.add_argument("--follow", "-f", metavar="JOBID", help="draw this job's progress")
    alarms = ocs_sub.add_parser("alarms", help="the Telemetry Gateway's alarms, or followed")
    alarms.add_argument("--follow", "-f", action="store_true", help="a line per change")
    for p in (command, script, status, watcher, jobs, alarms):
        add_broker_options(p)
        p.add_argument("--connect-timeout", type=float, default=5.0)
    ocs.set_defaults(func=_ocs)


def _add_dashboard(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dashboard = sub.add_parser("dashboard", help="serve the night staff's web page")
    dashboard.add_argument("--host", default="127.0.0.1", help="address to listen on")
    dashboard.add_argument("--port", type=int, default=8080, help="0: any free port")
    dashboard.add_argument(
        "--token-file", type=Path,
        help="file whose first line is the page's token (or $CSCS_DASHBOARD_TOKEN); "
        "required to listen beyond 127.0.0.1",
    )  # fmt: skip
    dashboard.add_argument(
        "--allow-commands", action="store_true",
        help="let the page acknowledge and mute the Telemetry Gateway's alarms",
    )  # fmt: skip
    dashboard.add_argument(
        "--host-name", action="append", default=[], metavar="NAME",
        help="a name the page may be opened by besides localhost and loopback addresses "
        "(repeatable; without a token any other Host is refused: DNS rebinding)",
    )  # fmt: skip
    dashboard.add_argument(
        "--archive-root", type=Path,
        help="the archive whose files are previewed (default $CSCS_STATE_DIR/archive, "
        "the archiver's default)",
    )  # fmt: skip
    add_broker_options(dashboard)
    dashboard.add_argument("--connect-timeout", type=float, default=5.0)
    dashboard.set_defaults(func=_dashboard)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cscs", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="subcommand", required=True)

    run = sub.add_parser("run", help="run one CSC or simulator in this process")
    run.add_argument("name", help="one of: " + (", ".join(components.names()) or "(none)"))
    run.add_argument("--index", type=int, default=0)
    run.add_argument(
        "--state",
        default="standby",
        choices=["standby", "disabled", "enabled"],
        help="initial summary state (default standby)",
    )
    add_broker_options(run)
    run.add_argument(
        "--connect-timeout", type=float, default=30.0,
        help="seconds to wait for the broker at start-up (a service started with its "
        "broker, on a busy machine, may have to wait)",
    )  # fmt: skip
    run.set_defaults(func=_run)

    broker = sub.add_parser("broker", help="run the embedded MQTT broker in the foreground")
    broker.add_argument("--backend", default="auto", choices=["auto", "mosquitto", "amqtt"])
    broker.add_argument("--host", default="127.0.0.1")
    broker.add_argument("--port", type=int, default=1883)
    broker.set_defaults(func=_broker_cmd)

    _add_broker_config(sub)

    _add_ocs(sub)

    _add_dashboard(sub)

    add_efd_command(sub)

    doc = sub.add_parser("interface-doc", help="write docs/interface.md from the schemas")
    group = doc.add_mutually_exclusive_group()
    group.add_argument("--output", help="file to write (default stdout)")
    group.add_argument("--check", help="fail if this file differs from what would be written")
    doc.set_defaults(func=None)

    for plugin in components.command_plugins():
        try:
            plugin.load()(sub)
        except Exception as exc:  # another package's bug must not take `cscs` down with it
            why = f"{type(exc).__name__}: {exc}"
            print(f"cscs: warning: subcommand plugin {plugin.name} ({plugin.value}) failed "
                  f"to load and is left out: {why}", file=sys.stderr)  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.subcommand == "interface-doc":
        return interface_doc(args)
    if args.subcommand == "run":
        keep_freed_memory()  # before the first thread; see cscs.camera.memory
    try:
        settings = settings_from_env()
        command: Command = args.func
        return asyncio.run(command(args, settings))
    except KeyboardInterrupt:
        return 130
    except (ValueError, BrokerUnavailableError, ExpectedError, OSError, EfdStoreError) as exc:
        print(f"cscs: error: {str(exc) or type(exc).__name__}", file=sys.stderr)
        return 2
