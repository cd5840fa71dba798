"""Time-indexed merging of overlapping action chunks into one setpoint per control tick (no ROS).

The policy publishes a chunk per observation: N setpoints at ``stamp + time_from_start`` where the
stamp is the observation's capture time. The aggregator merges each chunk into an ``ActionQueue`` and,
once per control tick, asks it for the setpoint due now. The clock is injected (integer nanoseconds).

Grid and anchor
    Slots lie on a fixed grid, slot k at ``anchor + k * period_ns``. The first accepted merge sets the
    anchor to its first setpoint's time; it stays until ``clear()``. This is LeRobot async inference's
    integer timestep made physical: LeRobot's timestep t is our slot t. Unlike LeRobot, whose queue
    simply pops one action per loop iteration (so its clock stalls when the queue runs dry), slots are
    due by wall time: a queue that ran dry resumes at the slot matching the current time.

Off-grid chunks
    Observations are captured at arbitrary times, so a chunk is generally off the grid. It is resampled
    onto the grid slots that lie inside its own time span, by linear interpolation (never extrapolated:
    a slot past the chunk's last setpoint gets nothing). A chunk whose setpoints each lie within
    ``grid_tolerance_ns`` of a distinct slot is on the grid and maps 1:1 with its values untouched, so that
    the ~tens of ns of rounding in ``time_from_start = i / fps`` do not cost the last setpoint or
    perturb values. ``MergeReport`` counts are in grid slots after resampling.

Dropping passed slots
    LeRobot drops incoming actions whose timestep is <= the last executed one. Here a slot is dead at
    merge when it was already handed out (<= the last slot ``next_setpoint`` returned) or when a newer
    slot is already due (its time is before the newest slot with time <= now). The newest slot with time
    <= now is the one the next tick will send, so it is kept (and takes the new chunk's value): dropping
    it merely because its time passed would make the next tick hold, then skip a slot, whenever a merge
    lands between a slot's time and the tick that sends it. On ticks in step with the grid the two
    rules agree, which is what makes on-grid merging equal LeRobot's. Latency is accounted for by the
    stamp: a chunk that took 200 ms to compute has its first ~6 setpoints at 30 Hz dead on arrival.

Strategies (old = queued value, new = incoming value for the same slot)
    weighted_average 0.3*old + 0.7*new, latest_only new, average 0.5/0.5, conservative 0.7*old + 0.3*new:
        LeRobot 0.4.4's ``AGGREGATE_FUNCTIONS`` (same expressions, hence the same floats). As in LeRobot's
        ``_aggregate_action_queues`` the queue afterwards holds only the incoming chunk's live slots;
        queued slots the chunk does not cover are discarded.
    temporal_ensemble: ACT's temporal ensembling. Each slot holds the weighted mean of every prediction
        made for it while it was live, weight exp(-m*i) for the i-th prediction, i = 0 the oldest, with
        ACT's online update, so equal to ``ACTTemporalEnsembler`` on the same chunk sequence. Queued slots
        the new chunk does not cover are kept: they are still the only predictions for those times (a
        shorter or earlier-stamped chunk must not truncate the plan). Unlike ACT's table, the prediction
        count is not capped at the chunk size, and a changed ``ensemble_m`` weights only later predictions.
    Merging under a LeRobot strategy leaves each slot as a single prediction (count 1) should the
    strategy later switch to temporal_ensemble.

Real-time chunks (``merge(..., rtc=True)``)
    A chunk made with real-time chunking already continues the plan it replaces (its first steps were frozen
    to the previous chunk's), so it is executed, not blended: it replaces the queue from the slot due now
    (``latest_only``'s arithmetic, whatever the strategy). Dropping passed slots is right while a plan executes:
    the previous plan ran them. When nothing is queued (the first chunk, after a cancel, or after the queue ran
    dry) the arm holds, and dropping by time would skip steps that never ran, jumping the arm by as much as a
    chunk's latency of motion. Such a chunk is re-timed instead: its points up to the last setpoint handed out
    count as executed (the plan before ran them, up to where it ran out), and the first point after them is put
    on the slot due now, the rest following on the grid. A chunk whose every point was executed is rejected.

``next_setpoint(now)`` pops every slot with time <= now and returns the newest, so a slot is never
returned twice and an old slot is never returned after a newer one is due. ``None`` means nothing new
is due: holding the last setpoint is the caller's job. The queue takes a lock per call so a
multi-threaded executor may merge and tick from different threads.
"""
from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

