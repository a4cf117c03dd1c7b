//! [`BatchBuilder`]: records encoded into Kafka batches as they are pushed.
//!
//! [`Producer::send_batch`] takes finished [`Record`]s: every record is built
//! as a struct (two `Bytes` handles, a header `Vec`...), sized, encoded and
//! dropped. A builder skips the struct: each push encodes the record's bytes
//! straight into the batch buffer, as Kafka's producer accumulator does, and
//! [`send`](BatchBuilder::send) writes the finished batches in one go. For
//! small records that is most of the user-space cost of an append.

use std::ops::Range;

use crate::error::{Error, Result};
use crate::log::record::{self, BATCH_HEADER_LEN, EncodedSpan, LOG_OVERHEAD};
use crate::partitioner;
use crate::producer::Producer;
use crate::record::{Header, Record};

/// Where the records of a [`BatchBuilder::send`] landed: `records`
/// consecutive offsets from `base_offset`, in push order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SentBatch {
    /// The partition written.
    pub partition: u32,
    /// The offset of the first record pushed (the log end when nothing was).
    pub base_offset: u64,
    /// How many records were written.
    pub records: usize,
}

impl SentBatch {
    /// The offsets assigned, first to last.
    pub fn offsets(&self) -> Range<u64> {
        self.base_offset..self.base_offset + self.records as u64
    }
}

/// Records encoded into Kafka record batches as they are pushed, then
/// appended to one partition by [`send`](Self::send): the fastest way to
/// append many records (no [`Record`] to build per record). Made by
/// [`Producer::batch`]; reusable: `send` empties it and keeps its buffer.
///
/// **Partition.** All records of one `send` go to one partition, like a
/// Kafka producer batch: the one given to
/// [`to_partition`](Self::to_partition), else the one the first record with
/// an explicit partition or a key asks for (a key picks Kafka's murmur2
/// partition), else a sticky one chosen at `send`, as for keyless records
/// of [`Producer::send`]. Without `to_partition`, a record asking for a
/// different partition than the batch's is refused with
/// [`Error::PartitionMismatch`] and not added.
///
/// **Timestamps.** A record pushed without one gets the time of the first
/// push since the builder was made or last sent (one clock read per
/// batch, not per record).
///
/// **Size.** Records are packed into batches of at most the topic's
/// `max_record_bytes`; a record too large even alone is refused with
/// [`Error::RecordTooLarge`] and not added.
///
/// ```
/// # use logbus::*;
/// # let dir = std::env::temp_dir().join(format!("logbus-doc-batch-{}", std::process::id()));
/// # let log = Log::open(&dir, LogConfig::default())?;
/// log.create_topic("events", TopicConfig::new(4))?;
/// let producer = log.producer("events")?;
/// let mut batch = producer.batch();
/// for i in 0..1000u32 {
///     batch.push_value(&i.to_be_bytes())?;
/// }
/// batch.push_keyed(b"user-7", Some(b"signed in"))?; // fixes the partition
/// let sent = batch.send()?;
/// assert_eq!(sent.records, 1001);
/// assert_eq!(sent.partition, partition_for_key(b"user-7", 4));
/// assert!(batch.is_empty()); // ready for the next one
/// # drop(log); std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), logbus::Error>(())
/// ```
#[derive(Debug)]
pub struct BatchBuilder<'p> {
    producer: &'p Producer,
    /// Largest batch, header included.
    max_batch: usize,
    /// Scratch, zero-filled once when it grows: `[..pos]` holds the sealed
    /// batches and then the open one (its header slot first).
    buf: Vec<u8>,
    pos: usize,
    sealed: Vec<EncodedSpan>,
    open: OpenBatch,
    records: usize,
    /// The timestamp of records pushed without one, read at the first push.
    now: Option<i64>,
    target: Target,
}

/// The batch records are being added to.
#[derive(Debug, Clone, Copy)]
struct OpenBatch {
    start: usize,
    count: usize,
    base_ts: i64,
    max_ts: i64,
}

/// Which partition a builder writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// Not decided yet: a sticky partition at `send`.
    Any,
    /// Fixed by a record (its explicit partition or its key).
    ByRecord(u32),
    /// Fixed by [`BatchBuilder::to_partition`]: records' keys do not route.
    Explicit(u32),
}

