//! Kafka's record batch, format v2 ("magic 2"), byte for byte: the on-disk
//! and on-wire unit of the log. Pure functions over byte slices, no I/O.
//!
//! A batch is a 61-byte big-endian header followed by its records:
//!
//! | at | field                  | type | notes                                   |
//! |----|------------------------|------|-----------------------------------------|
//! | 0  | `baseOffset`           | i64  | offset of the first record              |
//! | 8  | `batchLength`          | i32  | bytes after this field                  |
//! | 12 | `partitionLeaderEpoch` | i32  | not covered by the CRC                  |
//! | 16 | `magic`                | i8   | always 2                                |
//! | 17 | `crc`                  | u32  | CRC-32C of bytes 21..end                |
//! | 21 | `attributes`           | i16  | codec bits 0-2, time type 3, txn 4, control 5 |
//! | 23 | `lastOffsetDelta`      | i32  |                                         |
//! | 27 | `baseTimestamp`        | i64  | first record's timestamp                |
//! | 35 | `maxTimestamp`         | i64  |                                         |
//! | 43 | `producerId`           | i64  | -1: no idempotent producer              |
//! | 51 | `producerEpoch`        | i16  | -1                                      |
//! | 53 | `baseSequence`         | i32  | -1                                      |
//! | 57 | `recordsCount`         | i32  |                                         |
//! | 61 | records                |      |                                         |
//!
//! Each record is: `length` varint (bytes after it), `attributes` i8 (unused,
//! 0), `timestampDelta` varlong, `offsetDelta` varint, `keyLength` varint
//! (-1 = null), key, `valueLength` varint (-1 = null), value, `headerCount`
//! varint, then per header `keyLength` varint, UTF-8 key, `valueLength`
//! varint (-1 = null), value. Varints are zigzag-encoded like protobuf's
//! `sint32`/`sint64`, so -1 costs one byte.

use std::borrow::Borrow;
use std::iter::FusedIterator;
use std::ops::Range;

use bytes::{Buf, Bytes};

use crate::record::{Header, Record};

/// The only batch format this module reads and writes.
pub const MAGIC: i8 = 2;
/// `baseOffset` + `batchLength`: the bytes before the length-counted part.
pub const LOG_OVERHEAD: usize = 12;
/// Fixed header size of a v2 batch.
pub const BATCH_HEADER_LEN: usize = 61;

const LENGTH_AT: usize = 8;
const EPOCH_AT: usize = 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
/// The CRC covers everything from the attributes on, so that brokers can
/// rewrite the base offset and leader epoch without recomputing it.
const CRC_FROM: usize = 21;
const LAST_OFFSET_DELTA_AT: usize = 23;
const BASE_TIMESTAMP_AT: usize = 27;
const MAX_TIMESTAMP_AT: usize = 35;
const PRODUCER_ID_AT: usize = 43;
const PRODUCER_EPOCH_AT: usize = 51;
const BASE_SEQUENCE_AT: usize = 53;
const RECORDS_COUNT_AT: usize = 57;

const COMPRESSION_MASK: i16 = 0x07;
const LOG_APPEND_TIME_BIT: i16 = 0x08;
const CONTROL_BIT: i16 = 0x20;

/// Largest codec id Kafka defines (zstd); 5..=7 are not codecs at all.
const MAX_CODEC: u8 = 4;

/// The parsed fixed header of a v2 batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record.
    pub base_offset: i64,
    /// Bytes after the `batchLength` field.
    pub batch_length: i32,
    /// Leader epoch of the writer (we always write 0).
    pub partition_leader_epoch: i32,
    /// Format version; 2 for every header `parse_header` accepts.
    pub magic: i8,
    /// Stored CRC-32C of bytes 21..end.
    pub crc: u32,
    /// Codec, timestamp type, transactional and control flags.
    pub attributes: i16,
    /// Offset of the last record relative to `base_offset`.
    pub last_offset_delta: i32,
    /// Timestamp the record deltas are relative to (the first record's).
    pub base_timestamp: i64,
    /// Largest record timestamp.
    pub max_timestamp: i64,
    /// Idempotent producer id, -1 if none.
    pub producer_id: i64,
    /// Idempotent producer epoch, -1 if none.
    pub producer_epoch: i16,
    /// Sequence number of the first record, -1 if none.
    pub base_sequence: i32,
    /// Number of records in the batch.
    pub records_count: i32,
}

impl BatchHeader {
    /// Size of the whole batch in bytes (`batch_length` + 12).
    pub fn total_len(&self) -> usize {
        // A negative length never passes parse_header; clamping keeps a
        // hand-built header from turning into a huge usize.
        self.batch_length.max(0) as usize + LOG_OVERHEAD
    }

    /// Offset of the last record (`base_offset + last_offset_delta`).
    pub fn last_offset(&self) -> i64 {
        // Wrapping like Kafka's Java arithmetic: a CRC-valid but absurd header
        // must not panic a debug build.
        self.base_offset
            .wrapping_add(i64::from(self.last_offset_delta))
    }

    /// The offset after this batch (`last_offset + 1`).
    pub fn next_offset(&self) -> i64 {
        self.last_offset().wrapping_add(1)
    }

    /// Compression codec: 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd.
    pub fn compression(&self) -> u8 {
        (self.attributes & COMPRESSION_MASK) as u8
    }

    /// Whether this is a control batch (transaction markers).
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }
}

/// Why a byte slice is not (yet) a usable batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Fewer bytes than the header (or than batch_length says) are available.
    #[error("incomplete batch: {needed} bytes needed, {available} available")]
    Incomplete {
        /// Bytes the batch (or its header) needs.
        needed: usize,
        /// Bytes given.
        available: usize,
    },
    /// Structurally invalid (bad magic, impossible length, bad varint, counts that don't add up, ...).
    #[error("invalid batch: {0}")]
    Invalid(&'static str),
    /// The stored CRC does not match the bytes.
    #[error("CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        /// CRC in the header.
        stored: u32,
        /// CRC-32C of bytes 21..end.
        computed: u32,
    },
    /// Compressed batches are valid Kafka but not decodable yet.
    #[error("compression codec {0} is not supported")]
    UnsupportedCompression(u8),
}

/// Parses the 61-byte header only, without checking the CRC.
///
/// Rejects a magic other than 2 and a `batch_length` too small to hold the
/// header (which includes every negative one). Returns
/// [`BatchError::Incomplete`] if `buf` is shorter than 61 bytes.
pub fn parse_header(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let Some(mut b) = buf.get(..BATCH_HEADER_LEN) else {
        return Err(BatchError::Incomplete {
            needed: BATCH_HEADER_LEN,
            available: buf.len(),
        });
    };
    // `b` is exactly 61 bytes, so these reads cannot run short.
    let header = BatchHeader {
        base_offset: b.get_i64(),
        batch_length: b.get_i32(),
        partition_leader_epoch: b.get_i32(),
        magic: b.get_i8(),
        crc: b.get_u32(),
        attributes: b.get_i16(),
        last_offset_delta: b.get_i32(),
        base_timestamp: b.get_i64(),
        max_timestamp: b.get_i64(),
        producer_id: b.get_i64(),
        producer_epoch: b.get_i16(),
        base_sequence: b.get_i32(),
        records_count: b.get_i32(),
    };
    if header.magic != MAGIC {
        return Err(BatchError::Invalid(
            "magic is not 2 (not a v2 record batch)",
        ));
    }
    if header.batch_length < (BATCH_HEADER_LEN - LOG_OVERHEAD) as i32 {
        return Err(BatchError::Invalid(
            "batch length is smaller than the header",
        ));
    }
    Ok(header)
}

/// Cheap validation before decoding: parses the header, requires the whole
/// batch to be in `buf` (extra bytes after it are ignored) and verifies the
/// CRC. Does not allocate and does not look at the records' structure.
pub fn check(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = parse_header(buf)?;
    let total = header.total_len();
    let Some(covered) = buf.get(CRC_FROM..total) else {
        return Err(BatchError::Incomplete {
            needed: total,
            available: buf.len(),
        });
    };
    let computed = crc32c::crc32c(covered);
    if computed != header.crc {
        return Err(BatchError::CrcMismatch {
            stored: header.crc,
            computed,
        });
    }
    Ok(header)
}

/// Summary of what [`encode_batch`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodedBatch {
    /// Bytes written (the whole batch).
    pub len: usize,
    /// The first record's timestamp.
    pub base_timestamp: i64,
    /// The largest record timestamp.
    pub max_timestamp: i64,
    /// `records.len() - 1`.
    pub last_offset_delta: i32,
}

/// Where one encoded batch sits in a buffer holding several.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EncodedSpan {
    /// Byte position of the batch in the buffer.
    pub start: usize,
    /// What [`finish_batch`] wrote (`len` is the batch's length).
    pub encoded: EncodedBatch,
    /// Records in the batch.
    pub records: usize,
}

/// Exact encoded size of a batch holding `records` (header + all records),
/// given `now_ms` for records without a timestamp.
pub fn encoded_len<R: Borrow<Record>>(records: &[R], now_ms: i64) -> usize {
    let Some(first) = records.first() else {
        return BATCH_HEADER_LEN;
    };
    let base_ts = first.borrow().timestamp.unwrap_or(now_ms);
    let mut len = BATCH_HEADER_LEN;
    for (i, r) in records.iter().enumerate() {
        let r = r.borrow();
        let ts_delta = r.timestamp.unwrap_or(now_ms).wrapping_sub(base_ts);
        let plain = match (&r.key, r.value.as_deref()) {
            (None, Some(value)) if r.headers.is_empty() => {
                plain_body_len(ts_delta, i as i32, value.len())
            }
            _ => None,
        };
        let body = plain.unwrap_or_else(|| body_len(r, ts_delta, i as i32));
        len += varint_size(body as i32) + body;
    }
    len
}

/// Encodes `records` as one uncompressed CreateTime batch starting at
/// `base_offset`, CRC included, and returns what it wrote.
///
/// Contract (the caller guarantees it; breaking it panics, never writes out
/// of bounds):
/// - `records` is non-empty;
/// - `out.len() == encoded_len(records, now_ms)` (checked in debug builds;
///   a shorter `out` panics on slice indexing);
/// - the batch fits Kafka's i32 length (at most `i32::MAX + 12` bytes).
///
/// # Panics
/// If the contract above is broken.
pub fn encode_batch<R: Borrow<Record>>(
    out: &mut [u8],
    base_offset: i64,
    records: &[R],
    now_ms: i64,
) -> EncodedBatch {
    debug_assert_eq!(
        out.len(),
        encoded_len(records, now_ms),
        "encode_batch: out must be exactly encoded_len bytes"
    );
    // Every length inside the batch is smaller than the batch, so this one
    // check makes all the `as i32` casts below exact.
    assert!(
        out.len().saturating_sub(LOG_OVERHEAD) <= i32::MAX as usize,
        "encode_batch: batch larger than i32::MAX bytes"
    );
    encode_batch_into(out, base_offset, records, now_ms)
}

/// Like [`encode_batch`], into the start of an `out` that may be longer
/// than the batch (any size bound will do, e.g. the sum of
/// `size_bound`s): the caller need not work out the exact length first.
/// Returns what it wrote; the batch is `out[..len]`.
///
/// # Panics
/// If `records` is empty, `out` is too short, or the batch is larger than
/// Kafka's i32 length allows (then after writing into `out`).
pub fn encode_batch_into<R: Borrow<Record>>(
    out: &mut [u8],
    base_offset: i64,
    records: &[R],
    now_ms: i64,
) -> EncodedBatch {
    encode_batch_with::<R, true>(out, base_offset, records, now_ms)
}

