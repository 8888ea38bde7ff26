//! Model runtime: one ONNX Runtime environment, one session per bundle stage, execution providers tried in
//! the configured order, the manifest checked against every stage's real inputs and outputs, and one
//! inference (encode -> context once -> the sampler's denoise evaluations -> decode) into preallocated
//! buffers.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use half::f16;
use ort::session::Session;

use crate::bundle::{self, Bundle, BundleError, Dims, ElemType, StageTensors, TensorInfo};
use crate::config::{Backend, Provider, RuntimeConfig};
use crate::model_state::CarriedState;
use crate::remote::RemoteStage;
use crate::sampler::{FlowSampler, Inpaint, Workspace};
use crate::stage::{Feed, FixedMemory, InData, LocalStage, OutData, Placement, Stage, StageError};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot load ONNX Runtime from {path}: {message} (set ORT_DYLIB_PATH to libonnxruntime.so 1.31)")]
    Library { path: String, message: String },
    #[error("stage `{stage}`: cannot create a session from {file} with any provider: {message}")]
    Session {
        stage: String,
        file: PathBuf,
        message: String,
    },
    #[error("stage `{stage}` (backend remote): {message}")]
    Remote { stage: String, message: String },
    #[error("only the CPU provider could be used ({tried}), and require_accelerator is set")]
    NoAccelerator { tried: String },
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error("stage `{stage}` failed: {message}")]
    Run { stage: String, message: String },
    #[error("stage `{stage}` output `{tensor}` has {got} values, expected {expected}")]
    OutputSize {
        stage: String,
        tensor: String,
        got: usize,
        expected: usize,
    },
    #[error("the model produced a non-finite action value")]
    NonFiniteActions,
    #[error("initial noise has {} action and {} video values, expected {} and {}", actions.0, video.0, actions.1, video.1)]
    NoiseShape {
        actions: (usize, usize),
        video: (usize, usize),
    },
}

fn run_err(stage: &str, e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Run {
        stage: stage.to_string(),
        message: e.to_string(),
    }
}

static ENVIRONMENT: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();

/// Where libonnxruntime.so is taken from: `ORT_DYLIB_PATH`, else the dynamic loader's search path.
pub fn ort_library_path() -> String {
    std::env::var("ORT_DYLIB_PATH").unwrap_or_else(|_| "libonnxruntime.so".to_string())
}

/// The process-wide ONNX Runtime environment, loaded on first use.
fn environment() -> Result<&'static ort::environment::Environment, RuntimeError> {
    let path = ort_library_path();
    ENVIRONMENT
        .get_or_init(|| {
            let builder = ort::init_from(&path).map_err(|e| e.to_string())?;
            builder
                .with_name("wam_policy")
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|message| RuntimeError::Library {
            path: path.clone(),
            message: message.clone(),
        })
}

/// Builds a session with exactly one provider; registration failures are errors, so the caller can fall
/// back to the next provider. Returns `ort::Result` because the builder's error type is not `Send`.
/// `trt_cache` is the stage's engine/timing cache folder (TensorRT only); `graph`: the GPU provider
/// captures the session's kernels in a CUDA graph and replays it.
fn build_session(
    env: &ort::environment::Environment,
    provider: Provider,
    cfg: &RuntimeConfig,
    file: &Path,
    trt_cache: Option<&Path>,
    graph: bool,
) -> ort::Result<Session> {
    let mut builder = Session::builder(env)?;
    if cfg.intra_op_threads > 0 {
        builder = builder.with_intra_threads(cfg.intra_op_threads)?;
    }
    builder = match provider {
        Provider::Cpu => builder,
        Provider::Cuda => builder.with_execution_providers([cuda_provider(cfg, graph)])?,
        Provider::TensorRt => {
            let cache = trt_cache.unwrap_or(&cfg.trt_cache_dir);
            builder.with_execution_providers([tensorrt_provider(cfg, cache, graph)])?
        }
    };
    builder.commit_from_file(file)
}

#[cfg(feature = "cuda")]
fn cuda_provider(cfg: &RuntimeConfig, graph: bool) -> ort::ep::ExecutionProviderDispatch {
    ort::ep::CUDA::default()
        .with_device_id(cfg.device_id)
        .with_cuda_graph(graph)
        .build()
        .error_on_failure()
}

#[cfg(feature = "tensorrt")]
fn tensorrt_provider(
    cfg: &RuntimeConfig,
    cache: &Path,
    graph: bool,
) -> ort::ep::ExecutionProviderDispatch {
    let cache = cache.display().to_string();
    ort::ep::TensorRT::default()
        .with_device_id(cfg.device_id)
        .with_cuda_graph(graph)
        .with_fp16(cfg.fp16)
        .with_engine_cache(true)
        .with_engine_cache_path(&cache)
        .with_timing_cache(true)
        .with_timing_cache_path(&cache)
        .build()
        .error_on_failure()
}

/// Without the `cuda` feature the provider is compiled out; asking for it fails like a missing library.
#[cfg(not(feature = "cuda"))]
fn cuda_provider(_cfg: &RuntimeConfig, _graph: bool) -> ort::ep::ExecutionProviderDispatch {
    ort::ep::CPU::default().build().error_on_failure()
}

#[cfg(not(feature = "tensorrt"))]
fn tensorrt_provider(
    _cfg: &RuntimeConfig,
    _cache: &Path,
    _graph: bool,
) -> ort::ep::ExecutionProviderDispatch {
    ort::ep::CPU::default().build().error_on_failure()
}

fn feature_enabled(provider: Provider) -> bool {
    match provider {
        Provider::Cpu => true,
        Provider::Cuda => cfg!(feature = "cuda"),
        Provider::TensorRt => cfg!(feature = "tensorrt"),
    }
}

// --- GPU provider libraries ----------------------------------------------------------------------------------
//
// The CUDA provider of the onnxruntime-gpu wheel dlopens CUDA 13 and cuDNN 9, which its [cuda,cudnn] extras
// install as pip wheels under site-packages/nvidia/{cu13,cudnn}/lib. They are preloaded (ort's
// `preload_dylibs`, after `init_from`) so the provider finds them without a library path; a failure there
// (no driver: cuDNN needs libcuda.so.1) means "no CUDA on this machine": logged once, and the next provider
// is tried. TensorRT 10 is not on PyPI: its libraries come from NVIDIA (apt, tar, NGC containers).

/// Where to get TensorRT 10, for the log and the error messages.
pub const TENSORRT_HINT: &str = "TensorRT 10 is not on PyPI: install TensorRT 10.x for CUDA 13 from NVIDIA \
(apt package `tensorrt` from NVIDIA's CUDA repository, the tar from developer.nvidia.com/tensorrt, or an NGC \
container) and put its lib folder in `trt_lib_dir` or on LD_LIBRARY_PATH";

/// The libraries a TensorRT provider needs, in load order.
const TENSORRT_DYLIBS: [&str; 3] = [
    "libnvinfer.so.10",
    "libnvinfer_plugin.so.10",
    "libnvonnxparser.so.10",
];

/// How a GPU provider is prepared: `Ok(what was loaded)` or why it cannot run here.
type Prepare = fn(&RuntimeConfig) -> Result<String, String>;

/// Outcome of preparing a GPU provider, found once per process: `Ok(what was loaded)` or why not.
static CUDA_READY: OnceLock<Result<String, String>> = OnceLock::new();
static TENSORRT_READY: OnceLock<Result<String, String>> = OnceLock::new();

