//! One partition's share state (Kafka's KIP-932 "share-partition"): which
//! records between the start offset and the fetch point are available,
//! leased, or done, and how often each was delivered. Pure state, no I/O;
//! the queue persists it as a snapshot (`encode`/`decode`).

use std::collections::VecDeque;

/// What happened to a record in the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    /// Waiting for a worker (never delivered, or released / lease expired).
    Available { deliveries: u16 },
    /// Held by `worker` until `until_ms`.
    Leased {
        worker: u64,
        until_ms: i64,
        deliveries: u16,
    },
    /// Acknowledged, rejected or dead-lettered: never delivered again.
    Done,
}

impl Slot {
    fn deliveries(self) -> u16 {
        match self {
            Slot::Available { deliveries } | Slot::Leased { deliveries, .. } => deliveries,
            Slot::Done => 0,
        }
    }
}

/// Why a settle call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotLeased {
    /// The offset is not leased to that worker under that delivery (it
    /// expired and went elsewhere, or was settled already).
    NotHeld,
}

/// The records of one partition from `start` (everything before is done)
/// to `next` (the first never fetched). `slots[i]` is offset `start + i`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Window {
    start: u64,
    slots: VecDeque<Slot>,
    /// Number of `Available` slots, so polls skip the scan when zero.
    available: usize,
    /// No lease ends before this (`i64::MAX`: none held), so polls skip
    /// the expiry scan until then.
    expiry_hint: i64,
}

impl Window {
    pub fn new(start: u64) -> Window {
        Window {
            start,
            slots: VecDeque::new(),
            available: 0,
            expiry_hint: i64::MAX,
        }
    }

    /// Everything below is done.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// The next offset never fetched.
    pub fn next(&self) -> u64 {
        self.start + self.slots.len() as u64
    }

    /// Records fetched and not yet done.
    pub fn in_flight(&self) -> usize {
        self.slots.len()
    }

    #[cfg(any(test, feature = "fuzzing"))]
    pub fn has_available(&self) -> bool {
        self.available > 0
    }

    fn slot_mut(&mut self, offset: u64) -> Option<&mut Slot> {
        let i = offset.checked_sub(self.start)?;
        self.slots.get_mut(usize::try_from(i).ok()?)
    }

    pub fn slot(&self, offset: u64) -> Option<Slot> {
        let i = offset.checked_sub(self.start)?;
        self.slots.get(usize::try_from(i).ok()?).copied()
    }

    /// Moves the window past offsets that no longer exist (retention moved
    /// the log start past them).
    pub fn skip_to(&mut self, offset: u64) {
        while self.start < offset {
            if let Some(Slot::Available { .. }) = self.slots.pop_front() {
                self.available -= 1;
            }
            self.start += 1;
        }
        // Records done past `offset` are now the front: without this the
        // start (the queue's progress, persisted) stayed below them.
        self.advance();
    }

