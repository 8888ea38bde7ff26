"""Networks: the image autoencoder, the WAM (one transformer denoising video and action tokens together)
and the action-only baseline (the same network without the video tokens).

Token layout (width D, `ModelSpec`):
- context tokens (the `context` stage, once per chunk): patches of the latents of the T context frames of
  every camera, one token for the normalized joint state, L instruction token embeddings, each with a
  learned position embedding, through `context_layers` transformer blocks. For every denoise layer the
  context stage then projects them to that layer's keys and values: the cache `ctx_k`, `ctx_v`
  ([1, layers, heads, Nc, head_dim]) passed to `denoise`.
- denoised tokens (the `denoise` stage, K times per chunk): patches of the F noisy future latent frames of
  every camera (video tokens) and H noisy action steps (action tokens), all in one sequence. Every block is
  adaLN-modulated by the flow time and attends over [context cache ; the denoised tokens]: video and action
  tokens see each other and the context. Heads: video velocity per patch, action velocity per step.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as fn
from torch import Tensor, nn

from .spec import ModelSpec

# ----------------------------------------------------------------------------------------------------
# Autoencoder


class ResBlock(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.c2 = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.c2(fn.gelu(self.c1(fn.gelu(x))))


class AutoEncoder(nn.Module):
    """64x64 RGB (normalized, [-1, 1]) -> latents [C, 8, 8] (normalized per channel) -> RGB in [0, 1]."""

    lat_mean: Tensor
    lat_std: Tensor

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        c = spec.latent_channels
        self.enc = nn.Sequential(
            nn.Conv2d(3, 16, 4, stride=2, padding=1),  # 32x32
            nn.GELU(),
            nn.Conv2d(16, 32, 4, stride=2, padding=1),  # 16x16
            nn.GELU(),
            nn.Conv2d(32, 64, 4, stride=2, padding=1),  # 8x8
            ResBlock(64),
            nn.GELU(),
            nn.Conv2d(64, c, 1),
        )
        self.dec = nn.Sequential(
            nn.Conv2d(c, 64, 3, padding=1),
            ResBlock(64),
            nn.GELU(),
            nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1),  # 16x16
            ResBlock(32),
            nn.GELU(),
            nn.ConvTranspose2d(32, 16, 4, stride=2, padding=1),  # 32x32
            nn.GELU(),
            nn.ConvTranspose2d(16, 16, 4, stride=2, padding=1),  # 64x64
            nn.GELU(),
            nn.Conv2d(16, 3, 3, padding=1),
        )
        # Per-channel statistics of the raw latents: encode returns (z - mean) / std.
        self.register_buffer("lat_mean", torch.zeros(c))
        self.register_buffer("lat_std", torch.ones(c))

    def encode_raw(self, x: Tensor) -> Tensor:
        return self.enc(x)

    def decode_raw(self, z: Tensor) -> Tensor:
        return torch.sigmoid(self.dec(z))

    def encode(self, x: Tensor) -> Tensor:
        z = self.enc(x)
        return (z - self.lat_mean.view(1, -1, 1, 1)) / self.lat_std.view(1, -1, 1, 1)

    def decode(self, z: Tensor) -> Tensor:
        return self.decode_raw(z * self.lat_std.view(1, -1, 1, 1) + self.lat_mean.view(1, -1, 1, 1))


# ----------------------------------------------------------------------------------------------------
# Transformer pieces


def patchify(x: Tensor, p: int) -> Tensor:
    """[B, N, C, h, w] -> [B, N * (h/p) * (w/p), C*p*p]."""
    b, n, c, h, w = x.shape
    x = x.reshape(b, n, c, h // p, p, w // p, p)
    x = x.permute(0, 1, 3, 5, 2, 4, 6)
    return x.reshape(b, n * (h // p) * (w // p), c * p * p)


def unpatchify(x: Tensor, n: int, c: int, h: int, w: int, p: int) -> Tensor:
    """Inverse of `patchify`: [B, N * (h/p) * (w/p), C*p*p] -> [B, N, C, h, w]."""
    b = x.shape[0]
    x = x.reshape(b, n, h // p, w // p, c, p, p)
    x = x.permute(0, 1, 4, 2, 5, 3, 6)
    return x.reshape(b, n, c, h, w)


def attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Plain softmax attention ([B, heads, N, d]); written out so that every exporter handles it."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    w = torch.softmax(torch.matmul(q * scale, k.transpose(-1, -2)), dim=-1)
    return torch.matmul(w, v)


class Mlp(nn.Module):
    def __init__(self, d: int, ratio: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d, d * ratio)
        self.fc2 = nn.Linear(d * ratio, d)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(fn.gelu(self.fc1(x), approximate="tanh"))


class EncoderBlock(nn.Module):
    """Pre-LN self-attention block for the context tokens."""

    def __init__(self, d: int, heads: int, ratio: int) -> None:
        super().__init__()
        self.heads = heads
        self.n1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.n2 = nn.LayerNorm(d)
        self.mlp = Mlp(d, ratio)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        qkv = self.qkv(self.n1(x)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = attention(qkv[0], qkv[1], qkv[2]).transpose(1, 2).reshape(b, n, d)
        x = x + self.proj(a)
        return x + self.mlp(self.n2(x))


class DenoiseBlock(nn.Module):
    """adaLN-zero block: the denoised tokens attend over [context keys/values ; their own]."""

    def __init__(self, d: int, heads: int, ratio: int) -> None:
        super().__init__()
        self.heads = heads
        self.n1 = nn.LayerNorm(d, elementwise_affine=False)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.n2 = nn.LayerNorm(d, elementwise_affine=False)
        self.mlp = Mlp(d, ratio)
        self.ada = nn.Linear(d, 6 * d)
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)
        # the context's keys/values for this layer (computed by the context stage)
        self.ctx_norm = nn.LayerNorm(d)
        self.ctx_kv = nn.Linear(d, 2 * d)

    def context_kv(self, ctx: Tensor) -> tuple[Tensor, Tensor]:
        b, n, d = ctx.shape
        kv = (
            self.ctx_kv(self.ctx_norm(ctx))
            .reshape(b, n, 2, self.heads, d // self.heads)
            .permute(2, 0, 3, 1, 4)
        )
        return kv[0], kv[1]

    def forward(self, x: Tensor, cond: Tensor, ck: Tensor, cv: Tensor) -> Tensor:
        b, n, d = x.shape
        s1, g1, a1, s2, g2, a2 = self.ada(cond).unsqueeze(1).chunk(6, dim=-1)
        h = self.n1(x) * (1 + g1) + s1
        qkv = self.qkv(h).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        k = torch.cat([ck, qkv[1]], dim=2)
        v = torch.cat([cv, qkv[2]], dim=2)
        a = attention(qkv[0], k, v).transpose(1, 2).reshape(b, n, d)
        x = x + a1 * self.proj(a)
        h = self.n2(x) * (1 + g2) + s2
        return x + a2 * self.mlp(h)


def time_embedding(t: Tensor, d: int) -> Tensor:
    """Sinusoidal embedding of the flow time t in [0, 1] ([B] -> [B, d])."""
    half = d // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    a = (t.reshape(-1, 1) * 1000.0) * freqs.reshape(1, -1)
    return torch.cat([torch.cos(a), torch.sin(a)], dim=-1)


# ----------------------------------------------------------------------------------------------------
# WAM


class Wam(nn.Module):
    """World Action Model (video tokens + action tokens denoised together) or, with `video=False`, the
    action-only baseline (the same network without the video tokens).

    Output parametrization: the heads predict the clean data x1 as a residual on a reference (actions: the
    current state in normalized action space; video: the last context frame's latents), and the denoise
    stage returns the flow velocity (x1_hat - x_t) / (1 - t) that the Euler sampler integrates; at the
    last Euler step (t = 1 - 1/K) the sample lands on x1_hat.
    """

    s2a_scale: Tensor
    s2a_shift: Tensor

    def __init__(self, spec: ModelSpec, video: bool = True) -> None:
        super().__init__()
        self.spec = spec
        self.video = video
        d, p = spec.width, spec.patch
        c, hw = spec.latent_channels, spec.latent_size
        self.patches_per_frame = (hw // p) ** 2
        pd = c * p * p
        v, t = spec.num_cameras, spec.context_frames
        # context tokens
        cp = spec.context_patch
        self.ctx_patch = nn.Linear(c * cp * cp, d)
        self.ctx_pos = nn.Parameter(torch.randn(v * t * (hw // cp) ** 2, d) * 0.02)
        self.state_in = nn.Linear(spec.state_dim, d)
        self.state_pos = nn.Parameter(torch.randn(1, d) * 0.02)
        self.tok_emb = nn.Embedding(spec.vocab_size, d)
        self.tok_pos = nn.Parameter(torch.randn(spec.max_tokens, d) * 0.02)
        # FiLM of the image tokens by the instruction (bag of its word embeddings): selecting the patches
        # of the instructed colour becomes a per-feature gate instead of something attention must find.
        # Zero-initialized: starts as the identity.
        self.instr_film = nn.Linear(d, 2 * d)
        nn.init.zeros_(self.instr_film.weight)
        nn.init.zeros_(self.instr_film.bias)
        self.instr_cond = nn.Linear(d, d)  # the instruction added to the denoiser's conditioning
        self.ctx_blocks = nn.ModuleList(
            [EncoderBlock(d, spec.heads, spec.mlp_ratio) for _ in range(spec.context_layers)]
        )
        # denoised tokens
        self.act_in = nn.Linear(spec.action_dim, d)
        self.act_pos = nn.Parameter(torch.randn(spec.horizon, d) * 0.02)
        self.act_state = nn.Linear(spec.state_dim, d)  # the current state added to the conditioning
        if video:
            self.vid_in = nn.Linear(pd, d)
            self.vid_pos = nn.Parameter(torch.randn(v * spec.video_frames * self.patches_per_frame, d) * 0.02)
            self.vid_out = nn.Linear(d, pd)
        self.t_mlp = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.ctx_cond = nn.Linear(d, d)  # pooled context added to the time conditioning
        self.blocks = nn.ModuleList(
            [DenoiseBlock(d, spec.heads, spec.mlp_ratio) for _ in range(spec.denoise_layers)]
        )
        self.out_norm = nn.LayerNorm(d, elementwise_affine=False)
        self.out_ada = nn.Linear(d, 2 * d)
        nn.init.zeros_(self.out_ada.weight)
        nn.init.zeros_(self.out_ada.bias)
        self.act_out = nn.Linear(d, spec.action_dim)
        # normalized state -> the same joints in normalized action space (set from the data statistics)
        self.register_buffer("s2a_scale", torch.ones(spec.action_dim))
        self.register_buffer("s2a_shift", torch.zeros(spec.action_dim))

    @property
    def cache_names(self) -> tuple[str, ...]:
        names = ("ctx_k", "ctx_v", "ctx_cond", "ref_actions")
        return (*names, "ref_video") if self.video else names

    # --- context stage: latents [B,V,T,C,h,w], state [B,S] (normalized), tokens [B,L] ---------------
    def context(self, latents: Tensor, state: Tensor, tokens: Tensor) -> tuple[Tensor, ...]:
        """Returns the cache (`cache_names`): ctx_k, ctx_v [B, layers, heads, Nc, head_dim], ctx_cond
        [B, D], ref_actions [B, A] and (WAM) ref_video [B, V, F, C, h, w]."""
        b, v, t = latents.shape[:3]
        s = self.spec
        x = patchify(
            latents.reshape(b, v * t, s.latent_channels, s.latent_size, s.latent_size), s.context_patch
        )
        words = self.tok_emb(tokens)
        instr = words.mean(dim=1)  # [B, D]
        film_scale, film_shift = self.instr_film(instr).unsqueeze(1).chunk(2, dim=-1)
        img = (self.ctx_patch(x) + self.ctx_pos) * (1 + film_scale) + film_shift
        st = (self.state_in(state) + self.state_pos).unsqueeze(1)
        tok = words + self.tok_pos
        ctx = torch.cat([img, st, tok], dim=1)
        for blk in self.ctx_blocks:
            ctx = blk(ctx)
        ks, vs = [], []
        for blk in self.blocks:
            k, vv = blk.context_kv(ctx)  # type: ignore[operator]
            ks.append(k)
            vs.append(vv)
        cond = self.ctx_cond(ctx.mean(dim=1)) + self.act_state(state) + self.instr_cond(instr)
        ref_a = state * self.s2a_scale + self.s2a_shift
        out: tuple[Tensor, ...] = (torch.stack(ks, dim=1), torch.stack(vs, dim=1), cond, ref_a)
        if self.video:
            last = latents[:, :, t - 1 : t]  # [B, V, 1, C, h, w]
            out = (*out, last.expand(-1, -1, s.video_frames, -1, -1, -1).contiguous())
        return out

    # --- denoise stage -----------------------------------------------------------------------------
    def predict(
        self, actions: Tensor, video: Tensor | None, time: Tensor, *cache: Tensor
    ) -> tuple[Tensor, Tensor | None]:
        """x1 predictions (normalized actions [B,H,A]; video latents [B,V,F,C,h,w] or None) from the noisy
        actions/video at flow time `time` [B] and the context cache."""
        ctx_k, ctx_v, ctx_cond, ref_a = cache[:4]
        s = self.spec
        b = actions.shape[0]
        a = self.act_in(actions) + self.act_pos
        nv = 0
        if self.video:
            assert video is not None
            vt = patchify(video.reshape(b, -1, s.latent_channels, s.latent_size, s.latent_size), s.patch)
            vt = self.vid_in(vt) + self.vid_pos
            nv = vt.shape[1]
            x = torch.cat([vt, a], dim=1)
        else:
            x = a
        cond = self.t_mlp(time_embedding(time, s.width)) + ctx_cond
        for i, blk in enumerate(self.blocks):
            x = blk(x, cond, ctx_k[:, i], ctx_v[:, i])
        sh, sc = self.out_ada(cond).unsqueeze(1).chunk(2, dim=-1)
        x = self.out_norm(x) * (1 + sc) + sh
        xa = self.act_out(x[:, nv:]) + ref_a.unsqueeze(1)
        xv = None
        if self.video:
            xv = cache[4] + unpatchify(
                self.vid_out(x[:, :nv]),
                s.num_cameras * s.video_frames,
                s.latent_channels,
                s.latent_size,
                s.latent_size,
                s.patch,
            ).reshape(b, s.num_cameras, s.video_frames, s.latent_channels, s.latent_size, s.latent_size)
        return xa, xv

    def denoise(
        self, actions: Tensor, video: Tensor | None, time: Tensor, *cache: Tensor
    ) -> tuple[Tensor, Tensor | None]:
        """actions [B,H,A], video [B,V,F,C,h,w] (ignored by the baseline), time [B] -> velocities."""
        xa, xv = self.predict(actions, video, time, *cache)
        va = velocity(xa, actions, time)
        vv = velocity(xv, video, time) if xv is not None and video is not None else None
        return va, vv


def velocity(x1: Tensor, xt: Tensor, time: Tensor, min_gap: float = 0.05) -> Tensor:
    """Flow velocity towards the predicted data: (x1 - x_t) / (1 - t), t clamped below 1 - min_gap."""
    gap = (1.0 - time).clamp_min(min_gap).reshape(-1, *([1] * (xt.dim() - 1)))
    return (x1 - xt) / gap


def count_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())
