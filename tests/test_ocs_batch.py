"""OCSBatch:0 on a real broker (embedded amqtt and Mosquitto) with a real Dask cluster of
local worker processes, over an archive of simulated raws.

One cluster serves the module, as a site's scheduler serves OCSBatch (``scheduler:`` its
address): starting one per test cost more than most tests. Each test must leave it as
it found it — no Dask task, no client, every worker — and the ``cluster`` fixture fails
the test that does not. The CSC's own ``scheduler: local`` cluster is what the test of
``cscs run OCSBatch`` killed mid-job runs on.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import math
import os
import signal
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from distributed import LocalCluster, Scheduler
from distributed.core import Status
from distributed.diagnostics.plugin import SchedulerPlugin
from lsst.daf.butler import Timespan

from cscs.camera.geometry import Camera
from cscs.camera.observatory import astropy_time
from cscs.camera.sky import Pointing
from cscs.catalog import ArchivedFile, BatchRecords, Catalog, JobRecord, sqlite_url
from cscs.core.broker import EmbeddedBroker
from cscs.core.protocol import Ack, AckCode, decode_json_object, encode
from cscs.core.remote import EventStream, Remote
from cscs.core.settings import Settings
from cscs.core.states import State
from cscs.core.tai import current_tai
from cscs.core.testing import CscHarness, enabled_csc, make_csc
from cscs.core.topics import CscAddress
from cscs.core.transport import Subscription
from cscs.ocs.jobs import jobs_table, show_jobs
from cscs.ocs.runner import run_script
from cscs.ocs.script import parse_script
from cscs.ocs_batch.csc import OcsBatchCsc
from cscs.repository import Repository, detector_id, exposure_id
from sim.daq.pixels import ElectronicsModel, SkyModel
from sim.testkit import SimulatedExposure, register_in_repository, simulated_archive

pytestmark = pytest.mark.timeout(240)

FIELD = Pointing(ra=10.0, dec=-30.0, rotation=0.0)
OBJECTS = [
    SimulatedExposure("OBJECT", 15.0, seeing=1.1, band="g", pointing=FIELD, airmass=1.2),
    SimulatedExposure("OBJECT", 15.0, seeing=0.7, band="g", pointing=FIELD, airmass=1.2),
]
BIASES = [SimulatedExposure("BIAS")] * 3
WORKERS = 2  # of the module's cluster, as OCSBatch's own by default
COMCAM = "instrument = 'LSSTComCam'"


def archived(
    root: Path, camera: Camera, exposures: list[SimulatedExposure], sensors: list[str],
    **options: Any,
) -> list[ArchivedFile]:  # fmt: skip
    """Simulated raws in the archive, registered in its repository as the OODS would."""
    rows = simulated_archive(root, camera, exposures, sensors, **options)
    register_in_repository(root, rows)
    return rows


class _Watch(SchedulerPlugin):  # type: ignore[misc]
    """On the scheduler's thread, after each change of its tasks, workers or clients:
    what a test would leave behind ("" nothing), sent to the tests' loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, heard: Callable[[str, bool], None]) -> None:
        self._loop, self._heard = loop, heard
        self._scheduler: Scheduler | None = None

    async def start(self, scheduler: Scheduler) -> None:
        self._scheduler = scheduler
        self.report()

    def transition(self, *args: Any, **kwargs: Any) -> None:
        self.report()

    def add_worker(self, scheduler: Scheduler, worker: str) -> None:
        self.report()

    def remove_worker(self, scheduler: Scheduler, worker: str, **kwargs: Any) -> None:
        self.report()

    def add_client(self, scheduler: Scheduler, client: str) -> None:
        self.report()

    def remove_client(self, scheduler: Scheduler, client: str) -> None:
        self.report()

    def report(self, asked: bool = False) -> None:
        """``asked``: the report a test asked for (after all the scheduler has done)."""
        scheduler = self._scheduler
        if scheduler is None:
            return
        left = []
        # A task being forgotten is still listed while the plugins hear of it.
        tasks = sum(1 for task in scheduler.tasks.values() if task.state != "forgotten")
        if tasks:
            left.append(f"{tasks} Dask tasks")
        clients = [c for c in scheduler.clients if c != "fire-and-forget"]
        if clients:
            left.append(f"clients {clients}")
        if len(scheduler.workers) != WORKERS:
            left.append(f"{len(scheduler.workers)} of {WORKERS} workers")
        with contextlib.suppress(RuntimeError):  # the tests' loop has closed
            self._loop.call_soon_threadsafe(self._heard, "; ".join(left), asked)


