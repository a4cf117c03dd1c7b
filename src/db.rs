//! [`Log`]: the public handle on a data directory.
//!
//! Handle → shared → state: `Log` is a cheap clone of an `Arc<LogHandle>`
//! whose drop (the last clone going away) closes the log; background
//! threads hold only `Arc<LogShared>`, so they never keep the log open.

use crossbeam_channel::Sender;
use parking_lot::{Mutex, RwLock};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use crate::config::{CleanupPolicy, Clock, Durability, LogConfig, TopicConfig};
use crate::consumer::{Consumer, ConsumerConfig};
use crate::error::{Error, Result};
use crate::group::coordinator::Coordinator;
use crate::group::offsets::{self, OFFSETS_TOPIC};
use crate::group::progress::{self, Progress};
use crate::io::DirLock;
use crate::log::PartitionRecovery;
use crate::maintenance::{CleanerStats, Maintenance, MaintenanceSummary};
use crate::partition::{OpenContext, PartitionShared};
use crate::producer::Producer;
use crate::queue::persist::STATE_TOPIC;
use crate::queue::share::QueueRegistry;
use crate::topic::{Topic, TopicShared, validate_topic_name};
use crate::worker::{Flusher, Job, PartitionSource};

/// Present only between a clean `close` and the next `open` (Kafka's
/// `.kafka_cleanshutdown`): its presence lets `open` trust every file.
const CLEAN_SHUTDOWN_FILE: &str = ".clean_shutdown";
/// Names the directory's format version, so a future format is refused.
const META_FILE: &str = "logbus.meta";
const META_KIND: &str = "meta";
/// On-disk format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Directories being created or deleted carry this prefix, which no valid
/// topic name has; `open` removes any left by a crash.
const TRANSIENT_PREFIX: char = '~';

/// What `Log::open` found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The previous session closed cleanly, so nothing was scanned.
    pub clean_shutdown: bool,
    /// The previous session ended without a clean close and the machine has
    /// restarted since (power loss or kernel crash): damage in the active
    /// segment was then treated as unsynced writes and cut, even with valid
    /// batches after it (see docs/FORMAT.md, "Recovery rules").
    pub after_reboot: bool,
    /// Per partition: `(topic, partition, what was done)`. Partitions that
    /// needed nothing are included too.
    pub partitions: Vec<(String, u32, PartitionRecovery)>,
    /// Half-created or half-deleted topic directories removed.
    pub removed_dirs: Vec<String>,
}

impl RecoveryReport {
    /// Total bytes truncated from torn tails.
    pub fn truncated_bytes(&self) -> u64 {
        self.partitions
            .iter()
            .map(|(_, _, r)| r.truncated_bytes)
            .sum()
    }

    /// Number of segments whose indexes were rebuilt.
    pub fn indexes_rebuilt(&self) -> usize {
        self.partitions
            .iter()
            .map(|(_, _, r)| r.indexes_rebuilt)
            .sum()
    }
}

/// An open data directory: topics, partitions, producers and consumers.
///
/// `Log` is `Send + Sync` and cheap to clone; every clone is the same log.
/// It closes when [`close`](Log::close) is called or the last clone drops.
///
/// ```
/// use logbus::{Log, LogConfig, Record, TopicConfig};
/// # let dir = std::env::temp_dir().join(format!("logbus-doc-{}", std::process::id()));
/// let log = Log::open(&dir, LogConfig::default())?;
/// log.create_topic("events", TopicConfig::new(2))?;
/// let meta = log.producer("events")?.send(Record::new("hello").key("k"))?;
/// assert_eq!(meta.offset, 0);
/// log.close()?;
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), logbus::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Log {
    handle: Arc<LogHandle>,
}

#[derive(Debug)]
struct LogHandle {
    shared: Arc<LogShared>,
    flusher: Mutex<Flusher>,
    maintenance: Maintenance,
}

