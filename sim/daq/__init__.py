"""The simulated camera and DAQ: pixel synthesis, the DAQ buffer and its ZeroMQ server."""