class SharedCluster:
    """The module's Dask cluster: its scheduler in a thread of its own (with its own
    event loop, so that none of its asyncio tasks is counted against a test), its
    workers local processes under nannies."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.watch = _Watch(loop, self._heard)
        self.left = "not started"
        self._changed = asyncio.Event()
        self._answered = asyncio.Event()
        self.cluster: LocalCluster | None = None

    @property
    def address(self) -> str:
        assert self.cluster is not None
        return str(self.cluster.scheduler_address)

    def _heard(self, left: str, asked: bool) -> None:
        self.left = left
        self._changed.set()
        if asked:
            self._answered.set()

    async def settled(self, timeout: float = 60.0) -> str:
        """Wait for the cluster to be clean; what it still holds after ``timeout`` ("":
        nothing). Asks the scheduler first, so that what the test did just before is
        seen, not only what was last heard."""
        assert self.cluster is not None
        self._answered.clear()
        self.cluster.loop.add_callback(self.watch.report, True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._answered.wait()
                while self.left:
                    self._changed.clear()
                    await self._changed.wait()
        return self.left


@pytest_asyncio.fixture(scope="module")
async def _shared_cluster() -> AsyncIterator[SharedCluster]:
    shared = SharedCluster(asyncio.get_running_loop())
    # Made in a thread: a LocalCluster that is not asynchronous runs its own loop there.
    shared.cluster = site = await asyncio.to_thread(
        LocalCluster, n_workers=WORKERS, threads_per_worker=1, processes=True,
        host="127.0.0.1", dashboard_address="127.0.0.1:0", silence_logs=40,
        scheduler_kwargs={"plugins": [shared.watch]},
    )  # fmt: skip
    try:
        yield shared
    finally:
        await asyncio.to_thread(site.close)


@pytest_asyncio.fixture
async def cluster(_shared_cluster: SharedCluster) -> AsyncIterator[SharedCluster]:
    """The module's cluster, clean when the test starts; the test fails if it leaves
    it otherwise (a killed worker must have been replaced by its nanny)."""
    left = await _shared_cluster.settled()
    assert not left, f"the shared Dask cluster is not clean: {left}"
    yield _shared_cluster
    left = await _shared_cluster.settled()
    assert not left, f"the test left the shared Dask cluster with {left}"


@contextlib.asynccontextmanager
async def batch(
    broker: EmbeddedBroker, index: int, tmp_path: Path, cluster: SharedCluster, **config: Any
) -> AsyncIterator[CscHarness]:
    """OCSBatch:0 ENABLED on this test's prefix, its archive at ``tmp_path/archive``, its
    jobs on the module's cluster."""
    values = {"archive_root": str(tmp_path / "archive"), "dm_prefix": f"dm{index}",
              "scheduler": cluster.address} | config  # fmt: skip
    async with enabled_csc(OcsBatchCsc, broker, tmp_path, f"b{index}", values) as harness:
        yield harness


async def execute(harness: CscHarness, acks: list[Ack] | None = None, **params: Any) -> Ack:
    return await harness.remote.command(
        "execute", {"pipeline": "image-qc", "dataQuery": "", **params}, timeout=120,
        on_ack=(acks.append if acks is not None else None), check=False,
    )  # fmt: skip


async def job_events(events: EventStream, job_id: str) -> list[tuple[str, dict[str, Any]]]:
    """The job's events up to and including its jobResult."""
    seen: list[tuple[str, dict[str, Any]]] = []
    while not seen or seen[-1][0] != "jobResult":
        event = await events.next(60)
        if event.data.get("jobId") == job_id:
            seen.append((event.name, event.data))
    return seen


async def dm_messages(subscription: Subscription, count: int) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    while len(found) < count:
        message = await subscription.get(60)
        found[message.topic] = decode_json_object(message.payload)
    return found


