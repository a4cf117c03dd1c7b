//! One segment: `{base_offset:020}.log` with its `.index` and `.timeindex`.
//!
//! A [`Segment`] is the read side, shared by readers through an `Arc`. The
//! append side of the active segment is `writer::SegmentWriter`; creating,
//! opening and recovering segments is in `open`.
//!
//! # Mapping rules (why nothing can SIGBUS)
//! - Maps are created only while the file is at least as long as the map.
//! - The file shrinks only at seal/close/recovery, and only to the published
//!   length; readers never touch bytes at or past the published length.
//! - A deleted segment's file is unlinked, not truncated: live maps (and the
//!   `Bytes` users hold) keep the inode alive.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use bytes::Bytes;
use memmap2::{Advice, MmapOptions, MmapRaw};

use super::index::{IndexFile, OffsetEntry, TimeEntry};
use super::record::{self, BatchError, BatchHeader};
use crate::error::{Error, Result};

// Callers name the append and open sides through this module.
pub(crate) use super::open::{Opened, SegmentOptions};
pub(crate) use super::writer::{AppendError, Appended, SegmentWriter};

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
    pub(super) base_offset: u64,
    pub(super) log_path: PathBuf,
    /// The whole map; record bytes handed to users are `slice`s of it, which
    /// keep the map alive after the segment is deleted.
    pub(super) data: Bytes,
    /// Address of the map's first byte (0 when empty), for borrowed views
    /// that must not span unpublished bytes.
    pub(super) base_addr: usize,
    /// Bytes readers may read: whole batches, written before this was raised.
    pub(super) published_len: AtomicU64,
    /// Every batch in `[0, verified_len)` had its CRC checked by this process
    /// (computed when appending, checked by a recovery scan or a first read),
    /// so reads skip the check there. Only ever grows.
    pub(super) verified_len: AtomicU64,
    /// The byte range `[lo, hi)` (packed `lo << 32 | hi`: segments are
    /// below 2^31 bytes) whose batches are known whole: CRC and the
    /// structure of every record (`record::check_records`), because this
    /// process wrote them or checked both at a first read. A recovery scan
    /// only checks CRCs (`verified_len`): the structure of those batches
    /// is checked at their first read. Lazy readers (`ConsumerRecords`)
    /// count records from batch headers and decode later: they rely on
    /// this, so a decode over checked bytes cannot fail.
    checked: AtomicU64,
    /// Set once the sealed segment and its directory entry were synced;
    /// nothing is written to a sealed segment, so once is enough.
    pub(super) sealed_durable: AtomicBool,
    /// Offset after the last published batch (== base offset when empty).
    pub(super) next_offset: AtomicU64,
    /// Largest record timestamp published (i64::MIN when empty).
    pub(super) max_timestamp: AtomicI64,
    pub(super) offset_index: IndexFile<OffsetEntry>,
    pub(super) time_index: IndexFile<TimeEntry>,
    /// See [`SegmentOptions::contiguous`].
    pub(super) contiguous: bool,
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
pub(super) struct Contents {
    pub(super) base_offset: u64,
    /// Bytes of whole batches.
    pub(super) len: u64,
    pub(super) next_offset: u64,
    pub(super) max_timestamp: i64,
    /// See [`SegmentOptions::contiguous`].
    pub(super) contiguous: bool,
}

