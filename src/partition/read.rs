//! The read side of a partition: fetched batches, the borrowing record
//! iterator over them ([`visit`], which `Consumer::poll` records into a
//! `ConsumerRecords`), and the decoder that turns them into owned
//! [`ConsumerRecord`]s for `Partition::read` and the work queue.

use std::path::Path;
use std::sync::{Arc, Weak};

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::log::record::{self, BatchHeader, RecordView, Taken};
use crate::log::segment::Segment;
use crate::record::{ConsumerRecord, TopicName};

use super::PartitionShared;

/// Raw batches read from a partition.
#[derive(Debug, Clone)]
pub struct FetchedBatches {
    /// Whole Kafka RecordBatch v2 batches, back to back, exactly as stored.
    /// The first batch may start before the requested offset.
    pub bytes: Bytes,
    /// The segment they came from (its path is named in corruption errors).
    pub(crate) segment: Option<Arc<Segment>>,
    /// Byte position of `bytes` in that file.
    pub(crate) position: u64,
    /// The offset asked for: `records` skips those before it.
    pub(crate) from: u64,
}

impl FetchedBatches {
    /// The records from the offset asked for on, borrowed from the mapped
    /// segment: no allocation and no reference counting per record, the
    /// fastest way to read. Each batch's CRC is checked (once per process)
    /// before its records are returned.
    ///
    /// ```
    /// # use logbus::*;
    /// # let dir = std::env::temp_dir().join(format!("logbus-doc-views-{}", std::process::id()));
    /// # let log = Log::open(&dir, LogConfig::default())?;
    /// # let topic = log.create_topic("t", TopicConfig::new(1))?;
    /// # log.producer("t")?.send_batch(&[Record::new("a"), Record::new("bb")])?;
    /// let fetched = topic.partition(0)?.fetch(1, 1 << 20)?;
    /// let values: Vec<&[u8]> = fetched.records().map(|r| r.map(|r| r.value.unwrap())).collect::<Result<_>>()?;
    /// assert_eq!(values, [&b"bb"[..]]);
    /// # drop(log); std::fs::remove_dir_all(&dir).ok();
    /// # Ok::<(), logbus::Error>(())
    /// ```
    pub fn records(&self) -> FetchedRecords<'_> {
        FetchedRecords {
            fetched: self,
            batches: self.batches(),
            views: record::RecordViews::empty(),
            at: 0,
            pending: None,
            error: None,
        }
    }

    /// Whole batches, each CRC-checked unless this process already did.
    fn batches(&self) -> BatchWalk<'_> {
        BatchWalk {
            fetched: self,
            position: 0,
        }
    }

    pub(crate) fn empty() -> Self {
        FetchedBatches {
            bytes: Bytes::new(),
            segment: None,
            position: 0,
            from: 0,
        }
    }

    /// Counts the records at or after `*next`, at most `max`, exactly as
    /// [`visit`] would hand them over, and moves `*next` and `at` as
    /// [`visit`] does, without decoding them where it can: a batch after
    /// `*next` that fits whole in `max` counts `records_count` (its records
    /// were checked once by `BatchWalk`, see `record::check_records`: they
    /// decode, and their offsets go up, below `next_offset()`); only a
    /// batch the read starts or stops inside is walked. The records are
    /// read later by `PartRecords` (borrowed) or
    /// [`decode_taken`](Self::decode_taken) (owned). On an error `*next`
    /// and `at.stop` are left as they were.
    pub(crate) fn take(&self, max: usize, next: &mut u64, at: &mut Resume) -> Result<Taken> {
        let bytes = &self.bytes;
        let from = *next;
        let mut reached = *next;
        let mut count = 0usize;
        let mut resume = at.start.take();
        let mut stop = None;
        let mut start = None;
        let mut first = true;
        let mut batches = self.batches();
        // Full before the next batch is checked: damage after the records
        // taken does not hold them back.
        while count < max
            && let Some(batch) = batches.next()
        {
            let (position, header, range) = batch?;
            let resumed = resume.take().filter(|s| s.position == position);
            if first {
                start = resumed.map(|s| s.state);
                first = false;
            }
            let whole = usize::try_from(header.records_count).unwrap_or(usize::MAX);
            if resumed.is_none() && header.base_offset as u64 >= reached && whole <= max - count {
                count += whole;
                reached = reached.max(header.next_offset() as u64);
                continue;
            }
            let batch = Batch {
                path: self.path(),
                position,
                header: &header,
                bytes: &bytes[range],
            };
            let (n, stopped) =
                batch.take(resumed.map(|s| s.state), &mut reached, max - count, |_| {})?;
            count += n;
            stop = stopped.or(stop);
        }
        *next = reached;
        at.stop = stop;
        Ok(Taken::new(from, start, count))
    }

    /// Appends the records [`take`](Self::take) counted to `out` as owned
    /// records (the owning decoder, in place). Returns how many it added:
    /// `taken.count()` (the batches were checked, see `take`: decoding
    /// them cannot fail; should it anyway, the records before the failure).
    pub(crate) fn decode_taken(
        &self,
        topic: &Arc<str>,
        partition: u32,
        taken: &Taken,
        out: &mut Vec<ConsumerRecord>,
    ) -> usize {
        let before = out.len();
        let mut at = Resume {
            start: taken.start().map(|state| Stop {
                position: self.position,
                state,
            }),
            stop: None,
        };
        let decoded = decode_into_at(
            self,
            topic,
            partition,
            taken.from(),
            taken.count(),
            &mut at,
            out,
        );
        debug_assert!(decoded.is_ok(), "checked batches decode: {decoded:?}");
        out.len() - before
    }

    /// The segment file the bytes came from ("" if none), for errors.
    pub(crate) fn path(&self) -> &Path {
        self.segment
            .as_ref()
            .map_or(Path::new(""), |s| s.log_path())
    }
}

