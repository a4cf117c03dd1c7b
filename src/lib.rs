//! # logbus
//!
//! A Kafka-style commit log inside your process: topics, partitions,
//! producers and consumers over memory-mapped segment files, durable on
//! disk. No broker, no ZooKeeper: open a directory and go.
//!
//! ```
//! use logbus::{ConsumerConfig, Log, LogConfig, Record, TopicConfig, TopicPartition};
//! use std::time::Duration;
//! # let dir = std::env::temp_dir().join(format!("logbus-doc-lib-{}", std::process::id()));
//!
//! let log = Log::open(&dir, LogConfig::default())?;
//! log.create_topic("greetings", TopicConfig::new(1))?;
//! log.producer("greetings")?.send(Record::new("hello").key("en"))?;
//!
//! let mut consumer = log.consumer(ConsumerConfig::default());
//! consumer.assign(&[TopicPartition::new("greetings", 0)])?;
//! let records = consumer.poll(Duration::from_secs(1))?;
//! for r in &records {
//!     assert_eq!((r.key, r.value), (Some(&b"en"[..]), Some(&b"hello"[..])));
//! }
//! log.close()?;
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok::<(), logbus::Error>(())
//! ```
//!
//! # Layout
//! - [`db`](Log) — `Log`: opening, locking and closing a data directory; topics.
//! - `topic` — a topic's partitions, stored config and partitioner.
//! - `partition` — one partition: segments behind locks, published end
//!   offset, consumer wake-ups, group commit.
//! - `log` — the storage engine: `record` (Kafka RecordBatch v2 codec),
//!   `index` (`.index`/`.timeindex`), `segment` (one `.log` file, read
//!   side), `writer` (appends), `open` (opening and recovering a segment),
//!   and loading a partition directory.
//! - `producer`, `consumer` — the client API; `consumer_records` — what a
//!   poll returns (`ConsumerRecords`: fetched bytes plus a compact entry per
//!   record, lent as `PolledRecord`s).
//! - `group` — consumer groups: assignors, the in-process coordinator,
//!   committed offsets (`__consumer_offsets`), the member handle, admin.
//! - `queue` — work queues (share groups): leases, acks, dead letters,
//!   state in `__work_queue_state`.
//! - `store` — the event store: streams with optimistic concurrency, a key
//!   index, replay, snapshots in a compacted topic, typed events (`serde`).
//! - `worker` — the background flusher thread.
//! - `maintenance` — the background retention / compaction thread and
//!   `Log::maintain`; `retention` and `compaction` are its pure policies
//!   (segment metadata in, plan out); the cleaner's byte work is
//!   `log::clean` (with `log::offset_map`), the crash-safe swap `log::swap`,
//!   and a partition's segment-list changes `partition::upkeep`.
//! - `partitioner` — Kafka's murmur2.
//! - `io` — directory lock, fsync, atomic file replacement, block
//!   reservation, a file's data ranges, checksummed metadata files; the
//!   storage seam whose test side, `crashsim`, simulates power cuts and
//!   injects I/O errors.
//! - `config`, `error`, `record` — options, the error type, record types.
//! - `fuzzing` (feature `fuzzing`, hidden) — the entry points of the fuzz
//!   targets in `fuzz/`, also run under proptest by `cargo test`.
//!
//! On-disk format: `docs/FORMAT.md`.

#![deny(unsafe_code)]
#![warn(missing_docs)]

mod batch;
mod compaction;
mod config;
mod consumer;
mod consumer_records;
mod db;
mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(all(test, not(feature = "fuzzing")))]
mod fuzzing;
mod group;
mod io;
#[cfg(feature = "bench-internals")]
pub mod log;
#[cfg(not(feature = "bench-internals"))]
mod log;
mod maintenance;
mod partition;
mod partitioner;
mod producer;
mod queue;
mod record;
mod retention;
mod store;
mod topic;
mod worker;

#[cfg(test)]
mod crashsim;
#[cfg(test)]
mod testutil;

pub use batch::{BatchBuilder, SentBatch};
pub use config::{
    CleanupPolicy, Clock, Durability, LogConfig, ManualClock, OffsetReset, SystemClock, TopicConfig,
};
pub use consumer::{Consumer, ConsumerConfig, OffsetAndTimestamp, TopicPartition, Waker};
pub use consumer_records::{ConsumerRecords, PolledRecord, RecordsIntoIter, RecordsIter};
pub use db::{FORMAT_VERSION, Log, RecoveryReport};
pub use error::{Error, Result};
pub use group::{
    AssignmentStrategy, ConsumerGroup, GroupConfig, GroupDescription, GroupState,
    MemberDescription, OffsetAndMetadata, OffsetSpec, PartitionOffsets, RebalanceContext,
    RebalanceListener,
};
pub use log::PartitionRecovery;
pub use log::record::RecordView;
pub use maintenance::{CleanerStats, MaintenanceSummary};
pub use partition::{FetchedBatches, FetchedRecords, Partition, PartitionStats};
pub use partitioner::{murmur2, partition_for_key};
pub use producer::Producer;
pub use queue::{
    DLQ_DELIVERIES, DLQ_REASON, DLQ_SOURCE, Delivery, QueueBacklog, QueueConfig, WorkQueue, Worker,
};
pub use record::{ConsumerRecord, Header, Record, RecordMetadata, TopicName};
#[cfg(feature = "serde_json")]
pub use store::JsonCodec;
pub use store::{
    AppendResult, Event, EventData, EventStore, ExpectedVersion, Replay, SNAPSHOTS_SUFFIX,
    Snapshot, StoreConfig, StoreStats, VERSION_HEADER,
};
#[cfg(feature = "serde")]
pub use store::{EventCodec, TypedEvent, TypedStore};
pub use topic::{Topic, validate_topic_name};
