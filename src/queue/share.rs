//! [`WorkQueue`]: the shared state of one queue on one topic, the leasing
//! of records to workers, persistence of that state and dead letters.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use bytes::Bytes;
use parking_lot::Mutex;

use super::config::QueueConfig;
use super::persist;
use super::window::{Slot, Window};
use super::worker::{Delivery, Worker};
use crate::consumer::Bell;
use crate::db::Log;
use crate::error::{Error, Result};
use crate::group::config::millis;
use crate::log::record;
use crate::partition::{self, PartitionShared};
use crate::record::{ConsumerRecord, Header, Record};
use crate::topic::{Topic, validate_topic_name};

/// Header names on dead-lettered records.
pub const DLQ_REASON: &str = "logbus.dlq.reason";
/// `topic/partition/offset` the dead-lettered record came from.
pub const DLQ_SOURCE: &str = "logbus.dlq.source";
/// How many times it was delivered.
pub const DLQ_DELIVERIES: &str = "logbus.dlq.deliveries";

/// A durable work queue on a topic (Kafka's share groups, KIP-932): any
/// number of [`Worker`]s take records from every partition; each record is
/// leased to one worker at a time until it is acknowledged, released, or
/// rejected, or its lease times out. A record delivered `max_deliveries`
/// times without an ack goes to a dead-letter topic.
///
/// Queue state (what is done, how often each record was delivered) is kept
/// in the internal topic `__work_queue_state`: after a crash nothing
/// acknowledged is delivered again and everything else is.
///
/// ```
/// # use logbus::*;
/// # use std::time::Duration;
/// # let dir = std::env::temp_dir().join(format!("logbus-doc-queue-{}", std::process::id()));
/// # let log = Log::open(&dir, LogConfig::default())?;
/// log.create_topic("jobs", TopicConfig::new(2))?;
/// log.producer("jobs")?.send(Record::new("resize img-1.png"))?;
///
/// let queue = WorkQueue::open(&log, "resizer", "jobs", QueueConfig::default())?;
/// let mut worker = queue.worker();
/// for job in worker.poll(Duration::from_secs(1))? {
///     // ... do the work, then:
///     worker.ack(&job)?;
/// }
/// worker.commit()?; // acks are durable now (the next poll does it too)
/// # drop(worker); drop(queue); drop(log); std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), logbus::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct WorkQueue {
    pub(crate) shared: Arc<QueueShared>,
}

/// One queue's state, shared by its handles and workers.
#[derive(Debug)]
pub(crate) struct QueueShared {
    pub log: Log,
    pub name: String,
    pub topic: Topic,
    pub config: QueueConfig,
    state: Mutex<QueueState>,
    dead_letters: Topic,
    store: Arc<PartitionShared>,
    /// Bumped whenever records become available again; waiting workers
    /// watch it.
    pub released: AtomicU64,
    bells: Mutex<Vec<Arc<Bell>>>,
    next_worker: AtomicU64,
}

#[derive(Debug)]
struct QueueState {
    windows: Vec<Window>,
    /// Partitions whose window changed since it was last persisted.
    dirty: Vec<bool>,
    /// Each window's start as last persisted: what consumed retention may
    /// rely on (an ack not yet persisted is undone by a crash).
    persisted_start: Vec<u64>,
    /// Partition the next poll starts with, so none starves.
    next_partition: usize,
    /// A poll is fetching this partition's new records without the lock:
    /// other polls leave them to it.
    fetching: Vec<bool>,
}

/// Registry of open queues, so two `open`s of one queue share its state.
pub(crate) type QueueRegistry = Mutex<BTreeMap<String, Weak<QueueShared>>>;