STRATEGIES = ("weighted_average", "latest_only", "average", "conservative", "temporal_ensemble")

# Written exactly as LeRobot's AGGREGATE_FUNCTIONS (async_inference/configs.py) so the floats match.
_BLENDS: dict[str, Callable[[NDArray[np.float64], NDArray[np.float64]], NDArray[np.float64]]] = {
    "weighted_average": lambda old, new: 0.3 * old + 0.7 * new,
    "latest_only": lambda old, new: new,
    "average": lambda old, new: 0.5 * old + 0.5 * new,
    "conservative": lambda old, new: 0.7 * old + 0.3 * new,
}

DEFAULT_GRID_TOLERANCE_NS = 1_000  # far above i/fps rounding drift, far below anything physical


class ChunkRejected(ValueError):
    """The chunk was not merged (nothing changed); ``str(exc)`` says why, for a throttled log line."""


@dataclass(frozen=True)
class MergeReport:
    dropped_past: int  # incoming slots already handed out or superseded by a slot due now (rtc: points executed)
    merged: int  # incoming slots blended with a queued value
    added: int  # incoming slots that were empty
    shifted_ns: int = 0  # rtc into an empty queue: how much later than stamped the chunk was re-timed to run


# ---------------------------------------------------------------------------------------------- validation


def _check_positions(positions: ArrayLike, width: int | None) -> NDArray[np.float64]:
    rows = positions if isinstance(positions, np.ndarray) else list(positions)  # type: ignore[arg-type]
    if len(rows) == 0:
        raise ChunkRejected("chunk is empty (no points)")
    if not isinstance(rows, np.ndarray):
        try:
            widths = {len(r) for r in rows}
        except TypeError:
            raise ChunkRejected("positions must be rows of per-joint values, one row per point") from None
        if len(widths) != 1:
            raise ChunkRejected(f"chunk rows have different widths {sorted(widths)}")
    arr = np.asarray(rows, dtype=np.float64)
    if arr.ndim != 2:
        raise ChunkRejected(f"positions must be (points, joints), got shape {arr.shape}")
    if width is not None and arr.shape[1] != width:
        raise ChunkRejected(f"chunk rows have {arr.shape[1]} positions, expected {width} (one per joint)")
    bad = np.argwhere(~np.isfinite(arr))
    if len(bad):
        point, joint = (int(v) for v in bad[0])
        raise ChunkRejected(f"non-finite position at point {point} joint {joint} ({len(bad)} non-finite in all)")
    return arr


