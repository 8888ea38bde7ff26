"""Trains from scratch, with fixed seeds: the autoencoder, then the WAM, then the action-only baseline
(same network and steps, no video tokens), on the expert episodes under models/.data/episodes, both with
an auxiliary loss on the instructed cube's position in 20,000 rendered scene layouts (``--layouts``).

    python -m wam_model.train                 # the full run (~53 min on 2 cores)
    python -m wam_model.train --smoke         # ~2 min check of the whole path

Writes the checkpoint models/.data/checkpoint.pt (read by export/evaluate) and the training record
models/wam_sim/training/ (log, loss curves PNG, dataset size, final losses).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as fn
from numpy.typing import NDArray
from torch import Tensor, nn

from . import flow, probe
from .dataset import Split, load_split
from .nets import AutoEncoder, Wam, count_params
from .spec import DATA_DIR, IMAGE_MEAN, IMAGE_STD, TRAINING_DIR, ModelSpec

CHECKPOINT = DATA_DIR / "checkpoint.pt"


@dataclass
class Stats:
    state_mean: NDArray[np.float32]
    state_std: NDArray[np.float32]
    action_mean: NDArray[np.float32]
    action_std: NDArray[np.float32]

    def to_dict(self) -> dict[str, list[float]]:
        return {
            k: [float(x) for x in getattr(self, k)]
            for k in ("state_mean", "state_std", "action_mean", "action_std")
        }

    @staticmethod
    def from_dict(d: dict[str, list[float]]) -> Stats:
        return Stats(**{k: np.asarray(v, dtype=np.float32) for k, v in d.items()})


def compute_stats(tr: Split) -> Stats:
    a = tr.actions.reshape(-1, tr.actions.shape[-1])
    return Stats(
        state_mean=tr.state.mean(0).astype(np.float32),
        state_std=np.maximum(tr.state.std(0), 1e-3).astype(np.float32),
        action_mean=a.mean(0).astype(np.float32),
        action_std=np.maximum(a.std(0), 1e-3).astype(np.float32),
    )


def normalize_frames(u8: NDArray[np.uint8] | Tensor) -> Tensor:
    """uint8 (..., H, W, 3) -> normalized float (..., 3, H, W)."""
    x = torch.as_tensor(u8).float().div(255.0)
    x = x.movedim(-1, -3)
    mean = torch.tensor(IMAGE_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGE_STD).view(3, 1, 1)
    return (x - mean) / std


class Logger:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.f = path.open("w")
        self.t0 = time.time()

    def __call__(self, msg: str) -> None:
        line = f"[{time.time() - self.t0:7.1f}s] {msg}"
        print(line, flush=True)
        self.f.write(line + "\n")
        self.f.flush()


def lr_at(step: int, total: int, base: float, warmup: int = 200) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    with torch.no_grad():
        for pe, pm in zip(ema.parameters(), model.parameters()):
            pe.mul_(decay).add_(pm.detach(), alpha=1 - decay)


# ----------------------------------------------------------------------------------------------------


def train_autoencoder(
    ae: AutoEncoder, frames: NDArray[np.uint8], steps: int, batch: int, log: Logger, gen: torch.Generator
) -> list[tuple[int, float]]:
    """Reconstruction (MSE on [0, 1] pixels) of random frames of both cameras."""
    opt = torch.optim.AdamW(ae.parameters(), lr=2e-3, weight_decay=1e-5)
    n, v = frames.shape[:2]
    curve: list[tuple[int, float]] = []
    run = 0.0
    ae.train()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, 2e-3, warmup=100)
        i = torch.randint(0, n, (batch,), generator=gen).numpy()
        c = torch.randint(0, v, (batch,), generator=gen).numpy()
        u8 = torch.from_numpy(frames[i, c])
        x = normalize_frames(u8)
        target = u8.float().div(255.0).movedim(-1, -3)
        z = ae.encode_raw(x)
        rec = ae.decode_raw(z)
        # Saturated pixels (the cubes, a few pixels wide in the exterior view, and the zone) weigh 10x.
        sat = target.amax(dim=1, keepdim=True) - target.amin(dim=1, keepdim=True)
        w = 1.0 + 9.0 * (sat > 0.45).float()
        loss = (w * (rec - target).pow(2)).mean() + 1e-4 * z.pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        run = loss.item() if step == 0 else 0.98 * run + 0.02 * loss.item()
        if step % 50 == 0 or step == steps - 1:
            curve.append((step, run))
        if step % 200 == 0 or step == steps - 1:
            psnr = -10 * math.log10(max(run, 1e-10))
            log(f"ae step {step:5d}/{steps} loss {run:.5f} (psnr ~{psnr:.1f} dB)")
    ae.eval()
    return curve


@torch.no_grad()
def encode_all(ae: AutoEncoder, frames: NDArray[np.uint8], raw: bool, chunk: int = 512) -> Tensor:
    """(Nf, V, H, W, 3) uint8 -> (Nf, V, C, h, w) latents (raw or normalized)."""
    n, v = frames.shape[:2]
    out = []
    for s in range(0, n, chunk):
        x = normalize_frames(frames[s : s + chunk].reshape(-1, *frames.shape[2:]))
        z = ae.encode_raw(x) if raw else ae.encode(x)
        out.append(z.reshape(-1, v, *z.shape[1:]))
    return torch.cat(out)


class Batcher:
    """Gathers training batches from precomputed latents (normalized actions/state)."""

    def __init__(self, sp: Split, lat: Tensor, stats: Stats) -> None:
        self.sp = sp
        self.lat = lat
        self.state = torch.from_numpy((sp.state - stats.state_mean) / stats.state_std)
        self.actions = torch.from_numpy((sp.actions - stats.action_mean) / stats.action_std)
        self.tokens = torch.from_numpy(sp.tokens)
        self.ctx_idx = torch.from_numpy(sp.ctx_idx)
        self.fut_idx = torch.from_numpy(sp.fut_idx)

    def get(self, idx: Tensor) -> dict[str, Tensor]:
        ctx = self.lat[self.ctx_idx[idx]]  # [B, T, V, C, h, w]
        fut = self.lat[self.fut_idx[idx]]  # [B, F, V, C, h, w]
        return {
            "latents": ctx.transpose(1, 2).contiguous(),
            "future": fut.transpose(1, 2).contiguous(),
            "state": self.state[idx],
            "actions": self.actions[idx],
            "tokens": self.tokens[idx],
        }


def flow_loss(
    model: Wam,
    b: dict[str, Tensor],
    gen: torch.Generator,
    state_noise: float = 0.0,
    video_weight: float = 1.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Joint flow-matching loss: (total, action part, video part)."""
    n = b["actions"].shape[0]
    state = b["state"]
    if state_noise > 0:
        state = state + state_noise * torch.randn(state.shape, generator=gen)
    cache = model.context(b["latents"], state, b["tokens"])
    t = flow.sample_time(n, gen)
    na = torch.randn(b["actions"].shape, generator=gen)
    xa, _ = flow.interpolate(na, b["actions"], t)
    xv = None
    if model.video:
        nv = torch.randn(b["future"].shape, generator=gen)
        xv, _ = flow.interpolate(nv, b["future"], t)
    # x1-prediction loss (the stage's velocity is (x1_hat - x_t) / (1 - t), see nets.Wam)
    pa, pv = model.predict(xa, xv, t, *cache)
    la = fn.mse_loss(pa, b["actions"])
    lv = fn.mse_loss(pv, b["future"]) if pv is not None else torch.zeros(())
    return la + video_weight * lv, la, lv


