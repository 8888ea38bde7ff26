"""Trains the DreamZero-style WAM (`nets.DzWam`) and the ACT-like policy (`nets.ActPolicy`) on the
simulator's expert episodes (`python -m wam_model.dataset`, models/.data/episodes), on the frozen
wam_sim autoencoder's latents (`autoencoder.load_sim_autoencoder`), with the committed bundle's
state/action normalization (models/wam_sim/wam.yaml: the exported manifests carry the same numbers).

DreamZero-style WAM: flow matching on the future frames' latents and the action chunk jointly
(x_t = (1 - t) noise + t data, the denoise stage predicts the velocity data - noise, the runtime's
convention), trained on SEQUENCES of consecutive chunks of an episode with the KV cache as the
runtime carries it: the context stage of chunk j runs on the REAL frames' latents of that chunk
(teacher forcing) with the cache written by chunks < j (M = 3 blocks; from the 4th chunk on it
slides, dropping the oldest block, as the runtime does), the gradient flows through the cache, and
chunk_index counts from 0 at the episode's start. Chunks are 5-20 camera frames apart (0.33-1.33 s;
half the sequences 16-20, the node's replanning period with config/sim_policy.yaml), the first one
at frame 1-3. The instruction of a whole sequence is dropped (all pad ids) with probability
`--cfg-drop`, which trains the unconditional branch that guidance runs with its own cache.

ACT-like policy: regression (L1, as ACT) of the normalized action chunk from single observation
windows; one deterministic run (`solver: none`).

Both: AdamW, warm-up and cosine, grad clip 1, EMA of the weights (exported), state jitter 0.02
(normalized), and optionally the auxiliary layout loss of wam_model.train (`--layouts N`): a linear
readout of the instructed cube's table position from rendered scene layouts, not exported (for the
WAM from an attention pool over the last layer's cache block, for ACT from the instruction tokens).

    python -m wam_dz.train [--dz-minutes 19] [--act-minutes 7.5] [--layouts N] [--smoke]

The runs are limited by wall time (the committed bundles: 19 and 7.5 minutes on 2 shared cores,
models/README.md), so the number of steps depends on the machine's load.

Writes the checkpoint models/.data/dz_checkpoint.pt (read by `python -m wam_dz.export
--checkpoint`) and the record models/wam_sim_dz/training/ (log, summary.json, loss curves)."""

from __future__ import annotations

import argparse
import copy
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
from torch import Tensor, nn
from wam_export import read_manifest
from wam_model import probe
from wam_model.dataset import Split, load_split
from wam_model.spec import BUNDLE_DIR, DATA_DIR, MODELS, ModelSpec, vocab
from wam_model.train import Logger, encode_all, plot_curves

from .autoencoder import load_sim_autoencoder
from .nets import ActPolicy, DzSpec, DzWam, count_params

CHECKPOINT = DATA_DIR / "dz_checkpoint.pt"
RECORD_DIR = MODELS / "wam_sim_dz" / "training"


# ----------------------------------------------------------------------------------------------
# Data


@dataclass
class Norm:
    """The committed bundle's normalization (physical -> normalized)."""

    state_mean: np.ndarray
    state_std: np.ndarray
    action_mean: np.ndarray
    action_std: np.ndarray

    @staticmethod
    def from_bundle(bundle: Path = BUNDLE_DIR) -> Norm:
        m = read_manifest(bundle)
        f32 = functools.partial(np.asarray, dtype=np.float32)
        return Norm(f32(m.state.mean), f32(m.state.std), f32(m.action.mean), f32(m.action.std))


