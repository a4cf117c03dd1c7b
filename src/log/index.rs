//! Sparse index files: Kafka's `.index` and `.timeindex`.
//!
//! Both are arrays of fixed-size big-endian entries in a memory-mapped file,
//! preallocated while their segment is active and trimmed to the entries
//! written when it is sealed or the log closes. Neither is checksummed: after
//! an unclean shutdown the active segment's indexes are rebuilt from the log,
//! as Kafka does.
//!
//! | file         | entry | layout                                         |
//! |--------------|-------|------------------------------------------------|
//! | `.index`     | 8 B   | relative offset `u32`, file position `u32`     |
//! | `.timeindex` | 12 B  | timestamp `i64`, relative offset `u32`         |

use std::fs::{File, OpenOptions};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use memmap2::{Advice, MmapOptions, MmapRaw};

use crate::error::{Error, Result};

/// Blocks are reserved for index files a page at a time.
const INDEX_PAGE: usize = 4096;

/// One fixed-size index entry.
pub(crate) trait Entry: Copy + std::fmt::Debug {
    /// Encoded size in bytes.
    const SIZE: usize;
    /// The key entries are sorted by (non-decreasing).
    fn key(&self) -> i64;
    fn encode(&self, out: &mut [u8]);
    fn decode(buf: &[u8]) -> Self;
}

/// `.index` entry: the last offset of a batch (relative to the segment's base
/// offset) and the file position where that batch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

impl Entry for OffsetEntry {
    const SIZE: usize = 8;
    fn key(&self) -> i64 {
        i64::from(self.relative_offset)
    }
    fn encode(&self, out: &mut [u8]) {
        out[..4].copy_from_slice(&self.relative_offset.to_be_bytes());
        out[4..8].copy_from_slice(&self.position.to_be_bytes());
    }
    fn decode(buf: &[u8]) -> Self {
        OffsetEntry {
            relative_offset: u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]),
            position: u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]),
        }
    }
}

/// `.timeindex` entry: the largest timestamp seen so far in the segment and
/// the relative offset of the record that first reached it. Every record
/// before that offset has a smaller timestamp, which makes the entry a safe
/// starting point for "first offset with timestamp >= t".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    pub timestamp: i64,
    pub relative_offset: u32,
}

impl Entry for TimeEntry {
    const SIZE: usize = 12;
    fn key(&self) -> i64 {
        self.timestamp
    }
    fn encode(&self, out: &mut [u8]) {
        out[..8].copy_from_slice(&self.timestamp.to_be_bytes());
        out[8..12].copy_from_slice(&self.relative_offset.to_be_bytes());
    }
    fn decode(buf: &[u8]) -> Self {
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&buf[..8]);
        TimeEntry {
            timestamp: i64::from_be_bytes(ts),
            relative_offset: u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]),
        }
    }
}

/// A memory-mapped array of entries. One writer appends (under the
/// partition's writer lock); any number of readers search the published
/// prefix concurrently without locks.
///
/// IMPORTANT: the map may extend past the end of the file once it is trimmed.
/// Only entries below `len` are ever touched, and those are always inside the
/// file, so no access can fault (SIGBUS).
#[derive(Debug)]
pub(crate) struct IndexFile<E: Entry> {
    path: PathBuf,
    // No open file: the map does not need one, and a descriptor per index
    // file would exhaust the process's limit with many segments. The rare
    // operations that need a file (reserve, trim, sync) open it.
    map: Option<MmapRaw>,
    /// Entries the map has room for.
    capacity: usize,
    /// Published entries: written before `len` is raised (Release).
    len: AtomicUsize,
    /// Bytes of the file with disk blocks reserved. The file is sparse, and a
    /// store through the map to a page without blocks on a full disk is a
    /// SIGBUS, so entries are only written below this.
    reserved: AtomicUsize,
    _entry: PhantomData<E>,
}

