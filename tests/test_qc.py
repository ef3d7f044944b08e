"""The batch pipelines' numbers against the simulator's known inputs: what the camera was
told to make is what image-qc and the calibration products must measure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cscs.camera.geometry import SEGMENTS, Camera
from cscs.camera.sky import Pointing, detector_wcs
from cscs.ocs_batch.combine import CalibrationInput, clipped_mean, combine_detector
from cscs.ocs_batch.photometry import Reference
from cscs.ocs_batch.qc import image_summary, measure_detector
from cscs.ocs_batch.refcat import detector_reference, load_reference_catalog
from cscs.ocs_batch.tasks import CalibrationTask, QcTask, combine_task, publish_staged, qc_task
from sim.daq.pixels import ElectronicsModel, Scene, SkyModel, amplifier, synthesize_sensor
from sim.daq.reference import field_radius, write_field_shards
from sim.testkit import SimulatedExposure, simulated_archive

MODEL = ElectronicsModel()
FIELD = Pointing(ra=10.0, dec=-30.0, rotation=0.0)


def exposure(camera: Camera, sensor: str, kind: str, seconds: float, seed: int,
             seeing: float = 0.8) -> list[np.ndarray]:  # fmt: skip
    scene = Scene(kind, seconds, seconds, seed, camera=camera, pointing=FIELD,
                  sky=SkyModel(seeing_fwhm=seeing))  # fmt: skip
    return synthesize_sensor(MODEL, scene, camera.detector(sensor))


@pytest.mark.parametrize(
    ("camera", "sensor", "seeing"),
    [(Camera.COMCAM, "R22_S11", 0.6), (Camera.COMCAM, "R22_S00", 1.0),
     (Camera.COMCAM, "R22_S02", 1.5), (Camera.LATISS, "R00_S00", 0.9)],
)  # fmt: skip
def test_image_qc_measures_what_the_simulator_was_told(
    camera: Camera, sensor: str, seeing: float
) -> None:
    detector = camera.detector(sensor)
    qc = measure_detector(sensor, exposure(camera, sensor, "OBJECT", 30.0, 7, seeing),
                          camera.pixel_scale)  # fmt: skip
    amps = [amplifier(MODEL, detector, segment) for segment in SEGMENTS]
    for measured, truth in zip(qc.amplifiers, amps, strict=True):
        assert measured.biasLevel == pytest.approx(truth.bias, rel=0.02)
        assert measured.readNoise == pytest.approx(truth.read_noise_adu, rel=0.02)
    # Sky: sky rate and dark current times 30 s, in each amplifier's ADU (its gain).
    electrons = (SkyModel().sky_rate + MODEL.dark_current) * 30.0
    assert qc.skyMean == pytest.approx(np.mean([electrons / a.gain for a in amps]), rel=0.02)
    assert qc.psfFwhm == pytest.approx(seeing, rel=0.10)
    assert abs(qc.psfE1 or 1) < 0.02
    assert abs(qc.psfE2 or 1) < 0.02
    assert qc.nPsfStars >= 20
    assert qc.nSources >= qc.nPsfStars


def reference_on(
    directory: Path, camera: Camera, sensor: str, band: str, seconds: float,
    wcs_error: float = 0.0,
) -> Reference:  # fmt: skip
    """The sky's catalog written as reference shards and read back for one detector
    through its header's WCS, as a batch task does; ``wcs_error``: arcsec of Dec by which
    the header is wrong."""
    sky = SkyModel()
    write_field_shards(directory, FIELD.ra, FIELD.dec, field_radius(camera), sky.star_counts,
                       sky.catalog_seed)  # fmt: skip
    catalog = load_reference_catalog(directory)
    assert catalog is not None
    header: dict[str, object] = dict(
        detector_wcs(camera, camera.detector(sensor), FIELD).keywords()
    )
    header["CRVAL2"] = float(header["CRVAL2"]) + wcs_error / 3600.0  # type: ignore[arg-type]
    header.update(FILTBAND=band, EXPTIME=seconds)
    reference = detector_reference(header, catalog, camera.pixel_scale, match_radius=2.0)
    assert reference is not None
    return reference


ZERO_POINT_CASES = [
    # camera, sensor, band, airmass, seeing, exposure time
    (Camera.COMCAM, "R22_S11", "r", 1.0, 0.8, 30.0),
    (Camera.COMCAM, "R22_S02", "g", 1.6, 1.4, 15.0),
    (Camera.COMCAM, "R22_S20", "u", 1.2, 0.7, 60.0),
    (Camera.LATISS, "R00_S00", "i", 1.3, 0.9, 30.0),
]


@pytest.mark.parametrize(("camera", "sensor", "band", "airmass", "seeing", "seconds"),
                         ZERO_POINT_CASES)  # fmt: skip
def test_the_zero_point_is_the_configured_one_through_the_airmass(
    tmp_path: Path, camera: Camera, sensor: str, band: str, airmass: float, seeing: float,
    seconds: float,
) -> None:  # fmt: skip
    """Per amplifier (each its own gain) within 0.05 mag of the configured zero point of
    the band, less the extinction at this airmass, in ADU."""
    sky = SkyModel(seeing_fwhm=seeing)
    scene = Scene("OBJECT", seconds, seconds, 11, camera=camera, pointing=FIELD, sky=sky,
                  band=band, airmass=airmass)  # fmt: skip
    detector = camera.detector(sensor)
    reference = reference_on(tmp_path, camera, sensor, band, seconds)
    qc = measure_detector(sensor, synthesize_sensor(MODEL, scene, detector), camera.pixel_scale,
                          reference)  # fmt: skip
    configured = sky.zero_points[band] - sky.extinction[band] * (airmass - 1.0)
    measured = 0
    for segment, amp in zip(SEGMENTS, qc.amplifiers, strict=True):
        if amp.zeroPoint is not None:
            gain = amplifier(MODEL, detector, segment).gain
            assert amp.zeroPoint == pytest.approx(configured - 2.5 * np.log10(gain), abs=0.05)
            measured += 1
    assert measured >= 8
    assert qc.nZpStars >= 40
    assert qc.zeroPoint is not None


@pytest.mark.parametrize("case", [ZERO_POINT_CASES[1], ZERO_POINT_CASES[3]])
def test_with_one_gain_the_detector_zero_point_is_the_configured_one(
    tmp_path: Path, case: tuple[Camera, str, str, float, float, float]
) -> None:
    camera, sensor, band, airmass, seeing, seconds = case
    model = ElectronicsModel(gain_spread=0.0)
    sky = SkyModel(seeing_fwhm=seeing)
    scene = Scene("OBJECT", seconds, seconds, 12, camera=camera, pointing=FIELD, sky=sky,
                  band=band, airmass=airmass)  # fmt: skip
    segments = synthesize_sensor(model, scene, camera.detector(sensor))
    reference = reference_on(tmp_path, camera, sensor, band, seconds)
    qc = measure_detector(sensor, segments, camera.pixel_scale, reference)
    assert qc.zeroPoint == pytest.approx(
        sky.zero_point(band, airmass) - 2.5 * np.log10(model.gain), abs=0.05
    )
    summary = image_summary("CC_O_20261121_000001", camera.instrument, [qc.as_json()])
    assert summary["zeroPoint"] == qc.zeroPoint


def test_a_wrong_wcs_gives_no_zero_point_rather_than_a_wrong_one(tmp_path: Path) -> None:
    camera, sensor = Camera.COMCAM, "R22_S11"
    scene = Scene("OBJECT", 30.0, 30.0, 13, camera=camera, pointing=FIELD)
    segments = synthesize_sensor(MODEL, scene, camera.detector(sensor))
    reference = reference_on(tmp_path, camera, sensor, "r", 30.0, wcs_error=30.0)
    qc = measure_detector(sensor, segments, camera.pixel_scale, reference)
    assert qc.psfFwhm is not None  # every other metric is still measured
    assert qc.zeroPoint is None
    assert all(amp.zeroPoint is None for amp in qc.amplifiers)


def test_a_bias_has_a_bias_level_and_no_seeing() -> None:
    qc = measure_detector("R22_S11", exposure(Camera.COMCAM, "R22_S11", "BIAS", 0.0, 3), 0.2)
    assert qc.psfFwhm is None
    assert qc.nPsfStars == 0
    assert qc.ellipticity is None
    assert qc.skyMean == pytest.approx(0.0, abs=0.1)
    summary = image_summary("CC_O_20261121_000001", "LSSTComCam", [qc.as_json()])
    assert summary["psfFwhm"] is None
    assert summary["nSensors"] == 1


def test_master_bias_noise_falls_as_one_over_root_n() -> None:
    inputs = [CalibrationInput.of(exposure(Camera.COMCAM, "R22_S11", "BIAS", 0.0, s), 0.0)
              for s in range(5)]  # fmt: skip
    noise = {}
    for n in (2, 3, 5):  # the plain mean, then the clipped mean at the smallest count and more
        master = combine_detector("bias", inputs[:n])
        noise[n] = float(master[200:1800, 100:4000].std())
    single = float(np.mean([amplifier(MODEL, Camera.COMCAM.detector("R22_S11"), s).read_noise_adu
                            for s in SEGMENTS]))  # fmt: skip
    assert noise[2] == pytest.approx(single / np.sqrt(2), rel=0.05)
    assert noise[3] == pytest.approx(single / np.sqrt(3), rel=0.05)  # clipping takes no clean value
    assert noise[5] / noise[2] == pytest.approx(np.sqrt(2 / 5), rel=0.05)


def test_master_flat_is_normalised_and_master_dark_is_per_second() -> None:
    flats = [CalibrationInput.of(exposure(Camera.COMCAM, "R22_S11", "FLAT", 5.0, s), 5.0)
             for s in (1, 2, 3)]  # fmt: skip
    flat = combine_detector("flat", flats)
    assert float(np.median(flat)) == pytest.approx(1.0, abs=1e-6)
    # The simulated vignetting: 8 % from the centre to the corners.
    assert float(flat[1990:2010, 2026:2046].mean()) / float(flat[:20, :20].mean()) > 1.06
    darks = [CalibrationInput.of(exposure(Camera.COMCAM, "R22_S11", "DARK", 300.0, s), 300.0)
             for s in (1, 2, 3)]  # fmt: skip
    dark = combine_detector("dark", darks)
    gains = [amplifier(MODEL, Camera.COMCAM.detector("R22_S11"), s).gain for s in SEGMENTS]
    assert float(np.median(dark)) == pytest.approx(MODEL.dark_current / np.mean(gains), rel=0.1)
    with pytest.raises(ValueError, match="no dark time"):
        combine_detector("dark", [CalibrationInput(darks[0].read, 0.0)])


def test_the_tasks_read_archived_files_and_write_products_with_provenance(tmp_path: Path) -> None:
    science = SimulatedExposure("OBJECT", 15.0, seeing=1.2, band="z", pointing=FIELD, airmass=1.4)
    exposures = [SimulatedExposure("BIAS")] * 2 + [science]
    refcat = tmp_path / "refcat"
    model = ElectronicsModel(gain_spread=0.0)
    rows = simulated_archive(tmp_path, Camera.COMCAM, exposures, ["R22_S11"], electronics=model,
                             reference_catalog=refcat)  # fmt: skip
    metrics = qc_task(QcTask(rows[2].image_name, "R22_S11", rows[2].path, 0.2, str(refcat)))
    assert metrics["psfFwhm"] == pytest.approx(1.2, rel=0.1)
    # The header's WCS and FILTBAND, the shards the simulator wrote, the band's zero point.
    truth = SkyModel().zero_point("z", 1.4) - 2.5 * np.log10(model.gain)
    assert metrics["zeroPoint"] == pytest.approx(truth, abs=0.05)
    no_catalog = qc_task(QcTask(rows[2].image_name, "R22_S11", rows[2].path, 0.2))
    assert no_catalog["zeroPoint"] is None
    (refcat / "broken.fits").write_bytes(b"SIMPLE  = T" + b" " * 5000)
    broken = qc_task(QcTask(rows[2].image_name, "R22_S11", rows[2].path, 0.2, str(refcat)))
    assert broken["zeroPoint"] is None
    assert "broken.fits" in broken["warning"]
    assert broken["psfFwhm"] == metrics["psfFwhm"]  # the rest is measured all the same
    assert metrics["imageType"] == "OBJECT"
    assert metrics["exposureTime"] == 15.0
    output = tmp_path / "calib" / "bias_R22_S11.fits"
    sums = tuple(f"{r.checksum_algorithm}:{r.checksum}" for r in rows[:2])
    task = CalibrationTask("bias", "R22_S11", (rows[0].path, rows[1].path), sums, str(output),
                           "job-1", "0.1.0", '{"nsigma": 4}')  # fmt: skip
    result = combine_task(task)
    assert not output.exists()  # staged until the whole job succeeds
    publish_staged([result["output"]])
    import fitsio

    header = fitsio.read_header(str(output), ext=0)
    assert header["NCOMBINE"] == 2
    assert header["CALIBJOB"] == "job-1"
    assert header["INSUM000"] == f"adler32:{rows[0].checksum}"  # the archive's default
    assert header["INPUT001"] == Path(rows[1].path).name
    assert fitsio.read(str(output), ext=1).shape == (4000, 4072)


@pytest.mark.parametrize("count", [3, 4, 6])
def test_the_clipped_mean_drops_cosmic_rays_and_keeps_clean_noise(count: int) -> None:
    rng = np.random.default_rng(count)
    stack = rng.standard_normal((count, 400, 400)).astype(np.float32)
    stack[0, 10, 10] = 500.0  # a cosmic ray
    combined = clipped_mean(stack)
    assert abs(float(combined[10, 10])) < 3.0
    assert float(combined.std()) == pytest.approx(1 / np.sqrt(count), rel=0.03)


def test_a_long_job_configuration_fits_its_cards_without_the_long_string_convention() -> None:
    """A job's configuration (a Butler query's bind values make it long, and a value may
    hold a quote) is kept whole in CONFIG00… cards that each fit 80 characters: no
    CONTINUE card, which fitsverify flags (a master bias of the demo night was refused)."""
    from astropy.io import fits

    from cscs.ocs_batch.tasks import _provenance

    config = {"bind": {"night_group": "demo-20261207T235709-bias", "who": "O'Brien's " * 6}}
    task = CalibrationTask("bias", "R22_S11", ("a.fits",), ("adler32:00000001",), "out.fits",
                           "job-1", "0.1.0", json.dumps(config))  # fmt: skip
    header = fits.Header(_provenance(task, Path("bias_R22_S11.fits")))
    text = header.tostring()
    assert "CONTINUE" not in text
    pieces = [header[f"CONFIG{n:02d}"] for n in range(10) if f"CONFIG{n:02d}" in header]
    assert json.loads("".join(pieces)) == config
