"""Metrics of an offline evaluation (pure numpy, no ROS): what the policy would have commanded against what
was recorded.

Inputs are arrays in the dataset's units (degrees or -100..100 for joints 1-5, 0..100 for the gripper:
``Contract.dataset_units``), joint columns in contract order, times in integer nanoseconds of bag time.

The recorded reference at time t (:func:`reference_at`):
    ``hold``    a recorded command topic (e.g. /joint_commands): the latest command at or before t, as a servo
                holds its last goal; none (NaN) before the first command or when it is older than ``max_gap_ns``.
    ``interp``  the measured joint states at t + ``lead_ns`` (one control period: "the next joint state"),
                linearly interpolated between the two samples around it; NaN outside the recording or across
                a hole in it longer than ``max_gap_ns``.
Rows whose reference is NaN are left out of every metric; how many rows were compared is reported.

Metrics
    per joint MAE / RMSE / max |error| of the executed commands (one per control tick);
    error by horizon: for every chunk, action i (due at stamp + i/fps) against the reference at that time,
        pooled over chunks: MAE per horizon step and joint;
    gripper open/close agreement: the share of ticks where command and reference fall on the same side of
        a threshold (open = above it);
    inference latency: wall seconds per chunk (n, mean, p50, p90, max).
"Overall" pools the samples of every episode (an episode with more ticks weighs more), it is not a mean of
episode means.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray


def reference_at(
    times_ns: NDArray[np.int64],
    ref_times_ns: NDArray[np.int64],
    ref_values: NDArray[np.float64],
    mode: str,
    max_gap_ns: int,
    lead_ns: int = 0,
) -> NDArray[np.float64]:
    """The recorded reference at each of ``times_ns`` (rows, NaN where there is none): see the module docstring."""
    times = np.asarray(times_ns, dtype=np.int64)
    ref_t = np.asarray(ref_times_ns, dtype=np.int64)
    ref_v = np.asarray(ref_values, dtype=np.float64)
    width = ref_v.shape[1] if ref_v.ndim == 2 else 0
    out = np.full((len(times), width), np.nan)
    if len(times) == 0 or len(ref_t) == 0:
        return out
    if mode == "hold":
        idx = np.searchsorted(ref_t, times, side="right") - 1
        ok = idx >= 0
        ok[ok] = times[ok] - ref_t[idx[ok]] <= max_gap_ns
        out[ok] = ref_v[idx[ok]]
        return out
    if mode != "interp":
        raise ValueError(f"reference mode must be 'hold' or 'interp', got {mode!r}")
    query = times + np.int64(lead_ns)
    hi = np.searchsorted(ref_t, query, side="left")  # first sample at or after the query
    lo = np.where((hi < len(ref_t)) & (ref_t[np.minimum(hi, len(ref_t) - 1)] == query), hi, hi - 1)
    ok = (lo >= 0) & (hi < len(ref_t))
    lo_c, hi_c = np.clip(lo, 0, len(ref_t) - 1), np.clip(hi, 0, len(ref_t) - 1)
    ok &= (ref_t[hi_c] - ref_t[lo_c]) <= max_gap_ns
    span = (ref_t[hi_c] - ref_t[lo_c]).astype(np.float64)
    frac = np.where(span > 0, (query - ref_t[lo_c]).astype(np.float64) / np.where(span > 0, span, 1.0), 0.0)
    values = ref_v[lo_c] + (ref_v[hi_c] - ref_v[lo_c]) * frac[:, None]
    out[ok] = values[ok]
    return out


def joint_errors(pred: NDArray[np.float64], ref: NDArray[np.float64], joints: Sequence[str]) -> dict[str, Any]:
    """``{"n": rows compared, "joints": {name: {"mae", "rmse", "max_abs"}}, "mean_mae", "mean_rmse"}`` over the
    rows where the reference is known (None where no row is)."""
    pred = np.asarray(pred, dtype=np.float64).reshape(-1, len(joints))
    ref = np.asarray(ref, dtype=np.float64).reshape(-1, len(joints))
    ok = np.all(np.isfinite(ref), axis=1) & np.all(np.isfinite(pred), axis=1)
    err = pred[ok] - ref[ok]
    n = int(ok.sum())
    per_joint: dict[str, Any] = {}
    for j, name in enumerate(joints):
        if n:
            e = err[:, j]
            per_joint[name] = {"mae": float(np.mean(np.abs(e))), "rmse": float(math.sqrt(np.mean(e * e))),
                               "max_abs": float(np.max(np.abs(e)))}
        else:
            per_joint[name] = {"mae": None, "rmse": None, "max_abs": None}
    return {
        "n": n,
        "joints": per_joint,
        "mean_mae": float(np.mean(np.abs(err))) if n else None,
        "mean_rmse": float(np.mean([v["rmse"] for v in per_joint.values()])) if n else None,
    }


def horizon_errors(abs_err_sum: NDArray[np.float64], counts: NDArray[np.int64], joints: Sequence[str]) -> dict[str, Any]:
    """Per-horizon MAE from running sums: ``abs_err_sum[h, j]`` (sum of |error| of action h of every chunk),
    ``counts[h]`` (how many chunks had a reference for action h)."""
    counts = np.asarray(counts, dtype=np.int64)
    sums = np.asarray(abs_err_sum, dtype=np.float64)
    known = counts > 0
    mae = np.full(sums.shape, np.nan)
    mae[known] = sums[known] / counts[known, None]
    mean = np.full(len(counts), np.nan)
    mean[known] = mae[known].mean(axis=1)

    def listed(values) -> list:
        return [float(v) if np.isfinite(v) else None for v in values]

    return {"count": counts.tolist(), "mae": {name: listed(mae[:, j]) for j, name in enumerate(joints)},
            "mean_mae": listed(mean)}


def accumulate_horizon(
    chunk_times_ns: NDArray[np.int64],
    chunk_values: NDArray[np.float64],
    ref_values: NDArray[np.float64],
    sums: NDArray[np.float64],
    counts: NDArray[np.int64],
) -> None:
    """Add one chunk's |error| per horizon step to ``sums``/``counts`` (in place; rows with a NaN reference skipped).
    ``ref_values`` is the reference at ``chunk_times_ns`` (see :func:`reference_at`)."""
    ok = np.all(np.isfinite(ref_values), axis=1)
    n = min(len(chunk_times_ns), sums.shape[0])
    ok = ok[:n]
    sums[:n][ok] += np.abs(chunk_values[:n][ok] - ref_values[:n][ok])
    counts[:n][ok] += 1


def gripper_agreement(pred: NDArray[np.float64], ref: NDArray[np.float64], threshold: float) -> dict[str, Any]:
    """Open (> threshold) / closed agreement of two gripper series (NaN reference rows left out)."""
    pred = np.asarray(pred, dtype=np.float64).reshape(-1)
    ref = np.asarray(ref, dtype=np.float64).reshape(-1)
    ok = np.isfinite(pred) & np.isfinite(ref)
    n = int(ok.sum())
    if not n:
        return {"n": 0, "agreement": None, "threshold": float(threshold)}
    p_open, r_open = pred[ok] > threshold, ref[ok] > threshold
    return {
        "n": n,
        "agreement": float(np.mean(p_open == r_open)),
        "threshold": float(threshold),
        "recorded_open_fraction": float(np.mean(r_open)),
        "commanded_open_fraction": float(np.mean(p_open)),
        "open_when_recorded_closed": int(np.sum(p_open & ~r_open)),
        "closed_when_recorded_open": int(np.sum(~p_open & r_open)),
    }


def latency_stats(seconds: Sequence[float]) -> dict[str, Any]:
    s = np.asarray(list(seconds), dtype=np.float64)
    if not len(s):
        return {"n": 0, "mean_s": None, "p50_s": None, "p90_s": None, "max_s": None}
    return {"n": int(len(s)), "mean_s": float(s.mean()), "p50_s": float(np.percentile(s, 50)),
            "p90_s": float(np.percentile(s, 90)), "max_s": float(s.max())}
