//! The read side of a partition: fetched batches, the borrowing record
//! iterator over them, and the decoder that turns them into owned
//! [`ConsumerRecord`]s for `poll`.

use std::path::Path;
use std::sync::Arc;

use bytes::{Buf, Bytes};

use crate::error::{Error, Result};
use crate::log::record::{self, BatchHeader, RecordView};
use crate::log::segment::Segment;
use crate::record::ConsumerRecord;

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

    fn path(&self) -> &Path {
        self.segment
            .as_ref()
            .map_or(Path::new(""), |s| s.log_path())
    }
}

/// Appends the records of `fetched` at or after `from` to `out` (at most
/// `max`). Returns the offset to read next.
///
/// Decodes with the borrowing decoder (`RecordViews`: the inlined fast path
/// for plain records, the checked one for the rest, which accept exactly
/// what the owning `record::records` accepts, with the same errors) and
/// makes key, value and header values `Bytes` views of `fetched.bytes`.
pub(crate) fn decode_into(
    fetched: &FetchedBatches,
    topic: &Arc<str>,
    partition: u32,
    from: u64,
    max: usize,
    out: &mut Vec<ConsumerRecord>,
) -> Result<u64> {
    let limit = out.len().saturating_add(max);
    out.reserve(record_count_hint(&fetched.bytes).min(max));
    let mut filled = out.len();
    let result = fill(fetched, topic, partition, from, limit, out, &mut filled);
    // Drops the slots made ahead and not filled.
    out.truncate(filled);
    result
}

/// Slots `fill` adds to `out` at a time.
const SLOTS: usize = 32;

/// `decode_into`, writing records into slots added to `out` ahead
/// (`out[..*filled]` are the records): assigning the fields of a record in
/// place stores them straight into the vector, where `push` would build
/// each record on the stack and copy it (a store-forwarding stall per
/// 16-byte piece).
fn fill(
    fetched: &FetchedBatches,
    topic: &Arc<str>,
    partition: u32,
    from: u64,
    limit: usize,
    out: &mut Vec<ConsumerRecord>,
    filled: &mut usize,
) -> Result<u64> {
    let mut next = from;
    let bytes = &fetched.bytes;
    for batch in fetched.batches() {
        let (at, header, range) = batch?;
        if *filled >= limit {
            break;
        }
        let corrupt = |e: record::BatchError| Error::corrupt(fetched.path(), at, e.to_string());
        let mut views = record::record_views(&bytes[range], &header).map_err(corrupt)?;
        let mut taken_all = true;
        loop {
            let r = match views.next_fast() {
                Some(r) => r,
                None => match views.next() {
                    Some(r) => r.map_err(corrupt)?,
                    None => break,
                },
            };
            if r.offset < next {
                continue;
            }
            if *filled >= limit {
                taken_all = false;
                break;
            }
            next = r.offset + 1;
            if *filled == out.len() {
                add_slots(out, topic, partition, (limit - *filled).min(SLOTS));
            }
            let slot = &mut out[*filled];
            slot.offset = r.offset;
            slot.timestamp = r.timestamp;
            if let Some(k) = r.key {
                slot.key = Some(sub_bytes(bytes, k));
            }
            if let Some(v) = r.value {
                slot.value = Some(sub_bytes(bytes, v));
            }
            if r.has_headers() {
                slot.headers = owned_headers(bytes, &r);
            }
            *filled += 1;
        }
        if taken_all {
            // Skip offsets compaction removed from the end of the batch.
            next = next.max(header.next_offset() as u64);
        }
    }
    Ok(next)
}

/// Appends `n` records of `topic` and `partition` with nothing else set,
/// for `fill` to complete.
#[inline(never)]
fn add_slots(out: &mut Vec<ConsumerRecord>, topic: &Arc<str>, partition: u32, n: usize) {
    out.resize_with(out.len() + n, || ConsumerRecord {
        topic: Arc::clone(topic),
        partition,
        offset: 0,
        timestamp: 0,
        key: None,
        value: None,
        headers: Vec::new(),
    });
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

/// `sub`, a subslice of `bytes`, as a `Bytes` sharing its buffer: what
/// `bytes.slice_ref(sub)` returns, without its out-of-line calls (a clone,
/// which is one reference count increment, and two inlined adjustments).
#[inline(always)]
fn sub_bytes(bytes: &Bytes, sub: &[u8]) -> Bytes {
    if sub.is_empty() {
        return Bytes::new();
    }
    let start = sub.as_ptr() as usize - bytes.as_ptr() as usize;
    let mut b = bytes.clone();
    b.truncate(start + sub.len());
    b.advance(start);
    b
}

/// An upper bound on the records in the whole batches at the start of
/// `bytes` (from their headers, no CRC check), for sizing the output once.
fn record_count_hint(bytes: &[u8]) -> usize {
    // The smallest record: length, attributes, timestamp and offset deltas,
    // key and value lengths, header count, one byte each.
    const MIN_RECORD_LEN: usize = 7;
    let mut n = 0usize;
    let mut at = 0usize;
    while let Ok(header) = record::parse_header(&bytes[at..]) {
        let len = header.total_len();
        if len > bytes.len() - at {
            break;
        }
        let room = (len - record::BATCH_HEADER_LEN) / MIN_RECORD_LEN;
        n += usize::try_from(header.records_count).unwrap_or(0).min(room);
        at += len;
    }
    n
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
        let checked = match record::parse_header(&bytes[position..]) {
            Ok(header) => {
                let end = at + header.total_len() as u64;
                match &fetched.segment {
                    // Checked once already (appended or scanned by this process).
                    Some(segment)
                        if end <= segment.verified_len()
                            && header.total_len() <= bytes.len() - position =>
                    {
                        Ok(header)
                    }
                    segment => record::check(&bytes[position..]).inspect(|_| {
                        if let Some(segment) = segment {
                            segment.mark_verified(at, end);
                        }
                    }),
                }
            }
            Err(e) => Err(e),
        };
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
