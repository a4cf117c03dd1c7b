//! Creating, opening and recovering segments.
//!
//! Opening trusts a segment after a clean shutdown (only its last index
//! interval is read) and otherwise scans it batch by batch, CRC-checked:
//! a torn tail is cut, indexes are rebuilt, and damage followed by valid
//! batches is `Error::Corrupt` (unless the machine rebooted since: see
//! docs/FORMAT.md, "Recovery rules").

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use memmap2::{Advice, MmapOptions};

use super::LastShutdown;
use super::index::{IndexFile, OffsetEntry, TimeEntry};
use super::record::{self, BatchError, BatchHeader};
use super::segment::{
    Contents, ScanOutcome, Segment, file_stem, index_capacity, map_read_with, open_rw,
};
use super::writer::{IndexBuilder, SegmentWriter};
use crate::error::{Error, Result};

/// Scans `buf` from the start for whole, CRC-valid batches with increasing
/// offsets, calling `on_batch(position, header)` for each.
///
/// With `contiguous_from = Some(o)`, each batch must start exactly at the
/// offset after the previous one, the first at `o`. The CRC does not cover a
/// batch's base offset (as in Kafka), so this is the only way to see a
/// damaged base offset that went *up*: without it the scan accepts the
/// damaged batch and then stops at the next one as "offsets go backwards",
/// and recovery would truncate every valid batch after the damage as if it
/// were a torn tail. `base_offset` is the segment's.
pub(crate) fn scan(
    buf: &[u8],
    base_offset: u64,
    contiguous_from: Option<u64>,
    mut on_batch: impl FnMut(u64, &BatchHeader),
) -> ScanOutcome {
    let contiguous = contiguous_from.is_some();
    let mut position = 0usize;
    let mut next_offset = contiguous_from.unwrap_or(base_offset);
    let mut batches = 0;
    let stopped_by = loop {
        if position == buf.len() {
            break None;
        }
        match record::check(&buf[position..]) {
            Ok(header) if !offsets_fit(&header, base_offset) => {
                break Some(BatchError::Invalid("batch offsets outside the segment"));
            }
            Ok(header) if contiguous && header.base_offset != next_offset as i64 => {
                break Some(BatchError::Invalid(
                    "batch does not start at the next offset",
                ));
            }
            Ok(header) if header.base_offset >= 0 && header.base_offset as u64 >= next_offset => {
                on_batch(position as u64, &header);
                next_offset = header.next_offset() as u64;
                position += header.total_len();
                batches += 1;
            }
            Ok(_) => break Some(BatchError::Invalid("offsets go backwards")),
            Err(e) => break Some(e),
        }
    };
    ScanOutcome {
        valid_len: position as u64,
        next_offset,
        batches,
        stopped_by,
    }
}

/// A batch's offsets must lie in the segment: at or after its base offset,
/// at most 2^32 - 1 past it (index entries hold 32-bit relative offsets),
/// with a non-negative last offset delta and record count. The CRC does not
/// make these true: a writer bug or a crafted file can break them.
fn offsets_fit(header: &BatchHeader, segment_base: u64) -> bool {
    header.base_offset >= 0
        && header.last_offset_delta >= 0
        && header.records_count >= 0
        && (header.base_offset as u64) >= segment_base
        && (header.last_offset() as u64).saturating_sub(segment_base) <= u64::from(u32::MAX)
}

/// Is there a valid batch starting below `limit` in `buf` (damage followed
/// by good data)? Skips zero runs quickly: a preallocated tail is all zeros.
pub(crate) fn find_valid_batch(buf: &[u8], limit: usize, min_offset: u64) -> Option<usize> {
    const MAGIC_AT: usize = 16; // baseOffset(8) + batchLength(4) + leaderEpoch(4)
    let mut p = 0;
    while p < limit && p + record::BATCH_HEADER_LEN <= buf.len() {
        if buf[p + MAGIC_AT] == record::MAGIC as u8 {
            if let Ok(h) = record::check(&buf[p..]) {
                if h.base_offset >= 0 && h.base_offset as u64 >= min_offset {
                    return Some(p);
                }
            }
            p += 1;
        } else if buf[p..].len() >= 64 + MAGIC_AT
            && buf[p + MAGIC_AT..p + MAGIC_AT + 64].iter().all(|&b| b == 0)
        {
            p += 64;
        } else {
            p += 1;
        }
    }
    None
}

