//! The inference worker: a thread that owns the policy and runs one chunk at a time, so the control loop
//! (subscriptions, publishing, safety) never waits for the model. One job buffer travels between the two
//! threads, so nothing is allocated per chunk.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::thread::JoinHandle;

use crate::bundle::Dims;
use crate::policy::Policy;
use crate::runtime::{ModelInput, ModelOutput, StageTimings};

/// One inference: its input (filled by the controller), its output, and what the controller needs to
/// judge the result when it comes back.
pub struct Job {
    pub input: ModelInput,
    pub output: ModelOutput,
    /// Observation stamp the chunk is anchored to.
    pub stamp: f64,
    /// Node-clock time the inference started (latency is measured on the node's clock).
    pub started: f64,
    /// The controller's epoch when the inference started: a result from an older epoch (a disable, an
    /// enable, a reset, a new instruction or a stale hold came in between) is never commanded.
    pub epoch: u64,
    pub steps: usize,
    /// Forget the model's state carried across chunks before this inference (set by the controller after
    /// a reset, a new instruction, a hold that forgot the window or a new goal; format 2 bundles).
    pub clear_model_state: bool,
}

impl Job {
    /// `decoded`: the bundle has a decode stage; `steps`: denoising steps per chunk.
    pub fn new(dims: &Dims, decoded: bool, steps: usize) -> Self {
        Job {
            input: ModelInput::zeroed(dims),
            output: ModelOutput::zeroed(dims, decoded),
            stamp: 0.0,
            started: 0.0,
            epoch: 0,
            steps,
            clear_model_state: false,
        }
    }

    pub fn for_policy(policy: &Policy) -> Self {
        Job::new(policy.dims(), policy.has_decoder(), policy.sampler_steps())
    }
}

pub struct Done {
    pub job: Box<Job>,
    pub result: Result<StageTimings, String>,
}

enum Request {
    Infer(Box<Job>),
    Reset,
}

pub struct Worker {
    requests: Sender<Request>,
    results: Receiver<Done>,
    free: Option<Box<Job>>,
    thread: JoinHandle<()>,
}

impl Worker {
    /// `extra_latency_s` is slept after every inference (`debug_extra_latency_s`): a slower model, to test
    /// and measure execution under latency.
    pub fn spawn(mut policy: Policy, extra_latency_s: f64) -> std::io::Result<Self> {
        let extra_latency = std::time::Duration::from_secs_f64(extra_latency_s);
        let job = Box::new(Job::for_policy(&policy));
        let (requests, request_rx) = channel::<Request>();
        let (result_tx, results) = channel::<Done>();
        let thread = std::thread::Builder::new()
            .name("wam_inference".into())
            .spawn(move || {
                // Ends when the control loop drops its sender.
                while let Ok(request) = request_rx.recv() {
                    match request {
                        Request::Reset => policy.reset(),
                        Request::Infer(mut job) => {
                            if std::mem::take(&mut job.clear_model_state) {
                                policy.clear_model_state();
                            }
                            let result = policy
                                .process(&mut job.input, &mut job.output)
                                .map_err(|e| e.to_string());
                            if !extra_latency.is_zero() {
                                std::thread::sleep(extra_latency);
                            }
                            if result_tx.send(Done { job, result }).is_err() {
                                break;
                            }
                        }
                    }
                }
            })?;
        Ok(Worker {
            requests,
            results,
            free: Some(job),
            thread,
        })
    }

    pub fn has_died(&self) -> bool {
        self.thread.is_finished()
    }

    /// The job buffer, when no inference is running.
    pub fn free_job(&mut self) -> Option<&mut Job> {
        self.free.as_deref_mut()
    }

    pub fn return_job(&mut self, job: Box<Job>) {
        self.free = Some(job);
    }

    /// Submits the free job buffer (filled by the controller).
    pub fn submit(&mut self) {
        let Some(job) = self.free.take() else {
            return;
        };
        match self.requests.send(Request::Infer(job)) {
            Ok(()) => {}
            Err(std::sync::mpsc::SendError(Request::Infer(job))) => self.free = Some(job),
            Err(_) => {}
        }
    }

    /// Reseeds the sampler, in order with the inferences already submitted.
    pub fn send_reset(&mut self) {
        // A failed send means the thread is gone, which the control loop notices through has_died.
        let _ = self.requests.send(Request::Reset);
    }

    pub fn poll(&mut self) -> Option<Done> {
        self.results.try_recv().ok()
    }
}
