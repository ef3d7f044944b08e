"""A test kit for users' test suites: the whole simulated observatory in one process,
with no broker to install (``docs/testkit.md``).

* :func:`observatory` — weather, telescope, header service, camera with its DAQ, and
  archiver, ENABLED on one bus; the :class:`Observatory` it gives points the telescope,
  takes images and finds them archived and verified (:meth:`Observatory.take_images`);
* :class:`ArchiveWatch` — the archive as announced: images read out, their files
  archived, each re-read and verified (:class:`NotArchivedError` if not);
* :func:`simulated_archive` — an archive of simulated raws written straight to disk, for
  tests of what reads the archive; :func:`register_in_repository` registers them in
  the archive's Butler repository, as the OODS would;
* :mod:`sim.testkit.plugin` — the pytest plugin (entry point ``pytest11``) with the
  ``cscs_*`` fixtures over all of the above.

Every name here is imported on first use: pytest loads the plugin, and with it this
package, in every run in the environment, and only tests that use the kit should pay
for the CSCs' imports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sim.testkit.archive import ArchiveWatch, NotArchivedError
    from sim.testkit.in_repository import register_in_repository
    from sim.testkit.simulated import SimulatedExposure, simulated_archive
    from sim.testkit.site import (
        ARCHIVER_TEST_CONFIG,
        Observatory,
        camera_config_dir,
        config_dir,
        observatory,
    )

__all__ = [
    "ARCHIVER_TEST_CONFIG",
    "ArchiveWatch",
    "NotArchivedError",
    "Observatory",
    "SimulatedExposure",
    "camera_config_dir",
    "config_dir",
    "observatory",
    "register_in_repository",
    "simulated_archive",
]

_HOMES = {
    "ArchiveWatch": "archive",
    "NotArchivedError": "archive",
    "ARCHIVER_TEST_CONFIG": "site",
    "Observatory": "site",
    "camera_config_dir": "site",
    "config_dir": "site",
    "observatory": "site",
    "register_in_repository": "in_repository",
    "SimulatedExposure": "simulated",
    "simulated_archive": "simulated",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'sim.testkit' has no attribute {name!r}")
    return getattr(importlib.import_module(f"sim.testkit.{home}"), name)