impl WorkQueue {
    /// Opens (or creates) queue `name` over `topic`. Opening a queue that
    /// is already open in this log returns a handle on the same queue.
    ///
    /// # Errors
    /// [`Error::UnknownTopic`]; [`Error::InvalidName`] for a name that
    /// breaks the topic-name rule; [`Error::InvalidConfig`] (also when the
    /// queue is open on another topic); [`Error::Corrupt`] for damaged
    /// queue state.
    pub fn open(log: &Log, name: &str, topic: &str, config: QueueConfig) -> Result<WorkQueue> {
        validate_topic_name(name)?;
        config.validate()?;
        let shared = log.shared();
        let registry = shared.queues();
        let mut open = registry.lock();
        if let Some(existing) = open.get(name).and_then(Weak::upgrade) {
            if existing.topic.name() != topic {
                return Err(Error::InvalidConfig {
                    reason: format!(
                        "queue {name:?} is open on topic {:?}, not {topic:?}",
                        existing.topic.name()
                    ),
                });
            }
            return Ok(WorkQueue { shared: existing });
        }
        let topic_handle = log.topic(topic)?;
        let dlq_name = config
            .dead_letter_topic
            .clone()
            .unwrap_or_else(|| format!("{name}.dlq"));
        validate_topic_name(&dlq_name)?;
        let dead_letters = match log.topic(&dlq_name) {
            Ok(t) => t,
            Err(Error::UnknownTopic { .. }) => {
                match log.create_topic(&dlq_name, crate::TopicConfig::new(1)) {
                    Err(Error::TopicExists { .. }) => log.topic(&dlq_name)?,
                    other => other?,
                }
            }
            Err(e) => return Err(e),
        };
        let store = shared.queue_state_partition()?;
        let mut loaded = persist::load(&store, name, topic)?;
        let windows: Vec<Window> = topic_handle
            .partitions()
            .iter()
            .map(|p| {
                let mut w = loaded
                    .remove(&p.id())
                    .unwrap_or_else(|| Window::new(p.log_start_offset()));
                w.skip_to(p.log_start_offset());
                w
            })
            .collect();
        let n = windows.len();
        let persisted_start = windows.iter().map(Window::start).collect();
        let queue = Arc::new(QueueShared {
            log: log.clone(),
            name: name.to_string(),
            topic: topic_handle,
            config,
            state: Mutex::new(QueueState {
                windows,
                dirty: vec![false; n],
                persisted_start,
                next_partition: 0,
                fetching: vec![false; n],
            }),
            dead_letters,
            store,
            released: AtomicU64::new(0),
            bells: Mutex::new(Vec::new()),
            next_worker: AtomicU64::new(1),
        });
        open.insert(name.to_string(), Arc::downgrade(&queue));
        Ok(WorkQueue { shared: queue })
    }

    /// A new worker. Move it to the thread that polls it.
    pub fn worker(&self) -> Worker {
        let id = self.shared.next_worker.fetch_add(1, Ordering::Relaxed);
        Worker::new(Arc::clone(&self.shared), id)
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The topic it distributes.
    pub fn topic(&self) -> &Topic {
        &self.shared.topic
    }

    /// The dead-letter topic.
    pub fn dead_letter_topic(&self) -> &Topic {
        &self.shared.dead_letters
    }

    /// Per partition: records waiting (never delivered, released or
    /// expired, up to the log end) and records leased now.
    pub fn backlog(&self) -> QueueBacklog {
        let state = self.shared.state.lock();
        let mut backlog = QueueBacklog::default();
        for (w, p) in state.windows.iter().zip(self.shared.topic.partitions()) {
            let fetched = (w.start()..w.next()).filter_map(|o| w.slot(o));
            for slot in fetched {
                match slot {
                    Slot::Available { .. } => backlog.available += 1,
                    Slot::Leased { .. } => backlog.leased += 1,
                    Slot::Done => {}
                }
            }
            backlog.available += p.log_end_offset().saturating_sub(w.next());
        }
        backlog
    }
}

/// Counts returned by [`WorkQueue::backlog`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueBacklog {
    /// Records a worker could take now.
    pub available: u64,
    /// Records held by workers.
    pub leased: u64,
}

/// How a worker settles a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settle {
    Ack,
    Release,
    Reject,
}

impl QueueShared {
    pub fn register(&self, bell: &Arc<Bell>) {
        self.bells.lock().push(Arc::clone(bell));
    }

    pub fn unregister(&self, bell: &Arc<Bell>) {
        self.bells.lock().retain(|b| !Arc::ptr_eq(b, bell));
    }

    /// Records came available: wake the workers waiting for some.
    fn announce_release(&self) {
        self.released.fetch_add(1, Ordering::SeqCst);
        for bell in self.bells.lock().iter() {
            bell.ring();
        }
    }

    fn now_ms(&self) -> i64 {
        self.log.shared().clock().now_ms()
    }

    /// Per partition, the offset past which a worker waits for new data.
    pub fn fetch_points(&self) -> Vec<u64> {
        self.state.lock().windows.iter().map(Window::next).collect()
    }

    /// Milliseconds until the earliest lease expires.
    pub fn ms_until_expiry(&self) -> Option<i64> {
        let now = self.now_ms();
        let state = self.state.lock();
        let at = state.windows.iter().filter_map(Window::next_expiry).min()?;
        Some(at.saturating_sub(now))
    }

