#!/usr/bin/env bash
# Creates the training/export environment: a separate git-ignored venv .prefix-train holding torch and
# what training, export and the offline eval need (requirements/train.txt). Torch stays out of .prefix
# (CI's path: `make test` needs onnxruntime and numpy only).
#
# Idempotent: a stamp file holds the hash of requirements/train.txt; a second run returns at once.
# Use:   bash scripts/setup_train.sh && source scripts/setup_train.sh --env   (or see `make train`)
# Environment: PYTHON=<python3.11 interpreter>; WAM_SETUP_FORCE=1 to reinstall.
#
# Sourced with --env it only exports the environment of that venv: PATH, PYTHONPATH=sim:models:export
# (the ROS-free simulator and the model package) and MUJOCO_GL=egl.
_wam_train_repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_wam_train_prefix="$_wam_train_repo/.prefix-train"

if [ "${1:-}" = "--env" ]; then
    export PATH="$_wam_train_prefix/bin:$PATH"
    export PYTHONPATH="$_wam_train_repo/sim:$_wam_train_repo/models:$_wam_train_repo/export${PYTHONPATH:+:$PYTHONPATH}"
    export MUJOCO_GL="${MUJOCO_GL:-egl}"
    export VIRTUAL_ENV="$_wam_train_prefix"
    unset _wam_train_repo _wam_train_prefix
    return 0 2>/dev/null || exit 0
fi

set -euo pipefail
repo="$_wam_train_repo"
prefix="$_wam_train_prefix"
req="$repo/requirements/train.txt"
stamp="$prefix/.wam_train_stamp"

say() { printf '[setup_train] %s\n' "$*"; }
die() { printf '[setup_train] ERROR: %s\n' "$*" >&2; exit 1; }

want="$(sha256sum "$req" | cut -d' ' -f1)"
if [ "${WAM_SETUP_FORCE:-0}" != 1 ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
    && [ -x "$prefix/bin/python" ]; then
    say "up to date ($prefix)"
    exit 0
fi

# The simulator renders with EGL on the CPU; scripts/setup.sh installs these Debian packages too.
for p in libegl1 libgl1-mesa-dri libegl-mesa0; do
    dpkg -s "$p" >/dev/null 2>&1 || say "warning: Debian package $p missing (MuJoCo rendering needs it; run scripts/setup.sh)"
done

if [ ! -x "$prefix/bin/python" ]; then
    py="${PYTHON:-}"
    if [ -z "$py" ]; then
        for c in python3.11 python3; do
            if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)'; then
                py="$c"; break
            fi
        done
    fi
    [ -n "$py" ] || die "needs Python 3.11 (set PYTHON=...)"
    avail_kb="$(df -Pk "$repo" | awk 'NR==2 {print $4}')"
    [ "$avail_kb" -gt 8000000 ] || die "needs about 6 GB free disk for torch (have ${avail_kb} kB)"
    say "creating venv $prefix with $py"
    "$py" -m venv "$prefix"
fi
say "installing requirements/train.txt (torch and its CUDA wheels: ~5.5 GB, minutes)"
"$prefix/bin/python" -m pip install -q --upgrade pip >/dev/null
"$prefix/bin/python" -m pip install -q -r "$req"
PYTHONPATH="$repo/sim:$repo/models" MUJOCO_GL=egl "$prefix/bin/python" -c \
    'import torch, onnx, onnxruntime, numpy, mujoco, PIL, matplotlib; print("torch", torch.__version__)'
echo "$want" >"$stamp"
say "done ($prefix)"
