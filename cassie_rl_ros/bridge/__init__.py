"""The hardware bridge without ROS: the robot's UDP wire format (``protocol``) and the
bridge logic (``core``)."""
