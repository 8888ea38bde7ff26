//! Imagination against reality: every predicted frame is compared with the real frame of its camera
//! taken nearest to its predicted time, in the model's latent space (the real frame through the encode
//! stage) and, where the bundle decodes, in pixels (PSNR at model resolution). One score per camera
//! and chunk; with the bundle's `monitor:` calibration, a z-value against successful episodes.
//!
//! The data flow, all in preallocated buffers:
//! - `on_prediction`: an accepted chunk's predicted latents (and frames) become a pending prediction,
//!   due at `stamp + (f + 1) * video_dt` per frame.
//! - `offer_frame`: every preprocessed real frame is kept for the predicted times it is nearest to
//!   (within `pair_tolerance_s`).
//! - `fill_job`: before an inference, the kept frames that need a latent go into the job's monitor
//!   slots, unless the job's own window holds the same frame: then its encoding is reused (the frame is
//!   not encoded twice).
//! - `on_result`: the job's latents give each kept frame its latent error; a prediction whose times
//!   have all passed is scored and returned.
//!
//! Besides the score, each chunk carries the features of a done estimate: how far the predicted chunk
//! moves the arm and how much the predicted video changes from the newest observation. A task is
//! estimated done when both stay small for `done_chunks` chunks in a row (thresholds measured in the
//! simulator: models/README.md, "Monitor").

use crate::bundle::{Dims, MonitorCalibration};

/// The monitor's parameters (node parameters `monitor_*`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MonitorParams {
    pub enabled: bool,
    /// A real frame pairs with a predicted one when their times differ by at most this.
    pub pair_tolerance_s: f64,
    /// `~/status`/diagnostics warn above this score (z-value; the raw score when uncalibrated).
    pub warn_score: f64,
    /// Hold when the score stays above `warn_score` for this many chunks in a row; 0: never.
    pub hold_chunks: u32,
    /// Done when the predicted motion and change stay below these for `done_chunks` chunks in a row;
    /// 0: no done estimate.
    pub done_chunks: u32,
    pub done_motion: f64,
    pub done_change: f64,
}

impl Default for MonitorParams {
    fn default() -> Self {
        MonitorParams {
            enabled: false,
            pair_tolerance_s: 0.05,
            warn_score: 3.0,
            hold_chunks: 0,
            done_chunks: 0,
            done_motion: 0.0,
            done_change: 0.0,
        }
    }
}

/// One camera's comparison for one chunk.
#[derive(Debug, Clone, PartialEq)]
pub struct CameraScore {
    /// Mean squared latent error over the paired frames (NaN: none paired).
    pub latent: f64,
    /// Mean PSNR (dB) of the predicted against the paired real frames (NaN: no decode stage or
    /// none paired).
    pub psnr_db: f64,
    /// `(latent - mean) / std` with the bundle's calibration (NaN: uncalibrated or none paired).
    pub z: f64,
    pub paired: u32,
}

/// The comparison of one chunk's predictions with what the cameras then saw.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkScore {
    pub chunk_id: u64,
    pub stamp: f64,
    pub cameras: Vec<CameraScore>,
    /// [V, F]: the predicted times, and the stamps of the real frames paired with them (NaN: none).
    pub predicted_stamps: Vec<f64>,
    pub observed_stamps: Vec<f64>,
    /// The largest z (raw latent score when uncalibrated) over the cameras; NaN when none paired.
    pub score: f64,
    pub calibrated: bool,
    /// Done-estimate features of this chunk, and the estimate.
    pub predicted_motion: f64,
    pub predicted_change: f64,
    pub done: bool,
    pub done_confidence: f64,
    /// Chunks in a row with the score above `warn_score`.
    pub consecutive_high: u32,
}

/// Where a kept frame's latent comes from in the job that encodes it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum LatentSource {
    /// Not asked for yet.
    None,
    /// The job's window frame (v, t): its encoding is reused.
    Window(usize),
    /// The job's monitor slot.
    Slot(usize),
    /// Scored.
    Done,
}

struct Pending {
    active: bool,
    chunk_id: u64,
    stamp: f64,
    /// [V, F] predicted times.
    times: Vec<f64>,
    /// [V, F, C, h, w].
    latents: Vec<f32>,
    /// [V, F, 3, H, W] in [0, 1] (empty without decode).
    frames: Vec<f32>,
    /// [V, F]: the kept real frame's stamp (NaN: none yet), the frame itself (normalized), where its
    /// latent comes from, and its latent error.
    observed_stamps: Vec<f64>,
    observed: Vec<f32>,
    source: Vec<LatentSource>,
    latent_error: Vec<f64>,
    predicted_motion: f64,
    predicted_change: f64,
}

