//! Observation window: per camera the last T preprocessed frames, and a short history of joint states in the
//! model's joint order. An observation is complete only when every camera has T frames, every input is fresh,
//! and a joint state lies within the sync slop of the frames' stamp. All storage is allocated up front.

use std::fmt;

use crate::bundle::Dims;

/// The fastest camera a `frame_dt` window is sized for: it keeps `(T - 1) frame_dt` seconds of frames at
/// this rate (a faster camera is reported, not silently fed at the wrong spacing).
pub const MAX_CAMERA_RATE_HZ: f64 = 60.0;

/// Frames a camera ring keeps (the spare slot included): T + 1 for the T newest frames, or enough to span
/// `(T - 1) frame_dt` at [`MAX_CAMERA_RATE_HZ`].
pub fn frame_slots(context_frames: usize, frame_dt: Option<f64>) -> usize {
    // Saturating: the manifest check calls this on unchecked sizes before refusing them.
    let newest = context_frames.saturating_add(1);
    match frame_dt {
        Some(dt) if context_frames > 1 => {
            let span = ((context_frames - 1) as f64 * dt * MAX_CAMERA_RATE_HZ).ceil();
            (span as usize).saturating_add(2).max(newest)
        }
        _ => newest,
    }
}

/// Joint-state samples the history holds at least.
const MIN_JOINT_HISTORY: usize = 16;

