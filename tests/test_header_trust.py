"""Headers against hostile peers: anyone on the network can publish anything.

What the header service and the archiver may be sent (a forged announcement, a document
that is no header, a URL to a device, a FIFO, a symlink out, a name with ``../``, a
flood of exposures) and what must hold whatever comes: the announcement or document is
refused naming why, the image is still archived (without its header), nothing is
written or read outside the CSCs' directories, and the CSC stays ENABLED. On the
in-memory bus; the parts (path checks, the schema) on their own, some with hypothesis.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import structlog
import structlog.testing
import yaml
from hypothesis import given
from hypothesis import strategies as st

from cscs.archiver.csc import ArchiverCsc
from cscs.archiver.headers import HeaderSource
from cscs.archiver.interface import ArchiverConfig
from cscs.camera.events import (
    END_OF_IMAGE_TELEMETRY,
    START_INTEGRATION,
    EndOfImageTelemetry,
    StartIntegration,
)
from cscs.camera.files import (
    PathEscapeError,
    RefusedFileError,
    path_under,
    read_regular_file,
    resolve_under,
)
from cscs.camera.geometry import SEGMENT_COLS, SEGMENT_ROWS, SEGMENTS, Camera
from cscs.camera.headers.announcement import LARGE_FILE_OBJECT_AVAILABLE, LargeFileObjectAvailable
from cscs.camera.headers.reading import DEFAULT_MAX_HEADER_BYTES, HeaderTrust, read_header_document
from cscs.camera.headers.yaml_codec import parse_header_document
from cscs.core.protocol import encode
from cscs.core.remote import EventStream, Parsed, Received
from cscs.core.schema import EventSpec, Payload, parse_payload
from cscs.core.settings import Settings
from cscs.core.states import State
from cscs.core.tai import current_tai
from cscs.core.testing import CscHarness, MemoryBroker, make_csc
from cscs.core.topics import CscAddress
from cscs.core.transport import Transport
from cscs.daq.reader import ImageInfo, SensorPixels
from cscs.header_service.csc import HeaderServiceCsc
from cscs.header_service.paths import header_path
from sim.testkit import config_dir
from tests.support.headers import rendered_header

IMAGE = "AT_O_20261121_000007"
DAY = "20261121"
LOG = structlog.get_logger("test")
CAMERA = CscAddress("Camera", 1)
HEADER_SERVICE = CscAddress("HeaderService", 1)


def document(image: str = IMAGE, telescope: str = "") -> bytes:
    """A header document made by the header service's own code (``telescope``: forged)."""
    start = StartIntegration(
        imageName=image, imageIndex=1, imagesInSequence=1, imageSource="AT",
        imageController="O", imageDate=DAY, imageNumber=7, groupId="g", imageType="BIAS",
        exposureTime=0.0, timestampAcquisitionStart=1.795e9, timeout=30.0,
        additionalKeys="", additionalValues="",
    )  # fmt: skip
    end = EndOfImageTelemetry(
        imageName=image, timestampDateObs=1.795e9, timestampDateEnd=1.795e9,
        exposureTime=0.0, darkTime=0.1, measuredShutterOpenTime=0.0,
    )  # fmt: skip
    return rendered_header(Camera.LATISS, start, end, ["R00_S00"], telescope=telescope).data


def announcement(url: str, data: bytes, image: str = IMAGE, **changes: Any) -> dict[str, Any]:
    """``largeFileObjectAvailable`` for ``data`` at ``url``, as the ICD writes it."""
    return {
        "id": image, "url": url, "byteSize": len(data),
        "checkSum": hashlib.md5(data).hexdigest(), "mimeType": "application/yaml",
        "generator": "HeaderService:1", "version": "test",
    } | changes  # fmt: skip


# ---- the shared path helper -------------------------------------------------------------


@pytest.mark.parametrize(
    "names",
    [("..",), (".",), ("",), ("a/b",), ("../x",), ("/etc",), ("x\0",), (DAY, "..", "..")],
)
def test_a_name_that_is_not_one_plain_component_is_refused(
    tmp_path: Path, names: tuple[str, ...]
) -> None:
    with pytest.raises(PathEscapeError, match="not a plain file name"):
        path_under(tmp_path / "root", *names)


