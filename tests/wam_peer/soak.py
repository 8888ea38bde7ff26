"""Soak bench: the node with a model under camera and joint-state load for minutes, over the real graph.

``python -m wam_peer.soak [--minutes 10] [--width 1280 --height 720] [--profile | --no-profile]``
(environment of scripts/env.sh, from tests/; not part of ``make test``: figures, not assertions).

The peer (another process, as a camera driver would be) publishes the bundle's cameras as rgb8 frames
at ``--camera-hz`` and joint states at ``--joint-hz``; the node runs the bundle (default the trained WAM
``models/wam_sim``) enabled with an instruction. Every ``--period-s`` it reports: node RSS and CPU,
chunk latency p50/p99 (ActionChunk total_s), chunks/s, frames published by the peer against frames the
node took from its subscriptions (r2r's queues drop silently when full: the difference is what was lost
in transport or queues), the frames the node itself reports missed (stamp gaps), joint states likewise,
idle time, and the reaction latency (observation stamp to publication). ``--profile`` sets
FASTRTPS_DEFAULT_PROFILES_FILE to config/fastdds_camera_frames.xml for both processes. Prints a markdown
table and writes ``--out`` (JSON) and a PNG plot of RSS and latency.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .node_process import REPO, NodeProcess, node_binary

PROFILE = REPO / "config" / "fastdds_camera_frames.xml"


@dataclass
class Row:
    minute: float
    rss_mb: float
    rss_anon_mb: float
    rss_shmem_mb: float
    cpu_cores: float
    latency_p50_ms: float
    latency_p99_ms: float
    reaction_p50_ms: float
    chunks_per_s: float
    frames_published: int
    frames_received: int
    frames_lost: int
    frames_missed_reported: int
    joint_states_published: int
    joint_states_received: int
    idle_s: float
    safety_rejections: int
    state: str


def _memory(pid: int) -> dict[str, float]:
    """VmRSS, RssAnon (the process's own memory) and RssShmem (shared memory it touched, such as the
    transport's segments) in MB."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key = line.split(":")[0]
        if key in ("VmRSS", "RssAnon", "RssShmem"):
            out[key] = float(line.split()[1]) / 1024.0
    return out


def process_usage(pid: int) -> tuple[float, float]:
    """(RSS in MB, CPU seconds) of a process."""
    rss = _memory(pid).get("VmRSS", 0.0)
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return rss, (int(fields[11]) + int(fields[12])) / ticks


def plot(rows: list[Row], path: Path, title: str) -> None:
    """RSS (MB) and latency p50/p99 (ms) per period, drawn with Pillow (no plotting library needed)."""
    from PIL import Image, ImageDraw

    w, h, pad = 900, 420, 50
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    d.text((pad, 10), title, fill="black")
    xs = [r.minute for r in rows]
    series = [
        ("RSS (MB)", [r.rss_mb for r in rows], (30, 90, 200)),
        ("RSS, own (MB)", [r.rss_anon_mb for r in rows], (120, 40, 160)),
        ("latency p50 (ms)", [r.latency_p50_ms for r in rows], (20, 150, 60)),
        ("latency p99 (ms)", [r.latency_p99_ms for r in rows], (200, 60, 30)),
    ]
    top = max(max(v) for _, v, _ in series if v) * 1.1 or 1.0
    x0, x1, y0, y1 = pad, w - pad, h - pad, 40
    d.line([(x0, y0), (x1, y0)], fill="black")
    d.line([(x0, y0), (x0, y1)], fill="black")
    xmax = max(xs) or 1.0
    for k, (name, values, colour) in enumerate(series):
        pts = [(x0 + (x1 - x0) * x / xmax, y0 - (y0 - y1) * v / top) for x, v in zip(xs, values)]
        if len(pts) > 1:
            d.line(pts, fill=colour, width=2)
        d.text((x1 - 170, y1 + 15 * k), name, fill=colour)
    d.text((x0, y0 + 10), "0", fill="black")
    d.text((x1 - 60, y0 + 10), f"{xmax:.0f} min", fill="black")
    d.text((5, y1), f"{top:.0f}", fill="black")
    img.save(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--period-s", type=float, default=60.0)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--camera-hz", type=float, default=30.0)
    ap.add_argument("--joint-hz", type=float, default=500.0)
    ap.add_argument("--bundle", type=Path, default=REPO / "models" / "wam_sim")
    ap.add_argument("--profile", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--domain", type=int, default=93)
    ap.add_argument("--out", type=Path, default=REPO / "out" / "soak.json")
    args = ap.parse_args()
    if args.profile:
        os.environ["FASTRTPS_DEFAULT_PROFILES_FILE"] = str(PROFILE)
    else:
        os.environ.pop("FASTRTPS_DEFAULT_PROFILES_FILE", None)
    # rclpy reads the profile when the peer's participant is created: import after setting it.
    from .expected import BUNDLE_JOINTS
    from .images import gradient_rgb, raw_image
    from .peer import Peer, PeerTopics, fixed_frame, fixed_joints

    params = {
        "bundle_path": str(args.bundle),
        "instruction": "touch the red cube",
        "enabled_at_start": True,
        "joint_names": list(BUNDLE_JOINTS),
        "joint_limits.lower": [-2.8973, -1.7628, -2.8973, -3.0, -2.8973, -0.0175, 0.0],
        "joint_limits.upper": [2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7, 0.04],
        "joint_limits.max_velocity": [2.0, 2.0, 2.0, 2.0, 2.5, 2.5, 0.2],
        "joint_limits.max_jump": 0.4,
        "intra_op_threads": 1,
    }
    q = [0.0, -0.3, 0.0, -2.2, 0.0, 2.0, 0.02]
    rows: list[Row] = []
    with NodeProcess(params, args.domain, binary=node_binary()) as node:
        with Peer(args.domain, PeerTopics()) as peer:
            frame = raw_image(gradient_rgb(args.width, args.height), "rgb8")
            for cam in ("exterior", "wrist"):
                peer.set_camera(cam, fixed_frame(frame), args.camera_hz)
            peer.set_joints(fixed_joints(BUNDLE_JOINTS, q), args.joint_hz)
            if not peer.wait_for_node(30.0):
                raise SystemExit(f"node not discovered: {node.stderr_tail()}")
            pid = node.pid
            assert pid is not None
            start = time.monotonic()
            last_t, (_, last_cpu) = start, process_usage(pid)
            last_sent = last_recv = last_missed = last_js_sent = last_js_recv = 0
            last_idle = 0.0
            last_chunks = last_rejections = 0
            while time.monotonic() - start < args.minutes * 60.0:
                time.sleep(args.period_s)
                now = time.monotonic()
                rss, cpu = process_usage(pid)
                status = peer.latest_status()
                with peer.lock:
                    sent = sum(len(s) for s in peer.sent_stamps.values())
                    js_sent = peer.sent_joint_states
                    chunks = [c.msg for c in peer.chunks[last_chunks:]]
                    last_chunks = len(peer.chunks)
                lat = np.asarray([c.total_s for c in chunks]) * 1e3
                recv = sum(status.camera_frames_received) if status else 0
                missed = sum(status.camera_frames_missed) if status else 0
                js_recv = status.joint_states_received if status else 0
                idle = status.idle_time_s if status else 0.0
                rejections = status.safety_rejections if status else 0
                memory = _memory(pid)
                rows.append(
                    Row(
                        minute=(now - start) / 60.0,
                        rss_mb=rss,
                        rss_anon_mb=memory.get("RssAnon", 0.0),
                        rss_shmem_mb=memory.get("RssShmem", 0.0),
                        cpu_cores=(cpu - last_cpu) / (now - last_t),
                        latency_p50_ms=float(np.percentile(lat, 50)) if len(lat) else 0.0,
                        latency_p99_ms=float(np.percentile(lat, 99)) if len(lat) else 0.0,
                        reaction_p50_ms=(status.reaction_latency_p50_s * 1e3) if status else 0.0,
                        chunks_per_s=len(chunks) / (now - last_t),
                        frames_published=sent - last_sent,
                        frames_received=recv - last_recv,
                        frames_lost=(sent - last_sent) - (recv - last_recv),
                        frames_missed_reported=missed - last_missed,
                        joint_states_published=js_sent - last_js_sent,
                        joint_states_received=js_recv - last_js_recv,
                        idle_s=idle - last_idle,
                        safety_rejections=rejections - last_rejections,
                        state=status.state_name if status else "?",
                    )
                )
                print(rows[-1], flush=True)
                last_t, last_cpu = now, cpu
                last_sent, last_recv, last_missed = sent, recv, missed
                last_js_sent, last_js_recv, last_idle = js_sent, js_recv, idle
                last_rejections = rejections
    label = "with" if args.profile else "without"
    print(
        f"\n{args.width}x{args.height} rgb8 x2 at {args.camera_hz:g} Hz, joint states at "
        f"{args.joint_hz:g} Hz, {args.bundle.name}, {label} the transport profile\n"
    )
    print(
        "| min | RSS: all / own / shared (MB) | CPU (cores) | latency p50/p99 (ms) | reaction p50 (ms) "
        "| chunks/s | frames published / received / lost | missed (node) | joint states pub / recv "
        "| idle (s) | safety rejections |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r.minute:.1f} | {r.rss_mb:.1f} / {r.rss_anon_mb:.1f} / {r.rss_shmem_mb:.1f} "
            f"| {r.cpu_cores:.2f} | {r.latency_p50_ms:.1f} / "
            f"{r.latency_p99_ms:.1f} | {r.reaction_p50_ms:.0f} | {r.chunks_per_s:.2f} | "
            f"{r.frames_published} / {r.frames_received} / {r.frames_lost} | "
            f"{r.frames_missed_reported} | {r.joint_states_published} / {r.joint_states_received} "
            f"| {r.idle_s:.2f} | {r.safety_rejections} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps([asdict(r) for r in rows], indent=1))
    plot(rows, args.out.with_suffix(".png"), f"soak, {label} the transport profile")


if __name__ == "__main__":
    main()
