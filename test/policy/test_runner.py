"""PolicyRunner on the demo checkpoint: it loads as LeRobot users load checkpoints, its chunk is exactly the
policy + saved processors applied by hand (nothing transformed twice), and every loading failure says what
to do. Also the demo checkpoint's own guarantees (idempotent, never half-written, rebuilt when stale)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from gemma3nvla_ros.contract import Contract, default_contract_path
from gemma3nvla_ros.policy.demo_checkpoint import ensure_demo_checkpoint
from gemma3nvla_ros.policy.runner import PolicyLoadError, PolicyRunner, resolve_checkpoint

CAMERA = (48, 64)  # small frames keep the tests cheap; the demo's default is 480x640


@pytest.fixture(scope="module")
def contract() -> Contract:
    return Contract.load(default_contract_path())


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory, contract) -> Path:
    directory = tmp_path_factory.mktemp("demo")
    ensure_demo_checkpoint(directory, contract, image_size=32, camera_shape=CAMERA)
    return directory


@pytest.fixture(scope="module")
def runner(demo_dir) -> PolicyRunner:
    return PolicyRunner(str(demo_dir), device="cpu")


def values(contract: Contract, seed: int = 0, task: str = "pick the red cube") -> dict:
    rng = np.random.default_rng(seed)
    out = {key: rng.integers(0, 256, (*CAMERA, 3), dtype=np.uint8) for key in contract.cameras}
    out["observation.state"] = rng.normal(0, 10, len(contract.joints)).astype(np.float32)
    out["task"] = task
    return out


def test_runner_loads_the_demo_and_fits_the_contract(runner, contract, demo_dir):
    assert runner.device == "cpu" and runner.chunk_size == contract.chunk_size
    assert runner.checkpoint_path == demo_dir / "pretrained_model"
    contract.check_features(runner.input_features, runner.output_features, runner.chunk_size)
    assert runner.image_shapes == {key: CAMERA for key in contract.cameras}
    chunk = runner.infer(values(contract))
    assert chunk.shape == (contract.chunk_size, len(contract.joints)) and chunk.dtype == np.float64
    assert np.isfinite(chunk).all()
    # Unnormalized with the demo's stats: joints around 0 degrees, the gripper around 50.
    assert np.abs(chunk[:, :5]).max() < 90 and 0 < chunk[:, 5].mean() < 100
    assert runner.last_infer_s is not None and runner.last_infer_s > 0


def test_chunk_equals_policy_and_processors_by_hand(runner, contract, demo_dir):
    """What LeRobot users do with a checkpoint, step by step; the runner must give the identical chunk."""
    from lerobot.policies.factory import make_pre_post_processors

    from gemma3nvla_ros.policy.modeling_gemma3nvla import Gemma3nVLAPolicy

    path = demo_dir / "pretrained_model"
    policy = Gemma3nVLAPolicy.from_pretrained(path)
    pre, post = make_pre_post_processors(policy.config, pretrained_path=str(path))
    obs = values(contract, seed=5)
    noise = torch.randn(1, policy.config.chunk_size, policy.config.max_action_dim, generator=torch.Generator().manual_seed(2))

    batch = {key: torch.from_numpy(obs[key]).float().div(255).permute(2, 0, 1)[None] for key in contract.cameras}
    batch["observation.state"] = torch.from_numpy(obs["observation.state"])[None]
    batch["task"] = obs["task"]
    with torch.inference_mode():
        normalized = policy.predict_action_chunk(pre(batch), noise=noise)
        expected = post(normalized)[0].double().numpy()
    got = runner.infer(obs, noise=noise)
    np.testing.assert_array_equal(got, expected)

    # Unnormalized exactly once, with the checkpoint's saved stats.
    stats = post.steps[0].stats["action"]
    std, mean = (np.asarray(stats[k], dtype=np.float64) for k in ("std", "mean"))
    assert std[0] == 10.0 and mean[5] == 50.0  # the demo's stats, from the saved processor
    once = normalized[0].double().numpy() * std + mean
    np.testing.assert_allclose(got, once, rtol=1e-6, atol=1e-5)

    # The default noise is torch's RNG, as the policy draws it: reproducible under a seed.
    torch.manual_seed(9)
    a = runner.infer(obs)
    torch.manual_seed(9)
    np.testing.assert_array_equal(runner.infer(obs), a)
    assert not np.array_equal(a, got)


def test_rtc_leftover_is_taken_in_the_policys_normalized_space(runner, contract):
    """The node keeps ``last_normalized`` (what predict_action_chunk returned, before unnormalizing) and gives
    its rest back as the leftover: with RTC on, the new chunk's frozen steps follow it in dataset units too."""
    obs = values(contract, seed=7)
    shape = (1, runner.config.chunk_size, runner.config.max_action_dim)
    noise = lambda seed: torch.randn(*shape, generator=torch.Generator().manual_seed(seed))  # noqa: E731
    previous = runner.infer(obs, noise=noise(1))
    normalized = runner.last_normalized.copy()
    stats = runner.postprocessor.steps[0].stats["action"]
    std, mean = (np.asarray(stats[k], dtype=np.float64) for k in ("std", "mean"))
    np.testing.assert_allclose(previous, normalized * std + mean, rtol=1e-6, atol=1e-5)  # it is the normalized one

    plain = runner.infer(obs, noise=noise(2))
    runner.configure_rtc(True, execution_horizon=10)
    try:
        guided = runner.infer(obs, noise=noise(2), inference_delay=4, prev_chunk_left_over=normalized[20:],
                              execution_horizon=10)
    finally:
        runner.configure_rtc(False)
    assert runner.policy.config.rtc_config is None
    frozen_plain = np.abs(plain[:4] - previous[20:24]).mean()
    frozen_guided = np.abs(guided[:4] - previous[20:24]).mean()
    assert frozen_guided < 0.2 * frozen_plain, (frozen_guided, frozen_plain)
    with pytest.raises(ValueError, match="unknown RTC schedule"):
        runner.configure_rtc(True, schedule="CUBIC")


