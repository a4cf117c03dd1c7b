//! Options of a consumer-group member.

use std::time::Duration;

use super::assignor::AssignmentStrategy;
use crate::config::OffsetReset;
use crate::consumer::ConsumerConfig;
use crate::error::{Error, Result};

/// Options for [`ConsumerGroup::join`](crate::ConsumerGroup::join). The
/// defaults are Kafka's, except the cooperative-sticky strategy.
///
/// ```
/// use logbus::{AssignmentStrategy, GroupConfig, OffsetReset};
/// use std::time::Duration;
/// let config = GroupConfig::default()
///     .strategy(AssignmentStrategy::Range)
///     .group_instance_id("worker-1")
///     .max_poll_interval(Duration::from_secs(30))
///     .auto_commit(false)
///     .offset_reset(OffsetReset::Latest);
/// assert_eq!(config.group_instance_id.as_deref(), Some("worker-1"));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct GroupConfig {
    /// How partitions are split between members; the same for every member.
    pub strategy: AssignmentStrategy,
    /// Static membership (Kafka's `group.instance.id`): a member that comes
    /// back under the same id within `session_timeout` gets its partitions
    /// back with no rebalance. Dropping a static member keeps its place;
    /// [`leave`](crate::ConsumerGroup::leave) gives it up.
    pub group_instance_id: Option<String>,
    /// How long a static member's place is kept after its handle went away
    /// (Kafka's `session.timeout.ms`, 45 s).
    pub session_timeout: Duration,
    /// A member that does not call `poll` for this long is removed and its
    /// partitions go to the others (Kafka's `max.poll.interval.ms`, 5 min).
    pub max_poll_interval: Duration,
    /// Commit the positions of the previous poll every
    /// `auto_commit_interval`, before partitions are revoked, and on leave
    /// (Kafka's `enable.auto.commit`, true): at-least-once delivery.
    pub auto_commit: bool,
    /// Kafka's `auto.commit.interval.ms`, 5 s.
    pub auto_commit_interval: Duration,
    /// Reading options; its `offset_reset` applies where the group has no
    /// committed offset.
    pub consumer: ConsumerConfig,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            strategy: AssignmentStrategy::default(),
            group_instance_id: None,
            session_timeout: Duration::from_secs(45),
            max_poll_interval: Duration::from_secs(300),
            auto_commit: true,
            auto_commit_interval: Duration::from_secs(5),
            consumer: ConsumerConfig::default(),
        }
    }
}

impl GroupConfig {
    /// Sets the assignment strategy.
    #[must_use]
    pub fn strategy(mut self, strategy: AssignmentStrategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// Makes the member static under this instance id.
    #[must_use]
    pub fn group_instance_id(mut self, id: impl Into<String>) -> Self {
        self.group_instance_id = Some(id.into());
        self
    }

    /// Sets the session timeout.
    #[must_use]
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = timeout;
        self
    }

    /// Sets the maximum time between polls.
    #[must_use]
    pub fn max_poll_interval(mut self, interval: Duration) -> Self {
        self.max_poll_interval = interval;
        self
    }

    /// Turns auto-commit on or off.
    #[must_use]
    pub fn auto_commit(mut self, on: bool) -> Self {
        self.auto_commit = on;
        self
    }

    /// Sets the auto-commit interval.
    #[must_use]
    pub fn auto_commit_interval(mut self, interval: Duration) -> Self {
        self.auto_commit_interval = interval;
        self
    }

    /// Sets where to start without a committed offset.
    #[must_use]
    pub fn offset_reset(mut self, reset: OffsetReset) -> Self {
        self.consumer.offset_reset = reset;
        self
    }

    /// Sets the reading options.
    #[must_use]
    pub fn consumer(mut self, consumer: ConsumerConfig) -> Self {
        self.consumer = consumer;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let invalid = |reason: &str| {
            Err(Error::InvalidConfig {
                reason: reason.to_string(),
            })
        };
        if self.max_poll_interval.is_zero() {
            return invalid("max_poll_interval must be positive");
        }
        if self.session_timeout.is_zero() {
            return invalid("session_timeout must be positive");
        }
        if self.auto_commit && self.auto_commit_interval.is_zero() {
            return invalid("auto_commit_interval must be positive");
        }
        if let Some(id) = &self.group_instance_id {
            if id.is_empty() || id.len() > super::offsets::MAX_STRING {
                return invalid("group_instance_id must be 1..=32767 bytes");
            }
        }
        Ok(())
    }
}

/// Milliseconds in `d`, saturating.
pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
