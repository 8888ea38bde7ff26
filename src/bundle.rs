//! Model bundle: the `wam.yaml` manifest and the ONNX files beside it (format in docs/bundle_format.md).
//!
//! Loading checks the manifest on its own (sizes, normalization, files present). The comparison of each
//! stage's ONNX inputs and outputs with what the manifest implies lives here too, as plain data
//! ([`TensorInfo`]), so it can be tested without ONNX Runtime; `runtime` feeds it the sessions' real outlets.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::preprocess::ResizePolicy;
use crate::sampler::{FlowSampler, Guidance, Solver};

pub const MANIFEST_FILE: &str = "wam.yaml";
/// The newest format version this node reads; every version from 1 up to it loads.
pub const FORMAT_VERSION: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("cannot read model bundle file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("model bundle manifest {path} is not valid: {source}")]
    Yaml {
        path: PathBuf,
        source: serde_yaml::Error,
    },
    #[error("model bundle manifest field `{field}`: {problem}")]
    Field { field: String, problem: String },
    #[error("model bundle stage `{stage}`, tensor `{tensor}`: {problem}")]
    Tensor {
        stage: String,
        tensor: String,
        problem: String,
    },
}

/// Largest `frame_dt` accepted: the window keeps `(T - 1) frame_dt` seconds of frames per camera.
const MAX_FRAME_DT_S: f64 = 10.0;

/// Largest wam.yaml accepted.
const MAX_MANIFEST_BYTES: usize = 64 << 10;

/// Largest element count of any buffer derived from the manifest (frames, latents, actions): 2^32
/// floats is 16 GB, beyond any model this node can run.
const MAX_ELEMENTS: u128 = 1 << 32;

