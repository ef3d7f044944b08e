"""The OODS's per-image bookkeeping (cscs/oods/ledger.py), by stepping time: when an
image's files are registered together, when it is announced (whole at once; otherwise
once settled), again on every change, refused files retried with back-off, and memory
bounded without losing what is not done."""

from __future__ import annotations

import random

from cscs.core.backoff import Backoff
from cscs.oods.ledger import Announcement, ImageLedger

IMAGE = "CC_O_20261121_000001"
NINE = [f"R22_S{x}{y}" for x in range(3) for y in range(3)]


def ledger(max_images: int = 100) -> ImageLedger:
    return ImageLedger(
        batch_delay=0.2, settle_delay=10.0, max_images=max_images,
        backoff=lambda: Backoff(initial=4.0, maximum=60.0, rng=random.Random(1)),
    )  # fmt: skip


def round_of(book: ImageLedger, now: float) -> set[str]:
    image = book.next_due(now)
    assert image is not None
    return book.take(image)


def test_files_of_an_image_whose_sensors_are_unknown_are_batched() -> None:
    """No endReadout heard: what comes within batch_delay of the first is one round."""
    book = ledger()
    book.archived(IMAGE, ["R22_S00"], 0.0)
    book.archived(IMAGE, ["R22_S01"], 0.1)
    assert book.next_due(0.15) is None
    assert round_of(book, 0.2) == {"R22_S00", "R22_S01"}
    # A later prompt never postpones a round already due.
    book.archived(IMAGE, ["R22_S02"], 0.3)
    book.archived(IMAGE, ["R22_S10"], 0.45)
    assert book.next_due(0.49) is None
    assert round_of(book, 0.5) == {"R22_S02", "R22_S10"}


def test_an_image_read_out_is_one_round_once_all_its_files_are_heard_of() -> None:
    """Not while the archiver still writes its other files; and the ones it said it
    could not archive are not waited for."""
    book = ledger()
    book.read_out(IMAGE, NINE, 0.0)
    for n, sensor in enumerate(NINE[:7]):
        book.archived(IMAGE, [sensor], 0.1 * n)
    assert book.next_due(5.0) is None
    book.retrieval_failed(IMAGE, [NINE[7]], 5.0)
    assert book.next_due(5.0) is None
    book.archived(IMAGE, [NINE[8]], 5.1)
    assert round_of(book, 5.1) == set(NINE) - {NINE[7]}  # at once: nothing to wait for


def test_files_heard_of_while_a_round_ran_are_due_once_it_is_over() -> None:
    """Reconciliation's round registers the whole image while its imageArchived come:
    those are due as soon as the round has made the image whole, not settle_delay on."""
    book = ledger()
    book.found(IMAGE, NINE, 0.0)
    assert round_of(book, 0.0) == set(NINE)
    book.read_out(IMAGE, NINE, 0.1)
    book.archived(IMAGE, NINE[:3], 0.1)  # while the round runs: not all heard of
    book.settled(IMAGE, in_repository=NINE, changed=NINE, refused={}, now=0.3)
    assert round_of(book, 0.3) == set(NINE[:3])
    book.settled(IMAGE, in_repository=NINE, changed=[], refused={}, now=0.4)
    assert [a.sensors for a in book.announcements(0.4)] == [tuple(NINE)]


def test_a_file_never_heard_of_holds_its_siblings_back_settle_delay_at_most() -> None:
    book = ledger()
    book.read_out(IMAGE, NINE, 0.0)
    book.archived(IMAGE, NINE[:8], 1.0)
    assert book.next_due(10.9) is None
    assert round_of(book, 11.0) == set(NINE[:8])


def test_a_whole_image_is_announced_once_when_its_last_file_is_in() -> None:
    book = ledger()
    book.read_out(IMAGE, NINE, 0.0)
    for n, sensor in enumerate(NINE[:8]):
        book.archived(IMAGE, [sensor], n * 0.05)
    book.take(IMAGE)
    book.settled(IMAGE, in_repository=NINE[:8], changed=NINE[:8], refused={}, now=0.6)
    assert book.announcements(0.6) == []  # one sensor still to come
    book.archived(IMAGE, [NINE[8]], 0.7)
    assert book.announcements(0.8) == []  # its round is waiting
    book.take(IMAGE)
    book.settled(IMAGE, in_repository=NINE, changed=[NINE[8]], refused={}, now=1.0)
    assert book.announcements(1.0) == [Announcement(IMAGE, tuple(NINE), ())]
    assert book.announcements(1.1) == []


def test_an_image_not_known_whole_is_announced_once_settled() -> None:
    """No endReadout heard (the OODS started later): what is in, after settle_delay."""
    book = ledger()
    book.archived(IMAGE, ["R22_S00"], 0.0)
    book.take(IMAGE)
    book.settled(IMAGE, in_repository=["R22_S00"], changed=["R22_S00"], refused={}, now=0.5)
    assert book.announcements(10.4) == []
    assert book.next_event() == 10.5
    assert book.announcements(10.5) == [Announcement(IMAGE, ("R22_S00",), ())]