    /// Leases up to `max` available records to `worker` (oldest first),
    /// each one delivery more. Returns `(offset, deliveries)`.
    pub fn lease_available(&mut self, worker: u64, until_ms: i64, max: usize) -> Vec<(u64, u16)> {
        let mut out = Vec::new();
        if self.available == 0 {
            return out;
        }
        self.expiry_hint = self.expiry_hint.min(until_ms);
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if out.len() >= max || self.available == 0 {
                break;
            }
            if let Slot::Available { deliveries } = *slot {
                let deliveries = deliveries.saturating_add(1);
                *slot = Slot::Leased {
                    worker,
                    until_ms,
                    deliveries,
                };
                self.available -= 1;
                out.push((self.start + i as u64, deliveries));
            }
        }
        out
    }

    /// Appends the fetched offset `offset` (at or past `next`), leased to
    /// `worker` for its first delivery. Offsets skipped on the way (gaps a
    /// compaction left) are done.
    pub fn lease_new(&mut self, offset: u64, worker: u64, until_ms: i64) {
        while self.next() < offset {
            self.slots.push_back(Slot::Done);
        }
        if offset == self.next() {
            self.expiry_hint = self.expiry_hint.min(until_ms);
            self.slots.push_back(Slot::Leased {
                worker,
                until_ms,
                deliveries: 1,
            });
        }
        self.advance();
    }

    /// Marks offsets below `offset` that were fetched past as done (a fetch
    /// that ended in a compaction gap).
    pub fn fill_gap_to(&mut self, offset: u64) {
        while self.next() < offset {
            self.slots.push_back(Slot::Done);
        }
        self.advance();
    }

    /// Settles a lease: `done` (ack, reject, dead letter) or back to
    /// available (release). Returns the delivery count it had.
    pub fn settle(
        &mut self,
        offset: u64,
        worker: u64,
        deliveries: u16,
        done: bool,
    ) -> Result<u16, NotLeased> {
        let slot = self.slot_mut(offset).ok_or(NotLeased::NotHeld)?;
        match *slot {
            Slot::Leased {
                worker: w,
                deliveries: d,
                ..
            } if w == worker && d == deliveries => {
                *slot = if done {
                    Slot::Done
                } else {
                    Slot::Available { deliveries: d }
                };
                if !done {
                    self.available += 1;
                }
                self.advance();
                Ok(d)
            }
            _ => Err(NotLeased::NotHeld),
        }
    }

    /// Marks an available record done (dead-lettered without a lease).
    pub fn finish(&mut self, offset: u64) {
        if let Some(slot) = self.slot_mut(offset) {
            if matches!(slot, Slot::Available { .. }) {
                *slot = Slot::Done;
                self.available -= 1;
            }
        }
        self.advance();
    }

    /// Ends leases that expired by `now_ms`, or all of `worker`'s when
    /// given. Returns `(offset, deliveries)` of each record made available.
    pub fn expire(&mut self, now_ms: i64, worker: Option<u64>) -> Vec<(u64, u16)> {
        let mut out = Vec::new();
        if worker.is_none() && now_ms < self.expiry_hint {
            return out;
        }
        let mut earliest = i64::MAX;
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if let Slot::Leased {
                worker: w,
                until_ms,
                deliveries,
            } = *slot
            {
                let ended = match worker {
                    Some(gone) => w == gone,
                    None => until_ms <= now_ms,
                };
                if ended {
                    *slot = Slot::Available { deliveries };
                    self.available += 1;
                    out.push((self.start + i as u64, deliveries));
                } else {
                    earliest = earliest.min(until_ms);
                }
            }
        }
        self.expiry_hint = earliest;
        out
    }

    /// No lease ends before this (a lower bound), if any may be held.
    pub fn next_expiry(&self) -> Option<i64> {
        (self.expiry_hint != i64::MAX).then_some(self.expiry_hint)
    }

    /// Drops the done prefix.
    fn advance(&mut self) {
        while let Some(Slot::Done) = self.slots.front() {
            self.slots.pop_front();
            self.start += 1;
        }
    }

    /// The snapshot persisted for this window: the start offset, then runs
    /// of equal slots as `(length, done, deliveries)`. A lease is stored as
    /// "delivered, not done": after a crash it is available again, with
    /// its delivery counted.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + 8 * 4);
        out.push(SNAPSHOT_VERSION);
        out.extend_from_slice(&self.start.to_be_bytes());
        let mut runs: Vec<(u32, bool, u16)> = Vec::new();
        for slot in &self.slots {
            let key = (matches!(slot, Slot::Done), slot.deliveries());
            match runs.last_mut() {
                Some((len, done, d)) if (*done, *d) == key && *len < u32::MAX => *len += 1,
                _ => runs.push((1, key.0, key.1)),
            }
        }
        out.extend_from_slice(&(runs.len() as u32).to_be_bytes());
        for (len, done, deliveries) in runs {
            out.extend_from_slice(&len.to_be_bytes());
            out.push(u8::from(done));
            out.extend_from_slice(&deliveries.to_be_bytes());
        }
        out
    }

    /// Reads a snapshot back; every non-done slot comes back available.
    pub fn decode(bytes: &[u8]) -> Result<Window, &'static str> {
        let (&version, rest) = bytes.split_first().ok_or("empty snapshot")?;
        if version != SNAPSHOT_VERSION {
            return Err("unknown snapshot version");
        }
        let (start, rest) = rest.split_first_chunk::<8>().ok_or("truncated start")?;
        let (runs, mut rest) = rest.split_first_chunk::<4>().ok_or("truncated count")?;
        let mut w = Window::new(u64::from_be_bytes(*start));
        // Decoded windows hold no leases: `expiry_hint` stays "none".
        for _ in 0..u32::from_be_bytes(*runs) {
            let (len, r) = rest.split_first_chunk::<4>().ok_or("truncated run")?;
            let (&done, r) = r.split_first().ok_or("truncated run")?;
            let (deliveries, r) = r.split_first_chunk::<2>().ok_or("truncated run")?;
            rest = r;
            let len = u32::from_be_bytes(*len) as usize;
            if w.slots.len() + len > MAX_DECODED_SLOTS {
                return Err("snapshot window too large");
            }
            let slot = match done {
                0 => Slot::Available {
                    deliveries: u16::from_be_bytes(*deliveries),
                },
                1 => Slot::Done,
                _ => return Err("bad slot state"),
            };
            if !matches!(slot, Slot::Done) {
                w.available += len;
            }
            w.slots.extend(std::iter::repeat_n(slot, len));
        }
        if !rest.is_empty() {
            return Err("trailing bytes");
        }
        // Offsets are Kafka's non-negative i64s; a window reaching past
        // them would overflow `next` and `advance` (found by fuzzing).
        if w.start
            .checked_add(w.slots.len() as u64)
            .is_none_or(|n| n > i64::MAX as u64)
        {
            return Err("window past the offset range");
        }
        w.advance();
        Ok(w)
    }
}

