//! [`ConsumerRecords`]: what [`Consumer::poll`](crate::Consumer::poll) and
//! [`ConsumerGroup::poll`](crate::ConsumerGroup::poll) return, as Kafka's
//! `poll()` returns a `ConsumerRecords` container.
//!
//! Why a container and not a `Vec<ConsumerRecord>`: an owned
//! [`ConsumerRecord`] is a 136-byte struct whose value `Bytes` costs two
//! atomic operations between its making and its drop (its key two more),
//! and a 100 B record's whole read is a few tens of nanoseconds. Polls
//! returning owned records read 100 B records at 0.50-0.64x the speed of a
//! plain `read()` of the same file, while the borrowing
//! [`poll_each`](crate::Consumer::poll_each) did 1.8x.
//!
//! A `ConsumerRecords` is lazy: per partition it holds the fetched batch
//! bytes (one reference-counted slice of the mapped segment), the offset
//! to start from, the decoder state to resume inside the first batch and
//! how many records it has. `poll` works per batch, not per record: it
//! checks each batch (CRC and the structure of its records, once per
//! process: see `record::check_records`), counts a whole batch from its
//! header and moves the position to the batch's next offset; only a batch
//! the poll starts or stops inside is walked record by record. Iterating
//! by reference ([`iter`](ConsumerRecords::iter), `for r in &records`)
//! decodes as it goes and lends [`PolledRecord`]s borrowed from those
//! bytes (what `poll_each` lends, plus the partition); owned records are
//! an explicit step ([`PolledRecord::to_owned`], `for r in records`,
//! [`into_vec`](ConsumerRecords::into_vec)), made by the owning decoder in
//! place over the same bytes, as `poll` made them when it returned a
//! `Vec`. Decoding at iteration cannot fail: the batches were checked when
//! polled, and a `Bytes` never changes (should it fail anyway, iteration
//! ends early instead of panicking; debug builds assert).
//!
//! Measured with `examples/read_bench.rs` (100 B records, 10 000 per poll,
//! thread CPU per record, shared 2-core VM): borrowed iteration 9.5-12 ns,
//! `poll_each` 9-12 ns, owned iteration 23-24 ns against 21.5-23 ns for
//! the former `Vec` poll (the version with a 48-byte entry per record made
//! at poll: 15.5 ns borrowed, 30-33 ns owned).
//!
//! [`get`](ConsumerRecords::get) decodes the records of its partition up
//! to the one asked for: O(records of that partition here), not O(1).
//!
//! The bytes are the mapped segment itself: holding a `ConsumerRecords`
//! keeps that segment's map alive (not its file name), also after
//! retention deleted the segment, until it is dropped.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use crate::consumer::TopicPartition;
use crate::error::Result;
use crate::log::record::{PartRecords, RecordView, Taken, header_pairs};
use crate::partition::{FetchedBatches, Resume};
use crate::record::{ConsumerRecord, Header, TopicName};

/// The records one `poll` returned, from one or more partitions: in offset
/// order per partition, partitions one after the other.
///
/// Iterate by reference for borrowed [`PolledRecord`]s (the fast way), or
/// by value for owned [`ConsumerRecord`]s (what `poll` used to return in
/// a `Vec`: for records that must outlive the container or move to
/// another thread one by one).
///
/// ```
/// # use logbus::*;
/// # use std::time::Duration;
/// # let dir = std::env::temp_dir().join(format!("logbus-doc-records-{}", std::process::id()));
/// # let log = Log::open(&dir, LogConfig::default())?;
/// log.create_topic("events", TopicConfig::new(1))?;
/// log.producer("events")?.send_batch(&[Record::new("a").key("k"), Record::tombstone("k")])?;
/// let mut consumer = log.consumer(ConsumerConfig::default());
/// consumer.assign(&[TopicPartition::new("events", 0)])?;
/// let records = consumer.poll(Duration::from_secs(1))?;
/// assert_eq!(records.len(), 2);
/// for r in &records {
///     // Borrowed from the mapped segment: nothing copied, nothing counted.
///     assert_eq!((r.topic, r.partition, r.key), ("events", 0, Some(&b"k"[..])));
/// }
/// assert_eq!(records.get(1).map(|r| r.value), Some(None)); // the tombstone
/// let owned: Vec<ConsumerRecord> = records.into_vec();
/// assert_eq!(owned[0].value.as_deref(), Some(&b"a"[..]));
/// # drop(log); std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), logbus::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct ConsumerRecords {
    /// One per partition with records, in the order polled.
    parts: Vec<Part>,
    /// The sum of the parts' counts.
    len: usize,
}

