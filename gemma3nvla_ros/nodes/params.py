"""Parameters the way every node of this package handles them: each declared with a descriptor, and a
change at run time either applied at once or refused with the reason — never "successful" and ignored."""
from __future__ import annotations

from typing import Any

from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.parameter import Parameter


class CheckedParameters:
    """Mixin for an rclpy Node. Subclasses override ``_check_parameter`` (the value to apply, or
    TypeError/ValueError with the reason) and ``_apply_parameter``; read_only ones never reach them
    (rclpy refuses those, and wrong types, first). A change that must reach hardware and can fail there
    goes in ``_commit_parameters``: it runs once every value is checked, before any is applied, and a
    TypeError/ValueError from it refuses the whole set with its reason."""

    def _declare(self, name: str, default: Any, description: str, *, read_only: bool = True, **descriptor: Any):
        return self.declare_parameter(  # type: ignore[attr-defined]
            name, default, ParameterDescriptor(description=description, read_only=read_only, **descriptor)
        ).value

    def _watch_parameters(self) -> None:
        self.add_on_set_parameters_callback(self._on_set_parameters)  # type: ignore[attr-defined]

    def _check_parameter(self, name: str, value: Any) -> Any:
        return value

    def _apply_parameter(self, name: str, value: Any) -> None:
        pass

    def _commit_parameters(self, changes: dict[str, Any]) -> None:
        pass

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        changes = {}
        for p in params:  # all or nothing: check every value before applying any
            try:
                changes[p.name] = self._check_parameter(p.name, p.value)
            except (TypeError, ValueError) as exc:
                return SetParametersResult(successful=False, reason=f"{p.name}: {exc}")
        try:
            self._commit_parameters(changes)
        except (TypeError, ValueError) as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        for name, value in changes.items():
            self._apply_parameter(name, value)
            self.get_logger().info(f"{name} set to {value!r}")  # type: ignore[attr-defined]
        return SetParametersResult(successful=True)
