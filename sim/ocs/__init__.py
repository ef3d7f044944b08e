"""The OCS side, simulated: the telescope and the weather station, and the demo night
(``cscs demo``, plugged into the ``cscs`` command through an entry point)."""
