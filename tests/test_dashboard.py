"""The dashboard without a browser: what it believes of the night (NightModel, fed with
decoded bus messages, hostile ones included), who may see it and act through it
(access.py), which archived files it reads (path_in_archive), and the HTTP server as a
page and the operator's tools talk to it (aiohttp's test client on the in-memory bus).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import re
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given
from hypothesis import strategies as st
from yarl import URL

from cscs.archiver.interface import retrieval_failed
from cscs.core.config import ConfigSource
from cscs.core.protocol import encode
from cscs.core.remote import Received, Remote
from cscs.core.settings import Settings
from cscs.core.tai import current_tai
from cscs.core.testing import MemoryBroker, enabled_csc
from cscs.core.topics import CscAddress, Kind
from cscs.core.transport import Transport
from cscs.dashboard import model as model_module
from cscs.dashboard.access import (
    COOKIE,
    TOKEN_ENV,
    AccessError,
    is_loopback,
    read_token,
    require_token_off_loopback,
    token_matches,
)
from cscs.dashboard.checks import path_in_archive
from cscs.dashboard.model import MAX_ALARMS, MAX_JOBS, MAX_LOG_LINES, NightModel
from cscs.dashboard.run import dashboard_options, running_dashboard
from cscs.dashboard.server import Dashboard, DashboardOptions
from cscs.telemetry_gateway.csc import TelemetryGatewayCsc

pytestmark = pytest.mark.timeout(60)

PREFIX = "dash"
T0 = 1.8e9  # TAI of the night, s
NOW = 1000.0  # monotonic clock of the model's tests
TOKEN = "correct-horse-battery-staple-42"
IDENTITY = "night staff (dashboard)"
IMAGE = "CC_O_20261121_000042"
IMAGE_NAME = re.compile(r"(AT|CC|MC)_[A-Z]_[0-9]{8}_[0-9]{6}", re.ASCII)
SENSOR = re.compile(r"R[0-9]{2}_S([0-9]{2}|[GW][0-9])", re.ASCII)

_seqs = itertools.count(1)


# ---- messages, as a decoded bus message is -----------------------------------------------


def received(
    csc: str, name: str, fields: Mapping[str, Any], *, index: int = 0, kind: Kind = Kind.EVENT
) -> Received:
    data = {"seq": next(_seqs), "sent_tai": T0} | dict(fields)
    return Received(CscAddress(csc, index, PREFIX), kind, name, data)


def feed(model: NightModel, *messages: Received) -> None:
    for message in messages:
        model.feed(message, NOW, T0 + 60.0)


def start_integration(
    image: str = IMAGE, image_type: str = "OBJECT", exp: float = 30.0
) -> Received:
    return received(
        "Camera",
        "startIntegration",
        {
            "imageName": image,
            "imageIndex": 1,
            "imagesInSequence": 1,
            "imageSource": "CC",
            "imageController": "O",
            "imageDate": "20261121",
            "imageNumber": 42,
            "groupId": "2026-11-22T01:02:03.000",
            "imageType": image_type,
            "exposureTime": exp,
            "timestampAcquisitionStart": T0 + 1.0,
            "timeout": 60.0,
            "additionalKeys": "",
            "additionalValues": "",
        },
        index=2,
    )


def start_readout(image: str = IMAGE) -> Received:
    fields = {"imageName": image, "timestampStartOfReadout": T0 + 31.0}
    return received("Camera", "startReadout", fields, index=2)


def end_readout(image: str = IMAGE, sensors: str = "R22_S00,R22_S01") -> Received:
    return received(
        "Camera",
        "endReadout",
        {
            "imageName": image,
            "imageIndex": 1,
            "imagesInSequence": 1,
            "requestedExposureTime": 30.0,
            "timestampEndOfReadout": T0 + 33.0,
            "sensors": sensors,
        },
        index=2,
    )


def image_archived(
    image: str = IMAGE, sensor: str = "R22_S00", header_complete: bool = True
) -> Received:
    return received(
        "Archiver",
        "imageArchived",
        {
            "imageName": image,
            "sensor": sensor,
            "url": f"file:///archive/ComCam/20261121/{image}/{image}_{sensor}.fits",
            "byteSize": 36_000_000,
            "checkSum": "0a1b2c3d",
            "checkSumAlgorithm": "adler32",
            "headerComplete": header_complete,
            "statusCode": 0 if header_complete else 1,
            "description": "",
        },
        index=2,
    )


def quality(image: str = IMAGE, seeing: float | None = 0.74) -> dict[str, Any]:
    return {
        "imageName": image,
        "instrument": "ComCam",
        "nSensors": 2,
        "psfFwhm": seeing,
        "psfFwhmMin": seeing,
        "psfFwhmMax": seeing,
        "psfE1": 0.012,
        "psfE2": -0.02,
        "ellipticity": 0.023,
        "skyMean": 41.5,
        "skyRms": 6.1,
        "zeroPoint": 27.48,
        "nSources": 87,
    }


def alarm(
    name: str, severity: int, max_severity: int | None = None, **changes: Any
) -> dict[str, Any]:
    return {
        "name": name,
        "severity": severity,
        "reason": f"{name} is at {severity}",
        "maxSeverity": severity if max_severity is None else max_severity,
        "acknowledged": False,
        "acknowledgedBy": "",
        "mutedSeverity": 1,
        "mutedBy": "",
        "timestampSeverityNewest": T0,
        "timestampMaxSeverity": T0,
        "timestampAcknowledged": 0.0,
        "timestampUnmute": 0.0,
    } | changes


def job(job_id: str, status: str = "running", done: int = 3) -> dict[str, Any]:
    return {
        "jobId": job_id,
        "pipeline": "image-qc",
        "status": status,
        "tasksDone": done,
        "tasksTotal": 9,
        "submitted_tai": T0,
        "message": "",
    }


def log(message: str, csc: str = "Archiver", index: int = 1) -> Received:
    fields = {"name": "cscs.archiver", "level": logging.WARNING, "message": message}
    return received(csc, "logMessage", fields, index=index)


# ---- 1. what the night staff see, message by message -------------------------------------


def test_an_image_taken_read_out_archived_and_measured_is_one_row() -> None:
    model = NightModel()
    feed(model, start_integration(image_type="OBJECT", exp=30.0))
    row = model.images[IMAGE].view()
    assert (row["type"], row["expTime"], row["phase"], row["camera"]) == (
        "OBJECT",
        30.0,
        "integrating",
        2,
    )
    assert (row["sensors"], row["archived"], row["headerComplete"]) == (0, 0, False)
    assert model.exposure["image"] == IMAGE

    feed(model, start_readout(), end_readout(sensors="R22_S00,R22_S01"))
    row = model.images[IMAGE].view()
    assert (row["phase"], row["sensors"], row["archived"]) == ("read out", 2, 0)
    assert model.exposure["phase"] == "read out"

    # One sensor failed first, then came: the failure is forgotten once it is archived.
    failed = retrieval_failed(IMAGE, {"R22_S01": "DAQ timeout"}).model_dump()
    feed(model, received("Archiver", "imageRetrievalFailed", failed, index=2))
    assert model.images[IMAGE].view()["failed"] == 1
    feed(model, image_archived(sensor="R22_S00", header_complete=False))
    row = model.images[IMAGE].view()
    assert (row["archived"], row["headerComplete"], model.images[IMAGE].complete) == (
        1,
        False,
        False,
    )
    feed(model, image_archived(sensor="R22_S01"), image_archived(sensor="R22_S00"))
    row = model.images[IMAGE].view()
    assert (row["sensors"], row["archived"], row["failed"]) == (2, 2, 0)
    assert row["headerComplete"] is True  # the header-less file was completed since
    assert model.images[IMAGE].complete

    feed(model, received("TelemetryGateway", "imageQuality", quality(seeing=0.74)))
    row = model.images[IMAGE].view()
    assert row["qc"] == {
        "psfFwhm": 0.74,
        "psfE1": 0.012,
        "psfE2": -0.02,
        "ellipticity": 0.023,
        "skyMean": 41.5,
        "zeroPoint": 27.48,
        "nSources": 87.0,
        "instrument": "ComCam",
    }
    assert list(model.images) == [IMAGE]  # one row for the whole story
    assert model.malformed == 0


def test_an_image_in_the_oods_says_how_many_files_and_what_was_refused() -> None:
    model = NightModel()
    feed(model, end_readout(sensors="R22_S00,R22_S01"), image_archived(sensor="R22_S00"),
         image_archived(sensor="R22_S01"))  # fmt: skip
    assert model.images[IMAGE].view()["oods"] is None  # not said yet
    refused = VALID["imageInOODS"] | {"sensors": "R22_S00", "statusCode": 1,
                                      "description": "refused, retried: R22_S01: bad"}  # fmt: skip
    feed(model, received("OODS", "imageInOODS", refused, index=2))
    assert model.images[IMAGE].view()["oods"] == {
        "sensors": 1,
        "statusCode": 1,
        "description": "refused, retried: R22_S01: bad",
    }
    feed(model, received("OODS", "imageInOODS", VALID["imageInOODS"], index=2))
    assert model.images[IMAGE].view()["oods"]["sensors"] == 2
    assert list(model.images) == [IMAGE]


def test_qc_of_an_image_never_seen_taken_makes_no_row() -> None:
    model = NightModel()
    feed(model, received("TelemetryGateway", "imageQuality", quality("CC_O_20261121_000001")))
    assert not model.images
    assert model.malformed == 0


def test_a_header_announcement_says_what_keywords_are_missing() -> None:
    model = NightModel()
    feed(
        model,
        start_integration(),
        received(
            "HeaderService",
            "largeFileObjectAvailable",
            {
                "id": IMAGE,
                "url": f"file:///headers/{IMAGE}.yaml",
                "byteSize": 35000,
                "checkSum": "0" * 32,
                "mimeType": "yaml",
                "generator": "HeaderService",
                "version": "1",
                "missingKeywords": "AIRMASS,FILTER",
            },
            index=2,
        ),
    )
    assert model.images[IMAGE].view()["missingKeywords"] == "AIRMASS,FILTER"
    assert model.headers["HeaderService:2"] == {"image": IMAGE, "missingKeywords": "AIRMASS,FILTER"}


def test_alarms_from_events_and_the_retained_listing_are_kept_and_nominal_ones_removed() -> None:
    model = NightModel()
    feed(model, received("TelemetryGateway", "alarm", alarm("qc.seeing", 3)))
    feed(model, received("TelemetryGateway", "alarm", alarm("qc.zeroPoint", 2)))
    assert [a["name"] for a in model.alarms_view()] == ["qc.seeing", "qc.zeroPoint"]
    assert model.alarms_view()[0]["severity"] == 3

    # Cleared but not acknowledged (stale): still shown, as the Watcher shows it.
    feed(model, received("TelemetryGateway", "alarm", alarm("qc.zeroPoint", 1, 2)))
    assert model.alarms["qc.zeroPoint"]["maxSeverity"] == 2
    # Nominal (severity 1, maxSeverity 1): gone.
    feed(model, received("TelemetryGateway", "alarm", alarm("qc.zeroPoint", 1, 1)))
    assert list(model.alarms) == ["qc.seeing"]

    # The retained listing (JSON in a string) replaces what was known; a bad entry in it
    # is counted and the rest are kept.
    listing = [alarm("dm.link", 4), alarm("qc.seeing", 2, 3), {"name": "half an alarm"}]
    feed(model, received("TelemetryGateway", "alarms", {"alarms": json.dumps(listing)}))
    assert [(a["name"], a["severity"]) for a in model.alarms_view()] == [
        ("dm.link", 4),
        ("qc.seeing", 2),
    ]
    assert model.malformed == 1
    # A listing that is not a list is malformed and changes nothing.
    feed(model, received("TelemetryGateway", "alarms", {"alarms": '{"dm.link": 4}'}))
    assert model.malformed == 2
    assert set(model.alarms) == {"dm.link", "qc.seeing"}
    feed(model, received("TelemetryGateway", "alarms", {"alarms": "[]"}))
    assert model.alarms_view() == []


def test_the_jobs_listing_is_shown_as_listed() -> None:
    model = NightModel()
    listing = [job("20261121-aaaa", "done", 9), "not a job", job("20261121-bbbb")]
    feed(model, received("OCSBatch", "jobs", {"jobs": json.dumps(listing)}))
    assert [(j["jobId"], j["status"], j["tasksDone"]) for j in model.jobs] == [
        ("20261121-aaaa", "done", 9.0),
        ("20261121-bbbb", "running", 3.0),
    ]
    assert model.jobs[0]["tasksTotal"] == 9.0
    feed(model, received("OCSBatch", "jobs", {"jobs": "nonsense"}))
    assert model.malformed == 1
    assert len(model.jobs) == 2  # kept


def test_log_messages_go_to_the_log_and_to_the_next_push() -> None:
    model = NightModel()
    feed(model, log("disk nearly full"), log("DAQ slow", csc="Camera", index=2))
    assert [(e["csc"], e["message"]) for e in model.logs] == [
        ("Archiver:1", "disk nearly full"),
        ("Camera:2", "DAQ slow"),
    ]
    assert model.logs[0]["level"] == logging.WARNING
    assert model.logs[0]["tai"] == T0
    _, _, new = model.take_changes()
    assert [e["message"] for e in new] == ["disk nearly full", "DAQ slow"]
    assert model.take_changes()[2] == []
    assert len(model.logs) == 2  # the page's history stays


def test_take_changes_reports_each_section_and_row_once() -> None:
    model = NightModel()
    feed(model, received("Test", "summaryState", {"summaryState": 2}, index=5))
    feed(model, start_integration(), received("TelemetryGateway", "alarm", alarm("a", 3)))
    feed(model, received("OCSBatch", "jobs", {"jobs": "[]"}), log("hello"))
    assert list(model.take_alarm_changes()) == ["a"]  # one alarm: pushed alone
    sections, rows, logs = model.take_changes()
    assert sections == {"cscs", "camera", "jobs"}
    assert [r.name for r in rows] == [IMAGE]
    assert [e["message"] for e in logs] == ["hello"]
    assert model.take_changes() == (set(), [], [])

    feed(model, image_archived())
    sections, rows, logs = model.take_changes()
    # the archiver's latest image is in its CSC row: that row changed too
    assert (sections, [r.name for r in rows], logs) == ({"cscs"}, [IMAGE], [])
    states = {row["csc"]: row["state"] for row in model.cscs_view(NOW)}
    assert states["Test:5"] == "(ENABLED)"


# ---- 2. hostile input -----------------------------------------------------------------------


def declared(message: Received) -> dict[str, Any]:
    return {k: v for k, v in message.data.items() if k not in ("seq", "sent_tai")}


# The declared fields of every message the model handles, valid: the hostile tests
# start from these and spoil them.
VALID: dict[str, dict[str, Any]] = {
    "startIntegration": declared(start_integration()),
    "startReadout": declared(start_readout()),
    "endReadout": declared(end_readout()),
    "imageArchived": declared(image_archived()),
    "imageRetrievalFailed": {"imageName": IMAGE, "sensor": "R22_S00", "description": "gone"},
    "imageInOODS": {
        "imageName": IMAGE,
        "instrument": "LSSTComCam",
        "exposureId": 2026112100042,
        "sensors": "R22_S00,R22_S01",
        "statusCode": 0,
        "description": "in",
    },
    "archiverStatus": {
        "queueDepth": 2,
        "bytesPerSecond": 4.5e8,
        "freeBytes": 10**12,
        "imagesArchived": 120,
    },
    "largeFileObjectAvailable": {
        "id": IMAGE,
        "url": "file:///h.yaml",
        "byteSize": 1,
        "checkSum": "0" * 32,
        "mimeType": "yaml",
        "generator": "HS",
        "version": "1",
        "missingKeywords": "",
    },
    "imageQuality": quality(),
    "alarm": alarm("qc.seeing", 3),
    "alarms": {"alarms": json.dumps([alarm("qc.seeing", 3), alarm("dm.link", 2)])},
    "jobs": {"jobs": json.dumps([job("20261121-aaaa")])},
    "logMessage": {"name": "cscs.x", "level": 30, "message": "m"},
    "softwareVersions": {"cscVersion": "1.0", "xmlVersion": "1.1"},
}
HANDLED = sorted(NightModel.READS.items())
CSC_NAMES = ["Camera", "Archiver", "HeaderService", "TelemetryGateway", "OCSBatch", "Test"]

# JSON as a decoder gives it (Python's accepts NaN and Infinity); integers within 64
# bits (beyond: the cases of test_malformed_numbers_and_listings_are_counted_not_raised).
_LISTED = sorted(alarm("a", 2) | job("b"))
_INTEGERS = st.integers(-(2**63), 2**63 - 1)
json_values = st.recursive(
    st.none() | st.booleans() | _INTEGERS | st.floats() | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


def test_every_handled_message_has_a_valid_example_here() -> None:
    assert {name for (_, name), _ in HANDLED} == set(VALID)
    for (csc, name), spec in HANDLED:
        message = received(
            CSC_NAMES[0] if csc == "*" else csc, name, VALID[name], index=2, kind=spec.kind
        )
        message.parse(spec)  # raises if the example is not what the spec declares
        model = NightModel()
        feed(model, start_integration(), message)
        assert model.malformed == 0, name


@st.composite
def hostile_message(draw: st.DrawFn) -> Received:
    (csc, name), spec = draw(st.sampled_from(HANDLED))
    fields = dict(VALID[name])
    for field in draw(st.lists(st.sampled_from(sorted(fields)), unique=True, max_size=4)):
        choice = draw(st.integers(0, 3))
        if choice == 0:
            del fields[field]
        elif choice == 1:
            fields[field] = draw(json_values)
        elif choice == 2:  # a JSON text inside a string (alarms, jobs listings)
            fields[field] = json.dumps(draw(json_values))
        else:  # a listing of alarms or jobs, some of their fields spoilt
            listed = draw(st.sampled_from([alarm("a", 2), job("b"), {}]))
            spoilt = draw(st.dictionaries(st.sampled_from(_LISTED), json_values, max_size=4))
            fields[field] = json.dumps([listed | spoilt])
    extra = draw(
        st.dictionaries(
            st.text(max_size=8).filter(lambda k: k not in ("seq", "sent_tai")),
            json_values,
            max_size=2,
        )
    )
    address = CscAddress(
        draw(st.sampled_from(CSC_NAMES)) if csc == "*" else csc, draw(st.integers(0, 4)), PREFIX
    )
    kind = draw(st.sampled_from([spec.kind, spec.kind, Kind.EVENT, Kind.TELEMETRY]))
    data = {"seq": draw(_INTEGERS), "sent_tai": draw(st.floats() | _INTEGERS)}
    return Received(address, kind, name, data | extra | fields)


@given(messages=st.lists(hostile_message(), min_size=1, max_size=6))
def test_hostile_messages_never_raise_nor_make_a_row_for_what_is_not_an_image(
    messages: list[Received],
) -> None:
    model = NightModel()
    feed(model, start_integration())  # a row the QC and the archiver can refer to
    for message in messages:
        before = model.malformed
        spec = (
            NightModel.READS.get((message.address.name, message.name))
            or NightModel.READS[("*", message.name)]
        )
        try:
            message.parse(spec)
            declared = message.kind is spec.kind
        except ValueError:
            declared = False
        model.feed(message, NOW, T0)
        if not declared and message.kind is spec.kind:
            assert model.malformed == before + 1, message
        for name, row in model.images.items():
            assert IMAGE_NAME.fullmatch(name), name
            assert all(SENSOR.fullmatch(s) for s in [*row.sensors, *row.files, *row.failed])
            json.dumps(row.view(), default=str)  # what the page is sent
        assert len(model.alarms) <= MAX_ALARMS
        assert len(model.jobs) <= MAX_JOBS
        json.dumps([model.alarms_view(), model.jobs, model.camera_view()], default=str)


_VALID_NAMES = st.from_regex(r"(AT|CC|MC)_[A-Z]_[0-9]{8}_[0-9]{6}", fullmatch=True)
image_names = st.one_of(
    _VALID_NAMES,
    st.text(max_size=30),
    st.tuples(_VALID_NAMES, st.sampled_from(["\n", " ", "/../x", "_1", "\x00"])).map("".join),
    _VALID_NAMES.map(lambda n: n.replace("0", "\u0660")),  # Arabic-Indic zero: not ASCII
    _VALID_NAMES.map(lambda n: f"../{n}"),
)
sensor_names = st.one_of(
    st.from_regex(r"R[0-9]{2}_S[0-9]{2}", fullmatch=True),
    st.text(max_size=12),
    st.lists(st.from_regex(r"R[0-9]{2}_S[0-9]{2}", fullmatch=True), max_size=3).map(",".join),
)


@given(name=image_names, sensor=sensor_names)
def test_random_image_and_sensor_names_make_rows_only_for_image_names(
    name: str, sensor: str
) -> None:
    model = NightModel()
    lfo = dict(VALID["largeFileObjectAvailable"]) | {"id": name}
    failure = {"imageName": name, "sensor": sensor, "description": "?"}
    messages = [
        start_integration(name),
        start_readout(name),
        end_readout(name, sensor),
        image_archived(name, sensor),
        received("Archiver", "imageRetrievalFailed", failure, index=2),
        received("HeaderService", "largeFileObjectAvailable", lfo, index=2),
        received("TelemetryGateway", "imageQuality", quality(name)),
    ]
    for message in messages:
        model.feed(message, NOW, T0)
    if IMAGE_NAME.fullmatch(name):
        assert list(model.images) == [name]
        row = model.images[name]
        assert all(SENSOR.fullmatch(s) for s in [*row.sensors, *row.files, *row.failed])
    else:
        assert not model.images
        assert model.malformed >= 5  # every message about it, QC aside (no row to join)
    assert model.exposure.get("image") in (None, *model.images)


def test_the_log_keeps_the_last_lines() -> None:
    model = NightModel()
    feed(model, *(log(f"line {i}") for i in range(MAX_LOG_LINES + 50)))
    assert len(model.logs) == MAX_LOG_LINES
    assert model.logs[0]["message"] == "line 50"
    assert model.logs[-1]["message"] == f"line {MAX_LOG_LINES + 49}"


def test_the_oldest_images_are_dropped_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model_module, "MAX_IMAGES", 5)
    model = NightModel()
    names = [f"AT_O_20261121_{n:06d}" for n in range(1, 9)]
    for name in names:
        feed(model, start_integration(name))
    assert list(model.images) == names[-5:]
    feed(model, image_archived(names[0]))  # a late file of a dropped image: a row again
    assert list(model.images) == [*names[-4:], names[0]]


def test_a_huge_alarm_listing_keeps_at_most_max_alarms_and_texts_are_capped() -> None:
    model = NightModel()
    listing = [alarm(f"a{i:05d}", 3) for i in range(3 * MAX_ALARMS)]
    listing[0]["reason"] = "x" * 100_000
    feed(model, received("TelemetryGateway", "alarms", {"alarms": json.dumps(listing)}))
    assert len(model.alarms) == MAX_ALARMS
    assert max(len(a["reason"]) for a in model.alarms.values()) <= 2000
    # Beyond the bound a new alarm is not kept; one already shown is still updated.
    feed(model, received("TelemetryGateway", "alarm", alarm("new", 4)))
    feed(model, received("TelemetryGateway", "alarm", alarm("a00000", 4)))
    assert "new" not in model.alarms
    assert model.alarms["a00000"]["severity"] == 4
    feed(model, received("TelemetryGateway", "alarm", alarm("y" * 10_000, 1, 1)))
    assert len(model.alarms) == MAX_ALARMS


def test_a_long_jobs_listing_keeps_the_newest_and_long_texts_are_capped() -> None:
    model = NightModel()
    listing = [job(f"j{i:04d}") for i in range(MAX_JOBS + 30)]
    listing[-1]["message"] = "m" * 50_000
    feed(model, received("OCSBatch", "jobs", {"jobs": json.dumps(listing)}))
    assert [j["jobId"] for j in model.jobs] == [f"j{i:04d}" for i in range(30, MAX_JOBS + 30)]
    assert max(len(j["message"]) for j in model.jobs) <= 2000
    feed(model, log("z" * 1_000_000))
    assert len(model.logs[-1]["message"]) <= 2000


# Product bugs: each input below escapes NightModel.feed, whose contract is that a
# malformed message is counted and dropped. (The server's listener catches and logs
# them, so the page survives; anything else feeding the model does not.)
_ESCAPES = {
    # cscs/ocs/status.py StatusBoard.update: float(received.sent_tai), outside feed's try
    "sent_tai a string": received("Test", "anything", {"sent_tai": "yesterday"}),
    "sent_tai a list": received("Test", "anything", {"sent_tai": [1]}),
    "sent_tai a huge integer": received("Test", "anything", {"sent_tai": 10**400}),
    # StatusBoard.update: State(int(code)) catches TypeError and ValueError only
    "summaryState infinite": received("Test", "summaryState", {"summaryState": float("inf")}),
    # Received.seq: int(None) is a TypeError, int(inf) an OverflowError: feed catches
    # ValueError only
    "seq null": received("Test", "logMessage", VALID["logMessage"] | {"seq": None}),
    "seq infinite": received("Test", "logMessage", VALID["logMessage"] | {"seq": float("inf")}),
    # model._finite: float() of an integer beyond a double's range is an OverflowError
    "nSources a huge integer": received(
        "TelemetryGateway", "imageQuality", quality() | {"nSources": 10**400}
    ),
    "tasksDone a huge integer": received(
        "OCSBatch", "jobs", {"jobs": json.dumps([job("j") | {"tasksDone": 10**400}])}
    ),
    # model._alarms / _jobs: json.loads of a deeply nested listing is a RecursionError
    "alarms nested deeply": received("TelemetryGateway", "alarms", {"alarms": "[" * 100_000}),
    "jobs nested deeply": received("OCSBatch", "jobs", {"jobs": "[" * 100_000}),
}


@pytest.mark.parametrize("case", sorted(_ESCAPES))
def test_malformed_numbers_and_listings_are_counted_not_raised(case: str) -> None:
    model = NightModel()
    feed(model, start_integration())
    feed(model, _ESCAPES[case])
    assert model.malformed <= 1


def test_a_retrieval_failure_of_several_sensors_shows_each() -> None:
    model = NightModel()
    feed(model, start_integration(), end_readout(sensors="R22_S00,R22_S01"))
    # What the archiver publishes when a DAQ goes away mid-image (archiver/interface.py).
    failed = retrieval_failed(IMAGE, {"R22_S00": "DAQ gone", "R22_S01": "DAQ gone"})
    feed(model, received("Archiver", "imageRetrievalFailed", failed.model_dump(), index=2))
    assert model.malformed == 0
    assert model.images[IMAGE].view()["failed"] == 2


def test_the_csc_table_caps_what_a_peer_says() -> None:
    model = NightModel()
    huge = "x" * 1_000_000
    feed(
        model,
        received("Test", "summaryState", {"summaryState": huge}, index=5),
        received("Test", "errorCode", {"errorCode": 1, "errorReport": huge}, index=5),
        received("Test", "imageArchived", {"imageName": huge}, index=5),
    )
    view = model.cscs_view(NOW)
    assert len(json.dumps(view)) < 10_000  # it is pushed to every page every second


# ---- 3. who may see the page ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.3.2.1", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.10", False),
        ("dashboard.site", False),
        ("localhost.evil.example", False),
        ("", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_the_token_comes_from_its_file_or_the_environment(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(f"  {TOKEN}  \nsecond line ignored\n")
    assert read_token(token_file, env={TOKEN_ENV: "other-token-from-env-000"}) == TOKEN
    assert read_token(None, env={TOKEN_ENV: f" {TOKEN}\n"}) == TOKEN
    assert read_token(None, env={}) is None
    assert read_token(None, env={TOKEN_ENV: "   "}) is None


def test_a_short_or_unreadable_token_is_refused_naming_where_it_came_from(tmp_path: Path) -> None:
    short = tmp_path / "short"
    short.write_text("hunter2\n")
    with pytest.raises(AccessError, match=r"the token in .*short is 7 characters; at least 16"):
        read_token(short, env={})
    empty = tmp_path / "empty"
    empty.write_text("")
    with pytest.raises(AccessError, match="empty is 0 characters"):
        read_token(empty, env={})
    with pytest.raises(AccessError, match=r"\$CSCS_DASHBOARD_TOKEN is 7 characters"):
        read_token(None, env={TOKEN_ENV: "hunter2"})
    missing = tmp_path / "missing"
    with pytest.raises(AccessError, match=r"cannot read the token file .*missing"):
        read_token(missing, env={TOKEN_ENV: TOKEN})  # the file was asked for: no fallback
    if os.geteuid() != 0:  # root reads anything
        unreadable = tmp_path / "unreadable"
        unreadable.write_text(TOKEN)
        unreadable.chmod(0)
        with pytest.raises(AccessError, match="cannot read the token file"):
            read_token(unreadable, env={})


def test_off_loopback_the_dashboard_needs_a_token() -> None:
    with pytest.raises(AccessError) as refused:
        require_token_off_loopback("0.0.0.0", None)
    message = str(refused.value)
    assert "0.0.0.0" in message
    assert "--token-file" in message
    assert TOKEN_ENV in message
    require_token_off_loopback("0.0.0.0", TOKEN)
    require_token_off_loopback("127.0.0.1", None)
    require_token_off_loopback("localhost", None)
    with pytest.raises(AccessError):
        require_token_off_loopback("dashboard.site", None)


def test_token_matches() -> None:
    assert token_matches(None, None)
    assert token_matches(None, "anything")
    assert token_matches(TOKEN, TOKEN)
    assert not token_matches(TOKEN, None)
    assert not token_matches(TOKEN, "")
    assert not token_matches(TOKEN, TOKEN[:-1])
    assert not token_matches(TOKEN, TOKEN + "x")
    assert not token_matches(TOKEN, TOKEN.upper())
    assert not token_matches(TOKEN, "\u00e9" * 40)  # not ASCII: no error, no match


def test_dashboard_options_refuse_an_open_port_without_a_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    settings = Settings(prefix=PREFIX, state_dir=tmp_path)
    with pytest.raises(AccessError, match="--token-file"):
        dashboard_options(settings, host="0.0.0.0")
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    options = dashboard_options(
        settings, host="0.0.0.0", token_file=token_file, allow_commands=True
    )
    assert (options.prefix, options.token, options.allow_commands) == (PREFIX, TOKEN, True)
    assert options.archive_root == tmp_path / "archive"
    assert options.gateway_config.directory == TelemetryGatewayCsc.default_config_dir
    local = dashboard_options(settings)  # the operator's own machine: no token, read-only
    assert (local.token, local.allow_commands) == (None, False)
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    assert dashboard_options(settings, host="0.0.0.0").token == TOKEN


# ---- 4. which files the page reads -----------------------------------------------------------


def test_a_file_url_inside_the_archive_is_its_path(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    (root / "LATISS" / "20261121").mkdir(parents=True)
    inside = root / "LATISS" / "20261121" / "AT_O_20261121_000001_R00_S00.fits"
    inside.write_bytes(b"")
    assert path_in_archive(inside.as_uri(), root) == inside.resolve()
    assert path_in_archive(f"file://localhost{inside}", root) == inside.resolve()
    # Not there yet: still inside (the check reads nothing).
    later = root / "LATISS" / "later.fits"
    assert path_in_archive(later.as_uri(), root) == later.resolve()
    assert path_in_archive(f"file://{root}/LATISS/a%20b.fits", root) == root / "LATISS" / "a b.fits"


def test_urls_outside_the_archive_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    root.mkdir()
    outside = tmp_path / "secret.txt"
    outside.write_text("not for the page")
    (root / "link").symlink_to(outside)
    (root / "dirlink").symlink_to(tmp_path)
    refused = [
        f"file://{root}/../secret.txt",
        f"file://{root}/LATISS/../../secret.txt",
        f"file://{root}/%2e%2e/secret.txt",
        outside.as_uri(),
        "file:///etc/passwd",
        f"file://{root}/link",
        f"file://{root}/dirlink/secret.txt",
        f"http://localhost{root}/a.fits",
        f"https://archive.example{root}/a.fits",
        f"file://otherhost{root}/a.fits",
        f"{root}/a.fits",  # no scheme
        root.as_uri(),  # the root itself is not a file in it
        f"file://{tmp_path}/archive-other/a.fits",  # shares the root's name as a prefix
        "file://",
        "",
    ]
    (tmp_path / "archive-other").mkdir()
    for url in refused:
        assert path_in_archive(url, root) is None, url


def test_a_symlinked_archive_root_still_holds_its_files(tmp_path: Path) -> None:
    real = tmp_path / "disk" / "archive"
    real.mkdir(parents=True)
    (tmp_path / "archive").symlink_to(real)
    url = (real / "a.fits").as_uri()
    assert path_in_archive(url, tmp_path / "archive") == real / "a.fits"


# ---- 5. the server ----------------------------------------------------------------------------


@dataclass
class Served:
    client: TestClient[Any, Any]
    dashboard: Dashboard
    broker: MemoryBroker
    bus: Transport  # a peer on the bus: the CSCs' side


def _options(tmp_path: Path, **changes: Any) -> DashboardOptions:
    directory = TelemetryGatewayCsc.default_config_dir
    assert directory is not None
    return DashboardOptions(
        prefix=PREFIX,
        archive_root=tmp_path,
        identity=IDENTITY,
        gateway_config=ConfigSource(directory),
        **changes,
    )


@contextlib.asynccontextmanager
async def served(
    tmp_path: Path, broker: MemoryBroker | None = None, **options: Any
) -> AsyncIterator[Served]:
    broker = broker or MemoryBroker()
    async with broker.transport() as bus, broker.transport() as peer:
        dashboard = Dashboard(bus, _options(tmp_path, **options))
        await dashboard.start()
        client: TestClient[Any, Any] = TestClient(TestServer(dashboard.app()))
        try:
            await client.start_server()
            yield Served(client, dashboard, broker, peer)
        finally:
            await dashboard.stop()  # ends the open event streams
            await client.close()


def _strict_json(text: str) -> Any:
    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON a browser reads")

    return json.loads(text, parse_constant=refuse)


class Frames:
    """A server-sent event stream, frame by frame, each frame's data strict JSON."""

    def __init__(self, response: ClientResponse) -> None:
        self.response = response

    async def next(self) -> tuple[str, Any]:
        event, data = "", []
        while True:
            raw = await self.response.content.readline()
            if not raw:
                raise EOFError("the event stream ended")
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: "):
                data.append(line[len("data: ") :])
            elif not line and event:
                return event, _strict_json("\n".join(data))

    async def wait_for(
        self, event: str, predicate: Callable[[Any], bool] = lambda _: True, timeout: float = 10
    ) -> Any:
        async with asyncio.timeout(timeout):
            while True:
                name, data = await self.next()
                if name == event and predicate(data):
                    return data


