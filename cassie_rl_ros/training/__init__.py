"""Training runs: config, the PPO runner loop, checkpoints and policy export."""

from .checkpoint import (CheckpointError, export_torchscript, load_checkpoint, load_ensemble,
                         load_policy, save_checkpoint)
from .config import RunnerConfig, TrainConfig, default_config_path
from .runner import OnPolicyRunner, TrainingDivergedError

__all__ = [
    "CheckpointError",
    "OnPolicyRunner",
    "RunnerConfig",
    "TrainConfig",
    "TrainingDivergedError",
    "default_config_path",
    "export_torchscript",
    "load_checkpoint",
    "load_ensemble",
    "load_policy",
    "save_checkpoint",
]
