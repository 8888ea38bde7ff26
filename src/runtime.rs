//! Model runtime: one ONNX Runtime environment, one session per bundle stage, execution providers tried in
//! the configured order, the manifest checked against every stage's real inputs and outputs, and one
//! inference (encode -> context once -> the sampler's denoise evaluations -> decode) into preallocated
//! buffers.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use ort::session::{Session, SessionInputValue};
use ort::value::{TensorElementType, TensorRef, ValueType};

use crate::bundle::{self, Bundle, BundleError, Dims, ElemType, StageTensors, TensorInfo};
use crate::config::{Provider, RuntimeConfig};
use crate::sampler::{FlowSampler, Inpaint, Workspace};

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
fn build_session(
    env: &ort::environment::Environment,
    provider: Provider,
    cfg: &RuntimeConfig,
    file: &Path,
) -> ort::Result<Session> {
    let mut builder = Session::builder(env)?;
    if cfg.intra_op_threads > 0 {
        builder = builder.with_intra_threads(cfg.intra_op_threads)?;
    }
    builder = match provider {
        Provider::Cpu => builder,
        Provider::Cuda => builder.with_execution_providers([cuda_provider(cfg)])?,
        Provider::TensorRt => builder.with_execution_providers([tensorrt_provider(cfg)])?,
    };
    builder.commit_from_file(file)
}

#[cfg(feature = "cuda")]
fn cuda_provider(cfg: &RuntimeConfig) -> ort::ep::ExecutionProviderDispatch {
    ort::ep::CUDA::default()
        .with_device_id(cfg.device_id)
        .build()
        .error_on_failure()
}

#[cfg(feature = "tensorrt")]
fn tensorrt_provider(cfg: &RuntimeConfig) -> ort::ep::ExecutionProviderDispatch {
    let cache = cfg.trt_cache_dir.display().to_string();
    ort::ep::TensorRT::default()
        .with_device_id(cfg.device_id)
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
fn cuda_provider(_cfg: &RuntimeConfig) -> ort::ep::ExecutionProviderDispatch {
    ort::ep::CPU::default().build().error_on_failure()
}

#[cfg(not(feature = "tensorrt"))]
fn tensorrt_provider(_cfg: &RuntimeConfig) -> ort::ep::ExecutionProviderDispatch {
    ort::ep::CPU::default().build().error_on_failure()
}

fn feature_enabled(provider: Provider) -> bool {
    match provider {
        Provider::Cpu => true,
        Provider::Cuda => cfg!(feature = "cuda"),
        Provider::TensorRt => cfg!(feature = "tensorrt"),
    }
}

fn elem_of(t: &TensorElementType) -> ElemType {
    match t {
        TensorElementType::Float32 => ElemType::F32,
        TensorElementType::Float16 => ElemType::F16,
        TensorElementType::Float64 => ElemType::F64,
        TensorElementType::Int64 => ElemType::I64,
        TensorElementType::Int32 => ElemType::I32,
        TensorElementType::Uint8 => ElemType::U8,
        TensorElementType::Bool => ElemType::Bool,
        _ => ElemType::Other,
    }
}

fn outlet_infos<'a>(outlets: impl Iterator<Item = (&'a str, &'a ValueType)>) -> Vec<TensorInfo> {
    outlets
        .map(|(name, ty)| match ty {
            ValueType::Tensor { ty, shape, .. } => TensorInfo {
                name: name.to_string(),
                elem: elem_of(ty),
                shape: shape.to_vec(),
            },
            _ => TensorInfo {
                name: name.to_string(),
                elem: ElemType::Other,
                shape: Vec::new(),
            },
        })
        .collect()
}

fn session_tensors(session: &Session) -> StageTensors {
    StageTensors {
        inputs: outlet_infos(session.inputs().iter().map(|o| (o.name(), o.dtype()))),
        outputs: outlet_infos(session.outputs().iter().map(|o| (o.name(), o.dtype()))),
    }
}