async def test_image_qc_runs_on_dask_and_reports_every_step(
    site_broker: EmbeddedBroker, index: int, tmp_path: Path, cluster: SharedCluster
) -> None:
    refcat, one_gain = tmp_path / "refcat", ElectronicsModel(gain_spread=0.0)
    rows = archived(tmp_path / "archive", Camera.COMCAM, OBJECTS, ["R22_S00", "R22_S11"],
                    electronics=one_gain, reference_catalog=refcat)  # fmt: skip
    async with (
        batch(site_broker, index, tmp_path, cluster, reference_catalog=str(refcat)) as harness,
        harness.remote.stream() as events,
        harness.bus.subscription(f"dm{index}/qc/#") as dm,
        harness.bus.subscription(f"dm{index}/status/#") as stages,
    ):
        acks: list[Ack] = []
        final = await execute(
            harness, acks, dataQuery=f"{COMCAM} AND exposure.observation_type = 'object'"
        )
        assert [a.code for a in acks] == [AckCode.INPROGRESS, AckCode.COMPLETE], final.result
        job_id = acks[0].result
        seen = await job_events(events, job_id)
        first = seen[0]
        assert first == ("jobId", first[1])
        assert first[1]["commandSeq"] == final.seq
        statuses = [
            (d["status"], d["tasksDone"], d["tasksTotal"]) for n, d in seen if n == "jobStatus"
        ]
        assert statuses == [("queued", 0, 4), *[("running", n, 4) for n in range(5)],
                            ("succeeded", 4, 4)]  # fmt: skip
        result = seen[-1][1]
        assert result["exitCode"] == 0
        summary = json.loads(result["result"])
        assert summary["dashboard"].startswith("http://")
        assert summary["log"].startswith("file://")
        first_image, second_image = rows[0].image_name, rows[2].image_name
        assert summary["images"][first_image]["psfFwhm"] == pytest.approx(1.1, rel=0.1)
        assert summary["images"][second_image]["psfFwhm"] == pytest.approx(0.7, rel=0.1)
        # The sky's zero point in g through airmass 1.2, per ADU at the camera's gain.
        zero_point = SkyModel().zero_point("g", 1.2) - 2.5 * math.log10(one_gain.gain)
        assert summary["images"][first_image]["zeroPoint"] == pytest.approx(zero_point, abs=0.05)
        published = await dm_messages(dm, 6)  # 4 detectors, 2 image summaries
        prefix = f"dm{index}/qc/LSSTComCam"
        assert published[f"{prefix}/{first_image}/R22_S11"]["psfFwhm"] == pytest.approx(
            1.1, rel=0.1
        )
        assert published[f"{prefix}/{first_image}"]["nSensors"] == 2
        assert published[f"{prefix}/{second_image}/R22_S00"]["zeroPoint"] == pytest.approx(
            zero_point, abs=0.05
        )
        assert len(published[f"{prefix}/{first_image}/R22_S00"]["amplifiers"]) == 16
        # Each image's stage, for the Telemetry Gateway's processingStatus.
        status = [decode_json_object((await stages.get(60)).payload) for _ in range(2)]
        assert {(s["imageName"], s["stage"], s["status"]) for s in status} == {
            (first_image, "image-qc", "measured"), (second_image, "image-qc", "measured")
        }  # fmt: skip
        assert all('seeing' in s["description"] and "zero point" in s["description"]
                   for s in status)  # fmt: skip
        # Numbered as ICD §1 (1.2) has every payload, DM-internal ones too: per topic.
        assert sorted(s["seq"] for s in status) == [1, 2]
        assert published[f"{prefix}/{first_image}"]["seq"] == 1
        # The operator's table, from the retained `jobs` event.
        out = io.StringIO()
        assert await show_jobs(harness.bus, f"b{index}", out) == 0
        line = next(row for row in out.getvalue().splitlines() if row.startswith(job_id))
        assert line.split()[1:4] == ["image-qc", "succeeded", "4/4"]
    catalog = Catalog(sqlite_url(tmp_path / "archive" / "catalog.sqlite"))
    try:
        records = BatchRecords(catalog)
        assert records.job(job_id).state == "succeeded"  # type: ignore[union-attr]
        assert set(records.qc_of(second_image)) == {"R22_S00", "R22_S11"}
        assert records.qc_of(second_image)["R22_S11"]["zeroPoint"] == pytest.approx(
            zero_point, abs=0.05
        )
    finally:
        catalog.close()


