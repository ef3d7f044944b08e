"""The telescope and the weather station, simulated: what the OCS side shows the header
service and the camera (``cscs run Telescope``, ``cscs run Weather``)."""
