"""The on-connect configuration table, the retry policy and the reconnect backoff, directly (no bus)."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from gemma3nvla_ros.hardware.retry import MAX_RETRIES, ReconnectBackoff, run_with_retries
from gemma3nvla_ros.hardware.servo_config import (
    GAINS,
    SETTINGS,
    ServoSettings,
    check_setting,
    differences,
    motor_settings,
)
from gemma3nvla_ros.hardware.sts3215 import REG


def test_every_setting_names_a_register_of_the_control_table():
    for setting in motor_settings(ServoSettings(), gripper=True):
        assert setting.register in REG
    assert {r for r, *_ in SETTINGS.values()} <= set(REG)


def test_gripper_limits_only_on_the_gripper():
    arm = {s.register for s in motor_settings(ServoSettings(), gripper=False)}
    gripper = {s.register for s in motor_settings(ServoSettings(), gripper=True)}
    assert gripper - arm == {"Max_Torque_Limit", "Protection_Current", "Overload_Torque"}


def test_phase_clears_bit_4_and_keeps_the_other_bits():
    phase = next(s for s in motor_settings(ServoSettings(), gripper=False) if s.register == "Phase")
    assert phase.wanted(0x1C) == 0x0C
    assert phase.wanted(0x0C) == 0x0C  # already single-turn: nothing to write
    assert phase.wanted(0xFF) == 0xEF


def test_differences_lists_only_what_servo_memory_lacks():
    settings = motor_settings(ServoSettings(position_p_coefficient=20), gripper=False)
    current = {s.register: s.wanted(0x1C) for s in settings}  # all as wanted...
    current["P_Coefficient"] = 32  # ...but the factory P
    current["Phase"] = 0x1C  # and multi-turn feedback on
    assert differences(settings, current) == [("Phase", 0x0C), ("P_Coefficient", 20)]
    current.update(P_Coefficient=20, Phase=0x0C)
    assert differences(settings, current) == []


@pytest.mark.parametrize(
    ("name", "value", "error"),
    [
        ("position_p_coefficient", 0, "outside 1..255"),  # P 0: the servo would not hold (arm sags)
        ("position_d_coefficient", 256, "outside 0..255"),
        ("gripper_overload_torque", 101, "outside 1..100"),
        ("acceleration", 2.5, "must be an integer"),
        ("position_i_coefficient", True, "must be an integer"),
    ],
)
def test_bad_values_are_refused_with_the_register_named(name, value, error):
    with pytest.raises((TypeError, ValueError), match=error):
        check_setting(name, value)
    with pytest.raises((TypeError, ValueError), match=SETTINGS[name][0]):
        ServoSettings.from_mapping({name: value})


def test_from_mapping_takes_parameter_values_and_gains_name_registers():
    settings = ServoSettings.from_mapping({"position_p_coefficient": 24, "port": "/dev/x"})
    assert settings.gains() == {"P_Coefficient": 24, "I_Coefficient": 0, "D_Coefficient": 32}
    assert set(GAINS) <= set(SETTINGS)


@dataclass
class Counters:
    transactions: int = 0
    retries: int = 0
    recovered: int = 0
    failed: int = 0


def _attempts(outcomes):
    it = iter(outcomes)
    return lambda: next(it)


def test_a_retry_that_succeeds_is_counted_as_recovered():
    counters, failed = Counters(), []
    result, ok = run_with_retries(_attempts(["corrupt", "timeout", "ok"]), lambda r: r == "ok", 2, counters,
                                  failed.append)
    assert (result, ok) == ("ok", True)
    assert failed == ["corrupt", "timeout"]  # every failed try reaches the per-kind counting
    assert counters == Counters(transactions=1, retries=2, recovered=1, failed=0)


def test_first_try_success_is_not_a_retry():
    counters = Counters()
    assert run_with_retries(lambda: "ok", lambda r: r == "ok", 2, counters) == ("ok", True)
    assert counters == Counters(transactions=1)


def test_failure_after_all_tries_returns_the_last_outcome():
    counters = Counters()
    result, ok = run_with_retries(_attempts(["a", "b", "c", "ok"]), lambda r: r == "ok", 2, counters)
    assert (result, ok) == ("c", False)  # 1 + 2 tries, the fourth never made
    assert counters == Counters(transactions=1, retries=2, recovered=0, failed=1)


def test_exceptions_are_not_retried_and_retry_count_is_bounded():
    counters = Counters()

    def port_gone():
        raise OSError("port gone")

    with pytest.raises(OSError):
        run_with_retries(port_gone, bool, 2, counters)
    assert counters.retries == 0
    with pytest.raises(ValueError, match="retries"):
        run_with_retries(lambda: 1, bool, MAX_RETRIES + 1, counters)


def test_reconnect_tries_soon_after_a_loss_then_backs_off_to_the_cap():
    s = 1_000_000_000
    backoff = ReconnectBackoff(first_s=0.1, max_s=0.5)
    backoff.lost(10 * s)
    assert not backoff.due(10 * s + s // 20) and backoff.due(10 * s + s // 10)
    now = 10 * s + s // 10
    gaps = []
    for _ in range(5):  # each failed try waits twice as long, never more than max_s
        backoff.failed(now)
        gap = next(ns for ns in range(now, now + s, s // 100) if backoff.due(ns)) - now
        gaps.append(round(gap / s, 2))
        now += gap
    assert gaps == [0.2, 0.4, 0.5, 0.5, 0.5]
    backoff.lost(now)  # a new loss starts over
    assert backoff.due(now + s // 10) and not backoff.due(now + s // 20)
    with pytest.raises(ValueError):
        ReconnectBackoff(first_s=1.0, max_s=0.5)


def test_control_table_is_lerobots_sts3215_table():
    """Every register LeRobot can write (its STS3215 table) at the same address and size in the
    simulator's and the bus's table."""
    tables = pytest.importorskip("lerobot.motors.feetech.tables")
    theirs = {name.strip(): where for name, where in tables.MODEL_CONTROL_TABLE["sts3215"].items()}
    assert theirs == REG
