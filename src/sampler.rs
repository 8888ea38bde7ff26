//! Flow-matching sampler: integrates the model's velocity field from noise (t = 0) to data (t = 1) over the
//! K intervals of a time grid (optionally shifted towards the noise end), for the action chunk and the video
//! latents together, with one of three solvers: Euler, Heun (2nd order, K-diffusion/EDM style) or UniPC
//! (multistep predictor-corrector in data-prediction form, order 1 or 2). The noise is seeded so that a run
//! can be reproduced. The formulas and their conventions are in docs/bundle_format.md, "Sampling".
//!
//! Conventions: `x_t = (1 - t) noise + t data`, and the model returns the velocity `v = dx/dt` (Euler:
//! `x += dt * v`). In the sigma convention of SD3, Wan and diffusers, `sigma = 1 - t` and their velocity is
//! `dx/dsigma = -v`, so their data prediction `x - sigma * v_theirs` is `x + (1 - t) * v` here.

use std::fmt;
use std::ops::{Add, AddAssign, Div, Mul, Sub};

use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

/// The ODE solver of the sampler (manifest `sampler.solver`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Solver {
    /// K model evaluations, first order.
    Euler,
    /// Euler predictor + trapezoid corrector on every interval but the last (plain Euler there, which
    /// would otherwise evaluate the model at t = 1): 2K - 1 evaluations, second order.
    Heun,
    /// UniPC with B(h) = expm1(h) ("bh2"), data prediction, lower order at the first and last steps:
    /// K evaluations, the corrector comes free (it reuses the next step's evaluation). `order` is 1 or 2.
    UniPc { order: usize },
    /// Manifest `none`: one model run at t = 1 on zero inputs, whose outputs are the result (a model
    /// that predicts the chunk directly). One step, one evaluation.
    Direct,
}

impl Solver {
    /// Model evaluations for `steps` intervals.
    pub fn evaluations(&self, steps: usize) -> usize {
        match self {
            Solver::Euler | Solver::UniPc { .. } => steps,
            Solver::Heun => 2 * steps - 1,
            Solver::Direct => 1,
        }
    }

    /// How many scratch buffers per integrated tensor the solver needs in a [`Workspace`].
    fn scratch_buffers(&self) -> usize {
        match self {
            Solver::Euler | Solver::Direct => 0,
            // The state at the start of the interval and the velocity there.
            Solver::Heun => 2,
            // The last corrected state and the previous two data predictions.
            Solver::UniPc { .. } => 3,
        }
    }
}

impl fmt::Display for Solver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Solver::Euler => f.write_str("euler"),
            Solver::Heun => f.write_str("heun"),
            Solver::UniPc { order } => write!(f, "unipc (order {order}, bh2)"),
            Solver::Direct => f.write_str("none"),
        }
    }
}

/// The element type the solvers integrate: f32 in the runtime (the model's tensors), f64 where the solvers
/// are compared with reference values. Step coefficients are always computed in f64.
pub trait Real:
    Copy
    + PartialEq
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + AddAssign
{
    const ZERO: Self;
    const ONE: Self;
    fn from_f64(x: f64) -> Self;
    fn from_usize(n: usize) -> Self;
}

impl Real for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    fn from_f64(x: f64) -> Self {
        x as f32
    }
    fn from_usize(n: usize) -> Self {
        n as f32
    }
}

impl Real for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    fn from_f64(x: f64) -> Self {
        x
    }
    fn from_usize(n: usize) -> Self {
        n as f64
    }
}

/// The time shift of the schedule: `t' = t / (t + shift (1 - t))`, which is SD3's
/// `sigma' = shift sigma / (1 + (shift - 1) sigma)` with `sigma = 1 - t`. `shift > 1` spends more of the
/// steps near the noise end; 0 and 1 are fixed points.
pub fn shift_time(t: f64, shift: f64) -> f64 {
    if shift == 1.0 {
        t
    } else {
        t / (t + shift * (1.0 - t))
    }
}

/// The time grid `t_k = shift_time(k / K)`, `k = 0..=K`.
#[derive(Debug, Clone, Copy)]
struct Grid {
    steps: usize,
    shift: f64,
}

impl Grid {
    /// `t_k` in f64, exactly 0 and 1 at the ends (the UniPC coefficients take their limits there).
    fn time(&self, k: usize) -> f64 {
        shift_time(k as f64 / self.steps as f64, self.shift)
    }

    /// `t_k` as the model is given it. Unshifted it is `k * (1/K)` in `T`, the arithmetic of format 1's
    /// sampler, so that default bundles see bit-identical times.
    fn model_time<T: Real>(&self, k: usize) -> T {
        if self.shift == 1.0 {
            T::from_usize(k) * (T::ONE / T::from_usize(self.steps))
        } else {
            T::from_f64(self.time(k))
        }
    }

    /// `t_{k+1} - t_k`; unshifted exactly `1/K` in `T`, as format 1 stepped (differences of rounded
    /// times are not).
    fn step<T: Real>(&self, k: usize) -> T {
        if self.shift == 1.0 {
            T::ONE / T::from_usize(self.steps)
        } else {
            T::from_f64(self.time(k + 1) - self.time(k))
        }
    }
}

/// UniPC's `lambda(t) = ln(alpha / sigma) = ln(t / (1 - t))` (half the log signal-to-noise ratio):
/// -inf at t = 0, +inf at t = 1.
fn lambda(t: f64) -> f64 {
    t.ln() - (-t).ln_1p()
}

/// Classifier-free guidance (manifest `sampler.guidance`): per evaluation the model gives a conditional and
/// an unconditional output, combined as `uncond + scale * (cond - uncond)` on the chosen tensors (the
/// others keep the conditional output).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Guidance {
    pub scale: f64,
    pub actions: bool,
    pub video: bool,
}

impl Guidance {
    /// Writes the guided outputs into `cond_*` (the unconditional ones are read only).
    pub fn combine<T: Real>(
        &self,
        cond_a: &mut [T],
        uncond_a: &[T],
        cond_v: &mut [T],
        uncond_v: &[T],
    ) {
        let s = T::from_f64(self.scale);
        for (apply, cond, uncond) in [
            (self.actions, cond_a, uncond_a),
            (self.video, cond_v, uncond_v),
        ] {
            if apply {
                for (c, u) in cond.iter_mut().zip(uncond) {
                    *c = *u + s * (*c - *u);
                }
            }
        }
    }
}

