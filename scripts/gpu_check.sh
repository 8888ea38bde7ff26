#!/usr/bin/env bash
# One prepared check of the GPU providers on a machine with an NVIDIA GPU (README "GPU and containers"):
#   1. provider registration: cpu, cuda, tensorrt, each alone (the reason when one cannot run);
#   2. parity GPU vs CPU on the bundled models (same seed, same number of chunks; tolerances below);
#   3. per-stage timings CPU vs CUDA, with and without CUDA graphs (cuda_graph), vs TensorRT where its
#      libraries exist: `check --runs N`;
#   4. TensorRT engine-cache reuse: session build time of two consecutive starts on a fresh cache.
# Prints a markdown table (also written to <out>/gpu_check.md, with every run's log beside it).
#
#     scripts/gpu_check.sh [--cpu-only] [--node BIN] [--ort-lib PATH] [--trt-lib-dir DIR]
#                          [--runs N] [--out DIR] [--bundles "models/wam_sim models/wam_sim_dz"]
#
# Without a working GPU (no nvidia-smi or no device) it says so and runs the CPU part only; the GPU
# providers are still asked for, to show their fallback. Nothing is downloaded: the machine may be offline.
#   --node     the node binary. A GPU machine without ROS needs a build without the ROS layer:
#              cargo build --release --no-default-features --features cuda,tensorrt
#              (default: $CARGO_TARGET_DIR or target/, release/wam_policy_node)
#   --ort-lib  libonnxruntime.so.1.31.1 of the onnxruntime-gpu 1.31.1 wheel, with
#              libonnxruntime_providers_{shared,cuda,tensorrt}.so beside it (default: $ORT_DYLIB_PATH,
#              else .prefix-gpu, else .prefix: the CPU build)
#   CUDA 13 / cuDNN 9: the nvidia/*/lib folders beside --ort-lib's wheel, else those of `python3`'s
#   site-packages (the torch/nvidia wheels), are put on LD_LIBRARY_PATH and given as cuda_lib_dir/cudnn_lib_dir.
#   --trt-lib-dir  TensorRT 10 (libnvinfer.so.10, ...; default: $WAM_TRT_LIB_DIR, else the library path).
#
# Parity tolerances (max |GPU - CPU| over the last chunk's outputs, fp32 on both sides): actions 1e-3
# (joint units: rad or m), predicted video latents 1e-2, decoded frames 1e-2 (RGB in [0, 1]); TensorRT
# with fp16 ten times those.
set -uo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cpu_only=0
node=""
ort_lib="${ORT_DYLIB_PATH:-}"
trt_dir="${WAM_TRT_LIB_DIR:-}"
runs=50
out="$repo/out/gpu_check"
bundles="$repo/models/wam_sim $repo/models/wam_sim_dz"
while [ $# -gt 0 ]; do
    case "$1" in
        --cpu-only) cpu_only=1 ;;
        --node) node="$2"; shift ;;
        --ort-lib) ort_lib="$2"; shift ;;
        --trt-lib-dir) trt_dir="$2"; shift ;;
        --runs) runs="$2"; shift ;;
        --out) out="$2"; shift ;;
        --bundles) bundles="$2"; shift ;;
        -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
        *) echo "gpu_check: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
say() { printf '[gpu_check] %s\n' "$*" >&2; }
mkdir -p "$out"
report="$out/gpu_check.md"
: >"$report"
emit() { printf '%s\n' "$*" | tee -a "$report"; }

# --- the node, ONNX Runtime, the libraries ---------------------------------------------------------------------
if [ -z "$node" ]; then
    node="${CARGO_TARGET_DIR:-$repo/target}/release/wam_policy_node"
fi
[ -x "$node" ] || { say "no node binary at $node (--node BIN)"; exit 2; }
if [ -z "$ort_lib" ]; then
    for c in "$repo"/.prefix-gpu/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* \
             "$repo"/.prefix/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.*; do
        if [ -f "$c" ]; then ort_lib="$c"; break; fi
    done