def test_infer_refuses_frames_at_another_resolution(runner, contract):
    obs = values(contract)
    obs["observation.images.top"] = np.zeros((480, 640, 3), np.uint8)
    with pytest.raises(ValueError, match=r"frame is uint8 \(480, 640, 3\), the checkpoint takes uint8 \(48, 64, 3\)"):
        runner.infer(obs)
    with pytest.raises(ValueError, match="non-empty 'task'"):
        runner.infer({**values(contract), "task": " "})


def test_infer_refuses_non_finite_and_wrong_width_state(runner, contract, demo_dir, tmp_path):
    """Refused with what was wrong (the node skips the observation and reports it), never NaN actions."""
    obs = values(contract)
    obs["observation.state"] = obs["observation.state"].copy()
    obs["observation.state"][3] = np.nan
    with pytest.raises(ValueError, match=r"observation.state is not finite: NaN at dims \[3\] in sample 0"):
        runner.infer(obs)
    obs["observation.state"] = np.zeros(len(contract.joints) - 1, np.float32)
    with pytest.raises(ValueError, match=r"observation.state has shape \(1, 5\) \(5 values\) but the policy was "
                                         r"configured for 6"):
        runner.infer(obs)

    # A checkpoint saved before the input check and the resize option: padded as it was trained, checked all the same.
    old = tmp_path / "old_checkpoint"
    shutil.copytree(demo_dir / "pretrained_model", old)
    config = json.loads((old / "config.json").read_text())
    del config["resize_mode"], config["resize_antialias"]
    (old / "config.json").write_text(json.dumps(config, indent=4))
    pre = json.loads((old / "policy_preprocessor.json").read_text())
    pre["steps"] = [s for s in pre["steps"] if s.get("registry_name") != "gemma3nvla_input_check"]
    (old / "policy_preprocessor.json").write_text(json.dumps(pre, indent=4))
    old_runner = PolicyRunner(str(old), device="cpu")
    assert (old_runner.config.resize_mode, old_runner.config.resize_antialias) == ("pad", False)
    assert np.isfinite(old_runner.infer(values(contract))).all()
    with pytest.raises(ValueError, match=r"\(5 values\) but the policy was configured for 6"):
        old_runner.infer(obs)


def test_warmup_runs_inference(runner, contract):
    runner.last_infer_s = None
    runner.warmup(values(contract))
    assert runner.last_infer_s is not None


def test_checkpoint_layouts_resolve(demo_dir, tmp_path):
    ckpt = demo_dir / "pretrained_model"
    assert resolve_checkpoint(ckpt) == ckpt
    assert resolve_checkpoint(str(demo_dir)) == ckpt  # <dir>/pretrained_model, as a checkpoint step dir
    train_out = tmp_path / "outputs" / "train"
    (train_out / "checkpoints").mkdir(parents=True)
    os.symlink(demo_dir, train_out / "checkpoints" / "last")  # lerobot-train's own layout
    assert resolve_checkpoint(train_out) == train_out / "checkpoints" / "last" / "pretrained_model"


