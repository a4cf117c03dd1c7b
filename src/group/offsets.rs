//! Committed offsets, stored as records of the internal compacted topic
//! `__consumer_offsets`, with Kafka's own key and value schemas.
//!
//! Why a topic rather than a side file: commits get the log's durability
//! modes and group commit for free, a commit is one small append (no file
//! rewrite), compaction keeps the topic small, and the bytes are exactly
//! what a Kafka broker writes, so a bridge or a Kafka listener can serve
//! them as they are. On open the topic is read once into memory.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

use crate::consumer::TopicPartition;
use crate::error::{Error, Result};
use crate::partition::{self, PartitionShared};
use crate::record::Record;

/// Name of the internal topic (Kafka's).
pub(crate) const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Key schema versions (Kafka's `OffsetCommitKey` is 0 and 1, the same
/// layout; 2 is `GroupMetadataKey`).
const KEY_OFFSET_COMMIT: i16 = 1;
const KEY_GROUP_METADATA: i16 = 2;
/// Value schema version written (`OffsetCommitValue` v3: offset, leader
/// epoch, metadata, commit timestamp).
const VALUE_VERSION: i16 = 3;

/// A committed offset (Kafka's `OffsetAndMetadata`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetAndMetadata {
    /// The next offset the group will read from the partition.
    pub offset: u64,
    /// Free-form text stored with the commit.
    pub metadata: String,
    /// When it was committed (milliseconds since the Unix epoch).
    pub commit_timestamp: i64,
}

/// Committed offsets of every group, as loaded from the topic.
pub(crate) type GroupOffsets = HashMap<String, BTreeMap<TopicPartition, OffsetAndMetadata>>;

/// One decoded record of the offsets topic.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum OffsetRecord {
    /// A commit (`Some`) or a deletion (`None`, a tombstone).
    Commit {
        group: String,
        tp: TopicPartition,
        value: Option<OffsetAndMetadata>,
    },
    /// Group metadata written by Kafka; logbus keeps membership in memory.
    GroupMetadata,
}

/// The record committing `value` (or deleting the offset with `None`).
pub(crate) fn commit_record(
    group: &str,
    tp: &TopicPartition,
    value: Option<&OffsetAndMetadata>,
) -> Record {
    let mut key = Vec::with_capacity(2 + 2 + group.len() + 2 + tp.topic.len() + 4);
    key.extend_from_slice(&KEY_OFFSET_COMMIT.to_be_bytes());
    put_string(&mut key, group);
    put_string(&mut key, &tp.topic);
    key.extend_from_slice(&(tp.partition as i32).to_be_bytes());
    let value = value.map(|v| {
        let mut out = Vec::with_capacity(2 + 8 + 4 + 2 + v.metadata.len() + 8);
        out.extend_from_slice(&VALUE_VERSION.to_be_bytes());
        out.extend_from_slice(&(v.offset as i64).to_be_bytes());
        out.extend_from_slice(&(-1i32).to_be_bytes()); // leader epoch: none
        put_string(&mut out, &v.metadata);
        out.extend_from_slice(&v.commit_timestamp.to_be_bytes());
        Bytes::from(out)
    });
    Record {
        key: Some(Bytes::from(key)),
        value,
        ..Record::default()
    }
}

/// The values and records of one commit: `offsets` (the next offset to
/// read per partition) committed at `now`.
pub(crate) fn commit_batch(
    group: &str,
    offsets: &[(TopicPartition, u64)],
    now: i64,
) -> (Vec<(TopicPartition, OffsetAndMetadata)>, Vec<Record>) {
    let values: Vec<(TopicPartition, OffsetAndMetadata)> = offsets
        .iter()
        .map(|(tp, offset)| {
            let v = OffsetAndMetadata {
                offset: *offset,
                metadata: String::new(),
                commit_timestamp: now,
            };
            (tp.clone(), v)
        })
        .collect();
    let records = values
        .iter()
        .map(|(tp, v)| commit_record(group, tp, Some(v)))
        .collect();
    (values, records)
}

