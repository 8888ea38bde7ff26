"""Offline evaluation on the held-out episodes (seeds >= 10000), from the checkpoint:

- action error of the WAM vs the action-only baseline (same network without video tokens, same data and
  steps): MSE and L1 of the de-normalized action chunk (rad; gripper in m) against the expert's setpoints,
  over every step of the chunk, sampled with the bundle's K Euler steps from fixed seeded noise;
- video prediction PSNR of the WAM's decoded future frames against the copy-the-last-frame baseline
  (and the autoencoder's reconstruction of the true future frames, the ceiling of any latent prediction).

Writes models/wam_sim/eval/offline.json and the table in models/README.md (between the markers).

    python -m wam_model.evaluate [--stride 3]
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .dataset import Split, load_split
from .export import DecodeStage, _stats_f32, torch_pipeline
from .spec import BUNDLE_DIR, INSTRUCTIONS, MODELS
from .train import CHECKPOINT, load_checkpoint, normalize_frames

README = MODELS / "README.md"
BEGIN, END = "<!-- offline:begin -->", "<!-- offline:end -->"


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (dB) of [..., 3, H, W] in [0, 1]."""
    mse = (a - b).pow(2).flatten(-3).mean(-1).clamp_min(1e-10)
    return -10 * torch.log10(mse)


