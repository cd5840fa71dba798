"""RcutilsLogger: rcutils' line format, throttle/once/skip_first, levels."""
from __future__ import annotations

import re


def test_logger_format_throttle_once_skip_first(capfd):
    from gemma3nvla_ros.runtime.rcutils_logger import get_logger
    log = get_logger("fmt")
    log.info("hello")
    for _ in range(3):
        log.warn("throttled", throttle_duration_sec=60)
        log.info("once", once=True)
        log.info("skip", skip_first=True)
    log.debug("invisible")
    lines = capfd.readouterr().err.strip().splitlines()
    assert re.fullmatch(r"\[INFO\] \[\d+\.\d{9}\] \[fmt\]: hello", lines[0])
    text = "\n".join(lines)
    assert text.count("throttled") == 1 and text.count("once") == 1 and text.count("skip") == 2
    assert "invisible" not in text and "[WARN]" in text


def test_levels_and_child_loggers(capfd):
    from gemma3nvla_ros.runtime.rcutils_logger import LoggingSeverity, get_logger, set_logger_level
    parent = get_logger("arm")
    child = parent.get_child("gripper")
    set_logger_level("arm", LoggingSeverity.ERROR)
    try:
        child.warn("quiet")
        child.error("loud")
        parent.debug("nope")
        err = capfd.readouterr().err
        assert "quiet" not in err and "[arm.gripper]: loud" in err and "nope" not in err
        assert child.get_effective_level() == LoggingSeverity.ERROR
    finally:
        set_logger_level("arm", LoggingSeverity.UNSET)
