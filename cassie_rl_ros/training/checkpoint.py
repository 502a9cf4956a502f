"""Saving and loading policies and whole training runs, without pickle.

A saved policy is a folder with

* ``policy.safetensors``: the ActorCritic state_dict (actor, critic, log-std and the
  observation normalisers' statistics), with num_obs / num_actions / num_critic_obs in its
  metadata;
* ``config.yaml``: the TrainConfig it was trained with (the env config says what its
  observations mean);
* ``policy.pt`` (optional): the deterministic actor as TorchScript, see :func:`export_torchscript`.

A training checkpoint adds ``state.safetensors`` + ``state.json``: the optimiser state, the RNG
states, the env state and the runner's counters, split into tensors (safetensors) and the
structure with its plain numbers (JSON). ``manifest.json`` lists every file's size and SHA-256.

Folders are replaced atomically (:func:`write_dir_atomically`): a crash while saving leaves the
previous checkpoint, never a half-written one. Anything unreadable raises
:class:`CheckpointError` naming the file and the problem.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import shutil
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from cassie_sim_ros.config import ConfigError, dump_yaml, from_dict, to_dict

from ..policies.actor_critic import ActorCritic, EnsemblePolicy
from ..policies.normalizer import ObservationNormalizer
from .config import TrainConfig

POLICY_FILE = "policy.safetensors"
CONFIG_FILE = "config.yaml"
HISTORY_FILE = "history.jsonl"
KEPT_POLICIES = "policies"
"""A run's folder of policies kept every ``runner.keep_policy_interval`` iterations."""
"""In a run folder (not a checkpoint): one line per (re)start of the run."""
TRAINED_FORWARD_MAX = "trained_forward_max"
"""Policy metadata key: the forward command limit a curriculum had reached."""
STATE_TENSORS_FILE = "state.safetensors"
STATE_JSON_FILE = "state.json"
MANIFEST_FILE = "manifest.json"
TORCHSCRIPT_FILE = "policy.pt"
POLICY_FORMAT = "cassie_rl_ros.policy/1"
STATE_FORMAT = "cassie_rl_ros.train_state/1"


class CheckpointError(ValueError):
    """A checkpoint or policy file is missing, corrupt, or does not fit the config or env."""


# ------------------------------------------------------------------------------ atomic folders


def write_dir_atomically(target: str | Path, write: Callable[[Path], None]) -> Path:
    """Create folder ``target`` with ``write(tmp_dir)``, replacing any previous one atomically.

    ``write`` fills a temporary sibling folder; a manifest of sizes and SHA-256s is added and
    everything is fsynced before the swap. POSIX cannot rename a folder over a non-empty one, so
    the old folder is first renamed to ``.<name>.old``; if a crash leaves no ``target`` but that
    backup, :func:`recover_dir` (called on every load) puts it back.
    """
    target = Path(target)
    recover_dir(target)
    tmp = target.parent / f".{target.name}.tmp"
    old = target.parent / f".{target.name}.old"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    manifest = {
        path.name: {"bytes": path.stat().st_size, "sha256": _sha256(path)}
        for path in sorted(tmp.iterdir())
    }
    (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + "\n")
    for path in tmp.iterdir():
        _fsync(path)
    _fsync(tmp)
    if target.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(tmp, target)
    _fsync(target.parent)
    shutil.rmtree(old, ignore_errors=True)
    return target


def recover_dir(target: str | Path) -> None:
    """Undo an interrupted :func:`write_dir_atomically` swap (restore ``.<name>.old``)."""
    target = Path(target)
    old = target.parent / f".{target.name}.old"
    if not target.exists() and old.is_dir():
        os.replace(old, target)


