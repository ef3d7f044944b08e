"""A broker's address from a URL, and which failures to connect are final: both pure, so
checked here without a broker (the refusals themselves: ``test_broker_security.py``)."""

from __future__ import annotations

import pytest

from cscs.core.broker_address import BrokerAddress
from cscs.core.refusal import refusal


def test_a_url_gives_host_port_login_and_tls() -> None:
    address = BrokerAddress.from_url("mqtts://night%40site:p%2Fw@broker.example:9000")
    assert (address.host, address.port, address.tls) == ("broker.example", 9000, True)
    assert (address.username, address.password) == ("night@site", "p/w")
    assert "p/w" not in repr(address)
    assert "p/w" not in address.url  # shown to people: the password never is
    assert BrokerAddress.from_url("mqtts://broker.example").port == 8883
    assert BrokerAddress.from_url("mqtt://broker.example").port == 1883
    assert BrokerAddress.from_url("mqtt://broker.example").tls_context() is None


@pytest.mark.parametrize("url", ["http://broker:1883", "broker:1883", "mqtt://broker:port"])
def test_a_url_that_is_not_a_broker_s_is_refused_with_an_example(url: str) -> None:
    with pytest.raises(ValueError, match="broker URL"):
        BrokerAddress.from_url(url)


@pytest.mark.parametrize("code", [4, 5, 134, 135])
def test_a_refused_login_is_final_and_names_what_to_check(code: int) -> None:
    """MQTT 3.1.1's codes 4 and 5, as paho reports them under MQTT 5's numbers too."""
    address = BrokerAddress.from_url("mqtt://night@broker.example")
    error = refusal(address, code, "Not authorized")
    assert error is not None
    assert "refused user 'night'" in str(error)
    assert "CSCS_BROKER_PASSWORD_FILE" in str(error)


def test_an_untrusted_certificate_is_final_and_names_the_ca_option() -> None:
    address = BrokerAddress.from_url("mqtts://broker.example")
    error = refusal(address, None, "[SSL: CERTIFICATE_VERIFY_FAILED] self-signed certificate")
    assert error is not None
    assert "--ca-file" in str(error)


@pytest.mark.parametrize(
    ("code", "text"), [(None, "[Errno 111] Connection refused"), (3, "Server unavailable")]
)
def test_a_broker_that_is_away_is_waited_for(code: int | None, text: str) -> None:
    assert refusal(BrokerAddress(), code, text) is None