AUTH = {"Authorization": f"Bearer {TOKEN}"}
COMMAND = {"X-Dashboard": "1"}


async def test_running_dashboard_serves_the_page_on_a_port_of_its_own(tmp_path: Path) -> None:
    async with (
        MemoryBroker().transport() as bus,
        running_dashboard(bus, _options(tmp_path, token=TOKEN)) as url,
        aiohttp.ClientSession() as session,
    ):
        assert re.fullmatch(r"http://127\.0\.0\.1:[0-9]+/", url), url
        async with session.get(url) as response:
            assert response.status == 401
        async with session.get(url, headers=AUTH) as response:
            assert response.status == 200


async def test_with_a_token_the_page_is_shut_until_the_token_is_given(tmp_path: Path) -> None:
    async with served(tmp_path, token=TOKEN) as s:
        client = s.client
        for path in ("/", "/events", "/static/dashboard.js", "/?token=wrong-token-0000000000"):
            async with client.get(path) as response:
                assert response.status == 401, path
                assert "/?token=" in await response.text()
        async with client.get("/", headers={"Authorization": "Bearer wrong"}) as response:
            assert response.status == 401

        async with client.get(f"/?token={TOKEN}", allow_redirects=False) as response:
            assert response.status == 303
            assert response.headers["Location"] == "/"  # the token leaves the address bar
            cookie = response.headers["Set-Cookie"]
        assert cookie.startswith(f"{COOKIE}={TOKEN};")
        assert "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie
        async with client.get("/") as response:  # the cookie, from now on
            assert response.status == 200
            assert "<html" in (await response.text()).lower()
        async with client.get("/static/dashboard.css") as response:
            assert response.status == 200