/// Appends the records of `fetched` at or after `from` to `out` (at most
/// `max`). Returns the offset to read next.
///
/// Makes key, value and header values `Bytes` views of `fetched.bytes`.
pub(crate) fn decode_into(
    fetched: &FetchedBatches,
    topic: &Arc<str>,
    partition: u32,
    from: u64,
    max: usize,
    out: &mut Vec<ConsumerRecord>,
) -> Result<u64> {
    let at = &mut Resume::default();
    decode_into_at(fetched, topic, partition, from, max, at, out)
}

/// [`decode_into`] with a resume point (see [`visit`]), into a vector of
/// records or of anything made around one in place ([`HoldsRecord`]).
pub(crate) fn decode_into_at<T: HoldsRecord>(
    fetched: &FetchedBatches,
    topic: &Arc<str>,
    partition: u32,
    from: u64,
    max: usize,
    at: &mut Resume,
    out: &mut Vec<T>,
) -> Result<u64> {
    let limit = out.len().saturating_add(max);
    out.reserve(record_count_hint(&fetched.bytes, max));
    let bytes = &fetched.bytes;
    let topic = TopicName::from(topic);
    let mut next = from;
    visit(fetched, max, &mut next, at, |r| {
        push_record(out, limit, bytes, &r, &topic, partition);
    })?;
    Ok(next)
}