@given(names=st.lists(st.text(max_size=12), min_size=1, max_size=4))
def test_no_name_leads_outside_its_directory(
    tmp_path_factory: pytest.TempPathFactory, names: list[str]
) -> None:
    """Whatever the names: either refused, or a path that stays under the root once
    resolved (the file system is asked, not just the text)."""
    root = tmp_path_factory.getbasetemp() / "names-root"
    try:
        path = path_under(root, *names)
    except PathEscapeError:
        return
    assert path.resolve().is_relative_to(root.resolve())
    assert path.parts[: len(root.parts)] == root.parts


def test_a_symlink_inside_the_root_does_not_lead_out(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / DAY).symlink_to(outside)
    with pytest.raises(PathEscapeError, match="not under a trusted directory"):
        path_under(root, DAY, f"{IMAGE}.yaml")
    with pytest.raises(PathEscapeError, match="not under a trusted directory"):
        resolve_under(root / ".." / "outside" / "x", (root,))
    (root / "sub").mkdir()
    (root / "inside").symlink_to(root / "sub")
    assert path_under(root, "inside", "x") == root / "inside" / "x"  # still under it


def test_only_a_regular_file_is_read_and_never_more_than_the_limit(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(RefusedFileError, match="not a regular file"):
        read_regular_file(fifo, 100)  # and it does not wait for a writer
    with pytest.raises(RefusedFileError, match="not a regular file"):
        read_regular_file(Path("/dev/zero"), 100)
    (tmp_path / "link").symlink_to(tmp_path / "small")
    (tmp_path / "small").write_bytes(b"x" * 100)
    with pytest.raises(RefusedFileError, match="symbolic link"):
        read_regular_file(tmp_path / "link", 100)
    assert read_regular_file(tmp_path / "small", 100) == b"x" * 100
    (tmp_path / "small").write_bytes(b"x" * 101)
    with pytest.raises(RefusedFileError, match="101 bytes, more than 100"):
        read_regular_file(tmp_path / "small", 100)
    with pytest.raises(FileNotFoundError):
        read_regular_file(tmp_path / "none", 100)


# ---- the announcement and the document ----------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"checkSum": ""}, "checkSum: Value error, '' is not an MD5"),
        ({"checkSum": "D41D8CD98F00B204E9800998ECF8427E"}, "is not an MD5"),
        ({"checkSum": "d41d8cd98f00b204e9800998ecf8427"}, "is not an MD5"),
        ({"checkSum": None}, "checkSum: Field required"),
        ({"byteSize": None}, "byteSize: Field required"),
        ({"byteSize": -1}, "byteSize: Input should be greater than or equal to 0"),
        ({"byteSize": 2**40}, "byteSize: Input should be less than or equal to"),
        ({"id": "../../etc/passwd"}, "id: Value error, not an image name"),
        ({"url": "file:///" + "x" * 5000}, "url: String should have at most"),
    ],
)
def test_an_announcement_without_a_valid_size_checksum_or_name_is_refused_at_parse(
    changes: dict[str, Any], why: str
) -> None:
    data = announcement("file:///h.yaml", b"x") | changes
    with pytest.raises(ValueError, match=why):
        parse_payload(LargeFileObjectAvailable, {k: v for k, v in data.items() if v is not None})


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def _cards(document: dict[str, Any], where: str) -> list[dict[str, Any]]:
    part, _, name = where.partition(".")
    cards: list[dict[str, Any]] = document[part][name] if name else document[part]
    return cards


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (lambda d: d["detectors"].update({"../../x": []}), "not a sensor name"),
        (lambda d: d["segments"].update({"Segment99": []}), "not a segment's EXTNAME"),
        (lambda d: d.update(primary=d["primary"] * 40), "at most 1000 items"),
        (
            lambda d: d["detectors"].update({"R00_S00": [{"keyword": "A", "value": 1}] * 201}),
            "at most 200 items",
        ),
        (
            lambda d: _cards(d, "primary").append({"keyword": "LONG", "value": "x" * 1025}),
            "more than 1024",
        ),
        (
            lambda d: _cards(d, "primary").append({"keyword": "OBJECT", "value": "M\u00e9"}),
            "is not printable ASCII",
        ),
        (
            lambda d: _cards(d, "primary").append({"keyword": "BAD", "value": 1, "comment": "\n"}),
            "is not printable ASCII",
        ),
        (
            lambda d: _cards(d, "primary").append({"keyword": "ra", "value": 1}),
            "not a FITS keyword",
        ),
        (
            lambda d: _cards(d, "primary").append({"keyword": "BZERO", "value": 7}),
            "set by the FITS writer",
        ),
        (
            lambda d: d["segments"].update(
                {
                    "Segment10": [
                        {"keyword": "EXTNAME", "value": "Segment10"},
                        {"keyword": "NAXIS1", "value": 7},
                    ]
                }
            ),
            "set by the FITS writer",
        ),
        (
            lambda d: _cards(d, "primary").append({"keyword": "BIG", "value": 2**64}),
            "beyond 64 bits",
        ),
        (
            lambda d: _cards(d, "primary").append({"keyword": "NAN", "value": float("nan")}),
            "not a finite number",
        ),
        (lambda d: _cards(d, "primary").append(dict(_cards(d, "primary")[0])), "appears twice"),
        (
            lambda d: d["segments"].update(
                {"Segment10": [{"keyword": "EXTNAME", "value": "Segment00"}]}
            ),
            "EXTNAME must be Segment10",
        ),
        (lambda d: d.update(generator="x" * 200), "at most 128 characters"),
    ],
)
@pytest.mark.parametrize("written_as", ["JSON", "YAML"])
def test_a_document_outside_its_schema_is_refused_naming_why(
    damage: Callable[[dict[str, Any]], None], why: str, written_as: str
) -> None:
    """Whether written as the header service writes it (JSON) or as other YAML."""
    raw = yaml.safe_load(document())
    damage(raw)
    data = json.dumps(raw) if written_as == "JSON" else yaml.dump(raw, Dumper=_NoAliases)
    with pytest.raises(ValueError, match=why):
        parse_header_document(data.encode())


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"just a string\n", "a header document is a mapping, not str"),
        (b"- 1\n- 2\n", "a header document is a mapping, not list"),
        (b"[" * 8 + b"]" * 8, "a header document is a mapping, not list"),  # as deep as may be
    ],
    ids=["a string", "a list", "a list 8 deep"],
)
def test_yaml_that_is_no_mapping_is_refused_naming_what_it_is(data: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_header_document(data)


#: Deep nesting named as the reason, whichever refuses first: our own check ("nested
#: deeper than 8") or, from 6.0.4 and on enough brackets, PyYAML's ("exceeded maximum
#: nesting depth"), whose scanner looks ahead through them before any event comes.
NESTED = "nest(ed|ing) (deeper|depth)"


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"[" * 9 + b"]" * 9, "nested deeper than 8"),  # a document nests 4 deep
        (b"a:\n" + b"- " * 9 + b"x\n", "nested deeper than 8"),  # in block style too
        (b"[" * 200_000 + b"]" * 200_000, NESTED),  # crashed the C loader
        (b"a: &a [1, 2]\nb: [*a, *a]\n", "a YAML alias"),  # a few bytes for a huge structure
        (b'{"a": ' * 200_000 + b"1" + b"}" * 200_000, NESTED),  # JSON, too deep for it too
    ],
    ids=["9 deep", "10 deep, block style", "200000 deep", "an alias", "200000 deep JSON"],
)
def test_yaml_that_is_no_document_is_refused_without_building_it(
    data: bytes, why: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refused naming why, and before anything is built from it: the C loader builds
    nesting by recursion, and crashed the process on 400 kB of brackets."""
    built: list[bytes] = []
    load = yaml.load

    def spy(stream: bytes, **kwargs: Any) -> Any:
        built.append(stream)
        return load(stream, **kwargs)

    monkeypatch.setattr(yaml, "load", spy)
    with pytest.raises(ValueError, match=why):
        parse_header_document(data)
    assert not built


def test_the_header_services_own_document_passes_and_names_its_image(tmp_path: Path) -> None:
    data = document()
    path = tmp_path / f"{IMAGE}.yaml"
    path.write_bytes(data)
    announced = LargeFileObjectAvailable.model_validate(announcement(path.as_uri(), data))
    trust = HeaderTrust((tmp_path,))
    parsed, md5 = read_header_document(path.as_uri(), IMAGE, announced, trust)
    assert (parsed.imageName, md5) == (IMAGE, announced.checkSum)
    with pytest.raises(ValueError, match=f"is for {IMAGE}, not AT_O_20261121_000008"):
        read_header_document(path.as_uri(), "AT_O_20261121_000008", None, trust)


# ---- what the archiver trusts ------------------------------------------------------------


def test_by_default_the_archiver_trusts_where_header_services_write(tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert ArchiverConfig().header_trust(state) == HeaderTrust((state / "headers",))
    templated = ArchiverConfig(header_url_template="file:///data/h/{day_obs}/{image}.yaml")
    assert templated.header_trust(state).roots == (state / "headers", Path("/data/h"))
    chosen = ArchiverConfig(header_roots=["/srv/headers"], max_header_bytes=1000)
    assert chosen.header_trust(state) == HeaderTrust((Path("/srv/headers"),), 1000)


async def test_the_configured_roots_and_limit_are_what_a_header_source_obeys(
    tmp_path: Path,
) -> None:
    data = document()
    (tmp_path / "roots" / "a").mkdir(parents=True)
    (tmp_path / "roots" / "a" / "h.yaml").write_bytes(data)
    (tmp_path / "state" / "headers").mkdir(parents=True)
    (tmp_path / "state" / "headers" / "h.yaml").write_bytes(data)
    for root, limit, url, why in [
        ("roots", len(data), tmp_path / "roots" / "a" / "h.yaml", ""),
        ("roots", len(data) - 1, tmp_path / "roots" / "a" / "h.yaml", "more than"),
        ("roots", len(data), tmp_path / "state" / "headers" / "h.yaml", "not under a trusted"),
    ]:
        config = ArchiverConfig(header_roots=[str(tmp_path / root)], max_header_bytes=limit)
        source = HeaderSource(LOG, trust=config.header_trust(tmp_path / "state"))
        source.announce(LargeFileObjectAvailable.model_validate(announcement(url.as_uri(), data)))
        with structlog.testing.capture_logs() as logs:
            header = await source.get(IMAGE, wait=0)
        if why:
            assert header is None
            assert why in logs[0]["error"]
        else:
            assert header is not None
            assert logs == []


@pytest.mark.parametrize(
    ("config", "why"),
    [
        ({"header_roots": ["/"]}, "not /"),
        ({"header_roots": ["relative/dir"]}, "absolute directory"),
        ({"header_url_template": "file:///{image}.yaml"}, "the whole file system"),
        ({"header_url_template": "file:///data/{user}.yaml"}, "only {day_obs} and {image}"),
        ({"header_url_template": "http://host/{image}.yaml"}, "only file://"),
        ({"max_header_bytes": 2**40}, "less than or equal to"),
    ],
)
def test_a_configuration_that_would_trust_too_much_is_refused(
    config: dict[str, Any], why: str
) -> None:
    with pytest.raises(ValueError, match=why):
        ArchiverConfig(**config)


async def test_before_it_is_configured_a_header_source_trusts_the_default_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the archiver trusts until it passes its configuration (``trust``): the state
    directory's ``headers`` and the template's directory; nothing else."""
    monkeypatch.setenv("CSCS_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("CSCS_CONFIG_DIR", raising=False)
    elsewhere = tmp_path / "elsewhere"
    source = HeaderSource(LOG, template=elsewhere.as_uri() + "/{image}.yaml")
    data = document()
    for directory in (tmp_path / "state" / "headers" / "HeaderService-1", elsewhere):
        directory.mkdir(parents=True)
        path = directory / f"{IMAGE}.yaml"
        path.write_bytes(data)
        source.announce(LargeFileObjectAvailable.model_validate(announcement(path.as_uri(), data)))
        assert await source.get(IMAGE, wait=0) is not None
    (tmp_path / "other.yaml").write_bytes(data)
    url = (tmp_path / "other.yaml").as_uri()
    source.announce(LargeFileObjectAvailable.model_validate(announcement(url, data)))
    # Never the announced place; the one where the header service writes, if any.
    header = await source.get(IMAGE, wait=0)
    assert header is not None
    assert header.url == (elsewhere / f"{IMAGE}.yaml").as_uri()
    (elsewhere / f"{IMAGE}.yaml").unlink()
    source.announce(LargeFileObjectAvailable.model_validate(announcement(url, data)))
    assert await source.get(IMAGE, wait=0) is None


# ---- the archiver, whole: whatever is announced, the image is archived ------------------


class FakeDaq:
    endpoint = "fake://daq"

    async def list_images(self) -> list[ImageInfo]:
        return []

    async def read_sensor(self, image: str, sensor: str) -> SensorPixels:
        segments = tuple(np.zeros((SEGMENT_ROWS, SEGMENT_COLS), np.int32) for _ in SEGMENTS)
        return SensorPixels.trusted(image, sensor, segments)

    async def close(self) -> None:
        pass


@dataclass
class Archiver:
    harness: CscHarness
    bus: Transport
    events: EventStream
    headers: Path  # the trusted directory where this image's header belongs

    async def announce(self, data: dict[str, Any]) -> None:
        topic = HEADER_SERVICE.event("largeFileObjectAvailable")
        await self.bus.publish(topic, encode(data))

    async def end_readout(self, image: str = IMAGE) -> None:
        end = {"imageName": image, "imageIndex": 1, "imagesInSequence": 1,
               "requestedExposureTime": 0.0, "timestampEndOfReadout": 1.795e9,
               "sensors": "R00_S00"}  # fmt: skip
        await self.bus.publish(CAMERA.event("endReadout"), encode(end))

    async def archived(self, *, said: str = "") -> dict[str, Any]:
        """The next imageArchived, once a log has also ``said`` (either may come first)."""
        archived, *_ = await heard(
            self.events,
            lambda r: r.name == "imageArchived",
            *([lambda r: r.name == "logMessage" and said in r.data["message"]] if said else []),
        )
        return archived.data


async def heard(
    events: EventStream, *predicates: Callable[[Received], bool], timeout: float = 30
) -> list[Received]:
    """The first event matching each predicate, in whatever order they come (a log is
    published by a loop of its own: it may come before or after an event it precedes)."""
    found: list[Received | None] = [None] * len(predicates)
    async with asyncio.timeout(timeout):
        while None in found:
            event = await events.next(None)
            for i, predicate in enumerate(predicates):
                if found[i] is None and predicate(event):
                    found[i] = event
    return [event for event in found if event is not None]


async def heard_all(
    events: EventStream, *predicates: Callable[[Received], bool], timeout: float = 30
) -> list[Received]:
    """Every event heard until each predicate has matched one."""
    said: list[Received] = []
    async with asyncio.timeout(timeout):
        while not all(any(predicate(r) for r in said) for predicate in predicates):
            said.append(await events.next(None))
    return said


@contextlib.asynccontextmanager
async def archiver(tmp_path: Path, **config: Any) -> AsyncIterator[Archiver]:
    """Archiver:1 ENABLED on the in-memory bus, with a fake DAQ and the configuration of
    a deployment: header_url_template where HeaderService:1 writes (so it trusts that
    directory whether or not it is told its state directory)."""
    broker = MemoryBroker()
    state = tmp_path / "state"
    headers = state / "headers" / "HeaderService-1"
    (headers / DAY).mkdir(parents=True)
    settings = Settings(state_dir=state, config_dir=config_dir(tmp_path, config, headers))

    async def open_fake(url: str, timeout: float, stall_timeout: float) -> FakeDaq:
        return FakeDaq()

    async with (
        make_csc(ArchiverCsc, broker, index=1, settings=settings, open_daq=open_fake) as h,
        broker.transport() as bus,
        h.remote.stream() as events,
    ):
        available = encode({"url": "fake://daq", "capacityBytes": 1})
        await bus.publish(CAMERA.event("daqAvailable"), available, retain=True)
        await h.remote.command("start", {"configurationOverride": "test"})
        await h.remote.command("enable")
        yield Archiver(h, bus, events, headers / DAY)
        assert h.csc.state is State.ENABLED


def _outside(a: Archiver, tmp: Path) -> dict[str, Any]:
    data = document(telescope="Forged")
    (tmp / "outside.yaml").write_bytes(data)
    return announcement((tmp / "outside.yaml").as_uri(), data)


def _forged(a: Archiver, tmp: Path) -> dict[str, Any]:
    """Announced with the genuine document's MD5 and size, a forged one in its place
    (not where ``header_url_template`` looks: found there, nothing would contradict it)."""
    genuine, forged = document(), document(telescope="LSST AuxTelescopf")
    assert len(genuine) == len(forged)  # the size alone would not tell
    (a.headers / "forged.yaml").write_bytes(forged)
    return announcement((a.headers / "forged.yaml").as_uri(), genuine)


def _not_a_mapping(a: Archiver, tmp: Path) -> dict[str, Any]:
    (a.headers / f"{IMAGE}.yaml").write_bytes(b"just a string\n")
    return announcement((a.headers / f"{IMAGE}.yaml").as_uri(), b"just a string\n")


def _fifo(a: Archiver, tmp: Path) -> dict[str, Any]:
    os.mkfifo(a.headers / f"{IMAGE}.yaml")
    return announcement((a.headers / f"{IMAGE}.yaml").as_uri(), b"")


def _symlink_out(a: Archiver, tmp: Path) -> dict[str, Any]:
    data = document()
    (tmp / "real.yaml").write_bytes(data)
    (a.headers / f"{IMAGE}.yaml").symlink_to(tmp / "real.yaml")
    return announcement((a.headers / f"{IMAGE}.yaml").as_uri(), data)


def _too_large(a: Archiver, tmp: Path) -> dict[str, Any]:
    path = a.headers / f"{IMAGE}.yaml"
    with path.open("wb") as stream:
        stream.truncate(DEFAULT_MAX_HEADER_BYTES + 1)  # sparse: nothing is written
    return announcement(path.as_uri(), b"announced small")


def _announced_too_large(a: Archiver, tmp: Path) -> dict[str, Any]:
    return announcement((a.headers / f"{IMAGE}.yaml").as_uri(), b"", byteSize=2**25)


def _fixed(url: str, **changes: Any) -> Callable[[Archiver, Path], dict[str, Any]]:
    return lambda a, tmp: announcement(url, b"whatever", **changes)


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (_not_a_mapping, "a header document is a mapping, not str"),
        (_forged, "does not match its announcement"),
        (_outside, "is not under a trusted directory"),
        (_fixed("file:///etc/passwd"), "/etc/passwd is not under a trusted directory"),
        (_fixed("file:///dev/zero"), "/dev/zero is not under a trusted directory"),
        (_fixed("file://elsewhere/etc/passwd"), "names another host"),
        (_fixed("http://elsewhere/h.yaml"), "only file:// is supported"),
        (_fifo, "is not a regular file"),
        (_symlink_out, "is not under a trusted directory"),
        (_too_large, f"more than {DEFAULT_MAX_HEADER_BYTES}"),
        (
            _announced_too_large,
            f"announced with 33554432 bytes, more than {DEFAULT_MAX_HEADER_BYTES}",
        ),
    ],
    ids=[
        "not-a-mapping",
        "forged",
        "outside",
        "passwd",
        "dev-zero",
        "other-host",
        "http",
        "fifo",
        "symlink-out",
        "too-large",
        "announced-too-large",
    ],
)
async def test_an_unusable_header_is_refused_and_the_image_archived_without_it(
    tmp_path: Path, make: Callable[[Archiver, Path], dict[str, Any]], why: str
) -> None:
    async with archiver(tmp_path) as a:
        await a.announce(make(a, tmp_path))
        await a.end_readout()
        archived = await a.archived(said=why)
        # catch-up tries the announced header again for the file without one: refused
        # again, and nothing else is affected (a non-mapping used to break every pass)
        ack = await a.harness.remote.command("catchUp", timeout=30)
    assert "catch-up archived 0 file(s); 0 could not be read" in ack.result
    assert (archived["imageName"], archived["headerComplete"], archived["statusCode"]) == (
        IMAGE, False, 1,
    )  # fmt: skip