const SNAPSHOT_VERSION: u8 = 1;
/// A snapshot describing more slots than this is damage, not a window
/// (the in-flight limit is far lower); refusing it bounds memory.
const MAX_DECODED_SLOTS: usize = 1 << 24;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_settle_and_the_start_advances_over_the_done_prefix() {
        let mut w = Window::new(10);
        for o in 10..15 {
            w.lease_new(o, 1, 100);
        }
        assert_eq!((w.start(), w.next(), w.in_flight()), (10, 15, 5));
        assert_eq!(w.settle(11, 1, 1, true), Ok(1));
        assert_eq!(w.start(), 10, "10 is still leased");
        assert_eq!(w.settle(10, 1, 1, true), Ok(1));
        assert_eq!(w.start(), 12);
        // Released: available again, redelivered with a higher count.
        assert_eq!(w.settle(12, 1, 1, false), Ok(1));
        assert_eq!(w.lease_available(2, 200, 10), [(12, 2)]);
        // The old delivery can no longer settle it.
        assert_eq!(w.settle(12, 1, 1, true), Err(NotLeased::NotHeld));
        assert_eq!(w.settle(12, 2, 2, true), Ok(2));
        assert_eq!(w.settle(99, 2, 1, true), Err(NotLeased::NotHeld));
    }

    #[test]
    fn expiry_and_worker_loss_make_leases_available() {
        let mut w = Window::new(0);
        w.lease_new(0, 1, 50);
        w.lease_new(1, 2, 80);
        assert_eq!(w.next_expiry(), Some(50));
        assert_eq!(w.expire(60, None), [(0, 1)]);
        assert_eq!(w.expire(60, Some(2)), [(1, 1)]);
        assert!(w.has_available());
        assert_eq!(w.lease_available(3, 500, 1), [(0, 2)]);
        assert_eq!(w.lease_available(3, 500, 1), [(1, 2)]);
        assert!(!w.has_available());
    }

    #[test]
    fn compaction_gaps_are_done() {
        let mut w = Window::new(0);
        w.lease_new(3, 1, 10);
        assert_eq!((w.start(), w.next()), (3, 4));
        w.fill_gap_to(9);
        assert_eq!((w.start(), w.next()), (3, 9));
        w.settle(3, 1, 1, true).unwrap();
        assert_eq!(w.start(), 9);
    }

    /// Regression (found by the `decode_window` fuzz target): skipping to
    /// the log start left a done record at the front, so the start stayed
    /// below a record already done.
    #[test]
    fn skip_to_drops_the_done_prefix_it_uncovers() {
        let mut w = Window::new(0);
        w.lease_new(0, 1, 10);
        w.lease_new(1, 1, 10);
        w.lease_new(2, 1, 10);
        w.settle(1, 1, 1, true).unwrap();
        w.skip_to(1);
        assert_eq!((w.start(), w.next()), (2, 3));
        assert_eq!(
            w.slot(2),
            Some(Slot::Leased {
                worker: 1,
                until_ms: 10,
                deliveries: 1
            })
        );
    }

    #[test]
    fn snapshot_round_trip_turns_leases_into_counted_deliveries() {
        let mut w = Window::new(100);
        for o in 100..110 {
            w.lease_new(o, 1, 10);
        }
        for o in [101, 102, 103, 107] {
            w.settle(o, 1, 1, true).unwrap();
        }
        w.settle(104, 1, 1, false).unwrap();
        let back = Window::decode(&w.encode()).unwrap();
        assert_eq!((back.start(), back.next()), (100, 110));
        assert_eq!(back.slot(100), Some(Slot::Available { deliveries: 1 }));
        assert_eq!(back.slot(101), Some(Slot::Done));
        assert_eq!(back.slot(104), Some(Slot::Available { deliveries: 1 }));
        assert_eq!(back.slot(107), Some(Slot::Done));
        assert_eq!(back.available, 6);
    }

    #[test]
    fn damaged_snapshots_are_errors_not_panics() {
        let mut w = Window::new(7);
        w.lease_new(7, 1, 1);
        w.lease_new(8, 1, 1);
        w.settle(8, 1, 1, true).unwrap();
        let bytes = w.encode();
        for cut in 0..bytes.len() {
            assert!(Window::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = bytes.clone();
        bad[0] = 9;
        assert!(Window::decode(&bad).is_err());
        let mut huge = vec![SNAPSHOT_VERSION];
        huge.extend_from_slice(&0u64.to_be_bytes());
        huge.extend_from_slice(&1u32.to_be_bytes());
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        huge.extend_from_slice(&[0, 0, 0]);
        assert!(Window::decode(&huge).is_err());
        // Regression (fuzzing): a start near the end of the offset range
        // overflowed the window's end instead of being refused.
        for (start, len) in [(u64::MAX, 1u32), (i64::MAX as u64, 1), (u64::MAX - 1, 0)] {
            let mut far = vec![SNAPSHOT_VERSION];
            far.extend_from_slice(&start.to_be_bytes());
            far.extend_from_slice(&1u32.to_be_bytes());
            far.extend_from_slice(&len.to_be_bytes());
            far.extend_from_slice(&[1, 0, 0]);
            assert!(Window::decode(&far).is_err(), "start {start} + {len}");
        }
        let mut last = vec![SNAPSHOT_VERSION];
        last.extend_from_slice(&(i64::MAX as u64 - 1).to_be_bytes());
        last.extend_from_slice(&1u32.to_be_bytes());
        last.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(Window::decode(&last).unwrap().next(), i64::MAX as u64);
    }
}
