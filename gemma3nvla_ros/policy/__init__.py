"""LeRobot policy type ``gemma3nvla``: importing this package registers it with LeRobot.

Registration is all or nothing: the configuration, modeling and processor modules are imported first and the
type is registered last, so that when any of them cannot be imported the import fails with that error and
``gemma3nvla`` is not among LeRobot's policy types (LeRobot's plugin discovery logs the error). A half-registered type would let
``--policy.type=gemma3nvla`` parse and fail later, far from the cause. The processor module registers its
pipeline steps (``gemma3nvla_input_check``, ``gemma3nvla_task_length_check``) so saved pipelines load.
"""
from lerobot.configs.policies import PreTrainedConfig

from .configuration_gemma3nvla import Gemma3nVLAConfig
from .modeling_gemma3nvla import Gemma3nVLAPolicy
from .processor_gemma3nvla import Gemma3nVLATaskLengthCheck, make_gemma3nvla_pre_post_processors

PreTrainedConfig.register_subclass("gemma3nvla")(Gemma3nVLAConfig)

__all__ = ["Gemma3nVLAConfig", "Gemma3nVLAPolicy", "Gemma3nVLATaskLengthCheck", "make_gemma3nvla_pre_post_processors"]