@dataclass
class Layouts:
    """Rendered scene layouts for the auxiliary position loss: latents [N, V, C, h, w] of the start
    frame, instruction tokens [N, L], the instructed cube's normalized (x, y) [N, 2]; `test_*` are new
    layouts, for the log."""

    latents: Tensor
    tokens: Tensor
    xy: Tensor
    test_latents: Tensor
    test_tokens: Tensor
    test_xy: Tensor
    weight: float


def layout_loss(model: Wam, readout: nn.Linear, lay: Layouts, idx: Tensor) -> Tensor:
    feats = probe.instruction_readout_features(model, lay.latents[idx], lay.tokens[idx])
    return fn.mse_loss(readout(feats), lay.xy[idx])


def train_wam(
    model: Wam,
    data: Batcher,
    val: Batcher,
    steps: int,
    batch: int,
    lr: float,
    log: Logger,
    gen: torch.Generator,
    name: str,
    layouts: Layouts | None = None,
) -> tuple[Wam, list[tuple[int, float, float]], dict[str, float]]:
    # The readout of the auxiliary layout loss is trained beside the model and not exported.
    readout = nn.Linear(model.spec.width, 2) if layouts is not None else None
    params = [*model.parameters(), *(readout.parameters() if readout is not None else [])]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4, betas=(0.9, 0.99))
    layout_error_cm = float("nan")
    ema = copy.deepcopy(model)
    n = data.sp.num_samples
    curve: list[tuple[int, float, float]] = []
    ra = rv = 0.0
    model.train()
    t0 = time.time()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr)
        idx = torch.randint(0, n, (batch,), generator=gen)
        loss, la, lv = flow_loss(model, data.get(idx), gen, state_noise=0.02)
        if layouts is not None and readout is not None:
            lay_idx = torch.randint(0, layouts.xy.shape[0], (batch,), generator=gen)
            loss = loss + layouts.weight * layout_loss(model, readout, layouts, lay_idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema_update(ema, model, min(0.999, (1 + step) / (10 + step)))
        ra = la.item() if step == 0 else 0.98 * ra + 0.02 * la.item()
        rv = lv.item() if step == 0 else 0.98 * rv + 0.02 * lv.item()
        if step % 25 == 0 or step == steps - 1:
            curve.append((step, ra, rv))
        if step % 200 == 0 or step == steps - 1:
            rate = (step + 1) * batch / (time.time() - t0)
            log(
                f"{name} step {step:5d}/{steps} action loss {ra:.4f} video loss {rv:.4f} ({rate:.0f} samples/s)"
            )
            if layouts is not None and readout is not None:
                with torch.no_grad():
                    feats = probe.instruction_readout_features(
                        model, layouts.test_latents, layouts.test_tokens
                    )
                    layout_error_cm = probe.position_error_cm(readout(feats), layouts.test_xy)
                log(f"{name} step {step:5d}/{steps} cube position error on new layouts {layout_error_cm:.1f} cm")
    ema.eval()
    final = {"train_action_loss": ra, "train_video_loss": rv, **validate(ema, val, gen_seed=123)}
    if layouts is not None:
        final["layout_error_new_cm"] = layout_error_cm
    log(f"{name} done: {json.dumps({k: round(v, 5) for k, v in final.items()})}")
    return ema, curve, final


@torch.no_grad()
def validate(model: Wam, val: Batcher, gen_seed: int, n: int = 1024) -> dict[str, float]:
    """Flow loss on held-out samples (fixed noise and times)."""
    g = torch.Generator().manual_seed(gen_seed)
    idx = torch.randperm(val.sp.num_samples, generator=g)[:n]
    tot_a = tot_v = 0.0
    for s in range(0, len(idx), 256):
        _, la, lv = flow_loss(model, val.get(idx[s : s + 256]), g)
        w = len(idx[s : s + 256]) / len(idx)
        tot_a += la.item() * w
        tot_v += lv.item() * w
    return {"val_action_loss": tot_a, "val_video_loss": tot_v}


def plot_curves(path: Path, title: str, series: dict[str, list[tuple[int, float]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    for name, pts in series.items():
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=name)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (EMA of batches)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def save_checkpoint(
    path: Path, spec: ModelSpec, stats: Stats, ae: AutoEncoder, wam: Wam, base: Wam, info: dict[str, Any]
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "spec": spec.to_dict(),
            "stats": stats.to_dict(),
            "ae": ae.state_dict(),
            "wam": wam.state_dict(),
            "baseline": base.state_dict(),
            "info": info,
        },
        path,
    )


def load_checkpoint(
    path: Path = CHECKPOINT,
) -> tuple[ModelSpec, Stats, AutoEncoder, Wam, Wam, dict[str, Any]]:
    ck = torch.load(path, map_location="cpu", weights_only=False)
    # the sampler steps are an inference choice (not trained): the current default applies
    spec = dataclasses.replace(ModelSpec.from_dict(ck["spec"]), sampler_steps=ModelSpec().sampler_steps)
    ae = AutoEncoder(spec)
    ae.load_state_dict(ck["ae"])
    wam = Wam(spec, video=True)
    wam.load_state_dict(ck["wam"])
    base = Wam(spec, video=False)
    base.load_state_dict(ck["baseline"])
    for m in (ae, wam, base):
        m.eval()
    return spec, Stats.from_dict(ck["stats"]), ae, wam, base, ck["info"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ae-steps", type=int, default=1200)
    ap.add_argument("--ae-batch", type=int, default=48)
    ap.add_argument("--wam-steps", type=int, default=4000)
    ap.add_argument(
        "--baseline-steps",
        type=int,
        default=None,
        help="action-only baseline steps (default: --wam-steps, as the comparison needs)",
    )
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--max-episodes", type=int, default=None, help="use only the first N train episodes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--smoke", action="store_true", help="tiny run (~2 min) of the whole path")
    ap.add_argument(
        "--reuse-autoencoder",
        type=Path,
        default=None,
        help="take the trained autoencoder from this checkpoint instead of training it (same seeds: same)",
    )
    ap.add_argument(
        "--layouts",
        type=int,
        default=20000,
        help="rendered scene layouts for an auxiliary loss on the instructed cube's position (0: none); "
        "the expert episodes alone are too few layouts to learn where the asked cube is (wam_model.probe)",
    )
    ap.add_argument("--layout-weight", type=float, default=0.5)
    ap.add_argument("--out", type=Path, default=TRAINING_DIR, help="training record folder")
    ap.add_argument("--checkpoint", type=Path, default=CHECKPOINT)
    a = ap.parse_args()
    if a.smoke:
        a.ae_steps, a.wam_steps, a.max_episodes = 60, 60, a.max_episodes or 12
        a.layouts = min(a.layouts, 200)
    torch.set_num_threads(a.threads)
    # Creating an optimizer imports torch's compile machinery; done after MuJoCo's EGL context is up
    # (rendering the layouts), that import crashed. Do it first.
    torch.optim.AdamW([nn.Parameter(torch.zeros(1))])
    torch.manual_seed(a.seed)
    np.random.seed(a.seed)
    gen = torch.Generator().manual_seed(a.seed)
    t_start = time.time()
    a.out.mkdir(parents=True, exist_ok=True)
    log = Logger(a.out / "train_log.txt")
    spec = ModelSpec()
    log(f"args {vars(a)}")
    log(f"spec {json.dumps(spec.to_dict())}")

    tr = load_split("train", spec, max_episodes=a.max_episodes)
    va = load_split("heldout", spec, max_episodes=None if not a.smoke else 4)
    dataset = {
        "train_episodes": tr.num_episodes,
        "train_samples": tr.num_samples,
        "train_frames": int(tr.frames.shape[0]),
        "heldout_episodes": va.num_episodes,
        "heldout_samples": va.num_samples,
        "heldout_frames": int(va.frames.shape[0]),
        "cameras": list(spec.cameras),
        "image": [spec.image_size, spec.image_size, 3],
    }
    gen_info = DATA_DIR / "generation.json"
    if gen_info.exists():
        dataset["generation"] = json.loads(gen_info.read_text())
    log(f"dataset {json.dumps(dataset)}")
    stats = compute_stats(tr)

    # 1. autoencoder
    t0 = time.time()
    ae = AutoEncoder(spec)
    log(f"autoencoder params {count_params(ae)}")
    t_ae_prev = 0.0
    if a.reuse_autoencoder is not None:
        prev = torch.load(a.reuse_autoencoder, map_location="cpu", weights_only=False)
        ae.load_state_dict(prev["ae"])
        ae.eval()
        prev_ae = prev["info"]["autoencoder"]
        ae_curve = [(int(x[0]), float(x[1])) for x in prev_ae.get("curve", [[0, prev_ae["final_loss"]]])]
        t_ae_prev = float(prev_ae["train_seconds"])
        log(f"autoencoder taken from {a.reuse_autoencoder} (trained in {t_ae_prev:.0f}s)")
    else:
        ae_curve = train_autoencoder(ae, tr.frames, a.ae_steps, a.ae_batch, log, gen)
        raw = encode_all(ae, tr.frames[:: max(1, tr.frames.shape[0] // 4000)], raw=True)
        ae.lat_mean.copy_(raw.mean(dim=(0, 1, 3, 4)))
        ae.lat_std.copy_(raw.std(dim=(0, 1, 3, 4)).clamp_min(1e-3))
    lat_tr = encode_all(ae, tr.frames, raw=False)
    lat_va = encode_all(ae, va.frames, raw=False)
    with torch.no_grad():
        rec = ae.decode(lat_va[:256].reshape(-1, *lat_va.shape[2:]))
        tgt = (
            torch.from_numpy(va.frames[:256].reshape(-1, *va.frames.shape[2:]))
            .float()
            .div(255)
            .movedim(-1, -3)
        )
        ae_val_psnr = float(-10 * torch.log10(fn.mse_loss(rec, tgt)))
    t_ae = time.time() - t0 if a.reuse_autoencoder is None else t_ae_prev
    log(f"autoencoder done in {t_ae:.0f}s, held-out reconstruction PSNR {ae_val_psnr:.2f} dB")

    # 2. WAM, 3. action-only baseline (same network without video tokens, same steps and data)
    data, val = Batcher(tr, lat_tr, stats), Batcher(va, lat_va, stats)
    layouts = None
    if a.layouts > 0:
        t0 = time.time()
        encode = functools.partial(encode_all, ae, raw=False)
        lat, tok, xy = probe.encoded_layouts(encode, probe.TRAIN_SEED0, a.layouts, spec)
        lat_te, tok_te, xy_te = probe.encoded_layouts(encode, probe.TEST_SEED0, 300, spec)
        layouts = Layouts(lat, tok, xy, lat_te, tok_te, xy_te, weight=a.layout_weight)
        dataset["layouts"] = a.layouts
        log(f"{a.layouts} layouts rendered and encoded in {time.time() - t0:.0f}s")
    results: dict[str, Any] = {}
    models: dict[str, Wam] = {}
    curves: dict[str, list[tuple[int, float, float]]] = {}
    for name, video in (("wam", True), ("baseline", False)):
        t0 = time.time()
        torch.manual_seed(a.seed + 1)
        model = Wam(spec, video=video)
        model.s2a_scale.copy_(torch.from_numpy(stats.state_std / stats.action_std))
        model.s2a_shift.copy_(torch.from_numpy((stats.state_mean - stats.action_mean) / stats.action_std))
        log(f"{name} params {count_params(model)}")
        g = torch.Generator().manual_seed(a.seed + 1)
        steps = a.wam_steps if video or a.baseline_steps is None else a.baseline_steps
        ema, curve, final = train_wam(model, data, val, steps, a.batch, a.lr, log, g, name, layouts)
        final["train_seconds"] = time.time() - t0
        final["params"] = count_params(model)
        models[name], curves[name], results[name] = ema, curve, final
    total = time.time() - t_start
    info = {
        "dataset": dataset,
        "autoencoder": {
            "params": count_params(ae),
            "train_seconds": t_ae,
            "heldout_recon_psnr_db": ae_val_psnr,
            "final_loss": ae_curve[-1][1],
            "curve": ae_curve,
        },
        **results,
        "total_seconds": total,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
    }
    save_checkpoint(a.checkpoint, spec, stats, ae, models["wam"], models["baseline"], info)
    (a.out / "summary.json").write_text(json.dumps(info, indent=1))
    (a.out / "dataset.json").write_text(json.dumps(dataset, indent=1))
    if len(ae_curve) > 1:
        plot_curves(a.out / "loss_autoencoder.png", "autoencoder reconstruction (MSE)", {"recon": ae_curve})
    plot_curves(
        a.out / "loss_wam.png",
        "flow-matching loss",
        {
            "WAM actions": [(s, la) for s, la, _ in curves["wam"]],
            "WAM video": [(s, lv) for s, _, lv in curves["wam"]],
            "action-only actions": [(s, la) for s, la, _ in curves["baseline"]],
        },
    )
    log(f"total training time {total:.0f}s; checkpoint {a.checkpoint}")


if __name__ == "__main__":
    main()
