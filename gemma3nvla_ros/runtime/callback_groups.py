"""rclpy.callback_groups: which callbacks an executor may run concurrently."""
from __future__ import annotations

import threading


class CallbackGroup:
    def __init__(self):
        self.entities: list = []
        self._lock = threading.Lock()

    def add_entity(self, entity) -> None:
        self.entities.append(entity)

    def has_entity(self, entity) -> bool:
        return entity in self.entities

    def can_execute(self, entity) -> bool:
        raise NotImplementedError

    def beginning_execution(self, entity) -> bool:
        raise NotImplementedError

    def ending_execution(self, entity) -> None:
        raise NotImplementedError


class ReentrantCallbackGroup(CallbackGroup):
    """Any number of its callbacks may run at the same time."""

    def can_execute(self, entity) -> bool:
        return True

    def beginning_execution(self, entity) -> bool:
        return True

    def ending_execution(self, entity) -> None:
        pass


class MutuallyExclusiveCallbackGroup(CallbackGroup):
    """At most one of its callbacks runs at a time."""

    def __init__(self):
        super().__init__()
        self._active = None

    def can_execute(self, entity) -> bool:
        with self._lock:
            return self._active is None

    def beginning_execution(self, entity) -> bool:
        with self._lock:
            if self._active is None:
                self._active = entity
                return True
            return False

    def ending_execution(self, entity) -> None:
        with self._lock:
            self._active = None