/// A context output kept between the context stage and the denoise steps.
enum CacheData {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

struct CacheTensor {
    name: String,
    shape: Vec<i64>,
    data: CacheData,
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

pub struct ModelRuntime {
    dims: Dims,
    provider: Provider,
    encode: Session,
    context: Session,
    denoise: Session,
    decode: Option<Session>,
    names: StageNames,
    shapes: Shapes,
    state_mean: Vec<f32>,
    state_std: Vec<f32>,
    action_mean: Vec<f32>,
    action_std: Vec<f32>,
    latents: Vec<f32>,
    state_norm: Vec<f32>,
    cache: Vec<CacheTensor>,
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

struct StageNames {
    frames: String,
    latents_out: String,
    ctx_latents: String,
    ctx_state: String,
    ctx_tokens: String,
    dn_actions: String,
    dn_video: String,
    dn_time: String,
    dn_out_actions: String,
    dn_out_video: String,
    dec_in: String,
    dec_out: String,
}

struct Shapes {
    frames: Vec<i64>,
    latents: Vec<i64>,
    state: Vec<i64>,
    tokens: Vec<i64>,
    actions: Vec<i64>,
    video: Vec<i64>,
}

impl ModelRuntime {
    /// Loads every stage with the first provider that works, checks the bundle against the sessions and
    /// preallocates all buffers.
    pub fn load(bundle: &Bundle, cfg: &RuntimeConfig) -> Result<Self, RuntimeError> {
        let env = environment()?;
        let m = &bundle.manifest;
        let encode_file = bundle.path_of(&m.stages.encode.file);
        let (provider, encode) = Self::first_working_provider(env, cfg, &encode_file)?;
        let load = |stage: &str, file: &str| -> Result<Session, RuntimeError> {
            let path = bundle.path_of(file);
            build_session(env, provider, cfg, &path).map_err(|e| RuntimeError::Session {
                stage: stage.to_string(),
                file: path,
                message: e.to_string(),
            })
        };
        let context = load("context", &m.stages.context.file)?;
        let denoise = load("denoise", &m.stages.denoise.file)?;
        let decode = match &m.stages.decode {
            Some(d) => Some(load("decode", &d.file)?),
            None => None,
        };

        // The manifest against what the files really declare.
        let expected = bundle.expected_tensors();
        let actual_denoise = session_tensors(&denoise);
        let cache_infos = bundle::check_context_outputs(
            &m.stages.context.outputs,
            &session_tensors(&context).outputs,
            &actual_denoise.inputs,
        )?;
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
            }
            bundle::check_stage(stage, &exp, &session_tensors(session))?;
        }

        let d = bundle.dims();
        let cache = cache_infos
            .into_iter()
            .map(|info| {
                let len = info.shape.iter().product::<i64>() as usize;
                CacheTensor {
                    data: if info.elem == ElemType::I64 {
                        CacheData::I64(vec![0; len])
                    } else {
                        CacheData::F32(vec![0.0; len])
                    },
                    name: info.name,
                    shape: info.shape,
                }
            })
            .collect();
        let s = &m.stages;
        let dec = s.decode.as_ref();
        let names = StageNames {
            frames: s.encode.inputs.frames.clone(),
            latents_out: s.encode.outputs.latents.clone(),
            ctx_latents: s.context.inputs.latents.clone(),
            ctx_state: s.context.inputs.state.clone(),
            ctx_tokens: s.context.inputs.tokens.clone(),
            dn_actions: s.denoise.inputs.actions.clone(),
            dn_video: s.denoise.inputs.video.clone(),
            dn_time: s.denoise.inputs.time.clone(),
            dn_out_actions: s.denoise.outputs.actions.clone(),
            dn_out_video: s.denoise.outputs.video.clone(),
            dec_in: dec.map(|x| x.inputs.latents.clone()).unwrap_or_default(),
            dec_out: dec.map(|x| x.outputs.frames.clone()).unwrap_or_default(),
        };
        let enc = expected.get("encode").cloned().unwrap_or_default();
        let dn = expected.get("denoise").cloned().unwrap_or_default();
        let ctx = expected.get("context").cloned().unwrap_or_default();
        let shapes = Shapes {
            frames: enc.inputs[0].shape.clone(),
            latents: enc.outputs[0].shape.clone(),
            state: ctx.inputs[1].shape.clone(),
            tokens: ctx.inputs[2].shape.clone(),
            actions: dn.inputs[0].shape.clone(),
            video: dn.inputs[1].shape.clone(),
        };
        Ok(ModelRuntime {
            dims: d,
            provider,
            encode,
            context,
            denoise,
            decode,
            names,
            shapes,
            state_mean: m.state.mean.clone(),
            state_std: m.state.std.clone(),
            action_mean: m.action.mean.clone(),
            action_std: m.action.std.clone(),
            latents: vec![0.0; d.cameras * d.context_frames * d.latent_len()],
            state_norm: vec![0.0; d.state],
            cache,
            x_actions: vec![0.0; d.action_len()],
            x_video: vec![0.0; d.video_latent_len()],
            work: Workspace::new(d.action_len(), d.video_latent_len()),
            noise_actions: vec![0.0; d.action_len()],
            prefix_norm: vec![0.0; d.action_len()],
            prefix_weight: vec![0.0; d.action_len()],
        })
    }

