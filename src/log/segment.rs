//! One segment: `{base_offset:020}.log` with its `.index` and `.timeindex`.
//!
//! A [`Segment`] is the read side, shared by readers through an `Arc`; the
//! [`SegmentWriter`] is the append side of the one active segment, owned by
//! the partition's writer lock.
//!
//! # How appends reach the file
//! The active `.log` file is sized (sparse) to the segment capacity, and disk
//! blocks are reserved with `fallocate` in growing chunks just ahead of the
//! writer, whose pages are then pre-faulted writable (`MADV_POPULATE_WRITE`).
//! A batch is encoded straight into a shared writable map of the file: when
//! `append` returns, the bytes are in the page cache (they survive a process
//! crash) and no system call was made. Measured on this machine this is
//! faster than a buffered `write()`, which would leave data in user memory.
//! `fallocate` is what turns a full disk into an error instead of a SIGBUS
//! on a later store to a hole.
//!
//! # Mapping rules (why nothing can SIGBUS)
//! - Maps are created only while the file is at least as long as the map.
//! - The file shrinks only at seal/close/recovery, and only to the published
//!   length; readers never touch bytes at or past the published length.
//! - A deleted segment's file is unlinked, not truncated: live maps (and the
//!   `Bytes` users hold) keep the inode alive.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use bytes::Bytes;
use memmap2::{Advice, MmapOptions, MmapRaw};

use super::LastShutdown;
use super::index::{IndexFile, OffsetEntry, TimeEntry};
use super::record::{self, BatchError, BatchHeader, EncodedBatch};
use crate::error::{Error, Result};
use crate::record::Record;

/// Smallest step by which the writer reserves blocks ahead of itself.
const MIN_ALLOCATE_CHUNK: u64 = 64 << 10;
/// Largest step: bounds the zero pages a crash can leave behind.
const MAX_ALLOCATE_CHUNK: u64 = 8 << 20;
/// How far ahead of the writer pages are pre-faulted for stores through the map.
const POPULATE_AHEAD: u64 = 256 << 10;

/// File name stem of a segment: the base offset, zero-padded to 20 digits
/// so that names sort like offsets (Kafka's convention).
pub(crate) fn file_stem(base_offset: u64) -> String {
    format!("{base_offset:020}")
}

/// Parses `00000000000000001234.log` into 1234.
pub(crate) fn parse_log_file_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".log")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// The whole read-only map, owned by the `Bytes` handed to readers.
struct ReadMap(MmapRaw);

impl AsRef<[u8]> for ReadMap {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `Bytes::from_owner` calls this exactly once, right after the
        // map was created over a file at least as long as the map, so every
        // byte of the slice is backed by the file. Later views are narrower
        // slices below the published length (see the module docs).
        #[expect(unsafe_code, reason = "viewing a fresh read-only file map")]
        unsafe {
            std::slice::from_raw_parts(self.0.as_ptr(), self.0.len())
        }
    }
}

/// Read side of a segment.
pub(crate) struct Segment {
    base_offset: u64,
    log_path: PathBuf,
    file: File,
    /// The whole map; record bytes handed to users are `slice`s of it, which
    /// keep the map alive after the segment is deleted.
    data: Bytes,
    /// Address of the map's first byte (0 when empty), for borrowed views
    /// that must not span unpublished bytes.
    base_addr: usize,
    /// Bytes readers may read: whole batches, written before this was raised.
    published_len: AtomicU64,
    /// Every batch in `[0, verified_len)` had its CRC checked by this process
    /// (computed when appending, checked by a recovery scan or a first read),
    /// so reads skip the check there. Only ever grows.
    verified_len: AtomicU64,
    /// Set once the sealed segment and its directory entry were synced;
    /// nothing is written to a sealed segment, so once is enough.
    sealed_durable: AtomicBool,
    /// Offset after the last published batch (== base offset when empty).
    next_offset: AtomicU64,
    /// Largest record timestamp published (i64::MIN when empty).
    max_timestamp: AtomicI64,
    offset_index: IndexFile<OffsetEntry>,
    time_index: IndexFile<TimeEntry>,
}

