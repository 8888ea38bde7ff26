//! The policy's life in one place: start-up (resolve cameras and joints against the bundle, load and check
//! the model, warm up), the steady state (one chunk per call into preallocated buffers), and shutdown (drop).

use crate::action_space::ActionSpace;
use crate::bundle::{Bundle, BundleError, Dims};
use crate::config::{JointLimits, NodeConfig};
use crate::runtime::{ModelInput, ModelOutput, ModelRuntime, RuntimeError, StageTimings};
use crate::sampler::{FlowSampler, SamplerError};
use crate::tokenizer::TokenizerError;

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error("parameter `{name}`: {problem}")]
    Param { name: String, problem: String },
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("sampler (bundle `sampler` with parameter `sampler_steps`): {0}")]
    Sampler(#[from] SamplerError),
}

fn param(name: &str, problem: impl Into<String>) -> SetupError {
    SetupError::Param {
        name: name.to_string(),
        problem: problem.into(),
    }
}

/// How the node's inputs and outputs line up with the bundle.
#[derive(Debug, Clone)]
pub struct Wiring {
    /// For each bundle camera (in bundle order), its image topic.
    pub camera_topics: Vec<String>,
    pub camera_names: Vec<String>,
    /// The robot's name for each bundle state joint (what JointState messages carry).
    pub state_joint_names: Vec<String>,
    /// The robot's name for each action joint (what the trajectory carries).
    pub action_joint_names: Vec<String>,
    /// For each action joint, its index among the state joints (its measured position).
    pub action_to_state: Vec<usize>,
    /// Limits in action-joint order.
    pub action_limits: Option<JointLimits>,
    /// For each command group (in `cfg.command_groups` order), its action-joint indices.
    pub group_joints: Vec<Vec<usize>>,
}

impl Wiring {
    pub fn resolve(bundle: &Bundle, cfg: &NodeConfig) -> Result<Self, SetupError> {
        let m = &bundle.manifest;
        let bundle_cams: Vec<String> = m.cameras.iter().map(|c| c.name.clone()).collect();
        let mut camera_topics = vec![String::new(); bundle_cams.len()];
        if cfg.camera_names.is_empty() {
            for (i, name) in bundle_cams.iter().enumerate() {
                camera_topics[i] = format!("cameras/{name}/image_raw");
            }
        } else {
            if cfg.camera_names.len() != bundle_cams.len() {
                return Err(param(
                    "camera_names",
                    format!(
                        "names {} cameras, the bundle needs {}: {}",
                        cfg.camera_names.len(),
                        bundle_cams.len(),
                        bundle_cams.join(", ")
                    ),
                ));
            }
            for (name, topic) in cfg.camera_names.iter().zip(&cfg.camera_topics) {
                let i = bundle_cams.iter().position(|c| c == name).ok_or_else(|| {
                    param(
                        "camera_names",
                        format!(
                            "`{name}` is not a camera of the bundle (it has: {})",
                            bundle_cams.join(", ")
                        ),
                    )
                })?;
                if !camera_topics[i].is_empty() {
                    return Err(param("camera_names", format!("`{name}` appears twice")));
                }
                camera_topics[i] = topic.clone();
            }
        }
        let state_joint_names = if cfg.joint_names.is_empty() {
            m.state.joints.clone()
        } else if cfg.joint_names.len() != m.state.joints.len() {
            return Err(param(
                "joint_names",
                format!(
                    "has {} entries, expected one per bundle state joint ({}: {})",
                    cfg.joint_names.len(),
                    m.state.joints.len(),
                    m.state.joints.join(", ")
                ),
            ));
        } else {
            cfg.joint_names.clone()
        };
        let action_to_state = m.action_to_state()?;
        let action_joint_names: Vec<String> = action_to_state
            .iter()
            .map(|&i| state_joint_names[i].clone())
            .collect();
        let action_limits = cfg.limits.as_ref().map(|l| JointLimits {
            lower: action_to_state.iter().map(|&i| l.lower[i]).collect(),
            upper: action_to_state.iter().map(|&i| l.upper[i]).collect(),
            max_velocity: action_to_state.iter().map(|&i| l.max_velocity[i]).collect(),
            max_acceleration: l
                .max_acceleration
                .as_ref()
                .map(|acc| action_to_state.iter().map(|&i| acc[i]).collect()),
            max_jump: l.max_jump,
        });
        let group_joints = resolve_groups(cfg, &action_joint_names)?;
        Ok(Wiring {
            camera_topics,
            camera_names: bundle_cams,
            state_joint_names,
            action_joint_names,
            action_to_state,
            action_limits,
            group_joints,
        })
    }
}