class Data:
    """One split as tensors: per sample (= camera frame k of an episode) the context and future
    frames' latents, the normalized state and action chunk, the tokens; and where each episode's
    samples start (samples of an episode are its frames 0..n-1, in order)."""

    def __init__(self, sp: Split, lat: Tensor, norm: Norm) -> None:
        self.sp = sp
        self.lat = lat  # [Nf, V, C, h, w], normalized latents
        self.state = torch.from_numpy((sp.state - norm.state_mean) / norm.state_std)
        self.actions = torch.from_numpy((sp.actions - norm.action_mean) / norm.action_std)
        self.tokens = torch.from_numpy(sp.tokens)
        self.ctx_idx = torch.from_numpy(sp.ctx_idx)
        self.fut_idx = torch.from_numpy(sp.fut_idx)
        self.family = torch.from_numpy(sp.family)
        ep = sp.episode
        starts = np.flatnonzero(np.r_[True, ep[1:] != ep[:-1]])
        self.ep_start = torch.from_numpy(starts.astype(np.int64))
        self.ep_len = torch.from_numpy(np.diff(np.r_[starts, len(ep)]).astype(np.int64))
        # every sample of an episode is one of its frames (no detour samples dropped)
        first_frame = sp.ctx_idx[starts, -1]
        assert np.all(
            sp.ctx_idx[:, -1] - np.repeat(first_frame, self.ep_len.numpy())
            == (np.arange(len(ep)) - np.repeat(starts, self.ep_len.numpy()))
        ), "episodes with dropped samples (detours) are not supported"

    @property
    def num_episodes(self) -> int:
        return int(self.ep_start.shape[0])

    def get(self, rows: Tensor) -> dict[str, Tensor]:
        """Rows of any shape [...]: latents [..., V, T, C, h, w], future [..., V, F, C, h, w],
        state [..., S], actions [..., H, A], tokens [..., L]."""
        return {
            "latents": self.lat[self.ctx_idx[rows]].transpose(-5, -4),
            "future": self.lat[self.fut_idx[rows]].transpose(-5, -4),
            "state": self.state[rows],
            "actions": self.actions[rows],
            "tokens": self.tokens[rows],
        }


def sample_sequences(
    data: Data, batch: int, chunks: int, gen: torch.Generator, gap: tuple[int, int] = (5, 20)
) -> tuple[Tensor, Tensor]:
    """Rows [B, L] of consecutive chunks (the first at frame 1-3, then 5-20 frames apart; half the
    sequences 16-20) and which of them lie inside their episode [B, L]."""
    ep = torch.randint(0, data.num_episodes, (batch,), generator=gen)
    first = torch.randint(1, 4, (batch, 1), generator=gen)
    lo = torch.where(torch.rand(batch, 1, generator=gen) < 0.5, 16, gap[0])
    u = torch.rand(batch, chunks - 1, generator=gen)
    gaps = lo + (u * (gap[1] + 1 - lo)).long()
    k = torch.cat([first, first + gaps.cumsum(dim=1)], dim=1)  # frame of each chunk
    n = data.ep_len[ep].unsqueeze(1)
    valid = k < n
    rows = data.ep_start[ep].unsqueeze(1) + torch.minimum(k, n - 1)
    return rows, valid


def sample_time(n: int, gen: torch.Generator) -> Tensor:
    """Flow times: a third uniform, a third logit-normal, a third uniform shifted by 5 towards the
    noise (where the runtime's UniPC grid with shift 5 puts most of its evaluations)."""
    u = torch.rand(n, generator=gen)
    ln = torch.sigmoid(torch.randn(n, generator=gen))
    sh = u / (u + 5.0 * (1.0 - u))
    pick = torch.randint(0, 3, (n,), generator=gen)
    return torch.where(pick == 0, u, torch.where(pick == 1, ln, sh))


# ----------------------------------------------------------------------------------------------
# DreamZero-style WAM


def slide(x: Tensor, block: int) -> Tensor:
    """Drops the oldest `block` positions of a cache [B, layers, heads, M, d] (axis 3), zero tail."""
    return torch.cat([x[:, :, :, block:], torch.zeros_like(x[:, :, :, :block])], dim=3)


