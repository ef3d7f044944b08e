"""The soak night as a measurement: ``cscs soak`` (500 LATISS + 100 ComCam images,
every CSC its own process on Mosquitto, a fault every ~10 images), then the rate the
night kept despite its faults.

    python -m benchmarks.soak [--latiss 500] [--comcam 100] [--seed 1]

It prints the soak's own account (the reconciliation table, each shortfall explained,
each fault, FAULT and alarm) and then images per minute and bytes archived, verified
and pruned per second over the whole night. There is no fault-free baseline in the
same run: a night without faults is the demo (``make demo``), and the two cameras'
images share the machine's two cores with QC, so the figure is the night's, not the
archiver's (``archive_throughput.py`` measures that against the raw disk).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

from sim.site.soak.night import SoakOptions, run_soak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latiss", type=int, default=500)
    parser.add_argument("--comcam", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--state-dir", type=Path, help="default: a temporary directory")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cscs-soak-") as scratch:
        state = args.state_dir or Path(scratch) / "state"
        account = state.parent / f"soak-{args.seed}.json"
        options = SoakOptions(state_dir=state, latiss=args.latiss, comcam=args.comcam,
                              seed=args.seed, json_path=account)  # fmt: skip
        status = asyncio.run(run_soak(options, sys.stdout))
        if account.exists():
            night = json.loads(account.read_text())
            minutes = night["durationSeconds"] / 60
            print(f"night: {night['taken']} images in {minutes:.1f} min "
                  f"({night['taken'] / minutes:.1f} images/min); "
                  f"{night['prunedBytes'] / 1e9:.1f} GB archived, verified and pruned "
                  f"({night['prunedBytes'] / 1e6 / night['durationSeconds']:.0f} MB/s); "
                  f"{len(night['faults'])} faults; lost {night['lost']}, "
                  f"duplicated {night['duplicated']}")  # fmt: skip
    return status


if __name__ == "__main__":
    sys.exit(main())