def write_file_atomically(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    _fsync(tmp)
    os.replace(tmp, path)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_manifest(directory: Path, names: Sequence[str]) -> None:
    """Check ``names`` in ``directory`` against its manifest (if it has one)."""
    manifest_path = directory / MANIFEST_FILE
    if not manifest_path.is_file():
        return
    manifest = _read_json(manifest_path)
    for name in names:
        path = directory / name
        entry = manifest.get(name)
        if entry is None or not path.is_file():
            continue
        size = path.stat().st_size
        if size != entry["bytes"]:
            raise CheckpointError(
                f"{path}: corrupt or truncated: {size} bytes, the manifest says {entry['bytes']}"
            )
        if _sha256(path) != entry["sha256"]:
            raise CheckpointError(f"{path}: corrupt: its SHA-256 does not match {manifest_path}")


# ------------------------------------------------------------------------------ file readers


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: not readable JSON ({err})") from None


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    try:
        with safe_open(str(path), framework="pt") as f:
            return {key: f.get_tensor(key) for key in f.keys()}, dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a valid safetensors file ({err})") from None


def _read_config(path: Path) -> TrainConfig:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (the config saved with the policy)")
    try:
        return from_dict(TrainConfig, yaml.safe_load(path.read_text()))
    except (ConfigError, yaml.YAMLError) as err:
        raise CheckpointError(f"{path}: {err}") from None


# ------------------------------------------------------------------------------ policies


def save_policy(policy: ActorCritic, cfg: TrainConfig, directory: str | Path,
                torchscript: bool = False, trained_forward_max: float | None = None) -> None:
    """Write ``policy.safetensors`` and ``config.yaml`` (and ``policy.pt``) into ``directory``.

    ``trained_forward_max``: the fastest forward command a curriculum had reached, when below
    the config's range; :func:`load_policy` narrows the range to it (``config.yaml`` stays the
    training config, so that a resumed run keeps its curriculum). Not atomic by itself;
    :func:`write_dir_atomically` wraps it for checkpoints.
    """
    directory = Path(directory)
    metadata = {
        "format": POLICY_FORMAT,
        "num_obs": str(policy.num_obs),
        "num_actions": str(policy.num_actions),
        "num_critic_obs": "" if policy.num_critic_obs is None else str(policy.num_critic_obs),
    }
    if trained_forward_max is not None:
        metadata[TRAINED_FORWARD_MAX] = repr(float(trained_forward_max))
    state = {k: v.detach().cpu().contiguous() for k, v in policy.state_dict().items()}
    save_file(state, str(directory / POLICY_FILE), metadata=metadata)
    (directory / CONFIG_FILE).write_text(dump_yaml(cfg))
    if torchscript:
        export_torchscript(policy, directory / TORCHSCRIPT_FILE, cfg)


def find_policy_file(path: str | Path) -> Path:
    """``policy.safetensors`` for a file, a policy/checkpoint folder or a run folder."""
    path = Path(path)
    recover_dir(path)  # a folder caught between the two renames of a save
    if path.is_dir():
        recover_dir(path / "checkpoint")
        for candidate in (path / POLICY_FILE, path / "checkpoint" / POLICY_FILE):
            if candidate.is_file():
                return candidate
        raise CheckpointError(
            f"{path}: no {POLICY_FILE} in it or in {path / 'checkpoint'} (expected a run folder, "
            "a checkpoint or best/ folder, or a policy.safetensors file)"
        )
    if not path.is_file():
        raise CheckpointError(f"{path}: no such policy file or folder")
    return path


def _policy_sizes(meta: dict[str, str], path: Path) -> tuple[int, int, int | None]:
    if meta.get("format") != POLICY_FORMAT:
        raise CheckpointError(
            f"{path}: not a cassie_rl_ros policy (metadata format {meta.get('format')!r}, "
            f"expected {POLICY_FORMAT!r})"
        )
    try:
        critic = meta.get("num_critic_obs", "")
        return int(meta["num_obs"]), int(meta["num_actions"]), int(critic) if critic else None
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"{path}: bad size metadata ({err})") from None