def run_contexts(
    wam: DzWam, b: dict[str, Tensor], tokens: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The context stage over the L chunks of each sequence, carrying the cache as the runtime does.
    b: latents [B, L, V, T, C, h, w], state [B, L, S]; tokens [B, Lt]. Returns per chunk
    present_k, present_v [B, L, layers, heads, M, d], cond [B, L, D], kv_bias [B, L, M]."""
    s = wam.spec
    bsz, chunks = b["state"].shape[:2]
    past_k = torch.zeros((bsz, *s.cache_shape[1:]))
    past_v = torch.zeros_like(past_k)
    length = 0
    ks, vs, conds, biases = [], [], [], []
    for j in range(chunks):
        pk, pv, cond, kvb = wam.context(
            b["latents"][:, j],
            b["state"][:, j],
            tokens,
            past_k,
            past_v,
            torch.tensor([length], dtype=torch.int64),
            torch.tensor([j], dtype=torch.int64),
        )
        ks.append(pk)
        vs.append(pv)
        conds.append(cond)
        biases.append(kvb.expand(bsz, -1))
        past_k, past_v = pk, pv
        length += s.block
        if length + s.block > s.max_length:
            past_k, past_v = slide(past_k, s.block), slide(past_v, s.block)
            length -= s.block
    return (
        torch.stack(ks, dim=1),
        torch.stack(vs, dim=1),
        torch.stack(conds, dim=1),
        torch.stack(biases, dim=1),
    )


def dz_loss(
    wam: DzWam,
    data: Data,
    rows: Tensor,
    valid: Tensor,
    gen: torch.Generator,
    cfg_drop: float,
    state_noise: float,
    video_weight: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """Velocity MSE of actions and video latents over the valid chunks: (total, actions, video)."""
    b = data.get(rows)
    tokens = b["tokens"][:, 0]
    if cfg_drop > 0:
        drop = torch.rand(tokens.shape[0], generator=gen) < cfg_drop
        tokens = torch.where(drop.unsqueeze(1), torch.full_like(tokens, wam.spec.pad_id), tokens)
    if state_noise > 0:
        b["state"] = b["state"] + state_noise * torch.randn(b["state"].shape, generator=gen)
    pk, pv, cond, kvb = run_contexts(wam, b, tokens)
    a1, v1 = b["actions"][valid], b["future"][valid]
    n = a1.shape[0]
    t = sample_time(n, gen)
    na = torch.randn(a1.shape, generator=gen)
    nv = torch.randn(v1.shape, generator=gen)
    ta = t.reshape(-1, 1, 1)
    tv = t.reshape(-1, 1, 1, 1, 1, 1)
    xa = (1 - ta) * na + ta * a1
    xv = (1 - tv) * nv + tv * v1
    va, vv = wam.denoise(xa, xv, t, pk[valid], pv[valid], cond[valid], kvb[valid])
    la = fn.mse_loss(va, a1 - na)
    lv = fn.mse_loss(vv, v1 - nv)
    return la + video_weight * lv, la, lv


class CachePool(nn.Module):
    """Readout of the auxiliary layout loss for the WAM (not exported): a learned query per head
    attending over the last layer's keys/values of the chunk's cache block -> (x, y)."""

    def __init__(self, spec: DzSpec) -> None:
        super().__init__()
        self.q = nn.Parameter(torch.randn(spec.heads, spec.head_dim) * 0.1)
        self.out = nn.Linear(spec.width, 2)

    def forward(self, k: Tensor, v: Tensor) -> Tensor:
        """k, v: [B, heads, N, d]."""
        w = torch.einsum("hd,bhnd->bhn", self.q, k) / math.sqrt(k.shape[-1])
        pooled = torch.einsum("bhn,bhnd->bhd", torch.softmax(w, dim=-1), v)
        out: Tensor = self.out(pooled.reshape(pooled.shape[0], -1))
        return out


def dz_layout_pred(wam: DzWam, pool: CachePool, latents: Tensor, tokens: Tensor) -> Tensor:
    """The first chunk's context on single layout frames (repeated over T, state = the normalized
    mean) -> the readout's (x, y)."""
    s = wam.spec
    b = latents.shape[0]
    lat = latents.unsqueeze(2).expand(-1, -1, s.context_frames, -1, -1, -1)
    past = torch.zeros((b, *s.cache_shape[1:]))
    zero = torch.zeros(1, dtype=torch.int64)
    pk, pv, _, _ = wam.context(lat, torch.zeros(b, s.state_dim), tokens, past, past, zero, zero)
    return pool(pk[:, -1, :, : s.block], pv[:, -1, :, : s.block])


