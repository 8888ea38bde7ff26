"""Speed figures: ``python -m wam_sim.bench`` prints render time per frame and real-time factor."""

from __future__ import annotations

import argparse
import time

from .env import SimEnv
from .expert import expert_episode


def main() -> None:
    """Prints render ms per camera frame, physics real-time factor and expert episode speed."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=64, help="square image size (pixels)")
    ap.add_argument("--frames", type=int, default=50)
    args = ap.parse_args()
    env = SimEnv(image_size=(args.size, args.size))
    env.reset(0)
    env.render()  # warm-up (context creation)
    t = time.perf_counter()
    for _ in range(args.frames):
        env.render()
    per_frame = (time.perf_counter() - t) / args.frames / 2 * 1e3
    print(f"render {args.size}x{args.size}: {per_frame:.2f} ms per camera frame")
    env.reset(1)
    t = time.perf_counter()
    env.step(5.0)
    print(f"physics: real-time factor {5.0 / (time.perf_counter() - t):.1f}")
    t = time.perf_counter()
    ep = expert_episode(env, 2, "push the red cube to the yellow zone", camera_rate_hz=15.0)
    wall = time.perf_counter() - t
    print(
        f"expert push episode with frames: {ep.target_times[-1] + 0.1:.1f} s simulated in "
        f"{wall:.2f} s (success {ep.success})"
    )


if __name__ == "__main__":
    main()