fi
[ -f "$ort_lib" ] || { say "no libonnxruntime.so (--ort-lib PATH or ORT_DYLIB_PATH)"; exit 2; }
export ORT_DYLIB_PATH="$ort_lib"
ort_dir="$(dirname "$ort_lib")"
gpu_build=0
[ -f "$ort_dir/libonnxruntime_providers_cuda.so" ] && gpu_build=1

# CUDA 13 / cuDNN 9 folders: beside the ORT wheel, else python3's site-packages.
cuda_dir=""; cudnn_dir=""
nvidia_roots=("${ort_dir%/onnxruntime/capi}/nvidia")
if command -v python3 >/dev/null 2>&1; then
    while IFS= read -r d; do nvidia_roots+=("$d/nvidia"); done < <(python3 -c \
        'import site, sys; print("\n".join(site.getsitepackages() + [site.getusersitepackages()]))' 2>/dev/null)
fi
for r in "${nvidia_roots[@]}"; do
    [ -z "$cuda_dir" ] && [ -f "$r/cu13/lib/libcudart.so.13" ] && cuda_dir="$r/cu13/lib"
    [ -z "$cuda_dir" ] && [ -f "$r/cuda_runtime/lib/libcudart.so.13" ] && cuda_dir="$r/cuda_runtime/lib"
    [ -z "$cudnn_dir" ] && [ -f "$r/cudnn/lib/libcudnn.so.9" ] && cudnn_dir="$r/cudnn/lib"
    if [ -d "$r" ]; then
        for d in "$r"/*/lib; do
            [ -d "$d" ] && export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        done
    fi
done
[ -n "$trt_dir" ] && export LD_LIBRARY_PATH="$trt_dir:${LD_LIBRARY_PATH:-}"
# The ROS prefix's libraries, when the node was built with the ROS layer (this project's own machines).
if ! "$node" params >/dev/null 2>&1 && [ -f "$repo/scripts/env.sh" ] && [ -d "$repo/.prefix" ]; then
    keep_ort="$ORT_DYLIB_PATH"
    # shellcheck disable=SC1091
    source "$repo/scripts/env.sh" >/dev/null 2>&1 || true
    export ORT_DYLIB_PATH="$keep_ort"
fi
if ! "$node" params >/dev/null 2>&1; then
    say "$node does not start here (ROS libraries missing?): build it with"
    say "  cargo build --release --no-default-features --features cuda,tensorrt"
    "$node" params 2>&1 | head -n 3 >&2
    exit 2
fi

gpu_name=""
if [ "$cpu_only" = 0 ] && command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    gpu_name="$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -n1)"
else
    [ "$cpu_only" = 1 ] && say "--cpu-only: the GPU providers are asked for only to show their fallback" \
        || say "no NVIDIA GPU here (no working nvidia-smi): CPU part only; the GPU providers show their fallback"
fi

common=()
[ -n "$cuda_dir" ] && common+=(--param "cuda_lib_dir=$cuda_dir")
[ -n "$cudnn_dir" ] && common+=(--param "cudnn_lib_dir=$cudnn_dir")
[ -n "$trt_dir" ] && common+=(--param "trt_lib_dir=$trt_dir")

strip() { sed -e 's/\x1b\[[0-9;]*m//g'; }
# check <log name> <bundle> <providers> <runs> [args...]: runs `check`, log in $out/<name>.log; rc.
check() {
    local name="$1" bundle="$2" providers="$3" n="$4"; shift 4
    "$node" check "$bundle" --providers "$providers" --runs "$n" "${common[@]}" "$@" 2>&1 | strip >"$out/$name.log"
    return "${PIPESTATUS[0]}"
}
field() { awk -v k="$2" '$1 == k { print $2; exit }' "$out/$1.log"; }       # field <log> provider
p50() { awk -v k="$2" '$1 == k && NF == 4 { print $2; exit }' "$out/$1.log"; } # p50 <log> <stage>
p95() { awk -v k="$2" '$1 == k && NF == 4 { print $3; exit }' "$out/$1.log"; }
built() { sed -n 's/^sessions *built in \([0-9.]*\) ms.*/\1/p' "$out/$1.log" | head -n1; }
# variant <label>: the parameters of a table row's variant (tensorrt-fp16, cuda-graph).
variant() {
    case "$1" in
        tensorrt-fp16) echo "--param fp16=true" ;;
        cuda-graph) echo "--param cuda_graph=true" ;;
    esac
}
# graphs <log>: the stages `check` says replay a CUDA graph.
graphs() { sed -n 's/^cuda_graph *//p' "$out/$1.log" | head -n1; }
reason() { grep -m1 -E 'no CUDA|TensorRT|has no|not compiled|could not be used|cannot' "$out/$1.log" \
    | sed -e 's/^.*\(WARN\|INFO\) *//' -e 's/; falling back.*$//' -e 's/ provider=.*$//' -e 's/|/\\|/g' | cut -c1-300; }

