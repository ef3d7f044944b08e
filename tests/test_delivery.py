"""What the MQTT bus does with each message the broker sends (``cscs/core/delivery.py``),
without a broker: the extra copies of overlapping filters, and when a ``manual_ack`` bus
tells the broker a message is safe. On the real brokers: ``test_bus.py``."""

from __future__ import annotations

import functools

from cscs.core.delivery import Deliver, Inbox
from cscs.core.transport import Message, Subscription


def readers(*subscriptions: Subscription) -> Deliver:
    """Hand a message to every matching subscription, as a transport does."""

    def deliver(message: Message) -> tuple[int, int]:
        matched = [s for s in subscriptions if s.matches(message.topic)]
        return len(matched), sum(s.offer(message) for s in matched)

    return deliver


def inbox_with(*subscriptions: Subscription, manual_ack: bool = True) -> Inbox:
    inbox = Inbox(readers(*subscriptions), manual_ack=manual_ack)
    inbox.connected()
    for subscription in subscriptions:
        inbox.subscribed(subscription.filter)
    return inbox


def taken(subscription: Subscription) -> list[Message]:
    return list(iter(subscription.get_nowait, None))


def test_a_message_is_acknowledged_once_every_reader_that_took_it_has() -> None:
    alarms, everything = Subscription("site/alarm"), Subscription("other/#")
    inbox = inbox_with(alarms, everything)
    acks: list[str] = []
    withheld = inbox.receive(
        "site/alarm", b"1", retained=False, qos=1, ack=lambda: acks.append("1"), now=0.0
    )
    (message,) = taken(alarms)
    assert (withheld, acks) == (False, [])  # safe with nobody yet
    message.ack()
    message.ack()  # a second call changes nothing
    assert acks == ["1"]
    inbox.receive("nobody/reads", b"2", retained=False, qos=1, ack=lambda: acks.append("2"),
                  now=0.0)  # fmt: skip
    assert acks == ["1", "2"]  # wanted by no one: acknowledged at once


def test_what_a_full_reader_could_not_take_is_never_acknowledged() -> None:
    full, roomy = Subscription("site/#", maxsize=1), Subscription("site/data")
    full.offer(Message("site/earlier", b""))
    inbox = inbox_with(full, roomy)
    acks: list[bytes] = []
    withheld = inbox.receive(
        "site/data", b"x", retained=False, qos=1, ack=lambda: acks.append(b"x"), now=0.0
    )
    (message,) = taken(roomy)
    message.ack()
    assert withheld
    assert acks == []  # so the broker sends it again on the next connection
    assert full.dropped == 1


def test_extra_copies_of_overlapping_filters_are_acknowledged_but_not_delivered() -> None:
    """amqtt sends a copy per matching filter: each reader gets the message once."""
    one, all_ = Subscription("site/alarm"), Subscription("site/+")
    inbox = inbox_with(one, all_)
    acks: list[int] = []
    for copy in range(2):
        ack = functools.partial(acks.append, copy)
        inbox.receive("site/alarm", b"a", retained=False, qos=1, ack=ack, now=0.0)
    assert acks == [1]  # the copy, at once; the original waits for its readers
    messages = taken(one) + taken(all_)
    assert [m.payload for m in messages] == [b"a", b"a"]
    for message in messages:
        message.ack()
    assert acks == [1, 0]


def test_a_message_sent_again_on_a_new_connection_is_delivered_again() -> None:
    """A redelivery after a reconnect is not a copy: the readers judge it."""
    one, all_ = Subscription("site/alarm"), Subscription("site/+")
    inbox = inbox_with(one, all_, manual_ack=False)
    inbox.receive("site/alarm", b"a", retained=False, qos=1, ack=lambda: None, now=0.0)
    inbox.connected()
    inbox.subscribed("site/alarm")
    inbox.subscribed("site/+")
    inbox.receive("site/alarm", b"a", retained=False, qos=1, ack=lambda: None, now=0.1)
    assert len(taken(one)) == 2


def test_without_manual_acks_nothing_is_acknowledged_by_the_bus() -> None:
    """The library has acknowledged on receipt; QoS 0 is never acknowledged."""
    reader = Subscription("site/#")
    acks: list[int] = []
    for manual, qos in ((False, 1), (True, 0)):
        inbox_with(reader, manual_ack=manual).receive(
            "site/x", b"", retained=False, qos=qos, ack=lambda: acks.append(1), now=0.0
        )
    messages = taken(reader)
    assert len(messages) == 2
    for message in messages:
        message.ack()  # a no-op
    assert acks == []