    /// Leases up to `max` records to `worker`: released and expired records
    /// first, then new ones, across partitions in turn. Persists the state
    /// (deliveries count before a record is handed out, so a record that
    /// crashes its worker's process still reaches its delivery limit).
    pub fn acquire(&self, worker: u64, max: usize) -> Result<Vec<Delivery>> {
        let now = self.now_ms();
        let until = now.saturating_add(millis(self.config.lease_timeout));
        let parts = self.topic.partitions();
        let mut out = Vec::new();
        let mut dead: Vec<(usize, u64, u16)> = Vec::new();
        let mut state = self.state.lock();
        let mut st = &mut *state;
        let mut released = false;
        for (i, w) in st.windows.iter_mut().enumerate() {
            let expired = w.expire(now, None);
            if !expired.is_empty() {
                st.dirty[i] = true;
                released = true;
            }
            dead.extend(
                expired
                    .into_iter()
                    .filter(|&(_, d)| d >= self.config.max_deliveries)
                    .map(|(o, d)| (i, o, d)),
            );
        }
        self.dead_letter(st, &dead, DeadReason::MaxDeliveries)?;
        let n = parts.len();
        let first = st.next_partition;
        for k in 0..n {
            if out.len() >= max {
                break;
            }
            let i = (first + k) % n;
            let p = &parts[i].shared;
            let w = &mut st.windows[i];
            if w.start() < p.log_start() {
                w.skip_to(p.log_start());
                st.dirty[i] = true;
            }
            let again = w.lease_available(worker, until, max - out.len());
            if !again.is_empty() {
                st.dirty[i] = true;
                out.extend(read_leased(p, &again)?);
            }
            let room = self.config.max_in_flight.saturating_sub(w.in_flight());
            let mut want = room.min(max - out.len());
            // A fetch stops at a segment's end: go on into the next one.
            while want > 0 && st.windows[i].next() < p.log_end() && !st.fetching[i] {
                let from = st.windows[i].next();
                // Fetched and decoded without the lock, so settles (one per
                // record for workers acking each) go on meanwhile; the flag
                // keeps other polls off this partition's new records. Only
                // polls add to a window's end, so it is still `from` after,
                // unless retention moved the whole window on (checked).
                st.fetching[i] = true;
                drop(state);
                let fetching = FetchingGuard {
                    state: &self.state,
                    partition: i,
                };
                let before = out.len();
                // Decoded straight into `out` as first deliveries.
                let decoded = read_new(p, from, want, &mut out);
                state = self.state.lock();
                st = &mut *state;
                st.fetching[i] = false;
                std::mem::forget(fetching);
                // On an error `out` is dropped and none of them is leased.
                let next = decoded?;
                let w = &mut st.windows[i];
                if w.next() != from {
                    out.truncate(before); // not leased: read again later
                    break;
                }
                want -= out.len() - before;
                for d in &out[before..] {
                    w.lease_new(d.record.offset, worker, until);
                }
                // Records compacted away (or none decoded) between here and
                // `next` are done.
                w.fill_gap_to(next);
                st.dirty[i] = true;
                if w.next() <= from {
                    break; // no progress: nothing readable yet
                }
            }
            if out.len() >= max {
                st.next_partition = (i + 1) % n;
            }
        }
        let end = self.persist(st)?;
        drop(state);
        if released {
            self.announce_release();
        }
        self.sync(end)?;
        Ok(out)
    }

    /// Acknowledges one lease of `worker`: what `settle(worker, &[d],
    /// Settle::Ack)` does, in one lookup of the slot with the lock held as
    /// briefly as possible (nothing to dead-letter or announce), because
    /// workers that ack each record on its own take this lock once per
    /// record.
    pub fn ack_one(&self, worker: u64, d: &Delivery) -> Result<()> {
        let i = d.record.partition as usize;
        let settled = {
            let mut state = self.state.lock();
            let st = &mut *state;
            let settled = st.windows.get_mut(i).is_some_and(|w| {
                w.settle(d.record.offset, worker, d.delivery_count, true)
                    .is_ok()
            });
            if settled {
                st.dirty[i] = true;
            }
            settled
        };
        if settled {
            Ok(())
        } else {
            Err(Error::NotLeased {
                topic: d.record.topic.to_string(),
                partition: d.record.partition,
                offset: d.record.offset,
            })
        }
    }

