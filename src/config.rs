//! Node parameters: read once at start-up from a flat name -> value map (what the ROS layer gets from the
//! params file), validated, and refused with a message naming the parameter and what it expects.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// A parameter value as ROS delivers it, independent of r2r so the parsing is testable without ROS.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum ParamValue {
    Bool(bool),
    Integer(i64),
    Double(f64),
    String(String),
    BoolArray(Vec<bool>),
    IntegerArray(Vec<i64>),
    DoubleArray(Vec<f64>),
    StringArray(Vec<String>),
}

impl ParamValue {
    fn type_name(&self) -> &'static str {
        match self {
            ParamValue::Bool(_) => "bool",
            ParamValue::Integer(_) => "integer",
            ParamValue::Double(_) => "double",
            ParamValue::String(_) => "string",
            ParamValue::BoolArray(_) => "bool array",
            ParamValue::IntegerArray(_) => "integer array",
            ParamValue::DoubleArray(_) => "double array",
            ParamValue::StringArray(_) => "string array",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("parameter `{name}`: {problem}")]
pub struct ParamError {
    pub name: String,
    pub problem: String,
}

fn perr(name: &str, problem: impl Into<String>) -> ParamError {
    ParamError {
        name: name.to_string(),
        problem: problem.into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    TensorRt,
    Cuda,
    Cpu,
}

impl Provider {
    pub fn name(self) -> &'static str {
        match self {
            Provider::TensorRt => "tensorrt",
            Provider::Cuda => "cuda",
            Provider::Cpu => "cpu",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "tensorrt" => Some(Provider::TensorRt),
            "cuda" => Some(Provider::Cuda),
            "cpu" => Some(Provider::Cpu),
            _ => None,
        }
    }
}

/// Where the bundle's stages run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// In this process, with ONNX Runtime and the configured providers.
    Local,
    /// On a Triton Inference Server (KServe v2 HTTP), one model per stage.
    Remote,
}

/// The Triton server of `backend: remote`.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteConfig {
    /// Base URL, e.g. `http://127.0.0.1:8000`.
    pub url: String,
    /// Model names are `<prefix><stage>` (as `wam_policy_node triton-repo --prefix` writes them).
    pub model_prefix: String,
    /// Per request, connection included.
    pub timeout_s: f64,
    /// How long start-up waits for the server and every stage's model to be ready.
    pub ready_timeout_s: f64,
}

impl Default for RemoteConfig {
    fn default() -> Self {
        RemoteConfig {
            url: "http://127.0.0.1:8000".to_string(),
            model_prefix: String::new(),
            timeout_s: 2.0,
            ready_timeout_s: 30.0,
        }
    }
}

/// How the model runs: in process (providers in order of preference and their options) or remote.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeConfig {
    pub backend: Backend,
    pub remote: RemoteConfig,
    pub providers: Vec<Provider>,
    pub require_accelerator: bool,
    pub device_id: i32,
    pub fp16: bool,
    /// The GPU provider captures the context, denoise and decode stages in CUDA graphs, their tensors
    /// bound at fixed device addresses.
    pub cuda_graph: bool,
    /// TensorRT engine and timing caches; engine builds take minutes, so they are kept between runs, under
    /// `<trt_cache_dir>/<hash of the stage's ONNX file>/<GPU>`.
    pub trt_cache_dir: PathBuf,
    /// Folder of the CUDA 13 runtime libraries (libcudart.so.13, libcublas*, ...) preloaded before the CUDA
    /// provider is registered; empty: the `nvidia/cu13/lib` folder beside the onnxruntime-gpu wheel, if any,
    /// else the dynamic loader's search path.
    pub cuda_lib_dir: PathBuf,
    /// Folder of the cuDNN 9 libraries; empty: the wheel's `nvidia/cudnn/lib`, else the loader's path.
    pub cudnn_lib_dir: PathBuf,
    /// Folder of the TensorRT 10 libraries (libnvinfer.so.10, ...); empty: the loader's search path.
    pub trt_lib_dir: PathBuf,
    pub intra_op_threads: usize,
    pub warmup_runs: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            backend: Backend::Local,
            remote: RemoteConfig::default(),
            providers: vec![Provider::TensorRt, Provider::Cuda, Provider::Cpu],
            require_accelerator: false,
            device_id: 0,
            fp16: false,
            cuda_graph: false,
            trt_cache_dir: std::env::temp_dir().join("wam_policy_trt_cache"),
            cuda_lib_dir: PathBuf::new(),
            cudnn_lib_dir: PathBuf::new(),
            trt_lib_dir: PathBuf::new(),
            intra_op_threads: 0,
            warmup_runs: 2,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CameraTransport {
    Raw,
    Compressed,
}

/// Per-joint limits the safety layer enforces, in the order of `joint_names`.
#[derive(Debug, Clone, PartialEq)]
pub struct JointLimits {
    pub lower: Vec<f64>,
    pub upper: Vec<f64>,
    pub max_velocity: Vec<f64>,
    /// Per-joint acceleration limit of the commanded spline; None: not limited.
    pub max_acceleration: Option<Vec<f64>>,
    /// Largest allowed distance between the measured position and a chunk's first point.
    pub max_jump: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NodeConfig {
    pub bundle_path: PathBuf,
    /// Camera names, in the bundle's order; each must be a camera the bundle declares.
    pub camera_names: Vec<String>,
    pub camera_topics: Vec<String>,
    pub camera_transport: CameraTransport,
    pub joint_states_topic: String,
    /// Robot joint name for each of the bundle's state joints (empty: the bundle's names).
    pub joint_names: Vec<String>,
    pub trajectory_topic: String,
    pub instruction_topic: String,
    pub instruction: String,
    pub enabled_at_start: bool,
    pub sync_slop_s: f64,
    pub max_image_age_s: f64,
    pub max_joint_state_age_s: f64,
    pub control_period_s: f64,
    /// A joint state or frame stamped further than this ahead of the node's clock is bad input.
    pub max_stamp_lead_s: f64,
    /// Highest joint-state rate the history is sized for.
    pub max_joint_state_rate_hz: f64,
    pub use_sim_time: bool,
    /// MCAP file to record into; empty: no recording.
    pub record_path: String,
    /// What one image may cost.
    pub image_bounds: crate::preprocess::ImageBounds,
    pub max_instruction_bytes: usize,
    pub status_period_s: f64,
    pub sampler_steps: usize,
    pub seed: u64,
    pub publish_predicted_frames: bool,
    /// When the decode stage runs.
    pub video_decode: VideoDecode,
    pub limits: Option<JointLimits>,
    pub runtime: RuntimeConfig,
    pub execution: ExecutionParams,
    /// Where commands go; never empty (the default is one group of every action joint).
    pub command_groups: Vec<CommandGroup>,
    pub robot_description: String,
    pub robot_description_topic: String,
    /// The link `~/planned_path` draws; empty: the end of the action joints' chain.
    pub planned_path_tip_link: String,
    pub robot_description_timeout_s: f64,
    pub managed: bool,
    pub gated: bool,
    pub run: RunParams,
    pub monitor: crate::monitor::MonitorParams,
}

/// Where commands go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputMode {
    /// One trajectory_msgs/JointTrajectory per chunk, for a joint_trajectory_controller.
    Chunk,
    /// Setpoints at `stream_rate_hz` interpolated from the active plan.
    Stream,
}

impl OutputMode {
    pub fn name(self) -> &'static str {
        match self {
            OutputMode::Chunk => "chunk",
            OutputMode::Stream => "stream",
        }
    }
}

/// The message streamed setpoints are published as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamMessage {
    /// std_msgs/Float64MultiArray of positions in joint order (forward_command_controller).
    Float64MultiArray,
    /// sensor_msgs/JointState with names, positions and velocities.
    JointState,
}

/// How a new chunk joins the rest of the active one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoundaryMode {
    /// The new chunk replaces the rest of the old one.
    Replace,
    /// The overlap is blended from the old chunk to the new one over `crossfade_steps` steps.
    Crossfade,
    /// The sampler keeps the part of the old chunk that executes while the new one is computed
    /// (inpainting), so the new chunk continues it; at publication it replaces the rest.
    Prefix,
}

impl BoundaryMode {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "replace" => Some(BoundaryMode::Replace),
            "crossfade" => Some(BoundaryMode::Crossfade),
            "prefix" => Some(BoundaryMode::Prefix),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            BoundaryMode::Replace => "replace",
            BoundaryMode::Crossfade => "crossfade",
            BoundaryMode::Prefix => "prefix",
        }
    }
}

/// The position a new plan starts from (its velocity is always the old plan's at that time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    /// The measured position: a joint_trajectory_controller interpolates from the robot's state to the
    /// first point of a new trajectory (chunk mode).
    Measured,
    /// The old plan's setpoint: streamed setpoints stay continuous (stream mode).
    Setpoint,
}