#[derive(Debug)]
pub(crate) struct LogShared {
    dir: PathBuf,
    config: LogConfig,
    topics: RwLock<BTreeMap<String, Topic>>,
    lock: Mutex<Option<DirLock>>,
    closed: AtomicBool,
    flush_jobs: Sender<Job>,
    /// Wakes the maintenance thread when a segment is sealed.
    maintenance_wake: Sender<()>,
    recovery: RecoveryReport,
    coordinator: Coordinator,
    queues: QueueRegistry,
    progress: Progress,
    /// When consumer progress last woke the maintenance thread (clock ms).
    last_consumed_pass: AtomicI64,
}

impl Log {
    /// Opens (or creates) the data directory `dir` and locks it.
    ///
    /// # Errors
    /// [`Error::Locked`] if another `Log` has it open (this process or
    /// another); [`Error::UnsupportedVersion`] if a newer logbus wrote it;
    /// [`Error::Corrupt`] if recovery finds damage it must not repair.
    pub fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<Log> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let lock = DirLock::acquire(&dir)?;
        check_or_write_meta(&dir)?;

        let marker = dir.join(CLEAN_SHUTDOWN_FILE);
        let clean = marker.exists();
        if clean {
            // Before any file changes (opening a partition re-extends its
            // active segment and indexes): a process killed during this open
            // must not leave the marker vouching for files it has touched.
            std::fs::remove_file(&marker).map_err(|e| Error::io(&marker, e))?;
            crate::io::fsync_dir(&dir)?;
        }
        let boot = BootId::check(&dir);
        let after_reboot = !clean && boot.changed;
        let (flush_tx, flush_rx) = crossbeam_channel::unbounded();
        // One pending wake-up is enough: a pass looks at every partition.
        let (wake_tx, wake_rx) = crossbeam_channel::bounded(1);
        let mut recovery = RecoveryReport {
            clean_shutdown: clean,
            after_reboot,
            ..RecoveryReport::default()
        };
        let ctx = OpenContext {
            durability: config.durability,
            clock: &config.clock,
            clean,
            after_reboot,
            flusher: &flush_tx,
            maintenance: Some(&wake_tx),
        };
        let mut topics = BTreeMap::new();
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            if name.starts_with(TRANSIENT_PREFIX) {
                std::fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
                recovery.removed_dirs.push(name);
            } else if validate_topic_name(&name).is_ok() {
                names.push(name);
            }
        }
        names.sort();
        for name in names {
            let (shared, parts) = TopicShared::open(&name, dir.join(&name), &ctx)?;
            for (id, r) in parts {
                recovery.partitions.push((name.clone(), id, r));
            }
            topics.insert(name, Topic { shared });
        }
        let committed = match topics.get(OFFSETS_TOPIC) {
            Some(topic) => offsets::load(&topic.partitions()[0].shared)?,
            None => Default::default(),
        };
        boot.record(&dir)?;

        let shared = Arc::new(LogShared {
            dir,
            config,
            topics: RwLock::new(topics),
            lock: Mutex::new(Some(lock)),
            closed: AtomicBool::new(false),
            flush_jobs: flush_tx.clone(),
            maintenance_wake: wake_tx,
            recovery,
            coordinator: Coordinator::new(committed),
            queues: QueueRegistry::default(),
            progress: Progress::default(),
            last_consumed_pass: AtomicI64::new(i64::MIN),
        });
        let interval = match shared.config.durability {
            Durability::Interval(every) => Some(every),
            _ => None,
        };
        let source: Arc<dyn PartitionSource> = Arc::clone(&shared) as _;
        let flusher = Flusher::start(flush_rx, flush_tx, interval, Arc::clone(&source))?;
        let c = &shared.config;
        let maintenance = Maintenance::start(
            Arc::clone(&c.clock),
            source,
            c.cleaner_map_bytes,
            wake_rx,
            c.background_maintenance,
        )?;
        // Consumed retention: a segment all of a topic's named consumers
        // are past can go (weak: the thread must not keep the log alive).
        let weak = Arc::downgrade(&shared);
        maintenance.set_retention_floor(Some(Arc::new(move |topic: &str, partition| {
            let shared = weak.upgrade()?;
            // IMPORTANT: never wait for the topics lock here. The pass calls
            // this while it holds the partition, and `delete_topic` waits
            // for the partition's maintenance while holding that lock
            // (a deadlock). During a topic deletion nothing is deleted as
            // consumed; the next pass catches up.
            let topic = shared.try_topic(topic)?;
            progress::consumed_floor(&shared, &topic, partition, progress::Locking::Try)
        })));
        Ok(Log {
            handle: Arc::new(LogHandle {
                shared,
                flusher: Mutex::new(flusher),
                maintenance,
            }),
        })
    }

    pub(crate) fn shared(&self) -> &Arc<LogShared> {
        &self.handle.shared
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.handle.shared.dir
    }

    /// What opening the log found and repaired.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.handle.shared.recovery
    }

    /// The durability mode the log was opened with.
    pub fn durability(&self) -> Durability {
        self.handle.shared.config.durability
    }

    /// Creates a topic.
    ///
    /// # Errors
    /// [`Error::InvalidName`], [`Error::InvalidConfig`], [`Error::TopicExists`].
    pub fn create_topic(&self, name: &str, config: TopicConfig) -> Result<Topic> {
        validate_topic_name(name)?;
        refuse_internal(name)?;
        config.validate()?;
        let s = self.shared();
        s.check_open()?;
        s.create_topic_locked(&mut s.topics.write(), name, config)
    }

    /// A topic by name.
    ///
    /// # Errors
    /// [`Error::UnknownTopic`].
    pub fn topic(&self, name: &str) -> Result<Topic> {
        let s = self.shared();
        s.check_open()?;
        s.topic(name)
    }

    /// Names of all topics, sorted (internal topics such as
    /// `__consumer_offsets` are not listed, but [`topic`](Log::topic)
    /// opens them for reading).
    pub fn topics(&self) -> Vec<String> {
        self.shared()
            .topics
            .read()
            .keys()
            .filter(|name| !is_internal(name))
            .cloned()
            .collect()
    }

    /// Deletes a topic and its data. Handles on it fail from then on
    /// (appends with [`Error::Closed`]); records already read stay valid.
    ///
    /// # Errors
    /// [`Error::UnknownTopic`]; [`Error::InvalidName`] for an internal topic.
    pub fn delete_topic(&self, name: &str) -> Result<()> {
        refuse_internal(name)?;
        let s = self.shared();
        s.check_open()?;
        let mut topics = s.topics.write();
        let topic = topics.remove(name).ok_or_else(|| Error::UnknownTopic {
            topic: name.to_string(),
        })?;
        topic.shared.abandon();
        let doomed = s.dir.join(transient_name("deleted"));
        std::fs::rename(topic.shared.dir(), &doomed).map_err(|e| Error::io(&doomed, e))?;
        crate::io::fsync_dir(&s.dir)?;
        // Unlinking is safe under live maps: the inodes live until unmapped.
        std::fs::remove_dir_all(&doomed).map_err(|e| Error::io(&doomed, e))?;
        drop(topics);
        s.forget_topic_in_groups(name)
    }

    /// A producer for `topic`.
    ///
    /// # Errors
    /// [`Error::UnknownTopic`].
    pub fn producer(&self, topic: &str) -> Result<Producer> {
        refuse_internal(topic)?;
        let topic = self.topic(topic)?;
        let gate = progress::Gate::for_topic(self.shared(), &topic);
        Ok(Producer::new(topic, Arc::clone(&self.shared().config.clock)).with_gate(gate))
    }

    /// A standalone consumer (assign partitions to it, then poll).
    pub fn consumer(&self, config: ConsumerConfig) -> Consumer {
        Consumer::new(self.clone(), config)
    }

    /// Whether [`close`](Log::close) was called (on any clone).
    pub fn is_closed(&self) -> bool {
        self.shared().closed.load(Ordering::Acquire)
    }

    /// Flushes, stops background threads, closes every partition (trimming
    /// preallocated files), marks a clean shutdown and releases the lock.
    /// Other clones of this `Log` get [`Error::Closed`] afterwards.
    ///
    /// # Errors
    /// The first I/O error met; the lock is released regardless.
    pub fn close(&self) -> Result<()> {
        self.handle.close()
    }

    /// Runs one maintenance pass now, as the background thread does:
    /// time-based rolls, retention, then compaction, for every partition.
    /// Waits for a pass already in progress.
    ///
    /// ```
    /// use logbus::{CleanupPolicy, Log, LogConfig, Record, TopicConfig};
    /// # let dir = std::env::temp_dir().join(format!("logbus-doc-maintain-{}", std::process::id()));
    /// // No background thread, so the pass below is the one that cleans.
    /// let log = Log::open(&dir, LogConfig::default().background_maintenance(false))?;
    /// let topic = log.create_topic("kv", TopicConfig::new(1)
    ///     .cleanup_policy(CleanupPolicy::Compact)
    ///     .min_cleanable_dirty_ratio(0.0))?;
    /// let producer = log.producer("kv")?;
    /// producer.send(Record::new("v1").key("k"))?;
    /// producer.send(Record::new("v2").key("k"))?;
    /// topic.partition(0)?.roll()?; // only sealed segments are cleaned
    /// let summary = log.maintain()?;
    /// assert_eq!(summary.records_removed, 1);
    /// let left = topic.partition(0)?.read(0, 10)?;
    /// assert_eq!((left[0].offset, left[0].value.as_deref()), (1, Some(&b"v2"[..])));
    /// # drop(log); std::fs::remove_dir_all(&dir).ok();
    /// # Ok::<(), logbus::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Closed`]. Failures in single partitions are listed in the
    /// summary's `failures`.
    pub fn maintain(&self) -> Result<MaintenanceSummary> {
        self.shared().check_open()?;
        Ok(self.handle.maintenance.run_pass())
    }

    /// Installs the retention floor: `(topic, partition) -> lowest offset
    /// some consumer group still needs` (see `maintenance`'s module docs).
    /// Sealed segments wholly below it are deleted as consumed.
    #[allow(dead_code, reason = "consumer-group retention plugs in here")]
    pub(crate) fn set_retention_floor(&self, floor: Option<crate::maintenance::RetentionFloor>) {
        self.handle.maintenance.set_retention_floor(floor);
    }

    /// The log cleaner's figures since the log was opened.
    ///
    /// ```
    /// # use logbus::{Log, LogConfig};
    /// # let dir = std::env::temp_dir().join(format!("logbus-doc-cstats-{}", std::process::id()));
    /// let log = Log::open(&dir, LogConfig::default())?;
    /// let stats = log.cleaner_stats();
    /// assert_eq!((stats.runs, stats.bytes_read), (0, 0)); // nothing compacted yet
    /// # drop(log); std::fs::remove_dir_all(&dir).ok();
    /// # Ok::<(), logbus::Error>(())
    /// ```
    pub fn cleaner_stats(&self) -> CleanerStats {
        self.handle.maintenance.stats()
    }
}

