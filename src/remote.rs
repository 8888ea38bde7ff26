//! The `remote` backend: a bundle stage run on a Triton Inference Server (the KServe v2 HTTP protocol
//! with its binary tensor extension: a JSON header, then the raw little-endian tensor bytes). The sampler,
//! execution and safety stay in the node; only the stage runs go over the wire. A server that is down, slow
//! or failing makes the run fail with a message naming the model and the server, which the node turns
//! into a hold; the next chunk tries again.

use std::fmt::Write as _;
use std::io::Read as _;
use std::time::{Duration, Instant};

use half::f16;
use serde::Deserialize;

use crate::bundle::{ElemType, StageTensors, TensorInfo};
use crate::config::RemoteConfig;
use crate::stage::{Feed, InData, OutData, StageError};

/// The header that gives the JSON part's length in a binary tensor request or response.
const HEADER_LENGTH: &str = "Inference-Header-Content-Length";

#[derive(Deserialize)]
struct MetaTensor {
    name: String,
    datatype: String,
    #[serde(default)]
    shape: Vec<i64>,
}

#[derive(Deserialize)]
struct ModelMetadata {
    #[serde(default)]
    inputs: Vec<MetaTensor>,
    #[serde(default)]
    outputs: Vec<MetaTensor>,
}

#[derive(Deserialize, Default)]
struct OutParams {
    binary_data_size: Option<usize>,
}

#[derive(Deserialize)]
struct InferOutput {
    name: String,
    datatype: String,
    #[serde(default)]
    parameters: OutParams,
}

#[derive(Deserialize)]
struct InferResponse {
    #[serde(default)]
    outputs: Vec<InferOutput>,
}

#[derive(Deserialize)]
struct ErrorResponse {
    error: String,
}

/// KServe v2 datatype names.
fn elem_of(datatype: &str) -> ElemType {
    match datatype {
        "FP32" => ElemType::F32,
        "FP16" => ElemType::F16,
        "FP64" => ElemType::F64,
        "INT64" => ElemType::I64,
        "INT32" => ElemType::I32,
        "UINT8" => ElemType::U8,
        "BOOL" => ElemType::Bool,
        _ => ElemType::Other,
    }
}

fn datatype_of(data: InData<'_>) -> &'static str {
    match data {
        InData::F32(_) => "FP32",
        InData::F16(_) => "FP16",
        InData::I64(_) => "INT64",
    }
}

fn infos(list: Vec<MetaTensor>) -> Vec<TensorInfo> {
    list.into_iter()
        .map(|t| TensorInfo {
            elem: elem_of(&t.datatype),
            name: t.name,
            shape: t.shape,
        })
        .collect()
}

/// An output's values, kept between runs (resized only when the server's answer changes size).
enum OutBuf {
    F32(Vec<f32>),
    F16(Vec<f16>),
    I64(Vec<i64>),
}

/// Decodes little-endian `bytes` into `dst`, resizing it to fit.
fn decode<T: Copy + Default, const N: usize>(
    bytes: &[u8],
    dst: &mut Vec<T>,
    from: fn([u8; N]) -> T,
) {
    dst.resize(bytes.len() / N, T::default());
    for (d, c) in dst.iter_mut().zip(bytes.chunks_exact(N)) {
        let mut a = [0u8; N];
        a.copy_from_slice(c);
        *d = from(a);
    }
}

/// After a failed request (no connection, no answer in time, an error answer, an unusable one) the stage
/// waits this long before it asks the server again, doubling per failure up to `BACKOFF_MAX` (the node
/// asks for the next chunk as soon as one fails: a server that is down or failing must not be hammered,
/// nor flooded when it returns). The wait is spent in the next request, on the inference thread (the
/// control loop holds meanwhile), so every failed chunk is a real request and `inference_errors` counts
/// requests, not control ticks. A good answer resets it.
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

pub struct RemoteStage {
    agent: ureq::Agent,
    timeout_s: f64,
    /// No request before this instant (after a failed request), and the wait that led to it.
    backoff: Option<(Instant, Duration)>,
    /// `<url>` and the model's name, for messages.
    server: String,
    model: String,
    infer_url: String,
    tensors: StageTensors,
    /// The `"outputs": [...]` part of every request: all the model's outputs, as binary data.
    outputs_json: String,
    /// The inputs fed since the last run: their JSON descriptions (comma-separated) and their bytes.
    fed_json: String,
    fed_data: Vec<u8>,
    header: String,
    body: Vec<u8>,
    response: Vec<u8>,
    outputs: Vec<(String, OutBuf)>,
}

/// A configured number of seconds as a duration, at most a day (no panic on absurd values: the
/// parameters are checked positive, a library caller's config may not be).
fn seconds(s: f64) -> Duration {
    Duration::try_from_secs_f64(s)
        .unwrap_or(Duration::ZERO)
        .min(Duration::from_secs(86_400))
}

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build()
        .into()
}

