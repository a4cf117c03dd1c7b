//! The records users send and receive.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
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
    /// The topic (a [`TopicName`]: use it as a `&str`).
    pub topic: TopicName,
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

/// A topic's name, as each [`ConsumerRecord`] carries it: a string that
/// costs no reference counting to copy or drop when it is at most
/// [`INLINE_LEN`](Self::INLINE_LEN) bytes long (held inline), and shares one
/// allocation when longer. Use it as a `&str` (`Deref`, `AsRef`, `Borrow`,
/// `Display`, comparisons with `str` and `String`).
///
/// Why not `Arc<str>`: cloning and dropping an `Arc` per record are two
/// atomic operations, about 12 % of `Consumer::poll`'s time per 100 B
/// record (23.3 against 20.4 ns of CPU).
///
/// ```
/// use logbus::TopicName;
/// let name = TopicName::from("orders");
/// assert_eq!(name, "orders");
/// assert_eq!(name.len(), 6);
/// assert_eq!(format!("{name}"), "orders");
/// ```
pub struct TopicName(Repr);

enum Repr {
    /// `bytes[..len]`: the name, valid UTF-8 (copied from a `str`).
    Inline {
        len: u8,
        bytes: [u8; TopicName::INLINE_LEN],
    },
    Shared(Arc<str>),
}

impl TopicName {
    /// The longest name held inline (longer names share an `Arc<str>`).
    pub const INLINE_LEN: usize = 22;

    /// The name as a string slice.
    #[inline]
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Inline { len, bytes } => {
                let bytes = &bytes[..usize::from(*len)];
                #[expect(unsafe_code, reason = "skipping a UTF-8 check on every access")]
                // SAFETY: `bytes[..len]` is a copy of a whole `str` (see
                // `From<&str>`, the only place that makes `Inline`), so it
                // is valid UTF-8.
                unsafe {
                    std::str::from_utf8_unchecked(bytes)
                }
            }
            Repr::Shared(s) => s,
        }
    }
}

impl Clone for TopicName {
    #[inline]
    fn clone(&self) -> Self {
        match &self.0 {
            Repr::Inline { len, bytes } => TopicName(Repr::Inline {
                len: *len,
                bytes: *bytes,
            }),
            Repr::Shared(s) => TopicName(Repr::Shared(Arc::clone(s))),
        }
    }
}

impl TopicName {
    /// Writes a clone of `self` to `dst`, an inline name in one 24-byte
    /// copy from memory to memory.
    ///
    /// NOTE: `dst.write(self.clone())` made the compiler copy an inline
    /// name through a stack slot in overlapping 4-byte pieces, a failed
    /// store forward that waits for every earlier store (the records
    /// being filled): a third of `poll`'s time.
    ///
    /// # Safety
    /// `dst` is valid for writes and aligned; what it held is overwritten
    /// without being dropped.
    #[expect(unsafe_code, reason = "a caller initialising memory in place")]
    #[inline(always)]
    pub(crate) unsafe fn clone_to(&self, dst: *mut TopicName) {
        match &self.0 {
            // SAFETY: an `Inline` name owns nothing (plain bytes, as if it
            // were `Copy`), so a bitwise copy is an independent valid
            // value; `dst` is valid for writes (the caller's promise) and
            // cannot overlap `self`, which is borrowed.
            Repr::Inline { .. } => unsafe { std::ptr::copy_nonoverlapping(self, dst, 1) },
            // SAFETY: as above.
            Repr::Shared(s) => unsafe { dst.write(TopicName(Repr::Shared(Arc::clone(s)))) },
        }
    }
}

const _: () = assert!(std::mem::size_of::<TopicName>() == 24);

impl From<&str> for TopicName {
    #[inline]
    fn from(name: &str) -> Self {
        match u8::try_from(name.len()) {
            Ok(len) if name.len() <= Self::INLINE_LEN => {
                let mut bytes = [0; Self::INLINE_LEN];
                bytes[..name.len()].copy_from_slice(name.as_bytes());
                TopicName(Repr::Inline { len, bytes })
            }
            _ => TopicName(Repr::Shared(Arc::from(name))),
        }
    }
}

impl From<&Arc<str>> for TopicName {
    /// Copies a short name; shares a long one.
    #[inline]
    fn from(name: &Arc<str>) -> Self {
        if name.len() <= Self::INLINE_LEN {
            TopicName::from(&**name)
        } else {
            TopicName(Repr::Shared(Arc::clone(name)))
        }
    }
}

impl From<String> for TopicName {
    fn from(name: String) -> Self {
        TopicName::from(name.as_str())
    }
}

impl From<TopicName> for String {
    fn from(name: TopicName) -> Self {
        name.as_str().to_owned()
    }
}

impl Deref for TopicName {
    type Target = str;

    #[inline]
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for TopicName {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for TopicName {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl PartialEq for TopicName {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for TopicName {}

impl PartialOrd for TopicName {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for TopicName {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl std::hash::Hash for TopicName {
    /// As the `str` it holds, so maps keyed by names can be looked up by `&str`.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialEq<str> for TopicName {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for TopicName {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for TopicName {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<TopicName> for str {
    fn eq(&self, other: &TopicName) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<TopicName> for &str {
    fn eq(&self, other: &TopicName) -> bool {
        *self == other.as_str()
    }
}

impl PartialEq<TopicName> for String {
    fn eq(&self, other: &TopicName) -> bool {
        self == other.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn short_names_are_inline_and_long_ones_shared() {
        let short = "a".repeat(TopicName::INLINE_LEN);
        let long = "b".repeat(TopicName::INLINE_LEN + 1);
        let max = "c".repeat(249);
        for (name, inline) in [("", true), (&*short, true), (&*long, false), (&*max, false)] {
            for t in [
                TopicName::from(name),
                TopicName::from(&Arc::<str>::from(name)),
            ] {
                assert_eq!(t.as_str(), name);
                assert_eq!(matches!(t.0, Repr::Inline { .. }), inline, "{name}");
                assert_eq!(t.clone(), t);
            }
        }
        let arc: Arc<str> = Arc::from(&*long);
        let t = TopicName::from(&arc);
        assert_eq!(Arc::strong_count(&arc), 2, "a long name shares the Arc");
        drop(t);
        assert_eq!(Arc::strong_count(&arc), 1);
    }

    #[test]
    fn compares_hashes_and_prints_as_its_str() {
        let t = TopicName::from("orders.v2");
        let owned = String::from("orders.v2");
        assert_eq!(t, "orders.v2");
        assert_eq!("orders.v2", t);
        assert_eq!(t, owned);
        assert_eq!(owned, t);
        assert_ne!(t, "orders");
        let later = TopicName::from("orders.v3");
        assert_eq!(t.cmp(&later), std::cmp::Ordering::Less);
        assert_eq!(format!("{t} {t:?}"), "orders.v2 \"orders.v2\"");
        let set: HashSet<TopicName> = [t.clone()].into_iter().collect();
        assert!(set.contains("orders.v2"), "Borrow<str> and Hash agree");
        assert_eq!(String::from(t), "orders.v2");
        assert_eq!(std::mem::size_of::<TopicName>(), 24);
    }
}