emit "## gpu_check ($(date -u +%Y-%m-%dT%H:%MZ))"
emit ""
emit "- machine: ${gpu_name:-no NVIDIA GPU}$( [ "$cpu_only" = 1 ] && echo ' (--cpu-only)')"
emit "- ONNX Runtime: $ort_lib ($( [ "$gpu_build" = 1 ] && echo 'GPU build' || echo 'CPU build: no CUDA/TensorRT providers'))"
emit "- CUDA libs: ${cuda_dir:-library path}; cuDNN: ${cudnn_dir:-library path}; TensorRT: ${trt_dir:-library path}"
emit "- node: $node; $runs runs per timing after warm-up"
emit ""

# --- 1. registration --------------------------------------------------------------------------------------------
first="$(echo "$bundles" | awk '{print $1}')"
emit "### Provider registration ($(basename "$first"))"
emit ""
emit "| provider | registered | session build ms | reason when not |"
emit "|---|---|---|---|"
usable=()
for p in cpu cuda tensorrt; do
    check "reg_$p" "$first" "$p" 1 --param "trt_cache_dir=$out/trt_cache_reg"
    rc=$?
    if [ $rc = 0 ] && [ "$(field "reg_$p" provider)" = "$p" ]; then
        emit "| $p | yes | $(built "reg_$p") | |"
        if [ "$cpu_only" = 0 ] || [ "$p" = cpu ]; then usable+=("$p"); fi
    else
        emit "| $p | no | | $(reason "reg_$p") |"
    fi
done
emit ""
gpu_usable=()
for p in "${usable[@]}"; do [ "$p" != cpu ] && gpu_usable+=("$p"); done

