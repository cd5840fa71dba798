"""Time, Duration, Clock, timers, and use_sim_time driven by /clock."""
from __future__ import annotations


def test_time_and_duration():
    from gemma3nvla_ros.ros import Duration, Time
    from gemma3nvla_ros.runtime.time import ClockType
    t = Time(seconds=1, nanoseconds=500_000_000)
    assert t.nanoseconds == 1_500_000_000 and t.seconds_nanoseconds() == (1, 500_000_000)
    m = t.to_msg()
    assert (m.sec, m.nanosec) == (1, 500_000_000)
    back = Time.from_msg(m)
    assert back.nanoseconds == t.nanoseconds and back.clock_type == ClockType.ROS_TIME
    d = Duration(seconds=0.25)
    assert (Time(nanoseconds=10, clock_type=ClockType.ROS_TIME) + d).nanoseconds == 250_000_010
    assert Time(seconds=2) - Time(seconds=1) == Duration(seconds=1)
    assert d.to_msg().nanosec == 250_000_000 and Duration.from_msg(d.to_msg()) == d


def test_node_clock_is_ros_time(rclpy):
    from gemma3nvla_ros.ros import Node
    from gemma3nvla_ros.runtime.time import ClockType
    node = Node("clock_user")
    now = node.get_clock().now()
    assert now.clock_type == ClockType.ROS_TIME and now.nanoseconds > 1_600_000_000 * 10**9


def test_timer_fires_on_wall_clock(rclpy, wait_until):
    from gemma3nvla_ros.ros import Node
    node = Node("ticker")
    ticks = []
    timer = node.create_timer(0.01, lambda: ticks.append(1))
    assert wait_until(lambda: len(ticks) >= 3, 10, lambda: rclpy.spin_once(node, timeout_sec=0.1))
    timer.cancel()
    n = len(ticks)
    for _ in range(5):
        rclpy.spin_once(node, timeout_sec=0.02)
    assert len(ticks) == n and timer.is_canceled()


def test_sim_time_follows_clock_and_drives_timers(rclpy, wait_until):
    from gemma3nvla_ros.ros import Node, Parameter, QoSProfile, SingleThreadedExecutor, rosgraph_msgs
    sim = Node("sim_user", parameter_overrides=[Parameter("use_sim_time", value=True)])
    assert sim.get_parameter("use_sim_time").value is True
    assert sim.get_clock().now().nanoseconds == 0  # no /clock yet
    stamps = []
    sim.create_timer(1.0, lambda: stamps.append(sim.get_clock().now().nanoseconds))
    player = Node("bag_player")
    clock_pub = player.create_publisher(rosgraph_msgs.msg.Clock, "/clock", QoSProfile(depth=1))
    ex = SingleThreadedExecutor()
    ex.add_node(sim)
    ex.add_node(player)
    sim_ns = [0]

    def advance():  # 0.25 s of sim time per step, no relation to the wall clock
        sim_ns[0] += 250_000_000
        msg = rosgraph_msgs.msg.Clock()
        msg.clock.sec, msg.clock.nanosec = divmod(sim_ns[0], 1_000_000_000)
        clock_pub.publish(msg)
        for _ in range(3):
            ex.spin_once(timeout_sec=0.02)

    assert wait_until(lambda: len(stamps) >= 3, 30, advance)
    # a 1 s timer on sim time fires at sim seconds 1, 2, 3 (give or take one /clock step)
    assert all(abs(s - (i + 1) * 1_000_000_000) <= 250_000_000 for i, s in enumerate(stamps[:3])), stamps
    assert sim.get_clock().now().nanoseconds >= 3_000_000_000
    # and turning sim time off returns to the wall clock
    assert sim.set_parameters([Parameter("use_sim_time", value=False)])[0].successful
    assert sim.get_clock().now().nanoseconds > 1_600_000_000 * 10**9
    ex.shutdown()