/// `<site-packages>/nvidia/<sub>/lib` beside the onnxruntime(-gpu) wheel that `ORT_DYLIB_PATH` points into.
fn wheel_lib_dir(sub: &str) -> Option<PathBuf> {
    let lib = PathBuf::from(ort_library_path());
    // <site>/onnxruntime/capi/libonnxruntime.so.X
    let site = lib.parent()?.parent()?.parent()?;
    let dir = site.join("nvidia").join(sub).join("lib");
    dir.is_dir().then_some(dir)
}

/// The configured folder, else the wheel's, else none (the loader's search path).
fn lib_dir(configured: &Path, wheel_sub: &str) -> Option<PathBuf> {
    if configured.as_os_str().is_empty() {
        wheel_lib_dir(wheel_sub)
    } else {
        Some(configured.to_path_buf())
    }
}

/// Whether the loaded ONNX Runtime was built with the provider (the CPU wheel has neither GPU provider).
fn compiled_into_onnxruntime(provider: Provider) -> Result<(), String> {
    let available: ort::Result<bool> = match provider {
        Provider::Cpu => Ok(true),
        #[cfg(feature = "cuda")]
        Provider::Cuda => <ort::ep::CUDA as ort::ep::ExecutionProvider>::is_available(),
        #[cfg(feature = "tensorrt")]
        Provider::TensorRt => <ort::ep::TensorRT as ort::ep::ExecutionProvider>::is_available(),
        #[allow(unreachable_patterns)]
        _ => Ok(false),
    };
    match available {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!(
            "the ONNX Runtime library {} has no {} provider (the CPU build; `make setup-gpu` installs \
             onnxruntime-gpu and `source scripts/env.sh --gpu` selects it)",
            ort_library_path(),
            provider.name()
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// Loads a library by path or name and keeps it loaded.
fn preload(path: &Path) -> Result<(), String> {
    ort::util::preload_dylib(path).map_err(|e| {
        // libloading's message is "dlopen failed"; the loader's reason (naming the file) is its source.
        match std::error::Error::source(&e) {
            Some(why) => why.to_string(),
            None => format!("{}: {e}", path.display()),
        }
    })
}

#[cfg(feature = "cuda")]
fn preload_cuda(cuda: Option<&Path>, cudnn: Option<&Path>) -> Result<(), String> {
    ort::ep::cuda::preload_dylibs(cuda, cudnn).map_err(|e| e.to_string())
}

#[cfg(not(feature = "cuda"))]
fn preload_cuda(_cuda: Option<&Path>, _cudnn: Option<&Path>) -> Result<(), String> {
    Ok(())
}

fn prepare_cuda(cfg: &RuntimeConfig) -> Result<String, String> {
    compiled_into_onnxruntime(Provider::Cuda)?;
    let cuda = lib_dir(&cfg.cuda_lib_dir, "cu13");
    let cudnn = lib_dir(&cfg.cudnn_lib_dir, "cudnn");
    let driver = preload(Path::new("libcuda.so.1"));
    if let Err(e) = preload_cuda(cuda.as_deref(), cudnn.as_deref()) {
        let why = match &driver {
            Err(d) => format!("no NVIDIA driver ({d})"),
            Ok(()) => "a CUDA 13 or cuDNN 9 library is missing".to_string(),
        };
        return Err(format!(
            "no CUDA: {why}; preloading the CUDA libraries failed: {e}"
        ));
    }
    driver.map_err(|e| format!("no CUDA: no NVIDIA driver ({e})"))?;
    let shown = |d: &Option<PathBuf>| {
        d.as_ref()
            .map_or("the library path".to_string(), |d| d.display().to_string())
    };
    Ok(format!(
        "CUDA from {}, cuDNN from {}",
        shown(&cuda),
        shown(&cudnn)
    ))
}

fn prepare_tensorrt(cfg: &RuntimeConfig) -> Result<String, String> {
    gpu_provider_ready(Provider::Cuda, cfg).map_err(|e| format!("TensorRT needs CUDA: {e}"))?;
    compiled_into_onnxruntime(Provider::TensorRt)?;
    let dir = (!cfg.trt_lib_dir.as_os_str().is_empty()).then(|| cfg.trt_lib_dir.clone());
    for lib in TENSORRT_DYLIBS {
        let path = dir
            .as_ref()
            .map_or_else(|| PathBuf::from(lib), |d| d.join(lib));
        preload(&path).map_err(|e| format!("TensorRT 10 not found ({e}); {TENSORRT_HINT}"))?;
    }
    Ok(format!(
        "TensorRT 10 from {}",
        dir.map_or("the library path".to_string(), |d| d.display().to_string())
    ))
}

/// Whether a GPU provider's libraries and driver are there, after `init_from` (the environment exists).
/// Found once per process with the first configuration asked (the node has one) and logged once; an error
/// means "this provider cannot run here", never a reason to stop: the next provider is tried.
pub fn gpu_provider_ready(provider: Provider, cfg: &RuntimeConfig) -> Result<(), String> {
    let (cell, prepare): (_, Prepare) = match provider {
        Provider::Cpu => return Ok(()),
        Provider::Cuda => (&CUDA_READY, prepare_cuda),
        Provider::TensorRt => (&TENSORRT_READY, prepare_tensorrt),
    };
    if !feature_enabled(provider) {
        return Err("not compiled in (cargo feature)".into());
    }
    environment().map_err(|e| e.to_string())?;
    cell.get_or_init(|| {
        let r = prepare(cfg);
        match &r {
            Ok(what) => tracing::info!(provider = provider.name(), "{what}"),
            Err(why) => tracing::warn!(provider = provider.name(), "{why}; falling back"),
        }
        r
    })
    .as_ref()
    .map(|_| ())
    .map_err(Clone::clone)
}

// --- TensorRT caches ----------------------------------------------------------------------------------------

/// FNV-1a (64 bit) of a file's bytes: the model part of the TensorRT cache key. Not cryptographic: it only
/// tells two models apart, so an engine is never reused for other weights.
fn file_hash(path: &Path) -> std::io::Result<u64> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(h);
        }
        for &b in &buf[..n] {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// The GPU part of the cache key: the model name from the NVIDIA driver (/proc/driver/nvidia/gpus) when
/// every GPU there is the same model (so the device index cannot pick another kind), else `device<id>`.
fn gpu_key(device_id: i32) -> String {
    let mut models: Vec<String> = std::fs::read_dir("/proc/driver/nvidia/gpus")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("information")).ok())
        .filter_map(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("Model:").map(|m| m.trim().to_string()))
        })
        .collect();
    models.dedup();
    match models.as_slice() {
        [one] => one
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect(),
        _ => format!("device{device_id}"),
    }
}

/// `<trt_cache_dir>/<hash of the ONNX file>/<gpu>`: engines and timing caches of one stage on one kind of GPU.
pub fn trt_cache_dir_for(cfg: &RuntimeConfig, onnx: &Path) -> Result<PathBuf, String> {
    let hash = file_hash(onnx).map_err(|e| format!("cannot hash {}: {e}", onnx.display()))?;
    let dir = cfg
        .trt_cache_dir
        .join(format!("{hash:016x}"))
        .join(gpu_key(cfg.device_id));
    std::fs::create_dir_all(&dir)
        .map_err(|e| format!("cannot create the TensorRT cache {}: {e}", dir.display()))?;
    Ok(dir)
}