fn field_err(field: impl Into<String>, problem: impl Into<String>) -> BundleError {
    BundleError::Field {
        field: field.into(),
        problem: problem.into(),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format_version: u32,
    pub model_id: String,
    pub cameras: Vec<CameraSpec>,
    pub context_frames: usize,
    /// Seconds between the context frames fed to the model; absent: the T newest frames, whatever the
    /// cameras' rate.
    #[serde(default)]
    pub frame_dt: Option<f64>,
    pub image: ImageNorm,
    pub state: StateSpec,
    pub action: ActionSpec,
    pub video: VideoSpec,
    pub sampler: SamplerSpec,
    pub instruction: InstructionSpec,
    pub stages: Stages,
    /// Optional: the monitor's score on held-out successful episodes (the node publishes z-values
    /// against it; without it, raw scores).
    #[serde(default)]
    pub monitor: Option<MonitorCalibration>,
}

/// The distribution of the monitor's latent score (mean squared error of predicted against observed
/// frame latents) per camera, on successful episodes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorCalibration {
    /// Per camera, in `cameras` order.
    pub latent_mean: Vec<f64>,
    pub latent_std: Vec<f64>,
    /// Scores it was computed from (informational).
    #[serde(default)]
    pub samples: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraSpec {
    pub name: String,
    pub height: usize,
    pub width: usize,
    /// How images of another size or aspect ratio are brought to `height` x `width`.
    #[serde(default)]
    pub resize: ResizePolicy,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageNorm {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateSpec {
    pub joints: Vec<String>,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// Each step is the joint position to reach.
    AbsoluteJointPosition,
    /// Each step is relative to the joint state of the observation: `q_i = q_obs + a_i`.
    DeltaJointPosition,
    /// Each step is a joint velocity held for `action.dt`: `q_i = q_{i-1} + a_i dt`, `q_{-1} = q_obs`.
    JointVelocity,
}

impl ActionKind {
    pub fn name(self) -> &'static str {
        match self {
            ActionKind::AbsoluteJointPosition => "absolute_joint_position",
            ActionKind::DeltaJointPosition => "delta_joint_position",
            ActionKind::JointVelocity => "joint_velocity",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionSpec {
    pub kind: ActionKind,
    pub joints: Vec<String>,
    pub horizon: usize,
    pub dt: f64,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VideoSpec {
    pub frames: usize,
    pub latent_shape: Vec<usize>,
    /// Seconds between predicted frames; defaults to the chunk's duration divided by `frames`.
    #[serde(default)]
    pub dt: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplerSpec {
    pub steps: usize,
    /// Absent: `euler`, format 1's only solver.
    #[serde(default)]
    pub solver: SolverKind,
    /// Time shift of the grid (docs/bundle_format.md, "Sampling"); absent: 1, no shift.
    #[serde(default = "default_shift")]
    pub shift: f64,
    /// UniPC's order, 1 or 2; absent: 2. Only for `unipc`.
    #[serde(default)]
    pub order: Option<usize>,
    /// Format 2: classifier-free guidance.
    #[serde(default)]
    pub guidance: Option<GuidanceSpec>,
    /// Format 2: evaluation indices at which the denoise stage is not run (its previous outputs reused).
    #[serde(default)]
    pub reuse: Option<Vec<usize>>,
}

/// `sampler.guidance` (format 2).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuidanceSpec {
    pub scale: f64,
    pub apply_to: Vec<GuidanceTarget>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GuidanceTarget {
    Video,
    Actions,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SolverKind {
    #[default]
    Euler,
    Heun,
    Unipc,
    /// One run, its outputs are the result (`sampler::Solver::Direct`).
    None,
}

fn default_shift() -> f64 {
    1.0
}

/// UniPC's order when the manifest names none: 2, as diffusers' and Wan's UniPC schedulers.
pub const DEFAULT_UNIPC_ORDER: usize = 2;

impl SamplerSpec {
    /// The solver the manifest asks for (valid once the bundle is loaded).
    pub fn solver(&self) -> Solver {
        match self.solver {
            SolverKind::Euler => Solver::Euler,
            SolverKind::Heun => Solver::Heun,
            SolverKind::Unipc => Solver::UniPc {
                order: self.order.unwrap_or(DEFAULT_UNIPC_ORDER),
            },
            SolverKind::None => Solver::Direct,
        }
    }

    /// The guidance the manifest asks for.
    pub fn guidance(&self) -> Option<Guidance> {
        self.guidance.as_ref().map(|g| Guidance {
            scale: g.scale,
            actions: g.apply_to.contains(&GuidanceTarget::Actions),
            video: g.apply_to.contains(&GuidanceTarget::Video),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum TokenizerKind {
    #[serde(rename = "vocab")]
    Vocab,
    #[serde(rename = "tokenizer.json")]
    HuggingFace,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstructionSpec {
    pub tokenizer: TokenizerKind,
    pub file: String,
    pub max_tokens: usize,
    #[serde(default)]
    pub pad_id: i64,
    #[serde(default = "default_unk")]
    pub unk_id: i64,
}

fn default_unk() -> i64 {
    1
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stages {
    pub encode: StageSpec<EncodeIn, EncodeOut>,
    pub context: ContextStage,
    pub denoise: StageSpec<DenoiseIn, DenoiseOut>,
    #[serde(default)]
    pub decode: Option<StageSpec<DecodeIn, DecodeOut>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSpec<I, O> {
    pub file: String,
    pub inputs: I,
    pub outputs: O,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContextStage {
    pub file: String,
    pub inputs: ContextIn,
    /// Named tensors passed on to `denoise` inputs of the same names.
    pub outputs: Vec<String>,
    /// Format 2: tensors carried from one chunk's context run to the next (a KV cache).
    #[serde(default)]
    pub state: Option<ContextState>,
}

/// `stages.context.state` (format 2): docs/bundle_format.md, "Format 2", state across chunks.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContextState {
    pub tensors: Vec<StatePair>,
    /// The position axis of every state tensor; its size is the maximum length M.
    pub axis: usize,
    /// Positions the context stage appends per chunk (B).
    pub block: usize,
    /// i64 [1] input: the valid positions in the past tensors.
    pub length: String,
    /// Optional i64 [1] input: chunks since the last clear.
    #[serde(default)]
    pub position: Option<String>,
}

/// One carried tensor: the context input that gets the past, the output that returns the present.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatePair {
    pub input: String,
    pub output: String,
}

/// Frames as one tensor for all cameras ([1, V, T|F, 3, H, W]), or one tensor per camera
/// ([1, T|F, 3, h_v, w_v], by camera name): cameras of different sizes (format 2).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum FrameTensors {
    One(String),
    PerCamera(BTreeMap<String, String>),
}

impl FrameTensors {
    /// The tensor names in camera order (one name for all cameras, or one per camera).
    pub fn names(&self, cameras: &[CameraSpec]) -> Vec<String> {
        match self {
            FrameTensors::One(n) => vec![n.clone()],
            FrameTensors::PerCamera(map) => cameras
                .iter()
                .map(|c| map.get(&c.name).cloned().unwrap_or_default())
                .collect(),
        }
    }

    pub fn per_camera(&self) -> bool {
        matches!(self, FrameTensors::PerCamera(_))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncodeIn {
    pub frames: FrameTensors,
}
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncodeOut {
    pub latents: String,
}
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContextIn {
    pub latents: String,
    pub state: String,
    pub tokens: String,
}
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenoiseIn {
    pub actions: String,
    pub video: String,
    pub time: String,
}
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenoiseOut {
    pub actions: String,
    pub video: String,
}
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecodeIn {
    pub latents: String,
}
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecodeOut {
    pub frames: FrameTensors,
}

/// The frame tensors of `ft`: [1, V, n, 3, H, W] as one tensor, or [1, n, 3, h_v, w_v] per camera.
fn frame_infos(ft: &FrameTensors, m: &Manifest, d: &Dims, n: i64) -> Vec<TensorInfo> {
    let names = ft.names(&m.cameras);
    match ft {
        FrameTensors::One(name) => {
            let (h, w) = d.sizes[0];
            vec![TensorInfo::f32(
                name,
                vec![1, d.cameras as i64, n, 3, h as i64, w as i64],
            )]
        }
        FrameTensors::PerCamera(_) => names
            .iter()
            .enumerate()
            .map(|(v, name)| {
                let (h, w) = d.sizes[v];
                TensorInfo::f32(name, vec![1, n, 3, h as i64, w as i64])
            })
            .collect(),
    }
}

impl Manifest {
    /// For each action joint, its index among the state joints. Every action joint must be measured:
    /// the safety checks compare commands with the joint's position, and delta and velocity actions
    /// start from it.
    pub fn action_to_state(&self) -> Result<Vec<usize>, BundleError> {
        self.action
            .joints
            .iter()
            .map(|name| {
                self.state.joints.iter().position(|s| s == name).ok_or_else(|| {
                    field_err(
                        "action.joints",
                        format!("`{name}` is not a state joint: commands need the joint's measured position for the safety checks (and delta or velocity actions start from it)"),
                    )
                })
            })
            .collect()
    }
}

/// A loaded and self-consistent bundle.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

/// The most cameras a bundle may have (sizes are kept in a fixed array: `Dims` is `Copy`).
pub const MAX_CAMERAS: usize = 8;

/// Every camera of (height, width) `h` x `w`.
pub const fn same_size(h: usize, w: usize) -> [(usize, usize); MAX_CAMERAS] {
    [(h, w); MAX_CAMERAS]
}

/// Sizes derived once from the manifest, used by every later stage. Frame buffers are laid out camera
/// after camera, each camera's frames at its own size ([T, 3, h_v, w_v] or [F, 3, h_v, w_v]): with one
/// size for all cameras this is [V, T, 3, H, W].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dims {
    pub cameras: usize,
    pub context_frames: usize,
    /// (height, width) of each camera's model input; unused entries are (0, 0).
    pub sizes: [(usize, usize); MAX_CAMERAS],
    pub state: usize,
    pub horizon: usize,
    pub action: usize,
    pub video_frames: usize,
    pub latent: [usize; 3],
    pub tokens: usize,
}

impl Dims {
    /// (height, width) of camera `v`.
    pub fn size(&self, v: usize) -> (usize, usize) {
        self.sizes[v]
    }
    /// Values of one [3, h, w] frame of camera `v`.
    pub fn frame_len(&self, v: usize) -> usize {
        let (h, w) = self.sizes[v];
        3 * h * w
    }
    /// The largest height and width over the cameras (the preview's tile).
    pub fn max_size(&self) -> (usize, usize) {
        self.sizes[..self.cameras]
            .iter()
            .fold((0, 0), |(h, w), (a, b)| (h.max(*a), w.max(*b)))
    }
    /// Every camera has the same size.
    pub fn uniform(&self) -> bool {
        self.sizes[..self.cameras]
            .iter()
            .all(|s| *s == self.sizes[0])
    }
    /// Where frame `k` of camera `v` lies in a buffer of `per_camera` frames per camera.
    fn frame_range(&self, per_camera: usize, v: usize, k: usize) -> std::ops::Range<usize> {
        let start: usize = (0..v)
            .map(|u| per_camera * self.frame_len(u))
            .sum::<usize>()
            + k * self.frame_len(v);
        start..start + self.frame_len(v)
    }
    /// Frame `k` of camera `v` in an observation buffer ([V, T] frames).
    pub fn obs_frame(&self, v: usize, k: usize) -> std::ops::Range<usize> {
        self.frame_range(self.context_frames, v, k)
    }
    /// Predicted frame `f` of camera `v` in a predicted-frames buffer ([V, F] frames).
    pub fn predicted_frame(&self, v: usize, f: usize) -> std::ops::Range<usize> {
        self.frame_range(self.video_frames, v, f)
    }
    pub fn latent_len(&self) -> usize {
        self.latent.iter().product()
    }
    pub fn obs_frames_len(&self) -> usize {
        (0..self.cameras)
            .map(|v| self.context_frames * self.frame_len(v))
            .sum()
    }
    pub fn action_len(&self) -> usize {
        self.horizon * self.action
    }
    pub fn video_latent_len(&self) -> usize {
        self.cameras * self.video_frames * self.latent_len()
    }
    pub fn predicted_frames_len(&self) -> usize {
        (0..self.cameras)
            .map(|v| self.video_frames * self.frame_len(v))
            .sum()
    }
}

impl Bundle {
    pub fn load(dir: impl AsRef<Path>) -> Result<Self, BundleError> {
        let dir = dir.as_ref().to_path_buf();
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| BundleError::Io {
            path: path.clone(),
            source,
        })?;
        // A manifest is a couple of kilobytes; the YAML parser is slow on deeply nested input.
        if text.len() > MAX_MANIFEST_BYTES {
            return Err(field_err(
                MANIFEST_FILE,
                format!(
                    "is {} bytes, more than a manifest can be ({MAX_MANIFEST_BYTES})",
                    text.len()
                ),
            ));
        }
        let manifest: Manifest =
            serde_yaml::from_str(&text).map_err(|source| BundleError::Yaml { path, source })?;
        let bundle = Bundle { dir, manifest };
        bundle.validate()?;
        Ok(bundle)
    }

    pub fn path_of(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    pub fn dims(&self) -> Dims {
        let m = &self.manifest;
        let mut sizes = [(0, 0); MAX_CAMERAS];
        for (s, c) in sizes.iter_mut().zip(&m.cameras) {
            *s = (c.height, c.width);
        }
        Dims {
            cameras: m.cameras.len(),
            context_frames: m.context_frames,
            sizes,
            state: m.state.joints.len(),
            horizon: m.action.horizon,
            action: m.action.joints.len(),
            video_frames: m.video.frames,
            latent: [
                m.video.latent_shape[0],
                m.video.latent_shape[1],
                m.video.latent_shape[2],
            ],
            tokens: m.instruction.max_tokens,
        }
    }

    /// Seconds between predicted video frames.
    pub fn video_dt(&self) -> f64 {
        let m = &self.manifest;
        m.video
            .dt
            .unwrap_or(m.action.horizon as f64 * m.action.dt / m.video.frames as f64)
    }

    fn validate(&self) -> Result<(), BundleError> {
        let m = &self.manifest;
        if !(1..=FORMAT_VERSION).contains(&m.format_version) {
            return Err(field_err(
                "format_version",
                format!(
                    "is {}, this node reads 1 to {FORMAT_VERSION}",
                    m.format_version
                ),
            ));
        }
        if m.cameras.is_empty() {
            return Err(field_err("cameras", "must list at least one camera"));
        }
        if m.cameras.len() > MAX_CAMERAS {
            return Err(field_err(
                "cameras",
                format!("lists {}, at most {MAX_CAMERAS}", m.cameras.len()),
            ));
        }
        let first = &m.cameras[0];
        for (i, cam) in m.cameras.iter().enumerate() {
            if cam.name.is_empty() {
                return Err(field_err(format!("cameras[{i}].name"), "is empty"));
            }
            if m.cameras[..i].iter().any(|c| c.name == cam.name) {
                return Err(field_err(
                    format!("cameras[{i}].name"),
                    format!("`{}` appears twice", cam.name),
                ));
            }
            if cam.height == 0 || cam.width == 0 {
                return Err(field_err(
                    format!("cameras[{i}]"),
                    "height and width must be positive",
                ));
            }
            if (cam.height, cam.width) != (first.height, first.width) && m.format_version < 2 {
                return Err(field_err(
                    format!("cameras[{i}]"),
                    format!(
                        "is {}x{} but cameras[0] is {}x{}; format version 1 needs one size for all cameras",
                        cam.height, cam.width, first.height, first.width
                    ),
                ));
            }
        }
        if m.context_frames == 0 {
            return Err(field_err("context_frames", "must be at least 1"));
        }
        check_norm("image", &m.image.mean, &m.image.std, 3)?;
        check_names("state.joints", &m.state.joints)?;
        check_norm("state", &m.state.mean, &m.state.std, m.state.joints.len())?;
        check_names("action.joints", &m.action.joints)?;
        check_norm(
            "action",
            &m.action.mean,
            &m.action.std,
            m.action.joints.len(),
        )?;
        if m.action.horizon == 0 {
            return Err(field_err("action.horizon", "must be at least 1"));
        }
        if !(m.action.dt.is_finite() && m.action.dt > 0.0) {
            return Err(field_err(
                "action.dt",
                "must be a positive number of seconds",
            ));
        }
        if m.video.frames == 0 {
            return Err(field_err(
                "video.frames",
                "must be at least 1: a WAM predicts video together with actions",
            ));
        }
        if m.video.latent_shape.len() != 3 || m.video.latent_shape.contains(&0) {
            return Err(field_err(
                "video.latent_shape",
                "must be three positive sizes [C, h, w]",
            ));
        }
        if let Some(dt) = m.video.dt {
            if !(dt.is_finite() && dt > 0.0) {
                return Err(field_err(
                    "video.dt",
                    "must be a positive number of seconds",
                ));
            }
        }
        if let Some(dt) = m.frame_dt {
            if !(dt.is_finite() && dt > 0.0 && dt <= MAX_FRAME_DT_S) {
                return Err(field_err(
                    "frame_dt",
                    format!("is {dt}, must be a positive number of seconds up to {MAX_FRAME_DT_S}"),
                ));
            }
        }
        // Every buffer the node allocates from these sizes must fit: a product that overflows would
        // size a buffer wrongly (found by fuzzing).
        let product = |xs: &[usize]| -> u128 {
            xs.iter()
                .fold(1u128, |acc, &x| acc.saturating_mul(x as u128))
        };
        // The largest camera bounds every camera's frames.
        let pixels = m
            .cameras
            .iter()
            .map(|c| product(&[c.height, c.width]))
            .max()
            .unwrap_or(0);
        let latent = product(&m.video.latent_shape);
        let (cams, frames) = (m.cameras.len(), m.video.frames);
        for (field, elements) in [
            (
                "cameras",
                product(&[cams, m.context_frames, 3]).saturating_mul(pixels),
            ),
            (
                "video.frames",
                product(&[cams, frames, 3]).saturating_mul(pixels),
            ),
            (
                "frame_dt",
                product(&[
                    cams,
                    crate::obs_window::frame_slots(m.context_frames, m.frame_dt),
                    3,
                ])
                .saturating_mul(pixels),
            ),
            (
                "video.latent_shape",
                latent.saturating_mul(product(&[frames.max(m.context_frames), cams])),
            ),
            (
                "action.horizon",
                product(&[m.action.horizon, m.action.joints.len()]),
            ),
            ("instruction.max_tokens", m.instruction.max_tokens as u128),
        ] {
            if elements > MAX_ELEMENTS {
                return Err(field_err(
                    field,
                    format!("sizes give buffers of {elements} elements, more than {MAX_ELEMENTS}"),
                ));
            }
        }
        if !(self.video_dt().is_finite() && self.video_dt() > 0.0) {
            return Err(field_err(
                "video.dt",
                "the frame spacing it gives is not a positive number of seconds",
            ));
        }
        if m.sampler.steps == 0 {
            return Err(field_err("sampler.steps", "must be at least 1"));
        }
        if !(m.sampler.shift.is_finite() && m.sampler.shift > 0.0) {
            return Err(field_err(
                "sampler.shift",
                format!("is {}, must be a positive finite number", m.sampler.shift),
            ));
        }
        match (m.sampler.solver, m.sampler.order) {
            (SolverKind::Unipc, Some(order)) if !(1..=2).contains(&order) => {
                return Err(field_err(
                    "sampler.order",
                    format!("is {order}; UniPC of order 1 or 2 is implemented"),
                ));
            }
            (SolverKind::Euler | SolverKind::Heun | SolverKind::None, Some(_)) => {
                return Err(field_err(
                    "sampler.order",
                    "applies to the `unipc` solver only (euler is of order 1, heun of order 2)",
                ));
            }
            _ => {}
        }
        if let Some(c) = &m.monitor {
            for (field, v) in [
                ("monitor.latent_mean", &c.latent_mean),
                ("monitor.latent_std", &c.latent_std),
            ] {
                if v.len() != m.cameras.len() {
                    return Err(field_err(
                        field,
                        format!(
                            "has {} entries, expected one per camera ({})",
                            v.len(),
                            m.cameras.len()
                        ),
                    ));
                }
            }
            if c.latent_mean.iter().any(|x| !x.is_finite())
                || c.latent_std.iter().any(|x| !(x.is_finite() && *x > 0.0))
            {
                return Err(field_err(
                    "monitor",
                    "latent_mean must be finite and latent_std finite and > 0",
                ));
            }
        }
        if m.instruction.max_tokens == 0 {
            return Err(field_err("instruction.max_tokens", "must be at least 1"));
        }
        self.check_file("instruction.file", &m.instruction.file)?;
        self.check_file("stages.encode.file", &m.stages.encode.file)?;
        check_frame_tensors(
            m,
            "stages.encode.inputs.frames",
            &m.stages.encode.inputs.frames,
        )?;
        if let Some(decode) = &m.stages.decode {
            check_frame_tensors(m, "stages.decode.outputs.frames", &decode.outputs.frames)?;
        }
        self.check_file("stages.context.file", &m.stages.context.file)?;
        self.check_file("stages.denoise.file", &m.stages.denoise.file)?;
        if let Some(decode) = &m.stages.decode {
            self.check_file("stages.decode.file", &decode.file)?;
        }
        if m.stages.context.outputs.is_empty() {
            return Err(field_err(
                "stages.context.outputs",
                "must name at least one tensor passed to denoise",
            ));
        }
        let d = &m.stages.denoise.inputs;
        for out in &m.stages.context.outputs {
            if [&d.actions, &d.video, &d.time].contains(&out) {
                return Err(field_err(
                    "stages.context.outputs",
                    format!("`{out}` collides with a denoise input of another role"),
                ));
            }
        }
        self.validate_format2()?;
        Ok(())
    }

    /// The format-2 fields on their own (their tensors are checked against the ONNX files by
    /// [`check_context_state`]).
    fn validate_format2(&self) -> Result<(), BundleError> {
        let m = &self.manifest;
        let sp = &m.sampler;
        if sp.solver == SolverKind::None && sp.steps != 1 {
            return Err(field_err(
                "sampler.steps",
                format!("is {}; solver `none` runs the model once: 1", sp.steps),
            ));
        }
        if let Some(g) = &sp.guidance {
            if m.format_version < 2 {
                return Err(field_err("sampler.guidance", "needs format_version 2"));
            }
            if !(g.scale.is_finite() && g.scale > 0.0) {
                return Err(field_err(
                    "sampler.guidance.scale",
                    format!("is {}, must be a positive finite number", g.scale),
                ));
            }
            if g.apply_to.is_empty() {
                return Err(field_err(
                    "sampler.guidance.apply_to",
                    "must name video, actions or both",
                ));
            }
            if g.apply_to.len() == 2 && g.apply_to[0] == g.apply_to[1] {
                return Err(field_err(
                    "sampler.guidance.apply_to",
                    "names the same tensor twice",
                ));
            }
        }
        if let Some(reuse) = &sp.reuse {
            if m.format_version < 2 {
                return Err(field_err("sampler.reuse", "needs format_version 2"));
            }
            let probe = FlowSampler::new(sp.steps, 0)
                .with_solver(sp.solver())
                .with_reuse(reuse);
            if let Err(e) = probe.validate() {
                return Err(field_err("sampler.reuse", e.to_string()));
            }
            if probe.reuse().len() != reuse.len() {
                return Err(field_err("sampler.reuse", "lists an index twice"));
            }
        }
        let Some(st) = &m.stages.context.state else {
            return Ok(());
        };
        let field = "stages.context.state";
        if m.format_version < 2 {
            return Err(field_err(field, "needs format_version 2"));
        }
        if st.tensors.is_empty() {
            return Err(field_err(
                format!("{field}.tensors"),
                "must list at least one {input, output} pair",
            ));
        }
        if st.block == 0 {
            return Err(field_err(format!("{field}.block"), "must be at least 1"));
        }
        let ci = &m.stages.context.inputs;
        let mut inputs: Vec<&str> = vec![&ci.latents, &ci.state, &ci.tokens];
        let mut outputs: Vec<&str> = Vec::new();
        for (i, pair) in st.tensors.iter().enumerate() {
            for (role, name, seen) in [
                ("input", &pair.input, &mut inputs),
                ("output", &pair.output, &mut outputs),
            ] {
                if name.is_empty() || seen.contains(&name.as_str()) {
                    return Err(field_err(
                        format!("{field}.tensors[{i}].{role}"),
                        format!("`{name}` is empty or names another context {role} too"),
                    ));
                }
                seen.push(name);
            }
        }
        for (key, name) in std::iter::once(("length", &st.length))
            .chain(st.position.as_ref().map(|p| ("position", p)))
        {
            if name.is_empty() || inputs.contains(&name.as_str()) {
                return Err(field_err(
                    format!("{field}.{key}"),
                    format!("`{name}` is empty or names another context input too"),
                ));
            }
            inputs.push(name);
        }
        Ok(())
    }

    fn check_file(&self, field: &str, file: &str) -> Result<(), BundleError> {
        let path = self.path_of(file);
        if path.is_file() {
            Ok(())
        } else {
            Err(field_err(
                field,
                format!("file {} does not exist", path.display()),
            ))
        }
    }

    /// What every stage's ONNX file must declare, derived from the manifest. Context outputs have shapes the
    /// manifest does not fix; they are checked against the denoise inputs of the same name instead.
    pub fn expected_tensors(&self) -> BTreeMap<&'static str, StageTensors> {
        let m = &self.manifest;
        let d = self.dims();
        let (v, t) = (d.cameras as i64, d.context_frames as i64);
        let [lc, lh, lw] = d.latent.map(|x| x as i64);
        let f = d.video_frames as i64;
        let latents = vec![1, v, t, lc, lh, lw];
        let video = vec![1, v, f, lc, lh, lw];
        let actions = vec![1, d.horizon as i64, d.action as i64];
        let mut stages = BTreeMap::new();
        stages.insert(
            "encode",
            StageTensors {
                inputs: frame_infos(&m.stages.encode.inputs.frames, m, &d, t),
                outputs: vec![TensorInfo::f32(
                    &m.stages.encode.outputs.latents,
                    latents.clone(),
                )],
            },
        );
        let ci = &m.stages.context.inputs;
        stages.insert(
            "context",
            StageTensors {
                inputs: vec![
                    TensorInfo::f32(&ci.latents, latents),
                    TensorInfo::f32(&ci.state, vec![1, d.state as i64]),
                    TensorInfo {
                        name: ci.tokens.clone(),
                        elem: ElemType::I64,
                        shape: vec![1, d.tokens as i64],
                    },
                ],
                outputs: Vec::new(),
            },
        );
        let di = &m.stages.denoise.inputs;
        let dout = &m.stages.denoise.outputs;
        stages.insert(
            "denoise",
            StageTensors {
                inputs: vec![
                    TensorInfo::f32(&di.actions, actions.clone()),
                    TensorInfo::f32(&di.video, video.clone()),
                    TensorInfo::f32(&di.time, vec![1]),
                ],
                outputs: vec![
                    TensorInfo::f32(&dout.actions, actions),
                    TensorInfo::f32(&dout.video, video.clone()),
                ],
            },
        );
        if let Some(dec) = &m.stages.decode {
            stages.insert(
                "decode",
                StageTensors {
                    inputs: vec![TensorInfo::f32(&dec.inputs.latents, video)],
                    outputs: frame_infos(&dec.outputs.frames, m, &d, f),
                },
            );
        }
        stages
    }
}

/// Frames of cameras of different sizes need one tensor per camera (format 2); a per-camera map names
/// every camera once and nothing else.
fn check_frame_tensors(m: &Manifest, field: &str, ft: &FrameTensors) -> Result<(), BundleError> {
    let first = (m.cameras[0].height, m.cameras[0].width);
    let mixed = m.cameras.iter().any(|c| (c.height, c.width) != first);
    match ft {
        FrameTensors::One(_) if mixed => Err(field_err(
            field,
            "the cameras have different sizes: give one tensor per camera, {<camera>: <tensor>, ...}",
        )),
        FrameTensors::One(_) => Ok(()),
        FrameTensors::PerCamera(_) if m.format_version < 2 => {
            Err(field_err(field, "one tensor per camera needs format_version 2"))
        }
        FrameTensors::PerCamera(map) => {
            for c in &m.cameras {
                match map.get(&c.name) {
                    Some(t) if !t.is_empty() => {}
                    _ => {
                        return Err(field_err(
                            format!("{field}.{}", c.name),
                            "missing: every camera needs its tensor",
                        ))
                    }
                }
            }
            if let Some(extra) = map.keys().find(|k| !m.cameras.iter().any(|c| &c.name == *k)) {
                return Err(field_err(
                    format!("{field}.{extra}"),
                    "is not a camera of `cameras`",
                ));
            }
            Ok(())
        }
    }
}

fn check_names(field: &str, names: &[String]) -> Result<(), BundleError> {
    if names.is_empty() {
        return Err(field_err(field, "must list at least one joint"));
    }
    for (i, n) in names.iter().enumerate() {
        if n.is_empty() || names[..i].contains(n) {
            return Err(field_err(
                format!("{field}[{i}]"),
                format!("`{n}` is empty or appears twice"),
            ));
        }
    }
    Ok(())
}

fn check_norm(prefix: &str, mean: &[f32], std: &[f32], len: usize) -> Result<(), BundleError> {
    if mean.len() != len {
        return Err(field_err(
            format!("{prefix}.mean"),
            format!("has {} entries, expected {len}", mean.len()),
        ));
    }
    if std.len() != len {
        return Err(field_err(
            format!("{prefix}.std"),
            format!("has {} entries, expected {len}", std.len()),
        ));
    }
    if let Some(i) = mean.iter().position(|x| !x.is_finite()) {
        return Err(field_err(format!("{prefix}.mean[{i}]"), "must be finite"));
    }
    if let Some(i) = std.iter().position(|x| !(x.is_finite() && *x > 0.0)) {
        return Err(field_err(
            format!("{prefix}.std[{i}]"),
            "must be a positive finite number",
        ));
    }
    // Normalized values must stay finite in f32 for every input the range allows (a std of 1e-40 or a
    // mean of 3e38 would make them infinite; found by fuzzing).
    if let Some(i) = (0..len).find(|&i| {
        [-1.0e4f32, 1.0e4]
            .iter()
            .any(|x| !((x - mean[i]) / std[i]).is_finite())
    }) {
        return Err(field_err(
            format!("{prefix}.std[{i}]"),
            "with its mean gives non-finite normalized values",
        ));
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElemType {
    /// An expected type only (format 2): float32 or float16.
    Float,
    F32,
    F16,
    F64,
    I64,
    I32,
    U8,
    Bool,
    Other,
}

impl fmt::Display for ElemType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ElemType::Float => "float32 or float16",
            ElemType::F32 => "float32",
            ElemType::F16 => "float16",
            ElemType::F64 => "float64",
            ElemType::I64 => "int64",
            ElemType::I32 => "int32",
            ElemType::U8 => "uint8",
            ElemType::Bool => "bool",
            ElemType::Other => "another type",
        };
        f.write_str(s)
    }
}

/// One declared tensor: a name, an element type and a shape (`-1` for a dynamic dimension).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub elem: ElemType,
    pub shape: Vec<i64>,
}

impl TensorInfo {
    pub fn f32(name: &str, shape: Vec<i64>) -> Self {
        TensorInfo {
            name: name.to_string(),
            elem: ElemType::F32,
            shape,
        }
    }
}

impl StageTensors {
    /// Format 2 accepts float16 wherever float32 is expected.
    pub fn accept_f16(&mut self) {
        for t in self.inputs.iter_mut().chain(&mut self.outputs) {
            if t.elem == ElemType::F32 {
                t.elem = ElemType::Float;
            }
        }
    }

    /// Batched guidance: the first dimension of every tensor is the batch (the file's is dynamic or 2).
    pub fn any_batch(&mut self) {
        for t in self.inputs.iter_mut().chain(&mut self.outputs) {
            if let Some(d) = t.shape.first_mut() {
                *d = -1;
            }
        }
    }
}

/// Whether every input and output of a stage has a first dimension that takes a batch of 2 (dynamic or 2).
pub fn takes_batch_of_two(stage: &StageTensors) -> bool {
    stage
        .inputs
        .iter()
        .chain(&stage.outputs)
        .all(|t| matches!(t.shape.first(), Some(-1) | Some(2)))
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StageTensors {
    pub inputs: Vec<TensorInfo>,
    pub outputs: Vec<TensorInfo>,
}

fn shape_str(s: &[i64]) -> String {
    let dims: Vec<String> = s
        .iter()
        .map(|d| {
            if *d < 0 {
                "?".to_string()
            } else {
                d.to_string()
            }
        })
        .collect();
    format!("[{}]", dims.join(", "))
}

/// Checks one declared tensor of an ONNX file against what the manifest implies.
pub fn compare_tensor(
    stage: &str,
    direction: &str,
    expected: &TensorInfo,
    actual: &[TensorInfo],
) -> Result<(), BundleError> {
    let err = |problem: String| BundleError::Tensor {
        stage: stage.to_string(),
        tensor: expected.name.clone(),
        problem,
    };
    let Some(found) = actual.iter().find(|a| a.name == expected.name) else {
        let names: Vec<&str> = actual.iter().map(|a| a.name.as_str()).collect();
        return Err(err(format!(
            "the manifest names this {direction} but the ONNX file has no such {direction} (it has: {})",
            names.join(", ")
        )));
    };
    let elem_ok = found.elem == expected.elem
        || (expected.elem == ElemType::Float
            && matches!(found.elem, ElemType::F32 | ElemType::F16));
    if !elem_ok {
        return Err(err(format!(
            "element type is {} in the ONNX file, expected {}",
            found.elem, expected.elem
        )));
    }
    if found.shape.len() != expected.shape.len() {
        return Err(err(format!(
            "rank is {} ({}) in the ONNX file, expected {} ({})",
            found.shape.len(),
            shape_str(&found.shape),
            expected.shape.len(),
            shape_str(&expected.shape)
        )));
    }
    for (axis, (f, e)) in found.shape.iter().zip(&expected.shape).enumerate() {
        // A dynamic dimension in the file accepts the size the manifest fixes.
        if *f >= 0 && *e >= 0 && f != e {
            return Err(err(format!(
                "dimension {axis} is {f} in the ONNX file, expected {e} (file shape {}, expected {})",
                shape_str(&found.shape),
                shape_str(&expected.shape)
            )));
        }
    }
    Ok(())
}

/// Checks a stage's ONNX inputs and outputs against the expected ones; every input the file requires must be
/// one the node feeds.
pub fn check_stage(
    stage: &str,
    expected: &StageTensors,
    actual: &StageTensors,
) -> Result<(), BundleError> {
    for e in &expected.inputs {
        compare_tensor(stage, "input", e, &actual.inputs)?;
    }
    for e in &expected.outputs {
        compare_tensor(stage, "output", e, &actual.outputs)?;
    }
    if let Some(extra) = actual
        .inputs
        .iter()
        .find(|a| !expected.inputs.iter().any(|e| e.name == a.name))
    {
        return Err(BundleError::Tensor {
            stage: stage.to_string(),
            tensor: extra.name.clone(),
            problem: "the ONNX file requires this input but the manifest does not name it".into(),
        });
    }
    Ok(())
}

/// Context outputs are fed to denoise by name: each must exist in the context file, be fully fixed, and match
/// the denoise input of the same name. Returns the shapes, for preallocation.
pub fn check_context_outputs(
    names: &[String],
    context_outputs: &[TensorInfo],
    denoise_inputs: &[TensorInfo],
) -> Result<Vec<TensorInfo>, BundleError> {
    let mut resolved = Vec::with_capacity(names.len());
    for name in names {
        let err = |stage: &str, problem: String| BundleError::Tensor {
            stage: stage.to_string(),
            tensor: name.clone(),
            problem,
        };
        let Some(out) = context_outputs.iter().find(|o| &o.name == name) else {
            return Err(err(
                "context",
                "the manifest lists this output but the ONNX file has no such output".into(),
            ));
        };
        if out.shape.iter().any(|d| *d < 0) {
            return Err(err(
                "context",
                format!(
                    "output shape {} has a dynamic dimension; context outputs must be fixed",
                    shape_str(&out.shape)
                ),
            ));
        }
        if !matches!(out.elem, ElemType::F32 | ElemType::F16 | ElemType::I64) {
            return Err(err(
                "context",
                format!(
                    "element type {} is not supported (float32, float16 or int64)",
                    out.elem
                ),
            ));
        }
        compare_tensor("denoise", "input", out, denoise_inputs)?;
        resolved.push(out.clone());
    }
    Ok(resolved)
}

/// One carried state tensor as the context file declares it (resolved by [`check_context_state`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateTensorInfo {
    pub input: String,
    pub output: String,
    /// F32 or F16 (past and present the same).
    pub elem: ElemType,
    /// Fully fixed, the same for past and present.
    pub shape: Vec<i64>,
}

/// The carried state after checking it against the context file: per tensor its type and shape, the
/// position axis, the maximum length M and the block B.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedState {
    pub tensors: Vec<StateTensorInfo>,
    pub axis: usize,
    pub max_len: usize,
    pub block: usize,
    pub length: String,
    pub position: Option<String>,
}

/// Checks `stages.context.state` against the context file's declared inputs and outputs: each past input
/// and present output exists, both are float32 or float16 of the same type and the same fixed shape, the
/// position axis exists and has the same size M in every tensor, B <= M and M % B == 0, and `length`
/// (and `position`) are int64 [1] inputs. Errors name the stage, the tensor and the field.
pub fn check_context_state(
    state: &ContextState,
    context: &StageTensors,
) -> Result<ResolvedState, BundleError> {
    let err = |tensor: &str, problem: String| BundleError::Tensor {
        stage: "context".into(),
        tensor: tensor.to_string(),
        problem,
    };
    let names = |list: &[TensorInfo]| {
        list.iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut tensors = Vec::with_capacity(state.tensors.len());
    let mut max_len: Option<(usize, &str)> = None;
    for (i, pair) in state.tensors.iter().enumerate() {
        let field = format!("stages.context.state.tensors[{i}]");
        let Some(past) = context.inputs.iter().find(|t| t.name == pair.input) else {
            return Err(err(
                &pair.input,
                format!(
                    "{field}.input names this input but the ONNX file has no such input (it has: {})",
                    names(&context.inputs)
                ),
            ));
        };
        let Some(present) = context.outputs.iter().find(|t| t.name == pair.output) else {
            return Err(err(
                &pair.output,
                format!(
                    "{field}.output names this output but the ONNX file has no such output (it has: {})",
                    names(&context.outputs)
                ),
            ));
        };
        if !matches!(past.elem, ElemType::F32 | ElemType::F16) {
            return Err(err(
                &pair.input,
                format!(
                    "{field}.input: element type {} is not supported (float32 or float16)",
                    past.elem
                ),
            ));
        }
        if present.elem != past.elem {
            return Err(err(
                &pair.output,
                format!(
                    "{field}.output: element type {} differs from its input `{}` ({})",
                    present.elem, pair.input, past.elem
                ),
            ));
        }
        if past.shape.iter().any(|d| *d < 0) {
            return Err(err(
                &pair.input,
                format!(
                    "{field}.input: shape {} has a dynamic dimension; state tensors must be fixed",
                    shape_str(&past.shape)
                ),
            ));
        }
        if present.shape != past.shape {
            return Err(err(
                &pair.output,
                format!(
                    "{field}.output: shape {} differs from its input `{}` ({})",
                    shape_str(&present.shape),
                    pair.input,
                    shape_str(&past.shape)
                ),
            ));
        }
        let Some(&m) = past.shape.get(state.axis) else {
            return Err(err(
                &pair.input,
                format!(
                    "stages.context.state.axis {} is out of range for shape {} (rank {})",
                    state.axis,
                    shape_str(&past.shape),
                    past.shape.len()
                ),
            ));
        };
        let m = m as usize;
        match max_len {
            Some((first, first_name)) if first != m => {
                return Err(err(
                    &pair.input,
                    format!(
                        "stages.context.state.axis {}: size {m} differs from `{first_name}` ({first}); \
                         every state tensor has the same maximum length",
                        state.axis
                    ),
                ));
            }
            Some(_) => {}
            None => max_len = Some((m, &pair.input)),
        }
        tensors.push(StateTensorInfo {
            input: pair.input.clone(),
            output: pair.output.clone(),
            elem: past.elem,
            shape: past.shape.clone(),
        });
    }
    let (max_len, first) = max_len.unwrap_or((0, ""));
    if state.block > max_len || max_len % state.block != 0 {
        return Err(err(
            first,
            format!(
                "stages.context.state.block {} must divide the maximum length M = {max_len} \
                 (the size of axis {})",
                state.block, state.axis
            ),
        ));
    }
    for (key, name) in std::iter::once(("length", &state.length))
        .chain(state.position.as_ref().map(|p| ("position", p)))
    {
        let expected = TensorInfo {
            name: name.clone(),
            elem: ElemType::I64,
            shape: vec![1],
        };
        compare_tensor("context", "input", &expected, &context.inputs).map_err(|e| match e {
            BundleError::Tensor {
                stage,
                tensor,
                problem,
            } => BundleError::Tensor {
                stage,
                tensor,
                problem: format!("stages.context.state.{key}: {problem}"),
            },
            other => other,
        })?;
    }
    Ok(ResolvedState {
        tensors,
        axis: state.axis,
        max_len,
        block: state.block,
        length: state.length.clone(),
        position: state.position.clone(),
    })
}

impl ResolvedState {
    /// What the context file must declare for the state: the past inputs and `length`/`position`
    /// (added to the stage's expected inputs, so they count as fed).
    pub fn context_inputs(&self) -> Vec<TensorInfo> {
        let mut out: Vec<TensorInfo> = self
            .tensors
            .iter()
            .map(|t| TensorInfo {
                name: t.input.clone(),
                elem: t.elem,
                shape: t.shape.clone(),
            })
            .collect();
        for name in std::iter::once(&self.length).chain(self.position.as_ref()) {
            out.push(TensorInfo {
                name: name.clone(),
                elem: ElemType::I64,
                shape: vec![1],
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, elem: ElemType, shape: &[i64]) -> TensorInfo {
        TensorInfo {
            name: name.into(),
            elem,
            shape: shape.to_vec(),
        }
    }

    #[test]
    fn tensor_comparison_names_each_kind_of_mismatch() {
        let expected = t("frames", ElemType::F32, &[1, 2, 2, 3, 32, 32]);
        let missing = compare_tensor("encode", "input", &expected, &[t("x", ElemType::F32, &[1])])
            .unwrap_err()
            .to_string();
        assert!(
            missing.contains("stage `encode`")
                && missing.contains("`frames`")
                && missing.contains("has: x"),
            "{missing}"
        );
        let dtype = compare_tensor(
            "encode",
            "input",
            &expected,
            &[t("frames", ElemType::F16, &[1, 2, 2, 3, 32, 32])],
        )
        .unwrap_err()
        .to_string();
        assert!(
            dtype.contains("float16") && dtype.contains("expected float32"),
            "{dtype}"
        );
        let rank = compare_tensor(
            "encode",
            "input",
            &expected,
            &[t("frames", ElemType::F32, &[1, 3, 32, 32])],
        )
        .unwrap_err()
        .to_string();
        assert!(rank.contains("rank is 4"), "{rank}");
        let dim = compare_tensor(
            "encode",
            "input",
            &expected,
            &[t("frames", ElemType::F32, &[1, 2, 2, 3, 64, 32])],
        )
        .unwrap_err()
        .to_string();
        assert!(
            dim.contains("dimension 4 is 64") && dim.contains("expected 32"),
            "{dim}"
        );
        // Dynamic dimensions accept the manifest's size.
        compare_tensor(
            "encode",
            "input",
            &expected,
            &[t("frames", ElemType::F32, &[-1, 2, 2, 3, -1, 32])],
        )
        .unwrap();
    }

    #[test]
    fn stage_with_unfed_input_is_refused() {
        let expected = StageTensors {
            inputs: vec![t("a", ElemType::F32, &[1])],
            outputs: vec![],
        };
        let actual = StageTensors {
            inputs: vec![t("a", ElemType::F32, &[1]), t("b", ElemType::F32, &[1])],
            outputs: vec![],
        };
        let e = check_stage("denoise", &expected, &actual)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`b`") && e.contains("does not name it"), "{e}");
    }

    #[test]
    fn context_outputs_must_match_denoise_inputs() {
        let names = vec!["cache".to_string()];
        let ctx = [t("cache", ElemType::F32, &[1, 16])];
        check_context_outputs(&names, &ctx, &[t("cache", ElemType::F32, &[1, 16])]).unwrap();
        let e = check_context_outputs(&names, &ctx, &[t("cache", ElemType::F32, &[1, 8])])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("stage `denoise`") && e.contains("dimension 1 is 8"),
            "{e}"
        );
        let e = check_context_outputs(&names, &[t("cache", ElemType::F32, &[1, -1])], &ctx)
            .unwrap_err()
            .to_string();
        assert!(e.contains("dynamic"), "{e}");
        let e = check_context_outputs(&names, &[], &ctx)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("stage `context`") && e.contains("no such output"),
            "{e}"
        );
    }
}