/// Hands `f` the records of `fetched` at or after `*next`, at most `max`,
/// in order, moving `*next` past each one (and past offsets compaction
/// removed from the end of a batch taken whole): on an error, `*next` is
/// where reading resumes after the records `f` saw.
///
/// `at.start`, a [`Stop`] of an earlier visit over the same first batch,
/// skips the records before it without decoding them again. When `max`
/// ends the visit inside a batch, `at.stop` says where.
///
/// Decodes with the borrowing decoder (`RecordViews`: the inlined fast path
/// for plain records, the checked one for the rest, which accept exactly
/// what the owning `record::records` accepts, with the same errors).
#[inline(always)]
pub(crate) fn visit(
    fetched: &FetchedBatches,
    max: usize,
    next: &mut u64,
    at: &mut Resume,
    mut f: impl FnMut(RecordView<'_>),
) -> Result<usize> {
    let bytes = &fetched.bytes;
    let mut taken = 0usize;
    let mut start = at.start.take();
    at.stop = None;
    let mut batches = fetched.batches();
    // Full before the next batch is checked: damage after the records
    // taken does not fail the visit.
    while taken < max
        && let Some(batch) = batches.next()
    {
        let (position, header, range) = batch?;
        let batch = Batch {
            path: fetched.path(),
            position,
            header: &header,
            bytes: &bytes[range],
        };
        let resume = start.take().filter(|s| s.position == position);
        let (n, stopped) = batch.take(resume.map(|s| s.state), next, max - taken, &mut f)?;
        taken += n;
        at.stop = stopped.or(at.stop);
    }
    Ok(taken)
}

/// One stored batch as [`visit`] and [`FetchedBatches::take`] walk it.
struct Batch<'a> {
    path: &'a Path,
    position: u64,
    header: &'a BatchHeader,
    bytes: &'a [u8],
}

impl Batch<'_> {
    /// Hands `f` the batch's records at or after `*next` (from the decoder
    /// state `resume`, when an earlier read stopped inside this batch), at
    /// most `room`, moving `*next` past each. When `room` runs out inside
    /// the batch, returns where; otherwise `*next` also skips the offsets
    /// compaction removed from the batch's end.
    #[inline(always)]
    fn take<'b>(
        &self,
        resume: Option<(usize, i32)>,
        next: &mut u64,
        room: usize,
        mut f: impl FnMut(RecordView<'b>),
    ) -> Result<(usize, Option<Stop>)>
    where
        Self: 'b,
    {
        let corrupt =
            |e: record::BatchError| Error::corrupt(self.path, self.position, e.to_string());
        let mut views = record::record_views(self.bytes, self.header).map_err(corrupt)?;
        if let Some(state) = resume {
            views.resume(state);
        }
        let mut taken = 0;
        loop {
            let before = views.state();
            let r = match views.next_fast() {
                Some(r) => r,
                None => match views.next() {
                    Some(r) => r.map_err(corrupt)?,
                    None => break,
                },
            };
            if r.offset < *next {
                continue;
            }
            if taken >= room {
                let stop = Stop {
                    position: self.position,
                    state: before,
                };
                return Ok((taken, Some(stop)));
            }
            *next = r.offset + 1;
            f(r);
            taken += 1;
        }
        *next = (*next).max(self.header.next_offset() as u64);
        Ok((taken, None))
    }
}

/// Where a visit stopped inside a batch: the batch's file position and the
/// decoder's state before the first record it did not take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stop {
    pub(crate) position: u64,
    state: (usize, i32),
}

/// A visit's resume point, in and out (see [`visit`]).
#[derive(Debug, Default)]
pub(crate) struct Resume {
    /// Where to start in the first batch (taken by the visit).
    pub(crate) start: Option<Stop>,
    /// Where the visit stopped inside a batch, if it did.
    pub(crate) stop: Option<Stop>,
}

/// Where a reader stopped inside a batch, to go on from there at its next
/// read: with the default 500 records per poll and 1000-record batches,
/// every other poll would otherwise decode 500 records again only to skip
/// them. Holds the segment weakly: a deleted segment's file is not kept.
#[derive(Debug, Clone)]
pub(crate) struct ReadCursor {
    segment: Weak<Segment>,
    stop: Stop,
    /// The offset the reader goes on from.
    next: u64,
}

impl ReadCursor {
    /// The cursor for a visit of `fetched` that stopped at `stop`, with
    /// `next` the offset to read next.
    pub(crate) fn new(fetched: &FetchedBatches, stop: Stop, next: u64) -> Option<Self> {
        Some(ReadCursor {
            segment: Arc::downgrade(fetched.segment.as_ref()?),
            stop,
            next,
        })
    }
}

