"""Recorded streams -> a fixed-rate dataset: episode windows, the frame grid, and which sample each frame
takes. Pure numpy on integer nanosecond stamps; no ROS, no bag I/O (``tools.bag_to_dataset`` does that).

Rules (the README's "Recording demonstrations" says the same):

* A stream is *live* between two of its samples at most ``gap_ns`` apart. An episode is a maximal window
  in which every required stream (state, action, each camera) is live; so a pause of the teleoperation
  (``so101_leader enabled:=false``), a stalled camera or a stopped bridge longer than ``gap_ns`` ends an
  episode, and the next starts when all are back. Windows are cut into pieces of at most ``max_len_ns``
  if asked; pieces shorter than ``min_len_ns`` are dropped.
* Frames lie on ``start + k / fps`` within each window. Every frame takes, from each stream, the latest
  sample stamped at or before the frame time ("nearest previous"): the state and the camera images the
  arm's controller had at that instant, and for the action the last command sent (zero-order hold).
  Never a sample from the future, so no frame leaks what happened after it.
* A command may name only some joints (so101_bridge accepts subsets): each joint holds its own last
  commanded value; a joint not commanded yet takes the frame's state (the bridge holds it where it is).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

Window = tuple[int, int]  # [start_ns, end_ns], both inclusive


def live_segments(stamps: NDArray[np.int64], gap_ns: int) -> list[Window]:
    """Maximal runs of sorted ``stamps`` without a step larger than ``gap_ns`` (one-sample runs included)."""
    s = np.asarray(stamps, dtype=np.int64)
    if s.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(s) > gap_ns)
    starts = np.concatenate(([0], breaks + 1))
    ends = np.concatenate((breaks, [s.size - 1]))
    return [(int(s[a]), int(s[b])) for a, b in zip(starts, ends)]


def intersect(a: Sequence[Window], b: Sequence[Window]) -> list[Window]:
    """Intersection of two sorted lists of disjoint inclusive windows."""
    out, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if lo <= hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def episode_windows(
    streams: Mapping[str, NDArray[np.int64]],
    gap_ns: int,
    *,
    min_len_ns: int = 0,
    max_len_ns: int = 0,
) -> list[Window]:
    """Windows in which every stream is live (see the module docstring), split and filtered by length."""
    windows: list[Window] | None = None
    for stamps in streams.values():
        segs = live_segments(np.sort(np.asarray(stamps, dtype=np.int64)), gap_ns)
        windows = segs if windows is None else intersect(windows, segs)
    out: list[Window] = []
    for start, end in windows or []:
        pieces = [(start, end)]
        if max_len_ns > 0:
            pieces = [(s, min(s + max_len_ns, end)) for s in range(start, end + 1, max_len_ns + 1)]
        out += [(s, e) for s, e in pieces if e - s >= min_len_ns]
    return out


def frame_times(window: Window, fps: float) -> NDArray[np.int64]:
    """``start + round(k * 1e9 / fps)`` for every k that stays within the window."""
    start, end = window
    period = 1e9 / fps
    n = int(np.floor((end - start) / period + 1e-9)) + 1
    return start + np.rint(np.arange(n) * period).astype(np.int64)


def previous_index(sorted_stamps: NDArray[np.int64], times: NDArray[np.int64]) -> NDArray[np.int64]:
    """Index of the latest stamp <= each time (-1 where there is none)."""
    return np.searchsorted(np.asarray(sorted_stamps, dtype=np.int64), np.asarray(times, dtype=np.int64),
                           side="right") - 1


def forward_fill(values: NDArray[np.float64]) -> NDArray[np.float64]:
    """Each NaN (per column) replaced by the last non-NaN value above it; leading NaNs stay NaN."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return v.copy()
    rows = np.where(np.isnan(v), 0, np.arange(v.shape[0])[:, None])
    np.maximum.accumulate(rows, axis=0, out=rows)
    out = v[rows, np.arange(v.shape[1])[None, :]]
    # a column whose first rows are NaN points at row 0 (NaN) until its first value: still NaN, as wanted
    return out


def joint_matrix(
    names_per_msg: Sequence[Sequence[str]], positions_per_msg: Sequence[Sequence[float]], joints: Sequence[str]
) -> NDArray[np.float64]:
    """(messages, joints) positions by name; NaN where a message does not name the joint."""
    index = {j: i for i, j in enumerate(joints)}
    out = np.full((len(names_per_msg), len(joints)), np.nan)
    for row, (names, positions) in enumerate(zip(names_per_msg, positions_per_msg)):
        for name, value in zip(names, positions):
            col = index.get(name)
            if col is not None:
                out[row, col] = value
    return out


def sample_held(
    stamps: NDArray[np.int64], values: NDArray[np.float64], times: NDArray[np.int64],
    fallback: NDArray[np.float64] | None = None,
) -> NDArray[np.float64]:
    """Zero-order hold of per-joint ``values`` (rows sorted by ``stamps``, NaN = joint not in that
    message) at ``times``; what is still unknown comes from ``fallback`` (same shape as the result)."""
    held = forward_fill(values)
    idx = previous_index(stamps, times)
    out = np.full((len(times), held.shape[1]), np.nan)
    ok = idx >= 0
    out[ok] = held[idx[ok]]
    if fallback is not None:
        out = np.where(np.isnan(out), fallback, out)
    return out