impl fmt::Display for Guidance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let on: Vec<&str> = [(self.actions, "actions"), (self.video, "video")]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, name)| *name)
            .collect();
        write!(f, "scale {} on {}", self.scale, on.join(", "))
    }
}

/// A sampler configuration that cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SamplerError {
    #[error("solver `none` runs the model once: steps must be 1, not {steps}")]
    DirectSteps { steps: usize },
    #[error("reuse index {index}: {problem}")]
    Reuse { index: usize, problem: String },
}

/// The outputs one model evaluation writes: the velocities (the conditional branch's with guidance) and,
/// when the sampler guides, the unconditional branch's.
pub struct Velocities<'a, T> {
    pub actions: &'a mut [T],
    pub video: &'a mut [T],
    pub uncond: Option<(&'a mut [T], &'a mut [T])>,
}

pub struct FlowSampler {
    steps: usize,
    seed: u64,
    rng: StdRng,
    solver: Solver,
    shift: f64,
    guidance: Option<Guidance>,
    /// Sorted evaluation indices at which the model is not run (its previous outputs are reused).
    reuse: Vec<usize>,
}

impl FlowSampler {
    /// Euler on the unshifted grid (format 1's sampler); see [`FlowSampler::with_solver`] and
    /// [`FlowSampler::with_shift`].
    pub fn new(steps: usize, seed: u64) -> Self {
        assert!(steps > 0, "the sampler needs at least one step");
        FlowSampler {
            steps,
            seed,
            rng: StdRng::seed_from_u64(seed),
            solver: Solver::Euler,
            shift: 1.0,
            guidance: None,
            reuse: Vec::new(),
        }
    }

    /// Classifier-free guidance on every evaluation (None: off).
    pub fn with_guidance(mut self, guidance: Option<Guidance>) -> Self {
        self.guidance = guidance;
        self
    }

    /// Evaluation indices (0-based) at which the model is skipped and its previous outputs are reused;
    /// [`FlowSampler::validate`] checks them against the evaluation count.
    pub fn with_reuse(mut self, indices: &[usize]) -> Self {
        self.reuse = indices.to_vec();
        self.reuse.sort_unstable();
        self.reuse.dedup();
        self
    }

    pub fn guidance(&self) -> Option<Guidance> {
        self.guidance
    }

    pub fn reuse(&self) -> &[usize] {
        &self.reuse
    }

    /// Model evaluations that really run the model (the evaluations less the reused ones).
    pub fn model_runs(&self) -> usize {
        self.evaluations() - self.reuse.len().min(self.evaluations())
    }

    /// Whether the configuration can run: `none` has one step; each reuse index is at least 1 (index 0
    /// has nothing to reuse) and below the evaluation count.
    pub fn validate(&self) -> Result<(), SamplerError> {
        if self.solver == Solver::Direct && self.steps != 1 {
            return Err(SamplerError::DirectSteps { steps: self.steps });
        }
        let evaluations = self.evaluations();
        for &index in &self.reuse {
            if index == 0 {
                return Err(SamplerError::Reuse {
                    index,
                    problem: "the first evaluation has no previous outputs to reuse".into(),
                });
            }
            if index >= evaluations {
                return Err(SamplerError::Reuse {
                    index,
                    problem: format!(
                        "the solver makes {evaluations} evaluations (indices 0 to {})",
                        evaluations - 1
                    ),
                });
            }
        }
        Ok(())
    }

    pub fn with_solver(mut self, solver: Solver) -> Self {
        if let Solver::UniPc { order } = solver {
            assert!(
                (1..=2).contains(&order),
                "UniPC of order {order}: 1 or 2 are implemented"
            );
        }
        self.solver = solver;
        self
    }

    pub fn with_shift(mut self, shift: f64) -> Self {
        assert!(
            shift.is_finite() && shift > 0.0,
            "the time shift must be positive and finite"
        );
        self.shift = shift;
        self
    }

    pub fn steps(&self) -> usize {
        self.steps
    }

    pub fn solver(&self) -> Solver {
        self.solver
    }

    pub fn shift(&self) -> f64 {
        self.shift
    }

    /// Model evaluations per integration.
    pub fn evaluations(&self) -> usize {
        self.solver.evaluations(self.steps)
    }

    /// Restarts the noise sequence from the seed (used by `~/reset`).
    pub fn reseed(&mut self) {
        self.rng = StdRng::seed_from_u64(self.seed);
    }

    /// Fills `x` with standard Gaussian noise.
    pub fn fill_noise(&mut self, x: &mut [f32]) {
        for v in x.iter_mut() {
            *v = StandardNormal.sample(&mut self.rng);
        }
    }

    fn grid(&self) -> Grid {
        Grid {
            steps: self.steps,
            shift: self.shift,
        }
    }

    /// Integrates `x_a` (actions) and `x_v` (video latents) from t = 0 to t = 1. `field(t, x_a, x_v, v_a,
    /// v_v)` writes the velocities at time t into `v_a`, `v_v` (the workspace's buffers).
    pub fn integrate<T: Real, E>(
        &self,
        x_a: &mut [T],
        x_v: &mut [T],
        work: &mut Workspace<T>,
        field: impl FnMut(T, &[T], &[T], &mut [T], &mut [T]) -> Result<(), E>,
    ) -> Result<(), E> {
        self.integrate_inpainting(x_a, x_v, work, None, field)
    }

    /// [`FlowSampler::integrate`] with the first entries of the actions known (`known`): before every
    /// model evaluation they are moved, by their weight (1: all the way), to where the flow's straight path
    /// from their initial noise to the known value is at that time, `(1 - t) noise + t known`, and at the
    /// end to the known value. The network then denoises the rest consistently with them: inpainting with
    /// a soft mask, which needs no gradients and so works through ONNX. Each solver takes the moved state
    /// as the state at that time (as diffusers' inpainting pipelines replace the known region between
    /// scheduler steps).
    ///
    /// With guidance the one field stands for both branches (its output is copied as the unconditional
    /// one, so guidance has no effect); [`FlowSampler::integrate_guided`] gives the two branches.
    pub fn integrate_inpainting<T: Real, E>(
        &self,
        x_a: &mut [T],
        x_v: &mut [T],
        work: &mut Workspace<T>,
        known: Option<Inpaint<'_, T>>,
        mut field: impl FnMut(T, &[T], &[T], &mut [T], &mut [T]) -> Result<(), E>,
    ) -> Result<(), E> {
        self.integrate_guided(x_a, x_v, work, known, |t, xa, xv, out| {
            field(t, xa, xv, out.actions, out.video)?;
            if let Some((ua, uv)) = out.uncond {
                ua.copy_from_slice(out.actions);
                uv.copy_from_slice(out.video);
            }
            Ok(())
        })
    }