    /// Settles leases of `worker`: all or none (a delivery not leased to it
    /// fails the call before anything changes).
    pub fn settle(&self, worker: u64, deliveries: &[&Delivery], how: Settle) -> Result<()> {
        let mut state = self.state.lock();
        let st = &mut *state;
        for d in deliveries {
            let i = d.record.partition as usize;
            let held = st.windows.get(i).and_then(|w| w.slot(d.record.offset));
            let ok = matches!(held, Some(Slot::Leased { worker: w, deliveries, .. })
                if w == worker && deliveries == d.delivery_count);
            if !ok {
                return Err(Error::NotLeased {
                    topic: d.record.topic.to_string(),
                    partition: d.record.partition,
                    offset: d.record.offset,
                });
            }
        }
        if how == Settle::Reject {
            // Written first: a crash between the two delivers the record to
            // the dead-letter topic twice, never zero times.
            let records: Vec<(&ConsumerRecord, u16)> = deliveries
                .iter()
                .map(|d| (&d.record, d.delivery_count))
                .collect();
            self.write_dead_letters(&records, DeadReason::Rejected)?;
        }
        let mut dead = Vec::new();
        for d in deliveries {
            let i = d.record.partition as usize;
            let done = how != Settle::Release;
            let count = st.windows[i]
                .settle(d.record.offset, worker, d.delivery_count, done)
                .map_err(|_| Error::NotLeased {
                    topic: d.record.topic.to_string(),
                    partition: d.record.partition,
                    offset: d.record.offset,
                })?;
            st.dirty[i] = true;
            if !done && count >= self.config.max_deliveries {
                dead.push((i, d.record.offset, count));
            }
        }
        self.dead_letter(st, &dead, DeadReason::MaxDeliveries)?;
        drop(state);
        if how == Settle::Release {
            self.announce_release();
        }
        Ok(())
    }

    /// A worker went away: its leases become available (dead-lettered at
    /// their delivery limit) and the state is persisted.
    pub fn worker_gone(&self, worker: u64) -> Result<()> {
        let now = self.now_ms();
        let mut state = self.state.lock();
        let st = &mut *state;
        let mut dead = Vec::new();
        let mut released = false;
        for (i, w) in st.windows.iter_mut().enumerate() {
            let freed = w.expire(now, Some(worker));
            if !freed.is_empty() {
                st.dirty[i] = true;
                released = true;
            }
            dead.extend(
                freed
                    .into_iter()
                    .filter(|&(_, d)| d >= self.config.max_deliveries)
                    .map(|(o, d)| (i, o, d)),
            );
        }
        self.dead_letter(st, &dead, DeadReason::MaxDeliveries)?;
        let end = self.persist(st)?;
        drop(state);
        if released {
            self.announce_release();
        }
        self.sync(end)
    }

    /// Persists every changed window now.
    pub fn commit(&self) -> Result<()> {
        let end = self.persist(&mut self.state.lock())?;
        self.sync(end)
    }

    /// Appends the snapshots of changed windows as one batch, under the
    /// state lock so snapshots of one partition land in the order taken.
    /// Returns the log end to sync to, if anything was written.
    fn persist(&self, st: &mut QueueState) -> Result<Option<u64>> {
        let parts = self.topic.partitions();
        let records: Vec<Record> = st
            .dirty
            .iter()
            .enumerate()
            .filter(|(_, d)| **d)
            .map(|(i, _)| {
                persist::snapshot_record(
                    &self.name,
                    self.topic.name(),
                    parts[i].id(),
                    &st.windows[i],
                )
            })
            .collect();
        if records.is_empty() {
            return Ok(None);
        }
        let now = self.now_ms();
        let len = record::encoded_len(&records, now);
        let (_, end) = self.store.append_deferring_sync(&records, len, now)?;
        for (i, dirty) in st.dirty.iter_mut().enumerate() {
            if std::mem::take(dirty) {
                st.persisted_start[i] = st.windows[i].start();
            }
        }
        Ok(Some(end))
    }

    /// Waits for the state written up to `end` to be durable (per the
    /// log's mode), then tells the log the queue moved on.
    fn sync(&self, end: Option<u64>) -> Result<()> {
        let Some(end) = end else {
            return Ok(());
        };
        if self.store.durability() == crate::Durability::Always {
            self.store.sync_to(end)?;
        }
        self.log.shared().consumer_progressed(self.topic.name());
        Ok(())
    }

    /// Where the queue starts on `partition`, as persisted (0 for a
    /// partition it does not know); `None` if the lock was busy under
    /// `Locking::Try`.
    pub fn start_offset(
        &self,
        partition: u32,
        locking: crate::group::progress::Locking,
    ) -> Option<u64> {
        let state = match locking {
            crate::group::progress::Locking::Wait => self.state.lock(),
            crate::group::progress::Locking::Try => self.state.try_lock()?,
        };
        Some(
            state
                .persisted_start
                .get(partition as usize)
                .copied()
                .unwrap_or(0),
        )
    }

