"""Whatever a message says, the OODS registers only files the catalog holds, inside the
archive, of its own instrument; and every prompt it reads is either checked or refused
with a reason (hypothesis: any text, any length)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cscs.camera.geometry import Camera
from cscs.catalog import Catalog, sqlite_url
from cscs.core.protocol import encode
from cscs.core.remote import Received
from cscs.core.states import State
from cscs.core.testing import MemoryBroker
from cscs.oods.prompts import PromptError, image_of, qc_image, sensors_of
from cscs.oods.registrar import Registrar
from tests.support.oods import FakeConsDb, FakeRegistry, archive_file, catalogue
from tests.test_oods import factory, started

AT = "AT_O_20261121_000001"
names = st.one_of(
    st.text(max_size=300),
    st.sampled_from([AT, "AT_O_20261121_000002", "CC_O_20261121_000001", "../../etc/passwd",
                     "AT_O_20261121_000001/../../x", "R00_S00", "R00_S00,R00_S00", "x" * 10_000]),
)  # fmt: skip


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hostile") / "archive"
    archive_file(root, AT, "R00_S00")
    outside = root.parent / "outside.fits"
    outside.write_bytes(b"x")
    catalogue(root, "AT_O_20261121_000002", "R00_S00", str(outside))
    catalogue(root, "AT_O_20261121_000003", "R00_S00", str(root / ".." / "outside.fits"))
    return root


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(image=names, asked=st.sets(names, max_size=5))
def test_only_catalogued_files_inside_the_archive_are_ever_registered(
    archive: Path, image: str, asked: set[str]
) -> None:
    registry = FakeRegistry()
    catalog = Catalog(sqlite_url(archive / "catalog.sqlite"))
    try:
        outcome = Registrar(catalog, registry, archive, "LATISS").round(image, asked)
    finally:
        catalog.close()
    allowed = {(archive / "LATISS" / "20261121" / AT / f"{AT}_R00_S00.fits").resolve()}
    assert set(registry.held) <= allowed
    assert set(outcome.registered) <= {"R00_S00"}
    assert set(outcome.not_in_catalog) <= asked
    if image != AT:
        assert registry.held == {}


@given(text=st.text(max_size=2000))
def test_prompts_are_checked_or_refused_with_a_reason(text: str) -> None:
    reasons: list[str] = []
    for check in (lambda: image_of(Camera.LATISS, text), lambda: sensors_of(Camera.COMCAM, text),
                  lambda: qc_image(text, "dm", Camera.LATISS)):  # fmt: skip
        try:
            check()
        except PromptError as exc:
            reasons.append(str(exc))
    assert all(0 < len(reason) < 500 for reason in reasons)


def test_prompts_of_another_camera_or_instrument_are_refused() -> None:
    with pytest.raises(PromptError, match="not an image of LATISS"):
        image_of(Camera.LATISS, "CC_O_20261121_000001")
    with pytest.raises(PromptError, match="no detector"):
        sensors_of(Camera.LATISS, "R22_S11")
    with pytest.raises(PromptError):
        qc_image(f"dm/qc/LSSTComCam/{AT}", "dm", Camera.LATISS)
    assert qc_image(f"dm/qc/LATISS/{AT}", "dm", Camera.LATISS) == AT
    assert sensors_of(Camera.COMCAM, "R22_S11,R22_S00,R22_S11") == ["R22_S00", "R22_S11"]


payloads = st.dictionaries(
    st.sampled_from(["imageName", "sensor", "url", "headerComplete", "statusCode", "seq"]),
    st.one_of(names, st.integers(), st.booleans(), st.none(), st.lists(names, max_size=3)),
    max_size=6,
)


def reconciled(message: Received) -> bool:
    return message.name == "logMessage" and "reconciled with the catalog" in str(
        message.data.get("message")
    )


@settings(max_examples=15, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hostile=st.lists(payloads, min_size=1, max_size=8))
def test_hostile_image_archived_registers_nothing_and_the_oods_goes_on(
    tmp_path_factory: pytest.TempPathFactory, hostile: list[dict[str, object]]
) -> None:
    """Whatever is published as imageArchived, the OODS registers nothing the catalog
    lacks, stays ENABLED, and still registers the next real file: one catalogued after
    its reconciliation at enable is over, whose imageArchived comes after the hostile
    ones on the same subscription (so every hostile one has been handled by then)."""
    tmp_path = tmp_path_factory.mktemp("hostile-csc")
    registry, consdb = FakeRegistry(), FakeConsDb()

    async def scenario() -> tuple[str, State, Path]:
        settings = {
            "archive_root": str(tmp_path / "archive"),
            "batch_delay": 0.01,
            "settle_delay": 0.05,
        }
        async with started(factory(registry, consdb), MemoryBroker(), tmp_path, settings,
                           1, heard="#") as (h, events):  # fmt: skip
            await events.wait_for(reconciled, 30)  # the catalog was empty then
            topic = f"{h.csc.address.prefix}/Archiver/1/evt/imageArchived"
            for payload in hostile:
                await h.bus.publish(topic, json.dumps(payload).encode(), qos=1)
            real = archive_file(tmp_path / "archive", AT, "R00_S00")
            await h.bus.publish(topic, encode({"imageName": AT, "sensor": "R00_S00"}), qos=1)
            said = await events.wait_for(lambda r: r.name == "imageInOODS", 30)
            return said.data["imageName"], h.csc.state, real

    said, state, real = asyncio.run(scenario())
    assert said == AT
    assert state is State.ENABLED
    assert set(registry.held) == {real.resolve()}