@pytest.mark.parametrize(
    "changes",
    [{"checkSum": ""}, {"checkSum": "not-an-md5"}, {"checkSum": None}, {"byteSize": None}],
    ids=["empty-checksum", "malformed-checksum", "no-checksum", "no-size"],
)
async def test_an_announcement_without_size_or_checksum_is_dropped_at_parse(
    tmp_path: Path, changes: dict[str, Any]
) -> None:
    """It was verified against nothing before, so a forged document went in as a
    complete header; now it is dropped where it is parsed, and the image is archived
    without a header once ``header_timeout`` has passed."""
    async with archiver(tmp_path, header_timeout=0.2) as a:
        forged = document(telescope="Forged")  # not where the template finds headers
        (tmp_path / "forged.yaml").write_bytes(forged)
        data = announcement((tmp_path / "forged.yaml").as_uri(), forged, **changes)
        await a.announce({k: v for k, v in data.items() if v is not None})
        await a.end_readout()
        archived = await a.archived(said="ignored a malformed largeFileObjectAvailable")
    assert (archived["headerComplete"], archived["statusCode"]) == (False, 1)


async def test_a_good_header_after_a_refused_one_completes_the_file(tmp_path: Path) -> None:
    async with archiver(tmp_path, header_timeout=0.5) as a:
        await a.announce(_fixed("file:///etc/passwd")(a, tmp_path))
        await a.end_readout()
        first = await a.archived(said="not under a trusted directory")
        data = document()
        (a.headers / f"{IMAGE}.yaml").write_bytes(data)
        await a.announce(announcement((a.headers / f"{IMAGE}.yaml").as_uri(), data))
        completed = await a.archived()
        await a.end_readout("AT_O_20261121_000008")  # and the next image goes on
        following = await a.archived()
    assert first["headerComplete"] is False
    assert (completed["imageName"], completed["headerComplete"]) == (IMAGE, True)
    assert (following["imageName"], following["statusCode"]) == ("AT_O_20261121_000008", 1)


