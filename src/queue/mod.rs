//! Work queues (Kafka's share groups, KIP-932): records of a topic leased
//! to any number of workers, one worker at a time, with acks, releases,
//! rejects, lease timeouts, delivery counts and a dead-letter topic.
//!
//! - `window` — one partition's share state, pure (with its snapshot codec).
//! - `share` — [`WorkQueue`]: the state of every partition behind one lock,
//!   leasing, settling, dead letters, persistence.
//! - `persist` — the internal topic `__work_queue_state`.
//! - `worker` — [`Worker`] and [`Delivery`].
//! - `config` — [`QueueConfig`].

mod config;
pub(crate) mod persist;
pub(crate) mod share;
pub(crate) mod window;
mod worker;

pub use config::QueueConfig;
pub use share::{DLQ_DELIVERIES, DLQ_REASON, DLQ_SOURCE, QueueBacklog, WorkQueue};
pub use worker::{Delivery, Worker};
