"""Which fault comes before which image: drawn from a seed, so a night that went wrong
can be run again exactly as it was.

Pure logic (no I/O): the soak's loops ask :meth:`FaultPlan.at` before each image.
Every kind of fault comes at least once when there are slots enough; faults are spaced
along each camera's night (the injector runs them one at a time across cameras), so
that each can be told apart in the reconciliation.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from cscs.camera.geometry import Camera

__all__ = [
    "CAMERA_FAULTS",
    "INFLUX_FAULTS",
    "FaultKind",
    "FaultPlan",
    "PlannedFault",
    "plan_faults",
    "planned_kinds",
]


class FaultKind(StrEnum):
    DAQ_DROP = "daq-drop"  # one sensor's pixel stream stops after its header
    DAQ_CORRUPT = "daq-corrupt"  # one sensor's segment arrives with flipped bits
    BROKER_RESTART = "broker-restart"  # Mosquitto stopped and started (sessions kept)
    KILL_ARCHIVER = "kill-archiver"  # SIGKILL while archiving, restarted ENABLED
    KILL_HEADER_SERVICE = "kill-header-service"
    KILL_OCS_BATCH = "kill-ocs-batch"
    KILL_GATEWAY = "kill-gateway"
    KILL_EFD = "kill-efd"  # the EFD writer SIGKILLed, restarted 1-6 s later
    HEADER_NEVER = "header-never"  # the header service hangs through one image
    DISK_FULL = "disk-full"  # the archive's file system below the archiver's reserve
    OCS_LINK_CUT = "ocs-link-cut"  # the gateway's connection to the OCS side cut
    # Last, and only in a plan whose EFD is InfluxDB: the plan of a seed on the default
    # store draws from the kinds above, in their order, and stays what it was.
    INFLUX_RESTART = "influx-restart"  # influxd stopped, started again 1-6 s later


#: Faults that hit one camera's chain (its DAQ, archiver, header service); the others
#: hit the site, and are only timed by a camera's images.
CAMERA_FAULTS = frozenset(
    {
        FaultKind.DAQ_DROP,
        FaultKind.DAQ_CORRUPT,
        FaultKind.KILL_ARCHIVER,
        FaultKind.KILL_HEADER_SERVICE,
        FaultKind.HEADER_NEVER,
    }
)


#: Faults of the InfluxDB store: planned only when the soak's EFD is InfluxDB.
INFLUX_FAULTS = frozenset({FaultKind.INFLUX_RESTART})


def planned_kinds(influx: bool = False) -> list[FaultKind]:
    """The kinds a plan draws from, in a fixed order (the seed's draws depend on it)."""
    return [kind for kind in FaultKind if influx or kind not in INFLUX_FAULTS]


@dataclass(frozen=True)
class PlannedFault:
    kind: FaultKind
    camera: Camera  # whose image it comes before (and, for CAMERA_FAULTS, whose chain)
    image: int  # the image's number in that camera's night, from 1
    seed: int  # its own randomness (which sensor, how long down), from the plan's seed


@dataclass(frozen=True)
class FaultPlan:
    seed: int
    faults: tuple[PlannedFault, ...]

    def at(self, camera: Camera, image: int) -> PlannedFault | None:
        for fault in self.faults:
            if (fault.camera, fault.image) == (camera, image):
                return fault
        return None

    def kinds(self) -> set[FaultKind]:
        return {fault.kind for fault in self.faults}


def plan_faults(
    seed: int, images: Mapping[Camera, int], spacing: int = 10, influx: bool = False
) -> FaultPlan:
    """One fault every ``spacing`` images of each camera (fewer images: closer, down to
    every 3rd, so a short night still gets every kind once), never on the first two
    images (the night has to be running) nor the last (its effect must be seen).

    The first slots, in a shuffled order, take one fault of each kind; the rest are
    drawn at random. Which camera a site-wide fault is timed by is the slot's.
    ``influx``: the EFD is InfluxDB, and its restart is one of the kinds."""
    rng = random.Random(seed)
    kinds = planned_kinds(influx)
    slots: list[tuple[Camera, int]] = []
    for camera, count in images.items():
        if count < 4:
            continue
        want = max(1, count // spacing)
        step = max(3, min(spacing, (count - 3) // want))
        slots += [(camera, number) for number in range(3, count, step)]
    rng.shuffle(slots)
    order = rng.sample(kinds, len(kinds))
    faults = []
    for position, (camera, number) in enumerate(slots):
        kind = order[position] if position < len(order) else rng.choice(kinds)
        faults.append(PlannedFault(kind, camera, number, rng.randrange(2**32)))
    faults.sort(key=lambda fault: (fault.camera.value, fault.image))
    return FaultPlan(seed, tuple(faults))
