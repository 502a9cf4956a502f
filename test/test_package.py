"""Packaging checks: package.xml, the installed ament index and ROS executables, the CLI, and
that the pure cores import without rclpy."""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from cassie_rl_ros.tools import cli

REPO = Path(__file__).resolve().parents[1]
PACKAGE = 'cassie_rl_ros'
SOURCE_DIRS = ['cassie_rl_ros', 'cassie_sim_ros', 'launch']
PURE_CORES = [
    'cassie_sim_ros.model',
    'cassie_sim_ros.sim',
    'cassie_sim_ros.config',
    'cassie_rl_ros.algorithms',
    'cassie_rl_ros.policies',
    'cassie_rl_ros.envs',
    'cassie_rl_ros.training',
    'cassie_sim_ros.actuator',
    'cassie_sim_ros.sim_server',
    'cassie_sim_ros.estimator',
    'cassie_rl_ros.policy_runner',
    'cassie_rl_ros.bringup',
    'cassie_rl_ros.bridge.protocol',
    'cassie_rl_ros.bridge.core',
    'cassie_rl_ros.tools.robot_emulator',
]


def ros_executables() -> dict[str, str]:
    """``ROS_EXECUTABLES`` from setup.py, read without running setup()."""
    tree = ast.parse((REPO / 'setup.py').read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == 'ROS_EXECUTABLES' for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError('setup.py has no ROS_EXECUTABLES literal')


def is_ros_package(name: str) -> bool:
    return name in {'rclpy', 'launch', 'launch_ros', 'ament_index_python'} or name.endswith(
        ('_msgs', '_srvs', '_interfaces'))


def imported_top_level_names(path: Path) -> set[str]:
    names = set()
    for line in path.read_text(encoding='utf-8').splitlines():
        match = re.match(r'\s*from\s+([A-Za-z_]\w*)', line)
        if match:
            names.add(match.group(1))
            continue
        match = re.match(r'\s*import\s+(.+)', line)
        if match:
            for part in match.group(1).split('#')[0].split(','):
                first = part.strip().split('.')[0].split(' ')[0]
                if first.isidentifier():
                    names.add(first)
    return names


def installed_prefix(monkeypatch) -> Path:
    """Install prefix of this package: from the ament index when available, else sys.prefix.

    Skips when the package is not installed at all (tests run from a bare checkout).
    """
    try:
        importlib.metadata.distribution(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f'{PACKAGE} is not installed (bash scripts/setup_venv.sh, or colcon build)')
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_prefix
    except ImportError:
        return Path(sys.prefix)
    if not os.environ.get('AMENT_PREFIX_PATH'):
        monkeypatch.setenv('AMENT_PREFIX_PATH', sys.prefix)  # plain venv: see ros_env.py
    try:
        return Path(get_package_prefix(PACKAGE))
    except PackageNotFoundError:
        pytest.fail(f'{PACKAGE} is installed but not in the ament index '
                    f"(AMENT_PREFIX_PATH={os.environ['AMENT_PREFIX_PATH']})")


# --- package.xml -------------------------------------------------------------------------------

def test_package_xml_declares_every_imported_ros_package():
    root = ET.parse(REPO / 'package.xml').getroot()
    assert root.get('format') == '3'
    assert root.findtext('name') == PACKAGE
    assert root.find('export/build_type').text == 'ament_python'
    exec_depends = {e.text for e in root.findall('exec_depend')} | {
        e.text for e in root.findall('depend')}

    imported: dict[str, list[str]] = {}
    for folder in SOURCE_DIRS:
        for path in sorted((REPO / folder).rglob('*.py')):
            for name in imported_top_level_names(path):
                if is_ros_package(name):
                    imported.setdefault(name, []).append(str(path.relative_to(REPO)))

    missing = {name: files for name, files in imported.items() if name not in exec_depends}
    assert not missing, f'imported but not an <exec_depend> in package.xml: {missing}'


# --- installed files ---------------------------------------------------------------------------

def test_ament_index_finds_share_with_launch_and_config(monkeypatch):
    pytest.importorskip('ament_index_python',
                        reason="ament_index_python not importable (the 'ros' extra or a sourced "
                        'ROS 2 provides it)')
    from ament_index_python.packages import get_package_share_directory

    installed_prefix(monkeypatch)
    share = Path(get_package_share_directory(PACKAGE))
    assert (share / 'package.xml').is_file()
    for folder, pattern in (('launch', '*.launch.py'), ('config', '*.yaml')):
        for source in sorted((REPO / folder).glob(pattern)):
            assert (share / folder / source.name).is_file(), (
                f'{folder}/{source.name} is not installed in {share}: re-run the install '
                '(bash scripts/setup_venv.sh or colcon build)')


@pytest.mark.parametrize('name', sorted(ros_executables()))
def test_ros_executable_is_installed_in_lib(name, monkeypatch):
    module = ros_executables()[name]
    source = REPO / 'scripts' / 'ros' / name
    assert os.access(source, os.X_OK), f'{source} lost its executable bit'
    assert f'-m {module} ' in source.read_text()

    installed = installed_prefix(monkeypatch) / 'lib' / PACKAGE / name
    assert installed.is_file(), f'{installed} missing (ros2 run looks there)'
    assert os.access(installed, os.X_OK), f'{installed} is not executable'
    assert f'-m {module} ' in installed.read_text()


def _fake_python(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('#!/bin/sh\nprintf "%s\\n" "$0" "$@"\n')
    path.chmod(0o755)


@pytest.mark.parametrize('name', sorted(ros_executables()))
def test_ros_wrapper_prefers_the_python_of_its_prefix(name, tmp_path):
    module = ros_executables()[name]
    wrapper = tmp_path / 'prefix' / 'lib' / PACKAGE / name
    wrapper.parent.mkdir(parents=True)
    wrapper.write_bytes((REPO / 'scripts' / 'ros' / name).read_bytes())
    wrapper.chmod(0o755)
    on_path = tmp_path / 'path' / 'python3'
    _fake_python(on_path)
    env = dict(os.environ, PATH=f'{on_path.parent}{os.pathsep}{os.environ["PATH"]}')

    # colcon / ROS install: no <prefix>/bin/python3, so python3 from PATH.
    out = subprocess.run([str(wrapper), '--ros-args', '-p', 'a:=1'], env=env, check=True,
                         capture_output=True, text=True).stdout
    assert out.splitlines() == [str(on_path), '-m', module, '--ros-args', '-p', 'a:=1']

    # venv: <prefix>/bin/python3.
    venv_python = tmp_path / 'prefix' / 'bin' / 'python3'
    _fake_python(venv_python)
    out = subprocess.run([str(wrapper), 'x y'], env=env, check=True, capture_output=True,
                         text=True).stdout
    assert out.splitlines() == [str(venv_python), '-m', module, 'x y']


# --- cassie-rl ---------------------------------------------------------------------------------

def test_cli_help_lists_every_command_without_importing_torch_or_rclpy():
    code = (
        'import sys\n'
        'from cassie_rl_ros.tools import cli\n'
        'try:\n'
        "    cli.main(['--help'])\n"
        'except SystemExit as exc:\n'
        '    assert exc.code == 0, exc.code\n'
        "heavy = sorted({'torch', 'rclpy', 'mujoco'} & set(sys.modules))\n"
        "assert not heavy, f'--help imported {heavy}'\n"
    )
    result = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for name in cli.COMMANDS:
        assert re.search(rf'^\s+{re.escape(name)}\s', result.stdout, re.M), name


def test_cli_console_script_runs():
    script = Path(sys.prefix) / 'bin' / 'cassie-rl'
    if not script.exists():
        pytest.skip(f'{script} not installed (colcon puts it in lib/{PACKAGE})')
    result = subprocess.run([str(script), '--help'], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert all(name in result.stdout for name in cli.COMMANDS)


def _command_module(tmp_path, monkeypatch, source: str) -> str:
    (tmp_path / 'fake_command.py').write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, 'fake_command', raising=False)
    monkeypatch.setitem(cli.COMMANDS, 'fake', ('a test command', 'fake_command', 'main'))
    return 'fake'


def test_cli_hands_the_rest_of_argv_to_the_command(tmp_path, monkeypatch):
    _command_module(tmp_path, monkeypatch, 'def main(argv):\n    return len(argv) + 40\n')
    assert cli.main(['fake', '--help', 'x']) == 42


def test_cli_missing_module_says_not_available_and_exits_2(monkeypatch, capsys):
    monkeypatch.setitem(cli.COMMANDS, 'gone', ('x', 'cassie_rl_ros.no_such_module', 'main'))
    assert cli.main(['gone']) == 2
    assert capsys.readouterr().err.strip() == (
        'cassie-rl gone: not available in this version (cassie_rl_ros.no_such_module missing)')


def test_cli_missing_dependency_of_an_existing_module_is_an_error(tmp_path, monkeypatch):
    _command_module(tmp_path, monkeypatch, 'import no_such_dependency_xyz\n')
    with pytest.raises(ModuleNotFoundError, match='no_such_dependency_xyz'):
        cli.main(['fake'])


# --- pure cores --------------------------------------------------------------------------------

def _exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def test_at_least_one_pure_core_exists():
    assert any(_exists(m) for m in PURE_CORES)


@pytest.mark.parametrize('module', PURE_CORES)
def test_pure_core_imports_with_rclpy_blocked(module):
    if not _exists(module):
        pytest.skip(f'{module} does not exist yet')
    code = (
        'import importlib, sys\n'
        "for name in ('rclpy', 'launch', 'launch_ros'):\n"
        '    sys.modules[name] = None  # any import of it raises ImportError\n'
        f'importlib.import_module({module!r})\n'
    )
    result = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