def check_state_dict(
    module: nn.Module,
    state: dict[str, torch.Tensor],
    path: Path,
    keys: Callable[[str], bool] | None = None,
) -> None:
    """Raise if ``state`` lacks, adds, or reshapes tensors of ``module`` (only the keys for
    which ``keys(key)`` is true, when given)."""
    expected = {k: v for k, v in module.state_dict().items() if keys is None or keys(k)}
    given = {k: v for k, v in state.items() if keys is None or keys(k)}
    missing = sorted(set(expected) - set(given))
    if missing:
        raise CheckpointError(f"{path}: missing tensors {', '.join(missing)}")
    unexpected = sorted(set(given) - set(expected))
    if unexpected:
        raise CheckpointError(f"{path}: unexpected tensors {', '.join(unexpected)}")
    for key, value in expected.items():
        if tuple(given[key].shape) != tuple(value.shape):
            raise CheckpointError(
                f"{path}: tensor {key} has shape {tuple(given[key].shape)}, the config "
                f"expects {tuple(value.shape)} (policy sizes differ from the config's)"
            )


def _build_policy(state: dict[str, torch.Tensor], meta: dict[str, str], cfg: TrainConfig,
                  path: Path) -> ActorCritic:
    num_obs, num_actions, num_critic_obs = _policy_sizes(meta, path)
    policy = ActorCritic(num_obs, num_actions, cfg.policy, num_critic_obs)
    check_state_dict(policy, state, path)
    policy.load_state_dict(state)
    return policy


def load_policy(path: str | Path) -> tuple[ActorCritic, TrainConfig]:
    """Load a saved policy for deployment, evaluation or fine-tuning.

    ``path`` is a run folder (its latest checkpoint), a checkpoint or ``best/`` folder, or a
    ``policy.safetensors`` with its ``config.yaml`` beside it. The policy comes back in eval
    mode with its normalisers frozen (their statistics are part of the policy).
    """
    policy_file = find_policy_file(path)
    verify_manifest(policy_file.parent, [POLICY_FILE, CONFIG_FILE])
    cfg = _read_config(policy_file.parent / CONFIG_FILE)
    state, meta = _read_safetensors(policy_file)
    policy = _build_policy(state, meta, cfg, policy_file)
    cfg = _trained_commands(cfg, meta, policy_file)
    policy.eval()
    for module in policy.modules():
        if isinstance(module, ObservationNormalizer):
            module.frozen = True
    return policy, cfg


def _trained_commands(cfg: TrainConfig, meta: dict[str, str], path: Path) -> TrainConfig:
    """``cfg`` with the forward command range cut to what the policy was trained on."""
    if TRAINED_FORWARD_MAX not in meta:
        return cfg
    try:
        top = float(meta[TRAINED_FORWARD_MAX])
    except ValueError:
        raise CheckpointError(f"{path}: metadata {TRAINED_FORWARD_MAX}="
                              f"{meta[TRAINED_FORWARD_MAX]!r} is not a number") from None
    command = getattr(cfg.env, "command", None)
    if command is None or not math.isfinite(top):
        raise CheckpointError(f"{path}: metadata {TRAINED_FORWARD_MAX}={top!r} does not fit "
                              "its config")
    low, high = command.forward
    forward = (low, min(high, max(low, top)))
    return dataclasses.replace(cfg, env=dataclasses.replace(
        cfg.env, command=dataclasses.replace(command, forward=forward)))


