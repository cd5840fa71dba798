"""Diagnostics content: levels and values per motor, bus and camera."""
from __future__ import annotations

from types import SimpleNamespace

from gemma3nvla_ros.hardware import diagnostics as diag
from gemma3nvla_ros.hardware.feetech_bus import BusCounters, MotorHealth
from gemma3nvla_ros.hardware.scs_protocol import ERRBIT_OVERLOAD


def _health(**kw):
    h = MotorHealth("elbow_flex", 3, voltage_v=12.0, temperature_c=35, status=0, current_a=0.1)
    for k, v in kw.items():
        setattr(h, k, v)
    return h


def test_motor_levels():
    assert diag.motor_status(_health(), "hw", "br").level == diag.OK
    s = diag.motor_status(_health(temperature_c=62), "hw", "br")
    assert s.level == diag.WARN and "temperature 62 C" in s.message
    assert diag.motor_status(_health(temperature_c=71), "hw", "br").level == diag.ERROR
    s = diag.motor_status(_health(status=ERRBIT_OVERLOAD), "hw", "br")
    assert s.level == diag.ERROR and "overload" in s.message and s.values["status_bits"] == "overload"
    s = diag.motor_status(_health(consecutive_failures=3, no_reply=3), "hw", "br")
    assert s.level == diag.ERROR and "not answering" in s.message and s.values["no_reply"] == "3"
    assert diag.motor_status(_health(voltage_v=5.0), "hw", "br").level == diag.WARN
    s = diag.motor_status(MotorHealth("gripper", 6), "hw", "br")  # never read yet
    assert s.level == diag.OK and s.values["voltage_V"] == "unknown"
    assert s.name == "br: motor gripper (id 6)"


def test_bus_levels_and_counters():
    c = BusCounters(transactions=10, retries=2, no_reply=1, bad_checksum=1)
    ok = diag.bus_status(c, prefix="br", hardware_id="hw", connected=True, fault="", extra={"watchdog": "idle"})
    assert ok.level == diag.OK and ok.values["retries"] == "2" and ok.values["watchdog"] == "idle"
    assert diag.bus_status(c, prefix="br", hardware_id="hw", connected=True, fault="read failed", extra={}).level == diag.WARN
    lost = diag.bus_status(c, prefix="br", hardware_id="hw", connected=False, fault="port gone", extra={})
    assert lost.level == diag.ERROR and lost.message == "port gone"


def test_camera_levels():
    kw = dict(node="n", camera="front", source="device:0", last_error="", configured_fps=30.0, values={})
    fresh = dict(seconds_since_last_frame=0.03)
    assert diag.camera_status(connected=True, ended=False, measured_fps=29.0, frames=100, **fresh, **kw).level == diag.OK
    assert diag.camera_status(connected=True, ended=False, measured_fps=9.0, frames=100, **fresh, **kw).level == diag.WARN
    s = diag.camera_status(connected=False, ended=False, measured_fps=0.0, frames=100, **fresh,
                           **{**kw, "last_error": "gone"})
    assert s.level == diag.ERROR and "gone" in s.message


def test_stale_thresholds_scale_with_the_frame_period_above_a_floor():
    assert diag.stale_thresholds(30.0) == (0.2, 1.0)  # 3 and 10 periods are 0.1 s and 0.33 s: the floors
    assert diag.stale_thresholds(2.0) == (1.5, 5.0)  # a slow camera is not stale between two of its frames
    assert [diag.staleness_level(s, 30.0) for s in (0.0, 0.15, 0.3, 0.99, 1.2)] == [
        diag.OK, diag.OK, diag.WARN, diag.WARN, diag.ERROR]


def test_a_camera_that_stops_delivering_is_warn_then_error_with_its_age():
    """A read that blocks raises nothing and leaves `connected` true: the age of the last frame must say it."""
    kw = dict(node="n", camera="front", source="device:0", connected=True, ended=False, last_error="",
              configured_fps=30.0, frames=500, values={})
    ok = diag.camera_status(measured_fps=30.0, seconds_since_last_frame=0.04, **kw)
    assert ok.level == diag.OK and ok.values["seconds_since_last_frame"] == "0.04"
    warn = diag.camera_status(measured_fps=25.0, seconds_since_last_frame=0.5, **kw)
    assert warn.level == diag.WARN and "no frame for 0.5 s" in warn.message and "stalled" in warn.message
    error = diag.camera_status(measured_fps=12.0, seconds_since_last_frame=3.0, **kw)
    assert error.level == diag.ERROR and "no frame for 3.0 s" in error.message
    assert error.values["seconds_since_last_frame"] == "3.00"
    # A file that ended without loop is expected to stop; a lost device says why it stopped.
    assert diag.camera_status(**{**kw, "ended": True}, measured_fps=0.0, seconds_since_last_frame=60.0).level == diag.OK
    lost = diag.camera_status(**{**kw, "connected": False, "last_error": "gone"}, measured_fps=0.0,
                              seconds_since_last_frame=3.0)
    assert lost.level == diag.ERROR and "camera lost" in lost.message


def test_to_diagnostic_array_with_stand_in_message_classes():
    class Msg(SimpleNamespace):
        pass

    msgs = SimpleNamespace(
        DiagnosticArray=lambda: Msg(header=Msg(stamp=None), status=[]),
        DiagnosticStatus=lambda: Msg(),
        KeyValue=lambda key, value: Msg(key=key, value=value),
    )
    arr = diag.to_diagnostic_array([diag.Status("a", diag.ERROR, "m", "hw", {"k": "v"})], "stamp", msgs)
    (status,) = arr.status
    assert status.level == b"\x02" and status.values[0].key == "k" and arr.header.stamp == "stamp"


def test_torque_off_while_the_bridge_holds_is_an_error():
    """An overload trip (Unloading_Condition) or a servo brown-out switches torque off by itself; once
    the alarm bit clears, everything else reads OK while the joint is limp. Torque must be reported."""
    s = diag.motor_status(_health(torque_enabled=False), "hw", "br", expect_torque=True)
    assert s.level == diag.ERROR and "torque off" in s.message and s.values["torque"] == "off"
    assert "re-enables it where it stands" in s.message and "restart the bridge" not in s.message
    # Brought back by the bridge (recover_motor): OK again, and counted.
    s = diag.motor_status(_health(torque_enabled=True, recoveries=2), "hw", "br", expect_torque=True)
    assert s.level == diag.OK and s.values["recoveries"] == "2"
    assert diag.motor_status(_health(torque_enabled=True), "hw", "br", expect_torque=True).level == diag.OK
    # Not expected (bridge disconnected / torque disabled on purpose) or not read yet: no error from it.
    assert diag.motor_status(_health(torque_enabled=False), "hw", "br").level == diag.OK
    s = diag.motor_status(_health(), "hw", "br", expect_torque=True)
    assert s.level == diag.OK and s.values["torque"] == "unknown"