@torch.no_grad()
def evaluate(stride: int, batch: int, seed: int, sweep: tuple[int, ...] = (1, 2, 4, 8)) -> dict[str, Any]:
    spec, stats, ae, wam, base, info = load_checkpoint(CHECKPOINT)
    stats = _stats_f32(stats)
    va: Split = load_split("heldout", spec)
    rows = np.arange(0, va.num_samples, stride)
    g = torch.Generator().manual_seed(seed)
    v, f = spec.num_cameras, spec.video_frames
    lat_shape = (spec.latent_channels, spec.latent_size, spec.latent_size)
    acc: dict[str, list[np.ndarray]] = {
        k: []
        for k in (
            "psnr_copyae",
            "mse_wam",
            "mse_copy",
            "mse_copyae",
            "wam_se",
            "wam_ae",
            "base_se",
            "base_ae",
            "hold_se",
            "psnr_wam",
            "psnr_copy",
            "psnr_ae",
            "fam",
        )
    }
    t0 = time.time()
    for s in range(0, len(rows), batch):
        r = rows[s : s + batch]
        b = len(r)
        frames = normalize_frames(va.frames[va.ctx_idx[r]]).transpose(1, 2).contiguous()  # [B, V, T, 3, H, W]
        tokens = torch.from_numpy(va.tokens[r])
        state = va.state[r]
        target = va.actions[r]
        na = torch.randn((b, spec.horizon, spec.action_dim), generator=g)
        nv = torch.randn((b, v, f, *lat_shape), generator=g)
        a_w, _, fr = torch_pipeline(spec, stats, ae, wam, frames, state, tokens, na, nv, spec.sampler_steps)
        a_b, _, _ = torch_pipeline(
            spec, stats, ae, base, frames, state, tokens, na, nv[:, :, :1], spec.sampler_steps
        )
        acc["wam_se"].append(((a_w - target) ** 2).mean(axis=(1, 2)))
        acc["wam_ae"].append(np.abs(a_w - target).mean(axis=(1, 2)))
        acc["base_se"].append(((a_b - target) ** 2).mean(axis=(1, 2)))
        acc["base_ae"].append(np.abs(a_b - target).mean(axis=(1, 2)))
        acc["hold_se"].append(((state[:, None, :] - target) ** 2).mean(axis=(1, 2)))
        fut = (
            torch.from_numpy(va.frames[va.fut_idx[r]]).float().div(255).movedim(-1, -3).transpose(1, 2)
        )  # [B,V,F,3,H,W]
        last = torch.from_numpy(va.frames[va.ctx_idx[r, -1]]).float().div(255).movedim(-1, -3)  # [B,V,3,H,W]
        assert fr is not None
        acc["psnr_wam"].append(psnr(fr, fut).numpy())
        acc["psnr_copy"].append(psnr(last.unsqueeze(2).expand_as(fut), fut).numpy())
        fut_lat = ae.encode((fut * 2 - 1).reshape(-1, 3, spec.image_size, spec.image_size))
        rec = DecodeStage(ae)(fut_lat.reshape(b, v, f, *lat_shape))
        acc["psnr_ae"].append(psnr(rec, fut).numpy())
        last_lat = ae.encode((last * 2 - 1).reshape(-1, 3, spec.image_size, spec.image_size))
        last_rec = DecodeStage(ae)(last_lat.reshape(b, v, 1, *lat_shape)).expand_as(fut)
        acc["psnr_copyae"].append(psnr(last_rec, fut).numpy())
        acc["mse_wam"].append((fr - fut).pow(2).flatten(-3).mean(-1).numpy())
        acc["mse_copy"].append((last.unsqueeze(2).expand_as(fut) - fut).pow(2).flatten(-3).mean(-1).numpy())
        acc["mse_copyae"].append((last_rec - fut).pow(2).flatten(-3).mean(-1).numpy())
        for k in sweep:
            if k == spec.sampler_steps:
                continue
            sw, _, _ = torch_pipeline(spec, stats, ae, wam, frames, state, tokens, na, nv, k)
            sb, _, _ = torch_pipeline(spec, stats, ae, base, frames, state, tokens, na, nv[:, :, :1], k)
            acc.setdefault(f"sweep_wam_{k}", []).append(((sw - target) ** 2).mean(axis=(1, 2)))
            acc.setdefault(f"sweep_base_{k}", []).append(((sb - target) ** 2).mean(axis=(1, 2)))
        acc["fam"].append(va.family[r])
    cat = {k: np.concatenate(x) for k, x in acc.items()}

    def summary(mask: np.ndarray) -> dict[str, Any]:
        out: dict[str, Any] = {"samples": int(mask.sum())}
        for m in ("wam", "base"):
            out[f"{m}_action_mse"] = float(cat[f"{m}_se"][mask].mean())
            out[f"{m}_action_l1"] = float(cat[f"{m}_ae"][mask].mean())
        out["hold_state_action_mse"] = float(cat["hold_se"][mask].mean())
        for m in ("wam", "copy", "copyae"):
            out[f"psnr_pooled_{m}"] = float(-10 * np.log10(cat[f"mse_{m}"][mask].mean()))
        for m in ("wam", "copy", "ae", "copyae"):
            p = cat[f"psnr_{m}"][mask]  # [N, V, F]
            out[f"psnr_{m}"] = float(p.mean())
            out[f"psnr_{m}_per_camera"] = {c: float(p[:, i].mean()) for i, c in enumerate(spec.cameras)}
            out[f"psnr_{m}_per_frame"] = [float(p[:, :, j].mean()) for j in range(p.shape[2])]
        return out

    fam = cat["fam"]
    res: dict[str, Any] = {
        "heldout_episodes": va.num_episodes,
        "heldout_seeds": [int(x) for x in np.unique(va.episode)][:1] + [int(np.unique(va.episode)[-1])],
        "stride": stride,
        "sampler_steps": spec.sampler_steps,
        "noise_seed": seed,
        "video_dt": spec.video_dt,
        "all": summary(np.ones_like(fam, dtype=bool)),
        "reach": summary(fam < 3),
        "push": summary(fam >= 3),
        "action_mse_by_steps": {
            str(k): {
                "wam": float(cat[f"sweep_wam_{k}"].mean())
                if k != spec.sampler_steps
                else float(cat["wam_se"].mean()),
                "baseline": float(cat[f"sweep_base_{k}"].mean())
                if k != spec.sampler_steps
                else float(cat["base_se"].mean()),
            }
            for k in sorted({*sweep, spec.sampler_steps})
        },
        "per_instruction": {INSTRUCTIONS[i]: summary(fam == i) for i in range(len(INSTRUCTIONS))},
        "training": {
            k: info[k] for k in ("dataset", "autoencoder", "wam", "baseline", "total_seconds") if k in info
        },
        "eval_seconds": time.time() - t0,
    }
    return res


