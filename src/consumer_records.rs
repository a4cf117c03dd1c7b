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
//! [`poll_each`](crate::Consumer::poll_each) did 1.8x. A `ConsumerRecords`
//! holds the fetched batch bytes (one reference-counted slice of the mapped
//! segment per partition) and a 48-byte entry per record (offset,
//! timestamp, where the key, value and headers are in those bytes): no
//! atomic operation and no allocation per record. Iterating it by
//! reference ([`iter`](ConsumerRecords::iter), `for r in &records`) lends
//! [`PolledRecord`]s borrowed from those bytes; owned records are an
//! explicit step ([`PolledRecord::to_owned`], `for r in records`,
//! [`into_vec`](ConsumerRecords::into_vec)) that costs what it did before.
//!
//! The bytes are the mapped segment itself: holding a `ConsumerRecords`
//! keeps that segment's map alive (not its file name), also after
//! retention deleted the segment, until it is dropped.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;

use crate::consumer::TopicPartition;
use crate::error::{Error, Result};
use crate::log::record::{RecordView, header_pairs};
use crate::partition::{self, FetchedBatches, Resume};
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
    /// One per partition with records, in the order polled; their entry
    /// ranges follow each other and cover `entries`.
    parts: Vec<Part>,
    entries: Vec<Entry>,
}

/// The records of one partition in a [`ConsumerRecords`].
#[derive(Clone)]
struct Part {
    tp: Arc<TopicPartition>,
    /// The topic as owned records carry it (copied once per part, not per
    /// record: a long name is shared).
    topic: TopicName,
    /// The fetched batches the entries point into (shorter than `NONE`).
    bytes: Bytes,
    /// Its records in `ConsumerRecords::entries`.
    entries: Range<usize>,
}

/// Where a field is in its part's bytes.
#[derive(Debug, Clone, Copy)]
struct Span {
    /// `NONE` for an absent (null) field.
    start: u32,
    len: u32,
}

/// `Span::start` of an absent field. Parts are shorter, so no field starts
/// there (segments are at most `i32::MAX` bytes, and so are fetches).
const NONE: u32 = u32::MAX;

impl Span {
    const ABSENT: Span = Span {
        start: NONE,
        len: 0,
    };

    /// The span of `field`, a subslice of the bytes starting at `base`
    /// (fewer than `NONE` of them).
    #[inline(always)]
    fn of(base: usize, field: Option<&[u8]>) -> Span {
        match field {
            None => Span::ABSENT,
            // An empty field's pointer need not lie in the bytes.
            Some([]) => Span { start: 0, len: 0 },
            Some(f) => {
                let start = (f.as_ptr() as usize).wrapping_sub(base);
                // The decoder borrows every field from the batch bytes.
                debug_assert!(start < NONE as usize && start + f.len() < NONE as usize);
                // Fits: the field lies inside bytes shorter than `NONE`.
                Span {
                    start: start as u32,
                    len: f.len() as u32,
                }
            }
        }
    }

    /// The field in `bytes` (the part's), `None` if absent.
    #[inline(always)]
    fn get(self, bytes: &[u8]) -> Option<&[u8]> {
        if self.start == NONE {
            return None;
        }
        let start = self.start as usize;
        // In range by construction (`Span::of` over these same bytes); a
        // miss would read as absent rather than panic.
        bytes.get(start..start + self.len as usize)
    }
}

/// One record of a [`ConsumerRecords`]: 48 bytes, no pointers.
#[derive(Debug, Clone, Copy)]
struct Entry {
    offset: u64,
    timestamp: i64,
    key: Span,
    value: Span,
    /// The encoded headers after their count.
    headers: Span,
    header_count: u32,
}

const _: () = assert!(std::mem::size_of::<Entry>() <= 48);

impl Entry {
    #[inline(always)]
    fn of(base: usize, r: &RecordView<'_>) -> Entry {
        let (headers, header_count) = r.raw_headers();
        Entry {
            offset: r.offset,
            timestamp: r.timestamp,
            key: Span::of(base, r.key),
            value: Span::of(base, r.value),
            headers: Span::of(base, Some(headers)),
            header_count,
        }
    }
}

