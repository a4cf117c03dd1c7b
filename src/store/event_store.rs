//! [`EventStore`]: opening the store, appending with a version check, and
//! reading one stream through the key index.

use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use crate::config::{CleanupPolicy, TopicConfig};
use crate::db::Log;
use crate::error::{Error, Result};
use crate::partitioner::partition_for_key;
use crate::producer::Producer;
use crate::store::config::StoreConfig;
use crate::store::event::{AppendResult, Event, EventData, ExpectedVersion};
use crate::store::index::{SnapshotIndex, StreamIndex};
use crate::store::read;
use crate::topic::{Topic, validate_topic_name};

/// Suffix of the snapshots topic's name.
pub const SNAPSHOTS_SUFFIX: &str = "-snapshots";

/// An event store over a topic: streams of events with optimistic
/// concurrency, read back by key, with snapshots beside them.
///
/// A stream is a record key, so all its events sit in one partition (Kafka's
/// murmur2 of the key, as a Kafka producer would choose) in append order.
/// Each event carries its version (0 for a stream's first event) in the
/// header `logbus.version`. Cheap to clone and `Send + Sync`; opening the
/// same store twice on one `Log` returns the same store.
///
/// ```
/// use logbus::{EventStore, ExpectedVersion, Log, LogConfig, StoreConfig};
/// # let dir = std::env::temp_dir().join(format!("logbus-doc-store-{}", std::process::id()));
/// let log = Log::open(&dir, LogConfig::default())?;
/// let store = EventStore::open(&log, "accounts", StoreConfig::default())?;
/// store.append("acct-1", ExpectedVersion::NoStream, ["opened", "deposited 10"])?;
/// // A writer that read version 0 loses against the one above.
/// let err = store.append("acct-1", ExpectedVersion::Exact(0), ["withdrew 5"]).unwrap_err();
/// assert!(matches!(err, logbus::Error::VersionConflict { actual: Some(1), .. }));
/// let events = store.read_stream("acct-1", 0)?;
/// assert_eq!(events.len(), 2);
/// assert_eq!(events[1].version, 1);
/// # drop(log); std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), logbus::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct EventStore {
    pub(crate) shared: Arc<StoreShared>,
}

pub(crate) struct StoreShared {
    pub(crate) name: String,
    pub(crate) events: Producer,
    pub(crate) snapshots: Producer,
    /// One per events partition. Holding one serialises the version check
    /// and the append of that partition's streams.
    /// Lock order: a `streams` entry before a `snapshot_index` entry; never
    /// two entries of one vector at once.
    pub(crate) streams: Vec<Mutex<StreamIndex>>,
    /// One per snapshots partition.
    pub(crate) snapshot_index: Vec<Mutex<SnapshotIndex>>,
}

impl std::fmt::Debug for StoreShared {
    /// Names only: the indexes can hold millions of entries.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStore")
            .field("name", &self.name)
            .field("partitions", &self.streams.len())
            .finish_non_exhaustive()
    }
}

/// Stores open in this process. Two stores over one topic would each have
/// their own locks, and their version checks would race; `open` hands out
/// the live one instead.
static OPEN_STORES: Mutex<Vec<Weak<StoreShared>>> = Mutex::new(Vec::new());

/// Figures about an event store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreStats {
    /// Streams with at least one event indexed.
    pub streams: usize,
    /// Records in the events topic that are not events of this store (no
    /// key or no valid `logbus.version` header, or a version out of
    /// sequence), written by something else; they are skipped.
    pub foreign_records: u64,
}