/// GET `url`: the body when the status is 200, else what went wrong.
fn get(agent: &ureq::Agent, url: &str) -> Result<Vec<u8>, String> {
    let mut resp = agent.get(url).call().map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let mut body = Vec::new();
    resp.body_mut()
        .as_reader()
        .read_to_end(&mut body)
        .map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(error_text(status, &body));
    }
    Ok(body)
}

fn error_text(status: u16, body: &[u8]) -> String {
    match serde_json::from_slice::<ErrorResponse>(body) {
        Ok(e) => format!("HTTP {status}: {}", e.error),
        Err(_) => format!("HTTP {status}: {}", String::from_utf8_lossy(body).trim()),
    }
}

impl RemoteStage {
    /// Waits up to `cfg.ready_timeout_s` for the server and the model `<prefix><stage>` to be ready, then
    /// reads the model's inputs and outputs from its metadata.
    pub fn connect(cfg: &RemoteConfig, stage: &str) -> Result<Self, StageError> {
        let server = cfg.url.trim_end_matches('/').to_string();
        let model = format!("{}{stage}", cfg.model_prefix);
        let agent = agent(seconds(cfg.timeout_s));
        let model_url = format!("{server}/v2/models/{model}");
        let deadline = Instant::now() + seconds(cfg.ready_timeout_s);
        let mut logged = false;
        loop {
            let ready = get(&agent, &format!("{server}/v2/health/ready"))
                .and_then(|_| get(&agent, &format!("{model_url}/ready")));
            match ready {
                Ok(_) => break,
                Err(why) if Instant::now() >= deadline => {
                    return Err(StageError::Remote(format!(
                        "Triton model `{model}` at {server} is not ready after {:.1} s \
                         (remote_ready_timeout_s): {why}",
                        cfg.ready_timeout_s
                    )));
                }
                Err(why) => {
                    if !logged {
                        tracing::info!(%server, %model, %why, "waiting for the Triton server");
                        logged = true;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
        let meta: ModelMetadata = get(&agent, &model_url)
            .and_then(|body| serde_json::from_slice(&body).map_err(|e| e.to_string()))
            .map_err(|why| {
                StageError::Remote(format!(
                    "Triton model `{model}` at {server}: no metadata: {why}"
                ))
            })?;
        let tensors = StageTensors {
            inputs: infos(meta.inputs),
            outputs: infos(meta.outputs),
        };
        let mut outputs_json = String::from("\"outputs\":[");
        for (i, t) in tensors.outputs.iter().enumerate() {
            if i > 0 {
                outputs_json.push(',');
            }
            let name = serde_json::to_string(&t.name).unwrap_or_default();
            let _ = write!(
                outputs_json,
                "{{\"name\":{name},\"parameters\":{{\"binary_data\":true}}}}"
            );
        }
        outputs_json.push(']');
        let outputs = tensors
            .outputs
            .iter()
            .map(|t| {
                let buf = match t.elem {
                    ElemType::F16 => OutBuf::F16(Vec::new()),
                    ElemType::I64 => OutBuf::I64(Vec::new()),
                    _ => OutBuf::F32(Vec::new()),
                };
                (t.name.clone(), buf)
            })
            .collect();
        tracing::info!(%server, %model, "Triton model ready");
        Ok(RemoteStage {
            agent,
            timeout_s: cfg.timeout_s,
            backoff: None,
            infer_url: format!("{model_url}/infer"),
            server,
            model,
            tensors,
            outputs_json,
            fed_json: String::new(),
            fed_data: Vec::new(),
            header: String::new(),
            body: Vec::new(),
            response: Vec::new(),
            outputs,
        })
    }

    pub fn tensors(&self) -> &StageTensors {
        &self.tensors
    }

    /// A transport failure in words an operator reads: a timeout names the parameter.
    fn transport(&self, e: &ureq::Error) -> String {
        match e {
            ureq::Error::Timeout(_) => {
                format!("no answer within remote_timeout_s = {} s", self.timeout_s)
            }
            e => e.to_string(),
        }
    }

    /// Records a failed request (the next one waits, doubling, before it is sent) as the stage's error,
    /// naming the model, the server and when it is asked again.
    fn back_off(&mut self, why: String) -> StageError {
        let wait = match &self.backoff {
            Some((_, w)) => (*w * 2).min(BACKOFF_MAX),
            None => BACKOFF_FIRST,
        };
        self.backoff = Some((Instant::now() + wait, wait));
        StageError::Remote(format!(
            "Triton model `{}` at {}: {why} (asked again in {:.2} s)",
            self.model,
            self.server,
            wait.as_secs_f64()
        ))
    }

    /// Adds one input to the next request.
    pub fn feed(&mut self, f: &Feed<'_>) {
        if !self.fed_json.is_empty() {
            self.fed_json.push(',');
        }
        let name = serde_json::to_string(f.name).unwrap_or_default();
        let bytes = match f.data {
            InData::F32(d) => d.len() * 4,
            InData::F16(d) => d.len() * 2,
            InData::I64(d) => d.len() * 8,
        };
        let _ = write!(
            self.fed_json,
            "{{\"name\":{name},\"shape\":{:?},\"datatype\":\"{}\",\"parameters\":{{\"binary_data_size\":{bytes}}}}}",
            f.shape,
            datatype_of(f.data)
        );
        match f.data {
            InData::F32(d) => d
                .iter()
                .for_each(|x| self.fed_data.extend_from_slice(&x.to_le_bytes())),
            InData::F16(d) => d
                .iter()
                .for_each(|x| self.fed_data.extend_from_slice(&x.to_le_bytes())),
            InData::I64(d) => d
                .iter()
                .for_each(|x| self.fed_data.extend_from_slice(&x.to_le_bytes())),
        }
    }

    /// One request with the inputs fed since the last one (forgotten after it, whatever its outcome).
    pub fn run(&mut self) -> Result<(), StageError> {
        self.header.clear();
        self.header.push_str("{\"inputs\":[");
        self.header.push_str(&self.fed_json);
        self.header.push_str("],");
        self.header.push_str(&self.outputs_json);
        self.header.push('}');
        self.body.clear();
        self.body.extend_from_slice(self.header.as_bytes());
        self.body.extend_from_slice(&self.fed_data);
        self.fed_json.clear();
        self.fed_data.clear();
        if let Some((until, _)) = self.backoff {
            std::thread::sleep(until.saturating_duration_since(Instant::now()));
        }
        match self.exchange() {
            Ok(()) => {
                self.backoff = None;
                Ok(())
            }
            Err(why) => Err(self.back_off(why)),
        }
    }

    /// Sends the assembled request and reads every output from the answer; a failure, in words.
    fn exchange(&mut self) -> Result<(), String> {
        let sent = self
            .agent
            .post(&self.infer_url)
            .header(HEADER_LENGTH, self.header.len().to_string())
            .content_type("application/octet-stream")
            .send(&self.body[..]);
        let mut resp = sent.map_err(|e| self.transport(&e))?;
        let status = resp.status().as_u16();
        let json_len = resp
            .headers()
            .get(HEADER_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        self.response.clear();
        if let Err(e) = resp.body_mut().as_reader().read_to_end(&mut self.response) {
            return Err(format!("reading the answer: {e}"));
        }
        if status != 200 {
            return Err(error_text(status, &self.response));
        }
        let json_len = json_len
            .unwrap_or(self.response.len())
            .min(self.response.len());
        let parsed: InferResponse = serde_json::from_slice(&self.response[..json_len])
            .map_err(|e| format!("unreadable response: {e}"))?;
        for (name, _) in &self.outputs {
            if !parsed.outputs.iter().any(|o| o.name == *name) {
                // Never leave the previous run's values standing in for this one's.
                return Err(format!("the response lacks output `{name}`"));
            }
        }
        let mut offset = json_len;
        for out in parsed.outputs {
            let Some(size) = out.parameters.binary_data_size else {
                return Err(format!("output `{}` came without binary data", out.name));
            };
            let Some(bytes) = self.response.get(offset..offset + size) else {
                return Err(format!("output `{}` is cut short", out.name));
            };
            offset += size;
            let Some((_, buf)) = self.outputs.iter_mut().find(|(n, _)| *n == out.name) else {
                continue;
            };
            match (buf, out.datatype.as_str()) {
                (OutBuf::F32(b), "FP32") => decode(bytes, b, f32::from_le_bytes),
                (OutBuf::F16(b), "FP16") => decode(bytes, b, f16::from_le_bytes),
                (OutBuf::I64(b), "INT64") => decode(bytes, b, i64::from_le_bytes),
                (_, other) => {
                    return Err(format!(
                        "output `{}` is {other}, not the type its metadata declares",
                        out.name
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn output(&self, name: &str) -> Result<OutData<'_>, StageError> {
        let (_, buf) = self
            .outputs
            .iter()
            .find(|(n, _)| n == name)
            .ok_or_else(|| StageError::MissingOutput(name.to_string()))?;
        Ok(match buf {
            OutBuf::F32(b) => OutData::F32(b),
            OutBuf::F16(b) => OutData::F16(b),
            OutBuf::I64(b) => OutData::I64(b),
        })
    }
}
