"""Pre/post-processing pipelines of the Gemma3nVLA policy (LeRobot >= 0.4 style: normalization lives here).

Pre: rename (identity, as SmolVLA) -> add batch dim -> input check (task there, state/action widths, no NaN/inf,
pixels in [0, 1]: refused before LeRobot's steps fail on them with bare errors) -> task ends with "\\n" -> task
length check -> tokenize (Gemma 3n tokenizer of ``vlm_model_name``, right padding) -> device -> normalize
state/action (images stay in [0, 1]: Gemma 3n's vision tower takes them unnormalized). Post: unnormalize actions
-> CPU.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from lerobot.configs.types import PipelineFeatureType, PolicyFeature
from lerobot.processor import (
    AddBatchDimensionProcessorStep,
    ComplementaryDataProcessorStep,
    DeviceProcessorStep,
    NormalizerProcessorStep,
    PolicyAction,
    PolicyProcessorPipeline,
    ProcessorStep,
    ProcessorStepRegistry,
    RenameObservationsProcessorStep,
    TokenizerProcessorStep,
    TransitionKey,
    UnnormalizerProcessorStep,
)
from lerobot.processor.converters import policy_action_to_transition, transition_to_policy_action
from lerobot.utils.constants import (
    ACTION,
    OBS_IMAGES,
    OBS_STATE,
    POLICY_POSTPROCESSOR_DEFAULT_NAME,
    POLICY_PREPROCESSOR_DEFAULT_NAME,
)

from gemma3nvla_ros.compat import newline_task_step

from .configuration_gemma3nvla import Gemma3nVLAConfig
from .input_checks import InputRefused, check_finite, check_pixels, check_task, check_width


@ProcessorStepRegistry.register(name="gemma3nvla_input_check")
@dataclass
class Gemma3nVLAInputCheck(ProcessorStep):
    """Refuses (InputRefused, a ValueError) what LeRobot's later steps would fail on with a bare error or pass on
    silently: no task (tokenizer: KeyError), a state or action of the wrong width (normalizer: RuntimeError), NaN/inf
    in the state, images that are not floats in [0, 1] or hold a NaN/inf pixel. Runs right after the batch dim is
    added. Action values are the policy's to check (a NaN in a padded step is allowed there)."""

    state_dim: int | None = None
    action_dim: int | None = None
    image_keys: list[str] = field(default_factory=list)  # the cameras (batches also hold their *_is_pad masks)

    @classmethod
    def from_config(cls, config: Gemma3nVLAConfig) -> Gemma3nVLAInputCheck:
        state, action = config.robot_state_feature, config.action_feature
        return cls(state_dim=int(state.shape[0]) if state is not None else None,
                   action_dim=int(action.shape[0]) if action is not None else None,
                   image_keys=[k for k in config.image_features if not k.startswith(f"{OBS_IMAGES}.empty_camera_")])

    def __call__(self, transition):
        obs = transition.get(TransitionKey.OBSERVATION) or {}
        extra = transition.get(TransitionKey.COMPLEMENTARY_DATA) or {}
        ids = extra.get("index")
        state = obs.get(OBS_STATE)
        if self.state_dim is not None:
            if state is None:
                raise InputRefused(f"Missing {OBS_STATE!r}; expected a [B, {self.state_dim}] tensor.")
            check_width(OBS_STATE, state, self.state_dim)
            check_finite(OBS_STATE, torch.as_tensor(state), ids)
        batch_size = int(state.shape[0]) if getattr(state, "ndim", 0) >= 2 else None
        check_task(extra.get("task"), batch_size)
        for key in self.image_keys:
            if isinstance(obs.get(key), torch.Tensor):
                check_pixels(key, obs[key], ids)
        action = transition.get(TransitionKey.ACTION)
        if self.action_dim is not None and action is not None:
            check_width(ACTION, action, self.action_dim)
        return transition

    def get_config(self) -> dict[str, Any]:
        return {"state_dim": self.state_dim, "action_dim": self.action_dim, "image_keys": list(self.image_keys)}

    def transform_features(
        self, features: dict[PipelineFeatureType, dict[str, PolicyFeature]]
    ) -> dict[PipelineFeatureType, dict[str, PolicyFeature]]:
        return features