impl EventStore {
    /// Opens the event store `name` on `log`: the events topic `name` and the
    /// compacted snapshots topic `<name>-snapshots`, each created with
    /// `config` if missing. Builds the key indexes by reading both topics
    /// once: the cost is linear in their size (about 0.5 s per million
    /// events; see the README).
    ///
    /// # Errors
    /// [`Error::InvalidName`] if `name` or `<name>-snapshots` is not a valid
    /// topic name; [`Error::InvalidConfig`] if the events topic is compacted
    /// or the snapshots topic is not; what creating or reading a topic returns.
    pub fn open(log: &Log, name: &str, config: StoreConfig) -> Result<EventStore> {
        validate_topic_name(name)?;
        let snapshots_name = format!("{name}{SNAPSHOTS_SUFFIX}");
        validate_topic_name(&snapshots_name)?;
        // Refused before anything is created, as well as when found on disk.
        check_events_policy(name, &config.events)?;
        check_snapshots_policy(&snapshots_name, &config.snapshots)?;
        // Held through the index build, so a concurrent open of the same
        // store waits for this one and then shares it.
        let mut open = OPEN_STORES.lock();
        let events = topic_or_create(log, name, config.events)?;
        check_events_policy(name, events.config())?;
        let snapshots = topic_or_create(log, &snapshots_name, config.snapshots)?;
        check_snapshots_policy(&snapshots_name, snapshots.config())?;
        open.retain(|s| s.strong_count() > 0);
        let live = open.iter().filter_map(Weak::upgrade).find(|s| {
            Arc::ptr_eq(&s.events.topic().shared, &events.shared)
                && Arc::ptr_eq(&s.snapshots.topic().shared, &snapshots.shared)
        });
        if let Some(shared) = live {
            return Ok(EventStore { shared });
        }

        let mut streams = Vec::with_capacity(events.partitions().len());
        for p in events.partitions() {
            let mut index = StreamIndex::default();
            index.catch_up(p)?;
            streams.push(Mutex::new(index));
        }
        let mut snapshot_index = Vec::with_capacity(snapshots.partitions().len());
        for p in snapshots.partitions() {
            let mut index = SnapshotIndex::default();
            index.catch_up(p)?;
            snapshot_index.push(Mutex::new(index));
        }
        // What `Log::producer` gives, back-pressure gate included, but for
        // the very topics checked above.
        let producer = |topic: Topic| {
            let gate = crate::group::progress::Gate::for_topic(log.shared(), &topic);
            Producer::new(topic, Arc::clone(log.shared().clock())).with_gate(gate)
        };
        let shared = Arc::new(StoreShared {
            name: name.to_string(),
            events: producer(events),
            snapshots: producer(snapshots),
            streams,
            snapshot_index,
        });
        open.push(Arc::downgrade(&shared));
        Ok(EventStore { shared })
    }

    /// The store's name (its events topic).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The events topic.
    pub fn events_topic(&self) -> &Topic {
        self.shared.events.topic()
    }

    /// The snapshots topic (`<name>-snapshots`).
    pub fn snapshots_topic(&self) -> &Topic {
        self.shared.snapshots.topic()
    }

    /// Appends `events` to `stream` if the stream is at `expected`, as one
    /// Kafka batch: all of them or none. The check and the append are atomic
    /// against every other append through this store in this process.
    /// Appending no event checks the version and writes nothing.
    ///
    /// # Errors
    /// [`Error::VersionConflict`] if the stream is not at `expected` (nothing
    /// written); [`Error::RecordTooLarge`] if the events do not fit one batch
    /// of the topic's `max_record_bytes` (nothing written);
    /// [`Error::InvalidName`] for an empty stream name;
    /// [`Error::Backpressure`] if the events topic has `max_unconsumed_bytes`
    /// and its consumers stay behind for 60 s (nothing written); the
    /// append's errors ([`Error::Poisoned`], [`Error::Closed`], [`Error::Io`]).
    pub fn append<E: Into<EventData>>(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: impl IntoIterator<Item = E>,
    ) -> Result<AppendResult> {
        check_stream(stream)?;
        let id = self.partition_of(stream);
        let p = self.events_partition(id);
        // Before the lock: waiting for consumers must not stall the
        // partition's other appenders' version checks.
        self.shared.events.admit(id)?;
        let mut index = self.shared.streams[id as usize].lock();
        index.catch_up(p)?;
        let actual = index.version(stream.as_bytes());
        if !expected.matches(actual) {
            return Err(Error::VersionConflict {
                stream: stream.to_string(),
                expected,
                actual,
            });
        }
        let first = actual.map_or(0, |v| v + 1);
        let key = bytes::Bytes::copy_from_slice(stream.as_bytes());
        let records: Vec<_> = (first..)
            .zip(events)
            .map(|(version, e)| e.into().into_record(&key, version, id))
            .collect();
        if records.is_empty() {
            return Ok(AppendResult {
                version: actual,
                first_version: None,
                partition: id,
                first_offset: None,
            });
        }
        let last = first + records.len() as u64 - 1;
        if last > i64::MAX as u64 {
            // Only reachable after a stray record claimed a version near the
            // cap; such a version would not be read back as an event.
            return Err(Error::InvalidConfig {
                reason: format!("stream {stream:?} would pass version {}", i64::MAX),
            });
        }
        let (written, end) = self
            .shared
            .events
            .send_one_batch_deferring_sync(id, &records)?;
        index.catch_up(p)?;
        drop(index);
        // Outside the lock, so appenders of one partition share fdatasyncs.
        // Another appender may see these events before they are durable; an
        // append it makes on top is acknowledged only after a sync covering
        // both (the log is in order), so no acknowledged event can depend on
        // a lost one.
        sync_if_always(p, end)?;
        Ok(AppendResult {
            version: Some(last),
            first_version: Some(first),
            partition: id,
            first_offset: written.first().map(|m| m.offset),
        })
    }