/// Joint-state samples to keep so that a joint state within `sync_slop_s` of any frame still fresh
/// enough to be used (`max_image_age_s` old) is in the history at `rate_hz`, with a quarter to spare
/// (a 1 kHz robot with 0.5 s frames keeps 688 samples).
pub fn joint_history_len(rate_hz: f64, max_image_age_s: f64, sync_slop_s: f64) -> usize {
    let samples = (rate_hz * (max_image_age_s + sync_slop_s) * 1.25).ceil();
    if samples.is_finite() {
        (samples as usize).max(MIN_JOINT_HISTORY)
    } else {
        MIN_JOINT_HISTORY
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JointStateError {
    #[error("joint state lacks joint `{0}`")]
    MissingJoint(String),
    #[error("joint state has {names} names but {positions} positions")]
    LengthMismatch { names: usize, positions: usize },
    #[error("joint state position of `{0}` is not finite")]
    NonFinite(String),
    #[error("joint state stamp {stamp:.6} is older than the previous one ({last:.6})")]
    StampBackwards { stamp: f64, last: f64 },
    #[error("joint state names `{0}` twice")]
    DuplicateName(String),
    #[error("joint state has {0} names, more than {MAX_JOINT_NAMES}")]
    TooManyNames(usize),
}

/// Names a joint state may carry (a whole humanoid has about a hundred).
pub const MAX_JOINT_NAMES: usize = 1024;

impl JointStateError {
    pub fn kind(&self) -> &'static str {
        match self {
            JointStateError::MissingJoint(_) => "joint_state_missing_joint",
            JointStateError::LengthMismatch { .. } => "joint_state_length",
            JointStateError::NonFinite(_) => "joint_state_nan",
            JointStateError::StampBackwards { .. } => "joint_state_stamp_backwards",
            JointStateError::DuplicateName(_) => "joint_state_duplicate_name",
            JointStateError::TooManyNames(_) => "joint_state_too_many_names",
        }
    }
}

/// Maps a JointState's (names, positions), which may hold extra joints in any order, onto the model's joints.
/// The index table is rebuilt only when the publisher's name list changes.
pub struct JointMapper {
    wanted: Vec<String>,
    last_names: Vec<String>,
    index: Vec<usize>,
}

impl JointMapper {
    pub fn new(wanted: Vec<String>) -> Self {
        JointMapper {
            index: vec![0; wanted.len()],
            wanted,
            last_names: Vec::new(),
        }
    }

    pub fn wanted(&self) -> &[String] {
        &self.wanted
    }

    pub fn map(
        &mut self,
        names: &[String],
        positions: &[f64],
        out: &mut [f64],
    ) -> Result<(), JointStateError> {
        if names.len() != positions.len() {
            return Err(JointStateError::LengthMismatch {
                names: names.len(),
                positions: positions.len(),
            });
        }
        if names.len() > MAX_JOINT_NAMES {
            return Err(JointStateError::TooManyNames(names.len()));
        }
        if self.last_names.as_slice() != names {
            // Forget the old table first: a failed lookup leaves it half rebuilt.
            self.last_names.clear();
            for (slot, want) in self.index.iter_mut().zip(&self.wanted) {
                let mut found = names.iter().enumerate().filter(|(_, n)| *n == want);
                *slot = found
                    .next()
                    .map(|(i, _)| i)
                    .ok_or_else(|| JointStateError::MissingJoint(want.clone()))?;
                // A joint named twice: which position is it? Refused rather than guessed.
                if found.next().is_some() {
                    return Err(JointStateError::DuplicateName(want.clone()));
                }
            }
            self.last_names.extend_from_slice(names);
        }
        for ((o, &i), want) in out.iter_mut().zip(&self.index).zip(&self.wanted) {
            let q = positions[i];
            if !q.is_finite() {
                return Err(JointStateError::NonFinite(want.clone()));
            }
            *o = q;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    StampBackwards,
}

/// Why no observation can be assembled now. Formatted only when reported.
#[derive(Debug, Clone, PartialEq)]
pub enum NotReady {
    CameraFilling {
        camera: usize,
        have: usize,
        need: usize,
    },
    CameraStale {
        camera: usize,
        age: f64,
    },
    NoJointState,
    JointStateStale {
        age: f64,
    },
    NoJointStateNearFrames {
        gap: f64,
    },
    /// A `frame_dt` window needs frames back to `need` seconds before the newest; the camera's ring
    /// is full and reaches back only `span` seconds (it publishes faster than the ring is sized for).
    CameraTooFast {
        camera: usize,
        span: f64,
        need: f64,
    },
}

impl NotReady {
    pub fn is_stale(&self) -> bool {
        matches!(
            self,
            NotReady::CameraStale { .. } | NotReady::JointStateStale { .. }
        )
    }
    pub fn describe(&self, camera_names: &[String]) -> String {
        let cam = |i: &usize| camera_names.get(*i).map(String::as_str).unwrap_or("?");
        match self {
            NotReady::CameraFilling { camera, have, need } => {
                format!("camera '{}' missing: {have}/{need} frames", cam(camera))
            }
            NotReady::CameraStale { camera, age } => {
                format!("camera '{}' stale ({age:.2} s)", cam(camera))
            }
            NotReady::NoJointState => "joint states missing".to_string(),
            NotReady::JointStateStale { age } => format!("joint states stale ({age:.2} s)"),
            NotReady::NoJointStateNearFrames { gap } => {
                format!("no joint state within sync slop of the frames (nearest {gap:.3} s away)")
            }
            NotReady::CameraTooFast { camera, span, need } => format!(
                "camera '{}' holds {span:.2} s of frames, the window needs {need:.2} s (frame_dt): it publishes faster than {MAX_CAMERA_RATE_HZ} Hz",
                cam(camera)
            ),
        }
    }
}

impl fmt::Display for NotReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe(&[]))
    }
}

struct CameraRing {
    /// [`frame_slots`] slots: a new frame is written into the spare slot and only then becomes part of the
    /// window, so a frame that fails preprocessing never replaces a good one.
    frames: Vec<f32>,
    stamps: Vec<f64>,
    /// Slot index of the newest committed frame.
    newest: usize,
    count: usize,
}

