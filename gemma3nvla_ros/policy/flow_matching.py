"""The flow-matching Euler loop with LeRobot's real-time-chunking (RTC) hook, on either LeRobot.

LeRobot 0.6 factored the loop its openpi-style policies (pi0, pi05, smolvla) share into
``lerobot.policies.common.flow_matching.euler_integrate``; that function is used where it exists. LeRobot
0.4.x has no such module: its SmolVLA runs the same loop inline (``VLAFlowMatching.sample_actions``), and
``euler_integrate`` below is that loop, statement for statement, so both LeRobots integrate and guide the
same way (``test_flow_matching_rtc`` checks the two against each other where 0.6 is installed).

This module imports only torch (and LeRobot 0.6's function, through ``gemma3nvla_ros.compat``), so it can be
loaded on its own.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from gemma3nvla_ros.compat import lerobot_euler_integrate as _lerobot_euler_integrate

lerobot_euler_integrate = _lerobot_euler_integrate()  # None on LeRobot 0.4.4


def _euler_integrate_lerobot04(
    denoise_fn: Callable[[Tensor, Tensor], Tensor],
    noise: Tensor,
    num_steps: int,
    *,
    rtc_processor: Any = None,
    rtc_enabled: bool = False,
    inference_delay: int | None = None,
    prev_chunk_left_over: Tensor | None = None,
    execution_horizon: int | None = None,
) -> Tensor:
    """LeRobot 0.4.4 SmolVLA's sampling loop: Euler from t=1 to 0, the velocity routed through
    ``rtc_processor.denoise_step`` when ``rtc_enabled`` (the processor applies no guidance without a leftover)."""
    bsize = noise.shape[0]
    device = noise.device
    dt = -1.0 / num_steps
    x_t = noise
    for step in range(num_steps):
        time = 1.0 + step * dt
        time_tensor = torch.tensor(time, dtype=torch.float32, device=device).expand(bsize)

        def denoise_step_partial_call(input_x_t: Tensor, current_timestep: Tensor = time_tensor) -> Tensor:
            return denoise_fn(input_x_t, current_timestep)

        if rtc_enabled:
            v_t = rtc_processor.denoise_step(
                x_t=x_t,
                prev_chunk_left_over=prev_chunk_left_over,
                inference_delay=inference_delay,
                time=time,
                original_denoise_step_partial=denoise_step_partial_call,
                execution_horizon=execution_horizon,
            )
        else:
            v_t = denoise_step_partial_call(x_t)
        x_t = x_t + dt * v_t
        if rtc_processor is not None and rtc_processor.is_debug_enabled():
            rtc_processor.track(time=time, x_t=x_t, v_t=v_t)
    return x_t


euler_integrate = lerobot_euler_integrate or _euler_integrate_lerobot04