/// Real-time execution: when to replan, boundaries, output mode, ramp-in, dry run. The one execution
/// config: the chunk executor takes it as it is, with the bundle's chunk shape.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionParams {
    /// Start the next inference when less than this is left of the active plan; negative: the latency
    /// estimate plus `replan_margin_s`.
    pub replan_threshold_s: f64,
    pub replan_margin_s: f64,
    pub boundary_mode: BoundaryMode,
    pub crossfade_steps: usize,
    pub ramp_in_s: f64,
    pub min_lead_s: f64,
    /// Where a new plan starts: None = by output mode (chunk: measured, stream: setpoint).
    pub plan_anchor: Option<Anchor>,
    pub output_mode: OutputMode,
    pub stream_rate_hz: f64,
    pub stream_topic: String,
    pub stream_message: StreamMessage,
    /// Publish commands on debug topics only, never on the command topic.
    pub dry_run: bool,
    /// Added to every inference (sleep in the worker): to measure behaviour under a slower model.
    pub debug_extra_latency_s: f64,
    /// In (0, 1]: chunks are executed this much slower (steps `dt / velocity_scaling` apart).
    pub velocity_scaling: f64,
}

impl ExecutionParams {
    /// Where a new plan starts: the configured anchor, or by output mode.
    pub fn anchor(&self) -> Anchor {
        self.plan_anchor.unwrap_or(match self.output_mode {
            OutputMode::Chunk => Anchor::Measured,
            OutputMode::Stream => Anchor::Setpoint,
        })
    }
}

impl Default for ExecutionParams {
    /// The defaults of the parameter table.
    fn default() -> Self {
        // An empty parameter map cannot fail: every default passes its own check.
        read_execution(&Reader {
            params: &Params::new(),
        })
        .unwrap_or_else(|e| unreachable!("execution defaults are invalid: {e}"))
    }
}
/// A parameter's default, typed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ParamDefault {
    Bool(bool),
    Integer(u64),
    Double(f64),
    Str(&'static str),
    /// Not set unless given (lists, limits).
    Unset,
}

/// One parameter: its name, its default, and its doc, which starts with its type and check
/// (`double > 0: ...`). The one description of every parameter: the reader takes its defaults from
/// here, `wam_policy_node params` prints it, docs/parameters.md is generated from it, and a test keeps
/// config/robot.yaml in line with it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParamSpec {
    pub name: &'static str,
    pub default: ParamDefault,
    pub doc: &'static str,
}

impl ParamSpec {
    /// The type and check part of the doc (before the first `:`).
    pub fn kind(&self) -> &'static str {
        self.doc.split_once(": ").map(|(k, _)| k).unwrap_or("")
    }
    /// The meaning part of the doc.
    pub fn meaning(&self) -> &'static str {
        self.doc
            .split_once(": ")
            .map(|(_, m)| m)
            .unwrap_or(self.doc)
    }
    /// The default as YAML text.
    pub fn default_text(&self) -> String {
        match self.default {
            ParamDefault::Bool(b) => b.to_string(),
            ParamDefault::Integer(i) => i.to_string(),
            ParamDefault::Double(d) => format!("{d:?}"),
            ParamDefault::Str(s) => format!("{s:?}"),
            ParamDefault::Unset => "(unset)".to_string(),
        }
    }
}