async def test_the_token_redirect_stays_on_the_dashboard(tmp_path: Path) -> None:
    async with served(tmp_path, token=TOKEN) as s:
        base = str(s.client.make_url("/")).rstrip("/")
        url = URL(f"{base}//evil.example/?token={TOKEN}", encoded=True)
        async with s.client.session.get(url, allow_redirects=False) as response:
            assert response.status == 303
            location = response.headers["Location"]
    assert URL(location).host is None, location  # not //evil.example/


async def test_a_bearer_token_opens_the_page_without_a_cookie(tmp_path: Path) -> None:
    async with served(tmp_path, token=TOKEN) as s:
        async with s.client.get("/", headers=AUTH) as response:
            assert response.status == 200
            assert "Set-Cookie" not in response.headers
        async with s.client.get("/") as response:
            assert response.status == 401


async def test_without_a_token_configured_the_page_is_open(tmp_path: Path) -> None:
    async with served(tmp_path) as s, s.client.get("/") as response:
        assert response.status == 200


def _check_security_headers(response: ClientResponse) -> None:
    policy = response.headers.get("Content-Security-Policy", "")
    assert "default-src 'self'" in policy, (response.url, response.status)
    assert "unsafe-inline" not in policy
    assert "unsafe-eval" not in policy
    assert response.headers.get("X-Content-Type-Options") == "nosniff"