impl Segment {
    /// Maps `map_len` bytes of `file` for reading (`map_len >= contents.len`;
    /// the file must be at least that long now).
    pub(super) fn new(
        file: &File,
        log_path: PathBuf,
        map_len: u64,
        contents: Contents,
        offset_index: IndexFile<OffsetEntry>,
        time_index: IndexFile<TimeEntry>,
    ) -> Result<Segment> {
        let (data, base_addr) = map_read(file, &log_path, map_len)?;
        Ok(Segment {
            base_offset: contents.base_offset,
            log_path,
            data,
            base_addr,
            published_len: AtomicU64::new(contents.len),
            verified_len: AtomicU64::new(0),
            checked: AtomicU64::new(0),
            sealed_durable: AtomicBool::new(false),
            next_offset: AtomicU64::new(contents.next_offset),
            max_timestamp: AtomicI64::new(contents.max_timestamp),
            offset_index,
            time_index,
            contiguous: contents.contiguous,
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

    /// Records that the batches in `[from, to)` are whole: their CRCs
    /// match and every record decodes (`record::check_records`), because
    /// this process wrote them or checked both. `verified_len` only
    /// advances over a range that starts at or before it; the checked
    /// range grows at either end over an adjacent range (or starts at
    /// this one when empty).
    pub fn mark_verified(&self, from: u64, to: u64) {
        let mut current = self.verified_len.load(Ordering::Acquire);
        while from <= current && current < to {
            match self.verified_len.compare_exchange_weak(
                current,
                to,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(now) => current = now,
            }
        }
        let mut packed = self.checked.load(Ordering::Acquire);
        while let Some(new) = grown(packed, from, to) {
            match self.checked.compare_exchange_weak(
                packed,
                new,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return,
                Err(now) => packed = now,
            }
        }
    }

    /// Whether the batches in `[from, to)` were marked whole (see
    /// [`mark_verified`](Self::mark_verified)).
    #[inline]
    pub fn is_checked(&self, from: u64, to: u64) -> bool {
        covers(self.checked.load(Ordering::Acquire), from, to)
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

    /// Largest timestamp of the first batch, if one is published: what a
    /// time-based roll counts from (Kafka's rolling-based timestamp).
    pub fn first_batch_max_timestamp(&self) -> Option<i64> {
        self.header_at(0).map(|h| h.max_timestamp)
    }

    /// Header of the batch at `position`, if a whole published one starts there.
    pub(super) fn header_at(&self, position: u64) -> Option<BatchHeader> {
        let buf = self.view(position, u64::MAX);
        let header = record::parse_header(buf).ok()?;
        (header.total_len() <= buf.len()).then_some(header)
    }

    /// The batch holding `offset`, or the first batch after it (offsets can
    /// have gaps after compaction). `Ok(None)` if no published batch ends
    /// past `offset`.
    ///
    /// The walk starts at the last index entry at or below `offset`, if the
    /// batch there matches it (an entry names a batch's last offset and its
    /// position), and otherwise at the start of the segment. Every batch
    /// after that start must follow the one before it (see [`Segment::walk`]).
    ///
    /// # Errors
    /// [`Error::Corrupt`] if the batches' offsets do not follow each other:
    /// the CRC does not cover a batch's base offset, so this is where a
    /// damaged one is caught, before any record of it is returned.
    pub fn locate(&self, offset: u64) -> Result<Option<Located>> {
        let start = if offset <= self.base_offset {
            None
        } else {
            let relative = (offset - self.base_offset).min(u64::from(u32::MAX));
            self.offset_index
                .floor(relative as i64)
                .and_then(|e| self.index_anchor(e))
        };
        let found = self.walk(start.unwrap_or(0), |h| h.last_offset() >= offset as i64)?;
        match found {
            Some(l) if self.contiguous && l.header.base_offset > offset as i64 => {
                Err(Error::corrupt(
                    &self.log_path,
                    l.position,
                    format!(
                        "offset {offset} is missing: the batch here starts at {}",
                        l.header.base_offset
                    ),
                ))
            }
            found => Ok(found),
        }
    }

    /// The position of the batch an index entry describes, if the batch
    /// there matches it. A damaged `.index` (not checksummed, and trusted
    /// after a clean shutdown) then costs a longer walk, never a wrong batch.
    fn index_anchor(&self, entry: OffsetEntry) -> Option<u64> {
        let position = u64::from(entry.position);
        let header = self.header_at(position)?;
        let last = self
            .base_offset
            .checked_add(u64::from(entry.relative_offset))?;
        (header.last_offset() == last as i64).then_some(position)
    }

    /// The first batch whose largest timestamp is `>= timestamp`.
    ///
    /// # Errors
    /// As [`Segment::locate`].
    pub fn locate_time(&self, timestamp: i64) -> Result<Option<Located>> {
        let start = self
            .time_index
            .floor(timestamp)
            .and_then(|entry| self.time_anchor(entry))
            .unwrap_or(0);
        self.walk(start, |h| h.max_timestamp >= timestamp)
    }

    /// The position of the batch a `.timeindex` entry names, if it is one:
    /// an entry holds the last offset of the batch that raised the
    /// segment's largest timestamp, and that batch's largest timestamp. A
    /// damaged entry (not checksummed, and trusted after a clean shutdown)
    /// would start the search past the answer; it costs a walk from the
    /// start of the segment instead.
    fn time_anchor(&self, entry: TimeEntry) -> Option<u64> {
        let offset = self
            .base_offset
            .checked_add(u64::from(entry.relative_offset))?;
        let found = self.locate(offset).ok()??;
        let h = &found.header;
        (h.last_offset() == offset as i64 && h.max_timestamp == entry.timestamp)
            .then_some(found.position)
    }

    /// Walks the batches from `position` (the start of the segment or of a
    /// batch already vetted) to the first one `found` accepts. Each batch
    /// after the first must start at or after the offset following the one
    /// before it, exactly there if the segment is `contiguous`; the first
    /// batch of the segment must start at its base offset.
    fn walk(
        &self,
        mut position: u64,
        found: impl Fn(&BatchHeader) -> bool,
    ) -> Result<Option<Located>> {
        let mut expected = (position == 0 && self.contiguous).then_some(self.base_offset as i64);
        let mut first = true;
        loop {
            // Loaded before the header is read: everything below it is whole
            // batches, even while the writer publishes more.
            let published = self.published_len();
            let Some(header) = self.header_at(position) else {
                // A header that does not parse below that (say a damaged
                // length) must not end the walk as if the segment ended,
                // which would skip the rest of it.
                if position < published {
                    let reason = match record::parse_header(self.view(position, u64::MAX)) {
                        Err(e) => e.to_string(),
                        Ok(_) => "batch runs past the end of the segment".to_owned(),
                    };
                    return Err(Error::corrupt(&self.log_path, position, reason));
                }
                return Ok(None);
            };
            if let Some(expected) = expected {
                let follows = if self.contiguous {
                    header.base_offset == expected
                } else {
                    header.base_offset >= expected
                };
                if !follows {
                    let after = if first {
                        "the segment's base offset is"
                    } else {
                        "the batch before ends at"
                    };
                    return Err(Error::corrupt(
                        &self.log_path,
                        position,
                        format!(
                            "batch starts at offset {} but {after} {}",
                            header.base_offset, expected
                        ),
                    ));
                }
            }
            if found(&header) {
                return Ok(Some(Located { position, header }));
            }
            expected = Some(header.next_offset());
            first = false;
            position += header.total_len() as u64;
        }
    }

    /// Whole published batches starting at `position` and below
    /// `high_watermark`, up to `max_bytes` (always at least one batch if
    /// there is one, as Kafka's fetch does). Stops before a batch whose
    /// offsets do not follow the one before it: the next fetch, which
    /// starts there, reports it (see [`Segment::locate`]).
    ///
    /// IMPORTANT: a batch becomes visible in the segment a moment before the
    /// partition's end offset moves past it; a reader that took it would
    /// hold a position beyond the end offset it knows, and mistake that for
    /// an out-of-range offset. So reads stop at the caller's high watermark.
    pub fn read_batches(&self, position: u64, max_bytes: usize, high_watermark: u64) -> Bytes {
        let mut end = position;
        let mut expected: Option<i64> = None;
        while let Some(header) = self.header_at(end) {
            let next = end + header.total_len() as u64;
            let past_watermark =
                header.base_offset < 0 || header.base_offset as u64 >= high_watermark;
            let follows = expected.is_none_or(|e| {
                if self.contiguous {
                    header.base_offset == e
                } else {
                    header.base_offset >= e
                }
            });
            if past_watermark
                || !follows
                || (end > position && (next - position) as usize > max_bytes)
            {
                break;
            }
            expected = Some(header.next_offset());
            end = next;
        }
        self.slice(position, end)
    }

    /// fdatasync of the `.log` file. It opens the file: a segment keeps no
    /// descriptor (the map does not need one; the writer has its own).
    pub fn sync(&self) -> Result<()> {
        match self.open_for_sync()? {
            Some(file) => crate::io::fdatasync(&file, &self.log_path),
            None => Ok(()),
        }
    }

    /// Opens the `.log` file for `fdatasync`, read-only: fdatasync covers
    /// the inode's dirty pages whichever descriptor asks. `None` when there
    /// is nothing left to sync: retention or the cleaner made this segment
    /// durable, then deleted or replaced it (see `retire`).
    pub fn open_for_sync(&self) -> Result<Option<File>> {
        match File::open(&self.log_path) {
            Ok(file) => Ok(Some(file)),
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    && self.sealed_durable.load(Ordering::Acquire) =>
            {
                Ok(None)
            }
            Err(e) => Err(Error::io(&self.log_path, e)),
        }
    }

    /// The paths of the segment's three files: `.log`, `.index`, `.timeindex`.
    pub fn file_paths(&self) -> [PathBuf; 3] {
        let stem = self.log_path.with_extension("");
        [
            self.log_path.clone(),
            stem.with_extension("index"),
            stem.with_extension("timeindex"),
        ]
    }

    /// Unlinks a sealed segment's files, `.log` first: once it is gone the
    /// segment no longer exists for `open`, which removes index files left
    /// without their log. Unlinking (never truncating) is safe under live
    /// maps: readers and `Bytes` keep the inode until they drop it.
    ///
    /// The caller made the segment durable first (`make_sealed_durable`), so
    /// a sync still queued for it finds it gone and does nothing.
    pub fn delete_files(&self) -> Result<()> {
        for path in self.file_paths() {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
        Ok(())
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

pub(super) fn open_rw(path: &Path, create_new: bool) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create_new)
        .truncate(false)
        .open(path)
        .map_err(|e| Error::io(path, e))
}

/// Maps `len` bytes read-only; returns the owning `Bytes` and its address.
pub(super) fn map_read(file: &File, path: &Path, len: u64) -> Result<(Bytes, usize)> {
    map_read_with(file, path, len, Advice::Normal)
}

/// [`map_read`] with an access pattern for the kernel: `Advice::Random`
/// turns off read-around, which otherwise reads `read_ahead_kb` (8 MiB on
/// this project's VM) around each page first touched on a cold cache.
pub(super) fn map_read_with(
    file: &File,
    path: &Path,
    len: u64,
    advice: Advice,
) -> Result<(Bytes, usize)> {
    if len == 0 {
        return Ok((Bytes::new(), 0));
    }
    let map = MmapOptions::new()
        .len(len as usize)
        .map_raw_read_only(file)
        .map_err(|e| Error::io(path, e))?;
    if advice != Advice::Normal {
        // Only a hint: reads are correct whatever the kernel does with it.
        let _ = map.advise(advice);
    }
    let base_addr = map.as_ptr() as usize;
    Ok((Bytes::from_owner(ReadMap(map)), base_addr))
}

pub(super) fn index_capacity(capacity: u64, interval: u32) -> usize {
    // One entry per `interval` bytes at most, plus slack for the final entry.
    (capacity / u64::from(interval.max(1))) as usize + 2
}

/// The checked range `packed` (`lo << 32 | hi`, see `Segment::checked`)
/// grown by `[from, to)`: `None` if it does not change (already inside,
/// not adjacent, or beyond 32 bits, which no segment reaches).
fn grown(packed: u64, from: u64, to: u64) -> Option<u64> {
    let (Ok(from), Ok(to)) = (u32::try_from(from), u32::try_from(to)) else {
        return None;
    };
    let (lo, hi) = ((packed >> 32) as u32, packed as u32);
    let (lo, hi) = if lo == hi {
        (from, to)
    } else if from >= lo && from <= hi && to > hi {
        (lo, to)
    } else if from < lo && to >= lo && to <= hi {
        (from, hi)
    } else {
        return None;
    };
    Some((u64::from(lo) << 32) | u64::from(hi))
}

/// Whether the checked range `packed` holds all of `[from, to)` (non-empty).
fn covers(packed: u64, from: u64, to: u64) -> bool {
    let (lo, hi) = (packed >> 32, packed & u64::from(u32::MAX));
    lo <= from && to <= hi && from < to
}

#[cfg(test)]
mod checked_range_tests {
    use super::{covers, grown};

    fn mark(packed: u64, from: u64, to: u64) -> u64 {
        grown(packed, from, to).unwrap_or(packed)
    }

    #[test]
    fn grows_at_either_end_and_only_over_adjacent_ranges() {
        let r = mark(0, 100, 200); // empty: starts here
        assert!(covers(r, 100, 200) && !covers(r, 0, 100) && !covers(r, 150, 201));
        let r = mark(r, 200, 300); // appended after
        assert!(covers(r, 100, 300));
        let r = mark(r, 40, 100); // read before
        assert!(covers(r, 40, 300));
        assert_eq!(grown(r, 400, 500), None, "not adjacent: unchanged");
        assert_eq!(grown(r, 0, 20), None);
        assert_eq!(grown(r, 50, 60), None, "inside already");
        assert!(!covers(r, 300, 400) && !covers(r, 0, 40));
        assert!(!covers(r, 50, 50), "empty ranges are never covered");
        // Beyond 32 bits: never marked (no segment is that long).
        assert_eq!(grown(0, 1 << 32, (1 << 32) + 10), None);
    }
}