def add_input_check(pipeline: PolicyProcessorPipeline, config: Gemma3nVLAConfig) -> bool:
    """Puts the input check into a preprocessor saved before it existed (after its batch-dim step); True if added."""
    if any(isinstance(step, Gemma3nVLAInputCheck) for step in pipeline.steps):
        return False
    at = next((i + 1 for i, step in enumerate(pipeline.steps) if isinstance(step, AddBatchDimensionProcessorStep)), 0)
    pipeline.steps.insert(at, Gemma3nVLAInputCheck.from_config(config))
    return True


@ProcessorStepRegistry.register(name="gemma3nvla_task_length_check")
@dataclass
class Gemma3nVLATaskLengthCheck(ComplementaryDataProcessorStep):
    """Raises a ValueError when a task tokenizes to more than ``max_length`` tokens (unless ``truncate``),
    instead of letting the tokenizer cut the instruction silently."""

    tokenizer_name: str | None = None
    max_length: int = 48
    truncate: bool = False
    _tokenizer: Any = field(default=None, init=False, repr=False)

    def _tok(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_name)
        return self._tokenizer

    def complementary_data(self, complementary_data: dict[str, Any]) -> dict[str, Any]:
        task = complementary_data.get("task")
        check_task(task)  # a missing task is refused here too (LeRobot's tokenizer would say KeyError: 'task')
        if self.truncate:
            return complementary_data
        tasks = [task] if isinstance(task, str) else list(task)
        for t in tasks:
            n = len(self._tok()(t)["input_ids"])
            if n > self.max_length:
                raise ValueError(
                    f"Task {t!r} tokenizes to {n} tokens; tokenizer_max_length is {self.max_length}. Shorten the "
                    "task, raise tokenizer_max_length, or set truncate_long_tasks=True."
                )
        return complementary_data

    def get_config(self) -> dict[str, Any]:
        return {"tokenizer_name": self.tokenizer_name, "max_length": self.max_length, "truncate": self.truncate}

    def transform_features(
        self, features: dict[PipelineFeatureType, dict[str, PolicyFeature]]
    ) -> dict[PipelineFeatureType, dict[str, PolicyFeature]]:
        return features


def make_gemma3nvla_pre_post_processors(
    config: Gemma3nVLAConfig,
    dataset_stats: dict[str, dict[str, torch.Tensor]] | None = None,
) -> tuple[
    PolicyProcessorPipeline[dict[str, Any], dict[str, Any]],
    PolicyProcessorPipeline[PolicyAction, PolicyAction],
]:
    input_steps = [
        RenameObservationsProcessorStep(rename_map={}),
        AddBatchDimensionProcessorStep(),
        Gemma3nVLAInputCheck.from_config(config),
        newline_task_step(),
        Gemma3nVLATaskLengthCheck(
            tokenizer_name=config.vlm_model_name,
            max_length=config.tokenizer_max_length,
            truncate=config.truncate_long_tasks,
        ),
        TokenizerProcessorStep(
            tokenizer_name=config.vlm_model_name,
            padding=config.pad_language_to,
            padding_side="right",
            max_length=config.tokenizer_max_length,
        ),
        DeviceProcessorStep(device=config.device),
        NormalizerProcessorStep(
            features={**config.input_features, **config.output_features},
            norm_map=config.normalization_mapping,
            stats=dataset_stats,
        ),
    ]
    output_steps = [
        UnnormalizerProcessorStep(
            features=config.output_features, norm_map=config.normalization_mapping, stats=dataset_stats
        ),
        DeviceProcessorStep(device="cpu"),
    ]
    return (
        PolicyProcessorPipeline[dict[str, Any], dict[str, Any]](steps=input_steps, name=POLICY_PREPROCESSOR_DEFAULT_NAME),
        PolicyProcessorPipeline[PolicyAction, PolicyAction](
            steps=output_steps,
            name=POLICY_POSTPROCESSOR_DEFAULT_NAME,
            to_transition=policy_action_to_transition,
            to_output=transition_to_policy_action,
        ),
    )
