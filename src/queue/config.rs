//! Options of a work queue.

use std::time::Duration;

use crate::error::{Error, Result};

/// Options for [`WorkQueue::open`](crate::WorkQueue::open). Defaults follow
/// Kafka's share groups (KIP-932) where it has an equivalent.
///
/// ```
/// use logbus::QueueConfig;
/// use std::time::Duration;
/// let config = QueueConfig::default()
///     .lease_timeout(Duration::from_secs(5))
///     .max_deliveries(3)
///     .dead_letter_topic("jobs.failed");
/// assert_eq!(config.max_deliveries, 3);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct QueueConfig {
    /// How long a worker holds a record before it goes to another worker
    /// (Kafka's `group.share.record.lock.duration.ms`, 30 s).
    pub lease_timeout: Duration,
    /// After this many deliveries without an ack, a released or expired
    /// record goes to the dead-letter topic (Kafka's
    /// `group.share.delivery.count.limit`, 5).
    pub max_deliveries: u16,
    /// Most records in flight (fetched, not yet done) per partition (Kafka's
    /// `group.share.partition.max.record.locks`); bounds memory and the
    /// persisted state.
    pub max_in_flight: usize,
    /// Most records one `poll` returns.
    pub max_poll_records: usize,
    /// Where rejected and undeliverable records go; `None` means
    /// `<queue name>.dlq`. Created (1 partition) if missing.
    pub dead_letter_topic: Option<String>,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            lease_timeout: Duration::from_secs(30),
            max_deliveries: 5,
            max_in_flight: 10_000,
            max_poll_records: 500,
            dead_letter_topic: None,
        }
    }
}

impl QueueConfig {
    /// Sets the lease timeout.
    #[must_use]
    pub fn lease_timeout(mut self, timeout: Duration) -> Self {
        self.lease_timeout = timeout;
        self
    }

    /// Sets the delivery limit (at least 1).
    #[must_use]
    pub fn max_deliveries(mut self, n: u16) -> Self {
        self.max_deliveries = n;
        self
    }

    /// Sets the in-flight limit per partition.
    #[must_use]
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n;
        self
    }

    /// Sets the most records per poll.
    #[must_use]
    pub fn max_poll_records(mut self, n: usize) -> Self {
        self.max_poll_records = n;
        self
    }

    /// Sets the dead-letter topic.
    #[must_use]
    pub fn dead_letter_topic(mut self, topic: impl Into<String>) -> Self {
        self.dead_letter_topic = Some(topic.into());
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let invalid = |reason: &str| {
            Err(Error::InvalidConfig {
                reason: reason.to_string(),
            })
        };
        if self.lease_timeout.is_zero() {
            return invalid("lease_timeout must be positive");
        }
        if self.max_deliveries == 0 {
            return invalid("max_deliveries must be at least 1");
        }
        if self.max_in_flight == 0 || self.max_poll_records == 0 {
            return invalid("max_in_flight and max_poll_records must be at least 1");
        }
        Ok(())
    }
}
