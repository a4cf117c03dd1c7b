//! The event store's vocabulary: events to append, events read back,
//! expected versions, and the version header that travels with each record.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use crate::record::{Header, Record};

/// Header holding an event's version (ASCII decimal), on every event record
/// and every snapshot record. Readable with any Kafka tool.
pub const VERSION_HEADER: &str = "logbus.version";

/// The version a stream must be at for an append to go ahead.
///
/// Versions count from 0: a stream's first event has version 0, its `n`th
/// event version `n - 1`, and the stream's version is that of its last
/// event.
///
/// ```
/// use logbus::ExpectedVersion;
/// assert_eq!(ExpectedVersion::NoStream.to_string(), "no stream");
/// assert_eq!(ExpectedVersion::Exact(4).to_string(), "version 4");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ExpectedVersion {
    /// Append whatever the stream's version (no concurrency check).
    Any,
    /// The stream must have no event yet.
    NoStream,
    /// The stream's last event must have this version.
    Exact(u64),
}

impl ExpectedVersion {
    /// Whether a stream at `actual` (`None`: no event) satisfies this.
    pub(crate) fn matches(self, actual: Option<u64>) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual.is_none(),
            ExpectedVersion::Exact(v) => actual == Some(v),
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any version"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::Exact(v) => write!(f, "version {v}"),
        }
    }
}

impl From<Option<u64>> for ExpectedVersion {
    /// `None` → `NoStream`, `Some(v)` → `Exact(v)`: what
    /// [`EventStore::stream_version`](crate::EventStore::stream_version) returned.
    fn from(version: Option<u64>) -> Self {
        version.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact)
    }
}

/// A stream version for messages: `none` or the number.
pub(crate) fn describe_version(version: Option<u64>) -> String {
    version.map_or_else(|| "none (no event)".to_string(), |v| v.to_string())
}

/// An event to append: its payload, optional headers and timestamp.
///
/// ```
/// use logbus::EventData;
/// let e = EventData::new(r#"{"deposited":10}"#).header("type", "Deposited");
/// let plain: EventData = "opened".into();
/// # let _ = (e, plain);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventData {
    /// The payload (any format).
    pub data: Bytes,
    /// Headers, in order (the store adds `logbus.version` after them).
    pub headers: Vec<Header>,
    /// Milliseconds since the Unix epoch; `None` means "now".
    pub timestamp: Option<i64>,
}

impl EventData {
    /// An event with a payload and nothing else.
    pub fn new(data: impl Into<Bytes>) -> Self {
        EventData {
            data: data.into(),
            ..EventData::default()
        }
    }

    /// Appends a header (for example the event's type).
    #[must_use]
    pub fn header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push(Header::new(key, value));
        self
    }

    /// Sets the timestamp (milliseconds since the Unix epoch).
    #[must_use]
    pub fn timestamp(mut self, timestamp_ms: i64) -> Self {
        self.timestamp = Some(timestamp_ms);
        self
    }

    /// The record carrying this event as `version` of `stream`, sent to
    /// `partition` (the key's murmur2 partition, set explicitly so the
    /// whole append is one batch).
    pub(crate) fn into_record(self, stream: &Bytes, version: u64, partition: u32) -> Record {
        let mut headers = self.headers;
        headers.push(version_header(version));
        Record {
            key: Some(stream.clone()),
            value: Some(self.data),
            headers,
            timestamp: self.timestamp,
            partition: Some(partition),
        }
    }
}

impl From<Bytes> for EventData {
    fn from(data: Bytes) -> Self {
        EventData::new(data)
    }
}

impl From<Vec<u8>> for EventData {
    fn from(data: Vec<u8>) -> Self {
        EventData::new(data)
    }
}

impl From<&'static [u8]> for EventData {
    fn from(data: &'static [u8]) -> Self {
        EventData::new(data)
    }
}

impl From<&'static str> for EventData {
    fn from(data: &'static str) -> Self {
        EventData::new(data)
    }
}

impl From<String> for EventData {
    fn from(data: String) -> Self {
        EventData::new(data)
    }
}

/// An event read back from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Event {
    /// The stream it belongs to (the record's key).
    pub stream: Arc<str>,
    /// Its position in the stream, from 0.
    pub version: u64,
    /// The partition of the events topic holding it.
    pub partition: u32,
    /// Its offset in that partition.
    pub offset: u64,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// The payload, a zero-copy view of the stored record.
    pub data: Bytes,
    /// The headers given at append, without `logbus.version`.
    pub headers: Vec<Header>,
}

/// Where an [`append`](crate::EventStore::append) landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct AppendResult {
    /// The stream's version after the append (its last event's version);
    /// `None` only for an empty append to a stream with no event.
    pub version: Option<u64>,
    /// Version of the first event appended (`None` for an empty append).
    pub first_version: Option<u64>,
    /// The partition of the events topic.
    pub partition: u32,
    /// Offset of the first event appended (`None` for an empty append).
    pub first_offset: Option<u64>,
}

pub(crate) fn version_header(version: u64) -> Header {
    Header::new(VERSION_HEADER, version.to_string())
}

/// Parses a `logbus.version` header value; `None` unless it is a decimal
/// number up to `i64::MAX`. The cap keeps `version + n` from overflowing
/// when a stray record claims a huge version.
pub(crate) fn parse_version(value: Option<&[u8]>) -> Option<u64> {
    let text = std::str::from_utf8(value?).ok()?;
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().filter(|&v| v <= i64::MAX as u64)
}

/// The version header of a record's headers, if it has a valid one.
pub(crate) fn find_version<'a>(
    mut headers: impl Iterator<Item = (&'a str, Option<&'a [u8]>)>,
) -> Option<u64> {
    headers
        .find(|(k, _)| *k == VERSION_HEADER)
        .and_then(|(_, v)| parse_version(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_header_round_trips_and_rejects_junk() {
        let h = version_header(12345);
        assert_eq!(parse_version(h.value.as_deref()), Some(12345));
        for bad in [
            &b""[..],
            b"-1",
            b"+1",
            b"1.0",
            b"x",
            b"99999999999999999999999",
        ] {
            assert_eq!(parse_version(Some(bad)), None, "{bad:?}");
        }
        assert_eq!(parse_version(None), None);
    }

    #[test]
    fn expected_version_matching() {
        assert!(ExpectedVersion::Any.matches(None));
        assert!(ExpectedVersion::Any.matches(Some(3)));
        assert!(ExpectedVersion::NoStream.matches(None));
        assert!(!ExpectedVersion::NoStream.matches(Some(0)));
        assert!(ExpectedVersion::Exact(0).matches(Some(0)));
        assert!(!ExpectedVersion::Exact(0).matches(None));
        assert!(!ExpectedVersion::Exact(1).matches(Some(2)));
        assert_eq!(ExpectedVersion::from(None), ExpectedVersion::NoStream);
        assert_eq!(ExpectedVersion::from(Some(2)), ExpectedVersion::Exact(2));
    }
}
