"""The soak's pure parts: the fault plan drawn from a seed, the camera's journal, and
the reconciliation that must find every lost or duplicated file and explain every
other shortfall only by a fault that destroyed the information itself (never by a
component's own outage: that costs latency, a header rebuilt or QC caught up)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from cscs.camera.geometry import Camera
from sim.daq.journal import TakenImage, read_journal, record_taken
from sim.site.soak.account import catalogued_source
from sim.site.soak.plan import FaultKind, plan_faults, planned_kinds
from sim.site.soak.reconcile import FaultWindow, Reconciliation, SensorFile, reconcile

NIGHT = {Camera.LATISS: 30, Camera.COMCAM: 10}


def test_a_short_night_gets_every_fault_once_and_the_same_seed_the_same_night() -> None:
    plan = plan_faults(7, NIGHT, spacing=4)
    assert plan.kinds() == set(planned_kinds())
    assert plan == plan_faults(7, NIGHT, spacing=4)
    assert plan != plan_faults(8, NIGHT, spacing=4)
    for fault in plan.faults:  # never the first two images, nor the last
        assert 3 <= fault.image < NIGHT[fault.camera]


def test_a_long_night_has_a_fault_every_spacing_images() -> None:
    plan = plan_faults(1, {Camera.LATISS: 500, Camera.COMCAM: 100}, spacing=10)
    assert 55 <= len(plan.faults) <= 70  # ~one every 9-10 images
    assert plan.kinds() == set(planned_kinds())


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


def _file(image: TakenImage, header: bool = True, source: str = "live") -> SensorFile:
    return SensorFile(f"/a/{image.imageName}.fits", "c0ffee", header,
                      "" if header else "header not received", header_source=source)  # fmt: skip


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
        "taken": 2, "archived": 2, "verified": 2, "headerComplete": 2, "headerRebuilt": 0,
        "qcExpected": 1, "qcMeasured": 1, "qcCaughtUp": 0, "qcForwarded": 1, "lost": 0,
        "duplicated": 0,
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


def test_headers_rebuilt_and_qc_caught_up_are_counted_within_complete_and_measured() -> None:
    live, rebuilt, caught_up = _image(1), _image(2), _image(3)
    images = [live, rebuilt, caught_up]
    catalog = {(i.imageName, "R00_S00"): _file(i) for i in images}
    catalog[(rebuilt.imageName, "R00_S00")] = _file(rebuilt, source="EFD")
    names = [i.imageName for i in images]
    result = reconcile(
        1, {"LATISS": images}, catalog, verified={k: "c0ffee" for k in catalog},
        announced={}, qc_measured=names, qc_stages={}, forwarded=names, faults=[],
        qc_caught_up=[caught_up.imageName, "AT_O_20261121_000099"],  # one not taken
    )  # fmt: skip
    assert result.ok
    counts = result.counts["LATISS"]
    assert (counts["headerComplete"], counts["headerRebuilt"]) == (3, 1)
    assert (counts["qcMeasured"], counts["qcCaughtUp"]) == (3, 1)
    # A rebuilt header still incomplete is not counted rebuilt: it is incomplete.
    catalog[(rebuilt.imageName, "R00_S00")] = _file(rebuilt, header=False, source="EFD")
    again = reconcile(1, {"LATISS": images}, catalog, {k: "c0ffee" for k in catalog}, {},
                      names, {}, names, [])  # fmt: skip
    assert again.counts["all"]["headerRebuilt"] == 0
    assert not again.ok


def _header_account(image: TakenImage, faults: list[FaultWindow]) -> Reconciliation:
    catalog = {(image.imageName, "R00_S00"): _file(image, header=False)}
    return reconcile(1, {"LATISS": [image]}, catalog, {k: "c0ffee" for k in catalog}, {},
                     [], {}, [], faults)  # fmt: skip


def test_a_header_services_own_outage_never_explains_a_missing_header() -> None:
    image = _image(1, "BIAS", at=1000.0)
    for kind in (FaultKind.KILL_HEADER_SERVICE, FaultKind.HEADER_NEVER, FaultKind.KILL_EFD):
        result = _header_account(image, [FaultWindow(kind, "x", 1, 999.0, 1003.0)])
        assert result.unexplained, kind
        assert "no fault that destroyed it" in result.unexplained[0]


def test_a_broker_restart_explains_a_header_only_when_its_telemetry_was_unheard() -> None:
    """Its moments from 1.5 s before endReadout to 1 s after; a sample counts there if
    at most 5 s old: unheard only if the broker was down (its CSCs not yet back) from
    5 s before a moment to the moment, or a moment fell in an outage of 5 s or more
    (the camera says it as the broker comes back: seen in a soak, an endOfImageTelemetry
    stamped 6.6 s after its endReadout, the newest telemetry from before the outage)."""
    image = _image(1, "BIAS", at=1000.0)

    def broker(start: float, end: float) -> FaultWindow:
        return FaultWindow(FaultKind.BROKER_RESTART, "broker", 2, start, end)

    explained = [(990.0, 1000.0), (996.0, 1001.0), (993.0, 998.5), (997.0, 1003.0),
                 (999.9, 1010.1), (988.0, 995.0)]  # fmt: skip
    for start, end in explained:
        result = _header_account(image, [broker(start, end)])
        assert result.ok, (start, end)
        assert "broker-restart of broker" in result.lines[0]
    # Down for less than 5 s at the moments (a sample 5 s old or less heard at each,
    # the camera's events late by less); down before them, or after.
    for start, end in [(999.0, 1002.0), (1002.0, 1010.0), (980.0, 990.0), (985.0, 993.0)]:
        assert not _header_account(image, [broker(start, end)]).ok, (start, end)


def test_qc_not_measured_is_explained_only_by_its_jobs_own_reason() -> None:
    down, failed = _image(1, at=1000.0), _image(2, at=1000.0)
    images = [down, failed]
    catalog = {(i.imageName, "R00_S00"): _file(i) for i in images}
    outages = [FaultWindow(FaultKind.KILL_OCS_BATCH, "OCSBatch:0", 1, 1001.0, 1004.0),
               FaultWindow(FaultKind.BROKER_RESTART, "broker", 1, 999.0, 1006.0)]  # fmt: skip
    result = reconcile(
        1, {"LATISS": images}, catalog, verified={k: "c0ffee" for k in catalog}, announced={},
        qc_measured=[], qc_stages={failed.imageName: ("failed", "no sources")}, forwarded=[],
        faults=outages,
    )  # fmt: skip
    assert [line.split(":")[0] for line in result.lines] == [failed.imageName]
    assert "no sources" in result.lines[0]
    assert result.unexplained == [f"{down.imageName}: QC not measured (last stage: none)"]


def test_qc_measured_but_not_forwarded_is_explained_by_a_broker_restart_near_it() -> None:
    near, far = _image(1, at=1000.0), _image(2, at=2000.0)
    images = [near, far]
    catalog = {(i.imageName, "R00_S00"): _file(i) for i in images}
    names = [i.imageName for i in images]
    result = reconcile(
        1, {"LATISS": images}, catalog, verified={k: "c0ffee" for k in catalog}, announced={},
        qc_measured=names, qc_stages={}, forwarded=[],
        faults=[FaultWindow(FaultKind.BROKER_RESTART, "broker", 1, 998.0, 1003.0),
                FaultWindow(FaultKind.KILL_GATEWAY, "TelemetryGateway:0", 1, 1999.0, 2003.0)],
    )  # fmt: skip
    assert [line.split(":")[0] for line in result.lines] == [near.imageName]
    assert [line.split(":")[0] for line in result.unexplained] == [far.imageName]


def test_the_catalogs_header_source_reads_as_the_files_hdrsrc() -> None:
    rebuilt, live = SimpleNamespace(header_source="efd"), SimpleNamespace(header_source="live")
    assert catalogued_source(rebuilt) == "EFD"  # type: ignore[arg-type]
    assert catalogued_source(live) == "live"  # type: ignore[arg-type]
    assert catalogued_source(SimpleNamespace()) == ""  # type: ignore[arg-type]  # older catalog