/// What a scan of a segment's bytes found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScanOutcome {
    /// End of the last whole, valid batch.
    pub valid_len: u64,
    /// Offset after the last valid batch.
    pub next_offset: u64,
    /// Valid batches seen.
    pub batches: u64,
    /// Why the scan stopped before the end of the bytes, if it did.
    pub stopped_by: Option<BatchError>,
}

/// Which batch a lookup landed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Located {
    pub position: u64,
    pub header: BatchHeader,
}

impl std::fmt::Debug for Segment {
    // By hand: the derived form would print the whole map, and after a roll
    // or close the map reaches past the end of the file (SIGBUS).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("log_path", &self.log_path)
            .field("base_offset", &self.base_offset)
            .field("next_offset", &self.next_offset())
            .field("published_len", &self.published_len())
            .finish_non_exhaustive()
    }
}

/// What is known about a segment's batches when it is opened.
struct Contents {
    base_offset: u64,
    /// Bytes of whole batches.
    len: u64,
    next_offset: u64,
    max_timestamp: i64,
}

impl Segment {
    /// Maps `map_len` bytes of `file` for reading (`map_len >= contents.len`;
    /// the file must be at least that long now).
    fn new(
        file: File,
        log_path: PathBuf,
        map_len: u64,
        contents: Contents,
        offset_index: IndexFile<OffsetEntry>,
        time_index: IndexFile<TimeEntry>,
    ) -> Result<Segment> {
        let (data, base_addr) = map_read(&file, &log_path, map_len)?;
        Ok(Segment {
            base_offset: contents.base_offset,
            log_path,
            file,
            data,
            base_addr,
            published_len: AtomicU64::new(contents.len),
            verified_len: AtomicU64::new(0),
            sealed_durable: AtomicBool::new(false),
            next_offset: AtomicU64::new(contents.next_offset),
            max_timestamp: AtomicI64::new(contents.max_timestamp),
            offset_index,
            time_index,
        })
    }

    pub fn base_offset(&self) -> u64 {
        self.base_offset
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    pub fn published_len(&self) -> u64 {
        self.published_len.load(Ordering::Acquire)
    }

    pub fn next_offset(&self) -> u64 {
        self.next_offset.load(Ordering::Acquire)
    }

    pub fn verified_len(&self) -> u64 {
        self.verified_len.load(Ordering::Acquire)
    }

    /// Records that the batches in `[from, to)` passed their CRC check; the
    /// mark only advances over a range that starts at or before it.
    pub fn mark_verified(&self, from: u64, to: u64) {
        let mut current = self.verified_len.load(Ordering::Acquire);
        while from <= current && current < to {
            match self.verified_len.compare_exchange_weak(
                current,
                to,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return,
                Err(now) => current = now,
            }
        }
    }

    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp.load(Ordering::Acquire)
    }

    pub fn offset_index(&self) -> &IndexFile<OffsetEntry> {
        &self.offset_index
    }

    pub fn time_index(&self) -> &IndexFile<TimeEntry> {
        &self.time_index
    }

    /// Published bytes `[start, end)` as a borrowed slice.
    fn view(&self, start: u64, end: u64) -> &[u8] {
        let published = self.published_len();
        let end = end.min(published);
        let start = start.min(end);
        if start == end {
            return &[];
        }
        // SAFETY: start < end <= published_len <= map length, so the range is
        // inside the map, which `self.data` keeps alive for `&self`'s
        // lifetime. Published bytes lie inside the file (it never shrinks
        // below them) and are never written again.
        #[expect(unsafe_code, reason = "borrowing published bytes of the read map")]
        unsafe {
            std::slice::from_raw_parts(
                (self.base_addr as *const u8).add(start as usize),
                (end - start) as usize,
            )
        }
    }

