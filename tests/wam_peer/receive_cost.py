"""What receiving costs: the node disabled, under camera and joint-state load, CPU and where it goes.

``python -m wam_peer.receive_cost [--seconds 20] [--profile | --no-profile] [--perf]`` (environment of
scripts/env.sh, from tests/; a bench, not part of ``make test``).

The peer publishes two 640x480 rgb8 cameras at 30 Hz and joint states at 500 Hz; the node (test
bundle) stays disabled, so everything it spends is the cost of receiving. Prints the node's CPU in
cores over ``--seconds``; with ``--perf``, samples the node with ``perf record`` meanwhile and prints
the share of samples per shared object and the top symbols (DDS, r2r's message conversion, the
node's own preprocessing, the allocator, the kernel).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time

from .soak import PROFILE, process_usage
from .node_process import NodeProcess, node_binary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--profile", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--perf", action="store_true")
    ap.add_argument("--domain", type=int, default=95)
    args = ap.parse_args()
    if args.profile:
        os.environ["FASTRTPS_DEFAULT_PROFILES_FILE"] = str(PROFILE)
    else:
        os.environ.pop("FASTRTPS_DEFAULT_PROFILES_FILE", None)
    from .expected import BUNDLE_JOINTS
    from .images import gradient_rgb, raw_image
    from .peer import Peer, PeerTopics, fixed_frame, fixed_joints

    with NodeProcess({"enabled_at_start": False}, args.domain, binary=node_binary()) as node:
        with Peer(args.domain, PeerTopics()) as peer:
            frame = raw_image(gradient_rgb(640, 480), "rgb8")
            for cam in ("exterior", "wrist"):
                peer.set_camera(cam, fixed_frame(frame), 30.0)
            peer.set_joints(fixed_joints(BUNDLE_JOINTS, [0.1] * 7), 500.0)
            if not peer.wait_for_node(30.0):
                raise SystemExit(f"node not discovered: {node.stderr_tail()}")
            pid = node.pid
            assert pid is not None
            time.sleep(3.0)
            perf = None
            if args.perf:
                perf = subprocess.Popen(
                    ["perf", "record", "-q", "-F", "499", "-g", "-o", "/tmp/wam_receive.perf",
                     "-p", str(pid), "--", "sleep", str(args.seconds)],
                )
            t0, (_, cpu0) = time.monotonic(), process_usage(pid)
            time.sleep(args.seconds)
            t1, (rss, cpu1) = time.monotonic(), process_usage(pid)
            status = peer.latest_status()
            if perf is not None:
                perf.wait()
    label = "with" if args.profile else "without"
    print(f"node disabled, {label} the transport profile: {(cpu1 - cpu0) / (t1 - t0):.3f} cores, "
          f"RSS {rss:.0f} MB; camera rate {list(status.camera_rate_hz) if status else '?'} Hz")
    if args.perf:
        for sort in ("dso", "sym"):
            report = subprocess.run(
                ["perf", "report", "-i", "/tmp/wam_receive.perf", "--no-children", "--stdio",
                 "--sort", sort, "--percent-limit", "2"],
                capture_output=True, text=True, check=False,
            ).stdout
            print("\n".join(l for l in report.splitlines() if l and not l.startswith("#")
                            and "%" in l[:10])[:3000])


if __name__ == "__main__":
    main()