/// The records of one partition in a [`ConsumerRecords`].
#[derive(Clone)]
struct Part {
    tp: Arc<TopicPartition>,
    /// The topic's name as the partition has it, for owned records.
    topic: Arc<str>,
    /// The fetched batches the records are in; with their segment, which
    /// knows they were checked.
    fetched: FetchedBatches,
    /// Which of their records are this part's.
    taken: Taken,
}

impl Part {
    /// This part's records, borrowed.
    fn records(&self) -> PartRecords<'_> {
        PartRecords::new(&self.fetched.bytes, &self.taken)
    }

    /// `r`, one of this part's records, as a polled record.
    #[inline(always)]
    fn record<'a>(&'a self, r: RecordView<'a>) -> PolledRecord<'a> {
        let (headers, header_count) = r.raw_headers();
        PolledRecord {
            topic: &self.tp.topic,
            partition: self.tp.partition,
            offset: r.offset,
            timestamp: r.timestamp,
            key: r.key,
            value: r.value,
            headers,
            header_count,
            part: self,
        }
    }
}

impl ConsumerRecords {
    /// No records (what a poll that timed out returns).
    pub fn empty() -> Self {
        ConsumerRecords::default()
    }

    /// The number of records.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no records.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The records, borrowed: partition by partition, in offset order
    /// within each. Same as `for r in &records`.
    ///
    /// ```
    /// # use logbus::*;
    /// # use std::time::Duration;
    /// # let dir = std::env::temp_dir().join(format!("logbus-doc-records-iter-{}", std::process::id()));
    /// # let log = Log::open(&dir, LogConfig::default())?;
    /// # log.create_topic("events", TopicConfig::new(1))?;
    /// log.producer("events")?.send_batch(&[Record::new("a"), Record::new("bb")])?;
    /// # let mut consumer = log.consumer(ConsumerConfig::default());
    /// # consumer.assign(&[TopicPartition::new("events", 0)])?;
    /// let records = consumer.poll(Duration::from_secs(1))?;
    /// let bytes: usize = records.iter().map(|r| r.value.map_or(0, <[u8]>::len)).sum();
    /// assert_eq!(bytes, 3);
    /// # drop(log); std::fs::remove_dir_all(&dir).ok();
    /// # Ok::<(), logbus::Error>(())
    /// ```
    pub fn iter(&self) -> RecordsIter<'_> {
        RecordsIter::over(&self.parts)
    }

    /// The `i`th record (in [`iter`](Self::iter)'s order), `None` past the
    /// end. Decodes the records of its partition before it (the container
    /// keeps no table of records): O(records of that partition), so prefer
    /// iterating to calling `get` for each index.
    ///
    /// ```
    /// # use logbus::*;
    /// # use std::time::Duration;
    /// # let dir = std::env::temp_dir().join(format!("logbus-doc-records-get-{}", std::process::id()));
    /// # let log = Log::open(&dir, LogConfig::default())?;
    /// # log.create_topic("events", TopicConfig::new(1))?;
    /// log.producer("events")?.send(Record::new("hi"))?;
    /// # let mut consumer = log.consumer(ConsumerConfig::default());
    /// # consumer.assign(&[TopicPartition::new("events", 0)])?;
    /// let records = consumer.poll(Duration::from_secs(1))?;
    /// assert_eq!(records.get(0).and_then(|r| r.value), Some(&b"hi"[..]));
    /// assert!(records.get(1).is_none());
    /// # drop(log); std::fs::remove_dir_all(&dir).ok();
    /// # Ok::<(), logbus::Error>(())
    /// ```
    pub fn get(&self, mut i: usize) -> Option<PolledRecord<'_>> {
        for part in &self.parts {
            let count = part.taken.count();
            if i < count {
                return part.records().nth(i).map(|r| part.record(r));
            }
            i -= count;
        }
        None
    }

    /// The partitions that have records here, each once, in the order
    /// their records come.
    ///
    /// ```
    /// # use logbus::*;
    /// # use std::time::Duration;
    /// # let dir = std::env::temp_dir().join(format!("logbus-doc-records-parts-{}", std::process::id()));
    /// # let log = Log::open(&dir, LogConfig::default())?;
    /// log.create_topic("events", TopicConfig::new(2))?;
    /// let producer = log.producer("events")?;
    /// producer.send(Record::new("a").partition(0))?;
    /// producer.send(Record::new("b").partition(1))?;
    /// producer.send(Record::new("c").partition(1))?;
    /// let mut consumer = log.consumer(ConsumerConfig::default());
    /// consumer.assign(&[TopicPartition::new("events", 0), TopicPartition::new("events", 1)])?;
    /// let records = consumer.poll(Duration::from_secs(1))?;
    /// for tp in records.partitions() {
    ///     let n = records.records(tp).count();
    ///     assert_eq!(n, if tp.partition == 0 { 1 } else { 2 });
    /// }
    /// # drop(log); std::fs::remove_dir_all(&dir).ok();
    /// # Ok::<(), logbus::Error>(())
    /// ```
    pub fn partitions(&self) -> impl ExactSizeIterator<Item = &TopicPartition> + '_ {
        self.parts.iter().map(|p| &*p.tp)
    }

    /// The records of one partition, in offset order (none if it has none
    /// here): Kafka's `records(TopicPartition)`. See
    /// [`partitions`](Self::partitions).
    pub fn records(&self, tp: &TopicPartition) -> RecordsIter<'_> {
        match self.parts.iter().position(|p| *p.tp == *tp) {
            Some(i) => RecordsIter::over(&self.parts[i..=i]),
            None => RecordsIter::over(&[]),
        }
    }

    /// The records as owned [`ConsumerRecord`]s, whose key, value and
    /// header values share the mapped segment (one reference count each):
    /// for keeping records past the container, or to index them. Costs
    /// what `poll` returning them did: the same owning decoder, making
    /// records in place, over the same bytes.
    ///
    /// ```
    /// # use logbus::*;
    /// # use std::time::Duration;
    /// # let dir = std::env::temp_dir().join(format!("logbus-doc-records-vec-{}", std::process::id()));
    /// # let log = Log::open(&dir, LogConfig::default())?;
    /// # log.create_topic("events", TopicConfig::new(1))?;
    /// log.producer("events")?.send(Record::new("hi").key("k"))?;
    /// # let mut consumer = log.consumer(ConsumerConfig::default());
    /// # consumer.assign(&[TopicPartition::new("events", 0)])?;
    /// let records: Vec<ConsumerRecord> = consumer.poll(Duration::from_secs(1))?.into_vec();
    /// assert_eq!(records[0].key.as_deref(), Some(&b"k"[..]));
    /// # drop(log); std::fs::remove_dir_all(&dir).ok();
    /// # Ok::<(), logbus::Error>(())
    /// ```
    pub fn into_vec(self) -> Vec<ConsumerRecord> {
        let mut out = Vec::with_capacity(self.len);
        for part in &self.parts {
            let (topic, partition) = (&part.topic, part.tp.partition);
            part.fetched
                .decode_taken(topic, partition, &part.taken, &mut out);
        }
        out
    }

    /// Adds the records of `fetched` from `*next` on (at most `max`) as
    /// records of `tp` (whose topic's name is `topic`), moving `*next` past
    /// them and `at` as `partition::visit` does: counted from the batch
    /// headers where whole batches are taken, decoded only when iterated.
    /// On an error nothing is added and `*next` is left as it was: the
    /// records before the damage come again at the next poll. Returns the
    /// number added.
    pub(crate) fn take(
        &mut self,
        tp: &Arc<TopicPartition>,
        topic: &Arc<str>,
        fetched: &FetchedBatches,
        next: &mut u64,
        at: &mut Resume,
        max: usize,
    ) -> Result<usize> {
        debug_assert!(
            self.parts.iter().all(|p| *p.tp != **tp),
            "one part per partition (`records(tp)` finds the first)"
        );
        let taken = fetched.take(max, next, at)?;
        let count = taken.count();
        if count > 0 {
            self.len += count;
            self.parts.push(Part {
                tp: Arc::clone(tp),
                topic: Arc::clone(topic),
                fetched: fetched.clone(),
                taken,
            });
        }
        Ok(count)
    }
}

