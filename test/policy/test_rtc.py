"""Real-time chunking (RTC) in the policy: LeRobot's RTCProcessor through the flow-matching loop, called the way
LeRobot's rollout calls SmolVLA/pi0 (``predict_action_chunk(batch, inference_delay=, prev_chunk_left_over=)``)."""
from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path

import numpy as np
import pytest
import torch
from lerobot.policies.rtc.configuration_rtc import RTCConfig
from lerobot.policies.rtc.modeling_rtc import RTCProcessor

from helpers_policy import make_batch, make_config
REPO = Path(__file__).resolve().parents[2]

CHUNK = 16


@pytest.fixture(scope="module")
def policy(tiny_backbone):
    from gemma3nvla_ros.policy.modeling_gemma3nvla import Gemma3nVLAPolicy

    torch.manual_seed(0)
    cfg = make_config(tiny_backbone[0], num_vlm_layers=6, num_expert_layers=3, chunk_size=CHUNK, n_action_steps=CHUNK)
    p = Gemma3nVLAPolicy(cfg).eval()
    with torch.no_grad():  # a head with weight, so that actions depend on everything upstream
        p.model.action_out_proj.weight.normal_(std=0.5)
    return p


def _rtc(policy, config: RTCConfig | None):
    """As LeRobot's rollout switches RTC on: set the config, rebuild the processor."""
    policy.config.rtc_config = config
    policy.init_rtc_processor()


def _noise(policy, seed: int, batch: int = 1):
    cfg = policy.config
    return torch.randn(batch, cfg.chunk_size, cfg.max_action_dim, generator=torch.Generator().manual_seed(seed))


def _reference_euler(policy, batch, noise):
    """The sampling loop as it was before RTC: x += dt * v(x, t) over num_steps, padded dims kept at zero."""
    net = policy.model
    args = policy._inputs(batch)
    prefix, prefix_kv = net.compute_prefix(*args)
    steps = policy.config.num_steps
    x = net.real_dims_only(noise)
    for step in range(steps):
        t = torch.full((noise.shape[0],), 1.0 - step / steps, dtype=torch.float32)
        x = x + (-1.0 / steps) * net.real_dims_only(net.velocity(prefix, prefix_kv, x, t))
    return x[:, :, : policy.config.action_feature.shape[0]]


def test_declares_rtc_with_lerobots_call_shape(policy):
    assert policy.supports_rtc()
    assert policy.config.rtc_config is None and policy.rtc_processor is None  # off by default, as SmolVLA
    # LeRobot 0.6's rollout checks exactly this before --inference.type=rtc.
    inspect.signature(policy.predict_action_chunk).bind(object(), inference_delay=0, prev_chunk_left_over=None)
    _rtc(policy, RTCConfig(enabled=True))
    try:
        assert isinstance(policy.rtc_processor, RTCProcessor)
    finally:
        _rtc(policy, None)


def test_rtc_off_gives_the_plain_sampler_outputs(policy):
    batch = make_batch(policy.config, batch_size=1, seed=3, with_actions=False)
    noise = _noise(policy, 1)
    with torch.no_grad():
        expected = _reference_euler(policy, batch, noise)
    plain = policy.predict_action_chunk(batch, noise=noise)
    torch.testing.assert_close(plain, expected, rtol=0, atol=0)
    leftover = torch.randn(6, 6)
    # A leftover without RTC enabled is ignored (and said so once).
    _rtc(policy, RTCConfig(enabled=False))
    try:
        assert torch.equal(policy.predict_action_chunk(batch, noise=noise, inference_delay=2,
                                                       prev_chunk_left_over=leftover), plain)
        # RTC on, but nothing to guide towards (the first chunk): the same chunk.
        _rtc(policy, RTCConfig(enabled=True))
        assert torch.equal(policy.predict_action_chunk(batch, noise=noise, inference_delay=0,
                                                       prev_chunk_left_over=None), plain)
    finally:
        _rtc(policy, None)


