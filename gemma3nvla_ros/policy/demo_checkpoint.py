"""A small UNTRAINED Gemma3nVLA checkpoint for the contract, made locally on first use (nothing downloaded).

It lets the whole closed loop (cameras -> policy -> action chunks -> arm) run on a laptop or CI without a
trained model: the actions are meaningless but well-formed, in the dataset's units, and the normalizer's
stats are chosen so that they stay in a moderate range around the middle of every joint (joints: mean 0,
std 10 degrees or 10 % of half-range; gripper: mean 50, std 10 on 0..100).

Layout (LeRobot's format)::

    <directory>/backbone/          tiny Gemma 3n config + tokenizer (local_backbone.py); the checkpoint
                                   holds every weight, so no backbone weights are needed here
    <directory>/pretrained_model/  config.json, model.safetensors, policy_{pre,post}processor*.json/.safetensors

Each part is written into a temp dir next to it and renamed into place, so a crash mid-way never leaves
something that looks complete. ``pretrained_model`` refers to the backbone by absolute path (as a LeRobot
checkpoint refers to its ``vlm_model_name``); a moved directory or a changed contract is detected and the
checkpoint rebuilt.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gemma3nvla_ros.contract import Contract

BACKBONE = "backbone"
PRETRAINED = "pretrained_model"
# Tiny Gemma 3n: 4 text layers (the last one KV-shared), 2 used by the policy, 4x4 soft tokens per image.
VLM_LAYERS = 4
USED_VLM_LAYERS = 2
SEED = 0
JOINT_STD = 10.0  # degrees, or % of half-range in range_m100_100: visible motion, far from the limits
GRIPPER_MEAN, GRIPPER_STD = 50.0, 10.0
BACKBONE_FILES = ("config.json", "tokenizer.json")
CHECKPOINT_FILES = (
    "config.json", "model.safetensors", "policy_preprocessor.json", "policy_postprocessor.json",
)


def ensure_demo_checkpoint(
    directory: Path,
    contract: "Contract",
    image_size: int = 64,
    camera_shape: tuple[int, int] = (480, 640),
) -> Path:
    """The ``pretrained_model`` directory of the demo checkpoint under ``directory``, built if absent or stale.

    ``camera_shape`` (H, W) is the resolution of the camera frames (the checkpoint's image features, which
    frames must match: they are not resized on the way in); ``image_size`` is the square the policy resizes
    them to internally (``resize_imgs_with_padding``), which sets the vision tower's cost.
    """
    directory = Path(directory).expanduser().absolute()
    directory.mkdir(parents=True, exist_ok=True)
    backbone = directory / BACKBONE
    if not all((backbone / f).is_file() for f in BACKBONE_FILES):
        _write_atomically(backbone, _write_backbone, replace=True)
    wanted = _wanted_config(contract, backbone, image_size, camera_shape)
    target = directory / PRETRAINED
    if _is_complete(target, wanted):
        return target
    _write_atomically(target, lambda tmp: _write_checkpoint(tmp, wanted, contract), replace=True)
    return target


# ------------------------------------------------------------------ what the checkpoint must be
def _wanted_config(contract: "Contract", backbone: Path, image_size: int, camera_shape: tuple[int, int]):
    from lerobot.configs.types import FeatureType, PolicyFeature

    from gemma3nvla_ros.policy.configuration_gemma3nvla import Gemma3nVLAConfig

    h, w = (int(s) for s in camera_shape)
    n = len(contract.joints)
    inputs = {key: PolicyFeature(type=FeatureType.VISUAL, shape=(3, h, w)) for key in contract.cameras}
    inputs[contract.STATE_KEY] = PolicyFeature(type=FeatureType.STATE, shape=(n,))
    return Gemma3nVLAConfig(
        vlm_model_name=str(backbone), load_vlm_weights=False, num_vlm_layers=USED_VLM_LAYERS,
        resize_imgs_with_padding=(int(image_size), int(image_size)), chunk_size=contract.chunk_size,
        n_action_steps=contract.chunk_size, max_state_dim=n, max_action_dim=n, tokenizer_max_length=48,
        truncate_long_tasks=True,  # free-form tasks on a 60-word demo vocabulary: never refuse for length
        device="cpu", push_to_hub=False, input_features=inputs,
        output_features={contract.ACTION_KEY: PolicyFeature(type=FeatureType.ACTION, shape=(n,))},
    )


def _comparable(cfg) -> dict:
    """The fields that make a saved checkpoint the one wanted (features, sizes, backbone path)."""
    feats = lambda fs: {k: [v.type.value if hasattr(v.type, "value") else str(v.type), list(v.shape)] for k, v in fs.items()}  # noqa: E731
    return {
        "vlm_model_name": cfg.vlm_model_name, "num_vlm_layers": cfg.num_vlm_layers,
        "resize_imgs_with_padding": list(cfg.resize_imgs_with_padding), "chunk_size": cfg.chunk_size,
        "input_features": feats(cfg.input_features), "output_features": feats(cfg.output_features),
    }


def _is_complete(target: Path, wanted) -> bool:
    if not all((target / f).is_file() for f in CHECKPOINT_FILES):
        return False
    try:
        from lerobot.configs.policies import PreTrainedConfig

        saved = PreTrainedConfig.from_pretrained(target)
    except Exception:  # noqa: BLE001 - unreadable: rebuild it
        return False
    return _comparable(saved) == _comparable(wanted) and Path(saved.vlm_model_name, "config.json").is_file()


# ------------------------------------------------------------------ writing
def _write_atomically(target: Path, write, replace: bool = False) -> None:
    """``write(tmp)`` into a temp dir beside ``target``, then rename it into place. With ``replace`` an
    existing (stale) target is swapped out. A concurrent writer that got there first wins."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        write(tmp)
        old = None
        if replace and target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.rename(target, old / target.name)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.exists():
                raise  # not a lost race: a real failure
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_backbone(tmp: Path) -> None:
    from gemma3nvla_ros.policy.local_backbone import tiny_config, write_backbone_dir

    write_backbone_dir(tmp, tiny_config(num_layers=VLM_LAYERS, num_kv_shared_layers=1))


