"""Independent numpy reference of the node's flow-matching solvers (src/sampler.rs), written from the
published formulas and not from the Rust code, in the conventions those formulas use: the sigma
convention of SD3/Wan/diffusers (sigma = 1 - t, noise at sigma = 1), a model output u = dx/dsigma
(= noise - data, the negative of the node's velocity), and the structure of the diffusers schedulers:

- Euler: x <- x + (sigma_next - sigma) u.
- Heun: diffusers' FlowMatchHeunDiscreteScheduler (Karras et al. 2022, EDM Algorithm 1): the sigmas
  interleaved as [s0, s1, s1, ..., s_{K-1}, s_{K-1}, 0], an Euler step and then the trapezoid from the
  saved sample with the mean of both derivatives; the last interval (to sigma = 0) Euler only.
- UniPC: Zhao et al. 2023 (arXiv 2302.04867), UniP-p predictor and UniC corrector in data-prediction form,
  B(h) = expm1(-h) ("bh2"), as diffusers' UniPCMultistepScheduler with use_flow_sigmas (alpha = 1 - sigma,
  x0 = x - sigma u), lower_order_final, and the history lists, R matrices and linear solves of that code.
  The node's grid starts at sigma = 1 exactly (diffusers starts at 1 - 1/1000), where lambda = -inf: a
  history point there enters as the limit of the formulas (its divided difference is 0, and in a solve
  its unknown is 0 and the system loses its last row).

diffusers and torch are not installed in the test environment; this file is the reference.

    python tests/sampler_reference.py     # rewrites tests/fixtures/sampler_reference.json

The fixture holds, for a fixed nonlinear field v(x, t) = tanh(A x + b t) on x = [actions (3), video (2)],
every model evaluation (time and state) and the final state, per solver, step count, shift and
inpainting; and with classifier-free guidance (a second field tanh(A_U x + b_U t) as the
unconditional branch) and with reuse (listed evaluations skip the model and reuse its last output). tests/sampler_reference.rs compares the Rust sampler with it to 1e-9;
tests/test_sampler_reference.py checks the committed file is what this script writes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "sampler_reference.json"

N_ACTIONS = 3
A = np.array(
    [
        [-1.2, 0.4, 0.0, 0.3, -0.2],
        [0.5, -0.8, 0.6, 0.0, 0.1],
        [0.0, -0.7, -1.5, 0.2, 0.4],
        [0.3, 0.0, 0.5, -0.9, 0.8],
        [-0.4, 0.2, 0.0, -0.6, -1.1],
    ]
)
B = np.array([1.5, -0.8, 0.6, -1.3, 0.9])
X0 = np.array([0.8, -1.1, 0.3, 1.4, -0.5])
# Inpainting: the first two action entries known, one exactly and one softly.
INPAINT = {"noise": [0.8, -1.1], "target": [0.5, -0.25], "weight": [1.0, 0.375]}

# Classifier-free guidance: the unconditional field is tanh(A_U x + B_U t); the two are combined as
# uncond + scale (cond - uncond) on the outputs in apply_to (actions: the first N_ACTIONS entries,
# video: the rest), the others keep the conditional output.
A_U = 0.5 * A[::-1].copy()
B_U = -0.7 * B
GUIDANCE = [
    {"scale": 2.5, "apply_to": ["actions"]},
    {"scale": 3.0, "apply_to": ["video", "actions"]},
]
# Reuse: 0-based evaluation indices at which the model is not run and its previous output stands.
REUSE = [[2, 4], [1]]

SOLVERS = [("euler", None), ("heun", None), ("unipc", 1), ("unipc", 2)]
STEPS = [1, 2, 3, 5, 8, 16]
SHIFTS = [1.0, 3.0]
INPAINT_STEPS = [3, 7]
INPAINT_SHIFTS = [1.0, 5.0]


def velocity(x: np.ndarray, t: float) -> np.ndarray:
    """The node's velocity dx/dt of the test field."""
    return np.tanh(A @ x + B * t)