impl fmt::Debug for ConsumerRecords {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Counts<'a>(&'a [Part]);
        impl fmt::Debug for Counts<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_map()
                    .entries(self.0.iter().map(|p| {
                        (
                            format!("{}-{}", p.tp.topic, p.tp.partition),
                            p.taken.count(),
                        )
                    }))
                    .finish()
            }
        }
        f.debug_struct("ConsumerRecords")
            .field("len", &self.len())
            .field("records_per_partition", &Counts(&self.parts))
            .finish()
    }
}

/// One record of a [`ConsumerRecords`], borrowed from it (and so from the
/// mapped segment): no allocation, no reference counting. Copy what must
/// outlive the container, or make an owned record with
/// [`to_owned`](Self::to_owned).
#[derive(Clone)]
pub struct PolledRecord<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The partition.
    pub partition: u32,
    /// The record's offset.
    pub offset: u64,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// The key, if any.
    pub key: Option<&'a [u8]>,
    /// The value; `None` for a tombstone.
    pub value: Option<&'a [u8]>,
    /// The encoded headers after their count, `header_count` of them.
    headers: &'a [u8],
    header_count: u32,
    /// For `to_owned`: the bytes to share and the topic name to copy.
    part: &'a Part,
}

impl<'a> PolledRecord<'a> {
    /// The headers, in order, as (key, value); a `None` value is Kafka's
    /// null header value.
    ///
    /// ```
    /// # use logbus::*;
    /// # use std::time::Duration;
    /// # let dir = std::env::temp_dir().join(format!("logbus-doc-polled-headers-{}", std::process::id()));
    /// # let log = Log::open(&dir, LogConfig::default())?;
    /// # log.create_topic("events", TopicConfig::new(1))?;
    /// log.producer("events")?.send(Record::new("v").header("trace", "42"))?;
    /// # let mut consumer = log.consumer(ConsumerConfig::default());
    /// # consumer.assign(&[TopicPartition::new("events", 0)])?;
    /// let records = consumer.poll(Duration::from_secs(1))?;
    /// let r = records.get(0).unwrap();
    /// assert_eq!(r.headers().collect::<Vec<_>>(), [("trace", Some(&b"42"[..]))]);
    /// # drop(log); std::fs::remove_dir_all(&dir).ok();
    /// # Ok::<(), logbus::Error>(())
    /// ```
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, Option<&'a [u8]>)> + 'a {
        header_pairs(self.headers, self.header_count)
    }