/// [`encode_batch_into`]; `PLAIN = false` encodes every record field by
/// field (the reference the fast path is tested against).
fn encode_batch_with<R: Borrow<Record>, const PLAIN: bool>(
    out: &mut [u8],
    base_offset: i64,
    records: &[R],
    now_ms: i64,
) -> EncodedBatch {
    assert!(!records.is_empty(), "encode_batch: a batch needs a record");
    let base_ts = records[0].borrow().timestamp.unwrap_or(now_ms);
    let mut max_ts = base_ts;
    let mut pos = BATCH_HEADER_LEN;
    for (i, r) in records.iter().enumerate() {
        let r = r.borrow();
        let ts = r.timestamp.unwrap_or(now_ms);
        max_ts = max_ts.max(ts);
        // Wrapping: decode adds it back with wrapping_add, so any pair of
        // i64 timestamps round-trips, as in Kafka's Java arithmetic.
        let ts_delta = ts.wrapping_sub(base_ts);
        pos = put_record_parts::<PLAIN>(
            out,
            pos,
            r.key.as_deref(),
            r.value.as_deref(),
            &r.headers,
            ts_delta,
            i as i32,
        );
    }
    let len = pos;
    assert!(
        len - LOG_OVERHEAD <= i32::MAX as usize,
        "encode_batch: batch larger than i32::MAX bytes"
    );
    let mut encoded = finish_batch(&mut out[..len], records.len(), base_ts, max_ts);
    encoded.len = len;
    set_base_offset(out, base_offset);
    encoded
}

/// Writes the header of the batch `batch` (its records already encoded
/// after [`BATCH_HEADER_LEN`] bytes) with base offset 0, then its CRC-32C:
/// one uncompressed CreateTime batch of `count` records, no producer id.
/// Shared by [`encode_batch_into`] and the producer's
/// [`BatchBuilder`](crate::BatchBuilder).
///
/// # Panics
/// If `batch` is shorter than a header or `count` is 0.
pub(crate) fn finish_batch(
    batch: &mut [u8],
    count: usize,
    base_ts: i64,
    max_ts: i64,
) -> EncodedBatch {
    let len = batch.len();
    assert!(count > 0, "finish_batch: a batch needs a record");
    let last_offset_delta = (count - 1) as i32;
    let head: &mut [u8; BATCH_HEADER_LEN] = (&mut batch[..BATCH_HEADER_LEN])
        .try_into()
        .expect("61-byte slice");
    head[..LENGTH_AT].copy_from_slice(&0i64.to_be_bytes());
    head[LENGTH_AT..EPOCH_AT].copy_from_slice(&((len - LOG_OVERHEAD) as i32).to_be_bytes());
    head[EPOCH_AT..MAGIC_AT].copy_from_slice(&0i32.to_be_bytes());
    head[MAGIC_AT] = MAGIC as u8;
    // Attributes 0: no compression, CreateTime, not transactional, not control.
    head[CRC_FROM..LAST_OFFSET_DELTA_AT].copy_from_slice(&0i16.to_be_bytes());
    head[LAST_OFFSET_DELTA_AT..BASE_TIMESTAMP_AT].copy_from_slice(&last_offset_delta.to_be_bytes());
    head[BASE_TIMESTAMP_AT..MAX_TIMESTAMP_AT].copy_from_slice(&base_ts.to_be_bytes());
    head[MAX_TIMESTAMP_AT..PRODUCER_ID_AT].copy_from_slice(&max_ts.to_be_bytes());
    head[PRODUCER_ID_AT..PRODUCER_EPOCH_AT].copy_from_slice(&(-1i64).to_be_bytes());
    head[PRODUCER_EPOCH_AT..BASE_SEQUENCE_AT].copy_from_slice(&(-1i16).to_be_bytes());
    head[BASE_SEQUENCE_AT..RECORDS_COUNT_AT].copy_from_slice(&(-1i32).to_be_bytes());
    head[RECORDS_COUNT_AT..].copy_from_slice(&(count as i32).to_be_bytes());

    let crc = crc32c::crc32c(&batch[CRC_FROM..len]);
    batch[CRC_AT..CRC_FROM].copy_from_slice(&crc.to_be_bytes());

    EncodedBatch {
        len,
        base_timestamp: base_ts,
        max_timestamp: max_ts,
        last_offset_delta,
    }
}

/// Rewrites the base offset of an encoded batch. The CRC does not cover it,
/// so the batch stays valid.
///
/// # Panics
/// If `batch` is shorter than 8 bytes.
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    batch[..LENGTH_AT].copy_from_slice(&base_offset.to_be_bytes());
}

/// Appends to `out` a copy of the batch `original` holding only some of
/// its records: `records` are their encoded bytes (each with its length
/// prefix, exactly as in `original`), `count` of them, with largest
/// timestamp `max_timestamp`.
///
/// Everything the records' deltas are relative to stays as it was (base
/// offset, base timestamp), so retained records are copied byte for byte
/// and keep their offsets; `lastOffsetDelta` also stays, so the batch still
/// ends at the original last offset, as Kafka's cleaner does for v2
/// batches. Length, record count, max timestamp (for CreateTime batches)
/// and the CRC-32C are recomputed.
///
/// # Panics
/// If `original` is shorter than a batch header or the new batch would be
/// larger than Kafka's i32 length allows (it is never larger than the
/// original, so neither happens for a batch that passed [`check`]).
pub fn rebuild_batch(
    out: &mut Vec<u8>,
    original: &[u8],
    records: &[u8],
    count: i32,
    max_timestamp: i64,
) {
    let start = out.len();
    out.extend_from_slice(&original[..BATCH_HEADER_LEN]);
    out.extend_from_slice(records);
    let len = BATCH_HEADER_LEN + records.len();
    let batch = &mut out[start..];
    let length = i32::try_from(len - LOG_OVERHEAD).expect("batch below i32::MAX bytes");
    batch[LENGTH_AT..EPOCH_AT].copy_from_slice(&length.to_be_bytes());
    let attributes = i16::from_be_bytes([batch[CRC_FROM], batch[CRC_FROM + 1]]);
    if attributes & LOG_APPEND_TIME_BIT == 0 {
        batch[MAX_TIMESTAMP_AT..PRODUCER_ID_AT].copy_from_slice(&max_timestamp.to_be_bytes());
    }
    batch[RECORDS_COUNT_AT..BATCH_HEADER_LEN].copy_from_slice(&count.to_be_bytes());
    let crc = crc32c::crc32c(&batch[CRC_FROM..len]);
    batch[CRC_AT..CRC_FROM].copy_from_slice(&crc.to_be_bytes());
}

/// Size of a record after its length prefix.
#[inline(always)]
fn body_len(r: &Record, ts_delta: i64, offset_delta: i32) -> usize {
    parts_body_len(
        r.key.as_deref(),
        r.value.as_deref(),
        &r.headers,
        ts_delta,
        offset_delta,
    )
}

/// [`body_len`] of a record given by its parts.
#[inline(always)]
fn parts_body_len(
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[Header],
    ts_delta: i64,
    offset_delta: i32,
) -> usize {
    let mut len = 1 // attributes
        + varlong_size(ts_delta)
        + varint_size(offset_delta)
        + nullable_len(key)
        + nullable_len(value)
        + varint_size(headers.len() as i32);
    for h in headers {
        len += varint_size(h.key.len() as i32) + h.key.len() + nullable_len(h.value.as_deref());
    }
    len
}

/// An upper bound of the bytes one record takes in a batch, length prefix
/// included, cheap to compute (no varint sizes): what callers reserve
/// before encoding.
#[inline]
pub(crate) fn record_size_bound(
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[Header],
) -> usize {
    let data = |b: Option<&[u8]>| b.map_or(0, <[u8]>::len);
    let headers: usize = headers
        .iter()
        .map(|h| 10 + h.key.len() + data(h.value.as_deref()))
        .sum();
    5 + 1 + 10 + 5 + 5 + data(key) + 5 + data(value) + 5 + headers
}

/// Encodes one record, length prefix included, at `out[pos..]` and
/// returns the position after it. With `PLAIN`, the fast path (no key, no
/// headers, small value and deltas) writes the same bytes as the general
/// one; `PLAIN = false` always takes the field-by-field path (the
/// reference the fast path is tested against).
///
/// # Panics
/// If `out` has fewer than [`record_size_bound`] bytes after `pos`.
#[inline(always)]
pub(crate) fn put_record_parts<const PLAIN: bool>(
    out: &mut [u8],
    pos: usize,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[Header],
    ts_delta: i64,
    offset_delta: i32,
) -> usize {
    let mut w = Writer { buf: out, pos };
    let plain = match (key, value) {
        (None, Some(value)) if PLAIN && headers.is_empty() => {
            w.put_plain(ts_delta, offset_delta, value)
        }
        _ => false,
    };
    if !plain {
        w.put_parts(key, value, headers, ts_delta, offset_delta);
    }
    w.pos
}

#[inline(always)]
fn nullable_len(b: Option<&[u8]>) -> usize {
    match b {
        None => 1,
        Some(b) => varint_size(b.len() as i32) + b.len(),
    }
}

/// Sequential writer over the caller's buffer; indexing past its end panics
/// (only possible if the caller sized it wrongly).
struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl Writer<'_> {
    /// A record given by its parts, field by field.
    #[inline]
    fn put_parts(
        &mut self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header],
        ts_delta: i64,
        offset_delta: i32,
    ) {
        self.put_varint(parts_body_len(key, value, headers, ts_delta, offset_delta) as i32);
        self.put_u8(0); // record attributes: unused in v2
        self.put_varlong(ts_delta);
        self.put_varint(offset_delta);
        self.put_nullable(key);
        self.put_nullable(value);
        self.put_varint(headers.len() as i32);
        for h in headers {
            self.put_varint(h.key.len() as i32);
            self.put(h.key.as_bytes());
            self.put_nullable(h.value.as_deref());
        }
    }

    /// The common record, with no key and no headers, a value under 4 KiB
    /// and a one-byte timestamp delta, in one bounds check: the same bytes
    /// as [`put_parts`](Self::put_parts) (a test holds them equal) at a
    /// quarter of the instructions. Returns false, having written nothing,
    /// for any other record.
    #[inline(always)]
    fn put_plain(&mut self, ts_delta: i64, offset_delta: i32, value: &[u8]) -> bool {
        let Some(body) = plain_body_len(ts_delta, offset_delta, value.len()) else {
            return false;
        };
        let ts = zigzag64(ts_delta);
        let od = zigzag32(offset_delta);
        let vl = (value.len() as u32) << 1; // zigzag of a non-negative length
        let bl = (body as u32) << 1; // < 0x4000: value.len() < 0x1000
        let bl_size = 1 + usize::from(bl >= 0x80);
        let total = bl_size + body;
        let Some(dst) = self.buf.get_mut(self.pos..self.pos + total) else {
            return false;
        };
        let mut at = put_short_varint(dst, 0, bl);
        dst[at] = 0; // attributes
        dst[at + 1] = ts as u8;
        at = put_short_varint(dst, at + 2, od);
        dst[at] = 1; // key length -1: null
        at = put_short_varint(dst, at + 1, vl);
        dst[at..at + value.len()].copy_from_slice(value);
        dst[total - 1] = 0; // header count
        self.pos += total;
        true
    }

    #[inline(always)]
    fn put(&mut self, src: &[u8]) {
        let end = self.pos + src.len();
        self.buf[self.pos..end].copy_from_slice(src);
        self.pos = end;
    }

    #[inline(always)]
    fn put_u8(&mut self, b: u8) {
        self.buf[self.pos] = b;
        self.pos += 1;
    }

    #[inline(always)]
    fn put_varint(&mut self, v: i32) {
        let z = zigzag32(v);
        if z < 0x80 {
            self.put_u8(z as u8);
        } else if z < 0x4000 {
            // Lengths of 64 B to 8 KiB: the common multi-byte case.
            self.put(&[(z as u8) | 0x80, (z >> 7) as u8]);
        } else {
            self.pos += write_varint(&mut self.buf[self.pos..], v);
        }
    }

    #[inline(always)]
    fn put_varlong(&mut self, v: i64) {
        let z = zigzag64(v);
        if z < 0x80 {
            self.put_u8(z as u8);
        } else {
            self.pos += write_varlong(&mut self.buf[self.pos..], v);
        }
    }

    #[inline(always)]
    fn put_nullable(&mut self, b: Option<&[u8]>) {
        match b {
            None => self.put_u8(1), // zigzag(-1)
            Some(b) => {
                self.put_varint(b.len() as i32);
                self.put(b);
            }
        }
    }
}