# ---- the header service ------------------------------------------------------------------


@contextlib.asynccontextmanager
async def header_service(
    tmp_path: Path, **config: Any
) -> AsyncIterator[tuple[CscHarness, Transport]]:
    """HeaderService:1 ENABLED on the in-memory bus, mapping only OBJECT (from
    Telescope:1 ``evt/target``: an event, so nothing goes stale)."""
    root = tmp_path / "config"
    shipped = HeaderServiceCsc.default_config_dir
    assert shipped is not None
    shutil.copytree(shipped, root / "HeaderService")
    keywords = [{"keyword": "OBJECT", "source": "Telescope:{camera}", "topic": "evt/target",
                 "field": "object", "comment": "target"}]  # fmt: skip
    (root / "HeaderService" / "test.yaml").write_text(
        yaml.safe_dump({"keywords": keywords} | config)
    )
    broker = MemoryBroker()
    settings = Settings(state_dir=tmp_path / "state", config_dir=root)
    async with (
        make_csc(HeaderServiceCsc, broker, index=1, settings=settings) as h,
        broker.transport() as bus,
    ):
        await h.remote.command("start", {"configurationOverride": "test"})
        await h.remote.command("enable")
        yield h, bus
        assert h.csc.state is State.ENABLED


async def camera_event(bus: Transport, name: str, **data: Any) -> None:
    await bus.publish(CAMERA.event(name), encode(data | {"sent_tai": current_tai()}))