@pytest.mark.parametrize("delay", [0, 3, 5])
def test_guided_chunk_follows_the_leftover_where_it_is_frozen(policy, delay):
    batch = make_batch(policy.config, batch_size=1, seed=4, with_actions=False)
    noise = _noise(policy, 2)
    # The previous chunk's leftover: a chunk of the same policy from other noise (so a plausible one), 10 steps.
    leftover = policy.predict_action_chunk(batch, noise=_noise(policy, 9))[0, :10]
    plain = policy.predict_action_chunk(batch, noise=noise)[0]
    _rtc(policy, RTCConfig(enabled=True, execution_horizon=8, max_guidance_weight=10.0))
    try:
        guided = policy.predict_action_chunk(batch, noise=noise, inference_delay=delay,
                                             prev_chunk_left_over=leftover)[0]
        again = policy.predict_action_chunk(batch, noise=noise, inference_delay=np.int64(delay),
                                            prev_chunk_left_over=leftover[None].numpy())[0]
    finally:
        _rtc(policy, None)
    torch.testing.assert_close(again, guided)
    frozen = max(delay, 1)
    plain_err = (plain[:frozen] - leftover[:frozen]).abs().mean()
    guided_err = (guided[:frozen] - leftover[:frozen]).abs().mean()
    assert plain_err > 0.1
    assert guided_err < 0.15 * plain_err, (float(guided_err), float(plain_err))
    # The guided region ends at the execution horizon: past the leftover's length nothing pulls the chunk.
    assert not torch.allclose(guided[10:], leftover[-1].expand(CHUNK - 10, -1), atol=0.05)


def test_guidance_runs_inside_the_runners_inference_mode(policy):
    """The runner infers under torch.inference_mode; guidance needs autograd and must still work there."""
    batch = make_batch(policy.config, batch_size=1, seed=5, with_actions=False)
    noise = _noise(policy, 3)
    leftover = torch.zeros(8, 6)
    _rtc(policy, RTCConfig(enabled=True, execution_horizon=8))
    try:
        outside = policy.predict_action_chunk(batch, noise=noise, inference_delay=2, prev_chunk_left_over=leftover)
        with torch.inference_mode():
            inf_batch = {k: v.clone() for k, v in batch.items()}  # inference tensors, as the preprocessor's
            inside = policy.predict_action_chunk(inf_batch, noise=noise.clone(), inference_delay=2,
                                                 prev_chunk_left_over=leftover.clone())
    finally:
        _rtc(policy, None)
    torch.testing.assert_close(inside, outside)


@pytest.mark.parametrize("kwargs, needle", [
    (dict(inference_delay=None, prev_chunk_left_over=torch.zeros(4, 6)), "inference_delay"),
    (dict(inference_delay=-1, prev_chunk_left_over=torch.zeros(4, 6)), "inference_delay"),
    (dict(inference_delay=1.5, prev_chunk_left_over=torch.zeros(4, 6)), "inference_delay"),
    (dict(inference_delay=1, prev_chunk_left_over=torch.zeros(4, 5)), "prev_chunk_left_over must be"),
    (dict(inference_delay=1, prev_chunk_left_over=torch.zeros(0, 6)), "prev_chunk_left_over must be"),
    (dict(inference_delay=1, prev_chunk_left_over=torch.full((4, 6), float("nan"))), "NaN"),
    (dict(inference_delay=1, prev_chunk_left_over=torch.zeros(4, 6), execution_horizon=0), "execution_horizon"),
])
def test_bad_rtc_arguments_are_refused(policy, kwargs, needle):
    batch = make_batch(policy.config, batch_size=1, seed=6, with_actions=False)
    _rtc(policy, RTCConfig(enabled=True))
    try:
        with pytest.raises(ValueError, match=needle):
            policy.predict_action_chunk(batch, **kwargs)
    finally:
        _rtc(policy, None)