/// The body length (the bytes after the length varint) of a record with no
/// key and no headers, if [`Writer::put_plain`] takes it: a one-byte
/// timestamp delta, an offset delta and a value length of at most two bytes
/// each (value under 4 KiB). Shared by the encoder and `encoded_len`, so
/// the two cannot disagree on which records are plain.
#[inline(always)]
fn plain_body_len(ts_delta: i64, offset_delta: i32, value_len: usize) -> Option<usize> {
    let od = zigzag32(offset_delta);
    if zigzag64(ts_delta) >= 0x80 || od >= 0x4000 || value_len >= 0x1000 {
        return None;
    }
    let od_size = 1 + usize::from(od >= 0x80);
    let vl_size = 1 + usize::from(value_len >= 0x40); // zigzag(len) >= 0x80
    // attributes, timestamp delta, offset delta, null key, value length,
    // value, header count.
    Some(3 + od_size + vl_size + value_len + 1)
}

/// Writes an already zigzagged value below 0x4000 (1 or 2 bytes) at
/// `dst[at..]`; returns the position after it.
#[inline(always)]
fn put_short_varint(dst: &mut [u8], at: usize, z: u32) -> usize {
    debug_assert!(z < 0x4000);
    if z < 0x80 {
        dst[at] = z as u8;
        at + 1
    } else {
        dst[at] = (z as u8) | 0x80;
        dst[at + 1] = (z >> 7) as u8;
        at + 2
    }
}

// ---------------------------------------------------------------------------
// Varints: Kafka's ByteUtils, i.e. protobuf base-128 with zigzag.

#[inline]
fn zigzag32(v: i32) -> u32 {
    ((v << 1) ^ (v >> 31)) as u32
}

#[inline]
fn zigzag64(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline]
fn unzigzag32(z: u32) -> i32 {
    ((z >> 1) as i32) ^ -((z & 1) as i32)
}

#[inline]
fn unzigzag64(z: u64) -> i64 {
    ((z >> 1) as i64) ^ -((z & 1) as i64)
}

/// Base-128 bytes of an already zigzagged value into `tmp`; returns the count.
#[inline]
fn varint_bytes(mut z: u64, tmp: &mut [u8; 10]) -> usize {
    let mut i = 0;
    while z >= 0x80 && i < 9 {
        tmp[i] = (z as u8) | 0x80;
        z >>= 7;
        i += 1;
    }
    tmp[i] = z as u8;
    i + 1
}

/// Encoded size of a zigzag varint (1..=5).
#[inline]
pub(crate) fn varint_size(v: i32) -> usize {
    let bits = 32 - (zigzag32(v) | 1).leading_zeros() as usize;
    // ceil(bits / 7) without a division: exact for 1..=64 bits.
    (bits * 9 + 64) / 64
}

/// Encoded size of a zigzag varlong (1..=10).
#[inline]
pub(crate) fn varlong_size(v: i64) -> usize {
    let bits = 64 - (zigzag64(v) | 1).leading_zeros() as usize;
    (bits * 9 + 64) / 64
}

/// Writes `v` as a zigzag varint at the start of `out`; returns the bytes
/// written. Panics if `out` is shorter than `varint_size(v)`.
pub(crate) fn write_varint(out: &mut [u8], v: i32) -> usize {
    let mut tmp = [0u8; 10];
    let n = varint_bytes(u64::from(zigzag32(v)), &mut tmp);
    out[..n].copy_from_slice(&tmp[..n]);
    n
}

/// Writes `v` as a zigzag varlong at the start of `out`; returns the bytes
/// written. Panics if `out` is shorter than `varlong_size(v)`.
pub(crate) fn write_varlong(out: &mut [u8], v: i64) -> usize {
    let mut tmp = [0u8; 10];
    let n = varint_bytes(zigzag64(v), &mut tmp);
    out[..n].copy_from_slice(&tmp[..n]);
    n
}

/// Reads a zigzag varint from the start of `buf`: `(value, bytes read)`.
///
/// Like Kafka, rejects a fifth byte with the continuation bit set and
/// silently drops the bits of the fifth byte that do not fit 32 bits.
pub(crate) fn read_varint(buf: &[u8]) -> Result<(i32, usize), &'static str> {
    let mut z: u32 = 0;
    for i in 0..5 {
        let Some(&b) = buf.get(i) else {
            return Err("truncated varint");
        };
        // Shifting out high bits is fine here: that is the overflow Kafka drops.
        z |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((unzigzag32(z), i + 1));
        }
    }
    Err("varint longer than 5 bytes")
}

/// Reads a zigzag varlong from the start of `buf`: `(value, bytes read)`.
/// Same leniency as [`read_varint`], at 10 bytes.
pub(crate) fn read_varlong(buf: &[u8]) -> Result<(i64, usize), &'static str> {
    let mut z: u64 = 0;
    for i in 0..10 {
        let Some(&b) = buf.get(i) else {
            return Err("truncated varlong");
        };
        z |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((unzigzag64(z), i + 1));
        }
    }
    Err("varlong longer than 10 bytes")
}

// ---------------------------------------------------------------------------
// Decoding

/// One decoded record; key/value/header values are zero-copy slices of the
/// batch [`Bytes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedRecord {
    /// Absolute offset (`base_offset + offsetDelta`).
    pub offset: i64,
    /// Absolute timestamp (`base_timestamp + timestampDelta`, or the batch's
    /// max timestamp for a LogAppendTime batch).
    pub timestamp: i64,
    /// The key; `None` is Kafka's null key.
    pub key: Option<Bytes>,
    /// The value; `None` is a tombstone.
    pub value: Option<Bytes>,
    /// Headers, in order.
    pub headers: Vec<Header>,
}

/// The checks both decoders make before the first record: the bytes are
/// exactly one whole batch, with a record count that can be true.
fn check_bounds(len: usize, header: &BatchHeader) -> Result<(), BatchError> {
    let total = header.total_len();
    if len < total {
        return Err(BatchError::Incomplete {
            needed: total,
            available: len,
        });
    }
    if len > total {
        return Err(BatchError::Invalid("bytes after the end of the batch"));
    }
    if header.records_count < 0 {
        return Err(BatchError::Invalid("negative record count"));
    }
    Ok(())
}

/// Iterates the records of one whole batch.
///
/// `batch` must be exactly the batch's `total_len` bytes. The CRC is not
/// checked here (use [`check`]), but the structure is re-validated as the
/// iterator goes: any malformation yields one `Err(BatchError::Invalid)` and
/// ends the iteration. A compressed batch yields
/// `Err(BatchError::UnsupportedCompression)` first.
///
/// Returns `Err` right away if the header is unusable: bad magic or length,
/// fewer bytes than the batch needs ([`BatchError::Incomplete`]), bytes after
/// its end, or a negative record count.
pub fn records(batch: &Bytes) -> Result<RecordIter, BatchError> {
    let header = parse_header(batch)?;
    check_bounds(batch.len(), &header)?;
    let pending = match header.compression() {
        0 => None,
        c if c <= MAX_CODEC => Some(BatchError::UnsupportedCompression(c)),
        _ => Some(BatchError::Invalid("unknown compression codec")),
    };
    let log_append_time =
        (header.attributes & LOG_APPEND_TIME_BIT != 0).then_some(header.max_timestamp);
    Ok(RecordIter {
        batch: batch.clone(),
        pos: BATCH_HEADER_LEN,
        remaining: header.records_count,
        base_offset: header.base_offset,
        base_timestamp: header.base_timestamp,
        log_append_time,
        pending,
        done: false,
    })
}

/// Iterator over a batch's records; see [`records`].
#[derive(Debug, Clone)]
pub struct RecordIter {
    batch: Bytes,
    pos: usize,
    remaining: i32,
    base_offset: i64,
    base_timestamp: i64,
    /// Kafka's LogAppendTime: the broker stamped the batch, and every record's
    /// timestamp is the batch's max timestamp whatever its delta says.
    log_append_time: Option<i64>,
    pending: Option<BatchError>,
    done: bool,
}

impl Iterator for RecordIter {
    type Item = Result<DecodedRecord, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if let Some(err) = self.pending.take() {
            self.done = true;
            return Some(Err(err));
        }
        if self.remaining == 0 {
            self.done = true;
            if self.pos != self.batch.len() {
                return Some(Err(BatchError::Invalid(
                    "bytes left after the last record (record count too small)",
                )));
            }
            return None;
        }
        match self.decode_one() {
            Ok(record) => {
                self.remaining -= 1;
                Some(Ok(record))
            }
            Err(err) => {
                self.done = true;
                Some(Err(err))
            }
        }
    }
}

impl FusedIterator for RecordIter {}

impl RecordIter {
    fn decode_one(&mut self) -> Result<DecodedRecord, BatchError> {
        let (f, end) = decode_fields(&self.batch, self.pos)?;
        let mut headers = Vec::with_capacity(f.header_count);
        for (key, value) in HeaderFields::new(&self.batch, f.headers.clone(), f.header_count) {
            // `decode_fields` validated every header, UTF-8 keys included.
            let key = std::str::from_utf8(&self.batch[key])
                .map_err(|_| BatchError::Invalid("header key is not UTF-8"))?
                .to_owned();
            headers.push(Header {
                key,
                value: value.map(|r| self.batch.slice(r)),
            });
        }
        self.pos = end;
        Ok(DecodedRecord {
            offset: self.base_offset.wrapping_add(i64::from(f.offset_delta)),
            timestamp: self
                .log_append_time
                .unwrap_or(self.base_timestamp.wrapping_add(f.timestamp_delta)),
            key: f.key.map(|r| self.batch.slice(r)),
            value: f.value.map(|r| self.batch.slice(r)),
            headers,
        })
    }
}

/// Where one record's fields lie in its batch.
#[derive(Debug, Clone)]
struct RecordFields {
    timestamp_delta: i64,
    offset_delta: i32,
    key: Option<Range<usize>>,
    value: Option<Range<usize>>,
    /// The encoded headers (after the count), already validated.
    headers: Range<usize>,
    header_count: usize,
}

/// Decodes and validates the record starting at `pos` in `batch`; returns
/// its fields and the position after it. Shared by the owning and the
/// borrowing iterators, so both accept exactly the same input.
#[inline]
fn decode_fields(batch: &[u8], pos: usize) -> Result<(RecordFields, usize), BatchError> {
    match decode_fast(batch, pos) {
        Some(f) => Ok((
            RecordFields {
                timestamp_delta: f.timestamp_delta,
                offset_delta: f.offset_delta,
                key: f.key.map(|k| range_in(batch, k)),
                value: f.value.map(|v| range_in(batch, v)),
                headers: f.end..f.end,
                header_count: 0,
            },
            f.end,
        )),
        // Anything the fast path declines goes through the full decoder,
        // which accepts exactly the same input and names the error.
        None => decode_fields_checked(batch, pos),
    }
}

/// Where `sub`, a subslice of `batch`, lies in it.
#[inline(always)]
fn range_in(batch: &[u8], sub: &[u8]) -> Range<usize> {
    let start = sub.as_ptr() as usize - batch.as_ptr() as usize;
    start..start + sub.len()
}

/// Takes a zigzag varint of 1 to 3 bytes (still zigzagged) off the front
/// of `rest`; `None` if it is truncated or longer (the checked decoder then
/// decides).
#[inline(always)]
fn short_varint(rest: &mut &[u8]) -> Option<u32> {
    match **rest {
        [b0, ref tail @ ..] if b0 < 0x80 => {
            *rest = tail;
            Some(u32::from(b0))
        }
        // b0 >= 0x80 here, and b1 >= 0x80 in the next arm.
        [b0, b1, ref tail @ ..] if b1 < 0x80 => {
            *rest = tail;
            Some(u32::from(b0 & 0x7f) | u32::from(b1) << 7)
        }
        [b0, b1, b2, ref tail @ ..] if b2 < 0x80 => {
            *rest = tail;
            Some(u32::from(b0 & 0x7f) | u32::from(b1 & 0x7f) << 7 | u32::from(b2) << 14)
        }
        _ => None,
    }
}

