//! Background maintenance: one thread per `Log` that rolls idle segments
//! (`segment_ms`), deletes old ones (retention) and compacts (the log
//! cleaner), plus [`Log::maintain`](crate::Log::maintain) to run a pass now.
//!
//! The thread sleeps until the next thing is due — the earliest time-based
//! roll, segment expiry or tombstone expiry of any partition, computed by
//! each pass — or until a partition seals a segment (retention by size and
//! the dirty ratio only change then), and at least once an hour (the due
//! times are wall-clock; the sleep is not). An idle log therefore costs
//! next to no CPU: one cheap pass an hour, no polling interval.
//!
//! Decisions are the pure policies in `retention` and `compaction`; the
//! changes to segments are `PartitionShared`'s (`partition::upkeep`).
//!
//! # The retention floor hook
//! `Log::set_retention_floor` (crate-internal) installs a function
//! `(topic, partition) -> Option<u64>`: the lowest offset some consumer
//! group still needs there. Retention deletes sealed segments that lie
//! wholly below it (reason "consumed"); `None` means no such rule. Consumer
//! groups (work-queue retention, producer back-pressure) plug in here.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Mutex, RwLock};

use crate::config::{CleanupPolicy, Clock};
use crate::error::{Error, Result};
use crate::partition::{PartitionShared, segment_meta};
use crate::retention::{self, Rules, SegmentMeta};
use crate::worker::PartitionSource;

/// How long the thread waits before retrying after a failed pass.
const RETRY_AFTER: Duration = Duration::from_secs(30);
/// Longest sleep: due times are wall-clock milliseconds, the sleep is
/// monotonic, so a wall clock set forward is noticed within this; it also
/// keeps far-future deadlines (retention of years) from overflowing.
const MAX_SLEEP: Duration = Duration::from_secs(3600);

/// `(topic, partition) -> lowest offset still needed`; see the module docs.
pub(crate) type RetentionFloor = Arc<dyn Fn(&str, u32) -> Option<u64> + Send + Sync>;

/// What one maintenance pass did (returned by [`Log::maintain`](crate::Log::maintain)).
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct MaintenanceSummary {
    /// Idle active segments rolled because `segment_ms` passed.
    pub segments_rolled: u64,
    /// Sealed segments deleted by retention.
    pub segments_deleted: u64,
    /// Bytes those segments held.
    pub bytes_deleted: u64,
    /// Partitions the cleaner compacted.
    pub partitions_cleaned: u64,
    /// Sealed segments the cleaner replaced.
    pub segments_cleaned: u64,
    /// Records the cleaner removed (superseded values, expired tombstones).
    pub records_removed: u64,
    /// Partitions where a step failed, with the error. The pass goes on
    /// with the other partitions; a partition whose files and memory may
    /// disagree after a failure is left alone until the log is reopened.
    pub failures: Vec<(String, u32, Error)>,
    /// Clock time (ms) at which something is next due, if anything is.
    pub next_due_ms: Option<i64>,
}

/// The cleaner's figures since the log was opened ([`Log::cleaner_stats`](crate::Log::cleaner_stats)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CleanerStats {
    /// Partition cleanings that ran (at least one map pass).
    pub runs: u64,
    /// Map passes (more than one per run when the keys did not fit the map).
    pub passes: u64,
    /// Batch bytes read (building the map and rewriting).
    pub bytes_read: u64,
    /// Bytes written to cleaned segments.
    pub bytes_written: u64,
    /// Records read while rewriting.
    pub records_read: u64,
    /// Records removed.
    pub records_removed: u64,
    /// Distinct keys put in the map, summed over passes.
    pub keys: u64,
    /// Time spent cleaning, in total.
    pub duration: Duration,
    /// Time the last cleaning took.
    pub last_duration: Duration,
    /// Clock time (ms since the epoch) when the last cleaning started.
    pub last_run_ms: Option<i64>,
}

/// State shared by the thread and `Log::maintain`.
struct Inner {
    clock: Arc<dyn Clock>,
    source: Arc<dyn PartitionSource>,
    map_bytes: usize,
    /// One pass at a time, whoever runs it. Holds true once stopped: no
    /// pass may start after `stop` (the partitions are closing).
    pass_lock: Mutex<bool>,
    stats: Mutex<CleanerStats>,
    floor: RwLock<Option<RetentionFloor>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Maintenance")
            .field("map_bytes", &self.map_bytes)
            .finish_non_exhaustive()
    }
}

