from __future__ import annotations

import pytest

from gemma3nvla_ros.hardware.calibration import EXAMPLE_CALIBRATION, SO101_MOTORS
from gemma3nvla_ros.hardware.sim_bus import PtySimBus
from gemma3nvla_ros.hardware.sim_servo import make_so101_bus


class FakeClock:
    """Manually advanced seconds, so the simulated motion is deterministic."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sim(clock):
    """A calibrated simulated SO-101 served on a pty; yields the PtySimBus."""
    bus = make_so101_bus(calibration=EXAMPLE_CALIBRATION, clock=clock)
    server = PtySimBus(bus).start()
    yield server
    server.stop()


@pytest.fixture
def feetech(sim):
    from gemma3nvla_ros.hardware.feetech_bus import FeetechBus

    bus = FeetechBus(sim.port, SO101_MOTORS, timeout_ms=20.0, retries=2)
    bus.connect()
    yield bus
    bus.close()