async def start(bus: Transport, image: str, **changes: Any) -> None:
    await camera_event(
        bus, "startIntegration", **{
            "imageName": image, "imageIndex": 1, "imagesInSequence": 1, "imageSource": "AT",
            "imageController": "O", "imageDate": image.split("_")[2], "imageNumber": 1,
            "groupId": "g", "imageType": "BIAS", "exposureTime": 0.0,
            "timestampAcquisitionStart": current_tai(), "timeout": 30.0,
            "additionalKeys": "", "additionalValues": "",
        } | changes,
    )  # fmt: skip


async def end(bus: Transport, image: str, sensors: str = "R00_S00") -> None:
    now = current_tai()
    await camera_event(
        bus,
        "endReadout",
        imageName=image,
        imageIndex=1,
        imagesInSequence=1,
        requestedExposureTime=0.0,
        timestampEndOfReadout=now,
        sensors=sensors,
    )
    await camera_event(bus, END_OF_IMAGE_TELEMETRY.name, imageName=image, timestampDateObs=now,
                       timestampDateEnd=now, exposureTime=0.0, darkTime=0.0,
                       measuredShutterOpenTime=0.0)  # fmt: skip


def written(tmp_path: Path) -> list[Path]:
    return sorted(
        p.relative_to(tmp_path) for p in tmp_path.rglob("*.yaml") if "config" not in p.parts
    )


