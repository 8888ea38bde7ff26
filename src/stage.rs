//! One bundle stage's execution, wherever it runs: an ONNX Runtime session in this process with its
//! inputs and outputs bound once to preallocated tensors (IoBinding), or the same ONNX file served by a
//! Triton Inference Server (`backend: remote`, [`crate::remote`]). The runtime feeds named host buffers
//! and reads named outputs; it does not know which.

use half::f16;
use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::session::{IoBinding, NoSelectedOutputs, RunOptions, Session};
use ort::value::{DynTensor, DynTensorValueType, TensorElementType, ValueType};

use crate::bundle::{ElemType, StageTensors, TensorInfo};
use crate::remote::RemoteStage;

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error(transparent)]
    Ort(#[from] ort::Error),
    #[error("`{0}` is not an input of this stage")]
    UnknownInput(String),
    #[error("output `{0}` is missing")]
    MissingOutput(String),
    #[error("output `{name}` is {got}, expected {expected}")]
    OutputType {
        name: String,
        got: &'static str,
        expected: &'static str,
    },
    #[error("input `{name}` is {got}, and was {expected} on the previous run")]
    InputType {
        name: String,
        got: &'static str,
        expected: &'static str,
    },
    /// The Triton server refused, failed or did not answer in time.
    #[error("{0}")]
    Remote(String),
    #[error("{0} (this stage runs a CUDA graph; cuda_graph false runs it without)")]
    GraphRun(ort::Error),
    /// The runtime then builds the stage again without a graph.
    #[error("no GPU memory for the fixed tensors a CUDA graph needs ({0})")]
    NoDeviceMemory(ort::Error),
    /// A captured CUDA graph replays fixed shapes at fixed addresses; a new shape cannot be honoured.
    #[error(
        "input `{name}` changed shape from {was:?} to {now:?}, which a CUDA graph cannot replay (set cuda_graph false)"
    )]
    GraphShape {
        name: String,
        was: Vec<i64>,
        now: Vec<i64>,
    },
}

/// A borrowed input buffer in the element type the stage declares.
#[derive(Clone, Copy)]
pub enum InData<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    I64(&'a [i64]),
}

/// A borrowed view of an output after a run.
pub enum OutData<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    I64(&'a [i64]),
}

impl OutData<'_> {
    pub fn type_name(&self) -> &'static str {
        match self {
            OutData::F32(_) => "float32",
            OutData::F16(_) => "float16",
            OutData::I64(_) => "int64",
        }
    }
}

/// One named input of a run.
pub struct Feed<'a> {
    pub name: &'a str,
    pub shape: &'a [i64],
    pub data: InData<'a>,
}

pub enum Stage {
    // Boxed: both are large and of different sizes.
    Local(Box<LocalStage>),
    Remote(Box<RemoteStage>),
}

impl Stage {
    /// The inputs and outputs the stage declares (the ONNX file's, or the server's model metadata).
    pub fn tensors(&self) -> StageTensors {
        match self {
            Stage::Local(s) => s.tensors(),
            Stage::Remote(s) => s.tensors().clone(),
        }
    }

    /// One run on `feeds`; read the results with [`Stage::output`].
    pub fn run(&mut self, feeds: &[Feed<'_>]) -> Result<(), StageError> {
        for f in feeds {
            self.feed(f)?;
        }
        self.run_fed()
    }

    /// Sets one input of the next run, without a list of feeds to build (the denoise loop feeds its
    /// inputs one by one). Feed every input before each [`Stage::run_fed`]: a remote request carries
    /// only what was fed since the last one.
    pub fn feed(&mut self, feed: &Feed<'_>) -> Result<(), StageError> {
        match self {
            Stage::Local(s) => s.feed(feed),
            Stage::Remote(s) => {
                s.feed(feed);
                Ok(())
            }
        }
    }

    /// Selects binding set `k` for the feeds, runs and outputs that follow ([`LocalStage::select`]); a
    /// remote stage sends every input anyway and has one set.
    pub fn select(&mut self, k: usize) -> Result<(), StageError> {
        match self {
            Stage::Local(s) => s.select(k),
            Stage::Remote(_) => Ok(()),
        }
    }

    /// Times input `name`'s contents changed and were written (in process; None remotely, where every
    /// request carries every input).
    pub fn input_writes(&self, name: &str) -> Option<u64> {
        match self {
            Stage::Local(s) => Some(s.input_writes(name)),
            Stage::Remote(_) => None,
        }
    }

    /// One run on the inputs fed since the last one.
    pub fn run_fed(&mut self) -> Result<(), StageError> {
        match self {
            Stage::Local(s) => s.execute(),
            Stage::Remote(s) => s.run(),
        }
    }

    /// Output `name` of the last successful run.
    pub fn output(&self, name: &str) -> Result<OutData<'_>, StageError> {
        match self {
            Stage::Local(s) => s.output(name),
            Stage::Remote(s) => s.output(name),
        }
    }
}

