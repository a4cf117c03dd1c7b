//! [`Producer`]: choosing partitions, checking sizes and batching.

use std::borrow::Borrow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::batch::BatchBuilder;
use crate::config::Clock;
use crate::error::{Error, Result};
use crate::group::progress::Gate;
use crate::log::record;
use crate::partition::Partition;
use crate::record::{Record, RecordMetadata};
use crate::topic::{STICKY_BYTES, Topic};

/// Sends records to one topic. Thread-safe and cheap to clone: share one
/// between threads or give each its own.
///
/// A record goes to its explicit partition, else to Kafka's murmur2 hash of
/// its key (the same partition Kafka's default partitioner picks, so per-key
/// order survives a move to Kafka), else to a sticky partition that moves
/// on every 16 KiB of keyless data.
///
/// ```
/// # use logbus::{Log, LogConfig, Record, TopicConfig};
/// # let dir = std::env::temp_dir().join(format!("logbus-doc-producer-{}", std::process::id()));
/// # let log = Log::open(&dir, LogConfig::default())?;
/// log.create_topic("orders", TopicConfig::new(4))?;
/// let producer = log.producer("orders")?;
/// let meta = producer.send(Record::new("order #1").key("customer-7"))?;
/// let batch = producer.send_batch(&[Record::new("a"), Record::new("b")])?;
/// assert_eq!(batch.len(), 2);
/// # drop(log); std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), logbus::Error>(())
/// ```
#[derive(Debug)]
pub struct Producer {
    topic: Topic,
    clock: Arc<dyn Clock>,
    /// Bytes this handle sent without a key (the sticky partitioner's
    /// position). Per handle, so producer threads holding their own clones
    /// stick to different partitions instead of contending on one.
    keyless_bytes: AtomicU64,
    /// Back-pressure, for topics with `max_unconsumed_bytes`.
    gate: Option<Gate>,
}

impl Clone for Producer {
    fn clone(&self) -> Self {
        let mut clone = Producer::new(self.topic.clone(), Arc::clone(&self.clock));
        clone.gate = self.gate.clone();
        clone
    }
}

impl Producer {
    pub(crate) fn new(topic: Topic, clock: Arc<dyn Clock>) -> Self {
        // Each handle starts at a different sticky partition.
        static HANDLES: AtomicU64 = AtomicU64::new(0);
        let start = HANDLES.fetch_add(1, Ordering::Relaxed) * STICKY_BYTES;
        Producer {
            topic,
            clock,
            keyless_bytes: AtomicU64::new(start),
            gate: None,
        }
    }

    pub(crate) fn with_gate(mut self, gate: Option<Gate>) -> Self {
        self.gate = gate;
        self
    }

    /// How long a send waits for consumers when the topic's
    /// `max_unconsumed_bytes` is reached, before it fails with
    /// [`Error::Backpressure`] (Kafka's `max.block.ms`, default 60 s).
    /// No effect on topics without that limit.
    pub fn set_max_block(&mut self, max_block: std::time::Duration) {
        if let Some(gate) = &mut self.gate {
            gate.max_block = max_block;
        }
    }

    /// Waits while `partition` is over its back-pressure limit.
    pub(crate) fn admit(&self, partition: u32) -> Result<()> {
        match &self.gate {
            Some(gate) => gate.admit(&self.topic, partition),
            None => Ok(()),
        }
    }

    /// The topic this producer writes to.
    pub fn topic(&self) -> &Topic {
        &self.topic
    }