async def test_the_pages_responses_carry_the_content_security_policy(tmp_path: Path) -> None:
    async with served(tmp_path, token=TOKEN) as s:
        for path in ("/", "/static/dashboard.js", "/static/dashboard.css", "/static/index.html"):
            async with s.client.get(path, headers=AUTH) as response:
                assert response.status == 200, path
                _check_security_headers(response)
        async with s.client.get("/") as response:  # refused
            assert response.status == 401
            _check_security_headers(response)


_UNGUARDED = {  # each an (authorised) request whose response is not a handler's return
    "303 setting the cookie": ("GET", f"/?token={TOKEN}"),
    "404 static": ("GET", "/static/nope.js"),
    "404 preview": ("GET", "/preview/AT_O_20261121_000001.png"),
    "404 no route": ("GET", "/nowhere"),
    "403 read-only command": ("POST", "/api/acknowledge"),
    "event stream": ("GET", "/events"),
}


@pytest.mark.parametrize("case", sorted(_UNGUARDED))
async def test_every_response_carries_the_content_security_policy(
    tmp_path: Path, case: str
) -> None:
    method, path = _UNGUARDED[case]
    async with (
        served(tmp_path, token=TOKEN) as s,
        s.client.request(method, path, headers=AUTH, allow_redirects=False) as response,
    ):
        assert response.status in (200, 303, 403, 404)
        _check_security_headers(response)