/// How a segment was opened.
pub(crate) enum Opened {
    Sealed(Arc<Segment>),
    Active(Arc<Segment>, SegmentWriter),
}

/// What opening one segment had to repair.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Repair {
    /// Bytes cut from a torn tail (batch cut short, zeros or bad CRC at the end).
    pub truncated_bytes: u64,
    /// The indexes were rebuilt from the log.
    pub rebuilt_index: bool,
    /// Whether the whole `.log` was scanned.
    pub scanned: bool,
}

/// Options for opening or creating a segment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SegmentOptions {
    pub capacity: u64,
    pub index_interval: u32,
    /// Offsets have no gaps: each batch starts at the offset after the one
    /// before it, and each segment at the offset after the previous segment.
    /// True unless the topic is compacted (cleaning leaves gaps, as in
    /// Kafka). The CRC does not cover a batch's base offset, so this is what
    /// catches a damaged one, and a sealed segment cut at a batch boundary.
    pub contiguous: bool,
}

impl SegmentWriter {
    /// Creates a new, empty active segment.
    pub fn create(
        dir: &Path,
        base_offset: u64,
        opts: SegmentOptions,
        now_ms: i64,
    ) -> Result<(Arc<Segment>, SegmentWriter)> {
        let stem = file_stem(base_offset);
        let paths = [
            dir.join(format!("{stem}.log")),
            dir.join(format!("{stem}.index")),
            dir.join(format!("{stem}.timeindex")),
        ];
        let created = Self::create_files(&paths, base_offset, opts, now_ms);
        if created.is_err() {
            // A half-created segment would overlap the still-active one on
            // the next open; take it back (best effort: it is empty).
            for path in &paths {
                let _ = std::fs::remove_file(path);
            }
        }
        created
    }

