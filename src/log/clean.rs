//! The log cleaner's work on bytes: building the key → offset map from the
//! dirty section, and rewriting a group of sealed segments into one
//! `.cleaned` segment that keeps only the latest record per key.
//!
//! Rewritten batches keep their base offset, base timestamp and last offset
//! (Kafka's cleaner does the same for v2 batches): retained records are
//! copied byte for byte with their offset and timestamp deltas, so offsets
//! never change; a batch that loses every record is dropped, one that
//! loses none is copied as it is.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::index::IndexFile;
use super::offset_map::OffsetMap;
use super::record::{self, BatchHeader};
use super::segment::{Segment, SegmentOptions, file_stem, index_capacity};
use super::writer::IndexBuilder;
use crate::error::{Error, Result};

/// How far one map-building pass got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MapBuilt {
    /// Offsets below this are covered by the map: the cleaned range ends here.
    pub end: u64,
    /// Batch bytes read to build the map.
    pub bytes_read: u64,
}

/// What the rewrite of records below `end` may drop.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CleanRules {
    /// Records at or past this offset are copied untouched (past the map).
    pub end: u64,
    pub now_ms: i64,
    /// A latest-for-its-key tombstone is dropped once its timestamp is this old.
    pub delete_retention_ms: u64,
}

/// Figures from rewriting one group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct GroupCleaned {
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub records_read: u64,
    pub records_removed: u64,
    /// Earliest time a retained tombstone becomes removable.
    pub tombstone_due: Option<i64>,
}

/// Calls `f(position, header, batch bytes)` for each whole batch of a
/// sealed segment, CRC-checked: the cleaner must never copy damage into a
/// "clean" segment.
fn for_each_batch(
    segment: &Segment,
    mut f: impl FnMut(u64, &BatchHeader, &[u8]) -> Result<bool>,
) -> Result<()> {
    let data = segment.slice(0, segment.published_len());
    let mut at = 0usize;
    while at < data.len() {
        let header = record::check(&data[at..])
            .map_err(|e| Error::corrupt(segment.log_path(), at as u64, e.to_string()))?;
        let len = header.total_len();
        if !f(at as u64, &header, &data[at..at + len])? {
            return Ok(());
        }
        at += len;
    }
    Ok(())
}

/// Records the latest offset of every key at or after `first_dirty` in
/// `sealed` (in order), until the map is full. `map` is cleared first.
pub(crate) fn build_offset_map(
    sealed: &[Arc<Segment>],
    first_dirty: u64,
    map: &mut OffsetMap,
) -> Result<MapBuilt> {
    map.clear();
    let mut built = MapBuilt {
        end: sealed.last().map_or(first_dirty, |s| s.next_offset()),
        bytes_read: 0,
    };
    for segment in sealed.iter().filter(|s| s.next_offset() > first_dirty) {
        let mut full = false;
        for_each_batch(segment, |at, header, batch| {
            if header.last_offset() < first_dirty as i64 || header.is_control() {
                return Ok(true);
            }
            built.bytes_read += batch.len() as u64;
            let corrupt =
                |e: record::BatchError| Error::corrupt(segment.log_path(), at, e.to_string());
            for r in record::record_views(batch, header).map_err(corrupt)? {
                let r = r.map_err(corrupt)?;
                let Some(key) = r.key else { continue };
                if r.offset < first_dirty {
                    continue;
                }
                if !map.put(OffsetMap::hash(key), r.offset) {
                    // Full: this pass cleans below here, the next one resumes.
                    built.end = r.offset;
                    full = true;
                    return Ok(false);
                }
            }
            Ok(true)
        })?;
        if full {
            break;
        }
    }
    Ok(built)
}

/// `{base}.{ext}.cleaned` in `dir`.
pub(crate) fn cleaned_path(dir: &Path, base_offset: u64, ext: &str) -> PathBuf {
    dir.join(format!("{}.{ext}.cleaned", file_stem(base_offset)))
}

