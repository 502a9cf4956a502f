"""launch/train.launch.py: launch_ros is not installable here, so check its syntax and wiring."""

from __future__ import annotations

import ast
from pathlib import Path

LAUNCH = Path(__file__).resolve().parents[2] / "launch" / "train.launch.py"


def test_train_launch_file_compiles_and_passes_the_node_parameters():
    source = LAUNCH.read_text()
    tree = ast.parse(compile(source, str(LAUNCH), "exec", ast.PyCF_ONLY_AST))
    functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    assert "generate_launch_description" in functions
    constants = {n.targets[0].id: ast.literal_eval(n.value) for n in tree.body
                 if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Name)
                 and n.targets[0].id == "NODE_PARAMETERS"}
    # The parameters train_node declares.
    assert set(constants["NODE_PARAMETERS"]) == {"config", "overrides", "resume", "init_from"}
    assert "executable='train_node'" in source