async def test_a_start_integration_naming_a_path_is_dropped_and_nothing_written_outside(
    tmp_path: Path,
) -> None:
    """``../`` in imageDate or imageName used to put the document outside its directory."""
    async with header_service(tmp_path) as (h, bus), h.remote.stream() as events:
        await start(bus, IMAGE, imageDate="../../../../escaped")
        await start(bus, "../../../escaped/AT_O_20261121_000001")
        await end(bus, IMAGE)
        await events.wait_for(lambda r: "ignored a malformed startIntegration" in str(r.data))
        await start(bus, "AT_O_20261121_000002")
        await end(bus, "AT_O_20261121_000002")
        announced = await events.wait_for(lambda r: r.name == "largeFileObjectAvailable")
    assert announced.data["id"] == "AT_O_20261121_000002"
    output = Path("state/headers/HeaderService-1")
    assert written(tmp_path) == [output / DAY / "AT_O_20261121_000002.yaml"]


async def test_an_image_date_that_got_past_the_checks_never_reaches_a_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Were a bug in startIntegration's checks to let a path through ``imageDate`` (made
    here: its fields go unchecked), it goes nowhere near the file system: the document's
    place comes from the image's name alone (``paths.header_path``), and a name that is
    no image name is refused there (with ``path_under`` behind it)."""
    parse = Received.parse

    def unchecked(received: Received, spec: Any) -> Parsed[Any]:
        if spec is not START_INTEGRATION:
            return parse(received, spec)
        fields = {k: v for k, v in received.data.items() if k in StartIntegration.model_fields}
        return Parsed(received.address, received.name, StartIntegration.model_construct(**fields))

    monkeypatch.setattr(Received, "parse", unchecked)
    async with header_service(tmp_path) as (h, bus), h.remote.stream() as events:
        await start(bus, IMAGE, imageDate="../../../x")
        await end(bus, IMAGE)
        announced = await events.wait_for(lambda r: r.name == "largeFileObjectAvailable")
    assert announced.data["id"] == IMAGE
    output = Path("state/headers/HeaderService-1")
    assert written(tmp_path) == [output / DAY / f"{IMAGE}.yaml"]
    with pytest.raises(ValueError, match="not an image name"):
        header_path(tmp_path, "../../x")


async def test_a_flood_of_exposures_is_bounded_and_said_once(tmp_path: Path) -> None:
    async with (
        header_service(tmp_path, max_open_exposures=3) as (h, bus),
        h.remote.stream() as events,
    ):
        csc = h.csc
        assert isinstance(csc, HeaderServiceCsc)
        images = [f"AT_O_20261121_{n:06d}" for n in range(1, 9)]
        for image in images:
            await start(bus, image)
        # Handled after every start (one subscription, in order), and logs come in the
        # order they are made: once its warning is heard, every warning of the flood has been.
        await start(bus, "CC_O_20261121_000001")  # another camera's image: said, ignored
        await end(bus, images[0])
        said = await heard_all(
            events,
            lambda r: r.name == "largeFileObjectAvailable",
            lambda r: "another camera's image" in str(r.data),
        )
        announced = next(r for r in said if r.name == "largeFileObjectAvailable")
        assert announced.data["id"] == images[0]
        await asyncio.wait_for(csc.exposure_done(images[0]), 10)  # clean-up may still run
        assert set(csc.exposures) == set(images[1:3])
        assert csc.exposures_dropped == 5
        warned = [r.data["message"] for r in said if "too many exposures open" in str(r.data)]
        assert len(warned) == 1  # said once: the other four are counted, not logged
        assert "suppressed=0" in warned[0]  # the first said at once


async def test_an_exposure_that_fails_unexpectedly_is_abandoned_said_and_the_service_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with header_service(tmp_path) as (h, bus), h.remote.stream() as events:
        csc = h.csc
        assert isinstance(csc, HeaderServiceCsc)
        publish = csc.publish_event

        async def broken(spec: EventSpec[Payload], payload: Payload, **kwargs: Any) -> bool:
            if spec is LARGE_FILE_OBJECT_AVAILABLE:
                raise RuntimeError("a deliberate bug")
            return await publish(spec, payload, **kwargs)

        with monkeypatch.context() as patched:
            patched.setattr(csc, "publish_event", broken)
            await start(bus, IMAGE)
            await end(bus, IMAGE)
            traceback, said = await heard(
                events,
                lambda r: "failed unexpectedly" in str(r.data),
                lambda r: "exposure abandoned after an unexpected error" in str(r.data),
            )
            await asyncio.wait_for(csc.exposure_done(IMAGE), 10)
            assert not csc.exposures
        await start(bus, "AT_O_20261121_000008")
        await end(bus, "AT_O_20261121_000008")
        announced = await events.wait_for(lambda r: r.name == "largeFileObjectAvailable")
    assert "RuntimeError: a deliberate bug" in traceback.data["traceback"]
    assert IMAGE in said.data["message"]
    assert said.data["level"] == 40
    assert announced.data["id"] == "AT_O_20261121_000008"


@pytest.mark.parametrize(
    ("value", "why"),
    [("x" * 2000, "more than 1024"), ("M\u00e9chain", "not printable ASCII"), ([1], "a list")],
)
async def test_a_value_no_fits_header_can_hold_is_missing_not_a_fault(
    tmp_path: Path, value: Any, why: str
) -> None:
    telescope = CscAddress("Telescope", 1)
    async with header_service(tmp_path) as (h, bus), h.remote.stream() as events:
        await bus.publish(telescope.event("target"), encode({"object": value}))
        await start(bus, IMAGE)
        await end(bus, IMAGE, sensors="R22_S11")  # ComCam's: ignored, said
        await events.wait_for(lambda r: "another camera's sensors" in str(r.data))
        await end(bus, IMAGE)
        announced = await events.wait_for(lambda r: r.name == "largeFileObjectAvailable")
    assert "OBJECT" in announced.data["missingKeywords"].split(",")
    path = Path(announced.data["url"].removeprefix("file://"))
    header = parse_header_document(await asyncio.to_thread(path.read_bytes))
    assert why in {m.keyword: m.reason for m in header.missing}["OBJECT"]
    assert list(header.detectors) == ["R00_S00"]
