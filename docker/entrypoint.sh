#!/usr/bin/env bash
# Entrypoint of docker/Dockerfile: the ROS environment (the wheel prefix, the GPU build of ONNX Runtime,
# TensorRT if present), the colcon install space, then `ros2 launch wam_policy robot.launch.py "$@"`.
set -eo pipefail
cd /ws/src/wam_policy
# shellcheck disable=SC1091
source scripts/env.sh --gpu
if [ -f /opt/ros/jazzy/setup.bash ]; then source /opt/ros/jazzy/setup.bash; fi
# shellcheck disable=SC1091
source /ws/install/local_setup.bash
trt_cache="${WAM_TRT_CACHE_DIR:-/var/cache/wam_policy/trt}"
mkdir -p "$trt_cache"
if command -v ros2 >/dev/null 2>&1 && ros2 launch --help >/dev/null 2>&1; then
    exec ros2 launch wam_policy robot.launch.py "$@"
fi
# The pip wheels carry no `launch`/`ros2cli` (docs: ../shared/ENVIRONMENT.md): run the node itself with the
# same parameters file; `bundle:=X` is mapped to bundle_path.
params="$(ros2 pkg prefix wam_policy 2>/dev/null || echo /ws/install/wam_policy)/share/wam_policy/config/robot.yaml"
extra=()
for a in "$@"; do
    case "$a" in
        bundle:=*) extra+=(-p "bundle_path:=${a#bundle:=}") ;;
        *:=*) echo "wam_entrypoint: without ros2 launch only bundle:= is mapped; ignoring $a" >&2 ;;
    esac
done
echo "wam_entrypoint: ros2 launch not available in this image: starting the node directly" >&2
exec /ws/install/wam_policy/lib/wam_policy/wam_policy_node --ros-args --params-file "$params" \
    -p "trt_cache_dir:=$trt_cache" -p "trt_lib_dir:=${WAM_TRT_LIB_DIR:-}" "${extra[@]}"
