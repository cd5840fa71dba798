"""ROS-format parameter YAML (``--params-file``) and the per-node override resolution of rcl/rclcpp.

Format::

    /**:                      # every node
      ros__parameters: {use_sim_time: false}
    camera_node:              # the node whose fully qualified name is /camera_node
      ros__parameters:
        size: {width: 640}    # nested maps flatten to dotted names: size.width
    /cameras/front:           # fully qualified; '*' matches one name segment, '**' any number

A node's overrides are taken from every matching key in file order (later keys win).
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Iterable, Mapping

import yaml

from gemma3nvla_ros.runtime.arguments import ParamOverride, RosArguments


class ParamsFileError(ValueError):
    pass


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value


def _collect(key_prefix: str, body: Any, out: list[tuple[str, dict[str, Any]]]) -> None:
    if not isinstance(body, Mapping):
        raise ParamsFileError(f"{key_prefix!r}: expected a mapping")
    for k, v in body.items():
        k = str(k)
        if k == "ros__parameters":
            params: dict[str, Any] = {}
            if v is not None:
                if not isinstance(v, Mapping):
                    raise ParamsFileError(f"{key_prefix!r}: ros__parameters must be a mapping")
                _flatten("", v, params)
            out.append((key_prefix or "/", params))
        else:
            # namespaces may also be nested: {ns: {node: {ros__parameters: ...}}}
            _collect(f"{key_prefix.rstrip('/')}/{k.strip('/')}" if key_prefix else k, v, out)


def parse_params_yaml(text: str) -> list[tuple[str, dict[str, Any]]]:
    """[(node key, {param name: value})] in file order."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ParamsFileError(f"invalid YAML: {exc}") from exc
    if doc is None:
        return []
    if not isinstance(doc, Mapping):
        raise ParamsFileError("a parameters file must be a mapping of node names")
    out: list[tuple[str, dict[str, Any]]] = []
    for k, v in doc.items():
        _collect(str(k), v, out)
    return out


def load_params_file(path: str) -> list[tuple[str, dict[str, Any]]]:
    with open(path, encoding="utf-8") as f:
        return parse_params_yaml(f.read())


@lru_cache(maxsize=256)
def _pattern(key: str) -> re.Pattern:
    if not key.startswith("/"):
        key = "/" + key
    out = ""
    i = 0
    while i < len(key):
        if key.startswith("/**", i):
            out += "(/[^/]+)*"
            i += 3
        elif key[i] == "*":
            out += "[^/]*"
            i += 1
        else:
            out += re.escape(key[i])
            i += 1
    return re.compile(out + r"\Z")


def node_key_matches(key: str, node_fqn: str) -> bool:
    return _pattern(key).match(node_fqn) is not None


def overrides_for_node(args: RosArguments, node_name: str, node_fqn: str,
                       extra_files: Iterable[str] = ()) -> dict[str, Any]:
    """Parameter overrides for one node from ``--params-file``s and ``-p``s, later ones winning."""
    result: dict[str, Any] = {}
    sources = [("file", f) for f in extra_files] + list(args.param_sources)
    for kind, item in sources:
        if kind == "file":
            for key, params in load_params_file(item):
                if node_key_matches(key, node_fqn):
                    result.update(params)
        else:
            assert isinstance(item, ParamOverride)
            if item.node is None or item.node == node_name:
                result[item.name] = item.value
    return result
