"""The simulated camera and its DAQ: ``Camera:1`` (LATISS), ``:2`` (ComCam), ``:3`` (LSSTCam).

``takeImages`` runs each exposure in real time and publishes the ICD §5 events in
order: ``startIntegration`` → (exposure) → ``startReadout`` → (readout: pixels are
synthesised into the DAQ buffer meanwhile) → ``endReadout`` → ``endOfImageTelemetry``.
``endReadout`` is published only once every sensor's pixels are in the buffer, so a
reader that starts on it never waits.

Each image taken is recorded in ``Camera-{index}-images.jsonl`` in the state directory
(:mod:`sim.daq.journal`) before its ``endReadout``.

The DAQ server starts with the process, whatever the CSC's state: images already in
the buffer stay readable for catch-up while the camera is disabled. Its address is the
retained ``daqAvailable`` event; which CCD is in each slot, the retained
``focalPlaneSummaryInfo`` (:mod:`sim.daq.hardware`).

The camera sees the sky where its telescope (``Telescope:{index}``) points: it follows
the retained ``target`` and ``filter`` events and synthesises each image's stars at the
pointing, in the band and through the airmass in force when the exposure starts (the
telescope's first target, in r, until it hears otherwise). For each new field it writes
the sky's catalog, in every band, as the reference catalog ``image-qc`` measures zero
points against (``reference_catalog``; :mod:`sim.daq.reference`).
"""

from __future__ import annotations

import asyncio
import math
import socket
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

from cscs.camera.events import (
    DAQ_AVAILABLE,
    END_OF_IMAGE_TELEMETRY,
    END_READOUT,
    FOCAL_PLANE_SUMMARY_INFO,
    LATEST_IMAGE,
    START_INTEGRATION,
    START_READOUT,
    DaqAvailable,
    EndOfImageTelemetry,
    EndReadout,
    LatestImage,
    StartIntegration,
    StartReadout,
)
from cscs.camera.geometry import Camera, camera_for_index
from cscs.camera.observatory import pointing as sky_position
from cscs.camera.sky import Pointing
from cscs.core.commands import CommandBinding, CommandContext, bind
from cscs.core.csc import BaseCsc
from cscs.core.errors import ExpectedError
from cscs.core.remote import Parsed
from cscs.core.schema import NoParams
from cscs.core.tai import current_tai
from cscs.core.topics import CscAddress
from sim.daq.endpoints import announced_endpoint
from sim.daq.exposure import CameraConfig, check_exposure, parse_key_value_map
from sim.daq.faults import READOUT_FAULTS, FaultPlan, FaultRule
from sim.daq.hardware import focal_plane_hardware
from sim.daq.interface import (
    CLEAR_FAULTS,
    DAQ_STORE,
    INJECT_FAULT,
    INTERFACE,
    TAKE_IMAGES,
    DaqStoreStatus,
    TakeImagesParams,
)
from sim.daq.journal import TakenImage, journal_path, record_taken
from sim.daq.pixels import DEFAULT_POINTING, Scene, synthesize_sensor
from sim.daq.reference import field_radius, write_field_shards
from sim.daq.sequence import ImageSequencer
from sim.daq.server import DaqServer
from sim.daq.store import DaqStore, SensorData
from sim.ocs.telescope import FILTER, TARGET, FilterState, Target
from sim.ocs.weather import WEATHER, WeatherValues

__all__ = ["CameraConfig", "CameraCsc"]

_END_EVENT_MARGIN = 30.0  # s consumers keep waiting past the expected end of an image
_STORE_TELEMETRY_INTERVAL = 5.0