    /// The general integration: inpainting as [`FlowSampler::integrate_inpainting`], guidance (the field
    /// writes both branches into [`Velocities`]; the sampler combines them) and reuse (at a reused
    /// evaluation the field is not called and the previous evaluation's combined outputs stand).
    pub fn integrate_guided<T: Real, E>(
        &self,
        x_a: &mut [T],
        x_v: &mut [T],
        work: &mut Workspace<T>,
        known: Option<Inpaint<'_, T>>,
        mut field: impl FnMut(T, &[T], &[T], Velocities<'_, T>) -> Result<(), E>,
    ) -> Result<(), E> {
        assert!(
            x_a.len() == work.v_a.len() && x_v.len() == work.v_v.len(),
            "the workspace was made for {} action and {} video values, not {} and {}",
            work.v_a.len(),
            work.v_v.len(),
            x_a.len(),
            x_v.len()
        );
        work.prepare(self.solver, self.guidance.is_some());
        let guidance = self.guidance;
        let reuse = &self.reuse;
        let Workspace {
            v_a,
            v_v,
            a,
            v,
            u_a,
            u_v,
        } = work;
        let mut index = 0usize;
        // Whether the known entries are pulled onto their paths before an evaluation (not for `none`).
        let pull = std::cell::Cell::new(true);
        let mut evaluate = |t: T, x_a: &mut [T], x_v: &[T], v_a: &mut [T], v_v: &mut [T]| {
            if let (Some(known), true) = (&known, pull.get()) {
                known.apply(t, x_a);
            }
            let i = index;
            index += 1;
            if i > 0 && reuse.binary_search(&i).is_ok() {
                // v_a, v_v still hold the previous evaluation's (combined) outputs.
                return Ok(());
            }
            let uncond = guidance.map(|_| (&mut u_a[..], &mut u_v[..]));
            field(
                t,
                x_a,
                x_v,
                Velocities {
                    actions: v_a,
                    video: v_v,
                    uncond,
                },
            )?;
            if let Some(g) = guidance {
                g.combine(v_a, u_a, v_v, u_v);
            }
            Ok(())
        };
        let grid = self.grid();
        match self.solver {
            Solver::Direct => {
                // One run at t = 1 on zero inputs (no inpainting pull before it: the inputs are zeros);
                // its outputs are the result.
                x_a.fill(T::ZERO);
                x_v.fill(T::ZERO);
                pull.set(false);
                evaluate(T::ONE, x_a, x_v, v_a, v_v)?;
                x_a.copy_from_slice(v_a);
                x_v.copy_from_slice(v_v);
            }
            Solver::Euler => {
                for k in 0..self.steps {
                    evaluate(grid.model_time(k), x_a, x_v, v_a, v_v)?;
                    let h = grid.step(k);
                    euler_step(x_a, v_a, h);
                    euler_step(x_v, v_v, h);
                }
            }
            Solver::Heun => {
                for k in 0..self.steps {
                    evaluate(grid.model_time(k), x_a, x_v, v_a, v_v)?;
                    let h = grid.step(k);
                    if k + 1 == self.steps {
                        euler_step(x_a, v_a, h);
                        euler_step(x_v, v_v, h);
                        break;
                    }
                    heun_predict(x_a, v_a, a, h);
                    heun_predict(x_v, v_v, v, h);
                    evaluate(grid.model_time(k + 1), x_a, x_v, v_a, v_v)?;
                    heun_correct(x_a, v_a, a, h);
                    heun_correct(x_v, v_v, v, h);
                }
            }
            Solver::UniPc { order } => {
                let mut previous_order = 0;
                for i in 0..self.steps {
                    evaluate(grid.model_time(i), x_a, x_v, v_a, v_v)?;
                    // Warm-up (no history yet) and lower order on the last interval, which ends at
                    // sigma = 0 where the second-order terms are undefined (diffusers' lower_order_final).
                    let this_order = order.min(i + 1).min(self.steps - i);
                    let c = UniPcStep::<T>::new(&grid, i, previous_order, this_order);
                    unipc_update(x_a, v_a, a, &c);
                    unipc_update(x_v, v_v, v, &c);
                    previous_order = this_order;
                }
            }
        }
        if let Some(known) = &known {
            known.apply(T::ONE, x_a);
        }
        Ok(())
    }
}

/// The buffers the solvers write between model evaluations, owned by the caller so that the hot loop
/// allocates nothing: the velocities and, for Heun and UniPC, per integrated tensor the saved states and
/// data predictions (sized on the first integration that needs them: Euler needs none).
pub struct Workspace<T> {
    v_a: Vec<T>,
    v_v: Vec<T>,
    a: [Vec<T>; 3],
    v: [Vec<T>; 3],
    /// The unconditional branch's outputs (guidance only).
    u_a: Vec<T>,
    u_v: Vec<T>,
}

impl<T: Real> Workspace<T> {
    /// For `actions` action values and `video` video latent values.
    pub fn new(actions: usize, video: usize) -> Self {
        Workspace {
            v_a: vec![T::ZERO; actions],
            v_v: vec![T::ZERO; video],
            a: [Vec::new(), Vec::new(), Vec::new()],
            v: [Vec::new(), Vec::new(), Vec::new()],
            u_a: Vec::new(),
            u_v: Vec::new(),
        }
    }

    fn prepare(&mut self, solver: Solver, guided: bool) {
        if guided {
            self.u_a.resize(self.v_a.len(), T::ZERO);
            self.u_v.resize(self.v_v.len(), T::ZERO);
        }
        let n = solver.scratch_buffers();
        let (la, lv) = (self.v_a.len(), self.v_v.len());
        for buf in &mut self.a[..n] {
            buf.resize(la, T::ZERO);
        }
        for buf in &mut self.v[..n] {
            buf.resize(lv, T::ZERO);
        }
    }
}

/// Known leading action values for [`FlowSampler::integrate_inpainting`], in the sampler's (normalized)
/// space; `noise` is the initial noise of the same entries, `weight` (in [0, 1]) how strongly each is kept.
pub struct Inpaint<'a, T = f32> {
    pub noise: &'a [T],
    pub target: &'a [T],
    pub weight: &'a [T],
}

