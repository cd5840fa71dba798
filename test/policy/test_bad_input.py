"""Bad configuration and bad input fail early with a ValueError that says what was expected."""
from __future__ import annotations

import json

import pytest
import torch

from helpers_policy import features, make_batch, make_config


@pytest.fixture(scope="module")
def policy(tiny_backbone):
    from gemma3nvla_ros.policy.modeling_gemma3nvla import Gemma3nVLAPolicy

    torch.manual_seed(0)
    return Gemma3nVLAPolicy(make_config(tiny_backbone[0], num_vlm_layers=3)).eval()


def _check(policy, batch, match, training=False):
    with pytest.raises(ValueError, match=match):
        if training:
            policy.forward(batch)
        else:
            policy.predict_action_chunk(batch)


def test_wrong_image_size(policy):
    batch = make_batch(policy.config, with_actions=False)
    batch["observation.images.top"] = torch.rand(2, 3, 32, 32)
    _check(policy, batch, r"observation.images.top.*must be \[B, 3, 64, 64\]")


def test_integer_images(policy):
    """8-bit images (0..255) would reach the vision tower unscaled: an error, not silently wrong features."""
    batch = make_batch(policy.config, with_actions=False)
    batch["observation.images.top"] = (batch["observation.images.top"] * 255).to(torch.uint8)
    _check(policy, batch, r"observation.images.top.*floating point with pixels in \[0, 1\].*uint8")


def test_missing_and_unexpected_cameras(policy):
    batch = make_batch(policy.config, with_actions=False)
    del batch["observation.images.wrist"]
    _check(policy, batch, r"Expected cameras .*missing \['observation.images.wrist'\]")
    batch = make_batch(policy.config, with_actions=False)
    batch["observation.images.side"] = torch.rand(2, 3, 64, 64)
    _check(policy, batch, r"unexpected \['observation.images.side'\]")


def test_missing_state_and_language(policy):
    batch = make_batch(policy.config, with_actions=False)
    del batch["observation.state"]
    _check(policy, batch, r"Missing 'observation.state'")
    batch = make_batch(policy.config, with_actions=False)
    del batch["observation.language.tokens"]
    _check(policy, batch, r"Missing 'observation.language.tokens'.*preprocessor")


def test_state_and_action_wider_than_max(policy, tiny_backbone):
    batch = make_batch(policy.config, with_actions=False)
    batch["observation.state"] = torch.randn(2, 9)
    _check(policy, batch, r"more than max_state_dim=8")
    batch = make_batch(policy.config)
    batch["action"] = torch.randn(2, 8, 9)
    _check(policy, batch, r"more than max_action_dim=8", training=True)

    from gemma3nvla_ros.policy.modeling_gemma3nvla import Gemma3nVLAPolicy

    inputs, outputs = features(state_dim=40)
    with pytest.raises(ValueError, match=r"at most max_state_dim=32"):
        Gemma3nVLAPolicy(make_config(tiny_backbone[0], max_state_dim=32, input_features=inputs, output_features=outputs))
    inputs, outputs = features(action_dim=33)
    with pytest.raises(ValueError, match=r"at most max_action_dim=32"):
        Gemma3nVLAPolicy(make_config(tiny_backbone[0], max_action_dim=32, input_features=inputs, output_features=outputs))


def test_mismatched_dataset_features(policy, tiny_backbone):
    batch = make_batch(policy.config, with_actions=False)
    batch["observation.state"] = torch.randn(2, 5)
    _check(policy, batch, r"has 5 values but the policy was configured for 6")
    batch = make_batch(policy.config)
    batch["action"] = torch.randn(2, 8, 4)
    _check(policy, batch, r"has 4 values but the policy was configured for 6", training=True)
    batch = make_batch(policy.config)
    batch["action"] = torch.randn(2, 5, 6)
    _check(policy, batch, r"chunk_size=8", training=True)

    from gemma3nvla_ros.policy.modeling_gemma3nvla import Gemma3nVLAPolicy

    inputs, outputs = features(cameras=())
    with pytest.raises(ValueError, match=r"at least one image feature"):
        Gemma3nVLAPolicy(make_config(tiny_backbone[0], input_features=inputs, output_features=outputs))
    inputs, outputs = features()
    del inputs["observation.state"]
    with pytest.raises(ValueError, match=r"needs a state feature"):
        Gemma3nVLAPolicy(make_config(tiny_backbone[0], input_features=inputs, output_features=outputs))


