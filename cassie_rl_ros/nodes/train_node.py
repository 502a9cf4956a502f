"""``train_node``: the training runner of ``cassie-rl train`` as a ROS 2 node.

    ros2 launch cassie_rl_ros train.launch.py overrides:="runner.num_envs=16 ppo.lr=3e-4"
    ros2 run cassie_rl_ros train_node --ros-args -p resume:=runs/walk

Parameters (read once at start):

* ``config``: training config YAML; '' = the package's config/train.yaml.
* ``overrides``: ``key.sub=value`` overrides, a string array or one space-separated string.
* ``resume``: a run folder to continue; '' = a new run.
* ``init_from``: a saved policy to warm start from; '' = none.

Publishes each iteration's metrics on ``cassie/train/metrics`` as ``std_msgs/String`` holding
one JSON object, the same keys as the run's metrics.jsonl (NaN as null). JSON in a String
rather than ``diagnostic_msgs/KeyValue`` pairs: the keys vary with the env's reward terms, and
``ros2 topic echo`` or any subscriber gets numbers back with one ``json.loads``. The topic is
reliable and transient-local with the last ``METRICS_HISTORY`` messages kept, so a monitor that
subscribes late with transient-local durability still gets the recent curve.

Training runs in a background thread; the main thread spins. SIGINT or SIGTERM finishes the
current iteration, saves a checkpoint and exits 0; the node also exits when training ends.
"""

from __future__ import annotations

import json
import shlex
import signal
import sys
import threading
import traceback

import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.duration import Duration
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from std_msgs.msg import String

from cassie_sim_ros.config import ConfigError

from ..training.checkpoint import CheckpointError
from ..training.progress import json_safe
from ..training.train import StagedTraining, cassie_env_factory, resolve_config

METRICS_TOPIC = "cassie/train/metrics"
METRICS_HISTORY = 100
METRICS_QOS = QoSProfile(depth=METRICS_HISTORY, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)


class TrainNode(Node):
    def __init__(self):
        super().__init__("train_node")
        config = self.declare_parameter("config", "").value
        # Dynamic typing: a launch argument arrives as one string, `-p overrides:=[a=1,b=2]`
        # as a string array.
        overrides = self.declare_parameter(
            "overrides", "", ParameterDescriptor(dynamic_typing=True)).value
        resume = self.declare_parameter("resume", "").value
        init_from = self.declare_parameter("init_from", "").value
        overrides = shlex.split(overrides) if isinstance(overrides, str) else list(overrides)
        cfg, run_dir = resolve_config(config or None, overrides, resume or None, init_from or None)
        self.metrics_pub = self.create_publisher(String, METRICS_TOPIC, METRICS_QOS)
        self.training = StagedTraining(cfg, cassie_env_factory(), run_dir, resume=bool(resume),
                                       on_iteration=self.publish, verbose=False)
        self.failed = False
        self.thread = threading.Thread(target=self.train, name="training", daemon=True)
        self.get_logger().info(
            f"training in {run_dir} from iteration {self.training.runner.iteration} to "
            f"{cfg.runner.max_iterations}; metrics on {self.metrics_pub.topic_name}")

    def train(self):
        try:
            self.training.learn()
        except Exception:
            self.failed = True
            self.get_logger().error(f"training failed:\n{traceback.format_exc()}")

    def publish(self, metrics: dict[str, float]):
        """Runner callback (training thread): one message and one log line per iteration."""
        self.metrics_pub.publish(String(data=json.dumps(json_safe(metrics))))
        test = metrics.get("return/test")
        self.get_logger().info(
            f"iteration {metrics['iteration']}/{self.training.runner.cfg.runner.max_iterations}: "
            f"batch return {metrics['return/batch']:.3f}"
            + (f", test return {test:.3f}" if test is not None else "")
            + f", {metrics['perf/steps_per_s']:.0f} steps/s")


def main(args: list[str] | None = None) -> int:
    """Run the node; ``args`` is the argument list without the program name (default: sys.argv)."""
    argv = list(sys.argv[1:] if args is None else args)
    # Our own SIGINT handling: rclpy's would shut the context down mid-iteration.
    with rclpy.init(args=["train_node", *argv], signal_handler_options=SignalHandlerOptions.NO):
        try:
            node = TrainNode()
        except (ConfigError, CheckpointError) as err:
            print(f"train_node: error: {err}", file=sys.stderr)
            return 2

        def stop(signum, frame):
            node.get_logger().info("stopping after this iteration and saving a checkpoint")
            node.training.request_stop()

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        node.thread.start()
        while node.thread.is_alive():
            executor.spin_once(timeout_sec=0.1)
        # Let the subscribers acknowledge the last metrics before the publisher goes away.
        node.metrics_pub.wait_for_all_acked(Duration(seconds=2.0))
        node.training.close()
        node.destroy_node()
        return 1 if node.failed else 0


if __name__ == "__main__":
    sys.exit(main())
