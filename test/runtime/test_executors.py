"""Executors, callback groups, futures, shutdown and signals."""
from __future__ import annotations

import signal
import threading
import time

import pytest


def test_multithreaded_executor_respects_callback_groups(rclpy, wait_until):
    from gemma3nvla_ros.ros import MultiThreadedExecutor, MutuallyExclusiveCallbackGroup, Node, ReentrantCallbackGroup
    node = Node("groups")
    lock = threading.Lock()
    active = {"excl": 0, "reent": 0}
    peak = {"excl": 0, "reent": 0}
    counts = {"excl": 0, "reent": 0}
    release = threading.Event()

    def make(kind):
        def cb():
            with lock:
                active[kind] += 1
                peak[kind] = max(peak[kind], active[kind])
            release.wait(0.2)  # hold the callback so overlaps are possible
            with lock:
                active[kind] -= 1
                counts[kind] += 1
        return cb

    excl, reent = MutuallyExclusiveCallbackGroup(), ReentrantCallbackGroup()
    for _ in range(2):
        node.create_timer(0.01, make("excl"), callback_group=excl)
        node.create_timer(0.01, make("reent"), callback_group=reent)
    ex = MultiThreadedExecutor(num_threads=4)
    ex.add_node(node)
    t = threading.Thread(target=ex.spin, daemon=True)
    t.start()
    try:
        assert wait_until(lambda: peak["reent"] >= 2 and counts["excl"] >= 4, 20)
        assert peak["excl"] == 1
    finally:
        release.set()
        ex.shutdown()
        t.join(5)


def test_future_and_spin_until_future_complete(rclpy):
    from gemma3nvla_ros.ros import Node
    from gemma3nvla_ros.runtime.futures import Future
    node = Node("futures")
    fut = Future()
    done = []
    fut.add_done_callback(lambda f: done.append(f.result()))
    node.create_timer(0.01, lambda: fut.done() or fut.set_result(42))
    rclpy.spin_until_future_complete(node, fut, timeout_sec=10)
    assert fut.done() and fut.result() == 42 and done == [42]
    never = Future()
    t0 = time.monotonic()
    rclpy.spin_until_future_complete(node, never, timeout_sec=0.2)
    assert not never.done() and time.monotonic() - t0 < 5


def test_spin_once_runs_only_callbacks_of_the_node_it_spins(rclpy, wait_until):
    """rclpy.spin_once(node) adds/removes the node on the global executor: work collected for a
    node must not run later while another node spins (e.g. after the first was destroyed), and a
    sample taken for it must still reach it on its next spin."""
    from gemma3nvla_ros.runtime.interfaces import std_msgs
    a = rclpy.create_node("batch_a")
    b = rclpy.create_node("batch_b")
    calls = []
    for i in range(3):
        a.create_timer(0.01, lambda i=i: calls.append(("timer", i)))
    got = []
    a.create_subscription(std_msgs.msg.String, "/batch_topic", lambda m: got.append(m.data), 10)
    pub = b.create_publisher(std_msgs.msg.String, "/batch_topic", 10)
    assert wait_until(lambda: pub.get_subscription_count() == 1)
    pub.publish(std_msgs.msg.String(data="hello"))
    time.sleep(0.2)
    rclpy.spin_once(a, timeout_sec=0.5)  # collects three timers and the sample, runs one
    assert len(calls) + len(got) == 1
    rclpy.spin_once(b, timeout_sec=0.05)
    rclpy.spin_once(b, timeout_sec=0.05)
    assert len(calls) + len(got) == 1  # nothing of a's ran while b was spun
    assert wait_until(lambda: got == ["hello"], 5, step=lambda: rclpy.spin_once(a, timeout_sec=0.05))
    a.destroy_node()
    before = list(calls)
    for _ in range(3):
        rclpy.spin_once(b, timeout_sec=0.05)
    assert calls == before
    b.destroy_node()


def test_coroutine_callbacks_await_service_calls(rclpy, wait_until):
    from gemma3nvla_ros.ros import Node, SingleThreadedExecutor, std_srvs
    node = Node("async_user")
    node.create_service(std_srvs.srv.Trigger, "/async_srv",
                        lambda req, resp: std_srvs.srv.Trigger.Response(success=True, message="awaited"))
    client = node.create_client(std_srvs.srv.Trigger, "/async_srv")
    assert client.wait_for_service(timeout_sec=10)
    results = []

    async def on_timer():
        timer.cancel()
        resp = await client.call_async(std_srvs.srv.Trigger.Request())
        results.append(resp.message)

    timer = node.create_timer(0.01, on_timer)
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    assert wait_until(lambda: results == ["awaited"], 10, lambda: ex.spin_once(timeout_sec=0.05))


def test_shutdown_from_another_thread_ends_spin(rclpy):
    from gemma3nvla_ros.ros import ExternalShutdownException, Node
    node = Node("stopper")
    threading.Timer(0.3, rclpy.shutdown).start()
    t0 = time.monotonic()
    with pytest.raises(ExternalShutdownException):
        rclpy.spin(node)
    assert time.monotonic() - t0 < 10 and not rclpy.ok()


SPINNER = """
import sys
from gemma3nvla_ros.ros import rclpy, Node, ExternalShutdownException
rclpy.init(args=sys.argv)
node = Node("spinner")
print("spinning", flush=True)
try:
    rclpy.spin(node)
except KeyboardInterrupt:
    print("KeyboardInterrupt ok=%s" % rclpy.ok(), flush=True)
except ExternalShutdownException:
    print("ExternalShutdownException", flush=True)
finally:
    node.destroy_node()
    rclpy.try_shutdown()
    print("clean exit", flush=True)
"""


@pytest.mark.parametrize("sig,expected", [(signal.SIGINT, "KeyboardInterrupt ok=False"),
                                          (signal.SIGTERM, "ExternalShutdownException")])
def test_signals_end_spin_like_rclpy(proc, sig, expected):
    p = proc(SPINNER)
    p.wait_for("spinning")
    time.sleep(0.2)  # let it enter spin()
    p.p.send_signal(sig)
    p.wait_for(expected, 15)
    p.wait_for("clean exit", 15)
    assert p.p.wait(15) == 0
