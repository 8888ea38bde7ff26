"""Closed-loop demo: the node on a bundle, fed by a replay publisher that plays a simple robot.

``python -m wam_peer.demo [--seconds N] [--bundle DIR]`` (environment of scripts/env.sh).

The replay publisher streams two synthetic moving camera images at 30 Hz and joint states at
100 Hz that follow the node's last trajectory by linear interpolation (as a position controller
would), and switches between a couple of instructions. At the end it prints chunks received,
chunk rate, latency percentiles (from the ActionChunks' total_s and from the status), bad
inputs and the final status. Exits 1 when no chunk arrived, 2 when the node died.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import Image, JointState
from trajectory_msgs.msg import JointTrajectory

from .expected import BUNDLE_JOINTS
from .images import checker_rgb, gradient_rgb, raw_image
from .node_process import TEST_BUNDLE, NodeProcess, node_binary
from .peer import FrameFactory, Peer, PeerTopics, joint_state, stamp_seconds

INSTRUCTIONS = ("reach the red cube", "push the blue object to the marked zone")
CAMERA_RATE_HZ = 30.0
JOINT_RATE_HZ = 100.0


class Follower:
    """Joint positions that track the newest trajectory: linear interpolation from where the arm
    was when the trajectory arrived to its first point, then between points, then holding the
    last one."""

    def __init__(self, peer: Peer, start: Sequence[float]) -> None:
        self.peer = peer
        self.q = np.asarray(start, dtype=np.float64)
        self._seen = 0
        self._lock = threading.Lock()
        # (absolute time of each knot, positions [K, A]); starts holding `start`.
        self._times = np.asarray([0.0])
        self._knots = self.q[None, :].copy()

    def _adopt(self, traj: JointTrajectory, now: float) -> None:
        names = list(traj.joint_names)
        if not traj.points or len(names) != len(self.q):
            return
        stamp = stamp_seconds(traj.header.stamp)
        times = [now]
        knots = [self.q.copy()]
        for p in traj.points:
            t = stamp + p.time_from_start.sec + p.time_from_start.nanosec * 1e-9
            if t <= times[-1]:
                continue
            times.append(t)
            knots.append(np.asarray(p.positions, dtype=np.float64))
        self._times = np.asarray(times)
        self._knots = np.stack(knots)

    def positions(self, now: float) -> np.ndarray:
        with self._lock:
            with self.peer.lock:
                fresh = self.peer.trajectories[self._seen :]
                self._seen = len(self.peer.trajectories)
            for r in fresh:
                self._adopt(r.msg, now)
            q = np.empty_like(self.q)
            for j in range(len(q)):
                q[j] = np.interp(now, self._times, self._knots[:, j])
            self.q = q
            return q


def _camera_factory(camera: int, width: int, height: int) -> FrameFactory:
    """Moving synthetic images: a sliding gradient (camera 0) or a drifting checkerboard."""
    cache: dict[int, Image] = {}

    def make(index: int, now: Time) -> Image:
        phase = index % 64
        msg = cache.get(phase)
        if msg is None:
            if camera == 0:
                rgb = gradient_rgb(width, height, offset=4 * phase)
            else:
                board = checker_rgb(width + 8, height + 8, 30 + phase, 220 - phase, cell=8)
                o = phase % 8
                rgb = np.ascontiguousarray(board[o : o + height, o : o + width])
            msg = raw_image(rgb, "rgb8", frame_id=f"camera{camera}")
            cache[phase] = msg
        msg.header.stamp = now
        return msg

    return make


def _percentiles(values: Sequence[float]) -> tuple[float, float, float]:
    if not values:
        return (float("nan"),) * 3
    a = np.asarray(values, dtype=np.float64)
    return float(np.percentile(a, 50)), float(np.percentile(a, 95)), float(a.max())


def _ms(x: float) -> str:
    return "-" if x != x else f"{1000.0 * x:8.2f} ms"


def run(seconds: float, bundle: Path, domain: int, binary: Path, rust_log: str) -> int:
    topics = PeerTopics()
    params = dict(topics.node_params())
    params.update(
        {
            "bundle_path": str(bundle),
            "enabled_at_start": True,
            "instruction": INSTRUCTIONS[0],
            "joint_names": list(BUNDLE_JOINTS),
        }
    )
    start_q = [0.0, -0.3, 0.0, -1.5, 0.0, 1.2, 0.02]
    with NodeProcess(params, domain, binary=binary, rust_log=rust_log) as node:
        with Peer(domain, topics, name="wam_demo") as peer:
            follower = Follower(peer, start_q)

            def joints(_index: int, now: Time) -> JointState:
                q = follower.positions(stamp_seconds(now))
                return joint_state(BUNDLE_JOINTS, q.tolist(), now)

            for i, cam in enumerate(topics.cameras):
                peer.set_camera(cam, _camera_factory(i, 64, 48), CAMERA_RATE_HZ)
            peer.set_joints(joints, JOINT_RATE_HZ)
            peer.set_instruction(INSTRUCTIONS[0])
            peer.wait_for(lambda: peer.wait_for_node(0.0) or not node.running(), 20.0)
            if not node.running() or not peer.wait_for_node(0.0):
                print(f"node not discovered; log tail:\n{node.stderr_tail()}", file=sys.stderr)
                return 2
            t0 = peer.mark()
            switched = False
            while time.monotonic() - t0 < seconds:
                if not node.running():
                    print(
                        f"node exited ({node.returncode}):\n{node.stderr_tail()}", file=sys.stderr
                    )
                    return 2
                if not switched and time.monotonic() - t0 >= seconds / 2:
                    peer.set_instruction(INSTRUCTIONS[1])
                    switched = True
                time.sleep(0.05)
            elapsed = time.monotonic() - t0
            chunks = peer.chunks_since(t0)
            trajectories = peer.trajectories_since(t0)
            final = peer.latest_status()
            q_final = follower.q.copy()
    total = [c.total_s for c in chunks]
    p50, p95, pmax = _percentiles(total)
    rows: list[tuple[str, str]] = [
        ("run time", f"{elapsed:.1f} s"),
        ("chunks received", str(len(chunks))),
        ("trajectories received", str(len(trajectories))),
        ("chunks/s", f"{len(chunks) / elapsed:.2f}" if elapsed > 0 else "-"),
        ("latency p50 (chunk total_s)", _ms(p50)),
        ("latency p95 (chunk total_s)", _ms(p95)),
        ("latency max (chunk total_s)", _ms(pmax)),
    ]
    if final is not None:
        rows += [
            ("latency p50 (status)", _ms(final.latency_p50_s)),
            ("latency p95 (status)", _ms(final.latency_p95_s)),
            ("latency max (status)", _ms(final.latency_max_s)),
            ("chunk rate (status)", f"{final.chunk_rate_hz:.2f} Hz"),
            ("bad images", str(final.bad_images)),
            ("bad joint states", str(final.bad_joint_states)),
            ("bad instructions", str(final.bad_instructions)),
            ("stale observations", str(final.stale_observations)),
            ("safety rejections", str(final.safety_rejections)),
            ("inferences", str(final.inferences)),
            ("chunks published (status)", str(final.chunks_published)),
            ("final state", f"{final.state_name} {final.detail}".strip()),
            ("provider", final.execution_provider),
            ("model", final.model_id),
        ]
    else:
        rows.append(("final state", "no status received"))
    rows.append(("final joint positions", np.array2string(q_final, precision=3)))
    width = max(len(k) for k, _ in rows)
    print(f"wam_policy demo ({bundle})")
    print("-" * (width + 30))
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0 if chunks else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m wam_peer.demo", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="run time (default 10)")
    parser.add_argument("--bundle", type=Path, default=TEST_BUNDLE, help="model bundle folder")
    parser.add_argument(
        "--domain",
        type=int,
        default=int(os.environ.get("WAM_DEMO_DOMAIN", str(os.getpid() % 100 + 1))),
        help="ROS_DOMAIN_ID (default from the pid, 1..100)",
    )
    parser.add_argument("--binary", type=Path, default=node_binary(), help="node binary")
    parser.add_argument("--rust-log", default="warn", help="RUST_LOG of the node")
    args = parser.parse_args(argv)
    return run(args.seconds, args.bundle.resolve(), args.domain, args.binary, args.rust_log)


if __name__ == "__main__":
    sys.exit(main())