pub struct ObsWindow {
    dims: Dims,
    /// Seconds between the window's frames (`frame_dt`); `None`: the T newest frames.
    frame_dt: Option<f64>,
    /// Slots per camera ring, the spare included.
    slots: usize,
    cameras: Vec<CameraRing>,
    joint_stamps: Vec<f64>,
    joint_positions: Vec<f64>,
    joint_newest: usize,
    joint_count: usize,
    joint_history: usize,
    pub sync_slop_s: f64,
    pub max_image_age_s: f64,
    pub max_joint_state_age_s: f64,
}

/// What an assembled observation carries besides its frames.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ObsMeta {
    /// The oldest of the cameras' newest frame stamps: every input is at least this fresh.
    pub stamp: f64,
}

impl ObsWindow {
    pub fn new(
        dims: Dims,
        sync_slop_s: f64,
        max_image_age_s: f64,
        max_joint_state_age_s: f64,
        joint_history: usize,
    ) -> Self {
        Self::with_frame_dt(
            dims,
            None,
            sync_slop_s,
            max_image_age_s,
            max_joint_state_age_s,
            joint_history,
        )
    }

    /// A window whose frames are `frame_dt` apart (the bundle's `frame_dt`): per camera, the frames
    /// nearest to `stamp - k frame_dt`, `k = T-1..0`, whatever rate the camera publishes at.
    pub fn with_frame_dt(
        dims: Dims,
        frame_dt: Option<f64>,
        sync_slop_s: f64,
        max_image_age_s: f64,
        max_joint_state_age_s: f64,
        joint_history: usize,
    ) -> Self {
        let joint_history = joint_history.max(MIN_JOINT_HISTORY);
        let slots = frame_slots(dims.context_frames, frame_dt);
        let cameras = (0..dims.cameras)
            .map(|v| CameraRing {
                frames: vec![0.0; slots * dims.frame_len(v)],
                stamps: vec![f64::NEG_INFINITY; slots],
                newest: 0,
                count: 0,
            })
            .collect();
        ObsWindow {
            dims,
            frame_dt,
            slots,
            cameras,
            joint_stamps: vec![f64::NEG_INFINITY; joint_history],
            joint_positions: vec![0.0; joint_history * dims.state],
            joint_newest: 0,
            joint_count: 0,
            joint_history,
            sync_slop_s,
            max_image_age_s,
            max_joint_state_age_s,
        }
    }

    pub fn dims(&self) -> &Dims {
        &self.dims
    }

    pub fn clear(&mut self) {
        for c in &mut self.cameras {
            c.count = 0;
            c.stamps.fill(f64::NEG_INFINITY);
        }
        self.joint_count = 0;
        self.joint_stamps.fill(f64::NEG_INFINITY);
    }

    /// Forgets one camera's frames (its resolution changed).
    pub fn clear_camera(&mut self, camera: usize) {
        let c = &mut self.cameras[camera];
        c.count = 0;
        c.stamps.fill(f64::NEG_INFINITY);
    }

    fn spare_slot(&self, camera: usize) -> usize {
        (self.cameras[camera].newest + 1) % self.slots
    }

    /// The spare slot of `camera` to preprocess a new frame into; it joins the window on [`Self::commit_frame`].
    pub fn frame_slot(&mut self, camera: usize) -> &mut [f32] {
        let len = self.dims.frame_len(camera);
        let slot = self.spare_slot(camera);
        &mut self.cameras[camera].frames[slot * len..(slot + 1) * len]
    }

    /// The newest committed frame of `camera` ([3, H, W], normalized).
    pub fn newest_frame(&self, camera: usize) -> &[f32] {
        let len = self.dims.frame_len(camera);
        let c = &self.cameras[camera];
        &c.frames[c.newest * len..(c.newest + 1) * len]
    }

    pub fn last_frame_stamp(&self, camera: usize) -> Option<f64> {
        let c = &self.cameras[camera];
        (c.count > 0).then(|| c.stamps[c.newest])
    }

    /// Refuses a stamp that is not newer than the camera's newest frame (a replayed or reordered message).
    pub fn check_frame_stamp(&self, camera: usize, stamp: f64) -> Result<(), FrameError> {
        match self.last_frame_stamp(camera) {
            Some(last) if stamp <= last => Err(FrameError::StampBackwards),
            _ => Ok(()),
        }
    }

