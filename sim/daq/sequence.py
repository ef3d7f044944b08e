"""Image sequence numbers that survive restarts and never repeat a name.

The last name issued is recorded (atomically, on disk) before the name is announced, so
a camera that crashes right after announcing an image starts from the next number.
"""

from __future__ import annotations

import json
from pathlib import Path

from cscs.camera import files
from cscs.camera.naming import ImageName, day_obs
from cscs.core.errors import ExpectedError

__all__ = ["ImageSequencer"]


class ImageSequencer:
    """Issues ``ImageName``s for one camera and controller, persisted in ``path``."""

    def __init__(self, path: Path, code: str, controller: str = "O") -> None:
        self.path = path
        self.code = code
        self.controller = controller
        self._last: ImageName | None = self._load()

    @property
    def last(self) -> ImageName | None:
        return self._last

    def _load(self) -> ImageName | None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ExpectedError(f"cannot read image sequence file {self.path}: {exc}") from None
        try:
            last = ImageName.parse(json.loads(text)["last"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ExpectedError(
                f"image sequence file {self.path} is unreadable ({exc}); "
                "fix or remove it (removing restarts today's numbers at 1)"
            ) from None
        if (last.code, last.controller) != (self.code, self.controller):
            raise ExpectedError(
                f"image sequence file {self.path} belongs to {last.code}_{last.controller}, "
                f"not {self.code}_{self.controller}"
            )
        return last

    def next(self, tai: float) -> ImageName:
        """The name for an exposure starting at ``tai``, recorded before it is returned."""
        day = day_obs(tai)
        last = self._last
        if last is None or day > last.day_obs:
            name = ImageName(self.code, self.controller, day, 1)
        elif day == last.day_obs:
            name = ImageName(self.code, self.controller, day, last.seq_num + 1)
        else:
            raise ExpectedError(
                f"the clock went back: day of observation {day} is before the last image "
                f"{last}; refusing to risk reusing an image name"
            )
        try:
            files.write_atomically(self.path, json.dumps({"last": str(name)}).encode())
        except OSError as exc:
            raise ExpectedError(f"cannot record image sequence in {self.path}: {exc}") from exc
        self._last = name
        return name