impl PartitionShared {
    /// The batches from `cursor`'s batch on (as `fetch(offset, max_bytes)`
    /// would return them, minus the index lookup), with the resume point
    /// for [`visit`]; `None` if the cursor is not at `offset` or its
    /// segment is gone (then fetch).
    pub(crate) fn fetch_from_cursor(
        &self,
        cursor: ReadCursor,
        offset: u64,
        max_bytes: usize,
    ) -> Option<(FetchedBatches, Stop)> {
        if cursor.next != offset {
            return None;
        }
        let segment = cursor.segment.upgrade()?;
        let bytes = segment.read_batches(cursor.stop.position, max_bytes, self.log_end());
        if bytes.is_empty() {
            return None;
        }
        let fetched = FetchedBatches {
            bytes,
            segment: Some(segment),
            position: cursor.stop.position,
            from: offset,
        };
        Some((fetched, cursor.stop))
    }
}

/// Records `push_record` makes room for at a time when the size hint fell
/// short (records past the hinted batches).
const GROW_BY: usize = 32;

/// Appends `r`, a record of `bytes`, to `out`, writing each field straight
/// into the vector's spare room: `push` would build the record on the
/// stack and copy it (a store-forwarding stall per 16-byte piece), and
/// filling default slots first (`resize_with`) writes every field twice.
#[inline(always)]
fn push_record<T: HoldsRecord>(
    out: &mut Vec<T>,
    limit: usize,
    bytes: &Bytes,
    r: &RecordView<'_>,
    topic: &TopicName,
    partition: u32,
) {
    if out.len() == out.capacity() {
        grow(out, limit);
    }
    // Everything that could allocate (or, in theory, panic) first: a panic
    // after the first write below would leak the fields written, not
    // corrupt `out`.
    let headers = if r.has_headers() {
        owned_headers(bytes, r)
    } else {
        Vec::new()
    };
    let key = r.key.map(|k| sub_bytes(bytes, k));
    let value = r.value.map(|v| sub_bytes(bytes, v));
    let len = out.len();
    if let Some(v) = r.value {
        prefetch(v.as_ptr().wrapping_add(PREFETCH_AHEAD));
    }
    #[expect(
        unsafe_code,
        reason = "initialising a record in place in the spare room"
    )]
    // SAFETY: `len < capacity` (checked above, `grow` reserves at least
    // one), so `out.as_mut_ptr().add(len)` points at allocated, unused
    // room for one element, and `init_in_place` returns its record field
    // (initialising the others). Each field is written exactly once
    // through `addr_of_mut!` (no reference to uninitialised memory is
    // made), and only then does `set_len` count the element.
    unsafe {
        let p = T::init_in_place(out.as_mut_ptr().add(len));
        topic.clone_to(std::ptr::addr_of_mut!((*p).topic));
        std::ptr::addr_of_mut!((*p).partition).write(partition);
        std::ptr::addr_of_mut!((*p).offset).write(r.offset);
        std::ptr::addr_of_mut!((*p).timestamp).write(r.timestamp);
        std::ptr::addr_of_mut!((*p).key).write(key);
        std::ptr::addr_of_mut!((*p).value).write(value);
        std::ptr::addr_of_mut!((*p).headers).write(headers);
        out.set_len(len + 1);
    }
}

/// How far past a record's value `push_record` asks for the segment's
/// bytes to be loaded into the cache (about 20 records of 100 B, 2 of 1 KiB).
///
/// NOTE: cloning a value `Bytes` is a locked increment, and on x86 no load
/// after a locked instruction starts before it completes, so the hardware
/// cannot read ahead across records: without this, each record's first
/// read of the segment waited for memory (100 B records: 27 ns per record
/// with 500 per poll, 21 ns with the prefetch). Prefetches are not held
/// back by locked instructions.
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

