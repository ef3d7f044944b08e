"""Observatory-facing Data Management control components (CSCs).

Packages, lowest layer first (``docs/architecture.md``): ``cscs.core`` the CSC framework;
``cscs.camera`` the camera and its images; ``cscs.daq`` the DAQ client, ``cscs.catalog``
the archive catalog and ``cscs.cluster`` the Dask engine; the components
``cscs.archiver``, ``cscs.header_service``, ``cscs.ocs_batch`` and
``cscs.telemetry_gateway``; ``cscs.ocs`` the operators' tools (with ``cscs.components``,
the CSCs found by name); ``cscs.dashboard`` the night staff's web page; ``cscs.cli`` on
top.
"""

__all__ = ["__version__"]


def __getattr__(name: str) -> str:
    # Lazily: importing ``cscs`` alone (``python -m cscs``) must not import the framework.
    if name == "__version__":
        from cscs.core.versions import SOFTWARE_VERSION

        return SOFTWARE_VERSION
    raise AttributeError(f"module 'cscs' has no attribute {name!r}")
