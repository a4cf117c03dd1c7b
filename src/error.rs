//! The one public error type.
//!
//! Every variant carries the context a user needs to act on it (the path, the
//! topic and partition, the offset). Library code never panics on user input
//! or on disk contents: it returns one of these.

use std::io;
use std::path::PathBuf;

/// Result alias used throughout logbus.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in logbus.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Another `Log` (in this process or another) holds the directory lock.
    #[error("data directory is locked by another Log: {path}")]
    Locked {
        /// The lock file that could not be taken.
        path: PathBuf,
    },

    /// A topic name breaks Kafka's rule: 1..=249 chars of `[a-zA-Z0-9._-]`, not `.` or `..`.
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// Which rule it broke.
        reason: &'static str,
    },

    /// The topic does not exist.
    #[error("unknown topic {topic:?}")]
    UnknownTopic {
        /// The topic asked for.
        topic: String,
    },

    /// `create_topic` on a name that already exists.
    #[error("topic {topic:?} already exists")]
    TopicExists {
        /// The existing topic.
        topic: String,
    },

    /// The topic exists but has no such partition.
    #[error("topic {topic:?} has no partition {partition}")]
    UnknownPartition {
        /// The topic.
        topic: String,
        /// The partition asked for.
        partition: u32,
    },

    /// A record (or a batch) is larger than the topic's `max_record_bytes`.
    /// Nothing was written.
    #[error("record of {size} bytes exceeds the maximum of {max} bytes")]
    RecordTooLarge {
        /// Encoded size of the record batch.
        size: usize,
        /// The topic's limit.
        max: usize,
    },

    /// An offset outside `[log_start, log_end]` of a partition.
    #[error(
        "offset {offset} is out of range for {topic}/{partition} (log start {log_start}, log end {log_end})"
    )]
    OffsetOutOfRange {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The offending offset.
        offset: u64,
        /// First offset still in the log.
        log_start: u64,
        /// Offset the next record will get.
        log_end: u64,
    },

    /// A consumer has no position for a partition and its reset policy is `None`.
    #[error("no position for {topic}/{partition} and the offset reset policy is `none`")]
    NoOffset {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
    },

    /// A file's content is damaged in a way recovery must not paper over
    /// (for example damage followed by valid record batches).
    #[error("corrupt file {path} at byte {position}: {reason}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Byte position of the damage.
        position: u64,
        /// What is wrong.
        reason: String,
    },

    /// The directory or a file was written by a format version this build does not know.
    #[error("{path} has format version {found}; this build supports up to {supported}")]
    UnsupportedVersion {
        /// The file carrying the version.
        path: PathBuf,
        /// Version found on disk.
        found: u32,
        /// Highest version this build reads.
        supported: u32,
    },

    /// An I/O error, with the file it happened on.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// An earlier write or fsync on this partition failed. Its page-cache
    /// state is unknown, so it refuses appends until the log is reopened
    /// (retrying an fsync can report success for lost data).
    #[error("{topic}/{partition} refuses appends after an earlier I/O failure; reopen the log")]
    Poisoned {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
    },

    /// A consumer was asked about a partition it is not assigned.
    #[error("{topic}/{partition} is not assigned to this consumer")]
    NotAssigned {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
    },

    /// A configuration value is out of range.
    #[error("invalid configuration: {reason}")]
    InvalidConfig {
        /// What is wrong.
        reason: String,
    },

    /// The log (or the topic) was closed or deleted while in use.
    #[error("the log is closed")]
    Closed,

    /// A record pushed into a [`BatchBuilder`](crate::BatchBuilder) asks
    /// for another partition (explicitly, or by its key) than the records
    /// before it: one batch goes to one partition. The record was not added.
    #[error(
        "record wants partition {record} of topic {topic:?}, but its batch goes to partition {batch}"
    )]
    PartitionMismatch {
        /// The topic.
        topic: String,
        /// The partition the batch goes to.
        batch: u32,
        /// The partition the record asked for.
        record: u32,
    },

    /// [`Waker::wake`](crate::Waker::wake) interrupted a `poll`.
    #[error("poll interrupted by wakeup()")]
    Wakeup,

    /// A group member acted on a generation it is no longer part of: it was
    /// removed from the group (it stopped polling for longer than
    /// `max_poll_interval`, or left) and its partitions went to others.
    /// Kafka's `ILLEGAL_GENERATION` / `UNKNOWN_MEMBER_ID`. Its next `poll`
    /// rejoins the group.
    #[error(
        "member {member} of group {group:?} is not in generation {generation} any more (current {current})"
    )]
    StaleGeneration {
        /// The group.
        group: String,
        /// The member id.
        member: String,
        /// The generation the member acted on.
        generation: u32,
        /// The group's current generation.
        current: u32,
    },

    /// Another member joined with the same `group_instance_id`, taking this
    /// one's place (Kafka's `FENCED_INSTANCE_ID`). The handle is unusable.
    #[error(
        "member with instance id {instance_id:?} of group {group:?} was replaced by a newer one"
    )]
    Fenced {
        /// The group.
        group: String,
        /// The static instance id both members used.
        instance_id: String,
    },

    /// No such consumer group (no members and no committed offsets).
    #[error("unknown consumer group {group:?}")]
    UnknownGroup {
        /// The group asked for.
        group: String,
    },

    /// An admin operation that needs an empty group found members in it.
    #[error("consumer group {group:?} has {members} active member(s)")]
    GroupNotEmpty {
        /// The group.
        group: String,
        /// How many members it has.
        members: usize,
    },

    /// A work-queue record is not leased to this worker (any more): its
    /// lease expired and it went to another worker, or it was settled.
    #[error("{topic}/{partition} offset {offset} is not leased to this worker")]
    NotLeased {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The record's offset.
        offset: u64,
    },

    /// A partition holds `max_unconsumed_bytes` its topic's consumers have
    /// not consumed, and they did not catch up within the producer's
    /// `max_block`. Nothing was written.
    #[error(
        "{topic}/{partition} has {unconsumed_bytes} unconsumed bytes (limit {max}); consumers did not catch up in time"
    )]
    Backpressure {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// Bytes past the slowest named consumer.
        unconsumed_bytes: u64,
        /// The topic's `max_unconsumed_bytes`.
        max: u64,
    },

    /// A member asked for an assignment strategy other than the group's.
    #[error("consumer group {group:?} uses strategy {group_strategy}, not {requested}")]
    InconsistentStrategy {
        /// The group.
        group: String,
        /// The strategy its members use.
        group_strategy: &'static str,
        /// The strategy the joining member asked for.
        requested: &'static str,
    },

    /// Maintenance (retention or the cleaner) found a partition's segment
    /// list changed under it. Its files may not match memory, so
    /// maintenance leaves the partition alone until the log is reopened
    /// (whose recovery finishes any swap). Not expected in practice.
    #[error("maintenance of {path} stopped: {reason}")]
    SegmentsChanged {
        /// The partition directory.
        path: PathBuf,
        /// What did not match.
        reason: &'static str,
    },

    /// An event-store append (or snapshot) expected the stream at another
    /// version: someone else appended first. Nothing was written; read the
    /// stream again and retry (optimistic concurrency).
    #[error("stream {stream:?}: expected {expected}, but its version is {}", crate::store::describe_version(*actual))]
    VersionConflict {
        /// The stream (the records' key).
        stream: String,
        /// What the caller expected.
        expected: crate::store::ExpectedVersion,
        /// The stream's version: that of its last event, `None` if it has no event.
        actual: Option<u64>,
    },

    /// A typed event did not encode or decode (feature `serde`).
    #[error("stream {stream:?}, version {version:?}: event codec failed: {reason}")]
    Codec {
        /// The stream.
        stream: String,
        /// The event's version (`None` when encoding, before it has one).
        version: Option<u64>,
        /// The codec's message.
        reason: String,
    },
}

impl Error {
    /// Wraps an `io::Error` with the path it happened on.
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(
        path: impl Into<PathBuf>,
        position: u64,
        reason: impl Into<String>,
    ) -> Self {
        Error::Corrupt {
            path: path.into(),
            position,
            reason: reason.into(),
        }
    }
}
