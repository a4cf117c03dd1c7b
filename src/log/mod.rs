//! The storage engine of one partition: Kafka's record batches in segment
//! files with sparse indexes, and the rules for loading them back.
//!
//! - [`record`]: RecordBatch v2 encoding and validation (pure functions).
//! - [`index`]: the memory-mapped `.index` / `.timeindex` files.
//! - [`segment`]: one `.log` file with its indexes, the read side.
//! - [`writer`]: appending to the active segment.
//! - [`open`]: creating, opening and recovering one segment.
//! - [`offset_map`], [`clean`], [`swap`]: the log cleaner's key map, its
//!   rewrite of sealed segments, and the crash-safe swap of the result.
//! - [`load`] (here): opening a partition directory, with crash recovery.

pub(crate) mod clean;
pub(crate) mod index;
pub(crate) mod offset_map;
// Parts of the codec (control batches, rewriting base offsets) serve the
// compaction and Kafka-protocol work that builds on it.
pub(crate) mod open;
#[allow(dead_code)]
pub(crate) mod record;
pub(crate) mod segment;
pub(crate) mod swap;
pub(crate) mod writer;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use segment::{Opened, Segment, SegmentOptions, SegmentWriter};

use crate::error::{Error, Result};

/// How the previous session ended, as far as recovery cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LastShutdown {
    /// `close()` completed: every file is whole and synced.
    Clean,
    /// The process died; the machine did not. The page cache kept every
    /// write, so only a batch being written at the moment can be torn.
    Crash,
    /// The machine restarted (power loss, kernel crash) since the last
    /// session: writes that were never synced may be lost in any order.
    CrashAndReboot,
}

/// What opening a partition found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionRecovery {
    /// Segments found on disk.
    pub segments: usize,
    /// Segments whose `.log` was scanned batch by batch (CRC-checked).
    pub segments_scanned: usize,
    /// Segments whose indexes were rebuilt from the log.
    pub indexes_rebuilt: usize,
    /// Bytes cut from a torn tail.
    pub truncated_bytes: u64,
    /// Stray files removed (temporary files, indexes without a log).
    pub removed_files: Vec<String>,
}

/// A partition directory, opened.
pub(crate) struct Loaded {
    pub segments: Vec<Arc<Segment>>,
    pub writer: SegmentWriter,
    pub recovery: PartitionRecovery,
}

/// Opens the segments in `dir` (creating the first one if there is none).
///
/// After a clean shutdown (`clean`) every segment and index is trusted and only
/// the last index interval of each segment is read. Otherwise the active
/// segment — the only one a crash can leave torn — is scanned and CRC-checked,
/// its torn tail truncated and its indexes rebuilt; damage followed by valid
/// batches is reported as [`Error::Corrupt`], never truncated.
pub(crate) fn load(
    dir: &Path,
    opts: SegmentOptions,
    last: LastShutdown,
    now_ms: i64,
) -> Result<Loaded> {
    let clean = last == LastShutdown::Clean;
    let mut recovery = PartitionRecovery {
        removed_files: swap::recover(dir)?,
        ..PartitionRecovery::default()
    };
    let mut bases = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut others = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        match segment::parse_log_file_name(&name) {
            Some(base) => bases.push(base),
            None => others.push(name),
        }
    }
    bases.sort_unstable();
    for name in others {
        let stem = name.split('.').next().unwrap_or("");
        let belongs = name.ends_with(".index") || name.ends_with(".timeindex");
        let orphan = belongs && !bases.iter().any(|&b| segment::file_stem(b) == stem);
        if orphan || name.ends_with(".tmp") {
            let path = dir.join(&name);
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
            recovery.removed_files.push(name);
        }
    }
    let Some((&active_base, sealed)) = bases.split_last() else {
        let (segment, writer) = SegmentWriter::create(dir, 0, opts, now_ms)?;
        return Ok(Loaded {
            segments: vec![segment],
            writer,
            recovery,
        });
    };

    recovery.segments = bases.len();
    let mut segments = Vec::with_capacity(bases.len());
    let mut writer = None;
    // Sealed segments were complete before the next one was created, so a
    // process crash cannot tear them: trust them and check their tail. The
    // active one opens last, once every sealed one has: its recovery may cut
    // a torn tail, which must not happen for a log that fails to open.
    let open_sealed = |base| SegmentWriter::open(dir, base, opts, false, true, last, now_ms);
    let sealed = open_in_parallel(sealed, open_sealed);
    let active = std::iter::once(active_base)
        .map(|base| SegmentWriter::open(dir, base, opts, true, clean, last, now_ms));
    for opened in sealed.into_iter().chain(active) {
        let (opened, repair) = opened?;
        recovery.segments_scanned += usize::from(repair.scanned);
        recovery.indexes_rebuilt += usize::from(repair.rebuilt_index);
        recovery.truncated_bytes += repair.truncated_bytes;
        let segment = match opened {
            Opened::Sealed(s) => s,
            Opened::Active(s, w) => {
                writer = Some(w);
                s
            }
        };
        if let Some(prev) = segments.last() {
            let prev: &Arc<Segment> = prev;
            // A gap is only legitimate where compaction removed records;
            // otherwise it is a sealed segment cut at a batch boundary.
            let gap = opts.contiguous && prev.next_offset() < segment.base_offset();
            if prev.next_offset() > segment.base_offset() || gap {
                return Err(Error::corrupt(
                    segment.log_path(),
                    0,
                    format!(
                        "segment starts at offset {} but the previous one ends at {}",
                        segment.base_offset(),
                        prev.next_offset()
                    ),
                ));
            }
        }
        segments.push(segment);
    }
    // The loop always ends with the active (last) segment.
    let writer = writer.ok_or_else(|| Error::corrupt(dir, 0, "no active segment"))?;
    Ok(Loaded {
        segments,
        writer,
        recovery,
    })
}

/// Segments of one partition from which `open_in_parallel` starts using
/// several threads.
const PARALLEL_OPEN_MIN: usize = 4;
/// Threads `open_in_parallel` uses at most.
const OPEN_THREADS: usize = 8;

/// Opens the sealed segments `bases`, in order of the results. Opening a
/// trusted segment costs a few small reads (the index tails and the last
/// index interval of the log); on a cold page cache each is a disk round
/// trip, so one thread opening a 10 GiB log waits ~6 ms per segment.
/// Several threads keep the disk's queue full instead.
fn open_in_parallel<T: Send>(
    bases: &[u64],
    open: impl Fn(u64) -> Result<T> + Sync,
) -> Vec<Result<T>> {
    if bases.len() < PARALLEL_OPEN_MIN {
        return bases.iter().map(|&base| open(base)).collect();
    }
    let next = AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(&base) = bases.get(i) else {
                return done;
            };
            done.push((i, open(base)));
        }
    };
    let mut results = std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..OPEN_THREADS.min(bases.len()))
            // A thread that cannot be spawned leaves its share to the others.
            .filter_map(|_| std::thread::Builder::new().spawn_scoped(scope, work).ok())
            .collect();
        let mut results = work();
        for helper in helpers {
            match helper.join() {
                Ok(done) => results.extend(done),
                // Opening never panics on disk contents; if it did, keep the panic.
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        results
    });
    // Each index was taken by exactly one thread: sorting restores `bases` order.
    results.sort_unstable_by_key(|&(i, _)| i);
    results.into_iter().map(|(_, result)| result).collect()
}