/// A CPU session on one ONNX file, with the process's environment (tools and benchmarks).
pub fn cpu_session(path: &Path) -> Result<Session, RuntimeError> {
    let env = environment()?;
    build_session(
        env,
        Provider::Cpu,
        &RuntimeConfig::default(),
        path,
        None,
        false,
    )
    .map_err(|e| RuntimeError::Session {
        stage: path.display().to_string(),
        file: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// The inputs and outputs an ONNX file declares (read from a CPU session).
pub fn onnx_tensors(path: &Path) -> Result<StageTensors, RuntimeError> {
    Ok(crate::stage::session_tensors(&cpu_session(path)?))
}

/// One stage's session as built.
struct BuiltStage {
    session: Session,
    seconds: f64,
    /// The session replays a CUDA graph.
    graph: bool,
}

/// Builds one stage's session with `provider`, logging what it costs (a TensorRT engine build can take
/// minutes on a first start and must not be silent). `graph`: a CUDA graph is asked for (GPU providers
/// only); a session that cannot have one (a node the GPU provider does not run, control flow) is built
/// without, and the log says why.
fn build_stage(
    env: &ort::environment::Environment,
    provider: Provider,
    cfg: &RuntimeConfig,
    stage: &str,
    file: &Path,
    graph: bool,
) -> Result<BuiltStage, String> {
    let cache = match provider {
        Provider::TensorRt => {
            let dir = trt_cache_dir_for(cfg, file)?;
            let cached = std::fs::read_dir(&dir)
                .map(|d| {
                    d.flatten()
                        .any(|e| e.file_name().to_string_lossy().ends_with(".engine"))
                })
                .unwrap_or(false);
            if cached {
                tracing::info!(stage, cache = %dir.display(), "loading cached TensorRT engine");
            } else {
                tracing::info!(
                    stage,
                    cache = %dir.display(),
                    fp16 = cfg.fp16,
                    "building TensorRT engine: a first build can take minutes; it is cached for the next start"
                );
            }
            Some(dir)
        }
        _ => None,
    };
    let graph = graph && provider != Provider::Cpu;
    let t = Instant::now();
    let (session, graph) = match build_session(env, provider, cfg, file, cache.as_deref(), graph) {
        Ok(session) => (session, graph),
        Err(e) if graph => {
            tracing::warn!(stage, error = %e, "cuda_graph: this stage cannot be captured; it runs without a CUDA graph");
            let session = build_session(env, provider, cfg, file, cache.as_deref(), false)
                .map_err(|e| e.to_string())?;
            (session, false)
        }
        Err(e) => return Err(e.to_string()),
    };
    let seconds = t.elapsed().as_secs_f64();
    tracing::info!(
        stage,
        provider = provider.name(),
        cuda_graph = graph,
        seconds = format!("{seconds:.3}"),
        "session built"
    );
    Ok(BuiltStage {
        session,
        seconds,
        graph,
    })
}

/// Wall-clock seconds spent per stage in one inference.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageTimings {
    pub encode_s: f64,
    pub context_s: f64,
    pub denoise_s: f64,
    pub decode_s: f64,
    pub total_s: f64,
}

/// Inputs of one inference, preallocated once and refilled per chunk.
pub struct ModelInput {
    /// [V, T, 3, H, W], normalized.
    pub frames: Vec<f32>,
    /// [V, T] stamps of those frames (the monitor pairs them with earlier predictions).
    pub frame_stamps: Vec<f64>,
    /// [V * T, 3, H, W]: real frames the monitor needs latents of (its slots), normalized; encoded
    /// in one more encode run when any of `monitor_used` is set.
    pub monitor_frames: Vec<f32>,
    pub monitor_used: Vec<bool>,
    /// Joint positions in the bundle's state order, physical units.
    pub state: Vec<f64>,
    pub tokens: Vec<i64>,
    /// [H, A] joint positions (physical units) the chunk should start with (`prefix` boundaries): the
    /// first `prefix_steps` steps are inpainted with them, each with its weight in `prefix_weights` ([H]).
    pub prefix: Vec<f64>,
    pub prefix_weights: Vec<f32>,
    pub prefix_steps: usize,
    /// Run the decode stage for this chunk (parameter `video_decode`); the predicted video latents are
    /// computed either way.
    pub decode: bool,
}

impl ModelInput {
    pub fn zeroed(dims: &Dims) -> Self {
        ModelInput {
            frames: vec![0.0; dims.obs_frames_len()],
            frame_stamps: vec![f64::NEG_INFINITY; dims.cameras * dims.context_frames],
            monitor_frames: vec![0.0; dims.obs_frames_len()],
            monitor_used: vec![false; dims.cameras * dims.context_frames],
            state: vec![0.0; dims.state],
            tokens: vec![0; dims.tokens],
            prefix: vec![0.0; dims.action_len()],
            prefix_weights: vec![0.0; dims.horizon],
            prefix_steps: 0,
            decode: true,
        }
    }
}

impl ModelOutput {
    /// `decoded`: the bundle has a decode stage (predicted frames).
    pub fn zeroed(dims: &Dims, decoded: bool) -> Self {
        ModelOutput {
            actions: vec![0.0; dims.action_len()],
            observed_latents: vec![0.0; dims.cameras * dims.context_frames * dims.latent_len()],
            monitor_latents: vec![0.0; dims.cameras * dims.context_frames * dims.latent_len()],
            video_latents: vec![0.0; dims.video_latent_len()],
            frames: if decoded {
                vec![0.0; dims.predicted_frames_len()]
            } else {
                Vec::new()
            },
            frames_decoded: false,
        }
    }
}

/// Outputs of one inference, preallocated once.
pub struct ModelOutput {
    /// [H, A] joint positions, physical units.
    pub actions: Vec<f64>,
    /// [V, T, C, h, w]: the encode stage's latents of the input frames (what the context saw).
    pub observed_latents: Vec<f32>,
    /// [V, F, C, h, w]: the predicted video latents (the sampler's result, before decode).
    pub video_latents: Vec<f32>,
    /// [V * T, C, h, w]: latents of `ModelInput::monitor_frames` (valid where `monitor_used`).
    pub monitor_latents: Vec<f32>,
    /// [V, F, 3, H, W] RGB in [0, 1]; empty when the bundle has no decode stage.
    pub frames: Vec<f32>,
    /// `frames` hold this chunk's prediction (false: no decode stage, or `ModelInput::decode` was off and
    /// they hold an older chunk's).
    pub frames_decoded: bool,
}

/// A context output kept between the context stage and the denoise steps, in the file's element type.
enum CacheData {
    F32(Vec<f32>),
    F16(Vec<f16>),
    I64(Vec<i64>),
}

impl CacheData {
    fn zeroed(elem: ElemType, len: usize) -> Self {
        match elem {
            ElemType::I64 => CacheData::I64(vec![0; len]),
            ElemType::F16 => CacheData::F16(vec![f16::ZERO; len]),
            _ => CacheData::F32(vec![0.0; len]),
        }
    }

    /// The stage's output `name`, which must have this buffer's element type and size.
    fn copy_from(&mut self, stage: &str, from: &Stage, name: &str) -> Result<(), RuntimeError> {
        let out = from.output(name).map_err(|e| run_err(stage, e))?;
        let expected = match self {
            CacheData::F32(_) => "float32",
            CacheData::F16(_) => "float16",
            CacheData::I64(_) => "int64",
        };
        let got = out.type_name();
        match (self, out) {
            (CacheData::F32(b), OutData::F32(d)) => copy_same(stage, name, d, b),
            (CacheData::F16(b), OutData::F16(d)) => copy_same(stage, name, d, b),
            (CacheData::I64(b), OutData::I64(d)) => copy_same(stage, name, d, b),
            _ => Err(run_err(
                stage,
                format!("output `{name}` is {got}, expected {expected}"),
            )),
        }
    }

    fn data(&self) -> InData<'_> {
        match self {
            CacheData::F32(b) => InData::F32(b),
            CacheData::F16(b) => InData::F16(b),
            CacheData::I64(b) => InData::I64(b),
        }
    }

    /// Copies `cond` into the first half and `uncond` into the second (batched guidance).
    fn stack(&mut self, cond: &CacheData, uncond: &CacheData) {
        fn two<T: Copy>(dst: &mut [T], a: &[T], b: &[T]) {
            let (x, y) = dst.split_at_mut(a.len());
            x.copy_from_slice(a);
            y.copy_from_slice(b);
        }
        match (self, cond, uncond) {
            (CacheData::F32(d), CacheData::F32(a), CacheData::F32(b)) => two(d, a, b),
            (CacheData::F16(d), CacheData::F16(a), CacheData::F16(b)) => two(d, a, b),
            (CacheData::I64(d), CacheData::I64(a), CacheData::I64(b)) => two(d, a, b),
            // All three are made from one element type at load.
            _ => {}
        }
    }
}

/// A float input the runtime computes in f32: fed as it is, or converted into a preallocated f16 buffer
/// when the ONNX file declares float16.
struct Port {
    name: String,
    shape: Vec<i64>,
    half: Option<Vec<f16>>,
}

impl Port {
    fn new(name: &str, shape: Vec<i64>, elem: ElemType) -> Self {
        let len = shape.iter().map(|d| (*d).max(0) as usize).product();
        Port {
            name: name.to_string(),
            half: (elem == ElemType::F16).then(|| vec![f16::ZERO; len]),
            shape,
        }
    }

    fn feed<'a>(&'a mut self, data: &'a [f32]) -> Feed<'a> {
        let Port { name, shape, half } = self;
        let data = match half {
            Some(half) => {
                for (h, x) in half.iter_mut().zip(data) {
                    *h = f16::from_f32(*x);
                }
                InData::F16(half)
            }
            None => InData::F32(data),
        };
        Feed { name, shape, data }
    }
}

/// Frame tensors with their part of a frames buffer ([V, T] frames, or [V, F] with `predicted`): the
/// whole buffer for one tensor, or camera `v`'s frames for its own tensor.
fn frame_spans(
    ft: &bundle::FrameTensors,
    m: &bundle::Manifest,
    d: &Dims,
    predicted: bool,
) -> Vec<(String, Range<usize>)> {
    let n = if predicted {
        d.video_frames
    } else {
        d.context_frames
    };
    let frame = |v: usize, k: usize| {
        if predicted {
            d.predicted_frame(v, k)
        } else {
            d.obs_frame(v, k)
        }
    };
    let names = ft.names(&m.cameras);
    if !ft.per_camera() {
        let end = frame(d.cameras - 1, n - 1).end;
        return names.into_iter().map(|name| (name, 0..end)).collect();
    }
    names
        .into_iter()
        .enumerate()
        .map(|(v, name)| (name, frame(v, 0).start..frame(v, n - 1).end))
        .collect()
}

/// The stages as loaded or connected, before the manifest checks.
struct Stages {
    provider: Provider,
    build_times: Vec<(String, f64)>,
    graph_stages: Vec<String>,
    encode: Stage,
    context: Stage,
    denoise: Stage,
    decode: Option<Stage>,
}

/// What one branch (conditional, or guidance's unconditional) keeps per chunk: the context outputs passed
/// to denoise and its carried state.
struct Branch {
    cache: Vec<CacheData>,
    state: Option<CarriedState>,
}

/// The context stage's inputs beyond the per-branch data.
struct ContextPorts {
    latents: Port,
    state: Port,
    tokens: String,
    tokens_shape: Vec<i64>,
    /// One per state tensor (shared by the branches: they run one after the other).
    past: Vec<Port>,
    length: String,
    position: Option<String>,
}

/// The denoise stage's inputs; with batched guidance their shapes have a batch of 2.
struct DenoisePorts {
    actions: Port,
    video: Port,
    time: Port,
    out_actions: String,
    out_video: String,
    /// Context outputs fed by name, with their shapes (batched: the first dimension doubled).
    caches: Vec<(String, Vec<i64>)>,
}

/// Buffers of a batched guidance run (cond at batch index 0, uncond at 1).
struct Batch {
    actions: Vec<f32>,
    video: Vec<f32>,
    time: [f32; 2],
    out_actions: Vec<f32>,
    out_video: Vec<f32>,
    cache: Vec<CacheData>,
}

pub struct ModelRuntime {
    dims: Dims,
    provider: Provider,
    build_times: Vec<(String, f64)>,
    /// The stages that replay a CUDA graph (`cuda_graph`).
    graph_stages: Vec<String>,
    /// Backend remote: the stages run on a Triton server.
    remote: bool,
    encode: Stage,
    context: Stage,
    denoise: Stage,
    decode: Option<Stage>,
    /// The encode stage's frame inputs: one for all cameras, or one per camera, each with its part of
    /// the [V, T] frames buffer.
    frames_ports: Vec<(Port, Range<usize>)>,
    latents_out: String,
    context_ports: ContextPorts,
    denoise_ports: DenoisePorts,
    decode_port: Option<Port>,
    /// The decode stage's frame outputs with their part of the [V, F] frames buffer.
    dec_outs: Vec<(String, Range<usize>)>,
    state_mean: Vec<f32>,
    state_std: Vec<f32>,
    action_mean: Vec<f32>,
    action_std: Vec<f32>,
    latents: Vec<f32>,
    state_norm: Vec<f32>,
    /// The conditional branch (the only one without guidance).
    cond: Branch,
    /// Guidance's unconditional branch: the context on an all-pad instruction, its own state.
    uncond: Option<Branch>,
    /// The all-pad instruction of the unconditional branch.
    pad_tokens: Vec<i64>,
    /// Batched guidance (one denoise run with a batch of 2); None: two runs per evaluation.
    batch: Option<Batch>,
    x_actions: Vec<f32>,
    x_video: Vec<f32>,
    /// The sampler's velocities and solver state (sized by the first chunk, reused by every later one).
    work: Workspace<f32>,
    /// Initial action noise and the normalized prefix, for inpainting.
    noise_actions: Vec<f32>,
    prefix_norm: Vec<f32>,
    /// Per entry ([H, A]) inpainting weight, from `ModelInput::prefix_weights`.
    prefix_weight: Vec<f32>,
}

/// The element type the file declares for `name` among `list` (float32 when absent: the checks have
/// refused a missing tensor already).
fn elem_in(list: &[TensorInfo], name: &str) -> ElemType {
    list.iter()
        .find(|t| t.name == name)
        .map_or(ElemType::F32, |t| t.elem)
}

fn numel(shape: &[i64]) -> usize {
    shape.iter().map(|d| (*d).max(0) as usize).product()
}

/// `shape` with its first dimension doubled (a batch of cond and uncond).
fn doubled(shape: &[i64]) -> Vec<i64> {
    let mut s = shape.to_vec();
    if let Some(d) = s.first_mut() {
        *d *= 2;
    }
    s
}

impl ModelRuntime {
    /// Loads every stage with the first provider that works, checks the bundle against the sessions and
    /// preallocates all buffers.
    pub fn load(bundle: &Bundle, cfg: &RuntimeConfig) -> Result<Self, RuntimeError> {
        let m = &bundle.manifest;
        let Stages {
            provider,
            build_times,
            graph_stages,
            encode,
            context,
            denoise,
            decode,
        } = match cfg.backend {
            Backend::Local => Self::load_local(bundle, cfg)?,
            Backend::Remote => Self::connect_remote(bundle, cfg)?,
        };
        let remote = cfg.backend == Backend::Remote;

        // The manifest against what the files really declare.
        let format2 = m.format_version >= 2;
        let mut expected = bundle.expected_tensors();
        if format2 {
            expected.values_mut().for_each(StageTensors::accept_f16);
        }
        let actual_context = context.tensors();
        let actual_denoise = denoise.tensors();
        let cache_infos = bundle::check_context_outputs(
            &m.stages.context.outputs,
            &actual_context.outputs,
            &actual_denoise.inputs,
        )?;
        let state = match &m.stages.context.state {
            Some(st) => Some(bundle::check_context_state(st, &actual_context)?),
            None => None,
        };
        let guidance = m.sampler.guidance();
        let batched = guidance.is_some() && bundle::takes_batch_of_two(&actual_denoise);
        for (stage, session) in [
            ("encode", &encode),
            ("context", &context),
            ("denoise", &denoise),
        ]
        .into_iter()
        .chain(decode.as_ref().map(|d| ("decode", d)))
        {
            let mut exp = expected.get(stage).cloned().unwrap_or_default();
            if stage == "denoise" {
                exp.inputs.extend(cache_infos.iter().cloned());
                if batched {
                    exp.any_batch();
                }
            }
            if stage == "context" {
                if let Some(s) = &state {
                    exp.inputs.extend(s.context_inputs());
                }
            }
            bundle::check_stage(stage, &exp, &session.tensors())?;
        }

        let d = bundle.dims();
        let new_branch = || Branch {
            cache: cache_infos
                .iter()
                .map(|info| CacheData::zeroed(info.elem, numel(&info.shape)))
                .collect(),
            state: state.as_ref().map(CarriedState::new),
        };
        let cond = new_branch();
        let uncond = guidance.map(|_| new_branch());
        let s = &m.stages;
        let enc = expected.get("encode").cloned().unwrap_or_default();
        let dn = expected.get("denoise").cloned().unwrap_or_default();
        let ctx = expected.get("context").cloned().unwrap_or_default();
        let actual_encode = encode.tensors();
        let latents_shape = enc.outputs[0].shape.clone();
        let frames_ports = frame_spans(&s.encode.inputs.frames, m, &d, false)
            .into_iter()
            .zip(&enc.inputs)
            .map(|((name, range), info)| {
                let elem = elem_in(&actual_encode.inputs, &name);
                (Port::new(&name, info.shape.clone(), elem), range)
            })
            .collect();
        let ci = &s.context.inputs;
        let context_ports = ContextPorts {
            latents: Port::new(
                &ci.latents,
                latents_shape,
                elem_in(&actual_context.inputs, &ci.latents),
            ),
            state: Port::new(
                &ci.state,
                ctx.inputs[1].shape.clone(),
                elem_in(&actual_context.inputs, &ci.state),
            ),
            tokens: ci.tokens.clone(),
            tokens_shape: ctx.inputs[2].shape.clone(),
            past: state
                .as_ref()
                .map(|st| {
                    st.tensors
                        .iter()
                        .map(|t| Port::new(&t.input, t.shape.clone(), t.elem))
                        .collect()
                })
                .unwrap_or_default(),
            length: state.as_ref().map(|s| s.length.clone()).unwrap_or_default(),
            position: state.as_ref().and_then(|s| s.position.clone()),
        };
        let di = &s.denoise.inputs;
        let batch_shape = |shape: &[i64]| {
            if batched {
                doubled(shape)
            } else {
                shape.to_vec()
            }
        };
        let denoise_ports = DenoisePorts {
            actions: Port::new(
                &di.actions,
                batch_shape(&dn.inputs[0].shape),
                elem_in(&actual_denoise.inputs, &di.actions),
            ),
            video: Port::new(
                &di.video,
                batch_shape(&dn.inputs[1].shape),
                elem_in(&actual_denoise.inputs, &di.video),
            ),
            time: Port::new(
                &di.time,
                batch_shape(&TIME_SHAPE),
                elem_in(&actual_denoise.inputs, &di.time),
            ),
            out_actions: s.denoise.outputs.actions.clone(),
            out_video: s.denoise.outputs.video.clone(),
            caches: cache_infos
                .iter()
                .map(|c| (c.name.clone(), batch_shape(&c.shape)))
                .collect(),
        };
        let batch = batched.then(|| Batch {
            actions: vec![0.0; 2 * d.action_len()],
            video: vec![0.0; 2 * d.video_latent_len()],
            time: [0.0; 2],
            out_actions: vec![0.0; 2 * d.action_len()],
            out_video: vec![0.0; 2 * d.video_latent_len()],
            cache: cache_infos
                .iter()
                .map(|info| CacheData::zeroed(info.elem, 2 * numel(&info.shape)))
                .collect(),
        });
        let (decode_port, dec_outs) = match (&s.decode, &decode) {
            (Some(dec), Some(session)) => (
                Some(Port::new(
                    &dec.inputs.latents,
                    dn.inputs[1].shape.clone(),
                    elem_in(&session.tensors().inputs, &dec.inputs.latents),
                )),
                frame_spans(&dec.outputs.frames, m, &d, true),
            ),
            _ => (None, Vec::new()),
        };
        Ok(ModelRuntime {
            dims: d,
            provider,
            remote,
            build_times,
            graph_stages,
            encode,
            context,
            denoise,
            decode,
            frames_ports,
            latents_out: s.encode.outputs.latents.clone(),
            context_ports,
            denoise_ports,
            decode_port,
            dec_outs,
            state_mean: m.state.mean.clone(),
            state_std: m.state.std.clone(),
            action_mean: m.action.mean.clone(),
            action_std: m.action.std.clone(),
            latents: vec![0.0; d.cameras * d.context_frames * d.latent_len()],
            state_norm: vec![0.0; d.state],
            cond,
            uncond,
            pad_tokens: vec![m.instruction.pad_id; d.tokens],
            batch,
            x_actions: vec![0.0; d.action_len()],
            x_video: vec![0.0; d.video_latent_len()],
            work: Workspace::new(d.action_len(), d.video_latent_len()),
            noise_actions: vec![0.0; d.action_len()],
            prefix_norm: vec![0.0; d.action_len()],
            prefix_weight: vec![0.0; d.action_len()],
        })
    }
    /// Every stage in this process: the first provider that works on the encode stage runs them all.
    fn load_local(bundle: &Bundle, cfg: &RuntimeConfig) -> Result<Stages, RuntimeError> {
        let env = environment()?;
        let m = &bundle.manifest;
        let encode_file = bundle.path_of(&m.stages.encode.file);
        let (provider, encode, encode_s) = Self::first_working_provider(env, cfg, &encode_file)?;
        let mut build_times = vec![("encode".to_string(), encode_s)];
        let mut graph_stages = Vec::new();
        let accelerated = provider != Provider::Cpu;
        if cfg.cuda_graph && !accelerated {
            tracing::warn!(
                "cuda_graph needs the cuda or tensorrt provider; the cpu provider runs without"
            );
        }
        let bind = |session: Session, graph: bool| {
            let placement = if graph {
                Placement::Fixed {
                    memory: FixedMemory::Cuda,
                    graph: true,
                }
            } else {
                Placement::Host { accelerated }
            };
            LocalStage::new(session, placement, cfg.device_id).map(|s| Stage::Local(Box::new(s)))
        };
        // Encode runs once per camera size and again on the monitor's frames: shapes a single captured
        // graph cannot replay, so it is built without one.
        let encode = bind(encode, false).map_err(|e| run_err("encode", e))?;
        let mut load = |stage: &str, file: &str| -> Result<Stage, RuntimeError> {
            let path = bundle.path_of(file);
            let session_err = |message: String| RuntimeError::Session {
                stage: stage.to_string(),
                file: path.clone(),
                message,
            };
            let mut built = build_stage(env, provider, cfg, stage, &path, cfg.cuda_graph)
                .map_err(session_err)?;
            let bound = match bind(built.session, built.graph) {
                // A graph's session must not run on moving addresses: built again without one.
                Err(e @ StageError::NoDeviceMemory(_)) => {
                    tracing::warn!(stage, error = %e, "cuda_graph: this stage runs without a CUDA graph");
                    built = build_stage(env, provider, cfg, stage, &path, false)
                        .map_err(session_err)?;
                    bind(built.session, false)
                }
                other => other,
            }
            .map_err(|e| run_err(stage, e))?;
            build_times.push((stage.to_string(), built.seconds));
            if built.graph {
                graph_stages.push(stage.to_string());
            }
            Ok(bound)
        };
        let context = load("context", &m.stages.context.file)?;
        let denoise = load("denoise", &m.stages.denoise.file)?;
        let decode = match &m.stages.decode {
            Some(d) => Some(load("decode", &d.file)?),
            None => None,
        };
        let total: f64 = build_times.iter().map(|(_, s)| s).sum();
        let per_stage: Vec<String> = build_times
            .iter()
            .map(|(stage, s)| format!("{stage} {s:.3} s"))
            .collect();
        tracing::info!(
            provider = provider.name(),
            "sessions built in {total:.3} s ({})",
            per_stage.join(", ")
        );
        Ok(Stages {
            provider,
            build_times,
            graph_stages,
            encode,
            context,
            denoise,
            decode,
        })
    }

    /// Every stage on the Triton server of `cfg.remote`: waits for its models, reads their metadata (checked
    /// against the manifest like an ONNX file's declarations). No ONNX Runtime is loaded.
    fn connect_remote(bundle: &Bundle, cfg: &RuntimeConfig) -> Result<Stages, RuntimeError> {
        let start = Instant::now();
        let connect = |stage: &str| {
            RemoteStage::connect(&cfg.remote, stage)
                .map(|s| Stage::Remote(Box::new(s)))
                .map_err(|e| RuntimeError::Remote {
                    stage: stage.to_string(),
                    message: e.to_string(),
                })
        };
        let encode = connect("encode")?;
        let context = connect("context")?;
        let denoise = connect("denoise")?;
        let decode = match &bundle.manifest.stages.decode {
            Some(_) => Some(connect("decode")?),
            None => None,
        };
        let secs = start.elapsed().as_secs_f64();
        tracing::info!(url = %cfg.remote.url, "remote stages ready in {secs:.3} s");
        Ok(Stages {
            // Not used remotely: the server's own configuration decides where the stages run.
            provider: Provider::Cpu,
            build_times: vec![("remote".to_string(), secs)],
            graph_stages: Vec::new(),
            encode,
            context,
            denoise,
            decode,
        })
    }

    /// Tries the providers in order on the first stage; the one that works runs every stage.
    fn first_working_provider(
        env: &ort::environment::Environment,
        cfg: &RuntimeConfig,
        file: &Path,
    ) -> Result<(Provider, Session, f64), RuntimeError> {
        let mut failures = Vec::new();
        for &provider in &cfg.providers {
            if !feature_enabled(provider) {
                tracing::warn!(
                    provider = provider.name(),
                    "execution provider not compiled in; trying the next one"
                );
                failures.push(format!("{}: not compiled in", provider.name()));
                continue;
            }
            if let Err(why) = gpu_provider_ready(provider, cfg) {
                // Logged once where it was found; this is the fallback.
                tracing::warn!(
                    provider = provider.name(),
                    "execution provider cannot be used here; trying the next one"
                );
                failures.push(format!("{}: {why}", provider.name()));
                continue;
            }
            if provider == Provider::Cpu && cfg.require_accelerator {
                return Err(RuntimeError::NoAccelerator {
                    tried: failures.join("; "),
                });
            }
            match build_stage(env, provider, cfg, "encode", file, false) {
                Ok(built) => {
                    tracing::info!(provider = provider.name(), "execution provider in use");
                    return Ok((provider, built.session, built.seconds));
                }
                Err(e) => {
                    tracing::warn!(provider = provider.name(), error = %e, "execution provider could not be used; trying the next one");
                    failures.push(format!("{}: {e}", provider.name()));
                }
            }
        }
        if cfg.require_accelerator {
            return Err(RuntimeError::NoAccelerator {
                tried: failures.join("; "),
            });
        }
        Err(RuntimeError::Session {
            stage: "encode".into(),
            file: file.to_path_buf(),
            message: failures.join("; "),
        })
    }

    pub fn provider(&self) -> Provider {
        self.provider
    }

    /// What runs the stages, for logs and status: the provider's name, or `remote` with backend remote.
    pub fn provider_name(&self) -> &'static str {
        if self.remote {
            "remote"
        } else {
            self.provider.name()
        }
    }

    /// Seconds each stage's session took to build at load (a TensorRT engine build or a cache load).
    pub fn build_times(&self) -> &[(String, f64)] {
        &self.build_times
    }

    /// Times input `input` of stage `stage` (encode, context, denoise, decode) had new contents written
    /// since load: what a GPU provider uploads. None for a stage that is not there or runs remotely.
    pub fn input_writes(&self, stage: &str, input: &str) -> Option<u64> {
        match stage {
            "encode" => self.encode.input_writes(input),
            "context" => self.context.input_writes(input),
            "denoise" => self.denoise.input_writes(input),
            "decode" => self.decode.as_ref()?.input_writes(input),
            _ => None,
        }
    }

    /// The stages that replay a CUDA graph: with `cuda_graph` on a GPU provider, those whose session
    /// could be captured (never encode, whose input shape differs per camera and for the monitor).
    pub fn graph_stages(&self) -> &[String] {
        &self.graph_stages
    }

    pub fn dims(&self) -> &Dims {
        &self.dims
    }

    pub fn has_decoder(&self) -> bool {
        self.decode.is_some()
    }

    pub fn new_input(&self) -> ModelInput {
        ModelInput::zeroed(&self.dims)
    }

    pub fn new_output(&self) -> ModelOutput {
        ModelOutput::zeroed(&self.dims, self.has_decoder())
    }

    /// One chunk: encode the context frames, compute the context once, integrate the flow with `sampler`
    /// from its seeded noise (video latents and actions together), decode the predicted frames.
    pub fn infer(
        &mut self,
        input: &ModelInput,
        sampler: &mut FlowSampler,
        output: &mut ModelOutput,
    ) -> Result<StageTimings, RuntimeError> {
        sampler.fill_noise(&mut self.x_actions);
        sampler.fill_noise(&mut self.x_video);
        self.infer_from_initial(input, sampler, output)
    }

    /// [`ModelRuntime::infer`] from given initial noise ([H, A] actions, [V, F, C, h, w] video latents, in
    /// the model's normalized space): how exports are checked against their training framework.
    pub fn infer_with_noise(
        &mut self,
        input: &ModelInput,
        sampler: &FlowSampler,
        noise_actions: &[f32],
        noise_video: &[f32],
        output: &mut ModelOutput,
    ) -> Result<StageTimings, RuntimeError> {
        if noise_actions.len() != self.x_actions.len() || noise_video.len() != self.x_video.len() {
            return Err(RuntimeError::NoiseShape {
                actions: (noise_actions.len(), self.x_actions.len()),
                video: (noise_video.len(), self.x_video.len()),
            });
        }
        self.x_actions.copy_from_slice(noise_actions);
        self.x_video.copy_from_slice(noise_video);
        self.infer_from_initial(input, sampler, output)
    }

    /// Forgets the state carried across chunks (both branches): zeros, length 0, position 0. The next
    /// chunk starts as the first after loading. No effect without `stages.context.state`.
    pub fn clear_state(&mut self) {
        for branch in std::iter::once(&mut self.cond).chain(self.uncond.as_mut()) {
            if let Some(s) = &mut branch.state {
                s.clear();
            }
        }
    }

    /// The conditional branch's carried state (None without `stages.context.state`).
    pub fn state(&self) -> Option<&CarriedState> {
        self.cond.state.as_ref()
    }

    /// Guidance's unconditional branch's carried state.
    pub fn uncond_state(&self) -> Option<&CarriedState> {
        self.uncond.as_ref().and_then(|b| b.state.as_ref())
    }

    /// Whether guidance runs both branches in one denoise run (a batch of 2).
    pub fn guidance_batched(&self) -> bool {
        self.batch.is_some()
    }

    /// One encode run on a [V, T] frames buffer: each frame input gets its part.
    fn encode_frames(
        encode: &mut Stage,
        ports: &mut [(Port, Range<usize>)],
        frames: &[f32],
    ) -> Result<(), RuntimeError> {
        let feeds: Vec<Feed<'_>> = ports
            .iter_mut()
            .map(|(port, range)| port.feed(&frames[range.clone()]))
            .collect();
        encode.run(&feeds).map_err(|e| run_err("encode", e))
    }

    /// Runs the context stage for one branch: its outputs into the branch's cache, its present state
    /// tensors into the branch's state buffers (committed only when the chunk is accepted).
    fn run_context(
        session: &mut Stage,
        ports: &mut ContextPorts,
        latents: &[f32],
        state_norm: &[f32],
        tokens: &[i64],
        names: &[(String, Vec<i64>)],
        branch: &mut Branch,
    ) -> Result<(), RuntimeError> {
        let (length, position) = branch
            .state
            .as_ref()
            .map_or((0, 0), |s| (s.length(), s.position()));
        let (length, position) = ([length], [position]);
        let mut feeds: Vec<Feed<'_>> = Vec::with_capacity(5 + ports.past.len());
        feeds.push(ports.latents.feed(latents));
        feeds.push(ports.state.feed(state_norm));
        feeds.push(Feed {
            name: &ports.tokens,
            shape: &ports.tokens_shape,
            data: InData::I64(tokens),
        });
        if let Some(state) = &branch.state {
            for (port, t) in ports.past.iter_mut().zip(&state.tensors) {
                feeds.push(port.feed(&t.past));
            }
            feeds.push(Feed {
                name: &ports.length,
                shape: &TIME_SHAPE,
                data: InData::I64(&length),
            });
            if let Some(p) = &ports.position {
                feeds.push(Feed {
                    name: p,
                    shape: &TIME_SHAPE,
                    data: InData::I64(&position),
                });
            }
        }
        session.run(&feeds).map_err(|e| run_err("context", e))?;
        drop(feeds);
        for (c, (name, _)) in branch.cache.iter_mut().zip(names) {
            c.copy_from("context", session, name)?;
        }
        if let Some(state) = &mut branch.state {
            for t in &mut state.tensors {
                copy_output_f32("context", session, &t.output, &mut t.present)?;
            }
        }
        Ok(())
    }

    fn infer_from_initial(
        &mut self,
        input: &ModelInput,
        sampler: &FlowSampler,
        output: &mut ModelOutput,
    ) -> Result<StageTimings, RuntimeError> {
        let start = Instant::now();
        let mut timings = StageTimings::default();

        // encode
        Self::encode_frames(&mut self.encode, &mut self.frames_ports, &input.frames)?;
        copy_output_f32("encode", &self.encode, &self.latents_out, &mut self.latents)?;
        output.observed_latents.copy_from_slice(&self.latents);
        if input.monitor_used.iter().any(|u| *u) {
            // The monitor's real frames at predicted times that no window holds: the same stage,
            // one more run (the frames buffer has the window's shape).
            Self::encode_frames(
                &mut self.encode,
                &mut self.frames_ports,
                &input.monitor_frames,
            )?;
            copy_output_f32(
                "encode",
                &self.encode,
                &self.latents_out,
                &mut output.monitor_latents,
            )?;
        }
        let t_encode = Instant::now();
        timings.encode_s = (t_encode - start).as_secs_f64();

        // context, once per chunk and branch
        for (i, q) in input.state.iter().enumerate() {
            self.state_norm[i] = ((*q as f32) - self.state_mean[i]) / self.state_std[i];
        }
        {
            let Self {
                context,
                context_ports,
                latents,
                state_norm,
                cond,
                uncond,
                pad_tokens,
                batch,
                denoise_ports,
                ..
            } = self;
            Self::run_context(
                context,
                context_ports,
                latents,
                state_norm,
                &input.tokens,
                &denoise_ports.caches,
                cond,
            )?;
            if let Some(uncond) = uncond {
                Self::run_context(
                    context,
                    context_ports,
                    latents,
                    state_norm,
                    pad_tokens,
                    &denoise_ports.caches,
                    uncond,
                )?;
                if let Some(b) = batch {
                    for ((dst, c), u) in b.cache.iter_mut().zip(&cond.cache).zip(&uncond.cache) {
                        dst.stack(c, u);
                    }
                }
            }
        }
        let t_context = Instant::now();
        timings.context_s = (t_context - t_encode).as_secs_f64();

        // denoise: video latents and actions from noise, together; a prefix is inpainted.
        let known = input.prefix_steps.min(self.dims.horizon) * self.dims.action;
        self.noise_actions[..known].copy_from_slice(&self.x_actions[..known]);
        for (k, ((n, w), q)) in self.prefix_norm[..known]
            .iter_mut()
            .zip(&mut self.prefix_weight[..known])
            .zip(&input.prefix[..known])
            .enumerate()
        {
            let j = k % self.dims.action;
            *n = (*q as f32 - self.action_mean[j]) / self.action_std[j];
            *w = input
                .prefix_weights
                .get(k / self.dims.action)
                .map_or(0.0, |w| w.clamp(0.0, 1.0));
        }
        {
            let Self {
                denoise,
                denoise_ports,
                cond,
                uncond,
                batch,
                noise_actions,
                prefix_norm,
                prefix_weight,
                x_actions,
                x_video,
                work,
                ..
            } = self;
            let inpaint = (known > 0).then(|| Inpaint {
                noise: &noise_actions[..known],
                target: &prefix_norm[..known],
                weight: &prefix_weight[..known],
            });
            sampler.integrate_guided(x_actions, x_video, work, inpaint, |t, xa, xv, out| {
                match (batch.as_mut(), out.uncond) {
                    (Some(b), Some((ua, uv))) => {
                        // Both branches in one run: cond at batch index 0, uncond at 1.
                        let (la, lv) = (xa.len(), xv.len());
                        b.actions[..la].copy_from_slice(xa);
                        b.actions[la..].copy_from_slice(xa);
                        b.video[..lv].copy_from_slice(xv);
                        b.video[lv..].copy_from_slice(xv);
                        b.time = [t, t];
                        run_denoise(
                            denoise,
                            denoise_ports,
                            &b.actions,
                            &b.video,
                            &b.time,
                            &b.cache,
                            &mut b.out_actions,
                            &mut b.out_video,
                        )?;
                        out.actions.copy_from_slice(&b.out_actions[..la]);
                        ua.copy_from_slice(&b.out_actions[la..]);
                        out.video.copy_from_slice(&b.out_video[..lv]);
                        uv.copy_from_slice(&b.out_video[lv..]);
                    }
                    (_, uncond_out) => {
                        // Two runs: each branch keeps its own binding set, so its context
                        // outputs are written once per chunk, not on every step.
                        let select = |stage: &mut Stage, k| {
                            stage.select(k).map_err(|e| run_err("denoise", e))
                        };
                        let time = [t];
                        select(denoise, 0)?;
                        run_denoise(
                            denoise,
                            denoise_ports,
                            xa,
                            xv,
                            &time,
                            &cond.cache,
                            out.actions,
                            out.video,
                        )?;
                        if let (Some((ua, uv)), Some(u)) = (uncond_out, uncond.as_ref()) {
                            select(denoise, 1)?;
                            run_denoise(denoise, denoise_ports, xa, xv, &time, &u.cache, ua, uv)?;
                        }
                    }
                }
                Ok::<(), RuntimeError>(())
            })?;
        }
        let t_denoise = Instant::now();
        timings.denoise_s = (t_denoise - t_context).as_secs_f64();

        for (i, (out, x)) in output.actions.iter_mut().zip(&self.x_actions).enumerate() {
            let j = i % self.dims.action;
            *out = f64::from(x * self.action_std[j] + self.action_mean[j]);
        }
        if output.actions.iter().any(|a| !a.is_finite()) {
            return Err(RuntimeError::NonFiniteActions);
        }

        output.video_latents.copy_from_slice(&self.x_video);
        output.frames_decoded = false;
        if let (Some(decode), Some(port), true) =
            (&mut self.decode, &mut self.decode_port, input.decode)
        {
            let feeds = [port.feed(&self.x_video)];
            decode.run(&feeds).map_err(|e| run_err("decode", e))?;
            for (name, range) in &self.dec_outs {
                copy_output_f32("decode", decode, name, &mut output.frames[range.clone()])?;
            }
            output.frames_decoded = true;
        }
        // The chunk is accepted: the state the context computed for it becomes the past.
        for branch in std::iter::once(&mut self.cond).chain(self.uncond.as_mut()) {
            if let Some(s) = &mut branch.state {
                s.commit();
            }
        }
        let end = Instant::now();
        timings.decode_s = (end - t_denoise).as_secs_f64();
        timings.total_s = (end - start).as_secs_f64();
        Ok(timings)
    }
}

