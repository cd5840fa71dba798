"""gemma3nvla_ros: one ament_python package that also installs with pip on machines without ROS."""
import os
from glob import glob

from setuptools import find_packages, setup

package_name = "gemma3nvla_ros"

# ROS 2 Jazzy's own rclpy (Fast DDS) and message packages as community-built wheels of the official
# sources, for machines without a ROS install (x86-64 Linux, Python 3.10-3.13). Never install them into
# an environment that already sees a distro's rclpy: scripts/install.sh checks first.
ROS_WHEELS = [
    "ros-jazzy-rclpy[fastrtps]==7.1.6",
    *(f"ros-jazzy-{pkg}" for pkg in ("std-msgs", "sensor-msgs", "trajectory-msgs", "std-srvs",
                                      "diagnostic-msgs", "rosgraph-msgs")),
]

extras = {
    "ros": ROS_WHEELS,
    # rosbag2 reading/writing without ROS (and the tests' independent reference for message bytes).
    "bag": ["rosbags>=0.10"],
    # gemma3nvla-ros eval-bag: report plots and the progress bar (plus "bag" and "policy").
    "eval": ["rosbags>=0.10", "matplotlib>=3.5", "tqdm"],
    # Camera capture. On a ROS machine prefer the distro's python3-opencv (numpy 1.x ABI).
    "camera": ["opencv-python-headless>=4.8"],
    # The Gemma3nVLA policy and LeRobot training. LeRobot >= 0.5 needs Python >= 3.12 (ROS 2 Jazzy's), so
    # Python 3.12+ gets the current LeRobot 0.6 (transformers 5) and Python 3.10/3.11 (Humble) LeRobot 0.4.4
    # (transformers 4.57); the policy runs on both (gemma3nvla_ros/policy/compat.py).
    "policy": [
        "lerobot==0.4.4; python_version < '3.12'",
        "transformers==4.57.6; python_version < '3.12'",
        "lerobot[dataset,training,transformers-dep,feetech]>=0.6.1,<0.7; python_version >= '3.12'",
        "timm>=1.0.16",
    ],
    "test": ["pytest>=7", "pytest-timeout>=2"],
}
# Everything but the ROS wheels, which install.sh adds only where no distro rclpy exists.
extras["all"] = sorted({req for name, reqs in extras.items() if name != "ros" for req in reqs})

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(include=[package_name, f"{package_name}.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{package_name}"]),
        (f"share/{package_name}", ["package.xml"]),
        (f"share/{package_name}/launch", glob("launch/*.launch.py")),
        (f"share/{package_name}/config", [p for p in glob("config/*") if os.path.isfile(p)]),
        (f"share/{package_name}/config/calibration", glob("config/calibration/*.json")),
    ],
    include_package_data=True,
    python_requires=">=3.10",
    install_requires=["numpy", "pyyaml", "feetech-servo-sdk>=1.0"],
    extras_require=extras,
    zip_safe=True,
    maintainer="gemma3nvla_ros maintainers",
    maintainer_email="maintainers@gemma3nvla-ros.dev",
    description="ROS 2 stack running the Gemma3nVLA policy on an SO-101 arm.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "gemma3nvla-ros = gemma3nvla_ros.cli:main",
            "camera_node = gemma3nvla_ros.nodes.camera_node:main",
            "so101_bridge = gemma3nvla_ros.nodes.so101_bridge:main",
            "so101_leader = gemma3nvla_ros.nodes.so101_leader:main",
            "gemma3nvla_policy = gemma3nvla_ros.nodes.policy_node:main",
            "action_aggregator = gemma3nvla_ros.nodes.action_aggregator:main",
            "sim_servo_bus = gemma3nvla_ros.hardware.sim_bus:main",
            "eval_bag = gemma3nvla_ros.tools.eval_bag:main",  # ros2 run gemma3nvla_ros eval_bag <bag> ...
            "bag_play = gemma3nvla_ros.tools.bag_replay:main",  # ros2 run gemma3nvla_ros bag_play <bag> ...
        ],
    },
)
