//! A partition's side of maintenance: the time-based roll, deleting old
//! segments, cleaning (compaction) with its checkpoint, and swapping
//! cleaned segments in. `maintenance` decides when; this changes the
//! segment list and the files.
//!
//! # Locks
//! Segment list changes take `segments` for writing only for the in-memory
//! splice; file work (unlink, rename, rewrite) happens outside every lock,
//! so neither the writer nor readers wait for it. Readers that hold an
//! `Arc<Segment>` (or `Bytes` from one) keep its map: files are unlinked or
//! renamed, never truncated, so those bytes stay valid.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::Sender;
use parking_lot::Mutex;

use super::{PartitionShared, segment_options};
use crate::compaction;
use crate::error::{Error, Result};
use crate::log::clean::{self, CleanRules};
use crate::log::offset_map::OffsetMap;
use crate::log::segment::{Opened, Segment, SegmentWriter};
use crate::log::{LastShutdown, swap};
use crate::retention::SegmentMeta;

/// The cleaner's checkpoint file in each partition directory.
pub(crate) const CLEANER_CHECKPOINT: &str = "cleaner.checkpoint";
const CHECKPOINT_KIND: &str = "cleaner-checkpoint";
const CHECKPOINT_VERSION: u32 = 1;
/// Most map passes one `clean` call makes (each at least one record further).
const MAX_PASSES: usize = 10_000;

/// Maintenance state a partition keeps.
#[derive(Debug)]
pub(crate) struct Upkeep {
    cleaner: Mutex<CleanerState>,
    /// Set when a delete or swap failed half-way: the files and the segment
    /// list may disagree, so maintenance leaves the partition alone until
    /// the log is reopened (whose recovery finishes the swap).
    disabled: AtomicBool,
    /// Wakes the maintenance thread when a segment is sealed.
    waker: Option<Sender<()>>,
    /// Held while maintenance works on the partition's files.
    busy: Mutex<()>,
}

/// Where the cleaner stands in one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CleanerState {
    /// Offsets below this were cleaned (Kafka's cleaner checkpoint).
    pub first_dirty: u64,
    /// When the earliest retained tombstone may go.
    pub tombstone_due: Option<i64>,
}

/// What one `clean` call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CleanReport {
    pub passes: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub records_read: u64,
    pub records_removed: u64,
    pub keys: u64,
    pub segments_replaced: u64,
}

impl Upkeep {
    pub(crate) fn load(dir: &Path, waker: Option<Sender<()>>) -> Upkeep {
        Upkeep {
            cleaner: Mutex::new(read_checkpoint(dir).unwrap_or(CleanerState {
                first_dirty: 0,
                tombstone_due: None,
            })),
            disabled: AtomicBool::new(false),
            waker,
            busy: Mutex::new(()),
        }
    }

    /// Returns once no maintenance work runs on the partition.
    pub(crate) fn wait_idle(&self) {
        drop(self.busy.lock());
    }

    /// A segment was sealed: retention and the cleaner may have work.
    pub(crate) fn rolled(&self) {
        if let Some(waker) = &self.waker {
            // Full means a wake-up is already pending.
            let _ = waker.try_send(());
        }
    }
}

/// A damaged or missing checkpoint only costs a re-clean from the log
/// start (cleaning is idempotent), so it is not an error.
fn read_checkpoint(dir: &Path) -> Option<CleanerState> {
    let path = dir.join(CLEANER_CHECKPOINT);
    let bytes = std::fs::read(&path).ok()?;
    let (_, pairs) =
        crate::io::decode_props(&path, &bytes, CHECKPOINT_KIND, CHECKPOINT_VERSION).ok()?;
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    Some(CleanerState {
        first_dirty: get("first.dirty.offset")?.parse().ok()?,
        tombstone_due: match get("tombstone.due")? {
            "none" => None,
            v => Some(v.parse().ok()?),
        },
    })
}

