"""Which failures to connect are the broker refusing this client for good.

A broker that is down or restarting is waited for; one that rejects the login, or
presents a certificate this client does not trust, will do the same on every retry,
so the person starting the process is told at once what to fix. Pure: the bus hands in
what the MQTT library reported (the CONNACK code, the error's text).
"""

from __future__ import annotations

from cscs.core.broker_address import BrokerAddress
from cscs.core.transport import BrokerRefusedError

__all__ = ["REFUSED_LOGIN_CODES", "refusal"]

#: CONNACK codes for a login the broker does not accept: MQTT 3.1.1 bad user name or
#: password (4), not authorised (5); MQTT 5 the same (134, 135).
REFUSED_LOGIN_CODES = frozenset({4, 5, 134, 135})


def refusal(address: BrokerAddress, rc: int | None, error: str) -> BrokerRefusedError | None:
    """The error to give at once when the broker refused us for good (``rc``: the
    CONNACK code, if the broker answered with one; ``error``: the failure's text), or
    None when waiting and retrying may help."""
    who = f"user {address.username!r}" if address.username else "an anonymous client"
    if rc in REFUSED_LOGIN_CODES:
        return BrokerRefusedError(
            f"the broker at {address.url} refused {who}: {error} (check the user name and "
            "the password file: CSCS_BROKER_USERNAME, CSCS_BROKER_PASSWORD_FILE)"
        )
    if "CERTIFICATE_VERIFY_FAILED" in error or "certificate verify failed" in error:
        return BrokerRefusedError(
            f"the broker at {address.url} presented a certificate this client does not "
            f"trust: {error} (give its certificate authority: --ca-file or CSCS_BROKER_CA)"
        )
    return None
