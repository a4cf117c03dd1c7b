//! Fuzz entry points for the decoders of the internal topics' records:
//! `__consumer_offsets` keys and values (`group::offsets::decode`) and
//! `__work_queue_state` window snapshots (`queue::window::Window::decode`).
//!
//! Both records sit behind a batch CRC on disk, so damage reaching them
//! means a bug elsewhere or a foreign writer; still, neither decoder may
//! panic, and what decodes must re-encode to the same thing.

use super::Input;
use crate::consumer::TopicPartition;
use crate::group::offsets::{self, OffsetAndMetadata, OffsetRecord};
use crate::queue::window::{Slot, Window};

/// Offsets record decoder: the input as a raw key and optional value, or
/// a valid commit record built from the input and then damaged where it
/// says (random bytes rarely start with a known schema version). What
/// decodes re-encodes (as key v1, value v3) to a record that decodes the
/// same, and every offset decoded is within Kafka's `i64` range.
pub fn decode_offsets(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.u8();
    let (key, value) = if mode & 1 == 0 {
        let key = input.chunk(512).to_vec();
        let value = (mode & 2 == 0).then(|| input.chunk(512).to_vec());
        (key, value)
    } else {
        let group = String::from_utf8_lossy(input.chunk(40)).into_owned();
        let topic = String::from_utf8_lossy(input.chunk(40)).into_owned();
        let tp = TopicPartition::new(topic, u32::from(input.u16()));
        let v = OffsetAndMetadata {
            offset: u64::from_le_bytes(std::array::from_fn(|_| input.u8())) >> 1,
            metadata: String::from_utf8_lossy(input.chunk(40)).into_owned(),
            commit_timestamp: i64::from(input.u16()),
        };
        let record = offsets::commit_record(&group, &tp, (mode & 2 == 0).then_some(&v));
        let mut key = record.key.map(|k| k.to_vec()).unwrap_or_default();
        let mut value = record.value.map(|v| v.to_vec());
        for _ in 0..input.u8() % 4 {
            let (op, at, bits) = (input.u8(), usize::from(input.u16()), input.u8());
            let target = match (op & 1, value.as_mut()) {
                (1, Some(v)) => v,
                _ => &mut key,
            };
            match op >> 1 & 3 {
                0 if !target.is_empty() => {
                    let i = at % target.len();
                    target[i] ^= bits | 1;
                }
                1 => target.truncate(at % (target.len() + 1)),
                2 => target.extend_from_slice(&[bits; 3]),
                // A schema version (0..=3 values, 0..=2 keys) and the rest.
                _ if target.len() >= 2 => target[1] = bits % 5,
                _ => {}
            }
        }
        (key, value)
    };
    check_offsets(&key, value.as_deref());
}

fn check_offsets(key: &[u8], value: Option<&[u8]>) {
    let Ok(decoded) = offsets::decode(key, value) else {
        return;
    };
    match &decoded {
        OffsetRecord::GroupMetadata => assert_eq!(key.get(..2), Some(&[0, 2][..])),
        OffsetRecord::Commit { group, tp, value } => {
            if let Some(v) = value {
                assert!(v.offset <= i64::MAX as u64, "offset {} decoded", v.offset);
            }
            let again = offsets::commit_record(group, tp, value.as_ref());
            let redecoded = offsets::decode(
                again.key.as_deref().expect("a commit record has a key"),
                again.value.as_deref(),
            )
            .expect("a re-encoded commit decodes");
            assert_eq!(redecoded, decoded, "decode, encode, decode");
        }
    }
}

/// Largest window whose slots the checks walk one by one (a snapshot can
/// describe up to 16 M slots; walking those would only slow the fuzzer).
const WALK_LIMIT: usize = 1 << 16;

