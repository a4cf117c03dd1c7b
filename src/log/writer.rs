//! The append side of the active segment.
//!
//! # How appends reach the file
//! Two paths, both leaving the batch in the page cache when `append`
//! returns (it survives a process crash):
//! - **Small batches** (single `send`s) are encoded straight into a shared
//!   writable map of the file: no system call per record. Disk blocks are
//!   reserved with `fallocate` in growing chunks ahead of the writer, and
//!   pages pre-faulted writable (`MADV_POPULATE_WRITE`) a short way ahead.
//!   `fallocate` is what turns a full disk into an error instead of a
//!   SIGBUS on a later store to a hole.
//! - **Large batches** (>= 16 KiB) are encoded by the producer outside the
//!   partition lock and written with `pwrite`: a write of whole pages needs
//!   no zero-filled page first, while the map path makes the kernel fault
//!   in and zero every new page (measured: the map path ran at half the
//!   speed for batches of 1000 records).
//!
//! Either way the index entries for the batch are added (`IndexBuilder`,
//! shared with recovery so a rebuilt index equals the live one) and only
//! then is the new length published to readers.

use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use memmap2::{Advice, MmapRaw};

use super::index::{IndexFile, OffsetEntry, TimeEntry};
use super::record::{self, BatchHeader, EncodedBatch};
use super::segment::Segment;
use crate::error::{Error, Result};
use crate::record::Record;

/// Smallest step by which the writer reserves blocks ahead of itself.
const MIN_ALLOCATE_CHUNK: u64 = 64 << 10;
/// Largest step: bounds the zero pages a crash can leave behind.
const MAX_ALLOCATE_CHUNK: u64 = 8 << 20;
/// How far ahead of the writer pages are pre-faulted for stores through the map.
const POPULATE_AHEAD: u64 = 256 << 10;

/// Decides which batches get index entries; shared by appends and recovery
/// so a rebuilt index is identical to the one written live.
#[derive(Debug, Clone)]
pub(super) struct IndexBuilder {
    pub(super) base_offset: u64,
    pub(super) interval: u64,
    pub(super) bytes_since_entry: u64,
    pub(super) max_timestamp: i64,
    pub(super) offset_of_max_timestamp: u64,
    pub(super) last_time_entry: i64,
}

impl IndexBuilder {
    pub(super) fn new(base_offset: u64, interval: u64) -> Self {
        IndexBuilder {
            base_offset,
            interval,
            bytes_since_entry: 0,
            max_timestamp: i64::MIN,
            offset_of_max_timestamp: base_offset,
            last_time_entry: i64::MIN,
        }
    }

    pub(super) fn add(
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
    pub(super) fn finish(&mut self, ti: &IndexFile<TimeEntry>) {
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
    pub(super) segment: Arc<Segment>,
    /// Shared writable map of the whole capacity.
    pub(super) map: MmapRaw,
    /// The active `.log` file: the one descriptor a partition keeps open
    /// (group commit syncs through it too, see [`Self::shared_file`]).
    pub(super) file: Arc<File>,
    pub(super) capacity: u64,
    /// Bytes of the file with disk blocks reserved.
    pub(super) allocated: u64,
    /// Bytes of the map pre-faulted writable (<= allocated).
    pub(super) populated: u64,
    pub(super) position: u64,
    pub(super) next_offset: u64,
    /// Where the next index entries go (the same builder recovery uses).
    pub(super) index: IndexBuilder,
    /// When this segment started taking appends (for `segment_ms`).
    pub(super) created_ms: i64,
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
        crate::io::write_all_at(&self.file, &self.segment.log_path, batch, self.position)
            .map_err(AppendError::Io)?;
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

    /// Index bookkeeping for the batch just written at `position`.
    fn account(&mut self, position: u64, h: &BatchHeader) {
        let segment = &self.segment;
        self.index
            .add(position, h, &segment.offset_index, &segment.time_index);
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
            crate::io::allocate(&self.file, path, self.allocated, target - self.allocated)?;
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

    /// The segment this writer appends to.
    pub fn segment(&self) -> &Arc<Segment> {
        &self.segment
    }

    /// The `.log` file's descriptor, for group commit's `fdatasync`: sharing
    /// it keeps a partition at one open descriptor.
    pub fn shared_file(&self) -> Arc<File> {
        Arc::clone(&self.file)
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
            file,
            position,
            ..
        } = self;
        drop(map);
        // Readers map up to the old capacity but only read below `position`.
        file.set_len(position)
            .map_err(|e| Error::io(&segment.log_path, e))?;
        Ok(segment)
    }

    fn finish_indexes(&mut self) {
        self.index.finish(&self.segment.time_index);
    }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    #[expect(unsafe_code, reason = "libc::sysconf")]
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 { size as u64 } else { 4096 }
}
