//! Recording a run (`record_path`): everything the node received (frames, joint states, instructions)
//! with its receive time on the node's clock, every decision point (control ticks, service calls,
//! inference results, the stop) and what it published (commands, chunks, status), into an MCAP file
//! with ROS 2 (CDR) message encoding, as rosbag2 writes it. `replay` feeds the same inputs at the same
//! times through the same controller and model.
//!
//! The control loop only moves each received message into a bounded queue (no copy); the writer thread
//! serializes and writes it. When the writer falls behind, messages are dropped and counted
//! (`record_dropped` in the status), never waited for.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;
use r2r::WrappedTypesupport;

use super::messages::{CommandMsg, StringMsg};
use super::{command_topic, TopicNames};
use crate::config::{params_to_yaml, CameraTransport, NodeConfig, Params};
use crate::record::{ChannelId, ChannelSpec, RecordPayload, RecordStats, Recorder};

/// Channels, in the order they are created. Cameras follow the fixed ones.
pub const JOINT_STATES: usize = 0;
pub const INSTRUCTION: usize = 1;
pub const EVENTS: usize = 2;
pub const COMMAND: usize = 3;
pub const ACTION_CHUNK: usize = 4;
pub const STATUS: usize = 5;
pub const MONITOR: usize = 6;
const CAMERAS: usize = 7;

pub fn camera_channel(cam: usize) -> usize {
    CAMERAS + cam
}

/// The events topic: the controller's decision points, as std_msgs/String.
pub const EVENTS_TOPIC: &str = "/wam_policy/record/events";

/// Messages queued for the writer before new ones are dropped (about 4 s of two cameras at 30 Hz,
/// joint states at 500 Hz and the 200 Hz tick).
const QUEUE: usize = 4096;

/// A decision point of the controller, recorded so that replay calls it at the same time.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Tick,
    Enable(bool),
    Reset,
    ResultOk,
    ResultError(String),
    Stop,
    /// Run-time parameters changed (`ros2 param set`): the changes as YAML.
    Params(String),
}

impl Event {
    pub fn text(&self) -> String {
        match self {
            Event::Tick => "tick".into(),
            Event::Enable(true) => "enable true".into(),
            Event::Enable(false) => "enable false".into(),
            Event::Reset => "reset".into(),
            Event::ResultOk => "result ok".into(),
            Event::ResultError(e) => format!("result error {e}"),
            Event::Stop => "stop".into(),
            Event::Params(yaml) => format!("params {yaml}"),
        }
    }

    pub fn parse(text: &str) -> Option<Event> {
        Some(match text {
            "tick" => Event::Tick,
            "enable true" => Event::Enable(true),
            "enable false" => Event::Enable(false),
            "reset" => Event::Reset,
            "result ok" => Event::ResultOk,
            "stop" => Event::Stop,
            other => match other.strip_prefix("params ") {
                Some(yaml) => Event::Params(yaml.to_string()),
                None => Event::ResultError(other.strip_prefix("result error ")?.to_string()),
            },
        })
    }
}

/// An r2r message serialized with rmw (CDR) on the writer thread.
struct RosPayload<T>(T);

impl<T: WrappedTypesupport + Send> RecordPayload for RosPayload<T> {
    fn serialize_into(&self, out: &mut Vec<u8>) -> Result<(), String> {
        let bytes = self.0.to_serialized_bytes().map_err(|e| e.to_string())?;
        out.clear();
        out.extend_from_slice(&bytes);
        Ok(())
    }
}

pub struct NodeRecorder {
    recorder: Recorder,
}

/// Metadata keys: the parameters, and the topic of each channel kind.
pub const META_PARAMETERS: &str = "parameters";
pub const META_CAMERA_PREFIX: &str = "topic.camera.";
pub const META_JOINT_STATES: &str = "topic.joint_states";
pub const META_INSTRUCTION: &str = "topic.instruction";
pub const META_COMMAND: &str = "topic.command";

