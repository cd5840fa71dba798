"""LeRobot discovers installed distributions named ``lerobot_policy_*`` and imports them by that name; importing
gemma3nvla_ros.policy registers ``--policy.type=gemma3nvla``."""
from gemma3nvla_ros.policy import Gemma3nVLAConfig  # importing registers --policy.type=gemma3nvla

__all__ = ["Gemma3nVLAConfig"]
