"""Per-iteration output of the runner: a terminal progress line and JSON-safe metrics."""

from __future__ import annotations

import math
import time
from typing import Any


def json_safe(metrics: dict[str, Any]) -> dict[str, Any]:
    """NaN and infinities become null, so the JSON is valid for any reader."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in metrics.items()}


class Progress:
    """A tqdm bar when tqdm is installed, else one printed line per iteration."""

    def __init__(self, total: int, initial: int, enabled: bool) -> None:
        self.total, self.enabled = total, enabled
        self.start = time.monotonic()
        self.initial = initial
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                pass
            else:
                self.bar = tqdm(total=total, initial=initial, unit="it", dynamic_ncols=True)

    def update(self, m: dict[str, float]) -> None:
        if not self.enabled:
            return
        summary = (
            f"test {_fmt(m.get('return/test'))} | batch {_fmt(m['return/batch'])} | "
            f"len {_fmt(m['episode/length'], 1)} | kl {m['policy/kl']:.4f} | "
            f"ent {m['policy/entropy']:.2f} | vloss {m['loss/value']:.3g} | "
            f"ploss {m['loss/policy']:.3g} | clip {m['policy/clip_fraction']:.2f} | "
            f"ev {_fmt(m['value/explained_variance'], 2)} | "
            f"{m['perf/steps_per_s']:.0f} steps/s"
        )
        if self.bar is not None:
            self.bar.set_postfix_str(summary, refresh=False)
            self.bar.update(1)
            return
        done = m["iteration"] - self.initial
        left = self.total - m["iteration"]
        eta = (time.monotonic() - self.start) / max(done, 1) * left
        width = len(str(self.total))
        print(f"[{int(m['iteration']):{width}d}/{self.total}] {summary} | "
              f"eta {_duration(eta)}", flush=True)

    def write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text)
        elif self.enabled:
            print(text, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.{digits}f}"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