const TIME_SHAPE: [i64; 1] = [1];

/// One denoise run on the given state, time and context outputs; the velocities into `out_a`, `out_v`.
#[allow(clippy::too_many_arguments)]
fn run_denoise(
    session: &mut Stage,
    ports: &mut DenoisePorts,
    xa: &[f32],
    xv: &[f32],
    time: &[f32],
    cache: &[CacheData],
    out_a: &mut [f32],
    out_v: &mut [f32],
) -> Result<(), RuntimeError> {
    let DenoisePorts {
        actions,
        video,
        time: time_port,
        out_actions,
        out_video,
        caches,
    } = ports;
    // Fed one by one: no list of feeds built per step.
    let err = |e: StageError| run_err("denoise", e);
    session.feed(&actions.feed(xa)).map_err(err)?;
    session.feed(&video.feed(xv)).map_err(err)?;
    session.feed(&time_port.feed(time)).map_err(err)?;
    for (data, (name, shape)) in cache.iter().zip(caches.iter()) {
        let feed = Feed {
            name,
            shape,
            data: data.data(),
        };
        session.feed(&feed).map_err(err)?;
    }
    session.run_fed().map_err(err)?;
    copy_output_f32("denoise", session, out_actions, out_a)?;
    copy_output_f32("denoise", session, out_video, out_v)?;
    Ok(())
}