pub struct Monitor {
    params: MonitorParams,
    dims: Dims,
    video_dt: f64,
    calibration: Option<MonitorCalibration>,
    /// Pixel normalization of the frames (`(x - mean) / std` per channel).
    mean: [f32; 3],
    std: [f32; 3],
    pending: Vec<Pending>,
    consecutive_high: u32,
    consecutive_done: u32,
    holds: u64,
    last: Option<ChunkScore>,
    /// Copies of the last scored chunk's frames (`last_frames`).
    last_predicted: Vec<f32>,
    last_observed: Vec<f32>,
    last_observed_stamps: Vec<f64>,
}

/// Pending predictions kept at once: chunks come about once a second and their frames are due within
/// a horizon, so a few suffice; the oldest is scored with what it has when a new one needs its place.
const PENDING: usize = 4;

impl Monitor {
    pub fn new(
        params: MonitorParams,
        dims: Dims,
        video_dt: f64,
        calibration: Option<MonitorCalibration>,
        mean: [f32; 3],
        std: [f32; 3],
    ) -> Self {
        let vf = dims.cameras * dims.video_frames;
        let pending = (0..PENDING)
            .map(|_| Pending {
                active: false,
                chunk_id: 0,
                stamp: 0.0,
                times: vec![0.0; vf],
                latents: vec![0.0; dims.video_latent_len()],
                frames: vec![0.0; dims.predicted_frames_len()],
                observed_stamps: vec![f64::NAN; vf],
                observed: vec![0.0; dims.predicted_frames_len()],
                source: vec![LatentSource::None; vf],
                latent_error: vec![f64::NAN; vf],
                predicted_motion: 0.0,
                predicted_change: 0.0,
            })
            .collect();
        Monitor {
            params,
            video_dt,
            calibration,
            mean,
            std,
            pending,
            dims,
            consecutive_high: 0,
            consecutive_done: 0,
            holds: 0,
            last: None,
            last_predicted: vec![f32::NAN; dims.predicted_frames_len()],
            last_observed: vec![0.0; dims.predicted_frames_len()],
            last_observed_stamps: vec![f64::NAN; vf],
        }
    }

    pub fn params(&self) -> &MonitorParams {
        &self.params
    }

    pub fn set_params(&mut self, params: MonitorParams) {
        if !params.enabled {
            self.clear();
        }
        self.params = params;
    }

    pub fn is_calibrated(&self) -> bool {
        self.calibration.is_some()
    }

    pub fn last(&self) -> Option<&ChunkScore> {
        self.last.as_ref()
    }

    pub fn holds(&self) -> u64 {
        self.holds
    }

    /// The done estimate now: the streak of still chunks (reset by `clear`, i.e. every new epoch) is
    /// long enough. Not the last score's flag, which outlives the goal it ended.
    pub fn done_now(&self) -> bool {
        self.params.done_chunks > 0 && self.consecutive_done >= self.params.done_chunks
    }

    /// Forgets every pending prediction and the streaks (a new epoch: what was predicted no longer
    /// applies).
    pub fn clear(&mut self) {
        for p in &mut self.pending {
            p.active = false;
        }
        self.consecutive_high = 0;
        self.consecutive_done = 0;
    }