/// Handle on the maintenance thread (if running) and its state.
#[derive(Debug)]
pub(crate) struct Maintenance {
    inner: Arc<Inner>,
    /// Dropping it stops the thread.
    stop: Mutex<Option<Sender<()>>>,
    handle: Mutex<Option<JoinHandle<()>>>,
}

impl Maintenance {
    /// Starts the thread (unless `background` is false). `wake` receives a
    /// message whenever a partition seals a segment.
    pub fn start(
        clock: Arc<dyn Clock>,
        source: Arc<dyn PartitionSource>,
        map_bytes: usize,
        wake: Receiver<()>,
        background: bool,
    ) -> Result<Maintenance> {
        let inner = Arc::new(Inner {
            clock,
            source,
            map_bytes,
            pass_lock: Mutex::new(false),
            stats: Mutex::new(CleanerStats::default()),
            floor: RwLock::new(None),
        });
        if !background {
            return Ok(Maintenance {
                inner,
                stop: Mutex::new(None),
                handle: Mutex::new(None),
            });
        }
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let thread_inner = Arc::clone(&inner);
        let handle = std::thread::Builder::new()
            .name("logbus-maintenance".into())
            .spawn(move || run(&thread_inner, &wake, &stop_rx))
            .map_err(|e| Error::io("logbus-maintenance", e))?;
        Ok(Maintenance {
            inner,
            stop: Mutex::new(Some(stop_tx)),
            handle: Mutex::new(Some(handle)),
        })
    }

    /// Runs one pass now (waits for a pass in progress to finish first).
    pub fn run_pass(&self) -> MaintenanceSummary {
        self.inner.pass()
    }

    pub fn stats(&self) -> CleanerStats {
        *self.inner.stats.lock()
    }

    /// Installs the retention floor hook (see the module docs).
    pub fn set_retention_floor(&self, floor: Option<RetentionFloor>) {
        *self.inner.floor.write() = floor;
    }

    /// Stops and joins the thread, then waits for a `maintain` call in
    /// progress: after this no pass touches a partition.
    pub fn stop(&self) {
        drop(self.stop.lock().take());
        if let Some(handle) = self.handle.lock().take() {
            // A panicked thread has nothing left to clean up.
            let _ = handle.join();
        }
        *self.inner.pass_lock.lock() = true;
    }
}

fn run(inner: &Inner, wake: &Receiver<()>, stop: &Receiver<()>) {
    loop {
        let summary = inner.pass();
        let now = inner.clock.now_ms();
        let wait: Duration = if summary.failures.is_empty() {
            // At least 1 ms: something due that a pass could not do must not
            // turn this loop into a spin.
            let sleep = summary.next_due_ms.map(|due| {
                Duration::from_millis(u64::try_from(due.saturating_sub(now)).unwrap_or(0).max(1))
            });
            sleep.unwrap_or(MAX_SLEEP).min(MAX_SLEEP)
        } else {
            // A failing partition may stay "due": retry it later, not now.
            // (A sealed segment still wakes the thread earlier.)
            RETRY_AFTER
        };
        let timer = crossbeam_channel::after(wait);
        crossbeam_channel::select! {
            recv(stop) -> _ => return,
            recv(wake) -> msg => if msg.is_err() { return },
            recv(timer) -> _ => {}
        }
    }
}

impl Inner {
    fn pass(&self) -> MaintenanceSummary {
        let stopped = self.pass_lock.lock();
        let mut summary = MaintenanceSummary::default();
        if *stopped {
            return summary;
        }
        for p in self.source.partitions() {
            if p.is_closed() || p.upkeep_disabled() {
                continue;
            }
            match self.partition_pass(&p, &mut summary) {
                Ok(due) => {
                    if let Some(due) = due {
                        summary.next_due_ms =
                            Some(summary.next_due_ms.map_or(due, |d: i64| d.min(due)));
                    }
                }
                // Topic deleted or log closing meanwhile: not a failure.
                Err(_) if p.is_closed() => {}
                Err(e) => summary.failures.push((p.topic().to_string(), p.id(), e)),
            }
        }
        summary
    }

