"""cassie-rl ship: a run's policy packaged with its log, curve, eval and README."""

import json

from cassie_rl_ros.policy_runner import PolicyRunner
from cassie_rl_ros.training.ship import main
from tiny_policy import train_tiny_policy


def test_a_shipped_policy_loads_and_says_how_it_was_made(tmp_path, capsys):
    run = train_tiny_policy(tmp_path / "runs")
    target = tmp_path / "policies" / "walk"
    assert main([str(run), "--to", str(target), "--from", "checkpoint", "--episodes", "2",
                 "--seconds", "2.5", "--push-force", "0"]) == 0
    assert "episodes pass the walking criterion" in capsys.readouterr().out
    names = {p.name for p in target.iterdir()}
    assert {"policy.safetensors", "config.yaml", "training_log.jsonl", "learning_curve.png",
            "eval.json", "README.md", "manifest.json"} <= names
    runner = PolicyRunner.load(target)  # what the policy node does with the default policy
    assert runner.dt > 0
    report = json.loads((target / "eval.json").read_text())
    assert report["nominal"]["episodes"] == 2 and "pushed" not in report
    log = [json.loads(line) for line in (target / "training_log.jsonl").read_text().splitlines()]
    assert log[-1]["iteration"] == 1 and "env_steps" in log[-1]
    readme = (target / "README.md").read_text()
    assert "1 iterations" in readme and "passed" in readme and "config.yaml" in readme


def test_a_run_without_the_chosen_policy_is_refused_clearly(tmp_path, capsys):
    run = train_tiny_policy(tmp_path / "runs")  # eval_interval 0: no best/ folder
    assert main([str(run), "--to", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "best" in err and "--from checkpoint" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
    for source in ("policies/000001", "../other", "policies"):  # none kept; not a policy
        assert main([str(run), "--to", str(tmp_path / "out"), "--from", source]) == 1
        err = capsys.readouterr().err
        assert "Traceback" not in err and source in err
    assert not (tmp_path / "out").exists()


def test_a_kept_policy_ships_with_the_training_that_made_it(tmp_path):
    from cassie_rl_ros.training.train import main as train

    run = train_tiny_policy(tmp_path / "runs", "runner.keep_policy_interval=1")
    assert train(["--resume", str(run), "runner.max_iterations=2", "ppo.lr=0.0001"]) == 0
    target = tmp_path / "policy"
    assert main([str(run), "--to", str(target), "--from", "policies/000001", "--episodes", "1",
                 "--seconds", "1", "--push-force", "0"]) == 0
    assert PolicyRunner.load(target).dt > 0
    report = json.loads((target / "eval.json").read_text())
    assert report["policy"].endswith("policies/000001")
    # iteration 2 (and its change of lr) came after this policy: not part of its story
    log = [json.loads(line) for line in (target / "training_log.jsonl").read_text().splitlines()]
    assert [row["iteration"] for row in log] == [1]
    readme = (target / "README.md").read_text()
    assert "for 1 iterations" in readme and "ppo.lr" not in readme


def test_notes_replace_the_one_command_reproduction(tmp_path):
    run = train_tiny_policy(tmp_path / "runs")
    notes = tmp_path / "history.md"
    notes.write_text("Iterations 1-1: the tiny config, then resumed with ppo.lr=1e-4.\n")
    target = tmp_path / "policy"
    assert main([str(run), "--to", str(target), "--from", "checkpoint", "--episodes", "2",
                 "--seconds", "1", "--push-force", "0", "--notes", str(notes)]) == 0
    readme = (target / "README.md").read_text()
    assert "## How it was trained\n\nIterations 1-1: the tiny config" in readme
    assert "Reproduce: `cassie-rl train --config config.yaml" not in readme


def test_a_run_resumed_with_changes_lists_its_stages(tmp_path):
    from cassie_rl_ros.training.train import main as train

    run = train_tiny_policy(tmp_path / "runs")
    assert train(["--resume", str(run), "runner.max_iterations=2", "ppo.lr=0.0001"]) == 0
    target = tmp_path / "policy"
    assert main([str(run), "--to", str(target), "--from", "checkpoint", "--episodes", "2",
                 "--seconds", "1", "--push-force", "0"]) == 0
    readme = (target / "README.md").read_text()
    assert "Trained in stages" in readme
    assert "- from iteration 1: `ppo.lr`" in readme and "-> 0.0001" in readme
    assert "`runner.max_iterations` 1 -> 2" in readme
