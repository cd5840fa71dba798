"""ActionQueue (the action aggregator's pure logic) against LeRobot's own code (0.4.4 and 0.6).

LeRobot's async client cannot be imported here (it needs grpc and a robot), so the reference runs
LeRobot's own method bodies: ``RobotClient._aggregate_action_queues``, ``control_loop_action`` and
``_ready_to_send_observation`` and ``PolicyServer._time_action_chunk`` are compiled from the installed
sources onto a stub holding the attributes they use. Temporal ensembling is checked against
``ACTTemporalEnsembler`` itself.
"""
from __future__ import annotations

import ast
import importlib.util
import logging
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from queue import Queue
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from lerobot.policies.act.modeling_act import ACTTemporalEnsembler


def _async_inference_without_grpc() -> None:
    """Makes ``lerobot.async_inference``'s modules importable without running its package ``__init__``, which in
    LeRobot 0.6 refuses to import without grpcio (``lerobot[async]``, not installed here); the aggregation code
    (``configs``, ``helpers``) does not use grpc."""
    import sys
    import types

    spec = importlib.util.find_spec("lerobot.async_inference")
    assert spec is not None and spec.submodule_search_locations
    package = types.ModuleType("lerobot.async_inference")
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__ = spec
    sys.modules.setdefault("lerobot.async_inference", package)


_async_inference_without_grpc()
from lerobot.async_inference.configs import AGGREGATE_FUNCTIONS  # noqa: E402
from lerobot.async_inference.helpers import TimedAction  # noqa: E402

from gemma3nvla_ros.control.action_queue import (
    STRATEGIES,
    ActionQueue,
    ChunkRejected,
    REQUEST_INTERVAL_NS,
    MergeReport,
    SetpointStream,
    chunk_arrays,
    clamp_step,
    needs_chunk,
    validate_chunk,
)

MS = 1_000_000
FPS = 30
P30 = 33_333_333  # ns, the node's period at 30 Hz
P = 10 * MS  # a round period for the hand-computed cases
S = 1_700_000_000_123_456_789  # an epoch-like stamp: times must survive int64 nanoseconds
JOINTS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
LEROBOT_STRATEGIES = [s for s in STRATEGIES if s != "temporal_ensemble"]


# ---------------------------------------------------------------------------------------------- LeRobot


def _lerobot_methods(module: str, cls_name: str, names: set[str]) -> dict[str, Callable[..., Any]]:
    """Compile the named methods of a LeRobot class from its installed source, without importing the module."""
    spec = importlib.util.find_spec("lerobot.async_inference")
    assert spec is not None and spec.submodule_search_locations
    path = Path(spec.submodule_search_locations[0]) / f"{module}.py"
    tree = ast.parse(path.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls_name)
    funcs = [n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name in names]
    assert {f.name for f in funcs} == names, f"LeRobot {cls_name} lacks {names - {f.name for f in funcs}}"
    namespace: dict[str, Any] = {
        "Queue": Queue, "TimedAction": TimedAction, "torch": torch, "Callable": Callable, "Any": Any, "time": time,
    }
    exec(compile(ast.Module(body=funcs, type_ignores=[]), str(path), "exec"), namespace)  # noqa: S102
    return {name: namespace[name] for name in names}


_CLIENT = _lerobot_methods(
    "robot_client",
    "RobotClient",
    {"_aggregate_action_queues", "control_loop_action", "_ready_to_send_observation", "_action_tensor_to_action_dict"},
)
_SERVER = _lerobot_methods("policy_server", "PolicyServer", {"_time_action_chunk"})