impl<'p> BatchBuilder<'p> {
    pub(crate) fn new(producer: &'p Producer) -> Self {
        let max = producer.topic().config().max_record_bytes;
        BatchBuilder {
            producer,
            // Kafka's batch length is an i32 after the first 12 bytes.
            max_batch: max.min(i32::MAX as usize + LOG_OVERHEAD),
            buf: Vec::new(),
            pos: BATCH_HEADER_LEN,
            sealed: Vec::new(),
            open: OpenBatch {
                start: 0,
                count: 0,
                base_ts: 0,
                max_ts: 0,
            },
            records: 0,
            now: None,
            target: Target::Any,
        }
    }

    /// Sends every record of this builder to `partition`, whatever their
    /// keys (as an explicit [`Record::partition`] does).
    ///
    /// # Errors
    /// [`Error::UnknownPartition`] if the topic has no such partition.
    pub fn to_partition(&mut self, partition: u32) -> Result<&mut Self> {
        self.producer.topic().partition(partition)?;
        self.target = Target::Explicit(partition);
        Ok(self)
    }

    /// Adds a record with only a value (no key, no headers, timestamp of the
    /// batch): the fast path.
    ///
    /// # Errors
    /// [`Error::RecordTooLarge`] if the record alone exceeds the topic's
    /// `max_record_bytes`; nothing is added.
    #[inline]
    pub fn push_value(&mut self, value: &[u8]) -> Result<()> {
        self.push_parts(None, Some(value), &[], None)
    }

    /// Adds a keyed record; `value` `None` is a tombstone.
    ///
    /// # Errors
    /// [`Error::PartitionMismatch`] if the key's partition is not the
    /// batch's; [`Error::RecordTooLarge`] as [`push_value`](Self::push_value).
    /// Nothing is added on an error.
    #[inline]
    pub fn push_keyed(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<()> {
        self.route(None, Some(key))?;
        self.push_parts(Some(key), value, &[], None)
    }

    /// Adds any record: key, headers, timestamp and explicit partition are
    /// honoured as by [`Producer::send`].
    ///
    /// # Errors
    /// As [`push_keyed`](Self::push_keyed), and
    /// [`Error::UnknownPartition`] for an explicit partition the topic lacks.
    pub fn push(&mut self, record: &Record) -> Result<()> {
        self.route(record.partition, record.key.as_deref())?;
        self.push_parts(
            record.key.as_deref(),
            record.value.as_deref(),
            &record.headers,
            record.timestamp,
        )
    }

    /// Records pushed since the last send.
    pub fn len(&self) -> usize {
        self.records
    }

    /// Whether no record was pushed since the last send.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Bytes the pushed records will take on disk, batch headers included.
    pub fn encoded_len(&self) -> usize {
        if self.open.count == 0 {
            self.pos - BATCH_HEADER_LEN
        } else {
            self.pos
        }
    }

    /// Drops every pushed record and the partition choice; keeps the buffer.
    pub fn clear(&mut self) {
        self.pos = BATCH_HEADER_LEN;
        self.sealed.clear();
        self.open.start = 0;
        self.open.count = 0;
        self.records = 0;
        self.now = None;
        self.target = Target::Any;
    }

    /// Appends the pushed records to their partition, consecutive offsets
    /// in push order, durably as the log's [`Durability`](crate::Durability)
    /// says; then empties the builder for reuse. An empty builder sends
    /// nothing and reports the partition's log end.
    ///
    /// # Errors
    /// As [`Producer::send_batch`] ([`Error::Backpressure`],
    /// [`Error::Poisoned`], [`Error::Io`]...). On an error the records not
    /// written stay in the builder (a later `send` retries them); whole
    /// batches written before an I/O error are taken out, so a retry does
    /// not write them twice.
    pub fn send(&mut self) -> Result<SentBatch> {
        let topic = self.producer.topic();
        self.seal_open();
        let partition = match self.target {
            Target::Explicit(p) | Target::ByRecord(p) => p,
            Target::Any => topic.keyless_partition(self.pos, self.producer.keyless_bytes())?,
        };
        let p = topic.partition(partition)?;
        if self.sealed.is_empty() {
            return Ok(SentBatch {
                partition,
                base_offset: p.log_end_offset(),
                records: 0,
            });
        }
        self.producer.admit(partition)?;
        let now = self.producer.now_ms();
        let (written, appended) = p
            .shared
            .append_encoded_batches(&mut self.buf, &self.sealed, now);
        match appended {
            Ok(first) => {
                let sent = SentBatch {
                    partition,
                    base_offset: first.map_or_else(|| p.log_end_offset(), |a| a.base_offset),
                    records: self.records,
                };
                self.clear();
                Ok(sent)
            }
            Err(e) => {
                let done: usize = self.sealed[..written].iter().map(|s| s.records).sum();
                self.sealed.drain(..written);
                self.records -= done;
                Err(e)
            }
        }
    }

    /// Checks a record's own partition choice against the batch's, fixing
    /// the batch's if it had none.
    fn route(&mut self, explicit: Option<u32>, key: Option<&[u8]>) -> Result<()> {
        let topic = self.producer.topic();
        let wanted = match (explicit, key) {
            (Some(p), _) => {
                topic.partition(p)?;
                p
            }
            (None, Some(key)) => match self.target {
                // Keys do not route under an explicit partition.
                Target::Explicit(_) => return Ok(()),
                _ => partitioner::partition_for_key(key, topic.config().partitions),
            },
            (None, None) => return Ok(()),
        };
        match self.target {
            Target::Any => {
                self.target = Target::ByRecord(wanted);
                Ok(())
            }
            Target::Explicit(p) | Target::ByRecord(p) if p == wanted => Ok(()),
            Target::Explicit(p) | Target::ByRecord(p) => Err(Error::PartitionMismatch {
                topic: topic.name().to_string(),
                batch: p,
                record: wanted,
            }),
        }
    }

    #[inline]
    fn push_parts(
        &mut self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header],
        timestamp: Option<i64>,
    ) -> Result<()> {
        let ts = match (timestamp, self.now) {
            (Some(ts), _) | (None, Some(ts)) => ts,
            (None, None) => *self.now.insert(self.producer.now_ms()),
        };
        if self.open.count == 0 {
            self.open.base_ts = ts;
            self.open.max_ts = ts;
        }
        let bound = record::record_size_bound(key, value, headers);
        if self.buf.len() < self.pos + bound {
            self.grow(bound);
        }
        let end = record::put_record_parts::<true>(
            &mut self.buf,
            self.pos,
            key,
            value,
            headers,
            ts.wrapping_sub(self.open.base_ts),
            // Below i32::MAX: each record takes at least 7 bytes of a batch
            // no longer than i32::MAX.
            self.open.count as i32,
        );
        if end - self.open.start > self.max_batch {
            return self.push_into_next(key, value, headers, ts, end);
        }
        self.pos = end;
        self.open.count += 1;
        self.open.max_ts = self.open.max_ts.max(ts);
        self.records += 1;
        Ok(())
    }

