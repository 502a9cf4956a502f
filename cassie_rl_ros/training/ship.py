"""``cassie-rl ship``: turn a training run into a self-describing policy folder.

    cassie-rl ship runs/walk --to policies/walk            # the best policy, judged and logged
    cassie-rl ship runs/walk --from checkpoint --episodes 20
    cassie-rl ship runs/walk --from policies/003450         # a kept one (keep_policy_interval)

The folder holds what the policy node loads (``policy.safetensors`` with the normaliser inside,
``config.yaml``, the TorchScript ``policy.pt`` when the run exported one) and what a reader needs
to trust it: ``training_log.jsonl`` (the learning curve's numbers, one line per iteration),
``learning_curve.png``, ``eval.json`` (``cassie-rl eval`` of this very policy, nominal and
pushed) and a ``README.md`` saying how it was trained and how to reproduce it. Written
atomically with a SHA-256 manifest, like a checkpoint.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from .checkpoint import (CONFIG_FILE, HISTORY_FILE, KEPT_POLICIES, POLICY_FILE, TORCHSCRIPT_FILE,
                         CheckpointError, recover_dir, write_dir_atomically)

LOG_KEYS = ("iteration", "env_steps", "wall_time", "episode/length", "return/batch",
            "return/test", "env/reward/forward_velocity", "env/curriculum/forward_max",
            "perf/steps_per_s")
"""The metrics kept in the shipped training log."""


def _git_commit(path: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(path), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def training_log(metrics: list[dict]) -> list[dict]:
    """A run's metrics reduced to :data:`LOG_KEYS`."""
    return [{k: row[k] for k in LOG_KEYS if k in row} for row in metrics]


