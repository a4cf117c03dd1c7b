//! Options for a [`Log`](crate::Log) and for each topic.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use crate::error::{Error, Result};

/// When an acknowledged record is safe, and from what.
///
/// Every mode survives a crash of the *process*: a record is copied into a
/// shared memory map of the segment file before `send` returns, so it is in
/// the kernel's page cache. The modes differ on *power loss* (or a kernel crash).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `send` returns once the record is in the page cache. Survives a process
    /// crash; a power loss may lose whatever the kernel had not written back yet
    /// (Linux writes dirty pages back within about 30 s).
    #[default]
    Os,
    /// A background flusher calls `fdatasync` on every partition with new data
    /// at this interval. A power loss loses at most about one interval of
    /// acknowledged records. A failed flush poisons the partition.
    Interval(Duration),
    /// `send` returns only after `fdatasync` covered the record. Concurrent
    /// producers share one `fdatasync` (group commit). Survives power loss.
    Always,
}

/// A source of wall-clock time in milliseconds since the Unix epoch.
///
/// Record timestamps and time-based segment rolls read it, so tests can
/// inject a [`ManualClock`] and run deterministically.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        use std::time::{SystemTime, UNIX_EPOCH};
        // A clock before 1970 is a misconfigured machine, not a reason to panic.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to.
///
/// ```
/// use logbus::{Clock, ManualClock};
/// let clock = ManualClock::new(1_000);
/// clock.advance(std::time::Duration::from_millis(500));
/// assert_eq!(clock.now_ms(), 1_500);
/// ```
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock showing `now_ms`.
    pub fn new(now_ms: i64) -> Self {
        ManualClock(AtomicI64::new(now_ms))
    }
    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
    }
    /// Sets the clock.
    pub fn set(&self, now_ms: i64) {
        self.0.store(now_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Options for [`Log::open`](crate::Log::open).
///
/// ```
/// use logbus::{Durability, LogConfig};
/// let config = LogConfig::default().durability(Durability::Always);
/// assert_eq!(config.durability, Durability::Always);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LogConfig {
    /// How durable an acknowledged record is. Default [`Durability::Os`].
    pub durability: Durability,
    /// Where time comes from. Default [`SystemClock`].
    pub clock: Arc<dyn Clock>,
    /// Memory for the log cleaner's key → offset map (Kafka's
    /// `log.cleaner.dedupe.buffer.size`), default 32 MiB: 24 bytes per
    /// distinct key, filled to 90 %, about 1.25 M keys per pass. A log with
    /// more keys in its dirty section is cleaned in several passes.
    pub cleaner_map_bytes: usize,
    /// Run the background maintenance thread (retention, time-based roll,
    /// compaction). Default true; with false, only
    /// [`Log::maintain`](crate::Log::maintain) does that work.
    pub background_maintenance: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            durability: Durability::Os,
            clock: Arc::new(SystemClock),
            cleaner_map_bytes: 32 << 20,
            background_maintenance: true,
        }
    }
}

impl LogConfig {
    /// Sets the durability mode.
    #[must_use]
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Injects a clock (tests use [`ManualClock`]).
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Sets the cleaner's map memory.
    #[must_use]
    pub fn cleaner_map_bytes(mut self, bytes: usize) -> Self {
        self.cleaner_map_bytes = bytes;
        self
    }

    /// Turns the background maintenance thread on or off.
    #[must_use]
    pub fn background_maintenance(mut self, on: bool) -> Self {
        self.background_maintenance = on;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.cleaner_map_bytes < 1024 {
            return Err(Error::InvalidConfig {
                reason: "cleaner_map_bytes must be at least 1024".into(),
            });
        }
        if let Durability::Interval(d) = self.durability {
            if d.is_zero() {
                return Err(Error::InvalidConfig {
                    reason: "Durability::Interval needs a non-zero interval".into(),
                });
            }
        }
        Ok(())
    }
}

/// What happens to old data in a topic (Kafka's `cleanup.policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CleanupPolicy {
    /// Delete whole old segments by time and size.
    #[default]
    Delete,
    /// Keep the latest record per key.
    Compact,
    /// Compact, and also delete by time and size.
    CompactDelete,
}