fn write_checkpoint(dir: &Path, state: &CleanerState) -> Result<()> {
    let pairs = [
        ("first.dirty.offset", state.first_dirty.to_string()),
        (
            "tombstone.due",
            state
                .tombstone_due
                .map_or_else(|| "none".to_string(), |d| d.to_string()),
        ),
    ];
    let bytes = crate::io::encode_props(CHECKPOINT_KIND, CHECKPOINT_VERSION, &pairs)?;
    crate::io::write_atomic(&dir.join(CLEANER_CHECKPOINT), &bytes)
}

pub(crate) fn meta(segment: &Segment) -> SegmentMeta {
    SegmentMeta {
        base_offset: segment.base_offset(),
        next_offset: segment.next_offset(),
        size_bytes: segment.published_len(),
        max_timestamp: segment.max_timestamp(),
    }
}

impl PartitionShared {
    pub(crate) fn config(&self) -> &crate::config::TopicConfig {
        &self.config
    }

    pub(crate) fn upkeep_disabled(&self) -> bool {
        self.upkeep.disabled.load(Ordering::Acquire)
    }

    /// Held by maintenance while it works on this partition; `abandon`
    /// waits for it. Lock order: `busy` before `writer` and `segments`.
    pub(crate) fn upkeep_busy(&self) -> parking_lot::MutexGuard<'_, ()> {
        self.upkeep.busy.lock()
    }

    fn segments_changed(&self, reason: &'static str) -> Error {
        self.upkeep.disabled.store(true, Ordering::Release);
        Error::SegmentsChanged {
            path: self.dir.clone(),
            reason,
        }
    }

    fn check_not_closed(&self) -> Result<()> {
        if self.is_closed() {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    pub(crate) fn cleaner_state(&self) -> CleanerState {
        *self.upkeep.cleaner.lock()
    }

    /// Sealed segments (all but the active one), oldest first, and the
    /// active segment's size.
    pub(crate) fn sealed_segments(&self) -> (Vec<Arc<Segment>>, u64) {
        let segments = self.segments.read();
        let n = segments.len().saturating_sub(1);
        let active = segments.last().map_or(0, |s| s.published_len());
        (segments[..n].to_vec(), active)
    }

    /// When the active segment is due for its time-based roll: `segment_ms`
    /// after its first record (Kafka's rule: a segment that sat empty does
    /// not age), if it holds anything.
    pub(crate) fn roll_due(&self) -> Option<i64> {
        let ms = i64::try_from(self.config.segment_ms?).unwrap_or(i64::MAX);
        let state = self.writer.lock();
        let writer = state.active.as_ref()?;
        let first = self.segments.read().last()?.first_batch_max_timestamp()?;
        let now = self.clock.now_ms();
        Some(writer.created_ms().max(first.min(now)).saturating_add(ms))
    }

    /// Rolls an idle active segment whose time is up; true if it rolled.
    pub(crate) fn roll_if_due(&self, now: i64) -> Result<bool> {
        match self.roll_due() {
            Some(due) if due <= now => {}
            _ => return Ok(false),
        }
        let mut state = self.writer.lock();
        // Appends may have rolled it meanwhile; an empty segment never rolls.
        if state.active.as_ref().is_none_or(|w| w.position() == 0) {
            return Ok(false);
        }
        self.roll(&mut state, now)?;
        Ok(true)
    }

    /// Deletes `doomed`, which must be the oldest sealed segments, and moves
    /// the log start offset to the segment after them, in one step for
    /// readers. O(1) per segment: no read of its content. Returns the bytes
    /// freed.
    pub(crate) fn delete_oldest(&self, doomed: &[Arc<Segment>]) -> Result<u64> {
        for segment in doomed {
            // A sync still queued for it (the flusher's) then finds nothing
            // left to do instead of a missing file.
            segment.make_sealed_durable(&self.dir)?;
        }
        {
            let mut segments = self.segments.write();
            let is_prefix = segments.len() > doomed.len()
                && doomed
                    .iter()
                    .zip(segments.iter())
                    .all(|(a, b)| Arc::ptr_eq(a, b));
            if !is_prefix {
                return Err(self.segments_changed("segments to delete are no longer the oldest"));
            }
            segments.drain(..doomed.len());
            // Under the list's lock: a fetch holding the read lock sees the
            // list and the start offset agree.
            self.log_start
                .store(segments[0].base_offset(), Ordering::Release);
        }
        let deleted = doomed
            .iter()
            .try_for_each(|s| s.delete_files())
            .and_then(|()| crate::io::fsync_dir(&self.dir));
        if let Err(e) = deleted {
            self.upkeep.disabled.store(true, Ordering::Release);
            return Err(e);
        }
        Ok(doomed.iter().map(|s| s.published_len()).sum())
    }

    /// Cleans the log if the dirty ratio (or a due tombstone) asks for it:
    /// as many map passes as needed to reach the active segment, each
    /// rewriting the sealed segments below its end. `min_ratio` is the
    /// topic's `min_cleanable_dirty_ratio` (0 to force a pass); the key
    /// map uses at most `map_bytes`, sized down to the dirty section.
    pub(crate) fn clean(&self, map_bytes: usize, now: i64, min_ratio: f64) -> Result<CleanReport> {
        let mut report = CleanReport::default();
        for _ in 0..MAX_PASSES {
            let (sealed, _) = self.sealed_segments();
            let state = self.cleaner_state();
            // A dirty point past the log end means records it covered were
            // lost (a power loss before a sealed segment was synced) and
            // others took their offsets: clean everything again.
            let first_dirty = if state.first_dirty > self.log_end() {
                self.log_start()
            } else {
                state.first_dirty.max(self.log_start())
            };
            let metas: Vec<SegmentMeta> = sealed.iter().map(|s| meta(s)).collect();
            if !compaction::should_clean(&metas, first_dirty, min_ratio, state.tombstone_due, now) {
                break;
            }
            let dirty_offsets = sealed
                .last()
                .map_or(0, |s| s.next_offset().saturating_sub(first_dirty));
            let map = &mut OffsetMap::for_keys(dirty_offsets, map_bytes);
            let built = clean::build_offset_map(&sealed, first_dirty, map)?;
            report.passes += 1;
            report.bytes_read += built.bytes_read;
            report.keys += map.len() as u64;
            let rules = CleanRules {
                end: built.end,
                now_ms: now,
                delete_retention_ms: self.config.delete_retention_ms,
            };
            let below: Vec<Arc<Segment>> = sealed
                .iter()
                .take_while(|s| s.base_offset() < built.end)
                .cloned()
                .collect();
            let mut tombstone_due: Option<i64> = None;
            for group in groups(&below, self.config.segment_bytes) {
                self.check_not_closed()?;
                let cleaned = self.clean_group(group, map, rules)?;
                report.bytes_read += cleaned.bytes_read;
                report.bytes_written += cleaned.bytes_written;
                report.records_read += cleaned.records_read;
                report.records_removed += cleaned.records_removed;
                if cleaned.replaced {
                    report.segments_replaced += group.len() as u64;
                }
                if let Some(due) = cleaned.tombstone_due {
                    tombstone_due = Some(tombstone_due.map_or(due, |d| d.min(due)));
                }
            }
            let next = CleanerState {
                first_dirty: built.end.max(first_dirty),
                tombstone_due,
            };
            write_checkpoint(&self.dir, &next)?;
            *self.upkeep.cleaner.lock() = next;
            let done = sealed.last().is_none_or(|s| built.end >= s.next_offset());
            if done || built.end <= first_dirty {
                break;
            }
        }
        Ok(report)
    }

    /// Rewrites one group and swaps it in if anything changed.
    fn clean_group(
        &self,
        group: &[Arc<Segment>],
        map: &OffsetMap,
        rules: CleanRules,
    ) -> Result<GroupResult> {
        let base = group.first().map_or(0, |s| s.base_offset());
        for segment in group {
            // Crash safety needs the old side whole on disk before the swap.
            segment.make_sealed_durable(&self.dir)?;
        }
        let opts = segment_options(&self.config);
        let cleaned = clean::write_cleaned(&self.dir, group, map, rules, opts)
            .inspect_err(|_| clean::discard_cleaned(&self.dir, base))?;
        let mut result = GroupResult {
            bytes_read: cleaned.bytes_read,
            bytes_written: cleaned.bytes_written,
            records_read: cleaned.records_read,
            records_removed: cleaned.records_removed,
            tombstone_due: cleaned.tombstone_due,
            replaced: false,
        };
        if cleaned.records_removed == 0 && group.len() == 1 {
            clean::discard_cleaned(&self.dir, base);
            return Ok(result);
        }
        self.check_not_closed()?;
        self.install_cleaned(group, rules.now_ms)
            .inspect_err(|_| self.upkeep.disabled.store(true, Ordering::Release))?;
        result.replaced = true;
        Ok(result)
    }

    /// Swaps the cleaned segment in for `old`, on disk (crash-safe, see
    /// `log::swap`) then in the segment list.
    fn install_cleaned(&self, old: &[Arc<Segment>], now: i64) -> Result<()> {
        let (Some(first), Some(last)) = (old.first(), old.last()) else {
            return Ok(());
        };
        swap::commit(&self.dir, old, last.next_offset())?;
        let opts = segment_options(&self.config);
        let (opened, _) = SegmentWriter::open(
            &self.dir,
            first.base_offset(),
            opts,
            false,
            true,
            LastShutdown::Clean,
            now,
        )?;
        let Opened::Sealed(new) = opened else {
            return Err(self.segments_changed("cleaned segment opened as active"));
        };
        let mut segments = self.segments.write();
        let at = segments.iter().position(|s| Arc::ptr_eq(s, first));
        let matches = at.is_some_and(|i| {
            segments.len() > i + old.len()
                && old
                    .iter()
                    .zip(&segments[i..])
                    .all(|(a, b)| Arc::ptr_eq(a, b))
        });
        match at {
            Some(i) if matches => {
                segments.splice(i..i + old.len(), [new]);
                Ok(())
            }
            _ => Err(self.segments_changed("cleaned segments changed during the swap")),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct GroupResult {
    bytes_read: u64,
    bytes_written: u64,
    records_read: u64,
    records_removed: u64,
    tombstone_due: Option<i64>,
    replaced: bool,
}

/// Splits consecutive segments into groups that become one cleaned
/// segment each: input at most `segment_bytes`, and offsets that fit the
/// index's 32-bit relative offsets. Small cleaned segments merge this way.
fn groups(segments: &[Arc<Segment>], segment_bytes: u64) -> Vec<&[Arc<Segment>]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut size = 0u64;
    for (i, s) in segments.iter().enumerate() {
        let base = segments[start].base_offset();
        let fits = size + s.published_len() <= segment_bytes
            && s.next_offset().saturating_sub(base) < u64::from(u32::MAX);
        if i > start && !fits {
            out.push(&segments[start..i]);
            start = i;
            size = 0;
        }
        size += s.published_len();
    }
    if start < segments.len() {
        out.push(&segments[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::sync::Arc;

    use crate::testutil::{TempDir, crash_copy};
    use crate::{CleanupPolicy, Log, LogConfig, ManualClock, Record, TopicConfig};

    /// (offset, key, value) of every record in partition 0 of `topic`.
    fn contents(log: &Log, topic: &str) -> Vec<(u64, String, Option<String>)> {
        let p = log.topic(topic).unwrap().partition(0).unwrap().clone();
        let mut out = Vec::new();
        let mut at = p.log_start_offset();
        while at < p.log_end_offset() {
            let got = p.read(at, 1000).unwrap();
            if got.is_empty() {
                break;
            }
            at = got.last().unwrap().offset + 1;
            for r in got {
                let text = |b: bytes::Bytes| String::from_utf8_lossy(&b).into_owned();
                let key = r.key.map(text).unwrap_or_default();
                out.push((r.offset, key, r.value.map(|v| text(v)[..8].to_string())));
            }
        }
        out
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".cleaned") || n.ends_with(".swap") || n.ends_with(".deleted"))
            .collect()
    }

    /// A crash at each step of the swap leaves, after reopen, exactly the
    /// old segments (before the commit point) or exactly the new ones
    /// (from it on): never neither, never both.
    #[test]
    fn crash_at_each_swap_step_leaves_old_or_new() {
        let steps = [
            ("swap:partial-swap", false),
            ("swap:committed", true),
            ("swap:partial-delete", true),
            ("swap:old-deleted", true),
            ("swap:partial-install", true),
            ("swap:installed", true),
        ];
        for (step, committed) in steps {
            let dir = TempDir::new();
            let clock = Arc::new(ManualClock::new(1_000_000));
            let config = || {
                LogConfig::default()
                    .clock(Arc::clone(&clock) as _)
                    .background_maintenance(false)
            };
            let log = Log::open(dir.path(), config()).unwrap();
            let topic = TopicConfig::new(1)
                .segment_bytes(64 << 10)
                .max_record_bytes(1024)
                .cleanup_policy(CleanupPolicy::Compact)
                .min_cleanable_dirty_ratio(0.0);
            log.create_topic("swap", topic).unwrap();
            let producer = log.producer("swap").unwrap();
            // Two sealed segments, cleaned as one group into one segment.
            let p = log.topic("swap").unwrap().partition(0).unwrap().clone();
            for i in 0..120u32 {
                let value = format!("v{i:07} {}", "x".repeat(60));
                producer
                    .send(Record::new(value).key(format!("k{}", i % 7)))
                    .unwrap();
                if i == 59 || i == 119 {
                    p.roll().unwrap();
                }
            }
            assert_eq!(p.stats().segments, 3);
            let old = contents(&log, "swap");
            let mut latest = BTreeMap::new();
            for r in &old {
                latest.insert(r.1.clone(), r.clone());
            }
            let mut new: Vec<_> = latest.into_values().collect();
            new.sort();

            let pdir = dir.path().join("swap/0");
            crate::io::failpoints::fail_step(step, &pdir.to_string_lossy());
            let summary = log.maintain().unwrap();
            assert_eq!(summary.failures.len(), 1, "{step}: {summary:?}");
            // Reads go on from the segments in memory, whatever the files say.
            assert_eq!(contents(&log, "swap"), old, "{step}");

            // The crash: a copy of the directory as the failure left it.
            let copy = crash_copy(dir.path());
            drop(log);
            let reopened = Log::open(copy.path(), config()).unwrap();
            let got = contents(&reopened, "swap");
            let want = if committed { &new } else { &old };
            assert_eq!(&got, want, "{step}");
            assert_eq!(
                leftovers(&copy.path().join("swap/0")),
                Vec::<String>::new(),
                "{step}"
            );
            // And the cleaner finishes the job from there.
            let summary = reopened.maintain().unwrap();
            assert!(summary.failures.is_empty(), "{step}: {summary:?}");
            assert_eq!(contents(&reopened, "swap"), new, "{step}");
            let p = reopened
                .topic("swap")
                .unwrap()
                .partition(0)
                .unwrap()
                .clone();
            assert_eq!(p.stats().segments, 2, "{step}: one cleaned + the active");
            reopened.close().unwrap();
            // The original directory (closed after the failure) recovers too.
            let original = Log::open(dir.path(), config()).unwrap();
            let got = contents(&original, "swap");
            assert_eq!(&got, want, "{step} (closed)");
        }
    }
}
