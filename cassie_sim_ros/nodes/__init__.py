"""Thin rclpy nodes around the simulator (``sim_node``)."""
