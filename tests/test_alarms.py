"""The Telemetry Gateway's alarm model, transition by transition, and its threshold
rules: what the night staff see of an alarm is what the Watcher would show them."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from cscs.telemetry_gateway.alarms import Alarm, AlarmError, Alarms, Severity
from cscs.telemetry_gateway.thresholds import ThresholdRule, ThresholdState

NONE, WARNING, SERIOUS, CRITICAL = Severity


def active(severity: Severity = WARNING, reason: str = "seeing 1.3") -> Alarm:
    alarm = Alarm("qc.seeing")
    alarm.set_severity(severity, reason, now=10.0)
    return alarm


# ---- raise, escalate, ameliorate, clear -------------------------------------------------


def test_a_nominal_alarm_told_none_does_not_change() -> None:
    alarm = Alarm("qc.seeing")
    assert not alarm.set_severity(NONE, "fine", now=1.0)
    assert alarm.nominal
    assert alarm.timestampSeverityNewest == 0.0


def test_raising_latches_the_max_severity_and_says_why() -> None:
    alarm = Alarm("qc.seeing")
    assert alarm.set_severity(WARNING, "seeing 1.3", now=5.0)
    assert (alarm.severity, alarm.maxSeverity, alarm.reason) == (WARNING, WARNING, "seeing 1.3")
    assert (alarm.timestampSeverityNewest, alarm.timestampMaxSeverity) == (5.0, 5.0)
    assert not alarm.acknowledged
    assert not alarm.nominal
    assert not alarm.stale


def test_the_same_verdict_again_is_no_change_but_a_new_reason_is() -> None:
    alarm = active(WARNING, "seeing 1.3")
    assert not alarm.set_severity(WARNING, "seeing 1.3", now=11.0)
    assert alarm.set_severity(WARNING, "seeing 1.35", now=12.0)
    assert alarm.timestampMaxSeverity == 10.0  # not worse than before


def test_escalating_raises_the_max_and_ameliorating_keeps_it() -> None:
    alarm = active(WARNING)
    alarm.set_severity(CRITICAL, "seeing 2.5", now=20.0)
    assert (alarm.severity, alarm.maxSeverity, alarm.timestampMaxSeverity) == (
        CRITICAL, CRITICAL, 20.0,
    )  # fmt: skip
    alarm.set_severity(SERIOUS, "seeing 1.6", now=30.0)
    assert (alarm.severity, alarm.maxSeverity) == (SERIOUS, CRITICAL)  # semi-active


def test_clearing_an_unacknowledged_alarm_leaves_it_stale_and_shown() -> None:
    alarm = active(SERIOUS)
    assert alarm.set_severity(NONE, "ignored when clear", now=20.0)
    assert alarm.stale
    assert (alarm.severity, alarm.maxSeverity, alarm.reason) == (NONE, SERIOUS, "seeing 1.3")
    alarms = Alarms()
    alarms.get("qc.seeing").set_severity(SERIOUS, "x", now=1.0)
    alarms.get("qc.seeing").set_severity(NONE, "", now=2.0)
    assert [a.name for a in alarms.not_nominal()] == ["qc.seeing"]


# ---- acknowledge -----------------------------------------------------------------------


def test_acknowledging_at_the_max_severity_or_above_is_accepted() -> None:
    alarm = active(SERIOUS)
    assert alarm.acknowledge(CRITICAL, "night staff", now=15.0)
    assert alarm.acknowledged
    assert (alarm.acknowledgedBy, alarm.timestampAcknowledged) == ("night staff", 15.0)
    assert alarm.maxSeverity is CRITICAL  # what was acknowledged
    assert not alarm.acknowledge(CRITICAL, "again", now=16.0)  # nothing new
    assert alarm.acknowledgedBy == "night staff"


def test_acknowledging_below_the_max_severity_is_refused_and_changes_nothing() -> None:
    alarm = active(CRITICAL)
    alarm.set_severity(WARNING, "better", now=11.0)
    before = alarm.as_event()
    with pytest.raises(AlarmError, match="cannot acknowledge at WARNING: it has been CRITICAL"):
        alarm.acknowledge(WARNING, "someone", now=12.0)
    assert alarm.as_event() == before


def test_an_acknowledged_alarm_that_clears_is_nominal_at_once() -> None:
    alarm = active(SERIOUS)
    alarm.acknowledge(SERIOUS, "staff", now=11.0)
    assert alarm.set_severity(NONE, "", now=12.0)
    assert alarm.nominal
    assert (alarm.acknowledged, alarm.acknowledgedBy) == (False, "")


def test_acknowledging_a_stale_alarm_makes_it_nominal() -> None:
    alarm = active(WARNING)
    alarm.set_severity(NONE, "", now=11.0)
    assert alarm.acknowledge(WARNING, "staff", now=12.0)
    assert alarm.nominal
    assert not alarm.acknowledge(WARNING, "staff", now=13.0)  # nothing to acknowledge


def test_worse_than_what_was_acknowledged_is_unacknowledged_again() -> None:
    alarm = active(WARNING)
    alarm.acknowledge(WARNING, "staff", now=11.0)
    assert not alarm.set_severity(WARNING, "seeing 1.3", now=12.0)  # the same: still ack'd
    alarm.set_severity(SERIOUS, "seeing 1.7", now=13.0)
    assert not alarm.acknowledged
    assert (alarm.maxSeverity, alarm.acknowledgedBy, alarm.timestampAcknowledged) == (
        SERIOUS, "", 13.0,
    )  # fmt: skip


def test_a_glob_acknowledges_all_or_none() -> None:
    alarms = Alarms()
    alarms.get("qc.seeing").set_severity(WARNING, "a", now=1.0)
    alarms.get("qc.zeroPoint").set_severity(SERIOUS, "b", now=1.0)
    alarms.get("dm.Archiver:1").set_severity(CRITICAL, "c", now=1.0)
    with pytest.raises(AlarmError, match=r"1 alarm\(s\) have been worse: qc.zeroPoint \(SERIOUS\)"):
        alarms.acknowledge("qc.*", WARNING, "staff", now=2.0)
    assert not any(a.acknowledged for a in alarms)
    changed = alarms.acknowledge("qc.*", SERIOUS, "staff", now=3.0)
    assert [a.name for a in changed] == ["qc.seeing", "qc.zeroPoint"]
    assert not alarms.get("dm.Archiver:1").acknowledged
    with pytest.raises(AlarmError, match=r"no alarm matches 'ocs\.\*'"):
        alarms.acknowledge("ocs.*", CRITICAL, "staff", now=4.0)


# ---- mute ------------------------------------------------------------------------------


def test_a_mute_hides_until_its_time_and_then_ends_by_itself() -> None:
    alarms = Alarms()
    alarms.get("qc.seeing").set_severity(WARNING, "a", now=1.0)
    [muted] = alarms.mute("qc.seeing", 60.0, SERIOUS, "staff", now=10.0)
    assert (muted.muted, muted.mutedSeverity, muted.mutedBy) == (True, SERIOUS, "staff")
    assert alarms.next_unmute() == 70.0
    assert alarms.expire_mutes(69.9) == []
    assert [a.name for a in alarms.expire_mutes(70.0)] == ["qc.seeing"]
    assert (muted.muted, muted.mutedBy, muted.timestampUnmute) == (False, "", 0.0)
    assert alarms.next_unmute() is None
    assert [a.name for a in alarms.not_nominal()] == ["qc.seeing"]  # muted or not


def test_unmute_ends_a_mute_and_bad_mutes_are_refused_before_any_change() -> None:
    alarms = Alarms()
    alarms.get("qc.seeing").set_severity(WARNING, "a", now=1.0)
    alarms.mute("qc.*", 60.0, WARNING, "staff", now=1.0)
    assert [a.name for a in alarms.unmute("qc.*")] == ["qc.seeing"]
    assert alarms.unmute("qc.*") == []  # already unmuted
    for duration, severity in ((0.0, WARNING), (-5.0, WARNING), (float("nan"), WARNING),
                               (1e9, WARNING), (60.0, NONE)):  # fmt: skip
        with pytest.raises(AlarmError):
            alarms.mute("qc.*", duration, severity, "staff", now=2.0)
    assert not alarms.get("qc.seeing").muted


def test_reasons_and_names_of_people_are_bounded_and_printable() -> None:
    alarm = Alarm("qc.seeing")
    alarm.set_severity(WARNING, "\x1b[31mred\n" + "x" * 10_000, now=1.0)
    assert alarm.reason.startswith("?[31mred?")
    assert len(alarm.reason) == 256
    alarm.acknowledge(WARNING, "a\nb", now=2.0)
    assert alarm.acknowledgedBy == "a?b"


def test_the_event_has_the_icds_fields_and_numbers() -> None:
    event = active(SERIOUS).as_event()
    assert set(event) == {
        "name", "severity", "reason", "maxSeverity", "acknowledged", "acknowledgedBy",
        "mutedSeverity", "mutedBy", "timestampSeverityNewest", "timestampMaxSeverity",
        "timestampAcknowledged", "timestampUnmute",
    }  # fmt: skip
    assert (event["severity"], event["maxSeverity"], event["mutedSeverity"]) == (3, 3, 1)


OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("set"), st.sampled_from(list(Severity))),
        st.tuples(st.just("ack"), st.sampled_from(list(Severity))),
        st.tuples(st.just("mute"), st.sampled_from(list(Severity))),
        st.tuples(st.just("unmute"), st.just(NONE)),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(OPERATIONS)
def test_whatever_happens_the_alarm_stays_coherent(operations: list[tuple[str, Severity]]) -> None:
    alarm = Alarm("any")
    for now, (operation, severity) in enumerate(operations, start=1):
        before = alarm.as_event()
        try:
            if operation == "set":
                alarm.set_severity(severity, f"r{now}", float(now))
            elif operation == "ack":
                alarm.acknowledge(severity, "staff", float(now))
            elif operation == "mute":
                alarm.mute(10.0, severity, "staff", float(now))
            else:
                alarm.unmute()
        except AlarmError:
            assert alarm.as_event() == before  # a refusal changes nothing
        assert alarm.maxSeverity >= alarm.severity
        assert alarm.nominal == (alarm.severity is NONE and alarm.maxSeverity is NONE)
        assert not (alarm.nominal and alarm.acknowledged)
        if alarm.nominal:
            assert alarm.reason == ""
        if alarm.severity is not NONE:
            assert alarm.reason  # an active alarm says why; a stale one still does


# ---- threshold rules -------------------------------------------------------------------

SEEING = ThresholdRule(name="qc.seeing", metric="psfFwhm", warning=1.2, serious=1.5,
                       critical=2.0, hysteresis=0.1)  # fmt: skip


def verdicts(rule: ThresholdRule, values: list[float]) -> list[Severity]:
    state = ThresholdState(rule)
    return [state.judge(v, f"image-{i}")[0] for i, v in enumerate(values)]


def test_a_value_reaches_each_level_as_it_crosses_it() -> None:
    assert verdicts(SEEING, [0.8, 1.2, 1.49, 1.5, 2.0, 3.0]) == [
        NONE, WARNING, WARNING, SERIOUS, CRITICAL, CRITICAL,
    ]  # fmt: skip


def test_on_the_way_down_a_severity_is_kept_until_the_level_minus_the_hysteresis() -> None:
    assert verdicts(SEEING, [2.1, 1.95, 1.91, 1.89, 1.45, 1.41, 1.39, 1.15, 1.11, 1.09]) == [
        CRITICAL, CRITICAL, CRITICAL, SERIOUS, SERIOUS, SERIOUS, WARNING, WARNING, WARNING,
        NONE,
    ]  # fmt: skip


def test_a_value_wandering_about_a_level_does_not_flap() -> None:
    assert verdicts(SEEING, [1.19, 1.21, 1.18, 1.22, 1.15, 1.21]) == [
        NONE, WARNING, WARNING, WARNING, WARNING, WARNING,
    ]  # fmt: skip


def test_a_low_is_bad_rule_mirrors_it_and_says_why() -> None:
    rule = ThresholdRule(name="qc.zeroPoint", metric="zeroPoint", direction="below",
                         warning=27.0, serious=26.5, hysteresis=0.05)  # fmt: skip
    state = ThresholdState(rule)
    assert state.judge(27.2, "a")[0] is NONE
    severity, reason = state.judge(26.4, "AT_O_20261121_000009")
    assert severity is SERIOUS
    assert reason == "zeroPoint 26.4 (AT_O_20261121_000009) below the SERIOUS level 26.5"
    assert state.judge(26.53, "c")[0] is SERIOUS  # within the hysteresis
    assert state.judge(26.56, "d")[0] is WARNING
    assert state.judge(27.06, "e")[0] is NONE


def test_a_window_judges_the_median_of_the_last_images() -> None:
    rule = SEEING.model_copy(update={"window": 3, "hysteresis": 0.0})
    # One bad image among good ones is not a bad night; three in a row are.
    assert verdicts(rule, [0.8, 2.5, 0.9, 0.8, 1.6, 1.7, 1.8]) == [
        NONE, NONE, NONE, NONE, NONE, SERIOUS, SERIOUS,
    ]  # fmt: skip
    state = ThresholdState(rule)
    for value in (1.6, 1.7):
        state.judge(value, "x")
    assert "median psfFwhm of the last 3 images 1.7" in state.judge(1.8, "y")[1]


@pytest.mark.parametrize(
    "levels",
    [{}, {"warning": 1.5, "serious": 1.2}, {"warning": 1.2, "serious": 1.2},
     {"warning": float("inf")}, {"warning": 1.2, "hysteresis": -1.0}],
)  # fmt: skip
def test_rules_that_cannot_mean_anything_are_refused(levels: dict[str, float]) -> None:
    with pytest.raises(ValidationError):
        ThresholdRule(name="qc.seeing", metric="psfFwhm", **levels)


def test_a_value_that_is_not_a_number_is_an_error_not_a_verdict() -> None:
    state = ThresholdState(SEEING)
    state.judge(1.6, "a")
    with pytest.raises(ValueError, match="psfFwhm of b is not a number"):
        state.judge(float("nan"), "b")
    assert state.severity is SERIOUS
    assert list(state.values) == [1.6]