def velocity_uncond(x: np.ndarray, t: float) -> np.ndarray:
    """The unconditional branch's velocity (guidance cases)."""
    return np.tanh(A_U @ x + B_U * t)


def guided(x: np.ndarray, t: float, guidance: dict | None) -> np.ndarray:
    """Classifier-free guidance: uncond + scale (cond - uncond) on the chosen outputs."""
    cond = velocity(x, t)
    if guidance is None:
        return cond
    uncond = velocity_uncond(x, t)
    combined = uncond + guidance["scale"] * (cond - uncond)
    out = cond.copy()
    if "actions" in guidance["apply_to"]:
        out[:N_ACTIONS] = combined[:N_ACTIONS]
    if "video" in guidance["apply_to"]:
        out[N_ACTIONS:] = combined[N_ACTIONS:]
    return out


def flow_sigmas(steps: int, shift: float) -> np.ndarray:
    """sigma_k = 1 - k/K, shifted as SD3/Wan: shift sigma / (1 + (shift - 1) sigma); K + 1 values."""
    sigma = 1.0 - np.arange(steps + 1) / steps
    return shift * sigma / (1.0 + (shift - 1.0) * sigma)


class Model:
    """Evaluations of the field as a diffusers-convention model, with the inpainting pull before each and
    a record of what it was given."""

    def __init__(
        self,
        inpaint: dict | None,
        guidance: dict | None = None,
        reuse: list[int] | None = None,
    ):
        self.inpaint = inpaint
        self.guidance = guidance
        self.reuse = reuse or []
        self.evals: list[tuple[float, np.ndarray]] = []
        self.calls = 0
        self.last: np.ndarray | None = None

    def pull(self, x: np.ndarray, t: float) -> np.ndarray:
        if self.inpaint is None:
            return x
        z, y, w = (np.array(self.inpaint[k]) for k in ("noise", "target", "weight"))
        n = len(z)
        x = x.copy()
        x[:n] = x[:n] + w * (((1.0 - t) * z + t * y) - x[:n])
        return x

    def __call__(self, x: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
        """Returns the (pulled) sample and the model output u = dx/dsigma there."""
        t = 1.0 - sigma
        x = self.pull(x, t)
        index = self.calls
        self.calls += 1
        if index in self.reuse and self.last is not None:
            # Step caching: the model is not run; its previous output stands (the pull still applies).
            return x, self.last
        self.evals.append((t, x.copy()))
        self.last = -guided(x, t, self.guidance)
        return x, self.last


def euler(x: np.ndarray, sigmas: np.ndarray, model: Model) -> np.ndarray:
    for k in range(len(sigmas) - 1):
        x, u = model(x, sigmas[k])
        x = x + (sigmas[k + 1] - sigmas[k]) * u
    return x


def heun(x: np.ndarray, sigmas: np.ndarray, model: Model) -> np.ndarray:
    """diffusers' FlowMatchHeunDiscreteScheduler.step, one call per model evaluation."""
    s = np.concatenate([sigmas[:1], np.repeat(sigmas[1:-1], 2), sigmas[-1:]])
    n_evals = 2 * (len(sigmas) - 1) - 1
    prev_derivative = dt = saved = None
    for j in range(n_evals):
        first_order = dt is None
        x, u = model(x, s[j])
        if first_order:
            sigma, sigma_next = s[j], s[j + 1]
            denoised = x - u * sigma
            derivative = (x - denoised) / sigma
            dt = sigma_next - sigma
            prev_derivative, saved = derivative, x
            x = x + derivative * dt
        else:
            sigma_next = s[j]
            denoised = x - u * sigma_next
            derivative = 0.5 * (prev_derivative + (x - denoised) / sigma_next)
            x = saved + derivative * dt
            prev_derivative = dt = saved = None
    return x


def _lambda(sigma: float) -> float:
    alpha = 1.0 - sigma
    with np.errstate(divide="ignore"):
        return float(np.log(alpha) - np.log(sigma))


def _solve_limit(rks: np.ndarray, b: np.ndarray) -> np.ndarray:
    """R rho = b with R[i] = rks ** i. An infinite rk (a history point at lambda = -inf) is the limit
    rk -> -inf: its rho is 0, and the equations of the finite ones are the first rows."""
    finite = np.isfinite(rks)
    n = int(finite.sum())
    rho = np.zeros(len(rks))
    R = np.array([[rk**i for rk in rks[finite]] for i in range(n)])
    rho[finite] = np.linalg.solve(R, b[:n])
    return rho


class UniPC:
    """UniPC-p (bh2, data prediction) over `sigmas` (K + 1 values ending at 0), diffusers' step()."""

    def __init__(self, sigmas: np.ndarray, order: int):
        self.sigmas = sigmas
        self.solver_order = order
        self.model_outputs: list = [None] * order
        self.lower_order_nums = 0
        self.last_sample = None
        self.this_order = 0
        self.step_index = 0

    def _coefficients(self, h: float, order: int):
        hh = -h
        h_phi_1 = np.expm1(hh)
        h_phi_k = h_phi_1 / hh - 1.0
        B_h = np.expm1(hh)
        b = []
        factorial_i = 1
        for i in range(1, order + 1):
            b.append(h_phi_k * factorial_i / B_h)
            factorial_i *= i + 1
            h_phi_k = h_phi_k / hh - 1.0 / factorial_i
        return h_phi_1, B_h, np.array(b)

    def predictor(self, x: np.ndarray, order: int) -> np.ndarray:
        i = self.step_index
        m0 = self.model_outputs[-1]
        sigma_t, sigma_s0 = self.sigmas[i + 1], self.sigmas[i]
        alpha_t = 1.0 - sigma_t
        lambda_s0 = _lambda(sigma_s0)
        h = _lambda(sigma_t) - lambda_s0
        rks, D1s = [], []
        for k in range(1, order):
            mi = self.model_outputs[-(k + 1)]
            rk = (_lambda(self.sigmas[i - k]) - lambda_s0) / h
            rks.append(rk)
            D1s.append((mi - m0) / rk)
        rks.append(1.0)
        h_phi_1, B_h, b = self._coefficients(h, order)
        x_t = sigma_t / sigma_s0 * x - alpha_t * h_phi_1 * m0
        if D1s:
            # UniP-2: rho = 1/2 (the paper's and diffusers' choice); higher orders would solve R.
            rhos_p = np.array([0.5]) if order == 2 else _solve_limit(np.array(rks[:-1]), b[:-1])
            x_t = x_t - alpha_t * B_h * sum(r * d for r, d in zip(rhos_p, D1s))
        return x_t

    def corrector(self, model_t: np.ndarray, last_sample: np.ndarray, order: int) -> np.ndarray:
        i = self.step_index
        m0 = self.model_outputs[-1]
        sigma_t, sigma_s0 = self.sigmas[i], self.sigmas[i - 1]
        alpha_t = 1.0 - sigma_t
        lambda_s0 = _lambda(sigma_s0)
        h = _lambda(sigma_t) - lambda_s0
        rks, D1s = [], []
        for k in range(1, order):
            mi = self.model_outputs[-(k + 1)]
            rk = (_lambda(self.sigmas[i - (k + 1)]) - lambda_s0) / h
            rks.append(rk)
            D1s.append((mi - m0) / rk)
        rks.append(1.0)
        h_phi_1, B_h, b = self._coefficients(h, order)
        rhos_c = np.array([0.5]) if order == 1 else _solve_limit(np.array(rks), b)
        x_t = sigma_t / sigma_s0 * last_sample - alpha_t * h_phi_1 * m0
        corr = sum(r * d for r, d in zip(rhos_c[:-1], D1s))
        return x_t - alpha_t * B_h * (corr + rhos_c[-1] * (model_t - m0))

    def step(self, u: np.ndarray, sample: np.ndarray) -> np.ndarray:
        sigma = self.sigmas[self.step_index]
        m = sample - sigma * u  # data prediction of a flow model
        if self.step_index > 0 and self.last_sample is not None:
            sample = self.corrector(m, self.last_sample, self.this_order)
        self.model_outputs = self.model_outputs[1:] + [m]
        this_order = min(self.solver_order, len(self.sigmas) - 1 - self.step_index)
        self.this_order = min(this_order, self.lower_order_nums + 1)
        self.last_sample = sample
        prev = self.predictor(sample, self.this_order)
        self.lower_order_nums = min(self.lower_order_nums + 1, self.solver_order)
        self.step_index += 1
        return prev


def unipc(x: np.ndarray, sigmas: np.ndarray, model: Model, order: int) -> np.ndarray:
    scheduler = UniPC(sigmas, order)
    for k in range(len(sigmas) - 1):
        x, u = model(x, sigmas[k])
        x = scheduler.step(u, x)
    return x


def integrate(
    solver: str,
    order: int | None,
    steps: int,
    shift: float,
    inpaint: dict | None,
    x0: np.ndarray = X0,
    guidance: dict | None = None,
    reuse: list[int] | None = None,
) -> tuple[list[tuple[float, np.ndarray]], np.ndarray]:
    """All model runs (evaluations that are not reused) and the final state (pulled to the known
    values at t = 1)."""
    sigmas = flow_sigmas(steps, shift)
    model = Model(inpaint, guidance, reuse)
    if solver == "euler":
        x = euler(x0.copy(), sigmas, model)
    elif solver == "heun":
        x = heun(x0.copy(), sigmas, model)
    else:
        x = unipc(x0.copy(), sigmas, model, order)
    return model.evals, model.pull(x, 1.0)


def cases() -> list[dict]:
    grid: list[tuple] = [
        (s, o, k, sh, None, None, None) for s, o in SOLVERS for k in STEPS for sh in SHIFTS
    ]
    grid += [
        (s, o, k, sh, INPAINT, None, None)
        for s, o in SOLVERS
        for k in INPAINT_STEPS
        for sh in INPAINT_SHIFTS
    ]
    grid += [(s, o, 5, 3.0, None, g, None) for s, o in SOLVERS for g in GUIDANCE]
    grid += [(s, o, 5, sh, None, None, r) for s, o in SOLVERS for sh in SHIFTS for r in REUSE]
    grid += [(s, o, 4, 3.0, INPAINT, GUIDANCE[1], [2]) for s, o in SOLVERS]
    out = []
    for solver, order, steps, shift, inpaint, guidance, reuse in grid:
        evals, final = integrate(solver, order, steps, shift, inpaint, X0, guidance, reuse)
        out.append(
            {
                "solver": solver,
                "order": order,
                "steps": steps,
                "shift": shift,
                "inpaint": inpaint,
                "guidance": guidance,
                "reuse": reuse,
                "evals": [{"t": float(t), "x": x.tolist()} for t, x in evals],
                "final": final.tolist(),
            }
        )
    return out


def fixture() -> dict:
    return {
        "about": "written by tests/sampler_reference.py (independent numpy reference); do not edit",
        "n_actions": N_ACTIONS,
        "field": {"A": A.tolist(), "b": B.tolist()},
        "field_uncond": {"A": A_U.tolist(), "b": B_U.tolist()},
        "x0": X0.tolist(),
        "cases": cases(),
    }


def dumps(fx: dict) -> str:
    """JSON with one case per line (diffs stay readable); floats as repr, which round-trips exactly."""
    head = {k: v for k, v in fx.items() if k != "cases"}
    lines = [json.dumps(head)[:-1] + ', "cases": [']
    lines += [
        json.dumps(c) + ("," if i + 1 < len(fx["cases"]) else "") for i, c in enumerate(fx["cases"])
    ]
    return "\n".join(lines) + "\n]}\n"


def main() -> int:
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    FIXTURE.write_text(dumps(fixture()))
    print(f"wrote {FIXTURE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
