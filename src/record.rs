//! Record/replay: what the node received and what it published, written to an MCAP file with ROS 2 message
//! encoding (the storage format of rosbag2, so `ros2 bag` and Foxglove open it), and read back for `replay`.
//!
//! The file layout is the one rosbag2's MCAP plugin writes: header profile `ros2`, one schema per message type
//! (encoding `ros2msg`, the concatenated `.msg` text from [`ros2msg_schema`]), one channel per topic (message
//! encoding `cdr`), messages whose `log_time` and `publish_time` are the node's clock in nanoseconds. The node's
//! own metadata (model, config, versions) goes into one metadata record named `wam_policy`.
//!
//! Recording must never block the control loop. [`Recorder::record`] only moves a boxed message into a bounded
//! queue (`try_send`); a writer thread serializes it (CDR, into one reused buffer), writes it and drops it, so
//! both the serialization and the deallocation happen off the control loop. When the queue is full the message
//! is dropped and counted ([`RecordStats::dropped`]); the per-file `sequence` numbers then have a gap. A message
//! that fails to serialize is counted in [`RecordStats::write_errors`] and skipped; a failed write to the file
//! stops the writer (later messages count as dropped) and [`Recorder::finish`] reports the error.
//!
//! Chunks are not compressed: the `mcap` crate's zstd and lz4 support builds C libraries. Reading therefore
//! accepts uncompressed files only (rosbag2 writes those unless asked for compression).

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::BufWriter;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use mcap::records::{MessageHeader, Metadata, Record};
use mcap::{McapError, WriteOptions, Writer};

/// Name of the metadata record holding the node's metadata.
pub const METADATA_NAME: &str = "wam_policy";
/// Schema encoding of ROS 2 `.msg` definitions.
pub const SCHEMA_ENCODING: &str = "ros2msg";
/// Message encoding of ROS 2 serialized messages.
pub const MESSAGE_ENCODING: &str = "cdr";
/// MCAP header profile of ROS 2 recordings.
pub const PROFILE: &str = "ros2";

const SCHEMA_DELIMITER: &str =
    "================================================================================";
const PRIMITIVE_TYPES: &[&str] = &[
    "bool", "byte", "char", "float32", "float64", "int8", "uint8", "int16", "uint16", "int32",
    "uint32", "int64", "uint64", "string", "wstring",
];

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("cannot create recording {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read recording {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("recording {path}: {source}")]
    Mcap { path: PathBuf, source: McapError },
    #[error("recording {path}: cannot flush the file: {source}")]
    Flush {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start the recording writer thread: {0}")]
    Spawn(std::io::Error),
    #[error("the recording writer thread of {path} panicked")]
    WriterPanicked { path: PathBuf },
}

/// A ROS 2 message to be written: serialized (CDR, as rmw_serialize produces it) on the writer thread.
pub trait RecordPayload: Send {
    /// Writes the CDR bytes into `out`. The writer clears `out` before each call, so appending and
    /// overwriting are the same.
    fn serialize_into(&self, out: &mut Vec<u8>) -> Result<(), String>;
}

/// Already-serialized bytes: copied as they are.
impl RecordPayload for Vec<u8> {
    fn serialize_into(&self, out: &mut Vec<u8>) -> Result<(), String> {
        out.clear();
        out.extend_from_slice(self);
        Ok(())
    }
}

/// One topic of a recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSpec {
    pub topic: String,
    /// ROS 2 type name, like `sensor_msgs/msg/Image`.
    pub type_name: String,
}

/// A channel of a [`Recorder`]: the index into the specs given to [`Recorder::create`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelId(pub usize);

/// Counters of a recording, updated by the caller (drops) and the writer thread (the rest).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordStats {
    /// Messages written to the file.
    pub recorded: u64,
    /// Messages not written: queue full, writer stopped, or unknown channel.
    pub dropped: u64,
    /// Messages that failed to serialize, or whose write to the file failed.
    pub write_errors: u64,
}

#[derive(Default)]
struct Counters {
    recorded: AtomicU64,
    dropped: AtomicU64,
    write_errors: AtomicU64,
    /// Set by the writer thread after a failed write to the file: nothing more can be written.
    writer_failed: AtomicBool,
}

