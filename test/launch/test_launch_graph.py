"""The graph YAML both launchers read: substitution, typing, validation, and the shipped graphs."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gemma3nvla_ros.launch_graph import GraphError, parse_launch_arguments, resolve_graph
from gemma3nvla_ros.paths import config_dir, graph_path

GRAPH = """
arguments:
  mode: {default: sim, description: "real | sim", choices: [real, sim]}
  rate: {default: "100.0"}
  fps: {default: 30.0}
  port: {description: "serial port"}
  cameras: {default: "true"}
nodes:
  - name: so101_bridge
    executable: so101_bridge
    required: true
    parameters: {mode: "$(var mode)", publish_rate: "$(var rate)", port: "$(var port)", label: "arm-$(var mode)"}
    remappings: {/joint_commands: /arm/joint_commands}
  - name: camera_wrist
    executable: camera_node
    namespace: /cams
    condition: "$(var cameras)"
    parameters: {fps: "$(var fps)", names: ["$(var mode)", "x"]}
"""


@pytest.fixture
def graph_file(tmp_path: Path) -> Path:
    path = tmp_path / "demo.yaml"
    path.write_text(GRAPH)
    return path


def test_arguments_substitute_with_yaml_types(graph_file: Path) -> None:
    graph = resolve_graph(graph_file, {"port": "/dev/ttyACM0"})
    bridge, camera = graph.nodes
    assert bridge.parameters == {"mode": "sim", "publish_rate": 100.0, "port": "/dev/ttyACM0", "label": "arm-sim"}
    assert bridge.required and not camera.required
    assert camera.parameters["names"] == ["sim", "x"]
    assert camera.parameters["fps"] == 30.0 and isinstance(camera.parameters["fps"], float)
    assert bridge.remappings == {"/joint_commands": "/arm/joint_commands"}



def test_float_arguments_stay_float_when_given_as_integers(graph_file: Path) -> None:
    nodes = resolve_graph(graph_file, {"port": "p", "fps": "15", "rate": "200"}).nodes
    assert nodes[1].parameters["fps"] == 15.0 and isinstance(nodes[1].parameters["fps"], float)
    assert nodes[0].parameters["publish_rate"] == 200.0 and isinstance(nodes[0].parameters["publish_rate"], float)


def test_string_arguments_stay_strings_when_given_as_numbers(tmp_path: Path) -> None:
    # README: wrist_source may be a device index (`wrist_source:=0`); camera_node declares `source` as a
    # string, so an int would make the node refuse its override (and a respawning node crash-loop)
    path = tmp_path / "g.yaml"
    path.write_text("""
arguments:
  source: {default: synthetic}
  robot_id: {default: ""}
  width: {default: "640"}
  enabled: {default: "true"}
nodes:
  - {name: cam, executable: camera_node, condition: "$(var enabled)",
     parameters: {source: "$(var source)", robot_id: "$(var robot_id)", width: "$(var width)"}}
""")
    params = resolve_graph(path, {"source": "0", "robot_id": "42", "width": "320"}).nodes[0].parameters
    assert params == {"source": "0", "robot_id": "42", "width": 320}
    assert resolve_graph(path, {"enabled": "false"}).nodes == []
    shipped = resolve_graph(graph_path("so101_pickplace"), {"wrist_source": "0", "robot_id": "7"})
    cameras = {n.name: n for n in shipped.nodes}
    assert cameras["camera_wrist"].parameters["source"] == "0"
    assert cameras["so101_bridge"].parameters["robot_id"] == "7"


def test_ros_args_and_params_file_are_ros_format(graph_file: Path) -> None:
    graph = resolve_graph(graph_file, {"port": "p", "mode": "real"})
    camera = graph.nodes[1]
    assert camera.ros_args("/tmp/x.yaml") == [
        "--ros-args", "-r", "__node:=camera_wrist", "-r", "__ns:=/cams", "--params-file", "/tmp/x.yaml",
    ]
    assert yaml.safe_load(camera.params_yaml()) == {"/cams/camera_wrist": {"ros__parameters": {"fps": 30.0, "names": ["real", "x"]}}}


def test_condition_false_skips_node(graph_file: Path) -> None:
    graph = resolve_graph(graph_file, {"port": "p", "cameras": "false"})
    assert [n.name for n in graph.nodes] == ["so101_bridge"]


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({}, "launch argument 'port' is required"),
        ({"port": "p", "mode": "fast"}, "must be one of ['real', 'sim']"),
        ({"port": "p", "typo": "1"}, "unknown launch argument(s) typo"),
        ({"port": "p", "cameras": "maybe"}, "condition must be true or false"),
    ],
)
def test_bad_arguments_are_rejected_with_reason(graph_file: Path, overrides: dict, message: str) -> None:
    with pytest.raises(GraphError, match=None) as info:
        resolve_graph(graph_file, overrides)
    assert message in str(info.value)


@pytest.mark.parametrize(
    "text, message",
    [
        ("nodes: [{name: a}]", "needs 'name' and 'executable'"),
        ("nodes: [{name: a, executable: b, paramters: {}}]", "unknown key(s) ['paramters']"),
        ("nodes: [{name: a, executable: b, parameters: {x: '$(env HOME)'}}]", "only $(var NAME)"),
        ("nodes: [{name: a, executable: b, parameters: {x: '$(var nope)'}}]", "names no launch argument"),
        ("nodes: [{name: a, executable: b}, {name: a, executable: c}]", "two nodes named /a"),
        ("nodes: {a: 1}", "expected a mapping with a 'nodes' list"),
        ("nodes: [", "not valid YAML"),
    ],
)
def test_bad_graph_files_are_rejected_with_reason(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(GraphError) as info:
        resolve_graph(path)
    assert message in str(info.value)


def test_launch_argument_tokens() -> None:
    assert parse_launch_arguments(["mode:=real", "port:=/dev/tty:0", "empty:="]) == {
        "mode": "real", "port": "/dev/tty:0", "empty": "",
    }
    with pytest.raises(GraphError, match="name:=value"):
        parse_launch_arguments(["mode=real"])


def test_every_shipped_graph_resolves_with_defaults() -> None:
    graphs = [p for p in config_dir().glob("*.yaml") if "\nnodes:" in "\n" + p.read_text()]
    assert graphs, "config/ ships no launch graph"
    for path in graphs:
        graph = resolve_graph(path)
        assert graph.nodes, path
        assert graph_path(path.stem) == path


def test_every_graph_has_a_ros_launch_file() -> None:
    launch_dir = config_dir().parent / "launch"
    for path in config_dir().glob("*.yaml"):
        if "\nnodes:" in "\n" + path.read_text():
            launch_file = launch_dir / f"{path.stem}.launch.py"
            assert launch_file.is_file(), f"{path.name} has no launch/{launch_file.name}"
            assert f'generate_graph_launch_description("{path.stem}")' in launch_file.read_text()
