"""rclpy.task.Future / Task: results of service calls and coroutine callbacks."""
from __future__ import annotations

import threading
from typing import Any, Callable, Optional


class Future:
    def __init__(self, *, executor=None):
        self._state = "pending"
        self._result: Any = None
        self._exception: Optional[BaseException] = None
        self._callbacks: list[Callable[["Future"], None]] = []
        self._lock = threading.Lock()
        self._event = threading.Event()
        self._executor = executor

    def done(self) -> bool:
        return self._state != "pending"

    def cancelled(self) -> bool:
        return self._state == "cancelled"

    def cancel(self) -> None:
        self._finish("cancelled")

    def result(self) -> Any:
        if self._exception is not None:
            raise self._exception
        return self._result

    def exception(self) -> Optional[BaseException]:
        return self._exception

    def set_result(self, result: Any) -> None:
        with self._lock:
            self._result = result
        self._finish("finished")

    def set_exception(self, exception: BaseException) -> None:
        with self._lock:
            self._exception = exception
        self._finish("finished")

    def _finish(self, state: str) -> None:
        with self._lock:
            if self._state != "pending":
                return
            self._state = state
            callbacks, self._callbacks = self._callbacks, []
        self._event.set()
        for cb in callbacks:
            self._run_callback(cb)
        ex = self._executor
        if ex is not None:
            ex.wake()

    def _run_callback(self, cb) -> None:
        try:
            cb(self)
        except Exception as exc:  # rclpy logs and continues
            import sys
            sys.stderr.write(f"Future done callback raised: {exc!r}\n")

    def add_done_callback(self, callback: Callable[["Future"], None]) -> None:
        with self._lock:
            if self._state == "pending":
                self._callbacks.append(callback)
                return
        self._run_callback(callback)

    def _set_executor(self, executor) -> None:
        self._executor = executor

    def wait(self, timeout: Optional[float] = None) -> bool:
        return self._event.wait(timeout)

    def __await__(self):
        while not self.done():
            yield self  # lets the Task know what it waits for (resumed when this completes)
        return self.result()


class Task(Future):
    """Runs a coroutine step by step on an executor; done when the coroutine returns."""

    def __init__(self, handler, args=(), kwargs=None, executor=None):
        super().__init__(executor=executor)
        self._handler = handler
        self._args = args
        self._kwargs = kwargs or {}
        self._coro = None
        self._awaiting: Optional[Future] = None
        self._running = threading.Lock()

    def ready(self) -> bool:
        """Worth running: not started yet, or the future it awaits has completed."""
        a = self._awaiting
        return not self.done() and (a is None or a.done())

    def __call__(self) -> None:
        if self.done() or not self._running.acquire(blocking=False):
            return
        try:
            if self._coro is None:
                out = self._handler(*self._args, **self._kwargs)
                if hasattr(out, "send") and hasattr(out, "throw"):
                    self._coro = out
                else:
                    self.set_result(out)
                    return
            try:
                awaited = self._coro.send(None)
                self._awaiting = awaited if isinstance(awaited, Future) else None
                if self._awaiting is not None and self._awaiting._executor is None:
                    self._awaiting._executor = self._executor
            except StopIteration as stop:
                self.set_result(stop.value)
            except Exception as exc:
                self.set_exception(exc)
        finally:
            self._running.release()