def test_rtc_config_survives_save_and_load(tmp_path, tiny_backbone):
    from lerobot.configs.policies import PreTrainedConfig

    cfg = make_config(tiny_backbone[0], rtc_config=RTCConfig(enabled=True, execution_horizon=12,
                                                             max_guidance_weight=5.0))
    cfg._save_pretrained(tmp_path)
    loaded = PreTrainedConfig.from_pretrained(tmp_path)
    assert loaded.rtc_config == cfg.rtc_config
    with pytest.raises(ValueError, match="execution_horizon"):
        make_config(tiny_backbone[0], rtc_config=RTCConfig(enabled=True, execution_horizon=0))


def _load_flow_matching():
    """policy/flow_matching.py on its own (it needs only torch), as LeRobot 0.6 can import it before the rest of
    the policy is ported."""
    spec = importlib.util.spec_from_file_location("_g3n_flow_matching", REPO / "gemma3nvla_ros/policy/flow_matching.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_lerobot04_loop_equals_lerobot06_euler_integrate():
    """On LeRobot 0.4 the policy runs SmolVLA 0.4.4's inline loop; it must integrate and guide as 0.6's shared
    euler_integrate does (checked where LeRobot 0.6 is installed)."""
    fm = _load_flow_matching()
    if fm.lerobot_euler_integrate is None:
        pytest.skip("LeRobot 0.4: no lerobot.policies.common.flow_matching to compare with")
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 6, generator=g) * 0.3
    noise = torch.randn(2, 12, 6, generator=g)
    prev = torch.randn(2, 7, 6, generator=g)

    def denoise(x, t):  # a smooth velocity field depending on x and t
        return torch.tanh(x @ w) + t[:, None, None] * x

    for rtc in (False, True):
        kw = dict(rtc_processor=RTCProcessor(RTCConfig(enabled=True, execution_horizon=8)), rtc_enabled=rtc,
                  inference_delay=3, prev_chunk_left_over=prev, execution_horizon=None)
        ours = fm._euler_integrate_lerobot04(denoise, noise.clone(), 10, **kw)
        theirs = fm.lerobot_euler_integrate(denoise, noise.clone(), 10, **kw)
        assert torch.equal(ours, theirs), rtc


# ----------------------------------------------------------------------------------------------- fast path
def test_lerobots_guidance_is_the_closed_form_the_fast_path_computes():
    """The fast path has no autograd: it relies on RTCProcessor.denoise_step taking v_t before x_t requires grad,
    so that its correction is the weighted error. Checked against the installed LeRobot's processor, every
    schedule, a leftover shorter and as long as the chunk, the first step (infinite weight, capped) and later ones."""
    from lerobot.configs.types import RTCAttentionSchedule

    from gemma3nvla_ros.policy.fast_inference import rtc_guidance_weights, rtc_guide

    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 6, generator=g)

    def denoise(x):  # nonlinear in x: an autograd correction through v_t would differ from the closed form
        return torch.tanh(x @ w) * 2

    steps = 5
    for schedule in RTCAttentionSchedule:
        for delay, horizon, length, max_weight in ((3, 8, 10, 10.0), (0, 12, 4, 2.5), (5, 16, 16, 40.0)):
            proc = RTCProcessor(RTCConfig(enabled=True, execution_horizon=horizon, max_guidance_weight=max_weight,
                                          prefix_attention_schedule=schedule))
            weights = rtc_guidance_weights(steps, max_weight)
            x, prev = torch.randn(2, CHUNK, 6, generator=g), torch.randn(2, length, 6, generator=g)
            padded = torch.zeros(2, CHUNK, 6)
            padded[:, :length] = prev
            prefix = proc.get_prefix_weights(delay, min(horizon, length), CHUNK)[None, :, None]
            for step in range(steps):
                time = 1.0 - step / steps
                theirs = proc.denoise_step(x, prev, delay, time, denoise)
                ours = rtc_guide(x, denoise(x), padded, prefix, weights[step], time)
                assert torch.equal(ours, theirs), (schedule, delay, horizon, step)
    with pytest.raises(ValueError, match="max_guidance_weight"):
        rtc_guidance_weights(steps, float("inf"))


