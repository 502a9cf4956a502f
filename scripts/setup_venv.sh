#!/usr/bin/env bash
# Create or update .venv in the repository root with everything cassie_rl_ros needs:
# torch (pinned, CPU build where pip finds one), the package itself (editable) with the ROS 2
# PyPI wheels and the test tools, and, when run as root on Debian/Ubuntu, the EGL libraries
# MuJoCo renders offscreen with. Safe to re-run; it only installs what is missing.
#
#   bash scripts/setup_venv.sh            # PYTHON=python3.12 to pick another interpreter
#
# Environment: PYTHON (default python3), CASSIE_SKIP_APT=1 to never call apt-get.
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=.venv
say() { printf 'setup_venv: %s\n' "$*"; }

if ! command -v "$PYTHON" >/dev/null; then
    say "$PYTHON not found; install Python 3.10-3.12 (apt-get install python3 python3-venv)"
    exit 1
fi
if ! "$PYTHON" -c 'import sys; sys.exit(not (3, 10) <= sys.version_info[:2] <= (3, 12))'; then
    say "warning: $("$PYTHON" -V 2>&1) is outside the supported 3.10-3.12"
fi

can_apt() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && [ -z "${CASSIE_SKIP_APT:-}" ]; }

# --- the venv --------------------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
    if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
        if can_apt; then
            say "installing python3-venv with apt-get"
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
        else
            say "the venv module is missing: run 'sudo apt-get install python3-venv' and retry"
            exit 1
        fi
    fi
    rm -rf "$VENV"
    say "creating $VENV with $("$PYTHON" -V 2>&1)"
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --quiet)
"${PIP[@]}" install --upgrade pip

# --- torch, pinned ---------------------------------------------------------------------------
# Installed on its own and pinned: an unpinned `torch` makes pip take the newest release, which
# on Linux x86_64 is a multi-GB CUDA build. That is why setup.py does not list torch. PyPI's
# 2.13.0 is that CUDA build too; PyTorch's CPU index has 2.13.0+cpu, which pip prefers (a local
# version sorts above the plain one). Offline, pip skips the unreachable index (one retry per
# lookup instead of five: seconds instead of minutes).
say "installing torch==2.13.0 (CPU build)"
"${PIP[@]}" install --retries 1 torch==2.13.0 \
    --extra-index-url "${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}"

# --- the package -----------------------------------------------------------------------------
# Editable: code edits apply without reinstalling. data_files (ament index marker, launch,
# config, lib/cassie_rl_ros wrappers) are copies: re-run this script after changing them.
say "installing cassie_rl_ros (editable) with the 'ros' and 'test' extras"
"${PIP[@]}" install -e '.[ros,test]'

# --- offscreen rendering libraries (optional) ------------------------------------------------
# MuJoCo renders offscreen through EGL (MUJOCO_GL=egl); Mesa provides a software EGL/GL.
GL_PACKAGES=(libegl1 libgl1 libegl-mesa0 libgl1-mesa-dri)
if command -v dpkg >/dev/null && ! dpkg -s "${GL_PACKAGES[@]}" >/dev/null 2>&1; then
    if can_apt; then
        say "installing ${GL_PACKAGES[*]} for offscreen rendering"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            --no-install-recommends "${GL_PACKAGES[@]}" >/dev/null; } ||
            say "warning: apt-get failed; rendering may not work (everything else does)"
    else
        say "note: for offscreen rendering install: sudo apt-get install ${GL_PACKAGES[*]}"
    fi
fi

say "done: $VENV is ready ($VENV/bin/cassie-rl --help)"