impl LogHandle {
    fn close(&self) -> Result<()> {
        let s = &self.shared;
        if s.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        // Producers blocked by back-pressure give up now.
        s.progress.advanced();
        // First: no pass may touch a partition while it closes.
        self.maintenance.stop();
        let mut result = Ok(());
        for topic in s.topics.read().values() {
            if let Err(e) = topic.shared.close() {
                result = result.and(Err(e));
            }
        }
        // After the partitions: no roll can queue a job any more, and the
        // flusher finishes the queued ones before it stops.
        self.flusher.lock().stop();
        // Unmap what no user handle still holds.
        s.topics.write().clear();
        if result.is_ok() {
            let marker = s.dir.join(CLEAN_SHUTDOWN_FILE);
            result = crate::io::write_atomic(&marker, b"");
        }
        s.lock.lock().take();
        result
    }
}

impl Drop for LogHandle {
    fn drop(&mut self) {
        // Errors here have nowhere to go; `close()` reports them.
        let _ = self.close();
    }
}

impl PartitionSource for LogShared {
    fn partitions(&self) -> Vec<Arc<PartitionShared>> {
        let topics = self.topics.read();
        topics
            .values()
            .flat_map(|t| t.shared.partition_shareds().cloned())
            .collect()
    }
}

impl LogShared {
    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    pub(crate) fn clock(&self) -> &Arc<dyn Clock> {
        &self.config.clock
    }