/// Where a stage's bound tensors live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Host tensors bound to the session. `accelerated`: a GPU provider runs it, so the host buffers
    /// are pinned and a changed input is bound again (ONNX Runtime copies it to the device at bind time,
    /// into memory it owns).
    Host { accelerated: bool },
    /// Every input and output also has a tensor allocated once in `memory` and bound at that fixed
    /// address, refilled from its host buffer by a copy when it changes and copied back after each run:
    /// what a CUDA graph needs, as it replays the kernels on the addresses it captured. `graph`: the
    /// session was built with a CUDA graph; the first run, which sizes the outputs, is not captured, and
    /// a later change of shape is an error rather than a replay on the wrong shape.
    Fixed { memory: FixedMemory, graph: bool },
}

/// The memory of [`Placement::Fixed`] tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FixedMemory {
    /// GPU memory of the CUDA or TensorRT provider.
    Cuda,
    /// Host memory: the same path on a machine without a GPU (tests).
    Cpu,
}

/// The run option that keeps one run out of CUDA graph capture and replay (ONNX Runtime's
/// `kOrtRunOptionsConfigCudaGraphAnnotation`; -1 skips).
const GPU_GRAPH_ID: &str = "gpu_graph_id";

/// A tensor the binding holds; None until the first run tells its shape. `fixed`: its copy at a fixed
/// address ([`Placement::Fixed`]), the one bound.
struct Bound {
    name: String,
    tensor: Option<DynTensor>,
    fixed: Option<DynTensor>,
    /// Times an input's contents were written because they changed (what a GPU provider uploads).
    writes: u64,
}

impl Bound {
    fn new(name: &str) -> Self {
        Bound {
            name: name.to_string(),
            tensor: None,
            fixed: None,
            writes: 0,
        }
    }
}

/// One IoBinding of a session with its tensors. A stage fed alternately with two sets of inputs (the
/// two branches of guidance run one after the other) keeps one set per branch, so an input that only
/// changes per chunk is written once per chunk and branch, not on every step.
struct BindingSet {
    binding: IoBinding,
    inputs: Vec<Bound>,
    outputs: Vec<Bound>,
    /// Outputs are bound to preallocated tensors (false until a run has sized them).
    outputs_bound: bool,
    /// With a CUDA graph: this set's graph (`gpu_graph_id` = its index + 1; ONNX Runtime keeps one
    /// graph per id, each on its own set's addresses).
    graph_run: Option<RunOptions<NoSelectedOutputs>>,
}

impl BindingSet {
    fn new(session: &Session, index: usize, graph: bool) -> Result<Self, StageError> {
        let graph_run = if graph {
            let mut options = RunOptions::new()?;
            options.set(GPU_GRAPH_ID, (index + 1).to_string())?;
            Some(options)
        } else {
            None
        };
        Ok(BindingSet {
            binding: session.create_binding()?,
            inputs: session
                .inputs()
                .iter()
                .map(|o| Bound::new(o.name()))
                .collect(),
            outputs: session
                .outputs()
                .iter()
                .map(|o| Bound::new(o.name()))
                .collect(),
            outputs_bound: false,
            graph_run,
        })
    }
}