def test_unresized_cameras_must_share_a_shape(tiny_backbone):
    """Without resize_imgs_with_padding the cameras are batched through the vision tower as they are, so they
    must have one shape: a clear error at construction, not a torch.cat error at the first batch."""
    from lerobot.configs.types import FeatureType, PolicyFeature

    from gemma3nvla_ros.policy.modeling_gemma3nvla import Gemma3nVLAPolicy

    inputs, outputs = features()
    inputs["observation.images.wrist"] = PolicyFeature(type=FeatureType.VISUAL, shape=(3, 48, 64))
    with pytest.raises(ValueError, match=r"resize_imgs_with_padding.*same shape"):
        Gemma3nVLAPolicy(make_config(tiny_backbone[0], num_vlm_layers=3, resize_imgs_with_padding=None,
                                     input_features=inputs, output_features=outputs))
    # one shape (empty cameras take the real cameras' shape): fine
    policy = Gemma3nVLAPolicy(make_config(tiny_backbone[0], num_vlm_layers=3, resize_imgs_with_padding=None,
                                          empty_cameras=1)).eval()
    actions = policy.predict_action_chunk(make_batch(policy.config, with_actions=False))
    assert torch.isfinite(actions).all()


def test_over_long_task(policy):
    from gemma3nvla_ros.policy.processor_gemma3nvla import make_gemma3nvla_pre_post_processors

    cfg = policy.config
    pre, _ = make_gemma3nvla_pre_post_processors(cfg, dataset_stats=None)
    obs = {k: torch.rand(3, 64, 64) for k in cfg.image_features}
    obs["observation.state"] = torch.zeros(6)
    obs["task"] = " ".join(["pick the red cube"] * 20)
    with pytest.raises(ValueError, match=r"tokenizes to \d+ tokens; tokenizer_max_length is 48"):
        pre(dict(obs))
    obs["task"] = "pick the red cube"
    out = pre(dict(obs))
    assert out["observation.language.tokens"].shape[-1] <= 48
    # Opting in to truncation cuts instead.
    cfg2 = make_config(cfg.vlm_model_name, truncate_long_tasks=True)
    pre2, _ = make_gemma3nvla_pre_post_processors(cfg2, dataset_stats=None)
    obs["task"] = " ".join(["pick the red cube"] * 20)
    assert pre2(dict(obs))["observation.language.tokens"].shape[-1] == 48
    # And an over-long token tensor that bypassed the processor is caught by the policy.
    batch = make_batch(cfg, with_actions=False)
    batch["observation.language.tokens"] = torch.full((2, 60), 6)
    batch["observation.language.attention_mask"] = torch.ones(2, 60, dtype=torch.bool)
    _check(policy, batch, r"more than tokenizer_max_length=48")


@pytest.mark.parametrize(
    "overrides,match",
    [
        ({"attention_mode": "both"}, r"attention_mode.*cross_attn"),
        ({"num_vlm_layers": 6, "num_expert_layers": 4}, r"num_expert_layers` \(4\) must divide"),
        ({"n_action_steps": 20}, r"upper bound"),
        ({"expert_width_multiplier": 0.0}, r"expert_width_multiplier"),
        ({"self_attn_every_n_layers": -1}, r"self_attn_every_n_layers"),
        ({"resize_imgs_with_padding": (0, 64)}, r"resize_imgs_with_padding"),
        ({"optimizer_betas": (0.9, 1.5)}, r"optimizer_betas"),
        ({"backbone_dtype": "int8"}, r"backbone_dtype"),
        ({"tokenizer_max_length": 0}, r"tokenizer_max_length"),
        ({"empty_cameras": -1}, r"empty_cameras"),
    ],
)
def test_config_validation(tiny_backbone, overrides, match):
    with pytest.raises(ValueError, match=match):
        make_config(tiny_backbone[0], **overrides)


def test_known_backbone_depths():
    from gemma3nvla_ros.policy.configuration_gemma3nvla import Gemma3nVLAConfig

    with pytest.raises(ValueError, match=r"\[1, 30\] for google/gemma-3n-e2b-it"):
        Gemma3nVLAConfig(num_vlm_layers=31)
    assert Gemma3nVLAConfig(vlm_model_name="google/gemma-3n-e4b-it", num_vlm_layers=35).num_vlm_layers == 35
    cfg = Gemma3nVLAConfig()
    assert (cfg.optimizer_lr, cfg.optimizer_betas, cfg.scheduler_decay_lr, cfg.chunk_size, cfg.num_steps,
            cfg.tokenizer_max_length, cfg.resize_imgs_with_padding, cfg.max_state_dim, cfg.expert_width_multiplier,
            cfg.self_attn_every_n_layers, cfg.num_vlm_layers) == (
        5e-5, (0.9, 0.95), 1.25e-6, 50, 10, 48, (768, 768), 32, 0.75, 2, 30)


def test_backbone_dir_checks(tiny_backbone, tmp_path):
    from gemma3nvla_ros.policy.modeling_gemma3nvla import Gemma3nVLAPolicy

    with pytest.raises(ValueError, match=r"num_vlm_layers must be in \[1, 6\]"):
        Gemma3nVLAPolicy(make_config(tiny_backbone[0], num_vlm_layers=7))
    bad = tmp_path / "not_gemma"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 8, "num_attention_heads": 2,
                                                 "num_hidden_layers": 1, "intermediate_size": 8, "vocab_size": 10}))
    with pytest.raises(ValueError, match=r"needs a Gemma 3n model"):
        Gemma3nVLAPolicy(make_config(str(bad)))
