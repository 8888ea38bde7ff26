"""Can the WAM's context encoder find the instructed cube? ``python -m wam_model.probe --layouts N``.

Renders N random scene layouts (the simulator's reset for seeds 50000.., both cameras, the start pose;
no expert, so a layout costs a few milliseconds), encodes them with the checkpoint's autoencoder and
trains a fresh copy of the WAM's context stage (patch tokens, instruction FiLM, context blocks) with a
linear readout of the instructed cube's table position (x, y) from the instruction tokens. Prints the
mean position error on the training layouts and on 600 held-out layouts (seeds 90000..), against the
error of always answering the mean position.

What it showed (models/README.md, "Against the grounding failure"): from 800 layouts (the number of
train episodes) the encoder learns the training layouts (0.3 cm) and is at chance on new ones (14.8 cm
against 14.4 cm); from 20,000 layouts it finds the cube in new ones to 3.0 cm after 3,000 steps.
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as fn
from numpy.typing import NDArray
from torch import Tensor, nn

from .nets import Wam, patchify
from .spec import DATA_DIR, INSTRUCTIONS, ModelSpec, tokenize

# Cube positions on the table span about +-0.15 m around (0.5, 0).
CENTRE = (0.5, 0.0)
SCALE = 0.15
TRAIN_SEED0 = 50000
TEST_SEED0 = 90000


def render_layouts(
    seed0: int, n: int, spec: ModelSpec
) -> tuple[NDArray[np.uint8], NDArray[np.int64], NDArray[np.float32]]:
    """Frames (n, V, H, W, 3) at the episode start, instruction tokens (n, L) and the instructed
    cube's (x, y) (n, 2) for seeds seed0..seed0+n-1, instructions cycling over all six."""
    from wam_sim import SimEnv  # type: ignore[import-not-found,attr-defined,unused-ignore]

    env = SimEnv((spec.image_size, spec.image_size))
    frames = np.empty((n, len(spec.cameras), spec.image_size, spec.image_size, 3), np.uint8)
    tokens = np.empty((n, spec.max_tokens), np.int64)
    xy = np.empty((n, 2), np.float32)
    for i in range(n):
        instruction = INSTRUCTIONS[i % len(INSTRUCTIONS)]
        env.reset(seed0 + i, instruction)
        images = env.render()
        frames[i] = np.stack([images[c] for c in spec.cameras])
        tokens[i] = tokenize(instruction, spec.max_tokens)
        xy[i] = env.cube_position()[:2]
    env.close()
    return frames, tokens, xy


def encoded_layouts(
    encode: Callable[[NDArray[np.uint8]], Tensor], seed0: int, n: int, spec: ModelSpec
) -> tuple[Tensor, Tensor, Tensor]:
    """`render_layouts` as the losses take them: latents [n, V, C, h, w] (`encode` of the frames),
    instruction tokens [n, L] and the normalized (x, y) [n, 2]."""
    frames, tokens, xy = render_layouts(seed0, n, spec)
    with torch.no_grad():
        latents = encode(frames)
    return latents, torch.from_numpy(tokens), normalize_xy(xy)


def position_error_cm(pred: Tensor, xy: Tensor) -> float:
    """Mean distance in cm between normalized (x, y) positions [N, 2]."""
    return 100 * float(((pred - xy) * SCALE).norm(dim=-1).mean())


def instruction_readout_features(wam: Wam, latents: Tensor, tokens: Tensor) -> Tensor:
    """The WAM's context stage on single frames ([B, V, C, h, w], repeated over the T context frames,
    with a constant state token): the mean of its instruction tokens' outputs [B, D], from which a
    linear readout gives the instructed cube's position."""
    s = wam.spec
    b = latents.shape[0]
    frames = latents.unsqueeze(2).expand(-1, -1, s.context_frames, -1, -1, -1)
    x = patchify(frames.reshape(b, -1, s.latent_channels, s.latent_size, s.latent_size), s.context_patch)
    words = wam.tok_emb(tokens)
    scale, shift = wam.instr_film(words.mean(dim=1)).unsqueeze(1).chunk(2, dim=-1)
    img = (wam.ctx_patch(x) + wam.ctx_pos) * (1 + scale) + shift
    state = wam.state_pos.unsqueeze(0).expand(b, -1, -1)
    ctx = torch.cat([img, state, words + wam.tok_pos], dim=1)
    for blk in wam.ctx_blocks:
        ctx = blk(ctx)
    return ctx[:, -s.max_tokens :].mean(dim=1)


def normalize_xy(xy: NDArray[np.float32]) -> Tensor:
    return (torch.from_numpy(xy) - torch.tensor(CENTRE)) / SCALE


class ContextProbe(nn.Module):
    """A fresh WAM's context stage with a position readout from its instruction tokens."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.wam = Wam(spec, video=False)
        self.readout = nn.Linear(spec.width, 2)

    def forward(self, latents: Tensor, tokens: Tensor) -> Tensor:
        out: Tensor = self.readout(instruction_readout_features(self.wam, latents, tokens))
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layouts", type=int, default=20000, help="training layouts")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--checkpoint", type=Path, default=DATA_DIR / "checkpoint.pt", help="for its autoencoder")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    from .train import encode_all, load_checkpoint  # train uses this module's layouts

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    spec, _, ae, _, _, _ = load_checkpoint(a.checkpoint)
    probe = ContextProbe(spec)
    # The optimizer before any rendering: torch imports its compile machinery here, which crashed when
    # MuJoCo's EGL context was already up.
    opt = torch.optim.AdamW(probe.parameters(), lr=5e-4, weight_decay=1e-4)
    t0 = time.time()
    encode = functools.partial(encode_all, ae, raw=False)
    lat_tr, tok_tr, y_tr = encoded_layouts(encode, TRAIN_SEED0, a.layouts, spec)
    lat_te, tok_te, y_te = encoded_layouts(encode, TEST_SEED0, 600, spec)
    print(f"rendered and encoded {a.layouts} + 600 layouts in {time.time() - t0:.0f} s", flush=True)
    gen = torch.Generator().manual_seed(0)

    def error_cm(lat: Tensor, tok: Tensor, y: Tensor) -> float:
        with torch.no_grad():
            return position_error_cm(probe(lat, tok), y)

    for step in range(a.steps):
        idx = torch.randint(0, a.layouts, (64,), generator=gen)
        loss = fn.mse_loss(probe(lat_tr[idx], tok_tr[idx]), y_tr[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 500 == 0 or step == a.steps - 1:
            n = min(600, a.layouts)
            seen = error_cm(lat_tr[:n], tok_tr[:n], y_tr[:n])
            new = error_cm(lat_te, tok_te, y_te)
            print(f"step {step:5d}: error on training layouts {seen:.1f} cm, on new layouts {new:.1f} cm", flush=True)
    chance = position_error_cm(y_tr.mean(dim=0).expand_as(y_te), y_te)
    print(f"always the mean position: {chance:.1f} cm on the new layouts")


if __name__ == "__main__":
    main()