def policy_iteration(policy_dir: Path) -> float:
    """The iteration a kept or best policy was saved at (its kept.json / best.json), else inf:
    a run's later iterations did not train it."""
    for name in ("kept.json", "best.json"):
        try:
            return int(json.loads((policy_dir / name).read_text())["iteration"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return float("inf")


def run_stages(run: Path, until: float = float("inf")) -> list[str]:
    """Markdown lines for each resume of ``run`` before iteration ``until`` that changed its
    config (history.jsonl)."""
    path = run / HISTORY_FILE
    if not path.is_file():
        return []
    lines = []
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        if entry.get("resumed") and entry.get("changes") and entry["iteration"] < until:
            changes = ", ".join(f"`{key}` {old!r} -> {new!r}"
                                for key, (old, new) in entry["changes"].items())
            lines.append(f"- from iteration {entry['iteration']}: {changes}")
    return lines


def describe(run: Path, source: str, log: list[dict], report: dict, commit: str | None,
             notes: str | None = None, until: float = float("inf")) -> str:
    """The shipped folder's README.md; ``notes`` (Markdown) replaces the one-command
    reproduction, for a run trained in stages (resumed with changed settings)."""
    last = log[-1]
    nominal, pushed = report["nominal"], report.get("pushed")
    lines = [
        f"# Policy from `{run.name}` ({source})",
        "",
        f"Trained by `cassie-rl train` for {last.get('iteration')} iterations, "
        f"{last.get('env_steps', 0) / 1e6:.2f} M env steps, "
        f"{last.get('wall_time', 0) / 3600:.2f} h of training wall time"
        + (f", at commit `{commit}`" if commit else "") + ". `config.yaml` is the full config.",
        "",
        f"Walking criterion (`eval.json`): {nominal['passed']}/{nominal['episodes']} episodes "
        f"passed, {nominal['falls']} falls, mean speed error "
        f"{nominal['mean_speed_error']:.3f} m/s, max lateral drift "
        f"{nominal['max_lateral_drift_m']:.2f} m, max yaw drift "
        f"{nominal['max_yaw_drift_deg']:.1f} deg.",
    ]
    if pushed:
        lines.append(f"With a {pushed['push_force_n']:g} N, 0.2 s lateral push: "
                     f"{pushed['passed']}/{pushed['episodes']} passed, {pushed['falls']} falls.")
    asym = nominal.get("mean_step_asymmetry")
    if asym is not None:
        lines.append(f"Step-length asymmetry |left - right| / mean: {asym:.3f}.")
    lines += ["", "`learning_curve.png` and `training_log.jsonl`: the learning curve.", ""]
    stages = run_stages(run, until)
    if notes:
        lines += ["## How it was trained", "", notes.strip(), ""]
    elif stages:
        lines += ["Trained in stages: resumed with these changes (`history.jsonl` of the run; "
                  "`config.yaml` is the last stage's config):", "", *stages, ""]
    else:
        lines += ["Reproduce: `cassie-rl train --config config.yaml runner.log_dir=runs` (same "
                  "seed and config; CPU thread scheduling makes runs differ in detail), then "
                  "`cassie-rl eval runs/<experiment>/best`.", ""]
    return "\n".join(lines)


def ship(run: str | Path, to: str | Path, source: str = "best", episodes: int = 20,
         seconds: float = 10.0, push_force: float = 50.0, threads: int = 1,
         notes: str | None = None) -> Path:
    """Write the policy folder ``to`` from ``run/<source>``; returns it."""
    from ..tools.plot_run import plot_runs, read_metrics
    from .evaluate import evaluate_walking, load_policy_fn

    run, to = Path(run), Path(to)
    parts = Path(source).parts
    if not (source in ("best", "checkpoint")
            or (len(parts) == 2 and parts[0] == KEPT_POLICIES and parts[1].isdigit())):
        raise CheckpointError(f"--from {source!r}: expected best, checkpoint or "
                              f"{KEPT_POLICIES}/<iteration>")
    policy_dir = run / source
    recover_dir(policy_dir)
    if not (policy_dir / POLICY_FILE).is_file():
        raise CheckpointError(f"{policy_dir}: no {POLICY_FILE} (train first, or choose "
                              "--from checkpoint)")
    until = policy_iteration(policy_dir)
    metrics = [row for row in read_metrics(run) if row.get("iteration", 0) <= until]
    log = training_log(metrics)
    policy, env_config = load_policy_fn([str(policy_dir)])
    report = {"policy": str(policy_dir),
              "nominal": evaluate_walking(policy, env_config, episodes, seconds,
                                          num_threads=threads)}
    if push_force > 0:
        report["pushed"] = evaluate_walking(policy, env_config, episodes, seconds,
                                            push_force=push_force, num_threads=threads)
    commit = _git_commit(Path(__file__).parent)

    def write(tmp: Path) -> None:
        for name in (POLICY_FILE, CONFIG_FILE, TORCHSCRIPT_FILE):
            if (policy_dir / name).is_file():
                shutil.copy2(policy_dir / name, tmp / name)
        (tmp / "training_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
        (tmp / "eval.json").write_text(json.dumps(report, indent=1) + "\n")
        plot_runs({run.name: metrics}, tmp / "learning_curve.png")
        (tmp / "README.md").write_text(describe(run, source, log, report, commit, notes,
                                                until))

    return write_dir_atomically(to, write)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cassie-rl ship", description=__doc__.splitlines()[0])
    parser.add_argument("run", help="training run folder")
    parser.add_argument("--to", required=True, help="policy folder to write (replaced)")
    parser.add_argument("--from", dest="source", default="best",
                        help="which of the run's policies: best (default), checkpoint, or a "
                             "kept one, policies/<iteration> (runner.keep_policy_interval)")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--push-force", type=float, default=50.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--notes", type=Path, metavar="FILE.md",
                        help="how the run was trained, for the README (a run resumed with "
                             "changed settings cannot be reproduced from its last config)")
    args = parser.parse_args(argv)
    from ..tools.plot_run import RunError

    try:
        notes = args.notes.read_text() if args.notes else None
        out = ship(args.run, args.to, args.source, args.episodes, args.seconds,
                   args.push_force, args.threads, notes)
    except (CheckpointError, RunError, OSError) as err:
        print(f"cassie-rl ship: {err}", file=sys.stderr)
        return 1
    nominal = json.loads((out / "eval.json").read_text())["nominal"]
    print(f"wrote {out}: {nominal['passed']}/{nominal['episodes']} episodes pass the walking "
          "criterion")
    return 0


if __name__ == "__main__":
    sys.exit(main())