/// An element of the vectors `decode_into` fills: a [`ConsumerRecord`], or
/// something holding one that is made in place too (a work queue's
/// delivery), so records are never moved after decoding (a 136-byte
/// `memcpy` call each).
pub(crate) trait HoldsRecord: Sized {
    /// Initialises every field of `*p` but its record, and returns where
    /// the record goes.
    ///
    /// # Safety
    /// `p` is valid for writes and aligned.
    #[expect(unsafe_code, reason = "initialising memory in place")]
    unsafe fn init_in_place(p: *mut Self) -> *mut ConsumerRecord;
}

impl HoldsRecord for ConsumerRecord {
    #[inline(always)]
    #[expect(unsafe_code, reason = "initialising memory in place")]
    unsafe fn init_in_place(p: *mut Self) -> *mut ConsumerRecord {
        p
    }
}

/// Makes room for at least one more element (at most `limit` in all).
#[cold]
#[inline(never)]
fn grow<T>(out: &mut Vec<T>, limit: usize) {
    out.reserve(limit.saturating_sub(out.len()).clamp(1, GROW_BY));
}

/// The headers of `r`, a record of `bytes`, as owned [`Header`]s.
#[inline(never)]
fn owned_headers(bytes: &Bytes, r: &RecordView<'_>) -> Vec<crate::record::Header> {
    r.headers()
        .map(|(key, value)| crate::record::Header {
            key: key.to_owned(),
            value: value.map(|v| sub_bytes(bytes, v)),
        })
        .collect()
}

/// `sub`, a subslice of `bytes`, as a `Bytes` sharing its buffer (one
/// reference count increment): what `bytes.slice_ref(sub)` returns,
/// without its out-of-line calls and checks.
#[inline(always)]
fn sub_bytes(bytes: &Bytes, sub: &[u8]) -> Bytes {
    if sub.is_empty() {
        return Bytes::new();
    }
    let start = sub.as_ptr() as usize - bytes.as_ptr() as usize;
    bytes.slice(start..start + sub.len())
}

/// An upper bound on the records in the whole batches at the start of
/// `bytes` (from their headers, no CRC check), at most `max`, for sizing
/// the output once. Stops at the batch that reaches `max`: a poll taking
/// 500 records need not read every batch header of a 1 MiB fetch.
fn record_count_hint(bytes: &[u8], max: usize) -> usize {
    // The smallest record: length, attributes, timestamp and offset deltas,
    // key and value lengths, header count, one byte each.
    const MIN_RECORD_LEN: usize = 7;
    let mut n = 0usize;
    let mut at = 0usize;
    while n < max
        && let Ok(header) = record::parse_header(&bytes[at..])
    {
        let len = header.total_len();
        if len > bytes.len() - at {
            break;
        }
        let room = (len - record::BATCH_HEADER_LEN) / MIN_RECORD_LEN;
        n += usize::try_from(header.records_count).unwrap_or(0).min(room);
        at += len;
    }
    n.min(max)
}

/// Walks fetched bytes batch by batch; see [`FetchedBatches::batches`].
struct BatchWalk<'a> {
    fetched: &'a FetchedBatches,
    position: usize,
}

