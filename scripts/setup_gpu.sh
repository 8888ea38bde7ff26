#!/usr/bin/env bash
# `make setup-gpu`: ONNX Runtime's GPU build (onnxruntime-gpu==1.31.1 with its [cuda,cudnn] extras: CUDA 13
# and cuDNN 9 as pip wheels) in a git-ignored prefix of its own, .prefix-gpu. The test prefix .prefix
# (scripts/setup.sh, `make test`) is never touched. Then
#     source scripts/env.sh --gpu
# points ORT_DYLIB_PATH at .prefix-gpu's libonnxruntime.so and puts its nvidia/*/lib folders on the
# library path (it must be set before the node starts: the loader reads LD_LIBRARY_PATH once).
#
#     bash scripts/setup_gpu.sh            install (idempotent: a stamp of requirements/gpu.txt)
#     bash scripts/setup_gpu.sh --env      print the variables env.sh --gpu would set (no install)
#
# About 1.3 GB to download, 2.1 GB installed. A CUDA provider then needs only the NVIDIA driver
# (libcuda.so.1, R580+ for CUDA 13). TensorRT 10 is NOT on PyPI (the tensorrt-cu13-libs names there
# download from NVIDIA's own index, and TensorRT 11 ships libnvinfer.so.11, which ONNX Runtime 1.31
# cannot use): install TensorRT 10.x from NVIDIA (apt repository `tensorrt` / tar from
# developer.nvidia.com/tensorrt, or an nvcr.io TensorRT/PyTorch container) and give its lib folder in
# WAM_TRT_LIB_DIR (env.sh --gpu adds it to the library path) or the node's `trt_lib_dir` parameter.
#
# Environment: PYTHON=<python3 interpreter> (default: the one .prefix was made with, else python3);
# WAM_GPU_PREFIX=<dir> (default .prefix-gpu); WAM_SETUP_FORCE=1 to reinstall.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
prefix="${WAM_GPU_PREFIX:-$repo/.prefix-gpu}"
req="$repo/requirements/gpu.txt"
t0=$SECONDS
say() { printf '[setup-gpu] %s\n' "$*"; }
die() { printf '[setup-gpu] ERROR: %s\n' "$*" >&2; exit 1; }

case "$(uname -m)" in
    x86_64) ;;
    aarch64) say "note: the aarch64 onnxruntime-gpu wheel has no TensorRT provider" ;;
    *) die "onnxruntime-gpu wheels exist for x86_64 and aarch64 only" ;;
esac

if [ ! -x "$prefix/bin/python" ]; then
    py="${PYTHON:-}"
    if [ -z "$py" ] && [ -f "$repo/.prefix/pyvenv.cfg" ]; then
        py="$(sed -n 's/^executable = //p' "$repo/.prefix/pyvenv.cfg")"
    fi
    [ -n "$py" ] && [ -x "$py" ] || py="$(command -v python3)" || die "no python3; set PYTHON=..."
    say "creating venv $prefix with $py"
    "$py" -m venv "$prefix" || die "python -m venv failed (Debian: apt-get install python3-venv)"
fi
mkdir -p "$prefix/logs"
stamp="$prefix/.stamp-pip"
want="$(cat "$req" "$0" | sha256sum | cut -d' ' -f1)"
if [ "${WAM_SETUP_FORCE:-0}" = 1 ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    say "pip install -r requirements/gpu.txt: about 1.3 GB (log: $prefix/logs/pip.log)"
    if ! "$prefix/bin/python" -m pip install --disable-pip-version-check -r "$req" >"$prefix/logs/pip.log" 2>&1; then
        tail -n 30 "$prefix/logs/pip.log" >&2
        die "pip install failed"
    fi
    echo "$want" >"$stamp"
else
    say "onnxruntime-gpu up to date"
fi

site="$("$prefix/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
lib="$(ls "$site"/onnxruntime/capi/libonnxruntime.so.* 2>/dev/null | head -n1)"
[ -n "$lib" ] || die "no libonnxruntime.so in $site/onnxruntime/capi"
for p in cuda tensorrt; do
    [ -f "$site/onnxruntime/capi/libonnxruntime_providers_$p.so" ] \
        && say "provider library: libonnxruntime_providers_$p.so" \
        || say "provider library missing: libonnxruntime_providers_$p.so"
done
say "ORT_DYLIB_PATH=$lib"
say "CUDA/cuDNN libraries: $(ls -d "$site"/nvidia/*/lib 2>/dev/null | tr '\n' ' ')"
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    say "GPU: $(nvidia-smi -L | head -n1)"
else
    say "no NVIDIA driver/GPU here (no working nvidia-smi): the CUDA provider will fail to register and fall back"
fi
if [ -n "${WAM_TRT_LIB_DIR:-}" ] && ls "$WAM_TRT_LIB_DIR"/libnvinfer.so.10* >/dev/null 2>&1; then
    say "TensorRT 10: $WAM_TRT_LIB_DIR"
elif ldconfig -p 2>/dev/null | grep -q 'libnvinfer.so.10'; then
    say "TensorRT 10: on the system library path"
else
    say "TensorRT 10 not found: not on PyPI; install it from NVIDIA (apt 'tensorrt' from NVIDIA's CUDA repository," \
        "or the tar from developer.nvidia.com/tensorrt) and set WAM_TRT_LIB_DIR or the trt_lib_dir parameter"
fi
say "done in $((SECONDS - t0)) s; now: source scripts/env.sh --gpu"