# ----------------------------------------------------------------------------------------------
# ACT-like policy


def act_predict(pol: ActPolicy, b: dict[str, Tensor]) -> Tensor:
    """The normalized chunk as the runtime gets it (one run, zero noisy inputs, time 1)."""
    s = pol.spec
    n = b["state"].shape[0]
    memory, last = pol.context(b["latents"], b["state"], b["tokens"])
    zeros_a = torch.zeros(n, s.horizon, s.action_dim)
    zeros_v = torch.zeros(last.shape)
    actions, _ = pol.denoise(zeros_a, zeros_v, torch.ones(n), memory, last)
    return actions


def act_layout_pred(pol: ActPolicy, readout: nn.Linear, latents: Tensor, tokens: Tensor) -> Tensor:
    s = pol.spec
    lat = latents.unsqueeze(2).expand(-1, -1, s.context_frames, -1, -1, -1)
    memory, _ = pol.context(lat, torch.zeros(latents.shape[0], s.state_dim), tokens)
    out: Tensor = readout(memory[:, -s.max_tokens :].mean(dim=1))
    return out


# ----------------------------------------------------------------------------------------------
# Training loops


@dataclass
class Layouts:
    latents: Tensor
    tokens: Tensor
    xy: Tensor
    test_latents: Tensor
    test_tokens: Tensor
    test_xy: Tensor
    weight: float


@dataclass
class RunCfg:
    """At most `steps` steps and `minutes` of wall time: the schedule (warm-up 200 steps, cosine to
    10%) follows whichever is further along, so that a loaded machine shortens the run, not the
    schedule."""

    steps: int
    batch: int
    lr: float
    minutes: float
    log_every: int = 100

    def progress(self, step: int, t0: float) -> float:
        return max(step / self.steps, (time.time() - t0) / (60.0 * self.minutes))

    def lr_at(self, step: int, t0: float) -> float:
        if step < 200:
            return self.lr * (step + 1) / 200
        p = min(1.0, self.progress(step, t0))
        return self.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


def ema_update(ema: nn.Module, model: nn.Module, step: int, decay: float = 0.999) -> None:
    d = min(decay, (1 + step) / (10 + step))
    with torch.no_grad():
        for pe, pm in zip(ema.parameters(), model.parameters()):
            pe.mul_(d).add_(pm.detach(), alpha=1 - d)


def train_dz(
    wam: DzWam,
    data: Data,
    val: Data,
    cfg: RunCfg,
    args: argparse.Namespace,
    log: Logger,
    gen: torch.Generator,
    layouts: Layouts | None,
) -> tuple[DzWam, list[tuple[int, float, float]], dict[str, float]]:
    pool = CachePool(wam.spec) if layouts is not None else None
    params = [*wam.parameters(), *(pool.parameters() if pool is not None else [])]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-4, betas=(0.9, 0.99))
    ema = copy.deepcopy(wam)
    curve: list[tuple[int, float, float]] = []
    ra = rv = 0.0
    lay_err = float("nan")
    t0 = time.time()
    wam.train()
    step = -1
    while True:
        step += 1
        last = cfg.progress(step + 1, t0) >= 1.0
        for g in opt.param_groups:
            g["lr"] = cfg.lr_at(step, t0)
        rows, valid = sample_sequences(data, cfg.batch, args.chunks, gen)
        loss, la, lv = dz_loss(wam, data, rows, valid, gen, args.cfg_drop, 0.02, args.video_weight)
        if layouts is not None and pool is not None:
            li = torch.randint(0, layouts.xy.shape[0], (args.layout_batch,), generator=gen)
            pred = dz_layout_pred(wam, pool, layouts.latents[li], layouts.tokens[li])
            loss = loss + layouts.weight * fn.mse_loss(pred, layouts.xy[li])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema_update(ema, wam, step)
        ra = la.item() if step == 0 else 0.98 * ra + 0.02 * la.item()
        rv = lv.item() if step == 0 else 0.98 * rv + 0.02 * lv.item()
        if step % 25 == 0 or last:
            curve.append((step, ra, rv))
        if step % cfg.log_every == 0 or last:
            msg = ""
            if layouts is not None and pool is not None:
                with torch.no_grad():
                    p = dz_layout_pred(wam, pool, layouts.test_latents, layouts.test_tokens)
                lay_err = probe.position_error_cm(p, layouts.test_xy)
                msg = f", cube position error on new layouts {lay_err:.1f} cm"
            log(
                f"dz step {step:5d} action loss {ra:.4f} video loss {rv:.4f} "
                f"({(time.time() - t0) / (step + 1):.2f} s/step, {valid.sum().item()} chunks){msg}"
            )
        if last:
            break
    ema.eval()
    final = {"train_action_loss": ra, "train_video_loss": rv, **validate_dz(ema, val, args)}
    if layouts is not None:
        final["layout_error_new_cm"] = lay_err
    final["train_seconds"] = time.time() - t0
    final["steps"] = step + 1
    log(f"dz done: {json.dumps({k: round(v, 5) for k, v in final.items()})}")
    return ema, curve, final