impl<T: Real> Inpaint<'_, T> {
    fn apply(&self, t: T, x: &mut [T]) {
        for (((x, z), y), w) in x
            .iter_mut()
            .zip(self.noise)
            .zip(self.target)
            .zip(self.weight)
        {
            let on_path = (T::ONE - t) * *z + t * *y;
            *x += *w * (on_path - *x);
        }
    }
}

fn euler_step<T: Real>(x: &mut [T], v: &[T], h: T) {
    for (x, v) in x.iter_mut().zip(v) {
        *x += h * *v;
    }
}

/// Heun's predictor: saves the state and velocity at the start of the interval, then an Euler step.
fn heun_predict<T: Real>(x: &mut [T], v: &[T], saved: &mut [Vec<T>; 3], h: T) {
    let [x0, d0, _] = saved;
    x0.copy_from_slice(x);
    d0.copy_from_slice(v);
    euler_step(x, v, h);
}

/// Heun's corrector: the trapezoid rule from the saved start with the mean of both velocities.
fn heun_correct<T: Real>(x: &mut [T], v: &[T], saved: &[Vec<T>; 3], h: T) {
    let [x0, d0, _] = saved;
    let half = T::from_f64(0.5);
    for (((x, v), x0), d0) in x.iter_mut().zip(v).zip(x0.iter()).zip(d0.iter()) {
        *x = *x0 + (*d0 + *v) * half * h;
    }
}

/// One UniPC step as fixed linear combinations (weights computed in f64 from the grid): the data
/// prediction `m_i = x_i + sigma_i v_i` of the state just evaluated; UniC corrects that state with it
/// (`x_i^c` from the last corrected state `x_{i-1}^c` and `m_i, m_{i-1}, m_{i-2}`); UniP predicts the next
/// state from `x_i^c` and `m_i, m_{i-1}`. A weight of `None` is a history term the order does not use.
struct UniPcStep<T> {
    sigma: T,
    /// Weights of `x_{i-1}^c`, `m_{i-1}`, `m_{i-2}`, `m_i`; `None` on the first step (nothing to correct).
    corrector: Option<(T, T, Option<T>, T)>,
    /// Weights of `x_i^c`, `m_i`, `m_{i-1}`.
    predictor: (T, T, Option<T>),
}

/// The coefficients UniPC-bh2 needs for the interval from `s` to `t`, data-prediction form
/// (`hh = -h`, `h = lambda(t) - lambda(s)`): `phi1 = expm1(-h)` (= B(h) for bh2) and `sigma_t / sigma_s`.
/// At the grid's ends `h` is infinite and `phi1 = -1`, its limit.
struct Interval {
    t: f64,
    h: f64,
    phi1: f64,
    sigma_ratio: f64,
}

impl Interval {
    fn new(s: f64, t: f64) -> Self {
        let h = lambda(t) - lambda(s);
        Interval {
            t,
            h,
            phi1: (-h).exp_m1(),
            sigma_ratio: (1.0 - t) / (1.0 - s),
        }
    }

    /// `1 / r = h / (lambda(t_prev) - lambda(s))` for an earlier grid time `t_prev` with data prediction
    /// `m_prev`: the divided difference `D = (m_prev - m_s) / r` is written with `1/r` so that a history
    /// point at t = 0 (lambda = -inf) contributes 0, the limit of the formula.
    fn inverse_ratio(&self, lambda_prev: f64, lambda_s: f64) -> f64 {
        self.h / (lambda_prev - lambda_s)
    }
}

impl<T: Real> UniPcStep<T> {
    /// Step `i` (evaluated at `t_i`); `corrector_order` is the order of the predictor that produced `x_i`
    /// (0 on the first step), `order` the order of the predictor from `t_i` to `t_{i+1}`.
    fn new(grid: &Grid, i: usize, corrector_order: usize, order: usize) -> Self {
        let lam = |k: usize| lambda(grid.time(k));
        let corrector = (i > 0).then(|| {
            // UniC-q from t_{i-1} to t_i: x^c = (sigma_i / sigma_{i-1}) x_{i-1}^c - alpha_i phi1 m_{i-1}
            //   - alpha_i B(h) (sum_k rho_k D_k + rho_q (m_i - m_{i-1})), alpha = t.
            let iv = Interval::new(grid.time(i - 1), grid.time(i));
            let a_b = iv.t * iv.phi1;
            let (w_x, mut w_m1, w_m) = (iv.sigma_ratio, -a_b, 0.0);
            match corrector_order {
                1 => {
                    // rho = 1/2 (diffusers' and the paper's UniC-1).
                    let rho = 0.5;
                    (w_x, w_m1 + a_b * rho, None, w_m - a_b * rho)
                }
                _ => {
                    // rho solves [[1, 1], [r1, 1]] rho = [b1, b2], with
                    // b_k = k! (hh^-k (e^hh - sum_{j<=k} hh^j / j!)) / B(h), the paper's phi_k terms.
                    let inv_r1 = iv.inverse_ratio(lam(i - 2), lam(i - 1));
                    let hh = -iv.h;
                    let b_h = iv.phi1;
                    let mut h_phi_k = iv.phi1 / hh - 1.0;
                    let b1 = h_phi_k / b_h;
                    h_phi_k = h_phi_k / hh - 0.5;
                    let b2 = 2.0 * h_phi_k / b_h;
                    let rho1 = (b2 - b1) * inv_r1 / (1.0 - inv_r1);
                    let rho2 = b1 - rho1;
                    // D1 = (m_{i-2} - m_{i-1}) / r1.
                    let w_m2 = -a_b * rho1 * inv_r1;
                    w_m1 += a_b * rho1 * inv_r1 + a_b * rho2;
                    (w_x, w_m1, Some(w_m2), w_m - a_b * rho2)
                }
            }
        });
        // UniP-p from t_i to t_{i+1}: x_{i+1} = (sigma_{i+1} / sigma_i) x_i^c - alpha_{i+1} phi1 m_i
        //   - alpha_{i+1} B(h) rho D1, with rho = 1/2 for p = 2 (diffusers' and the paper's UniP-2).
        let iv = Interval::new(grid.time(i), grid.time(i + 1));
        let a_b = iv.t * iv.phi1;
        let predictor = if order == 2 {
            let inv_r1 = iv.inverse_ratio(lam(i - 1), lam(i));
            // D1 = (m_{i-1} - m_i) / r1.
            let w = -a_b * 0.5 * inv_r1;
            (iv.sigma_ratio, -a_b - w, Some(w))
        } else {
            (iv.sigma_ratio, -a_b, None)
        };
        let f = T::from_f64;
        UniPcStep {
            sigma: f(1.0 - grid.time(i)),
            corrector: corrector.map(|(x, m1, m2, m)| (f(x), f(m1), m2.map(f), f(m))),
            predictor: (f(predictor.0), f(predictor.1), predictor.2.map(f)),
        }
    }
}

