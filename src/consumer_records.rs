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
//! [`into_vec`](ConsumerRecords::into_vec)).
//!
//! Measured with `examples/read_bench.rs` (100 B records, 10 000 per poll,
//! thread CPU per record, 2-core VM): borrowed iteration 15.5 ns, owned
//! (`into_vec`, then by reference) 30 ns, the former `Vec` poll 20.4 ns,
//! `poll_each` 9-11 ns. Owned records cost the entry table on top of
//! what the `Vec` did: they are made by the owning decoder from the same
//! bytes (in place; building them from the entries one by one took 36 ns).
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
    /// The topic's name as the partition has it, for owned records.
    topic: Arc<str>,
    /// The fetched batches the entries point into (`bytes` shorter than
    /// `NONE`); with their segment, which knows their CRCs were checked.
    fetched: FetchedBatches,
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

    /// The span of `field`, a subslice of the `len` bytes starting at
    /// `base` (`len < NONE`). Clears `inside` if it is not inside them
    /// (the decoder lends every field from the batch bytes, so it never
    /// is; `decode` then refuses the spans rather than trust them).
    #[inline(always)]
    fn of(base: usize, len: usize, field: Option<&[u8]>, inside: &mut bool) -> Span {
        match field {
            None => Span::ABSENT,
            // An empty field's pointer need not lie in the bytes.
            Some([]) => Span { start: 0, len: 0 },
            Some(f) => {
                let start = (f.as_ptr() as usize).wrapping_sub(base);
                *inside &= start < len && f.len() <= len - start;
                // Both fit when inside: `len < NONE`.
                Span {
                    start: start as u32,
                    len: f.len() as u32,
                }
            }
        }
    }

    /// The field in `bytes`, `None` if absent.
    ///
    /// # Safety
    /// `self` was made by [`Span::of`] over these bytes, which found it
    /// inside them (or it is absent or empty).
    #[inline(always)]
    #[expect(unsafe_code, reason = "a field's bytes without bounds checks")]
    unsafe fn get(self, bytes: &[u8]) -> Option<&[u8]> {
        if self.start == NONE {
            return None;
        }
        let start = self.start as usize;
        let end = start + self.len as usize;
        debug_assert!(end <= bytes.len());
        // SAFETY: `start..end` lies inside `bytes`, checked by `Span::of`
        // (the caller's contract); an empty span is `0..0`.
        Some(unsafe { bytes.get_unchecked(start..end) })
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
    /// `r`'s entry, for a record of the `len` bytes at `base` (see
    /// [`Span::of`] for `inside`).
    #[inline(always)]
    fn of(base: usize, len: usize, r: &RecordView<'_>, inside: &mut bool) -> Entry {
        let (headers, header_count) = r.raw_headers();
        Entry {
            offset: r.offset,
            timestamp: r.timestamp,
            key: Span::of(base, len, r.key, inside),
            value: Span::of(base, len, r.value, inside),
            // Most records have none (and the decoder's empty headers of
            // those need not point into the batch).
            headers: if header_count == 0 {
                Span { start: 0, len: 0 }
            } else {
                Span::of(base, len, Some(headers), inside)
            },
            header_count,
        }
    }
}

impl Part {
    /// Appends `entries`, this part's, to `out` as owned records.
    fn owned_into(&self, entries: &[Entry], out: &mut Vec<ConsumerRecord>) {
        let Some(first) = entries.first() else {
            return;
        };
        // The same bytes through the same decoder (CRCs known good): the
        // records from the first entry's offset on are the entries'.
        let before = out.len();
        let (topic, partition) = (&self.topic, self.tp.partition);
        let decoded = partition::decode_into(
            &self.fetched,
            topic,
            partition,
            first.offset,
            entries.len(),
            out,
        );
        if decoded.is_err() || out.len() - before != entries.len() {
            // Cannot happen (it decoded once); the entries are the truth.
            out.truncate(before);
            out.extend(entries.iter().map(|e| self.record(e).to_owned()));
        }
    }

    /// `e`, one of this part's entries, as a record.
    #[inline(always)]
    fn record<'a>(&'a self, e: &Entry) -> PolledRecord<'a> {
        let bytes = &self.fetched.bytes[..];
        #[expect(unsafe_code, reason = "fields without bounds checks")]
        // SAFETY: `e` is one of this part's entries (`entries` is only
        // indexed by this part's range), made by `decode` over these same
        // bytes with spans `Span::of` found inside them (`decode` keeps no
        // entry of a part where one was not). `Bytes` never change.
        let (key, value, headers) = unsafe {
            (
                e.key.get(bytes),
                e.value.get(bytes),
                e.headers.get(bytes).unwrap_or_default(),
            )
        };
        PolledRecord {
            topic: &self.tp.topic,
            partition: self.tp.partition,
            offset: e.offset,
            timestamp: e.timestamp,
            key,
            value,
            headers,
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
    /// for keeping records past the container, or to index them. Costs
    /// what `poll` returning them did (they are decoded again by the
    /// owning decoder, which makes records in place: building them from
    /// the entries one by one was slower).
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
        let mut out = Vec::with_capacity(self.len());
        for part in &self.parts {
            let entries = self.entries.get(part.entries.clone()).unwrap_or_default();
            part.owned_into(entries, &mut out);
        }
        out
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
        let (base, len) = (bytes.as_ptr() as usize, bytes.len());
        let entries = &mut self.entries;
        let mut reached = *next;
        let mut inside = true;
        let visited = partition::visit(fetched, max, &mut reached, at, |r| {
            entries.push(Entry::of(base, len, &r, &mut inside));
        });
        let taken = match visited {
            Ok(_) if !inside => {
                self.entries.truncate(first);
                return Err(Error::corrupt(
                    fetched.path(),
                    fetched.position,
                    "a decoded field outside the fetched bytes (a logbus bug)",
                ));
            }
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
                topic: Arc::clone(topic),
                fetched: fetched.clone(),
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
