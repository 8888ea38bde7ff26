"""Setpoint jitter bench: how evenly the node streams setpoints, idle and under camera traffic.

``python -m wam_peer.jitter_bench [--seconds N] [--binary PATH] [--compare PATH]`` (environment of
scripts/env.sh; not part of ``make test``: speed is measured here, never asserted).

The node runs on the test bundle in stream mode (``stream_message: joint_state``, 100 Hz), enabled
through ``~/enable`` once joint states flow, fed joint states at 500 Hz and, in the loaded case, two 640x480 rgb8 cameras at 30 Hz (so chunks are
computed too). Each streamed JointState carries the node-clock time it was made for, so the intervals
between consecutive stamps show the node's own timing, not the transport's. Prints one markdown row
per binary and load: intervals p50/p99/max, the largest deviation from the period, the fraction of
setpoints streamed, and the node's own ``tick_lateness_p99_s`` from /diagnostics when it reports one.
"""

from __future__ import annotations

import argparse
import threading
from pathlib import Path

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import QoSProfile
from sensor_msgs.msg import JointState

from .expected import BUNDLE_JOINTS
from .images import gradient_rgb, raw_image
from .node_process import NodeProcess, node_binary
from .peer import Peer, PeerTopics, fixed_frame, fixed_joints

RATE_HZ = 100.0
TOPIC = "/bench/commands"
Q = [0.1, -0.2, 0.3, -0.4, 0.5, 0.2, 0.02]


def _run(binary: Path, cameras: bool, seconds: float, domain: int) -> dict[str, float]:
    params = {
        "instruction": "reach the red cube",
        "enabled_at_start": False,
        "output_mode": "stream",
        "stream_message": "joint_state",
        "stream_rate_hz": RATE_HZ,
        "stream_topic": TOPIC,
        "publish_predicted_frames": False,
    }
    stamps: list[float] = []
    lateness: list[float] = []
    lock = threading.Lock()
    with NodeProcess(params, domain, binary=binary) as node, Peer(domain, PeerTopics()) as peer:

        def on_setpoint(msg: JointState) -> None:
            with lock:
                stamps.append(msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9)

        def on_diag(msg: DiagnosticArray) -> None:
            for status in msg.status:
                for kv in status.values:
                    if kv.key == "tick_lateness_p99_s":
                        with lock:
                            lateness.append(float(kv.value))

        peer.node.create_subscription(JointState, TOPIC, on_setpoint, QoSProfile(depth=1000))
        peer.node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
        peer.set_joints(fixed_joints(BUNDLE_JOINTS, Q), 500.0)
        if cameras:
            frame = raw_image(gradient_rgb(640, 480), "rgb8")
            for cam in ("exterior", "wrist"):
                peer.set_camera(cam, fixed_frame(frame), 30.0)
        if not peer.wait_for_node(20.0):
            raise SystemExit(f"node not discovered: {node.stderr()[-2000:]}")
        # Enabled once joint states flow: the node streams its hold, then the policy's plan.
        peer.wait_for(lambda: False, 0.5)
        peer.enable(True)
        peer.wait_for(lambda: len(stamps) > 10 or None, 10.0)
        with lock:
            stamps.clear()
        peer.wait_for(lambda: False, seconds)
        with lock:
            s = np.asarray(stamps)
            late = lateness[-1] if lateness else float("nan")
    if len(s) < 3:
        raise SystemExit(f"{binary}: only {len(s)} setpoints streamed")
    dt = np.diff(s)
    period = 1.0 / RATE_HZ
    return {
        "p50_ms": float(np.percentile(dt, 50) * 1e3),
        "p99_ms": float(np.percentile(dt, 99) * 1e3),
        "max_ms": float(dt.max() * 1e3),
        "max_dev_ms": float(np.abs(dt - period).max() * 1e3),
        "streamed": float(len(s) / (seconds * RATE_HZ)),
        "tick_lateness_p99_ms": late * 1e3,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--binary", type=Path, default=node_binary())
    ap.add_argument("--compare", type=Path, help="a second node binary to measure alike")
    ap.add_argument("--domain", type=int, default=90)
    args = ap.parse_args()
    binaries = [args.binary] + ([args.compare] if args.compare else [])
    print(
        "| binary | load | interval p50 (ms) | p99 (ms) | max (ms) | max deviation (ms) "
        "| setpoints streamed | node tick lateness p99 (ms) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    domain = args.domain
    for binary in binaries:
        for cameras in (False, True):
            r = _run(binary, cameras, args.seconds, domain)
            domain += 1
            load = "joint states 500 Hz + 2x640x480 rgb8 30 Hz" if cameras else "joint states 500 Hz"
            print(
                f"| {binary} | {load} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['max_ms']:.2f} "
                f"| {r['max_dev_ms']:.2f} | {r['streamed']:.0%} | {r['tick_lateness_p99_ms']:.2f} |"
            )


if __name__ == "__main__":
    main()
