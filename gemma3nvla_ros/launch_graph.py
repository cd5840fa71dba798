"""One graph description per launch, read by both launchers.

``config/<name>.yaml`` lists launch arguments and nodes. ``launch/<name>.launch.py`` (real ROS 2) and
``gemma3nvla-ros launch <name>`` (no ROS) both call :func:`resolve_graph`, so the two ways to launch
cannot drift. The format::

    arguments:
      mode: {default: sim, description: "real | sim", choices: [real, sim]}
    nodes:
      - name: so101_bridge          # node name (-r __node:=)
        executable: so101_bridge    # console script of this package
        namespace: ""               # optional
        required: true              # the launch stops when it exits
        respawn: false              # optional, restart after respawn_delay seconds
        condition: "$(var use_cameras)"   # optional, node skipped when it resolves false
        parameters: {mode: "$(var mode)", publish_rate: 100.0}
        remappings: {/joint_commands: /so101/joint_commands}

``$(var NAME)`` substitutes a launch argument, as in ROS launch files. A value that is exactly one
substitution takes the argument's YAML type (``"30"`` -> 30, ``"true"`` -> True), as ROS launch does
for parameters, except that an argument whose default is a float stays a float (``fps:=15`` -> 15.0):
rclpy refuses an integer for a parameter declared as a double; and an argument whose default is a
string (``synthetic``, ``""``, ``/dev/ttyACM0``) stays a string (``wrist_source:=0`` -> ``"0"``, a
device index for a parameter declared as a string, which an int would make the node refuse).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

_VAR = re.compile(r"\$\(var ([A-Za-z_][A-Za-z0-9_]*)\)")
_NODE_KEYS = {
    "name",
    "executable",
    "namespace",
    "required",
    "respawn",
    "respawn_delay",
    "condition",
    "parameters",
    "remappings",
}


class GraphError(ValueError):
    """The graph YAML or a launch argument is invalid."""


@dataclass(frozen=True)
class LaunchArgument:
    name: str
    default: str | None
    description: str = ""
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class NodeSpec:
    name: str
    executable: str
    namespace: str = ""
    required: bool = False
    respawn: bool = False
    respawn_delay: float = 2.0
    parameters: dict[str, Any] = field(default_factory=dict)
    remappings: dict[str, str] = field(default_factory=dict)

    def ros_args(self, params_file: str | None = None) -> list[str]:
        """The ROS command line both runtimes understand (params go through a ROS params file)."""
        args = ["--ros-args", "-r", f"__node:={self.name}"]
        if self.namespace:
            args += ["-r", f"__ns:={self.namespace}"]
        for src, dst in self.remappings.items():
            args += ["-r", f"{src}:={dst}"]
        if params_file:
            args += ["--params-file", params_file]
        return args

    def params_yaml(self) -> str:
        """ROS-format parameters for this node (``/ns/name: {ros__parameters: …}``)."""
        fqn = f"{self.namespace.rstrip('/')}/{self.name}" if self.namespace else f"/{self.name}"
        return yaml.safe_dump({fqn: {"ros__parameters": self.parameters}}, sort_keys=False)


@dataclass(frozen=True)
class Graph:
    name: str
    arguments: dict[str, LaunchArgument]
    nodes: list[NodeSpec]


def load_graph_file(path: Path) -> tuple[dict[str, LaunchArgument], list[dict[str, Any]]]:
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise GraphError(f"cannot read graph {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise GraphError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("nodes"), list):
        raise GraphError(f"{path}: expected a mapping with a 'nodes' list")
    arguments = {}
    for name, spec in (doc.get("arguments") or {}).items():
        spec = spec if isinstance(spec, dict) else {"default": spec}
        default = spec.get("default")
        arguments[name] = LaunchArgument(
            name=name,
            default=None if default is None else _as_text(default),
            description=str(spec.get("description", "")),
            choices=tuple(_as_text(c) for c in spec.get("choices", ())),
        )
    return arguments, doc["nodes"]


def resolve_graph(path: Path, overrides: Mapping[str, str] | None = None) -> Graph:
    """Load ``path`` and substitute launch arguments (``overrides`` as given by ``name:=value``)."""
    arguments, raw_nodes = load_graph_file(path)
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(arguments))
    if unknown:
        known = ", ".join(sorted(arguments)) or "none"
        raise GraphError(f"unknown launch argument(s) {', '.join(unknown)}; this launch takes: {known}")
    values: dict[str, str] = {}
    for arg in arguments.values():
        value = overrides.get(arg.name, arg.default)
        if value is None:
            raise GraphError(f"launch argument '{arg.name}' is required ({arg.description})")
        if arg.choices and value not in arg.choices:
            raise GraphError(f"launch argument '{arg.name}' must be one of {list(arg.choices)}, not {value!r}")
        values[arg.name] = value

    float_args = {a.name for a in arguments.values() if isinstance(_yaml_value(a.default or ""), float)}
    str_args = {a.name for a in arguments.values() if a.default is not None and isinstance(_yaml_value(a.default), str)}
    nodes: list[NodeSpec] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_nodes):
        where = f"{path.name}: nodes[{index}]"
        if not isinstance(raw, dict) or "name" not in raw or "executable" not in raw:
            raise GraphError(f"{where}: each node needs 'name' and 'executable'")
        extra = sorted(set(raw) - _NODE_KEYS)
        if extra:
            raise GraphError(f"{where}: unknown key(s) {extra}; allowed: {sorted(_NODE_KEYS)}")
        node = _substitute(raw, values, float_args, str_args, where)
        if "condition" in node and not _truthy(node["condition"], where):
            continue
        fqn = f"{node.get('namespace') or ''}/{node['name']}"
        if fqn in seen:
            raise GraphError(f"{where}: two nodes named {fqn}")
        seen.add(fqn)
        nodes.append(
            NodeSpec(
                name=str(node["name"]),
                executable=str(node["executable"]),
                namespace=str(node.get("namespace") or ""),
                required=bool(node.get("required", False)),
                respawn=bool(node.get("respawn", False)),
                respawn_delay=float(node.get("respawn_delay", 2.0)),
                parameters=dict(node.get("parameters") or {}),
                remappings={str(k): str(v) for k, v in (node.get("remappings") or {}).items()},
            )
        )
    return Graph(name=path.stem, arguments=arguments, nodes=nodes)


def parse_launch_arguments(tokens: list[str]) -> dict[str, str]:
    """``['mode:=real', 'port:=/dev/ttyACM0']`` -> ``{'mode': 'real', 'port': '/dev/ttyACM0'}``."""
    result = {}
    for token in tokens:
        name, sep, value = token.partition(":=")
        if not sep or not name:
            raise GraphError(f"launch arguments are name:=value, got {token!r}")
        result[name] = value
    return result


def _substitute(value: Any, values: Mapping[str, str], float_args: set[str], str_args: set[str], where: str) -> Any:
    if isinstance(value, dict):
        return {k: _substitute(v, values, float_args, str_args, where) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, values, float_args, str_args, where) for v in value]
    if not isinstance(value, str) or "$(" not in value:
        return value

    def lookup(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise GraphError(f"{where}: $(var {name}) names no launch argument")
        return values[name]

    if "$(" in _VAR.sub("", value):
        raise GraphError(f"{where}: only $(var NAME) substitutions are supported: {value!r}")
    whole = _VAR.fullmatch(value)
    text = _VAR.sub(lookup, value)
    if whole:
        if whole.group(1) in str_args:
            return text
        typed = _yaml_value(text)
        if whole.group(1) in float_args and isinstance(typed, int) and not isinstance(typed, bool):
            return float(typed)
        return typed
    return text


def _yaml_value(text: str) -> Any:
    """A launch argument's text as ROS launch types parameter values ('' stays a string)."""
    if text == "":
        return ""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _truthy(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off", ""):
        return False
    raise GraphError(f"{where}: condition must be true or false, got {value!r}")


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
