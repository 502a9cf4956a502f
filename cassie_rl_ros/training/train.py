"""``cassie-rl train``: train a policy with PPO from a YAML config.

    cassie-rl train [--config config/train.yaml] [key.sub=value ...]
    cassie-rl train --resume runs/walk [runner.max_iterations=2000]
    cassie-rl train --init-from runs/stand/best runner.experiment_name=walk

Ctrl-C finishes the current iteration, saves a checkpoint and exits; a second Ctrl-C aborts
at once (saving the last completed iteration unless it lands in the middle of an update).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from cassie_sim_ros.config import ConfigError, load_yaml

from .checkpoint import CONFIG_FILE, CheckpointError, recover_dir
from .config import TrainConfig, default_config_path
from .runner import EnvFactory, OnPolicyRunner, TrainingDivergedError

EXIT_BAD_CONFIG = 2
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cassie-rl train",
        description="Train a Cassie policy with PPO. Files go to <runner.log_dir>/"
        "<runner.experiment_name>: checkpoint/, best/, metrics.jsonl, tensorboard/.",
    )
    parser.add_argument("--config", type=Path, metavar="PATH",
                        help="training config YAML (default: the package's config/train.yaml)")
    parser.add_argument("--resume", type=Path, metavar="RUN_DIR",
                        help="continue the run in RUN_DIR from its checkpoint, with its saved "
                        "config plus the overrides given here")
    parser.add_argument("--init-from", metavar="POLICY",
                        help="warm start from a saved policy (run folder, checkpoint or best/ "
                        "folder, or policy.safetensors); sets runner.init_from")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value",
                        help="config overrides, values in YAML (e.g. ppo.lr=3e-4)")
    return parser


def resolve_config(config: str | Path | None, overrides: Sequence[str],
                   resume: str | Path | None = None,
                   init_from: str | None = None) -> tuple[TrainConfig, Path]:
    """The run's config and folder, as the CLI and the ROS node both build them.

    A resumed run starts from the config saved in its checkpoint, so only what the overrides
    change differs. Raises ConfigError naming the bad key.
    """
    if resume:
        if config:
            raise ConfigError("give either a config or a run to resume, not both (a resumed "
                              "run uses its saved config; change it with overrides)")
        run_dir = Path(resume)
        recover_dir(run_dir / "checkpoint")
        path = run_dir / "checkpoint" / CONFIG_FILE
        if not path.is_file():
            raise ConfigError(f"cannot resume {run_dir}: {path} does not exist")
        cfg = load_yaml(TrainConfig, path, list(overrides))
    else:
        cfg = load_yaml(TrainConfig, config or default_config_path(), list(overrides))
        run_dir = cfg.run_dir
    if init_from:
        cfg = dataclasses.replace(cfg, runner=dataclasses.replace(cfg.runner, init_from=init_from))
    return cfg, run_dir


def cassie_env_factory() -> EnvFactory:
    from ..envs.cassie_env import make_env

    return make_env


class StagedTraining:
    """A run through its config's ``stages``: each stage ends with a checkpoint, and the next
    resumes it with its overrides (what ``--resume RUN overrides`` does by hand), so the run's
    ``history.jsonl`` records every change. ``runner`` is the current stage's runner."""

    def __init__(self, cfg: TrainConfig, make_env: EnvFactory, run_dir: Path, resume: bool,
                 **runner_kwargs):
        self.make_env, self.run_dir, self.runner_kwargs = make_env, Path(run_dir), runner_kwargs
        self.runner = OnPolicyRunner(cfg, make_env, run_dir, resume=resume, **runner_kwargs)
        self._stop = False

    def request_stop(self) -> None:
        self._stop = True
        self.runner.request_stop()

    @property
    def stop_requested(self) -> bool:
        return self._stop

    def learn(self) -> dict[str, float]:
        """Train to ``runner.max_iterations`` through every stage; return the last metrics."""
        while True:
            stage = self.runner.cfg.next_stage(self.runner.iteration)
            metrics = self.runner.learn(until=stage.iteration if stage else None)
            if stage is None or self._stop or self.runner.iteration < stage.iteration:
                return metrics
            self.runner.close()
            cfg, _ = resolve_config(None, list(stage.overrides), resume=self.run_dir)
            self.runner = OnPolicyRunner(cfg, self.make_env, self.run_dir, resume=True,
                                         **self.runner_kwargs)
            if self._stop:  # asked to stop while the next stage was being set up
                self.runner.request_stop()

    def close(self) -> None:
        self.runner.close()


@contextlib.contextmanager
def stop_on_sigint(runner: OnPolicyRunner | StagedTraining) -> Iterator[None]:
    """First Ctrl-C (or SIGTERM): stop after this iteration and save. Second: KeyboardInterrupt."""

    def handle(signum, frame):
        if runner.stop_requested:
            raise KeyboardInterrupt
        runner.request_stop()
        print("\nstopping after this iteration and saving a checkpoint "
              "(Ctrl-C again to abort now)", file=sys.stderr, flush=True)

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None, make_env: EnvFactory | None = None) -> int:
    """Run ``cassie-rl train``; returns the exit code. ``make_env`` defaults to the Cassie env."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        cfg, run_dir = resolve_config(args.config, args.overrides, args.resume, args.init_from)
        training = StagedTraining(cfg, make_env or cassie_env_factory(), run_dir,
                                  resume=args.resume is not None)
    except (ConfigError, CheckpointError) as err:
        print(f"cassie-rl train: error: {err}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    runner = training.runner
    stages = "".join(f"; stage at iteration {s.iteration}: {' '.join(s.overrides)}"
                     for s in cfg.stages if s.iteration > runner.iteration)
    print(f"training in {runner.run_dir} from iteration {runner.iteration} to "
          f"{cfg.runner.max_iterations} ({cfg.runner.num_envs} envs x "
          f"{cfg.runner.num_steps_per_env} steps per iteration){stages}", flush=True)
    try:
        with stop_on_sigint(training):
            training.learn()
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except (TrainingDivergedError, ConfigError, CheckpointError) as err:
        print(f"cassie-rl train: error: {err}", file=sys.stderr)
        return 1
    finally:
        training.close()
    runner = training.runner
    print(f"saved {runner.run_dir / 'checkpoint'} at iteration {runner.iteration}"
          + (f"; best test return {runner.best_test_return:.3f} in {runner.run_dir / 'best'}"
             if runner.best_test_return is not None else ""), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
