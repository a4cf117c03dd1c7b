//! Snapshots: a stream's state at a version, kept in the compacted topic
//! `<name>-snapshots` (compaction keeps the latest per stream), and loading
//! a stream as latest snapshot + the events after it.

use std::sync::Arc;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::partitioner::partition_for_key;
use crate::record::Record;
use crate::store::event::{Event, ExpectedVersion, version_header};
use crate::store::event_store::{EventStore, check_stream, sync_if_always};
use crate::store::read;

/// A stream's state as of one of its versions, saved by the application.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Snapshot {
    /// The stream.
    pub stream: Arc<str>,
    /// Version of the last event the state includes.
    pub version: u64,
    /// Milliseconds since the Unix epoch (when it was saved).
    pub timestamp: i64,
    /// The state (any format), a zero-copy view of the stored record.
    pub data: Bytes,
}

/// Lookups of a snapshot that compaction removed meanwhile, before giving up
/// (each retry first indexes the newer snapshot that replaced it).
const SNAPSHOT_RETRIES: usize = 3;

impl EventStore {
    /// Saves `data` as the state of `stream` after its event `version`.
    /// The latest saved snapshot wins (even if its version is older).
    ///
    /// # Errors
    /// [`Error::VersionConflict`] if the stream has not reached `version`
    /// (with `expected: Exact(version)` and the stream's actual version);
    /// [`Error::RecordTooLarge`]; the append's errors.
    pub fn save_snapshot(&self, stream: &str, version: u64, data: impl Into<Bytes>) -> Result<()> {
        check_stream(stream)?;
        let actual = self.stream_version(stream)?;
        if actual.is_none_or(|a| a < version) {
            return Err(Error::VersionConflict {
                stream: stream.to_string(),
                expected: ExpectedVersion::Exact(version),
                actual,
            });
        }
        let id = self.snapshot_partition_of(stream);
        let record = Record {
            key: Some(Bytes::copy_from_slice(stream.as_bytes())),
            value: Some(data.into()),
            headers: vec![version_header(version)],
            timestamp: None,
            partition: Some(id),
        };
        let p = self.snapshots_partition(id);
        let mut index = self.shared.snapshot_index[id as usize].lock();
        let (_, end) = self
            .shared
            .snapshots
            .send_one_batch_deferring_sync(id, &[record])?;
        index.catch_up(p)?;
        drop(index);
        sync_if_always(p, end)
    }

    /// The latest snapshot of `stream`, if one was saved.
    ///
    /// # Errors
    /// What reading the snapshots topic returns ([`Error::Corrupt`]).
    pub fn latest_snapshot(&self, stream: &str) -> Result<Option<Snapshot>> {
        let id = self.snapshot_partition_of(stream);
        let p = self.snapshots_partition(id);
        for _ in 0..SNAPSHOT_RETRIES {
            let at = {
                let mut index = self.shared.snapshot_index[id as usize].lock();
                index.catch_up(p)?;
                match index.latest(stream.as_bytes()) {
                    Some(at) => at,
                    None => return Ok(None),
                }
            };
            let found = read::record_at(p, at.offset, |fetched, r| Snapshot {
                stream: Arc::from(stream),
                version: at.version,
                timestamp: r.timestamp,
                data: r.value.map_or_else(Bytes::new, |v| read::share(fetched, v)),
            })?;
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }

    /// What rebuilding `stream`'s state needs: its latest snapshot (if any)
    /// and the events after it, in order.
    ///
    /// ```
    /// # use logbus::*;
    /// # let dir = std::env::temp_dir().join(format!("logbus-doc-load-{}", std::process::id()));
    /// # let log = Log::open(&dir, LogConfig::default())?;
    /// let store = EventStore::open(&log, "counters", StoreConfig::default())?;
    /// store.append("c", ExpectedVersion::NoStream, ["+1", "+1"])?;
    /// store.save_snapshot("c", 1, "2")?;
    /// store.append("c", ExpectedVersion::Exact(1), ["+1"])?;
    /// let (snapshot, events) = store.load("c")?;
    /// assert_eq!(snapshot.unwrap().data, "2");
    /// assert_eq!(events.len(), 1);
    /// assert_eq!(events[0].version, 2);
    /// # drop(log); std::fs::remove_dir_all(&dir).ok();
    /// # Ok::<(), logbus::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`latest_snapshot`](EventStore::latest_snapshot) and
    /// [`read_stream`](EventStore::read_stream).
    pub fn load(&self, stream: &str) -> Result<(Option<Snapshot>, Vec<Event>)> {
        let snapshot = self.latest_snapshot(stream)?;
        let from = snapshot.as_ref().map_or(0, |s| s.version + 1);
        let events = self.read_stream(stream, from)?;
        Ok((snapshot, events))
    }

    fn snapshot_partition_of(&self, stream: &str) -> u32 {
        let n = self.shared.snapshots.topic().partitions().len() as u32;
        partition_for_key(stream.as_bytes(), n)
    }

    fn snapshots_partition(&self, id: u32) -> &crate::partition::Partition {
        &self.shared.snapshots.topic().partitions()[id as usize]
    }
}
