//! Reading records at known offsets (from the key index) as events,
//! fetching each stretch of the log once.

use std::sync::Arc;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::log::record::RecordView;
use crate::partition::{FetchedBatches, Partition};
use crate::record::Header;
use crate::store::event::{Event, VERSION_HEADER};

/// Bytes fetched per step. A stream's events interleave with other
/// streams', so one fetch usually serves several of them.
const FETCH_BYTES: usize = 256 << 10;

/// Past this many records between two wanted offsets, a new (indexed)
/// fetch is cheaper than decoding the records in between.
const MAX_SKIP: u64 = 256;

/// The records at `offsets` (ascending) as events of `stream`, the first
/// with version `first_version` and each next one +1. Offsets no longer in
/// the log (retention) are left out.
pub(crate) fn events_at(
    p: &Partition,
    stream: &Arc<str>,
    first_version: u64,
    offsets: &[u64],
) -> Result<Vec<Event>> {
    let mut out = Vec::with_capacity(offsets.len());
    let mut i = 0;
    while i < offsets.len() {
        if offsets[i] < p.log_start_offset() {
            i += 1; // removed by retention since the index was pruned
            continue;
        }
        // A lone event needs only its own batch: fetching (and checking the
        // CRC of) a whole window per event made reading a stream spread
        // thinly over a large log 10x slower.
        let near = offsets
            .get(i + 1)
            .is_some_and(|&next| next - offsets[i] <= MAX_SKIP);
        let Some(fetched) = fetch_retained(p, offsets[i], if near { FETCH_BYTES } else { 0 })?
        else {
            continue; // retention removed it meanwhile: the loop skips it
        };
        let before = i;
        for r in fetched.records() {
            let r = r?;
            while i < offsets.len() && offsets[i] < r.offset {
                i += 1; // not in the log any more
            }
            let Some(&want) = offsets.get(i) else {
                break;
            };
            if want == r.offset {
                let version = first_version + i as u64;
                out.push(to_event(&fetched, &r, Arc::clone(stream), version, p.id()));
                i += 1;
            } else if want - r.offset > MAX_SKIP {
                break;
            }
        }
        if i == before {
            i += 1; // nothing at or after this offset came back: it is gone
        }
    }
    Ok(out)
}

/// The one record at `offset`, if it is still in the log.
pub(crate) fn record_at<T>(
    p: &Partition,
    offset: u64,
    f: impl FnOnce(&FetchedBatches, &RecordView<'_>) -> T,
) -> Result<Option<T>> {
    if offset < p.log_start_offset() || offset >= p.log_end_offset() {
        return Ok(None);
    }
    let Some(fetched) = fetch_retained(p, offset, 0)? else {
        return Ok(None);
    };
    for r in fetched.records() {
        let r = r?;
        if r.offset == offset {
            return Ok(Some(f(&fetched, &r)));
        }
        if r.offset > offset {
            break;
        }
    }
    Ok(None)
}

/// `Partition::fetch`, but `None` where retention removed `offset` (between
/// the caller's check of the log start and the fetch) instead of an error.
pub(crate) fn fetch_retained(
    p: &Partition,
    offset: u64,
    max_bytes: usize,
) -> Result<Option<FetchedBatches>> {
    match p.fetch(offset, max_bytes) {
        Ok(fetched) => Ok(Some(fetched)),
        Err(Error::OffsetOutOfRange { .. }) if offset < p.log_start_offset() => Ok(None),
        Err(e) => Err(e),
    }
}

/// An event from a record view, sharing the fetched bytes.
pub(crate) fn to_event(
    fetched: &FetchedBatches,
    r: &RecordView<'_>,
    stream: Arc<str>,
    version: u64,
    partition: u32,
) -> Event {
    Event {
        stream,
        version,
        partition,
        offset: r.offset,
        timestamp: r.timestamp,
        data: r.value.map_or_else(Bytes::new, |v| share(fetched, v)),
        headers: user_headers(fetched, r),
    }
}

/// The record's headers without the store's version header.
pub(crate) fn user_headers(fetched: &FetchedBatches, r: &RecordView<'_>) -> Vec<Header> {
    r.headers()
        .filter(|(k, _)| *k != VERSION_HEADER)
        .map(|(k, v)| Header {
            key: k.to_owned(),
            value: v.map(|v| share(fetched, v)),
        })
        .collect()
}

/// `sub`, a slice of the fetched bytes, as `Bytes` sharing them.
pub(crate) fn share(fetched: &FetchedBatches, sub: &[u8]) -> Bytes {
    if sub.is_empty() {
        Bytes::new()
    } else {
        fetched.bytes.slice_ref(sub)
    }
}