/// Every parameter the node reads.
pub const PARAMETERS: &[ParamSpec] = &[
    ParamSpec {
        name: "bundle_path",
        default: ParamDefault::Str(""),
        doc: "string: folder of the model bundle (holds wam.yaml)",
    },
    ParamSpec {
        name: "camera_names",
        default: ParamDefault::Unset,
        doc: "string array: the bundle's camera names, in any order (default: all of them)",
    },
    ParamSpec {
        name: "camera_topics",
        default: ParamDefault::Unset,
        doc: "string array: one image topic per entry of camera_names (default: cameras/<name>/image_raw)",
    },
    ParamSpec {
        name: "camera_transport",
        default: ParamDefault::Str("raw"),
        doc: "string: `raw` (sensor_msgs/Image) or `compressed` (sensor_msgs/CompressedImage, jpeg/png)",
    },
    ParamSpec {
        name: "joint_states_topic",
        default: ParamDefault::Str("joint_states"),
        doc: "string: sensor_msgs/JointState topic",
    },
    ParamSpec {
        name: "joint_names",
        default: ParamDefault::Unset,
        doc: "string array: the robot's name for each of the bundle's state joints, in the bundle's order",
    },
    ParamSpec {
        name: "trajectory_topic",
        default: ParamDefault::Str("joint_trajectory"),
        doc: "string: trajectory_msgs/JointTrajectory command topic",
    },
    ParamSpec {
        name: "instruction_topic",
        default: ParamDefault::Str("instruction"),
        doc: "string: std_msgs/String instruction topic",
    },
    ParamSpec {
        name: "instruction",
        default: ParamDefault::Str(""),
        doc: "string: instruction used until one arrives on the topic",
    },
    ParamSpec {
        name: "enabled_at_start",
        default: ParamDefault::Bool(false),
        doc: "bool: publish commands without a call to ~/enable",
    },
    ParamSpec {
        name: "sync_slop_s",
        default: ParamDefault::Double(0.05),
        doc: "double > 0: largest gap between a frame's stamp and the joint state used for it",
    },
    ParamSpec {
        name: "max_image_age_s",
        default: ParamDefault::Double(0.5),
        doc: "double > 0: a camera whose newest frame is older is stale",
    },
    ParamSpec {
        name: "max_joint_state_age_s",
        default: ParamDefault::Double(0.25),
        doc: "double > 0: joint states older than this are stale",
    },
    ParamSpec {
        name: "replan_threshold_s",
        default: ParamDefault::Double(-1.0),
        doc: "double: start the next chunk when less than this is left; < 0 derives it from latency",
    },
    ParamSpec {
        name: "replan_margin_s",
        default: ParamDefault::Double(0.4),
        doc: "double >= 0: added to the measured latency when the threshold is derived: the overlap a new chunk lands in",
    },
    ParamSpec {
        name: "control_period_s",
        default: ParamDefault::Double(0.005),
        doc: "double > 0: period of the control timer (staleness, inference starts, streamed setpoints)",
    },
    ParamSpec {
        name: "max_stamp_lead_s",
        default: ParamDefault::Double(0.5),
        doc: "double > 0: a joint state or frame stamped further than this ahead of the node's clock is bad input",
    },
    ParamSpec {
        name: "max_joint_state_rate_hz",
        default: ParamDefault::Double(1000.0),
        doc: "double > 0: highest joint-state rate expected; the joint-state history covers max_image_age_s + sync_slop_s at this rate",
    },
    ParamSpec {
        name: "max_image_pixels",
        default: ParamDefault::Integer(16_777_216),
        doc: "integer >= 1: a raw or compressed image with more pixels is refused (compressed: from its header, before decoding)",
    },
    ParamSpec {
        name: "max_compressed_bytes",
        default: ParamDefault::Integer(16_000_000),
        doc: "integer >= 1: a CompressedImage with more data is refused",
    },
    ParamSpec {
        name: "max_instruction_bytes",
        default: ParamDefault::Integer(1024),
        doc: "integer >= 1: a longer instruction is refused",
    },
    ParamSpec {
        name: "record_path",
        default: ParamDefault::Str(""),
        doc: "string: MCAP file to record inputs, outputs and decisions into (empty: no recording); `wam_policy_node replay <file>` replays it",
    },
    ParamSpec {
        name: "status_period_s",
        default: ParamDefault::Double(0.1),
        doc: "double > 0: period of ~/status",
    },
    ParamSpec {
        name: "sampler_steps",
        default: ParamDefault::Integer(0),
        doc: "integer >= 0: denoising steps (0: the bundle's default)",
    },
    ParamSpec {
        name: "seed",
        default: ParamDefault::Integer(0),
        doc: "integer >= 0: seed of the sampler's noise",
    },
    ParamSpec {
        name: "publish_predicted_frames",
        default: ParamDefault::Bool(true),
        doc: "bool: publish predicted frames and the preview image",
    },
    ParamSpec {
        name: "video_decode",
        default: ParamDefault::Str("always"),
        doc: "string: when the decode stage runs: `always` (every chunk) or `on_demand` (only when ~/predicted_frames or ~/preview has a subscriber, a recording runs, or every video_decode_every-th chunk); the monitor needs no decoding",
    },
    ParamSpec {
        name: "video_decode_every",
        default: ParamDefault::Integer(0),
        doc: "integer >= 0: with video_decode on_demand, also decode every N-th chunk (0: only on demand)",
    },
    ParamSpec {
        name: "joint_limits.lower",
        default: ParamDefault::Unset,
        doc: "double array: lower position limit per joint of joint_names",
    },
    ParamSpec {
        name: "joint_limits.upper",
        default: ParamDefault::Unset,
        doc: "double array: upper position limit per joint",
    },
    ParamSpec {
        name: "joint_limits.max_velocity",
        default: ParamDefault::Unset,
        doc: "double array: velocity limit per joint (> 0)",
    },
    ParamSpec {
        name: "joint_limits.max_acceleration",
        default: ParamDefault::Unset,
        doc: "double array: acceleration limit per joint (> 0); empty or unset: not limited",
    },
    ParamSpec {
        name: "joint_limits.max_jump",
        default: ParamDefault::Double(0.5),
        doc: "double > 0: largest distance from the measured state to a chunk's first point",
    },
    ParamSpec {
        name: "robot_description",
        default: ParamDefault::Str(""),
        doc: "string: URDF; position and velocity limits of joint_names are read from it when joint_limits.lower/upper/max_velocity are not set",
    },
    ParamSpec {
        name: "robot_description_topic",
        default: ParamDefault::Str("robot_description"),
        doc: "string: when robot_description is empty, the URDF is taken from this topic (std_msgs/String, transient local, as robot_state_publisher publishes it); \"\" = off",
    },
    ParamSpec {
        name: "planned_path_tip_link",
        default: ParamDefault::Str(""),
        doc: "string: link whose path ~/planned_path draws (forward kinematics of the robot description); \"\" = the end of the action joints' chain",
    },
    ParamSpec {
        name: "robot_description_timeout_s",
        default: ParamDefault::Double(5.0),
        doc: "double > 0: how long start-up waits for robot_description_topic when the limits need it",
    },
    ParamSpec {
        name: "boundary_mode",
        default: ParamDefault::Str("prefix"),
        doc: "string: how a new chunk joins the active one: `replace`, `crossfade` or `prefix`",
    },
    ParamSpec {
        name: "crossfade_steps",
        default: ParamDefault::Integer(4),
        doc: "integer >= 1: steps over which `crossfade` blends old into new (`prefix`: softly guides)",
    },
    ParamSpec {
        name: "ramp_in_s",
        default: ParamDefault::Double(0.5),
        doc: "double >= 0: after ~/enable, move from the measured state to the policy's commands over this long",
    },
    ParamSpec {
        name: "min_lead_s",
        default: ParamDefault::Double(0.02),
        doc: "double >= 0: a chunk point due sooner than this after publication is dropped",
    },
    ParamSpec {
        name: "plan_anchor",
        default: ParamDefault::Str("auto"),
        doc: "string: where a new chunk's plan starts: `measured` (controllers that interpolate from the robot's state, as joint_trajectory_controller does by default), `setpoint` (controllers that continue from their last setpoint), or `auto` (chunk mode: measured; stream mode: setpoint)",
    },
    ParamSpec {
        name: "output_mode",
        default: ParamDefault::Str("chunk"),
        doc: "string: `chunk` (JointTrajectory per chunk) or `stream` (setpoints at stream_rate_hz)",
    },
    ParamSpec {
        name: "stream_rate_hz",
        default: ParamDefault::Double(100.0),
        doc: "double > 0: rate of streamed setpoints",
    },
    ParamSpec {
        name: "stream_topic",
        default: ParamDefault::Str("forward_position_controller/commands"),
        doc: "string: topic of streamed setpoints",
    },
    ParamSpec {
        name: "stream_message",
        default: ParamDefault::Str("float64_multi_array"),
        doc: "string: `float64_multi_array` (forward_command_controller) or `joint_state`",
    },
    ParamSpec {
        name: "dry_run",
        default: ParamDefault::Bool(false),
        doc: "bool: publish commands on ~/dry_run/* debug topics only, never on the command topic",
    },
    ParamSpec {
        name: "debug_extra_latency_s",
        default: ParamDefault::Double(0.0),
        doc: "double >= 0: added to every inference, to test behaviour under a slower model",
    },
    ParamSpec {
        name: "backend",
        default: ParamDefault::Str("local"),
        doc: "string: `local` (the stages run in this process with ONNX Runtime) or `remote` (on a Triton Inference Server at remote_url, one model per stage as `wam_policy_node triton-repo` writes them; the sampler, execution and safety stay in the node)",
    },
    ParamSpec {
        name: "remote_url",
        default: ParamDefault::Str("http://127.0.0.1:8000"),
        doc: "string: base URL of the Triton server's HTTP endpoint (backend remote)",
    },
    ParamSpec {
        name: "remote_model_prefix",
        default: ParamDefault::Str(""),
        doc: "string: the server's models are named <prefix>encode, <prefix>context, <prefix>denoise, <prefix>decode (backend remote)",
    },
    ParamSpec {
        name: "remote_timeout_s",
        default: ParamDefault::Double(2.0),
        doc: "double > 0: limit of one request to the server, connection included; a request over it fails the chunk, which holds (backend remote)",
    },
    ParamSpec {
        name: "remote_ready_timeout_s",
        default: ParamDefault::Double(30.0),
        doc: "double > 0: how long start-up waits for the server and every stage's model to be ready before it fails naming the server (backend remote)",
    },
    ParamSpec {
        name: "providers",
        default: ParamDefault::Unset,
        doc: "string array: execution providers in order of preference, of tensorrt, cuda, cpu",
    },
    ParamSpec {
        name: "require_accelerator",
        default: ParamDefault::Bool(false),
        doc: "bool: refuse to start when only the CPU provider can be used",
    },
    ParamSpec {
        name: "device_id",
        default: ParamDefault::Integer(0),
        doc: "integer >= 0: GPU index for cuda/tensorrt",
    },
    ParamSpec {
        name: "fp16",
        default: ParamDefault::Bool(false),
        doc: "bool: let TensorRT build fp16 kernels (faster, about half the memory; outputs differ from fp32 by fp16 rounding, and engines are rebuilt when it changes)",
    },
    ParamSpec {
        name: "cuda_graph",
        default: ParamDefault::Bool(false),
        doc: "bool: capture the context, denoise and decode stages in CUDA graphs (cuda or tensorrt provider) and replay them, their tensors bound once at fixed GPU addresses: less CPU launch overhead per run, paid for with a copy into those tensors when an input changes and one out after each run; a stage that cannot be captured runs without, and the log says why; ignored on the cpu provider",
    },
    ParamSpec {
        name: "trt_cache_dir",
        default: ParamDefault::Str(""),
        doc: "string: folder for TensorRT engine and timing caches, kept per model hash and GPU under <dir>/<hash>/<gpu> (a first engine build takes seconds to minutes; a cached one loads in about a second); empty: <tmp>/wam_policy_trt_cache",
    },
    ParamSpec {
        name: "cuda_lib_dir",
        default: ParamDefault::Str(""),
        doc: "string: folder of the CUDA 13 libraries (libcudart.so.13, libcublas.so.13, ...) preloaded for the cuda and tensorrt providers; empty: nvidia/cu13/lib beside the onnxruntime-gpu wheel's libonnxruntime.so if present, else the library path",
    },
    ParamSpec {
        name: "cudnn_lib_dir",
        default: ParamDefault::Str(""),
        doc: "string: folder of the cuDNN 9 libraries (libcudnn.so.9, ...); empty: nvidia/cudnn/lib beside the onnxruntime-gpu wheel if present, else the library path",
    },
    ParamSpec {
        name: "trt_lib_dir",
        default: ParamDefault::Str(""),
        doc: "string: folder of the TensorRT 10 libraries (libnvinfer.so.10, libnvinfer_plugin.so.10, libnvonnxparser.so.10), which are not on PyPI (NVIDIA's apt repository, its tar, or an NGC container); empty: the library path",
    },
    ParamSpec {
        name: "intra_op_threads",
        default: ParamDefault::Integer(0),
        doc: "integer >= 0: ONNX Runtime intra-op threads (0: its default)",
    },
    ParamSpec {
        name: "warmup_runs",
        default: ParamDefault::Integer(2),
        doc: "integer >= 0: inferences at start-up that are not counted in latency",
    },
    ParamSpec {
        name: "use_sim_time",
        default: ParamDefault::Bool(false),
        doc: "bool: the node's clock follows /clock (rosgraph_msgs/Clock): stamps, ages, latencies and holds are in simulated time",
    },
    ParamSpec {
        name: "velocity_scaling",
        default: ParamDefault::Double(1.0),
        doc: "double in (0, 1]: new chunks are executed this much slower (their steps stretched by 1/velocity_scaling): slow the arm here, not with a controller's speed scaling, which the node cannot see (docs/robots.md)",
    },
    ParamSpec {
        name: "command_groups",
        default: ParamDefault::Unset,
        doc: "string list: names of command groups, each described by command_group.<name>.joints/output_mode/topic/stream_message; unset or []: one group of every action joint on trajectory_topic or stream_topic",
    },
    ParamSpec {
        name: "managed",
        default: ParamDefault::Bool(false),
        doc: "bool: a lifecycle node (~/change_state ...): the bundle loads at configure, commands flow while active",
    },
    ParamSpec {
        name: "gated",
        default: ParamDefault::Bool(false),
        doc: "bool: commands flow only while a ~/run goal is active; ~/enable true is refused",
    },
    ParamSpec {
        name: "run_preemption",
        default: ParamDefault::Str("preempt"),
        doc: "string: a ~/run goal arriving while one runs: `preempt` (the old one ends PREEMPTED) or `reject`",
    },
    ParamSpec {
        name: "run_watchdog_s",
        default: ParamDefault::Double(1.0),
        doc: "double >= 0: a ~/run goal ends CLIENT_LOST (hold) when no action client of ~/run is in the graph for this long; 0 = off",
    },
    ParamSpec {
        name: "run_stale_tolerance_s",
        default: ParamDefault::Double(2.0),
        doc: "double >= 0: a ~/run goal ends STALE_INPUTS when the inputs stay stale this long",
    },
    ParamSpec {
        name: "monitor",
        default: ParamDefault::Bool(false),
        doc: "bool: compare every predicted frame with the real one at its time (~/monitor; README \"Monitor\")",
    },
    ParamSpec {
        name: "monitor_pair_tolerance_s",
        default: ParamDefault::Double(0.05),
        doc: "double > 0: a real frame pairs with a predicted one when their times differ by at most this",
    },
    ParamSpec {
        name: "monitor_warn_score",
        default: ParamDefault::Double(3.0),
        doc: "double: status and /diagnostics warn above this score (a z-value with the bundle's calibration, else the raw latent error)",
    },
    ParamSpec {
        name: "monitor_hold_chunks",
        default: ParamDefault::Integer(0),
        doc: "integer >= 0: hold (and close the gate) when the score stays above monitor_warn_score for this many chunks in a row; 0 = never",
    },
    ParamSpec {
        name: "monitor_done_chunks",
        default: ParamDefault::Integer(0),
        doc: "integer >= 0: estimate done when the predicted motion and change stay below their thresholds for this many chunks in a row (a ~/run goal then ends DONE); 0 = no done estimate",
    },
    ParamSpec {
        name: "monitor_done_motion",
        default: ParamDefault::Double(0.02),
        doc: "double >= 0: done threshold on the largest joint displacement over a predicted chunk",
    },
    ParamSpec {
        name: "monitor_done_change",
        default: ParamDefault::Double(0.05),
        doc: "double >= 0: done threshold on the predicted video's latent change from the newest observation",
    },
];