/// Takes a nullable field (zigzag length, then the bytes) off the front of
/// `rest`: `Some(None)` for null, `None` for anything the fast path declines.
#[inline(always)]
fn short_nullable<'b>(rest: &mut &'b [u8]) -> Option<Option<&'b [u8]>> {
    let z = short_varint(rest)?;
    if z == 1 {
        return Some(None); // -1
    }
    if z & 1 != 0 {
        return None; // negative, other than -1
    }
    let (field, tail) = rest.split_at_checked((z >> 1) as usize)?;
    *rest = tail;
    Some(Some(field))
}

/// What the fast decoder found.
#[derive(Clone, Copy)]
struct FastFields<'b> {
    timestamp_delta: i64,
    offset_delta: i32,
    key: Option<&'b [u8]>,
    value: Option<&'b [u8]>,
    /// Position after the record.
    end: usize,
}

/// The common case of `decode_fields_checked`: no headers and every varint
/// 1 to 3 bytes long. Returns `None` for anything else, valid or not, and
/// the caller falls back to the checked decoder; whatever it returns is
/// exactly what the checked decoder returns for the same bytes (a proptest
/// compares them on mutated batches).
#[inline(always)]
fn decode_fast(batch: &[u8], pos: usize) -> Option<FastFields<'_>> {
    let mut rest = batch.get(pos..)?;
    let len = short_varint(&mut rest)?;
    if len & 1 != 0 {
        return None; // negative record length
    }
    let body_at = batch.len() - rest.len();
    let (rec, _) = rest.split_at_checked((len >> 1) as usize)?;
    let end = body_at + rec.len();
    // Attributes (any value) first, a header count of 0 last. Reading the
    // last byte this early starts its cache miss (the record's far end)
    // while the fields are decoded.
    let [_, ref fields @ .., 0] = *rec else {
        return None;
    };
    let mut rec = fields;
    let timestamp_delta = unzigzag64(u64::from(short_varint(&mut rec)?));
    let offset_delta = unzigzag32(short_varint(&mut rec)?);
    let key = short_nullable(&mut rec)?;
    let value = short_nullable(&mut rec)?;
    // Nothing between the value and the header count.
    if !rec.is_empty() {
        return None;
    }
    Some(FastFields {
        timestamp_delta,
        offset_delta,
        key,
        value,
        end,
    })
}

fn decode_fields_checked(batch: &[u8], pos: usize) -> Result<(RecordFields, usize), BatchError> {
    let mut c = Cursor { buf: batch, pos };
    let len = c.varint()?;
    let start = c.pos;
    let len = usize::try_from(len).map_err(|_| BatchError::Invalid("negative record length"))?;
    if len > batch.len() - start {
        return Err(BatchError::Invalid(
            "record runs past the end of the batch (record count too large?)",
        ));
    }
    let end = start + len;
    // Bounding the cursor by the record's own length turns any field that
    // overruns it into an error, and the final position check catches
    // fields that stop short of it.
    c = Cursor {
        buf: &batch[..end],
        pos: start,
    };
    c.u8()?; // attributes: unused in v2
    let timestamp_delta = c.varlong()?;
    let offset_delta = c.varint()?;
    let key = c.nullable()?;
    let value = c.nullable()?;
    let header_count =
        usize::try_from(c.varint()?).map_err(|_| BatchError::Invalid("negative header count"))?;
    // A header takes at least 2 bytes; this also bounds later allocations.
    if header_count > c.remaining() / 2 {
        return Err(BatchError::Invalid("header count exceeds the record size"));
    }
    let headers_start = c.pos;
    for _ in 0..header_count {
        let key_len = usize::try_from(c.varint()?)
            .map_err(|_| BatchError::Invalid("negative header key length"))?;
        let key = c.take(key_len)?;
        std::str::from_utf8(&batch[key])
            .map_err(|_| BatchError::Invalid("header key is not UTF-8"))?;
        c.nullable()?;
    }
    if c.pos != end {
        return Err(BatchError::Invalid(
            "record length does not match its fields",
        ));
    }
    let fields = RecordFields {
        timestamp_delta,
        offset_delta,
        key,
        value,
        headers: headers_start..end,
        header_count,
    };
    Ok((fields, end))
}

/// Iterates validated encoded headers as (key range, value range).
#[derive(Debug, Clone)]
pub(crate) struct HeaderFields<'a> {
    cursor: Cursor<'a>,
    left: usize,
}

impl<'a> HeaderFields<'a> {
    fn new(batch: &'a [u8], headers: Range<usize>, count: usize) -> Self {
        HeaderFields {
            cursor: Cursor {
                buf: &batch[..headers.end],
                pos: headers.start,
            },
            left: count,
        }
    }
}

impl Iterator for HeaderFields<'_> {
    type Item = (Range<usize>, Option<Range<usize>>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // Validated by `decode_fields`: these reads cannot fail; stop if one does.
        let key_len = usize::try_from(self.cursor.varint().ok()?).ok()?;
        let key = self.cursor.take(key_len).ok()?;
        let value = self.cursor.nullable().ok()?;
        Some((key, value))
    }
}

/// One record borrowed from a fetched batch: no allocation, no reference
/// counting. Use [`crate::FetchedBatches::records`] to get them.
#[derive(Debug, Clone)]
pub struct RecordView<'a> {
    /// The record's offset.
    pub offset: u64,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// The key, if any.
    pub key: Option<&'a [u8]>,
    /// The value; `None` for a tombstone.
    pub value: Option<&'a [u8]>,
    /// The encoded headers after their count (validated), `header_count` of them.
    headers: &'a [u8],
    header_count: u32,
}

impl<'a> RecordView<'a> {
    /// Whether the record has any header.
    #[inline(always)]
    pub(crate) fn has_headers(&self) -> bool {
        self.header_count != 0
    }

    /// The headers, in order, as (key, value).
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, Option<&'a [u8]>)> + 'a {
        header_pairs(self.headers, self.header_count)
    }

    /// The encoded headers after their count, and the count: what
    /// [`header_pairs`] reads back (`ConsumerRecords` keeps their range).
    #[inline(always)]
    pub(crate) fn raw_headers(&self) -> (&'a [u8], u32) {
        (self.headers, self.header_count)
    }
}

/// The headers of a record as (key, value), from its encoded headers after
/// their count (validated when the record was decoded) and that count.
pub(crate) fn header_pairs(
    headers: &[u8],
    count: u32,
) -> impl Iterator<Item = (&str, Option<&[u8]>)> + '_ {
    HeaderFields::new(headers, 0..headers.len(), count as usize).map(move |(k, v)| {
        (
            std::str::from_utf8(&headers[k]).unwrap_or(""),
            v.map(|v| &headers[v]),
        )
    })
}

/// Borrowing iterator over the records of one whole, valid batch.
#[derive(Debug, Clone)]
pub(crate) struct RecordViews<'a> {
    batch: &'a [u8],
    pos: usize,
    remaining: i32,
    base_offset: i64,
    base_timestamp: i64,
    log_append_time: Option<i64>,
    /// Sink for the look-ahead loads of `next_fast`.
    ahead: u8,
}

/// Validates the structure of every record of one whole batch (`batch`
/// exactly its bytes, `header` its parsed header), once per process with
/// its CRC check (see `Segment::mark_verified`): every record decodes with
/// the checked decoder, the count matches, and the offsets go up strictly
/// from the base offset to at most the header's last offset. A batch that
/// passes can be read lazily (`ConsumerRecords`) and counted from its header
/// alone: decoding it again cannot fail and yields `records_count` records
/// at increasing offsets below `header.next_offset()`.
pub(crate) fn check_records(batch: &[u8], header: &BatchHeader) -> Result<(), BatchError> {
    if header.base_offset < 0
        || header.last_offset_delta < 0
        || header
            .base_offset
            .checked_add(i64::from(header.last_offset_delta))
            .is_none()
    {
        return Err(BatchError::Invalid("batch offsets out of range"));
    }
    let last = header.last_offset() as u64;
    let mut next = header.base_offset as u64;
    for r in record_views(batch, header)? {
        let r = r?;
        if r.offset < next || r.offset > last {
            return Err(BatchError::Invalid(
                "record offsets not increasing within the batch's range",
            ));
        }
        next = r.offset + 1;
    }
    Ok(())
}

/// Borrowing counterpart of [`records`]; `header` is the batch's parsed
/// header and `batch` exactly its bytes.
pub(crate) fn record_views<'a>(
    batch: &'a [u8],
    header: &BatchHeader,
) -> Result<RecordViews<'a>, BatchError> {
    // The same checks, in the same order and with the same errors, as
    // `records`, so the consumer (which decodes with this) reports exactly
    // what the owning decoder would.
    check_bounds(batch.len(), header)?;
    match header.compression() {
        0 => {}
        c if c <= MAX_CODEC => return Err(BatchError::UnsupportedCompression(c)),
        _ => return Err(BatchError::Invalid("unknown compression codec")),
    }
    Ok(RecordViews {
        batch,
        pos: BATCH_HEADER_LEN,
        remaining: header.records_count,
        base_offset: header.base_offset,
        base_timestamp: header.base_timestamp,
        log_append_time: (header.attributes & LOG_APPEND_TIME_BIT != 0)
            .then_some(header.max_timestamp),
        ahead: 0,
    })
}

/// See [`RecordViews::next_fast`].
const LOOK_AHEAD: usize = 4;
/// Records up to this size share cache lines, and the hardware prefetcher
/// follows them.
const LOOK_AHEAD_MIN_SIZE: usize = 256;

impl<'a> RecordViews<'a> {
    /// An iterator with nothing left.
    pub(crate) fn empty() -> Self {
        RecordViews {
            batch: &[],
            pos: 0,
            remaining: 0,
            base_offset: 0,
            base_timestamp: 0,
            log_append_time: None,
            ahead: 0,
        }
    }

    /// The next record if it is the common kind the fast decoder takes;
    /// `None` at the end, on a record it declines, and on errors: then
    /// [`next`](Iterator::next) (unchanged state) has the answer. Small
    /// enough to inline into the caller's loop.
    #[inline(always)]
    pub(crate) fn next_fast(&mut self) -> Option<RecordView<'a>> {
        if self.remaining <= 0 {
            return None;
        }
        let f = decode_fast(self.batch, self.pos)?;
        let size = f.end - self.pos;
        if size > LOOK_AHEAD_MIN_SIZE {
            // A load of the far end of the record LOOK_AHEAD records on,
            // assuming they are all this size: where records span many
            // cache lines each record's first line is only known once the
            // one before is read, a chain of misses no prefetcher follows.
            // This load starts the miss early (it is a plain, checked read;
            // its value only goes into `ahead`). 2.5x on 1 KiB records.
            let at = f.end.saturating_add(LOOK_AHEAD * size);
            self.ahead ^= self.batch.get(at).copied().unwrap_or(0);
        }
        self.pos = f.end;
        self.remaining -= 1;
        Some(RecordView {
            offset: self.base_offset.wrapping_add(i64::from(f.offset_delta)) as u64,
            timestamp: self.timestamp(f.timestamp_delta),
            key: f.key,
            value: f.value,
            headers: &[],
            header_count: 0,
        })
    }

    /// Byte position in the batch of the next record (after the last one
    /// returned): with the position before a call, the range of a record's
    /// whole encoding (length prefix included).
    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    /// Where the next record starts and how many are left: what
    /// [`resume`](Self::resume) takes to continue from here later.
    pub(crate) fn state(&self) -> (usize, i32) {
        (self.pos, self.remaining)
    }

    /// Continues from a [`state`](Self::state) taken from an iterator over
    /// the same batch bytes (the records before it are neither decoded nor
    /// checked again). A state that does not fit the batch ends the
    /// iteration at once with the checked decoder's error.
    pub(crate) fn resume(&mut self, (pos, remaining): (usize, i32)) {
        if pos <= self.batch.len() && (0..=self.remaining).contains(&remaining) {
            self.pos = pos;
            self.remaining = remaining;
        } else {
            self.pos = self.batch.len();
            self.remaining = 1; // `next` reports the missing record
        }
    }

    #[inline(always)]
    fn timestamp(&self, delta: i64) -> i64 {
        self.log_append_time
            .unwrap_or(self.base_timestamp.wrapping_add(delta))
    }
}

