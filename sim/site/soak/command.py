"""``cscs soak``, added to the ``cscs`` command through the ``cscs.commands`` entry-point
group, as ``cscs demo`` is (the product never imports the simulators)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cscs.core.settings import Settings, default_state_dir

__all__ = ["add_soak_command"]


async def _soak(args: argparse.Namespace, settings: Settings) -> int:
    from sim.site.soak.night import SoakOptions, run_soak  # only when asked: it imports a lot

    state = args.state_dir or (settings.state_dir or default_state_dir()) / f"soak-{args.seed}"
    options = SoakOptions(
        state_dir=state, latiss=args.latiss, comcam=args.comcam, seed=args.seed,
        spacing=args.spacing, headroom=int(args.headroom_gb * 2**30),
        json_path=args.json, keep_files=args.keep_files, efd=args.efd,
    )  # fmt: skip
    return await run_soak(options, sys.stdout)


def add_soak_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    soak = subparsers.add_parser(
        "soak", help="a long simulated night with faults injected, then its reconciliation"
    )
    soak.add_argument("--latiss", type=int, default=500, help="LATISS images (default 500)")
    soak.add_argument("--comcam", type=int, default=100, help="ComCam images (default 100)")
    soak.add_argument("--seed", type=int, default=1, help="which faults, when (default 1)")
    soak.add_argument("--spacing", type=int, default=10, help="images between faults")
    soak.add_argument(
        "--headroom-gb", type=float, default=20.0,
        help="what the archive may use before the archivers' reserve (default 20 GiB)",
    )  # fmt: skip
    soak.add_argument("--state-dir", type=Path, help="default: $CSCS_STATE_DIR/soak-SEED")
    soak.add_argument("--json", type=Path, help="the account (default: STATE_DIR/soak-SEED.json)")
    soak.add_argument(
        "--keep-files", action="store_true", help="keep every archived file (needs ~100 GB)"
    )
    soak.add_argument(
        "--efd", choices=("sqlite", "influxdb"), default="sqlite",
        help="the EFD's store: the embedded SQLite file (default), or an influxd the soak "
        "starts itself under its state directory (adds the fault influx-restart)",
    )  # fmt: skip
    soak.set_defaults(func=_soak)