    /// A [`BatchBuilder`]: records encoded as they are pushed, appended to
    /// one partition by [`BatchBuilder::send`]. The fastest way to append
    /// many small records.
    pub fn batch(&self) -> BatchBuilder<'_> {
        BatchBuilder::new(self)
    }

    pub(crate) fn keyless_bytes(&self) -> &AtomicU64 {
        &self.keyless_bytes
    }

    pub(crate) fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Appends one record (as a batch of one) and returns where it landed,
    /// once it is as durable as the log's [`Durability`](crate::Durability) promises.
    ///
    /// # Errors
    /// [`Error::RecordTooLarge`] (nothing written), [`Error::UnknownPartition`],
    /// [`Error::Poisoned`] after an earlier I/O failure, [`Error::Closed`];
    /// [`Error::Backpressure`] (nothing written) when the topic's
    /// `max_unconsumed_bytes` is reached and its consumers do not catch up
    /// within [`set_max_block`](Producer::set_max_block).
    pub fn send(&self, record: Record) -> Result<RecordMetadata> {
        let now = self.clock.now_ms();
        let records = [&record];
        let len = record::encoded_len(&records, now);
        self.check_size(len)?;
        let partition = self
            .topic
            .choose_partition(&record, len, &self.keyless_bytes)?;
        self.admit(partition)?;
        let p = &self.topic.partitions()[partition as usize];
        let appended = append_exact(p, &records, len, now)?;
        Ok(RecordMetadata {
            partition,
            offset: appended.base_offset,
            timestamp: record.timestamp.unwrap_or(now),
        })
    }

    /// Appends many records; returns their metadata in the same order.
    ///
    /// Records for one partition are written as few batches as
    /// `max_record_bytes` allows, each batch atomically. Every record's size
    /// is checked before anything is written. If an append fails part way
    /// (I/O error), the batches already written stay written.
    ///
    /// # Errors
    /// As [`send`](Producer::send).
    pub fn send_batch(&self, records: &[Record]) -> Result<Vec<RecordMetadata>> {
        let Some(first) = records.first() else {
            return Ok(Vec::new());
        };
        let now = self.clock.now_ms();
        let max = self.topic.config().max_record_bytes;
        // Upper bound of each record's share of a batch, cheap to compute;
        // the exact size is only worked out for a record near the limit.
        // Same pass: whether every record goes to one partition without
        // grouping (all to the same explicit partition, or all keyless).
        let mut total = 0;
        let mut one_partition = true;
        for r in records {
            let bound = size_bound(r);
            if bound + record::BATCH_HEADER_LEN > max {
                self.check_size(record::encoded_len(&[r], now))?;
            }
            total += bound;
            one_partition &= match first.partition {
                Some(p) => r.partition == Some(p),
                None => r.partition.is_none() && r.key.is_none(),
            };
        }
        if one_partition {
            // Keyless records of one call share one sticky partition, as in Kafka.
            let partition = self
                .topic
                .choose_partition(first, total, &self.keyless_bytes)?;
            self.admit(partition)?;
            let p = &self.topic.partitions()[partition as usize];
            let mut out = Vec::with_capacity(records.len());
            let mut rest = records;
            while !rest.is_empty() {
                let (chunk, bound) = if total + record::BATCH_HEADER_LEN <= max {
                    (rest, total + record::BATCH_HEADER_LEN)
                } else {
                    greedy_chunk(rest, max)
                };
                let appended = append_chunk(p, chunk, bound, total, now)?;
                out.extend(chunk.iter().enumerate().map(|(k, r)| RecordMetadata {
                    partition,
                    offset: appended.base_offset + k as u64,
                    timestamp: r.timestamp.unwrap_or(now),
                }));
                rest = &rest[chunk.len()..];
            }
            return Ok(out);
        }
        self.send_grouped(records, total, now)
    }

    /// Appends `records` to `partition` as exactly one batch, or writes
    /// nothing: [`Error::RecordTooLarge`] if their exact encoded size passes
    /// `max_record_bytes`. `send_batch` splits a group by an upper bound of
    /// the size instead, so it may write two batches where one would fit;
    /// the event store needs all-or-nothing.
    ///
    /// Never waits for a sync: under `Durability::Always` the caller calls
    /// `sync_to` with the returned log end after releasing its own locks
    /// (the event store appends under a per-partition lock, and holding it
    /// through an fdatasync would defeat group commit).
    pub(crate) fn send_one_batch_deferring_sync(
        &self,
        partition: u32,
        records: &[Record],
    ) -> Result<(Vec<RecordMetadata>, u64)> {
        let now = self.clock.now_ms();
        let len = record::encoded_len(records, now);
        self.check_size(len)?;
        let p = self.topic.partition(partition)?;
        let (appended, end) = p.shared.append_deferring_sync(records, len, now)?;
        let metas = records
            .iter()
            .enumerate()
            .map(|(k, r)| RecordMetadata {
                partition,
                offset: appended.base_offset + k as u64,
                timestamp: r.timestamp.unwrap_or(now),
            })
            .collect();
        Ok((metas, end))
    }

    /// `send_batch` for records bound for several partitions: groups them
    /// by partition, keeping order.
    fn send_grouped(
        &self,
        records: &[Record],
        total: usize,
        now: i64,
    ) -> Result<Vec<RecordMetadata>> {
        let max = self.topic.config().max_record_bytes;
        // Keyless records of one call share one sticky partition, as in Kafka.
        let mut keyless_partition = None;
        let mut groups: Vec<(u32, Vec<usize>)> = Vec::new();
        for (i, r) in records.iter().enumerate() {
            let p = if r.partition.is_none() && r.key.is_none() {
                match keyless_partition {
                    Some(p) => p,
                    None => *keyless_partition.insert(self.topic.choose_partition(
                        r,
                        total,
                        &self.keyless_bytes,
                    )?),
                }
            } else {
                self.topic
                    .choose_partition(r, size_bound(r), &self.keyless_bytes)?
            };
            match groups.iter_mut().find(|(gp, _)| *gp == p) {
                Some((_, idx)) => idx.push(i),
                None => groups.push((p, vec![i])),
            }
        }

        let mut out = vec![
            RecordMetadata {
                partition: 0,
                offset: 0,
                timestamp: 0
            };
            records.len()
        ];
        for (partition, _) in &groups {
            self.admit(*partition)?;
        }
        for (partition, indices) in groups {
            let p = &self.topic.partitions()[partition as usize];
            let group: Vec<&Record> = indices.iter().map(|&i| &records[i]).collect();
            let group_bound: usize = group.iter().map(|r| size_bound(r)).sum();
            let mut start = 0;
            while start < group.len() {
                let (chunk, bound) = greedy_chunk(&group[start..], max);
                let appended = append_chunk(p, chunk, bound, group_bound, now)?;
                for (k, &i) in indices[start..start + chunk.len()].iter().enumerate() {
                    out[i] = RecordMetadata {
                        partition,
                        offset: appended.base_offset + k as u64,
                        timestamp: records[i].timestamp.unwrap_or(now),
                    };
                }
                start += chunk.len();
            }
        }
        Ok(out)
    }

    fn check_size(&self, size: usize) -> Result<()> {
        let max = self.topic.config().max_record_bytes;
        if size > max {
            Err(Error::RecordTooLarge { size, max })
        } else {
            Ok(())
        }
    }
}