impl Counters {
    fn snapshot(&self) -> RecordStats {
        RecordStats {
            recorded: self.recorded.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            write_errors: self.write_errors.load(Ordering::Relaxed),
        }
    }

    fn count_drop(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a write error; returns the new total.
    fn count_write_error(&self) -> u64 {
        self.write_errors.fetch_add(1, Ordering::Relaxed) + 1
    }
}

struct Job {
    channel: u16,
    log_time_ns: u64,
    sequence: u32,
    payload: Box<dyn RecordPayload>,
}

type FileWriter = Writer<BufWriter<File>>;

/// Writes an MCAP recording from a writer thread; see the module documentation.
pub struct Recorder {
    path: PathBuf,
    sender: Option<SyncSender<Job>>,
    thread: Option<JoinHandle<Result<(), RecordError>>>,
    /// MCAP channel id of each [`ChannelId`].
    channel_ids: Vec<u16>,
    next_sequence: AtomicU32,
    counters: Arc<Counters>,
}

impl Recorder {
    /// Creates the file, writes the header (profile "ros2"), one schema per distinct type (encoding
    /// "ros2msg", name = type_name, data = [`ros2msg_schema`] over [`ament_prefixes`], or empty when not
    /// found), one channel per spec (message encoding "cdr"), and a metadata record named "wam_policy"
    /// holding `metadata`; spawns the writer thread. `capacity`: queue length (at least 1); a full queue
    /// drops.
    pub fn create(
        path: &Path,
        channels: &[ChannelSpec],
        metadata: &BTreeMap<String, String>,
        capacity: usize,
    ) -> Result<Self, RecordError> {
        Self::create_with_prefixes(path, channels, metadata, capacity, &ament_prefixes())
    }

    fn create_with_prefixes(
        path: &Path,
        channels: &[ChannelSpec],
        metadata: &BTreeMap<String, String>,
        capacity: usize,
        prefixes: &[PathBuf],
    ) -> Result<Self, RecordError> {
        let mcap_error = |source| RecordError::Mcap {
            path: path.to_owned(),
            source,
        };
        let file = File::create(path).map_err(|source| RecordError::Create {
            path: path.to_owned(),
            source,
        })?;
        let options = WriteOptions::new()
            .profile(PROFILE)
            .library(concat!("wam_policy ", env!("CARGO_PKG_VERSION")))
            .compression(None);
        let mut writer = options.create(BufWriter::new(file)).map_err(mcap_error)?;

        let mut schema_ids: BTreeMap<&str, u16> = BTreeMap::new();
        let mut channel_ids = Vec::with_capacity(channels.len());
        let no_channel_metadata = BTreeMap::new();
        for spec in channels {
            let schema_id = if spec.type_name.is_empty() {
                0
            } else if let Some(&id) = schema_ids.get(spec.type_name.as_str()) {
                id
            } else {
                let text = ros2msg_schema(&spec.type_name, prefixes).unwrap_or_else(|| {
                    tracing::warn!(
                        "no .msg definition of {} found in AMENT_PREFIX_PATH; its schema in {} is empty",
                        spec.type_name,
                        path.display()
                    );
                    String::new()
                });
                let id = writer
                    .add_schema(&spec.type_name, SCHEMA_ENCODING, text.as_bytes())
                    .map_err(mcap_error)?;
                schema_ids.insert(&spec.type_name, id);
                id
            };
            let id = writer
                .add_channel(
                    schema_id,
                    &spec.topic,
                    MESSAGE_ENCODING,
                    &no_channel_metadata,
                )
                .map_err(mcap_error)?;
            channel_ids.push(id);
        }
        writer
            .write_metadata(&Metadata {
                name: METADATA_NAME.to_owned(),
                metadata: metadata.clone(),
            })
            .map_err(mcap_error)?;
        writer.flush().map_err(mcap_error)?;

        let counters = Arc::new(Counters::default());
        let (sender, receiver) = sync_channel(capacity.max(1));
        let thread = {
            let counters = Arc::clone(&counters);
            let path = path.to_owned();
            std::thread::Builder::new()
                .name("wam_record".to_owned())
                .spawn(move || write_loop(writer, receiver, &counters, path))
                .map_err(RecordError::Spawn)?
        };
        Ok(Recorder {
            path: path.to_owned(),
            sender: Some(sender),
            thread: Some(thread),
            channel_ids,
            next_sequence: AtomicU32::new(0),
            counters,
        })
    }