    /// Published bytes `[start, end)` as zero-copy `Bytes`.
    pub fn slice(&self, start: u64, end: u64) -> Bytes {
        let published = self.published_len();
        let end = end.min(published);
        let start = start.min(end);
        self.data.slice(start as usize..end as usize)
    }

    /// Header of the batch at `position`, if a whole published one starts there.
    fn header_at(&self, position: u64) -> Option<BatchHeader> {
        let buf = self.view(position, u64::MAX);
        let header = record::parse_header(buf).ok()?;
        (header.total_len() <= buf.len()).then_some(header)
    }

    /// The batch holding `offset`, or the first batch after it (offsets can
    /// have gaps after compaction). `None` if no published batch ends past
    /// `offset`.
    pub fn locate(&self, offset: u64) -> Option<Located> {
        let start = if offset <= self.base_offset {
            0
        } else {
            let relative = (offset - self.base_offset).min(u64::from(u32::MAX));
            self.offset_index
                .floor(relative as i64)
                .map_or(0, |e| u64::from(e.position))
        };
        self.scan_forward(start, |h| h.last_offset() as u64 >= offset)
    }

    /// The first batch whose largest timestamp is `>= timestamp`.
    pub fn locate_time(&self, timestamp: i64) -> Option<Located> {
        let start = match self.time_index.floor(timestamp) {
            Some(entry) => {
                let offset = self.base_offset + u64::from(entry.relative_offset);
                self.locate(offset).map_or(0, |l| l.position)
            }
            None => 0,
        };
        self.scan_forward(start, |h| h.max_timestamp >= timestamp)
    }

    fn scan_forward(
        &self,
        mut position: u64,
        found: impl Fn(&BatchHeader) -> bool,
    ) -> Option<Located> {
        while let Some(header) = self.header_at(position) {
            if found(&header) {
                return Some(Located { position, header });
            }
            position += header.total_len() as u64;
        }
        None
    }

    /// Whole published batches starting at `position` and below
    /// `high_watermark`, up to `max_bytes` (always at least one batch if
    /// there is one, as Kafka's fetch does).
    ///
    /// IMPORTANT: a batch becomes visible in the segment a moment before the
    /// partition's end offset moves past it; a reader that took it would
    /// hold a position beyond the end offset it knows, and mistake that for
    /// an out-of-range offset. So reads stop at the caller's high watermark.
    pub fn read_batches(&self, position: u64, max_bytes: usize, high_watermark: u64) -> Bytes {
        let mut end = position;
        while let Some(header) = self.header_at(end) {
            let next = end + header.total_len() as u64;
            let past_watermark =
                header.base_offset < 0 || header.base_offset as u64 >= high_watermark;
            if past_watermark || (end > position && (next - position) as usize > max_bytes) {
                break;
            }
            end = next;
        }
        self.slice(position, end)
    }

    /// fdatasync of the `.log` file.
    pub fn sync(&self) -> Result<()> {
        crate::io::fdatasync(&self.file, &self.log_path)
    }

    #[cfg(test)]
    pub fn is_sealed_durable(&self) -> bool {
        self.sealed_durable.load(Ordering::Acquire)
    }

    /// Makes a sealed segment durable, with the directory `dir` holding it
    /// (and the segment created after it): a no-op once done.
    pub fn make_sealed_durable(&self, dir: &Path) -> Result<()> {
        if self.sealed_durable.load(Ordering::Acquire) {
            return Ok(());
        }
        self.sync()?;
        crate::io::fsync_dir(dir)?;
        self.sealed_durable.store(true, Ordering::Release);
        Ok(())
    }
}

fn open_rw(path: &Path, create_new: bool) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create_new)
        .truncate(false)
        .open(path)
        .map_err(|e| Error::io(path, e))
}

