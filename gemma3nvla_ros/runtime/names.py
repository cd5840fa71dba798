"""ROS name handling (rcl): validation, expansion of relative/private names, remapping, DDS names."""
from __future__ import annotations

import re
from typing import Iterable, Optional

from gemma3nvla_ros.runtime.arguments import Remap

_NODE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_NS = re.compile(r"(/[A-Za-z_][A-Za-z0-9_]*)*\Z")
_TOKEN = re.compile(r"[A-Za-z0-9_]+\Z")


class InvalidNameError(ValueError):
    pass


def validate_node_name(name: str) -> None:
    if not _NODE_NAME.match(name or ""):
        raise InvalidNameError(f"Invalid node name {name!r}: must be alphanumeric/underscore and not start with a number")


def normalize_namespace(ns: Optional[str]) -> str:
    ns = (ns or "").strip()
    if not ns:
        return "/"
    if not ns.startswith("/"):
        ns = "/" + ns
    if len(ns) > 1:
        ns = ns.rstrip("/")
    if ns != "/" and not _NS.match(ns):
        raise InvalidNameError(f"Invalid namespace {ns!r}")
    return ns


def expand_name(name: str, node_name: str, namespace: str) -> str:
    """``foo`` -> ``/ns/foo``, ``~/foo`` -> ``/ns/node/foo``, ``/foo`` stays (rcl_expand_topic_name)."""
    if not name:
        raise InvalidNameError("topic or service name must not be empty")
    if name == "~":
        base = namespace.rstrip("/") + "/" + node_name
        return base
    if name.startswith("~/"):
        base = namespace.rstrip("/") + "/" + node_name
        out = base + "/" + name[2:]
    elif name.startswith("/"):
        out = name
    else:
        out = namespace.rstrip("/") + "/" + name
    if out != "/" and out.endswith("/"):
        raise InvalidNameError(f"name {name!r} must not end with '/'")
    for tok in out.split("/")[1:]:
        if not _TOKEN.match(tok) and not (tok.startswith("{") and tok.endswith("}")):
            raise InvalidNameError(f"Invalid topic/service name {name!r}")
    return out


def remap_name(expanded: str, node_name: str, namespace: str, rules: Iterable[Remap]) -> str:
    """First matching rule wins (rcl); rule sides are expanded relative to the node."""
    for r in rules:
        if r.from_.startswith("__"):
            continue
        if r.node is not None and r.node != node_name:
            continue
        try:
            src = expand_name(r.from_, node_name, namespace)
        except InvalidNameError:
            continue
        if src == expanded:
            return expand_name(r.to, node_name, namespace)
    return expanded


def topic_to_dds(fqn: str) -> str:
    return "rt" + fqn


def service_to_dds(fqn: str) -> tuple[str, str]:
    return "rq" + fqn + "Request", "rr" + fqn + "Reply"
