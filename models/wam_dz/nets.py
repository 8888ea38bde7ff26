"""A tiny DreamZero-style World Action Model and an ACT-like chunking policy, for the simulator's
interface (models/wam_model/spec.py: two 64x64 cameras, 7 joints, latents [8, 8, 8] of the wam_sim
autoencoder).

DreamZero-style (`DzWam`): one transformer (shared weights) over two kinds of tokens:
- clean context tokens, one block of B = V * T * (8/p)^2 = 16 per chunk: patches of the latents of
  the REAL frames observed for this chunk, with the chunk's absolute position (`chunk_index`) and
  the conditioning (instruction, state) as adaLN input at flow time 1. The context stage runs them
  through every layer attending over the KV cache (the valid past positions) and the block itself
  (blockwise-causal across chunks, bidirectional inside a block), and writes their per-layer keys
  and values into the cache at [length, length + B): present_k, present_v [1, layers, heads, M,
  head_dim] (position axis 3). Predicted frames never enter the cache.
- denoised tokens (the denoise stage, per evaluation): the noisy latents of the F predicted frames
  per camera (4 tokens per frame) and H action tokens in one sequence, adaLN-modulated by flow time
  + conditioning, attending over the cache (masked to its valid positions) and themselves with a
  blockwise-causal mask: video tokens of predicted frame f see predicted frames <= f, action tokens
  see everything. Heads: video velocity per patch, action velocity per step. The instruction is a
  bag of word embeddings; the empty instruction (all pad ids) is the unconditional branch of
  classifier-free guidance.

ACT-like (`ActPolicy`): context = a transformer encoder over the latent patches, the state and the
instruction words; denoise = H learned action queries cross-attending to it (deterministic, one run:
`solver: none`), video latents = the last observed frame's latents (a persistence prediction, F =
1)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as fn
from torch import Tensor, nn
from wam_model.nets import EncoderBlock

NEG = -1e4  # additive attention bias of masked keys (exp underflows to 0 in f32)


@dataclass(frozen=True)
class DzSpec:
    cameras: int = 2
    context_frames: int = 2  # T real frames per camera appended per chunk
    latent_channels: int = 8
    latent_size: int = 8
    patch: int = 4
    video_frames: int = 2  # F
    horizon: int = 16  # H
    action_dim: int = 7
    state_dim: int = 7
    vocab_size: int = 18
    max_tokens: int = 8
    pad_id: int = 0
    width: int = 64
    heads: int = 4
    layers: int = 2
    mlp_ratio: int = 2
    max_chunks: int = 3  # M = max_chunks * B

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    @property
    def patches_per_frame(self) -> int:
        return (self.latent_size // self.patch) ** 2

    @property
    def block(self) -> int:
        return self.cameras * self.context_frames * self.patches_per_frame

    @property
    def max_length(self) -> int:
        return self.max_chunks * self.block

    @property
    def cache_shape(self) -> tuple[int, int, int, int, int]:
        return (1, self.layers, self.heads, self.max_length, self.head_dim)


def patchify(x: Tensor, p: int) -> Tensor:
    """[B, N, C, h, w] -> [B, N * (h/p) * (w/p), C*p*p]."""
    b, n, c, h, w = x.shape
    x = x.reshape(b, n, c, h // p, p, w // p, p).permute(0, 1, 3, 5, 2, 4, 6)
    return x.reshape(b, n * (h // p) * (w // p), c * p * p)


def unpatchify(x: Tensor, n: int, c: int, h: int, w: int, p: int) -> Tensor:
    b = x.shape[0]
    x = x.reshape(b, n, h // p, w // p, c, p, p).permute(0, 1, 4, 2, 5, 3, 6)
    return x.reshape(b, n, c, h, w)


def sinusoid(t: Tensor, d: int, scale: float) -> Tensor:
    """[N] -> [N, d] sinusoidal embedding of t * scale."""
    half = d // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, dtype=torch.float32) / half)
    a = (t.reshape(-1, 1).to(torch.float32) * scale) * freqs.reshape(1, -1)
    return torch.cat([torch.cos(a), torch.sin(a)], dim=-1)


def attend(q: Tensor, k: Tensor, v: Tensor, bias: Tensor) -> Tensor:
    """Softmax attention [B, heads, N, d] with an additive bias broadcast to [B, heads, N, Nk]."""
    w = torch.matmul(q * (1.0 / math.sqrt(q.shape[-1])), k.transpose(-1, -2)) + bias
    return torch.matmul(torch.softmax(w, dim=-1), v)


class Block(nn.Module):
    """adaLN block whose attention sees [cache keys/values ; its own]."""

    def __init__(self, d: int, heads: int, ratio: int) -> None:
        super().__init__()
        self.heads = heads
        self.n1 = nn.LayerNorm(d, elementwise_affine=False)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.n2 = nn.LayerNorm(d, elementwise_affine=False)
        self.fc1 = nn.Linear(d, d * ratio)
        self.fc2 = nn.Linear(d * ratio, d)
        self.ada = nn.Linear(d, 6 * d)

    def qkv_of(self, x: Tensor, cond: Tensor) -> tuple[Tensor, Tensor, Tensor, tuple[Tensor, ...]]:
        b, n, d = x.shape
        mods = self.ada(cond).unsqueeze(1).chunk(6, dim=-1)
        h = self.n1(x) * (1 + mods[1]) + mods[0]
        qkv = self.qkv(h).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2], mods

    def finish(self, x: Tensor, a: Tensor, mods: tuple[Tensor, ...]) -> Tensor:
        b, _, n, _ = a.shape
        a = a.transpose(1, 2).reshape(b, n, -1)
        x = x + mods[2] * self.proj(a)
        h = self.n2(x) * (1 + mods[4]) + mods[3]
        return x + mods[5] * self.fc2(fn.gelu(self.fc1(h), approximate="tanh"))


class DzWam(nn.Module):
    def __init__(self, spec: DzSpec) -> None:
        super().__init__()
        self.spec = spec
        s, d = spec, spec.width
        pd = s.latent_channels * s.patch * s.patch
        self.lat_in = nn.Linear(pd, d)
        self.ctx_pos = nn.Parameter(torch.randn(s.block, d) * 0.1)  # within-block position
        self.tok_emb = nn.Embedding(s.vocab_size, d)
        self.state_in = nn.Linear(s.state_dim, d)
        self.t_mlp = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.blocks = nn.ModuleList([Block(d, s.heads, s.mlp_ratio) for _ in range(s.layers)])
        self.vid_pos = nn.Parameter(
            torch.randn(s.cameras * s.video_frames * s.patches_per_frame, d) * 0.1
        )
        self.act_in = nn.Linear(s.action_dim, d)
        self.act_pos = nn.Parameter(torch.randn(s.horizon, d) * 0.1)
        self.out_norm = nn.LayerNorm(d, elementwise_affine=False)
        self.vid_out = nn.Linear(d, pd)
        self.act_out = nn.Linear(d, s.action_dim)
        # blockwise-causal mask of the denoised tokens: [video (V*F*P) ; actions (H)]
        n_v = s.cameras * s.video_frames * s.patches_per_frame
        frame = torch.arange(n_v) // s.patches_per_frame % s.video_frames  # [V, F, P] order
        q_f = torch.cat([frame, torch.full((s.horizon,), s.video_frames)])
        k_f = torch.cat([frame, torch.full((s.horizon,), s.video_frames)])
        allowed = (k_f.reshape(1, -1) <= q_f.reshape(-1, 1)) & (
            (k_f.reshape(1, -1) < s.video_frames) | (q_f.reshape(-1, 1) == s.video_frames)
        )
        self.register_buffer("self_bias", torch.where(allowed, 0.0, NEG).to(torch.float32))

    def conditioning(self, state: Tensor, tokens: Tensor) -> Tensor:
        """[B, D]: the instruction (bag of word embeddings) + the normalized state."""
        return self.tok_emb(tokens).mean(dim=1) + self.state_in(state)

    # --- context stage
    # ------------------------------------------------------------------------------
    def context(
        self,
        latents: Tensor,
        state: Tensor,
        tokens: Tensor,
        past_k: Tensor,
        past_v: Tensor,
        past_length: Tensor,
        chunk_index: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Returns present_k, present_v (the cache with this chunk's block written at
        [length, length + B)), cond [1, D] (conditioning + chunk position, for denoise) and kv_bias
        [1, M] (0 on the valid cache positions after the write, NEG elsewhere)."""
        s = self.spec
        b = latents.shape[0]
        m = s.max_length
        x = patchify(
            latents.reshape(b, -1, s.latent_channels, s.latent_size, s.latent_size), s.patch
        )
        chunk_pos = sinusoid(chunk_index, s.width, 1.0)  # [1, D]
        x = self.lat_in(x) + self.ctx_pos + chunk_pos.unsqueeze(1)
        cond = self.conditioning(state, tokens) + chunk_pos
        cond_clean = cond + self.t_mlp(sinusoid(torch.ones(1), s.width, 1000.0))
        pos = torch.arange(m).reshape(1, m)
        start = past_length.reshape(-1, 1)
        written = (pos >= start) & (pos < start + s.block)  # [1, M]
        valid = pos < start + s.block
        # [1, 1, 1, M]: one length for the whole batch (training runs sequences in lockstep)
        bias = torch.where(valid, 0.0, NEG).reshape(-1, 1, 1, m)
        # block slot j of position p: p - length (clamped; used only where `written`)
        slot = (pos - start).clamp(0, s.block - 1).reshape(-1)
        ks, vs = [], []
        for i, blk in enumerate(self.blocks):
            q, k, v, mods = blk.qkv_of(x, cond_clean)  # type: ignore[operator]
            k_full = torch.where(written.reshape(1, 1, m, 1), k.index_select(2, slot), past_k[:, i])
            v_full = torch.where(written.reshape(1, 1, m, 1), v.index_select(2, slot), past_v[:, i])
            ks.append(k_full)
            vs.append(v_full)
            x = blk.finish(x, attend(q, k_full, v_full, bias), mods)  # type: ignore[operator]
        kv_bias = torch.where(valid, 0.0, NEG).to(torch.float32)
        return torch.stack(ks, dim=1), torch.stack(vs, dim=1), cond, kv_bias

    # --- denoise stage
    # ------------------------------------------------------------------------------
    def denoise(
        self,
        actions: Tensor,
        video: Tensor,
        time: Tensor,
        present_k: Tensor,
        present_v: Tensor,
        cond: Tensor,
        kv_bias: Tensor,
    ) -> tuple[Tensor, Tensor]:
        s = self.spec
        b = actions.shape[0]
        vt = patchify(
            video.reshape(b, -1, s.latent_channels, s.latent_size, s.latent_size), s.patch
        )
        x = torch.cat([self.lat_in(vt) + self.vid_pos, self.act_in(actions) + self.act_pos], dim=1)
        n_v = vt.shape[1]
        c = cond + self.t_mlp(sinusoid(time, s.width, 1000.0))
        bias_c = kv_bias.reshape(b, 1, 1, -1).expand(-1, -1, x.shape[1], -1)
        bias_s = self.self_bias.reshape(1, 1, x.shape[1], x.shape[1]).expand(b, -1, -1, -1)
        bias = torch.cat([bias_c, bias_s], dim=-1)
        for i, blk in enumerate(self.blocks):
            q, k, v, mods = blk.qkv_of(x, c)  # type: ignore[operator]
            kk = torch.cat([present_k[:, i], k], dim=2)
            vv = torch.cat([present_v[:, i], v], dim=2)
            x = blk.finish(x, attend(q, kk, vv, bias), mods)  # type: ignore[operator]
        x = self.out_norm(x)
        v_vid = unpatchify(
            self.vid_out(x[:, :n_v]),
            s.cameras * s.video_frames,
            s.latent_channels,
            s.latent_size,
            s.latent_size,
            s.patch,
        ).reshape(video.shape)
        return self.act_out(x[:, n_v:]), v_vid