class LeRobotClient:
    """RobotClient's queue state (as its __init__ sets it) with LeRobot's own methods on top."""

    logger = logging.getLogger("lerobot_reference")
    _aggregate_action_queues = _CLIENT["_aggregate_action_queues"]
    control_loop_action = _CLIENT["control_loop_action"]
    _ready_to_send_observation = _CLIENT["_ready_to_send_observation"]
    _action_tensor_to_action_dict = _CLIENT["_action_tensor_to_action_dict"]

    def __init__(self, threshold: float, aggregate: str) -> None:
        self.latest_action_lock = threading.Lock()
        self.latest_action = -1
        self.action_chunk_size = -1
        self._chunk_size_threshold = threshold
        self.action_queue: Queue = Queue()
        self.action_queue_lock = threading.Lock()
        self.action_queue_size: list[int] = []
        self.robot = SimpleNamespace(action_features=JOINTS, send_action=lambda action: action)
        self.aggregate_fn = AGGREGATE_FUNCTIONS[aggregate]
        self.server = SimpleNamespace(config=SimpleNamespace(environment_dt=1 / FPS))

    def receive(self, stamp_s: float, chunk: np.ndarray, obs_timestep: int) -> list[TimedAction]:
        """What receive_actions does with a chunk the server timed with PolicyServer._time_action_chunk."""
        timed = _SERVER["_time_action_chunk"](self.server, stamp_s, list(torch.from_numpy(chunk)), obs_timestep)
        self.action_chunk_size = max(self.action_chunk_size, len(timed))
        self._aggregate_action_queues(timed, self.aggregate_fn)
        return timed

    def queued(self) -> tuple[list[int], np.ndarray]:
        items = list(self.action_queue.queue)
        return [a.get_timestep() for a in items], np.array([a.get_action().numpy() for a in items])


def _chunk_times(stamp_ns: int, n: int) -> np.ndarray:
    """Absolute times as the policy node sends them: time_from_start = i / fps, rounded to whole ns."""
    return stamp_ns + np.array([round(i * 1e9 / FPS) for i in range(n)], dtype=np.int64)


