"""The one place where the two LeRobot / transformers stacks gemma3nvla runs on differ.

``setup.py`` installs one of two stacks, by Python version:

* **LeRobot 0.6.x + transformers 5.x** (Python >= 3.12: ROS 2 Jazzy and later) -- the ``LEROBOT_06`` and
  ``TRANSFORMERS_5`` branches below.
* **LeRobot 0.4.4 + transformers 4.57** (Python 3.10 / 3.11: ROS 2 Humble) -- the ``else`` branches.

Everything else (the policy, the tools, the tests) is the same code on both and gets what differs from here.
Importing this module is cheap (no torch, transformers or LeRobot import): the functions import what they
need. The differences covered:

* the processor step that ends the task with a newline: LeRobot 0.6 ``NewLineTaskProcessorStep``, 0.4.4
  ``SmolVLANewLineProcessor`` (both registered as ``smolvla_new_line_processor``, so saved pipelines load on
  either);
* ``no_init_weights``: ``transformers.initialization`` in 5.x, ``transformers.modeling_utils`` in 4.x;
* Gemma 3n internals the backbone calls: ``get_image_features`` returns an output object in 5.x (features in
  ``pooler_output``), a tensor in 4.x; 5.x has one rotary module called with a ``layer_type`` (buffers
  ``<layer_type>_inv_freq``), 4.x two (``rotary_emb`` global, ``rotary_emb_local`` sliding); a decoder layer
  takes its layer type's ``position_embeddings`` and returns the AltUp streams in 5.x, takes global and local
  embeddings and returns a 1-tuple in 4.x;
* the flow-matching Euler loop with LeRobot's RTC hook: LeRobot 0.6's ``euler_integrate``, none in 0.4.4;
* ``LeRobotDataset.create``'s video codec: an ``RGBEncoderConfig`` in 0.6, a ``vcodec`` string in 0.4.4;
* what transformers 5 writes into a local backbone directory (tokenizer class, special tokens, RoPE bases),
  rewritten so that transformers 4.57 reads it too (``make_backbone_dir_portable``);
* ``lerobot-train``'s evaluation-frequency flag: ``--env_eval_freq`` in 0.6, ``--eval_freq`` in 0.4.4;
* SmolVLA's ``resize_with_pad``: (img, height, width) in 0.6 (``lerobot.policies.common.vla_utils``),
  (img, width, height) in 0.4.4.

Checkpoints: a policy's ``model.safetensors`` holds the same tensor names on both stacks (the renamed RoPE
buffers are not saved) and its config declares LeRobot 0.6's ``pretrained_revision``, so a checkpoint saved
under one stack loads under the other and predicts the same actions.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from packaging.version import Version

if TYPE_CHECKING:
    from torch import Tensor, nn

LEROBOT_VERSION = Version(version("lerobot"))
TRANSFORMERS_VERSION = Version(version("transformers"))
LEROBOT_06 = LEROBOT_VERSION >= Version("0.6")
TRANSFORMERS_5 = TRANSFORMERS_VERSION.major >= 5

LEROBOT_TRAIN_EVAL_FREQ_FLAG = "--env_eval_freq" if LEROBOT_06 else "--eval_freq"


# ------------------------------------------------------------------------------------------------- LeRobot
def newline_task_step() -> Any:
    """LeRobot's processor step that ends the task with "\\n" (registry name ``smolvla_new_line_processor``)."""
    if LEROBOT_06:
        from lerobot.processor import NewLineTaskProcessorStep
    else:
        from lerobot.policies.smolvla.processor_smolvla import SmolVLANewLineProcessor as NewLineTaskProcessorStep
    return NewLineTaskProcessorStep()


def lerobot_euler_integrate() -> Callable[..., Any] | None:
    """LeRobot 0.6's flow-matching Euler loop with the RTC hook (``lerobot.policies.common.flow_matching``);
    None on 0.4.4, which has none (``policy.flow_matching`` carries SmolVLA 0.4.4's identical loop)."""
    if not LEROBOT_06:
        return None
    from lerobot.policies.common.flow_matching import euler_integrate

    return euler_integrate


def dataset_video_kwargs(vcodec: str) -> dict[str, Any]:
    """Keyword arguments of ``LeRobotDataset.create`` that choose the video codec of camera streams."""
    if LEROBOT_06:
        from lerobot.configs.video import RGBEncoderConfig

        return {"rgb_encoder": RGBEncoderConfig(vcodec=vcodec)}
    return {"vcodec": vcodec}


def smolvla_resize_with_pad(img: Tensor, height: int, width: int, pad_value: float = 0.0) -> Tensor:
    """LeRobot's SmolVLA ``resize_with_pad`` (left/top padding) called with (height, width) on either version."""
    if LEROBOT_06:
        from lerobot.policies.common.vla_utils import resize_with_pad

        return resize_with_pad(img, height, width, pad_value=pad_value)
    from lerobot.policies.smolvla.modeling_smolvla import resize_with_pad

    return resize_with_pad(img, width, height, pad_value=pad_value)


