"""Running a simulated site, each CSC in its own process: the demo night (``cscs demo``,
its observing script in ``scripts/``), the soak night (``cscs soak``, :mod:`sim.site.soak`)
and what both check with (:mod:`sim.site.night`, :mod:`sim.site.processes`). Plugged into
the ``cscs`` command through entry points; the simulators they run live in
:mod:`sim.daq` and :mod:`sim.ocs`."""