    /// Non-blocking. `log_time_s`: seconds on the node's clock (>= 0; negative and NaN become 0; written as
    /// nanoseconds for both log_time and publish_time). Returns false (and counts a drop) when the queue is
    /// full, the writer has stopped or `channel` is unknown. Assigns a per-file increasing `sequence`
    /// (dropped messages leave gaps).
    pub fn record(
        &self,
        channel: ChannelId,
        log_time_s: f64,
        payload: Box<dyn RecordPayload>,
    ) -> bool {
        let (Some(sender), Some(&channel)) = (&self.sender, self.channel_ids.get(channel.0)) else {
            self.counters.count_drop();
            return false;
        };
        if self.counters.writer_failed.load(Ordering::Relaxed) {
            self.counters.count_drop();
            return false;
        }
        let job = Job {
            channel,
            log_time_ns: seconds_to_ns(log_time_s),
            sequence: self.next_sequence.fetch_add(1, Ordering::Relaxed),
            payload,
        };
        if sender.try_send(job).is_ok() {
            true
        } else {
            self.counters.count_drop();
            false
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> RecordStats {
        self.counters.snapshot()
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops accepting, writes everything queued, finishes the file (summary and indexes), joins the thread.
    pub fn finish(mut self) -> Result<RecordStats, RecordError> {
        self.finish_inner()
    }

    fn finish_inner(&mut self) -> Result<RecordStats, RecordError> {
        // Closing the queue ends the writer's loop once it has written what is queued.
        drop(self.sender.take());
        if let Some(thread) = self.thread.take() {
            match thread.join() {
                Ok(result) => result?,
                Err(_) => {
                    return Err(RecordError::WriterPanicked {
                        path: self.path.clone(),
                    })
                }
            }
        }
        Ok(self.stats())
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if self.thread.is_some() {
            if let Err(error) = self.finish_inner() {
                tracing::warn!("recording not finished cleanly: {error}");
            }
        }
    }
}

fn seconds_to_ns(seconds: f64) -> u64 {
    if seconds > 0.0 {
        // `as` saturates at u64::MAX.
        (seconds * 1e9).round() as u64
    } else {
        0
    }
}

/// The writer thread: writes every job until the queue is closed, then finishes the file.
fn write_loop(
    mut writer: FileWriter,
    receiver: Receiver<Job>,
    counters: &Counters,
    path: PathBuf,
) -> Result<(), RecordError> {
    let mut buffer = Vec::new();
    let mut failure: Option<McapError> = None;
    for job in receiver {
        if failure.is_some() {
            // Accepted before `record` saw the failure: cannot be written any more.
            counters.count_drop();
            continue;
        }
        buffer.clear();
        let serialized = catch_unwind(AssertUnwindSafe(|| job.payload.serialize_into(&mut buffer)))
            .unwrap_or_else(|_| Err("serialization panicked".to_owned()));
        if let Err(problem) = serialized {
            let total = counters.count_write_error();
            if total.is_power_of_two() {
                tracing::warn!(
                    "recording {}: a message could not be serialized ({problem}); {total} so far",
                    path.display()
                );
            }
            continue;
        }
        let header = MessageHeader {
            channel_id: job.channel,
            sequence: job.sequence,
            log_time: job.log_time_ns,
            publish_time: job.log_time_ns,
        };
        match writer.write_to_known_channel(&header, &buffer) {
            Ok(()) => {
                counters.recorded.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                counters.count_write_error();
                counters.writer_failed.store(true, Ordering::Relaxed);
                tracing::error!(
                    "recording {}: writing failed, recording stopped: {error}",
                    path.display()
                );
                failure = Some(error);
            }
        }
    }
    let mcap_error = |source| RecordError::Mcap {
        path: path.clone(),
        source,
    };
    if let Some(error) = failure {
        return Err(mcap_error(error));
    }
    writer.finish().map_err(mcap_error)?;
    let file = writer
        .into_inner()
        .into_inner()
        .map_err(|error| RecordError::Flush {
            path: path.clone(),
            source: error.into_error(),
        })?;
    file.sync_all().map_err(|source| RecordError::Flush {
        path: path.clone(),
        source,
    })
}

/// One message read back from a recording.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedMessage {
    pub topic: String,
    /// The schema name (the ROS 2 type name); empty when the channel has no schema.
    pub type_name: String,
    pub log_time_ns: u64,
    pub sequence: u32,
    /// The serialized (CDR) message.
    pub data: Vec<u8>,
}

impl RecordedMessage {
    pub fn log_time_s(&self) -> f64 {
        self.log_time_ns as f64 / 1e9
    }
}

/// A whole recording read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Recording {
    /// The metadata record named "wam_policy" (empty when there is none).
    pub metadata: BTreeMap<String, String>,
    /// Sorted by (log_time, sequence).
    pub messages: Vec<RecordedMessage>,
}

/// Reads the whole file; messages sorted by (log_time, sequence).
pub fn read_recording(path: &Path) -> Result<Recording, RecordError> {
    let bytes = std::fs::read(path).map_err(|source| RecordError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mcap_error = |source| RecordError::Mcap {
        path: path.to_owned(),
        source,
    };

    let mut metadata = BTreeMap::new();
    for record in mcap::read::LinearReader::new(&bytes).map_err(mcap_error)? {
        if let Record::Metadata(record) = record.map_err(mcap_error)? {
            if record.name == METADATA_NAME {
                metadata.extend(record.metadata);
            }
        }
    }

    let mut messages = Vec::new();
    for message in mcap::MessageStream::new(&bytes).map_err(mcap_error)? {
        let message = message.map_err(mcap_error)?;
        messages.push(RecordedMessage {
            topic: message.channel.topic.clone(),
            type_name: message
                .channel
                .schema
                .as_ref()
                .map(|schema| schema.name.clone())
                .unwrap_or_default(),
            log_time_ns: message.log_time,
            sequence: message.sequence,
            data: message.data.into_owned(),
        });
    }
    messages.sort_by_key(|message| (message.log_time_ns, message.sequence));
    Ok(Recording { metadata, messages })
}

/// The ros2msg schema text of `type_name` ("pkg/msg/Name") as rosbag2 writes it: the type's .msg file
/// text, then for every nested type it uses (recursively, each once, depth-first in first-use order) a
/// newline, a line of 80 '=' characters, a line "MSG: pkg/Name" and that type's .msg text. Looks the files
/// up as `<prefix>/share/<pkg>/msg/<Name>.msg` for each prefix in `prefixes` (first match wins). Field
/// types: primitives (bool byte char float32 float64 int8 uint8 int16 uint16 int32 uint32 int64 uint64
/// string wstring, also bounded strings like string<=10), arrays `T[]`, `T[N]`, `T[<=N]`; nested types
/// written `pkg/Name` (or `pkg/msg/Name`) or `Name` (same package; `Header` means std_msgs/Header).
/// Comment lines, blank lines and constants (`TYPE NAME=value`) are kept in the text but do not add
/// dependencies. None when the top-level file is not found; a missing nested file just is skipped.
///
/// rosbag2 itself appends the nested types in alphabetical order; readers (Foxglove, rosbags, rosbag2)
/// look them up by the `MSG:` line, so the order does not matter to them.
pub fn ros2msg_schema(type_name: &str, prefixes: &[PathBuf]) -> Option<String> {
    let (package, name) = split_type_name(type_name)?;
    let text = read_msg_file(package, name, prefixes)?;
    let mut seen = HashSet::from([format!("{package}/{name}")]);
    let mut out = String::new();
    append_definition(&mut out, &text, package, prefixes, &mut seen);
    Some(out)
}

/// Appends `text`, then each of its not yet seen dependencies (delimiter and recursively its definition).
fn append_definition(
    out: &mut String,
    text: &str,
    package: &str,
    prefixes: &[PathBuf],
    seen: &mut HashSet<String>,
) {
    out.push_str(text);
    for (dep_package, dep_name) in msg_dependencies(text, package) {
        let key = format!("{dep_package}/{dep_name}");
        if !seen.insert(key.clone()) {
            continue;
        }
        let Some(dep_text) = read_msg_file(&dep_package, &dep_name, prefixes) else {
            continue;
        };
        out.push('\n');
        out.push_str(SCHEMA_DELIMITER);
        out.push_str("\nMSG: ");
        out.push_str(&key);
        out.push('\n');
        append_definition(out, &dep_text, &dep_package, prefixes, seen);
    }
}

/// The nested types (package, name) that the fields of a .msg text use, each once, in first-use order.
fn msg_dependencies(text: &str, package: &str) -> Vec<(String, String)> {
    let mut dependencies: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default().trim();
        let Some((field_type, rest)) = line.split_once(char::is_whitespace) else {
            // Blank, comment, or not a field (a field has a type and a name).
            continue;
        };
        if rest.contains('=') {
            // A constant (constants are always primitives).
            continue;
        }
        let base = field_type.split('[').next().unwrap_or_default();
        let base = base.split("<=").next().unwrap_or_default();
        if base.is_empty() || PRIMITIVE_TYPES.contains(&base) {
            continue;
        }
        let resolved = if base.contains('/') {
            split_type_name(base).map(|(package, name)| (package.to_owned(), name.to_owned()))
        } else if base == "Header" {
            Some(("std_msgs".to_owned(), "Header".to_owned()))
        } else if is_ros_name(base) {
            Some((package.to_owned(), base.to_owned()))
        } else {
            None
        };
        if let Some(dependency) = resolved {
            if !dependencies.contains(&dependency) {
                dependencies.push(dependency);
            }
        }
    }
    dependencies
}

/// "pkg/msg/Name" or "pkg/Name" -> ("pkg", "Name"); None for anything else (other namespaces included).
fn split_type_name(type_name: &str) -> Option<(&str, &str)> {
    let parts: Vec<&str> = type_name.split('/').collect();
    let (package, name) = match parts.as_slice() {
        [package, name] => (*package, *name),
        [package, "msg", name] => (*package, *name),
        _ => return None,
    };
    (is_ros_name(package) && is_ros_name(name)).then_some((package, name))
}

/// A package or type name: a letter, then letters, digits and underscores (also keeps paths safe).
fn is_ros_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn read_msg_file(package: &str, name: &str, prefixes: &[PathBuf]) -> Option<String> {
    prefixes.iter().find_map(|prefix| {
        let file = prefix
            .join("share")
            .join(package)
            .join("msg")
            .join(format!("{name}.msg"));
        std::fs::read(file)
            .ok()
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
    })
}

/// The prefixes of the environment's AMENT_PREFIX_PATH (':'-separated), empty entries left out.
pub fn ament_prefixes() -> Vec<PathBuf> {
    std::env::var_os("AMENT_PREFIX_PATH")
        .map(|value| {
            std::env::split_paths(&value)
                .filter(|prefix| !prefix.as_os_str().is_empty())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    fn write_msg(prefix: &Path, package: &str, name: &str, text: &str) {
        let dir = prefix.join("share").join(package).join("msg");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.msg")), text).unwrap();
    }

    fn spec(topic: &str, type_name: &str) -> ChannelSpec {
        ChannelSpec {
            topic: topic.to_owned(),
            type_name: type_name.to_owned(),
        }
    }

    #[test]
    fn round_trip_with_schemas_channels_and_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("install");
        write_msg(&prefix, "test_msgs", "Blob", "uint8[] data\n");
        let path = dir.path().join("rec.mcap");
        let channels = [
            spec("/camera", "test_msgs/msg/Blob"),
            spec("/joint_states", "sensor_msgs/msg/JointState"),
            spec("/camera2", "test_msgs/msg/Blob"),
        ];
        let metadata = BTreeMap::from([
            ("model".to_owned(), "wam-small".to_owned()),
            ("config".to_owned(), "rate: 10\n".to_owned()),
        ]);
        let recorder =
            Recorder::create_with_prefixes(&path, &channels, &metadata, 16, &[prefix]).unwrap();
        // Written out of time order; the reader sorts by (time, sequence).
        assert!(recorder.record(ChannelId(0), 2.0, Box::new(vec![1u8, 2, 3])));
        assert!(recorder.record(ChannelId(1), 1.0, Box::new(vec![4u8])));
        assert!(recorder.record(ChannelId(0), 1.0, Box::new(vec![5u8, 6])));
        assert!(recorder.record(ChannelId(2), 0.25, Box::new(Vec::<u8>::new())));
        assert!(!recorder.record(ChannelId(3), 0.5, Box::new(vec![9u8])));
        let stats = recorder.finish().unwrap();
        assert_eq!(
            stats,
            RecordStats {
                recorded: 4,
                dropped: 1,
                write_errors: 0
            }
        );

        let recording = read_recording(&path).unwrap();
        assert_eq!(recording.metadata, metadata);
        let got: Vec<(&str, &str, u64, u32, &[u8])> = recording
            .messages
            .iter()
            .map(|m| {
                (
                    m.topic.as_str(),
                    m.type_name.as_str(),
                    m.log_time_ns,
                    m.sequence,
                    m.data.as_slice(),
                )
            })
            .collect();
        let expected: Vec<(&str, &str, u64, u32, &[u8])> = vec![
            ("/camera2", "test_msgs/msg/Blob", 250_000_000, 3, &[]),
            (
                "/joint_states",
                "sensor_msgs/msg/JointState",
                1_000_000_000,
                1,
                &[4],
            ),
            ("/camera", "test_msgs/msg/Blob", 1_000_000_000, 2, &[5, 6]),
            (
                "/camera",
                "test_msgs/msg/Blob",
                2_000_000_000,
                0,
                &[1, 2, 3],
            ),
        ];
        assert_eq!(got, expected);
        assert_eq!(recording.messages[0].log_time_s(), 0.25);

        // The mcap crate's own view of the file.
        let bytes = std::fs::read(&path).unwrap();
        let first = mcap::read::LinearReader::new(&bytes)
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        match first {
            Record::Header(header) => assert_eq!(header.profile, "ros2"),
            other => panic!("first record is not the header: {other:?}"),
        }
        let summary = mcap::Summary::read(&bytes).unwrap().unwrap();
        assert_eq!(summary.channels.len(), 3);
        assert_eq!(summary.schemas.len(), 2);
        for channel in summary.channels.values() {
            assert_eq!(channel.message_encoding, "cdr");
            let schema = channel.schema.as_ref().unwrap();
            assert_eq!(schema.encoding, "ros2msg");
            let expected_data: &[u8] = match schema.name.as_str() {
                "test_msgs/msg/Blob" => b"uint8[] data\n",
                "sensor_msgs/msg/JointState" => b"",
                other => panic!("unexpected schema {other}"),
            };
            assert_eq!(&*schema.data, expected_data);
        }
        let stats = summary.stats.unwrap();
        assert_eq!(stats.message_count, 4);
        assert_eq!(stats.message_start_time, 250_000_000);
        assert_eq!(stats.message_end_time, 2_000_000_000);
        assert_eq!(summary.metadata_indexes.len(), 1);
        assert_eq!(summary.metadata_indexes[0].name, "wam_policy");
        // Every message has publish_time == log_time.
        for message in mcap::MessageStream::new(&bytes).unwrap() {
            let message = message.unwrap();
            assert_eq!(message.publish_time, message.log_time);
        }
    }

    /// Blocks the writer thread inside serialization until released.
    struct Blocking {
        started: mpsc::Sender<()>,
        release: mpsc::Receiver<()>,
    }

    impl RecordPayload for Blocking {
        fn serialize_into(&self, out: &mut Vec<u8>) -> Result<(), String> {
            self.started.send(()).map_err(|e| e.to_string())?;
            self.release.recv().map_err(|e| e.to_string())?;
            out.extend_from_slice(b"blocked");
            Ok(())
        }
    }

    /// A recorder of one channel `/a` into a temporary folder (kept alive by the returned guard).
    fn one_channel(capacity: usize) -> (tempfile::TempDir, PathBuf, Recorder) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rec.mcap");
        let recorder = Recorder::create_with_prefixes(
            &path,
            &[spec("/a", "x/msg/A")],
            &BTreeMap::new(),
            capacity,
            &[],
        )
        .unwrap();
        (dir, path, recorder)
    }

    #[test]
    fn full_queue_drops_without_blocking() {
        let (_dir, path, recorder) = one_channel(2);
        let (started_tx, started_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel();
        let blocking = Blocking {
            started: started_tx,
            release: release_rx,
        };
        assert!(recorder.record(ChannelId(0), 0.0, Box::new(blocking)));
        // The writer holds the blocking message: the queue is empty again, with room for two.
        started_rx.recv_timeout(Duration::from_secs(30)).unwrap();
        assert!(recorder.record(ChannelId(0), 1.0, Box::new(vec![1u8])));
        assert!(recorder.record(ChannelId(0), 2.0, Box::new(vec![2u8])));
        assert!(!recorder.record(ChannelId(0), 3.0, Box::new(vec![3u8])));
        assert!(!recorder.record(ChannelId(0), 4.0, Box::new(vec![4u8])));
        assert_eq!(
            recorder.stats(),
            RecordStats {
                recorded: 0,
                dropped: 2,
                write_errors: 0
            }
        );
        release_tx.send(()).unwrap();
        let stats = recorder.finish().unwrap();
        assert_eq!(
            stats,
            RecordStats {
                recorded: 3,
                dropped: 2,
                write_errors: 0
            }
        );
        let recording = read_recording(&path).unwrap();
        let data: Vec<&[u8]> = recording
            .messages
            .iter()
            .map(|m| m.data.as_slice())
            .collect();
        assert_eq!(data, vec![&b"blocked"[..], &[1], &[2]]);
        let sequences: Vec<u32> = recording.messages.iter().map(|m| m.sequence).collect();
        assert_eq!(sequences, vec![0, 1, 2]);
    }

    struct Failing;

    impl RecordPayload for Failing {
        fn serialize_into(&self, out: &mut Vec<u8>) -> Result<(), String> {
            out.extend_from_slice(b"partial");
            Err("cannot serialize".to_owned())
        }
    }

    struct Panicking;

    impl RecordPayload for Panicking {
        fn serialize_into(&self, _out: &mut Vec<u8>) -> Result<(), String> {
            panic!("payload panicked on purpose (test)");
        }
    }

    #[test]
    fn serialization_errors_are_counted_and_skipped() {
        let (_dir, path, recorder) = one_channel(8);
        assert!(recorder.record(ChannelId(0), 0.1, Box::new(vec![1u8])));
        assert!(recorder.record(ChannelId(0), 0.2, Box::new(Failing)));
        assert!(recorder.record(ChannelId(0), 0.3, Box::new(vec![3u8])));
        assert!(recorder.record(ChannelId(0), 0.4, Box::new(Panicking)));
        assert!(recorder.record(ChannelId(0), 0.5, Box::new(vec![5u8])));
        let stats = recorder.finish().unwrap();
        assert_eq!(
            stats,
            RecordStats {
                recorded: 3,
                dropped: 0,
                write_errors: 2
            }
        );
        let recording = read_recording(&path).unwrap();
        let got: Vec<(u64, &[u8])> = recording
            .messages
            .iter()
            .map(|m| (m.log_time_ns, m.data.as_slice()))
            .collect();
        assert_eq!(
            got,
            vec![
                (100_000_000, &[1u8][..]),
                (300_000_000, &[3]),
                (500_000_000, &[5])
            ]
        );
    }

    #[test]
    fn drop_finishes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rec.mcap");
        {
            let recorder =
                Recorder::create_with_prefixes(&path, &[spec("/a", "")], &BTreeMap::new(), 4, &[])
                    .unwrap();
            assert!(recorder.record(ChannelId(0), -1.0, Box::new(vec![7u8])));
        }
        let recording = read_recording(&path).unwrap();
        assert!(recording.metadata.is_empty());
        assert_eq!(recording.messages.len(), 1);
        assert_eq!(recording.messages[0].log_time_ns, 0);
        assert_eq!(recording.messages[0].type_name, "");
        assert_eq!(recording.messages[0].data, vec![7]);
    }

    #[test]
    fn create_in_missing_directory_fails() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no_such_dir").join("rec.mcap");
        let result = Recorder::create(&path, &[], &BTreeMap::new(), 4);
        assert!(matches!(result, Err(RecordError::Create { .. })));
    }