@torch.no_grad()
def validate_dz(wam: DzWam, val: Data, args: argparse.Namespace) -> dict[str, float]:
    """Held-out velocity loss (fixed sequences, noise and times; no instruction dropout)."""
    g = torch.Generator().manual_seed(123)
    tot_a = tot_v = 0.0
    reps = 8
    for _ in range(reps):
        rows, valid = sample_sequences(val, 64, args.chunks, g)
        _, la, lv = dz_loss(wam, val, rows, valid, g, 0.0, 0.0, 1.0)
        tot_a += la.item() / reps
        tot_v += lv.item() / reps
    return {"val_action_loss": tot_a, "val_video_loss": tot_v}


def train_act(
    pol: ActPolicy,
    data: Data,
    val: Data,
    cfg: RunCfg,
    args: argparse.Namespace,
    log: Logger,
    gen: torch.Generator,
    layouts: Layouts | None,
) -> tuple[ActPolicy, list[tuple[int, float, float]], dict[str, float]]:
    readout = nn.Linear(pol.spec.width, 2) if layouts is not None else None
    params = [*pol.parameters(), *(readout.parameters() if readout is not None else [])]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-4, betas=(0.9, 0.99))
    ema = copy.deepcopy(pol)
    n = data.sp.num_samples
    curve: list[tuple[int, float, float]] = []
    r1 = r2 = 0.0
    lay_err = float("nan")
    t0 = time.time()
    pol.train()
    step = -1
    while True:
        step += 1
        last = cfg.progress(step + 1, t0) >= 1.0
        for g in opt.param_groups:
            g["lr"] = cfg.lr_at(step, t0)
        b = data.get(torch.randint(0, n, (cfg.batch,), generator=gen))
        b["state"] = b["state"] + 0.02 * torch.randn(b["state"].shape, generator=gen)
        pred = act_predict(pol, b)
        l1 = fn.l1_loss(pred, b["actions"])
        loss = l1
        if layouts is not None and readout is not None:
            li = torch.randint(0, layouts.xy.shape[0], (args.layout_batch,), generator=gen)
            p = act_layout_pred(pol, readout, layouts.latents[li], layouts.tokens[li])
            loss = loss + layouts.weight * fn.mse_loss(p, layouts.xy[li])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema_update(ema, pol, step)
        mse = fn.mse_loss(pred.detach(), b["actions"]).item()
        r1 = l1.item() if step == 0 else 0.98 * r1 + 0.02 * l1.item()
        r2 = mse if step == 0 else 0.98 * r2 + 0.02 * mse
        if step % 25 == 0 or last:
            curve.append((step, r1, r2))
        if step % cfg.log_every == 0 or last:
            msg = ""
            if layouts is not None and readout is not None:
                with torch.no_grad():
                    p = act_layout_pred(pol, readout, layouts.test_latents, layouts.test_tokens)
                lay_err = probe.position_error_cm(p, layouts.test_xy)
                msg = f", cube position error on new layouts {lay_err:.1f} cm"
            log(
                f"act step {step:5d} L1 {r1:.4f} MSE {r2:.4f} "
                f"({(time.time() - t0) / (step + 1):.2f} s/step){msg}"
            )
        if last:
            break
    ema.eval()
    with torch.no_grad():
        idx = torch.randperm(val.sp.num_samples, generator=torch.Generator().manual_seed(123))
        vb = val.get(idx[:1024])
        vp = act_predict(ema, vb)
    final = {
        "train_l1": r1,
        "train_mse": r2,
        "val_l1": fn.l1_loss(vp, vb["actions"]).item(),
        "val_mse": fn.mse_loss(vp, vb["actions"]).item(),
        "train_seconds": time.time() - t0,
        "steps": step + 1,
    }
    if layouts is not None:
        final["layout_error_new_cm"] = lay_err
    log(f"act done: {json.dumps({k: round(v, 5) for k, v in final.items()})}")
    return ema, curve, final


