//! `wam_policy_node triton-repo <bundle> <out>`: a Triton Inference Server model repository for a bundle,
//! one model per stage (`<prefix><stage>/config.pbtxt` and `<prefix><stage>/1/model.onnx`), served by
//! Triton's ONNX Runtime backend with the TensorRT accelerator on a GPU server. The node's `remote`
//! backend then runs the same ONNX files there unchanged.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::bundle::{Bundle, ElemType, StageTensors, TensorInfo};
use crate::runtime::{onnx_tensors, RuntimeError};

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("stage `{stage}` tensor `{tensor}` is {elem:?}, which Triton's ONNX backend is not given here (float32, float16, int64 only)")]
    Type {
        stage: String,
        tensor: String,
        elem: ElemType,
    },
    #[error("`{0}` is not a usable model name prefix: letters, digits, `_` and `-` only")]
    Prefix(String),
}

/// How the repository's models are configured.
#[derive(Debug, Clone, Default)]
pub struct RepoOptions {
    /// Model names are `<prefix><stage>`.
    pub prefix: String,
    /// `KIND_CPU` instances and no accelerator (a server without GPU).
    pub cpu: bool,
    /// TensorRT builds fp16 engines (the node's `fp16` parameter, on the server).
    pub fp16: bool,
}

fn type_name(stage: &str, t: &TensorInfo) -> Result<&'static str, RepoError> {
    match t.elem {
        ElemType::F32 => Ok("TYPE_FP32"),
        ElemType::F16 => Ok("TYPE_FP16"),
        ElemType::I64 => Ok("TYPE_INT64"),
        elem => Err(RepoError::Type {
            stage: stage.to_string(),
            tensor: t.name.clone(),
            elem,
        }),
    }
}

fn tensor_list(stage: &str, list: &[TensorInfo]) -> Result<String, RepoError> {
    let mut out = String::new();
    for (i, t) in list.iter().enumerate() {
        let dims: Vec<String> = t.shape.iter().map(|d| d.max(&-1).to_string()).collect();
        let _ = writeln!(
            out,
            "  {{ name: {:?} data_type: {} dims: [ {} ] }}{}",
            t.name,
            type_name(stage, t)?,
            dims.join(", "),
            if i + 1 < list.len() { "," } else { "" }
        );
    }
    Ok(out)
}

/// config.pbtxt of one stage's model. `max_batch_size: 0`: the shapes are the ONNX file's, batch included
/// (the node sends whole tensors; batched guidance has a dynamic first dimension).
pub fn model_config(
    name: &str,
    stage: &str,
    tensors: &StageTensors,
    opts: &RepoOptions,
) -> Result<String, RepoError> {
    let mut cfg = format!(
        "# {stage} stage of a wam_policy bundle (wam_policy_node triton-repo)\n\
         name: {name:?}\nbackend: \"onnxruntime\"\nmax_batch_size: 0\n\
         input [\n{}]\noutput [\n{}]\n",
        tensor_list(stage, &tensors.inputs)?,
        tensor_list(stage, &tensors.outputs)?,
    );
    if opts.cpu {
        cfg.push_str("instance_group [ { kind: KIND_CPU count: 1 } ]\n");
    } else {
        let precision = if opts.fp16 { "FP16" } else { "FP32" };
        let _ = write!(
            cfg,
            "instance_group [ {{ kind: KIND_GPU count: 1 }} ]\n\
             # TensorRT through ONNX Runtime. The first load builds the engines (seconds to minutes); they\n\
             # are cached under trt_engine_cache_path: mount a volume there to keep them across restarts.\n\
             optimization {{ execution_accelerators {{ gpu_execution_accelerator: [ {{\n  \
             name: \"tensorrt\"\n  \
             parameters {{ key: \"precision_mode\" value: \"{precision}\" }}\n  \
             parameters {{ key: \"trt_engine_cache_enable\" value: \"true\" }}\n  \
             parameters {{ key: \"trt_engine_cache_path\" value: \"/tmp/wam_policy_trt/{name}\" }}\n\
             }} ] }} }}\n"
        );
    }
    Ok(cfg)
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RepoError + '_ {
    move |source| RepoError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes the repository under `out` (created; existing models of the same names are replaced) and
/// returns the model folders written.
pub fn write_repository(
    bundle: &Bundle,
    out: &Path,
    opts: &RepoOptions,
) -> Result<Vec<PathBuf>, RepoError> {
    if !opts
        .prefix
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(RepoError::Prefix(opts.prefix.clone()));
    }
    let s = &bundle.manifest.stages;
    let mut stages = vec![
        ("encode", s.encode.file.as_str()),
        ("context", s.context.file.as_str()),
        ("denoise", s.denoise.file.as_str()),
    ];
    if let Some(d) = &s.decode {
        stages.push(("decode", d.file.as_str()));
    }
    let mut written = Vec::new();
    for (stage, file) in stages {
        let onnx = bundle.path_of(file);
        let tensors = onnx_tensors(&onnx)?;
        let name = format!("{}{stage}", opts.prefix);
        let dir = out.join(&name);
        let version = dir.join("1");
        std::fs::create_dir_all(&version).map_err(io_err(&version))?;
        let config = model_config(&name, stage, &tensors, opts)?;
        let config_path = dir.join("config.pbtxt");
        std::fs::write(&config_path, config).map_err(io_err(&config_path))?;
        let model = version.join("model.onnx");
        std::fs::copy(&onnx, &model).map_err(io_err(&model))?;
        // Weights stored beside the graph keep their name: the graph refers to them by it.
        let data = PathBuf::from(format!("{}.data", onnx.display()));
        if let (true, Some(data_name)) = (data.is_file(), data.file_name()) {
            let to = version.join(data_name);
            std::fs::copy(&data, &to).map_err(io_err(&to))?;
        }
        written.push(dir);
    }
    Ok(written)
}
