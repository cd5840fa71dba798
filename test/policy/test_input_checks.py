"""Issue #14: non-finite and mis-scaled inputs are refused with a message that names the input (policy and
preprocessor, before LeRobot's own steps); a NaN in a padded action step does not poison the loss and one in an
in-episode step is refused; images are resized as Gemma 3n's processor does (stretch, antialiased) or as SmolVLA
does (pad), at the configured (height, width); checkpoints saved before the option existed keep padding."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from lerobot.configs.policies import PreTrainedConfig
from lerobot.configs.types import FeatureType, PolicyFeature

from helpers_policy import features, make_batch, make_config

DATA = Path(__file__).parent / "data"
# Gemma 3n's image preprocessing as transformers' conversion script writes it into the hub checkpoints'
# preprocessor_config.json (SiglipImageProcessorFast; the hub is not reachable from the tests).
GEMMA3N_IMAGE_PROCESSOR = dict(
    size={"height": 768, "width": 768}, resample=2, do_resize=True, do_rescale=True, rescale_factor=1 / 255,
    do_normalize=False, image_mean=[0.5] * 3, image_std=[0.5] * 3,
)


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


# ------------------------------------------------------------------ images as Gemma 3n sees them
def _frames(height, width, n=2, seed=0):
    """uint8 HxWx3 camera frames (white noise, the hardest case for aliasing) and the same as float CHW in [0, 1]
    (LeRobot's conversion, as the runner and the node do it)."""
    rng = np.random.default_rng(seed)
    frames = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(n)]
    as_float = torch.stack([torch.from_numpy(f).permute(2, 0, 1).float() / 255 for f in frames])
    return frames, as_float


@pytest.mark.parametrize("height, width", [(480, 640), (720, 1280), (1080, 1920), (64, 96)])
def test_stretch_matches_gemma3n_image_processor(tiny_backbone, height, width):
    """The default preprocessing is Gemma 3n's own: the whole frame to 768x768, bilinear, antialiased."""
    from transformers import SiglipImageProcessor, SiglipImageProcessorFast

    from gemma3nvla_ros.policy.modeling_gemma3nvla import Gemma3nVLAPolicy

    inputs, outputs = features(cameras=("observation.images.top",))
    inputs["observation.images.top"] = PolicyFeature(type=FeatureType.VISUAL, shape=(3, height, width))
    cfg = make_config(tiny_backbone[0], num_vlm_layers=3, resize_imgs_with_padding=(768, 768), input_features=inputs,
                      output_features=outputs)
    assert (cfg.resize_mode, cfg.resize_antialias) == ("stretch", True)
    policy = Gemma3nVLAPolicy(cfg)
    frames, as_float = _frames(height, width)
    ours = policy.prepare_images({"observation.images.top": as_float})[0][0]
    assert ours.shape == (2, 3, 768, 768)
    for processor_class in (SiglipImageProcessorFast, SiglipImageProcessor):
        theirs = processor_class(**GEMMA3N_IMAGE_PROCESSOR)(images=frames, return_tensors="pt")["pixel_values"]
        assert theirs.shape == ours.shape
        diff = (theirs - ours).abs()
        # transformers resizes the uint8 frame (fixed-point) and rounds to uint8 before rescaling: ~1/255 apart.
        assert diff.max() < 1.5 / 255 and diff.mean() < 2e-3, processor_class
        assert abs(theirs.std() - ours.std()) < 1e-3
    if height > 768:  # without antialiasing, downscaled noise keeps its full variance (aliasing): far off
        aliased = F.interpolate(as_float, size=(768, 768), mode="bilinear", align_corners=False)
        assert aliased.std() > 1.5 * theirs.std()


