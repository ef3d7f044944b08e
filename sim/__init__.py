"""Simulators of the observatory around the DM CSCs: camera/DAQ and OCS."""