    pub fn commit_frame(&mut self, camera: usize, stamp: f64) {
        let slot = self.spare_slot(camera);
        let c = &mut self.cameras[camera];
        c.stamps[slot] = stamp;
        c.newest = slot;
        c.count = (c.count + 1).min(self.slots - 1);
    }

    pub fn push_joint_state(
        &mut self,
        stamp: f64,
        positions: &[f64],
    ) -> Result<(), JointStateError> {
        let s = self.dims.state;
        debug_assert_eq!(positions.len(), s);
        if self.joint_count > 0 {
            let last = self.joint_stamps[self.joint_newest];
            if stamp < last {
                return Err(JointStateError::StampBackwards { stamp, last });
            }
        }
        let slot = (self.joint_newest + 1) % self.joint_history;
        self.joint_stamps[slot] = stamp;
        self.joint_positions[slot * s..(slot + 1) * s].copy_from_slice(positions);
        self.joint_newest = slot;
        self.joint_count = (self.joint_count + 1).min(self.joint_history);
        Ok(())
    }

    /// The newest joint state, if any.
    pub fn latest_joint_state(&self) -> Option<(f64, &[f64])> {
        (self.joint_count > 0).then(|| {
            let s = self.dims.state;
            let i = self.joint_newest;
            (
                self.joint_stamps[i],
                &self.joint_positions[i * s..(i + 1) * s],
            )
        })
    }

    /// Index of the joint state nearest to `stamp`, with its distance.
    fn nearest_joint_state(&self, stamp: f64) -> Option<(usize, f64)> {
        let mut best: Option<(usize, f64)> = None;
        for k in 0..self.joint_count {
            let i = (self.joint_newest + self.joint_history - k) % self.joint_history;
            let gap = (self.joint_stamps[i] - stamp).abs();
            match best {
                Some((_, g)) if g <= gap => {
                    // Stamps only grow towards the newest: once older samples are farther away, stop.
                    if self.joint_stamps[i] < stamp {
                        break;
                    }
                }
                _ => best = Some((i, gap)),
            }
        }
        best
    }

    /// The slot `back` frames before the newest.
    fn slot_back(&self, c: &CameraRing, back: usize) -> usize {
        (c.newest + self.slots - back) % self.slots
    }

    /// The slot of the committed frame nearest to `target` (the newer one on a tie).
    fn nearest_frame(&self, c: &CameraRing, target: f64) -> usize {
        let mut best = (c.newest, f64::INFINITY);
        for back in 0..c.count {
            let slot = self.slot_back(c, back);
            let gap = (c.stamps[slot] - target).abs();
            if gap < best.1 {
                best = (slot, gap);
            }
        }
        best.0
    }

    /// Checks completeness and freshness at time `now` without copying anything.
    pub fn readiness(&self, now: f64) -> Result<ObsMeta, NotReady> {
        let t = self.dims.context_frames;
        let mut stamp = f64::INFINITY;
        for (i, c) in self.cameras.iter().enumerate() {
            if c.count < t {
                return Err(NotReady::CameraFilling {
                    camera: i,
                    have: c.count,
                    need: t,
                });
            }
            let newest = c.stamps[c.newest];
            let age = now - newest;
            if age > self.max_image_age_s {
                return Err(NotReady::CameraStale { camera: i, age });
            }
            stamp = stamp.min(newest);
        }
        if let Some(dt) = self.frame_dt {
            // Every camera must reach back to the oldest target (within half a spacing).
            let need_back = (t - 1) as f64 * dt;
            for (i, c) in self.cameras.iter().enumerate() {
                let oldest = c.stamps[self.slot_back(c, c.count - 1)];
                if oldest > stamp - need_back + 0.5 * dt {
                    if c.count < self.slots - 1 {
                        return Err(NotReady::CameraFilling {
                            camera: i,
                            have: c.count,
                            need: t,
                        });
                    }
                    return Err(NotReady::CameraTooFast {
                        camera: i,
                        span: c.stamps[c.newest] - oldest,
                        need: need_back,
                    });
                }
            }
        }
        let Some((joint_stamp, _)) = self.latest_joint_state() else {
            return Err(NotReady::NoJointState);
        };
        let age = now - joint_stamp;
        if age > self.max_joint_state_age_s {
            return Err(NotReady::JointStateStale { age });
        }
        match self.nearest_joint_state(stamp) {
            Some((_, gap)) if gap <= self.sync_slop_s => Ok(ObsMeta { stamp }),
            Some((_, gap)) => Err(NotReady::NoJointStateNearFrames { gap }),
            None => Err(NotReady::NoJointState),
        }
    }

