"""Flow matching with the Rust sampler's convention (src/sampler.rs).

t = 0 is pure Gaussian noise, t = 1 is data: x_t = (1 - t) * noise + t * data; the network predicts the
velocity v = data - noise. Sampling: Euler with K steps, dt = 1/K (f32), t_k = k * dt, x += dt * v.
Noise and data live in normalized space (actions with the manifest's action mean/std, video as the
autoencoder's normalized latents).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor


def sample_time(b: int, gen: torch.Generator | None = None) -> Tensor:
    """Training times: half uniform on [0, 1], half from a logit-normal (more weight mid-path)."""
    u = torch.rand(b, generator=gen)
    ln = torch.sigmoid(torch.randn(b, generator=gen))
    pick = torch.rand(b, generator=gen) < 0.5
    return torch.where(pick, u, ln)


def interpolate(noise: Tensor, data: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """x_t and the target velocity for times t [B] (broadcast over the trailing dims)."""
    tt = t.reshape(-1, *([1] * (data.dim() - 1)))
    return (1 - tt) * noise + tt * data, data - noise


VelocityFn = Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]


def euler(field: VelocityFn, x_a: Tensor, x_v: Tensor, steps: int) -> tuple[Tensor, Tensor]:
    """Integrates from t = 0 to 1 exactly like the Rust sampler (f32 dt and t_k = k * dt)."""
    dt = np.float32(1.0) / np.float32(steps)
    b = x_a.shape[0]
    for k in range(steps):
        t = torch.full((b,), float(np.float32(k) * dt), dtype=torch.float32)
        v_a, v_v = field(x_a, x_v, t)
        x_a = x_a + float(dt) * v_a
        x_v = x_v + float(dt) * v_v
    return x_a, x_v