    /// The stream's version (its last event's); `None` if it has no event.
    ///
    /// # Errors
    /// What reading the partition returns ([`Error::Corrupt`]).
    pub fn stream_version(&self, stream: &str) -> Result<Option<u64>> {
        let id = self.partition_of(stream);
        let mut index = self.shared.streams[id as usize].lock();
        index.catch_up(self.events_partition(id))?;
        Ok(index.version(stream.as_bytes()))
    }

    /// The stream's events from version `from_version` on, in order. Reads
    /// only the stream's own records (found through the key index), never
    /// the whole log. An unknown stream has no events.
    ///
    /// # Errors
    /// What reading the partition returns ([`Error::Corrupt`]).
    pub fn read_stream(&self, stream: &str, from_version: u64) -> Result<Vec<Event>> {
        let id = self.partition_of(stream);
        let p = self.events_partition(id);
        let (first_version, offsets) = {
            let mut index = self.shared.streams[id as usize].lock();
            index.catch_up(p)?;
            match index.entry(stream.as_bytes(), p.log_start_offset()) {
                Some(entry) => {
                    let first = entry.first_version();
                    let skip = from_version.saturating_sub(first);
                    let skip = usize::try_from(skip).unwrap_or(usize::MAX);
                    let from = first.max(from_version);
                    (from, entry.offsets.get(skip..).unwrap_or(&[]).to_vec())
                }
                None => return Ok(Vec::new()),
            }
        };
        read::events_at(p, &Arc::from(stream), first_version, &offsets)
    }

    /// Streams indexed, and records skipped as not being this store's.
    pub fn stats(&self) -> StoreStats {
        let mut stats = StoreStats {
            streams: 0,
            foreign_records: 0,
        };
        for index in &self.shared.streams {
            let index = index.lock();
            stats.streams += index.streams();
            stats.foreign_records += index.foreign();
        }
        stats
    }

    /// The events partition holding `stream`.
    pub fn partition_of(&self, stream: &str) -> u32 {
        let n = self.shared.events.topic().partitions().len() as u32;
        partition_for_key(stream.as_bytes(), n)
    }

    /// `id` comes from `partition_of`, so it is below the partition count
    /// (and the length of `streams`): the indexing cannot fail.
    pub(crate) fn events_partition(&self, id: u32) -> &crate::partition::Partition {
        &self.shared.events.topic().partitions()[id as usize]
    }
}

/// The events topic must not be compacted (that would keep only each
/// stream's last event); the snapshots topic must be.
fn check_events_policy(name: &str, events: &TopicConfig) -> Result<()> {
    if events.cleanup_policy != CleanupPolicy::Delete {
        return Err(Error::InvalidConfig {
            reason: format!(
                "the events topic {name:?} must have cleanup policy `delete`: compaction would keep only each stream's last event"
            ),
        });
    }
    Ok(())
}

fn check_snapshots_policy(name: &str, snapshots: &TopicConfig) -> Result<()> {
    if snapshots.cleanup_policy == CleanupPolicy::Delete {
        return Err(Error::InvalidConfig {
            reason: format!(
                "the snapshots topic {name:?} must be compacted (cleanup policy `compact`)"
            ),
        });
    }
    Ok(())
}

/// The topic `name`, created with `config` if it does not exist.
fn topic_or_create(log: &Log, name: &str, config: TopicConfig) -> Result<Topic> {
    match log.topic(name) {
        Err(Error::UnknownTopic { .. }) => match log.create_topic(name, config) {
            Err(Error::TopicExists { .. }) => log.topic(name),
            created => created,
        },
        found => found,
    }
}

/// Waits until everything below `end` is on disk if the log promises that
/// (`Durability::Always`); the other modes sync in the background.
pub(crate) fn sync_if_always(p: &crate::partition::Partition, end: u64) -> Result<()> {
    if p.shared.durability() == crate::config::Durability::Always {
        p.shared.sync_to(end)?;
    }
    Ok(())
}

/// Stream names are record keys; an empty one is almost surely a bug.
pub(crate) fn check_stream(stream: &str) -> Result<()> {
    if stream.is_empty() {
        return Err(Error::InvalidName {
            name: String::new(),
            reason: "a stream name must not be empty",
        });
    }
    Ok(())
}