async def test_static_files_are_the_pages_own_and_nothing_else(tmp_path: Path) -> None:
    async with served(tmp_path) as s:
        base = str(s.client.make_url("/")).rstrip("/")
        for path in (
            "/static/../server.py",
            "/static/%2e%2e/server.py",
            "/static/..%2fserver.py",
            "/static/%2e%2e%2fserver.py",
            "/static/..%5cserver.py",
            "/static/..",
            "/static/server.py",
            "/static/__init__.py",
            "/static/",
            "/static/.hidden",
            "/static/dashboard.js%00.py",
            "/static/%2fetc%2fpasswd",
        ):
            # As sent: not normalised by the client first.
            async with s.client.session.get(URL(base + path, encoded=True)) as response:
                assert response.status == 404, path
                assert "class Dashboard" not in await response.text()
        async with s.client.get("/static/dashboard.js") as response:
            assert response.status == 200
            assert "javascript" in response.headers["Content-Type"]


async def test_a_preview_not_drawn_is_404(tmp_path: Path) -> None:
    async with served(tmp_path) as s, s.client.get(f"/preview/{IMAGE}.png") as response:
        assert response.status == 404


async def test_commands_need_allow_commands_and_the_pages_own_header(tmp_path: Path) -> None:
    params = {"name": "qc.seeing", "severity": 3}
    async with served(tmp_path, token=TOKEN) as s:  # read-only
        for command in ("acknowledge", "mute", "unmute"):
            async with s.client.post(
                f"/api/{command}", json=params, headers=AUTH | COMMAND
            ) as response:
                assert response.status == 403
                assert "--allow-commands" in await response.text()
        async with s.client.get("/api/acknowledge", headers=AUTH | COMMAND) as response:
            assert response.status == 405
    async with served(tmp_path, token=TOKEN, allow_commands=True) as s:
        # A form on another site can post (with the cookie, in older browsers) but cannot
        # set a header.
        async with s.client.post("/api/acknowledge", data=params, headers=AUTH) as response:
            assert response.status == 403
            assert "dashboard's own page" in await response.text()
        async with s.client.post(
            "/api/acknowledge", json=params, headers=AUTH | {"X-Dashboard": "0"}
        ) as response:
            assert response.status == 403
        async with s.client.post("/api/acknowledge", json=params, headers=COMMAND) as response:
            assert response.status == 401  # the header is no token
        async with s.client.post("/api/shutdown", json={}, headers=AUTH | COMMAND) as response:
            assert response.status == 404
        for body in (b"{not json", b"[1, 2]"):
            async with s.client.post(
                "/api/acknowledge", data=body, headers=AUTH | COMMAND
            ) as response:
                assert response.status == 400
        async with s.client.post(
            "/api/acknowledge", data=b"[" + b" " * 20_000 + b"]", headers=AUTH | COMMAND
        ) as response:
            assert response.status == 413  # client_max_size


