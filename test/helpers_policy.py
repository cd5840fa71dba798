"""Helpers shared by the policy tests (imported absolutely: setup.cfg puts test/ on pytest's path):
tiny configs, batches and datasets around a tiny local Gemma 3n. Everything is local."""
from __future__ import annotations

import numpy as np
import torch
from lerobot.configs.types import FeatureType, PolicyFeature

from gemma3nvla_ros.policy.modeling_gemma3nvla import VLAFlowMatching

IMG = 64  # test image side; the tiny tower maps it to a 4x4 = 16-token grid
STATE_DIM = 6
ACTION_DIM = 6
CAMERAS = ("observation.images.top", "observation.images.wrist")


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


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def our_prefix(net: VLAFlowMatching, batch, policy):
    images, img_masks = policy.prepare_images(batch)
    state = policy.prepare_state(batch)
    embeds, raw, pad, pos = net.embed_prefix(images, img_masks, batch["observation.language.tokens"],
                                             batch["observation.language.attention_mask"], state)
    return images, embeds, raw, pad, pos