impl<'a> Iterator for RecordViews<'a> {
    type Item = Result<RecordView<'a>, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining <= 0 {
            if self.remaining == 0 && self.pos != self.batch.len() {
                self.remaining = -1;
                return Some(Err(BatchError::Invalid(
                    "bytes left after the last record (record count too small)",
                )));
            }
            return None;
        }
        if let Some(view) = self.next_fast() {
            return Some(Ok(view));
        }
        match decode_fields_checked(self.batch, self.pos) {
            Ok((f, end)) => {
                self.pos = end;
                self.remaining -= 1;
                let batch = self.batch;
                Some(Ok(RecordView {
                    offset: self.base_offset.wrapping_add(i64::from(f.offset_delta)) as u64,
                    timestamp: self.timestamp(f.timestamp_delta),
                    key: f.key.map(|r| &batch[r]),
                    value: f.value.map(|r| &batch[r]),
                    headers: &batch[f.headers],
                    // At most the record's length, itself below 2^31.
                    header_count: f.header_count as u32,
                }))
            }
            Err(e) => {
                self.remaining = -1;
                Some(Err(e))
            }
        }
    }
}

/// What `FetchedBatches::take` found in fetched batches: the records a
/// lazy reader returns from them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Taken {
    /// Records before this offset are skipped.
    from: u64,
    /// Where to start in the first batch (the decoder state of an earlier
    /// read that stopped inside it).
    start: Option<(usize, i32)>,
    /// How many records, from there on.
    count: usize,
}

impl Taken {
    pub(crate) fn new(from: u64, start: Option<(usize, i32)>, count: usize) -> Self {
        Taken { from, start, count }
    }

    pub(crate) fn from(&self) -> u64 {
        self.from
    }

    pub(crate) fn start(&self) -> Option<(usize, i32)> {
        self.start
    }

    pub(crate) fn count(&self) -> usize {
        self.count
    }
}

/// The records `FetchedBatches::take` counted in `bytes` (the fetched
/// batches), borrowed, decoded as they are asked for. Trusts the batches:
/// `take` read them through `BatchWalk`, which checked each one's CRC and
/// records ([`check_records`]) once, and the bytes of a `Bytes` never
/// change. On a decode failure, which that check rules out, it ends early
/// rather than panic (a debug build asserts).
#[derive(Clone)]
pub(crate) struct PartRecords<'a> {
    bytes: &'a [u8],
    /// Byte position of the next batch in `bytes`.
    position: usize,
    views: RecordViews<'a>,
    /// Records before this offset are skipped (as `visit` skips them).
    next: u64,
    /// The current batch's `next_offset()`, for `next` once it is done.
    batch_end: u64,
    /// Records still to return.
    left: usize,
    /// A record `refill` decoded, next to return.
    pending: Option<RecordView<'a>>,
}

impl<'a> PartRecords<'a> {
    pub(crate) fn new(bytes: &'a [u8], taken: &Taken) -> Self {
        let mut it = PartRecords {
            bytes,
            position: 0,
            views: RecordViews::empty(),
            next: taken.from,
            batch_end: taken.from,
            left: taken.count,
            pending: None,
        };
        if taken.count > 0 && it.next_batch() {
            if let Some(state) = taken.start {
                it.views.resume(state);
            }
        }
        it
    }

    /// Moves to the next batch; false at the end of the bytes or on bytes
    /// that are not a batch (ruled out by the check `take` relied on).
    #[cold]
    #[inline(never)]
    fn next_batch(&mut self) -> bool {
        self.next = self.next.max(self.batch_end);
        let Some(rest) = self.bytes.get(self.position..) else {
            return self.broken();
        };
        let Ok(header) = parse_header(rest) else {
            return self.broken();
        };
        let end = self.position.saturating_add(header.total_len());
        let Some(batch) = self.bytes.get(self.position..end) else {
            return self.broken();
        };
        match record_views(batch, &header) {
            Ok(views) => {
                self.views = views;
                self.position = end;
                self.batch_end = header.next_offset() as u64;
                true
            }
            Err(_) => self.broken(),
        }
    }

    /// Ends the iteration on bytes the check before `take` ruled out.
    #[cold]
    fn broken(&mut self) -> bool {
        debug_assert!(false, "a checked batch failed to decode");
        self.left = 0;
        false
    }

    /// Leaves the next record in `pending` when the fast decoder declined
    /// it (headers, large fields, the end of a batch): through the checked
    /// decoder, moving to the next batch as needed. False at the end.
    /// Out of line, and its record goes through `self`, so the record `next`
    /// returns from the fast decoder stays in registers (a record returned
    /// by an out-of-line call comes through the stack, and merging the two
    /// stalls every record on a store-to-load forward).
    #[cold]
    #[inline(never)]
    fn refill(&mut self) -> bool {
        loop {
            match self.views.next() {
                Some(Ok(r)) => {
                    self.pending = Some(r);
                    return true;
                }
                Some(Err(_)) => return self.broken(),
                None => {
                    if !self.next_batch() {
                        return false;
                    }
                    if self.views.remaining > 0 {
                        return true; // the fast decoder tries it first
                    }
                }
            }
        }
    }
}

impl<'a> Iterator for PartRecords<'a> {
    type Item = RecordView<'a>;

    #[inline(always)] // see `RecordsIter::next`
    fn next(&mut self) -> Option<RecordView<'a>> {
        while self.left > 0 {
            let r = match self.views.next_fast() {
                Some(r) => r,
                None => {
                    if self.pending.is_none() && !self.refill() {
                        return None;
                    }
                    match self.pending.take() {
                        Some(r) => r,
                        None => continue,
                    }
                }
            };
            if r.offset < self.next {
                continue; // before the offset asked for
            }
            self.next = r.offset + 1;
            self.left -= 1;
            return Some(r);
        }
        None
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.left))
    }
}

