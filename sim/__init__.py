"""Simulators of the observatory around the DM CSCs (camera and DAQ, telescope,
weather) and the demo. They use ``cscs``; ``cscs`` never imports them: they reach
``cscs run`` and ``cscs demo`` through entry points (``pyproject.toml``)."""
