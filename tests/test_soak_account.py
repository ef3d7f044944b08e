"""The soak's pure parts: the fault plan drawn from a seed, the camera's journal, and
the reconciliation that must find every lost or duplicated file and explain every
other shortfall only by a fault that can cause it."""

from __future__ import annotations

from pathlib import Path

from cscs.camera.geometry import Camera
from sim.daq.journal import TakenImage, read_journal, record_taken
from sim.site.soak.plan import FaultKind, plan_faults
from sim.site.soak.reconcile import FaultWindow, Reconciliation, SensorFile, reconcile

NIGHT = {Camera.LATISS: 30, Camera.COMCAM: 10}


def test_a_short_night_gets_every_fault_once_and_the_same_seed_the_same_night() -> None:
    plan = plan_faults(7, NIGHT, spacing=4)
    assert plan.kinds() == set(FaultKind)
    assert plan == plan_faults(7, NIGHT, spacing=4)
    assert plan != plan_faults(8, NIGHT, spacing=4)
    for fault in plan.faults:  # never the first two images, nor the last
        assert 3 <= fault.image < NIGHT[fault.camera]


def test_a_long_night_has_a_fault_every_spacing_images() -> None:
    plan = plan_faults(1, {Camera.LATISS: 500, Camera.COMCAM: 100}, spacing=10)
    assert 55 <= len(plan.faults) <= 70  # ~one every 9-10 images
    assert plan.kinds() == set(FaultKind)


def test_the_journal_survives_a_last_line_cut_short(tmp_path: Path) -> None:
    journal = tmp_path / "Camera-1-images.jsonl"
    first = TakenImage("AT_O_20261121_000001", "BIAS", ("R00_S00",), (), 1.0)
    record_taken(journal, first)
    with journal.open("a") as file:
        file.write('{"imageName": "AT_O_2026')  # the camera died writing
    assert read_journal(journal) == [first]
    assert read_journal(tmp_path / "none.jsonl") == []


def _image(number: int, kind: str = "OBJECT", at: float = 1000.0) -> TakenImage:
    return TakenImage(f"AT_O_20261121_{number:06d}", kind, ("R00_S00",), (), at)


def _file(image: TakenImage, header: bool = True) -> SensorFile:
    return SensorFile(f"/a/{image.imageName}.fits", "c0ffee", header,
                      "" if header else "header not received")  # fmt: skip


def test_a_whole_night_counts_every_image_once() -> None:
    images = [_image(1), _image(2, "BIAS")]
    catalog = {(i.imageName, "R00_S00"): _file(i) for i in images}
    result = reconcile(
        5, {"LATISS": images}, catalog,
        verified={key: "c0ffee" for key in catalog},
        announced={key: {row.path} for key, row in catalog.items()},
        qc_measured=[images[0].imageName], qc_stages={}, forwarded=[images[0].imageName],
        faults=[],
    )  # fmt: skip
    assert result.ok
    assert result.counts["all"] == {
        "taken": 2, "archived": 2, "verified": 2, "headerComplete": 2, "qcExpected": 1,
        "qcMeasured": 1, "qcForwarded": 1, "lost": 0, "duplicated": 0,
    }  # fmt: skip
    assert result.as_dict()["seed"] == 5


def test_a_file_never_catalogued_is_lost_and_one_written_twice_is_duplicated() -> None:
    lost, twice = _image(1, "BIAS"), _image(2, "BIAS")
    catalog = {(twice.imageName, "R00_S00"): _file(twice)}
    result = reconcile(
        1, {"LATISS": [lost, twice]}, catalog, verified={}, qc_measured=[], qc_stages={},
        announced={(twice.imageName, "R00_S00"): {"/a/one.fits", "/a/other.fits"}},
        forwarded=[], faults=[],
    )  # fmt: skip
    assert result.lost == [f"{lost.imageName} R00_S00"]
    assert result.duplicated == [f"{twice.imageName} R00_S00"]
    assert not result.ok


def test_a_missing_header_is_explained_only_by_its_own_cameras_header_service() -> None:
    image = _image(1, "BIAS", at=1000.0)
    catalog = {(image.imageName, "R00_S00"): _file(image, header=False)}
    comcam_hs = FaultWindow(FaultKind.KILL_HEADER_SERVICE, "HeaderService:2", 2, 999.0, 1003.0)
    latiss_hs = FaultWindow(FaultKind.HEADER_NEVER, "HeaderService:1", 1, 999.0, 1003.0)
    later = FaultWindow(FaultKind.KILL_HEADER_SERVICE, "HeaderService:1", 1, 1100.0, 1105.0)

    def account(faults: list[FaultWindow]) -> Reconciliation:
        return reconcile(1, {"LATISS": [image]}, catalog, {k: "c0ffee" for k in catalog}, {},
                         [], {}, [], faults)  # fmt: skip

    unexplained = account([comcam_hs, later])
    assert unexplained.unexplained
    assert not unexplained.ok
    explained = account([latiss_hs])
    assert explained.ok
    assert "header-never of HeaderService:1" in explained.lines[0]


def test_qc_not_measured_is_explained_by_ocs_batch_down_or_by_its_jobs_reason() -> None:
    down, failed, odd = _image(1, at=1000.0), _image(2, at=1000.0), _image(3, at=2000.0)
    images = [down, failed, odd]
    catalog = {(i.imageName, "R00_S00"): _file(i) for i in images}
    result = reconcile(
        1, {"LATISS": images}, catalog, verified={k: "c0ffee" for k in catalog}, announced={},
        qc_measured=[], qc_stages={failed.imageName: ("failed", "no sources")}, forwarded=[],
        faults=[FaultWindow(FaultKind.KILL_OCS_BATCH, "OCSBatch:0", 1, 1001.0, 1004.0)],
    )  # fmt: skip
    assert [line.split(":")[0] for line in result.lines] == [down.imageName, failed.imageName]
    assert "no sources" in result.lines[1]
    assert result.unexplained == [f"{odd.imageName}: QC not measured: no fault near it explains it"]