@pytest.mark.broker  # on the module's Dask cluster
async def test_butler_queries_select_ranges_types_and_detectors_and_malformed_ones_are_refused(
    site_broker: EmbeddedBroker, index: int, tmp_path: Path, cluster: SharedCluster
) -> None:
    exposures = [BIASES[0], SimulatedExposure("DARK", 1.0), *OBJECTS]  # 1 … 4 of 20261121
    archived(tmp_path / "archive", Camera.COMCAM, exposures, ["R22_S00", "R22_S11"])
    async with batch(site_broker, index, tmp_path, cluster) as harness:
        bind = {"bind": {"det": detector_id("LSSTComCam", "R22_S11"), "day": 20261121}}
        ack = await execute(
            harness, config=json.dumps(bind),
            dataQuery=f"{COMCAM} AND exposure.day_obs = day AND exposure.seq_num IN (3..4) "
                      "AND detector = det",
        )  # fmt: skip
        assert ack.code is AckCode.COMPLETE, ack.result
        assert "2 detectors of 2 images measured" in ack.result
        ack = await execute(harness, dataQuery="exposure.observation_type IN ('bias', 'dark')")
        assert ack.code is AckCode.COMPLETE, ack.result
        assert "4 detectors of 2 images measured" in ack.result
        for query, reason in [("exposure.seq_num IN (3..", "exposure.seq_num IN (3.."),
                              ("exposure.colour = 'red'", "colour")]:  # fmt: skip
            ack = await execute(harness, dataQuery=query)
            assert ack.code is AckCode.FAILED, ack.result
            assert reason in ack.result
        ack = await execute(harness, dataQuery=COMCAM, config='{"bind": {"n": [true]}}')
        assert ack.code is AckCode.FAILED, ack.result
        assert "bind n" in ack.result


@pytest.mark.broker  # on the module's Dask cluster
async def test_a_corrupt_archived_file_fails_the_job_naming_it(
    broker: EmbeddedBroker, index: int, tmp_path: Path, cluster: SharedCluster
) -> None:
    rows = archived(tmp_path / "archive", Camera.COMCAM, OBJECTS[:1], ["R22_S11"])
    broken = Path(rows[0].path)
    os.truncate(broken, 20_000_000)  # the disk lost the end of it (75 MB)
    async with (
        batch(broker, index, tmp_path, cluster) as harness,
        harness.remote.stream() as events,
        harness.bus.subscription(f"dm{index}/status/#") as stages,
    ):
        acks: list[Ack] = []
        query = f"exposure = {exposure_id(rows[0].image_name)}"
        final = await execute(harness, acks, dataQuery=query)
        assert [a.code for a in acks] == [AckCode.INPROGRESS, AckCode.FAILED], final.result
        job_id = acks[0].result
        result = (await job_events(events, job_id))[-1][1]
        assert result["exitCode"] != 0
        assert f"{rows[0].image_name} R22_S11" in final.result
        assert broken.name in final.result  # which file, so that it can be looked at
        status = decode_json_object((await stages.get(60)).payload)
        assert (status["imageName"], status["status"]) == (rows[0].image_name, "failed")
        assert broken.name in status["description"]
        assert harness.csc.state is State.ENABLED  # one broken file is a job's problem