@pytest.fixture(scope="module")
def fast_policy(policy):
    """A copy of ``policy`` on the fast path (CPU: no graphs, no compile), so that ``policy`` stays the eager
    reference."""
    import copy

    from gemma3nvla_ros.policy.fast_inference import FastSampler

    fast = copy.deepcopy(policy)
    fast._fast = FastSampler(fast.model, graphs=False, compile=False)
    assert fast._fast_sampler() is fast._fast
    return fast


@pytest.mark.parametrize("delay, horizon, max_weight, length", [
    (3, 8, 10.0, 10),  # LeRobot's default weight, a leftover shorter than the chunk
    (0, None, 2.5, 4),  # the config's horizon (12), longer than the leftover: cut to it
    (5, 16, 40.0, 16),  # a full-chunk leftover
])
def test_guided_fast_path_equals_eager_with_lerobots_processor(policy, fast_policy, caplog, delay, horizon,
                                                                max_weight, length):
    import logging

    from helpers_policy import rel

    g = torch.Generator().manual_seed(100 + delay)
    batch = make_batch(policy.config, batch_size=2, seed=20 + delay, with_actions=False)
    noise = torch.randn(2, CHUNK, policy.config.max_action_dim, generator=g)
    leftover = torch.randn(2, length, 6, generator=g)
    kw = dict(noise=noise, inference_delay=delay, prev_chunk_left_over=leftover, execution_horizon=horizon)
    for p in (policy, fast_policy):
        _rtc(p, RTCConfig(enabled=True, execution_horizon=12, max_guidance_weight=max_weight))
    try:
        with caplog.at_level(logging.WARNING):
            guided = fast_policy.predict_action_chunk(batch, **kw)
        assert fast_policy._fast._statics and all(s.guidance.on for s in fast_policy._fast._statics.values())
        expected = policy.predict_action_chunk(batch, **kw)
        plain = fast_policy.predict_action_chunk(batch, noise=noise)
    finally:
        _rtc(policy, None)
        _rtc(fast_policy, None)
    assert rel(guided, expected) <= 1e-5, rel(guided, expected)  # test_fast_inference's fast-vs-eager tolerance
    assert rel(guided, plain) > 1e-2  # the guidance did something
    assert not [r for r in caplog.records if "fast" in r.getMessage()]


def test_unguided_fast_chunks_are_bit_identical_to_the_path_without_rtc(policy, fast_policy):
    """Zero guidance weights give exactly the Euler loop the fast path ran before RTC, before and after a guided
    chunk left its buffers set (no leak between chunks)."""
    fast = fast_policy._fast
    net = fast_policy.model
    batch = make_batch(policy.config, batch_size=1, seed=30, with_actions=False)
    noise = _noise(policy, 30)
    inputs = fast_policy._inputs(batch)
    before = fast.sample_actions(*inputs, noise=noise)
    _rtc(fast_policy, RTCConfig(enabled=True, execution_horizon=8))
    try:
        guided = fast_policy.predict_action_chunk(batch, noise=noise, inference_delay=2,
                                                  prev_chunk_left_over=torch.randn(10, 6))
        after_guided = fast_policy.predict_action_chunk(batch, noise=noise)  # RTC on, no leftover: unguided
    finally:
        _rtc(fast_policy, None)
    after = fast.sample_actions(*inputs, noise=noise)
    # The loop without RTC, on the sampler's own velocity and phase outputs.
    s = fast.load(*inputs, noise)
    fast.run_phase(s, "vision")
    fast.run_phase(s, "text")
    kv = [t for pair in s.prefix_kv for t in pair]
    steps = policy.config.num_steps
    x = net.real_dims_only(noise)
    with torch.no_grad():
        for step in range(steps):
            v = fast._velocity(x, s.plan.time_parts[step], kv, s.plan.suffix_rope, s.plan.cross_bias,
                               s.plan.joint_bias)
            x = x + (-1.0 / steps) * net.real_dims_only(v)
    assert torch.equal(before, x) and torch.equal(after, x)
    assert torch.equal(after_guided, x[:, :, :6])
    assert not torch.allclose(guided, after_guided, atol=1e-3)


