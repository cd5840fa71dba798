"""`lerobot-train --policy.type=gemma3nvla` end to end (plugin discovery, processors, checkpoint), then the
checkpoint loads back with from_pretrained (+ its processors) and predicts the same actions for the same seed."""
from __future__ import annotations

import os
import subprocess

import pytest
import torch
from safetensors.torch import load_file

from helpers_policy import TASKS, lerobot_train_command


@pytest.fixture(scope="module")
def trained_checkpoint(tiny_backbone, tiny_dataset, tmp_path_factory):
    import importlib.metadata

    try:
        importlib.metadata.distribution("lerobot_policy_gemma3nvla")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail("install the plugin first: pip install -e plugins/lerobot_policy_gemma3nvla --no-deps")
    out = tmp_path_factory.mktemp("train") / "out"
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               WANDB_MODE="disabled", OMP_NUM_THREADS="2")
    cmd = [
        "--policy.type=gemma3nvla", f"--policy.vlm_model_name={tiny_backbone[0]}",
        "--policy.load_vlm_weights=true", "--policy.resize_imgs_with_padding=[64,64]", "--policy.chunk_size=8",
        "--policy.n_action_steps=8", "--policy.max_state_dim=8", "--policy.max_action_dim=8",
        "--policy.num_vlm_layers=6", "--policy.num_expert_layers=3", "--policy.device=cpu",
        "--policy.push_to_hub=false", "--policy.optimizer_lr=1e-3", "--dataset.repo_id=local/gemma3nvla_test",
        f"--dataset.root={tiny_dataset}", "--steps=4", "--batch_size=4", "--save_freq=4", "--log_freq=1",
        f"--output_dir={out}", "--wandb.enable=false", "--num_workers=0", "{eval_freq}=0", "--seed=3",
    ]
    proc = subprocess.run(lerobot_train_command(*cmd), env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    log = proc.stdout + proc.stderr
    assert "step:4" in log and "loss:" in log
    ckpt = out / "checkpoints" / "last" / "pretrained_model"
    assert (ckpt / "model.safetensors").exists()
    return ckpt


def _observation(ckpt_cfg, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    obs = {key: torch.rand(*ft.shape, generator=g) for key, ft in ckpt_cfg.image_features.items()}
    obs["observation.state"] = torch.randn(ckpt_cfg.robot_state_feature.shape[0], generator=g)
    obs["task"] = TASKS[0]
    return obs


def test_train_checkpoint_roundtrip(trained_checkpoint, tmp_path):
    from lerobot.policies.factory import make_pre_post_processors

    from gemma3nvla_ros.policy.modeling_gemma3nvla import Gemma3nVLAPolicy

    policy = Gemma3nVLAPolicy.from_pretrained(trained_checkpoint)
    assert policy.config.type == "gemma3nvla" and policy.config.num_expert_layers == 3
    # Every tensor of the checkpoint is what the loaded policy holds.
    saved = load_file(str(trained_checkpoint / "model.safetensors"))
    state = policy.state_dict()
    assert set(saved) == set(state)
    for key, value in saved.items():
        assert torch.equal(state[key], value), key

    pre, post = make_pre_post_processors(policy.config, pretrained_path=str(trained_checkpoint))
    obs = _observation(policy.config)
    batch = pre(dict(obs))
    a1 = post(policy.predict_action_chunk(batch, generator=torch.Generator().manual_seed(11)))
    a2 = post(policy.predict_action_chunk(pre(dict(obs)), generator=torch.Generator().manual_seed(11)))
    assert a1.shape == (1, 8, 6) and torch.isfinite(a1).all()
    assert torch.equal(a1, a2)

    # Save again and reload: same actions for the same seed.
    policy.save_pretrained(tmp_path / "again")
    again = Gemma3nVLAPolicy.from_pretrained(tmp_path / "again")
    a3 = post(again.predict_action_chunk(pre(dict(obs)), generator=torch.Generator().manual_seed(11)))
    assert torch.equal(a1, a3)

    # select_action pops the same first action.
    policy.reset()
    first = post(policy.select_action(pre(dict(obs)), generator=torch.Generator().manual_seed(11)))
    torch.testing.assert_close(first, a1[:, 0])