def load_ensemble(paths: Sequence[str | Path]) -> tuple[EnsemblePolicy, list[TrainConfig]]:
    """Load several policies as one :class:`EnsemblePolicy` averaging their actions.

    The members must read the same observations: same sizes, and the same ``env.observation``
    config where their configs have one.
    """
    if not paths:
        raise ValueError("load_ensemble: no policy paths given")
    loaded = [load_policy(p) for p in paths]
    policies, configs = [p for p, _ in loaded], [c for _, c in loaded]
    layouts = [to_dict(getattr(c.env, "observation", None)) for c in configs]
    for path, policy, layout in zip(paths, policies, layouts, strict=True):
        if (policy.num_obs, policy.num_actions) != (policies[0].num_obs, policies[0].num_actions):
            raise CheckpointError(
                f"{path}: num_obs/num_actions {policy.num_obs}/{policy.num_actions} differ from "
                f"{paths[0]}'s {policies[0].num_obs}/{policies[0].num_actions}"
            )
        if layout != layouts[0]:
            raise CheckpointError(
                f"{path}: env.observation differs from {paths[0]}'s; the members would read "
                "different observations"
            )
    ensemble = EnsemblePolicy(policies)
    ensemble.eval()
    return ensemble, configs


# ------------------------------------------------------------------------------ TorchScript


class DeployedActor(nn.Module):
    """Raw observation -> deterministic action: the actor's normaliser, then its MLP."""

    def __init__(self, policy: ActorCritic) -> None:
        super().__init__()
        self.normalizer = copy.deepcopy(policy.normalizer)
        self.actor = copy.deepcopy(policy.actor)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.actor(self.normalizer(obs))


class DeployedEnsemble(nn.Module):
    """Mean of several :class:`DeployedActor` actions."""

    def __init__(self, members: Sequence[ActorCritic]) -> None:
        super().__init__()
        self.members = nn.ModuleList([DeployedActor(m) for m in members])

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        actions = [member(obs) for member in self.members]
        return torch.stack(actions).mean(dim=0)


def export_torchscript(policy: ActorCritic | EnsemblePolicy, path: str | Path,
                       cfg: TrainConfig | None = None) -> Path:
    """Write the deterministic actor (normaliser included) as a scripted TorchScript module.

    The file needs only torch to run: ``torch.jit.load(path)(obs)`` maps raw observations
    (batch, num_obs) float32 to actions (batch, num_actions). Nothing of the critic goes in.
    ``meta.json`` (sizes) and, with ``cfg``, ``config.yaml`` travel as extra files
    (``torch.jit.load(path, _extra_files={"config.yaml": ""})``).
    """
    path = Path(path)
    if isinstance(policy, EnsemblePolicy):
        module: nn.Module = DeployedEnsemble(list(policy.policies))
    else:
        module = DeployedActor(policy)
    module = module.cpu().eval()
    extra = {
        "meta.json": json.dumps(
            {"format": POLICY_FORMAT, "num_obs": policy.num_obs,
             "num_actions": policy.num_actions}
        )
    }
    if cfg is not None:
        extra["config.yaml"] = dump_yaml(cfg)
    tmp = path.with_name(f".{path.name}.tmp")
    # torch 2.13 marks torch.jit deprecated in favour of torch.export, but TorchScript is still
    # the format a plain libtorch/C++ or Python runtime on the robot loads.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*torch.jit")
        scripted = torch.jit.script(module)
        torch.jit.save(scripted, str(tmp), _extra_files=extra)
    os.replace(tmp, path)
    return path


# ------------------------------------------------------------------------------ training state