/// Appends offset records as one batch (callers hold the group's lock, so
/// the log holds commits in the order the coordinator accepted them).
/// Returns the log end to pass to [`sync`].
pub(crate) fn append(store: &PartitionShared, records: &[Record], now: i64) -> Result<u64> {
    let len = crate::log::record::encoded_len(records, now);
    let (_, end) = store.append_deferring_sync(records, len, now)?;
    Ok(end)
}

/// Makes offset records below `end` as durable as the log's mode promises
/// (an fdatasync under `Durability::Always`, shared by concurrent callers).
pub(crate) fn sync(store: &PartitionShared, end: u64) -> Result<()> {
    if store.durability() == crate::Durability::Always {
        store.sync_to(end)?;
    }
    Ok(())
}

/// Kafka strings: an int16 length, then UTF-8. Group ids, topic names and
/// metadata are checked to fit before they get here.
fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as i16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Longest string a Kafka int16-length field holds.
pub(crate) const MAX_STRING: usize = i16::MAX as usize;

/// Decodes a record of the offsets topic.
pub(crate) fn decode(key: &[u8], value: Option<&[u8]>) -> Result<OffsetRecord, &'static str> {
    let mut k = Reader(key);
    match k.i16()? {
        0 | KEY_OFFSET_COMMIT => {}
        KEY_GROUP_METADATA => return Ok(OffsetRecord::GroupMetadata),
        _ => return Err("unknown key version"),
    }
    let group = k.string()?;
    let topic = k.string()?;
    let partition = u32::try_from(k.i32()?).map_err(|_| "negative partition")?;
    k.end()?;
    let value = match value {
        None => None,
        Some(v) => Some(decode_value(v)?),
    };
    Ok(OffsetRecord::Commit {
        group,
        tp: TopicPartition::new(topic, partition),
        value,
    })
}

/// Values v0..=v3 (v1 adds an expiry timestamp, v3 a leader epoch).
fn decode_value(v: &[u8]) -> Result<OffsetAndMetadata, &'static str> {
    let mut r = Reader(v);
    let version = r.i16()?;
    if !(0..=3).contains(&version) {
        return Err("unknown value version");
    }
    let offset = u64::try_from(r.i64()?).map_err(|_| "negative offset")?;
    if version >= 3 {
        r.i32()?; // leader epoch
    }
    let metadata = r.string()?;
    let commit_timestamp = if version >= 1 { r.i64()? } else { 0 };
    if version == 1 {
        r.i64()?; // expire timestamp
    }
    r.end()?;
    Ok(OffsetAndMetadata {
        offset,
        metadata,
        commit_timestamp,
    })
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], &'static str> {
        let (head, rest) = self.0.split_first_chunk::<N>().ok_or("truncated")?;
        self.0 = rest;
        Ok(*head)
    }

    fn i16(&mut self) -> Result<i16, &'static str> {
        self.take().map(i16::from_be_bytes)
    }

    fn i32(&mut self) -> Result<i32, &'static str> {
        self.take().map(i32::from_be_bytes)
    }

    fn i64(&mut self) -> Result<i64, &'static str> {
        self.take().map(i64::from_be_bytes)
    }

    fn string(&mut self) -> Result<String, &'static str> {
        let len = usize::try_from(self.i16()?).map_err(|_| "null string")?;
        if self.0.len() < len {
            return Err("truncated string");
        }
        let (s, rest) = self.0.split_at(len);
        self.0 = rest;
        String::from_utf8(s.to_vec()).map_err(|_| "string is not UTF-8")
    }

    fn end(&self) -> Result<(), &'static str> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err("trailing bytes")
        }
    }
}