    /// The record as an owned [`ConsumerRecord`]: key, value and header
    /// values share the mapped segment's bytes (a reference count each,
    /// no copy), the header keys are copied.
    ///
    /// ```
    /// # use logbus::*;
    /// # use std::time::Duration;
    /// # let dir = std::env::temp_dir().join(format!("logbus-doc-polled-owned-{}", std::process::id()));
    /// # let log = Log::open(&dir, LogConfig::default())?;
    /// # log.create_topic("events", TopicConfig::new(1))?;
    /// log.producer("events")?.send(Record::new("hi"))?;
    /// # let mut consumer = log.consumer(ConsumerConfig::default());
    /// # consumer.assign(&[TopicPartition::new("events", 0)])?;
    /// let kept: ConsumerRecord = {
    ///     let records = consumer.poll(Duration::from_secs(1))?;
    ///     records.get(0).unwrap().to_owned()
    /// };
    /// assert_eq!((kept.topic.as_ref(), kept.offset), ("events", 0));
    /// # drop(log); std::fs::remove_dir_all(&dir).ok();
    /// # Ok::<(), logbus::Error>(())
    /// ```
    ///
    /// (Not the `ToOwned` trait, which would need `ConsumerRecord` to lend a
    /// `PolledRecord`; being inherent, this is the method `.to_owned()`
    /// calls on a `PolledRecord` or a reference to one.)
    #[inline]
    pub fn to_owned(&self) -> ConsumerRecord {
        let bytes = &self.part.fetched.bytes;
        let share = |field: &[u8]| share(bytes, field);
        ConsumerRecord {
            topic: TopicName::from(&self.part.topic),
            partition: self.partition,
            offset: self.offset,
            timestamp: self.timestamp,
            key: self.key.map(share),
            value: self.value.map(share),
            headers: if self.header_count == 0 {
                Vec::new() // without a collect's setup per record
            } else {
                self.owned_headers()
            },
        }
    }

    #[inline(never)]
    fn owned_headers(&self) -> Vec<Header> {
        let bytes = &self.part.fetched.bytes;
        self.headers()
            .map(|(key, value)| Header {
                key: key.to_owned(),
                value: value.map(|v| share(bytes, v)),
            })
            .collect()
    }
}

