"""The training config: one frozen dataclass tree (env, policy, ppo, runner) loaded from YAML.

``config/train.yaml`` holds it; ``cassie-rl train key.sub=value`` overrides single fields, and
every checkpoint stores the resolved tree as ``config.yaml`` beside the weights.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path

from cassie_sim_ros.config import ConfigError, apply_overrides

from ..algorithms.ppo import PPOConfig
from ..envs.cassie_env import CassieEnvConfig
from ..policies.actor_critic import ActorCriticConfig

PACKAGE = "cassie_rl_ros"


@dataclass(frozen=True)
class RunnerConfig:
    """The training loop around PPO: batch size, seeding, evaluation, saving."""

    experiment_name: str = "cassie"
    """Name of the run; its files go to ``<log_dir>/<experiment_name>``."""
    log_dir: str = "runs"
    """Folder holding one sub-folder per run (relative paths start at the working directory)."""
    num_envs: int = 32
    """Simulations stepped in parallel during training."""
    num_steps_per_env: int = 96
    """Rollout length per iteration: each iteration collects num_envs x num_steps_per_env
    samples (the original collected about 3000 x 4)."""
    max_iterations: int = 1000
    """Total iterations of the run; a resumed run continues up to the same total."""
    seed: int = 0
    """Seeds the network initialisation, action noise, minibatch shuffles and the envs."""
    num_threads: int = 2
    """Threads stepping the batched simulations."""
    torch_threads: int = 1
    """torch intra-op threads (0: leave torch's default). The networks are small: more threads
    mostly compete with the simulation threads for the same cores."""
    save_interval: int = 50
    """Write a checkpoint every this many iterations (and always at the end or on a stop)."""
    keep_policy_interval: int = 0
    """Also keep the policy every this many iterations in ``policies/<iteration>/`` (what
    ``cassie-rl eval`` and ``cassie-rl ship --from`` read); 0 keeps none. Checkpoints a few
    iterations apart can differ a lot in the walking evaluation: evaluate the kept ones and
    ship the best."""
    eval_interval: int = 10
    """Measure the test return every this many iterations (and at the last); 0 never does,
    and then no best policy is kept."""
    eval_episodes: int = 8
    """Episodes (one per env of a separate evaluation env) in each test-return measurement.
    The evaluation env has the training env's config and a fixed seed, so every measurement
    starts from the same states and the deterministic policy (the mean action) is compared
    like for like across iterations."""
    prepass_steps: int = 0
    """Observations (over all envs) collected with noisy actions to fit the observation
    normaliser before training, like the original's 10k-step pre-pass; 0 skips it. Pair with
    ``ppo.normalizer_update: frozen`` to keep those statistics fixed afterwards."""
    prepass_noise_std: float = 0.2
    """Std of the Gaussian noise added to the initial policy's actions during the pre-pass."""
    init_from: str | None = None
    """Warm start: a saved policy (run dir, checkpoint dir or policy.safetensors) whose weights
    and normaliser statistics replace the fresh initialisation; no pre-pass then."""
    export_torchscript: bool = True
    """Also write each saved policy as TorchScript (``policy.pt``: raw obs -> action)."""

    def __post_init__(self) -> None:
        for name in ("num_envs", "num_steps_per_env", "num_threads", "eval_episodes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"runner.{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("max_iterations", "torch_threads", "save_interval", "keep_policy_interval",
                     "eval_interval", "prepass_steps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"runner.{name}: must be >= 0, got {getattr(self, name)}")
        if not self.prepass_noise_std >= 0:
            raise ConfigError(
                f"runner.prepass_noise_std: must be >= 0, got {self.prepass_noise_std}")
        if self.experiment_name in ("", ".", "..") or "/" in self.experiment_name:
            raise ConfigError(f"runner.experiment_name: must be a plain folder name, got "
                              f"{self.experiment_name!r}")


@dataclass(frozen=True)
class Stage:
    """Settings a run changes once it reaches an iteration: a recipe trained in stages."""

    iteration: int
    """Completed iterations after which ``overrides`` apply (the run saves a checkpoint there
    and resumes it with them, exactly as ``cassie-rl train --resume RUN overrides`` would)."""
    overrides: tuple[str, ...] = ()
    """``key.sub=value`` overrides, as on the command line."""

    def __post_init__(self) -> None:
        if not self.iteration > 0:
            raise ConfigError(f"iteration: must be > 0, got {self.iteration}")
        for item in self.overrides:
            key = item.split("=", 1)[0].strip()
            if key.startswith("stages") or key in ("runner.log_dir", "runner.experiment_name"):
                raise ConfigError(f"overrides: {key} cannot change in a stage (it names the run "
                                  "or its stages)")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on; stored with every checkpoint."""

    env: CassieEnvConfig = field(default_factory=CassieEnvConfig)
    """The task: simulation, observations, actions, rewards, terminations, randomisation."""
    policy: ActorCriticConfig = field(default_factory=ActorCriticConfig)
    """Actor and critic networks and the action noise."""
    ppo: PPOConfig = field(default_factory=PPOConfig)
    """PPO hyper-parameters."""
    runner: RunnerConfig = field(default_factory=RunnerConfig)
    """The loop around PPO."""
    stages: tuple[Stage, ...] = ()
    """Later stages of the run, by increasing iteration; each stage's overrides apply on top
    of the config the previous stage ended with."""

    def __post_init__(self) -> None:
        iterations = [stage.iteration for stage in self.stages]
        if iterations != sorted(set(iterations)):
            raise ConfigError(f"stages: iterations must increase, got {iterations}")
        config = self
        for index, stage in enumerate(self.stages):
            try:  # every stage's overrides must fit before hours of training, not after
                config = apply_overrides(dataclasses.replace(config, stages=()), stage.overrides)
            except ConfigError as err:
                raise ConfigError(f"stages[{index}]: {err}") from None

    def next_stage(self, iteration: int) -> Stage | None:
        """The first stage that starts after ``iteration`` completed iterations."""
        return next((stage for stage in self.stages if stage.iteration > iteration), None)

    @property
    def run_dir(self) -> Path:
        """``<runner.log_dir>/<runner.experiment_name>``."""
        return Path(self.runner.log_dir) / self.runner.experiment_name


def default_config_path() -> Path:
    """``config/train.yaml`` of this package: the source checkout's, else the installed one.

    A source checkout or editable install has it next to the package; an installed package
    (colcon, pip) has it in ``<prefix>/share/cassie_rl_ros/config``, which the ament index
    finds in a ROS workspace and ``sys.prefix`` in a plain venv.
    """
    candidates = [Path(__file__).resolve().parents[2] / "config" / "train.yaml"]
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory(PACKAGE)) / "config" / "train.yaml")
    except Exception:  # not installed, no ament index, or no AMENT_PREFIX_PATH: try the next
        pass
    candidates.append(Path(sys.prefix) / "share" / PACKAGE / "config" / "train.yaml")
    for path in candidates:
        if path.is_file():
            return path
    raise ConfigError(
        "no default config/train.yaml found (looked in "
        + ", ".join(str(p) for p in candidates)
        + "); pass --config PATH"
    )
