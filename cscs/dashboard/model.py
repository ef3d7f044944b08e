"""What the dashboard knows of the night: pure data, fed with decoded bus messages.

Everything here came from the bus, where anyone can publish anything, so each message
is validated against its declared schema before it changes anything (a malformed one
is counted and dropped), every text kept is capped, and every collection is bounded:
the images of one night (oldest dropped first), the alarms, the jobs, the last log
lines. Which sections changed is recorded, so the server pushes only those.

The CSC table is :class:`cscs.ocs.status.StatusBoard`, the same rules ``cscs ocs
status`` shows (a retained state is a claim until a heartbeat confirms it; 3 s without
one is lost), so the page and the terminal never disagree.
"""

from __future__ import annotations

import json
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import structlog

from cscs.archiver.interface import ARCHIVER_STATUS, IMAGE_ARCHIVED, IMAGE_RETRIEVAL_FAILED
from cscs.camera.events import END_READOUT, START_INTEGRATION, START_READOUT
from cscs.camera.headers.announcement import LARGE_FILE_OBJECT_AVAILABLE
from cscs.camera.naming import MAX_SENSORS, check_image_name, check_sensor
from cscs.core.generic import LOG_MESSAGE, SOFTWARE_VERSIONS
from cscs.core.remote import Parsed, Received
from cscs.core.schema import EventSpec, TelemetrySpec
from cscs.core.topics import CscAddress
from cscs.ocs.cells import text_cell
from cscs.ocs.status import StatusBoard
from cscs.ocs_batch.interface import JOBS
from cscs.oods.interface import IMAGE_IN_OODS
from cscs.telemetry_gateway.interface import ALARM, ALARMS, IMAGE_QUALITY

_log = structlog.get_logger("cscs.dashboard")

__all__ = ["MAX_IMAGES", "MAX_LOG_LINES", "ImageRow", "NightModel"]

MAX_IMAGES = 5000  # a long LATISS night is ~1000
MAX_LOG_LINES = 2000
MAX_ALARMS = 500
MAX_JOBS = 200
MAX_PER_CSC = 32  # archivers and header services shown (any index can be invented)
_TEXT = 1000  # characters kept of a log message or an error report
_REASON = 500  # characters kept of an alarm's reason: 500 alarms stay under 0.5 MB

_Spec = EventSpec[Any] | TelemetrySpec[Any]
_Handler = Callable[["NightModel", Parsed[Any]], None]

#: The imageQuality fields shown, as the observatory's quick-look table has them.
QC_FIELDS = ("psfFwhm", "psfE1", "psfE2", "ellipticity", "skyMean", "zeroPoint", "nSources")


@dataclass
class ImageRow:
    """One image of the night, as the table shows it."""

    name: str
    camera_index: int
    image_type: str = ""
    exposure_time: float | None = None
    started_tai: float = 0.0
    phase: str = "integrating"  # integrating, reading out, read out
    sensors: list[str] = field(default_factory=list)  # read out (from endReadout)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # sensor -> announcement
    failed: dict[str, str] = field(default_factory=dict)  # sensor -> why (not yet archived)
    verified: dict[str, str] = field(default_factory=dict)  # sensor -> "" ok, or the problem
    header: dict[str, Any] = field(default_factory=dict)  # FILTER, AIRMASS, … from the file
    missing_keywords: str | None = None  # from the header service; None: no header yet
    qc: dict[str, Any] = field(default_factory=dict)
    oods: dict[str, Any] | None = None  # the OODS's last imageInOODS; None: not said yet
    preview: bool = False
    checking: bool = False  # its files are queued for (or being) re-read by the page

    @property
    def complete(self) -> bool:
        """Every sensor read out is archived."""
        return bool(self.sensors) and all(s in self.files for s in self.sensors)

    def view(self) -> dict[str, Any]:
        header_complete = bool(self.files) and all(f["headerComplete"] for f in self.files.values())
        return {
            "name": self.name,
            "camera": self.camera_index,
            "type": self.image_type,
            "expTime": self.exposure_time,
            "tai": self.started_tai,
            "phase": self.phase,
            "sensors": len(self.sensors),
            "archived": len(self.files),
            "failed": len(self.failed),
            "verified": sum(1 for problem in self.verified.values() if not problem),
            "verifyProblems": [p for p in self.verified.values() if p][:5],
            "headerComplete": header_complete,
            "missingKeywords": self.missing_keywords,
            "filter": self.header.get("FILTER"),
            "airmass": self.header.get("AIRMASS"),
            "qc": self.qc,
            "oods": self.oods,
            "preview": self.preview,
        }


def _cap(value: object, limit: int = 200) -> str:
    return value[:limit] if isinstance(value, str) else str(value)[:limit]