# ------------------------------------------------------------------------------------------- transformers
def no_init_weights() -> AbstractContextManager:
    """transformers' context in which modules are built without initializing their weights."""
    if TRANSFORMERS_5:
        from transformers.initialization import no_init_weights as context
    else:
        from transformers.modeling_utils import no_init_weights as context
    return context()


def make_backbone_dir_portable(directory: Path, extra_special_tokens: dict[str, str]) -> None:
    """Rewrites what transformers 5 wrote into a local backbone dir (``save_pretrained`` of a config and a
    tokenizer) into the spelling transformers 4.57 reads too (5.x reads both), so that a directory made under
    one stack (the demo checkpoint's backbone, shared through ~/.cache) loads under the other: the tokenizer
    class ``TokenizersBackend`` -> ``PreTrainedTokenizerFast``, ``extra_special_tokens`` a list -> the name ->
    token mapping, and the RoPE bases also as ``rope_theta`` / ``rope_local_base_freq`` (4.x ignores 5.x's
    ``rope_parameters`` and would fall back to its defaults). Weights are not covered: 5.x's ``save_pretrained``
    writes another key layout, which 4.x does not read (only the tests write backbone weights, and read them back
    with the same transformers)."""
    if not TRANSFORMERS_5:
        return
    tokenizer_file = Path(directory) / "tokenizer_config.json"
    if tokenizer_file.is_file():
        tokenizer = json.loads(tokenizer_file.read_text())
        if tokenizer.get("tokenizer_class") == "TokenizersBackend":
            tokenizer["tokenizer_class"] = "PreTrainedTokenizerFast"
        tokenizer["extra_special_tokens"] = dict(extra_special_tokens)
        tokenizer_file.write_text(json.dumps(tokenizer, indent=2) + "\n")
    config_file = Path(directory) / "config.json"
    config = json.loads(config_file.read_text())
    text = config.get("text_config", {})
    rope_parameters = text.get("rope_parameters") or {}
    for key, layer_type in (("rope_theta", "full_attention"), ("rope_local_base_freq", "sliding_attention")):
        if "rope_theta" in rope_parameters.get(layer_type, {}):
            text[key] = rope_parameters[layer_type]["rope_theta"]
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def image_features(model: nn.Module, pixel_values: Tensor) -> Tensor:
    """transformers' ``Gemma3nModel.get_image_features`` run on ``model`` (anything with its ``vision_tower``,
    ``embed_vision`` and ``config``): the [B, soft tokens, hidden] embeddings of the images."""
    from transformers.models.gemma3n.modeling_gemma3n import Gemma3nModel

    out = Gemma3nModel.get_image_features(model, pixel_values)
    return out.pooler_output if TRANSFORMERS_5 else out


def rope(text_model: nn.Module, x: Tensor, position_ids: Tensor, layer_type: str) -> tuple[Tensor, Tensor]:
    """cos/sin of ``layer_type`` ("full_attention" / "sliding_attention") from a ``Gemma3nTextModel``'s own
    rotary module(s), computed in float32 there and returned in ``x``'s dtype."""
    if TRANSFORMERS_5:
        return text_model.rotary_emb(x, position_ids, layer_type)
    module = text_model.rotary_emb_local if layer_type == "sliding_attention" else text_model.rotary_emb
    return module(x, position_ids)


def rope_inv_freq(text_model: nn.Module, layer_type: str) -> Tensor:
    """The inverse-frequency buffer behind ``rope(..., layer_type)``."""
    if TRANSFORMERS_5:
        return getattr(text_model.rotary_emb, f"{layer_type}_inv_freq")
    module = text_model.rotary_emb_local if layer_type == "sliding_attention" else text_model.rotary_emb
    return module.inv_freq


def decoder_layer(layer: nn.Module, hidden: Tensor, position_embeddings: tuple[Tensor, Tensor],
                  per_layer_input: Tensor, *, attention_mask: Tensor, position_ids: Tensor, past_key_values: Any,
                  cache_position: Tensor) -> Tensor:
    """One ``Gemma3nTextDecoderLayer`` over the AltUp streams ``hidden`` [altup, B, L, hidden] with its layer
    type's cos/sin; returns the new streams (all of them: in 5.x the layer returns the stacked tensor, whose
    ``[0]`` would be stream 0 alone)."""
    if TRANSFORMERS_5:
        return layer(hidden, position_embeddings, per_layer_input, attention_mask=attention_mask,
                     position_ids=position_ids, past_key_values=past_key_values)
    # 4.x picks the local or global pair by the layer's own type; both are this layer's.
    return layer(hidden, position_embeddings, position_embeddings, per_layer_input, attention_mask=attention_mask,
                 position_ids=position_ids, past_key_values=past_key_values, use_cache=True,
                 cache_position=cache_position)[0]