def test_max_guidance_weight_changes_take_effect_without_a_new_plan(policy, fast_policy):
    fast = fast_policy._fast
    batch = make_batch(policy.config, batch_size=1, seed=40, with_actions=False)
    noise, leftover = _noise(policy, 40), torch.randn(12, 6, generator=torch.Generator().manual_seed(40))
    kw = dict(noise=noise, inference_delay=4, prev_chunk_left_over=leftover)
    config = RTCConfig(enabled=True, execution_horizon=10, max_guidance_weight=10.0)
    _rtc(fast_policy, config)
    _rtc(policy, RTCConfig(enabled=True, execution_horizon=10, max_guidance_weight=1.0))
    try:
        strong = fast_policy.predict_action_chunk(batch, **kw)
        plans, statics = dict(fast._plans), dict(fast._statics)
        buffers = [(s.guidance.weights.data_ptr(), s.guidance.leftover.data_ptr()) for s in statics.values()]
        config.max_guidance_weight = 1.0  # in place, at run time: the processor reads the same config
        weak = fast_policy.predict_action_chunk(batch, **kw)
        expected = policy.predict_action_chunk(batch, **kw)
        config.max_guidance_weight = float("nan")
        with pytest.raises(ValueError, match="max_guidance_weight"):
            fast_policy.predict_action_chunk(batch, **kw)
    finally:
        _rtc(policy, None)
        _rtc(fast_policy, None)
    from helpers_policy import rel

    assert rel(weak, expected) <= 1e-5
    assert rel(weak, strong) > 1e-2
    assert fast._plans.keys() == plans.keys() and fast._statics == statics  # same plan, same static buffers
    assert [(s.guidance.weights.data_ptr(), s.guidance.leftover.data_ptr()) for s in fast._statics.values()] == buffers


def test_guided_fast_path_runs_inside_the_runners_inference_mode_and_debug_goes_eager(policy, fast_policy):
    """The runner infers unguided chunks under torch.inference_mode and guided ones under no_grad: the fast path's
    buffers, made by whichever comes first, serve both."""
    from gemma3nvla_ros.policy.fast_inference import FastSampler

    fast_policy._fast = FastSampler(fast_policy.model, graphs=False, compile=False)  # no buffers yet
    batch = make_batch(policy.config, batch_size=1, seed=50, with_actions=False)
    noise, leftover = _noise(policy, 50), torch.randn(9, 6, generator=torch.Generator().manual_seed(50))
    kw = dict(inference_delay=3, prev_chunk_left_over=leftover)
    _rtc(fast_policy, RTCConfig(enabled=True, execution_horizon=8))
    try:
        with torch.inference_mode():
            inside = fast_policy.predict_action_chunk({k: v.clone() for k, v in batch.items()}, noise=noise.clone(),
                                                      **kw)
        outside = fast_policy.predict_action_chunk(batch, noise=noise, **kw)
        # LeRobot's debug tracker records every step of the eager loop: with it on, the eager path runs.
        _rtc(fast_policy, RTCConfig(enabled=True, execution_horizon=8, debug=True))
        for s in fast_policy._fast._statics.values():
            fast_policy._fast.clear_guidance(s)
        debug = fast_policy.predict_action_chunk(batch, noise=noise, **kw)
        assert fast_policy.rtc_processor.get_all_debug_steps()
        assert not any(s.guidance.on for s in fast_policy._fast._statics.values())
    finally:
        _rtc(fast_policy, None)
    from helpers_policy import rel

    torch.testing.assert_close(inside, outside)
    assert rel(debug, outside) <= 1e-5