    fn create_files(
        [log_path, index_path, time_path]: &[PathBuf; 3],
        base_offset: u64,
        opts: SegmentOptions,
        now_ms: i64,
    ) -> Result<(Arc<Segment>, SegmentWriter)> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(log_path)
            .map_err(|e| Error::io(log_path, e))?;
        let idx_cap = index_capacity(opts.capacity, opts.index_interval);
        let offset_index = IndexFile::create(index_path, idx_cap)?;
        let time_index = IndexFile::create(time_path, idx_cap)?;
        Self::activate(
            file,
            log_path.clone(),
            base_offset,
            0,
            base_offset,
            i64::MIN,
            offset_index,
            time_index,
            opts,
            now_ms,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn activate(
        file: File,
        log_path: PathBuf,
        base_offset: u64,
        len: u64,
        next_offset: u64,
        max_timestamp: i64,
        offset_index: IndexFile<OffsetEntry>,
        time_index: IndexFile<TimeEntry>,
        opts: SegmentOptions,
        now_ms: i64,
    ) -> Result<(Arc<Segment>, SegmentWriter)> {
        let capacity = opts.capacity.max(len);
        // Sparse: costs no disk until `allocate` reserves blocks.
        file.set_len(capacity)
            .map_err(|e| Error::io(&log_path, e))?;
        let write_map = MmapOptions::new()
            .len(capacity as usize)
            .map_raw(&file)
            .map_err(|e| Error::io(&log_path, e))?;
        let contents = Contents {
            base_offset,
            len,
            next_offset,
            max_timestamp,
            contiguous: opts.contiguous,
        };
        let segment = Arc::new(Segment::new(
            &file,
            log_path,
            capacity,
            contents,
            offset_index,
            time_index,
        )?);
        // Resume the interval count where the file left it (the entry's batch
        // included, as `IndexBuilder::add` counts), so that entries appended
        // after a reopen fall where an uninterrupted writer would put them.
        let bytes_since_index = len
            - segment
                .offset_index
                .last()
                .map_or(0, |e| u64::from(e.position))
                .min(len);
        let writer = SegmentWriter {
            segment: Arc::clone(&segment),
            map: write_map,
            file: Arc::new(file),
            capacity,
            allocated: len,
            populated: len,
            position: len,
            next_offset,
            index: IndexBuilder {
                base_offset,
                interval: u64::from(opts.index_interval),
                bytes_since_entry: bytes_since_index,
                max_timestamp,
                offset_of_max_timestamp: next_offset.saturating_sub(1),
                last_time_entry: segment.time_index.last().map_or(i64::MIN, |e| e.timestamp),
            },
            // A reopened segment keeps aging from its first batch (Kafka's
            // rule), so restarting more often than `segment_ms` still rolls.
            created_ms: segment
                .header_at(0)
                .map_or(now_ms, |h| h.max_timestamp.min(now_ms)),
        };
        Ok((segment, writer))
    }

    /// Opens an existing segment. `active` segments get a writer; `trusted`
    /// segments (every segment after a clean shutdown, sealed ones after a
    /// crash) are not scanned if their indexes look sane. `clean`: the last
    /// session closed cleanly.
    pub fn open(
        dir: &Path,
        base_offset: u64,
        opts: SegmentOptions,
        active: bool,
        trusted: bool,
        last: LastShutdown,
        now_ms: i64,
    ) -> Result<(Opened, Repair)> {
        let clean = last == LastShutdown::Clean;
        let stem = file_stem(base_offset);
        let log_path = dir.join(format!("{stem}.log"));
        let index_path = dir.join(format!("{stem}.index"));
        let time_path = dir.join(format!("{stem}.timeindex"));
        let file = open_rw(&log_path, false)?;
        let file_len = file.metadata().map_err(|e| Error::io(&log_path, e))?.len();
        if file_len > crate::config::MAX_SEGMENT_BYTES {
            return Err(Error::corrupt(
                &log_path,
                file_len,
                "segment larger than 2 GiB",
            ));
        }
        let idx_cap =
            active.then(|| index_capacity(opts.capacity.max(file_len), opts.index_interval));
        let mut repair = Repair::default();

        // A trusted segment is checked by reading only its last index
        // entries and the batches after them: a few pages, which on a cold
        // cache must not each pull in megabytes of read-around.
        let access = if trusted {
            Advice::Random
        } else {
            Advice::Sequential
        };
        let (mut data, _) = map_read_with(&file, &log_path, file_len, access)?;
        let indexes: Option<(IndexFile<OffsetEntry>, IndexFile<TimeEntry>)> = match (
            IndexFile::open(&index_path, idx_cap)?,
            IndexFile::open(&time_path, idx_cap)?,
        ) {
            (Some(o), Some(t)) if trusted => {
                // Back to `Normal` once the check is done (below).
                o.advise(Advice::Random);
                t.advise(Advice::Random);
                index_is_sane(&o, file_len).then_some((o, t))
            }
            _ => None,
        };

        let mut trusted_end = None;
        // Trusted: find the end by walking from the last index entry, if
        // the batch there is the one the entry names (a damaged entry would
        // start the walk in the wrong place).
        let indexes = indexes.and_then(|(o, t)| {
            let anchor = tail_anchor(&data, base_offset, &o, opts.contiguous)?;
            Some((o, t, anchor))
        });
        if let Some((offset_index, time_index, (start, first_offset))) = indexes {
            let tail = &data[start.min(file_len) as usize..];
            let mut tail_max_ts = i64::MIN;
            // An empty offset index makes this a scan of the whole segment:
            // note whether the live writer would have made an entry.
            let interval = u64::from(opts.index_interval);
            let mut entry_missing = false;
            let outcome = scan(tail, base_offset, first_offset, |pos, h| {
                tail_max_ts = tail_max_ts.max(h.max_timestamp);
                entry_missing |= offset_index.len() == 0 && pos > interval;
            });
            let mut len = file_len;
            if outcome.valid_len != tail.len() as u64 {
                let rest = &tail[outcome.valid_len as usize..];
                if !clean && !active && rest.iter().all(|&b| b == 0) {
                    // A crash while a roll sealed this segment (indexes
                    // already trimmed, `.log` not yet) leaves its
                    // preallocated zero tail: no data, cut it.
                    len = start + outcome.valid_len;
                } else {
                    // A clean shutdown leaves whole batches only: this is damage.
                    return Err(Error::corrupt(
                        &log_path,
                        start + outcome.valid_len,
                        format!(
                            "invalid batch after a clean shutdown: {:?}",
                            outcome.stopped_by
                        ),
                    ));
                }
            }
            let next = if outcome.batches > 0 {
                outcome.next_offset
            } else {
                offset_index.last().map_or(base_offset, |e| {
                    base_offset + u64::from(e.relative_offset) + 1
                })
            };
            // The time index decides which segment `offsets_for_times`
            // searches (through its last entry, the segment's largest
            // timestamp), so a missing, stale or garbage one must be rebuilt,
            // not trusted. A missing index file was just created empty.
            if !entry_missing
                && time_index_is_sane(&time_index, next - base_offset, len, tail_max_ts)
            {
                let max_ts = time_index.last().map_or(tail_max_ts, |e| e.timestamp);
                trusted_end = Some((len, next, max_ts, offset_index, time_index));
            }
        }

        let (len, next_offset, max_ts, offset_index, time_index) = match trusted_end {
            Some(end) => end,
            None => {
                repair.scanned = true;
                repair.rebuilt_index = true;
                let cap = index_capacity(opts.capacity.max(file_len), opts.index_interval);
                let offset_index = IndexFile::create(&index_path, cap)?;
                let time_index = IndexFile::create(&time_path, cap)?;
                let mut builder = IndexBuilder::new(base_offset, u64::from(opts.index_interval));
                // The active segment only ever grows by appends at the log
                // end, so its offsets are contiguous (compaction, as in
                // Kafka, never rewrites the active segment).
                let contiguous = (active || opts.contiguous).then_some(base_offset);
                if trusted {
                    // Mapped for a few random reads; this reads it all.
                    data = map_read_with(&file, &log_path, file_len, Advice::Sequential)?.0;
                }
                let outcome = scan(&data, base_offset, contiguous, |pos, h| {
                    builder.add(pos, h, &offset_index, &time_index)
                });
                builder.finish(&time_index);
                if outcome.valid_len < file_len {
                    let rest_at = outcome.valid_len;
                    // Only where the file has data: the rest is holes (zeros).
                    let ranges = crate::io::data_ranges(&file, rest_at, file_len);
                    let bytes = |r: &std::ops::Range<u64>| &data[r.start as usize..r.end as usize];
                    // Only the active segment after a crash can be torn.
                    // After a clean shutdown `close` synced every file, and
                    // a sealed segment was whole before the next one was
                    // created: only zeros may follow their last batch (a
                    // roll's untrimmed tail, or a preallocated one). Anything
                    // else is damage (a cut file, a bad batch), and cutting
                    // it would lose data or leave a hole in the log.
                    let nonzero = ranges.iter().any(|r| bytes(r).iter().any(|&b| b != 0));
                    if (clean || !active) && nonzero {
                        return Err(Error::corrupt(
                            &log_path,
                            outcome.valid_len,
                            format!(
                                "damaged batch in a segment that cannot be torn: {:?}",
                                outcome.stopped_by
                            ),
                        ));
                    }
                    let valid_after = ranges.iter().find_map(|r| {
                        // A batch header may begin just before the data.
                        let from = r
                            .start
                            .saturating_sub(record::BATCH_HEADER_LEN as u64)
                            .max(rest_at);
                        let buf = &data[from as usize..];
                        let limit = (r.end - from) as usize;
                        find_valid_batch(buf, limit, outcome.next_offset).map(|p| from + p as u64)
                    });
                    // After a process crash the page cache kept every write,
                    // so good batches after damage mean real corruption. After
                    // a reboot, unsynced pages may come back as holes in any
                    // order, while everything a completed fdatasync covered is
                    // whole: cutting at the first damage keeps all of that.
                    if let (Some(at), false) = (valid_after, last == LastShutdown::CrashAndReboot) {
                        return Err(Error::corrupt(
                            &log_path,
                            outcome.valid_len,
                            format!(
                                "damaged batch ({:?}) followed by a valid batch at byte {}",
                                outcome.stopped_by, at
                            ),
                        ));
                    }
                    let data_end = ranges.iter().rev().find_map(|r| {
                        bytes(r)
                            .iter()
                            .rposition(|&b| b != 0)
                            .map(|p| r.start + p as u64 + 1)
                    });
                    repair.truncated_bytes = data_end.map_or(0, |end| end - rest_at);
                }
                (
                    outcome.valid_len,
                    outcome.next_offset,
                    builder.max_timestamp,
                    offset_index,
                    time_index,
                )
            }
        };
        drop(data);
        offset_index.advise(Advice::Normal);
        time_index.advise(Advice::Normal);
        if len < file_len {
            // Recovery only: nobody else has mapped this file yet. Synced so
            // the cut tail cannot come back after a later power loss.
            file.set_len(len).map_err(|e| Error::io(&log_path, e))?;
            crate::io::fdatasync(&file, &log_path)?;
        }

        if active {
            let (segment, writer) = SegmentWriter::activate(
                file,
                log_path,
                base_offset,
                len,
                next_offset,
                max_ts,
                offset_index,
                time_index,
                opts,
                now_ms,
            )?;
            if repair.scanned {
                segment.verified_len.store(len, Ordering::Release);
            }
            return Ok((Opened::Active(segment, writer), repair));
        }
        if repair.rebuilt_index {
            offset_index.trim()?;
            time_index.trim()?;
        }
        let contents = Contents {
            base_offset,
            len,
            next_offset,
            max_timestamp: max_ts,
            contiguous: opts.contiguous,
        };
        // The file is closed when this returns: a sealed segment needs only its map.
        let segment = Segment::new(&file, log_path, len, contents, offset_index, time_index)?;
        if repair.scanned {
            segment.verified_len.store(len, Ordering::Release);
        }
        // A clean close synced everything.
        segment.sealed_durable.store(clean, Ordering::Release);
        Ok((Opened::Sealed(Arc::new(segment)), repair))
    }
}

/// Whether a trusted segment's time index can be used as it is. Sealing
/// (`IndexBuilder::finish`) leaves the segment's largest timestamp as the
/// last entry, so in a segment holding records (`log_len > 0`) it must exist,
/// be at least the largest timestamp of the scanned tail, point below
/// `next_relative`, and follow the entry before it. (A segment whose every
/// timestamp is `i64::MIN` has no entry and is rebuilt each time: harmless.)
fn time_index_is_sane(
    index: &IndexFile<TimeEntry>,
    next_relative: u64,
    log_len: u64,
    tail_max_ts: i64,
) -> bool {
    match index.last() {
        None => log_len == 0,
        Some(last) => {
            u64::from(last.relative_offset) < next_relative
                && last.timestamp >= tail_max_ts
                && (index.len() < 2 || {
                    let prev = index.get(index.len() - 2);
                    prev.timestamp < last.timestamp && prev.relative_offset <= last.relative_offset
                })
        }
    }
}

/// Where the trusted tail walk of a segment starts: the position of the
/// batch the last `.index` entry names, and (for a `contiguous` segment) the
/// offset that batch starts at; the segment's start without an entry.
/// `None` if the batch there does not match the entry: rebuild the index.
fn tail_anchor(
    data: &[u8],
    base_offset: u64,
    index: &IndexFile<OffsetEntry>,
    contiguous: bool,
) -> Option<(u64, Option<u64>)> {
    let Some(entry) = index.last() else {
        return Some((0, contiguous.then_some(base_offset)));
    };
    let start = u64::from(entry.position);
    let header = record::parse_header(data.get(start as usize..)?).ok()?;
    let named = base_offset.checked_add(u64::from(entry.relative_offset))?;
    let first = u64::try_from(header.base_offset).ok()?;
    (header.last_offset() == named as i64).then_some((start, contiguous.then_some(first)))
}

/// Kafka's index sanity check: the last entry must point inside the file.
fn index_is_sane(index: &IndexFile<OffsetEntry>, log_len: u64) -> bool {
    match index.last() {
        None => true,
        Some(last) => {
            u64::from(last.position) < log_len
                && (index.len() < 2
                    || index.get(index.len() - 2).relative_offset < last.relative_offset)
        }
    }
}
