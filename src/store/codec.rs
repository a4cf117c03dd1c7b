//! Typed events (feature `serde`): a codec trait between an application's
//! event type and the stored bytes, and [`TypedStore`], an [`EventStore`]
//! that speaks that type. No format is forced: implement [`EventCodec`]
//! with any (serde with bincode, postcard, protobuf, hand-written); feature
//! `serde_json` adds a ready [`JsonCodec`].

use std::fmt::Display;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::store::event::{AppendResult, Event, EventData, ExpectedVersion};
use crate::store::event_store::EventStore;

/// Turns an application's events into bytes and back.
///
/// ```
/// use logbus::EventCodec;
/// /// Events are signed amounts, stored as decimal text.
/// struct Amounts;
/// impl EventCodec for Amounts {
///     type Event = i64;
///     type Error = std::num::ParseIntError;
///     fn encode(&self, e: &i64) -> Result<Vec<u8>, Self::Error> {
///         Ok(e.to_string().into_bytes())
///     }
///     fn decode(&self, data: &[u8]) -> Result<i64, Self::Error> {
///         String::from_utf8_lossy(data).parse()
///     }
/// }
/// assert_eq!(Amounts.decode(&Amounts.encode(&-5).unwrap()).unwrap(), -5);
/// ```
pub trait EventCodec {
    /// The application's event type.
    type Event;
    /// What a failed encode or decode reports (shown in [`Error::Codec`]).
    type Error: Display;
    /// The stored bytes of `event`.
    fn encode(&self, event: &Self::Event) -> std::result::Result<Vec<u8>, Self::Error>;
    /// The event stored as `data`.
    fn decode(&self, data: &[u8]) -> std::result::Result<Self::Event, Self::Error>;
}

/// A decoded event and where it is in its stream.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TypedEvent<E> {
    /// Its version in the stream, from 0.
    pub version: u64,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// The decoded event.
    pub event: E,
}

/// An [`EventStore`] whose events are `C::Event`s. Snapshots stay bytes:
/// reach them through [`store`](TypedStore::store).
///
/// ```
/// # use logbus::*;
/// # struct Amounts;
/// # impl EventCodec for Amounts {
/// #     type Event = i64;
/// #     type Error = std::num::ParseIntError;
/// #     fn encode(&self, e: &i64) -> Result<Vec<u8>, Self::Error> { Ok(e.to_string().into_bytes()) }
/// #     fn decode(&self, d: &[u8]) -> Result<i64, Self::Error> { String::from_utf8_lossy(d).parse() }
/// # }
/// # let dir = std::env::temp_dir().join(format!("logbus-doc-typed-{}", std::process::id()));
/// # let log = Log::open(&dir, LogConfig::default())?;
/// let store = TypedStore::new(EventStore::open(&log, "ledger", StoreConfig::default())?, Amounts);
/// store.append("acct", ExpectedVersion::NoStream, &[100, -30])?;
/// let balance: i64 = store.read_stream("acct", 0)?.iter().map(|e| e.event).sum();
/// assert_eq!(balance, 70);
/// # drop(log); std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), logbus::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct TypedStore<C> {
    store: EventStore,
    codec: C,
}

impl<C: EventCodec> TypedStore<C> {
    /// Wraps `store`, encoding and decoding with `codec`.
    pub fn new(store: EventStore, codec: C) -> Self {
        TypedStore { store, codec }
    }

    /// The untyped store (snapshots, replay, stats).
    pub fn store(&self) -> &EventStore {
        &self.store
    }

    /// [`EventStore::append`] of encoded `events`.
    ///
    /// # Errors
    /// [`Error::Codec`] if an event does not encode (nothing written); as
    /// [`EventStore::append`].
    pub fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: &[C::Event],
    ) -> Result<AppendResult> {
        let encoded = events
            .iter()
            .map(|e| {
                self.codec
                    .encode(e)
                    .map(|bytes| EventData::new(Bytes::from(bytes)))
                    .map_err(|e| codec_error(stream, None, e))
            })
            .collect::<Result<Vec<_>>>()?;
        self.store.append(stream, expected, encoded)
    }

    /// [`EventStore::read_stream`], decoded.
    ///
    /// # Errors
    /// [`Error::Codec`] naming the first event that does not decode; as
    /// [`EventStore::read_stream`].
    pub fn read_stream(
        &self,
        stream: &str,
        from_version: u64,
    ) -> Result<Vec<TypedEvent<C::Event>>> {
        self.store
            .read_stream(stream, from_version)?
            .iter()
            .map(|e| self.decode(e))
            .collect()
    }

    /// Decodes one stored event.
    ///
    /// # Errors
    /// [`Error::Codec`] if it does not decode.
    pub fn decode(&self, event: &Event) -> Result<TypedEvent<C::Event>> {
        let decoded = self
            .codec
            .decode(&event.data)
            .map_err(|e| codec_error(&event.stream, Some(event.version), e))?;
        Ok(TypedEvent {
            version: event.version,
            timestamp: event.timestamp,
            event: decoded,
        })
    }
}

fn codec_error(stream: &str, version: Option<u64>, e: impl Display) -> Error {
    Error::Codec {
        stream: stream.to_string(),
        version,
        reason: e.to_string(),
    }
}

/// JSON events through serde (feature `serde_json`).
///
/// ```
/// use logbus::{EventCodec, JsonCodec};
/// let codec = JsonCodec::<Vec<u32>>::new();
/// assert_eq!(codec.encode(&vec![1, 2]).unwrap(), b"[1,2]");
/// assert!(codec.decode(b"{").is_err());
/// ```
#[cfg(feature = "serde_json")]
#[derive(Debug)]
pub struct JsonCodec<E>(std::marker::PhantomData<fn() -> E>);

#[cfg(feature = "serde_json")]
impl<E> JsonCodec<E> {
    /// A JSON codec for `E`.
    pub fn new() -> Self {
        JsonCodec(std::marker::PhantomData)
    }
}

#[cfg(feature = "serde_json")]
impl<E> Default for JsonCodec<E> {
    fn default() -> Self {
        JsonCodec::new()
    }
}

#[cfg(feature = "serde_json")]
impl<E> Clone for JsonCodec<E> {
    fn clone(&self) -> Self {
        JsonCodec::new()
    }
}

#[cfg(feature = "serde_json")]
impl<E: serde::Serialize + serde::de::DeserializeOwned> EventCodec for JsonCodec<E> {
    type Event = E;
    type Error = serde_json::Error;

    fn encode(&self, event: &E) -> std::result::Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(event)
    }

    fn decode(&self, data: &[u8]) -> std::result::Result<E, serde_json::Error> {
        serde_json::from_slice(data)
    }
}