impl CleanupPolicy {
    fn as_str(self) -> &'static str {
        match self {
            CleanupPolicy::Delete => "delete",
            CleanupPolicy::Compact => "compact",
            CleanupPolicy::CompactDelete => "compact,delete",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "delete" => Some(CleanupPolicy::Delete),
            "compact" => Some(CleanupPolicy::Compact),
            "compact,delete" | "delete,compact" => Some(CleanupPolicy::CompactDelete),
            _ => None,
        }
    }
}

/// Largest segment: index entries hold 32-bit file positions, as in Kafka.
pub const MAX_SEGMENT_BYTES: u64 = i32::MAX as u64;
/// Smallest segment accepted (small segments are useful in tests).
pub const MIN_SEGMENT_BYTES: u64 = 4096;
/// Most partitions a topic may have.
pub const MAX_PARTITIONS: u32 = 10_000;

/// A topic's options, stored with the topic (Kafka's topic configs).
///
/// ```
/// use logbus::TopicConfig;
/// let config = TopicConfig::new(8).segment_bytes(64 << 20).max_record_bytes(64 << 10);
/// assert_eq!(config.partitions, 8);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TopicConfig {
    /// Number of partitions (fixed at creation).
    pub partitions: u32,
    /// A segment rolls when the next batch would not fit (`segment.bytes`, default 128 MiB).
    pub segment_bytes: u64,
    /// A segment rolls once its first record is this old (`segment.ms`, default 7 days).
    pub segment_ms: Option<u64>,
    /// Largest encoded batch a single `send`/`send_batch` may write (`max.message.bytes`, default 1 MiB + 12 B).
    pub max_record_bytes: usize,
    /// Bytes of log between two sparse index entries (`index.interval.bytes`, default 4096).
    pub index_interval_bytes: u32,
    /// Delete, compact, or both (`cleanup.policy`).
    pub cleanup_policy: CleanupPolicy,
    /// Delete segments whose newest record is older than this (`retention.ms`, default 7 days; `None` keeps forever).
    pub retention_ms: Option<u64>,
    /// Delete oldest segments while a partition is larger than this (`retention.bytes`, default unlimited).
    pub retention_bytes: Option<u64>,
    /// How long compaction keeps tombstones (`delete.retention.ms`, default 1 day).
    pub delete_retention_ms: u64,
    /// Compact once this share of the log is dirty (`min.cleanable.dirty.ratio`, default 0.5).
    pub min_cleanable_dirty_ratio: f64,
    /// Consumer groups and work queues this topic waits for (not in Kafka):
    /// a sealed segment they have all consumed is deleted (`retention:
    /// consumed`, on top of time and size retention), and
    /// `max_unconsumed_bytes` counts from the slowest of them. A name that
    /// has consumed nothing yet holds everything. Default: none.
    pub consumers: Vec<String>,
    /// Producer back-pressure (not in Kafka): once a partition holds this
    /// many bytes its `consumers` have not consumed, `send` waits for them
    /// (up to the producer's `max_block`) and then fails with
    /// `Error::Backpressure`, instead of filling the disk. Needs `consumers`.
    pub max_unconsumed_bytes: Option<u64>,
}

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            partitions: 1,
            segment_bytes: 128 << 20,
            segment_ms: Some(7 * DAY_MS),
            max_record_bytes: (1 << 20) + 12,
            index_interval_bytes: 4096,
            cleanup_policy: CleanupPolicy::Delete,
            retention_ms: Some(7 * DAY_MS),
            retention_bytes: None,
            delete_retention_ms: DAY_MS,
            min_cleanable_dirty_ratio: 0.5,
            consumers: Vec::new(),
            max_unconsumed_bytes: None,
        }
    }
}