/// `field`, a subslice of `bytes`, as a `Bytes` sharing its buffer (one
/// reference count increment): what `bytes.slice_ref(field)` returns,
/// without its out-of-line checks (a third of an owned record's making).
#[inline(always)]
fn share(bytes: &Bytes, field: &[u8]) -> Bytes {
    if field.is_empty() {
        return Bytes::new();
    }
    let start = (field.as_ptr() as usize).wrapping_sub(bytes.as_ptr() as usize);
    // In range: the fields of a `PolledRecord` lie in its part's bytes.
    bytes.slice(start..start + field.len())
}

impl fmt::Debug for PolledRecord<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolledRecord")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .field("offset", &self.offset)
            .field("timestamp", &self.timestamp)
            .field("key", &self.key)
            .field("value", &self.value)
            .field("headers", &self.headers().collect::<Vec<_>>())
            .finish()
    }
}

/// Borrowing iterator over a [`ConsumerRecords`] (or one partition's
/// records in it): decodes each record as it is asked for.
#[derive(Clone)]
pub struct RecordsIter<'a> {
    /// Parts after the current one.
    parts: std::slice::Iter<'a, Part>,
    current: Option<&'a Part>,
    /// The current part's records not yet returned.
    records: PartRecords<'a>,
    left: usize,
}

impl<'a> RecordsIter<'a> {
    fn over(parts: &'a [Part]) -> Self {
        RecordsIter {
            left: parts.iter().map(|p| p.taken.count()).sum(),
            parts: parts.iter(),
            current: None,
            records: PartRecords::new(&[], &Taken::new(0, None, 0)),
        }
    }

    /// Moves to the next part; false after the last. Out of line and
    /// returning no record, so `next`'s records stay in registers.
    #[cold]
    #[inline(never)]
    fn next_part(&mut self) -> bool {
        match self.parts.next() {
            Some(part) => {
                self.current = Some(part);
                self.records = part.records();
                true
            }
            None => {
                // Only short of `left` if a checked batch failed to decode
                // (see `PartRecords`): the size hint stays true.
                self.left = 0;
                false
            }
        }
    }
}

impl<'a> Iterator for RecordsIter<'a> {
    type Item = PolledRecord<'a>;

    // Always: a record returned from a call comes back through memory, a
    // store-to-load stall per record (measured in `compare`, where the
    // caller is another crate and this was left out of line).
    #[inline(always)]
    fn next(&mut self) -> Option<PolledRecord<'a>> {
        loop {
            if let Some(part) = self.current
                && let Some(r) = self.records.next()
            {
                self.left = self.left.saturating_sub(1);
                return Some(part.record(r));
            }
            if !self.next_part() {
                return None;
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for RecordsIter<'_> {}

impl std::iter::FusedIterator for RecordsIter<'_> {}

impl fmt::Debug for RecordsIter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordsIter")
            .field("left", &self.left)
            .finish()
    }
}

impl<'a> IntoIterator for &'a ConsumerRecords {
    type Item = PolledRecord<'a>;
    type IntoIter = RecordsIter<'a>;

    fn into_iter(self) -> RecordsIter<'a> {
        self.iter()
    }
}

/// Owning iterator over a [`ConsumerRecords`]: its records as owned
/// [`ConsumerRecord`]s, made all at once by
/// [`into_vec`](ConsumerRecords::into_vec) (as `poll` used to return them).
#[derive(Debug, Clone)]
pub struct RecordsIntoIter {
    records: std::vec::IntoIter<ConsumerRecord>,
}

impl Iterator for RecordsIntoIter {
    type Item = ConsumerRecord;

    #[inline]
    fn next(&mut self) -> Option<ConsumerRecord> {
        self.records.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.records.size_hint()
    }
}

impl DoubleEndedIterator for RecordsIntoIter {
    fn next_back(&mut self) -> Option<ConsumerRecord> {
        self.records.next_back()
    }
}

impl ExactSizeIterator for RecordsIntoIter {}

impl std::iter::FusedIterator for RecordsIntoIter {}

impl IntoIterator for ConsumerRecords {
    type Item = ConsumerRecord;
    type IntoIter = RecordsIntoIter;

    /// Owned records, as `poll` returned them before `ConsumerRecords`:
    /// `for r in consumer.poll(timeout)? { .. }` works as it did.
    fn into_iter(self) -> RecordsIntoIter {
        RecordsIntoIter {
            records: self.into_vec().into_iter(),
        }
    }
}