/// Batches at least this large are encoded outside the partition's lock
/// and written with `pwrite`; smaller ones are encoded straight into the
/// segment's map (no system call). Measured with `bench/` (`compare`).
const PWRITE_MIN_BYTES: usize = 16 << 10;

/// A `send_batch` group (the records of one call for one partition) whose
/// size bound is at least this goes through `pwrite` whole, without working
/// out exact sizes first: even at the largest per-record overestimate of
/// `size_bound` its batches hold several `PWRITE_MIN_BYTES`. Writing the
/// small last chunk of a large group through the map instead would
/// pre-fault (zero-fill) 256 KiB of pages that the next `pwrite` overwrites.
const PWRITE_GROUP_BOUND: usize = 64 << 10;

thread_local! {
    /// Reused encode buffer for the `pwrite` path: one per producing thread.
    /// It only grows, and is never cleared: `encode_batch_into` overwrites
    /// what it uses.
    static ENCODE_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The longest prefix of `records` that fits `max` by the size bounds (at
/// least one record), and its bound including the batch header.
fn greedy_chunk<R: Borrow<Record>>(records: &[R], max: usize) -> (&[R], usize) {
    let mut bound = record::BATCH_HEADER_LEN;
    let mut end = 0;
    for r in records {
        let size = size_bound(r.borrow());
        if end > 0 && bound + size > max {
            break;
        }
        bound += size;
        end += 1;
    }
    (&records[..end], bound)
}

/// Appends one chunk of a `send_batch` group as one batch. `bound` is the
/// chunk's size bound (header included), `group_bound` the whole group's.
fn append_chunk<R: Borrow<Record>>(
    p: &Partition,
    records: &[R],
    bound: usize,
    group_bound: usize,
    now: i64,
) -> Result<crate::log::segment::Appended> {
    if group_bound >= PWRITE_GROUP_BOUND {
        return append_pwrite(p, records, bound, now);
    }
    append_exact(p, records, record::encoded_len(records, now), now)
}

/// Appends `records`, `len` bytes encoded, the way their size calls for.
fn append_exact<R: Borrow<Record>>(
    p: &Partition,
    records: &[R],
    len: usize,
    now: i64,
) -> Result<crate::log::segment::Appended> {
    if len < PWRITE_MIN_BYTES {
        p.shared.append(records, len, now)
    } else {
        append_pwrite(p, records, len, now)
    }
}

/// Encodes `records` (at most `bound` bytes) outside the partition's lock
/// and writes them with `pwrite`.
fn append_pwrite<R: Borrow<Record>>(
    p: &Partition,
    records: &[R],
    bound: usize,
    now: i64,
) -> Result<crate::log::segment::Appended> {
    ENCODE_BUF.with_borrow_mut(|buf| {
        if buf.len() < bound {
            buf.resize(bound, 0);
        }
        let encoded = record::encode_batch_into(&mut buf[..bound], 0, records, now);
        p.shared
            .append_encoded(&mut buf[..encoded.len], &encoded, records.len(), now)
    })
}

/// An upper bound of a record's encoded size inside a batch: every varint at
/// its widest (length 5, timestamp delta 10, offset delta 5, key and value
/// lengths 5 each, header count 5, per header 10) plus the bytes themselves.
fn size_bound(r: &Record) -> usize {
    record::record_size_bound(r.key.as_deref(), r.value.as_deref(), &r.headers)
}
