"""Does a bundle follow the instruction or the arm's motion? ``python -m wam_eval.grounding``.

For each seed and each cube colour, the scripted expert first drives the arm towards that cube for
``--lead-s`` seconds; then the bundle (ONNX Runtime, no ROS) is asked, from that observation, to touch
each of the three cubes. The end of each predicted chunk is mapped to the fingertip (forward kinematics)
and assigned to the nearest cube. A policy grounded in the instruction goes to the asked cube; one that
extrapolates the motion it sees goes to the cube the arm was already moving towards.

Prints one line per (seed, moved-towards colour) and the two rates: ends nearest the asked cube, and
ends nearest the cube the arm was moving towards (asked != moved pairs only).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import mujoco
import numpy as np
from wam_model.ort_runner import BundleRunner
from wam_model.spec import tokenize
from wam_sim.env import SimEnv
from wam_sim.expert import Expert
from wam_sim.scene import CAMERA_NAMES, CUBE_COLOURS

from .procs import REPO


def _model_frames(images: dict[str, np.ndarray]) -> np.ndarray:
    """Both cameras' current image as the bundle's [1, V, T=2, 3, H, W] input (the frame repeated)."""
    fr = np.stack([images[c] for c in CAMERA_NAMES]).astype(np.float32) / 255.0  # V, H, W, 3
    x = np.stack([fr, fr], axis=1)
    return (((x - 0.5) / 0.5).transpose(0, 1, 4, 2, 3)[None]).astype(np.float32)


def run(bundle: Path, seeds: Sequence[int], lead_s: float) -> dict[str, float]:
    runner = BundleRunner(bundle)
    m = runner.manifest
    horizon, joints = int(m["action"]["horizon"]), len(m["action"]["joints"])
    video = [1, len(m["cameras"]), int(m["video"]["frames"]), *m["video"]["latent_shape"]]
    if "decode" not in runner.sessions:
        video[2] = 1
    steps = int(m["sampler"]["steps"])
    rng = np.random.default_rng(0)
    env = SimEnv((64, 64))
    fk = mujoco.MjData(env.model)
    asked_hits = moved_hits = pairs = 0
    for seed in seeds:
        for moved in CUBE_COLOURS:
            env.reset(seed, f"touch the {moved} cube")
            expert = Expert(env)
            for _ in range(int(round(lead_s / 0.1))):
                env.set_target(expert.target(env))
                env.step(0.1)
            mujoco.mj_forward(env.model, env.data)
            x = _model_frames(env.render())
            q = env.qpos().astype(np.float32)
            cubes = {c: env.cube_position(c) for c in CUBE_COLOURS}
            row = []
            for asked in CUBE_COLOURS:
                tokens = np.array(tokenize(f"touch the {asked} cube", 8), dtype=np.int64)
                noise_a = rng.standard_normal((1, horizon, joints)).astype(np.float32)
                noise_v = rng.standard_normal(video).astype(np.float32)
                actions, _, _ = runner.run(x, q, tokens, noise_a, noise_v, steps)
                fk.qpos[env._arm_qadr] = actions[-1][:6]
                mujoco.mj_kinematics(env.model, fk)
                tip = fk.site_xpos[env._tip]
                nearest = min(cubes, key=lambda c: float(np.linalg.norm(tip[:2] - cubes[c][:2])))
                row.append(f"asked {asked} -> {nearest}")
                if asked != moved:
                    pairs += 1
                    asked_hits += nearest == asked
                    moved_hits += nearest == moved
            print(f"seed {seed}, moved towards {moved}: " + ", ".join(row), flush=True)
    env.close()
    rates = {
        "asked": asked_hits / max(1, pairs),
        "moved_towards": moved_hits / max(1, pairs),
        "pairs": float(pairs),
    }
    print(
        f"asked != moved ({pairs} pairs): ends nearest the asked cube {rates['asked']:.0%}, "
        f"nearest the cube the arm was moving towards {rates['moved_towards']:.0%}"
    )
    return rates


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, default=REPO / "models" / "wam_sim")
    ap.add_argument("--seed0", type=int, default=20000)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--lead-s", type=float, default=1.2, help="seconds of expert motion first")
    a = ap.parse_args(argv)
    run(a.bundle, range(a.seed0, a.seed0 + a.seeds), a.lead_s)


if __name__ == "__main__":
    main()
