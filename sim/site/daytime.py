"""The demo's day after the night: OCS Batch makes a master bias from the night's biases
and measures every science image, as the OCS would command it; the measured seeing is
printed next to the seeing the simulated sky had, with the zero point measured against
the sky's catalog (which the simulated camera wrote for each field it saw)."""

from __future__ import annotations

import json
from typing import Any

from cscs.core.bus import Bus
from cscs.core.protocol import Ack, AckCode
from cscs.core.remote import Remote
from cscs.core.topics import CscAddress
from cscs.ocs.progress import Progress
from cscs.ocs_batch.interface import JOB_RESULT
from sim.site.night import NightLog

__all__ = ["daytime"]

_JOB_TIMEOUT = 600.0  # s: a slow machine, a cold cluster


async def daytime(bus: Bus, night: str, log: NightLog, progress: Progress) -> None:
    """``master-bias`` over ``{night}-bias`` and ``image-qc`` over ``{night}-science``;
    a job that does not succeed is a problem of the night."""
    async with Remote(bus, CscAddress("OCSBatch", 0)) as batch, batch.events(JOB_RESULT) as results:
        progress.say("daytime: a master bias from the night's biases (OCSBatch:0, on Dask)")
        await _job(batch, "master-bias", f"{night}-bias", log, progress)
        progress.say("daytime: image QC of the night's science images")
        job_id = await _job(batch, "image-qc", f"{night}-science", log, progress)
        if job_id is None:
            return
        while (result := await results.next(30)).data.jobId != job_id:
            pass
        images: dict[str, dict[str, Any]] = json.loads(result.data.result).get("images", {})
        for image, summary in sorted(images.items()):
            measured = summary.get("psfFwhm")
            truth = log.seeing.get(image)
            shown = f'{measured:.2f}"' if measured is not None else "not measured"
            sky = f' (the simulated sky: {truth:.2f}")' if truth is not None else ""
            zero_point = summary.get("zeroPoint")
            zp = f"{zero_point:.2f} mag for 1 ADU/s" if zero_point is not None else "not measured"
            progress.say(f"  {image}: seeing {shown}{sky}, zero point {zp}, "
                         f"{summary.get('nSources')} sources")  # fmt: skip


async def _job(
    batch: Remote, pipeline: str, group: str, log: NightLog, progress: Progress
) -> str | None:
    """``pipeline`` over the raws of the night's exposure group ``group``: a Butler
    expression, the group's name a bind value."""
    acks: list[Ack] = []
    params = {"pipeline": pipeline, "dataQuery": "exposure.group = night_group",
              "config": json.dumps({"bind": {"night_group": group}})}  # fmt: skip
    final = await batch.command(
        "execute", params, timeout=_JOB_TIMEOUT, on_ack=acks.append, check=False
    )
    if final.code is not AckCode.COMPLETE:
        log.problems.append(f"{pipeline} on group {group!r}: {final.code.name}: {final.result}")
        return None
    progress.say(f"  {final.result}")
    started = [a for a in acks if a.code is AckCode.INPROGRESS]
    return started[0].result if started else None
