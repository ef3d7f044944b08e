"""Which received messages are extra copies a broker sent for overlapping filters (what
the bus drops), and which are messages to deliver."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from cscs.core.copies import OverlapCopies


def test_copies_beyond_the_first_are_dropped_as_many_as_the_filters_explain() -> None:
    copies = OverlapCopies()
    seen = [
        copies.is_copy("a/b", b"x", retained=False, matching_filters=3, now=0.0) for _ in range(4)
    ]
    assert seen == [False, True, True, False]  # the 4th: a fourth message, not a copy


def test_one_matching_filter_or_a_retained_message_is_never_a_copy() -> None:
    """A retained message is what a new subscription is sent: it must reach it even when
    an older subscription saw the same bytes."""
    copies = OverlapCopies()
    assert not any(
        copies.is_copy("a", b"x", retained=False, matching_filters=1, now=0.0) for _ in range(3)
    )
    assert not any(
        copies.is_copy("b", b"x", retained=True, matching_filters=2, now=0.0) for _ in range(3)
    )


def test_other_bytes_or_another_topic_are_other_messages() -> None:
    copies = OverlapCopies()
    assert not copies.is_copy("a", b"seq 1", retained=False, matching_filters=2, now=0.0)
    assert not copies.is_copy("a", b"seq 2", retained=False, matching_filters=2, now=0.0)
    assert not copies.is_copy("b", b"seq 1", retained=False, matching_filters=2, now=0.0)
    assert copies.is_copy("a", b"seq 2", retained=False, matching_filters=2, now=0.0)


def test_after_a_reconnect_a_message_sent_again_is_delivered() -> None:
    """A QoS 1 redelivery on a new connection is the readers' to judge, not a copy."""
    copies = OverlapCopies()
    assert not copies.is_copy("a", b"x", retained=False, matching_filters=2, now=0.0)
    copies.clear()
    assert not copies.is_copy("a", b"x", retained=False, matching_filters=2, now=0.0)


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
        if not copies.is_copy("t", payload, retained=False, matching_filters=filters, now=0.0)
    ]
    assert delivered == list(dict.fromkeys(payloads))
    assert len(copies) <= 16


def test_a_copy_that_never_comes_is_forgotten_after_the_window() -> None:
    """Mosquitto sends one copy however many filters match: the copy waited for never
    comes, and the same bytes a window later are a message, not a copy."""
    copies = OverlapCopies(window=1.0)
    assert not copies.is_copy("a", b"will", retained=False, matching_filters=2, now=10.0)
    assert not copies.is_copy("a", b"will", retained=False, matching_filters=2, now=11.5)
    assert copies.is_copy("a", b"will", retained=False, matching_filters=2, now=11.6)
    assert not copies.is_copy("b", b"x", retained=False, matching_filters=2, now=20.0)
    assert len(copies) == 1  # what was older than the window is gone
