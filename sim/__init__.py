"""The observatory around the DM CSCs, simulated, in three parts:

* :mod:`sim.daq` and :mod:`sim.ocs` — the simulators: the camera and its DAQ, the
  telescope, the weather station (``cscs run Camera``, ...);
* :mod:`sim.site` — what runs a simulated site: the demo night (``cscs demo``) and the
  soak night (``cscs soak``);
* :mod:`sim.testkit` — the whole site in one process for a user's tests, and its pytest
  plugin (``docs/testkit.md``).

They use ``cscs``; ``cscs`` never imports them: they reach ``cscs run``, ``cscs demo``
and pytest through entry points (``pyproject.toml``)."""
