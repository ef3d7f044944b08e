"""Whatever a message says, the OODS registers only files the catalog holds, inside the
archive, of its own instrument; and every prompt it reads is either checked or refused
with a reason (hypothesis: any text, any length)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cscs.camera.geometry import Camera
from cscs.catalog import Catalog, sqlite_url
from cscs.oods.prompts import PromptError, image_of, qc_image, sensors_of
from cscs.oods.registrar import Registrar
from tests.support.oods import FakeRegistry, archive_file, catalogue

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
