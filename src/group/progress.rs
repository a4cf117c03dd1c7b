//! Consumer progress as the rest of the log sees it: the lowest offset a
//! topic's named consumers still need (for `retention: consumed`), and the
//! producer back-pressure built on it (`max_unconsumed_bytes`).
//!
//! A topic names its consumers in `TopicConfig::consumers`: consumer groups
//! (their committed offset) and work queues (their window start). A name
//! with no progress yet needs everything, so nothing is deleted for it.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::consumer::TopicPartition;
use crate::db::LogShared;
use crate::error::{Error, Result};
use crate::topic::Topic;

/// How `consumed_floor` may take locks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Locking {
    /// Wait for them (producers).
    Wait,
    /// Never wait: a lock held elsewhere counts as "nothing consumed". The
    /// maintenance pass asks while it holds a partition that
    /// `delete_topic` may be waiting for, under locks a join or a queue
    /// open may be waiting for: waiting here could close the circle.
    Try,
}

/// The offset below which every named consumer of `topic` is done with
/// `partition`; `None` when the topic names no consumers.
pub(crate) fn consumed_floor(
    shared: &LogShared,
    topic: &Topic,
    partition: u32,
    locking: Locking,
) -> Option<u64> {
    let consumers = &topic.config().consumers;
    if consumers.is_empty() {
        return None;
    }
    let tp = TopicPartition::new(topic.name(), partition);
    let floor = consumers
        .iter()
        .map(|name| consumer_position(shared, name, &tp, locking).unwrap_or(0))
        .min()
        .unwrap_or(0);
    Some(floor)
}

/// How far consumer `name` got on `tp`: an open work queue of that name on
/// the topic, else the consumer group's committed offset, else 0. `None`
/// if a lock was busy under `Locking::Try`.
fn consumer_position(
    shared: &LogShared,
    name: &str,
    tp: &TopicPartition,
    locking: Locking,
) -> Option<u64> {
    if let Some(start) = shared.queue_start(name, &tp.topic, tp.partition, locking)? {
        return Some(start);
    }
    let Some(cell) = shared.coordinator().existing(name) else {
        return Some(0);
    };
    let group = match locking {
        Locking::Wait => cell.state.lock(),
        Locking::Try => cell.state.try_lock()?,
    };
    Some(group.committed.get(tp).map_or(0, |c| c.offset))
}

/// A counter bumped whenever a consumer makes progress (commit, queue
/// acknowledgement), with a condition variable for producers blocked by
/// back-pressure.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    generation: Mutex<u64>,
    moved: Condvar,
}

impl Progress {
    /// Some consumer moved forward: blocked producers re-check.
    pub fn advanced(&self) {
        *self.generation.lock() += 1;
        self.moved.notify_all();
    }

    fn current(&self) -> u64 {
        *self.generation.lock()
    }

    /// Waits until the generation moves past `seen` or `deadline` passes.
    fn wait_past(&self, seen: u64, deadline: Instant) {
        let mut generation = self.generation.lock();
        while *generation == seen {
            if self.moved.wait_until(&mut generation, deadline).timed_out() {
                return;
            }
        }
    }
}

/// Back-pressure for one topic's producers: an append to a partition that
/// already holds `max` unconsumed bytes waits for its consumers, up to
/// `max_block`, then fails with [`Error::Backpressure`].
#[derive(Debug, Clone)]
pub(crate) struct Gate {
    log: Weak<LogShared>,
    max: u64,
    pub max_block: Duration,
}

/// Kafka's `max.block.ms` default.
pub(crate) const DEFAULT_MAX_BLOCK: Duration = Duration::from_secs(60);

impl Gate {
    /// The gate for `topic`, if its config sets `max_unconsumed_bytes`.
    pub fn for_topic(shared: &Arc<LogShared>, topic: &Topic) -> Option<Gate> {
        topic.config().max_unconsumed_bytes.map(|max| Gate {
            log: Arc::downgrade(shared),
            max,
            max_block: DEFAULT_MAX_BLOCK,
        })
    }

    /// Returns once `partition` is under its limit; waits for consumers
    /// otherwise.
    pub fn admit(&self, topic: &Topic, partition: u32) -> Result<()> {
        let Some(shared) = self.log.upgrade() else {
            return Err(Error::Closed);
        };
        let p = topic.partition(partition)?;
        let deadline = Instant::now() + self.max_block;
        loop {
            // Read the generation first: progress made after the check
            // below then ends the wait at once.
            let seen = shared.progress().current();
            let floor = consumed_floor(&shared, topic, partition, Locking::Wait).unwrap_or(0);
            let unconsumed = p.shared.bytes_from(floor);
            if unconsumed < self.max {
                return Ok(());
            }
            if Instant::now() >= deadline || shared.is_closed() {
                return Err(Error::Backpressure {
                    topic: topic.name().to_string(),
                    partition,
                    unconsumed_bytes: unconsumed,
                    max: self.max,
                });
            }
            shared.progress().wait_past(seen, deadline);
        }
    }
}