/// Parameters that may change while the node runs (`ros2 param set`): checked like at start-up, in
/// effect from the next chunk. Every other one is read-only once the node is configured.
pub const RUNTIME_PARAMETERS: &[&str] = &[
    "instruction",
    "boundary_mode",
    "crossfade_steps",
    "replan_margin_s",
    "replan_threshold_s",
    "min_lead_s",
    "ramp_in_s",
    "velocity_scaling",
    "dry_run",
    "status_period_s",
    "video_decode",
    "video_decode_every",
    "run_preemption",
    "run_watchdog_s",
    "run_stale_tolerance_s",
    "monitor",
    "monitor_pair_tolerance_s",
    "monitor_warn_score",
    "monitor_hold_chunks",
    "monitor_done_chunks",
    "monitor_done_motion",
    "monitor_done_change",
];

/// Fields of one `command_group.<name>.*`.
pub const COMMAND_GROUP_FIELDS: &[&str] = &["joints", "output_mode", "topic", "stream_message"];

/// Whether `name` is a parameter of this node: one of the table, or a field of a command group.
pub fn is_parameter(name: &str) -> bool {
    PARAMETERS.iter().any(|p| p.name == name)
        || name.starts_with("qos_overrides.")
        || name
            .strip_prefix("command_group.")
            .and_then(|rest| rest.rsplit_once('.'))
            .is_some_and(|(group, field)| {
                !group.is_empty() && COMMAND_GROUP_FIELDS.contains(&field)
            })
}

/// The doc of a parameter (command group fields included).
pub fn parameter_doc(name: &str) -> Option<&'static str> {
    if let Some(p) = PARAMETERS.iter().find(|p| p.name == name) {
        return Some(p.doc);
    }
    let field = name.strip_prefix("command_group.")?.rsplit_once('.')?.1;
    Some(match field {
        "joints" => "string list: the group's joints (robot names, from joint_names)",
        "output_mode" => {
            "string: `chunk` (JointTrajectory per chunk) or `stream` (setpoints at stream_rate_hz)"
        }
        "topic" => "string: the group's command topic",
        "stream_message" => "string: stream mode's message: `float64_multi_array` or `joint_state`",
        _ => return None,
    })
}

/// The parameters after `changes` (`ros2 param set`), or why not. While the node is configured
/// (`configured`) only [`RUNTIME_PARAMETERS`] may change, and the result must pass every start-up
/// check; the returned config is then the one to run with. An unconfigured (managed) node takes any
/// parameter of the node: configure checks them.
pub fn updated_params(
    current: &Params,
    changes: &[(String, ParamValue)],
    configured: bool,
) -> Result<(Params, Option<NodeConfig>), ParamError> {
    let mut next = current.clone();
    for (name, value) in changes {
        if !is_parameter(name) {
            return Err(perr(name, "is not a parameter of this node"));
        }
        if configured && !RUNTIME_PARAMETERS.contains(&name.as_str()) {
            return Err(perr(
                name,
                format!(
                    "is read-only while the node is configured (run-time parameters: {})",
                    RUNTIME_PARAMETERS.join(", ")
                ),
            ));
        }
        next.insert(name.clone(), value.clone());
    }
    if !configured {
        return Ok((next, None));
    }
    let cfg = NodeConfig::from_params(&next)?;
    Ok((next, Some(cfg)))
}

/// Where one group of joints is commanded.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandGroup {
    pub name: String,
    /// Robot joint names, a subset of `joint_names`.
    pub joints: Vec<String>,
    pub output_mode: OutputMode,
    pub topic: String,
    pub stream_message: StreamMessage,
}

/// When the decode stage (predicted frames) runs: decoding is pure cost when nobody looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoDecode {
    Always,
    /// When someone subscribes to the frames, a recording runs, or every `every`-th chunk (0: never
    /// for that reason).
    OnDemand {
        every: u64,
    },
}

impl VideoDecode {
    /// Whether chunk number `chunk` (counted from 0) is decoded, given whether its frames are wanted.
    pub fn decodes(self, chunk: u64, wanted: bool) -> bool {
        match self {
            VideoDecode::Always => true,
            VideoDecode::OnDemand { every } => wanted || (every > 0 && chunk.is_multiple_of(every)),
        }
    }
}

/// The `~/run` action's policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunParams {
    pub preempt: bool,
    pub watchdog_s: f64,
    pub stale_tolerance_s: f64,
}

pub type Params = BTreeMap<String, ParamValue>;

/// The parameter table as markdown (docs/parameters.md; `wam_policy_node params`).
pub fn parameters_markdown() -> String {
    let mut out = String::from(
        "# Parameters of the wam_policy node\n\n\
         Generated from the parameter table in `src/config.rs` (`wam_policy_node params`); a unit test \
         keeps this file and `config/robot.yaml` in line with it. An unknown name or a bad value stops \
         start-up with a message naming the parameter. Those marked *run time* can be changed with \
         `ros2 param set` while the node runs (checked the same way, in effect from the next chunk); \
         the others are read-only once the node is configured.\n\n\
         | name | type and check | default | meaning |\n|---|---|---|---|\n",
    );
    for p in PARAMETERS {
        let runtime = if RUNTIME_PARAMETERS.contains(&p.name) {
            " *run time*"
        } else {
            ""
        };
        out.push_str(&format!(
            "| `{}`{} | {} | `{}` | {} |\n",
            p.name,
            runtime,
            p.kind(),
            p.default_text(),
            p.meaning().replace('|', "\\|")
        ));
    }
    out.push_str(
        "\nEach name in `command_groups` is described by `command_group.<name>.joints` (string list, \
         required), `.output_mode` (`chunk` or `stream`, default `chunk`), `.topic` (required) and \
         `.stream_message` (`float64_multi_array` or `joint_state`, stream mode only).\n",
    );
    out
}

/// The parameters as YAML, each value tagged with its type (a recording's metadata).
pub fn params_to_yaml(params: &Params) -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(params)
}

pub fn params_from_yaml(text: &str) -> Result<Params, serde_yaml::Error> {
    serde_yaml::from_str(text)
}

/// A `name=value` override (`replay --param`): the value as YAML (a bool, an integer, a double, a string
/// or a list of one kind).
pub fn parse_override(arg: &str) -> Result<(String, ParamValue), ParamError> {
    let Some((name, text)) = arg.split_once('=') else {
        return Err(perr(arg, "expected name=value"));
    };
    use serde_yaml::Value as Y;
    let scalar = |v: &Y| -> Option<ParamValue> {
        match v {
            Y::Bool(b) => Some(ParamValue::Bool(*b)),
            Y::Number(n) if n.is_i64() => n.as_i64().map(ParamValue::Integer),
            Y::Number(n) => n.as_f64().map(ParamValue::Double),
            Y::String(s) => Some(ParamValue::String(s.clone())),
            _ => None,
        }
    };
    let value: Y = serde_yaml::from_str(text).map_err(|e| perr(name, e.to_string()))?;
    let parsed = match &value {
        Y::Sequence(items) => {
            let items: Vec<ParamValue> = items.iter().filter_map(scalar).collect();
            match items.first() {
                Some(ParamValue::Double(_)) | Some(ParamValue::Integer(_)) => {
                    ParamValue::DoubleArray(
                        items
                            .iter()
                            .filter_map(|v| match v {
                                ParamValue::Double(d) => Some(*d),
                                ParamValue::Integer(i) => Some(*i as f64),
                                _ => None,
                            })
                            .collect(),
                    )
                }
                Some(ParamValue::Bool(_)) => ParamValue::BoolArray(
                    items
                        .iter()
                        .filter_map(|v| match v {
                            ParamValue::Bool(b) => Some(*b),
                            _ => None,
                        })
                        .collect(),
                ),
                _ => ParamValue::StringArray(
                    items
                        .iter()
                        .filter_map(|v| match v {
                            ParamValue::String(s) => Some(s.clone()),
                            _ => None,
                        })
                        .collect(),
                ),
            }
        }
        other => scalar(other).ok_or_else(|| perr(name, "expected a scalar or a list"))?,
    };
    Ok((name.to_string(), parsed))
}

struct Reader<'a> {
    params: &'a Params,
}

/// The table's default of `name`.
fn default_of(name: &str) -> Result<ParamDefault, ParamError> {
    PARAMETERS
        .iter()
        .find(|p| p.name == name)
        .map(|p| p.default)
        .ok_or_else(|| perr(name, "has no entry in the parameter table (a bug)"))
}

fn wrong_default(name: &str) -> ParamError {
    perr(
        name,
        "the parameter table's default has another type (a bug)",
    )
}

