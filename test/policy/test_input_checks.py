"""Issue #14: non-finite and mis-scaled inputs are refused with a message that names the input (policy and
preprocessor, before LeRobot's own steps); a NaN in a padded action step does not poison the loss and one in an
in-episode step is refused."""
from __future__ import annotations

import json
import math

import pytest
import torch

from helpers_policy import make_batch, make_config


@pytest.fixture(scope="module")
def policy(tiny_backbone):
    from gemma3nvla_ros.policy.modeling_gemma3nvla import Gemma3nVLAPolicy

    torch.manual_seed(0)
    return Gemma3nVLAPolicy(make_config(tiny_backbone[0], num_vlm_layers=3)).eval()


def _stats():
    ones, zeros = torch.ones(6), torch.zeros(6)
    return {"observation.state": {"mean": zeros, "std": ones}, "action": {"mean": zeros, "std": ones}}


def _observation(cfg, task="pick the red cube"):
    obs = {key: torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(1)) for key in cfg.image_features}
    obs["observation.state"] = torch.zeros(6)
    obs["task"] = task
    return obs


# ------------------------------------------------------------------ inference: the policy refuses
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_state_is_refused(policy, bad):
    from gemma3nvla_ros.policy.input_checks import InputRefused

    batch = make_batch(policy.config, with_actions=False)
    batch["observation.state"][1, 2] = bad
    kind = "NaN" if math.isnan(bad) else "inf"
    with pytest.raises(InputRefused, match=rf"observation.state is not finite: {kind} at dims \[2\] in sample 1"):
        policy.predict_action_chunk(batch)


def test_nan_pixel_is_refused(policy):
    batch = make_batch(policy.config, with_actions=False)
    batch["observation.images.wrist"][1, 0, 10, 20] = math.nan
    with pytest.raises(ValueError, match=r"'observation.images.wrist' has NaN pixels in sample 1"):
        policy.predict_action_chunk(batch)
    batch = make_batch(policy.config)
    batch["observation.images.top"][0, 2, 0, 0] = math.inf
    with pytest.raises(ValueError, match=r"'observation.images.top' has inf pixels in sample 0"):
        policy.forward(batch)  # training batches too


@pytest.mark.parametrize("scale, shift, hint", [
    (255.0, 0.0, r"it looks like 0\.\.255: divide by 255"),
    (2.0, -1.0, r"it looks normalized to \[-1, 1\]: pass \(x \+ 1\) / 2"),
])
def test_float_images_outside_0_1_are_refused(policy, scale, shift, hint):
    batch = make_batch(policy.config, with_actions=False)
    batch["observation.images.top"] = batch["observation.images.top"] * scale + shift
    with pytest.raises(ValueError, match=r"'observation.images.top' must have pixels in \[0, 1\] .*got values in "
                                         r"\[[-.\de]+, [-.\de]+\] in samples \[0, 1\]: " + hint):
        policy.predict_action_chunk(batch)


def test_valid_inputs_still_act(policy):
    batch = make_batch(policy.config, with_actions=False)
    batch["observation.images.top"][0] = 0.0  # the bounds themselves are fine
    batch["observation.images.wrist"][1] = 1.0
    assert torch.isfinite(policy.predict_action_chunk(batch, generator=torch.Generator().manual_seed(0))).all()


# ------------------------------------------------------------------ the preprocessor refuses before LeRobot's steps
def test_preprocessor_refuses_before_lerobot_steps(policy):
    from gemma3nvla_ros.policy.input_checks import InputRefused
    from gemma3nvla_ros.policy.processor_gemma3nvla import make_gemma3nvla_pre_post_processors

    pre, _ = make_gemma3nvla_pre_post_processors(policy.config, dataset_stats=_stats())
    assert torch.isfinite(pre(_observation(policy.config))["observation.state"]).all()

    obs = _observation(policy.config)
    obs["observation.state"] = torch.zeros(5)  # LeRobot's normalizer: RuntimeError "The size of tensor a (5)..."
    with pytest.raises(InputRefused, match=r"observation.state has shape \(1, 5\) \(5 values\) but the policy was "
                                           r"configured for 6"):
        pre(obs)
    obs = _observation(policy.config)
    del obs["task"]  # LeRobot's tokenizer: KeyError: 'task'
    with pytest.raises(InputRefused, match=r"No task: gemma3nvla is language-conditioned"):
        pre(obs)
    obs = _observation(policy.config)
    obs["observation.state"] = torch.tensor([0.0, 0.0, math.nan, 0.0, 0.0, 0.0])
    with pytest.raises(InputRefused, match=r"observation.state is not finite: NaN at dims \[2\] in sample 0"):
        pre(obs)
    obs = _observation(policy.config)
    obs["observation.images.top"] = obs["observation.images.top"] * 255
    with pytest.raises(InputRefused, match=r"'observation.images.top' must have pixels in \[0, 1\]"):
        pre(obs)
    # Training batches: a wrong action width fails here, not in the normalizer; the dataset index is named.
    batch = {k: v[None] if isinstance(v, torch.Tensor) else [v] for k, v in _observation(policy.config).items()}
    batch["observation.images.top_is_pad"] = torch.tensor([[False]])  # as LeRobot's dataset gives: not an image
    batch["observation.state"][0, 4] = math.inf
    batch["index"] = torch.tensor([1234])
    with pytest.raises(InputRefused, match=r"inf at dims \[4\] in sample 0 \(dataset index 1234\)"):
        pre(batch)
    batch["observation.state"][0, 4] = 0.0
    batch["action"] = torch.zeros(1, 8, 7)
    with pytest.raises(InputRefused, match=r"action has shape \(1, 8, 7\) \(7 values\) but the policy was configured "
                                           r"for 6"):
        pre(batch)


