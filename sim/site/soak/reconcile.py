"""The night's account, from the camera's own record of what it took (pure: no I/O).

Each image the camera's journal lists is followed to the archive: every sensor's file
catalogued (archived), re-read and matched (verified), with its header (header
complete), measured by image QC where QC applies (OBJECT and ENGTEST images), and
that QC forwarded to the OCS side. A shortfall is explained by a fault injected near
the image, or by what the pipeline itself said (a QC stage's reason); one that no fault
explains is *unexplained*, and fails the night as loss and duplication do.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cscs.camera.geometry import Camera
from sim.daq.journal import TakenImage
from sim.site.soak.plan import FaultKind

__all__ = ["AlarmRecord", "FaultWindow", "Reconciliation", "SensorFile", "reconcile", "table"]

QC_TYPES = frozenset({"OBJECT", "ENGTEST"})


@dataclass(frozen=True)
class _Cause:
    """Faults that can take something away from an image, and when: the image's
    ``endReadout`` from ``before`` s before the fault began to ``after`` s after the
    fault's target was back."""

    kinds: frozenset[FaultKind]
    before: float
    after: float
    own_camera: bool  # only a fault of the image's own camera's chain


#: A header is made from the image's start (~1.2 s before its endReadout, more while
#: the DAQ synthesises) to its end: a header service gone in between has none, and one
#: just restarted lacks what its sources have not said again since (the weather's and
#: the telescope's telemetry, up to ~10 s).
_HEADER = _Cause(frozenset({FaultKind.KILL_HEADER_SERVICE, FaultKind.HEADER_NEVER}), 1.0,
                 15.0, own_camera=True)  # fmt: skip
#: QC starts 2 s after an image's last file is announced and takes up to ~10 s: an OCS
#: Batch killed meanwhile loses the job; one down when the file is announced, the image.
_QC = _Cause(frozenset({FaultKind.KILL_OCS_BATCH}), 20.0, 2.0, own_camera=False)
#: What is announced while the broker restarts is gone for every listener.
_BROKER = _Cause(frozenset({FaultKind.BROKER_RESTART}), 5.0, 5.0, own_camera=False)


@dataclass(frozen=True)
class FaultWindow:
    kind: FaultKind
    target: str  # what it hit, e.g. "HeaderService:1", "broker", "archive disk"
    camera: int  # whose image it came before
    start_tai: float
    end_tai: float  # when what it hit was back (the same as start if never gone)
    note: str = ""

    def explains(self, cause: _Cause, camera: int, tai: float) -> bool:
        return (
            self.kind in cause.kinds
            and (self.camera == camera or not cause.own_camera)
            and self.start_tai - cause.before <= tai <= self.end_tai + cause.after
        )

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


COLUMNS = ("taken", "archived", "verified", "headerComplete", "qcExpected", "qcMeasured",
           "qcForwarded", "lost", "duplicated")  # fmt: skip


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
) -> Reconciliation:
    """``taken``: each camera's journal, by camera name; ``catalog``: the file of each
    (image, sensor); ``verified``: the checksum each file was re-read with;
    ``announced``: the paths ``imageArchived`` named for each; ``qc_stages``: the last
    image-qc stage (status, description) of each image.

    Images are counted whole (every sensor), except ``lost`` and ``duplicated``, which
    count files."""
    facts = _Facts(catalog, verified, announced, set(qc_measured), qc_stages,
                   set(forwarded), faults)  # fmt: skip
    result = Reconciliation(seed, {})
    total = dict.fromkeys(COLUMNS, 0)
    index = {camera.instrument: camera.value for camera in Camera}
    for instrument, images in taken.items():
        counts = dict.fromkeys(COLUMNS, 0)
        for image in images:
            _account(index[instrument], image, facts, counts, result)
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


def _account(
    camera: int, image: TakenImage, facts: _Facts, counts: dict[str, int], result: Reconciliation
) -> None:
    name, at = image.imageName, (camera, image.endReadoutTai)
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
    else:
        why = "; ".join(sorted({row.missing_keywords for row in rows if not row.header_complete}))
        _explain(
            result, f"{name}: header incomplete ({why[:120]})", at, facts.faults, (_HEADER, _BROKER)
        )
    if image.imageType not in QC_TYPES:
        return
    counts["qcExpected"] += 1
    if name in facts.measured:
        counts["qcMeasured"] += 1
    else:
        status, description = facts.qc_stages.get(name, ("", ""))
        if status == "failed":
            result.lines.append(f"{name}: QC not measured: its job said {description!r}")
        else:
            _explain(result, f"{name}: QC not measured", at, facts.faults, (_QC, _BROKER))
        return
    if name in facts.forwarded:
        counts["qcForwarded"] += 1
    else:
        _explain(result, f"{name}: QC not forwarded to the OCS", at, facts.faults, (_BROKER,))


def _explain(
    result: Reconciliation,
    what: str,
    at: tuple[int, float],
    faults: list[FaultWindow],
    causes_of: tuple[_Cause, ...],
) -> None:
    """A shortfall, with the fault that explains it (the nearest of those that can), or
    unexplained."""
    camera, tai = at
    causes = [f for f in faults if any(f.explains(c, camera, tai) for c in causes_of)]
    if causes:
        cause = min(causes, key=lambda f: abs(f.start_tai - tai))
        result.lines.append(f"{what}: {cause.kind.value} of {cause.target} "
                            f"{tai - cause.start_tai:+.1f} s from it")  # fmt: skip
    else:
        result.unexplained.append(f"{what}: no fault near it explains it")


def table(result: Reconciliation) -> str:
    """The counts as a fixed-width table, one row per camera and the total."""
    width = max(len(c) for c in COLUMNS) + 1
    rows = [f"{'camera':<10}" + "".join(f"{c:>{width}}" for c in COLUMNS)]
    for camera, counts in result.counts.items():
        rows.append(f"{camera:<10}" + "".join(f"{counts[c]:>{width}}" for c in COLUMNS))
    return "\n".join(rows)