impl NodeRecorder {
    pub fn create(
        cfg: &NodeConfig,
        params: &Params,
        camera_topics: &[String],
        names: &TopicNames,
    ) -> anyhow::Result<Self> {
        let (command, command_type) = command_topic(cfg);
        let spec = |topic: &str, type_name: &str| ChannelSpec {
            topic: names.resolve(topic),
            type_name: type_name.to_string(),
        };
        let mut channels = vec![
            spec(&cfg.joint_states_topic, "sensor_msgs/msg/JointState"),
            spec(&cfg.instruction_topic, "std_msgs/msg/String"),
            spec(EVENTS_TOPIC, "std_msgs/msg/String"),
            spec(&command, command_type),
            spec("~/action_chunk", "wam_policy/msg/ActionChunk"),
            spec("~/status", "wam_policy/msg/PolicyStatus"),
            spec("~/monitor", "wam_policy/msg/Monitor"),
        ];
        for topic in camera_topics {
            channels.push(match cfg.camera_transport {
                CameraTransport::Raw => spec(topic, "sensor_msgs/msg/Image"),
                CameraTransport::Compressed => spec(
                    &format!("{topic}/compressed"),
                    "sensor_msgs/msg/CompressedImage",
                ),
            });
        }
        let mut metadata = BTreeMap::new();
        metadata.insert(
            META_PARAMETERS.to_string(),
            params_to_yaml(params).context("cannot write the parameters into the recording")?,
        );
        metadata.insert(
            META_JOINT_STATES.into(),
            channels[JOINT_STATES].topic.clone(),
        );
        metadata.insert(META_INSTRUCTION.into(), channels[INSTRUCTION].topic.clone());
        metadata.insert(META_COMMAND.into(), channels[COMMAND].topic.clone());
        for (i, _) in camera_topics.iter().enumerate() {
            metadata.insert(
                format!("{META_CAMERA_PREFIX}{i}"),
                channels[camera_channel(i)].topic.clone(),
            );
        }
        let path = Path::new(&cfg.record_path);
        let recorder = Recorder::create(path, &channels, &metadata, QUEUE)
            .with_context(|| format!("parameter `record_path`: cannot record into {path:?}"))?;
        tracing::info!(path = %path.display(), "recording");
        Ok(NodeRecorder { recorder })
    }

    /// Queues one payload; a full queue is counted by the recorder and shown in the status.
    fn put(&self, channel: usize, now: f64, payload: Box<dyn RecordPayload>) {
        let _ = self
            .recorder
            .record(ChannelId(channel), now.max(0.0), payload);
    }

    /// A message received or published (after the controller took it, or after it was published).
    pub fn message<T: WrappedTypesupport + Send + 'static>(
        &self,
        channel: usize,
        now: f64,
        msg: T,
    ) {
        self.put(channel, now, Box::new(RosPayload(msg)));
    }

    /// A received message that came serialized (cameras): recorded as it came.
    pub fn bytes(&self, channel: usize, now: f64, bytes: Vec<u8>) {
        self.put(channel, now, Box::new(bytes));
    }

    pub fn command(&self, now: f64, msg: &CommandMsg) {
        match msg {
            CommandMsg::Trajectory(m) => self.message(COMMAND, now, m.clone()),
            CommandMsg::Array(m) => self.message(COMMAND, now, m.clone()),
            CommandMsg::JointState(m) => self.message(COMMAND, now, m.clone()),
        }
    }

    pub fn event(&self, now: f64, event: Event) {
        self.message(EVENTS, now, StringMsg { data: event.text() });
    }

    pub fn stats(&self) -> RecordStats {
        self.recorder.stats()
    }

    /// Writes what is queued and closes the file.
    pub fn finish(self) {
        match self.recorder.finish() {
            Ok(s) => tracing::info!(
                recorded = s.recorded,
                dropped = s.dropped,
                write_errors = s.write_errors,
                "recording finished"
            ),
            Err(e) => tracing::error!("recording could not be finished: {e}"),
        }
    }
}