    /// Sends available records at their delivery limit to the dead-letter
    /// topic and marks them done.
    fn dead_letter(
        &self,
        st: &mut QueueState,
        dead: &[(usize, u64, u16)],
        reason: DeadReason,
    ) -> Result<()> {
        if dead.is_empty() {
            return Ok(());
        }
        let parts = self.topic.partitions();
        let mut records = Vec::with_capacity(dead.len());
        for &(i, offset, deliveries) in dead {
            let r = read_leased(&parts[i].shared, &[(offset, deliveries)])?;
            records.extend(r.into_iter().map(|d| (d.record, deliveries)));
        }
        let refs: Vec<(&ConsumerRecord, u16)> = records.iter().map(|(r, d)| (r, *d)).collect();
        self.write_dead_letters(&refs, reason)?;
        for &(i, offset, _) in dead {
            st.windows[i].finish(offset);
            st.dirty[i] = true;
        }
        Ok(())
    }

    fn write_dead_letters(
        &self,
        records: &[(&ConsumerRecord, u16)],
        reason: DeadReason,
    ) -> Result<()> {
        let out: Vec<Record> = records
            .iter()
            .map(|(r, deliveries)| {
                let mut headers = r.headers.clone();
                headers.push(Header::new(DLQ_REASON, reason.as_str()));
                headers.push(Header::new(
                    DLQ_SOURCE,
                    format!("{}/{}/{}", r.topic, r.partition, r.offset),
                ));
                headers.push(Header::new(DLQ_DELIVERIES, deliveries.to_string()));
                Record {
                    key: r.key.clone(),
                    value: r.value.clone(),
                    headers,
                    timestamp: Some(r.timestamp),
                    partition: Some(0),
                }
            })
            .collect();
        self.log
            .shared()
            .producer_for(&self.dead_letters)
            .send_batch(&out)?;
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
enum DeadReason {
    Rejected,
    MaxDeliveries,
}

impl DeadReason {
    fn as_str(self) -> Bytes {
        Bytes::from_static(match self {
            DeadReason::Rejected => b"rejected",
            DeadReason::MaxDeliveries => b"max-deliveries",
        })
    }
}

/// Clears a partition's `fetching` flag if a fetch outside the state lock
/// unwinds (a bug), so the partition's new records are not left to a poll
/// that will never lease them. Forgotten on the normal path, which clears
/// the flag under the lock it takes anyway.
struct FetchingGuard<'a> {
    state: &'a Mutex<QueueState>,
    partition: usize,
}

impl Drop for FetchingGuard<'_> {
    fn drop(&mut self) {
        self.state.lock().fetching[self.partition] = false;
    }
}

/// Appends the records of `p` from `from` on (at most `max`) to `out` as
/// first deliveries; returns the offset after what was read.
fn read_new(p: &PartitionShared, from: u64, max: usize, out: &mut Vec<Delivery>) -> Result<u64> {
    let fetched = p.fetch(from, 1 << 20)?;
    let at = &mut partition::Resume::default();
    partition::decode_into_at(&fetched, p.topic(), p.id(), from, max, at, out)
}

/// Reads the records at `leased` offsets (sorted ascending) again.
fn read_leased(p: &PartitionShared, leased: &[(u64, u16)]) -> Result<Vec<Delivery>> {
    let mut out = Vec::with_capacity(leased.len());
    let mut i = 0;
    let mut records = Vec::new();
    while i < leased.len() {
        let (offset, _) = leased[i];
        let fetched = p.fetch(offset, 1 << 16)?;
        records.clear();
        let next = partition::decode_into(
            &fetched,
            p.topic(),
            p.id(),
            offset,
            usize::MAX,
            &mut records,
        )?;
        let mut found = records.iter().peekable();
        while i < leased.len() && leased[i].0 < next {
            let (want, deliveries) = leased[i];
            while found.peek().is_some_and(|r| r.offset < want) {
                found.next();
            }
            if let Some(r) = found.peek().filter(|r| r.offset == want) {
                out.push(Delivery {
                    record: (*r).clone(),
                    delivery_count: deliveries,
                });
            }
            i += 1;
        }
        if next <= offset {
            i += 1; // nothing readable there (compacted away): skip it
        }
    }
    Ok(out)
}
