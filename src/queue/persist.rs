//! Where queue state lives: the internal compacted topic
//! `__work_queue_state`, one record per (queue, topic, partition) whose
//! value is the partition's window snapshot. Compaction keeps the latest.

use std::collections::HashMap;

use bytes::Bytes;

use super::window::Window;
use crate::error::{Error, Result};
use crate::partition::{self, PartitionShared};
use crate::record::Record;

/// Name of the internal topic.
pub(crate) const STATE_TOPIC: &str = "__work_queue_state";
const KEY_VERSION: u16 = 1;

/// The record holding `window` as the state of `queue` on `topic`/`partition`.
pub(crate) fn snapshot_record(queue: &str, topic: &str, partition: u32, window: &Window) -> Record {
    Record {
        key: Some(Bytes::from(key(queue, topic, partition))),
        value: Some(Bytes::from(window.encode())),
        ..Record::default()
    }
}

fn key(queue: &str, topic: &str, partition: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + 2 + queue.len() + 2 + topic.len() + 4);
    k.extend_from_slice(&KEY_VERSION.to_be_bytes());
    // Queue and topic names are at most 249 bytes (topic-name rule).
    for s in [queue, topic] {
        k.extend_from_slice(&(s.len() as u16).to_be_bytes());
        k.extend_from_slice(s.as_bytes());
    }
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

/// The latest window of each partition of `queue` on `topic`.
pub(crate) fn load(
    store: &PartitionShared,
    queue: &str,
    topic: &str,
) -> Result<HashMap<u32, Window>> {
    let prefix = {
        let mut k = key(queue, topic, 0);
        k.truncate(k.len() - 4);
        k
    };
    // Per partition: the offset of its latest state record, and the state.
    let mut latest: HashMap<u32, (u64, Option<Bytes>)> = HashMap::new();
    let mut offset = store.log_start();
    let end = store.log_end();
    let mut records = Vec::new();
    while offset < end {
        let fetched = store.fetch(offset, 1 << 20)?;
        if fetched.bytes.is_empty() {
            break;
        }
        records.clear();
        let next = partition::decode_into(
            &fetched,
            store.topic(),
            store.id(),
            offset,
            usize::MAX,
            &mut records,
        )?;
        for r in &records {
            let Some(k) = r.key.as_deref() else { continue };
            let Some(rest) = k.strip_prefix(prefix.as_slice()) else {
                continue; // another queue's state
            };
            let Ok(p) = <[u8; 4]>::try_from(rest) else {
                continue; // a longer name sharing the prefix cannot: lengths are encoded
            };
            latest.insert(u32::from_be_bytes(p), (r.offset, r.value.clone()));
        }
        if next <= offset {
            break;
        }
        offset = next;
    }
    let mut out = HashMap::new();
    for (p, (at, value)) in latest {
        let Some(value) = value else { continue }; // deleted
        let window = Window::decode(&value).map_err(|reason| {
            let (file, position) = store.locate_file(at);
            Error::corrupt(
                file,
                position,
                format!("{STATE_TOPIC}: state of {queue}/{topic}/{p} at offset {at}: {reason}"),
            )
        })?;
        out.insert(p, window);
    }
    Ok(out)
}