    /// An accepted chunk: its predictions wait for their real frames. `actions` [H, A] (physical
    /// units), `video_latents` [V, F, C, h, w], `frames` [V, F, 3, H, W] or empty, and the job's
    /// window latents [V, T, C, h, w] (the newest observation, for the predicted change). Returns the
    /// score of an older prediction that had to make room.
    pub fn on_prediction(
        &mut self,
        chunk_id: u64,
        stamp: f64,
        actions: &[f64],
        video_latents: &[f32],
        frames: &[f32],
        window_latents: &[f32],
    ) -> Option<ChunkScore> {
        if !self.params.enabled {
            return None;
        }
        let d = self.dims;
        let oldest = (0..PENDING)
            .find(|&i| !self.pending[i].active)
            .unwrap_or_else(|| {
                (0..PENDING)
                    .min_by(|&a, &b| self.pending[a].stamp.total_cmp(&self.pending[b].stamp))
                    .unwrap_or(0)
            });
        let evicted = if self.pending[oldest].active {
            self.finish(oldest)
        } else {
            None
        };
        let l = d.latent_len();
        let (motion, change) = done_features(&d, actions, video_latents, window_latents);
        let p = &mut self.pending[oldest];
        p.active = true;
        p.chunk_id = chunk_id;
        p.stamp = stamp;
        for v in 0..d.cameras {
            for f in 0..d.video_frames {
                p.times[v * d.video_frames + f] = stamp + (f + 1) as f64 * self.video_dt;
            }
        }
        p.latents
            .copy_from_slice(&video_latents[..d.video_latent_len()]);
        if frames.len() == p.frames.len() {
            p.frames.copy_from_slice(frames);
        } else {
            p.frames.iter_mut().for_each(|x| *x = f32::NAN);
        }
        p.observed_stamps.fill(f64::NAN);
        p.source.fill(LatentSource::None);
        p.latent_error.fill(f64::NAN);
        p.predicted_motion = motion;
        p.predicted_change = change;
        debug_assert_eq!(p.latents.len(), d.cameras * d.video_frames * l);
        evicted
    }

    /// A preprocessed real frame (normalized, [3, H, W]) of camera `cam` at `stamp`: kept for every
    /// predicted time it is the nearest frame to so far.
    pub fn offer_frame(&mut self, cam: usize, stamp: f64, frame: &[f32]) {
        if !self.params.enabled {
            return;
        }
        let (d, nf) = (self.dims, self.dims.video_frames);
        let tol = self.params.pair_tolerance_s;
        for p in self.pending.iter_mut().filter(|p| p.active) {
            for f in 0..nf {
                let i = cam * nf + f;
                let gap = (stamp - p.times[i]).abs();
                let kept = p.observed_stamps[i];
                let better = gap <= tol && (kept.is_nan() || gap < (kept - p.times[i]).abs());
                if better && matches!(p.source[i], LatentSource::None) {
                    p.observed_stamps[i] = stamp;
                    p.observed[d.predicted_frame(cam, f)].copy_from_slice(frame);
                }
            }
        }
    }

    /// Before an inference at `now`: the kept frames whose pairing is final (no nearer frame can come)
    /// and that need a latent go into `slot_frames` ([V * T, 3, H, W]; `slot_used` marks the used
    /// slots), or, when the job's window (`window_stamps`, [V, T]) holds the same frame, reuse its
    /// encoding.
    pub fn fill_job(
        &mut self,
        now: f64,
        window_stamps: &[f64],
        slot_frames: &mut [f32],
        slot_used: &mut [bool],
    ) {
        slot_used.fill(false);
        if !self.params.enabled {
            return;
        }
        let (d, nf, t) = (self.dims, self.dims.video_frames, self.dims.context_frames);
        // Slots are the window's [V, T] places; with cameras of different sizes a frame goes into a
        // place of its own camera (the places have its size).
        let uniform = d.uniform();
        let tol = self.params.pair_tolerance_s;
        let mut next_slot = 0;
        for p in self.pending.iter_mut() {
            if !p.active {
                continue;
            }
            for i in 0..p.times.len() {
                let stamp = p.observed_stamps[i];
                if stamp.is_nan() || p.source[i] != LatentSource::None || now < p.times[i] + tol {
                    continue;
                }
                let cam = i / nf;
                let in_window = (0..t).find(|&k| window_stamps[cam * t + k] == stamp);
                if let Some(k) = in_window {
                    p.source[i] = LatentSource::Window(cam * t + k);
                } else if let Some(slot) = if uniform {
                    (next_slot < slot_used.len()).then_some(next_slot)
                } else {
                    (cam * t..(cam + 1) * t).find(|s| !slot_used[*s])
                } {
                    let (sv, sk) = (slot / t, slot % t);
                    slot_frames[d.obs_frame(sv, sk)]
                        .copy_from_slice(&p.observed[d.predicted_frame(cam, i % nf)]);
                    slot_used[slot] = true;
                    p.source[i] = LatentSource::Slot(slot);
                    next_slot += 1;
                }
            }
        }
    }