async def test_what_cannot_run_fails_before_a_job_exists_with_the_reason(
    site_broker: EmbeddedBroker, index: int, tmp_path: Path, cluster: SharedCluster
) -> None:
    archived(tmp_path / "archive", Camera.LATISS, BIASES[:1], ["R00_S00"])
    async with batch(site_broker, index, tmp_path, cluster) as harness:
        cases = [
            ({"pipeline": "sky", "dataQuery": "instrument = LATISS"}, "unknown pipeline 'sky'"),
            ({"dataQuery": "exposure.observation_type = 'bias' AND"}, "syntax error"),
            ({"dataQuery": "exposure.colour = 'red'"}, "colour"),
            ({"dataQuery": "detector IN (dets)"}, "dets"),
            ({"dataQuery": "exposure.day_obs = 20250101"}, "selects no archived file"),
            ({"dataQuery": ""}, "the data query is empty"),
            ({"dataQuery": "instrument = 'LATISS'", "config": '{"bind": {"x": [[1]]}}'},
             "bind x"),
            ({"dataQuery": "instrument = LATISS", "config": "{nsigma: 3"}, "config is not JSON"),
            ({"dataQuery": "instrument = LATISS", "config": "[1]"}, "must be a JSON object"),
            ({"dataQuery": "instrument = LATISS", "config": '{"x": 1}'}, "no config key x"),
            ({"dataQuery": "instrument = LATISS", "version": "9.9"}, "'9.9' is not installed"),
            ({"dataQuery": "instrument = LATISS", "prereqJobs": "nope"}, "'nope' is not known"),
            ({"dataQuery": "instrument = LATISS", "prereqJobs": "a;b"}, "not a job id"),
            ({"dataQuery": "instrument = LATISS", "config": '{"a":' + "[" * 5000},
             "nested too deeply"),
            ({"pipeline": "master-dark", "dataQuery": "instrument = LATISS",
              "config": '{"biasJob": "../x"}'}, "not a job id"),
            ({"pipeline": "master-dark", "dataQuery": "instrument = LATISS",
              "config": '{"biasJob": "20261121-00000000"}'}, "biasJob '20261121-00000000' is not"),
        ]  # fmt: skip
        for params, reason in cases:
            ack = await harness.remote.command(
                "execute", {"pipeline": "image-qc", **params}, timeout=60, check=False
            )
            assert ack.code is AckCode.FAILED, (params, ack.result)
            assert reason in ack.result, (params, ack.result)
        ack = await harness.remote.command("abortJob", {"jobId": "20261121-none"}, check=False)
        assert ack.code is AckCode.FAILED
        assert "no job '20261121-none'" in ack.result
    catalog = Catalog(sqlite_url(tmp_path / "archive" / "catalog.sqlite"))
    try:
        assert BatchRecords(catalog).jobs() == []  # not one job was made
    finally:
        catalog.close()


async def test_master_bias_abort_and_prerequisites(
    site_broker: EmbeddedBroker, index: int, tmp_path: Path, cluster: SharedCluster
) -> None:
    sensors = ["R22_S00", "R22_S01", "R22_S02", "R22_S10"]
    archived(tmp_path / "archive", Camera.COMCAM, BIASES, sensors)
    bias_query = f"{COMCAM} AND exposure.observation_type = 'bias'"
    async with (
        batch(site_broker, index, tmp_path, cluster, max_running_jobs=1) as harness,
        harness.remote.stream() as events,
    ):
        one = await execute(
            harness, pipeline="master-bias", dataQuery=f"{bias_query} AND detector = 0"
        )
        assert one.code is AckCode.COMPLETE, one.result
        product = tmp_path / "archive" / "LSSTComCam" / "calib" / "bias"
        made = sorted(product.rglob("*.fits"))
        assert [p.name for p in made] == ["bias_R22_S00.fits"]
        # A calibration dataset, certified in the calibration collection, in place.
        with Repository.open(tmp_path / "archive") as repository:
            now = astropy_time(current_tai())
            ref = repository.butler.find_dataset(
                "bias", {"instrument": "LSSTComCam", "detector": 0},
                collections="LSSTComCam/calib", timespan=Timespan(now, now),
            )  # fmt: skip
            assert ref is not None
            assert [Path(repository.butler.getURI(ref).ospath)] == made
        # A job of four detectors (two rounds of the workers), and one waiting on it;
        # abort the first.
        acks: list[Ack] = []
        first = asyncio.create_task(
            execute(harness, acks, pipeline="master-bias", dataQuery=bias_query)
        )
        done_id = one.result.split()[0]
        running = await events.wait_for(
            lambda e: e.name == "jobStatus" and e.data["status"] == "running"
            and e.data["jobId"] != done_id, 60,
        )  # fmt: skip
        job_id = running.data["jobId"]
        second = await asyncio.wait_for(_execute_waiting(harness, events, job_id), 60)
        ack = await harness.remote.command("abortJob", {"jobId": job_id})
        assert ack.code is AckCode.COMPLETE
        assert (await first).code is AckCode.ABORTED
        waiting = await second
        assert waiting.code is AckCode.FAILED
        assert f"prerequisite job {job_id} aborted" in waiting.result
        assert sorted(product.rglob("*.fits")) == made  # nothing of the aborted job


async def _execute_waiting(
    harness: CscHarness, events: EventStream, prereq: str
) -> asyncio.Task[Ack]:
    """Submit a job on ``prereq`` and return (as a task) its command once it is waiting."""
    query = COMCAM
    task = asyncio.create_task(execute(harness, dataQuery=query, prereqJobs=prereq))
    await events.wait_for(lambda e: e.name == "jobStatus" and e.data["status"] == "waiting", 60)
    return task


