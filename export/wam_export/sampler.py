"""The node's flow-matching samplers in numpy, exactly as docs/bundle_format.md ("Sampling") writes
them and src/sampler.rs computes them: states in float32, step coefficients in float64 rounded to
float32, the same order of operations (so a torch model and its ONNX export are integrated
identically, and the Rust runtime reproduces the result to float32 rounding). Plus format 2's step
reuse. No torch.

Conventions: t = 0 is noise, t = 1 data; `field(t, x_a, x_v)` returns the velocities dx/dt.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from .spec import SamplerSpec

F32 = NDArray[np.float32]
Field = Callable[[np.float32, F32, F32], tuple[F32, F32]]

__all__ = ["Grid", "integrate", "shift_time"]


def shift_time(t: float, shift: float) -> float:
    """t' = t / (t + s (1 - t)) (SD3/Wan's sigma shift written in t)."""
    return t if shift == 1.0 else t / (t + shift * (1.0 - t))


class Grid:
    def __init__(self, steps: int, shift: float) -> None:
        self.steps = steps
        self.shift = shift

    def time(self, k: int) -> float:
        return shift_time(k / self.steps, self.shift)

    def model_time(self, k: int) -> np.float32:
        """t_k as the model gets it: unshifted `k * (1/K)` in f32 (format 1's arithmetic)."""
        if self.shift == 1.0:
            return np.float32(np.float32(k) * (np.float32(1.0) / np.float32(self.steps)))
        return np.float32(self.time(k))

    def step(self, k: int) -> np.float32:
        if self.shift == 1.0:
            return np.float32(np.float32(1.0) / np.float32(self.steps))
        return np.float32(self.time(k + 1) - self.time(k))


def _lambda(t: float) -> float:
    if t <= 0.0:
        return -math.inf
    if t >= 1.0:
        return math.inf
    return math.log(t) - math.log1p(-t)


class _Interval:
    def __init__(self, s: float, t: float) -> None:
        self.t = t
        ls, lt = _lambda(s), _lambda(t)
        self.h = lt - ls
        self.phi1 = math.expm1(-self.h) if math.isfinite(self.h) else -1.0
        self.sigma_ratio = (1.0 - t) / (1.0 - s)

    def inverse_ratio(self, lambda_prev: float, lambda_s: float) -> float:
        d = lambda_prev - lambda_s
        if math.isinf(d):
            return 0.0
        if math.isinf(self.h):
            # h infinite (an end of the grid) with a finite history difference: r1 -> inf, 1/r1 ->
            # ...
            return math.copysign(math.inf, self.h) if d != 0 else 0.0
        return self.h / d


def _unipc_weights(
    grid: Grid, i: int, corrector_order: int, order: int
) -> tuple[
    float, tuple[float, float, float | None, float] | None, tuple[float, float, float | None]
]:
    """Step i's weights (src/sampler.rs `UniPcStep::new`): sigma_i; corrector weights of x_{i-1}^c,
    m_{i-1}, m_{i-2}, m_i (None at i = 0); predictor weights of x_i^c, m_i, m_{i-1}."""

    def lam(k: int) -> float:
        return _lambda(grid.time(k))

    corrector = None
    if i > 0:
        iv = _Interval(grid.time(i - 1), grid.time(i))
        a_b = iv.t * iv.phi1
        w_x, w_m1, w_m = iv.sigma_ratio, -a_b, 0.0
        if corrector_order == 1:
            rho = 0.5
            corrector = (w_x, w_m1 + a_b * rho, None, w_m - a_b * rho)
        else:
            inv_r1 = iv.inverse_ratio(lam(i - 2), lam(i - 1))
            hh = -iv.h
            b_h = iv.phi1
            h_phi_k = iv.phi1 / hh - 1.0
            b1 = h_phi_k / b_h
            h_phi_k = h_phi_k / hh - 0.5
            b2 = 2.0 * h_phi_k / b_h
            rho1 = (b2 - b1) * inv_r1 / (1.0 - inv_r1)
            rho2 = b1 - rho1
            w_m2 = -a_b * rho1 * inv_r1
            w_m1 += a_b * rho1 * inv_r1 + a_b * rho2
            corrector = (w_x, w_m1, w_m2, w_m - a_b * rho2)
    iv = _Interval(grid.time(i), grid.time(i + 1))
    a_b = iv.t * iv.phi1
    if order == 2:
        inv_r1 = iv.inverse_ratio(lam(i - 1), lam(i))
        w = -a_b * 0.5 * inv_r1
        predictor: tuple[float, float, float | None] = (iv.sigma_ratio, -a_b - w, w)
    else:
        predictor = (iv.sigma_ratio, -a_b, None)
    return 1.0 - grid.time(i), corrector, predictor


def integrate(spec: SamplerSpec, field: Field, x_a: F32, x_v: F32) -> tuple[F32, F32]:
    """Integrates actions and video latents from t = 0 to 1 with the bundle's solver, shift, order
    and reuse (evaluation indices whose denoise run is skipped: the previous outputs are used
    again). `solver: none` is not integrated: see `wam_export.rollout`."""
    if spec.solver == "none":
        raise ValueError("solver none has no integration (one denoise run at t = 1)")
    grid = Grid(spec.steps, spec.shift)
    reuse = set(spec.reuse)
    count = 0
    last: tuple[F32, F32] | None = None

    def evaluate(t: np.float32, xa: F32, xv: F32) -> tuple[F32, F32]:
        nonlocal count, last
        if count in reuse and last is not None:
            out = last
        else:
            out = field(np.float32(t), xa, xv)
            out = (np.asarray(out[0], np.float32), np.asarray(out[1], np.float32))
        count += 1
        last = out
        return out

    xa = np.array(x_a, dtype=np.float32, copy=True)
    xv = np.array(x_v, dtype=np.float32, copy=True)
    k_steps = spec.steps
    if spec.solver == "euler":
        for k in range(k_steps):
            va, vv = evaluate(grid.model_time(k), xa, xv)
            h = grid.step(k)
            xa = xa + h * va
            xv = xv + h * vv
    elif spec.solver == "heun":
        half = np.float32(0.5)
        for k in range(k_steps):
            va, vv = evaluate(grid.model_time(k), xa, xv)
            h = grid.step(k)
            if k + 1 == k_steps:
                xa = xa + h * va
                xv = xv + h * vv
                break
            xa0, da0, xv0, dv0 = xa, va, xv, vv
            xa = xa + h * va
            xv = xv + h * vv
            va, vv = evaluate(grid.model_time(k + 1), xa, xv)
            xa = xa0 + (da0 + va) * half * h
            xv = xv0 + (dv0 + vv) * half * h
    elif spec.solver == "unipc":
        p = spec.unipc_order
        prev_order = 0
        saved: list[list[F32]] = [[xa * 0, xa * 0, xa * 0], [xv * 0, xv * 0, xv * 0]]
        for i in range(k_steps):
            va, vv = evaluate(grid.model_time(i), xa, xv)
            this_order = min(p, i + 1, k_steps - i)
            sigma, corr, pred = _unipc_weights(grid, i, prev_order, this_order)
            f = np.float32
            new = []
            for x, v, sv in ((xa, va, saved[0]), (xv, vv, saved[1])):
                last_c, m1, m2 = sv
                m = x + f(sigma) * v
                if corr is not None:
                    w_x, w_m1, w_m2, w_m = corr
                    y = f(w_x) * last_c + f(w_m1) * m1 + f(w_m) * m
                    if w_m2 is not None:
                        y = y + f(w_m2) * m2
                    corrected = y
                else:
                    corrected = x
                nxt = f(pred[0]) * corrected + f(pred[1]) * m
                if pred[2] is not None:
                    nxt = nxt + f(pred[2]) * m1
                sv[0], sv[2], sv[1] = corrected, m1, m
                new.append(nxt)
            xa, xv = new[0], new[1]
            prev_order = this_order
    else:
        raise ValueError(f"unknown solver {spec.solver!r}")
    return xa.astype(np.float32), xv.astype(np.float32)