impl Reader<'_> {
    fn get(&self, name: &str) -> Option<&ParamValue> {
        self.params.get(name)
    }
    fn string(&self, name: &str) -> Result<String, ParamError> {
        let ParamDefault::Str(default) = default_of(name)? else {
            return Err(wrong_default(name));
        };
        match self.get(name) {
            None => Ok(default.to_string()),
            Some(ParamValue::String(s)) => Ok(s.clone()),
            Some(v) => Err(perr(
                name,
                format!("expected a string, got {}", v.type_name()),
            )),
        }
    }
    fn boolean(&self, name: &str) -> Result<bool, ParamError> {
        let ParamDefault::Bool(default) = default_of(name)? else {
            return Err(wrong_default(name));
        };
        match self.get(name) {
            None => Ok(default),
            Some(ParamValue::Bool(b)) => Ok(*b),
            Some(v) => Err(perr(
                name,
                format!("expected a bool, got {}", v.type_name()),
            )),
        }
    }
    fn double(&self, name: &str) -> Result<f64, ParamError> {
        let ParamDefault::Double(default) = default_of(name)? else {
            return Err(wrong_default(name));
        };
        let v = match self.get(name) {
            None => default,
            Some(ParamValue::Double(d)) => *d,
            Some(ParamValue::Integer(i)) => *i as f64,
            Some(v) => {
                return Err(perr(
                    name,
                    format!("expected a double, got {}", v.type_name()),
                ))
            }
        };
        if v.is_finite() {
            Ok(v)
        } else {
            Err(perr(name, "expected a finite number"))
        }
    }
    fn positive(&self, name: &str) -> Result<f64, ParamError> {
        let v = self.double(name)?;
        if v > 0.0 {
            Ok(v)
        } else {
            Err(perr(name, format!("expected a number > 0, got {v}")))
        }
    }
    fn count(&self, name: &str) -> Result<u64, ParamError> {
        let ParamDefault::Integer(default) = default_of(name)? else {
            return Err(wrong_default(name));
        };
        match self.get(name) {
            None => Ok(default),
            Some(ParamValue::Integer(i)) if *i >= 0 => Ok(*i as u64),
            Some(ParamValue::Integer(i)) => {
                Err(perr(name, format!("expected an integer >= 0, got {i}")))
            }
            Some(v) => Err(perr(
                name,
                format!("expected an integer, got {}", v.type_name()),
            )),
        }
    }
    fn strings(&self, name: &str) -> Result<Option<Vec<String>>, ParamError> {
        match self.get(name) {
            None => Ok(None),
            Some(ParamValue::StringArray(v)) => Ok(Some(v.clone())),
            Some(v) => Err(perr(
                name,
                format!("expected a string array, got {}", v.type_name()),
            )),
        }
    }
    fn doubles(&self, name: &str) -> Result<Option<Vec<f64>>, ParamError> {
        match self.get(name) {
            None => Ok(None),
            Some(ParamValue::DoubleArray(v)) => {
                if v.iter().all(|x| x.is_finite()) {
                    Ok(Some(v.clone()))
                } else {
                    Err(perr(name, "expected finite numbers"))
                }
            }
            Some(ParamValue::IntegerArray(v)) => Ok(Some(v.iter().map(|x| *x as f64).collect())),
            Some(v) => Err(perr(
                name,
                format!("expected a double array, got {}", v.type_name()),
            )),
        }
    }
}

impl NodeConfig {
    /// Parses and validates the parameters. Names not in [`PARAMETERS`] are refused: a typo in a params
    /// file must not silently fall back to a default.
    pub fn from_params(params: &Params) -> Result<Self, ParamError> {
        for name in params.keys() {
            if !is_parameter(name) {
                let known: Vec<&str> = PARAMETERS.iter().map(|p| p.name).collect();
                return Err(perr(
                    name,
                    format!(
                        "is not a parameter of this node (known: {})",
                        known.join(", ")
                    ),
                ));
            }
        }
        let r = Reader { params };
        let bundle_path = r.string("bundle_path")?;
        if bundle_path.is_empty() {
            return Err(perr(
                "bundle_path",
                "is required: the folder of a model bundle holding wam.yaml",
            ));
        }
        let camera_names = r.strings("camera_names")?.unwrap_or_default();
        let camera_topics = match r.strings("camera_topics")? {
            Some(t) => {
                if t.len() != camera_names.len() {
                    return Err(perr(
                        "camera_topics",
                        format!(
                            "has {} entries but camera_names has {}; give one topic per camera",
                            t.len(),
                            camera_names.len()
                        ),
                    ));
                }
                if let Some(i) = t.iter().position(|s| s.is_empty()) {
                    return Err(perr("camera_topics", format!("entry {i} is empty")));
                }
                t
            }
            None => camera_names
                .iter()
                .map(|n| format!("cameras/{n}/image_raw"))
                .collect(),
        };
        let camera_transport = match r.string("camera_transport")?.as_str() {
            "raw" => CameraTransport::Raw,
            "compressed" => CameraTransport::Compressed,
            other => {
                return Err(perr(
                    "camera_transport",
                    format!("expected `raw` or `compressed`, got `{other}`"),
                ))
            }
        };
        let providers = match r.strings("providers")? {
            None => RuntimeConfig::default().providers,
            Some(list) => {
                if list.is_empty() {
                    return Err(perr(
                        "providers",
                        "expected at least one of tensorrt, cuda, cpu",
                    ));
                }
                let mut out = Vec::new();
                for p in &list {
                    let prov = Provider::parse(p).ok_or_else(|| {
                        perr(
                            "providers",
                            format!("`{p}` is not a provider; expected tensorrt, cuda or cpu"),
                        )
                    })?;
                    if out.contains(&prov) {
                        return Err(perr("providers", format!("`{p}` appears twice")));
                    }
                    out.push(prov);
                }
                out
            }
        };
        let device_id = r.count("device_id")?;
        let backend = match r.string("backend")?.as_str() {
            "local" => Backend::Local,
            "remote" => Backend::Remote,
            other => {
                return Err(perr(
                    "backend",
                    format!("expected `local` or `remote`, got `{other}`"),
                ))
            }
        };
        let remote_url = r.string("remote_url")?;
        if backend == Backend::Remote && !remote_url.starts_with("http://") {
            return Err(perr(
                "remote_url",
                format!("expected an http:// URL of the Triton server, got `{remote_url}`"),
            ));
        }
        let runtime = RuntimeConfig {
            backend,
            remote: RemoteConfig {
                url: remote_url,
                model_prefix: r.string("remote_model_prefix")?,
                timeout_s: r.positive("remote_timeout_s")?,
                ready_timeout_s: r.positive("remote_ready_timeout_s")?,
            },
            providers,
            require_accelerator: r.boolean("require_accelerator")?,
            device_id: i32::try_from(device_id).map_err(|_| perr("device_id", "is too large"))?,
            fp16: r.boolean("fp16")?,
            cuda_graph: r.boolean("cuda_graph")?,
            trt_cache_dir: match r.string("trt_cache_dir")? {
                s if s.is_empty() => RuntimeConfig::default().trt_cache_dir,
                s => PathBuf::from(s),
            },
            cuda_lib_dir: PathBuf::from(r.string("cuda_lib_dir")?),
            cudnn_lib_dir: PathBuf::from(r.string("cudnn_lib_dir")?),
            trt_lib_dir: PathBuf::from(r.string("trt_lib_dir")?),
            intra_op_threads: r.count("intra_op_threads")? as usize,
            warmup_runs: r.count("warmup_runs")? as usize,
        };
        let joint_names = r.strings("joint_names")?.unwrap_or_default();
        let limits = read_limits(&r, &joint_names)?;
        let execution = read_execution(&r)?;
        if limits.is_none() && !execution.dry_run {
            return Err(perr(
                "joint_limits",
                "position and velocity limits are required to command a robot: set joint_names with \
                 joint_limits.lower, joint_limits.upper and joint_limits.max_velocity (or \
                 robot_description), or set dry_run: true to publish on debug topics only",
            ));
        }
        let cfg = NodeConfig {
            bundle_path: PathBuf::from(bundle_path),
            camera_names,
            camera_topics,
            camera_transport,
            joint_states_topic: non_empty(&r, "joint_states_topic")?,
            joint_names,
            trajectory_topic: non_empty(&r, "trajectory_topic")?,
            instruction_topic: non_empty(&r, "instruction_topic")?,
            instruction: r.string("instruction")?,
            enabled_at_start: r.boolean("enabled_at_start")?,
            sync_slop_s: r.positive("sync_slop_s")?,
            max_image_age_s: r.positive("max_image_age_s")?,
            max_joint_state_age_s: r.positive("max_joint_state_age_s")?,
            control_period_s: r.positive("control_period_s")?,
            max_stamp_lead_s: r.positive("max_stamp_lead_s")?,
            max_joint_state_rate_hz: r.positive("max_joint_state_rate_hz")?,
            use_sim_time: r.boolean("use_sim_time")?,
            record_path: r.string("record_path")?,
            image_bounds: crate::preprocess::ImageBounds {
                max_pixels: at_least_one(&r, "max_image_pixels")?,
                max_compressed_bytes: usize::try_from(at_least_one(&r, "max_compressed_bytes")?)
                    .map_err(|_| perr("max_compressed_bytes", "is too large"))?,
            },
            max_instruction_bytes: usize::try_from(at_least_one(&r, "max_instruction_bytes")?)
                .map_err(|_| perr("max_instruction_bytes", "is too large"))?,
            status_period_s: r.positive("status_period_s")?,
            sampler_steps: r.count("sampler_steps")? as usize,
            seed: r.count("seed")?,
            publish_predicted_frames: r.boolean("publish_predicted_frames")?,
            // `video_decode_every` is checked whatever the mode: a bad value is refused, not ignored.
            video_decode: match (
                r.string("video_decode")?.as_str(),
                r.count("video_decode_every")?,
            ) {
                ("always", _) => VideoDecode::Always,
                ("on_demand", every) => VideoDecode::OnDemand { every },
                (other, _) => {
                    return Err(perr(
                        "video_decode",
                        format!("expected `always` or `on_demand`, got `{other}`"),
                    ))
                }
            },
            command_groups: {
                let groups = read_command_groups(&r, &execution, params)?;
                if groups.len() > 1 && !r.string("record_path")?.is_empty() {
                    return Err(perr(
                        "record_path",
                        "recording supports one command group (the default); unset command_groups or record_path",
                    ));
                }
                groups
            },
            robot_description: r.string("robot_description")?,
            robot_description_topic: r.string("robot_description_topic")?,
            planned_path_tip_link: r.string("planned_path_tip_link")?,
            robot_description_timeout_s: r.positive("robot_description_timeout_s")?,
            managed: r.boolean("managed")?,
            gated: r.boolean("gated")?,
            run: RunParams {
                preempt: match r.string("run_preemption")?.as_str() {
                    "preempt" => true,
                    "reject" => false,
                    other => {
                        return Err(perr(
                            "run_preemption",
                            format!("expected `preempt` or `reject`, got `{other}`"),
                        ))
                    }
                },
                watchdog_s: non_negative(&r, "run_watchdog_s")?,
                stale_tolerance_s: non_negative(&r, "run_stale_tolerance_s")?,
            },
            monitor: crate::monitor::MonitorParams {
                enabled: r.boolean("monitor")?,
                pair_tolerance_s: r.positive("monitor_pair_tolerance_s")?,
                warn_score: r.double("monitor_warn_score")?,
                hold_chunks: u32::try_from(r.count("monitor_hold_chunks")?)
                    .map_err(|_| perr("monitor_hold_chunks", "is too large"))?,
                done_chunks: u32::try_from(r.count("monitor_done_chunks")?)
                    .map_err(|_| perr("monitor_done_chunks", "is too large"))?,
                done_motion: non_negative(&r, "monitor_done_motion")?,
                done_change: non_negative(&r, "monitor_done_change")?,
            },
            limits,
            runtime,
            execution,
        };
        Ok(cfg)
    }
}