    /// After the inference that `fill_job` prepared (its window latents [V, T, C, h, w] and monitor
    /// slot latents [V * T, C, h, w]; `ok`: it succeeded): latent errors, then the predictions whose
    /// times have all passed by `now`, scored.
    pub fn on_result(
        &mut self,
        ok: bool,
        window_latents: &[f32],
        slot_latents: &[f32],
        now: f64,
        out: &mut Vec<ChunkScore>,
    ) {
        if !self.params.enabled {
            return;
        }
        let l = self.dims.latent_len();
        for p in self.pending.iter_mut().filter(|p| p.active) {
            for i in 0..p.source.len() {
                let observed = match (ok, p.source[i]) {
                    (true, LatentSource::Window(k)) => &window_latents[k * l..(k + 1) * l],
                    (true, LatentSource::Slot(s)) => &slot_latents[s * l..(s + 1) * l],
                    // A failed inference encoded nothing: ask again next time.
                    (false, LatentSource::Window(_) | LatentSource::Slot(_)) => {
                        p.source[i] = LatentSource::None;
                        continue;
                    }
                    _ => continue,
                };
                let predicted = &p.latents[i * l..(i + 1) * l];
                p.latent_error[i] = mean_squared(predicted, observed);
                p.source[i] = LatentSource::Done;
            }
        }
        let tol = self.params.pair_tolerance_s;
        for pi in 0..PENDING {
            let p = &self.pending[pi];
            if !p.active {
                continue;
            }
            let last_due = p.times.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let waiting = p
                .source
                .iter()
                .zip(&p.observed_stamps)
                .any(|(s, st)| !st.is_nan() && *s != LatentSource::Done);
            if now >= last_due + tol && !waiting {
                if let Some(score) = self.finish(pi) {
                    out.push(score);
                }
            }
        }
    }

    /// Scores pending prediction `pi` with what it has and frees its place.
    fn finish(&mut self, pi: usize) -> Option<ChunkScore> {
        let d = self.dims;
        let nf = d.video_frames;
        let p = &mut self.pending[pi];
        p.active = false;
        let mut cameras = Vec::with_capacity(d.cameras);
        for v in 0..d.cameras {
            let (mut sum, mut psnr, mut n, mut n_psnr) = (0.0, 0.0, 0u32, 0u32);
            for f in 0..nf {
                let i = v * nf + f;
                let e = p.latent_error[i];
                if e.is_finite() {
                    sum += e;
                    n += 1;
                }
                if !p.observed_stamps[i].is_nan() && p.frames.first().is_some_and(|x| x.is_finite())
                {
                    psnr += psnr_db(
                        &p.frames[d.predicted_frame(v, f)],
                        &p.observed[d.predicted_frame(v, f)],
                        &self.mean,
                        &self.std,
                    );
                    n_psnr += 1;
                }
            }
            let latent = if n > 0 { sum / n as f64 } else { f64::NAN };
            let z = match &self.calibration {
                Some(c) if n > 0 => (latent - c.latent_mean[v]) / c.latent_std[v],
                _ => f64::NAN,
            };
            cameras.push(CameraScore {
                latent,
                psnr_db: if n_psnr > 0 {
                    psnr / n_psnr as f64
                } else {
                    f64::NAN
                },
                z,
                paired: n,
            });
        }
        if cameras.iter().all(|c| c.paired == 0) {
            // Nothing was seen at the predicted times (a stalled camera, a disable): no evidence.
            return None;
        }
        self.last_predicted.copy_from_slice(&p.frames);
        self.last_observed.copy_from_slice(&p.observed);
        self.last_observed_stamps
            .copy_from_slice(&p.observed_stamps);
        let calibrated = self.calibration.is_some();
        let score = cameras
            .iter()
            .map(|c| if calibrated { c.z } else { c.latent })
            .filter(|x| x.is_finite())
            .fold(f64::NAN, f64::max);
        if score > self.params.warn_score {
            self.consecutive_high += 1;
        } else {
            self.consecutive_high = 0;
        }
        let still = p.predicted_motion < self.params.done_motion
            && p.predicted_change < self.params.done_change;
        if self.params.done_chunks > 0 && still {
            self.consecutive_done += 1;
        } else {
            self.consecutive_done = 0;
        }
        let done = self.params.done_chunks > 0 && self.consecutive_done >= self.params.done_chunks;
        let done_confidence = if self.params.done_chunks > 0 {
            (f64::from(self.consecutive_done) / f64::from(self.params.done_chunks)).min(1.0)
        } else {
            0.0
        };
        let score = ChunkScore {
            chunk_id: p.chunk_id,
            stamp: p.stamp,
            cameras,
            predicted_stamps: p.times.clone(),
            observed_stamps: p.observed_stamps.clone(),
            score,
            calibrated,
            predicted_motion: p.predicted_motion,
            predicted_change: p.predicted_change,
            done,
            done_confidence,
            consecutive_high: self.consecutive_high,
        };
        self.last = Some(score.clone());
        Some(score)
    }