/// Reads the whole offsets partition: the latest commit per group and
/// partition, tombstones applied.
pub(crate) fn load(partition: &PartitionShared) -> Result<GroupOffsets> {
    let mut groups: GroupOffsets = HashMap::new();
    let mut offset = partition.log_start();
    let end = partition.log_end();
    let mut records = Vec::new();
    while offset < end {
        let fetched = partition.fetch(offset, 1 << 20)?;
        if fetched.bytes.is_empty() {
            break; // compaction left nothing past `offset`
        }
        records.clear();
        let next = partition::decode_into(
            &fetched,
            partition.topic(),
            partition.id(),
            offset,
            usize::MAX,
            &mut records,
        )?;
        for r in &records {
            let Some(key) = r.key.as_deref() else {
                continue; // not ours; Kafka ignores keyless records too
            };
            let decoded = decode(key, r.value.as_deref()).map_err(|reason| {
                let (file, position) = partition.locate_file(r.offset);
                Error::corrupt(
                    file,
                    position,
                    format!("{OFFSETS_TOPIC} record at offset {}: {reason}", r.offset),
                )
            })?;
            if let OffsetRecord::Commit { group, tp, value } = decoded {
                let offsets = groups.entry(group).or_default();
                match value {
                    Some(v) => {
                        offsets.insert(tp, v);
                    }
                    None => {
                        offsets.remove(&tp);
                    }
                }
            }
        }
        if next <= offset {
            break; // defensive: never loop without progress
        }
        offset = next;
    }
    groups.retain(|_, offsets| !offsets.is_empty());
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_record_matches_kafka_schema_bytes() {
        let v = OffsetAndMetadata {
            offset: 42,
            metadata: "m".into(),
            commit_timestamp: 7,
        };
        let r = commit_record("g", &TopicPartition::new("t", 3), Some(&v));
        // OffsetCommitKey v1: version, group, topic, partition.
        assert_eq!(
            r.key.as_deref().unwrap(),
            &[0, 1, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 3][..]
        );
        // OffsetCommitValue v3: version, offset, leader epoch, metadata, timestamp.
        let mut want = vec![
            0, 3, 0, 0, 0, 0, 0, 0, 0, 42, 0xff, 0xff, 0xff, 0xff, 0, 1, b'm',
        ];
        want.extend_from_slice(&7i64.to_be_bytes());
        assert_eq!(r.value.as_deref().unwrap(), &want[..]);
        let decoded = decode(r.key.as_deref().unwrap(), r.value.as_deref()).unwrap();
        assert_eq!(
            decoded,
            OffsetRecord::Commit {
                group: "g".into(),
                tp: TopicPartition::new("t", 3),
                value: Some(v),
            }
        );
    }

    #[test]
    fn decodes_older_value_versions_and_tombstones() {
        let key = commit_record("grp", &TopicPartition::new("x", 0), None)
            .key
            .unwrap();
        // v1: offset, metadata, commit timestamp, expire timestamp.
        let mut v1 = vec![0, 1];
        v1.extend_from_slice(&5i64.to_be_bytes());
        v1.extend_from_slice(&[0, 0]);
        v1.extend_from_slice(&9i64.to_be_bytes());
        v1.extend_from_slice(&10i64.to_be_bytes());
        match decode(&key, Some(&v1)).unwrap() {
            OffsetRecord::Commit { value: Some(v), .. } => {
                assert_eq!((v.offset, v.commit_timestamp), (5, 9));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            decode(&key, None).unwrap(),
            OffsetRecord::Commit { value: None, .. }
        ));
    }

    #[test]
    fn rejects_damaged_records_without_panicking() {
        let r = commit_record(
            "g",
            &TopicPartition::new("t", 1),
            Some(&OffsetAndMetadata {
                offset: 1,
                metadata: String::new(),
                commit_timestamp: 0,
            }),
        );
        let (key, value) = (r.key.unwrap(), r.value.unwrap());
        for cut in 0..key.len() {
            assert!(decode(&key[..cut], Some(&value)).is_err());
        }
        for cut in 0..value.len() {
            assert!(decode(&key, Some(&value[..cut])).is_err());
        }
        assert!(decode(&[0, 9, 0, 0], None).is_err());
        let mut negative = value.to_vec();
        negative[2] = 0x80;
        assert!(decode(&key, Some(&negative)).is_err());
    }
}