async def test_a_command_with_no_gateway_on_the_bus_answers_noack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server waits 10 s for the gateway; the same wait, shortened.
    original = Remote.command
    waits: list[float] = []

    async def quick(self: Remote, name: str, params: Any = None, **options: Any) -> Any:
        waits.append(options.pop("timeout"))
        return await original(self, name, params, timeout=0.2, **options)

    monkeypatch.setattr(Remote, "command", quick)
    async with (
        served(tmp_path, allow_commands=True) as s,
        s.bus.subscription(f"{PREFIX}/TelemetryGateway/0/cmd/#") as sent,
        s.client.post(
            "/api/acknowledge", json={"name": "qc.seeing", "severity": 3}, headers=COMMAND
        ) as response,
    ):
        assert response.status == 200
        answer = await response.json()
        assert answer["ok"] is False
        assert answer["ack"] == "NOACK"
        assert "is the CSC running?" in answer["result"]
        command = json.loads((await sent.get(5)).payload)
    assert waits == [10.0]
    assert command["params"]["acknowledgedBy"] == IDENTITY


def dm_quality(image: str, seeing: float) -> bytes:
    """An image's QC summary as OCS Batch publishes it on the DM side."""
    return json.dumps(
        quality(image, seeing)
        | {
            "instrument": "LATISS",
            "nSensors": 1,
            "jobId": "20261121-3fa2c1d9",
            "sent_tai": current_tai(),
        }
    ).encode()


