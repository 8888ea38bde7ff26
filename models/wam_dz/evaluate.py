"""Offline numbers of the exported bundles on the held-out expert episodes (seeds 10000..10059,
`python -m wam_model.dataset`), through ONNX Runtime with the runtime's semantics
(`wam_export.rollout`: cache carried and slid, guidance, UniPC, step reuse, `solver: none`). No
torch.

Per held-out episode, chunk sequences as a closed loop would run them: a reset, then a chunk every
`--period` camera frames (default 18 = 1.2 s, the node's replanning period with
config/sim_policy.yaml), starting at frames 1, 4, ..., 16 (`--starts`: every 3rd frame of the
episode is a chunk of exactly one sequence). Each chunk's observation window holds the two newest
REAL frames. The same chunks, with the same initial noise, go through:

- `wam_sim_dz` (the DreamZero-style WAM, its cache carried through the sequence) and, as an
  ablation, the same bundle with the cache cleared before every chunk;
- `wam_sim_act` (the ACT-like policy, no state);
- `wam_sim` (the committed WAM, format 1, its manifest's K = 2 Euler steps).

Action error against the expert's setpoints over the 16 steps and 7 joints: MSE of the normalized
chunk (the bundles' common action std) and MSE / L1 in physical units (rad; gripper in m), as
models/README.md's offline table. Video: PSNR of the decoded future frames (+0.8 s, +1.6 s)
against the rendered ones, and of copying the last observed frame.

    python -m wam_dz.evaluate [--period 18] [--out models/wam_sim_dz/eval/offline.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from wam_export.ort_backend import open_bundle
from wam_export.rollout import Rollout
from wam_model.dataset import Split, load_split
from wam_model.spec import BUNDLE_DIR, MODELS, ModelSpec

DZ_DIR = MODELS / "wam_sim_dz"
ACT_DIR = MODELS / "wam_sim_act"
MODELS_EVAL = ("dz", "dz_no_cache", "act", "wam_sim")


def psnr(a: NDArray[np.floating], b: NDArray[np.floating]) -> NDArray[np.float64]:
    """Per-image PSNR (dB) over the trailing [3, H, W]."""
    mse = ((np.asarray(a, np.float64) - b) ** 2).reshape(*a.shape[:-3], -1).mean(-1)
    return -10.0 * np.log10(np.maximum(mse, 1e-10))


def sequences(sp: Split, period: int, starts: list[int]) -> list[list[int]]:
    """Sample rows of each chunk sequence (per episode, per start frame)."""
    ep = sp.episode
    first = np.flatnonzero(np.r_[True, ep[1:] != ep[:-1]])
    lengths = np.diff(np.r_[first, len(ep)])
    out = []
    for r0, n in zip(first, lengths):
        for s in starts:
            rows = [int(r0 + k) for k in range(s, int(n), period)]
            if rows:
                out.append(rows)
    return out


def window(sp: Split, row: int) -> NDArray[np.float32]:
    """The observation window [1, V, T, 3, H, W], normalized RGB ((x - 0.5) / 0.5)."""
    u8 = sp.frames[sp.ctx_idx[row]]  # [T, V, H, W, 3]
    x = (u8.astype(np.float32) / 255.0 - 0.5) / 0.5
    return np.ascontiguousarray(x.transpose(1, 0, 4, 2, 3)[None])


def evaluate(
    period: int, starts: list[int], seed: int, threads: int, episodes: int | None = None
) -> dict[str, Any]:
    spec = ModelSpec()
    va = load_split("heldout", spec, max_episodes=episodes)
    runs: dict[str, Rollout] = {
        "dz": open_bundle(DZ_DIR, threads),
        "act": open_bundle(ACT_DIR, threads),
        "wam_sim": open_bundle(BUNDLE_DIR, threads),
    }
    runs["dz_no_cache"] = Rollout(runs["dz"].spec, runs["dz"].backend)
    std = np.asarray(runs["dz"].spec.action.std, np.float64)
    for r in runs.values():
        assert np.allclose(np.asarray(r.spec.action.std, np.float64), std)
    seqs = sequences(va, period, starts)
    rng = np.random.default_rng(seed)
    acc: dict[str, list[Any]] = {
        k: [] for k in ("fam", "hold_se", "hold_nse", "copy_psnr", "position")
    }
    for m in MODELS_EVAL:
        for k in ("se", "nse", "ae", "psnr"):
            acc[f"{m}_{k}"] = []
    t0 = time.time()
    for rows in seqs:
        runs["dz"].clear_state()
        for j, row in enumerate(rows):
            frames = [window(va, row)]
            state = va.state[row].astype(np.float64)
            tokens = va.tokens[row]
            target = va.actions[row].astype(np.float64)
            na = rng.standard_normal((1, spec.horizon, spec.action_dim)).astype(np.float32)
            nv_shape = runs["dz"].spec.video_shape
            nv = rng.standard_normal(nv_shape).astype(np.float32)
            fut = va.frames[va.fut_idx[row]].astype(np.float64) / 255.0  # [F, V, H, W, 3]
            fut = fut.transpose(1, 0, 4, 2, 3)  # [V, F, 3, H, W]
            last = va.frames[va.ctx_idx[row, -1]].astype(np.float64) / 255.0  # [V, H, W, 3]
            last = last.transpose(0, 3, 1, 2)[:, None]
            for m in MODELS_EVAL:
                r = runs[m]
                if m == "dz_no_cache":
                    r.clear_state()
                nvm = nv if r.spec.video_shape == nv_shape else nv[:, :, :1]
                res = r.step(frames, state, tokens, na, nvm)
                err = res.actions - target
                acc[f"{m}_se"].append(float((err**2).mean()))
                acc[f"{m}_nse"].append(float(((err / std) ** 2).mean()))
                acc[f"{m}_ae"].append(float(np.abs(err).mean()))
                if res.frames_out is not None and res.frames_out.shape[2] == fut.shape[1]:
                    acc[f"{m}_psnr"].append(psnr(res.frames_out[0], fut))
            hold = state[None, :] - target
            acc["hold_se"].append(float((hold**2).mean()))
            acc["hold_nse"].append(float(((hold / std) ** 2).mean()))
            acc["copy_psnr"].append(psnr(np.broadcast_to(last, fut.shape), fut))
            acc["fam"].append(int(va.family[row]))
            acc["position"].append(j)
    fam = np.asarray(acc["fam"])
    pos = np.asarray(acc["position"])

    def part(mask: NDArray[np.bool_]) -> dict[str, Any]:
        out: dict[str, Any] = {"chunks": int(mask.sum())}
        for m in MODELS_EVAL:
            out[m] = {
                "action_mse_normalized": float(np.asarray(acc[f"{m}_nse"])[mask].mean()),
                "action_mse": float(np.asarray(acc[f"{m}_se"])[mask].mean()),
                "action_l1": float(np.asarray(acc[f"{m}_ae"])[mask].mean()),
            }
            if acc[f"{m}_psnr"]:
                p = np.asarray(acc[f"{m}_psnr"])[mask]  # [N, V, F]
                out[m]["psnr"] = float(p.mean())
                out[m]["psnr_per_frame"] = [float(x) for x in p.mean(axis=(0, 1))]
        out["hold_state"] = {
            "action_mse_normalized": float(np.asarray(acc["hold_nse"])[mask].mean()),
            "action_mse": float(np.asarray(acc["hold_se"])[mask].mean()),
        }
        cp = np.asarray(acc["copy_psnr"])[mask]
        out["copy_last_psnr"] = float(cp.mean())
        out["copy_last_psnr_per_frame"] = [float(x) for x in cp.mean(axis=(0, 1))]
        return out

    return {
        "heldout_episodes": va.num_episodes,
        "sequences": len(seqs),
        "period_frames": period,
        "starts": starts,
        "noise_seed": seed,
        "samplers": {
            m: f"{runs[m].spec.sampler.solver} K={runs[m].spec.sampler.steps}" for m in runs
        },
        "all": part(np.ones_like(fam, dtype=bool)),
        "reach": part(fam < 3),
        "push": part(fam >= 3),
        "first_chunk": part(pos == 0),
        "later_chunks": part(pos > 0),
        "eval_seconds": time.time() - t0,
    }


def table(res: dict[str, Any]) -> str:
    names = {
        "dz": "DZ WAM",
        "dz_no_cache": "DZ WAM, cache cleared every chunk",
        "act": "ACT",
        "wam_sim": "committed WAM (wam_sim)",
    }
    head = (
        f"| held-out ({res['heldout_episodes']} episodes, {res['all']['chunks']} chunks) | "
        "action MSE normalized (all / reach / push) | action MSE rad (all / reach / push) | "
        "action L1 (all) | video PSNR dB (+0.8 s / +1.6 s) |"
    )
    rows = [head, "|---|---|---|---|---|"]
    for m in (*MODELS_EVAL, "hold_state"):
        cells = []
        for key in ("action_mse_normalized", "action_mse"):
            cells.append(" / ".join(f"{res[p][m][key]:.4f}" for p in ("all", "reach", "push")))
        a = res["all"][m]
        l1 = f"{a['action_l1']:.4f}" if "action_l1" in a else ""
        vid = " / ".join(f"{x:.2f}" for x in a["psnr_per_frame"]) if "psnr_per_frame" in a else ""
        if m == "hold_state":
            vid = "copy last frame: " + " / ".join(
                f"{x:.2f}" for x in res["all"]["copy_last_psnr_per_frame"]
            )
        label = names.get(m, "hold the current state")
        rows.append(f"| {label} | {cells[0]} | {cells[1]} | {l1} | {vid} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--period", type=int, default=18, help="camera frames between chunks")
    ap.add_argument("--starts", type=int, nargs="+", default=[1, 4, 7, 10, 13, 16])
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--episodes", type=int, default=None, help="the first N held-out episodes")
    ap.add_argument("--out", type=Path, default=DZ_DIR / "eval" / "offline.json")
    a = ap.parse_args()
    res = evaluate(a.period, a.starts, a.seed, a.threads, a.episodes)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=1) + "\n")
    print(table(res))
    print(f"{res['eval_seconds']:.0f} s")


if __name__ == "__main__":
    main()