def _check_times(times_ns: ArrayLike, n_points: int, what: str) -> NDArray[np.int64]:
    arr = np.asarray(times_ns)
    if arr.ndim != 1 or len(arr) != n_points:
        raise ChunkRejected(f"chunk has {n_points} points but {arr.size} {what} values")
    if arr.dtype.kind not in "iu":
        raise ChunkRejected(f"{what} must be integer nanoseconds, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    steps = np.diff(arr)
    if np.any(steps <= 0):
        i = int(np.argmax(steps <= 0))
        raise ChunkRejected(
            f"{what} not strictly increasing: point {i + 1} at {int(arr[i + 1])} ns after point {i} at {int(arr[i])} ns"
        )
    return arr


def _joint_order(joint_names: Sequence[str], expected_joints: Sequence[str]) -> NDArray[np.intp]:
    names, expected = list(joint_names), list(expected_joints)
    if len(names) != len(set(names)):
        dups = sorted({n for n in names if names.count(n) > 1})
        raise ChunkRejected(f"duplicate joint names {dups}")
    if set(names) != set(expected) or len(names) != len(expected):
        missing = [n for n in expected if n not in names]
        unknown = [n for n in names if n not in expected]
        raise ChunkRejected(f"joint names do not match: missing {missing}, unknown {unknown} (expected {expected})")
    return np.array([names.index(n) for n in expected], dtype=np.intp)


def validate_chunk(
    joint_names: Sequence[str],
    positions: ArrayLike,
    times_from_start_ns: ArrayLike,
    expected_joints: Sequence[str],
) -> NDArray[np.intp]:
    """Raise ChunkRejected unless the chunk is usable; return the column order for ``expected_joints``.

    ``positions[:, order]`` has its columns in ``expected_joints`` order (senders may order names freely).
    """
    order = _joint_order(joint_names, expected_joints)
    arr = _check_positions(positions, len(order))
    _check_times(times_from_start_ns, arr.shape[0], "time_from_start")
    return order


def chunk_arrays(
    stamp_ns: int,
    joint_names: Sequence[str],
    positions: ArrayLike,
    times_from_start_ns: ArrayLike,
    expected_joints: Sequence[str],
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Validate a chunk and return ``merge``'s inputs: absolute times and positions in expected order."""
    order = validate_chunk(joint_names, positions, times_from_start_ns, expected_joints)
    times = np.asarray(times_from_start_ns).astype(np.int64) + np.int64(stamp_ns)
    return times, np.asarray(positions, dtype=np.float64)[:, order]


# ---------------------------------------------------------------------------------------------- grid


def _ceil_div(a: int, b: int) -> int:
    return -((-a) // b)


def _to_grid(
    times_ns: NDArray[np.int64], positions: NDArray[np.float64], anchor_ns: int, period_ns: int, tol_ns: int
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Slot indices the chunk covers and its values there (1:1 when on the grid, else interpolated)."""
    rel = times_ns - np.int64(anchor_ns)
    nearest = (rel + period_ns // 2) // period_ns
    on_grid = np.all(np.abs(rel - nearest * period_ns) <= tol_ns) and np.all(np.diff(nearest) > 0)
    if on_grid and nearest[-1] - nearest[0] == len(nearest) - 1:
        return nearest.astype(np.int64), positions.copy()
    # Snapped knots keep an on-grid chunk with gaps (a slower rate) exact at its own points.
    knots = nearest * period_ns if on_grid else rel
    first = _ceil_div(int(knots[0]) - tol_ns, period_ns)
    last = (int(knots[-1]) + tol_ns) // period_ns
    slots = np.arange(first, last + 1, dtype=np.int64)
    # Relative to the first knot: epoch nanoseconds do not fit a float64 mantissa.
    x = (np.clip(slots * period_ns, knots[0], knots[-1]) - knots[0]).astype(np.float64)
    xp = (knots - knots[0]).astype(np.float64)
    values = np.empty((len(slots), positions.shape[1]), dtype=np.float64)
    for j in range(positions.shape[1]):
        values[:, j] = np.interp(x, xp, positions[:, j])
    return slots, values


# ---------------------------------------------------------------------------------------------- queue


class ActionQueue:
    """Setpoints on a time grid, merged chunk by chunk (see the module docstring)."""

    def __init__(
        self,
        period_ns: int,
        strategy: str = "weighted_average",
        ensemble_m: float = 0.01,
        grid_tolerance_ns: int = DEFAULT_GRID_TOLERANCE_NS,
    ) -> None:
        if int(period_ns) <= 0:
            raise ValueError(f"period_ns must be positive, got {period_ns}")
        if not 0 <= int(grid_tolerance_ns) < int(period_ns) / 2:
            raise ValueError(f"grid_tolerance_ns must be in [0, period_ns/2), got {grid_tolerance_ns}")
        self._period = int(period_ns)
        self._tol = int(grid_tolerance_ns)
        self._lock = threading.RLock()
        self.strategy = strategy
        self.ensemble_m = ensemble_m
        self.clear()

    # -- settings

    @property
    def period_ns(self) -> int:
        return self._period

    @property
    def strategy(self) -> str:
        return self._strategy

    @strategy.setter
    def strategy(self, name: str) -> None:
        if name not in STRATEGIES:
            raise ValueError(f"unknown strategy {name!r}, expected one of {list(STRATEGIES)}")
        self._strategy = name

    @property
    def ensemble_m(self) -> float:
        return self._m

    @ensemble_m.setter
    def ensemble_m(self, m: float) -> None:
        if not math.isfinite(float(m)):
            raise ValueError(f"ensemble_m must be finite, got {m}")
        self._m = float(m)

    @property
    def anchor_ns(self) -> int | None:
        """Time of slot 0, or None before the first merge (and after clear)."""
        return self._anchor

    # -- state

    def clear(self) -> None:
        """Forget everything, anchor and hand-out history included (e.g. a new episode or a clock reset)."""
        with self._lock:
            self._anchor: int | None = None
            self._width: int | None = None
            self._last_sent: int | None = None  # slot index last returned by next_setpoint
            self._slots = np.empty(0, dtype=np.int64)  # sorted slot indices
            self._pos = np.empty((0, 0), dtype=np.float64)
            self._count = np.empty(0, dtype=np.int64)  # predictions per slot (temporal ensemble)
            self._wsum = np.empty(0, dtype=np.float64)  # their summed weights

    def __len__(self) -> int:
        return len(self._slots)

    def _due_slot(self, now_ns: int) -> int:
        """Index of the newest slot with time <= now (may be negative, or not queued)."""
        assert self._anchor is not None
        return (int(now_ns) - self._anchor) // self._period

    def _first_live(self, now_ns: int) -> int:
        due = self._due_slot(now_ns)
        return due if self._last_sent is None else max(due, self._last_sent + 1)

    # -- merge

    def merge(self, times_ns: ArrayLike, positions: ArrayLike, now_ns: int, *, rtc: bool = False) -> MergeReport:
        """Merge one chunk (absolute times, positions in joint order); raise ChunkRejected, changing nothing.
        ``rtc``: a real-time chunk, which replaces the plan (re-timed when nothing is queued; module docstring)."""
        with self._lock:
            pos = _check_positions(positions, self._width)
            times = _check_times(times_ns, pos.shape[0], "time")
            executed, shifted = 0, 0
            if rtc and len(self._slots) == 0:
                times, pos, executed, shifted = self._retime(times, pos, now_ns)
            anchor = self._anchor if self._anchor is not None else int(times[0])
            slots, values = _to_grid(times, pos, anchor, self._period, self._tol)
            if len(slots) == 0:
                raise ChunkRejected(
                    f"chunk covers no control slot: its {len(times)} points span "
                    f"{(int(times[-1]) - int(times[0])) / 1e6:.3f} ms between grid slots"
                )
            previous_anchor, self._anchor = self._anchor, anchor
            first_live = self._first_live(now_ns)
            live = slots >= first_live
            if not np.any(live):
                self._anchor = previous_anchor
                last_ns = anchor + int(slots[-1]) * self._period
                raise ChunkRejected(
                    f"chunk lies entirely in the past: its last setpoint is {(int(now_ns) - last_ns) / 1e6:.3f} ms "
                    f"before now (policy latency above the chunk's horizon?)"
                )
            if self._width is None:
                self._width = pos.shape[1]
                self._pos = np.empty((0, self._width), dtype=np.float64)
            self._drop_before(first_live)
            merged, added = self._blend(slots[live], values[live], "latest_only" if rtc else self._strategy)
            return MergeReport(dropped_past=int(np.count_nonzero(~live)) + executed, merged=merged, added=added,
                               shifted_ns=shifted)

    def _retime(self, times: NDArray[np.int64], pos: NDArray[np.float64],
                now_ns: int) -> tuple[NDArray[np.int64], NDArray[np.float64], int, int]:
        """Nothing queued: drop the points up to the last setpoint handed out (executed), start the rest at the
        slot due now. Returns (times, positions, points dropped, shift in ns)."""
        last_ns = None if self._anchor is None or self._last_sent is None else self._anchor + self._last_sent * self._period
        executed = 0 if last_ns is None else int(np.searchsorted(times, last_ns, side="right"))
        if executed == len(times):
            raise ChunkRejected(
                f"chunk lies entirely in the past: its last point is {(last_ns - int(times[-1])) / 1e6:.3f} ms before "
                "the last setpoint executed"
            )
        start = int(now_ns) if self._anchor is None else self._anchor + self._first_live(now_ns) * self._period
        shift = start - int(times[executed])
        return times[executed:] + np.int64(shift), pos[executed:], executed, shift

    def _drop_before(self, first_live: int) -> None:
        keep = self._slots >= first_live
        self._slots, self._pos = self._slots[keep], self._pos[keep]
        self._count, self._wsum = self._count[keep], self._wsum[keep]

    def _blend(self, slots: NDArray[np.int64], values: NDArray[np.float64], strategy: str) -> tuple[int, int]:
        _, in_new, in_old = np.intersect1d(slots, self._slots, assume_unique=True, return_indices=True)
        if strategy == "temporal_ensemble":
            self._ensemble(slots, values, in_new, in_old)
        else:
            blended = values.copy()
            blended[in_new] = _BLENDS[strategy](self._pos[in_old], values[in_new])
            # LeRobot keeps only the incoming chunk's slots.
            self._slots, self._pos = slots.copy(), blended
            self._count = np.ones(len(slots), dtype=np.int64)
            self._wsum = np.ones(len(slots), dtype=np.float64)
        return len(in_new), len(slots) - len(in_new)

    def _ensemble(
        self,
        slots: NDArray[np.int64],
        values: NDArray[np.float64],
        in_new: NDArray[np.intp],
        in_old: NDArray[np.intp],
    ) -> None:
        # ACT's online mean: avg <- (avg * sum(w_0..w_{c-1}) + new * w_c) / sum(w_0..w_c), w_i = exp(-m i).
        count = self._count[in_old]
        w = np.exp(-self._m * count.astype(np.float64))[:, None]
        wsum = self._wsum[in_old][:, None]
        self._pos[in_old] = (self._pos[in_old] * wsum + values[in_new] * w) / (wsum + w)
        self._count[in_old] = count + 1
        self._wsum[in_old] = self._wsum[in_old] + w[:, 0]
        fresh = np.setdiff1d(np.arange(len(slots)), in_new, assume_unique=True)
        all_slots = np.concatenate([self._slots, slots[fresh]])
        order = np.argsort(all_slots, kind="stable")
        pos = np.concatenate([self._pos, values[fresh]])
        self._slots, self._pos = all_slots[order], pos[order]
        self._count = np.concatenate([self._count, np.ones(len(fresh), dtype=np.int64)])[order]
        self._wsum = np.concatenate([self._wsum, np.ones(len(fresh), dtype=np.float64)])[order]

    # -- read out

    def next_setpoint(self, now_ns: int) -> NDArray[np.float64] | None:
        """The setpoint due at now: pop every slot with time <= now, return the newest; None if none is due."""
        with self._lock:
            if self._anchor is None or len(self._slots) == 0:
                return None
            n = int(np.searchsorted(self._slots, self._due_slot(now_ns), side="right"))
            if n == 0:
                return None
            setpoint = self._pos[n - 1].copy()
            self._last_sent = int(self._slots[n - 1])
            self._drop_before(self._last_sent + 1)
            return setpoint

    def remaining(self, now_ns: int) -> int:
        """Queued slots strictly after now (what ``needs_chunk`` compares with the chunk size)."""
        with self._lock:
            if self._anchor is None:
                return 0
            due = self._due_slot(now_ns)
            return len(self._slots) - int(np.searchsorted(self._slots, due, side="right"))

    def plan(self) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        """Times (ns) and positions of every queued slot, oldest first (copies)."""
        with self._lock:
            if self._anchor is None:
                return np.empty(0, dtype=np.int64), np.empty((0, self._width or 0), dtype=np.float64)
            return self._anchor + self._slots * self._period, self._pos.copy()


# ---------------------------------------------------------------------------------------------- helpers


def needs_chunk(remaining: int, chunk_size: int, threshold: float) -> bool:
    """LeRobot's ``_ready_to_send_observation``: time for a new observation when remaining/chunk_size <= threshold."""
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    return remaining / chunk_size <= threshold


def clamp_step(
    previous: NDArray[np.float64] | None,
    target: ArrayLike,
    max_step: ArrayLike | float | None,
) -> tuple[NDArray[np.float64], list[int]]:
    """Limit each joint's step from the previously published setpoint; return (clamped, joints clamped).

    ``max_step`` is one limit for all joints or one per joint; None, or 0 for a joint, disables the limit.
    With no previous setpoint (None) there is nothing to step from and the target passes unchanged.
    """
    goal = np.array(target, dtype=np.float64)
    if previous is None or max_step is None:
        return goal, []
    prev = np.asarray(previous, dtype=np.float64)
    limit = np.broadcast_to(np.asarray(max_step, dtype=np.float64), goal.shape)
    if prev.shape != goal.shape:
        raise ValueError(f"previous has shape {prev.shape}, target {goal.shape}")
    if np.any(~(limit >= 0)):
        raise ValueError(f"max_step must be >= 0 (0 disables), got {max_step}")
    step = goal - prev
    over = (limit > 0) & (np.abs(step) > limit)
    goal[over] = prev[over] + np.sign(step[over]) * limit[over]
    return goal, [int(i) for i in np.flatnonzero(over)]


# ---------------------------------------------------------------------------------------------- streaming
REQUEST_INTERVAL_NS = 500_000_000  # re-ask while the queue stays low (a lost request, a restarted policy)


@dataclass(frozen=True)
class Tick:
    """What one control tick does: the setpoint to send (None before the start: no measured pose or no plan yet),
    whether to ask for the next chunk, whether the plan ran dry at this tick (holding starts), whether the step
    clamp limited the setpoint."""

    setpoint: NDArray[np.float64] | None
    request: bool
    started_holding: bool = False
    clamped: bool = False


class SetpointStream:
    """The aggregator's per-tick logic, shared by the action_aggregator node and eval-bag's replay of it (clock
    injected, nanoseconds). It starts only from a measured pose and with a plan; each tick sends the queue's
    setpoint due now, or holds the last one when the queue runs dry (never jumps, never replays old actions),
    step-clamped from the previous setpoint; it asks for a chunk when the queue falls to ``threshold`` of a chunk
    (LeRobot's ``chunk_size_threshold``), and again every ``REQUEST_INTERVAL_NS`` while it stays low."""

    def __init__(self, queue: ActionQueue, chunk_size: int, threshold: float, max_step: float | None) -> None:
        self.queue = queue
        self.chunk_size = chunk_size
        self.threshold = threshold
        self.max_step = max_step  # 0 or None: no clamp
        self.measured: NDArray[np.float64] | None = None  # the latest joint state, contract order
        self.last: NDArray[np.float64] | None = None  # the last setpoint sent
        self.holding = False
        self._low_since: int | None = None

    def chunk_merged(self) -> None:
        """A chunk arrived: the next request waits until the queue is low again."""
        self._low_since = None

    def tick(self, now_ns: int) -> Tick:
        if self.last is None:
            if self.measured is None or self.queue.remaining(now_ns) == 0:
                return Tick(None, self._request_due(now_ns))
            self.last = self.measured.copy()
        target = self.queue.next_setpoint(now_ns)
        started_holding = target is None and not self.holding
        self.holding = target is None
        setpoint, clamped = clamp_step(self.last, self.last if target is None else target, self.max_step or None)
        self.last = setpoint
        return Tick(setpoint, self._request_due(now_ns), started_holding, bool(clamped))

    def _request_due(self, now_ns: int) -> bool:
        if not needs_chunk(self.queue.remaining(now_ns), self.chunk_size, self.threshold):
            self._low_since = None
            return False
        if self._low_since is not None and now_ns - self._low_since < REQUEST_INTERVAL_NS:
            return False
        self._low_since = now_ns
        return True
