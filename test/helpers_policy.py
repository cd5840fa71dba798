"""Helpers shared by the policy tests (imported absolutely: setup.cfg puts test/ on pytest's path):
tiny configs, batches and datasets around a tiny local Gemma 3n. Everything is local."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from lerobot.configs.types import FeatureType, PolicyFeature

from gemma3nvla_ros.policy.modeling_gemma3nvla import VLAFlowMatching

def lerobot_train_command(*args: str) -> list[str]:
    """``lerobot-train`` of this interpreter's environment (not whichever one is first on PATH: with two venvs,
    that may be the other LeRobot) with ``args``; ``{eval_freq}`` in an argument becomes the installed LeRobot's
    flag for the evaluation frequency (``--env_eval_freq`` in 0.6, ``--eval_freq`` in 0.4.4)."""
    import pytest

    from gemma3nvla_ros.compat import LEROBOT_TRAIN_EVAL_FREQ_FLAG

    exe = Path(sys.executable).parent / "lerobot-train"
    if not exe.exists():
        pytest.fail(f"lerobot-train not found next to the interpreter ({exe})")
    return [str(exe), *(a.replace("{eval_freq}", LEROBOT_TRAIN_EVAL_FREQ_FLAG) for a in args)]


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
ANGLES = (0.15, 0.25, 0.35)  # per step, of the rotations of the joint pairs (0, 1), (2, 3), (4, 5)
TASK_JOINTS = slice(0, 4)  # the task (text only) sets the direction in which pairs (0, 1) and (2, 3) turn
LIGHT_JOINTS = slice(4, 6)  # the light (top camera only) sets the direction in which pair (4, 5) turns
# Colour of the whole top image under light 0 / 1. Not two brightnesses of one colour: the vision tower's
# normalizations make its output blind to a uniform image's brightness (grey 200 and grey 50 give identical
# features), not to its colour.
TOP_COLOURS = ((220, 40, 40), (40, 40, 220))


def episode_cues(episode: int) -> tuple[int, int]:
    """(task, light) of an episode of ``write_dataset``: the four combinations in turn, so that every four
    consecutive episodes hold each once and neither cue says anything about the other."""
    return episode % 2, (episode // 2) % 2


def rotation_step(state: np.ndarray, task_idx: int, light_idx: int) -> np.ndarray:
    """Smooth, deterministic dynamics: three planar rotations; the task sets the direction of the first two, the
    light that of the third."""
    out = np.empty_like(state)
    for j, ang in enumerate(ANGLES):
        sign = 1.0 if (light_idx if j == 2 else task_idx) == 0 else -1.0
        c, s = np.cos(sign * ang), np.sin(sign * ang)
        x, y = state[2 * j], state[2 * j + 1]
        out[2 * j], out[2 * j + 1] = c * x - s * y, s * x + c * y
    return out


def rollout(state: np.ndarray, task_idx: int, light_idx: int, steps: int) -> np.ndarray:
    """The next ``steps`` states [steps, STATE_DIM] under ``rotation_step``: the action chunk at ``state``."""
    out = []
    for _ in range(steps):
        state = rotation_step(state, task_idx, light_idx)
        out.append(state)
    return np.stack(out)


def write_dataset(root, n_episodes: int = 96, length: int = 6, seed: int = 0, img: int = IMG):
    """A LeRobotDataset (images, no videos) whose action is the next state under ``rotation_step``, so an action
    chunk is a function of the current state, of the task (shown only by the text) and of the light (shown only
    by the top camera's colour). The wrist camera shows the same random picture in every frame. Many short
    episodes, each from its own random start: a policy cannot tell an episode's cues from its states, so it
    must read them from the text and the image to get held-out episodes right."""
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
    wrist = rng.integers(0, 255, (img, img, 3), dtype=np.uint8)
    for ep in range(n_episodes):
        task_idx, light_idx = episode_cues(ep)
        top = np.broadcast_to(np.array(TOP_COLOURS[light_idx], dtype=np.uint8), (img, img, 3)).copy()
        state = rng.uniform(-1, 1, STATE_DIM).astype(np.float32)
        for _ in range(length):
            nxt = rotation_step(state, task_idx, light_idx).astype(np.float32)
            ds.add_frame({"observation.images.top": top, "observation.images.wrist": wrist,
                          "observation.state": state, "action": nxt, "task": TASKS[task_idx]})
            state = nxt
        ds.save_episode()
    ds.finalize()
    return root


def tiny_backbone_model(seed: int = 0, **tiny_config_kwargs):
    """A random tiny Gemma3nForConditionalGeneration (eval mode) of ``tiny_config(**tiny_config_kwargs)``.

    Random init leaves AltUp's correct_output_scale at 0 and norms at 1: everything of those is perturbed so that
    every path (PLE gate, LAuReL norm, AltUp scale, q/k norms) carries signal."""
    from transformers import Gemma3nForConditionalGeneration

    from gemma3nvla_ros.policy.local_backbone import tiny_config

    torch.manual_seed(seed)
    model = Gemma3nForConditionalGeneration(tiny_config(**tiny_config_kwargs)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("correct_output_scale") or "norm" in name:
                p.add_(0.3 * torch.randn_like(p))
    return model


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def our_prefix(net: VLAFlowMatching, batch, policy):
    images, img_masks = policy.prepare_images(batch)
    state = policy.prepare_state(batch)
    embeds, raw, pad, pos = net.embed_prefix(images, img_masks, batch["observation.language.tokens"],
                                             batch["observation.language.attention_mask"], state)
    return images, embeds, raw, pad, pos
