"""DM health as alarms (ICD 1.1 "TelemetryGateway"): pure rules, told what was heard and
when, asked for their verdicts at any time.

* ``dm.{Name}:{index}`` for each watched DM CSC: FAULT → CRITICAL; no heartbeat for
  ``heartbeat_timeout`` → SERIOUS (a CSC never heard since the gateway started counts
  from that start); DISABLED or STANDBY while the night runs → WARNING.
* ``dm.{Archiver}.retrieval``: an ``imageRetrievalFailed`` → SERIOUS, until that archiver
  archives a later image.
* ``dm.qc``: images archived, and no ``image-qc`` stage (measured, failed or skipped)
  heard for any of them for ``qc_timeout`` → WARNING, until one is heard.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from cscs.camera.naming import ImageName
from cscs.core.states import State
from cscs.telemetry_gateway.alarms import Severity

__all__ = ["DmHealth", "HealthConfig", "Verdict"]

_IDLE = (State.DISABLED, State.STANDBY)


class HealthConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    watched: list[Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9]{0,63}:[0-9]{1,9}$")]] = Field(
        default=["Archiver:1", "HeaderService:1", "OCSBatch:0"], max_length=50
    )
    """DM CSCs whose state and heartbeat make alarms, as Name:index"""
    heartbeat_timeout: float = Field(default=10.0, gt=0.0, le=3600.0)
    """s without a heartbeat before a watched CSC is SERIOUS"""
    judge_interval: float = Field(default=1.0, ge=0.1, le=60.0)
    """s between verdicts: how late a change of health can be raised"""
    qc_timeout: float = Field(default=600.0, ge=0.0, le=86400.0)
    """s of archived images without an image-qc stage before WARNING (0: never)"""
    night: str = Field(default="sun", pattern=r"^(sun|always|never)$")
    """when a CSC that is not ENABLED is a WARNING: `sun` (the Sun below -12 degrees at
    the site), `always`, `never`"""


@dataclass(frozen=True)
class Verdict:
    name: str
    severity: Severity
    reason: str


class DmHealth:
    def __init__(self, config: HealthConfig, now: float) -> None:
        self.config = config
        self.started = now
        self.states: dict[str, State] = {}
        self.heartbeats: dict[str, float] = {}
        self.failed: dict[str, tuple[str, str]] = {}  # archiver -> (image, reason)
        self.waiting_since: float | None = None  # the first archived image without QC

    def state(self, csc: str, state: State) -> None:
        self.states[csc] = state

    def heartbeat(self, csc: str, now: float) -> None:
        self.heartbeats[csc] = now

    def retrieval_failed(self, archiver: str, image: str, why: str) -> None:
        self.failed[archiver] = (image, why)

    def archived(self, archiver: str, image: str, now: float) -> None:
        failed = self.failed.get(archiver)
        if failed is not None and _same_or_later(image, failed[0]):
            del self.failed[archiver]  # archived at last, or the camera has moved on
        if self.waiting_since is None:
            self.waiting_since = now

    def qc_stage(self) -> None:
        """An image-qc stage (measured, failed, skipped) was heard: QC is running."""
        self.waiting_since = None

    def verdicts(self, now: float, night: bool) -> list[Verdict]:
        """Every health alarm's severity now (NONE included: that clears them)."""
        found = [self._csc(csc, now, night) for csc in self.config.watched]
        for archiver in {c for c in self.config.watched if c.startswith("Archiver:")}:
            failed = self.failed.get(archiver)
            severity = Severity.SERIOUS if failed else Severity.NONE
            reason = f"{failed[0]} not archived: {failed[1]}" if failed else ""
            found.append(Verdict(f"dm.{archiver}.retrieval", severity, reason))
        timeout, waiting = self.config.qc_timeout, self.waiting_since
        if timeout > 0 and waiting is not None and now - waiting >= timeout:
            reason = f"images archived for {timeout / 60:g} min without image QC"
            found.append(Verdict("dm.qc", Severity.WARNING, reason))
        else:
            found.append(Verdict("dm.qc", Severity.NONE, ""))
        return found

    def _csc(self, csc: str, now: float, night: bool) -> Verdict:
        name = f"dm.{csc}"
        state = self.states.get(csc)
        if state is State.FAULT:
            return Verdict(name, Severity.CRITICAL, f"{csc} is in FAULT")
        silent = now - self.heartbeats.get(csc, self.started)
        if silent >= self.config.heartbeat_timeout:
            timeout = self.config.heartbeat_timeout
            return Verdict(name, Severity.SERIOUS, f"no heartbeat from {csc} for {timeout:g} s")
        if night and state in _IDLE:
            return Verdict(name, Severity.WARNING, f"{csc} is {state.name} during the night")
        return Verdict(name, Severity.NONE, "")


def _same_or_later(image: str, failed: str) -> bool:
    """``image`` is the failed one, or one its camera took after it (a forged name of
    another camera, or of a day to come, is neither)."""
    try:
        now, then = ImageName.parse(image), ImageName.parse(failed)
    except ValueError:
        return False
    if now.code != then.code:
        return False
    return (now.day_obs, now.seq_num) >= (then.day_obs, then.seq_num)
