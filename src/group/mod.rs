//! Consumer groups: members that split a topic's partitions between them,
//! an in-process coordinator, and committed offsets stored in the internal
//! topic `__consumer_offsets`.
//!
//! - `assignor` — range, round-robin and cooperative-sticky (pure functions).
//! - `coordinator` — members, generations, targets and the hand-over of
//!   partitions (at most one owner per partition at any time).
//! - `offsets` — Kafka's `__consumer_offsets` record schemas; loading them.
//! - `member` — [`ConsumerGroup`], the member handle users poll.
//! - `admin` — list, describe, reset offsets, delete (methods on `Log`).
//! - `progress` — what consumers still need: the consumed-retention floor
//!   and producer back-pressure.
//! - `config` — [`GroupConfig`].

mod admin;
mod assignor;
pub(crate) mod config;
pub(crate) mod coordinator;
mod member;
pub(crate) mod offsets;
pub(crate) mod progress;

pub use admin::{GroupDescription, GroupState, MemberDescription, OffsetSpec, PartitionOffsets};
pub use assignor::AssignmentStrategy;
pub use config::GroupConfig;
pub use member::{ConsumerGroup, RebalanceContext, RebalanceListener};
pub use offsets::OffsetAndMetadata;