# --- 2. parity --------------------------------------------------------------------------------------------------
compare() { # compare <cpu dump> <other dump> <scale>: "max|d| actions, latents, frames" and PASS/FAIL
    python3 - "$1" "$2" "$3" <<'EOF'
import sys
def load(p):
    out = {}
    for line in open(p):
        parts = line.split()
        if parts:
            out[parts[0]] = [float(v) for v in parts[1:]]
    return out
a, b, scale = load(sys.argv[1]), load(sys.argv[2]), float(sys.argv[3])
tol = {"actions": 1e-3 * scale, "video_latents": 1e-2 * scale, "frames": 1e-2 * scale}
cells, ok = [], True
for k in ("actions", "video_latents", "frames"):
    x, y = a.get(k, []), b.get(k, [])
    if len(x) != len(y):
        cells.append("size differs"); ok = False; continue
    d = max((abs(u - v) for u, v in zip(x, y)), default=0.0)
    ok &= d <= tol[k]
    cells.append(f"{d:.2e}")
print(" | ".join(cells) + " | " + ("PASS" if ok else "FAIL"))
EOF
}
emit "### Parity against CPU (same seed, 3 chunks; tolerance actions 1e-3, latents 1e-2, frames 1e-2; fp16 x10)"
emit ""
emit "| bundle | provider | max abs diff actions | latents | frames | result |"
emit "|---|---|---|---|---|---|"
for b in $bundles; do
    bn="$(basename "$b")"
    if ! check "par_${bn}_cpu" "$b" cpu 3 --dump "$out/par_${bn}_cpu.txt"; then
        emit "| $bn | cpu | | | | FAIL: $(tail -n1 "$out/par_${bn}_cpu.log") |"
        continue
    fi
    variants=("${gpu_usable[@]}")
    [ ${#gpu_usable[@]} = 0 ] && variants=(cpu)   # no GPU: the comparison itself, CPU against CPU
    for p in "${variants[@]}"; do
        scales=("$p:1")
        [ "$p" = tensorrt ] && scales+=("tensorrt-fp16:10")
        [ "$p" = cuda ] && scales+=("cuda-graph:1")
        for ps in "${scales[@]}"; do
            label="${ps%%:*}"; scale="${ps##*:}"
            # shellcheck disable=SC2207
            extra=(--param "trt_cache_dir=$out/trt_cache" $(variant "$label"))
            if check "par_${bn}_$label" "$b" "$p" 3 --dump "$out/par_${bn}_$label.txt" "${extra[@]}" \
                && [ "$(field "par_${bn}_$label" provider)" = "$p" ]; then
                shown="$label"; [ ${#gpu_usable[@]} = 0 ] && shown="cpu (repeat; no GPU)"
                [ "$label" = cuda-graph ] && shown="cuda-graph ($(graphs "par_${bn}_$label"))"
                emit "| $bn | $shown | $(compare "$out/par_${bn}_cpu.txt" "$out/par_${bn}_$label.txt" "$scale") |"
            else
                emit "| $bn | $label | | | | FAIL: did not run on $p |"
            fi
        done
    done
done
emit ""

# --- 3. timings -------------------------------------------------------------------------------------------------
emit "### Per-stage latency, p50 ms ($runs runs after warm-up; one chunk = encode + context + denoise x K + decode)"
emit ""
emit "| bundle | provider | encode | context | denoise | decode | total p50 | total p95 | session build ms |"
emit "|---|---|---|---|---|---|---|---|---|"
for b in $bundles; do
    bn="$(basename "$b")"
    for p in "${usable[@]}"; do
        labels=("$p")
        [ "$p" = tensorrt ] && labels+=(tensorrt-fp16)
        [ "$p" = cuda ] && labels+=(cuda-graph)
        for label in "${labels[@]}"; do
            # shellcheck disable=SC2207
            extra=(--param "trt_cache_dir=$out/trt_cache" $(variant "$label"))
            log="time_${bn}_$label"
            if check "$log" "$b" "$p" "$runs" "${extra[@]}"; then
                shown="$label"; [ "$label" = cuda-graph ] && shown="cuda-graph ($(graphs "$log"))"
                emit "| $bn | $shown | $(p50 "$log" encode) | $(p50 "$log" context) | $(p50 "$log" denoise) | $(p50 "$log" decode) | $(p50 "$log" total) | $(p95 "$log" total) | $(built "$log") |"
            else
                emit "| $bn | $label | failed: $(tail -n1 "$out/$log.log" | cut -c1-120) | | | | | | |"
            fi
        done
    done
done
emit ""

# --- 4. engine cache reuse --------------------------------------------------------------------------------------
emit "### TensorRT engine cache: two consecutive starts on a fresh trt_cache_dir"
emit ""
if [[ " ${usable[*]} " == *" tensorrt "* ]]; then
    emit "| bundle | first start (build) ms | second start (cached) ms | cache size |"
    emit "|---|---|---|---|"
    for b in $bundles; do
        bn="$(basename "$b")"
        cache="$out/trt_cache_reuse_$bn"
        rm -rf "$cache"
        check "cache1_$bn" "$b" tensorrt 1 --param "trt_cache_dir=$cache"
        check "cache2_$bn" "$b" tensorrt 1 --param "trt_cache_dir=$cache"
        emit "| $bn | $(built "cache1_$bn") | $(built "cache2_$bn") | $(du -sh "$cache" 2>/dev/null | cut -f1) |"
    done
else
    emit "n/a: TensorRT is not usable here ($(reason reg_tensorrt))."
fi
emit ""
say "report: $report (logs beside it)"