    pub(crate) fn coordinator(&self) -> &Coordinator {
        &self.coordinator
    }

    /// Number of partitions of `topic`, `None` if it does not exist.
    pub(crate) fn partition_count(&self, topic: &str) -> Option<u32> {
        let topics = self.topics.read();
        topics.get(topic).map(|t| t.partitions().len() as u32)
    }

    /// Groups drop a deleted topic: its committed offsets are deleted
    /// (as Kafka does) and subscribed groups rebalance without it.
    fn forget_topic_in_groups(&self, topic: &str) -> Result<()> {
        let lookup = |t: &str| self.partition_count(t);
        let forgotten = self.coordinator.topic_deleted(topic, &lookup);
        if forgotten.is_empty() {
            return Ok(());
        }
        let records: Vec<crate::record::Record> = forgotten
            .iter()
            .flat_map(|(group, tps)| {
                tps.iter()
                    .map(move |tp| offsets::commit_record(group, tp, None))
            })
            .collect();
        let store = self.offsets_partition()?;
        let end = offsets::append(&store, &records, self.config.clock.now_ms())?;
        offsets::sync(&store, end)
    }

    /// The partition of `__consumer_offsets`, created on first use.
    pub(crate) fn offsets_partition(&self) -> Result<Arc<PartitionShared>> {
        // Compacted, so it keeps one record per group and partition; small
        // segments, so compaction can start early.
        self.internal_partition(OFFSETS_TOPIC)
    }

