//! The records users send and receive.

use std::sync::Arc;

use bytes::Bytes;

/// A Kafka record header: a string key and an optional byte value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Header key (UTF-8, as in Kafka).
    pub key: String,
    /// Header value; `None` is Kafka's null header value.
    pub value: Option<Bytes>,
}

impl Header {
    /// A header with a value.
    pub fn new(key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        Header {
            key: key.into(),
            value: Some(value.into()),
        }
    }
}

/// A record to send.
///
/// ```
/// use logbus::Record;
/// let r = Record::new("hello").key("user-1").header("source", "web").partition(0);
/// assert_eq!(r.value.as_deref(), Some(&b"hello"[..]));
/// let tombstone = Record::tombstone("user-1");
/// assert!(tombstone.value.is_none());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    /// Optional key: decides the partition (Kafka's murmur2) and identifies the record for compaction.
    pub key: Option<Bytes>,
    /// The value; `None` is a tombstone (deletes the key under compaction).
    pub value: Option<Bytes>,
    /// Headers, in order.
    pub headers: Vec<Header>,
    /// Milliseconds since the Unix epoch; `None` means "now" when sent.
    pub timestamp: Option<i64>,
    /// Explicit partition; `None` lets the partitioner choose.
    pub partition: Option<u32>,
}

impl Record {
    /// A record with a value and nothing else.
    pub fn new(value: impl Into<Bytes>) -> Self {
        Record {
            value: Some(value.into()),
            ..Record::default()
        }
    }

    /// A tombstone: a key with no value.
    pub fn tombstone(key: impl Into<Bytes>) -> Self {
        Record {
            key: Some(key.into()),
            ..Record::default()
        }
    }

    /// Sets the key.
    #[must_use]
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Appends a header.
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

    /// Sends to this partition instead of letting the partitioner choose.
    #[must_use]
    pub fn partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }
}

/// Where a sent record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMetadata {
    /// The partition chosen.
    pub partition: u32,
    /// The offset assigned.
    pub offset: u64,
    /// The record's timestamp (the one given, or the send time).
    pub timestamp: i64,
}

/// A record read back from a partition. Key, value and header values are
/// zero-copy views into the memory-mapped segment; they stay valid after the
/// segment is deleted, for as long as you hold them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// The topic.
    pub topic: Arc<str>,
    /// The partition.
    pub partition: u32,
    /// The record's offset.
    pub offset: u64,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// The key, if any.
    pub key: Option<Bytes>,
    /// The value; `None` for a tombstone.
    pub value: Option<Bytes>,
    /// Headers, in order.
    pub headers: Vec<Header>,
}
