"""Jittered exponential back-off."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from cscs.core.backoff import Backoff


@given(st.integers(min_value=0, max_value=2**32), st.integers(min_value=1, max_value=60))
def test_delays_grow_and_stay_within_bounds(seed: int, attempts: int) -> None:
    """Each delay lies in [ceiling/2, ceiling], the ceiling doubling up to the maximum."""
    backoff = Backoff(initial=0.1, maximum=2.0, rng=random.Random(seed))
    for n in range(attempts):
        ceiling = min(2.0, 0.1 * 2**n)
        assert ceiling / 2 <= backoff.next_delay() <= ceiling


def test_reset_starts_again() -> None:
    """After a success the next failure waits the shortest delay again."""
    backoff = Backoff(initial=0.1, maximum=2.0)
    for _ in range(10):
        backoff.next_delay()
    backoff.reset()
    assert backoff.next_delay() <= 0.1
