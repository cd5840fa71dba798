"""rclpy.executors: SingleThreadedExecutor, MultiThreadedExecutor.

One thread waits (a Cyclone waitset over every reader's read condition plus a guard condition for
wake-ups; the GIL is released while waiting) and then takes all available samples into the entities'
queues, so Cyclone's own threads never run Python callbacks. Ready work (one sample per subscription,
one request per service, due timers, triggered guard conditions, pending tasks) is collected into a
batch and executed in order — inline (single-threaded) or on a thread pool (multi-threaded), where
callback groups decide what may run concurrently (an entity whose group is busy is skipped and picked
up after the group frees, which wakes the waiting thread).
"""
from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional

from gemma3nvla_ros.runtime.callback_groups import ReentrantCallbackGroup
from gemma3nvla_ros.runtime.context import Context, default_context
from gemma3nvla_ros.runtime.dds import GuardCondition as DdsGuard, WaitSet
from gemma3nvla_ros.runtime.futures import Future, Task

# While waiting on the main thread, wake at least this often so Python can run signal handlers
# (Ctrl-C): a thread blocked inside a C call never sees them. Timers are still woken exactly.
_MAIN_THREAD_MAX_WAIT_NS = 100_000_000


class ExternalShutdownException(Exception):
    """The context was shut down (e.g. SIGTERM, rclpy.shutdown()) while spinning."""


class ShutdownException(Exception):
    pass


class TimeoutException(Exception):
    pass


class ConditionReachedException(Exception):
    pass


class _Work:
    __slots__ = ("entity", "group", "fn", "node", "item")

    def __init__(self, entity, group, fn: Callable[[], None], node=None, item=None):
        self.entity = entity
        self.group = group
        self.fn = fn
        self.node = node  # None for tasks
        self.item = item  # the taken sample/request, for subscriptions and services


