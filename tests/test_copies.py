"""Which received messages are extra copies a broker sent for overlapping filters (what
the bus drops), and which are messages to deliver."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from cscs.core.copies import OverlapCopies


def test_copies_beyond_the_first_are_dropped_as_many_as_the_filters_explain() -> None:
    copies = OverlapCopies()
    seen = [copies.is_copy("a/b", b"x", retained=False, matching_filters=3) for _ in range(4)]
    assert seen == [False, True, True, False]  # the 4th: a fourth message, not a copy


def test_one_matching_filter_or_a_retained_message_is_never_a_copy() -> None:
    """A retained message is what a new subscription is sent: it must reach it even when
    an older subscription saw the same bytes."""
    copies = OverlapCopies()
    assert not any(copies.is_copy("a", b"x", retained=False, matching_filters=1) for _ in range(3))
    assert not any(copies.is_copy("b", b"x", retained=True, matching_filters=2) for _ in range(3))


def test_other_bytes_or_another_topic_are_other_messages() -> None:
    copies = OverlapCopies()
    assert not copies.is_copy("a", b"seq 1", retained=False, matching_filters=2)
    assert not copies.is_copy("a", b"seq 2", retained=False, matching_filters=2)
    assert not copies.is_copy("b", b"seq 1", retained=False, matching_filters=2)
    assert copies.is_copy("a", b"seq 2", retained=False, matching_filters=2)


def test_after_a_reconnect_a_message_sent_again_is_delivered() -> None:
    """A QoS 1 redelivery on a new connection is the readers' to judge, not a copy."""
    copies = OverlapCopies()
    assert not copies.is_copy("a", b"x", retained=False, matching_filters=2)
    copies.clear()
    assert not copies.is_copy("a", b"x", retained=False, matching_filters=2)


@given(st.lists(st.binary(max_size=8), min_size=1, max_size=600), st.integers(2, 4))
def test_each_distinct_message_is_delivered_once_per_burst_of_copies(
    payloads: list[bytes], filters: int
) -> None:
    """Whatever arrives, every distinct message, sent with all its copies back to back,
    is delivered exactly once, and memory stays bounded."""
    copies = OverlapCopies(remembered=16)
    delivered = [
        payload
        for payload in dict.fromkeys(payloads)
        for _ in range(filters)
        if not copies.is_copy("t", payload, retained=False, matching_filters=filters)
    ]
    assert delivered == list(dict.fromkeys(payloads))
    assert len(copies) <= 16
