//! In-memory key indexes over one partition: which offsets hold a stream's
//! events, and where a stream's latest snapshot is.
//!
//! Both are built by one scan of the partition when the store opens, then
//! kept current by [`catch_up`](StreamIndex::catch_up), which indexes
//! whatever was appended since (by this store or anyone else) before every
//! lookup and after every append. That keeps the index right even when an
//! append failed after its batch reached the log (a failed fsync).

use std::collections::HashMap;

use bytes::Bytes;

use crate::error::Result;
use crate::log::record::{self, RecordView};
use crate::partition::Partition;
use crate::store::event::find_version;
use crate::store::read;

/// Bytes fetched per step of a scan.
const SCAN_BYTES: usize = 1 << 20;

/// Calls `f` on every record of `p` in `[from, to)`, in offset order.
/// Returns the offset the next scan starts at (`to`, unless the partition
/// shrank under it).
pub(crate) fn scan(
    p: &Partition,
    from: u64,
    to: u64,
    mut f: impl FnMut(&RecordView<'_>),
) -> Result<u64> {
    let mut offset = from.max(p.log_start_offset());
    while offset < to {
        let Some(fetched) = read::fetch_retained(p, offset, SCAN_BYTES)? else {
            offset = p.log_start_offset(); // retention moved on meanwhile
            continue;
        };
        if fetched.bytes.is_empty() {
            break;
        }
        let mut next = offset;
        for r in fetched.records() {
            let r = r?;
            if r.offset >= to {
                break;
            }
            f(&r);
            next = r.offset + 1;
        }
        if next == offset {
            // Nothing at or after `offset` in what came back (compaction
            // emptied the end of a batch): go past the batches themselves.
            next = batches_end(&fetched.bytes).max(offset);
            if next == offset {
                break; // defensive: never loop without progress
            }
        }
        offset = next;
    }
    Ok(offset.max(from))
}

/// The offset after the last whole batch in `bytes`.
pub(crate) fn batches_end(bytes: &[u8]) -> u64 {
    let mut at = 0;
    let mut end = 0;
    while let Ok(header) = record::parse_header(&bytes[at..]) {
        let len = header.total_len();
        if len > bytes.len() - at {
            break;
        }
        end = u64::try_from(header.next_offset()).unwrap_or(0);
        at += len;
    }
    end
}

/// One stream's events in one partition.
#[derive(Debug, Default)]
pub(crate) struct StreamEntry {
    /// Version the next event gets (the stream's version + 1).
    pub next_version: u64,
    /// Offsets of the events still indexed, in version order; the last one
    /// has version `next_version - 1`. Retention may have removed the
    /// front, so the first need not be version 0.
    pub offsets: Vec<u64>,
}

impl StreamEntry {
    /// The stream's version (its last event's).
    pub fn version(&self) -> u64 {
        self.next_version - 1
    }

    /// Version of `offsets[0]`.
    pub fn first_version(&self) -> u64 {
        self.next_version - self.offsets.len() as u64
    }
}

/// Stream → event offsets for one partition of the events topic.
#[derive(Debug, Default)]
pub(crate) struct StreamIndex {
    streams: HashMap<Bytes, StreamEntry>,
    /// Every record below this offset is indexed.
    indexed_to: u64,
    /// Records that are not events of this store (no key, no value, no
    /// valid version header, or a version out of sequence): written to the
    /// events topic by something else. Skipped.
    foreign: u64,
}

impl StreamIndex {
    /// Indexes everything appended to `p` since the last call.
    pub fn catch_up(&mut self, p: &Partition) -> Result<()> {
        let end = p.log_end_offset();
        if self.indexed_to >= end {
            return Ok(());
        }
        self.indexed_to = scan(p, self.indexed_to, end, |r| self.add(r))?;
        Ok(())
    }

    fn add(&mut self, r: &RecordView<'_>) {
        let (Some(key), Some(_), Some(version)) = (r.key, r.value, find_version(r.headers()))
        else {
            self.foreign += 1;
            return;
        };
        match self.streams.get_mut(key) {
            Some(entry) if entry.next_version == version => {
                entry.offsets.push(r.offset);
                entry.next_version += 1;
            }
            Some(_) => self.foreign += 1,
            // The first event seen of a stream: version 0, or a later one
            // when retention removed the stream's start.
            None => {
                let entry = StreamEntry {
                    next_version: version.saturating_add(1),
                    offsets: vec![r.offset],
                };
                self.streams.insert(Bytes::copy_from_slice(key), entry);
            }
        }
    }

    /// The stream's version; `None` if it has no event.
    pub fn version(&self, stream: &[u8]) -> Option<u64> {
        self.streams.get(stream).map(StreamEntry::version)
    }

    /// The stream's entry, with offsets below `log_start` (removed by
    /// retention) dropped first.
    pub fn entry(&mut self, stream: &[u8], log_start: u64) -> Option<&StreamEntry> {
        let entry = self.streams.get_mut(stream)?;
        let gone = entry.offsets.partition_point(|&o| o < log_start);
        if gone > 0 {
            entry.offsets.drain(..gone);
        }
        Some(entry)
    }

    /// Whether the record at `offset` is an event of `stream` (and not a
    /// record written around the store).
    pub fn holds(&self, stream: &[u8], offset: u64) -> bool {
        self.streams
            .get(stream)
            .is_some_and(|e| e.offsets.binary_search(&offset).is_ok())
    }

    pub fn streams(&self) -> usize {
        self.streams.len()
    }

    pub fn foreign(&self) -> u64 {
        self.foreign
    }
}

/// Where a stream's latest snapshot is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SnapshotRef {
    /// Version of the last event the snapshot covers.
    pub version: u64,
    /// Offset of the snapshot record.
    pub offset: u64,
}

/// Stream → latest snapshot for one partition of the snapshots topic.
#[derive(Debug, Default)]
pub(crate) struct SnapshotIndex {
    latest: HashMap<Bytes, SnapshotRef>,
    indexed_to: u64,
}

impl SnapshotIndex {
    /// Indexes everything appended to `p` since the last call.
    pub fn catch_up(&mut self, p: &Partition) -> Result<()> {
        let end = p.log_end_offset();
        if self.indexed_to >= end {
            return Ok(());
        }
        self.indexed_to = scan(p, self.indexed_to, end, |r| self.add(r))?;
        Ok(())
    }

    fn add(&mut self, r: &RecordView<'_>) {
        let Some(key) = r.key else {
            return;
        };
        match (r.value, find_version(r.headers())) {
            (Some(_), Some(version)) => {
                let at = SnapshotRef {
                    version,
                    offset: r.offset,
                };
                self.latest.insert(Bytes::copy_from_slice(key), at);
            }
            // A tombstone deletes the stream's snapshot, as compaction will.
            (None, _) => {
                self.latest.remove(key);
            }
            (Some(_), None) => {} // not a snapshot of this store
        }
    }

    /// The latest snapshot of `stream`, if any.
    pub fn latest(&self, stream: &[u8]) -> Option<SnapshotRef> {
        self.latest.get(stream).copied()
    }
}