def encode_tree(obj: Any, tensors: dict[str, torch.Tensor], key: str = "") -> Any:
    """JSON-able skeleton of ``obj``; its tensors and arrays go to ``tensors`` under dotted keys.

    Handles what optimiser state_dicts, RNG states and env states contain: tensors, numpy
    arrays and scalars, dicts (also with int keys), lists, tuples, numbers, strings, None.
    """
    if isinstance(obj, torch.Tensor):
        tensors[key] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        tensors[key] = torch.from_numpy(np.ascontiguousarray(obj).copy())
        return {"__ndarray__": key}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        items = {str(k): encode_tree(v, tensors, f"{key}.{k}" if key else str(k))
                 for k, v in obj.items()}
        if all(isinstance(k, str) for k in obj):
            return items
        if not all(isinstance(k, int) for k in obj):
            raise TypeError(f"{key}: dict keys must be all str or all int")
        return {"__intkeys__": items}
    if isinstance(obj, tuple):
        return {"__tuple__": [encode_tree(v, tensors, f"{key}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [encode_tree(v, tensors, f"{key}.{i}") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"{key}: cannot store a {type(obj).__name__} in a checkpoint")


def decode_tree(obj: Any, tensors: dict[str, torch.Tensor], path: Path) -> Any:
    """Inverse of :func:`encode_tree`; ``path`` names the tensor file in errors."""
    if isinstance(obj, dict):
        if "__tensor__" in obj or "__ndarray__" in obj:
            key = obj.get("__tensor__", obj.get("__ndarray__"))
            if key not in tensors:
                raise CheckpointError(f"{path}: missing tensor {key!r}")
            return tensors[key] if "__tensor__" in obj else tensors[key].numpy()
        if "__tuple__" in obj:
            return tuple(decode_tree(v, tensors, path) for v in obj["__tuple__"])
        if "__intkeys__" in obj:
            return {int(k): decode_tree(v, tensors, path) for k, v in obj["__intkeys__"].items()}
        return {k: decode_tree(v, tensors, path) for k, v in obj.items()}
    if isinstance(obj, list):
        return [decode_tree(v, tensors, path) for v in obj]
    return obj


@dataclass
class Checkpoint:
    """A loaded training checkpoint."""

    directory: Path
    config: TrainConfig
    """The TrainConfig the run was saved with."""
    policy_state: dict[str, torch.Tensor]
    """ActorCritic state_dict, already checked against ``config.policy`` and the sizes."""
    num_obs: int
    num_actions: int
    num_critic_obs: int | None
    state: dict[str, Any]
    """What the runner saved: counters, optimiser state_dict, RNG states, env state."""


def save_checkpoint(directory: str | Path, policy: ActorCritic, cfg: TrainConfig,
                    state: dict[str, Any], torchscript: bool = False,
                    trained_forward_max: float | None = None) -> Path:
    """Atomically write a training checkpoint folder (policy, config, ``state``)."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = encode_tree(state, tensors)

    def write(tmp: Path) -> None:
        save_policy(policy, cfg, tmp, torchscript, trained_forward_max)
        save_file(tensors, str(tmp / STATE_TENSORS_FILE), metadata={"format": STATE_FORMAT})
        (tmp / STATE_JSON_FILE).write_text(
            json.dumps({"format": STATE_FORMAT, "state": skeleton}, indent=1) + "\n"
        )

    return write_dir_atomically(directory, write)


def load_checkpoint(directory: str | Path) -> Checkpoint:
    """Read and check a folder written by :func:`save_checkpoint`."""
    directory = Path(directory)
    recover_dir(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: no checkpoint here")
    names = [POLICY_FILE, CONFIG_FILE, STATE_TENSORS_FILE, STATE_JSON_FILE]
    for name in names:
        if not (directory / name).is_file():
            raise CheckpointError(f"{directory / name}: missing; the checkpoint is incomplete")
    verify_manifest(directory, names)
    cfg = _read_config(directory / CONFIG_FILE)
    policy_state, meta = _read_safetensors(directory / POLICY_FILE)
    policy = _build_policy(policy_state, meta, cfg, directory / POLICY_FILE)
    tensors, _ = _read_safetensors(directory / STATE_TENSORS_FILE)
    doc = _read_json(directory / STATE_JSON_FILE)
    if not isinstance(doc, dict) or doc.get("format") != STATE_FORMAT:
        raise CheckpointError(
            f"{directory / STATE_JSON_FILE}: not a {STATE_FORMAT} file "
            f"(format {doc.get('format') if isinstance(doc, dict) else None!r})"
        )
    state = decode_tree(doc.get("state"), tensors, directory / STATE_TENSORS_FILE)
    return Checkpoint(directory, cfg, policy_state, policy.num_obs, policy.num_actions,
                      policy.num_critic_obs, state)
