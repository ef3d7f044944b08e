"""The camera and its images: what every component that touches pixels or headers shares.

Detector and segment geometry (``geometry``), image names and the day of observation
(``naming``), the camera's events (``events``), the header document and its
announcement (``headers``), the observatory's site and sky (``observatory``), raw FITS
files written atomically (``fits``, ``files``) and checked (``verify``), and keeping
freed pixel buffers for reuse (``memory``). Built on ``cscs.core`` only.
"""
