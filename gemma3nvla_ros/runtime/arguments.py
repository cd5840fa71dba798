"""ROS 2 command-line arguments (rcl's ``--ros-args`` grammar), parsed without ROS.

Supported inside ``--ros-args ... [--]``: ``-r/--remap [node:]from:=to`` (incl. ``__node``/``__ns``),
``-p/--param [node:]name:=value`` (value parsed as YAML, like rcl), ``--params-file FILE``,
``--log-level [logger:=]LEVEL``, ``-e/--enclave E``, and the logging switches rcl accepts (ignored).
Everything outside ``--ros-args`` sections is left in ``unparsed`` (rclpy's ``remove_ros_args``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import yaml

LOG_LEVELS = ("DEBUG", "INFO", "WARN", "ERROR", "FATAL", "UNSET")
_IGNORED_FLAGS = ("--enable-rosout-logs", "--disable-rosout-logs", "--enable-stdout-logs",
                  "--disable-stdout-logs", "--enable-external-lib-logs", "--disable-external-lib-logs")


class RosArgumentError(ValueError):
    pass


@dataclass(frozen=True)
class Remap:
    node: Optional[str]  # only for this node name, or None for all
    from_: str
    to: str


@dataclass(frozen=True)
class ParamOverride:
    node: Optional[str]
    name: str
    value: Any


@dataclass
class RosArguments:
    remaps: list[Remap] = field(default_factory=list)
    # in order of appearance: ("file", path) or ("param", ParamOverride); later entries win (rcl)
    param_sources: list[tuple[str, Any]] = field(default_factory=list)
    log_levels: dict[Optional[str], str] = field(default_factory=dict)  # None -> default level
    enclave: str = "/"
    unparsed: list[str] = field(default_factory=list)

    @property
    def params_files(self) -> list[str]:
        return [v for k, v in self.param_sources if k == "file"]

    def node_name_override(self, node_name: str) -> Optional[str]:
        return self._special("__node", node_name) or self._special("__name", node_name)

    def namespace_override(self, node_name: str) -> Optional[str]:
        return self._special("__ns", node_name)

    def _special(self, key: str, node_name: str) -> Optional[str]:
        """The first matching rule wins, as for every remap in rcl (node-local rules come first)."""
        for r in self.remaps:
            if r.from_ == key and (r.node is None or r.node == node_name):
                return r.to
        return None


def _split_node_prefix(text: str) -> tuple[Optional[str], str]:
    """``node:rest`` -> (node, rest) when the prefix is a plain node name (no '/', no ':=')."""
    head, sep, rest = text.partition(":")
    if sep and not rest.startswith("=") and "/" not in head and head and ":=" in rest:
        return head, rest
    return None, text


def parse_param_value(text: str) -> Any:
    """rcl parses ``-p`` values as YAML (``1`` int, ``1.0`` double, ``true`` bool, ``[1, 2]`` arrays)."""
    try:
        value = yaml.safe_load(text) if text != "" else ""
    except yaml.YAMLError:
        return text
    if value is None:
        return text
    return value


def parse_ros_args(args: Optional[Sequence[str]]) -> RosArguments:
    out = RosArguments()
    if not args:
        return out
    argv = list(args)
    i = 0
    in_ros = False
    while i < len(argv):
        a = argv[i]
        if a == "--ros-args":
            in_ros = True
            i += 1
            continue
        if not in_ros:
            out.unparsed.append(a)
            i += 1
            continue
        if a == "--":
            in_ros = False
            i += 1
            continue

        def value() -> str:
            if i + 1 >= len(argv):
                raise RosArgumentError(f"{a} needs a value")
            return argv[i + 1]

        if a in ("-r", "--remap"):
            node, rule = _split_node_prefix(value())
            if ":=" not in rule:
                raise RosArgumentError(f"invalid remap rule {rule!r} (expected from:=to)")
            src, dst = rule.split(":=", 1)
            if not src or not dst:
                raise RosArgumentError(f"invalid remap rule {rule!r}")
            out.remaps.append(Remap(node, src, dst))
            i += 2
        elif a in ("-p", "--param"):
            node, rule = _split_node_prefix(value())
            if ":=" not in rule:
                raise RosArgumentError(f"invalid parameter rule {rule!r} (expected name:=value)")
            name, raw = rule.split(":=", 1)
            if not name:
                raise RosArgumentError(f"invalid parameter rule {rule!r}")
            out.param_sources.append(("param", ParamOverride(node, name, parse_param_value(raw))))
            i += 2
        elif a == "--params-file":
            out.param_sources.append(("file", value()))
            i += 2
        elif a == "--log-level":
            v = value()
            if ":=" in v:
                logger, level = v.split(":=", 1)
            else:
                logger, level = None, v
            if level.upper() not in LOG_LEVELS:
                raise RosArgumentError(f"invalid log level {level!r}")
            out.log_levels[logger] = level.upper()
            i += 2
        elif a in ("-e", "--enclave"):
            out.enclave = value()
            i += 2
        elif a == "--log-file-name" or a == "--log-config-file":
            i += 2
        elif a in _IGNORED_FLAGS:
            i += 1
        else:
            raise RosArgumentError(f"unknown ROS argument {a!r}")
    return out


def remove_ros_args(args: Sequence[str]) -> list[str]:
    """rclpy.utilities.remove_ros_args."""
    return parse_ros_args(args).unparsed