/// Maps `len` bytes read-only; returns the owning `Bytes` and its address.
fn map_read(file: &File, path: &Path, len: u64) -> Result<(Bytes, usize)> {
    if len == 0 {
        return Ok((Bytes::new(), 0));
    }
    let map = MmapOptions::new()
        .len(len as usize)
        .map_raw_read_only(file)
        .map_err(|e| Error::io(path, e))?;
    let base_addr = map.as_ptr() as usize;
    Ok((Bytes::from_owner(ReadMap(map)), base_addr))
}

fn index_capacity(capacity: u64, interval: u32) -> usize {
    // One entry per `interval` bytes at most, plus slack for the final entry.
    (capacity / u64::from(interval.max(1))) as usize + 2
}

/// Scans `buf` from the start for whole, CRC-valid batches with increasing
/// offsets, calling `on_batch(position, header)` for each.
///
/// With `contiguous`, each batch must start exactly at the offset after the
/// previous one (the first at `base_offset`). The CRC does not cover a batch's
/// base offset (as in Kafka), so this is the only way to see a damaged base
/// offset that went *up*: without it the scan accepts the damaged batch and
/// then stops at the next one as "offsets go backwards", and recovery would
/// truncate every valid batch after the damage as if it were a torn tail.
pub(crate) fn scan(
    buf: &[u8],
    base_offset: u64,
    contiguous: bool,
    mut on_batch: impl FnMut(u64, &BatchHeader),
) -> ScanOutcome {
    let mut position = 0usize;
    let mut next_offset = base_offset;
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

/// Is there a valid batch anywhere in `buf` (damage followed by good data)?
/// Skips zero runs quickly: a preallocated tail is all zeros.
pub(crate) fn find_valid_batch(buf: &[u8], min_offset: u64) -> Option<usize> {
    const MAGIC_AT: usize = 16; // baseOffset(8) + batchLength(4) + leaderEpoch(4)
    let mut p = 0;
    while p + record::BATCH_HEADER_LEN <= buf.len() {
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
        };
        let segment = Arc::new(Segment::new(
            file,
            log_path,
            capacity,
            contents,
            offset_index,
            time_index,
        )?);
        let last_time_entry = segment.time_index.last().map_or(i64::MIN, |e| e.timestamp);
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
            capacity,
            allocated: len,
            populated: len,
            position: len,
            next_offset,
            index_interval: u64::from(opts.index_interval),
            bytes_since_index,
            max_timestamp,
            offset_of_max_timestamp: next_offset.saturating_sub(1),
            last_time_entry,
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

        let (data, _) = map_read(&file, &log_path, file_len)?;
        let indexes: Option<(IndexFile<OffsetEntry>, IndexFile<TimeEntry>)> = match (
            IndexFile::open(&index_path, idx_cap)?,
            IndexFile::open(&time_path, idx_cap)?,
        ) {
            (Some(o), Some(t)) if trusted && index_is_sane(&o, file_len) => Some((o, t)),
            _ => None,
        };

        let mut trusted_end = None;
        if let Some((offset_index, time_index)) = indexes {
            // Trusted: find the end by walking from the last index entry.
            let start = offset_index.last().map_or(0, |e| u64::from(e.position));
            let tail = &data[start.min(file_len) as usize..];
            let mut tail_max_ts = i64::MIN;
            // An empty offset index makes this a scan of the whole segment:
            // note whether the live writer would have made an entry.
            let interval = u64::from(opts.index_interval);
            let mut entry_missing = false;
            let outcome = scan(tail, base_offset, false, |pos, h| {
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
                let outcome = scan(&data, base_offset, active, |pos, h| {
                    builder.add(pos, h, &offset_index, &time_index)
                });
                builder.finish(&time_index);
                if outcome.valid_len < file_len {
                    let rest = &data[outcome.valid_len as usize..];
                    let valid_after = find_valid_batch(rest, outcome.next_offset);
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
                                outcome.stopped_by,
                                outcome.valid_len + at as u64
                            ),
                        ));
                    }
                    let last_nonzero = rest.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
                    repair.truncated_bytes = last_nonzero as u64;
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
        };
        let segment = Segment::new(file, log_path, len, contents, offset_index, time_index)?;
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

/// Decides which batches get index entries; shared by appends and recovery
/// so a rebuilt index is identical to the one written live.
#[derive(Debug, Clone)]
struct IndexBuilder {
    base_offset: u64,
    interval: u64,
    bytes_since_entry: u64,
    max_timestamp: i64,
    offset_of_max_timestamp: u64,
    last_time_entry: i64,
}

impl IndexBuilder {
    fn new(base_offset: u64, interval: u64) -> Self {
        IndexBuilder {
            base_offset,
            interval,
            bytes_since_entry: 0,
            max_timestamp: i64::MIN,
            offset_of_max_timestamp: base_offset,
            last_time_entry: i64::MIN,
        }
    }

    fn add(
        &mut self,
        position: u64,
        h: &BatchHeader,
        oi: &IndexFile<OffsetEntry>,
        ti: &IndexFile<TimeEntry>,
    ) {
        if h.max_timestamp > self.max_timestamp {
            self.max_timestamp = h.max_timestamp;
            self.offset_of_max_timestamp = h.last_offset() as u64;
        }
        if self.bytes_since_entry > self.interval {
            let rel = (h.last_offset() as u64 - self.base_offset) as u32;
            oi.append(OffsetEntry {
                relative_offset: rel,
                position: position as u32,
            });
            self.add_time_entry(ti);
            self.bytes_since_entry = 0;
        }
        self.bytes_since_entry += h.total_len() as u64;
    }

    fn add_time_entry(&mut self, ti: &IndexFile<TimeEntry>) {
        if self.max_timestamp > self.last_time_entry {
            let rel = (self.offset_of_max_timestamp - self.base_offset) as u32;
            ti.append(TimeEntry {
                timestamp: self.max_timestamp,
                relative_offset: rel,
            });
            self.last_time_entry = self.max_timestamp;
        }
    }

    /// Kafka writes a final time-index entry when a segment is sealed, so the
    /// last entry always holds the segment's largest timestamp.
    fn finish(&mut self, ti: &IndexFile<TimeEntry>) {
        self.add_time_entry(ti);
    }
}

/// Why an append did not happen.
#[derive(Debug)]
pub(crate) enum AppendError {
    /// The segment (or one of its indexes) has no room: roll and retry.
    Full,
    /// Reserving disk space failed (e.g. ENOSPC). Nothing was written.
    Io(Error),
}

/// Append side of the active segment.
#[derive(Debug)]
pub(crate) struct SegmentWriter {
    segment: Arc<Segment>,
    /// Shared writable map of the whole capacity.
    map: MmapRaw,
    capacity: u64,
    /// Bytes of the file with disk blocks reserved.
    allocated: u64,
    /// Bytes of the map pre-faulted writable (<= allocated).
    populated: u64,
    position: u64,
    next_offset: u64,
    index_interval: u64,
    bytes_since_index: u64,
    max_timestamp: i64,
    offset_of_max_timestamp: u64,
    last_time_entry: i64,
    /// When this segment started taking appends (for `segment_ms`).
    created_ms: i64,
}

/// Where an appended batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Appended {
    pub base_offset: u64,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
}