def test_sensors_the_archiver_could_not_archive_are_not_waited_for() -> None:
    book = ledger()
    book.read_out(IMAGE, NINE, 0.0)
    book.archived(IMAGE, NINE[:8], 0.0)
    book.take(IMAGE)
    book.settled(IMAGE, in_repository=NINE[:8], changed=NINE[:8], refused={}, now=0.5)
    book.retrieval_failed(IMAGE, [NINE[8]], 0.6)
    assert [a.sensors for a in book.announcements(0.6)] == [tuple(NINE[:8])]
    # Archived later by catch-up: registered, and the image announced again.
    book.archived(IMAGE, [NINE[8]], 50.0)
    book.take(IMAGE)
    book.settled(IMAGE, in_repository=NINE, changed=[NINE[8]], refused={}, now=50.3)
    assert [a.sensors for a in book.announcements(50.3)] == [tuple(NINE)]


def test_a_refused_file_is_announced_retried_with_back_off_and_announced_again() -> None:
    book = ledger()
    book.read_out(IMAGE, NINE[:2], 0.0)
    book.archived(IMAGE, NINE[:2], 0.0)
    book.take(IMAGE)
    refused = {"R22_S01": "no EXPTIME"}
    book.settled(IMAGE, in_repository=["R22_S00"], changed=["R22_S00"], refused=refused, now=0.5)
    assert book.announcements(0.5) == [
        Announcement(IMAGE, ("R22_S00",), (("R22_S01", "no EXPTIME"),))
    ]
    assert book.refused_pending == 1
    first = book.next_event()
    assert first is not None
    assert 2.5 <= first <= 4.5
    assert round_of(book, first) == {"R22_S01"}
    book.settled(IMAGE, in_repository=["R22_S00"], changed=[], refused=refused, now=first)
    assert book.announcements(first) == []  # the same refusal: nothing new to say
    second = book.next_event()
    assert second is not None
    assert second - first >= 4.0
    assert round_of(book, second) == {"R22_S01"}
    book.settled(IMAGE, in_repository=NINE[:2], changed=["R22_S01"], refused={}, now=second)
    assert book.announcements(second) == [Announcement(IMAGE, tuple(NINE[:2]), ())]
    assert book.refused_pending == 0
    assert book.next_event() is None


def test_a_file_registered_again_with_its_completed_header_is_announced_again() -> None:
    book = ledger()
    book.read_out(IMAGE, ["R22_S11"], 0.0)
    book.archived(IMAGE, ["R22_S11"], 0.0)
    book.take(IMAGE)
    book.settled(IMAGE, in_repository=["R22_S11"], changed=["R22_S11"], refused={}, now=0.3)
    assert len(book.announcements(0.3)) == 1
    book.archived(IMAGE, ["R22_S11"], 40.0)  # the header completed: archived again
    book.take(IMAGE)
    book.settled(IMAGE, in_repository=["R22_S11"], changed=[], refused={}, now=40.3)
    assert book.announcements(40.3) == []  # a redelivery: nothing changed
    book.archived(IMAGE, ["R22_S11"], 41.0)
    book.take(IMAGE)
    book.settled(IMAGE, in_repository=["R22_S11"], changed=["R22_S11"], refused={}, now=41.3)
    assert len(book.announcements(41.3)) == 1


def test_a_repository_down_keeps_the_files_for_the_next_round() -> None:
    book = ledger()
    book.archived(IMAGE, ["R22_S00", "R22_S01"], 0.0)
    asked = book.take(IMAGE)
    book.unavailable(IMAGE, asked, retry_at=30.0)
    assert book.queue_depth == 1
    assert book.next_due(29.0) is None
    assert round_of(book, 30.0) == {"R22_S00", "R22_S01"}


def test_memory_is_bounded_and_what_is_dropped_is_said() -> None:
    """Done images go first; only when every one held has work left is the oldest
    dropped, and returned (the caller leaves it to reconciliation)."""
    book = ledger(max_images=3)
    names = [f"CC_O_20261121_{n:06d}" for n in range(1, 6)]
    book.archived(names[0], ["R22_S00"], 0.0)
    book.take(names[0])
    book.settled(names[0], in_repository=["R22_S00"], changed=[], refused={}, now=0.1)
    assert len(book.announcements(10.1)) == 1  # said: done with
    book.archived(names[1], ["R22_S00"], 0.2)
    book.archived(names[2], ["R22_S00"], 0.3)
    assert book.archived(names[3], ["R22_S00"], 0.4) == []  # the done one made room
    assert names[0] not in book
    assert book.archived(names[4], ["R22_S00"], 0.5) == [names[1]]
    assert names[1] not in book
    assert book.queue_depth == 3
