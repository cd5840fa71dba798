"""Pre/post-processing pipelines of the Gemma3nVLA policy (LeRobot 0.4.x style: normalization lives here).

Pre: rename (identity, as SmolVLA) -> add batch dim -> task ends with "\\n" -> task length check -> tokenize
(Gemma 3n tokenizer of ``vlm_model_name``, right padding) -> device -> normalize state/action (images stay in
[0, 1]: Gemma 3n's vision tower takes them unnormalized). Post: unnormalize actions -> CPU.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from lerobot.configs.types import PipelineFeatureType, PolicyFeature
from lerobot.policies.smolvla.processor_smolvla import SmolVLANewLineProcessor
from lerobot.processor import (
    AddBatchDimensionProcessorStep,
    ComplementaryDataProcessorStep,
    DeviceProcessorStep,
    NormalizerProcessorStep,
    PolicyAction,
    PolicyProcessorPipeline,
    ProcessorStepRegistry,
    RenameObservationsProcessorStep,
    TokenizerProcessorStep,
    UnnormalizerProcessorStep,
)
from lerobot.processor.converters import policy_action_to_transition, transition_to_policy_action
from lerobot.utils.constants import POLICY_POSTPROCESSOR_DEFAULT_NAME, POLICY_PREPROCESSOR_DEFAULT_NAME

from .configuration_gemma3nvla import Gemma3nVLAConfig


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
        if task is None or self.truncate:
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
        SmolVLANewLineProcessor(),
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
