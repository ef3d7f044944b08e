"""Where an image's header document goes: one rule for the live service and the rebuild
from the EFD, ``{output_dir}/{dayObs of its name}/{image}.yaml``.

The name's dayObs, not ``startIntegration.imageDate``: the two can differ (a camera's
clock, or a publisher's bug), and a rebuild, which looks for the document there to
judge it and replaces it, must find the live one where it was written. The archiver's
``header_url_template`` finds it by the name's dayObs too.
"""

from __future__ import annotations

from pathlib import Path

from cscs.camera import files
from cscs.camera.naming import ImageName

__all__ = ["header_path"]


def header_path(output_dir: Path, image: str) -> Path:
    """The document of ``image`` (an image name: ValueError if not), checked to stay
    under ``output_dir`` (:func:`~cscs.camera.files.path_under`)."""
    return files.path_under(output_dir, ImageName.parse(image).day_obs, f"{image}.yaml")