    /// Whether the hold rule fires now (the score above `warn_score` for `hold_chunks` chunks in a
    /// row); it re-arms from zero.
    pub fn take_hold(&mut self) -> bool {
        if self.params.hold_chunks > 0 && self.consecutive_high >= self.params.hold_chunks {
            self.consecutive_high = 0;
            self.holds += 1;
            true
        } else {
            false
        }
    }

    /// The last scored chunk's frames: predicted ([V, F, 3, H, W] in [0, 1]; NaN without decode),
    /// the real ones paired with them (normalized) and their stamps (NaN: none paired).
    pub fn last_frames(&self) -> (&[f32], &[f32], &[f64]) {
        (
            &self.last_predicted,
            &self.last_observed,
            &self.last_observed_stamps,
        )
    }
}

fn mean_squared(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len().max(1) as f64;
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let d = f64::from(*x) - f64::from(*y);
            d * d
        })
        .sum::<f64>()
        / n
}

/// PSNR (dB, peak 1) of a predicted frame in [0, 1] against a normalized real frame.
fn psnr_db(predicted: &[f32], observed: &[f32], mean: &[f32; 3], std: &[f32; 3]) -> f64 {
    let plane = predicted.len() / 3;
    let mut sum = 0.0;
    for (i, (p, o)) in predicted.iter().zip(observed).enumerate() {
        let c = (i / plane.max(1)).min(2);
        let real = f64::from(o * std[c] + mean[c]);
        let d = f64::from(*p) - real;
        sum += d * d;
    }
    let mse = (sum / predicted.len().max(1) as f64).max(1e-10);
    -10.0 * mse.log10()
}