# ----------------------------------------------------------------------------------------------


def save_checkpoint(path: Path, wam: DzWam, pol: ActPolicy, info: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"dz": wam.state_dict(), "act": pol.state_dict(), "info": info}, path)


def load_checkpoint(path: Path = CHECKPOINT) -> tuple[DzWam, ActPolicy, dict[str, Any]]:
    ck = torch.load(path, map_location="cpu", weights_only=False)
    spec = DzSpec(vocab_size=len(vocab()))
    wam, pol = DzWam(spec), ActPolicy(spec)
    wam.load_state_dict(ck["dz"])
    pol.load_state_dict(ck["act"])
    return wam.eval(), pol.eval(), ck["info"]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--dz-steps", type=int, default=1_000_000, help="step cap (time rules)")
    ap.add_argument("--dz-minutes", type=float, default=19.0, help="wall-time budget of the WAM")
    ap.add_argument("--dz-batch", type=int, default=32, help="sequences per step")
    ap.add_argument("--dz-lr", type=float, default=1e-3)
    ap.add_argument("--chunks", type=int, default=12, help="chunks per training sequence")
    ap.add_argument("--cfg-drop", type=float, default=0.1, help="instruction dropout (guidance)")
    ap.add_argument("--video-weight", type=float, default=1.0)
    ap.add_argument("--act-steps", type=int, default=1_000_000, help="step cap")
    ap.add_argument("--act-minutes", type=float, default=7.5, help="wall-time budget of ACT")
    ap.add_argument("--act-batch", type=int, default=128)
    ap.add_argument("--act-lr", type=float, default=1e-3)
    ap.add_argument(
        "--layouts",
        type=int,
        default=20000,
        help="rendered layouts for the auxiliary loss (0: off)",
    )
    ap.add_argument("--layout-weight", type=float, default=0.5)
    ap.add_argument("--layout-batch", type=int, default=64)
    ap.add_argument("--max-episodes", type=int, default=None)
    ap.add_argument("--only", choices=("dz", "act"), default=None, help="train one model only")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--smoke", action="store_true", help="tiny run of the whole path")
    ap.add_argument("--checkpoint", type=Path, default=CHECKPOINT)
    ap.add_argument("--out", type=Path, default=RECORD_DIR, help="training record folder")
    a = ap.parse_args()
    if a.smoke:
        a.dz_steps, a.act_steps, a.max_episodes = 20, 20, a.max_episodes or 12
        a.layouts = min(a.layouts, 100)
    torch.set_num_threads(a.threads)
    # The optimizer's import before MuJoCo's EGL context (see wam_model.train).
    torch.optim.AdamW([nn.Parameter(torch.zeros(1))])
    torch.manual_seed(a.seed)
    t_start = time.time()
    a.out.mkdir(parents=True, exist_ok=True)
    log = Logger(a.out / "train_log.txt")
    log(f"args {vars(a)}")
    spec = ModelSpec()
    norm = Norm.from_bundle()
    tr = load_split("train", spec, max_episodes=a.max_episodes)
    va = load_split("heldout", spec, max_episodes=None if not a.smoke else 4)
    ae = load_sim_autoencoder()
    lat_tr = encode_all(ae, tr.frames, raw=False)
    lat_va = encode_all(ae, va.frames, raw=False)
    data, val = Data(tr, lat_tr, norm), Data(va, lat_va, norm)
    dataset = {
        "train_episodes": tr.num_episodes,
        "train_samples": tr.num_samples,
        "heldout_episodes": va.num_episodes,
        "heldout_samples": va.num_samples,
    }
    log(f"dataset {json.dumps(dataset)}; loaded and encoded in {time.time() - t_start:.0f}s")
    layouts = None
    if a.layouts > 0:
        t0 = time.time()
        enc = functools.partial(encode_all, ae, raw=False)
        lat, tok, xy = probe.encoded_layouts(enc, probe.TRAIN_SEED0, a.layouts, spec)
        lat_te, tok_te, xy_te = probe.encoded_layouts(enc, probe.TEST_SEED0, 300, spec)
        layouts = Layouts(lat, tok, xy, lat_te, tok_te, xy_te, a.layout_weight)
        dataset["layouts"] = a.layouts
        log(f"{a.layouts} layouts rendered and encoded in {time.time() - t0:.0f}s")
    dz = DzSpec(vocab_size=len(vocab()))
    prev_wam, prev_pol = DzWam(dz), ActPolicy(dz)
    prev: dict[str, Any] = {"dz": {"curve": []}, "act": {"curve": []}}
    if a.only is not None and a.checkpoint.exists():
        prev_wam, prev_pol, prev = load_checkpoint(a.checkpoint)
    info: dict[str, Any] = {"dataset": dataset, "args": {k: str(v) for k, v in vars(a).items()}}
    curves: dict[str, list[tuple[int, float, float]]] = {}

    if a.only in (None, "dz"):
        torch.manual_seed(a.seed)  # the export's initialization seed
        wam = DzWam(dz)
        log(f"dz params {count_params(wam)}")
        cfg = RunCfg(a.dz_steps, a.dz_batch, a.dz_lr, a.dz_minutes)
        g = torch.Generator().manual_seed(a.seed + 1)
        wam, curves["dz"], info["dz"] = train_dz(wam, data, val, cfg, a, log, g, layouts)
        info["dz"]["params"] = count_params(wam)
        info["dz"]["curve"] = curves["dz"]
    else:
        wam, info["dz"] = prev_wam, prev["dz"]
    if a.only in (None, "act"):
        torch.manual_seed(a.seed + 1)
        pol = ActPolicy(dz)
        log(f"act params {count_params(pol)}")
        cfg = RunCfg(a.act_steps, a.act_batch, a.act_lr, a.act_minutes)
        g = torch.Generator().manual_seed(a.seed + 2)
        pol, curves["act"], info["act"] = train_act(pol, data, val, cfg, a, log, g, layouts)
        info["act"]["params"] = count_params(pol)
        info["act"]["curve"] = curves["act"]
    else:
        pol, info["act"] = prev_pol, prev["act"]
    info["total_seconds"] = time.time() - t_start
    gen_info = DATA_DIR / "generation.json"
    if gen_info.exists():
        dataset["generation"] = json.loads(gen_info.read_text())
    save_checkpoint(a.checkpoint, wam, pol, info)
    summary = {k: v for k, v in info.items()}
    for k in ("dz", "act"):
        summary[k] = {kk: vv for kk, vv in info[k].items() if kk != "curve"}
    (a.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    plot_curves(
        a.out / "loss.png",
        "training losses (EMA of batches)",
        {
            "DZ action velocity MSE": [(s, x) for s, x, _ in info["dz"]["curve"]],
            "DZ video velocity MSE": [(s, y) for s, _, y in info["dz"]["curve"]],
            "ACT action L1": [(s, x) for s, x, _ in info["act"]["curve"]],
            "ACT action MSE": [(s, y) for s, _, y in info["act"]["curve"]],
        },
    )
    log(f"total {info['total_seconds']:.0f}s; checkpoint {a.checkpoint}")


if __name__ == "__main__":
    main()
