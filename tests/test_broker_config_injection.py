"""Issue 29, item 6: no line of the attacker's in the files `cscs broker-config` writes.

Mosquitto reads its password and ACL files line by line. A ``publish`` pattern holding a
line break (``dm/qc\\nuser night\\ntopic write …/evt/daqAvailable``) used to be written
verbatim, and on a real Mosquitto the operator ``night`` could then publish the camera's
``daqAvailable``. Every name and pattern is now checked against an allow-list where the
YAML is read, with an error naming the field and the cause, and again as the files are
made.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from cscs.cli import main
from cscs.core.broker import EmbeddedBroker, find_mosquitto, free_port
from cscs.core.broker_address import BrokerAddress
from cscs.core.bus import Bus
from cscs.ocs.broker_config import BrokerUsers, acl_text, write_broker_config

DAQ_AVAILABLE = "sec/Camera/1/evt/daqAvailable"
INJECTED = f"dm/qc\nuser night\ntopic write {DAQ_AVAILABLE}"
USER_LIST: list[dict[str, object]] = [
    {"name": "camera", "role": "csc", "cscs": ["Camera:1"]},
    {"name": "batch", "role": "csc", "cscs": ["OCSBatch:0"], "publish": ["dm/#"]},
    {"name": "night", "role": "operator"},
    {"name": "dashboard", "role": "monitor"},
]
USERS = {"prefix": "sec", "users": USER_LIST}


def _with(path: tuple[int, str], value: object) -> dict[str, object]:
    """USERS with one user's field replaced."""
    users = [dict(u) for u in USER_LIST]
    users[path[0]][path[1]] = value
    return {"prefix": "sec", "users": users}


@pytest.mark.broker
@pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")
async def test_an_injected_acl_line_grants_nothing_on_a_real_mosquitto(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A site has its broker's files; someone slips the injection into the users file and
    the files are made again. The broker started from what is then in the directory
    lets ``night`` command, but not publish the camera's ``daqAvailable``; and the
    edited file was refused up front, naming the field and the cause, the files as
    they were."""
    port, out, users = free_port(), tmp_path / "broker", tmp_path / "users.yaml"
    options = ["--out", str(out), "--host", "127.0.0.1", "--port", str(port)]
    users.write_text(yaml.safe_dump(USERS))
    assert await asyncio.to_thread(main, ["broker-config", str(users), *options]) == 0
    before = {name: (out / name).read_bytes() for name in ("acl", "passwd", "mosquitto.conf")}
    capsys.readouterr()

    users.write_text(yaml.safe_dump(_with((1, "publish"), ["dm/#", INJECTED])))
    refused = await asyncio.to_thread(main, ["broker-config", str(users), *options])
    error = capsys.readouterr().err

    async with EmbeddedBroker("mosquitto", port=port, config_file=out / "mosquitto.conf"):

        def bus(user: str) -> Bus:
            password = (out / "credentials" / user).read_text().strip()
            return Bus(BrokerAddress("127.0.0.1", port, user, password), connect_timeout=10.0)

        async with bus("dashboard") as monitor, monitor.subscription("sec/#") as seen:
            async with bus("night") as night:
                assert await night.publish(DAQ_AVAILABLE, b"{}", qos=1)  # dropped
                assert await night.publish("sec/Camera/1/cmd/enable", b"{}", qos=1)
            first = await seen.get(10)
    # Mosquitto hands one subscriber what it lets through in the order it came: had the
    # forged daqAvailable passed, it would have come first.
    assert first.topic == "sec/Camera/1/cmd/enable"
    assert refused == 2
    assert "users.1.publish" in error
    assert "character '\\n' is not allowed" in error
    assert {name: (out / name).read_bytes() for name in before} == before


@pytest.mark.parametrize(
    ("field", "value", "where", "cause"),
    [
        ((1, "publish"), ["dm/qc\ruser night"], "users.1.publish", "'\\r'"),
        ((1, "publish"), ["dm/qc\0x"], "users.1.publish", "'\\x00'"),
        ((1, "publish"), ["dm/qc topic"], "users.1.publish", "' '"),
        ((1, "publish"), ["dm/qc\t#"], "users.1.publish", "'\\t'"),
        ((1, "publish"), ["dm/\u2028x"], "users.1.publish", "'\\u2028'"),
        ((1, "cscs"), ["OCSBatch\n:0"], "users.1.cscs", "'\\n'"),
        ((1, "cscs"), ["OCSBatch:0\n"], "users.1.cscs", "'\\n'"),
        ((2, "name"), "night\n", "users.2.name", "'\\n'"),
        ((2, "name"), "night user", "users.2.name", "' '"),
    ],
)
def test_every_name_and_pattern_is_refused_where_the_file_is_read_unless_plainly_valid(
    field: tuple[int, str], value: object, where: str, cause: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        BrokerUsers.model_validate(_with(field, value))
    assert where in str(refused.value)
    assert f"character {cause} is not allowed" in str(refused.value)


def test_a_prefix_with_a_line_break_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"prefix\n.*character '\\n' is not allowed"):
        BrokerUsers.model_validate({**USERS, "prefix": "sec\n"})


def test_a_config_built_without_validation_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    """A caller of the library can skip pydantic (``model_construct``); the files are
    checked again as they are made, and nothing is written."""
    valid = BrokerUsers.model_validate(USERS)
    batch = valid.users[1].model_copy(update={"publish": [INJECTED]})
    hostile = valid.model_copy(update={"users": [valid.users[0], batch, *valid.users[2:]]})
    with pytest.raises(ValueError, match=r"publish pattern .*character '\\n' is not allowed"):
        write_broker_config(hostile, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_listener_and_tls_paths_cannot_add_lines_to_mosquitto_conf(tmp_path: Path) -> None:
    config = BrokerUsers.model_validate(USERS)
    with pytest.raises(ValueError, match=r"listener host .*character '\\n' is not allowed"):
        write_broker_config(config, tmp_path / "a", host="127.0.0.1\nallow_anonymous true")
    evil = tmp_path / "ca.pem\nallow_anonymous true"
    with pytest.raises(ValueError, match=r"TLS file .*control character"):
        write_broker_config(config, tmp_path / "b", tls=(evil, evil, evil))
    odd = tmp_path / "site\nallow_anonymous true"  # the directory is named in the file
    with pytest.raises(ValueError, match=r"output directory .*control character"):
        write_broker_config(config, odd)
    assert not (tmp_path / "a").exists()
    assert not (tmp_path / "b").exists()
    assert not odd.exists()


@given(st.text(max_size=40))
def test_whatever_a_pattern_holds_each_user_gets_exactly_its_own_lines(pattern: str) -> None:
    """Property: a users file is refused, or its ACL has one ``user`` line per user and
    nothing but ``user``/``topic`` lines (no text of the file can start a line)."""
    try:
        config = BrokerUsers.model_validate(_with((1, "publish"), [pattern]))
    except ValidationError:
        return
    lines = acl_text(config).split("\n")
    assert [line for line in lines if line.startswith("user ")] == [
        f"user {u['name']}" for u in USER_LIST
    ]
    for line in lines:
        assert line == "" or line.startswith(("# ", "user ", "topic write ", "topic read "))
        assert len(line.split(" ")) <= 3 or line.startswith("# "), line
