//! [`StoreConfig`]: the topics an event store creates.

use crate::config::{CleanupPolicy, TopicConfig};

/// Options for [`EventStore::open`](crate::EventStore::open): the configs
/// of the two topics it creates when they do not exist yet (existing topics
/// keep their stored config).
///
/// ```
/// use logbus::StoreConfig;
/// let config = StoreConfig::new(4);
/// assert_eq!(config.events.partitions, 4);
/// assert_eq!(config.events.retention_ms, None); // events are kept forever
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StoreConfig {
    /// The events topic. Default: 1 partition, cleanup policy `delete`
    /// with no time or size retention (an event store keeps its history).
    pub events: TopicConfig,
    /// The snapshots topic `<name>-snapshots`. Default: 1 partition,
    /// cleanup policy `compact` (the latest snapshot per stream is kept).
    pub snapshots: TopicConfig,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig::new(1)
    }
}

impl StoreConfig {
    /// Defaults with `partitions` partitions in both topics.
    pub fn new(partitions: u32) -> Self {
        StoreConfig {
            events: TopicConfig::new(partitions).retention_ms(None),
            snapshots: TopicConfig::new(partitions)
                .cleanup_policy(CleanupPolicy::Compact)
                .retention_ms(None),
        }
    }

    /// Sets the events topic's config (its cleanup policy must be `delete`:
    /// compaction would drop all but each stream's last event).
    #[must_use]
    pub fn events(mut self, config: TopicConfig) -> Self {
        self.events = config;
        self
    }

    /// Sets the snapshots topic's config.
    #[must_use]
    pub fn snapshots(mut self, config: TopicConfig) -> Self {
        self.snapshots = config;
        self
    }
}