macro_rules! setter {
    ($(#[$doc:meta])* $name:ident: $ty:ty) => {
        $(#[$doc])*
        #[must_use]
        pub fn $name(mut self, $name: $ty) -> Self {
            self.$name = $name;
            self
        }
    };
}

impl TopicConfig {
    /// Defaults with this many partitions.
    pub fn new(partitions: u32) -> Self {
        TopicConfig {
            partitions,
            ..TopicConfig::default()
        }
    }

    setter!(/// Sets the partition count.
        partitions: u32);
    setter!(/// Sets the segment size.
        segment_bytes: u64);
    setter!(/// Sets the time-based roll.
        segment_ms: Option<u64>);
    setter!(/// Sets the largest batch.
        max_record_bytes: usize);
    setter!(/// Sets the index interval.
        index_interval_bytes: u32);
    setter!(/// Sets the cleanup policy.
        cleanup_policy: CleanupPolicy);
    setter!(/// Sets time retention.
        retention_ms: Option<u64>);
    setter!(/// Sets size retention.
        retention_bytes: Option<u64>);
    setter!(/// Sets tombstone retention.
        delete_retention_ms: u64);
    setter!(/// Sets the compaction trigger.
        min_cleanable_dirty_ratio: f64);
    setter!(/// Sets the back-pressure limit (needs `consumers`).
        max_unconsumed_bytes: Option<u64>);

    /// Names the consumer groups and work queues the topic waits for
    /// (consumed retention and back-pressure).
    ///
    /// ```
    /// use logbus::TopicConfig;
    /// // Delete a segment once both groups are past it; make producers
    /// // wait when billing falls 64 MiB behind.
    /// let config = TopicConfig::new(4)
    ///     .retention_ms(None)
    ///     .consumers(["billing", "shipping"])
    ///     .max_unconsumed_bytes(Some(64 << 20));
    /// assert_eq!(config.consumers, ["billing", "shipping"]);
    /// ```
    #[must_use]
    pub fn consumers<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.consumers = names.into_iter().map(Into::into).collect();
        self
    }

    /// Checks the values fit together.
    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |reason: String| Err(Error::InvalidConfig { reason });
        if self.partitions == 0 || self.partitions > MAX_PARTITIONS {
            return bad(format!(
                "partitions must be 1..={MAX_PARTITIONS}, got {}",
                self.partitions
            ));
        }
        if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&self.segment_bytes) {
            return bad(format!(
                "segment_bytes must be {MIN_SEGMENT_BYTES}..={MAX_SEGMENT_BYTES}, got {}",
                self.segment_bytes
            ));
        }
        if self.max_record_bytes < 128 || self.max_record_bytes as u64 > self.segment_bytes {
            return bad(format!(
                "max_record_bytes must be 128..=segment_bytes ({}), got {}",
                self.segment_bytes, self.max_record_bytes
            ));
        }
        if self.index_interval_bytes == 0 {
            return bad("index_interval_bytes must be > 0".into());
        }
        if self.segment_ms == Some(0) {
            return bad("segment_ms must be > 0".into());
        }
        if !(0.0..=1.0).contains(&self.min_cleanable_dirty_ratio) {
            return bad("min_cleanable_dirty_ratio must be within 0..=1".into());
        }
        for name in &self.consumers {
            // Stored as one comma-separated value of the config file.
            if name.is_empty() || name.contains([',', '\n', '\r', '=']) {
                return bad(format!(
                    "consumer name {name:?} must be non-empty, without ',', '=' or line breaks"
                ));
            }
        }
        if self.max_unconsumed_bytes.is_some() && self.consumers.is_empty() {
            return bad("max_unconsumed_bytes needs consumers to count from".into());
        }
        if self.max_unconsumed_bytes == Some(0) {
            return bad("max_unconsumed_bytes must be > 0".into());
        }
        Ok(())
    }

    /// The `key=value` pairs stored in the topic's config file.
    pub(crate) fn to_pairs(&self) -> Vec<(&'static str, String)> {
        let opt = |v: Option<u64>| v.map_or_else(|| "none".to_string(), |v| v.to_string());
        let mut pairs = vec![
            ("partitions", self.partitions.to_string()),
            ("segment.bytes", self.segment_bytes.to_string()),
            ("segment.ms", opt(self.segment_ms)),
            ("max.message.bytes", self.max_record_bytes.to_string()),
            (
                "index.interval.bytes",
                self.index_interval_bytes.to_string(),
            ),
            ("cleanup.policy", self.cleanup_policy.as_str().to_string()),
            ("retention.ms", opt(self.retention_ms)),
            ("retention.bytes", opt(self.retention_bytes)),
            ("delete.retention.ms", self.delete_retention_ms.to_string()),
            (
                "min.cleanable.dirty.ratio",
                self.min_cleanable_dirty_ratio.to_string(),
            ),
        ];
        // Written only when set, so topics that do not use them stay
        // readable by builds that predate them.
        if !self.consumers.is_empty() {
            pairs.push(("consumers", self.consumers.join(",")));
        }
        if self.max_unconsumed_bytes.is_some() {
            pairs.push(("max.unconsumed.bytes", opt(self.max_unconsumed_bytes)));
        }
        pairs
    }

    /// Rebuilds a config from stored pairs. Unknown keys are an error: they
    /// mean a newer logbus wrote the file, and ignoring a setting (say a
    /// retention rule) could delete data the user meant to keep.
    pub(crate) fn from_pairs(pairs: &[(String, String)]) -> std::result::Result<Self, String> {
        fn num<T: std::str::FromStr>(k: &str, v: &str) -> std::result::Result<T, String> {
            v.parse().map_err(|_| format!("bad value {v:?} for {k}"))
        }
        fn opt(k: &str, v: &str) -> std::result::Result<Option<u64>, String> {
            if v == "none" {
                Ok(None)
            } else {
                num(k, v).map(Some)
            }
        }
        let mut c = TopicConfig::default();
        for (k, v) in pairs {
            let (k, v) = (k.as_str(), v.as_str());
            match k {
                "partitions" => c.partitions = num(k, v)?,
                "segment.bytes" => c.segment_bytes = num(k, v)?,
                "segment.ms" => c.segment_ms = opt(k, v)?,
                "max.message.bytes" => c.max_record_bytes = num(k, v)?,
                "index.interval.bytes" => c.index_interval_bytes = num(k, v)?,
                "cleanup.policy" => {
                    c.cleanup_policy = CleanupPolicy::parse(v)
                        .ok_or_else(|| format!("bad cleanup.policy {v:?}"))?
                }
                "retention.ms" => c.retention_ms = opt(k, v)?,
                "retention.bytes" => c.retention_bytes = opt(k, v)?,
                "delete.retention.ms" => c.delete_retention_ms = num(k, v)?,
                "min.cleanable.dirty.ratio" => c.min_cleanable_dirty_ratio = num(k, v)?,
                "consumers" => {
                    c.consumers = v
                        .split(',')
                        .filter(|n| !n.is_empty())
                        .map(str::to_string)
                        .collect()
                }
                "max.unconsumed.bytes" => c.max_unconsumed_bytes = opt(k, v)?,
                other => return Err(format!("unknown setting {other:?}")),
            }
        }
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }
}