@pytest.mark.parametrize("device, message", [
    ("gpu", "unknown device 'gpu': use auto, cpu, cuda or cuda:N"),
    ("cuda:x", "unknown device"),
])
def test_bad_device(demo_dir, device, message):
    with pytest.raises(PolicyLoadError, match=message):
        PolicyRunner(str(demo_dir), device=device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_gpu(demo_dir):
    for device in ("cuda", "cuda:1"):
        with pytest.raises(PolicyLoadError, match=rf"device '{device}' requested but torch .* sees no GPU: use device auto or cpu"):
            PolicyRunner(str(demo_dir), device=device)


def test_missing_directories(tmp_path):
    with pytest.raises(PolicyLoadError, match=r"checkpoint directory .*/nope does not exist: pass an existing pretrained_model"):
        PolicyRunner(str(tmp_path / "nope"))
    with pytest.raises(PolicyLoadError, match=r"holds no LeRobot checkpoint: expected config.json"):
        PolicyRunner(str(tmp_path))
    (tmp_path / "file").write_text("x")
    with pytest.raises(PolicyLoadError, match="is a file"):
        PolicyRunner(str(tmp_path / "file"))


def test_hub_id_offline(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # whatever the environment says: never the network
    with pytest.raises(PolicyLoadError) as err:
        PolicyRunner("gemma3nvla-test/no-such-model-in-any-cache", device="cpu")
    text = str(err.value)
    assert "not in the Hugging Face cache" in text and "HF_HUB_OFFLINE is set" in text
    assert "hf download gemma3nvla-test/no-such-model-in-any-cache" in text and "local pretrained_model directory" in text


def test_checkpoint_without_processors_or_weights(demo_dir, tmp_path):
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(demo_dir / "pretrained_model" / "config.json", partial)
    with pytest.raises(PolicyLoadError, match=r"lacks \['model.safetensors'\]"):
        PolicyRunner(str(partial))
    shutil.copy(demo_dir / "pretrained_model" / "model.safetensors", partial)
    with pytest.raises(PolicyLoadError, match=r"lacks the saved processors .*migrate_policy_normalization"):
        PolicyRunner(str(partial))


def test_bad_dtype_and_missing_backbone(demo_dir, tmp_path):
    with pytest.raises(PolicyLoadError, match="unknown dtype 'float64'"):
        PolicyRunner(str(demo_dir), dtype="float64")
    with pytest.raises(PolicyLoadError, match=r"cannot load the backbone config/tokenizer .*pass vlm_model_name="):
        PolicyRunner(str(demo_dir), device="cpu", vlm_model_name=str(tmp_path / "no_backbone_here"))


def test_bfloat16_backbone(demo_dir, contract):
    bf16 = PolicyRunner(str(demo_dir), device="cpu", dtype="bfloat16")
    assert bf16.policy.model.vlm_with_expert.language_model.embed_tokens.weight.dtype == torch.bfloat16
    assert np.isfinite(bf16.infer(values(contract))).all()


# ------------------------------------------------------------------ the demo checkpoint itself
def _files(path: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in path.iterdir()}


def test_demo_is_reused_and_rebuilt_only_when_incomplete_or_stale(demo_dir, contract):
    ckpt = demo_dir / "pretrained_model"
    before = _files(ckpt)
    assert ensure_demo_checkpoint(demo_dir, contract, image_size=32, camera_shape=CAMERA) == ckpt
    assert _files(ckpt) == before  # reused, not rewritten
    assert not [p for p in demo_dir.iterdir() if p.name.startswith(".")]  # no temp dirs left behind

    work = demo_dir.parent / "demo_work"
    shutil.copytree(demo_dir, work, symlinks=True)
    (work / "pretrained_model" / "model.safetensors").unlink()  # as if the writer died mid-way
    (work / ".pretrained_model.tmp-dead").mkdir()  # a crashed writer's temp dir is never taken as the checkpoint
    assert ensure_demo_checkpoint(work, contract, image_size=32, camera_shape=CAMERA) == work / "pretrained_model"
    assert (work / "pretrained_model" / "model.safetensors").is_file()
    # A copied (moved) demo points at the other directory's backbone: rebuilt to point at its own.
    from lerobot.configs.policies import PreTrainedConfig

    assert PreTrainedConfig.from_pretrained(work / "pretrained_model").vlm_model_name == str(work / "backbone")

    other = Contract.from_dict({**contract.to_dict(), "chunk_size": 10})
    ensure_demo_checkpoint(work, other, image_size=32, camera_shape=CAMERA)
    assert PreTrainedConfig.from_pretrained(work / "pretrained_model").chunk_size == 10
