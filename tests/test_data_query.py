"""OCS Batch's data query: parsed safely from hostile text, selected through the catalog's
own code on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cscs.catalog import Catalog, CatalogError, Observation, QueryError, parse_query
from cscs.catalog.query import MAX_QUERY_LENGTH, Condition
from tests.test_catalog import row


def test_a_query_is_its_conditions() -> None:
    query = parse_query(
        "Instrument = LATISS AND dayObs = 20261120..20261121 and imageType in (BIAS, DARK) "
        'and groupId = "2026-11-21T01:02:03.000" and image in (AT_O_20261121_000001, '
        "AT_O_20261121_000005..AT_O_20261121_000009)"
    )
    assert query.conditions == (
        Condition("instrument", ("LATISS",)),
        Condition("dayObs", (), (("20261120", "20261121"),)),
        Condition("imageType", ("BIAS", "DARK")),
        Condition("groupId", ("2026-11-21T01:02:03.000",)),
        Condition(
            "image", ("AT_O_20261121_000001",), (("AT_O_20261121_000005", "AT_O_20261121_000009"),)
        ),
    )


@pytest.mark.parametrize(
    ("text", "position", "reason"),
    [
        ("", 1, "empty"),
        ("instrument LATISS", 12, "expected '=' or 'in' after instrument, found 'LATISS'"),
        ("instrument = LATISS dayObs = 1", 21, "expected 'and' or the end"),
        ("imgtype = BIAS", 1, "unknown field 'imgtype'"),
        ("dayObs = 2026112", 10, "not a day of observation"),
        ("image = AT_O_2026_1", 9, "not an image name"),
        ("imageType = BIAS..FLAT", 17, "imageType takes no range"),
        ("dayObs = 20261121..20261120", 20, "is empty"),
        ("image = AT_O_20261121_000001..CC_O_20261121_000002", 31, "of one camera"),
        ("imageType in (BIAS, DARK", 25, "expected ',' or ')', found the end of the query"),
        ("filter = r; DROP TABLE archived_files", 11, "unexpected character ';'"),
        ('groupId = "unterminated', 11, "quoted value must end"),
        ("sensor = R22_S99x", 10, "not a sensor name"),
        ("instrument = ", 14, "expected a value for instrument"),
    ],
)
def test_a_malformed_query_says_where_and_why(text: str, position: int, reason: str) -> None:
    with pytest.raises(QueryError, match=re.escape(reason)) as raised:
        parse_query(text)
    assert raised.value.position + 1 == position
    assert f"(at character {position})" in str(raised.value)


@given(st.text(max_size=300))
def test_any_text_parses_or_is_a_query_error(text: str) -> None:
    position = None
    try:
        query = parse_query(text)
    except QueryError as exc:
        position = exc.position
    else:
        assert query.conditions
    assert position is None or 0 <= position <= max(len(text), MAX_QUERY_LENGTH)


def test_an_overlong_query_is_refused_before_parsing() -> None:
    with pytest.raises(QueryError, match="longer than"):
        parse_query("image in (" + "AT_O_20261121_000001, " * 400 + ")")


def _observation(image: str, image_type: str, band: str = "r") -> Observation:
    return Observation(image, image_type, "group-1" if image.endswith("1") else "group-2",
                       f"{band}_03", band, 30.0)  # fmt: skip


def test_the_catalog_selects_what_the_query_names(catalog_url: str) -> None:
    catalog = Catalog(catalog_url)
    try:
        for number, kind in enumerate(["BIAS", "BIAS", "FLAT", "OBJECT"], start=1):
            image = f"CC_O_20261121_00000{number}"
            for sensor in ("R22_S00", "R22_S11"):
                catalog.record(dataclasses.replace(row(image, sensor), exposure_start_tai=number))
            catalog.record_observation(_observation(image, kind, "g" if number == 4 else "r"))
        catalog.record(row("CC_O_20261122_000001", "R22_S00", header=False))  # no header yet

        def names(text: str) -> list[tuple[str, str]]:
            return [(r.image_name[-1], r.sensor) for r in catalog.select(parse_query(text), 100)]

        assert names("imageType = BIAS and sensor = R22_S11") == [
            ("1", "R22_S11"),
            ("2", "R22_S11"),
        ]
        two_three = "image = CC_O_20261121_000002..CC_O_20261121_000003 and sensor in (R22_S00)"
        assert names(two_three) == [("2", "R22_S00"), ("3", "R22_S00")]
        assert names("filter = g") == [("4", "R22_S00"), ("4", "R22_S11")]  # by band
        assert names("filter = r_03 and groupId = group-1") == [("1", "R22_S00"), ("1", "R22_S11")]
        assert len(names("dayObs = 20261121..20261122")) == 9  # with the header-less one
        assert names("dayObs = 20261122 and imageType = BIAS") == []  # its type is unknown
        assert names("instrument = LATISS") == []
        # A value is data, never SQL: quotes and keywords find nothing and break nothing.
        assert names("groupId = \"x' OR '1'='1\"") == []
        with pytest.raises(CatalogError, match="more than 3 files"):
            catalog.select(parse_query("instrument = LSSTComCam"), 3)
    finally:
        catalog.close()
