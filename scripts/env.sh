# shellcheck shell=bash
# Environment of the local ROS 2 Jazzy prefix made by scripts/setup.sh (pip wheels in .prefix,
# this package's messages in .prefix/wam_msgs). Source it, from any directory:
#     source scripts/env.sh
# It is for this prefix only: with a ROS 2 install from apt, source /opt/ros/jazzy/setup.bash instead.
# Sourcing it twice does not grow the path variables.
#
#     source scripts/env.sh --gpu     (or WAM_GPU=1): the same, with ONNX Runtime's GPU build from
# .prefix-gpu (scripts/setup_gpu.sh, `make setup-gpu`): ORT_DYLIB_PATH at its libonnxruntime.so and its
# nvidia/*/lib folders (CUDA 13, cuDNN 9) on LD_LIBRARY_PATH, plus $WAM_TRT_LIB_DIR (TensorRT 10) if set.
# The library path must be set before the node starts: the loader reads it once.

_wam_repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_wam_prefix="${WAM_PREFIX:-$_wam_repo/.prefix}"
_wam_msgs="$_wam_prefix/wam_msgs"

if [ ! -x "$_wam_prefix/bin/python" ]; then
    echo "scripts/env.sh: no prefix at $_wam_prefix: run scripts/setup.sh first" >&2
    unset _wam_repo _wam_prefix _wam_msgs
    return 1 2>/dev/null || exit 1
fi

# Facts about the prefix's interpreter, written by setup.sh (computed here if missing).
if [ -f "$_wam_prefix/wam_python.env" ]; then
    # shellcheck disable=SC1091
    . "$_wam_prefix/wam_python.env"
else
    eval "$("$_wam_prefix/bin/python" - <<'EOF'
import os, sys, sysconfig
v = sysconfig.get_config_vars()
print(f"WAM_PYVER={sys.version_info[0]}.{sys.version_info[1]}")
print(f"WAM_LIBPYTHON={os.path.join(v['LIBDIR'], v['INSTSONAME'])}")
EOF
)"
fi

# Prepends $2 to the path variable named $1 unless it is already in it.
_wam_prepend() {
    local var="$1" dir="$2" cur
    cur="${!var:-}"
    case ":$cur:" in
        *":$dir:"*) ;;
        *) if [ -n "$cur" ]; then export "$var=$dir:$cur"; else export "$var=$dir"; fi ;;
    esac
}

_wam_site="$_wam_prefix/lib/python$WAM_PYVER/site-packages"

export ROS_DISTRO=jazzy
export ROS_VERSION=2
export ROS_PYTHON_VERSION=3
export RMW_IMPLEMENTATION=rmw_fastrtps_cpp
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
# MuJoCo renders offscreen on the CPU (EGL + Mesa).
export MUJOCO_GL="${MUJOCO_GL:-egl}"

# Prepended in reverse order: the messages prefix ends up first.
for _wam_p in "$_wam_prefix" "$_wam_msgs"; do
    _wam_prepend AMENT_PREFIX_PATH "$_wam_p"
    _wam_prepend CMAKE_PREFIX_PATH "$_wam_p"
done

# The wheels keep part of their shared libraries in site-packages/ros_*.libs.
for _wam_d in "$_wam_site"/ros_*.libs; do
    if [ -d "$_wam_d" ]; then _wam_prepend LD_LIBRARY_PATH "$_wam_d"; fi
done
_wam_prepend LD_LIBRARY_PATH "$_wam_prefix/lib"
_wam_prepend LD_LIBRARY_PATH "$_wam_msgs/lib"

_wam_prepend PYTHONPATH "$_wam_repo/tests"
# The export kit's torch-free parts (export/wam_export: manifests, fixtures, ONNX Runtime rollouts).
_wam_prepend PYTHONPATH "$_wam_repo/export"
# The simulator (sim/wam_sim) and the model's training/export package (models/wam_model).
_wam_prepend PYTHONPATH "$_wam_repo/models"
_wam_prepend PYTHONPATH "$_wam_repo/sim"
_wam_prepend PYTHONPATH "$_wam_msgs/lib/python$WAM_PYVER/site-packages"
_wam_prepend PATH "$_wam_prefix/bin"
export VIRTUAL_ENV="$_wam_prefix"

# ONNX Runtime for ort's load-dynamic feature: the library shipped in the onnxruntime wheel.
for _wam_d in "$_wam_site"/onnxruntime/capi/libonnxruntime.so.*; do
    if [ -f "$_wam_d" ]; then export ORT_DYLIB_PATH="$_wam_d"; fi
done

# The wheels' librcl loads *__rosidl_generator_py.so libraries, which need libpython's symbols
# (`undefined symbol: PyExc_RuntimeError` otherwise). Only this prefix needs that: never link it in.
if [ -f "$WAM_LIBPYTHON" ]; then
    case ":${LD_PRELOAD:-}:" in
        *":$WAM_LIBPYTHON:"*) ;;
        *) export LD_PRELOAD="$WAM_LIBPYTHON${LD_PRELOAD:+:$LD_PRELOAD}" ;;
    esac
fi

# r2r: generate bindings for the packages the node's messages reach, not for all of them.
export IDL_PACKAGE_FILTER="std_msgs;builtin_interfaces;sensor_msgs;trajectory_msgs;std_srvs;diagnostic_msgs;geometry_msgs;rosgraph_msgs;lifecycle_msgs;visualization_msgs;service_msgs;rcl_interfaces;type_description_interfaces;unique_identifier_msgs;action_msgs;wam_policy"

# bindgen (r2r) needs libclang: Debian's libclang-dev puts it under /usr/lib/llvm-N/lib.
if [ -z "${LIBCLANG_PATH:-}" ]; then
    for _wam_d in /usr/lib/llvm-*/lib; do
        if [ -e "$_wam_d/libclang.so" ]; then export LIBCLANG_PATH="$_wam_d"; fi
    done
fi

# The GPU build of ONNX Runtime (opt-in; `make test` never asks for it).
if [ "${1:-}" = "--gpu" ] || [ "${WAM_GPU:-0}" = 1 ]; then
    _wam_gpu="${WAM_GPU_PREFIX:-$_wam_repo/.prefix-gpu}"
    _wam_lib=""
    for _wam_d in "$_wam_gpu"/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.*; do
        if [ -f "$_wam_d" ]; then _wam_lib="$_wam_d"; fi
    done
    if [ -z "$_wam_lib" ]; then
        echo "scripts/env.sh --gpu: no onnxruntime-gpu in $_wam_gpu: run scripts/setup_gpu.sh (make setup-gpu)" >&2
    else
        export ORT_DYLIB_PATH="$_wam_lib"
        for _wam_d in "${_wam_lib%/onnxruntime/capi/*}"/nvidia/*/lib; do
            if [ -d "$_wam_d" ]; then _wam_prepend LD_LIBRARY_PATH "$_wam_d"; fi
        done
        if [ -n "${WAM_TRT_LIB_DIR:-}" ] && [ -d "$WAM_TRT_LIB_DIR" ]; then
            _wam_prepend LD_LIBRARY_PATH "$WAM_TRT_LIB_DIR"
        fi
    fi
    unset _wam_gpu _wam_lib
fi

unset _wam_repo _wam_prefix _wam_msgs _wam_site _wam_p _wam_d
unset -f _wam_prepend
