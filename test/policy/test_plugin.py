"""LeRobot discovers the ``gemma3nvla`` type through its plugin mechanism, whole or not at all.

Each case runs in a fresh interpreter (registration is process-wide, and this test process has imported the
policy already): LeRobot's own ``register_third_party_plugins()`` (the same function in 0.4.4 and 0.6) imports
the installed ``lerobot_policy_gemma3nvla`` distribution, as ``lerobot-train`` does.
"""
from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
import textwrap

import pytest

from helpers_policy import ACTION_DIM

DISCOVER = """
import json, logging, sys

records = []


class Keep(logging.Handler):
    def emit(self, record):
        records.append(record)


logging.getLogger().addHandler(Keep(level=logging.WARNING))
logging.getLogger().setLevel(logging.INFO)
for name in sys.argv[1:]:
    sys.modules[name] = None  # makes `import name` fail, as a missing or broken dependency would

from lerobot.configs.policies import PreTrainedConfig
from lerobot.utils.import_utils import register_third_party_plugins

register_third_party_plugins()
errors = [r.getMessage() + "\\n" + logging.Formatter().formatException(r.exc_info) if r.exc_info else r.getMessage()
          for r in records if r.levelno >= logging.ERROR]
result = {"known": "gemma3nvla" in PreTrainedConfig.get_known_choices(), "errors": errors}
"""

BUILD = """
import torch
from lerobot.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata
from lerobot.policies.factory import make_policy, make_policy_config, make_pre_post_processors

vlm_dir, dataset_root = sys.argv[1:3]
meta = LeRobotDatasetMetadata("local/gemma3nvla_test", root=dataset_root)
cfg = make_policy_config("gemma3nvla", vlm_model_name=vlm_dir, load_vlm_weights=False, num_vlm_layers=3,
                         resize_imgs_with_padding=(64, 64), chunk_size=8, n_action_steps=8, max_state_dim=8,
                         max_action_dim=8, device="cpu", push_to_hub=False)
policy = make_policy(cfg, ds_meta=meta).eval()
pre, post = make_pre_post_processors(cfg, dataset_stats=meta.stats)
frame = LeRobotDataset("local/gemma3nvla_test", root=dataset_root)[0]
observation = {k: v for k, v in frame.items() if k.startswith("observation.")}
observation["task"] = frame["task"]
with torch.no_grad():
    chunk = post(policy.predict_action_chunk(pre(observation)))
result.update(policy=type(policy).__module__ + "." + type(policy).__name__,
              steps=[type(s).__name__ for s in pre.steps], shape=list(chunk.shape),
              finite=bool(torch.isfinite(chunk).all()))
"""


def _run(script: str, *args: str) -> dict:
    try:
        importlib.metadata.distribution("lerobot_policy_gemma3nvla")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail("install the plugin first: pip install -e plugins/lerobot_policy_gemma3nvla --no-deps")
    code = textwrap.dedent(script) + "\nprint('RESULT=' + json.dumps(result))\n"
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT="))
    return json.loads(line.removeprefix("RESULT="))


def test_discovery_registers_the_type_and_it_builds_end_to_end(tiny_backbone, tiny_dataset):
    """No import error logged, the type known, and LeRobot's factories build it from the config alone: policy
    (make_policy, features from the dataset), processors (make_pre_post_processors, the dataset's stats), and
    one action chunk from a dataset frame in dataset units."""
    result = _run(DISCOVER + BUILD, tiny_backbone[0], tiny_dataset)
    assert result["errors"] == []
    assert result["known"]
    assert result["policy"] == "gemma3nvla_ros.policy.modeling_gemma3nvla.Gemma3nVLAPolicy"
    assert "Gemma3nVLAInputCheck" in result["steps"] and "NormalizerProcessorStep" in result["steps"]
    assert result["shape"] == [1, 8, ACTION_DIM] and result["finite"]


@pytest.mark.parametrize("broken", ["gemma3nvla_ros.policy.modeling_gemma3nvla",
                                    "gemma3nvla_ros.policy.processor_gemma3nvla"])
def test_a_failed_import_leaves_the_type_unregistered(broken):
    """A part of the type that cannot be imported (here: made unimportable) leaves no half-registered
    ``gemma3nvla`` behind, and the cause is in LeRobot's logged error."""
    result = _run(DISCOVER, broken)
    assert not result["known"]
    # (logged once per attempt: LeRobot's lazy distribution scan can meet the same distribution twice after a
    # failed import, then tries it again)
    assert result["errors"]
    for error in result["errors"]:
        assert "Could not import third-party plugin: lerobot_policy_gemma3nvla" in error and broken in error