/// Applies one UniPC step elementwise to a tensor `x` evaluated to `v`; `saved` holds the last corrected
/// state and the previous two data predictions and is updated for the next step.
fn unipc_update<T: Real>(x: &mut [T], v: &[T], saved: &mut [Vec<T>; 3], c: &UniPcStep<T>) {
    let [last, m1, m2] = saved;
    let (p_x, p_m, p_m1) = c.predictor;
    for ((((x, v), last), m1), m2) in x
        .iter_mut()
        .zip(v)
        .zip(last.iter_mut())
        .zip(m1.iter_mut())
        .zip(m2.iter_mut())
    {
        let m = *x + c.sigma * *v;
        let corrected = match c.corrector {
            Some((w_x, w_m1, w_m2, w_m)) => {
                let mut y = w_x * *last + w_m1 * *m1 + w_m * m;
                if let Some(w_m2) = w_m2 {
                    y += w_m2 * *m2;
                }
                y
            }
            None => *x,
        };
        let mut next = p_x * corrected + p_m * m;
        if let Some(p_m1) = p_m1 {
            next += p_m1 * *m1;
        }
        *last = corrected;
        *m2 = *m1;
        *m1 = m;
        *x = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    const ALL: [Solver; 4] = [
        Solver::Euler,
        Solver::Heun,
        Solver::UniPc { order: 1 },
        Solver::UniPc { order: 2 },
    ];

    fn sampler(steps: usize, solver: Solver, shift: f64) -> FlowSampler {
        FlowSampler::new(steps, 0)
            .with_solver(solver)
            .with_shift(shift)
    }

    #[test]
    fn constant_field_moves_by_exactly_the_velocity() {
        for solver in ALL {
            let s = sampler(7, solver, 2.0);
            let (mut a, mut v) = (vec![1.0f32, -2.0], vec![0.5f32]);
            let mut work = Workspace::new(2, 1);
            s.integrate(&mut a, &mut v, &mut work, |_, _, _, va, vv| {
                va.copy_from_slice(&[3.0, -1.0]);
                vv[0] = 2.0;
                Ok::<(), Infallible>(())
            })
            .unwrap();
            assert!(
                (a[0] - 4.0).abs() < 1e-5 && (a[1] + 3.0).abs() < 1e-5 && (v[0] - 2.5).abs() < 1e-5,
                "{solver}: {a:?} {v:?}"
            );
        }
    }

    #[test]
    fn linear_field_matches_the_analytic_euler_answer() {
        // dx/dt = -x: K Euler steps give x0 (1 - 1/K)^K.
        for k in [1usize, 4, 16] {
            let s = FlowSampler::new(k, 0);
            let (mut a, mut v) = (vec![2.0f32], vec![-1.0f32]);
            let mut work = Workspace::new(1, 1);
            s.integrate(&mut a, &mut v, &mut work, |_, xa, xv, va, vv| {
                va[0] = -xa[0];
                vv[0] = -xv[0];
                Ok::<(), Infallible>(())
            })
            .unwrap();
            let factor = (1.0 - 1.0 / k as f64).powi(k as i32);
            assert!((a[0] as f64 - 2.0 * factor).abs() < 1e-5, "K={k}: {}", a[0]);
            assert!((v[0] as f64 + factor).abs() < 1e-5);
        }
    }

    /// Format 1's sampler, verbatim: what a bundle without the new fields must reproduce bit for bit.
    fn legacy_euler(
        steps: usize,
        x_a: &mut [f32],
        x_v: &mut [f32],
        known: Option<(&[f32], &[f32], &[f32])>,
        mut field: impl FnMut(f32, &[f32], &[f32], &mut [f32], &mut [f32]),
    ) {
        let apply = |t: f32, x: &mut [f32]| {
            if let Some((noise, target, weight)) = known {
                for (((x, z), y), w) in x.iter_mut().zip(noise).zip(target).zip(weight) {
                    let on_path = (1.0 - t) * z + t * y;
                    *x += w * (on_path - *x);
                }
            }
        };
        let (mut v_a, mut v_v) = (vec![0.0; x_a.len()], vec![0.0; x_v.len()]);
        let dt = 1.0 / steps as f32;
        for k in 0..steps {
            let t = k as f32 * dt;
            apply(t, x_a);
            field(t, x_a, x_v, &mut v_a, &mut v_v);
            for (x, v) in x_a.iter_mut().zip(&v_a) {
                *x += dt * v;
            }
            for (x, v) in x_v.iter_mut().zip(&v_v) {
                *x += dt * v;
            }
        }
        apply(1.0, x_a);
    }

    #[test]
    fn default_sampler_is_bit_identical_to_format_1() {
        // A nonlinear field and odd step counts, whose times k * (1/K) round differently from k / K.
        let field = |t: f32, xa: &[f32], xv: &[f32], va: &mut [f32], vv: &mut [f32]| {
            for (i, (o, x)) in va.iter_mut().zip(xa).enumerate() {
                *o = (x * 1.3 + t * (i as f32 + 0.7) - xv[0]).tanh() * 2.1;
            }
            vv[0] = (xv[0] * t).sin() - xa[0] * 0.3;
        };
        let noise = [0.3f32, -1.1];
        for steps in [1usize, 3, 4, 7, 10, 49, 100] {
            for inpaint in [false, true] {
                let known_parts = (&noise[..], &[0.5f32, -0.25][..], &[1.0f32, 0.375][..]);
                let known = inpaint.then_some(known_parts);
                let (mut a0, mut v0) = (vec![0.3f32, -1.1, 0.8], vec![0.2f32]);
                legacy_euler(steps, &mut a0, &mut v0, known, field);
                let (mut a1, mut v1) = (vec![0.3f32, -1.1, 0.8], vec![0.2f32]);
                let mut work = Workspace::new(3, 1);
                let mut times = Vec::new();
                FlowSampler::new(steps, 9)
                    .integrate_inpainting(
                        &mut a1,
                        &mut v1,
                        &mut work,
                        known.map(|(noise, target, weight)| Inpaint {
                            noise,
                            target,
                            weight,
                        }),
                        |t, xa, xv, va, vv| {
                            times.push(t);
                            field(t, xa, xv, va, vv);
                            Ok::<(), Infallible>(())
                        },
                    )
                    .unwrap();
                let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&a0), bits(&a1), "K={steps} inpaint={inpaint}");
                assert_eq!(bits(&v0), bits(&v1), "K={steps} inpaint={inpaint}");
                let dt = 1.0 / steps as f32;
                let legacy_times: Vec<f32> = (0..steps).map(|k| k as f32 * dt).collect();
                assert_eq!(times, legacy_times);
            }
        }
    }

    #[test]
    fn rectified_flow_towards_a_target_lands_on_it_and_sees_increasing_times() {
        // v = (target - x) / (1 - t) is the straight path from any noise to the target: every solver is
        // exact on it (their data prediction is the target at every evaluation).
        for solver in ALL {
            let mut s = sampler(5, solver, 1.0);
            let mut a = vec![0.0f32; 4];
            s.fill_noise(&mut a);
            let mut v = vec![0.0f32; 1];
            let mut work = Workspace::new(4, 1);
            let mut times = Vec::new();
            s.integrate(&mut a, &mut v, &mut work, |t, xa, _, va, _| {
                times.push(t);
                for (o, x) in va.iter_mut().zip(xa) {
                    *o = (0.7 - x) / (1.0 - t);
                }
                Ok::<(), Infallible>(())
            })
            .unwrap();
            assert!(a.iter().all(|x| (x - 0.7).abs() < 1e-5), "{solver}: {a:?}");
            let expected: &[f32] = match solver {
                Solver::Heun => &[0.0, 0.2, 0.2, 0.4, 0.4, 0.6, 0.6, 0.8, 0.8],
                _ => &[0.0, 0.2, 0.4, 0.6, 0.8],
            };
            assert_eq!(times.len(), s.evaluations(), "{solver}");
            assert!(
                times
                    .iter()
                    .zip(expected)
                    .all(|(a, b)| (a - b).abs() < 1e-6),
                "{solver}: {times:?}"
            );
        }
    }

    #[test]
    fn evaluations_per_solver() {
        for k in [1, 2, 5, 16] {
            assert_eq!(sampler(k, Solver::Euler, 1.0).evaluations(), k);
            assert_eq!(sampler(k, Solver::Heun, 1.0).evaluations(), 2 * k - 1);
            assert_eq!(sampler(k, Solver::UniPc { order: 2 }, 1.0).evaluations(), k);
        }
    }

    #[test]
    fn shift_matches_hand_computed_values() {
        // t' = t / (t + s (1 - t)); the same from sigma = 1 - t, sigma' = s sigma / (1 + (s - 1) sigma):
        // s = 5, t = 1/2: sigma' = 2.5 / 3 = 5/6, t' = 1/6.
        let cases = [
            (0.5, 5.0, 1.0 / 6.0),
            (0.25, 3.0, 0.1),
            (0.75, 2.0, 0.6),
            (0.5, 0.5, 2.0 / 3.0),
            (0.3, 1.0, 0.3),
            (0.0, 7.0, 0.0),
            (1.0, 7.0, 1.0),
        ];
        for (t, s, want) in cases {
            assert!((shift_time(t, s) - want).abs() < 1e-15, "t={t} s={s}");
        }
        // K = 4, shift 3: u = 0, 1/4, 1/2, 3/4 -> 0, 0.1, 0.25, 0.5 (Euler sees exactly these).
        let mut times = Vec::new();
        let (mut a, mut v) = (vec![0.0f64], vec![0.0f64]);
        let mut work = Workspace::new(1, 1);
        sampler(4, Solver::Euler, 3.0)
            .integrate(&mut a, &mut v, &mut work, |t, _, _, va, vv| {
                times.push(t);
                va[0] = 1.0;
                vv[0] = 0.0;
                Ok::<(), Infallible>(())
            })
            .unwrap();
        assert_eq!(times.len(), 4);
        for (t, want) in times.iter().zip([0.0, 0.1, 0.25, 0.5]) {
            assert!((t - want).abs() < 1e-15, "{times:?}");
        }
        // The steps still add up to the whole interval.
        assert!((a[0] - 1.0).abs() < 1e-15);
    }

    /// The exact flow for Gaussian data N(mu, s^2) per entry from N(0, 1) noise: x_t = t mu + s_t x_0 with
    /// s_t^2 = (1 - t)^2 + t^2 s^2, so v(x, t) = mu + (s_t' / s_t)(x - t mu), linear in x, and the flow
    /// maps x_0 to mu + s x_0 at t = 1.
    fn gaussian_flow(mu: f64, s: f64, x: f64, t: f64) -> f64 {
        let var = (1.0 - t).powi(2) + t * t * s * s;
        mu + (t * s * s - (1.0 - t)) / var * (x - t * mu)
    }

    /// Largest error at t = 1 against the exact flow, actions and video, for `steps` steps.
    fn gaussian_error(solver: Solver, steps: usize, shift: f64) -> f64 {
        let params_a = [(0.7, 0.3), (-1.2, 0.5), (0.0, 2.0)];
        let params_v = [(0.4, 0.6), (2.0, 1.0)];
        let x0_a = [0.9, -0.4, 1.5];
        let x0_v = [-1.3, 0.6];
        let (mut a, mut v) = (x0_a.to_vec(), x0_v.to_vec());
        let mut work = Workspace::new(3, 2);
        sampler(steps, solver, shift)
            .integrate(&mut a, &mut v, &mut work, |t, xa, xv, va, vv| {
                for ((o, x), (mu, s)) in va.iter_mut().zip(xa).zip(params_a) {
                    *o = gaussian_flow(mu, s, *x, t);
                }
                for ((o, x), (mu, s)) in vv.iter_mut().zip(xv).zip(params_v) {
                    *o = gaussian_flow(mu, s, *x, t);
                }
                Ok::<(), Infallible>(())
            })
            .unwrap();
        let exact = |(mu, s): (f64, f64), x0: f64| mu + s * x0;
        let ea = a
            .iter()
            .zip(params_a.iter().zip(x0_a))
            .map(|(x, (p, x0))| (x - exact(*p, x0)).abs());
        let ev = v
            .iter()
            .zip(params_v.iter().zip(x0_v))
            .map(|(x, (p, x0))| (x - exact(*p, x0)).abs());
        ea.chain(ev).fold(0.0, f64::max)
    }

    /// Errors at K, 2K, 4K and the observed orders log2(e(K) / e(2K)).
    fn observed_orders(solver: Solver, shift: f64, k: usize) -> ([f64; 3], [f64; 2]) {
        let e = [k, 2 * k, 4 * k].map(|k| gaussian_error(solver, k, shift));
        let orders = [(e[0] / e[1]).log2(), (e[1] / e[2]).log2()];
        let shown = e.map(|x| format!("{x:.2e}"));
        eprintln!(
            "{solver}, shift {shift}, K = {k}, 2K, 4K: errors {shown:?}, orders {orders:.2?}"
        );
        (e, orders)
    }

    #[test]
    fn global_error_shrinks_with_the_order_of_each_solver() {
        // Unshifted, K = 16, 32, 64: the order each solver promises (UniPC-1 is second order: its
        // corrector adds one; UniPC-2 is bounded at 2 by the grid's ends, where its steps in lambda do
        // not shrink), and the error at K = 32 against the exact answer.
        let cases = [
            (Solver::Euler, 0.9, 1.1, 0.15),
            (Solver::Heun, 1.9, 2.2, 3e-3),
            (Solver::UniPc { order: 1 }, 1.85, 2.1, 2e-2),
            (Solver::UniPc { order: 2 }, 1.8, 2.2, 3e-3),
        ];
        for (solver, lo, hi, at32) in cases {
            let (e, orders) = observed_orders(solver, 1.0, 16);
            assert!(
                orders.iter().all(|p| (lo..hi).contains(p)),
                "{solver}: errors {e:?}, orders {orders:?}"
            );
            assert!(e[1] < at32, "{solver}: {e:?}");
        }
        // Shift 3 packs the steps at the noise end and approaches the asymptotic order later (the ends'
        // logarithmic terms): K = 64, 128, 256; the second-order solvers well below Euler (5x at K = 128).
        let euler = gaussian_error(Solver::Euler, 128, 3.0);
        for (solver, lo, hi) in [
            (Solver::Euler, 0.9, 1.1),
            (Solver::Heun, 1.9, 2.1),
            (Solver::UniPc { order: 1 }, 1.5, 2.1),
            (Solver::UniPc { order: 2 }, 1.5, 2.1),
        ] {
            let (e, orders) = observed_orders(solver, 3.0, 64);
            assert!(
                orders.iter().all(|p| (lo..hi).contains(p)),
                "{solver} shift 3: errors {e:?}, orders {orders:?}"
            );
            if solver != Solver::Euler {
                assert!(
                    e[1] < euler / 5.0,
                    "{solver} shift 3: {e:?} vs Euler {euler}"
                );
            }
        }
    }

    #[test]
    fn noise_is_reproducible_from_the_seed() {
        let mut s = FlowSampler::new(1, 7);
        let (mut x, mut y) = (vec![0.0f32; 64], vec![0.0f32; 64]);
        s.fill_noise(&mut x);
        s.fill_noise(&mut y);
        assert_ne!(x, y);
        s.reseed();
        s.fill_noise(&mut y);
        assert_eq!(x, y);
        let mean = x.iter().sum::<f32>() / 64.0;
        assert!(mean.abs() < 0.5 && x.iter().any(|v| *v < 0.0) && x.iter().any(|v| *v > 0.0));
    }

    /// Pins the first action to 0.75 (from noise 0.1) with weight 1 under a field that pulls the second
    /// towards the first; returns the end state and what the field saw of the first entry.
    fn pinned_run(solver: Solver, shift: f64) -> (Vec<f32>, Vec<(f32, f32)>) {
        let s = sampler(16, solver, shift);
        let (noise, target) = ([0.1f32], [0.75f32]);
        let (mut a, mut v) = (vec![0.1f32, -1.0], vec![0.0f32]);
        let mut work = Workspace::new(2, 1);
        let mut seen_first = Vec::new();
        s.integrate_inpainting(
            &mut a,
            &mut v,
            &mut work,
            Some(Inpaint {
                noise: &noise,
                target: &target,
                weight: &[1.0],
            }),
            |t, xa, _, va, vv| {
                seen_first.push((t, xa[0]));
                // The known entry's own velocity is deliberately wrong: inpainting must override it.
                va[0] = -3.0;
                va[1] = (xa[0] - xa[1]) * 4.0;
                vv[0] = 0.0;
                Ok::<(), Infallible>(())
            },
        )
        .unwrap();
        assert_eq!(seen_first.len(), s.evaluations());
        (a, seen_first)
    }

    #[test]
    fn inpainting_pins_the_known_part_with_euler() {
        let (a, seen) = pinned_run(Solver::Euler, 1.0);
        check_pinned(&a, &seen, "euler");
    }

    #[test]
    fn inpainting_pins_the_known_part_with_heun() {
        let (a, seen) = pinned_run(Solver::Heun, 1.0);
        check_pinned(&a, &seen, "heun");
    }

    #[test]
    fn inpainting_pins_the_known_part_with_unipc() {
        for order in [1, 2] {
            let (a, seen) = pinned_run(Solver::UniPc { order }, 1.0);
            check_pinned(&a, &seen, "unipc");
        }
    }

    #[test]
    fn inpainting_pins_the_known_part_on_a_shifted_grid() {
        for solver in ALL {
            let (a, seen) = pinned_run(solver, 5.0);
            check_pinned(&a, &seen, &solver.to_string());
        }
    }

    fn check_pinned(a: &[f32], seen: &[(f32, f32)], what: &str) {
        assert_eq!(a[0], 0.75, "{what}: pinned exactly at the end");
        for (t, x0) in seen {
            let on_path = (1.0 - t) * 0.1 + t * 0.75;
            assert!(
                (x0 - on_path).abs() < 1e-6,
                "{what}: at t={t} the known entry is on its path ({x0} vs {on_path})"
            );
        }
        assert!(
            a[1] > 0.0,
            "{what}: the free entry followed the known one: {}",
            a[1]
        );
    }

    #[test]
    fn a_soft_weight_keeps_an_entry_between_the_model_and_the_known_value() {
        // Field: drive every action to -1. Weight 1 ends on the known value (1), weight 0 on the model's
        // (-1), a weight in between strictly between them.
        for solver in ALL {
            let s = sampler(8, solver, 1.0);
            let end = |w: f32| {
                let (mut a, mut v) = (vec![0.0f32], vec![0.0f32]);
                let mut work = Workspace::new(1, 1);
                s.integrate_inpainting(
                    &mut a,
                    &mut v,
                    &mut work,
                    Some(Inpaint {
                        noise: &[0.0],
                        target: &[1.0],
                        weight: &[w],
                    }),
                    |t, xa, _, va, vv| {
                        va[0] = (-1.0 - xa[0]) / (1.0 - t);
                        vv[0] = 0.0;
                        Ok::<(), Infallible>(())
                    },
                )
                .unwrap();
                a[0]
            };
            assert_eq!(end(1.0), 1.0, "{solver}");
            assert!((end(0.0) + 1.0).abs() < 1e-5, "{solver}: {}", end(0.0));
            let half = end(0.5);
            assert!(half > -0.9 && half < 0.9, "{solver}: {half}");
        }
    }

    #[test]
    fn solver_none_runs_once_at_t_1_on_zeros_and_returns_the_outputs() {
        let s = FlowSampler::new(1, 0).with_solver(Solver::Direct);
        s.validate().unwrap();
        let (mut a, mut v) = (vec![0.3f32, -0.7], vec![2.0f32]);
        let mut work = Workspace::new(2, 1);
        let mut seen = Vec::new();
        s.integrate_inpainting(
            &mut a,
            &mut v,
            &mut work,
            Some(Inpaint {
                noise: &[0.5],
                target: &[0.25],
                weight: &[0.5],
            }),
            |t, xa, xv, va, vv| {
                seen.push((t, xa.to_vec(), xv.to_vec()));
                va.copy_from_slice(&[1.5, -2.5]);
                vv[0] = 4.0;
                Ok::<(), Infallible>(())
            },
        )
        .unwrap();
        assert_eq!(seen, vec![(1.0, vec![0.0, 0.0], vec![0.0])]);
        // The outputs are the result; the known entry is pulled halfway to its target at the end.
        assert_eq!(a, [1.5 + 0.5 * (0.25 - 1.5), -2.5]);
        assert_eq!(v, [4.0]);
        assert_eq!(
            FlowSampler::new(3, 0)
                .with_solver(Solver::Direct)
                .validate(),
            Err(SamplerError::DirectSteps { steps: 3 })
        );
    }

    #[test]
    fn reuse_skips_the_model_and_keeps_its_last_outputs() {
        let s = sampler(4, Solver::Euler, 1.0).with_reuse(&[1, 3]);
        s.validate().unwrap();
        assert_eq!(s.model_runs(), 2);
        let (mut a, mut v) = (vec![0.0f64], vec![0.0f64]);
        let mut work = Workspace::new(1, 1);
        let mut times = Vec::new();
        s.integrate(&mut a, &mut v, &mut work, |t, _, _, va, vv| {
            times.push(t);
            va[0] = t + 1.0;
            vv[0] = 0.0;
            Ok::<(), Infallible>(())
        })
        .unwrap();
        assert_eq!(times, [0.0, 0.5]);
        // Velocities 1, 1 (reused), 1.5, 1.5 (reused), each for a quarter.
        assert_eq!(a[0], 0.25 * (1.0 + 1.0 + 1.5 + 1.5));
        for (reuse, problem) in [(vec![0], "no previous"), (vec![4], "4 evaluations")] {
            let e = sampler(4, Solver::Euler, 1.0)
                .with_reuse(&reuse)
                .validate()
                .unwrap_err()
                .to_string();
            assert!(e.contains(problem), "{e}");
        }
    }

    #[test]
    fn guidance_combines_the_branches_on_the_chosen_outputs() {
        let g = Guidance {
            scale: 3.0,
            actions: false,
            video: true,
        };
        let s = sampler(1, Solver::Euler, 1.0).with_guidance(Some(g));
        let (mut a, mut v) = (vec![0.0f64], vec![0.0f64]);
        let mut work = Workspace::new(1, 1);
        s.integrate_guided(&mut a, &mut v, &mut work, None, |_, _, _, out| {
            out.actions[0] = 2.0;
            out.video[0] = 2.0;
            let (ua, uv) = out
                .uncond
                .expect("guided: the unconditional outputs are asked for");
            ua[0] = 1.0;
            uv[0] = 1.0;
            Ok::<(), Infallible>(())
        })
        .unwrap();
        // Actions keep the conditional output; video is 1 + 3 (2 - 1) = 4.
        assert_eq!((a[0], v[0]), (2.0, 4.0));
        // One field for both branches (integrate): guidance changes nothing.
        let (mut a, mut v) = (vec![0.0f64], vec![0.0f64]);
        s.integrate(&mut a, &mut v, &mut work, |_, _, _, va, vv| {
            va[0] = 2.0;
            vv[0] = 2.0;
            Ok::<(), Infallible>(())
        })
        .unwrap();
        assert_eq!((a[0], v[0]), (2.0, 2.0));
    }

    #[test]
    fn a_reused_workspace_carries_nothing_between_integrations() {
        // The workspace of a run that ended in non-finite values must not leak into the next one.
        let s = sampler(6, Solver::UniPc { order: 2 }, 3.0);
        let mut work = Workspace::new(1, 1);
        let run = |work: &mut Workspace<f64>, poison: bool| {
            let (mut a, mut v) = (vec![0.5f64], vec![0.1f64]);
            s.integrate(&mut a, &mut v, work, |t, xa, xv, va, vv| {
                va[0] = if poison { f64::NAN } else { 1.0 - xa[0] * t };
                vv[0] = -xv[0];
                Ok::<(), Infallible>(())
            })
            .unwrap();
            (a[0], v[0])
        };
        let clean = run(&mut Workspace::new(1, 1), false);
        assert!(run(&mut work, true).0.is_nan());
        assert_eq!(run(&mut work, false), clean);
    }
}
