"""Archiver CSC: every image from the DAQ, with its header, into the archive and catalog."""
