"""Checks of the Gemma3nVLA policy's inputs, shared by the preprocessor's first step (``Gemma3nVLAInputCheck``, before
LeRobot's tokenizer and normalizer) and the policy itself (``_validate_batch``, for batches that bypass the
preprocessor). Each refuses, with an :class:`InputRefused` that names the input, the sample and what was expected,
an input that would otherwise give wrong actions without a word (NaN/inf, pixels outside [0, 1]) or fail deep
inside LeRobot with a bare error (a state of the wrong width, no task).
"""
from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

# Pixels are floats in [0, 1] (LeRobot's convention; Gemma 3n's tower takes them as they are). The slack only
# forgives float rounding: 0..255 and -1..1 images are far outside it.
PIXEL_SLACK = 1e-3


class InputRefused(ValueError):
    """An input the policy will not act on (or train on); ``str()`` says which and what was expected."""


def count(value: Any) -> int | None:
    """An integer >= 0 of any kind (numpy's too) as an int; None for anything else, bools and floats included
    (RTC's ``inference_delay`` / ``execution_horizon``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        return None
    return int(value)


def _samples(rows: Tensor, ids: Any = None) -> str:
    """'sample 1' / 'samples [0, 3]' (+ the dataset frame indices when ``ids`` holds them)."""
    idx = torch.nonzero(rows.reshape(-1).cpu()).flatten().tolist()
    shown = idx[:8] + (["..."] if len(idx) > 8 else [])
    text = f"sample {idx[0]}" if len(idx) == 1 else f"samples {shown}"
    if ids is not None:
        try:
            frames = [int(i) for i in torch.as_tensor(ids).reshape(-1)[idx[:8]].tolist()]
            text += f" (dataset index {frames[0] if len(idx) == 1 else frames})"
        except (TypeError, ValueError, IndexError, RuntimeError):
            pass
    return text


def check_width(key: str, x: Any, expected: int) -> None:
    """``x``'s last dim is ``expected`` wide (before LeRobot's normalizer, which fails on it with a bare error)."""
    shape = tuple(getattr(x, "shape", ()))
    if not shape or shape[-1] != expected:
        raise InputRefused(
            f"{key} has shape {shape} ({shape[-1] if shape else 0} values) but the policy was configured for "
            f"{expected} (dataset/policy features mismatch)."
        )


def check_finite(key: str, x: Tensor, ids: Any = None) -> None:
    """Refuses NaN/inf in a [B, ..., D] vector input (state, action), naming the samples and the dims."""
    bad = ~torch.isfinite(x)
    if not bool(bad.any()):
        return
    rows = bad.reshape(bad.shape[0], -1).any(dim=1) if bad.ndim > 1 else bad
    dims = torch.nonzero(bad.reshape(-1, bad.shape[-1]).any(dim=0).cpu()).flatten().tolist()
    kinds = " and ".join(k for k, m in (("NaN", torch.isnan(x)), ("inf", torch.isinf(x))) if bool(m.any()))
    raise InputRefused(
        f"{key} is not finite: {kinds} at dims {dims} in {_samples(rows, ids)}; refusing to act on it (check the "
        "joint readings, or the dataset)."
    )


def check_pixels(key: str, img: Tensor, ids: Any = None) -> None:
    """Refuses a non-float image, a NaN/inf pixel or pixels outside [0, 1], naming the samples."""
    if not img.is_floating_point():
        raise InputRefused(
            f"Image {key!r} must be floating point with pixels in [0, 1] (LeRobot's convention, which Gemma 3n's "
            f"vision tower takes as is), got {img.dtype}: divide 8-bit images by 255."
        )
    flat = img.reshape(img.shape[0], -1) if img.ndim > 1 else img.reshape(1, -1)
    nonfinite = ~torch.isfinite(flat)
    if bool(nonfinite.any()):
        kinds = " and ".join(k for k, m in (("NaN", torch.isnan(flat)), ("inf", torch.isinf(flat))) if bool(m.any()))
        raise InputRefused(
            f"Image {key!r} has {kinds} pixels in {_samples(nonfinite.any(dim=1), ids)}; expected floats in [0, 1]."
        )
    lo, hi = flat.amin(dim=1), flat.amax(dim=1)
    out = (lo < -PIXEL_SLACK) | (hi > 1 + PIXEL_SLACK)
    if bool(out.any()):
        mn, mx = float(lo.min()), float(hi.max())
        if mn < -PIXEL_SLACK:
            hint = "it looks normalized to [-1, 1]: pass (x + 1) / 2, the unnormalized frame"
        elif mx > 1 + PIXEL_SLACK and mx <= 255 + PIXEL_SLACK:
            hint = "it looks like 0..255: divide by 255"
        else:
            hint = "pass the frame as uint8 / 255"
        raise InputRefused(
            f"Image {key!r} must have pixels in [0, 1] (LeRobot's convention, which Gemma 3n's vision tower takes as "
            f"is), got values in [{mn:.4g}, {mx:.4g}] in {_samples(out, ids)}: {hint}."
        )


def inputs_look_fine(vectors: Sequence[Tensor], images: Sequence[Tensor]) -> bool:
    """One device sync: True when every vector is finite and every image's pixels are in [0, 1] (NaN fails the
    range test). When False, the detailed checks say what is wrong."""
    flags = [torch.isfinite(v).all() for v in vectors]
    for img in images:
        lo, hi = img.aminmax()
        flags.append((lo >= -PIXEL_SLACK) & (hi <= 1 + PIXEL_SLACK))
    return bool(torch.stack(flags).all()) if flags else True


def check_task(task: Any, batch_size: int | None = None) -> None:
    """A task string (or one per sample) is there, before LeRobot's tokenizer fails on it with KeyError: 'task'."""
    if task is None:
        raise InputRefused(
            "No task: gemma3nvla is language-conditioned; give the instruction as 'task' (a string, or a list with "
            "one string per sample) next to the observation."
        )
    tasks = [task] if isinstance(task, str) else task
    if not isinstance(tasks, (list, tuple)) or not all(isinstance(t, str) for t in tasks):
        raise InputRefused(f"'task' must be a string or a list of strings, got {type(task).__name__}: {task!r:.200}")
    if batch_size is not None and len(tasks) != batch_size:
        raise InputRefused(f"'task' has {len(tasks)} strings for a batch of {batch_size} observations.")