@torch.no_grad()
def preview(path: Path, samples: int = 6, seed: int = 3) -> None:
    """PNG: per held-out sample and camera, the last observed frame, then predicted | true at +dt, +2dt."""
    from PIL import Image

    spec, stats, ae, wam, _, _ = load_checkpoint(CHECKPOINT)
    stats = _stats_f32(stats)
    va = load_split("heldout", spec)
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(samples):
        fam_rows = np.flatnonzero(va.family == i % len(INSTRUCTIONS))
        r = np.array([fam_rows[len(fam_rows) // 4 + 11 * i]])
        frames = normalize_frames(va.frames[va.ctx_idx[r]]).transpose(1, 2).contiguous()
        na = torch.randn((1, spec.horizon, spec.action_dim), generator=g)
        nv = torch.randn(
            (
                1,
                spec.num_cameras,
                spec.video_frames,
                spec.latent_channels,
                spec.latent_size,
                spec.latent_size,
            ),
            generator=g,
        )
        _, _, fr = torch_pipeline(
            spec,
            stats,
            ae,
            wam,
            frames,
            va.state[r],
            torch.from_numpy(va.tokens[r]),
            na,
            nv,
            spec.sampler_steps,
        )
        assert fr is not None
        pred = (fr[0].clamp(0, 1) * 255).round().byte().movedim(-3, -1).numpy()  # [V, F, H, W, 3]
        last = va.frames[va.ctx_idx[r[0], -1]]  # [V, H, W, 3]
        true = va.frames[va.fut_idx[r[0]]]  # [F, V, H, W, 3]
        for c in range(spec.num_cameras):
            tiles = [last[c]]
            for f in range(spec.video_frames):
                tiles += [pred[c, f], true[f, c]]
            rows.append(np.concatenate(tiles, axis=1))
    img = Image.fromarray(np.concatenate(rows, axis=0))
    img = img.resize((img.width * 2, img.height * 2), Image.Resampling.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def table(res: dict[str, Any]) -> str:
    rows = [
        "| held-out ({} episodes, {} samples) | WAM | action-only | other |".format(
            res["heldout_episodes"], res["all"]["samples"]
        ),
        "|---|---|---|---|",
    ]
    for part in ("all", "reach", "push"):
        s = res[part]
        rows.append(
            f"| action MSE ({part}) | {s['wam_action_mse']:.5f} | {s['base_action_mse']:.5f} | hold current state: {s['hold_state_action_mse']:.5f} |"
        )
        rows.append(f"| action L1 ({part}) | {s['wam_action_l1']:.4f} | {s['base_action_l1']:.4f} | |")
    s = res["all"]
    cams = ", ".join(f"{c} {s['psnr_wam_per_camera'][c]:.2f}" for c in s["psnr_wam_per_camera"])
    ccam = ", ".join(f"{c} {s['psnr_copy_per_camera'][c]:.2f}" for c in s["psnr_copy_per_camera"])
    rows.append(f"| video PSNR dB, WAM decoded future frames | {s['psnr_wam']:.2f} ({cams}) | | |")
    rows.append(f"| video PSNR dB, copy the last frame | | | {s['psnr_copy']:.2f} ({ccam}) |")
    per_f = " / ".join(f"{x:.2f}" for x in s["psnr_wam_per_frame"])
    per_fc = " / ".join(f"{x:.2f}" for x in s["psnr_copy_per_frame"])
    rows.append(
        f"| PSNR per predicted frame (+{res['video_dt']} s steps): WAM / copy-last | {per_f} | | {per_fc} |"
    )
    rows.append(
        f"| video PSNR dB, copy the last frame through the autoencoder (decode(encode(last))) | | | {s['psnr_copyae']:.2f} |"
    )
    rows.append(
        f"| PSNR autoencoder reconstruction of the true future (ceiling of any latent prediction) | | | {s['psnr_ae']:.2f} |"
    )
    rows.append(
        f"| pooled PSNR dB (of the mean MSE): WAM / copy-last / copy-last through AE | {s['psnr_pooled_wam']:.2f} | | "
        f"{s['psnr_pooled_copy']:.2f} / {s['psnr_pooled_copyae']:.2f} |"
    )
    sweep = res["action_mse_by_steps"]
    rows.append(
        "| action MSE (all) by sampler steps K: "
        + ", ".join(f"K={k}" for k in sweep)
        + " | "
        + " / ".join(f"{sweep[k]['wam']:.5f}" for k in sweep)
        + " | "
        + " / ".join(f"{sweep[k]['baseline']:.5f}" for k in sweep)
        + " | |"
    )
    return "\n".join(rows)


def write_readme_table(res: dict[str, Any]) -> None:
    block = f"{BEGIN}\n{table(res)}\n{END}"
    text = README.read_text() if README.exists() else f"# Models\n\n## Offline numbers\n\n{block}\n"
    if BEGIN in text:
        text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, text, flags=re.DOTALL)
    else:
        text += f"\n{block}\n"
    README.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stride", type=int, default=3, help="every n-th held-out sample")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", type=Path, default=BUNDLE_DIR / "eval" / "offline.json")
    ap.add_argument("--no-readme", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(2)
    res = evaluate(a.stride, a.batch, a.seed)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=1) + "\n")
    print(table(res))
    preview(a.out.parent / "preview.png")
    if not a.no_readme:
        write_readme_table(res)


if __name__ == "__main__":
    main()
