"""``cassie-rl plot-run``: learning curves of training runs, from their ``metrics.jsonl``.

    cassie-rl plot-run runs/walk                         # runs/walk/learning_curve.png
    cassie-rl plot-run runs/walk runs/walk_mirror --out compare.png --x hours

One figure, one panel per curve (episode length, batch and test return, the speed-tracking
reward term, forward speed and its error, the share of swing time the feet are in the air, the
speed curriculum's limit, throughput), every run overlaid and labelled by its
folder name. A run that lacks a curve (an older run, another task) is named in that panel. A
missing or corrupt ``metrics.jsonl`` gives one line on stderr and exit code 1.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

PANELS = (
    ("episode/length", "episode length (policy steps)"),
    ("return/batch", "batch return"),
    ("return/test", "test return (deterministic)"),
    ("env/reward/forward_velocity", "forward-speed reward term"),
    ("env/speed/forward", "mean forward speed (m/s)"),
    ("env/speed/forward_error", "mean |forward speed - command| (m/s)"),
    # Near 0: it stands on both feet whatever the clock says, and cannot walk.
    ("env/gait/swing_airborne", "swing feet off the ground (share of swing time)"),
    ("env/curriculum/forward_max", "curriculum: top speed command (m/s)"),
    ("perf/steps_per_s", "env steps / s"),
)
X_AXES = {"steps": ("env_steps", 1e-6, "env steps (millions)"),
          "hours": ("wall_time", 1.0 / 3600.0, "training wall time (h)")}


class RunError(ValueError):
    """A run whose metrics cannot be read: the message says which file and why."""


def read_metrics(run: str | Path) -> list[dict]:
    """The rows of ``RUN/metrics.jsonl`` (or of that file given directly)."""
    path = Path(run)
    if path.is_dir():
        path = path / "metrics.jsonl"
    try:
        lines = path.read_text().splitlines()
    except OSError as err:
        raise RunError(f"{path}: cannot read ({err.strerror or err})") from None
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise RunError(f"{path}:{number}: not a JSON line ({err.msg})") from None
        if not isinstance(row, dict):
            raise RunError(f"{path}:{number}: not a JSON object")
        rows.append(row)
    if not rows:
        raise RunError(f"{path}: no metrics yet")
    return rows


def curve(rows: list[dict], key: str, x_key: str, x_scale: float) -> tuple[list, list]:
    """(x, y) of the rows that have ``key`` as a finite number."""
    xs, ys = [], []
    for row in rows:
        y, x = row.get(key), row.get(x_key)
        if isinstance(y, (int, float)) and isinstance(x, (int, float)) and math.isfinite(y):
            xs.append(x * x_scale)
            ys.append(y)
    return xs, ys


def plot_runs(runs: dict[str, list[dict]], out: Path, x_axis: str = "steps") -> Path:
    """Write the figure of ``runs`` (label -> rows) to ``out``."""
    from matplotlib.figure import Figure

    x_key, x_scale, x_label = X_AXES[x_axis]
    fig = Figure(figsize=(15, 11), layout="constrained")
    axes = fig.subplots(3, 3).ravel()
    for ax, (key, title) in zip(axes, PANELS):
        missing = []
        for label, rows in runs.items():
            xs, ys = curve(rows, key, x_key, x_scale)
            if not xs:
                missing.append(label)
                continue
            style = "o-" if key == "return/test" else "-"
            ax.plot(xs, ys, style, label=label, markersize=3, linewidth=1)
        if missing:
            ax.text(0.5, 0.5, "no data: " + ", ".join(missing), transform=ax.transAxes,
                    ha="center", va="center", fontsize=9, color="gray")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(x_label, fontsize=9)
        ax.grid(alpha=0.3)
        if len(runs) > 1 and len(missing) < len(runs):
            ax.legend(fontsize=8)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cassie-rl plot-run",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run folders (or metrics.jsonl files)")
    parser.add_argument("--out", type=Path,
                        help="figure file, .png or .pdf (default: FIRST_RUN/learning_curve.png)")
    parser.add_argument("--x", choices=sorted(X_AXES), default="steps",
                        help="horizontal axis: env steps or training wall time")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        runs = {}
        for run in args.runs:
            label = Path(run).name if Path(run).is_dir() else Path(run).parent.name
            while label in runs:
                label += "'"
            runs[label] = read_metrics(run)
    except RunError as err:
        print(f"cassie-rl plot-run: {err}", file=sys.stderr)
        return 1
    first = Path(args.runs[0])
    out = args.out or (first if first.is_dir() else first.parent) / "learning_curve.png"
    print(f"wrote {plot_runs(runs, out, args.x)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