    /// The record written up to `end` made the open batch too long: seal
    /// the batch without it and start the next with it, or refuse it if it
    /// is too long even alone.
    #[cold]
    fn push_into_next(
        &mut self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header],
        ts: i64,
        end: usize,
    ) -> Result<()> {
        if self.open.count == 0 {
            return Err(Error::RecordTooLarge {
                size: end - self.open.start,
                max: self.max_batch,
            });
        }
        self.seal_open();
        // The open batch is empty now, so this cannot come back here.
        self.push_parts(key, value, headers, Some(ts))
    }

    /// Finishes the open batch (header and CRC) if it holds records, and
    /// opens the next one after it.
    fn seal_open(&mut self) {
        if self.open.count == 0 {
            return;
        }
        let OpenBatch {
            start,
            count,
            base_ts,
            max_ts,
        } = self.open;
        let encoded = record::finish_batch(&mut self.buf[start..self.pos], count, base_ts, max_ts);
        self.sealed.push(EncodedSpan {
            start,
            encoded,
            records: count,
        });
        self.open.start = self.pos;
        self.open.count = 0;
        if self.buf.len() < self.pos + BATCH_HEADER_LEN {
            self.grow(BATCH_HEADER_LEN);
        }
        self.pos += BATCH_HEADER_LEN;
    }

    /// Makes room for `need` more bytes after `pos`.
    #[cold]
    fn grow(&mut self, need: usize) {
        let len = (self.pos + need).max(self.buf.len() * 2).max(64 << 10);
        self.buf.resize(len, 0);
    }
}
