"""LeRobot policy type ``gemma3nvla``: importing this package registers the config with LeRobot.

The processor module is imported too, so that its registered steps (``gemma3nvla_input_check``,
``gemma3nvla_task_length_check``) are known when a saved pipeline is loaded with
``PolicyProcessorPipeline.from_pretrained``. The modeling module (torch + transformers' Gemma 3n) is imported
lazily, as LeRobot's factory does (``configuration_`` -> ``modeling_``).
"""
from .configuration_gemma3nvla import Gemma3nVLAConfig
from .processor_gemma3nvla import Gemma3nVLATaskLengthCheck, make_gemma3nvla_pre_post_processors

__all__ = ["Gemma3nVLAConfig", "Gemma3nVLAPolicy", "Gemma3nVLATaskLengthCheck", "make_gemma3nvla_pre_post_processors"]


def __getattr__(name: str):
    if name == "Gemma3nVLAPolicy":
        from .modeling_gemma3nvla import Gemma3nVLAPolicy

        return Gemma3nVLAPolicy
    raise AttributeError(name)
