"""The night's account, from the camera's own record of what it took (pure: no I/O).

Each image the camera's journal lists is followed to the archive: every sensor's file
catalogued (archived), re-read and matched (verified), with its header (header
complete; rebuilt from the EFD, when the file says so), measured by image QC where QC
applies (OBJECT and ENGTEST images; caught up, when a ``qc_catch_up`` job measured
it), and that QC forwarded to the OCS side.

A shortfall is explained only by a fault that destroyed the information itself, never
by a component's own outage: a header service or OCS Batch down costs latency (the
header is rebuilt from the EFD, the QC caught up from the catalog), not the header or
the QC. So a missing header keyword is explained only by a broker restart during which
its telemetry could not have been heard by anyone, the EFD writer included
(:func:`_unheard`); an InfluxDB restart never (the EFD writer spools what it hears
while its store is down: nothing is lost); QC not measured only by its job's own stated
reason (a failed stage); QC measured but not forwarded by a broker restart near it (the
QoS 1 message in flight when the broker stopped). One that nothing explains is
*unexplained*, and fails the night as loss and duplication do.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sim.daq.journal import TakenImage
from sim.site.soak.plan import FaultKind

__all__ = ["AlarmRecord", "FaultWindow", "Reconciliation", "SensorFile", "reconcile", "table"]

QC_TYPES = frozenset({"OBJECT", "ENGTEST"})
REBUILT = "EFD"  # the HDRSRC of a header rebuilt from the EFD

#: A header's telemetry is taken at its moments: the exposure's start (about 1.2 s
#: before its endReadout in the soak: 1 s exposures, 0.2 s readouts; 1.5 s allowed) to
#: its endOfImageTelemetry (up to 1 s after). A sample counts there if it is at most
#: MAX_AGE s old (the header service's default ``max_age``).
_MOMENTS_BEFORE, _MOMENTS_AFTER, _MAX_AGE = 1.5, 1.0, 5.0
#: What is announced while the broker restarts is gone for every listener.
_FORWARDING = (frozenset({FaultKind.BROKER_RESTART}), 5.0, 5.0)


def _unheard(window: FaultWindow, end_readout: float) -> bool:
    """Whether a telemetry value the image's header takes at one of its moments could
    have been heard by nobody: the broker was down (until every CSC was back, its
    sources included) from at least MAX_AGE s before that moment to the moment itself;
    or a moment fell in an outage of MAX_AGE s or more, or within MAX_AGE s after it, so
    that the camera could say it (and stamp it) only as the broker came back, or before
    its sources had published again, when the newest value anyone had heard was from
    before the outage. Nothing the EFD could have recorded, nothing to
    rebuild from."""
    if window.kind is not FaultKind.BROKER_RESTART:
        return False
    first, last = end_readout - _MOMENTS_BEFORE, end_readout + _MOMENTS_AFTER
    # A long outage, and a moment in it or within MAX_AGE after it: until each source
    # has published again once the broker is back, the newest value anyone has is from
    # before the outage (a 1 Hz dome with a 3 s max_age, reconnecting, seen in a soak).
    long_outage = window.end_tai - window.start_tai >= _MAX_AGE
    if long_outage and first <= window.end_tai + _MAX_AGE and window.start_tai <= last:
        return True
    earliest = max(window.start_tai + _MAX_AGE, first)
    return earliest <= min(window.end_tai, last)


@dataclass(frozen=True)
class FaultWindow:
    kind: FaultKind
    target: str  # what it hit, e.g. "HeaderService:1", "broker", "archive disk"
    camera: int  # whose image it came before
    start_tai: float
    end_tai: float  # when what it hit was back (the same as start if never gone)
    note: str = ""

    def near(self, kinds: frozenset[FaultKind], before: float, after: float, tai: float) -> bool:
        """One of ``kinds``, from ``before`` s before it began to ``after`` s after its
        target was back."""
        return self.kind in kinds and self.start_tai - before <= tai <= self.end_tai + after

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "target": self.target, "camera": self.camera,
                "start_tai": round(self.start_tai, 3), "end_tai": round(self.end_tai, 3),
                "seconds": round(self.end_tai - self.start_tai, 2), "note": self.note}  # fmt: skip


@dataclass(frozen=True)
class SensorFile:
    """One catalogued file as the night ends."""

    path: str
    checksum: str
    header_complete: bool
    missing_keywords: str
    rows: int = 1  # catalog rows for this image and sensor
    header_source: str = ""  # the file's HDRSRC: "live", "EFD" (rebuilt), "" (not known)


@dataclass
class AlarmRecord:
    """One alarm of the Telemetry Gateway over the night (severities 1 NONE, 2 WARNING,
    3 SERIOUS, 4 CRITICAL)."""

    name: str
    raised: int = 0  # times it went from NONE to a severity
    max_severity: int = 1
    severity: int = 1  # the last heard
    reason: str = ""  # the worst's

    @property
    def cleared(self) -> bool:
        return self.severity <= 1

    def heard(self, severity: int, reason: str) -> None:
        if severity > 1 and self.severity <= 1:
            self.raised += 1
        if severity > self.max_severity:
            self.max_severity, self.reason = severity, reason
        self.severity = severity

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "raised": self.raised, "maxSeverity": self.max_severity,
                "cleared": self.cleared, "reason": self.reason}  # fmt: skip


@dataclass
class Reconciliation:
    seed: int
    counts: dict[str, dict[str, int]]  # by camera, and "all"
    lines: list[str] = field(default_factory=list)  # each shortfall, explained
    unexplained: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)  # "image sensor"
    duplicated: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.unexplained)

    def as_dict(self) -> dict[str, Any]:
        return {**self.counts["all"], "seed": self.seed, "byCamera": self.counts,
                "explained": self.lines, "unexplained": self.unexplained,
                "lostFiles": self.lost, "duplicatedFiles": self.duplicated}  # fmt: skip


COLUMNS = ("taken", "archived", "verified", "headerComplete", "headerRebuilt", "qcExpected",
           "qcMeasured", "qcCaughtUp", "qcForwarded", "lost", "duplicated")  # fmt: skip


def reconcile(
    seed: int,
    taken: Mapping[str, list[TakenImage]],
    catalog: Mapping[tuple[str, str], SensorFile],
    verified: Mapping[tuple[str, str], str],
    announced: Mapping[tuple[str, str], set[str]],
    qc_measured: Iterable[str],
    qc_stages: Mapping[str, tuple[str, str]],
    forwarded: Iterable[str],
    faults: list[FaultWindow],
    qc_caught_up: Iterable[str] = (),
) -> Reconciliation:
    """``taken``: each camera's journal, by camera name; ``catalog``: the file of each
    (image, sensor); ``verified``: the checksum each file was re-read with;
    ``announced``: the paths ``imageArchived`` named for each; ``qc_stages``: the last
    image-qc stage (status, description) of each image; ``qc_caught_up``: images a
    ``qc_catch_up`` job measured.

    Images are counted whole (every sensor), except ``lost`` and ``duplicated``, which
    count files."""
    facts = _Facts(catalog, verified, announced, set(qc_measured), qc_stages,
                   set(forwarded), faults, set(qc_caught_up))  # fmt: skip
    result = Reconciliation(seed, {})
    total = dict.fromkeys(COLUMNS, 0)
    for instrument, images in taken.items():
        counts = dict.fromkeys(COLUMNS, 0)
        for image in images:
            _account(image, facts, counts, result)
        result.counts[instrument] = counts
        total = {key: total[key] + counts[key] for key in COLUMNS}
    result.counts["all"] = total
    return result


@dataclass(frozen=True)
class _Facts:
    catalog: Mapping[tuple[str, str], SensorFile]
    verified: Mapping[tuple[str, str], str]
    announced: Mapping[tuple[str, str], set[str]]
    measured: set[str]
    qc_stages: Mapping[str, tuple[str, str]]
    forwarded: set[str]
    faults: list[FaultWindow]
    caught_up: set[str]


def _account(
    image: TakenImage, facts: _Facts, counts: dict[str, int], result: Reconciliation
) -> None:
    name = image.imageName
    counts["taken"] += 1
    read_out = [s for s in image.sensors if s not in image.missing]
    files = {s: facts.catalog.get((name, s)) for s in read_out}
    for sensor, row in files.items():
        if row is None:
            result.lost.append(f"{name} {sensor}")
            counts["lost"] += 1
        elif row.rows > 1 or len(facts.announced.get((name, sensor), set()) - {row.path}) > 0:
            result.duplicated.append(f"{name} {sensor}")
            counts["duplicated"] += 1
    for sensor in image.missing:
        result.lines.append(f"{name} {sensor}: not read out by the camera (no pixels to archive)")
    rows = [row for row in files.values() if row is not None]
    if len(rows) < len(read_out) or not read_out:
        return
    counts["archived"] += 1
    unverified = [s for s, r in files.items() if r and facts.verified.get((name, s)) != r.checksum]
    if unverified:
        result.unexplained.append(f"{name}: not verified as catalogued: {', '.join(unverified)}")
    else:
        counts["verified"] += 1
    if all(row.header_complete for row in rows):
        counts["headerComplete"] += 1
        if any(row.header_source == REBUILT for row in rows):
            counts["headerRebuilt"] += 1
    else:
        why = "; ".join(sorted({row.missing_keywords for row in rows if not row.header_complete}))
        what = f"{name}: header incomplete ({why[:120]})"
        _explain(result, what, [f for f in facts.faults if _unheard(f, image.endReadoutTai)],
                 image.endReadoutTai, "its telemetry could not be heard")  # fmt: skip
    if image.imageType not in QC_TYPES:
        return
    counts["qcExpected"] += 1
    if name in facts.measured:
        counts["qcMeasured"] += 1
        counts["qcCaughtUp"] += name in facts.caught_up
    else:
        status, description = facts.qc_stages.get(name, ("", ""))
        if status == "failed":
            result.lines.append(f"{name}: QC not measured: its job said {description!r}")
        else:  # the pixels are archived: nothing but the pipeline can explain it
            result.unexplained.append(f"{name}: QC not measured (last stage: {status or 'none'})")
        return
    if name in facts.forwarded:
        counts["qcForwarded"] += 1
    else:
        tai = image.endReadoutTai
        near = [f for f in facts.faults if f.near(*_FORWARDING, tai)]
        _explain(result, f"{name}: QC not forwarded to the OCS", near, tai, "in flight")


def _explain(
    result: Reconciliation, what: str, causes: list[FaultWindow], tai: float, how: str
) -> None:
    """A shortfall, with the fault that explains it (the nearest of ``causes``), or
    unexplained."""
    if causes:
        cause = min(causes, key=lambda f: abs(f.start_tai - tai))
        result.lines.append(f"{what}: {cause.kind.value} of {cause.target} "
                            f"{tai - cause.start_tai:+.1f} s from it ({how})")  # fmt: skip
    else:
        result.unexplained.append(f"{what}: no fault that destroyed it explains it")


def table(result: Reconciliation) -> str:
    """The counts as a fixed-width table, one row per camera and the total."""
    width = max(len(c) for c in COLUMNS) + 1
    rows = [f"{'camera':<10}" + "".join(f"{c:>{width}}" for c in COLUMNS)]
    for camera, counts in result.counts.items():
        rows.append(f"{camera:<10}" + "".join(f"{counts[c]:>{width}}" for c in COLUMNS))
    return "\n".join(rows)