def _bounded(kept: dict[str, Any], key: str, limit: int = MAX_PER_CSC) -> None:
    """Make room for ``key`` in ``kept``: the oldest entries go first."""
    if key not in kept:
        while len(kept) >= limit:
            del kept[next(iter(kept))]


def _finite(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if abs(number) < 1e30 else None  # also drops inf and nan


@dataclass
class NightModel:
    """The page's state; :meth:`feed` one message at a time, :meth:`take_changes` to
    learn what to push."""

    board: StatusBoard = field(default_factory=StatusBoard)
    versions: dict[str, str] = field(default_factory=dict)
    images: OrderedDict[str, ImageRow] = field(default_factory=OrderedDict)
    exposure: dict[str, Any] = field(default_factory=dict)
    archivers: dict[str, dict[str, Any]] = field(default_factory=dict)
    headers: dict[str, dict[str, Any]] = field(default_factory=dict)  # HeaderService: latest
    alarms: dict[str, dict[str, Any]] = field(default_factory=dict)
    jobs: list[dict[str, Any]] = field(default_factory=list)
    logs: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=MAX_LOG_LINES))
    malformed: int = 0
    handler_errors: int = 0  # bugs here, not bad input: logged with their traceback
    changed: set[str] = field(default_factory=set)  # sections: cscs, camera, alarms, jobs
    changed_images: set[str] = field(default_factory=set)
    new_logs: list[dict[str, Any]] = field(default_factory=list)
    changed_alarms: set[str] = field(default_factory=set)  # one alarm each: pushed alone
    just_changed: list[str] = field(default_factory=list)  # images the last message changed

    def feed(self, received: Received, now: float, tai: float) -> None:
        """One message heard at ``now`` (monotonic) = ``tai``; one that is not what it
        says (a number too big for a float, a list for a time) is counted and dropped.

        Any other exception is a bug of this model, not bad input: it is counted apart
        (``handler_errors``) and logged with its traceback, so that a broken handler is
        seen as one, never mistaken for a peer sending rubbish."""
        self.just_changed = []
        try:
            self._feed(received, now, tai)
        except (ValueError, TypeError, OverflowError):  # what a wrongly shaped value raises
            self.malformed += 1
        except Exception:  # a case the checks above missed: a bug here; one message lost
            self.handler_errors += 1
            _log.exception(
                "a handler of the page failed (a bug, not bad input); message dropped",
                topic=received.name, source=str(received.address),
            )  # fmt: skip

    def _feed(self, received: Received, now: float, tai: float) -> None:
        if self.board.update(received, now, tai):
            self.changed.add("cscs")
        found = self._HANDLERS.get((received.address.name, received.name)) or self._HANDLERS.get(
            ("*", received.name)
        )
        if found is None or received.kind is not found[0].kind:
            return
        spec, handle = found
        handle(self, received.parse(spec))

    def cleared(self, address: CscAddress, name: str) -> None:
        """An empty retained payload: that value is gone."""
        if name == "errorCode" and address in self.board.cscs:
            self.board.cscs[address].last_error = ""
            self.changed.add("cscs")

    def take_changes(self) -> tuple[set[str], list[ImageRow], list[dict[str, Any]]]:
        sections, self.changed = self.changed, set()
        rows = [self.images[n] for n in sorted(self.changed_images) if n in self.images]
        self.changed_images = set()
        logs, self.new_logs = self.new_logs, []
        return sections, rows, logs

    def take_alarm_changes(self) -> dict[str, dict[str, Any] | None]:
        """The alarms changed one by one since last asked: each as now shown, or None
        if it is no longer shown. Empty when the whole listing is to be pushed anyway
        (``alarms`` in the changed sections)."""
        names, self.changed_alarms = self.changed_alarms, set()
        if "alarms" in self.changed:
            return {}
        return {name: self.alarms.get(name) for name in sorted(names)}

    # ---- what the page's own checks of the archived files found ----------------------

    def note_checked(
        self, image: str, problems: dict[str, str], header: dict[str, Any], preview: bool
    ) -> None:
        """The archived files of ``image`` re-read: each sensor's problem ("" if whole),
        the primary header's quick-look values, and whether a preview was drawn."""
        row = self.images.get(image)
        if row is None:
            return
        row.verified.update(problems)
        row.header.update(header)
        row.preview = row.preview or preview
        self.changed_images.add(image)

    # ---- views ----------------------------------------------------------------------

    def cscs_view(self, now: float) -> list[dict[str, Any]]:
        """At most ``MAX_CSCS`` rows (the board's bound)."""
        rows = []
        for address in sorted(self.board.cscs):
            status = self.board.cscs[address]
            age = status.heartbeat_age(now)
            rows.append({
                "csc": _cap(str(address), 100), "state": _cap(status.state_shown, 40),
                "condition": status.condition(now), "heartbeatAge": age,
                "error": _cap(status.error_shown, _TEXT),
                "latestImage": _cap(status.latest_image, 40),
                "version": self.versions.get(str(address), ""),
            })  # fmt: skip
        return rows

    def camera_view(self) -> dict[str, Any]:
        return {"exposure": self.exposure, "archivers": self.archivers, "headers": self.headers}

    def alarms_view(self) -> list[dict[str, Any]]:
        return sorted(self.alarms.values(), key=lambda a: (-a["severity"], a["name"]))

    # ---- handlers -------------------------------------------------------------------

    def _row(self, name: str, camera_index: int) -> ImageRow:
        check_image_name(name)
        row = self.images.get(name)
        if row is None:
            row = self.images[name] = ImageRow(name, camera_index)
            while len(self.images) > MAX_IMAGES:
                self.images.popitem(last=False)
        self.changed_images.add(name)
        self.just_changed.append(name)
        return row

    def _start_integration(self, message: Parsed[Any]) -> None:
        address, data = message.address, message.data
        row = self._row(data.imageName, address.index)
        row.image_type = _cap(data.imageType, 16)
        row.exposure_time = _finite(data.exposureTime)
        row.started_tai = _finite(data.timestampAcquisitionStart) or 0.0
        self.exposure = {"camera": str(address), "image": row.name, "type": row.image_type,
                         "expTime": row.exposure_time, "startTai": row.started_tai,
                         "phase": "integrating"}  # fmt: skip
        self.changed.add("camera")

    def _start_readout(self, message: Parsed[Any]) -> None:
        address, data = message.address, message.data
        self._row(data.imageName, address.index).phase = "reading out"
        if self.exposure.get("image") == data.imageName:
            self.exposure = self.exposure | {"phase": "reading out"}
            self.changed.add("camera")

    def _end_readout(self, message: Parsed[Any]) -> None:
        address, data = message.address, message.data
        sensors = data.sensor_names
        if len(sensors) > MAX_SENSORS:
            raise ValueError("too many sensors")
        row = self._row(data.imageName, address.index)
        row.phase, row.sensors = "read out", [check_sensor(s) for s in sensors]
        if self.exposure.get("image") == data.imageName:
            self.exposure = self.exposure | {"phase": "read out"}
            self.changed.add("camera")

    def _image_archived(self, message: Parsed[Any]) -> None:
        address, data = message.address, message.data
        row = self._row(data.imageName, address.index)
        sensor = check_sensor(data.sensor)
        if sensor not in row.files and len(row.files) >= MAX_SENSORS:
            raise ValueError("too many sensors")
        row.files[sensor] = {
            "url": _cap(data.url, 1024), "byteSize": data.byteSize,
            "checkSum": _cap(data.checkSum, 64), "algorithm": data.checkSumAlgorithm,
            "headerComplete": bool(data.headerComplete),
        }  # fmt: skip
        row.failed.pop(sensor, None)

    def _retrieval_failed(self, message: Parsed[Any]) -> None:
        address, data = message.address, message.data
        row = self._row(data.imageName, address.index)
        for sensor in [check_sensor(s) for s in data.sensor.split(",")[:MAX_SENSORS] if s]:
            if sensor not in row.files and len(row.failed) < MAX_SENSORS:
                row.failed[sensor] = _cap(data.description)

    def _image_in_oods(self, message: Parsed[Any]) -> None:
        """In the Butler repository: how many of its files, and what was refused."""
        address, data = message.address, message.data
        sensors = [check_sensor(s) for s in data.sensors.split(",")[: MAX_SENSORS + 1] if s]
        if len(sensors) > MAX_SENSORS:
            raise ValueError("too many sensors")
        self._row(data.imageName, address.index).oods = {
            "sensors": len(sensors), "statusCode": data.statusCode,
            "description": _cap(data.description, 500),
        }  # fmt: skip

    def _archiver_status(self, message: Parsed[Any]) -> None:
        address, data = message.address, message.data
        _bounded(self.archivers, str(address))
        self.archivers[str(address)] = {
            "queueDepth": data.queueDepth, "bytesPerSecond": _finite(data.bytesPerSecond),
            "freeBytes": data.freeBytes, "filesArchived": data.imagesArchived,
        }  # fmt: skip
        self.changed.add("camera")

    def _header(self, message: Parsed[Any]) -> None:
        address, data = message.address, message.data
        missing = _cap(data.missingKeywords, 2000)
        _bounded(self.headers, str(address))
        self.headers[str(address)] = {"image": data.id, "missingKeywords": missing}
        self._row(data.id, address.index).missing_keywords = missing
        self.changed.add("camera")

    def _image_quality(self, message: Parsed[Any]) -> None:
        _address, data = message.address, message.data
        if data.imageName not in self.images:
            return  # QC of an image this page never saw taken: nothing to put it beside
        row = self._row(data.imageName, 0)
        row.qc = {name: _finite(getattr(data, name)) for name in QC_FIELDS}
        row.qc["instrument"] = _cap(data.instrument, 32)

    def _alarm(self, message: Parsed[Any]) -> None:
        _address, data = message.address, message.data
        self.changed_alarms.add(self._keep_alarm(data.model_dump()))

    def _alarms(self, message: Parsed[Any]) -> None:
        _address, data = message.address, message.data
        listing = json.loads(data.alarms)
        if not isinstance(listing, list):
            raise ValueError("alarms is not a list")
        self.alarms = {}
        for alarm in listing[:MAX_ALARMS]:
            try:
                self._keep_alarm(ALARM.payload.model_validate(alarm).model_dump())
            except ValueError:
                self.malformed += 1
        self.changed.add("alarms")

    def _keep_alarm(self, alarm: dict[str, Any]) -> str:
        """Its name (as kept)."""
        name = _cap(alarm["name"], 64)
        nominal = alarm["severity"] == 1 and alarm["maxSeverity"] == 1
        if nominal:
            self.alarms.pop(name, None)
        elif name in self.alarms or len(self.alarms) < MAX_ALARMS:
            alarm["reason"] = _cap(alarm["reason"], _REASON)
            alarm["acknowledgedBy"] = _cap(alarm["acknowledgedBy"], 64)
            alarm["mutedBy"] = _cap(alarm["mutedBy"], 64)
            self.alarms[name] = alarm | {"name": name}
        return name

    def _jobs(self, message: Parsed[Any]) -> None:
        _address, data = message.address, message.data
        listing = json.loads(data.jobs)
        if not isinstance(listing, list):
            raise ValueError("jobs is not a list")
        self.jobs = [
            {
                "jobId": _cap(job.get("jobId"), 64),
                "pipeline": _cap(job.get("pipeline"), 64),
                "status": _cap(job.get("status"), 16),
                "message": _cap(job.get("message")),
                "tasksDone": _finite(job.get("tasksDone")),
                "tasksTotal": _finite(job.get("tasksTotal")),
            }
            for job in listing[-MAX_JOBS:]
            if isinstance(job, dict)
        ]
        self.changed.add("jobs")

    def _log(self, message: Parsed[Any]) -> None:
        address, data = message.address, message.data
        entry = {
            "csc": str(address), "level": data.level, "logger": _cap(data.name, 64),
            "message": _cap(data.message, _TEXT), "tai": message.sent_tai,
        }  # fmt: skip
        self.logs.append(entry)
        self.new_logs.append(entry)

    def _versions(self, message: Parsed[Any]) -> None:
        address, data = message.address, message.data
        if address not in self.board.cscs:
            return  # not shown (the board is full of live CSCs)
        self.versions[str(address)] = text_cell(data.cscVersion, 40)
        if len(self.versions) > len(self.board.cscs):  # forget those the board forgot
            shown = {str(a) for a in self.board.cscs}
            self.versions = {k: v for k, v in self.versions.items() if k in shown}
        self.changed.add("cscs")

    # ---- what is read, and by which handler -------------------------------------------

    _HANDLERS: ClassVar[dict[tuple[str, str], tuple[_Spec, _Handler]]] = {
        ("Camera", "startIntegration"): (START_INTEGRATION, _start_integration),
        ("Camera", "startReadout"): (START_READOUT, _start_readout),
        ("Camera", "endReadout"): (END_READOUT, _end_readout),
        ("Archiver", "imageArchived"): (IMAGE_ARCHIVED, _image_archived),
        ("Archiver", "imageRetrievalFailed"): (IMAGE_RETRIEVAL_FAILED, _retrieval_failed),
        ("Archiver", "archiverStatus"): (ARCHIVER_STATUS, _archiver_status),
        ("OODS", "imageInOODS"): (IMAGE_IN_OODS, _image_in_oods),
        ("HeaderService", "largeFileObjectAvailable"): (LARGE_FILE_OBJECT_AVAILABLE, _header),
        ("TelemetryGateway", "imageQuality"): (IMAGE_QUALITY, _image_quality),
        ("TelemetryGateway", "alarm"): (ALARM, _alarm),
        ("TelemetryGateway", "alarms"): (ALARMS, _alarms),
        ("OCSBatch", "jobs"): (JOBS, _jobs),
        ("*", "logMessage"): (LOG_MESSAGE, _log),
        ("*", "softwareVersions"): (SOFTWARE_VERSIONS, _versions),
    }
    #: What the page reads: by (the sender's CSC name, or ``*`` for any, the message's
    #: name), the declaration each such message is checked against before it is used.
    READS: ClassVar[Mapping[tuple[str, str], _Spec]] = {
        key: spec for key, (spec, _) in _HANDLERS.items()
    }
