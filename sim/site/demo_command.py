"""``cscs demo``, added to the ``cscs`` command through the ``cscs.commands`` entry-point
group (the product never imports the simulators; they plug into it)."""

from __future__ import annotations

import argparse
import sys

from cscs.camera.geometry import Camera
from cscs.core.settings import Settings

__all__ = ["add_demo_command"]

_CAMERAS = {"latiss": Camera.LATISS, "comcam": Camera.COMCAM}


async def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from sim.site.demo import run_demo  # only when asked: it imports every component

    return await run_demo(
        backend=args.backend,
        camera=_CAMERAS[args.camera],
        fast=args.fast,
        state_dir=settings.state_dir,
        out=sys.stdout,
        dashboard=args.dashboard,
    )


def add_demo_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = subparsers.add_parser("demo", help="run a simulated night on an embedded broker")
    demo.add_argument("--backend", default="auto", choices=["auto", "mosquitto", "amqtt"])
    demo.add_argument("--camera", default="latiss", choices=sorted(_CAMERAS))
    demo.add_argument("--fast", action="store_true", help="0.2 s readouts instead of 2 s")
    demo.add_argument(
        "--dashboard", action="store_true",
        help="serve the night staff's web page during the night, and after it until Ctrl-C",
    )  # fmt: skip
    demo.set_defaults(func=_demo)
