//! Replaying every event from an offset or a timestamp (projections,
//! read models, migrations).

use std::collections::VecDeque;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::partition::Partition;
use crate::store::event::{Event, find_version};
use crate::store::event_store::EventStore;
use crate::store::read;

/// Bytes read per step of a replay.
const REPLAY_BYTES: usize = 1 << 20;

/// An iterator over the events of the store, partition by partition, each
/// in offset order (per stream that is version order). It stops at the log
/// end of each partition as of its creation. It returns exactly the events
/// [`read_stream`](EventStore::read_stream) returns: records written around
/// the store (see [`StoreStats::foreign_records`](crate::StoreStats)) are skipped.
#[derive(Debug)]
pub struct Replay {
    store: EventStore,
    /// (partition, next offset, end offset), in partition order.
    ranges: VecDeque<(Partition, u64, u64)>,
    buffered: VecDeque<Event>,
    failed: bool,
}

impl Iterator for Replay {
    type Item = Result<Event>;

    fn next(&mut self) -> Option<Result<Event>> {
        loop {
            if let Some(e) = self.buffered.pop_front() {
                return Some(Ok(e));
            }
            if self.failed {
                return None;
            }
            let (p, next, end) = self.ranges.front_mut()?;
            if *next >= *end {
                self.ranges.pop_front();
                continue;
            }
            match fill(&self.store, p, *next, *end, &mut self.buffered) {
                Ok(after) => *next = after,
                Err(e) => {
                    self.failed = true; // nothing after damage is trusted
                    return Some(Err(e));
                }
            }
        }
    }
}

/// Buffers the events of `p` from `from` (below `end`); returns the offset
/// to read next.
fn fill(
    store: &EventStore,
    p: &Partition,
    from: u64,
    end: u64,
    out: &mut VecDeque<Event>,
) -> Result<u64> {
    let from = from.max(p.log_start_offset()); // retention may have moved on
    if from >= end {
        return Ok(end);
    }
    let Some(fetched) = read::fetch_retained(p, from, REPLAY_BYTES)? else {
        return Ok(from); // retention moved on meanwhile: the next call skips ahead
    };
    let mut next = from;
    let mut candidates = Vec::new();
    for r in fetched.records() {
        let r = r?;
        if r.offset >= end {
            next = end;
            break;
        }
        next = r.offset + 1;
        let (Some(key), Some(_), Some(version)) = (r.key, r.value, find_version(r.headers()))
        else {
            continue; // not an event of this store
        };
        let Ok(stream) = std::str::from_utf8(key) else {
            continue;
        };
        candidates.push(read::to_event(
            &fetched,
            &r,
            Arc::from(stream),
            version,
            p.id(),
        ));
    }
    // Kept apart from the decoding above so appends to the partition wait
    // only for the lookups: a version header out of sequence is not an event.
    let mut index = store.shared.streams[p.id() as usize].lock();
    index.catch_up(p)?;
    out.extend(
        candidates
            .into_iter()
            .filter(|e| index.holds(e.stream.as_bytes(), e.offset)),
    );
    drop(index);
    if next == from {
        // Nothing at or after `from` in what came back (compaction emptied
        // the end of a batch): go past the batches, or stop if none.
        next = crate::store::index::batches_end(&fetched.bytes).max(from);
        if next == from {
            return Ok(end);
        }
    }
    Ok(next)
}

impl EventStore {
    /// Every event of `partition` from `offset` on.
    ///
    /// # Errors
    /// [`Error::UnknownPartition`]; [`Error::OffsetOutOfRange`] outside
    /// `[log_start_offset, log_end_offset]`.
    pub fn replay_from_offset(&self, partition: u32, offset: u64) -> Result<Replay> {
        let p = self.events_topic().partition(partition)?.clone();
        let (start, end) = (p.log_start_offset(), p.log_end_offset());
        if offset < start || offset > end {
            return Err(Error::OffsetOutOfRange {
                topic: self.name().to_string(),
                partition,
                offset,
                log_start: start,
                log_end: end,
            });
        }
        Ok(Replay::new(self, vec![(p, offset, end)]))
    }

    /// Every event of every partition, from the start.
    pub fn replay_all(&self) -> Replay {
        let ranges = self
            .events_topic()
            .partitions()
            .iter()
            .map(|p| (p.clone(), p.log_start_offset(), p.log_end_offset()))
            .collect();
        Replay::new(self, ranges)
    }

    /// Every event with a timestamp at or after `timestamp_ms`: in each
    /// partition, from the earliest offset whose timestamp is
    /// `>= timestamp_ms` (Kafka's `offsetsForTimes`) on. Later events with
    /// an older timestamp (given explicitly at append) come too.
    ///
    /// # Errors
    /// [`Error::Corrupt`] if a time index lookup meets damage.
    pub fn replay_from_timestamp(&self, timestamp_ms: i64) -> Result<Replay> {
        let mut ranges = Vec::new();
        for p in self.events_topic().partitions() {
            let end = p.log_end_offset();
            if let Some((offset, _)) = p.shared.offset_for_time(timestamp_ms)? {
                ranges.push((p.clone(), offset, end));
            }
        }
        Ok(Replay::new(self, ranges))
    }
}

impl Replay {
    fn new(store: &EventStore, ranges: Vec<(Partition, u64, u64)>) -> Self {
        Replay {
            store: store.clone(),
            ranges: ranges.into(),
            buffered: VecDeque::new(),
            failed: false,
        }
    }
}