async def test_a_worker_killed_mid_job_costs_a_retry_not_the_job(
    site_broker: EmbeddedBroker, index: int, tmp_path: Path, cluster: SharedCluster
) -> None:
    archived(tmp_path / "archive", Camera.COMCAM, OBJECTS, ["R22_S00", "R22_S11"])
    async with (
        batch(site_broker, index, tmp_path, cluster) as harness,
        harness.remote.stream("jobStatus") as status,
    ):
        csc = harness.csc
        assert isinstance(csc, OcsBatchCsc)
        assert csc.queue.engine is not None
        pids: dict[str, int] = await csc.queue.engine.client.run(os.getpid)
        command = asyncio.create_task(execute(harness, dataQuery=COMCAM))
        await status.wait_for(lambda e: e.data["status"] == "running", 60)
        victim = next(iter(pids.values()))  # the scheduler has given it work already
        os.kill(victim, signal.SIGKILL)
        ack = await command
        assert ack.code is AckCode.COMPLETE, ack.result
        assert "4 detectors of 2 images measured" in ack.result


async def test_a_job_whose_workers_are_all_stopped_fails_at_its_deadline_with_the_reason(
    site_broker: EmbeddedBroker, index: int, tmp_path: Path, cluster: SharedCluster
) -> None:
    """Both workers SIGSTOPped: the job used to stay `running 0/n` for ever (issue 29,
    item 13); `task_timeout` without a task ending fails it, saying why."""
    archived(tmp_path / "archive", Camera.COMCAM, OBJECTS[:1], ["R22_S11"])
    async with (
        batch(site_broker, index, tmp_path, cluster, task_timeout=2.0) as harness,
        harness.remote.stream() as events,
    ):
        csc = harness.csc
        assert isinstance(csc, OcsBatchCsc)
        assert csc.queue.engine is not None
        pids: dict[str, int] = await csc.queue.engine.client.run(os.getpid)
        assert len(pids) == WORKERS
        for pid in pids.values():
            os.kill(pid, signal.SIGSTOP)
        try:
            acks: list[Ack] = []
            final = await execute(harness, acks, dataQuery=COMCAM)
        finally:
            for pid in pids.values():
                os.kill(pid, signal.SIGCONT)
        assert [a.code for a in acks] == [AckCode.INPROGRESS, AckCode.FAILED], final.result
        assert "no task ended within task_timeout (2 s)" in final.result
        seen = await job_events(events, acks[0].result)
        status = [d for n, d in seen if n == "jobStatus"][-1]
        assert (status["status"], status["tasksDone"], status["tasksTotal"]) == ("failed", 0, 1)
        assert "task_timeout" in status["message"]
        assert seen[-1][1]["exitCode"] == 1
        assert harness.csc.state is State.ENABLED  # the job's problem, not the service's


async def test_a_job_under_way_when_the_service_died_is_reported_failed(
    site_broker: EmbeddedBroker, index: int, tmp_path: Path, cluster: SharedCluster
) -> None:
    archive = tmp_path / "archive"
    archive.mkdir()
    catalog = Catalog(sqlite_url(archive / "catalog.sqlite"))
    BatchRecords(catalog).record_job(JobRecord(
        job_id="20261120-deadbeef", pipeline="image-qc", version="0.1.0", query="x = y",
        config="{}", prereqs="", origin="ocs", seq=7, state="running", tasks_done=3,
        tasks_total=9, message="", submitted_tai=1.0, started_tai=2.0, ended_tai=None,
        result="{}",
    ))  # as a CSC killed mid-job leaves it  # fmt: skip
    catalog.close()
    configs = tmp_path / "config" / "OCSBatch"
    configs.mkdir(parents=True)
    (configs / "test.yaml").write_text(
        yaml.safe_dump({"archive_root": str(archive), "scheduler": cluster.address})
    )
    settings = Settings(
        prefix=f"b{index}", state_dir=tmp_path / "state", config_dir=tmp_path / "config"
    )
    async with (
        make_csc(OcsBatchCsc, site_broker, index=0, settings=settings) as harness,
        harness.remote.stream() as events,
    ):
        await harness.remote.command("start", {"configurationOverride": "test"}, timeout=60)
        seen = await job_events(events, "20261120-deadbeef")
    assert [n for n, _ in seen] == ["jobStatus", "jobResult"]
    assert seen[0][1]["status"] == "failed"
    assert "restarted" in seen[0][1]["message"]
    assert seen[1][1]["exitCode"] == 1