class CameraCsc(BaseCsc[CameraConfig]):
    """A camera with its DAQ buffer and pixel server."""

    interface = INTERFACE
    config_schema = CameraConfig
    default_config_dir: ClassVar[Path | None] = Path(__file__).parent / "config"

    def __init__(self, index: int = 1, **kwargs: Any) -> None:
        self.camera: Camera = camera_for_index(index)
        super().__init__(index, **kwargs)
        self.faults = FaultPlan()
        self.store = DaqStore(self.config.store_bytes, self._evicted)
        self.sequencer = ImageSequencer(
            self.state_dir / f"Camera-{index}-sequence.json", self.camera.code
        )
        self.sensors = [d.name for d in self.camera.detectors]
        self.server: DaqServer | None = None
        self._synthesis_threads = self.config.synthesis_threads
        self._executor = ThreadPoolExecutor(self._synthesis_threads, "synthesis")
        self._exposing = asyncio.Lock()
        self.telescope_address = CscAddress("Telescope", index, self.address.prefix)
        self.pointing = DEFAULT_POINTING  # for the next exposure to start
        self.weather_address = CscAddress("Weather", 0, self.address.prefix)
        self.seeing: float | None = None  # the site's, once heard; else the configured
        self.band = "r"  # of the filter in the beam
        self._fields_written: set[Pointing] = set()  # reference shards written for these
        self._reference_writer = ThreadPoolExecutor(1, "reference-catalog")
        self.journal = journal_path(self.state_dir, index)  # what it took (sim.daq.journal)
        self._missing: dict[str, tuple[str, ...]] = {}  # sensors not read out, by image

    def component_commands(self) -> Sequence[CommandBinding[Any]]:
        return [
            bind(TAKE_IMAGES, self.do_take_images),
            bind(INJECT_FAULT, self.do_inject_fault),
            bind(CLEAR_FAULTS, self.do_clear_faults),
        ]

    # ---- life ------------------------------------------------------------------------

    async def __aenter__(self) -> CameraCsc:
        # On its own thread (ADR 0011): no DAQ client can stall this loop. A failure of
        # its serving loop is this CSC's (errorCode, FAULT); its lines are this CSC's log.
        self.server = DaqServer(
            self.store,
            [self.settings.daq_bind],
            self.faults,
            on_failure=lambda exc: self.report_failure("daq-server", exc),
            log=self.log,
        )
        await self.server.__aenter__()
        try:
            await super().__aenter__()
            await self.publish_event(
                DAQ_AVAILABLE,
                DaqAvailable(
                    url=",".join(self._announced(e) for e in self.server.endpoints),
                    capacityBytes=self.store.capacity_bytes,
                ),
            )
            await self.publish_event(FOCAL_PLANE_SUMMARY_INFO, focal_plane_hardware(self.camera))
            await self.follow(self.telescope_address, TARGET, self._on_target)
            await self.follow(self.telescope_address, FILTER, self._on_filter)
            await self.follow(self.weather_address, WEATHER, self._on_weather)
            self.keep_running(self._report_store, "daq-store")
        except BaseException:
            await self.close()
            raise
        self.log.info("DAQ serving", endpoints=self.server.endpoints)
        return self

    def _announced(self, endpoint: str) -> str:
        return announced_endpoint(endpoint, self.settings.daq_advertise, socket.gethostname())

    async def close(self) -> None:
        await super().close()
        if self.server is not None:
            await self.server.close()
            self.server = None
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._reference_writer.shutdown(wait=True, cancel_futures=True)

    async def configure(self, config: CameraConfig) -> None:
        try:
            sensors = [self.camera.detector(name).name for name in config.sensors]
        except ValueError as exc:
            raise ExpectedError(f"sensors: {exc}") from None
        for raft in config.rafts:
            in_raft = [d.name for d in self.camera.detectors if d.raft == raft]
            if not in_raft:
                rafts = sorted({d.raft for d in self.camera.detectors})
                raise ExpectedError(f"rafts: {self.camera.instrument} has no raft {raft!r} "
                                    f"(it has {', '.join(rafts[:25])})")  # fmt: skip
            sensors += [name for name in in_raft if name not in sensors]
        sensors = sensors or [d.name for d in self.camera.detectors]
        image_bytes = DaqStore.size_of_image(len(sensors))
        if image_bytes > config.store_bytes:
            raise ExpectedError(
                f"one {self.camera.instrument} image of {len(sensors)} sensors is "
                f"{image_bytes / 1e9:.1f} GB, more than store_bytes "
                f"({config.store_bytes / 1e9:.1f} GB): raise store_bytes or list fewer sensors"
            )
        self.store.set_capacity(config.store_bytes)
        self._fields_written.clear()  # the directory or the sky may be another now
        self.sensors = sensors
        self.faults.clear()
        for rule in config.faults:
            self.faults.add(rule)
        if config.synthesis_threads != self._synthesis_threads:
            self._executor.shutdown(wait=False)
            self._executor = ThreadPoolExecutor(config.synthesis_threads, "synthesis")
            self._synthesis_threads = config.synthesis_threads

    def _on_weather(self, event: Parsed[WeatherValues]) -> None:
        """The site's seeing makes the stars' width (so QC has something to measure
        through the night); a value no sky has is refused."""
        seeing = event.data.seeing
        if not (math.isfinite(seeing) and 0.2 <= seeing <= 10.0):
            self.log.warning("ignored a seeing no sky has", seeing=seeing)
            return
        self.seeing = seeing

    def _on_filter(self, event: Parsed[FilterState]) -> None:
        """The band of the filter in the beam sets the stars' brightness; a band the
        sky does not know (a grating alone) is seen as r."""
        band = event.data.band
        if len(band) > 16 or not band.isprintable():
            self.log.warning("ignored a filter band no filter has", band=band[:32])
            return
        self.band = band or "r"

    def _on_target(self, event: Parsed[Target]) -> None:
        """The telescope's new target: where the next exposures look. Its schema holds
        any float, so a place that is not on the sky is refused here."""
        target = event.data
        ra, dec, rotation = target.ra, target.dec, target.rotatorAngle
        if not (all(map(math.isfinite, (ra, rotation))) and -90.0 <= dec <= 90.0):
            self.log.warning("ignored a target not on the sky", sender=str(event.address),
                             ra=ra, dec=dec, rotation=rotation)  # fmt: skip
            return
        pointing = Pointing(ra % 360.0, dec, rotation)
        if pointing != self.pointing:
            self.pointing = pointing
            self.log.info("pointing for the next exposures", ra=pointing.ra, dec=pointing.dec,
                          rotation=pointing.rotation, object=target.object)  # fmt: skip

    def _evicted(self, image: str, reason: str) -> None:
        self.log.warning("DAQ buffer evicted an image", image=image, reason=reason)

    async def _report_store(self) -> None:
        while True:
            await self._publish_store_status()
            await asyncio.sleep(_STORE_TELEMETRY_INTERVAL)

    async def _publish_store_status(self) -> None:
        images = self.store.images()
        await self.publish_telemetry(
            DAQ_STORE,
            DaqStoreStatus(
                images=len(images),
                usedBytes=self.store.used_bytes,
                capacityBytes=self.store.capacity_bytes,
                oldestImage=images[0].name if images else "",
                newestImage=images[-1].name if images else "",
            ),
        )

    # ---- commands --------------------------------------------------------------------

    async def do_inject_fault(self, params: FaultRule, context: CommandContext) -> str:
        self.faults.add(params)
        return f"{params.kind.value} armed for image {params.image} sensor {params.sensor}"

    async def do_clear_faults(self, params: NoParams, context: CommandContext) -> None:
        self.faults.clear()

    async def do_take_images(self, params: TakeImagesParams, context: CommandContext) -> str:
        check_exposure(params)
        keys, values = parse_key_value_map(params.keyValueMap)
        if self._exposing.locked():
            raise ExpectedError("the camera is busy with another takeImages; try again after it")
        async with self._exposing:
            per_image = params.expTime + self.config.readout_time
            await context.in_progress(
                params.numImages * (per_image + 5.0) + 10.0,
                f"taking {params.numImages} x {params.expTime:g} s {params.imageType}",
            )
            names = []
            for number in range(1, params.numImages + 1):
                names.append(await self._take_image(params, number, keys, values))
        span = names[0] if len(names) == 1 else f"{names[0]} … {names[-1]}"
        return f"took {len(names)} image(s): {span}"

    async def _take_image(
        self, params: TakeImagesParams, number: int, keys: str, values: str
    ) -> str:
        start = current_tai()
        pointing, band = self.pointing, self.band  # as the exposure starts
        name = self.sequencer.next(start)
        image = str(name)
        await self.publish_event(
            START_INTEGRATION,
            StartIntegration(
                imageName=image,
                imageIndex=number,
                imagesInSequence=params.numImages,
                imageSource=self.camera.code,
                imageController=name.controller,
                imageDate=name.day_obs,
                imageNumber=name.seq_num,
                groupId=params.groupId,
                imageType=params.imageType,
                exposureTime=params.expTime,
                timestampAcquisitionStart=start,
                timeout=params.expTime + self.config.readout_time + _END_EVENT_MARGIN,
                additionalKeys=keys,
                additionalValues=values,
            ),
        )
        if params.imageType in ("OBJECT", "ENGTEST"):  # what sees the sky
            self._write_reference(pointing)
        loop = asyncio.get_running_loop()
        airmass, _ = await asyncio.gather(
            loop.run_in_executor(self._executor, self._airmass, pointing, start),
            asyncio.sleep(params.expTime),
        )
        shutter_closed = current_tai()
        await self.publish_event(
            START_READOUT, StartReadout(imageName=image, timestampStartOfReadout=shutter_closed)
        )
        dark_time = shutter_closed - start
        metadata = {
            "camera": self.camera.instrument,
            "imageType": params.imageType,
            "groupId": params.groupId,
            "exposureTime": params.expTime,
            "darkTime": dark_time,
            "dateObs": start,
            "dateEnd": shutter_closed,
            "dayObs": name.day_obs,
            "seqNum": name.seq_num,
            "additionalKeys": keys,
            "additionalValues": values,
        }
        self.store.begin_image(image, self.sensors, metadata)
        scene = Scene(
            image_type=params.imageType,
            exposure_time=params.expTime if params.shutter else 0.0,
            dark_time=dark_time,
            seed=zlib.crc32(f"{self.config.seed}/{image}".encode()),
            camera=self.camera,
            pointing=pointing,
            band=band,
            airmass=airmass,
            sky=(
                self.config.sky
                if self.seeing is None
                else self.config.sky.model_copy(update={"seeing_fwhm": self.seeing})
            ),
        )
        await asyncio.gather(asyncio.sleep(self.config.readout_time), self._read_out(image, scene))
        self.store.end_image(image)
        missing = self._missing.pop(image, ())
        taken = TakenImage(image, params.imageType, tuple(self.sensors), missing, current_tai())
        await asyncio.to_thread(record_taken, self.journal, taken)
        await self.publish_event(
            END_READOUT,
            EndReadout(
                imageName=image,
                imageIndex=number,
                imagesInSequence=params.numImages,
                requestedExposureTime=params.expTime,
                timestampEndOfReadout=current_tai(),
                sensors=",".join(self.sensors),
            ),
        )
        await self.publish_event(LATEST_IMAGE, LatestImage(imageName=image, description="read out"))
        await self.publish_event(
            END_OF_IMAGE_TELEMETRY,
            EndOfImageTelemetry(
                imageName=image,
                timestampDateObs=start,
                timestampDateEnd=shutter_closed,
                exposureTime=params.expTime,
                darkTime=dark_time,
                measuredShutterOpenTime=params.expTime if params.shutter else 0.0,
            ),
        )
        await self._publish_store_status()
        return image

    def _airmass(self, pointing: Pointing, start: float) -> float:
        """At the exposure's start (the zenith's, 1, below the horizon: the simulator
        does not refuse a pointing)."""
        airmass = sky_position(pointing.ra, pointing.dec, start).airmass
        return airmass if math.isfinite(airmass) else 1.0

    def _write_reference(self, pointing: Pointing) -> None:
        """The field's cells of the sky catalog as reference shards, in the background
        (a wide field takes a second or two: no exposure waits for it)."""
        directory = self.config.reference_catalog
        if directory == "none" or pointing in self._fields_written:
            return
        self._fields_written.add(pointing)
        root = Path(directory) if directory else self.state_dir / "refcat"
        sky = self.config.sky

        def write() -> None:
            try:
                write_field_shards(root, pointing.ra, pointing.dec, field_radius(self.camera),
                                   sky.star_counts, sky.catalog_seed)  # fmt: skip
            except Exception as exc:  # a background writer: logged, never silent
                self._fields_written.discard(pointing)
                self.log.warning("reference catalog not written", directory=str(root),
                                 error=f"{type(exc).__name__}: {exc}")  # fmt: skip

        self._reference_writer.submit(write)

    async def _read_out(self, image: str, scene: Scene) -> None:
        """Synthesise every sensor into the DAQ buffer (worker threads: numpy releases
        the GIL, so the bus stays responsive)."""
        loop = asyncio.get_running_loop()
        electronics = self.config.electronics

        def synthesize(sensor: str) -> SensorData:
            detector = self.camera.detector(sensor)
            return SensorData.from_segments(synthesize_sensor(electronics, scene, detector))

        pending = {}
        for sensor in self.sensors:
            if self.faults.take(image, sensor, READOUT_FAULTS) is not None:
                self.log.warning("injecting fault: sensor not read out", image=image, sensor=sensor)
                self.store.mark_missing(image, sensor)
                self._missing[image] = (*self._missing.get(image, ()), sensor)
                continue
            pending[sensor] = loop.run_in_executor(self._executor, synthesize, sensor)
        for sensor, future in pending.items():
            self.store.put_sensor(image, sensor, await future)