class Executor:
    def __init__(self, *, context: Optional[Context] = None):
        self._context = context or default_context()
        self._nodes: list = []
        self._nodes_lock = threading.RLock()
        self._tasks: list[Task] = []
        self._batch: list[_Work] = []
        self._waitset: Optional[WaitSet] = None
        self._guard: Optional[DdsGuard] = None
        self._generation = None
        self._readers: dict[int, object] = {}
        self._wait_lock = threading.Lock()
        self._wake_pending = False
        self._is_shutdown = False
        self._context._add_waker(self)

    @property
    def context(self) -> Context:
        return self._context

    # --- nodes ---------------------------------------------------------------------------------------
    def add_node(self, node) -> bool:
        with self._nodes_lock:
            if node in self._nodes:
                return False
            self._nodes.append(node)
            node._set_executor(self)
        self.wake()
        return True

    def remove_node(self, node) -> None:
        with self._nodes_lock:
            if node in self._nodes:
                self._nodes.remove(node)
                node._set_executor(None)
                self._unbatch(node)
        self.wake()

    def _unbatch(self, node) -> None:
        """Work collected for ``node`` but not run yet must not run while spinning other nodes (rclpy
        only executes callbacks of the executor's nodes): taken samples/requests go back to the front
        of their entity's queue and triggered guard conditions stay triggered, for the node's next spin."""
        keep = []
        for w in self._batch:
            if w.node is not node:
                keep.append(w)
            elif w.item is not None:
                with w.entity._qlock:
                    w.entity._queue.appendleft(w.item)
            elif hasattr(w.entity, "_triggered"):  # a guard condition
                w.entity._triggered = True
        self._batch = keep

    def get_nodes(self) -> list:
        with self._nodes_lock:
            return list(self._nodes)

    def create_task(self, callback, *args, **kwargs) -> Task:
        task = Task(callback, args, kwargs, executor=self)
        with self._nodes_lock:
            self._tasks.append(task)
        self.wake()
        return task

    def wake(self) -> None:
        """Something changed that the waiting thread must look at. Only a thread that is (about to
        be) blocked needs the guard condition; otherwise the next collect sees the change anyway, and
        triggering would make the next wait return at once (a busy loop with rclpy.spin_once, which
        adds and removes the node on every call)."""
        self._wake_pending = True
        if self._wait_lock.locked():
            g = self._guard
            if g is not None:
                try:
                    g.trigger()
                except Exception:
                    pass

    def shutdown(self, timeout_sec: Optional[float] = None) -> bool:
        self._is_shutdown = True
        with self._nodes_lock:
            for n in list(self._nodes):
                n._set_executor(None)
            self._nodes.clear()
        self.wake()
        return True

    # --- waiting -------------------------------------------------------------------------------------
    def _ensure_waitset(self) -> None:
        if self._waitset is None:
            part = self._context.participant()
            self._waitset = WaitSet(part.handle)
            self._guard = DdsGuard(part.handle)
        gen = tuple((id(n), n._generation) for n in self.get_nodes())
        if gen != self._generation:
            readers: dict[int, object] = {}
            for n in self.get_nodes():
                for e in n.subscriptions + n.services + n.clients:
                    readers[e.reader.read_condition] = e
            ents = {c: c for c in readers}
            ents[self._guard.handle] = self._guard.handle
            self._waitset.set_entities(ents)
            self._readers = readers
            self._generation = gen

    def _timeout_ns(self, timeout_sec: Optional[float]) -> Optional[int]:
        t = None if timeout_sec is None or timeout_sec < 0 else int(timeout_sec * 1e9)
        for n in self.get_nodes():
            for tm in n.timers:
                if tm.clock.ros_time_is_active:
                    continue  # sim time: the /clock subscription wakes us
                left = tm.time_until_next_call()
                if left is not None:
                    t = max(0, left) if t is None else min(t, max(0, left))
        if threading.current_thread() is threading.main_thread():
            t = _MAIN_THREAD_MAX_WAIT_NS if t is None else min(t, _MAIN_THREAD_MAX_WAIT_NS)
        return t

    def _wait_and_take(self, timeout_sec: Optional[float]) -> None:
        """Block until something may be ready (or timeout), then move samples into entity queues."""
        with self._wait_lock:
            self._ensure_waitset()
            # a change between the last collect and taking the lock must not be slept through
            timeout_ns = 0 if self._wake_pending else self._timeout_ns(timeout_sec)
            triggered = self._waitset.wait(timeout_ns)
            if self._guard is not None:
                self._guard.take()
            for cond in triggered:
                ent = self._readers.get(cond)
                if ent is not None:
                    try:
                        ent.drain()
                    except Exception as exc:  # a destroyed entity between wait and take
                        if ent in self._readers.values():
                            self._log_error(f"take failed: {exc!r}")

    def _log_error(self, msg: str) -> None:
        from gemma3nvla_ros.runtime.rcutils_logger import get_logger
        get_logger("rclpy.executor").error(msg, throttle_duration_sec=5.0)

    # --- collecting ready work -----------------------------------------------------------------------
    def _collect(self, check_groups: bool, limit: Optional[int] = None) -> list[_Work]:
        self._wake_pending = False
        work: list[_Work] = []
        full = (lambda: False) if limit is None else (lambda: len(work) >= limit)
        claimed: set[int] = set()  # exclusive groups already given work in this batch

        def allowed(entity, group) -> bool:
            if not check_groups:
                return True
            if id(group) in claimed or not group.can_execute(entity):
                return False
            if not isinstance(group, ReentrantCallbackGroup):
                claimed.add(id(group))
            return True

        with self._nodes_lock:
            tasks = [t for t in self._tasks if not t.done()]
            self._tasks = tasks
        for t in tasks:
            if t.ready():
                work.append(_Work(t, None, t))
        for n in self.get_nodes():
            if full():
                break
            for tm in n.timers:
                if full():
                    break
                if tm.callback is not None and tm.is_ready() and allowed(tm, tm.callback_group) and tm._take():
                    work.append(_Work(tm, tm.callback_group, self._timer_fn(tm), n))
            for e in (*n.subscriptions, *n.services):  # both hold TakenSamples: one sample per callback
                if full():
                    break
                if e.has_pending() and allowed(e, e.callback_group):
                    item = e.pop()
                    if item is not None:
                        work.append(_Work(e, e.callback_group, _bind(e.deliver, item), n, item))
            for g in n.guards:
                if full():
                    break
                if g._triggered and allowed(g, g.callback_group) and g._take() and g.callback is not None:
                    work.append(_Work(g, g.callback_group, self._wrap_callback(g.callback), n))
        return work

    def _timer_fn(self, timer) -> Callable[[], None]:
        def run():
            out = timer.callback()
            self._maybe_coroutine(out)
        return run

    def _wrap_callback(self, cb) -> Callable[[], None]:
        def run():
            self._maybe_coroutine(cb())
        return run

    def _maybe_coroutine(self, out) -> None:
        if hasattr(out, "send") and hasattr(out, "throw"):
            task = Task(lambda: out, executor=self)
            with self._nodes_lock:
                self._tasks.append(task)
            task()

    # --- spinning ------------------------------------------------------------------------------------
    def _check_ok(self) -> None:
        if not self._context.ok():
            raise ExternalShutdownException()

    def spin(self) -> None:
        while self._context.ok() and not self._is_shutdown:
            self.spin_once()
        if not self._is_shutdown:
            self._check_ok()

    def spin_once(self, timeout_sec: Optional[float] = None) -> None:
        raise NotImplementedError

    def spin_until_future_complete(self, future: Future, timeout_sec: Optional[float] = None) -> None:
        future._set_executor(self)
        deadline = None if timeout_sec is None or timeout_sec < 0 else time.monotonic() + timeout_sec
        while self._context.ok() and not future.done() and not self._is_shutdown:
            if deadline is None:
                self.spin_once(None)
            else:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self.spin_once(left)

    def spin_once_until_future_complete(self, future: Future, timeout_sec: Optional[float] = None) -> None:
        future._set_executor(self)
        self.spin_once(timeout_sec)

    def _run(self, w: _Work) -> None:
        try:
            w.fn()
        except (KeyboardInterrupt, SystemExit, ExternalShutdownException):
            raise
        except Exception:
            # rclpy propagates callback exceptions out of spin(); do the same
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shutdown()

    def __del__(self):  # pragma: no cover - best effort cleanup
        try:
            if self._waitset is not None and self._context._participant is not None:
                self._waitset.close()
                self._guard.close()
        except Exception:
            pass