    /// Copies a complete observation into `frames` ([V, T, 3, H, W], oldest frame first), their stamps
    /// into `stamps` ([V, T]) and `state` (the joint state nearest to the observation stamp, model
    /// order).
    pub fn assemble(
        &self,
        now: f64,
        frames: &mut [f32],
        stamps: &mut [f64],
        state: &mut [f64],
    ) -> Result<ObsMeta, NotReady> {
        let meta = self.readiness(now)?;
        let t = self.dims.context_frames;
        for (v, c) in self.cameras.iter().enumerate() {
            let len = self.dims.frame_len(v);
            for k in 0..t {
                // k = 0 is the oldest frame of the window.
                let back = t - 1 - k;
                let slot = match self.frame_dt {
                    None => self.slot_back(c, back),
                    Some(dt) => self.nearest_frame(c, meta.stamp - back as f64 * dt),
                };
                frames[self.dims.obs_frame(v, k)]
                    .copy_from_slice(&c.frames[slot * len..(slot + 1) * len]);
                stamps[v * t + k] = c.stamps[slot];
            }
        }
        let (i, _) = self
            .nearest_joint_state(meta.stamp)
            .ok_or(NotReady::NoJointState)?;
        let s = self.dims.state;
        state.copy_from_slice(&self.joint_positions[i * s..(i + 1) * s]);
        Ok(meta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dims() -> Dims {
        Dims {
            cameras: 2,
            context_frames: 2,
            sizes: crate::bundle::same_size(1, 1),
            state: 2,
            horizon: 2,
            action: 2,
            video_frames: 1,
            latent: [1, 1, 1],
            tokens: 1,
        }
    }

    fn frame(w: &mut ObsWindow, cam: usize, stamp: f64, value: f32) {
        w.check_frame_stamp(cam, stamp).unwrap();
        w.frame_slot(cam).fill(value);
        w.commit_frame(cam, stamp);
    }

    #[test]
    fn window_fills_orders_and_matches_joint_state_by_stamp() {
        let mut w = ObsWindow::new(dims(), 0.02, 0.5, 0.1, 64);
        assert_eq!(
            w.readiness(0.0),
            Err(NotReady::CameraFilling {
                camera: 0,
                have: 0,
                need: 2
            })
        );
        for (i, s) in [1.0, 1.1, 1.2].iter().enumerate() {
            frame(&mut w, 0, *s, i as f32);
            frame(&mut w, 1, *s + 0.01, 10.0 + i as f32);
        }
        assert_eq!(w.readiness(1.25), Err(NotReady::NoJointState));
        for k in 0..30 {
            let t = 1.0 + k as f64 * 0.01;
            w.push_joint_state(t, &[t, -t]).unwrap();
        }
        let mut frames = vec![0.0; 2 * 2 * 3];
        let mut state = [0.0; 2];
        let mut stamps = vec![0.0; 4];
        let meta = w
            .assemble(1.25, &mut frames, &mut stamps, &mut state)
            .unwrap();
        // Observation stamp: the older of the two cameras' newest frames.
        assert_eq!(meta.stamp, 1.2);
        assert!(
            (state[0] - 1.2).abs() < 1e-9 && (state[1] + 1.2).abs() < 1e-9,
            "{state:?}"
        );
        // Camera 0 holds frames 1 then 2 (oldest first), camera 1 frames 11 then 12.
        assert_eq!(
            frames,
            [1., 1., 1., 2., 2., 2., 11., 11., 11., 12., 12., 12.]
        );
        assert_eq!(stamps, [1.1, 1.2, 1.11, 1.21]);
    }

    #[test]
    fn stale_and_unsynced_inputs_block_the_observation() {
        let mut w = ObsWindow::new(dims(), 0.02, 0.5, 0.1, 64);
        for s in [1.0, 1.1] {
            frame(&mut w, 0, s, 0.0);
            frame(&mut w, 1, s, 0.0);
        }
        w.push_joint_state(1.5, &[0.0, 0.0]).unwrap();
        // Frames at 1.1, only a joint state at 1.5: nothing within 20 ms.
        assert!(matches!(
            w.readiness(1.5),
            Err(NotReady::NoJointStateNearFrames { .. })
        ));
        let r = w.readiness(1.7);
        assert!(
            matches!(r, Err(NotReady::CameraStale { camera: 0, .. })),
            "{r:?}"
        );
        assert!(r.unwrap_err().is_stale());
        w.push_joint_state(1.6, &[0.0, 0.0]).unwrap();
        frame(&mut w, 0, 1.6, 0.0);
        frame(&mut w, 1, 1.6, 0.0);
        assert!(w.readiness(1.65).is_ok());
        assert!(matches!(
            w.readiness(1.85),
            Err(NotReady::JointStateStale { .. })
        ));
        w.clear();
        assert!(matches!(
            w.readiness(1.65),
            Err(NotReady::CameraFilling { .. })
        ));
    }

    #[test]
    fn frame_dt_picks_the_frames_nearest_to_the_spacing_at_any_camera_rate() {
        // T = 2, frame_dt = 0.2 s: the frames nearest to stamp - 0.2 and stamp.
        let mut w = ObsWindow::with_frame_dt(dims(), Some(0.2), 0.02, 0.5, 0.1, 64);
        assert_eq!(frame_slots(2, Some(0.2)), 14);
        // Camera 0 at 30 Hz, camera 1 at 10 Hz; the value of a frame is its index.
        for i in 0..8 {
            frame(&mut w, 0, 1.0 + i as f64 / 30.0, i as f32);
        }
        frame(&mut w, 1, 1.05, 100.0);
        frame(&mut w, 1, 1.1, 101.0);
        w.push_joint_state(1.2, &[0.0, 0.0]).unwrap();
        // Camera 1's two frames reach back to 1.05, not within half a spacing of 1.1 - 0.2: filling.
        assert!(
            matches!(
                w.readiness(1.25),
                Err(NotReady::CameraFilling { camera: 1, .. })
            ),
            "{:?}",
            w.readiness(1.25)
        );
        frame(&mut w, 1, 1.2, 102.0);
        for i in 8..9 {
            frame(&mut w, 0, 1.0 + i as f64 / 30.0, i as f32);
        }
        // Observation stamp: min(1 + 8/30, 1.2) = 1.2. Camera 0: nearest to 1.0 is frame 0, to 1.2 frame
        // 6 (1.2); camera 1: 1.05 and 1.2.
        let mut frames = vec![0.0; 2 * 2 * 3];
        let mut stamps = vec![0.0; 4];
        let mut state = [0.0; 2];
        let meta = w
            .assemble(1.28, &mut frames, &mut stamps, &mut state)
            .unwrap();
        assert!((meta.stamp - 1.2).abs() < 1e-12);
        assert_eq!(
            frames,
            [0., 0., 0., 6., 6., 6., 100., 100., 100., 102., 102., 102.]
        );
        assert!(
            (stamps[1] - 1.2).abs() < 1e-12 && stamps[2] == 1.05,
            "{stamps:?}"
        );
    }

    #[test]
    fn frame_dt_reports_a_camera_faster_than_the_ring() {
        let mut w = ObsWindow::with_frame_dt(dims(), Some(0.2), 0.02, 0.5, 0.1, 64);
        // 200 Hz: the 13 frames the ring holds span 0.06 s, less than 0.2 s.
        for i in 0..40 {
            let t = 1.0 + i as f64 / 200.0;
            frame(&mut w, 0, t, 0.0);
            frame(&mut w, 1, t, 0.0);
        }
        w.push_joint_state(1.195, &[0.0, 0.0]).unwrap();
        let r = w.readiness(1.2);
        assert!(
            matches!(r, Err(NotReady::CameraTooFast { camera: 0, .. })),
            "{r:?}"
        );
        assert!(r
            .unwrap_err()
            .describe(&["ext".into()])
            .contains("faster than 60 Hz"));
    }

    #[test]
    fn backwards_stamps_are_refused_without_touching_the_window() {
        let mut w = ObsWindow::new(dims(), 0.02, 0.5, 0.1, 64);
        frame(&mut w, 0, 2.0, 5.0);
        assert_eq!(w.check_frame_stamp(0, 2.0), Err(FrameError::StampBackwards));
        assert_eq!(w.check_frame_stamp(0, 1.0), Err(FrameError::StampBackwards));
        w.push_joint_state(2.0, &[0.0, 0.0]).unwrap();
        assert_eq!(
            w.push_joint_state(1.9, &[0.0, 0.0]).unwrap_err().kind(),
            "joint_state_stamp_backwards"
        );
        // A frame written into the spare slot but never committed leaves the window as it was.
        w.frame_slot(0).fill(99.0);
        assert_eq!(w.last_frame_stamp(0), Some(2.0));
    }

    #[test]
    fn joint_mapper_handles_extra_joints_any_order_and_bad_values() {
        let mut m = JointMapper::new(vec!["a".into(), "b".into()]);
        let mut out = [0.0; 2];
        let names: Vec<String> = ["x", "b", "a"].iter().map(|s| s.to_string()).collect();
        m.map(&names, &[9.0, 2.0, 1.0], &mut out).unwrap();
        assert_eq!(out, [1.0, 2.0]);
        assert_eq!(
            m.map(&names, &[9.0, f64::NAN, 1.0], &mut out)
                .unwrap_err()
                .kind(),
            "joint_state_nan"
        );
        assert_eq!(
            m.map(&names, &[1.0], &mut out).unwrap_err().kind(),
            "joint_state_length"
        );
        let missing: Vec<String> = vec!["a".into()];
        assert_eq!(
            m.map(&missing, &[1.0], &mut out).unwrap_err(),
            JointStateError::MissingJoint("b".into())
        );
        // After a failed lookup the next good message still maps correctly.
        m.map(&names, &[0.0, 4.0, 3.0], &mut out).unwrap();
        assert_eq!(out, [3.0, 4.0]);
        // A wanted joint named twice is refused; an extra joint named twice does not matter.
        let twice: Vec<String> = ["a", "b", "a"].iter().map(|s| s.to_string()).collect();
        assert_eq!(
            m.map(&twice, &[1.0, 2.0, 3.0], &mut out).unwrap_err(),
            JointStateError::DuplicateName("a".into())
        );
        let extra_twice: Vec<String> = ["x", "b", "a", "x"].iter().map(|s| s.to_string()).collect();
        m.map(&extra_twice, &[0.0, 2.0, 1.0, 0.0], &mut out)
            .unwrap();
        let many: Vec<String> = (0..=MAX_JOINT_NAMES).map(|i| format!("j{i}")).collect();
        assert_eq!(
            m.map(&many, &vec![0.0; many.len()], &mut out)
                .unwrap_err()
                .kind(),
            "joint_state_too_many_names"
        );
    }
}