def _dataset_stats(contract: "Contract") -> dict:
    import numpy as np

    gripper = np.array([j == "gripper" for j in contract.joints])
    # Only what MEAN_STD (the config's normalization for state and action) reads.
    stats = {
        "mean": np.where(gripper, GRIPPER_MEAN, 0.0).astype(np.float32),
        "std": np.where(gripper, GRIPPER_STD, JOINT_STD).astype(np.float32),
    }
    return {contract.STATE_KEY: dict(stats), contract.ACTION_KEY: dict(stats)}


def _write_checkpoint(tmp: Path, config, contract: "Contract") -> None:
    import torch

    from gemma3nvla_ros.policy.modeling_gemma3nvla import Gemma3nVLAPolicy
    from gemma3nvla_ros.policy.processor_gemma3nvla import make_gemma3nvla_pre_post_processors

    with torch.random.fork_rng(devices=[]):  # deterministic weights, caller's RNG untouched
        torch.manual_seed(SEED)
        policy = Gemma3nVLAPolicy(config).eval()
    pre, post = make_gemma3nvla_pre_post_processors(config, dataset_stats=_dataset_stats(contract))
    policy.save_pretrained(tmp)
    pre.save_pretrained(tmp)
    post.save_pretrained(tmp)
    (tmp / "README.md").write_text(
        "Untrained Gemma3nVLA demo checkpoint made by gemma3nvla_ros.policy.demo_checkpoint for contract "
        f"{contract.source}.\nIts actions are random but well-formed; do not use it on a real arm.\n\n"
        + json.dumps(contract.to_dict(), indent=2) + "\n"
    )