async def test_auto_qc_measures_each_image_the_oods_announces_without_a_command(
    site_broker: EmbeddedBroker, index: int, tmp_path: Path, cluster: SharedCluster
) -> None:
    rows = archived(tmp_path / "archive", Camera.COMCAM, OBJECTS[:1], ["R22_S11"])
    async with (
        batch(site_broker, index, tmp_path, cluster, auto_qc=True, auto_qc_cameras=[2]) as harness,
        harness.bus.subscription(f"dm{index}/qc/#") as dm,
    ):
        topic = f"b{index}/OODS/0/evt/imageInOODS"
        image = rows[0].image_name
        announced = {"imageName": image, "instrument": "LSSTComCam", "sensors": "R22_S11",
                     "exposureId": exposure_id(image), "statusCode": 0, "description": "",
                     "seq": 1}  # fmt: skip
        await harness.bus.publish(topic, b"{not json")
        await harness.bus.publish(topic, encode(announced | {"imageName": "../../etc"}))
        await harness.bus.publish(topic, encode(announced))
        published = await dm_messages(dm, 2)
        summary = published[f"dm{index}/qc/LSSTComCam/{rows[0].image_name}"]
        assert summary["psfFwhm"] == pytest.approx(1.1, rel=0.1)


async def test_a_csc_process_killed_mid_job_has_its_job_failed_at_the_next_start(
    site_broker: EmbeddedBroker, index: int, tmp_path: Path
) -> None:
    """`cscs run OCSBatch` SIGKILLed while a job runs; a new OCSBatch on the same
    records reports that job failed when it starts."""
    archived(tmp_path / "archive", Camera.COMCAM, BIASES, ["R22_S00", "R22_S01"])
    configs = tmp_path / "config" / "OCSBatch"
    configs.mkdir(parents=True)
    (configs / "test.yaml").write_text(
        yaml.safe_dump({"archive_root": str(tmp_path / "archive"), "workers": 1})
    )
    env = {**os.environ, "CSCS_STATE_DIR": str(tmp_path / "state"), "CSCS_PREFIX": f"b{index}",
           "CSCS_CONFIG_DIR": str(tmp_path / "config")}  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cscs", "run", "OCSBatch", "--broker", site_broker.url, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        async with (
            site_broker.transport() as bus,
            Remote(bus, CscAddress("OCSBatch", 0, f"b{index}")) as batch,
            batch.stream() as events,
        ):
            await batch.wait_for_state(State.STANDBY, 60)
            await batch.command("start", {"configurationOverride": "test"}, timeout=60)
            await batch.command("enable")
            command = asyncio.create_task(batch.command(
                "execute", {"pipeline": "master-bias",
                            "dataQuery": "exposure.observation_type = 'bias'"},
                timeout=120, check=False,
            ))  # fmt: skip
            running = await events.wait_for(
                lambda e: e.name == "jobStatus" and e.data["status"] == "running", 60
            )
            process.kill()  # mid-job: no clean close, no record of the end
            await process.wait()
            command.cancel()
            job_id = running.data["jobId"]
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    settings = Settings(prefix=f"b{index}", state_dir=tmp_path / "state",
                        config_dir=tmp_path / "config")  # fmt: skip
    async with (
        make_csc(OcsBatchCsc, site_broker, index=0, settings=settings) as harness,
        harness.remote.stream() as events,
    ):
        await harness.remote.command("start", {"configurationOverride": "test"}, timeout=60)
        seen = await job_events(events, job_id)
    assert seen[0][1]["status"] == "failed"
    assert "restarted" in seen[0][1]["message"]
    assert not list((tmp_path / "archive").rglob("bias_*.fits"))  # no product of it


