"""An image's header: the document the header service writes and the archiver reads, and
the event that announces it (ICD §6 ``largeFileObjectAvailable``).

Declared here, once, because two components meet on it and neither may import the
other. The document is YAML, so that a person can read it too::

    imageName: AT_O_20261121_000042
    generator: HeaderService:1
    version: 0.1.0
    primary:                      # primary-HDU keywords, in header order
      - {keyword: RA, value: 150.1, unit: deg, comment: ...}
      - {keyword: AIRTEMP, value: null, comment: ...}     # could not be collected
    detectors:                    # per-detector keywords (CCD, sky WCS), by RXX_SXX
      R00_S00: [{keyword: RAFTBAY, value: R00}, ...]
    segments: {}                  # per-extension extras, by EXTNAME; the geometry is
                                  # the archiver's own (cscs/camera/focal_plane.py)
    missing:                      # every keyword left undefined, and why
      - {keyword: AIRTEMP, reason: nothing received from Weather:0 tel/weather}

A missing keyword keeps its place with ``value: null`` (the FITS undefined value) and is
listed under ``missing``, never invented.

Anyone on the network can announce anything, so both the announcement and the document
are bounded here: an announcement must carry an image name, a size and an MD5; a
document is read only from where its reader trusts, only from a regular file, never more
than a limit, and must be a mapping of this schema whose every key is a name and every
card one a FITS header can take. Whatever fails is a ValueError or OSError naming what
is wrong, never a crash.

The model, pure (no I/O), and what moves it:

- ``cards``: what one card may hold (a keyword, a value, printable text), and the card;
- ``document``: the document's schema, built from cards;
- ``announcement``: the event that says a document is ready, and where;
- ``yaml_codec``: the document as YAML bytes, written and read back (shape checked first);
- ``paths``: where header services keep documents, and the path a header URL names;
- ``reading``: fetching a document from a file, only where and as much as its reader
  trusts (:class:`~cscs.camera.headers.reading.HeaderTrust`).

Import each name from its module: this package re-exports nothing.
"""