impl Part {
    #[inline(always)]
    fn record<'a>(&'a self, e: &Entry) -> PolledRecord<'a> {
        let bytes = &self.bytes[..];
        PolledRecord {
            topic: &self.tp.topic,
            partition: self.tp.partition,
            offset: e.offset,
            timestamp: e.timestamp,
            key: e.key.get(bytes),
            value: e.value.get(bytes),
            headers: e.headers.get(bytes).unwrap_or_default(),
            header_count: e.header_count,
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
        self.entries.len()
    }

    /// Whether there are no records.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
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
        RecordsIter::over(&self.parts, &self.entries)
    }

    /// The `i`th record (in [`iter`](Self::iter)'s order), `None` past the
    /// end.
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
    pub fn get(&self, i: usize) -> Option<PolledRecord<'_>> {
        let entry = self.entries.get(i)?;
        let part = self
            .parts
            .get(self.parts.partition_point(|p| p.entries.end <= i))?;
        Some(part.record(entry))
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
            Some(i) => RecordsIter::over(&self.parts[i..=i], &self.entries),
            None => RecordsIter::over(&[], &[]),
        }
    }

    /// The records as owned [`ConsumerRecord`]s, whose key, value and
    /// header values share the mapped segment (one reference count each):
    /// for keeping records past the container, or to index them.
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
        self.into_iter().collect()
    }

    /// Appends the records `partition::visit` hands over from `fetched`
    /// (see there for `next`, `at` and `max`), as records of `tp` (whose
    /// topic's name is `topic`). On an error nothing is added and `*next`
    /// is left as it was: the records before the damage come again at the
    /// next poll. Returns the number added.
    pub(crate) fn decode(
        &mut self,
        tp: &Arc<TopicPartition>,
        topic: &Arc<str>,
        fetched: &FetchedBatches,
        next: &mut u64,
        at: &mut Resume,
        max: usize,
    ) -> Result<usize> {
        let bytes = &fetched.bytes;
        if bytes.len() >= NONE as usize {
            // Unreachable: a fetch stays inside one segment, which is at
            // most `i32::MAX` bytes. Refused rather than mis-indexed.
            return Err(Error::corrupt(
                fetched.path(),
                fetched.position,
                format!("a fetch of {} bytes (at most 4 GiB)", bytes.len()),
            ));
        }
        debug_assert!(
            self.parts.iter().all(|p| *p.tp != **tp),
            "one part per partition (`records(tp)` finds the first)"
        );
        let first = self.entries.len();
        self.entries.reserve(fetched.record_count_hint(max));
        let base = bytes.as_ptr() as usize;
        let entries = &mut self.entries;
        let mut reached = *next;
        let taken = match partition::visit(fetched, max, &mut reached, at, |r| {
            entries.push(Entry::of(base, &r));
        }) {
            Ok(taken) => taken,
            Err(e) => {
                self.entries.truncate(first);
                return Err(e);
            }
        };
        *next = reached;
        if taken > 0 {
            self.parts.push(Part {
                tp: Arc::clone(tp),
                topic: TopicName::from(topic),
                bytes: bytes.clone(),
                entries: first..self.entries.len(),
            });
        }
        Ok(taken)
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
                            p.entries.len(),
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
        let bytes = &self.part.bytes;
        let share = |field: &[u8]| bytes.slice_ref(field);
        ConsumerRecord {
            topic: self.part.topic.clone(),
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
        let bytes = &self.part.bytes;
        self.headers()
            .map(|(key, value)| Header {
                key: key.to_owned(),
                value: value.map(|v| bytes.slice_ref(v)),
            })
            .collect()
    }
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
/// records in it).
#[derive(Clone)]
pub struct RecordsIter<'a> {
    /// Parts after the current one.
    parts: std::slice::Iter<'a, Part>,
    current: Option<&'a Part>,
    /// The current part's records not yet returned.
    entries: std::slice::Iter<'a, Entry>,
    all: &'a [Entry],
    left: usize,
}

impl<'a> RecordsIter<'a> {
    fn over(parts: &'a [Part], all: &'a [Entry]) -> Self {
        RecordsIter {
            left: parts.iter().map(|p| p.entries.len()).sum(),
            parts: parts.iter(),
            current: None,
            entries: [].iter(),
            all,
        }
    }
}

impl<'a> Iterator for RecordsIter<'a> {
    type Item = PolledRecord<'a>;

    #[inline]
    fn next(&mut self) -> Option<PolledRecord<'a>> {
        loop {
            if let Some(part) = self.current
                && let Some(e) = self.entries.next()
            {
                self.left -= 1;
                return Some(part.record(e));
            }
            let part = self.parts.next()?;
            self.current = Some(part);
            self.entries = self
                .all
                .get(part.entries.clone())
                .unwrap_or_default()
                .iter();
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

/// Owning iterator over a [`ConsumerRecords`]: owned [`ConsumerRecord`]s,
/// made one at a time (see [`PolledRecord::to_owned`]).
#[derive(Clone)]
pub struct RecordsIntoIter {
    records: ConsumerRecords,
    /// The part of the next record.
    part: usize,
    /// The next record.
    next: usize,
}

impl Iterator for RecordsIntoIter {
    type Item = ConsumerRecord;

    #[inline]
    fn next(&mut self) -> Option<ConsumerRecord> {
        let records = &self.records;
        let entry = records.entries.get(self.next)?;
        while records
            .parts
            .get(self.part)
            .is_some_and(|p| p.entries.end <= self.next)
        {
            self.part += 1;
        }
        let part = records.parts.get(self.part)?;
        self.next += 1;
        let r = part.record(entry);
        if let Some(v) = r.value {
            prefetch(v.as_ptr().wrapping_add(PREFETCH_AHEAD));
        }
        Some(r.to_owned())
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.records.entries.len() - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for RecordsIntoIter {}

impl std::iter::FusedIterator for RecordsIntoIter {}

impl fmt::Debug for RecordsIntoIter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordsIntoIter")
            .field("left", &(self.records.entries.len() - self.next))
            .finish()
    }
}

impl IntoIterator for ConsumerRecords {
    type Item = ConsumerRecord;
    type IntoIter = RecordsIntoIter;

    /// Owned records, as `poll` returned them before `ConsumerRecords`:
    /// `for r in consumer.poll(timeout)? { .. }` works as it did.
    fn into_iter(self) -> RecordsIntoIter {
        RecordsIntoIter {
            records: self,
            part: 0,
            next: 0,
        }
    }
}

/// How far past a record's value owned iteration asks for the segment's
/// bytes to be loaded into the cache (about 20 records of 100 B).
///
/// NOTE: making an owned record clones its value `Bytes`, a locked
/// increment, and on x86 no load after a locked instruction starts before
/// it completes: the hardware cannot read ahead across records, so each
/// record's first read of the segment would wait for memory. Prefetches
/// are not held back by locked instructions.
const PREFETCH_AHEAD: usize = 2048;

/// Asks the CPU to load the cache line holding `p`; never faults, even
/// past the end of a mapping (nothing is read).
#[inline(always)]
fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    #[expect(unsafe_code, reason = "a prefetch hint")]
    // SAFETY: `prefetcht0` reads nothing architecturally and cannot fault
    // on any address, so any pointer value is fine.
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
