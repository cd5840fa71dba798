"""The ROS 2 nodes: thin rclpy nodes over the pure logic in control/, hardware/ and policy/; run.py starts
and stops every one of them."""