    /// Tries the providers in order on the first stage; the one that works runs every stage.
    fn first_working_provider(
        env: &ort::environment::Environment,
        cfg: &RuntimeConfig,
        file: &Path,
    ) -> Result<(Provider, Session), RuntimeError> {
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
            match build_session(env, provider, cfg, file) {
                Ok(session) => {
                    if provider == Provider::Cpu && cfg.require_accelerator {
                        return Err(RuntimeError::NoAccelerator {
                            tried: failures.join("; "),
                        });
                    }
                    tracing::info!(provider = provider.name(), "execution provider in use");
                    return Ok((provider, session));
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

    fn infer_from_initial(
        &mut self,
        input: &ModelInput,
        sampler: &FlowSampler,
        output: &mut ModelOutput,
    ) -> Result<StageTimings, RuntimeError> {
        let start = Instant::now();
        let mut timings = StageTimings::default();

        // encode
        {
            let outputs = self
                .encode
                .run(ort::inputs![
                    self.names.frames.as_str() => TensorRef::from_array_view((self.shapes.frames.as_slice(), input.frames.as_slice())).map_err(|e| run_err("encode", e))?
                ])
                .map_err(|e| run_err("encode", e))?;
            copy_output(
                "encode",
                &outputs,
                &self.names.latents_out,
                &mut self.latents,
            )?;
        }
        output.observed_latents.copy_from_slice(&self.latents);
        if input.monitor_used.iter().any(|u| *u) {
            // The monitor's real frames at predicted times that no window holds: the same stage,
            // one more run (the frames buffer has the window's shape).
            let outputs = self
                .encode
                .run(ort::inputs![
                    self.names.frames.as_str() => TensorRef::from_array_view((self.shapes.frames.as_slice(), input.monitor_frames.as_slice())).map_err(|e| run_err("encode", e))?
                ])
                .map_err(|e| run_err("encode", e))?;
            copy_output(
                "encode",
                &outputs,
                &self.names.latents_out,
                &mut output.monitor_latents,
            )?;
        }
        let t_encode = Instant::now();
        timings.encode_s = (t_encode - start).as_secs_f64();

        // context, once per chunk
        for (i, q) in input.state.iter().enumerate() {
            self.state_norm[i] = ((*q as f32) - self.state_mean[i]) / self.state_std[i];
        }
        {
            let outputs = self
                .context
                .run(ort::inputs![
                    self.names.ctx_latents.as_str() => TensorRef::from_array_view((self.shapes.latents.as_slice(), self.latents.as_slice())).map_err(|e| run_err("context", e))?,
                    self.names.ctx_state.as_str() => TensorRef::from_array_view((self.shapes.state.as_slice(), self.state_norm.as_slice())).map_err(|e| run_err("context", e))?,
                    self.names.ctx_tokens.as_str() => TensorRef::from_array_view((self.shapes.tokens.as_slice(), input.tokens.as_slice())).map_err(|e| run_err("context", e))?
                ])
                .map_err(|e| run_err("context", e))?;
            for c in &mut self.cache {
                match &mut c.data {
                    CacheData::F32(buf) => copy_output("context", &outputs, &c.name, buf)?,
                    CacheData::I64(buf) => copy_output("context", &outputs, &c.name, buf)?,
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
                names,
                shapes,
                cache,
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
            sampler.integrate_inpainting(
                x_actions,
                x_video,
                work,
                inpaint,
                |t, xa, xv, va, vv| {
                    let time = [t];
                    let mut feeds: Vec<(Cow<'_, str>, SessionInputValue<'_>)> =
                        Vec::with_capacity(3 + cache.len());
                    feeds.push((
                        Cow::from(names.dn_actions.as_str()),
                        feed(&shapes.actions, xa)?,
                    ));
                    feeds.push((Cow::from(names.dn_video.as_str()), feed(&shapes.video, xv)?));
                    feeds.push((Cow::from(names.dn_time.as_str()), feed(&TIME_SHAPE, &time)?));
                    for c in cache.iter() {
                        let value = match &c.data {
                            CacheData::F32(b) => feed(&c.shape, b)?,
                            CacheData::I64(b) => feed(&c.shape, b)?,
                        };
                        feeds.push((Cow::from(c.name.as_str()), value));
                    }
                    let outputs = denoise.run(feeds).map_err(|e| run_err("denoise", e))?;
                    copy_output("denoise", &outputs, &names.dn_out_actions, va)?;
                    copy_output("denoise", &outputs, &names.dn_out_video, vv)?;
                    Ok::<(), RuntimeError>(())
                },
            )?;
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
        if let Some(decode) = self.decode.as_mut().filter(|_| input.decode) {
            let outputs = decode
                .run(ort::inputs![
                    self.names.dec_in.as_str() => TensorRef::from_array_view((self.shapes.video.as_slice(), self.x_video.as_slice())).map_err(|e| run_err("decode", e))?
                ])
                .map_err(|e| run_err("decode", e))?;
            copy_output("decode", &outputs, &self.names.dec_out, &mut output.frames)?;
            output.frames_decoded = true;
        }
        let end = Instant::now();
        timings.decode_s = (end - t_denoise).as_secs_f64();
        timings.total_s = (end - start).as_secs_f64();
        Ok(timings)
    }
}

const TIME_SHAPE: [i64; 1] = [1];

/// A borrowed view of a preallocated buffer as a denoise input (no copy).
fn feed<'a, T: ort::value::PrimitiveTensorElementType + Clone + std::fmt::Debug + 'static>(
    shape: &'a [i64],
    data: &'a [T],
) -> Result<SessionInputValue<'a>, RuntimeError> {
    Ok(TensorRef::from_array_view((shape, data))
        .map_err(|e| run_err("denoise", e))?
        .into())
}

fn copy_output<T: ort::value::PrimitiveTensorElementType + Copy + std::fmt::Debug>(
    stage: &str,
    outputs: &ort::session::SessionOutputs<'_>,
    name: &str,
    dst: &mut [T],
) -> Result<(), RuntimeError> {
    let value = outputs.get(name).ok_or_else(|| RuntimeError::Run {
        stage: stage.to_string(),
        message: format!("output `{name}` is missing"),
    })?;
    let (_, data) = value
        .try_extract_tensor::<T>()
        .map_err(|e| run_err(stage, e))?;
    if data.len() != dst.len() {
        return Err(RuntimeError::OutputSize {
            stage: stage.to_string(),
            tensor: name.to_string(),
            got: data.len(),
            expected: dst.len(),
        });
    }
    dst.copy_from_slice(data);
    Ok(())
}
