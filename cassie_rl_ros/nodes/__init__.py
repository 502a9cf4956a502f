"""Thin rclpy nodes (policy, training, hardware bridge); each wraps a pure core object."""
