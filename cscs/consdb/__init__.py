"""The consolidated database (ConsDB): the observatory's per-exposure table of header
values and quick-look QC, in its own schemas (``lsst-sdm-schemas``, built by ``felis``).

A package of the catalog's layer: the OODS records each image from its headers and the
QC OCS Batch measured; users query it after the night (docs/consdb.md).
"""

from cscs.consdb.database import ConsDb, ConsDbError

__all__ = ["ConsDb", "ConsDbError"]