    /// The partition of `__work_queue_state`, created on first use.
    pub(crate) fn queue_state_partition(&self) -> Result<Arc<PartitionShared>> {
        self.internal_partition(STATE_TOPIC)
    }

    pub(crate) fn queues(&self) -> &QueueRegistry {
        &self.queues
    }

    /// Where work queue `name` starts on `topic`/`partition`: `Some(None)`
    /// if no such queue is open on that topic, `None` if a lock was busy
    /// under `Locking::Try`.
    pub(crate) fn queue_start(
        &self,
        name: &str,
        topic: &str,
        partition: u32,
        locking: progress::Locking,
    ) -> Option<Option<u64>> {
        let registry = match locking {
            progress::Locking::Wait => self.queues.lock(),
            progress::Locking::Try => self.queues.try_lock()?,
        };
        let Some(queue) = registry.get(name).and_then(std::sync::Weak::upgrade) else {
            return Some(None);
        };
        drop(registry);
        if queue.topic.name() != topic {
            return Some(None);
        }
        queue.start_offset(partition, locking).map(Some)
    }

    pub(crate) fn progress(&self) -> &Progress {
        &self.progress
    }

    /// A consumer moved forward on `topic`: producers blocked by
    /// back-pressure re-check, and, if the topic waits for its consumers,
    /// the maintenance thread runs a pass soon (at most every
    /// `CONSUMED_PASS_EVERY`, so a fast committer does not keep it busy).
    pub(crate) fn consumer_progressed(&self, topic: &str) {
        self.progress.advanced();
        let waits = self
            .topic(topic)
            .is_ok_and(|t| !t.config().consumers.is_empty());
        if !waits {
            return;
        }
        let now = self.config.clock.now_ms();
        let last = self.last_consumed_pass.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= CONSUMED_PASS_EVERY_MS
            && self
                .last_consumed_pass
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            // Full means a pass is already due.
            let _ = self.maintenance_wake.try_send(());
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// A producer on `topic` (internal users: no reserved-name check).
    pub(crate) fn producer_for(&self, topic: &Topic) -> Producer {
        Producer::new(topic.clone(), Arc::clone(&self.config.clock))
    }

    /// Partition 0 of an internal topic (one partition, compacted, 64 MiB
    /// segments), created on first use.
    fn internal_partition(&self, name: &str) -> Result<Arc<PartitionShared>> {
        self.check_open()?;
        if let Ok(topic) = self.topic(name) {
            return Ok(Arc::clone(&topic.partitions()[0].shared));
        }
        let mut topics = self.topics.write();
        let topic = match topics.get(name) {
            Some(topic) => topic.clone(), // another thread won the race
            None => {
                let config = TopicConfig::new(1)
                    .cleanup_policy(CleanupPolicy::Compact)
                    .segment_bytes(64 << 20)
                    .max_record_bytes(8 << 20);
                self.create_topic_locked(&mut topics, name, config)?
            }
        };
        Ok(Arc::clone(&topic.partitions()[0].shared))
    }

    /// Creates a topic; the caller holds the topics lock and has validated
    /// name and config.
    fn create_topic_locked(
        &self,
        topics: &mut BTreeMap<String, Topic>,
        name: &str,
        config: TopicConfig,
    ) -> Result<Topic> {
        if topics.contains_key(name) {
            return Err(Error::TopicExists {
                topic: name.to_string(),
            });
        }
        // Build under a transient name, then rename: a crash leaves either
        // no topic or a whole one.
        // A short unique name: `~creating-` + a 249-character topic name
        // would pass the 255-byte limit of a file name.
        let staging = self.dir.join(transient_name("creating"));
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;
        }
        TopicShared::write_new(&staging, &config)?;
        crate::io::fsync_dir(&staging)?;
        let final_dir = self.dir.join(name);
        std::fs::rename(&staging, &final_dir).map_err(|e| Error::io(&final_dir, e))?;
        crate::io::fsync_dir(&self.dir)?;
        let ctx = OpenContext {
            durability: self.config.durability,
            clock: &self.config.clock,
            clean: true,
            after_reboot: false,
            flusher: &self.flush_jobs,
            maintenance: Some(&self.maintenance_wake),
        };
        let (shared, _) = TopicShared::open(name, final_dir.clone(), &ctx)?;
        // Opening created each partition's first segment: make those
        // directory entries durable before any send can be acknowledged.
        for p in 0..config.partitions {
            crate::io::fsync_dir(&final_dir.join(p.to_string()))?;
        }
        let topic = Topic { shared };
        topics.insert(name.to_string(), topic.clone());
        Ok(topic)
    }

