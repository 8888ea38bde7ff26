//! Flow-matching sampler: Euler integration of the model's velocity field from noise (t = 0) to data
//! (t = 1) over K steps, for the action chunk and the video latents together. The noise is seeded so that a
//! run can be reproduced.

use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

pub struct FlowSampler {
    steps: usize,
    seed: u64,
    rng: StdRng,
}

impl FlowSampler {
    pub fn new(steps: usize, seed: u64) -> Self {
        assert!(steps > 0, "the sampler needs at least one step");
        FlowSampler {
            steps,
            seed,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    pub fn steps(&self) -> usize {
        self.steps
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

    /// Integrates `x_a` (actions) and `x_v` (video latents) from t = 0 to t = 1. `field(t, x_a, x_v, v_a,
    /// v_v)` writes the velocities at time t into `v_a`, `v_v`.
    pub fn integrate<E>(
        &self,
        x_a: &mut [f32],
        x_v: &mut [f32],
        v_a: &mut [f32],
        v_v: &mut [f32],
        field: impl FnMut(f32, &[f32], &[f32], &mut [f32], &mut [f32]) -> Result<(), E>,
    ) -> Result<(), E> {
        self.integrate_inpainting(x_a, x_v, v_a, v_v, None, field)
    }

    /// [`FlowSampler::integrate`] with the first entries of the actions known (`known`): before every
    /// evaluation they are moved, by their weight (1: all the way), to where the flow's straight path from
    /// their initial noise to the known value is at that time, `(1 - t) noise + t known`, and at the end
    /// to the known value. The network then denoises the rest consistently with them: inpainting with a
    /// soft mask, which needs no gradients and so works through ONNX.
    pub fn integrate_inpainting<E>(
        &self,
        x_a: &mut [f32],
        x_v: &mut [f32],
        v_a: &mut [f32],
        v_v: &mut [f32],
        known: Option<Inpaint<'_>>,
        mut field: impl FnMut(f32, &[f32], &[f32], &mut [f32], &mut [f32]) -> Result<(), E>,
    ) -> Result<(), E> {
        let dt = 1.0 / self.steps as f32;
        for k in 0..self.steps {
            let t = k as f32 * dt;
            if let Some(known) = &known {
                known.apply(t, x_a);
            }
            field(t, x_a, x_v, v_a, v_v)?;
            euler_step(x_a, v_a, dt);
            euler_step(x_v, v_v, dt);
        }
        if let Some(known) = &known {
            known.apply(1.0, x_a);
        }
        Ok(())
    }
}

/// Known leading action values for [`FlowSampler::integrate_inpainting`], in the sampler's (normalized)
/// space; `noise` is the initial noise of the same entries, `weight` (in [0, 1]) how strongly each is kept.
pub struct Inpaint<'a> {
    pub noise: &'a [f32],
    pub target: &'a [f32],
    pub weight: &'a [f32],
}

impl Inpaint<'_> {
    fn apply(&self, t: f32, x: &mut [f32]) {
        for (((x, z), y), w) in x
            .iter_mut()
            .zip(self.noise)
            .zip(self.target)
            .zip(self.weight)
        {
            let on_path = (1.0 - t) * z + t * y;
            *x += w * (on_path - *x);
        }
    }
}

fn euler_step(x: &mut [f32], v: &[f32], dt: f32) {
    for (x, v) in x.iter_mut().zip(v) {
        *x += dt * v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    #[test]
    fn constant_field_moves_by_exactly_the_velocity() {
        let s = FlowSampler::new(7, 0);
        let (mut a, mut v) = (vec![1.0f32, -2.0], vec![0.5f32]);
        let (mut va, mut vv) = (vec![0.0; 2], vec![0.0; 1]);
        s.integrate(&mut a, &mut v, &mut va, &mut vv, |_, _, _, va, vv| {
            va.copy_from_slice(&[3.0, -1.0]);
            vv[0] = 2.0;
            Ok::<(), Infallible>(())
        })
        .unwrap();
        assert!(
            (a[0] - 4.0).abs() < 1e-5 && (a[1] + 3.0).abs() < 1e-5 && (v[0] - 2.5).abs() < 1e-5
        );
    }

    #[test]
    fn linear_field_matches_the_analytic_euler_answer() {
        // dx/dt = -x: K Euler steps give x0 (1 - 1/K)^K.
        for k in [1usize, 4, 16] {
            let s = FlowSampler::new(k, 0);
            let (mut a, mut v) = (vec![2.0f32], vec![-1.0f32]);
            let (mut va, mut vv) = (vec![0.0], vec![0.0]);
            s.integrate(&mut a, &mut v, &mut va, &mut vv, |_, xa, xv, va, vv| {
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

    #[test]
    fn rectified_flow_towards_a_target_lands_on_it_and_sees_increasing_times() {
        // v = (target - x) / (1 - t) is the straight path from any noise to the target.
        let mut s = FlowSampler::new(5, 42);
        let mut a = vec![0.0f32; 4];
        s.fill_noise(&mut a);
        let mut v = vec![0.0f32; 1];
        let (mut va, mut vv) = (vec![0.0; 4], vec![0.0; 1]);
        let mut times = Vec::new();
        s.integrate(&mut a, &mut v, &mut va, &mut vv, |t, xa, _, va, _| {
            times.push(t);
            for (o, x) in va.iter_mut().zip(xa) {
                *o = (0.7 - x) / (1.0 - t);
            }
            Ok::<(), Infallible>(())
        })
        .unwrap();
        assert!(a.iter().all(|x| (x - 0.7).abs() < 1e-5), "{a:?}");
        assert_eq!(times, [0.0, 0.2, 0.4, 0.6, 0.8]);
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

    #[test]
    fn inpainting_pins_the_known_part_and_the_field_sees_it() {
        // Field: pull every action towards the first one's value; with the first pinned to 0.75 the second
        // ends near it, whereas without inpainting both stay where the noise left them relative to each other.
        let s = FlowSampler::new(16, 0);
        let noise = [0.0f32];
        let target = [0.75f32];
        let (mut a, mut v) = (vec![0.0f32, -1.0], vec![0.0f32]);
        let (mut va, mut vv) = (vec![0.0; 2], vec![0.0; 1]);
        let mut seen_first = Vec::new();
        s.integrate_inpainting(
            &mut a,
            &mut v,
            &mut va,
            &mut vv,
            Some(Inpaint {
                noise: &noise,
                target: &target,
                weight: &[1.0],
            }),
            |t, xa, _, va, vv| {
                seen_first.push((t, xa[0]));
                va[0] = 0.0;
                va[1] = (xa[0] - xa[1]) * 4.0;
                vv[0] = 0.0;
                Ok::<(), Infallible>(())
            },
        )
        .unwrap();
        assert_eq!(a[0], 0.75, "pinned at the end");
        for (t, x0) in seen_first {
            assert!(
                (x0 - t * 0.75).abs() < 1e-6,
                "at t={t} the known entry is on its path"
            );
        }
        assert!(
            a[1] > 0.0,
            "the free entry followed the known one: {}",
            a[1]
        );
    }

    #[test]
    fn a_soft_weight_keeps_an_entry_between_the_model_and_the_known_value() {
        // Field: drive every action to -1. Weight 1 ends on the known value (1), weight 0 on the model's
        // (-1), a weight in between strictly between them.
        let s = FlowSampler::new(8, 0);
        let end = |w: f32| {
            let (mut a, mut v) = (vec![0.0f32], vec![0.0f32]);
            let (mut va, mut vv) = (vec![0.0; 1], vec![0.0; 1]);
            s.integrate_inpainting(
                &mut a,
                &mut v,
                &mut va,
                &mut vv,
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
        assert_eq!(end(1.0), 1.0);
        assert!((end(0.0) + 1.0).abs() < 1e-5, "{}", end(0.0));
        let half = end(0.5);
        assert!(half > -0.9 && half < 0.9, "{half}");
    }
}