def test_pad_mode_is_smolvla_resize_with_pad():
    """pad: aspect ratio kept, zero bars on the left/top (SmolVLA's resize_with_pad), antialiased when
    downscaling; a 16:9 frame in a square spends 44% of it on bars."""
    from gemma3nvla_ros.compat import smolvla_resize_with_pad
    from gemma3nvla_ros.policy.modeling_gemma3nvla import resize_image

    _, img = _frames(720, 1280, n=1)
    padded = resize_image(img, 768, 768, "pad", antialias=False)
    torch.testing.assert_close(padded, smolvla_resize_with_pad(img, 768, 768), rtol=0, atol=0)
    assert (padded[0, 0] == 0).all(dim=1).float().mean().item() == pytest.approx(1 - 432 / 768)  # 43.75% black rows
    smooth = resize_image(img, 768, 768, "pad")
    assert smooth.shape == padded.shape and (smooth[..., :336, :] == 0).all()
    assert smooth[..., 336:, :].std() < 0.7 * padded[..., 336:, :].std()  # antialiased: aliasing gone
    # Upscaling: antialiasing changes nothing.
    _, small = _frames(48, 64, n=1)
    torch.testing.assert_close(resize_image(small, 96, 96, "pad"), smolvla_resize_with_pad(small, 96, 96))


@pytest.mark.parametrize("height, width, bar_rows, bar_cols", [(96, 40, 70, 0), (40, 96, 0, 36), (32, 48, 0, 0)])
@pytest.mark.parametrize("antialias", [False, True])
def test_pad_mode_non_square_target_is_height_width(height, width, bar_rows, bar_cols, antialias):
    """A 64x96 (HxW) frame padded into a non-square (height, width): scaled by 1 / max(96 / width, 64 / height),
    black bars on the top (rows) or left (columns) filling the rest. (96, 40): 26x40 picture under 70 black rows;
    (40, 96): 40x60 picture right of 36 black columns; (32, 48): the same aspect, no bars. LeRobot's SmolVLA helper
    (its argument order changed from (width, height) in 0.4.4 to (height, width) in 0.6) gives the same pixels."""
    from gemma3nvla_ros.compat import smolvla_resize_with_pad
    from gemma3nvla_ros.policy.modeling_gemma3nvla import resize_image

    _, frame = _frames(64, 96, n=1)
    frame = frame.clamp_min(1 / 255)  # no black pixel in the picture itself: every zero is a bar
    out = resize_image(frame, height, width, "pad", antialias=antialias)
    assert out.shape == (1, 3, height, width)
    black = (out[0] == 0).all(dim=0)  # [height, width]
    black_rows, black_cols = black.all(dim=1), black.all(dim=0)
    assert black_rows[:bar_rows].all() and not black_rows[bar_rows:].any()
    assert black_cols[:bar_cols].all() and not black_cols[bar_cols:].any()
    assert black.sum().item() == bar_rows * width + bar_cols * height
    if not antialias:
        torch.testing.assert_close(out, smolvla_resize_with_pad(frame, height, width), rtol=0, atol=0)
    assert resize_image(frame, height, width, "stretch").shape == (1, 3, height, width)


@pytest.mark.parametrize("mode", ["stretch", "pad"])
def test_non_square_resize_is_height_width(tiny_backbone, mode):
    """resize_imgs_with_padding=(64, 96) is 64 high and 96 wide (the old code made it 96x64)."""
    from gemma3nvla_ros.policy.modeling_gemma3nvla import Gemma3nVLAPolicy

    inputs, outputs = features()
    for key in ("observation.images.top", "observation.images.wrist"):
        inputs[key] = PolicyFeature(type=FeatureType.VISUAL, shape=(3, 48, 64))
    policy = Gemma3nVLAPolicy(make_config(tiny_backbone[0], num_vlm_layers=3, resize_imgs_with_padding=(64, 96),
                                          resize_mode=mode, input_features=inputs, output_features=outputs)).eval()
    batch = make_batch(policy.config, with_actions=False)
    images, _ = policy.prepare_images(batch)
    assert [tuple(i.shape) for i in images] == [(2, 3, 64, 96)] * 2
    if mode == "pad":  # 48x64 scaled by 4/3 to 64x85, 11 black columns on the left
        assert (images[0][..., :11] == 0).all() and (images[0][..., 11:] != 0).any()
    else:
        expected = F.interpolate(batch["observation.images.top"], size=(64, 96), mode="bilinear", align_corners=False)
        torch.testing.assert_close(images[0], expected)
    assert torch.isfinite(policy.predict_action_chunk(batch, generator=torch.Generator().manual_seed(0))).all()