/// An in-process session with IoBinding: every input is an owned tensor bound once and refilled in
/// place, every output is written by ONNX Runtime into a tensor allocated after the first run, in one
/// binding set per branch of inputs ([`LocalStage::select`]). What a
/// run still allocates is small and fixed: the list of bound outputs that ort's `run_binding` returns
/// and, with [`Placement::Fixed`], ort's bookkeeping for each copy.
pub struct LocalStage {
    session: Session,
    /// Set 0, and one more per other branch selected ([`LocalStage::select`]).
    sets: Vec<BindingSet>,
    active: usize,
    /// With an accelerator, a bound host input is copied to the device when it is bound: a changed input
    /// is bound again. On the CPU the session reads the bound tensor's memory, so refilling it suffices.
    rebind: bool,
    cpu: MemoryInfo<'static>,
    /// Where the bound host tensors live: CUDA pinned memory with a GPU provider (copies to and from
    /// the device without a staging copy), else ordinary memory.
    input_memory: Allocator,
    output_memory: Allocator,
    /// [`Placement::Fixed`]: the allocator of the fixed tensors and where ONNX Runtime puts the outputs
    /// of the sizing run.
    fixed: Option<(Allocator, MemoryInfo<'static>)>,
    /// With a CUDA graph: the options of runs kept out of capture (the sizing run).
    uncaptured: Option<RunOptions<NoSelectedOutputs>>,
}

/// A CUDA pinned host allocator of the session for `kind` (input or output buffers); None where the
/// loaded ONNX Runtime or the machine has none, and ordinary memory serves.
fn pinned(session: &Session, device_id: i32, kind: MemoryType) -> Option<Allocator> {
    let info = MemoryInfo::new(
        AllocationDevice::CUDA_PINNED,
        device_id,
        AllocatorType::Device,
        kind,
    )
    .ok()?;
    match Allocator::new(session, info) {
        Ok(a) => Some(a),
        Err(e) => {
            tracing::debug!(error = %e, "no CUDA pinned host memory; bound buffers are pageable");
            None
        }
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

/// The inputs and outputs an ONNX session declares.
pub fn session_tensors(session: &Session) -> StageTensors {
    StageTensors {
        inputs: outlet_infos(session.inputs().iter().map(|o| (o.name(), o.dtype()))),
        outputs: outlet_infos(session.outputs().iter().map(|o| (o.name(), o.dtype()))),
    }
}

fn tensor_elem(data: InData<'_>) -> TensorElementType {
    match data {
        InData::F32(_) => TensorElementType::Float32,
        InData::F16(_) => TensorElementType::Float16,
        InData::I64(_) => TensorElementType::Int64,
    }
}

fn elem_name(t: &TensorElementType) -> &'static str {
    match t {
        TensorElementType::Float32 => "float32",
        TensorElementType::Float16 => "float16",
        TensorElementType::Int64 => "int64",
        _ => "another type",
    }
}

/// Copies `src` into `dst` when they differ; true when it copied.
fn refill<T: PartialEq + Copy>(dst: &mut [T], src: &[T]) -> bool {
    if dst == src {
        return false;
    }
    dst.copy_from_slice(src);
    true
}

impl LocalStage {
    /// `placement`: where the bound tensors live ([`Placement`]); `device_id`: the GPU of a GPU provider.
    pub fn new(session: Session, placement: Placement, device_id: i32) -> Result<Self, StageError> {
        let (accelerated, rebind) = match placement {
            Placement::Host { accelerated } => (accelerated, accelerated),
            Placement::Fixed { memory, .. } => (memory == FixedMemory::Cuda, false),
        };
        let fixed = match placement {
            Placement::Host { .. } => None,
            Placement::Fixed {
                memory: FixedMemory::Cuda,
                ..
            } => {
                let info = MemoryInfo::new(
                    AllocationDevice::CUDA,
                    device_id,
                    AllocatorType::Device,
                    MemoryType::Default,
                )?;
                let allocator =
                    Allocator::new(&session, info.clone()).map_err(StageError::NoDeviceMemory)?;
                Some((allocator, info))
            }
            Placement::Fixed {
                memory: FixedMemory::Cpu,
                ..
            } => Some((
                Allocator::default(),
                MemoryInfo::new(
                    AllocationDevice::CPU,
                    0,
                    AllocatorType::Device,
                    MemoryType::Default,
                )?,
            )),
        };
        let uncaptured = match placement {
            Placement::Fixed { graph: true, .. } => {
                let mut options = RunOptions::new()?;
                options.set(GPU_GRAPH_ID, "-1")?;
                Some(options)
            }
            _ => None,
        };
        let (input_memory, output_memory) = if accelerated {
            (
                pinned(&session, device_id, MemoryType::CPUInput),
                pinned(&session, device_id, MemoryType::CPUOutput),
            )
        } else {
            (None, None)
        };
        let first = BindingSet::new(&session, 0, uncaptured.is_some())?;
        Ok(LocalStage {
            session,
            sets: vec![first],
            active: 0,
            rebind,
            cpu: MemoryInfo::new(
                AllocationDevice::CPU,
                0,
                AllocatorType::Device,
                MemoryType::CPUOutput,
            )?,
            input_memory: input_memory.unwrap_or_default(),
            output_memory: output_memory.unwrap_or_default(),
            fixed,
            uncaptured,
        })
    }

    /// True when the session replays a CUDA graph.
    pub fn graph(&self) -> bool {
        self.uncaptured.is_some()
    }

    /// Makes binding set `k` the one later feeds, runs and outputs use (created on first use).
    pub fn select(&mut self, k: usize) -> Result<(), StageError> {
        while self.sets.len() <= k {
            let set = BindingSet::new(&self.session, self.sets.len(), self.graph())?;
            self.sets.push(set);
        }
        self.active = k;
        Ok(())
    }

    /// Times input `name`'s contents changed and were written, over every binding set.
    pub fn input_writes(&self, name: &str) -> u64 {
        self.sets
            .iter()
            .flat_map(|s| s.inputs.iter().filter(|b| b.name == name))
            .map(|b| b.writes)
            .sum()
    }

    pub fn tensors(&self) -> StageTensors {
        session_tensors(&self.session)
    }

    /// Refills input `feed.name`'s bound tensor (bound anew on a first run or a new shape).
    pub fn feed(&mut self, feed: &Feed<'_>) -> Result<(), StageError> {
        let set = &mut self.sets[self.active];
        let Some(slot) = set.inputs.iter_mut().find(|b| b.name == feed.name) else {
            return Err(StageError::UnknownInput(feed.name.to_string()));
        };
        let elem = tensor_elem(feed.data);
        let fits = slot
            .tensor
            .as_ref()
            .is_some_and(|t| &**t.shape() == feed.shape && *t.data_type() == elem);
        if !fits {
            if let Some(t) = &slot.tensor {
                if *t.data_type() != elem {
                    return Err(StageError::InputType {
                        name: feed.name.to_string(),
                        got: elem_name(&elem),
                        expected: elem_name(t.data_type()),
                    });
                }
                if self.uncaptured.is_some() {
                    return Err(StageError::GraphShape {
                        name: feed.name.to_string(),
                        was: t.shape().to_vec(),
                        now: feed.shape.to_vec(),
                    });
                }
            }
            // First run, or a new shape: new tensors, and the outputs sized again.
            slot.tensor = Some(DynTensor::new(
                &self.input_memory,
                elem,
                feed.shape.to_vec(),
            )?);
            if let Some((allocator, _)) = &self.fixed {
                slot.fixed = Some(DynTensor::new(allocator, elem, feed.shape.to_vec())?);
            }
            set.outputs_bound = false;
        }
        let Some(tensor) = slot.tensor.as_mut() else {
            return Ok(());
        };
        let changed = match feed.data {
            InData::F32(src) => refill(tensor.try_extract_tensor_mut::<f32>()?.1, src),
            InData::F16(src) => refill(tensor.try_extract_tensor_mut::<f16>()?.1, src),
            InData::I64(src) => refill(tensor.try_extract_tensor_mut::<i64>()?.1, src),
        };
        if changed || !fits {
            slot.writes += 1;
        }
        match slot.fixed.as_mut() {
            // The bound tensor keeps its address; only its contents follow the host buffer.
            Some(fixed) => {
                if !fits || changed {
                    tensor.copy_into(&mut *fixed)?;
                }
                if !fits {
                    set.binding.bind_input(feed.name, &*fixed)?;
                }
            }
            None => {
                if !fits || (changed && self.rebind) {
                    set.binding.bind_input(feed.name, &*tensor)?;
                }
            }
        }
        Ok(())
    }

    pub fn run(&mut self, feeds: &[Feed<'_>]) -> Result<(), StageError> {
        for feed in feeds {
            self.feed(feed)?;
        }
        self.execute()
    }

    /// One run on the inputs as fed.
    pub fn execute(&mut self) -> Result<(), StageError> {
        let set = &mut self.sets[self.active];
        if set.outputs_bound {
            let ran = match &set.graph_run {
                Some(options) => self.session.run_binding_with_options(&set.binding, options),
                None => self.session.run_binding(&set.binding),
            };
            if let Err(e) = ran {
                // Capture happens in a run, not when the session is built: say what to turn off.
                return Err(match self.uncaptured {
                    Some(_) => StageError::GraphRun(e),
                    None => StageError::Ort(e),
                });
            }
            for out in &mut set.outputs {
                if let (Some(fixed), Some(host)) = (&out.fixed, out.tensor.as_mut()) {
                    fixed.copy_into(host)?;
                }
            }
            return Ok(());
        }
        // First run (or new input shapes): ONNX Runtime allocates the outputs; they tell the shapes of
        // the tensors bound for every later run. With a CUDA graph this run is not captured: the
        // addresses it writes to are not the ones later runs use.
        let sizing_memory = self.fixed.as_ref().map_or(&self.cpu, |(_, info)| info);
        set.binding.clear_outputs();
        for out in &set.outputs {
            set.binding
                .bind_output_to_device(&out.name, sizing_memory)?;
        }
        let mut sized = Vec::with_capacity(set.outputs.len());
        {
            let results = match &self.uncaptured {
                Some(options) => self
                    .session
                    .run_binding_with_options(&set.binding, options)?,
                None => self.session.run_binding(&set.binding)?,
            };
            for out in &set.outputs {
                let value = results
                    .get(&out.name)
                    .ok_or_else(|| StageError::MissingOutput(out.name.clone()))?;
                let (shape, elem) = match value.dtype() {
                    ValueType::Tensor { ty, shape, .. } => (shape.to_vec(), *ty),
                    _ => return Err(StageError::MissingOutput(out.name.clone())),
                };
                let mut tensor = DynTensor::new(&self.output_memory, elem, shape.clone())?;
                let fixed = match &self.fixed {
                    Some((allocator, _)) => {
                        // Where the result is may not be host memory: ort copies it across.
                        value
                            .view()
                            .downcast::<DynTensorValueType>()?
                            .copy_into(&mut tensor)?;
                        Some(DynTensor::new(allocator, elem, shape)?)
                    }
                    None => {
                        match elem {
                            TensorElementType::Float16 => copy_into::<f16>(value, &mut tensor)?,
                            TensorElementType::Int64 => copy_into::<i64>(value, &mut tensor)?,
                            _ => copy_into::<f32>(value, &mut tensor)?,
                        }
                        None
                    }
                };
                sized.push((tensor, fixed));
            }
        }
        set.binding.clear_outputs();
        for (out, (mut tensor, mut fixed)) in set.outputs.iter_mut().zip(sized) {
            match fixed.as_mut() {
                Some(f) => set.binding.bind_output(&out.name, f)?,
                None => set.binding.bind_output(&out.name, &mut tensor)?,
            }
            out.tensor = Some(tensor);
            out.fixed = fixed;
        }
        set.outputs_bound = true;
        Ok(())
    }

    pub fn output(&self, name: &str) -> Result<OutData<'_>, StageError> {
        let tensor = self.sets[self.active]
            .outputs
            .iter()
            .find(|b| b.name == name)
            .and_then(|b| b.tensor.as_ref())
            .ok_or_else(|| StageError::MissingOutput(name.to_string()))?;
        Ok(match tensor.data_type() {
            TensorElementType::Float16 => OutData::F16(tensor.try_extract_tensor::<f16>()?.1),
            TensorElementType::Int64 => OutData::I64(tensor.try_extract_tensor::<i64>()?.1),
            _ => OutData::F32(tensor.try_extract_tensor::<f32>()?.1),
        })
    }
}

fn copy_into<T: ort::value::PrimitiveTensorElementType + Copy + std::fmt::Debug>(
    value: &ort::value::DynValue,
    dst: &mut DynTensor,
) -> Result<(), StageError> {
    let (_, src) = value.try_extract_tensor::<T>()?;
    dst.try_extract_tensor_mut::<T>()?.1.copy_from_slice(src);
    Ok(())
}