    /// Roll, retention and cleaning for one partition; returns when it next
    /// needs a pass.
    fn partition_pass(
        &self,
        p: &PartitionShared,
        summary: &mut MaintenanceSummary,
    ) -> Result<Option<i64>> {
        let _busy = p.upkeep_busy();
        if p.is_closed() {
            return Ok(None);
        }
        let now = self.clock.now_ms();
        let config = p.config();
        if p.roll_if_due(now)? {
            summary.segments_rolled += 1;
        }
        let mut due = p.roll_due();
        let mut earliest = |d: Option<i64>| {
            if let Some(d) = d {
                due = Some(due.map_or(d, |x: i64| x.min(d)));
            }
        };
        if matches!(
            config.cleanup_policy,
            CleanupPolicy::Delete | CleanupPolicy::CompactDelete
        ) {
            let floor = self
                .floor
                .read()
                .as_ref()
                .and_then(|f| f(p.topic(), p.id()));
            let rules = Rules {
                retention_ms: config.retention_ms,
                retention_bytes: config.retention_bytes,
                consumed_below: floor,
            };
            let (sealed, active) = p.sealed_segments();
            let metas: Vec<SegmentMeta> = sealed.iter().map(|s| segment_meta(s)).collect();
            if let retention::Plan::Delete { count, .. } =
                retention::plan(&metas, active, &rules, now)
            {
                summary.bytes_deleted += p.delete_oldest(&sealed[..count])?;
                summary.segments_deleted += count as u64;
            }
            let (left, _) = p.sealed_segments();
            let left: Vec<SegmentMeta> = left.iter().map(|s| segment_meta(s)).collect();
            earliest(retention::next_expiry(&left, &rules));
        }
        if matches!(
            config.cleanup_policy,
            CleanupPolicy::Compact | CleanupPolicy::CompactDelete
        ) {
            let started = Instant::now();
            let report = p.clean(self.map_bytes, now, config.min_cleanable_dirty_ratio)?;
            if report.passes > 0 {
                let took = started.elapsed();
                let mut stats = self.stats.lock();
                stats.runs += 1;
                stats.passes += report.passes;
                stats.bytes_read += report.bytes_read;
                stats.bytes_written += report.bytes_written;
                stats.records_read += report.records_read;
                stats.records_removed += report.records_removed;
                stats.keys += report.keys;
                stats.duration += took;
                stats.last_duration = took;
                stats.last_run_ms = Some(now);
                summary.partitions_cleaned += 1;
                summary.segments_cleaned += report.segments_replaced;
                summary.records_removed += report.records_removed;
            }
            earliest(p.cleaner_state().tombstone_due);
        }
        Ok(due)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use crate::testutil::TempDir;
    use crate::{Log, LogConfig, Record, TopicConfig};

    /// The floor hook: sealed segments wholly below the offset it returns
    /// are deleted ("consumed"), the rest stay, whatever time and size say.
    #[test]
    fn retention_floor_deletes_consumed_segments_only() {
        let dir = TempDir::new();
        let log = Log::open(
            dir.path(),
            LogConfig::default().background_maintenance(false),
        )
        .unwrap();
        let topic = log
            .create_topic(
                "q",
                TopicConfig::new(1)
                    .segment_bytes(4096)
                    .max_record_bytes(2048)
                    .retention_ms(None),
            )
            .unwrap();
        let p = topic.partition(0).unwrap().clone();
        let producer = log.producer("q").unwrap();
        for _ in 0..12 {
            producer.send(Record::new(vec![7u8; 1000])).unwrap();
        }
        let segments = p.stats().segments;
        assert!(segments >= 4);
        // No hook: nothing to do.
        assert_eq!(log.maintain().unwrap().segments_deleted, 0);

        let floor = Arc::new(AtomicU64::new(0));
        let seen = Arc::clone(&floor);
        log.set_retention_floor(Some(Arc::new(move |topic: &str, partition| {
            (topic == "q" && partition == 0).then(|| seen.load(Ordering::SeqCst))
        })));
        assert_eq!(log.maintain().unwrap().segments_deleted, 0);
        // Offset 4 lies in the second segment (three records each): only
        // the first is wholly consumed.
        floor.store(4, Ordering::SeqCst);
        assert_eq!(log.maintain().unwrap().segments_deleted, 1);
        assert_eq!(p.log_start_offset(), 3);
        floor.store(u64::MAX, Ordering::SeqCst);
        log.maintain().unwrap();
        assert_eq!(p.stats().segments, 1, "never the active segment");
        log.set_retention_floor(None);
    }
}