# ------------------------------------------------------------------ the option and old checkpoints
def test_resize_config_options(tiny_backbone):
    from lerobot.configs.types import NormalizationMode

    from gemma3nvla_ros.policy.configuration_gemma3nvla import Gemma3nVLAConfig

    cfg = Gemma3nVLAConfig()
    assert (cfg.resize_imgs_with_padding, cfg.resize_mode, cfg.resize_antialias) == ((768, 768), "stretch", True)
    with pytest.raises(ValueError, match=r"`resize_mode` must be one of \('stretch', 'pad'\), got 'crop'"):
        Gemma3nVLAConfig(resize_mode="crop")
    mapping = {"VISUAL": NormalizationMode.MEAN_STD, "STATE": NormalizationMode.MEAN_STD,
               "ACTION": NormalizationMode.MEAN_STD}
    with pytest.raises(ValueError, match=r"normalization_mapping\['VISUAL'\] must be IDENTITY"):
        Gemma3nVLAConfig(normalization_mapping=mapping)
    # Set by hand (even with many fields), the option is what was asked for.
    assert make_config(tiny_backbone[0], resize_mode="pad").resize_mode == "pad"
    assert make_config(tiny_backbone[0]).resize_mode == "stretch"


def _old_checkpoint_config(directory: Path, vlm_dir: str) -> Path:
    """config.json exactly as the code before resize_mode saved it (a 48x64 camera, resized to 64x64)."""
    text = (DATA / "config_saved_before_resize_mode.json").read_text().replace('"VLM_DIR"', json.dumps(vlm_dir))
    assert "resize_mode" not in text
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(text)
    return directory


def test_checkpoint_saved_before_the_option_keeps_padding(tiny_backbone, tmp_path):
    import draccus
    from lerobot.policies.smolvla.modeling_smolvla import resize_with_pad

    from gemma3nvla_ros.policy.modeling_gemma3nvla import Gemma3nVLAPolicy

    old = _old_checkpoint_config(tmp_path / "old", tiny_backbone[0])
    cfg = PreTrainedConfig.from_pretrained(old)
    assert (cfg.resize_mode, cfg.resize_antialias, cfg.resize_imgs_with_padding) == ("pad", False, (64, 64))
    assert not hasattr(cfg, "_saved_before_resize_mode")
    # Also through draccus' choice decoding (a train_config.json's policy on `lerobot-train --resume`).
    raw = json.loads((old / "config.json").read_text())
    assert draccus.decode(PreTrainedConfig, raw).resize_mode == "pad"
    # An explicit choice wins (e.g. --policy.resize_mode=stretch when fine-tuning it).
    assert PreTrainedConfig.from_pretrained(old, cli_overrides=["--resize_mode=stretch"]).resize_mode == "stretch"

    # The policy sees exactly what it was trained on: SmolVLA's padding, no antialiasing.
    torch.manual_seed(0)
    policy = Gemma3nVLAPolicy(cfg).eval()
    batch = make_batch(cfg, with_actions=False)
    images, _ = policy.prepare_images(batch)
    torch.testing.assert_close(images[0], resize_with_pad(batch["observation.images.top"], 64, 64, pad_value=0),
                               rtol=0, atol=0)
    # Saved again, the mode is written out and kept; loading the weights with the old config.json keeps it too.
    policy.save_pretrained(tmp_path / "resaved")
    saved = json.loads((tmp_path / "resaved" / "config.json").read_text())
    assert (saved["resize_mode"], saved["resize_antialias"]) == ("pad", False)
    assert PreTrainedConfig.from_pretrained(tmp_path / "resaved").resize_mode == "pad"
    (old / "model.safetensors").write_bytes((tmp_path / "resaved" / "model.safetensors").read_bytes())
    loaded = Gemma3nVLAPolicy.from_pretrained(old)
    assert (loaded.config.resize_mode, loaded.config.resize_antialias) == ("pad", False)
    # A new config saved and loaded stays stretch.
    fresh = make_config(tiny_backbone[0])
    fresh._save_pretrained(tmp_path)
    assert PreTrainedConfig.from_pretrained(tmp_path).resize_mode == "stretch"