    #[test]
    fn ros2msg_schema_concatenates_dependencies() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("first");
        let second = dir.path().join("second");
        let outer = "# Outer: a test message\n\
                     Header header\n\
                     int32 MODE_A=1  # a constant\n\
                     \n\
                     pkg_b/Inner[] items\n\
                     Inner2 x\n\
                     string<=10 name\n\
                     float64[3] values\n\
                     pkg_b/Inner[<=4] again\n\
                     pkg_c/Missing missing\n";
        let header = "builtin_interfaces/Time stamp\nstring frame_id\n";
        let time = "int32 sec\nuint32 nanosec\n";
        let inner_first = "# inner, first prefix\nfloat32 v\nbuiltin_interfaces/msg/Time t\n";
        let inner_second = "# inner, second prefix: shadowed\nfloat32 v\n";
        let inner2 = "uint8 FLAG=2\nwstring w\nInner3 y\n";
        let inner3 = "bool b";
        write_msg(&first, "pkg_a", "Outer", outer);
        write_msg(&first, "pkg_a", "Inner2", inner2);
        write_msg(&first, "pkg_a", "Inner3", inner3);
        write_msg(&first, "pkg_b", "Inner", inner_first);
        write_msg(&second, "pkg_b", "Inner", inner_second);
        write_msg(&second, "std_msgs", "Header", header);
        write_msg(&second, "builtin_interfaces", "Time", time);
        let prefixes = [dir.path().join("empty"), first, second];

