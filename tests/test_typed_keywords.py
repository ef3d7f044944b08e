"""Issue 29, item 7, offline: a keyword whose value the FITS standard types is never
written without one. The header service leaves it out of its document; the archiver
drops it from a document that still has it undefined (an older header service, or
anyone's), lists it as missing and says why in a COMMENT."""

from __future__ import annotations

from cscs.archiver.headers import header_of
from cscs.camera.headers.cards import requires_value
from cscs.camera.headers.document import HeaderCard, HeaderDocument, MissingKeyword
from cscs.camera.headers.yaml_codec import parse_header_document
from cscs.header_service.collect import Missing, Value
from cscs.header_service.document import render

IMAGE = "CC_O_20261207_000001"
WCS_REASON = "no WCS: no rotator angle: ROTPA not collected"


def test_the_standards_typed_keywords_and_only_those_need_a_value() -> None:
    typed = ["WCSAXES", "CRVAL1", "CRPIX2", "CD1_2", "PC2_1", "CTYPE1", "CUNIT2", "RADESYS",
             "EQUINOX", "DATE-OBS", "DATE-BEG", "DATE-END", "MJD-OBS", "OBSGEO-X", "OBSGEO-B",
             "OBJECT", "WCSAXESA", "CRVAL1A"]  # fmt: skip
    assert [k for k in typed if not requires_value(k)] == []
    free = ["CCD_MANU", "ROTPA", "RAEND", "DOMEAZ", "AIRMASS", "FILTER", "EXPTIME", "CRVALUE"]
    assert [k for k in free if requires_value(k)] == []


def test_the_header_service_leaves_a_typed_keyword_it_could_not_collect_out() -> None:
    primary: list[tuple[str, Value | Missing]] = [
        ("OBSID", Value(IMAGE)),
        ("DATE-OBS", Missing("no startIntegration time")),
        ("ROTPA", Missing("no mount sample")),
    ]
    wcs: list[tuple[str, Value | Missing]] = [
        ("WCSAXES", Missing(WCS_REASON)),
        ("CRVAL1", Missing(WCS_REASON)),
    ]
    detectors: dict[str, list[tuple[str, Value | Missing]]] = {
        "R22_S11": [("CCD_MANU", Missing("no focalPlaneSummaryInfo")), *wcs]
    }
    rendered = render(IMAGE, "test", "1", primary, detectors)
    document = parse_header_document(rendered.data)
    keywords = [c.keyword for c in [*document.primary, *document.detectors["R22_S11"]]]
    assert keywords == ["OBSID", "ROTPA", "CCD_MANU"]  # undefined, but allowed to be
    assert set(rendered.missing) == {"DATE-OBS", "ROTPA", "CCD_MANU", "WCSAXES", "CRVAL1"}


def test_the_archiver_never_writes_a_typed_keyword_undefined_and_says_why() -> None:
    """A document with WCSAXES and DATE-OBS undefined, as header services wrote them
    before: dropped, listed as missing, one COMMENT per reason."""
    document = HeaderDocument(
        imageName=IMAGE, generator="old", version="0",
        primary=[HeaderCard(keyword="OBSID", value=IMAGE),
                 HeaderCard(keyword="DATE-OBS", value=None)],
        detectors={"R22_S11": [HeaderCard(keyword="CCD_MANU", value=None),
                               HeaderCard(keyword="WCSAXES", value=None),
                               HeaderCard(keyword="CRVAL1", value=None)]},
        segments={},
        missing=[MissingKeyword(keyword="CCD_MANU", reason="no focalPlaneSummaryInfo"),
                 MissingKeyword(keyword="WCSAXES", reason=WCS_REASON),
                 MissingKeyword(keyword="CRVAL1", reason=WCS_REASON)],
    )  # fmt: skip
    header = header_of("file:///h.yaml", "0" * 32, document)
    cards = header.primary + header.detectors["R22_S11"]
    assert [(k, v) for k, v, _ in cards] == [("OBSID", IMAGE), ("CCD_MANU", None)]
    assert header.missing.split(",") == ["CCD_MANU", "WCSAXES", "CRVAL1", "DATE-OBS"]
    notes = header.notes(cards)
    assert [k for k, _, _ in notes] == ["COMMENT", "COMMENT"]
    assert notes[0][1] == f"Not collected, so left out: WCSAXES, CRVAL1. Why: {WCS_REASON}"
    assert "DATE-OBS" in notes[1][1]
    assert "no value" in notes[1][1]