/// Bounded reader over one record; every read past `buf` is an error.
#[derive(Debug, Clone)]
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    #[inline]
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    #[inline]
    fn u8(&mut self) -> Result<u8, BatchError> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or(BatchError::Invalid("record too short"))?;
        self.pos += 1;
        Ok(b)
    }

    #[inline]
    fn varint(&mut self) -> Result<i32, BatchError> {
        // Most fields (lengths under 64, deltas 0..63) fit in one byte.
        if let Some(&b) = self.buf.get(self.pos) {
            if b < 0x80 {
                self.pos += 1;
                return Ok(unzigzag32(u32::from(b)));
            }
        }
        let (v, n) = read_varint(&self.buf[self.pos..]).map_err(BatchError::Invalid)?;
        self.pos += n;
        Ok(v)
    }

    #[inline]
    fn varlong(&mut self) -> Result<i64, BatchError> {
        if let Some(&b) = self.buf.get(self.pos) {
            if b < 0x80 {
                self.pos += 1;
                return Ok(unzigzag64(u64::from(b)));
            }
        }
        let (v, n) = read_varlong(&self.buf[self.pos..]).map_err(BatchError::Invalid)?;
        self.pos += n;
        Ok(v)
    }

    #[inline]
    fn take(&mut self, len: usize) -> Result<Range<usize>, BatchError> {
        if len > self.remaining() {
            return Err(BatchError::Invalid("field runs past the end of its record"));
        }
        let start = self.pos;
        self.pos += len;
        Ok(start..self.pos)
    }

    /// A length-prefixed field where -1 means null. Kafka reads any negative
    /// length as null; we only accept the -1 it writes.
    #[inline]
    fn nullable(&mut self) -> Result<Option<Range<usize>>, BatchError> {
        match self.varint()? {
            -1 => Ok(None),
            len => {
                let len = usize::try_from(len)
                    .map_err(|_| BatchError::Invalid("negative field length"))?;
                self.take(len).map(Some)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: i64 = 1_700_000_000_300;

    fn encode(base_offset: i64, records: &[Record], now_ms: i64) -> (Vec<u8>, EncodedBatch) {
        let mut out = vec![0u8; encoded_len(records, now_ms)];
        let summary = encode_batch(&mut out, base_offset, records, now_ms);
        (out, summary)
    }

    fn decode_all(batch: &[u8]) -> Result<Vec<DecodedRecord>, BatchError> {
        records(&Bytes::copy_from_slice(batch))?.collect()
    }

    fn fix_crc(batch: &mut [u8]) {
        let crc = crc32c::crc32c(&batch[CRC_FROM..]);
        batch[CRC_AT..CRC_FROM].copy_from_slice(&crc.to_be_bytes());
    }

    fn hex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits
            .chunks(2)
            .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
            .collect()
    }

    fn sample() -> Vec<Record> {
        vec![
            Record::new("hello")
                .key("k")
                .header("h", "v")
                .timestamp(NOW - 300),
            Record::tombstone("gone"),
            Record {
                headers: vec![Header {
                    key: "null".into(),
                    value: None,
                }],
                timestamp: Some(NOW - 1_000),
                ..Record::default()
            },
        ]
    }

    // --- varints -----------------------------------------------------------

    #[test]
    fn varint_known_encodings() {
        let cases: &[(i32, &[u8])] = &[
            (0, &[0x00]),
            (-1, &[0x01]),
            (1, &[0x02]),
            (-2, &[0x03]),
            (63, &[0x7e]),
            (-64, &[0x7f]),
            (64, &[0x80, 0x01]),
            (300, &[0xd8, 0x04]),
            (i32::MAX, &[0xfe, 0xff, 0xff, 0xff, 0x0f]),
            (i32::MIN, &[0xff, 0xff, 0xff, 0xff, 0x0f]),
        ];
        for &(v, want) in cases {
            let mut buf = [0u8; 5];
            let n = write_varint(&mut buf, v);
            assert_eq!(&buf[..n], want, "encode {v}");
            assert_eq!(varint_size(v), want.len(), "size {v}");
            assert_eq!(read_varint(want), Ok((v, want.len())), "decode {v}");
        }
    }

    #[test]
    fn varlong_known_encodings() {
        let mut max = vec![0xfe];
        max.extend([0xff; 8]);
        max.push(0x01);
        let mut min = vec![0xff; 9];
        min.push(0x01);
        let cases: Vec<(i64, Vec<u8>)> = vec![
            (0, vec![0x00]),
            (-1, vec![0x01]),
            (1, vec![0x02]),
            (300, vec![0xd8, 0x04]),
            (-5, vec![0x09]),
            (i64::MAX, max),
            (i64::MIN, min),
        ];
        for (v, want) in cases {
            let mut buf = [0u8; 10];
            let n = write_varlong(&mut buf, v);
            assert_eq!(&buf[..n], &want[..], "encode {v}");
            assert_eq!(varlong_size(v), want.len(), "size {v}");
            assert_eq!(read_varlong(&want), Ok((v, want.len())), "decode {v}");
        }
    }

    #[test]
    fn varint_sizes_at_byte_boundaries() {
        // zigzag(v) for v >= 0 is 2v: a new byte every 7 bits of 2v.
        for (v, size) in [
            (63, 1),
            (64, 2),
            (8191, 2),
            (8192, 3),
            (1 << 20, 4),
            (1 << 27, 5),
        ] {
            assert_eq!(varint_size(v), size, "{v}");
            assert_eq!(varint_size(-v - 1), size, "{}", -v - 1);
        }
        assert_eq!(varlong_size(1 << 62), 10);
        assert_eq!(varlong_size((1 << 55) - 1), 8);
    }

    #[test]
    fn varint_decode_rejects_long_and_truncated() {
        assert_eq!(read_varint(&[0x80; 5]), Err("varint longer than 5 bytes"));
        assert_eq!(read_varint(&[0x80; 6]), Err("varint longer than 5 bytes"));
        assert_eq!(read_varint(&[]), Err("truncated varint"));
        assert_eq!(read_varint(&[0xd8]), Err("truncated varint"));
        assert_eq!(
            read_varlong(&[0x80; 10]),
            Err("varlong longer than 10 bytes")
        );
        assert_eq!(read_varlong(&[0xff; 9]), Err("truncated varlong"));
        // Kafka drops the bits of the last byte that overflow, it does not reject them.
        assert_eq!(
            read_varint(&[0xff, 0xff, 0xff, 0xff, 0x7f]),
            Ok((i32::MIN, 5))
        );
        // Trailing bytes after the varint are not consumed.
        assert_eq!(read_varint(&[0x02, 0xff]), Ok((1, 1)));
    }

    proptest! {
        #[test]
        fn varint_roundtrip(v: i32) {
            let mut buf = [0u8; 5];
            let n = write_varint(&mut buf, v);
            prop_assert_eq!(n, varint_size(v));
            prop_assert_eq!(read_varint(&buf[..n]), Ok((v, n)));
        }

        #[test]
        fn varlong_roundtrip(v: i64) {
            let mut buf = [0u8; 10];
            let n = write_varlong(&mut buf, v);
            prop_assert_eq!(n, varlong_size(v));
            prop_assert_eq!(read_varlong(&buf[..n]), Ok((v, n)));
        }
    }

    // --- round trip --------------------------------------------------------

    fn arb_bytes(max: usize) -> impl Strategy<Value = Option<Bytes>> {
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from))
    }

    fn arb_record() -> impl Strategy<Value = Record> {
        let header = (".{0,12}", arb_bytes(40)).prop_map(|(key, value)| Header { key, value });
        let timestamp = prop_oneof![
            Just(None),
            (-5_000i64..5_000).prop_map(|d| Some(NOW + d)),
            any::<i64>().prop_map(Some),
        ];
        (
            arb_bytes(300),
            arb_bytes(300),
            proptest::collection::vec(header, 0..4),
            timestamp,
        )
            .prop_map(|(key, value, headers, timestamp)| Record {
                key,
                value,
                headers,
                timestamp,
                partition: None,
            })
    }

    proptest! {
        #[test]
        fn roundtrip(
            recs in proptest::collection::vec(arb_record(), 1..20),
            base_offset: i64,
        ) {
            let (bytes, summary) = encode(base_offset, &recs, NOW);
            prop_assert_eq!(summary.len, bytes.len());
            prop_assert_eq!(summary.last_offset_delta as usize, recs.len() - 1);

            let header = check(&bytes).unwrap();
            prop_assert_eq!(header.total_len(), bytes.len());
            prop_assert_eq!(header.base_offset, base_offset);
            prop_assert_eq!(header.records_count as usize, recs.len());
            prop_assert_eq!(header.last_offset(), base_offset.wrapping_add(recs.len() as i64 - 1));
            prop_assert_eq!(header.base_timestamp, summary.base_timestamp);
            prop_assert_eq!(header.max_timestamp, summary.max_timestamp);
            let times: Vec<i64> = recs.iter().map(|r| r.timestamp.unwrap_or(NOW)).collect();
            prop_assert_eq!(summary.base_timestamp, times[0]);
            prop_assert_eq!(summary.max_timestamp, *times.iter().max().unwrap());

            let decoded = decode_all(&bytes).unwrap();
            let expected: Vec<DecodedRecord> = recs
                .iter()
                .enumerate()
                .map(|(i, r)| DecodedRecord {
                    offset: base_offset.wrapping_add(i as i64),
                    timestamp: times[i],
                    key: r.key.clone(),
                    value: r.value.clone(),
                    headers: r.headers.clone(),
                })
                .collect();
            prop_assert_eq!(decoded, expected);
        }
    }

    fn arb_fast_path_record() -> impl Strategy<Value = Record> {
        // Around every boundary of the fast path: 1- and 2-byte value and
        // record lengths, the 4 KiB value limit, 1-byte timestamp deltas.
        let len = prop_oneof![0usize..130, 4000usize..4200];
        let timestamp = prop_oneof![Just(None), (-70i64..70).prop_map(|d| Some(NOW + d))];
        (
            len,
            timestamp,
            proptest::option::weighted(0.1, proptest::collection::vec(any::<u8>(), 0..3)),
        )
            .prop_map(|(len, timestamp, key)| Record {
                key: key.map(Bytes::from),
                value: Some(Bytes::from(vec![0xa5; len])),
                headers: Vec::new(),
                timestamp,
                partition: None,
            })
    }

    proptest! {
        /// The fast path for plain records writes exactly the bytes of the
        /// field-by-field encoder.
        #[test]
        fn plain_fast_path_matches_the_general_encoder(
            recs in proptest::collection::vec(arb_fast_path_record(), 1..150),
        ) {
            let len = encoded_len(&recs, NOW);
            let (mut fast, mut general) = (vec![0u8; len], vec![0u8; len]);
            let a = encode_batch_with::<_, true>(&mut fast, 7, &recs, NOW);
            let b = encode_batch_with::<_, false>(&mut general, 7, &recs, NOW);
            prop_assert_eq!(a.len, len, "encoded_len disagrees with the encoder");
            prop_assert_eq!(a, b);
            prop_assert_eq!(fast, general);
        }
    }

    #[test]
    fn plain_fast_path_matches_at_two_byte_offset_deltas() {
        // Offset deltas 63/64 and 8191/8192 change the varint's width.
        let recs: Vec<Record> = (0..8300).map(|i| Record::new(vec![1u8; i % 3])).collect();
        let len = encoded_len(&recs, NOW);
        let (mut fast, mut general) = (vec![0u8; len], vec![0u8; len]);
        encode_batch_with::<_, true>(&mut fast, 0, &recs, NOW);
        encode_batch_with::<_, false>(&mut general, 0, &recs, NOW);
        assert!(
            fast == general,
            "fast path differs from the general encoder"
        );
        assert_eq!(decode_all(&fast).unwrap().len(), 8300);
    }

    #[test]
    fn decoded_fields_are_views_of_the_batch() {
        let (bytes, _) = encode(0, &[Record::new("value").key("key")], NOW);
        let batch = Bytes::from(bytes);
        let r = records(&batch).unwrap().next().unwrap().unwrap();
        let range = batch.as_ptr_range();
        assert!(range.contains(&r.key.unwrap().as_ptr()));
        assert!(range.contains(&r.value.unwrap().as_ptr()));
    }

    // --- golden bytes ------------------------------------------------------

    /// Big-endian writer for hand-assembling expected bytes, independent of
    /// the encoder's code path.
    #[derive(Default)]
    struct W(Vec<u8>);
    impl W {
        fn i8(&mut self, v: i8) -> &mut Self {
            self.0.push(v as u8);
            self
        }
        fn i16(&mut self, v: i16) -> &mut Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn i32(&mut self, v: i32) -> &mut Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn i64(&mut self, v: i64) -> &mut Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn raw(&mut self, b: &[u8]) -> &mut Self {
            self.0.extend_from_slice(b);
            self
        }
    }

    #[test]
    fn golden_hand_assembled_batch() {
        let t0 = 1_700_000_000_000i64;
        let now = t0 + 300;
        let big = vec![0xabu8; 200];
        let recs = vec![
            Record::new("hello").key("k").header("h", "v").timestamp(t0),
            Record {
                headers: vec![Header {
                    key: "trace".into(),
                    value: None,
                }],
                ..Record::default()
            },
            Record {
                key: Some(Bytes::new()),
                value: Some(Bytes::from(big.clone())),
                timestamp: Some(t0 - 5),
                ..Record::default()
            },
        ];

        // Record bodies, varints written out by hand (zigzag: n >= 0 -> 2n, -1 -> 1).
        let mut r0 = W::default();
        r0.raw(&[0x00]) // attributes
            .raw(&[0x00]) // timestampDelta 0
            .raw(&[0x00]) // offsetDelta 0
            .raw(&[0x02])
            .raw(b"k") // key, length 1
            .raw(&[0x0a])
            .raw(b"hello") // value, length 5
            .raw(&[0x02]) // 1 header
            .raw(&[0x02])
            .raw(b"h")
            .raw(&[0x02])
            .raw(b"v");
        assert_eq!(r0.0.len(), 16);
        let mut r1 = W::default();
        r1.raw(&[0x00])
            .raw(&[0xd8, 0x04]) // timestampDelta +300 (now_ms)
            .raw(&[0x02]) // offsetDelta 1
            .raw(&[0x01]) // null key
            .raw(&[0x01]) // null value
            .raw(&[0x02]) // 1 header
            .raw(&[0x0a])
            .raw(b"trace")
            .raw(&[0x01]); // null header value
        assert_eq!(r1.0.len(), 14);
        let mut r2 = W::default();
        r2.raw(&[0x00])
            .raw(&[0x09]) // timestampDelta -5
            .raw(&[0x04]) // offsetDelta 2
            .raw(&[0x00]) // empty (not null) key
            .raw(&[0x90, 0x03])
            .raw(&big) // value, length 200
            .raw(&[0x00]); // no headers
        assert_eq!(r2.0.len(), 207);

        let mut b = W::default();
        b.i64(42) // baseOffset
            .i32(290) // batchLength = 302 - 12
            .i32(0) // partitionLeaderEpoch
            .i8(2) // magic
            .raw(&[0; 4]) // crc, filled below
            .i16(0) // attributes
            .i32(2) // lastOffsetDelta
            .i64(t0) // baseTimestamp
            .i64(now) // maxTimestamp
            .i64(-1) // producerId
            .i16(-1) // producerEpoch
            .i32(-1) // baseSequence
            .i32(3); // recordsCount
        assert_eq!(b.0.len(), 61);
        b.raw(&[0x20]).raw(&r0.0); // length 16
        b.raw(&[0x1c]).raw(&r1.0); // length 14
        b.raw(&[0x9e, 0x03]).raw(&r2.0); // length 207
        let mut expected = b.0;
        assert_eq!(expected.len(), 302);
        let crc = crc32c::crc32c(&expected[21..]);
        expected[17..21].copy_from_slice(&crc.to_be_bytes());

        assert_eq!(encoded_len(&recs, now), 302);
        let (got, summary) = encode(42, &recs, now);
        assert_eq!(got, expected);
        assert_eq!(
            summary,
            EncodedBatch {
                len: 302,
                base_timestamp: t0,
                max_timestamp: now,
                last_offset_delta: 2
            }
        );
        assert_eq!(check(&got).unwrap().crc, crc);
    }

    #[test]
    fn crc_is_castagnoli() {
        // The CRC-32C check value; plain CRC-32 (IEEE) would give 0xcbf43926.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
    }

    /// Captured from librdkafka producing one record (empty key, value
    /// "hello kafka", header foo=bar). Source: influxdata/rskafka,
    /// src/protocol/record.rs, `test_decode_fixture_nocompression`.
    const RDKAFKA_BATCH: &str = "
        00000000 00000000 0000004b 00000000 02 2724fecd 0000 00000000
        0000000061d59b77 0000000061d59b77 ffffffffffffffff ffff ffffffff 00000001
        32 00 00 00 00 16 68656c6c6f206b61666b61 02 06 666f6f 06 626172";

    #[test]
    fn decodes_and_reencodes_rdkafka_batch() {
        let bytes = hex(RDKAFKA_BATCH);
        let header = check(&bytes).unwrap();
        assert_eq!(header.total_len(), bytes.len());
        assert_eq!(header.partition_leader_epoch, 0);
        let decoded = decode_all(&bytes).unwrap();
        let record = Record::new("hello kafka")
            .key(Bytes::new())
            .header("foo", "bar")
            .timestamp(1_641_388_919);
        assert_eq!(
            decoded,
            vec![DecodedRecord {
                offset: 0,
                timestamp: 1_641_388_919,
                key: Some(Bytes::new()),
                value: Some(Bytes::from_static(b"hello kafka")),
                headers: vec![Header::new("foo", "bar")],
            }]
        );
        assert_eq!(encode(0, &[record], 0).0, bytes);
    }

    /// Captured from librdkafka (driven by InfluxDB IOx): null key, 103-byte
    /// protobuf value, two headers; multi-byte length varints. Source:
    /// influxdata/rskafka, src/protocol/record.rs, `test_decode_fixture_null_key`.
    const RDKAFKA_NULL_KEY_BATCH: &str = "
        00 00 00 00 00 00 00 00 00 00 01 1a 00 00 00 00
        02 67 98 b9 54 00 00 00 00 00 00 00 00 01 7e be
        dc 91 f6 00 00 01 7e be dc 91 f6 ff ff ff ff ff
        ff ff ff ff ff ff ff ff ff 00 00 00 01 ce 03 00
        00 00 01 ce 01 0a 65 0a 2f 74 65 73 74 5f 74 6f
        70 69 63 5f 33 37 33 39 38 66 38 64 2d 39 35 66
        38 2d 34 34 65 65 2d 38 33 61 34 2d 34 64 30 63
        35 39 32 62 34 34 36 64 12 32 0a 03 75 70 63 12
        17 0a 04 75 73 65 72 10 03 1a 0a 12 08 00 00 00
        00 00 00 f0 3f 22 01 00 12 10 0a 04 74 69 6d 65
        10 04 1a 03 0a 01 64 22 01 00 18 01 04 18 63 6f
        6e 74 65 6e 74 2d 74 79 70 65 a4 01 61 70 70 6c
        69 63 61 74 69 6f 6e 2f 78 2d 70 72 6f 74 6f 62
        75 66 3b 20 73 63 68 65 6d 61 3d 22 69 6e 66 6c
        75 78 64 61 74 61 2e 69 6f 78 2e 77 72 69 74 65
        5f 62 75 66 66 65 72 2e 76 31 2e 57 72 69 74 65
        42 75 66 66 65 72 50 61 79 6c 6f 61 64 22 1a 69
        6f 78 2d 6e 61 6d 65 73 70 61 63 65 12 6e 61 6d
        65 73 70 61 63 65";

    #[test]
    fn decodes_and_reencodes_rdkafka_null_key_batch() {
        let bytes = hex(RDKAFKA_NULL_KEY_BATCH);
        assert_eq!(bytes.len(), 294);
        check(&bytes).unwrap();
        let decoded = decode_all(&bytes).unwrap();
        assert_eq!(decoded.len(), 1);
        let r = &decoded[0];
        assert_eq!(
            (r.offset, r.timestamp, r.key.clone()),
            (0, 1_643_879_633_398, None)
        );
        let value = r.value.clone().unwrap();
        assert_eq!(value.len(), 103);
        assert_eq!((value[0], value[102]), (0x0a, 0x01));
        let keys: Vec<&str> = r.headers.iter().map(|h| h.key.as_str()).collect();
        assert_eq!(keys, ["content-type", "iox-namespace"]);
        assert_eq!(r.headers[1].value.as_deref(), Some(&b"namespace"[..]));
        assert_eq!(
            r.headers[0].value.as_deref(),
            Some(&br#"application/x-protobuf; schema="influxdata.iox.write_buffer.v1.WriteBufferPayload""#[..])
        );
        let record = Record {
            key: None,
            value: Some(value),
            headers: r.headers.clone(),
            timestamp: Some(r.timestamp),
            partition: None,
        };
        assert_eq!(encode(0, &[record], 0).0, bytes);
    }

    /// Produced by the official Java client (snappy, two records) and fetched
    /// back from a Kafka broker. Source: influxdata/rskafka,
    /// src/protocol/record.rs, `test_decode_fixture_snappy_java`.
    const JAVA_SNAPPY_BATCH: &str = "
        00000000000000000000008c00000000 02 791e2dce 0002 00000001
        0000017f07257ab1 0000017f07257ab1 ffffffffffffffff ffff ffffffff 00000002
        82534e41505059000000000100000001000000
        47ff011cfc01000000c80178fe01008a
        01006416 68656c6c6f206b61666b6102
        06666f6f06626172fa01000002fe8000
        9680004c14736f6d652076616c756502
        06666f6f06626172";

    #[test]
    fn java_compressed_batch_passes_check_but_is_unsupported() {
        let bytes = hex(JAVA_SNAPPY_BATCH);
        assert_eq!(bytes.len(), 152);
        let header = check(&bytes).unwrap();
        assert_eq!(header.compression(), 2);
        assert_eq!((header.records_count, header.last_offset_delta), (2, 1));
        assert_eq!(header.next_offset(), 2);
        let mut it = records(&Bytes::from(bytes)).unwrap();
        assert_eq!(it.next(), Some(Err(BatchError::UnsupportedCompression(2))));
        assert_eq!(it.next(), None);
    }

    // --- CRC and corruption ------------------------------------------------

    #[test]
    fn any_bit_flip_after_crc_start_is_caught() {
        let (good, _) = encode(7, &sample(), NOW);
        for byte in CRC_FROM..good.len() {
            for bit in 0..8 {
                let mut bad = good.clone();
                bad[byte] ^= 1 << bit;
                assert!(
                    matches!(check(&bad), Err(BatchError::CrcMismatch { .. })),
                    "byte {byte} bit {bit}"
                );
            }
        }
    }

    #[test]
    fn bit_flips_in_crc_magic_and_length_are_caught() {
        let (good, _) = encode(7, &sample(), NOW);
        for byte in LENGTH_AT..EPOCH_AT {
            for bit in 0..8 {
                let mut bad = good.clone();
                bad[byte] ^= 1 << bit;
                assert!(check(&bad).is_err(), "length byte {byte} bit {bit}");
            }
        }
        for bit in 0..8 {
            let mut bad = good.clone();
            bad[MAGIC_AT] ^= 1 << bit;
            assert!(
                matches!(check(&bad), Err(BatchError::Invalid(_))),
                "magic bit {bit}"
            );
        }
        for byte in CRC_AT..CRC_FROM {
            for bit in 0..8 {
                let mut bad = good.clone();
                bad[byte] ^= 1 << bit;
                assert!(matches!(check(&bad), Err(BatchError::CrcMismatch { .. })));
            }
        }
    }

    #[test]
    fn base_offset_and_leader_epoch_are_not_covered_by_crc() {
        let (good, _) = encode(7, &sample(), NOW);
        for byte in (0..LENGTH_AT).chain(EPOCH_AT..MAGIC_AT) {
            for bit in 0..8 {
                let mut flipped = good.clone();
                flipped[byte] ^= 1 << bit;
                assert!(check(&flipped).is_ok(), "byte {byte} bit {bit}");
            }
        }
    }

    #[test]
    fn set_base_offset_keeps_batch_valid() {
        let (mut bytes, _) = encode(7, &sample(), NOW);
        set_base_offset(&mut bytes, 1_000_000);
        let header = check(&bytes).unwrap();
        assert_eq!(header.base_offset, 1_000_000);
        let offsets: Vec<i64> = decode_all(&bytes)
            .unwrap()
            .iter()
            .map(|r| r.offset)
            .collect();
        assert_eq!(offsets, [1_000_000, 1_000_001, 1_000_002]);
    }

    /// A rebuilt batch keeps the retained records' offsets, timestamps and
    /// bytes, the original last offset, and passes the CRC check.
    #[test]
    fn rebuild_batch_keeps_offsets_and_is_valid() {
        let (bytes, _) = encode(7, &sample(), NOW);
        let header = check(&bytes).unwrap();
        let all = decode_all(&bytes).unwrap();
        // Keep only the last record: its raw bytes are the batch's tail.
        let mut views = record_views(&bytes, &header).unwrap();
        let mut ranges = Vec::new();
        loop {
            let from = views.position();
            match views.next() {
                Some(r) => {
                    r.unwrap();
                    ranges.push(from..views.position());
                }
                None => break,
            }
        }
        let kept = &bytes[ranges[2].clone()];
        let mut out = vec![0xAA]; // appends after what is there
        rebuild_batch(&mut out, &bytes, kept, 1, all[2].timestamp);
        let rebuilt = &out[1..];
        let h = check(rebuilt).unwrap();
        assert_eq!(h.base_offset, 7);
        assert_eq!(h.last_offset(), header.last_offset());
        assert_eq!(h.records_count, 1);
        assert_eq!(h.max_timestamp, all[2].timestamp);
        assert_eq!(decode_all(rebuilt).unwrap(), [all[2].clone()]);
    }

    #[test]
    fn every_prefix_is_incomplete() {
        let (good, _) = encode(7, &sample(), NOW);
        for len in 0..good.len() {
            let want = BatchError::Incomplete {
                needed: if len < BATCH_HEADER_LEN {
                    BATCH_HEADER_LEN
                } else {
                    good.len()
                },
                available: len,
            };
            assert_eq!(check(&good[..len]), Err(want.clone()), "prefix {len}");
            assert_eq!(
                records(&Bytes::copy_from_slice(&good[..len])).err(),
                Some(want)
            );
        }
        assert!(check(&good).is_ok());
    }

    #[test]
    fn check_ignores_bytes_after_the_batch_but_records_rejects_them() {
        let (mut bytes, _) = encode(7, &sample(), NOW);
        let len = bytes.len();
        bytes.extend_from_slice(b"next batch");
        assert_eq!(check(&bytes).unwrap().total_len(), len);
        assert!(matches!(decode_all(&bytes), Err(BatchError::Invalid(_))));
    }

    #[test]
    fn parse_header_rejects_bad_magic_and_short_length() {
        let (good, _) = encode(7, &sample(), NOW);
        let mut bad = good.clone();
        bad[MAGIC_AT] = 1;
        assert!(matches!(parse_header(&bad), Err(BatchError::Invalid(_))));
        for len in [-1i32, 0, 48, i32::MIN] {
            let mut bad = good.clone();
            bad[LENGTH_AT..EPOCH_AT].copy_from_slice(&len.to_be_bytes());
            assert!(
                matches!(parse_header(&bad), Err(BatchError::Invalid(_))),
                "{len}"
            );
        }
        // 49 is an empty batch: header only.
        let mut empty = good[..BATCH_HEADER_LEN].to_vec();
        empty[LENGTH_AT..EPOCH_AT].copy_from_slice(&49i32.to_be_bytes());
        empty[RECORDS_COUNT_AT..].copy_from_slice(&0i32.to_be_bytes());
        fix_crc(&mut empty);
        assert_eq!(check(&empty).unwrap().total_len(), BATCH_HEADER_LEN);
        assert_eq!(decode_all(&empty), Ok(vec![]));
    }

    #[test]
    fn header_helpers() {
        let (bytes, _) = encode(100, &sample(), NOW);
        let mut h = parse_header(&bytes).unwrap();
        assert_eq!(h.total_len(), bytes.len());
        assert_eq!((h.last_offset(), h.next_offset()), (102, 103));
        assert_eq!((h.compression(), h.is_control()), (0, false));
        assert_eq!(
            (
                h.partition_leader_epoch,
                h.producer_id,
                h.producer_epoch,
                h.base_sequence
            ),
            (0, -1, -1, -1)
        );
        h.attributes = 0x20 | 0x10 | 0x08 | 0x04;
        assert_eq!((h.compression(), h.is_control()), (4, true));
    }

    // --- structural validation while iterating -----------------------------

    /// One record "hello" (key "k", header h=v) at offset 0: record bytes start at 61.
    fn one_record() -> Vec<u8> {
        encode(
            0,
            &[Record::new("hello")
                .key("k")
                .header("h", "v")
                .timestamp(NOW)],
            NOW,
        )
        .0
    }

    /// Replaces the record section and fixes length, count and CRC, so only
    /// the record structure is wrong.
    fn with_records(body: &[u8], count: i32) -> Vec<u8> {
        let mut b = one_record()[..BATCH_HEADER_LEN].to_vec();
        b.extend_from_slice(body);
        let len = (b.len() - LOG_OVERHEAD) as i32;
        b[LENGTH_AT..EPOCH_AT].copy_from_slice(&len.to_be_bytes());
        b[RECORDS_COUNT_AT..BATCH_HEADER_LEN].copy_from_slice(&count.to_be_bytes());
        fix_crc(&mut b);
        b
    }

    fn assert_invalid(batch: &[u8], why: &str) {
        check(batch).unwrap();
        let results: Vec<_> = records(&Bytes::copy_from_slice(batch)).unwrap().collect();
        assert!(
            matches!(results.last(), Some(Err(BatchError::Invalid(_)))),
            "{why}: {results:?}"
        );
    }

    #[test]
    fn rejects_malformed_records() {
        let good = one_record();
        let rec = &good[BATCH_HEADER_LEN..];
        // Sanity: the untouched body decodes.
        assert_eq!(decode_all(&with_records(rec, 1)).unwrap().len(), 1);

        assert_invalid(&with_records(rec, 2), "count larger than the records");
        assert_invalid(&with_records(rec, 0), "count smaller than the records");
        let mut two = rec.to_vec();
        two.extend_from_slice(rec);
        assert_invalid(&with_records(&two, 1), "count smaller than the records");

        let mut longer = rec.to_vec();
        longer[0] += 2; // claims one more byte
        longer.push(0);
        assert_invalid(&with_records(&longer, 1), "record length beyond its fields");
        let mut shorter = rec.to_vec();
        shorter[0] -= 2;
        assert_invalid(
            &with_records(&shorter, 1),
            "record length short of its fields",
        );
        let mut negative = rec.to_vec();
        negative[0] = 0x03; // -2
        assert_invalid(&with_records(&negative, 1), "negative record length");

        // Field offsets inside the record: len, attrs, ts, off, keylen(4), k,
        // vallen(6), hello, hcount(12), hkeylen(13), h, hvallen(15), v.
        let set = |at: usize, v: u8| {
            let mut r = rec.to_vec();
            r[at] = v;
            with_records(&r, 1)
        };
        assert_invalid(&set(4, 0x03), "key length -2");
        assert_invalid(&set(4, 0x7e), "key length past the record");
        assert_invalid(&set(6, 0x03), "value length -2");
        assert_invalid(&set(12, 0x01), "negative header count");
        assert_invalid(&set(12, 0x04), "too many headers");
        assert_invalid(&set(13, 0x01), "null header key");
        assert_invalid(&set(14, 0xff), "header key not UTF-8");
        assert_invalid(&set(15, 0x05), "header value length -3");

        // Everything else consistent, so only the -2 itself is wrong (Kafka
        // would read it as null).
        let minus_two_key = [0x0c, 0x00, 0x00, 0x00, 0x03, 0x01, 0x00];
        assert_invalid(&with_records(&minus_two_key, 1), "key length -2, alone");
        let null_key = [0x0c, 0x00, 0x00, 0x00, 0x01, 0x01, 0x00];
        assert_eq!(
            decode_all(&with_records(&null_key, 1)).unwrap()[0].key,
            None
        );

        // i32::MAX headers: must fail on the size bound, not try to allocate them.
        let mut r = vec![0x00, 0x00, 0x00, 0x01, 0x01];
        r.extend_from_slice(&[0xfe, 0xff, 0xff, 0xff, 0x0f]);
        r.insert(0, (r.len() * 2) as u8);
        assert_invalid(&with_records(&r, 1), "huge header count");

        // A varint that never ends inside the record.
        let mut r = rec.to_vec();
        r[2..6].copy_from_slice(&[0xff; 4]);
        assert_invalid(&with_records(&r, 1), "unterminated varint");
        assert_invalid(&with_records(&[0xff; 6], 1), "over-long length varint");
    }

    #[test]
    fn negative_record_count_and_unknown_codec() {
        let rec = one_record()[BATCH_HEADER_LEN..].to_vec();
        let neg = with_records(&rec, -1);
        assert!(matches!(
            records(&Bytes::from(neg)).err(),
            Some(BatchError::Invalid(_))
        ));
        for codec in 1..=7u8 {
            let mut b = with_records(&rec, 1);
            b[CRC_FROM + 1] = codec;
            fix_crc(&mut b);
            let first = records(&Bytes::from(b)).unwrap().next().unwrap();
            if codec <= 4 {
                assert_eq!(first, Err(BatchError::UnsupportedCompression(codec)));
            } else {
                assert!(matches!(first, Err(BatchError::Invalid(_))));
            }
        }
    }

    #[test]
    fn log_append_time_uses_max_timestamp() {
        let (mut b, summary) = encode(0, &sample(), NOW);
        b[CRC_FROM + 1] |= LOG_APPEND_TIME_BIT as u8;
        fix_crc(&mut b);
        let times: Vec<i64> = decode_all(&b)
            .unwrap()
            .iter()
            .map(|r| r.timestamp)
            .collect();
        assert_eq!(times, [summary.max_timestamp; 3]);
        assert_ne!(summary.base_timestamp, summary.max_timestamp);
    }

    #[test]
    fn iterator_is_fused_after_an_error() {
        let rec = one_record()[BATCH_HEADER_LEN..].to_vec();
        let mut it = records(&Bytes::from(with_records(&rec, 2))).unwrap();
        assert!(it.next().unwrap().is_ok());
        assert!(it.next().unwrap().is_err());
        assert!(it.next().is_none());
        assert!(it.next().is_none());
    }

    // --- fast decoder vs checked decoder ------------------------------------

    /// Records the fast decoder takes (no headers, short varints), plus a
    /// few it must decline.
    fn arb_plain_record() -> impl Strategy<Value = Record> {
        let timestamp = prop_oneof![
            Just(None),
            (-70_000i64..70_000).prop_map(|d| Some(NOW + d)),
            any::<i64>().prop_map(Some),
        ];
        (
            arb_bytes(20),
            arb_bytes(9_000),
            timestamp,
            proptest::bool::weighted(0.1),
        )
            .prop_map(|(key, value, timestamp, header)| Record {
                key,
                value,
                headers: if header {
                    vec![Header::new("h", "v")]
                } else {
                    Vec::new()
                },
                timestamp,
                partition: None,
            })
    }

    /// Whatever `decode_fast` accepts at `pos`, the checked decoder accepts
    /// with the same fields.
    fn assert_fast_agrees(batch: &[u8], pos: usize) -> Result<(), TestCaseError> {
        let Some(f) = decode_fast(batch, pos) else {
            return Ok(());
        };
        let checked = decode_fields_checked(batch, pos);
        let Ok((c, end)) = checked else {
            return Err(TestCaseError::fail(format!(
                "fast accepted what checked rejects at {pos}: {checked:?}"
            )));
        };
        prop_assert_eq!(f.end, end);
        prop_assert_eq!(f.timestamp_delta, c.timestamp_delta);
        prop_assert_eq!(f.offset_delta, c.offset_delta);
        prop_assert_eq!(f.key.map(|k| range_in(batch, k)), c.key);
        prop_assert_eq!(f.value.map(|v| range_in(batch, v)), c.value);
        prop_assert_eq!(c.header_count, 0);
        Ok(())
    }

    /// The borrowing iterator (fast path with fallback) against one that
    /// only uses the checked decoder.
    fn assert_views_match_checked(batch: &[u8]) -> Result<(), TestCaseError> {
        let Ok(header) = parse_header(batch) else {
            return Ok(());
        };
        let Ok(views) = record_views(batch, &header) else {
            return Ok(());
        };
        let got: Vec<_> = views
            .map(|r| r.map(|v| (v.offset, v.timestamp, v.key, v.value, v.headers().count())))
            .collect();
        let mut want = Vec::new();
        let (mut pos, mut left) = (BATCH_HEADER_LEN, header.records_count);
        let base_ts = header.base_timestamp;
        let append_time = header.attributes & LOG_APPEND_TIME_BIT != 0;
        while left > 0 {
            match decode_fields_checked(batch, pos) {
                Ok((f, end)) => {
                    let ts = if append_time {
                        header.max_timestamp
                    } else {
                        base_ts.wrapping_add(f.timestamp_delta)
                    };
                    want.push(Ok((
                        header.base_offset.wrapping_add(i64::from(f.offset_delta)) as u64,
                        ts,
                        f.key.map(|r| &batch[r]),
                        f.value.map(|r| &batch[r]),
                        f.header_count,
                    )));
                    pos = end;
                    left -= 1;
                }
                Err(e) => {
                    want.push(Err(e));
                    break;
                }
            }
        }
        if left == 0 && pos != batch.len() {
            want.push(Err(BatchError::Invalid(
                "bytes left after the last record (record count too small)",
            )));
        }
        prop_assert_eq!(got, want);
        Ok(())
    }

    /// Edit values: any byte, often one that matters to varints and lengths.
    fn arb_edit_byte() -> impl Strategy<Value = u8> {
        prop_oneof![
            any::<u8>(),
            prop::sample::select(vec![
                0x00, 0x01, 0x02, 0x03, 0x04, 0x7e, 0x7f, 0x80, 0x81, 0xff
            ]),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]
        #[test]
        fn fast_decoder_agrees_with_checked(
            recs in proptest::collection::vec(arb_plain_record(), 1..8),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), arb_edit_byte()), 0..6),
            near_records in any::<bool>(),
        ) {
            let (mut b, _) = encode(3, &recs, NOW);
            let len = b.len();
            for (at, v) in &edits {
                // Mostly hit the first record bytes, where the lengths are.
                let at = if near_records {
                    BATCH_HEADER_LEN + at.index((len - BATCH_HEADER_LEN).min(24))
                } else {
                    at.index(len)
                };
                b[at] = *v;
            }
            for pos in 0..=len {
                assert_fast_agrees(&b, pos)?;
            }
            assert_views_match_checked(&b)?;
            if edits.is_empty() {
                let ok = recs.iter().all(|r| r.headers.is_empty());
                let views = record_views(&b, &parse_header(&b).unwrap()).unwrap();
                prop_assert_eq!(views.count(), recs.len());
                if ok && recs.iter().all(|r| {
                    r.value.as_ref().is_none_or(|v| v.len() < 8_000)
                        && r.timestamp.is_none_or(|t| (t - NOW).abs() < 60_000)
                }) {
                    // Every record of this shape takes the fast path.
                    let mut pos = BATCH_HEADER_LEN;
                    for _ in &recs {
                        let f = decode_fast(&b, pos);
                        prop_assert!(f.is_some(), "fast path declined a plain record");
                        pos = f.unwrap().end;
                    }
                }
            }
        }
    }

    // --- fuzz ----------------------------------------------------------------

    fn exercise(bytes: &[u8]) {
        let _ = parse_header(bytes);
        let _ = check(bytes);
        if let Ok(it) = records(&Bytes::copy_from_slice(bytes)) {
            // Every Ok consumes bytes and every Err ends it, so this terminates.
            for _ in it {}
        }
    }

    proptest! {
        #[test]
        fn fuzz_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            exercise(&bytes);
        }

        #[test]
        fn fuzz_valid_header_random_body(
            body in proptest::collection::vec(any::<u8>(), 0..300),
            count in -2i32..40,
        ) {
            let b = with_records(&body, count);
            prop_assert!(check(&b).is_ok());
            exercise(&b);
        }

        #[test]
        fn fuzz_mutated_batches(
            recs in proptest::collection::vec(arb_record(), 1..6),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        ) {
            let (mut b, _) = encode(3, &recs, NOW);
            let len = b.len();
            for (at, v) in &edits {
                b[at.index(len)] = *v;
            }
            exercise(&b);
            // Re-seal whatever the edits left so decoding sees CRC-valid garbage.
            if let Ok(total) = parse_header(&b).map(|h| h.total_len()) {
                if total <= len {
                    let sealed = &mut b[..total];
                    fix_crc(sealed);
                    prop_assert!(check(sealed).is_ok());
                    exercise(sealed);
                }
            }
        }
    }
}