async def test_a_sites_scheduler_given_by_address_runs_the_jobs(
    site_broker: EmbeddedBroker, index: int, tmp_path: Path, cluster: SharedCluster
) -> None:
    archived(tmp_path / "archive", Camera.COMCAM, OBJECTS[:1], ["R22_S11"])
    async with batch(site_broker, index, tmp_path, cluster) as harness:  # the module's, as a site's
        ack = await execute(harness, dataQuery="exposure.obs_id = 'CC_O_20261121_000001'")
        assert ack.code is AckCode.COMPLETE, ack.result
        csc = harness.csc
        assert isinstance(csc, OcsBatchCsc)
        assert csc.queue.engine is not None
        assert csc.queue.engine.cluster is None  # the site's, not one of its own
    site = cluster.cluster
    assert site is not None
    assert site.scheduler.status is Status.running  # the site's cluster outlives the CSC
    assert len(site.scheduler.workers) == WORKERS
    gone = tmp_path / "gone"
    (gone / "OCSBatch").mkdir(parents=True)
    (gone / "OCSBatch" / "test.yaml").write_text(
        yaml.safe_dump({"scheduler": "tcp://127.0.0.1:1", "scheduler_timeout": 2.0})
    )
    settings = Settings(prefix=f"b{index}", state_dir=tmp_path / "state", config_dir=gone)
    async with make_csc(OcsBatchCsc, site_broker, index=0, settings=settings) as harness:
        ack = await harness.remote.command(
            "start", {"configurationOverride": "test"}, timeout=60, check=False
        )
        assert ack.code is AckCode.FAILED
        assert "cannot start or reach the Dask scheduler tcp://127.0.0.1:1" in ack.result
        assert harness.csc.state is State.STANDBY


async def test_a_master_dark_waits_for_its_master_bias_and_subtracts_it(
    site_broker: EmbeddedBroker, index: int, tmp_path: Path, cluster: SharedCluster
) -> None:
    exposures = BIASES + [SimulatedExposure("DARK", 30.0)] * 2
    archived(tmp_path / "archive", Camera.COMCAM, exposures, ["R22_S11"])
    async with (
        batch(site_broker, index, tmp_path, cluster) as harness,
        harness.remote.stream("jobId") as ids,
    ):
        bias = asyncio.create_task(
            execute(harness, pipeline="master-bias", dataQuery="exposure.observation_type = 'bias'")
        )
        bias_id = (await ids.next(60)).data["jobId"]
        config = json.dumps({"biasJob": bias_id})
        dark = await execute(harness, pipeline="master-dark",
                             dataQuery="exposure.observation_type IN ('dark')",
                             prereqJobs=bias_id, config=config)  # fmt: skip
        assert (await bias).code is AckCode.COMPLETE
        assert dark.code is AckCode.COMPLETE, dark.result
    import fitsio

    (product,) = (tmp_path / "archive" / "LSSTComCam" / "calib" / "dark").rglob("*.fits")
    header = fitsio.read_header(str(product), ext=0)
    assert header["BIASFILE"] == "bias_R22_S11.fits"
    assert header["NCOMBINE"] == 2


async def test_an_observing_script_executes_a_job_and_waits_on_its_result(
    site_broker: EmbeddedBroker, index: int, tmp_path: Path, cluster: SharedCluster
) -> None:
    archived(tmp_path / "archive", Camera.LATISS, BIASES[:2], ["R00_S00"])
    text = textwrap.dedent("""
        name: daytime
        steps:
          - command: {csc: "OCSBatch:0", name: execute, timeout: 120,
                      params: {pipeline: master-bias,
                               dataQuery: "exposure.observation_type = 'bias'"},
                      result: "1 master-bias product written"}
          - wait: {csc: "OCSBatch:0", event: jobResult, where: {exitCode: 0}}
          - command: {csc: "OCSBatch:0", name: execute, expect: FAILED,
                      params: {pipeline: image-qc,
                               dataQuery: "exposure.observation_type = 'flat'"},
                      result: "selects no archived file"}
        """)
    async with batch(site_broker, index, tmp_path, cluster) as harness:
        assert await run_script(harness.bus, parse_script(text), prefix=f"b{index}") == 3


def test_the_jobs_table_shows_no_forged_control_sequence_or_absurd_number() -> None:
    forged = [{"jobId": "x\x1b[2J", "pipeline": "image-qc\nFAKE", "status": "running",
               "tasksDone": 1e30, "tasksTotal": True, "submitted_tai": -1e308,
               "message": "\x07" + "m" * 500}, "not a job"]  # fmt: skip
    table = jobs_table(forged, 1.8e9)  # type: ignore[arg-type]
    assert "\x1b" not in table
    assert "\x07" not in table
    (row,) = table.splitlines()[1:]
    assert row.split()[:5] == ["x?[2J", "image-qc?FAKE", "running", "?/?", "?"]
    assert len(row) < 200
