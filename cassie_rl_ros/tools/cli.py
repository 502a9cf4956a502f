"""``cassie-rl``: one command with a subcommand per feature.

Each feature registers itself with one line in ``COMMANDS``. Modules are imported only when their
subcommand runs, so ``cassie-rl --help`` stays fast and imports neither torch nor rclpy.
Everything after the subcommand name is handed, unparsed, to the feature's function, which parses
it itself (``cassie-rl train --help`` shows the training options).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

# name -> (one-line help, module, function). The function takes the remaining argv list (without
# a program name) and returns an exit code or None.
COMMANDS: dict[str, tuple[str, str, str]] = {
    'sim': ('run the MuJoCo Cassie simulator node', 'cassie_sim_ros.nodes.sim_node', 'main'),
    'policy': ('run a trained policy as a ROS node', 'cassie_rl_ros.nodes.policy_node', 'main'),
    'train': ('train a walking policy with PPO', 'cassie_rl_ros.training.train', 'main'),
    'eval': ('evaluate a checkpoint in simulation', 'cassie_rl_ros.training.evaluate', 'main'),
    'ship': ("package a run's policy with its log, curve and eval",
             'cassie_rl_ros.training.ship', 'main'),
    'render': ('render a policy rollout to video', 'cassie_rl_ros.tools.render', 'main'),
    'record': ('record a rollout to a ROS bag', 'cassie_rl_ros.tools.record', 'main'),
    'plot': ('plot topics from a ROS bag', 'cassie_rl_ros.tools.plot_bag', 'main'),
    'plot-run': ('plot learning curves of training runs', 'cassie_rl_ros.tools.plot_run',
                 'main'),
    'bridge': ('bridge ROS topics to the Cassie hardware', 'cassie_rl_ros.nodes.hardware_bridge',
               'main'),
    'robot-sim': ('emulate the robot side of the hardware bridge',
                  'cassie_rl_ros.tools.robot_emulator', 'main'),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='cassie-rl',
        formatter_class=lambda prog: argparse.HelpFormatter(prog, max_help_position=32),
        description='Train and run Cassie walking controllers. '
        "Run 'cassie-rl <command> --help' for a command's options.",
    )
    sub = parser.add_subparsers(dest='command', metavar='<command>')
    for name, (help_text, _, _) in COMMANDS.items():
        # add_help=False: --help after the command belongs to the command.
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def load(name: str) -> Callable[[list[str]], int | None] | None:
    """Import the function behind subcommand ``name``; None if its module is not there."""
    _, module_name, func_name = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Only the feature's own module (or a parent package) missing means "not available";
        # a missing dependency inside it (torch, rclpy, ...) is a real error and propagates.
        parts = module_name.split('.')
        if exc.name not in {'.'.join(parts[:i]) for i in range(1, len(parts) + 1)}:
            raise
        return None
    return getattr(module, func_name)


def run(name: str, argv: list[str]) -> int:
    func = load(name)
    if func is None:
        module_name = COMMANDS[name][1]
        print(f'cassie-rl {name}: not available in this version ({module_name} missing)',
              file=sys.stderr)
        return 2
    result = func(argv)
    return 0 if result is None else int(result)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # The first word that is not an option is the subcommand; the rest goes to it untouched.
    split = next((i for i, arg in enumerate(argv) if not arg.startswith('-')), len(argv))
    args = build_parser().parse_args(argv[:split + 1])
    if args.command is None:
        build_parser().print_help(sys.stderr)
        return 2
    return run(args.command, argv[split + 1:])


if __name__ == '__main__':
    sys.exit(main())