        let bar = "=".repeat(80);
        let expected = format!(
            "{outer}\n{bar}\nMSG: std_msgs/Header\n{header}\n{bar}\nMSG: builtin_interfaces/Time\n{time}\
             \n{bar}\nMSG: pkg_b/Inner\n{inner_first}\n{bar}\nMSG: pkg_a/Inner2\n{inner2}\
             \n{bar}\nMSG: pkg_a/Inner3\n{inner3}"
        );
        assert_eq!(
            ros2msg_schema("pkg_a/msg/Outer", &prefixes).as_deref(),
            Some(expected.as_str())
        );
        assert_eq!(
            ros2msg_schema("pkg_a/Outer", &prefixes).as_deref(),
            Some(expected.as_str())
        );
        assert_eq!(
            ros2msg_schema("builtin_interfaces/msg/Time", &prefixes).as_deref(),
            Some(time)
        );
        assert_eq!(ros2msg_schema("pkg_a/msg/Nope", &prefixes), None);
        assert_eq!(ros2msg_schema("pkg_a/srv/Outer", &prefixes), None);
        assert_eq!(ros2msg_schema("../pkg_a/Outer", &prefixes), None);
        assert_eq!(ros2msg_schema("pkg_a/msg/Outer", &[]), None);
    }

    #[test]
    fn msg_dependencies_ignore_primitives_comments_and_constants() {
        let text = "# std_msgs/Header commented\n\
                    string<=10 name\n\
                    wstring<=3[<=2] names\n\
                    byte[] raw\n\
                    char c 65\n\
                    int8 LIMIT=-3\n\
                    Foo bar  # same package\n\
                    other_pkg/msg/Baz[] baz\n\
                    Foo again\n\
                    Foo2 NOT_A_FIELD=1\n\
                    BrokenLine\n";
        assert_eq!(
            msg_dependencies(text, "my_pkg"),
            vec![
                ("my_pkg".to_owned(), "Foo".to_owned()),
                ("other_pkg".to_owned(), "Baz".to_owned())
            ]
        );
    }

    #[test]
    fn seconds_to_ns_clamps_and_rounds() {
        assert_eq!(seconds_to_ns(1.5), 1_500_000_000);
        assert_eq!(seconds_to_ns(0.1), 100_000_000);
        assert_eq!(seconds_to_ns(-2.0), 0);
        assert_eq!(seconds_to_ns(f64::NAN), 0);
        assert_eq!(seconds_to_ns(f64::INFINITY), u64::MAX);
    }

    #[test]
    fn recorder_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Recorder>();
    }
}
