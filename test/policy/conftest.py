"""Shared fixtures for the gemma3nvla policy tests: a tiny random Gemma 3n saved with save_pretrained (plus a
tiny tokenizer) in a session temp dir, and helpers to build policy configs around it. Everything is local."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))

from lerobot.configs.types import FeatureType, PolicyFeature  # noqa: E402

IMG = 64  # test image side; the tiny tower maps it to a 4x4 = 16-token grid
STATE_DIM = 6
ACTION_DIM = 6
CAMERAS = ("observation.images.top", "observation.images.wrist")


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory):
    """(directory, transformers Gemma3nForConditionalGeneration in eval mode) with the same weights."""
    from transformers import Gemma3nForConditionalGeneration

    from gemma3nvla_ros.policy.local_backbone import tiny_config, write_backbone_dir

    cfg = tiny_config()
    torch.manual_seed(0)
    model = Gemma3nForConditionalGeneration(cfg).eval()
    # Random init leaves AltUp's correct_output_scale at 0 and norms at 1: perturb everything so every path
    # (PLE gate, LAuReL norm, AltUp scale, q/k norms) carries signal in the comparisons.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("correct_output_scale") or "norm" in name:
                p.add_(0.3 * torch.randn_like(p))
    directory = tmp_path_factory.mktemp("tiny_gemma3n")
    write_backbone_dir(directory, cfg, model)
    return str(directory), model


def features(cameras=CAMERAS, state_dim=STATE_DIM, action_dim=ACTION_DIM, img=IMG):
    inputs = {cam: PolicyFeature(type=FeatureType.VISUAL, shape=(3, img, img)) for cam in cameras}
    inputs["observation.state"] = PolicyFeature(type=FeatureType.STATE, shape=(state_dim,))
    outputs = {"action": PolicyFeature(type=FeatureType.ACTION, shape=(action_dim,))}
    return inputs, outputs


def make_config(vlm_dir: str, **overrides):
    from gemma3nvla_ros.policy.configuration_gemma3nvla import Gemma3nVLAConfig

    cameras = overrides.pop("cameras", CAMERAS)
    inputs, outputs = features(cameras=cameras)
    kwargs = dict(
        vlm_model_name=vlm_dir, load_vlm_weights=True, num_vlm_layers=6, resize_imgs_with_padding=(IMG, IMG),
        chunk_size=8, n_action_steps=8, max_state_dim=8, max_action_dim=8, device="cpu", push_to_hub=False,
        input_features=inputs, output_features=outputs,
    )
    kwargs.update(overrides)
    return Gemma3nVLAConfig(**kwargs)


def make_batch(policy_config, batch_size=2, seed=0, task="pick the red cube", with_actions=True):
    """A preprocessed-looking batch (tokenized with the tiny tokenizer, normalized values)."""
    from transformers import AutoTokenizer

    g = torch.Generator().manual_seed(seed)
    batch = {}
    for key, ft in policy_config.image_features.items():
        if key.startswith("observation.images.empty_camera_"):
            continue
        batch[key] = torch.rand(batch_size, *ft.shape, generator=g)
    batch["observation.state"] = torch.randn(batch_size, policy_config.robot_state_feature.shape[0], generator=g)
    tok = AutoTokenizer.from_pretrained(policy_config.vlm_model_name)
    enc = tok([task + "\n"] * batch_size, padding="longest", return_tensors="pt")
    batch["observation.language.tokens"] = enc["input_ids"]
    batch["observation.language.attention_mask"] = enc["attention_mask"].bool()
    if with_actions:
        batch["action"] = torch.randn(batch_size, policy_config.chunk_size, policy_config.action_feature.shape[0], generator=g)
        batch["action_is_pad"] = torch.zeros(batch_size, policy_config.chunk_size, dtype=torch.bool)
    return batch


FPS = 10
TASKS = ("pick the red cube", "push the blue ball")


def rotation_step(state: np.ndarray, task_idx: int) -> np.ndarray:
    """Smooth, deterministic dynamics: three planar rotations; the task sets the direction of rotation."""
    out = np.empty_like(state)
    sign = 1.0 if task_idx == 0 else -1.0
    for j, ang in enumerate((0.15, 0.25, 0.35)):
        c, s = np.cos(sign * ang), np.sin(sign * ang)
        x, y = state[2 * j], state[2 * j + 1]
        out[2 * j], out[2 * j + 1] = c * x - s * y, s * x + c * y
    return out


def write_dataset(root, n_episodes: int = 12, length: int = 40, seed: int = 0, img: int = IMG):
    """A LeRobotDataset (images, no videos) whose action is the next state under smooth dynamics, so an action
    chunk is a function of the current state and of the task; the top camera's brightness shows the task."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    names = [f"j{i}" for i in range(STATE_DIM)]
    feats = {
        "observation.images.top": {"dtype": "image", "shape": (img, img, 3), "names": ["height", "width", "channels"]},
        "observation.images.wrist": {"dtype": "image", "shape": (img, img, 3), "names": ["height", "width", "channels"]},
        "observation.state": {"dtype": "float32", "shape": (STATE_DIM,), "names": names},
        "action": {"dtype": "float32", "shape": (ACTION_DIM,), "names": names},
    }
    ds = LeRobotDataset.create(repo_id="local/gemma3nvla_test", root=root, fps=FPS, features=feats, use_videos=False)
    rng = np.random.default_rng(seed)
    for ep in range(n_episodes):
        task_idx = ep % 2
        state = rng.uniform(-1, 1, STATE_DIM).astype(np.float32)
        for _ in range(length):
            nxt = rotation_step(state, task_idx).astype(np.float32)
            top = np.full((img, img, 3), 200 if task_idx == 0 else 50, dtype=np.uint8)
            wrist = rng.integers(0, 255, (img, img, 3), dtype=np.uint8)
            ds.add_frame({"observation.images.top": top, "observation.images.wrist": wrist,
                          "observation.state": state, "action": nxt, "task": TASKS[task_idx]})
            state = nxt
        ds.save_episode()
    ds.finalize()
    return root


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets") / "gemma3nvla_test"
    return str(write_dataset(root))
