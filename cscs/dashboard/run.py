"""Starting the dashboard: the ``cscs dashboard`` command, and the same server inside
``cscs demo --dashboard`` and the tests."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TextIO

from aiohttp import web

from cscs.core.broker_address import BrokerAddress
from cscs.core.bus import Bus
from cscs.core.settings import Settings, default_identity
from cscs.core.tasks import until_stop_signal
from cscs.core.transport import Transport
from cscs.dashboard.access import read_token, require_token_off_loopback
from cscs.dashboard.server import Dashboard, DashboardOptions
from cscs.dashboard.thresholds import gateway_config_source

__all__ = ["dashboard_options", "running_dashboard", "serve_dashboard"]


def dashboard_options(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    token_file: Path | None = None,
    allow_commands: bool = False,
    archive_root: Path | None = None,
    host_names: tuple[str, ...] = (),
) -> DashboardOptions:
    """The options, or AccessError (a ValueError) when they would not be safe."""
    token = read_token(token_file)
    require_token_off_loopback(host, token)
    return DashboardOptions(
        prefix=settings.prefix,
        archive_root=archive_root or settings.state_directory / "archive",
        gateway_config=gateway_config_source(settings),
        token=token,
        allow_commands=allow_commands,
        identity=f"{default_identity()} (dashboard)",
        hosts=(host, *host_names),
    )


@contextlib.asynccontextmanager
async def running_dashboard(
    bus: Transport, options: DashboardOptions, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[str]:
    """The dashboard served on ``host:port`` while the block runs; yields its address."""
    dashboard = Dashboard(bus, options)
    await dashboard.start()
    runner = web.AppRunner(dashboard.app(), access_log=None, shutdown_timeout=1.0)
    try:
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_port = runner.addresses[0][1]
        shown = f"[{host}]" if ":" in host else host
        yield f"http://{shown}:{bound_port}/"
    finally:
        await dashboard.stop()
        await runner.cleanup()


async def serve_dashboard(
    broker: BrokerAddress,
    settings: Settings,
    args: argparse.Namespace,
    out: TextIO = sys.stdout,
) -> int:
    """``cscs dashboard``: serve until Ctrl-C or SIGTERM."""
    options = dashboard_options(
        settings, host=args.host, token_file=args.token_file,
        allow_commands=args.allow_commands, archive_root=args.archive_root,
        host_names=tuple(getattr(args, "host_name", ())),
    )  # fmt: skip
    async with (
        Bus(broker, connect_timeout=args.connect_timeout) as bus,
        running_dashboard(bus, options, args.host, args.port) as url,
    ):
        mode = "alarms can be acknowledged and muted" if options.allow_commands else "read-only"
        print(f"dashboard at {url} ({mode}; Ctrl-C stops it)", file=out, flush=True)
        await until_stop_signal()
    return 0