@pytest.mark.parametrize("strategy", LEROBOT_STRATEGIES)
@pytest.mark.parametrize("phase", [0, P30 // 3, P30 - 1])
def test_closed_loop_equals_lerobot_async_client(strategy, phase):
    """Tick by tick, the setpoints, the queue after each merge and the observation trigger equal LeRobot's."""
    rng = np.random.default_rng([STRATEGIES.index(strategy), phase])
    chunk_size, threshold = 50, 0.5
    client = LeRobotClient(threshold, strategy)
    queue = ActionQueue(P30, strategy)
    t0 = S  # slot 0, LeRobot's timestep 0

    def deliver(obs_step: int, now_ns: int) -> None:
        chunk = rng.normal(size=(chunk_size, len(JOINTS)))
        latest_before = client.latest_action
        before = {ts for ts in client.queued()[0]}
        timed = client.receive((t0 + obs_step * P30) / 1e9, chunk, obs_step)
        report = queue.merge(_chunk_times(t0 + obs_step * P30, chunk_size), chunk, now_ns)
        steps = [a.get_timestep() for a in timed]
        live = [s for s in steps if s > latest_before]
        assert report == MergeReport(
            dropped_past=len(steps) - len(live),
            merged=sum(s in before for s in live),
            added=sum(s not in before for s in live),
        )
        lerobot_steps, lerobot_actions = client.queued()
        times, positions = queue.plan()
        assert times.tolist() == [t0 + s * P30 for s in lerobot_steps]
        assert np.array_equal(positions, lerobot_actions)  # bit for bit

    deliver(0, t0 - 1)  # the first chunk arrives before its first slot: nothing dropped, as in LeRobot
    in_flight: tuple[int, int] | None = None
    merges = 0
    for tick in range(400):
        now = t0 + tick * P30 + phase
        assert not client.action_queue.empty(), "scenario must keep LeRobot's queue fed (it stalls when dry)"
        performed = client.control_loop_action()
        setpoint = queue.next_setpoint(now)
        assert setpoint is not None
        assert setpoint.tolist() == [performed[j] for j in JOINTS]
        assert client.latest_action == tick
        ready = client._ready_to_send_observation()
        assert needs_chunk(queue.remaining(now), chunk_size, threshold) == ready
        if ready and in_flight is None:
            in_flight = (tick + int(rng.integers(0, 20)), max(client.latest_action, 0))
        if in_flight is not None and in_flight[0] == tick:
            # Anywhere before the next tick, possibly after the next slot's time (then it is due, not past).
            deliver(in_flight[1], now + int(rng.integers(0, P30)))
            in_flight = None
            merges += 1
    assert merges >= 10


def test_blends_are_lerobots_functions():
    rng = np.random.default_rng(1)
    old, new = rng.normal(size=(2, 7, len(JOINTS)))
    for strategy in LEROBOT_STRATEGIES:
        queue = ActionQueue(P, strategy)
        queue.merge(S + P * np.arange(7), old, now_ns=S - 1)
        queue.merge(S + P * np.arange(7), new, now_ns=S - 1)
        expected = AGGREGATE_FUNCTIONS[strategy](torch.from_numpy(old), torch.from_numpy(new)).numpy()
        assert np.array_equal(queue.plan()[1], expected), strategy


@pytest.mark.parametrize("strategy", LEROBOT_STRATEGIES)
def test_lerobot_strategies_keep_only_the_incoming_chunk(strategy):
    queue = ActionQueue(P, strategy)
    queue.merge(S + P * np.arange(10), np.zeros((10, 2)), now_ns=S - 1)
    report = queue.merge(S + P * np.arange(2, 6), np.ones((4, 2)), now_ns=S + P)  # slot 1 due, never sent
    assert report == MergeReport(dropped_past=0, merged=4, added=0)
    assert queue.plan()[0].tolist() == [S + k * P for k in range(2, 6)]  # slot 1 and slots 6..9 discarded


# ---------------------------------------------------------------------------------------------- ACT


@pytest.mark.parametrize("m", [0.01, 0.0, 0.3, -0.2])
@pytest.mark.parametrize("float64_weights", [False, True])
def test_temporal_ensemble_equals_act(m, float64_weights):
    """ACT's regime: a chunk every step, starting at that step; every output and the whole plan match."""
    rng = np.random.default_rng(7)
    n, steps = 20, 60
    ensembler = ACTTemporalEnsembler(m, n)
    if float64_weights:  # same algorithm with our precision: agreement to rounding
        ensembler.ensemble_weights = torch.exp(-m * torch.arange(n, dtype=torch.float64))
        ensembler.ensemble_weights_cumsum = torch.cumsum(ensembler.ensemble_weights, dim=0)
    tol = dict(rtol=1e-12, atol=1e-12) if float64_weights else dict(rtol=2e-6, atol=1e-6)
    queue = ActionQueue(P, "temporal_ensemble", ensemble_m=m)
    for t in range(steps):
        chunk = rng.normal(size=(n, len(JOINTS)))
        expected = ensembler.update(torch.from_numpy(chunk)[None])[0].numpy()
        report = queue.merge(S + P * (t + np.arange(n)), chunk, now_ns=S + t * P - 1)
        assert report == MergeReport(dropped_past=0, merged=min(t, 1) * (n - 1), added=n - min(t, 1) * (n - 1))
        np.testing.assert_allclose(queue.next_setpoint(S + t * P), expected, **tol)
        times, plan = queue.plan()
        assert times.tolist() == [S + k * P for k in range(t + 1, t + n)]
        np.testing.assert_allclose(plan, ensembler.ensembled_actions[0].numpy(), **tol)


def test_temporal_ensemble_with_latency_and_uneven_chunks():
    """Each slot is the exp(-m i)-weighted mean (i = 0 oldest) of all predictions made while it was live;
    slots beyond a shorter chunk's end keep their older predictions."""
    rng = np.random.default_rng(3)
    m = 0.1
    queue = ActionQueue(P, "temporal_ensemble", ensemble_m=m)
    predictions: dict[int, list[np.ndarray]] = {}
    last_sent = -1
    kept_beyond_end = 0
    for tick in range(300):
        if tick % 7 == 0:
            obs_step = max(tick - int(rng.integers(0, 6)), 0)  # the chunk's observation, some ticks ago
            n = int(rng.integers(10, 40))
            chunk = rng.normal(size=(n, 3))
            queued_end = queue.plan()[0][-1] if len(queue) else None
            queue.merge(S + P * (obs_step + np.arange(n)), chunk, now_ns=S + tick * P - 1)
            for i in range(n):
                if obs_step + i > last_sent:
                    predictions.setdefault(obs_step + i, []).append(chunk[i])
            if queued_end is not None and queued_end > S + P * (obs_step + n - 1):
                kept_beyond_end += 1
                assert queue.plan()[0][-1] == queued_end
        setpoint = queue.next_setpoint(S + tick * P)
        if tick not in predictions:
            assert setpoint is None
            continue
        values = np.array(predictions[tick])
        weights = np.exp(-m * np.arange(len(values)))
        np.testing.assert_allclose(setpoint, weights @ values / weights.sum(), rtol=1e-12, atol=1e-12)
        last_sent = tick
    assert kept_beyond_end > 0


def test_switch_to_ensemble_counts_blended_slot_once():
    queue = ActionQueue(P, "average")
    queue.merge(S + P * np.arange(3), np.zeros((3, 1)), now_ns=S - 1)
    queue.merge(S + P * np.arange(3), np.full((3, 1), 2.0), now_ns=S - 1)  # 1.0 each
    queue.strategy = "temporal_ensemble"
    queue.ensemble_m = 0.0
    queue.merge(S + P * np.arange(3), np.full((3, 1), 4.0), now_ns=S - 1)
    assert queue.plan()[1][:, 0].tolist() == [2.5, 2.5, 2.5]


# ---------------------------------------------------------------------------------------------- time


def test_latency_drops_exactly_the_passed_setpoints():
    queue = ActionQueue(P)
    chunk = np.arange(50, dtype=float)[:, None]
    # 200 ms of inference: slots 0..19 passed; slot 20 (at exactly now) is due and not yet sent.
    report = queue.merge(S + P * np.arange(50), chunk, now_ns=S + 200 * MS)
    assert report == MergeReport(dropped_past=20, merged=0, added=30)
    assert queue.anchor_ns == S
    assert queue.remaining(S + 200 * MS) == 29
    assert queue.next_setpoint(S + 200 * MS).tolist() == [20.0]


def test_one_ns_earlier_keeps_one_more():
    queue = ActionQueue(P)
    report = queue.merge(S + P * np.arange(50), np.zeros((50, 1)), now_ns=S + 200 * MS - 1)
    assert report == MergeReport(dropped_past=19, merged=0, added=31)
    assert queue.remaining(S + 200 * MS - 1) == 30


def test_next_setpoint_boundaries_and_no_replay():
    queue = ActionQueue(P)
    queue.merge(S + P * np.arange(10), np.arange(10, dtype=float)[:, None], now_ns=S - 1)
    assert queue.next_setpoint(S - 1) is None  # nothing due yet
    assert queue.next_setpoint(S).tolist() == [0.0]
    assert queue.next_setpoint(S) is None  # no replay
    assert queue.next_setpoint(S + P - 1) is None
    assert queue.next_setpoint(S + 4 * P + 5).tolist() == [4.0]  # late tick: newest due, 1..3 skipped
    assert queue.next_setpoint(S + 4 * P + 6) is None
    assert queue.remaining(S + 4 * P + 6) == 5
    assert queue.next_setpoint(S + 100 * P).tolist() == [9.0]
    assert queue.next_setpoint(S + 101 * P) is None  # empty: the node holds its last setpoint
    assert queue.remaining(S + 101 * P) == 0


def test_sent_slots_are_never_merged_again_even_if_now_goes_back():
    queue = ActionQueue(P)
    queue.merge(S + P * np.arange(10), np.zeros((10, 1)), now_ns=S - 1)
    queue.next_setpoint(S + 5 * P)
    report = queue.merge(S + P * np.arange(10), np.ones((10, 1)), now_ns=S + 2 * P)
    assert report == MergeReport(dropped_past=6, merged=4, added=0)
    assert queue.plan()[0][0] == S + 6 * P


def test_merge_after_slot_time_before_its_tick_replaces_the_due_slot():
    """Ticks lag the grid by 0.7 period: a merge at 0.3 period into slot 5 must not make tick 5 hold."""
    queue = ActionQueue(P, "latest_only")
    queue.merge(S + P * np.arange(20), np.zeros((20, 1)), now_ns=S - 1)
    for k in range(5):
        assert queue.next_setpoint(S + k * P + 7 * MS).tolist() == [0.0]
    report = queue.merge(S + P * np.arange(20), np.ones((20, 1)), now_ns=S + 5 * P + 3 * MS)
    assert report.dropped_past == 5
    assert queue.next_setpoint(S + 5 * P + 7 * MS).tolist() == [1.0]


def test_chunk_entirely_in_the_past_changes_nothing():
    queue = ActionQueue(P)
    with pytest.raises(ChunkRejected, match="chunk lies entirely in the past"):
        queue.merge(S + P * np.arange(5), np.zeros((5, 1)), now_ns=S + 5 * P)
    assert queue.anchor_ns is None  # a rejected first chunk sets no anchor
    queue.merge(S + 3 + P * np.arange(10), np.zeros((10, 1)), now_ns=S)
    before = queue.plan()
    with pytest.raises(ChunkRejected, match="chunk lies entirely in the past"):
        queue.merge(S + 3 + P * np.arange(5), np.ones((5, 1)), now_ns=S + 5 * P + 3)
    after = queue.plan()
    assert queue.anchor_ns == S + 3
    assert np.array_equal(before[0], after[0]) and np.array_equal(before[1], after[1])


def test_anchor_is_kept_until_clear():
    queue = ActionQueue(P)
    queue.merge(S + P * np.arange(5), np.zeros((5, 2)), now_ns=S)
    queue.merge(S + 2 * P + P // 2 + P * np.arange(5), np.zeros((5, 2)), now_ns=S)
    assert queue.anchor_ns == S
    assert all((t - S) % P == 0 for t in queue.plan()[0])
    queue.clear()
    assert queue.anchor_ns is None and len(queue) == 0 and queue.next_setpoint(S + 10 * P) is None
    assert queue.plan()[0].shape == (0,)
    queue.merge(S + 7 + P * np.arange(5), np.zeros((5, 3)), now_ns=S)  # new anchor, new width
    assert queue.anchor_ns == S + 7


def test_plan_is_a_copy():
    queue = ActionQueue(P)
    queue.merge(S + P * np.arange(3), np.zeros((3, 1)), now_ns=S - 1)
    queue.plan()[1][:] = 5.0
    assert queue.next_setpoint(S).tolist() == [0.0]


# ---------------------------------------------------------------------------------------------- off grid


def test_off_grid_chunk_is_interpolated_within_its_span():
    queue = ActionQueue(P, "latest_only")
    queue.merge(S + P * np.arange(3), np.zeros((3, 2)), now_ns=S - 1)  # anchor S
    times = S + P // 4 + P * np.arange(10)  # a quarter period late
    values = np.stack([np.arange(10.0), np.arange(10.0) ** 2], axis=1)
    report = queue.merge(times, values, now_ns=S - 1)
    # Slots 1..9 lie inside [S + P/4, S + 9.25 P]; slot 0 is before the chunk and slot 10 after it.
    assert report == MergeReport(dropped_past=0, merged=2, added=7)
    slot_times, plan = queue.plan()
    assert slot_times.tolist() == [S + k * P for k in range(1, 10)]
    u = np.arange(1, 10) - 0.25  # slot k sits 3/4 of the way from point k-1 to point k
    np.testing.assert_allclose(plan[:, 0], u, rtol=0, atol=1e-12)
    np.testing.assert_allclose(plan[:, 1], np.interp(u, np.arange(10.0), np.arange(10.0) ** 2), rtol=0, atol=1e-12)


def test_linear_motion_survives_resampling_at_epoch_times():
    queue = ActionQueue(P30)
    queue.merge(S + P30 * np.arange(3), np.zeros((3, 1)), now_ns=S - 1)
    stamp = S + 12_345_678
    times = _chunk_times(stamp, 50)
    velocity = 0.5  # rad/s
    queue.strategy = "latest_only"
    queue.merge(times, velocity * ((times - stamp) / 1e9)[:, None], now_ns=S - 1)
    slot_times, plan = queue.plan()
    np.testing.assert_allclose(plan[:, 0], velocity * (slot_times - stamp) / 1e9, rtol=0, atol=1e-12)
    assert slot_times[0] >= times[0] and slot_times[-1] <= times[-1]


def test_rounded_time_from_start_maps_one_to_one():
    """i/fps in whole ns drifts off a 33_333_333 ns grid by up to ~16 ns over 50 points: still 1:1."""
    queue = ActionQueue(P30)
    chunk = np.random.default_rng(0).normal(size=(50, 6))
    queue.merge(S + P30 * np.arange(3), np.zeros((3, 6)), now_ns=S - 1)
    queue.strategy = "latest_only"
    report = queue.merge(_chunk_times(S, 50), chunk, now_ns=S - 1)
    assert report == MergeReport(dropped_past=0, merged=3, added=47)
    assert np.array_equal(queue.plan()[1], chunk)


def test_slower_chunk_on_grid_is_exact_at_its_points_and_interpolated_between():
    queue = ActionQueue(P)
    values = np.array([[0.0], [2.0], [6.0]])
    queue.merge(S + 2 * P * np.arange(3), values, now_ns=S - 1)  # half rate
    assert queue.plan()[1][:, 0].tolist() == [0.0, 1.0, 2.0, 4.0, 6.0]


def test_faster_chunk_is_subsampled():
    queue = ActionQueue(P)
    queue.merge(S + P * np.arange(2), np.zeros((2, 1)), now_ns=S - 1)
    queue.strategy = "latest_only"
    times = S + P // 3 + (P // 4) * np.arange(17)  # 4x rate, off grid: spans S + P/3 .. S + 4P + P/3
    queue.merge(times, ((times - S) / P)[:, None].astype(float), now_ns=S - 1)
    slot_times, plan = queue.plan()
    assert slot_times.tolist() == [S + k * P for k in range(1, 5)]
    np.testing.assert_allclose(plan[:, 0], [1.0, 2.0, 3.0, 4.0], rtol=0, atol=1e-12)


def test_chunk_between_two_slots_is_rejected():
    queue = ActionQueue(P)
    queue.merge(S + P * np.arange(5), np.zeros((5, 1)), now_ns=S - 1)
    with pytest.raises(ChunkRejected, match="covers no control slot"):
        queue.merge(np.array([S + P // 4, S + P // 2]), np.ones((2, 1)), now_ns=S - 1)
    assert queue.plan()[1][:, 0].tolist() == [0.0] * 5


# ---------------------------------------------------------------------------------------------- threshold


def test_needs_chunk_equals_lerobot_at_every_boundary():
    stub = SimpleNamespace(action_queue_lock=threading.Lock())
    for chunk_size in (1, 7, 30, 50, 100):
        for threshold in (0.0, 0.1, 0.2, 0.3, 0.5, 2 / 3, 0.7, 1.0):
            for qsize in range(chunk_size + 2):
                stub.action_queue = SimpleNamespace(qsize=lambda q=qsize: q)
                stub.action_chunk_size, stub._chunk_size_threshold = chunk_size, threshold
                expected = _CLIENT["_ready_to_send_observation"](stub)
                assert needs_chunk(qsize, chunk_size, threshold) == expected, (qsize, chunk_size, threshold)


def test_needs_chunk_boundary():
    assert needs_chunk(25, 50, 0.5) and not needs_chunk(26, 50, 0.5)
    assert needs_chunk(3, 30, 0.1) and not needs_chunk(4, 30, 0.1)
    assert needs_chunk(0, 50, 0.0) and not needs_chunk(1, 50, 0.0)
    with pytest.raises(ValueError):
        needs_chunk(0, 0, 0.5)


# ---------------------------------------------------------------------------------------------- clamp


def test_clamp_step_scalar_limit():
    prev = np.array([0.0, 1.0, -1.0])
    out, idx = clamp_step(prev, np.array([0.05, 1.5, -2.0]), 0.1)
    assert out.tolist() == [0.05, 1.1, -1.1] and idx == [1, 2]


def test_clamp_step_at_the_limit_is_not_clamped():
    out, idx = clamp_step(np.array([0.0]), np.array([0.25]), 0.25)
    assert out.tolist() == [0.25] and idx == []


def test_clamp_step_per_joint_limits_zero_disables_a_joint():
    prev = np.zeros(3)
    out, idx = clamp_step(prev, np.array([1.0, 1.0, -1.0]), np.array([0.5, 0.0, 0.25]))
    assert out.tolist() == [0.5, 1.0, -0.25] and idx == [0, 2]


@pytest.mark.parametrize("limit", [None, 0, 0.0])
def test_clamp_step_disabled(limit):
    target = np.array([3.0, -3.0])
    out, idx = clamp_step(np.zeros(2), target, limit)
    assert out.tolist() == [3.0, -3.0] and idx == []
    assert out is not target


def test_clamp_step_without_previous_passes_target():
    out, idx = clamp_step(None, [0.3, 0.4], 0.01)
    assert out.tolist() == [0.3, 0.4] and idx == []


@pytest.mark.parametrize("limit", [-0.1, math.nan, np.array([0.1, -1.0])])
def test_clamp_step_rejects_bad_limits(limit):
    with pytest.raises(ValueError, match="max_step"):
        clamp_step(np.zeros(2), np.ones(2), limit)


def test_clamp_step_shape_mismatch():
    with pytest.raises(ValueError, match="shape"):
        clamp_step(np.zeros(2), np.ones(3), 0.1)


# ---------------------------------------------------------------------------------------------- validation

GOOD_TIMES = [0, P30, 2 * P30]
GOOD_ROWS = [[0.0] * 6, [0.1] * 6, [0.2] * 6]


@pytest.mark.parametrize(
    "names,rows,times,needle",
    [
        (JOINTS, [], [], "chunk is empty"),
        (JOINTS[:5], GOOD_ROWS, GOOD_TIMES, "joint names do not match: missing ['gripper'], unknown []"),
        (JOINTS[:5] + ["elbow"], GOOD_ROWS, GOOD_TIMES, "missing ['gripper'], unknown ['elbow']"),
        (JOINTS + ["gripper"], GOOD_ROWS, GOOD_TIMES, "duplicate joint names ['gripper']"),
        (JOINTS, [[0.0] * 6, [0.0] * 5, [0.0] * 6], GOOD_TIMES, "rows have different widths [5, 6]"),
        (JOINTS, [[0.0] * 5] * 3, GOOD_TIMES, "rows have 5 positions, expected 6"),
        (JOINTS, [[0.0] * 6, [0.0] * 5 + [math.nan], [0.0] * 6], GOOD_TIMES, "non-finite position at point 1 joint 5"),
        (JOINTS, [[math.inf] + [0.0] * 5] * 3, GOOD_TIMES, "non-finite position at point 0 joint 0 (3 non-finite"),
        (JOINTS, GOOD_ROWS, [0, P30], "chunk has 3 points but 2 time_from_start"),
        (JOINTS, GOOD_ROWS, [0, P30, P30], "not strictly increasing: point 2 at 33333333 ns after point 1"),
        (JOINTS, GOOD_ROWS, [P30, 0, 2 * P30], "not strictly increasing: point 1 at 0 ns"),
        (JOINTS, GOOD_ROWS, [0.0, 0.1, 0.2], "integer nanoseconds"),
        (JOINTS, [0.0, 0.1, 0.2], GOOD_TIMES, "rows of per-joint values"),
    ],
)
def test_validate_chunk_rejects(names, rows, times, needle):
    with pytest.raises(ChunkRejected) as exc:
        validate_chunk(names, rows, times, JOINTS)
    assert needle in str(exc.value)
    assert isinstance(exc.value, ValueError)


def test_validate_chunk_returns_column_order():
    names = list(reversed(JOINTS))
    rows = np.array([[float(i * 10 + j) for j in range(6)] for i in range(3)])
    order = validate_chunk(names, rows, GOOD_TIMES, JOINTS)
    assert [names[i] for i in order] == JOINTS
    times, positions = chunk_arrays(S, names, rows, GOOD_TIMES, JOINTS)
    assert times.dtype == np.int64 and times.tolist() == [S, S + P30, S + 2 * P30]
    assert positions[:, JOINTS.index("gripper")].tolist() == rows[:, names.index("gripper")].tolist()


def test_merge_validates_its_own_input_and_changes_nothing():
    queue = ActionQueue(P)
    queue.merge(S + P * np.arange(3), np.zeros((3, 2)), now_ns=S - 1)
    bad = [
        (S + P * np.arange(3), np.full((3, 2), math.nan), "non-finite"),
        (S + P * np.arange(3), np.zeros((3, 3)), "expected 2"),
        (S + P * np.array([0, 2, 1]), np.zeros((3, 2)), "not strictly increasing"),
        (S + P * np.arange(2), np.zeros((3, 2)), "3 points but 2 time"),
        (np.empty(0, dtype=np.int64), np.empty((0, 2)), "empty"),
    ]
    for times, positions, needle in bad:
        with pytest.raises(ChunkRejected, match=needle):
            queue.merge(times, positions, now_ns=S - 1)
    assert queue.plan()[1].tolist() == [[0.0, 0.0]] * 3


def test_strategy_and_settings_are_validated():
    with pytest.raises(ValueError, match="unknown strategy"):
        ActionQueue(P, "median")
    queue = ActionQueue(P)
    for name in STRATEGIES:
        queue.strategy = name
        assert queue.strategy == name
    with pytest.raises(ValueError, match="unknown strategy"):
        queue.strategy = "newest"
    assert queue.strategy == STRATEGIES[-1]
    queue.ensemble_m = 0.5
    assert queue.ensemble_m == 0.5
    with pytest.raises(ValueError):
        queue.ensemble_m = math.inf
    with pytest.raises(ValueError):
        ActionQueue(0)
    with pytest.raises(ValueError):
        ActionQueue(P, grid_tolerance_ns=P // 2)


def test_stream_starts_from_a_measured_pose_with_a_plan_holds_when_dry_and_clamps():
    queue = ActionQueue(P)
    stream = SetpointStream(queue, chunk_size=4, threshold=0.5, max_step=0.1)
    t = S
    first = stream.tick(t)  # no pose, no plan: nothing sent, a chunk asked for
    assert first.setpoint is None and first.request
    assert stream.tick(t + P).request is False  # asked already: not again within the interval
    stream.measured = np.array([0.0, 0.0])
    assert stream.tick(t + 2 * P).setpoint is None  # a pose but no plan yet
    queue.merge(t + 3 * P + P * np.arange(4), [[0.05, 1.0], [0.1, 1.0], [0.15, 1.0], [0.2, 1.0]], now_ns=t + 3 * P)
    stream.chunk_merged()
    sent = [stream.tick(t + (3 + i) * P) for i in range(6)]
    # starts from the measured pose, not the plan's first point; joint 1 climbs to 1.0 at most 0.1 a tick
    assert [round(float(x.setpoint[1]), 6) for x in sent] == [0.1, 0.2, 0.3, 0.4, 0.4, 0.4]
    assert [round(float(x.setpoint[0]), 6) for x in sent[:4]] == [0.05, 0.1, 0.15, 0.2]
    assert all(x.clamped for x in sent[:4]) and not any(x.clamped for x in sent[4:])
    # the plan ran dry after 4 ticks: holding starts once, the last setpoint is repeated (no jump, no replay)
    assert [x.started_holding for x in sent] == [False, False, False, False, True, False]
    assert stream.holding and np.array_equal(sent[5].setpoint, sent[3].setpoint)
    # asked when 2 of 4 remained (threshold 0.5), then again only after REQUEST_INTERVAL_NS while still low
    asks = [i for i, x in enumerate(sent) if x.request]
    assert asks == [1]
    late = stream.tick(t + 4 * P + REQUEST_INTERVAL_NS)
    assert late.request and late.started_holding is False


def test_stream_without_clamp_follows_the_plan_and_picks_up_parameter_changes():
    queue = ActionQueue(P)
    stream = SetpointStream(queue, chunk_size=4, threshold=0.25, max_step=0)
    stream.measured = np.zeros(1)
    queue.merge(S + P * np.arange(4), [[1.0], [2.0], [3.0], [4.0]], now_ns=S)
    ticks = [stream.tick(S + i * P) for i in range(2)]
    assert [float(x.setpoint[0]) for x in ticks] == [1.0, 2.0] and not any(x.request for x in ticks)
    stream.threshold = 0.5  # as the node's on-set callback applies a new chunk_size_threshold
    assert stream.tick(S + 2 * P).request