/// Window snapshot decoder: the input as a raw snapshot, or a snapshot of
/// a window built from the input and then damaged; what decodes must
/// keep the window's invariants, survive encode/decode (leases come back
/// available with their delivery counts) and then a run of window
/// operations from the rest of the input, each checked against what it
/// promises.
pub fn decode_window(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.u8();
    let snapshot = if mode & 1 == 0 {
        input.chunk(1024).to_vec()
    } else {
        let mut w = Window::new(u64::from(input.u16()));
        for _ in 0..input.u8() % 16 {
            window_op(&mut w, &mut input);
        }
        let mut bytes = w.encode();
        for _ in 0..input.u8() % 3 {
            let (at, bits) = (usize::from(input.u16()), input.u8());
            match bits & 3 {
                0 if !bytes.is_empty() => {
                    let i = at % bytes.len();
                    bytes[i] ^= bits | 1;
                }
                1 => bytes.truncate(at % (bytes.len() + 1)),
                _ => bytes.push(bits),
            }
        }
        bytes
    };
    if declared_slots(&snapshot) > WALK_LIMIT as u64 {
        // Decoding up to 16 M slots per input slowed the fuzzer to 60
        // runs/s; the limit itself is a unit test of `window`.
        return;
    }
    let Ok(mut w) = Window::decode(&snapshot) else {
        return;
    };
    check_window(&w);
    check_round_trip(&w);
    // Operations add at most 4 offsets each: keep them clear of the end
    // of the offset range, which no real partition gets near.
    while !input.is_empty() && w.next() < (i64::MAX as u64) >> 1 {
        window_op(&mut w, &mut input);
        check_window(&w);
    }
    check_round_trip(&w);
}

/// Slots a snapshot's runs add up to, read the way `Window::decode` reads
/// them (version, start, run count, then `(len u32, done u8, deliveries
/// u16)` runs), as far as the bytes go.
fn declared_slots(snapshot: &[u8]) -> u64 {
    let runs = snapshot.get(13..).unwrap_or_default();
    runs.chunks_exact(7)
        .map(|run| u64::from(u32::from_be_bytes([run[0], run[1], run[2], run[3]])))
        .sum()
}

/// One operation on `w` as the input says, within what `WorkQueue` does
/// (fetched offsets arrive at or past `next`), with its promise checked.
fn window_op(w: &mut Window, input: &mut Input<'_>) {
    let (start, next) = (w.start(), w.next());
    let (op, a, b) = (input.u8(), input.u8(), input.u8());
    let worker = u64::from(a % 4);
    let in_window = |x: u8| start + u64::from(x) % (next - start + 1);
    match op % 7 {
        0 => {
            for (offset, deliveries) in w.lease_available(worker, i64::from(b), usize::from(b % 8))
            {
                let held = Slot::Leased {
                    worker,
                    until_ms: i64::from(b),
                    deliveries,
                };
                assert_eq!(w.slot(offset), Some(held), "leased {offset}");
            }
        }
        1 => w.lease_new(next + u64::from(b % 4), worker, i64::from(a)),
        2 => w.fill_gap_to(next + u64::from(b % 4)),
        3 => {
            let offset = in_window(b);
            let before = w.slot(offset);
            let deliveries = u16::from(a >> 2 & 3);
            let done = op & 8 != 0;
            match w.settle(offset, worker, deliveries, done) {
                Ok(d) => {
                    assert!(
                        matches!(before, Some(Slot::Leased { worker: x, deliveries: y, .. }) if x == worker && y == d),
                        "settled {offset} from {before:?}"
                    );
                    if !done {
                        assert_eq!(w.slot(offset), Some(Slot::Available { deliveries: d }));
                    }
                }
                Err(_) => assert_eq!(w.slot(offset), before, "a refused settle changed {offset}"),
            }
        }
        4 => w.finish(in_window(b)),
        5 => {
            let gone = (op & 8 != 0).then_some(worker);
            for (offset, deliveries) in w.expire(i64::from(b), gone) {
                assert_eq!(w.slot(offset), Some(Slot::Available { deliveries }));
            }
        }
        _ => w.skip_to(start + u64::from(b % 8)),
    }
    assert!(w.start() >= start, "the start went back");
    assert!(w.next() >= next.min(w.start()), "the fetch point went back");
}