/// Each command group's action-joint indices; every action joint in exactly one group. The default
/// group (no `command_groups`) takes every action joint.
fn resolve_groups(
    cfg: &NodeConfig,
    action_joints: &[String],
) -> Result<Vec<Vec<usize>>, SetupError> {
    let mut owner: Vec<Option<&str>> = vec![None; action_joints.len()];
    let mut out = Vec::with_capacity(cfg.command_groups.len());
    for g in &cfg.command_groups {
        if g.joints.is_empty() {
            out.push((0..action_joints.len()).collect());
            owner.iter_mut().for_each(|o| *o = Some(""));
            continue;
        }
        let key = format!("command_group.{}.joints", g.name);
        let mut idx = Vec::with_capacity(g.joints.len());
        for j in &g.joints {
            let i = action_joints.iter().position(|a| a == j).ok_or_else(|| {
                param(
                    &key,
                    format!(
                        "`{j}` is not an action joint (they are: {})",
                        action_joints.join(", ")
                    ),
                )
            })?;
            if let Some(other) = owner[i] {
                return Err(param(
                    &key,
                    format!("`{j}` is also in command group `{other}`"),
                ));
            }
            owner[i] = Some(&g.name);
            idx.push(i);
        }
        out.push(idx);
    }
    if let Some(i) = owner.iter().position(Option::is_none) {
        return Err(param(
            "command_groups",
            format!(
                "action joint `{}` is in no command group: every joint the model drives must be commanded",
                action_joints[i]
            ),
        ));
    }
    Ok(out)
}

pub struct Policy {
    runtime: ModelRuntime,
    sampler: FlowSampler,
    action_space: ActionSpace,
    pub model_id: String,
}

impl Policy {
    /// Loads and checks the model, then runs `cfg.runtime.warmup_runs` inferences on synthetic input so the
    /// first real chunk does not pay for kernel selection or engine builds. The sampler is reseeded after.
    pub fn start(bundle: &Bundle, cfg: &NodeConfig) -> Result<Self, SetupError> {
        let m = &bundle.manifest;
        let runtime = ModelRuntime::load(bundle, &cfg.runtime)?;
        let steps = if cfg.sampler_steps > 0 {
            cfg.sampler_steps
        } else {
            m.sampler.steps
        };
        let sampler = FlowSampler::new(steps, cfg.seed)
            .with_solver(m.sampler.solver())
            .with_shift(m.sampler.shift)
            .with_guidance(m.sampler.guidance())
            .with_reuse(m.sampler.reuse.as_deref().unwrap_or_default());
        sampler.validate()?;
        let mut policy = Policy {
            runtime,
            sampler,
            action_space: ActionSpace::new(m.action.kind, m.action.dt, m.action_to_state()?),
            model_id: m.model_id.clone(),
        };
        let mut input = policy.new_input();
        input
            .state
            .iter_mut()
            .zip(&m.state.mean)
            .for_each(|(q, mean)| *q = f64::from(*mean));
        let mut output = policy.new_output();
        for _ in 0..cfg.runtime.warmup_runs {
            policy.process(&mut input, &mut output)?;
        }
        policy.reset();
        Ok(policy)
    }

    pub fn dims(&self) -> &Dims {
        self.runtime.dims()
    }

    pub fn provider_name(&self) -> &'static str {
        self.runtime.provider_name()
    }

    pub fn sampler_steps(&self) -> usize {
        self.sampler.steps()
    }

    /// The sampler as configured: the bundle's solver and shift, the steps of the bundle or the parameter.
    pub fn sampler(&self) -> &FlowSampler {
        &self.sampler
    }

    pub fn new_input(&self) -> ModelInput {
        self.runtime.new_input()
    }

    pub fn new_output(&self) -> ModelOutput {
        self.runtime.new_output()
    }

    pub fn has_decoder(&self) -> bool {
        self.runtime.has_decoder()
    }

    /// `~/reset`: reseeds the sampler and forgets the state carried across chunks.
    pub fn reset(&mut self) {
        self.sampler.reseed();
        self.runtime.clear_state();
    }

    /// Forgets the state carried across chunks (format 2 `stages.context.state`; nothing without it).
    pub fn clear_model_state(&mut self) {
        self.runtime.clear_state();
    }

    /// The runtime (its carried state, whether guidance is batched).
    pub fn runtime(&self) -> &ModelRuntime {
        &self.runtime
    }

    /// One chunk. `input.prefix` holds absolute joint positions; it is converted into the model's action
    /// space (`action.kind`) here, and `output.actions` comes back as absolute positions.
    pub fn process(
        &mut self,
        input: &mut ModelInput,
        output: &mut ModelOutput,
    ) -> Result<StageTimings, RuntimeError> {
        self.action_space
            .from_absolute(&input.state, &mut input.prefix, input.prefix_steps);
        let timings = self.runtime.infer(input, &mut self.sampler, output)?;
        self.action_space
            .to_absolute(&input.state, &mut output.actions);
        Ok(timings)
    }

    /// One chunk from given initial noise instead of the seeded generator (export parity checks); the
    /// actions as [`Self::process`] returns them.
    pub fn process_with_noise(
        &mut self,
        input: &mut ModelInput,
        noise_actions: &[f32],
        noise_video: &[f32],
        output: &mut ModelOutput,
    ) -> Result<StageTimings, RuntimeError> {
        self.action_space
            .from_absolute(&input.state, &mut input.prefix, input.prefix_steps);
        let timings = self.runtime.infer_with_noise(
            input,
            &self.sampler,
            noise_actions,
            noise_video,
            output,
        )?;
        self.action_space
            .to_absolute(&input.state, &mut output.actions);
        Ok(timings)
    }
}