/// Writes the records of `group` (consecutive sealed segments) that
/// survive cleaning into `{base}.log.cleaned` with its `.index.cleaned` and
/// `.timeindex.cleaned`, all synced. `base` is the first segment's base
/// offset, so the new segment keeps the log start offset.
pub(crate) fn write_cleaned(
    dir: &Path,
    group: &[Arc<Segment>],
    map: &OffsetMap,
    rules: CleanRules,
    opts: SegmentOptions,
) -> Result<GroupCleaned> {
    let base = group.first().map_or(0, |s| s.base_offset());
    let log_path = cleaned_path(dir, base, "log");
    let input_len: u64 = group.iter().map(|s| s.published_len()).sum();
    let cap = index_capacity(input_len, opts.index_interval);
    let offset_index = IndexFile::create(&cleaned_path(dir, base, "index"), cap)?;
    let time_index = IndexFile::create(&cleaned_path(dir, base, "timeindex"), cap)?;
    let mut builder = IndexBuilder::new(base, u64::from(opts.index_interval));
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&log_path)
        .map_err(|e| Error::io(&log_path, e))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut stats = GroupCleaned::default();
    let mut position = 0u64;
    // Retained record bytes of the current batch, and the rebuilt batch.
    let mut kept = Vec::new();
    let mut rebuilt = Vec::new();
    for segment in group {
        for_each_batch(segment, |at, header, batch| {
            stats.bytes_read += batch.len() as u64;
            let corrupt =
                |e: record::BatchError| Error::corrupt(segment.log_path(), at, e.to_string());
            let output: &[u8] = if header.is_control() {
                batch
            } else {
                kept.clear();
                let (mut count, mut removed, mut max_ts) = (0i32, 0u64, i64::MIN);
                let mut views = record::record_views(batch, header).map_err(corrupt)?;
                loop {
                    let from = views.position();
                    let Some(r) = views.next() else { break };
                    let r = r.map_err(corrupt)?;
                    stats.records_read += 1;
                    let keep = match r.key {
                        Some(key) if r.offset < rules.end => {
                            let latest =
                                map.get(OffsetMap::hash(key)).is_none_or(|o| o <= r.offset);
                            if !latest {
                                false
                            } else if r.value.is_none() {
                                let due = r.timestamp.saturating_add(
                                    i64::try_from(rules.delete_retention_ms).unwrap_or(i64::MAX),
                                );
                                if due <= rules.now_ms {
                                    false
                                } else {
                                    stats.tombstone_due =
                                        Some(stats.tombstone_due.map_or(due, |d| d.min(due)));
                                    true
                                }
                            } else {
                                true
                            }
                        }
                        // Past the map, or without a key (Kafka drops keyless
                        // records from compacted topics; logbus never drops
                        // data it cannot prove superseded).
                        _ => true,
                    };
                    if keep {
                        kept.extend_from_slice(&batch[from..views.position()]);
                        count += 1;
                        max_ts = max_ts.max(r.timestamp);
                    } else {
                        removed += 1;
                    }
                }
                stats.records_removed += removed;
                if removed == 0 {
                    batch
                } else if count == 0 {
                    return Ok(true);
                } else {
                    rebuilt.clear();
                    record::rebuild_batch(&mut rebuilt, batch, &kept, count, max_ts);
                    &rebuilt
                }
            };
            out.write_all(output).map_err(|e| Error::io(&log_path, e))?;
            let header = record::parse_header(output).map_err(corrupt)?;
            builder.add(position, &header, &offset_index, &time_index);
            position += output.len() as u64;
            Ok(true)
        })?;
    }
    builder.finish(&time_index);
    let file = out
        .into_inner()
        .map_err(|e| Error::io(&log_path, e.into_error()))?;
    crate::io::fdatasync(&file, &log_path)?;
    offset_index.trim()?;
    time_index.trim()?;
    offset_index.sync()?;
    time_index.sync()?;
    stats.bytes_written = position;
    Ok(stats)
}

/// Removes the `.cleaned` files of `base` (a group left unchanged, or an
/// attempt that failed before its swap).
pub(crate) fn discard_cleaned(dir: &Path, base_offset: u64) {
    for ext in ["log", "index", "timeindex"] {
        // Best effort: `open` removes any `.cleaned` file left behind.
        let _ = std::fs::remove_file(cleaned_path(dir, base_offset, ext));
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::testutil::TempDir;
    use crate::{Log, LogConfig, Record, TopicConfig};

    /// When the map fills, the pass ends there: records at or past its end
    /// are copied untouched, and only records below it may go.
    #[test]
    fn records_past_the_map_end_are_never_touched() {
        let dir = TempDir::new();
        let config = LogConfig::default().background_maintenance(false);
        let log = Log::open(dir.path(), config).unwrap();
        let topic = log.create_topic("c", TopicConfig::new(1)).unwrap();
        let producer = log.producer("c").unwrap();
        // 0..100: keys k0..k9 over and over; 100..200: k10..k109, each
        // once; 200..210: k0..k9 again.
        for i in 0..210u32 {
            let key = match i {
                0..100 => format!("k{}", i % 10),
                100..200 => format!("k{}", i - 90),
                _ => format!("k{}", i - 200),
            };
            producer
                .send(Record::new(format!("v{i}")).key(key))
                .unwrap();
        }
        let p = topic.partition(0).unwrap().clone();
        p.roll().unwrap();
        let (sealed, _) = p.shared.sealed_segments();
        let mut map = OffsetMap::with_memory(0); // 14 keys
        let built = build_offset_map(&sealed, 0, &mut map).unwrap();
        // 10 keys from the first 100 records, 4 more from 100..104: full.
        assert_eq!(built.end, 104);
        let out = TempDir::new();
        let rules = CleanRules {
            end: built.end,
            now_ms: 0,
            delete_retention_ms: 0,
        };
        let opts = crate::log::segment::SegmentOptions {
            capacity: 1 << 20,
            index_interval: 4096,
            contiguous: false,
        };
        let stats = write_cleaned(out.path(), &sealed, &map, rules, opts).unwrap();
        let bytes = Bytes::from(std::fs::read(cleaned_path(out.path(), 0, "log")).unwrap());
        let mut offsets = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let header = record::check(&bytes[at..]).unwrap();
            let batch = bytes.slice(at..at + header.total_len());
            offsets.extend(
                record::records(&batch)
                    .unwrap()
                    .map(|r| r.unwrap().offset as u64),
            );
            at += header.total_len();
        }
        // Below the end only the latest of k0..k9 (90..99) survive; from the
        // end on everything stays, even k0..k9 at 200..210, which the map
        // has not seen (the next pass cleans with them).
        let want: Vec<u64> = (90..210).collect();
        assert_eq!(offsets, want);
        assert_eq!(stats.records_removed, 90);
        assert_eq!(stats.records_read, 210);
    }
}
