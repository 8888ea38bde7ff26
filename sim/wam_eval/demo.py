"""``make demo``: the sim and the node with the bundled WAM, a few episodes, pictures.

``python -m wam_eval.demo [--out out/demo] [--bundle models/wam_sim]`` starts the sim node and the
wam_policy node, runs one episode per instruction (by default two reach tasks and one push),
prints success and timing per episode and overall, and writes per episode a PNG strip: for a
few moments of the episode, the frames the model predicted for that moment (from
``/wam_policy/predicted/<camera>``, stamped at the time they predict) above the frames the sim's
cameras actually showed then.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from wam_sim.scene import CAMERA_NAMES

from .harness import ClosedLoop, HarnessError
from .procs import REPO

DEFAULT_EPISODES: tuple[tuple[int, str], ...] = (
    (40000, "touch the red cube"),
    (40001, "touch the blue cube"),
    (40002, "push the green cube to the yellow zone"),
)
# Pixels per frame in the strip (frames are scaled up with nearest neighbour).
CELL = 128
LABEL_H = 14


def nearest(
    frames: Sequence[tuple[float, np.ndarray]], t: float
) -> tuple[float, np.ndarray] | None:
    """The (stamp, frame) whose stamp is nearest to ``t``, or None when there are none."""
    if not frames:
        return None
    stamps = np.array([s for s, _ in frames])
    return frames[int(np.argmin(np.abs(stamps - t)))]


def pick_times(stamps: Sequence[float], latest: float, columns: int) -> list[float]:
    """Up to ``columns`` distinct predicted stamps not later than ``latest``, evenly spread."""
    usable = sorted({round(s, 4) for s in stamps if s <= latest})
    if len(usable) <= columns:
        return usable
    idx = np.linspace(0, len(usable) - 1, columns).round().astype(int)
    return [usable[i] for i in idx]


def compose_strip(
    title: str,
    labels: Sequence[str],
    rows: Sequence[tuple[str, Sequence[np.ndarray | None]]],
    cell: int = CELL,
) -> Image.Image:
    """A grid: a title line, one label per column, then per row a name and one frame per column
    (None: a grey cell)."""
    name_w = 84
    cols = len(labels)
    width = name_w + cols * cell
    height = 2 * LABEL_H + len(rows) * (cell + 2)
    img = Image.new("RGB", (max(width, 200), height), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    draw.text((4, 1), title, fill=(0, 0, 0))
    for k, label in enumerate(labels):
        draw.text((name_w + k * cell + 4, LABEL_H + 1), label, fill=(0, 0, 0))
    y = 2 * LABEL_H
    for name, frames in rows:
        draw.text((4, y + cell // 2 - 6), name, fill=(0, 0, 0))
        for k, frame in enumerate(frames):
            x = name_w + k * cell
            if frame is None:
                draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=(200, 200, 200))
                continue
            tile = Image.fromarray(np.ascontiguousarray(frame, dtype=np.uint8)).resize(
                (cell, cell), Image.Resampling.NEAREST
            )
            img.paste(tile, (x, y))
        y += cell + 2
    return img


def episode_strip(loop: ClosedLoop, title: str, t0: float, columns: int = 8) -> Image.Image | None:
    """The strip of the episode just run (from the observer's buffers), or None without
    predicted frames."""
    obs = loop.observer
    assert obs is not None
    with obs.lock:
        predicted = {c: list(v) for c, v in obs.predicted.items()}
        actual = {c: list(v) for c, v in obs.camera_frames.items()}
    cams = [c for c in CAMERA_NAMES if predicted.get(c)]
    if not cams:
        return None
    latest = (
        min(actual[c][-1][0] for c in cams if actual[c]) if all(actual[c] for c in cams) else 0.0
    )
    times = pick_times([s for s, _ in predicted[cams[0]]], latest + 0.05, columns)
    if not times:
        return None
    rows: list[tuple[str, list[np.ndarray | None]]] = []
    for c in cams:
        pred_row: list[np.ndarray | None] = []
        act_row: list[np.ndarray | None] = []
        for t in times:
            p = nearest(predicted[c], t)
            a = nearest(actual[c], t)
            pred_row.append(p[1] if p and abs(p[0] - t) < 1e-3 else None)
            act_row.append(a[1] if a and abs(a[0] - t) < 0.1 else None)
        rows += [(f"{c}\npredicted", pred_row), (f"{c}\nactual", act_row)]
    labels = [f"t={t - t0:+.1f}s" for t in times]
    return compose_strip(title, labels, rows)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--bundle", type=Path, default=REPO / "models" / "wam_sim")
    ap.add_argument("--out", type=Path, default=REPO / "out" / "demo")
    ap.add_argument("--domain", type=int, default=92, help="ROS_DOMAIN_ID")
    ap.add_argument(
        "--instruction",
        action="append",
        default=None,
        help="instruction of an episode (repeat; default: 2 reach + 1 push)",
    )
    ap.add_argument("--seed0", type=int, default=40000)
    args = ap.parse_args(argv)
    if not (args.bundle / "wam.yaml").exists():
        print(f"demo: no model bundle at {args.bundle} (wam.yaml missing)", file=sys.stderr)
        return 2
    episodes = (
        [(args.seed0 + i, text) for i, text in enumerate(args.instruction)]
        if args.instruction
        else list(DEFAULT_EPISODES)
    )
    args.out.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    print(f"demo: starting the sim and wam_policy on {args.bundle} ...", flush=True)
    results = []
    try:
        with ClosedLoop(args.bundle, args.domain, record_cameras=True) as loop:
            print(f"demo: both nodes up in {time.monotonic() - t_start:.1f} s", flush=True)
            for i, (seed, text) in enumerate(episodes):
                r = loop.run_episode(seed, text)
                results.append(r)
                tts = f"solved in {r.time_to_success_s:.1f} s" if r.success else "not solved"
                print(
                    f"episode {i + 1} (seed {seed}) {text!r}: {tts} "
                    f"(ran {r.elapsed_s:.1f} s simulated, {r.wall_s:.1f} s wall); gripper to "
                    f"object {r.initial_gripper_to_object_m:.3f} -> "
                    f"{r.final_gripper_to_object_m:.3f} m"
                    + (
                        f", object to zone {r.initial_object_to_goal_m:.3f} -> "
                        f"{r.final_object_to_goal_m:.3f} m"
                        if r.task_family == "push"
                        else ""
                    )
                    + f"; {r.chunks} chunks, compute p50 "
                    f"{(r.compute_s['p50'] or 0.0) * 1e3:.0f} ms, idle {r.idle_time_s:.2f} s",
                    flush=True,
                )
                title = f"{text} (seed {seed}): {tts} - top: predicted, bottom: actual"
                strip = episode_strip(loop, title, float(r.extra["t_enable"]))
                if strip is None:
                    print("  no predicted frames received: no picture", flush=True)
                    continue
                path = args.out / f"episode_{i + 1}_{text.replace(' ', '_')}.png"
                strip.save(path)
                print(f"  picture: {path}", flush=True)
    except HarnessError as e:
        print(f"demo failed: {e}", file=sys.stderr)
        return 1
    n_ok = sum(r.success for r in results)
    print(
        f"demo: {n_ok}/{len(results)} episodes solved, {time.monotonic() - t_start:.0f} s in "
        f"all; pictures in {args.out}/"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