impl<E: Entry> IndexFile<E> {
    /// Opens (or creates) an index file. With `capacity = Some(n)` the file is
    /// grown (sparse) to hold `n` entries, ready for appends; with `None` it is
    /// mapped as it is, read-only in practice.
    ///
    /// Returns `Ok(None)` when the file's length is not a whole number of
    /// entries: the caller rebuilds it from the log.
    pub fn open(path: &Path, capacity: Option<usize>) -> Result<Option<Self>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len() as usize;
        if file_len % E::SIZE != 0 {
            return Ok(None);
        }
        let len = file_len / E::SIZE;
        let capacity = capacity.map_or(len, |c| c.max(len));
        if capacity * E::SIZE > file_len {
            file.set_len((capacity * E::SIZE) as u64)
                .map_err(|e| Error::io(path, e))?;
        }
        let map = Self::map(&file, path, capacity)?;
        Ok(Some(IndexFile {
            path: path.to_path_buf(),
            map,
            capacity,
            len: AtomicUsize::new(len),
            // Pages holding entries already have blocks.
            reserved: AtomicUsize::new((len * E::SIZE).next_multiple_of(INDEX_PAGE)),
            _entry: PhantomData,
        }))
    }

    /// Creates an empty index with room for `capacity` entries, replacing any
    /// file at `path`.
    pub fn create(path: &Path, capacity: usize) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        file.set_len((capacity * E::SIZE) as u64)
            .map_err(|e| Error::io(path, e))?;
        let map = Self::map(&file, path, capacity)?;
        Ok(IndexFile {
            path: path.to_path_buf(),
            map,
            capacity,
            len: AtomicUsize::new(0),
            reserved: AtomicUsize::new(0),
            _entry: PhantomData,
        })
    }

    fn map(file: &File, path: &Path, capacity: usize) -> Result<Option<MmapRaw>> {
        if capacity == 0 {
            return Ok(None); // mmap of zero bytes is EINVAL
        }
        MmapOptions::new()
            .len(capacity * E::SIZE)
            .map_raw(file)
            .map(Some)
            .map_err(|e| Error::io(path, e))
    }

    /// Number of published entries.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    pub fn is_full(&self) -> bool {
        self.len() >= self.capacity
    }

    /// Entry `i`, which must be below `len()`.
    pub fn get(&self, i: usize) -> E {
        debug_assert!(i < self.len());
        let mut buf = [0u8; 16];
        let map = self.map.as_ref().expect("len > 0 implies a map"); // capacity >= len > i
        // SAFETY: i < len <= capacity, so [i*SIZE, (i+1)*SIZE) lies inside the
        // map and inside the file (entries below `len` are never trimmed
        // away). Published entries are never written again, so no data race.
        #[expect(unsafe_code, reason = "reading a published entry of a shared map")]
        unsafe {
            std::ptr::copy_nonoverlapping(map.as_ptr().add(i * E::SIZE), buf.as_mut_ptr(), E::SIZE);
        }
        E::decode(&buf[..E::SIZE])
    }

    /// Tells the kernel how the entries are about to be read (see
    /// `segment::map_read_with`): `Random` while open checks only the last
    /// entries, `Normal` afterwards, when a lookup's binary search is
    /// served best by reading the whole (small) file at once.
    pub fn advise(&self, advice: Advice) {
        if let Some(map) = &self.map {
            // Only a hint: reads are correct whatever the kernel does with it.
            let _ = map.advise(advice);
        }
    }

    pub fn last(&self) -> Option<E> {
        self.len().checked_sub(1).map(|i| self.get(i))
    }

    /// The last entry whose key is `<= key`.
    pub fn floor(&self, key: i64) -> Option<E> {
        let (mut lo, mut hi) = (0, self.len());
        // Invariant: entries [0, lo) have key <= target; [hi, len) have key > target.
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.get(mid).key() <= key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo.checked_sub(1).map(|i| self.get(i))
    }

    /// Appends an entry; returns false when the index is full (the caller rolls
    /// the segment, as Kafka does).
    ///
    /// If disk blocks for the entry cannot be reserved (a full disk), the
    /// entry is skipped: the index is sparse, lookups then scan a little
    /// further, and recovery rebuilds it. The batch it describes is safe.
    pub fn append(&self, entry: E) -> bool {
        let len = self.len.load(Ordering::Relaxed);
        if len >= self.capacity {
            return false;
        }
        let end = (len + 1) * E::SIZE;
        let reserved = self.reserved.load(Ordering::Relaxed);
        if end > reserved {
            let to = end
                .next_multiple_of(INDEX_PAGE)
                .min(self.capacity * E::SIZE);
            let alloc = self.open_file().and_then(|file| {
                crate::io::allocate(&file, &self.path, reserved as u64, (to - reserved) as u64)
            });
            if alloc.is_err() {
                return true;
            }
            self.reserved.store(to, Ordering::Relaxed);
        }
        let mut buf = [0u8; 16];
        entry.encode(&mut buf[..E::SIZE]);
        let map = self
            .map
            .as_ref()
            .expect("capacity > len >= 0 implies a map");
        // SAFETY: len < capacity, so the entry lies inside the map and inside
        // the file (grown to `capacity` entries at open), on reserved blocks
        // (end <= reserved), so the store cannot fault. Only the single
        // writer (serialised by the partition's writer lock) writes here, and
        // readers never look at entries >= len.
        #[expect(unsafe_code, reason = "writing an unpublished entry of a shared map")]
        unsafe {
            std::ptr::copy_nonoverlapping(
                buf.as_ptr(),
                map.as_mut_ptr().add(len * E::SIZE),
                E::SIZE,
            );
        }
        self.len.store(len + 1, Ordering::Release);
        true
    }

    /// Shrinks the file to the published entries (on seal and close).
    pub fn trim(&self) -> Result<()> {
        let bytes = (self.len() * E::SIZE) as u64;
        self.open_file()?
            .set_len(bytes)
            .map_err(|e| Error::io(&self.path, e))
    }

    pub fn sync(&self) -> Result<()> {
        crate::io::fdatasync(&self.open_file()?, &self.path)
    }

    fn open_file(&self) -> Result<File> {
        OpenOptions::new()
            .write(true)
            .open(&self.path)
            .map_err(|e| Error::io(&self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    #[test]
    fn floor_finds_last_entry_at_or_below() {
        let dir = TempDir::new();
        let idx = IndexFile::<OffsetEntry>::create(&dir.path().join("a.index"), 10).unwrap();
        for (o, p) in [(3u32, 0u32), (7, 100), (12, 200)] {
            assert!(idx.append(OffsetEntry {
                relative_offset: o,
                position: p
            }));
        }
        assert_eq!(idx.floor(2), None);
        assert_eq!(idx.floor(3).unwrap().position, 0);
        assert_eq!(idx.floor(11).unwrap().position, 100);
        assert_eq!(idx.floor(1000).unwrap().position, 200);
    }

    #[test]
    fn full_index_refuses_and_trim_then_reopen_keeps_entries() {
        let dir = TempDir::new();
        let path = dir.path().join("t.timeindex");
        let idx = IndexFile::<TimeEntry>::create(&path, 2).unwrap();
        assert!(idx.append(TimeEntry {
            timestamp: 5,
            relative_offset: 1
        }));
        assert!(idx.append(TimeEntry {
            timestamp: 9,
            relative_offset: 4
        }));
        assert!(!idx.append(TimeEntry {
            timestamp: 10,
            relative_offset: 5
        }));
        idx.trim().unwrap();
        drop(idx);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 24);
        let idx = IndexFile::<TimeEntry>::open(&path, None).unwrap().unwrap();
        assert_eq!(idx.len(), 2);
        assert_eq!(
            idx.last(),
            Some(TimeEntry {
                timestamp: 9,
                relative_offset: 4
            })
        );
    }

    #[test]
    fn ragged_file_asks_for_rebuild() {
        let dir = TempDir::new();
        let path = dir.path().join("x.index");
        std::fs::write(&path, [0u8; 13]).unwrap();
        assert!(
            IndexFile::<OffsetEntry>::open(&path, None)
                .unwrap()
                .is_none()
        );
    }
}
