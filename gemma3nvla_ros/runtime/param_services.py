"""A node's parameter services (rclpy.parameter_service.ParameterService), so ``ros2 param
get/set/list/describe`` from a ROS machine work against our nodes."""
from __future__ import annotations

from typing import TYPE_CHECKING

from gemma3nvla_ros.runtime.parameter import Parameter, ParameterNotDeclaredException
from gemma3nvla_ros.runtime.qos import qos_profile_parameters

if TYPE_CHECKING:  # pragma: no cover
    from gemma3nvla_ros.runtime.node import Node

DEPTH_RECURSIVE = 0


def list_parameter_names(names: list[str], prefixes: list[str], depth: int) -> tuple[list[str], list[str]]:
    """rclpy's list_parameters: names under the prefixes (all when none) no deeper than ``depth``
    dot-separated levels below the prefix, plus the distinct parent prefixes of those names."""
    out_names: list[str] = []
    out_prefixes: list[str] = []
    separator = "."
    for name in names:
        ok = False
        if not prefixes:
            ok = depth == DEPTH_RECURSIVE or name.count(separator) < depth
        else:
            for prefix in prefixes:
                if name == prefix:
                    ok = True
                elif name.startswith(prefix + separator):
                    if depth == DEPTH_RECURSIVE:
                        ok = True
                    else:
                        ok = name[len(prefix + separator):].count(separator) < depth
                if ok:
                    break
        if ok:
            out_names.append(name)
            if separator in name:
                pre = name.rsplit(separator, 1)[0]
                if pre not in out_prefixes:
                    out_prefixes.append(pre)
    return out_names, out_prefixes


class ParameterService:
    def __init__(self, node: "Node"):
        from gemma3nvla_ros.runtime.interfaces import rcl_interfaces
        self._node = node
        srv = rcl_interfaces.srv
        self._rcl = rcl_interfaces
        q = qos_profile_parameters
        node.create_service(srv.DescribeParameters, "~/describe_parameters", self._describe, qos_profile=q)
        node.create_service(srv.GetParameterTypes, "~/get_parameter_types", self._get_types, qos_profile=q)
        node.create_service(srv.GetParameters, "~/get_parameters", self._get, qos_profile=q)
        node.create_service(srv.ListParameters, "~/list_parameters", self._list, qos_profile=q)
        node.create_service(srv.SetParameters, "~/set_parameters", self._set, qos_profile=q)
        node.create_service(srv.SetParametersAtomically, "~/set_parameters_atomically", self._set_atomically,
                            qos_profile=q)

    def _describe(self, request, response):
        try:
            response.descriptors = [self._node.describe_parameter(n) for n in request.names]
        except ParameterNotDeclaredException:
            response.descriptors = []
        return response

    def _get_types(self, request, response):
        response.types = [self._node.get_parameter_or(n).type_.value for n in request.names]
        return response

    def _get(self, request, response):
        values = []
        for name in request.names:
            try:
                values.append(self._node.get_parameter(name).get_parameter_value())
            except ParameterNotDeclaredException:
                response.values = []  # rclpy answers nothing when any name is undeclared
                return response
        response.values = values
        return response

    def _list(self, request, response):
        names, prefixes = list_parameter_names(list(self._node._parameters.keys()), list(request.prefixes),
                                               int(request.depth))
        response.result = self._rcl.msg.ListParametersResult(names=names, prefixes=prefixes)
        return response

    def _one(self, msgs, atomically: bool):
        try:
            params = [Parameter.from_parameter_msg(m) for m in msgs]
        except (TypeError, ValueError) as exc:
            return self._rcl.msg.SetParametersResult(successful=False, reason=f"invalid parameter: {exc}")
        try:
            return self._node.set_parameters_atomically(params)
        except ParameterNotDeclaredException as exc:
            return self._rcl.msg.SetParametersResult(successful=False, reason=str(exc))
        except Exception as exc:  # a throwing user callback must not take the service down
            return self._rcl.msg.SetParametersResult(successful=False, reason=f"{type(exc).__name__}: {exc}")

    def _set(self, request, response):
        response.results = [self._one([m], False) for m in request.parameters]
        return response

    def _set_atomically(self, request, response):
        response.result = self._one(list(request.parameters), True)
        return response
