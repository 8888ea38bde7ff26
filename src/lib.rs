//! wam_policy: deploys a World Action Model (one generative model that predicts future camera frames and the
//! next action chunk together) exported to ONNX, as a ROS 2 node.
//!
//! Data flow, one module per stage:
//! `config` (node parameters) and `bundle` (model manifest) -> `obs_window` (buffered camera frames and joint
//! states) -> `preprocess` (encoding conversion, resize, normalization into preallocated NCHW buffers) ->
//! `runtime` (ONNX Runtime sessions and execution providers) driven by `sampler` (flow matching: Euler,
//! Heun or UniPC) -> `trajectory` (action chunk -> timed joint trajectory) -> `safety` (limits, jumps,
//! NaN) -> `ros` (the thin r2r layer: subscriptions, publishers, services, parameters). `policy` ties the
//! plain-Rust stages together so that everything but `ros` is testable without a ROS graph.

pub mod action_space;
pub mod bad_input;
pub mod bundle;
pub mod cdr;
pub mod config;
pub mod controller;
pub mod execution;
pub mod kinematics;
pub mod lifecycle;
pub mod model_state;
pub mod monitor;
pub mod obs_window;
pub mod policy;
pub mod preprocess;
pub mod preview;
pub mod record;
pub mod remote;
pub mod runtime;
pub mod safety;
pub mod sampler;
pub mod stage;
pub mod stats;
pub mod task;
pub mod tokenizer;
pub mod trajectory;
pub mod triton_repo;
pub mod urdf;
pub mod worker;

#[cfg(feature = "ros")]
pub mod ros;