def test_saved_preprocessor_keeps_the_check_and_old_ones_get_it(policy, tmp_path):
    from lerobot.processor import PolicyProcessorPipeline

    from gemma3nvla_ros.policy.input_checks import InputRefused
    from gemma3nvla_ros.policy.processor_gemma3nvla import (
        Gemma3nVLAInputCheck,
        add_input_check,
        make_gemma3nvla_pre_post_processors,
    )

    pre, _ = make_gemma3nvla_pre_post_processors(policy.config, dataset_stats=_stats())
    pre.save_pretrained(tmp_path)
    loaded = PolicyProcessorPipeline.from_pretrained(tmp_path, config_filename="policy_preprocessor.json")
    check = [s for s in loaded.steps if isinstance(s, Gemma3nVLAInputCheck)]
    assert len(check) == 1 and (check[0].state_dim, check[0].action_dim) == (6, 6)
    assert check[0].image_keys == ["observation.images.top", "observation.images.wrist"]
    assert not add_input_check(loaded, policy.config)

    # A preprocessor saved before the step existed: its task-length step now refuses a missing task itself...
    saved = json.loads((tmp_path / "policy_preprocessor.json").read_text())
    saved["steps"] = [s for s in saved["steps"] if s.get("registry_name") != "gemma3nvla_input_check"]
    (tmp_path / "policy_preprocessor.json").write_text(json.dumps(saved))
    old = PolicyProcessorPipeline.from_pretrained(tmp_path, config_filename="policy_preprocessor.json")
    assert not any(isinstance(s, Gemma3nVLAInputCheck) for s in old.steps)
    obs = _observation(policy.config)
    del obs["task"]
    with pytest.raises(InputRefused, match=r"No task"):
        old(obs)
    # ... and add_input_check (the runner's) puts the full check after the batch-dim step.
    assert add_input_check(old, policy.config)
    assert isinstance(old.steps[2], Gemma3nVLAInputCheck)
    obs = _observation(policy.config)
    obs["observation.state"] = torch.zeros(7)
    with pytest.raises(InputRefused, match=r"7 values\) but the policy was configured for 6"):
        old(obs)


# ------------------------------------------------------------------ training: padded vs in-episode steps
def test_nan_in_padded_action_steps_does_not_poison_the_loss(policy):
    cfg = policy.config
    batch = make_batch(cfg, seed=4)
    noise = torch.randn(2, cfg.chunk_size, cfg.max_action_dim, generator=torch.Generator().manual_seed(0))
    time = torch.tensor([0.3, 0.8])
    batch["action_is_pad"][0, 5:] = True
    batch["action"][0, 5:] = 0.0
    expected, _ = policy.forward(batch, noise=noise, time=time)
    per_sample, _ = policy.forward(batch, noise=noise, time=time, reduction="none")

    poisoned = dict(batch)
    poisoned["action"] = batch["action"].clone()
    poisoned["action"][0, 5:, 1] = math.nan
    poisoned["action"][0, 6, 3] = math.inf
    loss, info = policy.forward(poisoned, noise=noise, time=time)
    assert torch.isfinite(loss) and math.isfinite(info["loss"])
    torch.testing.assert_close(loss, expected, rtol=0, atol=0)
    torch.testing.assert_close(policy.forward(poisoned, noise=noise, time=time, reduction="none")[0], per_sample,
                               rtol=0, atol=0)
    policy.zero_grad()
    loss.backward()
    grads = [p.grad for p in policy.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    policy.zero_grad()


def test_nan_in_an_in_episode_action_step_is_refused(policy):
    from gemma3nvla_ros.policy.input_checks import InputRefused

    batch = make_batch(policy.config, seed=4)
    batch["action_is_pad"][0, 5:] = True
    batch["action"][1, 6, 2] = math.nan  # sample 1 has no padding: a real step
    batch["index"] = torch.tensor([10, 77])
    with pytest.raises(InputRefused, match=r"action is not finite in in-episode steps \[6\] \(dims \[2\]\) of samples "
                                           r"\[1\] \(dataset index \[77\]\)"):
        policy.forward(batch)
    batch["action"][1, 6, 2] = 0.0
    batch["action"][0, 3, 0] = -math.inf  # before sample 0's padding
    with pytest.raises(InputRefused, match=r"in-episode steps \[3\] \(dims \[0\]\) of samples \[0\]"):
        policy.forward(batch)