class DzContext(nn.Module):
    def __init__(self, wam: DzWam) -> None:
        super().__init__()
        self.wam = wam

    def forward(self, *args: Tensor) -> tuple[Tensor, ...]:
        return self.wam.context(*args)


class DzDenoise(nn.Module):
    def __init__(self, wam: DzWam) -> None:
        super().__init__()
        self.wam = wam

    def forward(self, *args: Tensor) -> tuple[Tensor, Tensor]:
        return self.wam.denoise(*args)


class ActPolicy(nn.Module):
    """ACT-like deterministic chunking policy (see the module doc)."""

    def __init__(self, spec: DzSpec) -> None:
        super().__init__()
        self.spec = spec
        s, d = spec, spec.width
        pd = s.latent_channels * s.patch * s.patch
        n_img = s.cameras * s.context_frames * s.patches_per_frame
        self.lat_in = nn.Linear(pd, d)
        self.img_pos = nn.Parameter(torch.randn(n_img, d) * 0.1)
        self.state_in = nn.Linear(s.state_dim, d)
        self.tok_emb = nn.Embedding(s.vocab_size, d)
        self.tok_pos = nn.Parameter(torch.randn(s.max_tokens, d) * 0.1)
        self.encoder = nn.ModuleList(
            [EncoderBlock(d, s.heads, s.mlp_ratio) for _ in range(s.layers)]
        )
        self.queries = nn.Parameter(torch.randn(s.horizon, d) * 0.1)
        self.dec_q = nn.Linear(d, d)
        self.dec_kv = nn.Linear(d, 2 * d)
        self.dec_mlp = nn.Sequential(
            nn.Linear(d, d * s.mlp_ratio), nn.GELU(), nn.Linear(d * s.mlp_ratio, d)
        )
        self.act_out = nn.Linear(d, s.action_dim)

    def context(self, latents: Tensor, state: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """memory [1, N, D] and the last frame's latents [1, V, 1, C, h, w] (the video
        'prediction')."""
        s = self.spec
        b, _, t = latents.shape[:3]
        x = patchify(
            latents.reshape(b, -1, s.latent_channels, s.latent_size, s.latent_size), s.patch
        )
        img = self.lat_in(x) + self.img_pos
        seq = torch.cat(
            [img, self.state_in(state).unsqueeze(1), self.tok_emb(tokens) + self.tok_pos], 1
        )
        for blk in self.encoder:
            seq = blk(seq)
        return seq, latents[:, :, t - 1 : t].contiguous()

    def denoise(
        self, actions: Tensor, video: Tensor, time: Tensor, memory: Tensor, last_latents: Tensor
    ) -> tuple[Tensor, Tensor]:
        """One run (solver none): the normalized chunk and video latents; the noisy inputs (zeros)
        and the time (1) are accepted for the format and contribute nothing but zeros."""
        b = memory.shape[0]
        q = self.queries.unsqueeze(0).expand(b, -1, -1) + 0.0 * actions.sum() + 0.0 * time.sum()
        s = self.spec
        n, d = memory.shape[1], s.width
        qh = self.dec_q(q).reshape(b, -1, s.heads, s.head_dim).transpose(1, 2)
        kv = self.dec_kv(memory).reshape(b, n, 2, s.heads, s.head_dim).permute(2, 0, 3, 1, 4)
        a = attend(qh, kv[0], kv[1], torch.zeros(1))
        h = q + a.transpose(1, 2).reshape(b, -1, d)
        h = h + self.dec_mlp(h)
        return self.act_out(h), last_latents + 0.0 * video


class ActContext(nn.Module):
    def __init__(self, pol: ActPolicy) -> None:
        super().__init__()
        self.pol = pol

    def forward(self, latents: Tensor, state: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        return self.pol.context(latents, state, tokens)


class ActDenoise(nn.Module):
    def __init__(self, pol: ActPolicy) -> None:
        super().__init__()
        self.pol = pol

    def forward(self, *args: Tensor) -> tuple[Tensor, Tensor]:
        return self.pol.denoise(*args)


def count_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())