impl Iterator for BatchWalk<'_> {
    /// (file position, header, byte range within the fetched bytes)
    type Item = Result<(u64, BatchHeader, std::ops::Range<usize>)>;

    fn next(&mut self) -> Option<Self::Item> {
        let fetched = self.fetched;
        let bytes = &fetched.bytes[..];
        if self.position >= bytes.len() {
            return None;
        }
        let position = self.position;
        let at = fetched.position + position as u64;
        let corrupt = |e: record::BatchError| Error::corrupt(fetched.path(), at, e.to_string());
        let checked = record::parse_header(&bytes[position..]).and_then(|header| {
            let len = header.total_len();
            let end = at + len as u64;
            let Some(batch) = bytes.get(position..position + len) else {
                return record::check(&bytes[position..]); // its `Incomplete`
            };
            match &fetched.segment {
                // Checked once already (appended, or read before, by this process).
                Some(segment) if segment.is_checked(at, end) => Ok(header),
                segment => {
                    // The CRC first (unless a recovery scan checked it),
                    // then every record's structure: once per process, so
                    // lazy readers can trust the batch (see `Segment::checked`).
                    if segment.as_ref().is_none_or(|s| end > s.verified_len()) {
                        record::check(batch)?;
                    }
                    record::check_records(batch, &header)?;
                    if let Some(segment) = segment {
                        segment.mark_verified(at, end);
                    }
                    Ok(header)
                }
            }
        });
        match checked {
            Ok(header) => {
                self.position += header.total_len();
                Some(Ok((at, header, position..self.position)))
            }
            Err(e) => {
                self.position = bytes.len(); // nothing after damage is trusted
                Some(Err(corrupt(e)))
            }
        }
    }
}

/// Iterator returned by [`FetchedBatches::records`].
pub struct FetchedRecords<'a> {
    fetched: &'a FetchedBatches,
    batches: BatchWalk<'a>,
    /// Records of the current batch (empty before the first).
    views: record::RecordViews<'a>,
    /// File position of the current batch, for errors.
    at: u64,
    /// A record `refill` decoded with the checked decoder, next to return.
    pending: Option<RecordView<'a>>,
    /// The error `refill` ran into, next to return.
    error: Option<Error>,
}

/// What [`FetchedRecords::refill`] left for `next`.
enum Refill {
    /// More records in `views`, or one in `pending`.
    Ready,
    /// An error in `error`.
    Failed,
    /// Nothing left.
    End,
}

impl std::fmt::Debug for FetchedRecords<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FetchedRecords")
            .field("position", &self.batches.position)
            .finish()
    }
}

impl<'a> Iterator for FetchedRecords<'a> {
    type Item = Result<RecordView<'a>>;

    /// The common record (inside a batch, no headers) comes from the
    /// inlined fast decoder; `refill` deals with everything else (batch
    /// boundaries, records for the checked decoder, errors) out of line and
    /// leaves its result in `self`, so the record returned here never goes
    /// through memory.
    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let r = if self.pending.is_none() {
                match self.views.next_fast() {
                    Some(r) => r,
                    None => match self.refill() {
                        Refill::Ready => continue,
                        Refill::Failed => return self.error.take().map(Err),
                        Refill::End => return None,
                    },
                }
            } else {
                // Before the records after it.
                match self.pending.take() {
                    Some(r) => r,
                    None => continue,
                }
            };
            if r.offset >= self.fetched.from {
                return Some(Ok(r));
            }
        }
    }
}

impl FetchedRecords<'_> {
    #[inline(never)]
    fn refill(&mut self) -> Refill {
        match self.views.next() {
            Some(Ok(r)) => {
                self.pending = Some(r);
                return Refill::Ready;
            }
            Some(Err(e)) => {
                return self.fail(Error::corrupt(self.fetched.path(), self.at, e.to_string()));
            }
            None => {}
        }
        let (at, header, range) = match self.batches.next() {
            None => return Refill::End,
            Some(Ok(batch)) => batch,
            Some(Err(e)) => return self.fail(e),
        };
        let fetched = self.fetched;
        match record::record_views(&fetched.bytes[range], &header) {
            Ok(views) => {
                self.views = views;
                self.at = at;
                Refill::Ready
            }
            Err(e) => self.fail(Error::corrupt(fetched.path(), at, e.to_string())),
        }
    }

    /// Stores `e` for `next` and ends the iteration after it.
    fn fail(&mut self, e: Error) -> Refill {
        self.views = record::RecordViews::empty();
        self.batches.position = usize::MAX;
        self.error = Some(e);
        Refill::Failed
    }
}