    /// The topic, unless it is unknown or the topics lock is held for
    /// writing (a topic being created or deleted) right now.
    fn try_topic(&self, name: &str) -> Option<Topic> {
        self.topics.try_read()?.get(name).cloned()
    }

    pub(crate) fn topic(&self, name: &str) -> Result<Topic> {
        self.topics
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::UnknownTopic {
                topic: name.to_string(),
            })
    }
}

/// Least time between two maintenance passes started by consumer progress.
const CONSUMED_PASS_EVERY_MS: i64 = 250;

/// Topics logbus keeps for itself; users read them but never write or
/// delete them.
const INTERNAL_TOPICS: [&str; 2] = [OFFSETS_TOPIC, STATE_TOPIC];

fn is_internal(name: &str) -> bool {
    INTERNAL_TOPICS.contains(&name)
}

fn refuse_internal(name: &str) -> Result<()> {
    if is_internal(name) {
        Err(Error::InvalidName {
            name: name.to_string(),
            reason: "reserved for logbus's internal use",
        })
    } else {
        Ok(())
    }
}

/// `~<what>-<pid>-<n>`: unique within the directory (it is locked by this
/// process) and short whatever the topic name.
fn transient_name(what: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{TRANSIENT_PREFIX}{what}-{}-{n}", std::process::id())
}

