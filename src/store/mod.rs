//! The event store: streams of events over a topic, with optimistic
//! concurrency, reads by key, replay, and snapshots beside them.
//!
//! - `event_store` — [`EventStore`]: open, append with a version check,
//!   read one stream.
//! - `index` — the in-memory key indexes (stream → event offsets, stream →
//!   latest snapshot), built by one scan at open and caught up on use.
//! - `read` — reading records at indexed offsets as events.
//! - `snapshot` — save and look up snapshots; load = snapshot + later events.
//! - `replay` — every event from an offset or a timestamp.
//! - `event` — events, expected versions, the version header.
//! - `config` — [`StoreConfig`].
//! - `codec` — typed events (feature `serde`).

#[cfg(feature = "serde")]
mod codec;
mod config;
mod event;
mod event_store;
mod index;
mod read;
mod replay;
mod snapshot;

#[cfg(feature = "serde_json")]
pub use codec::JsonCodec;
#[cfg(feature = "serde")]
pub use codec::{EventCodec, TypedEvent, TypedStore};
pub use config::StoreConfig;
pub(crate) use event::describe_version;
pub use event::{AppendResult, Event, EventData, ExpectedVersion, VERSION_HEADER};
pub use event_store::{EventStore, SNAPSHOTS_SUFFIX, StoreStats};
pub use replay::Replay;
pub use snapshot::Snapshot;