impl SegmentWriter {
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    pub fn position(&self) -> u64 {
        self.position
    }

    pub fn created_ms(&self) -> i64 {
        self.created_ms
    }

    /// Encodes `records` as one batch at the end of the segment and publishes it.
    pub fn append<R: std::borrow::Borrow<Record>>(
        &mut self,
        records: &[R],
        batch_len: usize,
        now_ms: i64,
    ) -> std::result::Result<Appended, AppendError> {
        let end = self.check_room(batch_len, records.len())?;
        if end > self.populated {
            self.prepare_map_range(end).map_err(AppendError::Io)?;
        }
        // SAFETY: [position, end) lies inside the map (end <= capacity = map
        // length), inside the file (sized to capacity) and on reserved blocks
        // (end <= populated <= allocated), so the stores cannot fault. Only this writer
        // (serialised by the partition's writer lock) writes the map, and
        // readers never read at or past `published_len` == position.
        #[expect(
            unsafe_code,
            reason = "encoding into the unpublished tail of the shared map"
        )]
        let out = unsafe {
            std::slice::from_raw_parts_mut(
                self.map.as_mut_ptr().add(self.position as usize),
                batch_len,
            )
        };
        let encoded = record::encode_batch(out, self.next_offset as i64, records, now_ms);
        debug_assert_eq!(encoded.len, batch_len);
        Ok(self.publish(&encoded, records.len()))
    }

    /// Appends a batch already encoded (with any base offset: it is not
    /// covered by the CRC and is set here) by writing it with `pwrite`.
    ///
    /// For large batches this beats copying into the map: a write of whole
    /// pages needs no zero-filled page first, while a store through the map
    /// makes the kernel fault in (and zero) each new page. It also lets the
    /// producer encode and checksum outside the partition's lock.
    pub fn append_encoded(
        &mut self,
        batch: &mut [u8],
        encoded: &EncodedBatch,
        records: usize,
    ) -> std::result::Result<Appended, AppendError> {
        self.check_room(batch.len(), records)?;
        record::set_base_offset(batch, self.next_offset as i64);
        // Blocks are reserved by the write itself (ENOSPC comes back here);
        // later stores through the map only go past `position`, onto blocks
        // `allocate` reserves first.
        write_all_at(&self.segment.file, batch, self.position)
            .map_err(|e| AppendError::Io(Error::io(&self.segment.log_path, e)))?;
        // The write reserved these blocks and left the pages in the cache.
        let end = self.position + batch.len() as u64;
        self.allocated = self.allocated.max(end);
        self.populated = self.populated.max(end);
        Ok(self.publish(encoded, records))
    }

    /// The end position of a `len`-byte batch of `records`, or `Full`.
    fn check_room(&self, len: usize, records: usize) -> std::result::Result<u64, AppendError> {
        let end = self.position + len as u64;
        let last_relative = self.next_offset - self.segment.base_offset + records as u64;
        if end > self.capacity
            || last_relative > u64::from(u32::MAX)
            || self.segment.offset_index.is_full()
            || self.segment.time_index.is_full()
        {
            return Err(AppendError::Full);
        }
        Ok(end)
    }

    /// Indexes the batch just written at `position` and makes it visible.
    fn publish(&mut self, encoded: &EncodedBatch, records: usize) -> Appended {
        let header = BatchHeader {
            base_offset: self.next_offset as i64,
            batch_length: (encoded.len - record::LOG_OVERHEAD) as i32,
            partition_leader_epoch: 0,
            magic: record::MAGIC,
            crc: 0,
            attributes: 0,
            last_offset_delta: encoded.last_offset_delta,
            base_timestamp: encoded.base_timestamp,
            max_timestamp: encoded.max_timestamp,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            records_count: records as i32,
        };
        self.account(self.position, &header);
        let appended = Appended {
            base_offset: self.next_offset,
            base_timestamp: encoded.base_timestamp,
            max_timestamp: encoded.max_timestamp,
        };
        let end = self.position + encoded.len as u64;
        self.position = end;
        self.next_offset = header.next_offset() as u64;
        let seg = &self.segment;
        seg.max_timestamp
            .fetch_max(encoded.max_timestamp, Ordering::Release);
        seg.next_offset.store(self.next_offset, Ordering::Release);
        // This process computed the CRC over these very bytes. Only a range
        // contiguous with what is verified extends the mark: after a clean
        // reopen the older batches have not been checked yet.
        seg.mark_verified(end - encoded.len as u64, end);
        // Publish last: a reader that sees the new length sees the bytes.
        seg.published_len.store(end, Ordering::Release);
        appended
    }

    /// Index bookkeeping for a batch at `position`, identical to `IndexBuilder::add`.
    fn account(&mut self, position: u64, h: &BatchHeader) {
        let mut b = IndexBuilder {
            base_offset: self.segment.base_offset,
            interval: self.index_interval,
            bytes_since_entry: self.bytes_since_index,
            max_timestamp: self.max_timestamp,
            offset_of_max_timestamp: self.offset_of_max_timestamp,
            last_time_entry: self.last_time_entry,
        };
        b.add(
            position,
            h,
            &self.segment.offset_index,
            &self.segment.time_index,
        );
        self.bytes_since_index = b.bytes_since_entry;
        self.max_timestamp = b.max_timestamp;
        self.offset_of_max_timestamp = b.offset_of_max_timestamp;
        self.last_time_entry = b.last_time_entry;
    }

    /// Makes `[position, needed)` safe and fast to store into through the
    /// map: disk blocks reserved (`fallocate`, in chunks that double with the
    /// segment so small partitions stay small: a full disk becomes an error
    /// here instead of a SIGBUS later), and pages pre-faulted writable a short
    /// way ahead (`MADV_POPULATE_WRITE`), so stores do not fault one page at
    /// a time. Populating is kept short because it makes the kernel read
    /// (zero-fill) every page, and `pwrite`n batches need none of that.
    fn prepare_map_range(&mut self, needed: u64) -> Result<()> {
        if needed > self.allocated {
            let chunk = self.allocated.clamp(MIN_ALLOCATE_CHUNK, MAX_ALLOCATE_CHUNK);
            let target = needed.max(self.allocated + chunk).min(self.capacity);
            let path = &self.segment.log_path;
            crate::io::allocate(
                &self.segment.file,
                path,
                self.allocated,
                target - self.allocated,
            )?;
            self.allocated = target;
        }
        if needed > self.populated {
            let page = page_size();
            let from = self.populated.max(self.position) / page * page;
            let target = needed.max(from + POPULATE_AHEAD).min(self.allocated);
            // An optimisation only: without MADV_POPULATE_WRITE (Linux < 5.14)
            // the first store to each page faults instead.
            let _ = self.map.advise_range(
                Advice::PopulateWrite,
                from as usize,
                (target - from) as usize,
            );
            self.populated = target;
        }
        Ok(())
    }

    /// Seals the segment: final time-index entry, files trimmed to their
    /// contents, writable map dropped. Returns the read side.
    pub fn seal(mut self) -> Result<Arc<Segment>> {
        self.finish_indexes();
        let seg = &self.segment;
        seg.offset_index.trim()?;
        seg.time_index.trim()?;
        let SegmentWriter {
            segment,
            map,
            position,
            ..
        } = self;
        drop(map);
        // Readers map up to the old capacity but only read below `position`.
        segment
            .file
            .set_len(position)
            .map_err(|e| Error::io(&segment.log_path, e))?;
        Ok(segment)
    }

    fn finish_indexes(&mut self) {
        let mut b = IndexBuilder {
            base_offset: self.segment.base_offset,
            interval: self.index_interval,
            bytes_since_entry: self.bytes_since_index,
            max_timestamp: self.max_timestamp,
            offset_of_max_timestamp: self.offset_of_max_timestamp,
            last_time_entry: self.last_time_entry,
        };
        b.finish(&self.segment.time_index);
        self.last_time_entry = b.last_time_entry;
    }
}

/// `pwrite` until all of `buf` is written (a short write is legal).
fn write_all_at(file: &File, buf: &[u8], position: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.write_all_at(buf, position)
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    #[expect(unsafe_code, reason = "libc::sysconf")]
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 { size as u64 } else { 4096 }
}
