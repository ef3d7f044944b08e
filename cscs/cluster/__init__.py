"""Dask's distributed engine, shared by the components that spread work over workers:
OCS Batch (pipelines) and the Archiver (one task per image and sensor)."""

from cscs.cluster.engine import Engine, EngineError, TaskOutcome

__all__ = ["Engine", "EngineError", "TaskOutcome"]
