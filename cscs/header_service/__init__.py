"""Header Service CSC: collects each exposure's FITS header metadata from the bus."""
