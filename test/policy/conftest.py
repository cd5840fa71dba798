"""Shared fixtures for the gemma3nvla policy tests: a tiny random Gemma 3n saved with save_pretrained (plus a
tiny tokenizer) in a session temp dir, and a tiny LeRobot dataset. Helpers live in test/helpers_policy.py."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))

from helpers_policy import tiny_backbone_model, write_dataset  # noqa: E402

@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory):
    """(directory, transformers Gemma3nForConditionalGeneration in eval mode) with the same weights."""
    from gemma3nvla_ros.policy.local_backbone import write_backbone_dir

    model = tiny_backbone_model()
    directory = tmp_path_factory.mktemp("tiny_gemma3n")
    write_backbone_dir(directory, model.config, model)
    return str(directory), model


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets") / "gemma3nvla_test"
    return str(write_dataset(root))