/// Which boot of the machine last opened the directory (Linux's
/// `/proc/sys/kernel/random/boot_id`, stored in `.boot_id`). It tells a
/// process crash, after which the page cache still holds every write, from
/// a power loss or kernel crash, after which unsynced writes may be lost.
struct BootId {
    current: Option<String>,
    stored: Option<String>,
    changed: bool,
}

impl BootId {
    const FILE: &'static str = ".boot_id";

    fn check(dir: &Path) -> BootId {
        let current = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .map(|s| s.trim().to_string());
        let stored = std::fs::read_to_string(dir.join(Self::FILE))
            .ok()
            .map(|s| s.trim().to_string());
        // Unknown either way: assume no reboot, the strict reading.
        let changed = matches!((&current, &stored), (Some(c), Some(s)) if c != s);
        BootId {
            current,
            stored,
            changed,
        }
    }

    /// Records this boot (once per boot), replacing the file atomically: a
    /// crash mid-write must not leave an id that reads as "rebooted".
    fn record(&self, dir: &Path) -> Result<()> {
        match &self.current {
            Some(current) if self.stored.as_ref() != Some(current) => {
                crate::io::write_atomic(&dir.join(Self::FILE), current.as_bytes())
            }
            _ => Ok(()),
        }
    }
}

fn check_or_write_meta(dir: &Path) -> Result<()> {
    let path = dir.join(META_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            crate::io::decode_props(&path, &bytes, META_KIND, FORMAT_VERSION)?;
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let pairs = [("format", FORMAT_VERSION.to_string())];
            let bytes = crate::io::encode_props(META_KIND, FORMAT_VERSION, &pairs)?;
            crate::io::write_atomic(&path, &bytes)
        }
        Err(e) => Err(Error::io(&path, e)),
    }
}

#[cfg(test)]
mod tests {
    use crate::testutil::{TempDir, crash_copy};
    use crate::{Durability, Error, Log, LogConfig, Record, TopicConfig};

    /// After a failed fsync, `close` must not mark the shutdown clean: the
    /// next open would then trust pages the kernel may have dropped.
    #[test]
    fn close_after_a_failed_fsync_is_an_error_and_not_clean() {
        let dir = TempDir::new();
        let config = || LogConfig::default().durability(Durability::Always);
        let log = Log::open(dir.path(), config()).unwrap();
        log.create_topic("closepoison", TopicConfig::new(1))
            .unwrap();
        let producer = log.producer("closepoison").unwrap();
        producer.send(Record::new("a")).unwrap();
        crate::io::failpoints::fail_next_sync("closepoison/0/");
        assert!(producer.send(Record::new("b")).is_err());
        assert!(matches!(log.close(), Err(Error::Poisoned { .. })));
        drop((producer, log));
        let log = Log::open(dir.path(), config()).unwrap();
        assert!(!log.recovery_report().clean_shutdown);
    }

    /// After a crash, recovered data may be in the page cache only: the
    /// first flush must sync it (observed through a failing fsync).
    #[test]
    fn first_flush_after_a_crash_syncs_recovered_data() {
        let dir = TempDir::new();
        let copy = {
            let log = Log::open(dir.path(), LogConfig::default()).unwrap();
            log.create_topic("crashflush", TopicConfig::new(1)).unwrap();
            log.producer("crashflush")
                .unwrap()
                .send(Record::new("a"))
                .unwrap();
            // A copy taken while the log is open looks like a crash.
            crash_copy(dir.path())
        };
        let log = Log::open(copy.path(), LogConfig::default()).unwrap();
        assert!(!log.recovery_report().clean_shutdown);
        let p = log
            .topic("crashflush")
            .unwrap()
            .partition(0)
            .unwrap()
            .clone();
        crate::io::failpoints::fail_next_sync(&format!("{}/crashflush/0/", copy.path().display()));
        assert!(
            p.flush().is_err(),
            "flush did not sync the recovered segment"
        );
    }
}
