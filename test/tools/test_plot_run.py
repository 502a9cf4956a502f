"""cassie-rl plot-run: learning curves from metrics.jsonl, overlaid, with clear errors."""

import json

import numpy as np
import pytest

from cassie_rl_ros.tools.plot_run import curve, main, read_metrics


def write_run(folder, rows):
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def rows(n, curriculum=True):
    out = []
    for i in range(1, n + 1):
        row = {"iteration": i, "env_steps": 3072 * i, "wall_time": 4.0 * i,
               "episode/length": 20.0 + i, "return/batch": 10.0 + i,
               "env/reward/forward_velocity": 0.5, "perf/steps_per_s": 800.0}
        if curriculum:
            row["env/curriculum/forward_max"] = 0.3 + 0.1 * (i // 10)
        if i % 5 == 0:
            row["return/test"] = 12.0 + i
        out.append(row)
    return out


def test_curves_overlay_runs_and_name_what_a_run_lacks(tmp_path, capsys):
    a = write_run(tmp_path / "walk", rows(30))
    b = write_run(tmp_path / "walk_mirror", rows(20, curriculum=False))
    assert main([str(a), str(b), "--x", "hours"]) == 0
    png = a / "learning_curve.png"
    assert png.stat().st_size > 10_000 and "wrote" in capsys.readouterr().out
    from PIL import Image

    image = np.asarray(Image.open(png).convert("L"))
    assert image.std() > 10  # drawn, not blank
    xs, ys = curve(read_metrics(a), "return/test", "env_steps", 1e-6)
    assert len(xs) == 6 and ys[0] == 17.0 and xs[0] == pytest.approx(5 * 3072e-6)


@pytest.mark.parametrize("content, message", [
    (None, "cannot read"), ("", "no metrics yet"), ('{"iteration": 1}\n{oops\n', ":2: not a JSON"),
])
def test_unreadable_metrics_say_which_file_and_why(tmp_path, capsys, content, message):
    run = tmp_path / "run"
    run.mkdir()
    if content is not None:
        (run / "metrics.jsonl").write_text(content)
    assert main([str(run)]) == 1
    err = capsys.readouterr().err
    assert message in err and "metrics.jsonl" in err and "Traceback" not in err