fn non_empty(r: &Reader<'_>, name: &str) -> Result<String, ParamError> {
    let s = r.string(name)?;
    if s.is_empty() {
        Err(perr(name, "must not be empty"))
    } else {
        Ok(s)
    }
}

fn at_least_one(r: &Reader<'_>, name: &str) -> Result<u64, ParamError> {
    match r.count(name)? {
        0 => Err(perr(name, "expected an integer >= 1, got 0")),
        n => Ok(n),
    }
}

fn non_negative(r: &Reader<'_>, name: &str) -> Result<f64, ParamError> {
    let v = r.double(name)?;
    if v < 0.0 {
        return Err(perr(name, format!("expected a number >= 0, got {v}")));
    }
    Ok(v)
}

fn read_execution(r: &Reader<'_>) -> Result<ExecutionParams, ParamError> {
    let boundary = r.string("boundary_mode")?;
    let boundary_mode = BoundaryMode::parse(&boundary).ok_or_else(|| {
        perr(
            "boundary_mode",
            format!("expected `replace`, `crossfade` or `prefix`, got `{boundary}`"),
        )
    })?;
    let crossfade_steps = r.count("crossfade_steps")? as usize;
    if crossfade_steps == 0 {
        return Err(perr("crossfade_steps", "expected an integer >= 1, got 0"));
    }
    let output_mode = output_mode_named("output_mode", &r.string("output_mode")?)?;
    let stream_message = stream_message_named("stream_message", &r.string("stream_message")?)?;
    Ok(ExecutionParams {
        replan_threshold_s: r.double("replan_threshold_s")?,
        replan_margin_s: non_negative(r, "replan_margin_s")?,
        boundary_mode,
        crossfade_steps,
        ramp_in_s: non_negative(r, "ramp_in_s")?,
        min_lead_s: non_negative(r, "min_lead_s")?,
        plan_anchor: match r.string("plan_anchor")?.as_str() {
            "auto" => None,
            "measured" => Some(Anchor::Measured),
            "setpoint" => Some(Anchor::Setpoint),
            other => {
                return Err(perr(
                    "plan_anchor",
                    format!("expected `measured`, `setpoint` or `auto`, got `{other}`"),
                ))
            }
        },
        output_mode,
        stream_rate_hz: r.positive("stream_rate_hz")?,
        stream_topic: non_empty(r, "stream_topic")?,
        stream_message,
        dry_run: r.boolean("dry_run")?,
        debug_extra_latency_s: non_negative(r, "debug_extra_latency_s")?,
        velocity_scaling: {
            let v = r.positive("velocity_scaling")?;
            if v > 1.0 {
                return Err(perr(
                    "velocity_scaling",
                    format!("expected a number in (0, 1], got {v}"),
                ));
            }
            v
        },
    })
}

fn output_mode_named(name: &str, text: &str) -> Result<OutputMode, ParamError> {
    match text {
        "chunk" => Ok(OutputMode::Chunk),
        "stream" => Ok(OutputMode::Stream),
        other => Err(perr(
            name,
            format!("expected `chunk` or `stream`, got `{other}`"),
        )),
    }
}

fn stream_message_named(name: &str, text: &str) -> Result<StreamMessage, ParamError> {
    match text {
        "float64_multi_array" => Ok(StreamMessage::Float64MultiArray),
        "joint_state" => Ok(StreamMessage::JointState),
        other => Err(perr(
            name,
            format!("expected `float64_multi_array` or `joint_state`, got `{other}`"),
        )),
    }
}

/// `command_groups` and their `command_group.<name>.*` fields. Which joints they cover is checked
/// against the bundle's action joints when the node is wired (`Wiring::resolve`).
fn read_command_groups(
    r: &Reader<'_>,
    exec: &ExecutionParams,
    params: &Params,
) -> Result<Vec<CommandGroup>, ParamError> {
    let names = r.strings("command_groups")?.unwrap_or_default();
    let declared = |n: &str| names.iter().any(|g| g == n);
    for key in params.keys() {
        if let Some((group, _)) = key
            .strip_prefix("command_group.")
            .and_then(|rest| rest.rsplit_once('.'))
        {
            if !declared(group) {
                return Err(perr(
                    key,
                    format!("describes group `{group}`, which command_groups does not list"),
                ));
            }
        }
    }
    if names.is_empty() {
        let (topic, message) = (
            match exec.output_mode {
                OutputMode::Chunk => r.string("trajectory_topic")?,
                OutputMode::Stream => exec.stream_topic.clone(),
            },
            exec.stream_message,
        );
        return Ok(vec![CommandGroup {
            name: String::new(),
            joints: Vec::new(),
            output_mode: exec.output_mode,
            topic,
            stream_message: message,
        }]);
    }
    let mut groups = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid || names[..i].contains(name) {
            return Err(perr(
                "command_groups",
                format!("`{name}`: expected distinct names of letters, digits and _"),
            ));
        }
        let key = |field: &str| format!("command_group.{name}.{field}");
        let joints = match params.get(&key("joints")) {
            Some(ParamValue::StringArray(j)) if !j.is_empty() => j.clone(),
            _ => {
                return Err(perr(
                    &key("joints"),
                    "is required: a non-empty list of the group's joints",
                ))
            }
        };
        let text = |field: &str, default: &str| -> Result<String, ParamError> {
            match params.get(&key(field)) {
                None => Ok(default.to_string()),
                Some(ParamValue::String(s)) => Ok(s.clone()),
                Some(v) => Err(perr(
                    &key(field),
                    format!("expected a string, got {}", v.type_name()),
                )),
            }
        };
        let output_mode = output_mode_named(&key("output_mode"), &text("output_mode", "chunk")?)?;
        let topic = text("topic", "")?;
        if topic.is_empty() {
            return Err(perr(
                &key("topic"),
                "is required: the group's command topic",
            ));
        }
        let stream_message = stream_message_named(
            &key("stream_message"),
            &text("stream_message", "float64_multi_array")?,
        )?;
        groups.push(CommandGroup {
            name: name.clone(),
            joints,
            output_mode,
            topic,
            stream_message,
        });
    }
    Ok(groups)
}