def _bind(fn, item):
    return lambda: fn(item)


class SingleThreadedExecutor(Executor):
    def spin_once(self, timeout_sec: Optional[float] = None) -> None:
        self._check_ok()
        if not self._batch:
            # take what DDS already has (non-blocking) so busy timers cannot starve subscriptions
            self._wait_and_take(0.0)
            self._batch = self._collect(check_groups=False)
            if not self._batch:
                self._wait_and_take(timeout_sec)
                self._check_ok()
                self._batch = self._collect(check_groups=False)
        if self._batch:
            w = self._batch.pop(0)
            self._run(w)


class MultiThreadedExecutor(Executor):
    def __init__(self, num_threads: Optional[int] = None, *, context: Optional[Context] = None):
        super().__init__(context=context)
        if num_threads is None:
            num_threads = os.cpu_count() or 2
        self._num_threads = max(1, int(num_threads))
        self._pool = ThreadPoolExecutor(max_workers=self._num_threads, thread_name_prefix="executor")
        self._errors: list[BaseException] = []
        self._inflight = 0
        self._inflight_lock = threading.Lock()

    def spin_once(self, timeout_sec: Optional[float] = None) -> None:
        self._check_ok()
        if self._errors:
            raise self._errors.pop(0)
        # never take more work than there are free threads: what stays ready is picked up when a
        # callback finishes (which wakes the waitset), so nothing queues up behind busy threads
        free = self._num_threads - self._inflight
        if free > 0:
            self._wait_and_take(0.0)  # non-blocking take first, as in the single-threaded executor
        work = self._collect(check_groups=True, limit=free) if free > 0 else []
        if not work:
            self._wait_and_take(timeout_sec)
            self._check_ok()
            free = self._num_threads - self._inflight
            work = self._collect(check_groups=True, limit=free) if free > 0 else []
        for w in work:
            self._submit(w)

    def _submit(self, w: _Work) -> None:
        group = w.group
        if group is not None:
            # cannot fail: only this thread dispatches, and _collect gave each exclusive group one item
            group.beginning_execution(w.entity)

        def run():
            try:
                w.fn()
            except BaseException as exc:  # surfaced from spin() like rclpy
                self._errors.append(exc)
            finally:
                if group is not None:
                    group.ending_execution(w.entity)
                with self._inflight_lock:
                    self._inflight -= 1
                self.wake()
        with self._inflight_lock:
            self._inflight += 1
        try:
            self._pool.submit(run)
        except RuntimeError:  # pool shut down (executor shutdown / interpreter exit)
            with self._inflight_lock:
                self._inflight -= 1
            if group is not None:
                group.ending_execution(w.entity)

    def shutdown(self, timeout_sec: Optional[float] = None) -> bool:
        super().shutdown(timeout_sec)
        self._pool.shutdown(wait=timeout_sec is None or timeout_sec > 0, cancel_futures=True)
        return True