/// Where a consumer starts when it has no valid position (Kafka's `auto.offset.reset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OffsetReset {
    /// The oldest record still in the log.
    #[default]
    Earliest,
    /// The next record to be written.
    Latest,
    /// Return an error instead.
    None,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_config_round_trips_through_pairs() {
        let c = TopicConfig::new(12)
            .segment_bytes(1 << 20)
            .max_record_bytes(64 << 10)
            .segment_ms(None)
            .cleanup_policy(CleanupPolicy::CompactDelete)
            .retention_bytes(Some(5 << 20))
            .min_cleanable_dirty_ratio(0.25)
            .consumers(["billing", "audit.v2"])
            .max_unconsumed_bytes(Some(1 << 30));
        let pairs: Vec<(String, String)> = c
            .to_pairs()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert_eq!(TopicConfig::from_pairs(&pairs).unwrap(), c);
    }

    #[test]
    fn unknown_or_bad_settings_are_rejected() {
        let pairs = vec![("future.knob".to_string(), "1".to_string())];
        assert!(
            TopicConfig::from_pairs(&pairs)
                .unwrap_err()
                .contains("future.knob")
        );
        let pairs = vec![("partitions".to_string(), "0".to_string())];
        assert!(TopicConfig::from_pairs(&pairs).is_err());
    }

    #[test]
    fn validation_catches_inconsistent_sizes() {
        assert!(TopicConfig::new(0).validate().is_err());
        assert!(TopicConfig::new(1).segment_bytes(100).validate().is_err());
        assert!(
            TopicConfig::new(1)
                .segment_bytes(8192)
                .max_record_bytes(10_000)
                .validate()
                .is_err()
        );
        assert!(TopicConfig::new(1).validate().is_ok());
    }
}