/// Done-estimate features: the largest joint displacement over the predicted chunk, and the mean
/// squared latent change from the newest observed frame to the last predicted one, over cameras.
fn done_features(d: &Dims, actions: &[f64], video: &[f32], window: &[f32]) -> (f64, f64) {
    let (h, a) = (d.horizon, d.action);
    let motion = (0..a)
        .map(|j| {
            let (lo, hi) = (0..h).fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), i| {
                let x = actions[i * a + j];
                (lo.min(x), hi.max(x))
            });
            hi - lo
        })
        .fold(0.0, f64::max);
    let l = d.latent_len();
    let (t, f) = (d.context_frames, d.video_frames);
    let mut change = 0.0;
    for v in 0..d.cameras {
        let newest = &window[((v * t) + t - 1) * l..((v * t) + t) * l];
        let last = &video[((v * f) + f - 1) * l..((v * f) + f) * l];
        change += mean_squared(last, newest);
    }
    (motion, change / d.cameras.max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dims() -> Dims {
        Dims {
            cameras: 2,
            context_frames: 2,
            sizes: crate::bundle::same_size(1, 1),
            state: 1,
            horizon: 3,
            action: 1,
            video_frames: 2,
            latent: [1, 1, 2],
            tokens: 1,
        }
    }

    fn params() -> MonitorParams {
        MonitorParams {
            enabled: true,
            pair_tolerance_s: 0.05,
            warn_score: 0.5,
            hold_chunks: 2,
            done_chunks: 2,
            done_motion: 0.01,
            done_change: 0.01,
        }
    }

    fn monitor(calibration: Option<MonitorCalibration>) -> Monitor {
        Monitor::new(params(), dims(), 0.5, calibration, [0.0; 3], [1.0; 3])
    }

    /// A frame whose three pixels all hold `x` (mean 0, std 1: normalized = raw).
    fn frame(x: f32) -> [f32; 3] {
        [x; 3]
    }

    /// Runs one prediction at `stamp` (latents: camera v, frame f = `pred[v][f]` in both latent
    /// entries), offers `frames` (camera, stamp, value), then one inference that encodes every slot
    /// to the offered value (the identity "encoder" of this test) at `now`.
    fn run_once(
        m: &mut Monitor,
        stamp: f64,
        pred: [[f32; 2]; 2],
        frames: &[(usize, f64, f32)],
        now: f64,
    ) -> Vec<ChunkScore> {
        let d = dims();
        let video: Vec<f32> = (0..2)
            .flat_map(|v| (0..2).flat_map(move |f| [pred[v][f]; 2]))
            .collect();
        let window = vec![0.0; d.cameras * d.context_frames * d.latent_len()];
        let mut out = Vec::new();
        out.extend(m.on_prediction(1, stamp, &[0.0, 0.0, 0.0], &video, &[], &window));
        for &(cam, t, x) in frames {
            m.offer_frame(cam, t, &frame(x));
        }
        let mut slot_frames = vec![0.0; 4 * 3];
        let mut used = vec![false; 4];
        let window_stamps = vec![f64::NEG_INFINITY; 4];
        m.fill_job(now, &window_stamps, &mut slot_frames, &mut used);
        // Identity encoder: a slot's latent is its frame's first two values.
        let slot_latents: Vec<f32> = (0..4)
            .flat_map(|s| [slot_frames[s * 3], slot_frames[s * 3 + 1]])
            .collect();
        m.on_result(true, &window, &slot_latents, now, &mut out);
        out
    }

    #[test]
    fn pairs_each_predicted_frame_with_the_real_frame_nearest_its_time() {
        let mut m = monitor(None);
        // Predicted times: 10.5 and 11.0 for both cameras.
        let frames = [
            (0, 10.46, 1.0), // within tolerance of 10.5
            (0, 10.49, 2.0), // nearer: replaces it
            (0, 10.60, 9.0), // too far
            (0, 11.02, 3.0),
            (1, 10.50, 4.0),
            (1, 11.20, 5.0), // too far: camera 1, frame 1 stays unpaired
        ];
        let out = run_once(&mut m, 10.0, [[2.0, 3.0], [4.0, 0.0]], &frames, 11.2);
        assert_eq!(out.len(), 1);
        let s = &out[0];
        assert_eq!(s.observed_stamps[..3], [10.49, 11.02, 10.50]);
        assert!(s.observed_stamps[3].is_nan());
        assert_eq!(s.predicted_stamps, vec![10.5, 11.0, 10.5, 11.0]);
        // The predictions equal the paired frames: zero error; camera 1 paired once.
        assert_eq!((s.cameras[0].latent, s.cameras[0].paired), (0.0, 2));
        assert_eq!((s.cameras[1].latent, s.cameras[1].paired), (0.0, 1));
    }

    #[test]
    fn a_frame_that_differs_scores_higher_and_z_uses_the_calibration() {
        let cal = MonitorCalibration {
            latent_mean: vec![1.0, 1.0],
            latent_std: vec![2.0, 2.0],
            samples: 0,
        };
        let mut m = monitor(Some(cal));
        let frames = [
            (0, 10.5, 2.0),
            (0, 11.0, 2.0),
            (1, 10.5, 4.0),
            (1, 11.0, 4.0),
        ];
        let same = run_once(&mut m, 10.0, [[2.0, 2.0], [4.0, 4.0]], &frames, 11.1);
        let mut m2 = monitor(Some(MonitorCalibration {
            latent_mean: vec![1.0, 1.0],
            latent_std: vec![2.0, 2.0],
            samples: 0,
        }));
        let differ = run_once(&mut m2, 10.0, [[2.0, 2.0], [1.0, 1.0]], &frames, 11.1);
        assert_eq!(same[0].cameras[1].latent, 0.0);
        assert_eq!(differ[0].cameras[1].latent, 9.0);
        assert_eq!(differ[0].cameras[1].z, (9.0 - 1.0) / 2.0);
        assert_eq!(differ[0].score, 4.0);
        assert!(differ[0].score > same[0].score);
    }

    #[test]
    fn a_prediction_waits_until_its_times_have_passed() {
        let mut m = monitor(None);
        let frames = [(0, 10.5, 2.0)];
        // At 10.9 the second frame (11.0) is still due: nothing scored.
        assert!(run_once(&mut m, 10.0, [[2.0, 3.0], [4.0, 0.0]], &frames, 10.9).is_empty());
        let mut out = Vec::new();
        m.on_result(true, &[0.0; 8], &[0.0; 8], 11.1, &mut out);
        assert_eq!(out.len(), 1);
        // Nothing seen at all: no score (no evidence), not a zero.
        let mut m = monitor(None);
        assert!(run_once(&mut m, 10.0, [[2.0, 3.0], [4.0, 0.0]], &[], 11.2).is_empty());
    }

    #[test]
    fn a_frame_in_the_window_reuses_its_encoding() {
        let mut m = monitor(None);
        let d = dims();
        let video = vec![5.0; d.video_latent_len()];
        let window_latents = vec![0.0; 8];
        m.on_prediction(1, 10.0, &[0.0; 3], &video, &[], &window_latents);
        m.offer_frame(0, 10.5, &frame(7.0));
        let mut slots = vec![0.0; 12];
        let mut used = vec![false; 4];
        // The job's window holds camera 0's frame at 10.5 (index 1).
        let stamps = [10.45, 10.5, 10.45, 10.5];
        m.fill_job(10.6, &stamps, &mut slots, &mut used);
        assert!(used.iter().all(|u| !u), "nothing packed: the window has it");
        let mut window = vec![0.0; 8];
        window[2..4].copy_from_slice(&[5.0, 5.0]); // (v0, t1) latent = the prediction
        let mut out = Vec::new();
        m.on_result(true, &window, &[0.0; 8], 11.1, &mut out);
        assert_eq!(out[0].cameras[0].latent, 0.0);
    }

    #[test]
    fn the_hold_rule_fires_after_k_high_chunks_and_re_arms() {
        let mut m = monitor(None);
        let frames = [(0, 10.5, 0.0), (0, 11.0, 0.0)];
        // Latent error 4 > warn 0.5: one high chunk is not enough.
        run_once(&mut m, 10.0, [[2.0, 2.0], [0.0, 0.0]], &frames, 11.1);
        assert!(!m.take_hold());
        // A low chunk in between resets the streak.
        let frames2 = [(0, 12.5, 2.0), (0, 13.0, 2.0)];
        run_once(&mut m, 12.0, [[2.0, 2.0], [0.0, 0.0]], &frames2, 13.1);
        let frames3 = [(0, 14.5, 0.0), (0, 15.0, 0.0)];
        run_once(&mut m, 14.0, [[2.0, 2.0], [0.0, 0.0]], &frames3, 15.1);
        assert!(!m.take_hold());
        let frames4 = [(0, 16.5, 0.0), (0, 17.0, 0.0)];
        run_once(&mut m, 16.0, [[2.0, 2.0], [0.0, 0.0]], &frames4, 17.1);
        assert!(m.take_hold());
        assert!(!m.take_hold(), "re-armed from zero");
        assert_eq!(m.holds(), 1);
    }

    #[test]
    fn done_after_still_chunks_in_a_row() {
        let mut m = monitor(None);
        let frames = |t: f64| [(0, t + 0.5, 0.0), (0, t + 1.0, 0.0)];
        // Zero actions and video latents equal to the (zero) window: still.
        let s1 = run_once(&mut m, 10.0, [[0.0, 0.0], [0.0, 0.0]], &frames(10.0), 11.1);
        assert!(!s1[0].done && s1[0].done_confidence == 0.5);
        let s2 = run_once(&mut m, 12.0, [[0.0, 0.0], [0.0, 0.0]], &frames(12.0), 13.1);
        assert!(s2[0].done);
        // A moving prediction ends it.
        assert!(m.done_now());
        // A new epoch forgets the streak (the last score's flag stays what it was).
        m.clear();
        assert!(!m.done_now() && m.last().is_some_and(|s| s.done));
        let s3 = run_once(&mut m, 14.0, [[0.0, 1.0], [0.0, 0.0]], &frames(14.0), 15.1);
        assert!(!s3[0].done && !m.done_now());
    }

    #[test]
    fn disabled_does_nothing() {
        let mut m = Monitor::new(
            MonitorParams::default(),
            dims(),
            0.5,
            None,
            [0.0; 3],
            [1.0; 3],
        );
        assert!(run_once(&mut m, 10.0, [[0.0; 2]; 2], &[(0, 10.5, 1.0)], 11.1).is_empty());
        assert!(m.last().is_none());
    }

    #[test]
    fn psnr_is_infinite_free_and_higher_for_closer_frames() {
        let a = [0.5f32; 6];
        let close = psnr_db(&a, &[0.51; 6], &[0.0; 3], &[1.0; 3]);
        let far = psnr_db(&a, &[0.9; 6], &[0.0; 3], &[1.0; 3]);
        assert!(close > far && close.is_finite());
        assert!(psnr_db(&a, &a, &[0.0; 3], &[1.0; 3]).is_finite());
    }
}