fn read_limits(r: &Reader<'_>, joint_names: &[String]) -> Result<Option<JointLimits>, ParamError> {
    let joints = joint_names.len();
    let mut lower = r.doubles("joint_limits.lower")?;
    let mut upper = r.doubles("joint_limits.upper")?;
    let mut max_velocity = r.doubles("joint_limits.max_velocity")?;
    let max_jump = r.positive("joint_limits.max_jump")?;
    let max_acceleration = match r.doubles("joint_limits.max_acceleration")? {
        Some(v) if v.is_empty() => None,
        other => other,
    };
    let urdf = r.string("robot_description")?;
    if lower.is_none() && upper.is_none() && max_velocity.is_none() && !urdf.is_empty() {
        if joints == 0 {
            return Err(perr(
                "joint_names",
                "is required to read limits from robot_description",
            ));
        }
        let from_urdf = crate::urdf::joint_limits(&urdf, joint_names)
            .map_err(|e| perr("robot_description", e.to_string()))?;
        lower = Some(from_urdf.lower);
        upper = Some(from_urdf.upper);
        max_velocity = Some(from_urdf.max_velocity);
    }
    let (lower, upper, max_velocity) =
        match (lower, upper, max_velocity) {
            (None, None, None) => {
                if max_acceleration.is_some() {
                    return Err(perr(
                    "joint_limits.max_acceleration",
                    "needs joint_limits.lower, upper and max_velocity (or robot_description) too",
                ));
                }
                return Ok(None);
            }
            (Some(l), Some(u), Some(v)) => (l, u, v),
            _ => return Err(perr(
                "joint_limits",
                "set joint_limits.lower, joint_limits.upper and joint_limits.max_velocity together",
            )),
        };
    if joints == 0 {
        return Err(perr(
            "joint_names",
            "is required when joint_limits are given: the limits follow its order",
        ));
    }
    for (name, v) in [
        ("joint_limits.lower", &lower),
        ("joint_limits.upper", &upper),
        ("joint_limits.max_velocity", &max_velocity),
    ] {
        if v.len() != joints {
            return Err(perr(
                name,
                format!(
                    "has {} entries, expected one per joint_names entry ({joints})",
                    v.len()
                ),
            ));
        }
    }
    if let Some(i) = (0..joints).find(|&i| lower[i] >= upper[i]) {
        return Err(perr(
            "joint_limits.lower",
            format!(
                "entry {i} ({}) is not below joint_limits.upper ({})",
                lower[i], upper[i]
            ),
        ));
    }
    if let Some(i) = max_velocity.iter().position(|v| *v <= 0.0) {
        return Err(perr(
            "joint_limits.max_velocity",
            format!("entry {i} must be > 0"),
        ));
    }
    if let Some(acc) = &max_acceleration {
        if acc.len() != joints {
            return Err(perr(
                "joint_limits.max_acceleration",
                format!(
                    "has {} entries, expected one per joint_names entry ({joints})",
                    acc.len()
                ),
            ));
        }
        if let Some(i) = acc.iter().position(|v| *v <= 0.0) {
            return Err(perr(
                "joint_limits.max_acceleration",
                format!("entry {i} must be > 0"),
            ));
        }
    }
    Ok(Some(JointLimits {
        lower,
        upper,
        max_velocity,
        max_acceleration,
        max_jump,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bundle and dry run: the smallest valid parameter set (no limits needed).
    fn base() -> Params {
        let mut p = Params::new();
        p.insert("bundle_path".into(), ParamValue::String("/b".into()));
        p.insert("dry_run".into(), ParamValue::Bool(true));
        p
    }

    #[test]
    fn the_parameter_table_is_the_documentation() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/parameters.md");
        let doc = std::fs::read_to_string(path).unwrap_or_default();
        assert_eq!(
            doc,
            parameters_markdown(),
            "docs/parameters.md is out of date: `wam_policy_node params > docs/parameters.md`"
        );
        for p in PARAMETERS {
            let kind = p.kind().split(' ').next().unwrap_or("");
            let matches = match p.default {
                ParamDefault::Bool(_) => kind == "bool",
                ParamDefault::Integer(_) => kind == "integer",
                ParamDefault::Double(_) => kind == "double",
                ParamDefault::Str(_) => kind == "string",
                ParamDefault::Unset => {
                    kind.ends_with("array") || kind == "double" || kind == "string"
                }
            };
            assert!(
                matches,
                "{}: default {:?} against `{}`",
                p.name,
                p.default,
                p.kind()
            );
        }
    }

    /// config/robot.yaml sets every parameter of the table (so users see them all), and where it is
    /// not about the robot (topics, joints, limits, the bundle) its value is the table's default.
    #[test]
    fn robot_yaml_agrees_with_the_parameter_table() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/robot.yaml"))
                .unwrap();
        let yaml: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let mut file = Params::new();
        flatten("", &yaml["wam_policy"]["ros__parameters"], &mut file);
        let robot_specific = [
            "bundle_path",
            "camera_names",
            "camera_topics",
            "joint_states_topic",
            "joint_names",
            "instruction_topic",
            "trt_cache_dir",
            "plan_anchor",
            "use_sim_time",
        ];
        for p in PARAMETERS {
            if p.name == "use_sim_time" {
                continue; // the launch file's argument
            }
            let Some(v) = file.get(p.name) else {
                panic!("config/robot.yaml lacks `{}` ({})", p.name, p.doc);
            };
            if robot_specific.contains(&p.name) || p.name.starts_with("joint_limits") {
                continue;
            }
            let same = match (p.default, v) {
                (ParamDefault::Bool(a), ParamValue::Bool(b)) => a == *b,
                (ParamDefault::Integer(a), ParamValue::Integer(b)) => a as i64 == *b,
                (ParamDefault::Double(a), ParamValue::Double(b)) => a == *b,
                (ParamDefault::Double(a), ParamValue::Integer(b)) => a == *b as f64,
                (ParamDefault::Str(a), ParamValue::String(b)) => a == b,
                (ParamDefault::Unset, _) => true,
                _ => false,
            };
            assert!(
                same,
                "config/robot.yaml `{}` = {v:?}, the table's default is {}",
                p.name,
                p.default_text()
            );
        }
    }

    fn groups(p: &mut Params) {
        let s = |v: &str| ParamValue::String(v.into());
        let list = |v: &[&str]| ParamValue::StringArray(v.iter().map(|x| x.to_string()).collect());
        p.insert("command_groups".into(), list(&["arm", "gripper"]));
        p.insert("command_group.arm.joints".into(), list(&["j1", "j2"]));
        p.insert("command_group.arm.topic".into(), s("arm/joint_trajectory"));
        p.insert("command_group.gripper.joints".into(), list(&["g"]));
        p.insert("command_group.gripper.output_mode".into(), s("stream"));
        p.insert("command_group.gripper.topic".into(), s("gripper/commands"));
    }

    #[test]
    fn command_groups_are_read_with_their_fields() {
        let mut p = base();
        groups(&mut p);
        let cfg = NodeConfig::from_params(&p).unwrap();
        let g = &cfg.command_groups;
        assert_eq!(g.len(), 2);
        assert_eq!(
            (g[0].name.as_str(), g[0].output_mode),
            ("arm", OutputMode::Chunk)
        );
        assert_eq!(g[0].joints, vec!["j1".to_string(), "j2".into()]);
        assert_eq!(
            (g[1].topic.as_str(), g[1].output_mode),
            ("gripper/commands", OutputMode::Stream)
        );
        assert_eq!(g[1].stream_message, StreamMessage::Float64MultiArray);
        // Without groups: one group of every joint on the trajectory topic.
        let cfg = NodeConfig::from_params(&base()).unwrap();
        assert_eq!(cfg.command_groups.len(), 1);
        assert_eq!(cfg.command_groups[0].topic, "joint_trajectory");
        assert!(cfg.command_groups[0].joints.is_empty());
    }

    #[test]
    fn bad_command_groups_name_the_field() {
        let cases: [(&str, ParamValue, &str); 4] = [
            (
                "command_group.arm.output_mode",
                ParamValue::String("fast".into()),
                "command_group.arm.output_mode",
            ),
            (
                "command_group.arm.topic",
                ParamValue::String(String::new()),
                "command_group.arm.topic",
            ),
            (
                "command_group.wrist.topic",
                ParamValue::String("w".into()),
                "command_group.wrist.topic",
            ),
            (
                "command_group.arm.joints",
                ParamValue::StringArray(vec![]),
                "command_group.arm.joints",
            ),
        ];
        for (key, value, named) in cases {
            let mut p = base();
            groups(&mut p);
            p.insert(key.into(), value);
            let e = NodeConfig::from_params(&p).unwrap_err();
            assert_eq!(e.name, named, "{key}: {e}");
        }
        let mut p = base();
        groups(&mut p);
        p.insert("command_group.arm.speed".into(), ParamValue::Double(1.0));
        assert_eq!(
            NodeConfig::from_params(&p).unwrap_err().name,
            "command_group.arm.speed"
        );
    }

    #[test]
    fn run_time_parameters_are_checked_like_the_others() {
        for (name, value) in [
            ("velocity_scaling", ParamValue::Double(1.5)),
            ("velocity_scaling", ParamValue::Double(0.0)),
            ("run_preemption", ParamValue::String("queue".into())),
            ("run_watchdog_s", ParamValue::Double(-1.0)),
        ] {
            let mut p = base();
            p.insert(name.into(), value);
            assert_eq!(NodeConfig::from_params(&p).unwrap_err().name, name);
        }
        assert!(RUNTIME_PARAMETERS.iter().all(|n| is_parameter(n)));
        assert!(parameter_doc("command_group.arm.joints").is_some());
        assert!(!is_parameter("command_group.arm"));
    }

    #[test]
    fn run_time_updates_are_checked_and_others_are_read_only() {
        let p = base();
        let set = |name: &str, v: ParamValue| vec![(name.to_string(), v)];
        let (next, cfg) = updated_params(
            &p,
            &set("boundary_mode", ParamValue::String("crossfade".into())),
            true,
        )
        .unwrap();
        assert_eq!(
            cfg.unwrap().execution.boundary_mode,
            BoundaryMode::Crossfade
        );
        assert_eq!(
            next.get("boundary_mode"),
            Some(&ParamValue::String("crossfade".into()))
        );
        let e = updated_params(
            &p,
            &set("boundary_mode", ParamValue::String("bogus".into())),
            true,
        )
        .unwrap_err();
        assert_eq!(e.name, "boundary_mode");
        let e = updated_params(
            &p,
            &set("bundle_path", ParamValue::String("/other".into())),
            true,
        )
        .unwrap_err();
        assert!(e.to_string().contains("read-only"), "{e}");
        assert!(updated_params(
            &p,
            &set("bundle_path", ParamValue::String("/other".into())),
            false
        )
        .is_ok());
        assert!(updated_params(&p, &set("no_such_thing", ParamValue::Bool(true)), false).is_err());
    }

    #[test]
    fn example_robot_configurations_are_valid() {
        for file in ["ur5e.yaml", "fr3.yaml"] {
            let path = format!("{}/config/{file}", env!("CARGO_MANIFEST_DIR"));
            let text = std::fs::read_to_string(&path).unwrap();
            let yaml: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
            let mut p = Params::new();
            flatten("", &yaml["wam_policy"]["ros__parameters"], &mut p);
            p.insert("bundle_path".into(), ParamValue::String("/b".into()));
            let cfg = NodeConfig::from_params(&p).unwrap_or_else(|e| panic!("{file}: {e}"));
            let grouped: usize = cfg.command_groups.iter().map(|g| g.joints.len()).sum();
            assert_eq!(
                grouped,
                cfg.joint_names.len(),
                "{file}: every joint in one group"
            );
            assert!(cfg.limits.is_some(), "{file}: limits");
        }
    }

    #[test]
    fn limits_are_required_unless_dry_run() {
        let mut p = base();
        p.insert("dry_run".into(), ParamValue::Bool(false));
        let e = NodeConfig::from_params(&p).unwrap_err();
        assert_eq!(e.name, "joint_limits");
        assert!(e.to_string().contains("dry_run"), "{e}");
        p.insert(
            "joint_names".into(),
            ParamValue::StringArray(vec!["a".into()]),
        );
        for (name, v) in [
            ("joint_limits.lower", -1.0),
            ("joint_limits.upper", 1.0),
            ("joint_limits.max_velocity", 1.0),
        ] {
            p.insert(name.into(), ParamValue::DoubleArray(vec![v]));
        }
        let c = NodeConfig::from_params(&p).unwrap();
        assert!(!c.execution.dry_run);
        assert_eq!(c.limits.unwrap().max_velocity, vec![1.0]);
    }

    #[test]
    fn defaults_are_valid() {
        let c = NodeConfig::from_params(&base()).unwrap();
        assert_eq!(
            c.runtime.providers,
            vec![Provider::TensorRt, Provider::Cuda, Provider::Cpu]
        );
        assert!(!c.enabled_at_start);
        assert!(c.limits.is_none());
    }

    #[test]
    fn each_bad_value_names_its_parameter() {
        let cases: Vec<(&str, ParamValue, &str)> = vec![
            ("bundle_path", ParamValue::String(String::new()), "required"),
            ("sync_slop_s", ParamValue::Double(-1.0), "> 0"),
            (
                "sync_slop_s",
                ParamValue::String("x".into()),
                "expected a double",
            ),
            (
                "providers",
                ParamValue::StringArray(vec!["rocm".into()]),
                "not a provider",
            ),
            ("providers", ParamValue::StringArray(vec![]), "at least one"),
            ("camera_transport", ParamValue::String("h264".into()), "raw"),
            ("seed", ParamValue::Integer(-3), ">= 0"),
            (
                "camera_topics",
                ParamValue::StringArray(vec!["a".into()]),
                "camera_names has 0",
            ),
            (
                "joint_states_topic",
                ParamValue::String(String::new()),
                "empty",
            ),
            ("bogus_param", ParamValue::Bool(true), "not a parameter"),
        ];
        for (name, value, needle) in cases {
            let mut p = base();
            p.insert(name.into(), value);
            let e = NodeConfig::from_params(&p).unwrap_err();
            assert_eq!(e.name, name);
            assert!(e.to_string().contains(needle), "{name}: {e}");
        }
    }

    #[test]
    fn limits_are_checked_per_joint() {
        let mut p = base();
        p.insert(
            "joint_names".into(),
            ParamValue::StringArray(vec!["a".into(), "b".into()]),
        );
        p.insert(
            "joint_limits.lower".into(),
            ParamValue::DoubleArray(vec![-1.0, -1.0]),
        );
        p.insert(
            "joint_limits.upper".into(),
            ParamValue::DoubleArray(vec![1.0, -2.0]),
        );
        p.insert(
            "joint_limits.max_velocity".into(),
            ParamValue::DoubleArray(vec![1.0, 1.0]),
        );
        let e = NodeConfig::from_params(&p).unwrap_err();
        assert_eq!(e.name, "joint_limits.lower");
        p.insert(
            "joint_limits.upper".into(),
            ParamValue::DoubleArray(vec![1.0, 2.0]),
        );
        let c = NodeConfig::from_params(&p).unwrap();
        assert_eq!(c.limits.unwrap().upper, vec![1.0, 2.0]);
        p.remove("joint_limits.max_velocity");
        assert_eq!(
            NodeConfig::from_params(&p).unwrap_err().name,
            "joint_limits"
        );
    }

    /// Flattens a params file's `wam_policy: ros__parameters:` the way ROS names nested parameters.
    fn flatten(prefix: &str, value: &serde_yaml::Value, out: &mut Params) {
        use serde_yaml::Value as Y;
        match value {
            Y::Mapping(m) => {
                for (k, v) in m {
                    let key = k.as_str().expect("string keys");
                    let name = if prefix.is_empty() {
                        key.to_string()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    flatten(&name, v, out);
                }
            }
            Y::Bool(b) => {
                out.insert(prefix.into(), ParamValue::Bool(*b));
            }
            Y::Number(n) if n.is_i64() => {
                out.insert(prefix.into(), ParamValue::Integer(n.as_i64().unwrap()));
            }
            Y::Number(n) => {
                out.insert(prefix.into(), ParamValue::Double(n.as_f64().unwrap()));
            }
            Y::String(t) => {
                out.insert(prefix.into(), ParamValue::String(t.clone()));
            }
            Y::Sequence(items) => {
                let v = if items.iter().all(|i| i.is_string()) {
                    ParamValue::StringArray(
                        items
                            .iter()
                            .map(|i| i.as_str().unwrap().to_string())
                            .collect(),
                    )
                } else if items.iter().all(|i| i.is_i64()) {
                    ParamValue::IntegerArray(items.iter().map(|i| i.as_i64().unwrap()).collect())
                } else {
                    ParamValue::DoubleArray(items.iter().map(|i| i.as_f64().unwrap()).collect())
                };
                out.insert(prefix.into(), v);
            }
            other => panic!("{prefix}: unexpected value {other:?}"),
        }
    }

    #[test]
    fn shipped_params_files_are_valid() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            let doc: serde_yaml::Value =
                serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let Some(node) = doc.get("wam_policy") else {
                continue;
            };
            let mut p = Params::new();
            flatten("", &node["ros__parameters"], &mut p);
            // The launch file fills the bundle in.
            if p.get("bundle_path") == Some(&ParamValue::String(String::new())) {
                p.insert("bundle_path".into(), ParamValue::String("/b".into()));
            }
            if let Err(e) = NodeConfig::from_params(&p) {
                panic!("{}: {e}", path.display());
            }
            checked += 1;
        }
        assert!(
            checked >= 1,
            "no wam_policy params file in {}",
            dir.display()
        );
    }

    #[test]
    fn video_decode_on_demand_decodes_when_watched_or_every_nth_chunk() {
        let cfg = |extra: &[(&str, ParamValue)]| {
            let mut p = Params::new();
            p.insert("bundle_path".into(), ParamValue::String("b".into()));
            p.insert("dry_run".into(), ParamValue::Bool(true));
            for (k, v) in extra {
                p.insert(k.to_string(), v.clone());
            }
            NodeConfig::from_params(&p)
        };
        assert_eq!(cfg(&[]).unwrap().video_decode, VideoDecode::Always);
        let on_demand = cfg(&[
            ("video_decode", ParamValue::String("on_demand".into())),
            ("video_decode_every", ParamValue::Integer(3)),
        ])
        .unwrap()
        .video_decode;
        assert_eq!(on_demand, VideoDecode::OnDemand { every: 3 });
        let decoded: Vec<bool> = (0..7).map(|c| on_demand.decodes(c, false)).collect();
        assert_eq!(decoded, [true, false, false, true, false, false, true]);
        assert!((0..7).all(|c| on_demand.decodes(c, true)));
        assert!(!VideoDecode::OnDemand { every: 0 }.decodes(0, false));
        assert!(VideoDecode::Always.decodes(5, false));
        let err = cfg(&[("video_decode", ParamValue::String("sometimes".into()))]).unwrap_err();
        assert!(err.to_string().contains("video_decode") && err.to_string().contains("on_demand"));
    }
}
