"""The header document as the header service writes it and the archiver reads it
(``cscs.camera.headers.yaml_codec``): JSON, one card per line, read back to the same
document, and read to the same values by a YAML 1.1 reader (PyYAML) too; documents
written as other YAML (by an earlier version) still read."""

from __future__ import annotations

import json

import yaml
from hypothesis import given
from hypothesis import strategies as st

from cscs.camera.headers.document import HeaderCard, HeaderDocument, MissingKeyword
from cscs.camera.headers.yaml_codec import dump_header_document, parse_header_document

_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1e-05, 1e16, -2.5e-300, 0.0, -0.0, 5e-324]),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40),
    st.sampled_from(["yes", "no", "null", "1e-05", "0x10", "~", "'", '"', "\\", "#"]),
)  # fmt: skip
_KEYWORDS = [f"KEY{i}" for i in range(8)] + ["DATE-OBS", "RA", "A_B"]


@st.composite
def _cards(draw: st.DrawFn, keywords: list[str]) -> list[HeaderCard]:
    chosen = draw(st.lists(st.sampled_from(keywords), unique=True, max_size=6))
    return [
        HeaderCard(keyword=keyword, value=draw(_VALUES), unit=draw(st.sampled_from(["", "deg"])),
                   comment=draw(st.sampled_from(["", "a comment: with # and 'quotes'"])))
        for keyword in chosen
    ]  # fmt: skip


@st.composite
def _documents(draw: st.DrawFn) -> HeaderDocument:
    sensors = draw(st.lists(st.sampled_from(["R22_S11", "R22_S12", "R00_S00"]), unique=True))
    return HeaderDocument(
        imageName="MC_O_20261122_000042", generator="HeaderService:3", version="1.0",
        primary=draw(_cards(_KEYWORDS[:5])),
        detectors={sensor: draw(_cards(_KEYWORDS[5:])) for sensor in sensors},
        segments={},
        missing=[MissingKeyword(keyword="AIRTEMP", reason="nothing from Weather:0")],
    )  # fmt: skip


@given(_documents())
def test_a_document_reads_back_the_same_and_yaml_readers_read_the_same_values(
    document: HeaderDocument,
) -> None:
    data = dump_header_document(document)
    assert parse_header_document(data) == document
    assert yaml.safe_load(data) == json.loads(data)  # e.g. 1.0e-05, not 1e-05 (text to YAML 1.1)


@given(_documents())
def test_a_document_written_as_other_yaml_still_reads(document: HeaderDocument) -> None:
    """As earlier versions wrote it (block style), and as a YAML flow mapping that is
    no JSON: both begin like JSON or not, and both read through PyYAML."""
    raw = json.loads(dump_header_document(document))
    for style in (False, True):
        data = yaml.safe_dump(raw, default_flow_style=style, sort_keys=False).encode()
        assert parse_header_document(data) == document