/// The window's invariants: offsets fit Kafka's range, the first slot is
/// not done (the done prefix is dropped), and the available count the
/// polls trust matches the slots.
fn check_window(w: &Window) {
    let next = w.start().checked_add(w.in_flight() as u64);
    assert!(
        next.is_some_and(|n| n <= i64::MAX as u64),
        "window {}+{} past the offset range",
        w.start(),
        w.in_flight()
    );
    if w.in_flight() == 0 || w.in_flight() > WALK_LIMIT {
        return;
    }
    assert_ne!(w.slot(w.start()), Some(Slot::Done), "done prefix kept");
    let available = (w.start()..w.next())
        .filter(|&o| matches!(w.slot(o), Some(Slot::Available { .. })))
        .count();
    assert_eq!(w.has_available(), available > 0, "available count");
}

/// A snapshot decodes to the same window with every lease made available
/// (its delivery counted), and encodes again to the same bytes.
fn check_round_trip(w: &Window) {
    let bytes = w.encode();
    let back = Window::decode(&bytes).expect("a window's own snapshot decodes");
    assert_eq!((back.start(), back.next()), (w.start(), w.next()));
    for offset in w.start()..w.next() {
        let want = match w.slot(offset) {
            Some(Slot::Leased { deliveries, .. }) => Some(Slot::Available { deliveries }),
            other => other,
        };
        assert_eq!(back.slot(offset), want, "slot {offset} after decode");
    }
    assert_eq!(back.encode(), bytes, "encode, decode, encode");
}

#[cfg(test)]
mod tests {
    //! Real records and snapshots, each byte damaged and each length cut:
    //! the random inputs of the corpus runner rarely build these.
    use super::*;

    /// The raw-input form (mode 0) of a key and optional value.
    fn raw(parts: &[&[u8]]) -> Vec<u8> {
        let mut out = vec![if parts.len() == 1 { 2 } else { 0 }];
        for p in parts {
            out.extend_from_slice(&(p.len() as u16).to_le_bytes());
            out.extend_from_slice(p);
        }
        out
    }

    #[test]
    fn decode_offsets_on_damaged_real_records() {
        let v = OffsetAndMetadata {
            offset: 42,
            metadata: "meta".into(),
            commit_timestamp: 7,
        };
        let r = offsets::commit_record("group", &TopicPartition::new("topic", 3), Some(&v));
        let (key, value) = (r.key.unwrap().to_vec(), r.value.unwrap().to_vec());
        assert!(offsets::decode(&key, Some(&value)).is_ok());
        for (k, v) in [(&key, &value), (&value, &key)] {
            for i in 0..k.len() {
                for bits in [0x01, 0x80, 0xff] {
                    let mut damaged = k.clone();
                    damaged[i] ^= bits;
                    decode_offsets(&raw(&[&damaged, v]));
                    decode_offsets(&raw(&[&damaged]));
                }
                decode_offsets(&raw(&[&k[..i], v]));
            }
        }
    }

    #[test]
    fn decode_window_on_damaged_real_snapshots() {
        let mut w = Window::new(100);
        for o in 100..110 {
            w.lease_new(o, 1, 10);
        }
        for o in [101, 102, 107] {
            w.settle(o, 1, 1, true).unwrap();
        }
        w.settle(104, 1, 1, false).unwrap();
        let snapshot = w.encode();
        decode_window(&raw(&[&snapshot]));
        for i in 0..snapshot.len() {
            for bits in [0x01, 0x80, 0xff] {
                let mut damaged = snapshot.clone();
                damaged[i] ^= bits;
                decode_window(&raw(&[&damaged]));
            }
            decode_window(&raw(&[&snapshot[..i]]));
        }
    }
}