async def test_an_alarm_acknowledged_from_the_page_is_the_gateways_and_names_the_dashboard(
    tmp_path: Path, index: int
) -> None:
    broker = MemoryBroker()
    dm = f"dm{index}"
    config = {"dm_prefix": dm, "health": {"watched": []}}
    async with (
        enabled_csc(TelemetryGatewayCsc, broker, tmp_path / "gw", PREFIX, config),
        served(tmp_path, broker, token=TOKEN, allow_commands=True) as s,
        s.client.get("/events", headers=AUTH) as stream,
    ):
        frames = Frames(stream)
        snapshot = await frames.wait_for("snapshot")
        assert snapshot["commands"] is True
        assert any(rule["name"] == "qc.seeing" for rule in snapshot["thresholds"])
        assert await s.bus.publish(
            f"{dm}/qc/LATISS/AT_O_20261121_000009", dm_quality("AT_O_20261121_000009", 1.6)
        )
        await frames.wait_for("alarms", lambda a: [x["name"] for x in a] == ["qc.seeing"])

        async def command(name: str, params: dict[str, Any]) -> Any:
            async with s.client.post(
                f"/api/{name}", json=params, headers=AUTH | COMMAND
            ) as response:
                assert response.status == 200
                return await response.json()

        # The gateway's own refusal, as it gave it.
        below = await command("acknowledge", {"name": "qc.seeing", "severity": 2})
        assert (below["ok"], below["ack"]) == (False, "FAILED")
        assert "cannot acknowledge at WARNING" in below["result"]
        # Whoever the page claims to be, the acknowledgement is the dashboard's.
        done = await command(
            "acknowledge", {"name": "qc.seeing", "severity": 3, "acknowledgedBy": "somebody else"}
        )
        assert (done["ok"], done["ack"]) == (True, "COMPLETE")
        shown = await frames.wait_for("alarms", lambda a: a and a[0]["acknowledged"])
        assert shown[0]["acknowledgedBy"] == IDENTITY
        # A name is a name: "qc.*" is no alarm's...
        mute = {"name": "qc.*", "duration": 600, "severity": 3, "mutedBy": "somebody else"}
        refused = await command("mute", mute)
        assert (refused["ok"], refused["ack"]) == (False, "FAILED")
        assert "no alarm named 'qc.*'" in refused["result"]
        # ...unless a glob is asked for in so many words.
        muted = await command("mute", mute | {"glob": True})
        assert muted["ok"] is True
        shown = await frames.wait_for("alarms", lambda a: a and a[0]["mutedSeverity"] == 3)
        assert shown[0]["mutedBy"] == IDENTITY