fn size_err(stage: &str, name: &str, got: usize, expected: usize) -> RuntimeError {
    RuntimeError::OutputSize {
        stage: stage.to_string(),
        tensor: name.to_string(),
        got,
        expected,
    }
}

fn copy_same<T: Copy>(
    stage: &str,
    name: &str,
    src: &[T],
    dst: &mut [T],
) -> Result<(), RuntimeError> {
    if src.len() != dst.len() {
        return Err(size_err(stage, name, src.len(), dst.len()));
    }
    dst.copy_from_slice(src);
    Ok(())
}

/// A float output into an f32 buffer: copied, or converted from float16.
fn copy_output_f32(
    stage: &str,
    from: &Stage,
    name: &str,
    dst: &mut [f32],
) -> Result<(), RuntimeError> {
    match from.output(name).map_err(|e| run_err(stage, e))? {
        OutData::F32(src) => copy_same(stage, name, src, dst),
        OutData::F16(src) => {
            if src.len() != dst.len() {
                return Err(size_err(stage, name, src.len(), dst.len()));
            }
            for (d, h) in dst.iter_mut().zip(src) {
                *d = h.to_f32();
            }
            Ok(())
        }
        OutData::I64(_) => Err(run_err(
            stage,
            format!("output `{name}` is int64, expected a float tensor"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// TensorRT caches are kept per model (hash of the ONNX bytes) and GPU: another model never reuses an
    /// engine, the same bytes always find theirs.
    #[test]
    fn trt_cache_dir_is_keyed_by_model_bytes_and_gpu() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = RuntimeConfig {
            trt_cache_dir: tmp.path().join("cache"),
            ..RuntimeConfig::default()
        };
        let (a, b, c) = (
            tmp.path().join("a.onnx"),
            tmp.path().join("b.onnx"),
            tmp.path().join("c.onnx"),
        );
        std::fs::write(&a, b"model one").unwrap();
        std::fs::write(&b, b"model one").unwrap();
        std::fs::write(&c, b"model two").unwrap();
        let da = trt_cache_dir_for(&cfg, &a).unwrap();
        assert!(da.is_dir());
        assert!(da.starts_with(&cfg.trt_cache_dir));
        assert_eq!(da.parent().unwrap().parent().unwrap(), cfg.trt_cache_dir);
        assert_eq!(da, trt_cache_dir_for(&cfg, &b).unwrap());
        assert_ne!(da, trt_cache_dir_for(&cfg, &c).unwrap());
        let gpu = da.file_name().unwrap().to_string_lossy().to_string();
        assert!(!gpu.is_empty() && !gpu.contains('/'), "{gpu}");
        let missing = trt_cache_dir_for(&cfg, &tmp.path().join("none.onnx")).unwrap_err();
        assert!(missing.contains("none.onnx"), "{missing}");
    }

    /// The wheel's CUDA folders are found from ORT_DYLIB_PATH's place in site-packages; a configured
    /// folder wins.
    #[test]
    fn configured_library_folders_win() {
        assert_eq!(
            lib_dir(Path::new("/opt/cuda/lib"), "cu13"),
            Some(PathBuf::from("/opt/cuda/lib"))
        );
    }
}