async def test_the_event_stream_starts_with_a_snapshot(tmp_path: Path) -> None:
    async with (
        served(tmp_path, token=TOKEN) as s,
        s.client.get("/events", headers=AUTH) as stream,
    ):
        assert stream.status == 200
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        name, snapshot = await asyncio.wait_for(Frames(stream).next(), 10)
        assert name == "snapshot"
        assert {"cscs", "images", "alarms", "jobs", "logs", "camera", "thresholds"} <= set(snapshot)
        assert (snapshot["prefix"], snapshot["commands"]) == (PREFIX, False)
        assert snapshot["images"] == []
        assert snapshot["alarms"] == []


async def test_a_page_whose_stream_is_exactly_full_does_not_stop_the_shutdown(
    tmp_path: Path,
) -> None:
    """A page that stopped reading, with its queue filled to the brim: stopping the
    dashboard still ends its stream (it used to raise QueueFull before closing)."""
    async with served(tmp_path, token=TOKEN) as s, s.client.get("/events", headers=AUTH) as r:
        await Frames(r).wait_for("snapshot")
        (queue,) = s.dashboard.streams.queues()  # the page's queue: what it has yet to be sent
        while queue.offer(b": filler\n\n"):
            pass
        await s.dashboard.stop()
        assert not s.dashboard.streams.queues()
        await asyncio.wait_for(r.content.read(), 10)  # the stream ended


async def test_what_is_published_on_the_bus_reaches_an_open_page(tmp_path: Path) -> None:
    async with served(tmp_path, token=TOKEN) as s, s.client.get("/events", headers=AUTH) as r:
        frames = Frames(r)
        await frames.wait_for("snapshot")

        def test5(rows: list[dict[str, Any]]) -> dict[str, Any]:
            return next((row for row in rows if row["csc"] == "Test:5"), {})

        state = {"summaryState": 2, "seq": 1, "sent_tai": current_tai()}
        await s.bus.publish(f"{PREFIX}/Test/5/evt/summaryState", encode(state), retain=True)
        rows = await frames.wait_for("cscs", lambda rows: bool(test5(rows)))
        assert test5(rows)["state"] == "(ENABLED)"  # a claim, until a heartbeat confirms it
        assert test5(rows)["condition"] == "NO HEARTBEAT (state unconfirmed)"
        beat = {"heartbeat": True, "seq": 2, "sent_tai": current_tai()}
        await s.bus.publish(f"{PREFIX}/Test/5/evt/heartbeat", encode(beat))
        rows = await frames.wait_for("cscs", lambda rows: test5(rows).get("state") == "ENABLED")
        assert test5(rows)["condition"] == "alive"

        # An image: a row, pushed as it changes.
        start = start_integration("AT_O_20261121_000003")
        await s.bus.publish(f"{PREFIX}/Camera/1/evt/startIntegration", encode(start.data))
        camera = await frames.wait_for("camera", lambda c: bool(c["exposure"]))
        assert camera["exposure"]["image"] == "AT_O_20261121_000003"
        row = await frames.wait_for("image", lambda row: row["name"] == "AT_O_20261121_000003")
        assert (row["type"], row["phase"], row["camera"]) == ("OBJECT", "integrating", 1)

        # A page that connects now gets it all in its snapshot.
        async with s.client.get("/events", headers=AUTH) as again:
            name, snapshot = await asyncio.wait_for(Frames(again).next(), 10)
        assert name == "snapshot"
        assert [i["name"] for i in snapshot["images"]] == ["AT_O_20261121_000003"]
        assert test5(snapshot["cscs"])["state"] == "ENABLED"


async def test_hostile_messages_on_the_bus_do_not_stop_the_page(tmp_path: Path) -> None:
    async with served(tmp_path) as s, s.client.get("/events") as r:
        frames = Frames(r)
        await frames.wait_for("snapshot")
        root = f"{PREFIX}/TelemetryGateway/0/evt"
        for topic, payload in [
            (f"{root}/alarms", b"\xff\xfe not UTF-8"),
            (f"{root}/alarms", b"[1, 2]"),
            (f"{root}/alarms", encode({"alarms": "[" * 100_000})),  # escapes feed: caught
            (
                f"{root}/alarm",
                json.dumps(
                    alarm("qc.nan", 3, timestampSeverityNewest=float("nan")), allow_nan=True
                ).encode(),
            ),
            (f"{PREFIX}/Test/5/evt/summaryState", encode({"summaryState": 5, "sent_tai": "?"})),
        ]:
            await s.bus.publish(topic, payload)
        # The NaN alarm is shown (as JSON a browser parses: the frame is strict JSON).
        shown = await frames.wait_for("alarm", lambda a: a["name"] == "qc.nan")  # alone
        assert shown["alarm"]["timestampSeverityNewest"] is None
        assert s.dashboard.model.malformed >= 1
        # Still listening.
        await s.bus.publish(f"{root}/alarm", encode(alarm("qc.after", 2)))
        await frames.wait_for("alarm", lambda a: a["name"] == "qc.after")
