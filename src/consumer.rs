//! [`Consumer`]: a standalone reader of assigned partitions (consumer groups
//! build on it).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::config::OffsetReset;
use crate::consumer_records::ConsumerRecords;
use crate::db::Log;
use crate::error::{Error, Result};
use crate::log::record::RecordView;
use crate::partition::{self, Partition, Signal};

/// A topic and a partition number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// The topic's name.
    pub topic: String,
    /// The partition number.
    pub partition: u32,
}

impl TopicPartition {
    /// Shorthand constructor.
    pub fn new(topic: impl Into<String>, partition: u32) -> Self {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

/// Consumer options.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConsumerConfig {
    /// Where to start without a valid position (Kafka's `auto.offset.reset`).
    pub offset_reset: OffsetReset,
    /// Most records one `poll` returns (Kafka's `max.poll.records`, 500).
    pub max_poll_records: usize,
    /// Most bytes fetched from one partition per `poll` (Kafka's
    /// `max.partition.fetch.bytes`, 1 MiB; at least one batch is always returned).
    pub max_partition_fetch_bytes: usize,
    /// The longest `poll` spins, checking for new data, before it parks
    /// the thread (default 50 µs, at most
    /// [`MAX_WAIT_SPIN`](ConsumerConfig::MAX_WAIT_SPIN); zero parks at once).
    /// Spinning turns a 10-30 µs wake-up into ~1 µs while records flow. The spin adapts: after a wait the spin would not have covered
    /// (no data within `wait_spin`), the next spin is half as long, so a
    /// consumer of a slow trickle, or an idle one, soon parks at once; data
    /// arriving within `wait_spin` restores the full spin. A spin that
    /// loses the core to another thread (more runnable threads than cores,
    /// where a parked thread is woken sooner) stops spinning for a while:
    /// 1 ms after a lone lost spin, doubling while spins keep losing the
    /// core, up to 100 ms.
    pub wait_spin: Duration,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            offset_reset: OffsetReset::Earliest,
            max_poll_records: 500,
            max_partition_fetch_bytes: 1 << 20,
            wait_spin: ConsumerConfig::DEFAULT_WAIT_SPIN,
        }
    }
}

impl ConsumerConfig {
    /// The default [`wait_spin`](Self::wait_spin).
    pub const DEFAULT_WAIT_SPIN: Duration = Duration::from_micros(50);

    /// The longest [`wait_spin`](Self::wait_spin): a spin longer than a few
    /// wake-ups (10-30 µs each) saves nothing more and burns a core.
    pub const MAX_WAIT_SPIN: Duration = Duration::from_millis(1);

    /// Sets the reset policy.
    #[must_use]
    pub fn offset_reset(mut self, reset: OffsetReset) -> Self {
        self.offset_reset = reset;
        self
    }

    /// Sets the longest `poll` spins before parking (at most
    /// [`MAX_WAIT_SPIN`](Self::MAX_WAIT_SPIN): longer values are cut to it).
    #[must_use]
    pub fn wait_spin(mut self, spin: Duration) -> Self {
        self.wait_spin = spin.min(Self::MAX_WAIT_SPIN);
        self
    }

    /// Sets `max_poll_records` (at least 1).
    #[must_use]
    pub fn max_poll_records(mut self, n: usize) -> Self {
        self.max_poll_records = n.max(1);
        self
    }
}

/// An offset found by [`Consumer::offsets_for_times`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetAndTimestamp {
    /// The earliest offset whose timestamp is at or after the one asked for.
    pub offset: u64,
    /// That record's timestamp.
    pub timestamp: i64,
}

/// Where to find a polling consumer's thread, and why it was woken.
/// Shared by the consumer, its [`Waker`]s and (for group members) the
/// group coordinator.
#[derive(Debug)]
pub(crate) struct Bell {
    /// The thread to unpark: replaced when the consumer moves threads.
    signal: Mutex<Arc<Signal>>,
    /// `wakeup()` was called and `poll` has not reported it yet.
    wakeup: AtomicBool,
}

impl Bell {
    pub(crate) fn new(signal: Arc<Signal>) -> Arc<Bell> {
        Arc::new(Bell {
            signal: Mutex::new(signal),
            wakeup: AtomicBool::new(false),
        })
    }

    /// Unparks the consumer if it waits. Callers set the flag the
    /// consumer's wait checks first (SeqCst on both sides: either the
    /// consumer sees the flag, or this sees it armed and unparks it).
    pub(crate) fn ring(&self) {
        self.signal.lock().notify();
    }

    pub(crate) fn wakeup_requested(&self) -> bool {
        self.wakeup.load(Ordering::SeqCst)
    }
}

/// Interrupts a consumer's [`poll`](Consumer::poll) from another thread:
/// the poll in progress (or the next one) returns [`Error::Wakeup`]. This
/// is how a service shuts a blocked consumer down cleanly (Kafka's
/// `wakeup()`). Cheap to clone, `Send + Sync`.
///
/// ```
/// # use logbus::*;
/// # use std::time::Duration;
/// # let dir = std::env::temp_dir().join(format!("logbus-doc-waker-{}", std::process::id()));
/// # let log = Log::open(&dir, LogConfig::default())?;
/// # log.create_topic("jobs", TopicConfig::new(1))?;
/// let mut consumer = log.consumer(ConsumerConfig::default());
/// consumer.assign(&[TopicPartition::new("jobs", 0)])?;
/// let waker = consumer.waker();
/// std::thread::spawn(move || waker.wake());
/// // Returns as soon as the other thread wakes it, not after an hour.
/// assert!(matches!(consumer.poll(Duration::from_secs(3600)), Err(Error::Wakeup)));
/// # drop(log); std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), logbus::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Waker {
    bell: Arc<Bell>,
}

impl Waker {
    /// Makes the consumer's current or next `poll` return [`Error::Wakeup`].
    pub fn wake(&self) {
        self.bell.wakeup.store(true, Ordering::SeqCst);
        self.bell.ring();
    }
}

#[derive(Debug)]
struct Assigned {
    /// Shared with the [`ConsumerRecords`] polled from it.
    tp: Arc<TopicPartition>,
    partition: Partition,
    position: Option<u64>,
    /// Where the last poll stopped inside a batch (if it did).
    cursor: Option<partition::ReadCursor>,
}

/// Reads records from the partitions assigned to it, in offset order per
/// partition. Move it to the thread that polls it.
///
/// ```
/// # use logbus::*;
/// # use std::time::Duration;
/// # let dir = std::env::temp_dir().join(format!("logbus-doc-consumer-{}", std::process::id()));
/// # let log = Log::open(&dir, LogConfig::default())?;
/// log.create_topic("events", TopicConfig::new(1))?;
/// log.producer("events")?.send(Record::new("hi"))?;
/// let mut consumer = log.consumer(ConsumerConfig::default());
/// consumer.assign(&[TopicPartition::new("events", 0)])?;
/// let records = consumer.poll(Duration::from_secs(1))?;
/// for r in &records {
///     assert_eq!(r.value, Some(&b"hi"[..]));
/// }
/// # drop(log); std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), logbus::Error>(())
/// ```
#[derive(Debug)]
pub struct Consumer {
    log: Log,
    config: ConsumerConfig,
    assigned: Vec<Assigned>,
    signal: Arc<Signal>,
    bell: Arc<Bell>,
    /// Partition the next poll starts with, so none starves.
    next: usize,
    /// How long the next wait spins (see [`ConsumerConfig::wait_spin`]).
    spin: Duration,
    /// No spinning before this: a spin lost the core (more runnable threads
    /// than cores), where a parked thread is woken sooner than a spinning
    /// one gets the core back.
    spin_paused_until: Option<Instant>,
    /// How long the next lost spin pauses spinning (see [`next_pause`]).
    spin_pause: Duration,
    /// Skip closed partitions instead of failing (group members: a deleted
    /// topic's partitions are taken away by a rebalance).
    pub(crate) skip_closed: bool,
    /// An error a poll ran into after it had taken records from other
    /// partitions: that poll returned the records, the next one returns
    /// this (Kafka's `Fetcher` does the same), so records whose position
    /// already moved are never dropped with the error. Dropped when the
    /// assignment or a position changes: the failing partition's position
    /// did not move past the failure, so a later poll meets it again.
    deferred: Option<Error>,
}

impl Consumer {
    pub(crate) fn new(log: Log, mut config: ConsumerConfig) -> Self {
        // The field is public: the builder's cap does not cover it.
        config.wait_spin = config.wait_spin.min(ConsumerConfig::MAX_WAIT_SPIN);
        let signal = Signal::for_current_thread();
        Consumer {
            spin: config.wait_spin,
            spin_paused_until: None,
            spin_pause: MIN_SPIN_PAUSE,
            log,
            config,
            assigned: Vec::new(),
            bell: Bell::new(Arc::clone(&signal)),
            signal,
            next: 0,
            skip_closed: false,
            deferred: None,
        }
    }

    /// A handle that interrupts this consumer's `poll` from another thread.
    pub fn waker(&self) -> Waker {
        Waker {
            bell: Arc::clone(&self.bell),
        }
    }

    pub(crate) fn bell(&self) -> &Arc<Bell> {
        &self.bell
    }

    /// Replaces the assignment. Partitions kept keep their positions.
    ///
    /// # Errors
    /// [`Error::UnknownTopic`], [`Error::UnknownPartition`]; on error the
    /// assignment is unchanged.
    pub fn assign(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        let mut assigned = Vec::with_capacity(partitions.len());
        for tp in partitions {
            if assigned.iter().any(|a: &Assigned| *a.tp == *tp) {
                continue;
            }
            let topic = self.log.topic(&tp.topic)?;
            let partition = topic.partition(tp.partition)?.clone();
            let position = self
                .assigned
                .iter()
                .find(|a| *a.tp == *tp)
                .and_then(|a| a.position);
            assigned.push(Assigned {
                tp: Arc::new(tp.clone()),
                partition,
                position,
                cursor: None,
            });
        }
        for a in &self.assigned {
            a.partition.shared.waiters().unregister(&self.signal);
        }
        for a in &assigned {
            a.partition.shared.waiters().register(&self.signal);
        }
        self.assigned = assigned;
        self.next = 0;
        self.deferred = None;
        Ok(())
    }

    /// The current assignment.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.assigned.iter().map(|a| (*a.tp).clone()).collect()
    }

    fn find(&mut self, tp: &TopicPartition) -> Result<&mut Assigned> {
        self.assigned
            .iter_mut()
            .find(|a| *a.tp == *tp)
            .ok_or_else(|| Error::NotAssigned {
                topic: tp.topic.clone(),
                partition: tp.partition,
            })
    }

    /// Sets the next offset to read. Checked against the log at the next
    /// `poll`, where an offset out of range meets the reset policy.
    ///
    /// # Errors
    /// [`Error::NotAssigned`].
    pub fn seek(&mut self, tp: &TopicPartition, offset: u64) -> Result<()> {
        self.find(tp)?.position = Some(offset);
        self.deferred = None;
        Ok(())
    }

    /// Moves to the oldest stored record of each partition.
    ///
    /// # Errors
    /// [`Error::NotAssigned`].
    pub fn seek_to_beginning(&mut self, tps: &[TopicPartition]) -> Result<()> {
        for tp in tps {
            let a = self.find(tp)?;
            a.position = Some(a.partition.log_start_offset());
        }
        self.deferred = None;
        Ok(())
    }

    /// Moves past the newest record of each partition.
    ///
    /// # Errors
    /// [`Error::NotAssigned`].
    pub fn seek_to_end(&mut self, tps: &[TopicPartition]) -> Result<()> {
        for tp in tps {
            let a = self.find(tp)?;
            a.position = Some(a.partition.log_end_offset());
        }
        self.deferred = None;
        Ok(())
    }

    /// The next offset `poll` will return for `tp` (resolving the reset
    /// policy if there is no position yet).
    ///
    /// # Errors
    /// [`Error::NotAssigned`], [`Error::NoOffset`] with `OffsetReset::None`.
    pub fn position(&mut self, tp: &TopicPartition) -> Result<u64> {
        let reset = self.config.offset_reset;
        let a = self.find(tp)?;
        resolve_position(a, reset)
    }

    /// For each `(partition, timestamp)`, the earliest offset whose
    /// timestamp is `>= timestamp` (`None` if every record is older).
    /// Partitions need not be assigned.
    ///
    /// # Errors
    /// [`Error::UnknownTopic`], [`Error::UnknownPartition`], [`Error::Corrupt`].
    pub fn offsets_for_times(
        &self,
        query: &[(TopicPartition, i64)],
    ) -> Result<Vec<Option<OffsetAndTimestamp>>> {
        query
            .iter()
            .map(|(tp, ts)| {
                let topic = self.log.topic(&tp.topic)?;
                let found = topic.partition(tp.partition)?.shared.offset_for_time(*ts)?;
                Ok(found.map(|(offset, timestamp)| OffsetAndTimestamp { offset, timestamp }))
            })
            .collect()
    }

    /// Returns the next records of the assigned partitions (at most
    /// [`max_poll_records`](ConsumerConfig::max_poll_records)), waiting up
    /// to `timeout` for some to arrive; empty if none did. The positions
    /// move past them. Iterate the [`ConsumerRecords`] by reference for
    /// records borrowed from the mapped segments (no allocation or
    /// reference count per record), by value for owned
    /// [`ConsumerRecord`](crate::ConsumerRecord)s. Waiting spins for up to
    /// [`ConsumerConfig::wait_spin`] (adaptive, 50 µs at most by default),
    /// then parks the thread; an append wakes it at once.
    ///
    /// # Errors
    /// [`Error::OffsetOutOfRange`] or [`Error::NoOffset`] with
    /// `OffsetReset::None`; [`Error::Corrupt`] if a stored batch fails its
    /// CRC or holds a malformed record (checked here, once per process per
    /// batch, so iterating the records cannot fail); [`Error::Closed`] if
    /// the log closed or a topic was deleted; [`Error::Wakeup`] if
    /// [`Waker::wake`] was called. A failing partition
    /// keeps its position (before the damaged batch). If the poll had
    /// already taken records from other partitions, it returns those and
    /// the next poll returns the error (as Kafka's consumer does), unless
    /// a seek or an assignment change comes first.
    pub fn poll(&mut self, timeout: Duration) -> Result<ConsumerRecords> {
        let deadline = Instant::now() + timeout;
        loop {
            self.take_wakeup()?;
            let records = self.fetch_once()?;
            if !records.is_empty() || Instant::now() >= deadline {
                return Ok(records);
            }
            self.wait(deadline, &|| false);
        }
    }

    /// Like [`poll`](Self::poll), but lends each record to `f`, with its
    /// partition, as a [`RecordView`] borrowed from the mapped segment
    /// instead of returning them: no allocation at all (not even the
    /// [`ConsumerRecords`]' small list of partitions), and each record is
    /// decoded once, where `poll` walks the batches it starts or stops
    /// inside once more. Positions
    /// move past each record handed to `f`; copy what must outlive the
    /// call. Returns the number of records handed over (0 when `timeout`
    /// passed with nothing new).
    ///
    /// ```
    /// # use logbus::*;
    /// # use std::time::Duration;
    /// # let dir = std::env::temp_dir().join(format!("logbus-doc-poll-each-{}", std::process::id()));
    /// # let log = Log::open(&dir, LogConfig::default())?;
    /// log.create_topic("events", TopicConfig::new(1))?;
    /// log.producer("events")?.send_batch(&[Record::new("a"), Record::new("bb")])?;
    /// let mut consumer = log.consumer(ConsumerConfig::default());
    /// consumer.assign(&[TopicPartition::new("events", 0)])?;
    /// let mut bytes = 0;
    /// let n = consumer.poll_each(Duration::from_secs(1), |tp, r| {
    ///     assert_eq!(tp.partition, 0);
    ///     bytes += r.value.map_or(0, <[u8]>::len);
    /// })?;
    /// assert_eq!((n, bytes), (2, 3));
    /// # drop(log); std::fs::remove_dir_all(&dir).ok();
    /// # Ok::<(), logbus::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`poll`](Self::poll). With [`Error::Corrupt`], the records before
    /// the damaged batch were handed to `f`, and the position is past them.
    pub fn poll_each(
        &mut self,
        timeout: Duration,
        mut f: impl FnMut(&TopicPartition, RecordView<'_>),
    ) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            self.take_wakeup()?;
            let taken = self.lend_once(&mut f)?;
            if taken > 0 || Instant::now() >= deadline {
                return Ok(taken);
            }
            self.wait(deadline, &|| false);
        }
    }

    /// Reports a pending [`Waker::wake`] once.
    pub(crate) fn take_wakeup(&self) -> Result<()> {
        if self.bell.wakeup.swap(false, Ordering::SeqCst) {
            Err(Error::Wakeup)
        } else {
            Ok(())
        }
    }

    /// Parks until an assigned partition has data past its position, a
    /// wake-up, `also()` holds, or `deadline`.
    pub(crate) fn wait(&mut self, deadline: Instant, also: &dyn Fn() -> bool) {
        if self.signal.is_for_other_thread() {
            // The consumer moved threads: wakers must unpark this one.
            let signal = Signal::for_current_thread();
            for a in &self.assigned {
                a.partition.shared.waiters().unregister(&self.signal);
                a.partition.shared.waiters().register(&signal);
            }
            *self.bell.signal.lock() = Arc::clone(&signal);
            self.signal = signal;
        }
        let (assigned, bell, skip_closed) = (&self.assigned, &self.bell, self.skip_closed);
        let started = Instant::now();
        let spin = match self.spin_paused_until {
            Some(until) if started < until => Duration::ZERO,
            _ => self.spin,
        };
        let waited = partition::wait_for_data(
            &self.signal,
            assigned,
            |a| &a.partition.shared,
            deadline,
            spin,
            || {
                bell.wakeup_requested()
                    || also()
                    || assigned.iter().any(|a| {
                        a.partition.log_end_offset() > a.position.unwrap_or(u64::MAX)
                            || (!skip_closed && a.partition.shared.is_closed())
                    })
            },
        );
        if waited.preempted {
            self.spin_paused_until = Some(Instant::now() + self.spin_pause);
        }
        if spin > Duration::ZERO {
            self.spin_pause = next_pause(self.spin_pause, waited.preempted);
        }
        self.spin = next_spin(
            self.spin,
            self.config.wait_spin,
            waited.ready.then(|| started.elapsed()),
        );
    }

    /// Adds partitions (group members gain them one rebalance at a time),
    /// starting at `position` (`None`: the reset policy decides).
    pub(crate) fn add(&mut self, partitions: Vec<(TopicPartition, Partition, Option<u64>)>) {
        for (tp, partition, position) in partitions {
            if self.assigned.iter().any(|a| *a.tp == tp) {
                continue;
            }
            partition.shared.waiters().register(&self.signal);
            self.assigned.push(Assigned {
                tp: Arc::new(tp),
                partition,
                position,
                cursor: None,
            });
        }
    }

    /// Removes partitions; the others keep their positions.
    pub(crate) fn remove(&mut self, partitions: &[TopicPartition]) {
        let signal = &self.signal;
        self.assigned.retain(|a| {
            let keep = !partitions.contains(&*a.tp);
            if !keep {
                a.partition.shared.waiters().unregister(signal);
            }
            keep
        });
        self.next = 0;
        self.deferred = None;
    }

    /// Positions known for the assigned partitions (none yet: not listed).
    pub(crate) fn positions(&self) -> Vec<(TopicPartition, u64)> {
        self.assigned
            .iter()
            .filter_map(|a| a.position.map(|p| ((*a.tp).clone(), p)))
            .collect()
    }

    /// The partition handle of an assigned partition.
    pub(crate) fn assigned_partition(&self, tp: &TopicPartition) -> Option<&Partition> {
        self.assigned
            .iter()
            .find(|a| *a.tp == *tp)
            .map(|a| &a.partition)
    }

    /// One round of [`poll_each`](Self::poll_each) without waiting.
    pub(crate) fn lend_once(
        &mut self,
        f: &mut impl FnMut(&TopicPartition, RecordView<'_>),
    ) -> Result<usize> {
        if let Some(e) = self.deferred.take() {
            return Err(e); // from a `poll` (see `fetch_once`)
        }
        self.fetch_each(|tp, _, fetched, next, at, room| {
            partition::visit(fetched, room, next, at, |r| f(tp, r))
        })
    }

    /// One round of [`poll`](Self::poll) without waiting.
    ///
    /// An error after records were taken from other partitions is kept for
    /// the next call and the records are returned: their positions have
    /// moved past them, so dropping them with the error would lose them.
    /// The failing partition's records from that fetch are not returned
    /// and its position stays before them (`take` adds nothing and
    /// leaves `next` as it was on an error).
    pub(crate) fn fetch_once(&mut self) -> Result<ConsumerRecords> {
        if let Some(e) = self.deferred.take() {
            return Err(e);
        }
        let mut out = ConsumerRecords::empty();
        let fetched = self.fetch_each(|tp, shared, fetched, next, at, room| {
            out.take(tp, shared.topic(), fetched, next, at, room)
        });
        match fetched {
            Ok(_) => Ok(out),
            Err(e) if !out.is_empty() => {
                self.deferred = Some(e);
                Ok(out)
            }
            Err(e) => Err(e),
        }
    }

    /// One round over the assigned partitions (from `self.next`, so none
    /// starves) until `max_poll_records` are taken: for each partition with
    /// data past its position, fetches and calls `take(tp, partition,
    /// fetched, next, resume, room)`, which takes at most `room` records
    /// from `*next` on and moves `*next` past them. The position becomes
    /// `*next`, also when `take` fails. When `take` stops inside a batch
    /// (`resume.stop`), the next round goes on from there instead of
    /// fetching and decoding that batch from its start again. Returns the
    /// number taken.
    fn fetch_each(
        &mut self,
        mut take: impl FnMut(
            &Arc<TopicPartition>,
            &partition::PartitionShared,
            &partition::FetchedBatches,
            &mut u64,
            &mut partition::Resume,
            usize,
        ) -> Result<usize>,
    ) -> Result<usize> {
        let n = self.assigned.len();
        let max = self.config.max_poll_records;
        let mut taken = 0;
        for k in 0..n {
            let i = (self.next + k) % n;
            let a = &mut self.assigned[i];
            if a.partition.shared.is_closed() {
                if self.skip_closed {
                    continue;
                }
                return Err(Error::Closed);
            }
            let position = resolve_position(a, self.config.offset_reset)?;
            if position >= a.partition.log_end_offset() {
                continue;
            }
            let max_bytes = self.config.max_partition_fetch_bytes;
            let mut at = partition::Resume::default();
            let resumed = a
                .cursor
                .take()
                .and_then(|c| a.partition.shared.fetch_from_cursor(c, position, max_bytes));
            let fetched = match resumed {
                Some((fetched, stop)) => {
                    at.start = Some(stop);
                    fetched
                }
                None => match a.partition.fetch(position, max_bytes) {
                    Ok(f) => f,
                    Err(Error::OffsetOutOfRange { .. }) => {
                        // Retention moved the start past us between the checks.
                        a.position = None;
                        resolve_position(a, self.config.offset_reset)?;
                        continue;
                    }
                    Err(e) => return Err(e),
                },
            };
            let mut next = position;
            let result = take(
                &a.tp,
                &a.partition.shared,
                &fetched,
                &mut next,
                &mut at,
                max - taken,
            );
            a.position = Some(next);
            let took = result.inspect_err(|_| {
                // The next round starts after this partition, so a damaged
                // batch here does not keep the others from being read.
                self.next = (i + 1) % n;
            })?;
            a.cursor = at
                .stop
                .and_then(|stop| partition::ReadCursor::new(&fetched, stop, next));
            taken += took;
            if taken >= max {
                self.next = (i + 1) % n;
                break;
            }
        }
        Ok(taken)
    }
}

/// Longest a consumer parks without spinning after spins were descheduled.
/// Measured under load average 7-8 on 2 cores, produce -> consume p50 was
/// 3.9 µs parking at once, 59 µs spinning up to 20 µs, 765 µs up to 50 µs.
const MAX_SPIN_PAUSE: Duration = Duration::from_millis(100);

/// The pause after a lone lost spin. One descheduling (a kernel worker,
/// the host) says little about the load, while a parked consumer on this
/// VM was woken in milliseconds at the tail: a fixed 100 ms pause after
/// every lost spin gave produce -> consume p99 of 9-6121 µs (median ~2 ms)
/// in 8 runs where this backoff gave 17-973 µs (median ~290 µs).
const MIN_SPIN_PAUSE: Duration = Duration::from_millis(1);

/// The pause the next lost spin starts, after a spin that was
/// (`preempted`) or was not descheduled: doubles while spins keep losing
/// the core, up to `MAX_SPIN_PAUSE` under sustained load, and halves back
/// with each spin that keeps it.
fn next_pause(pause: Duration, preempted: bool) -> Duration {
    if preempted {
        (pause * 2).min(MAX_SPIN_PAUSE)
    } else {
        (pause / 2).max(MIN_SPIN_PAUSE)
    }
}

/// The spin of the next wait, after one that spun `spin` and ended
/// `ready_after` it began (`None`: at its deadline, nothing arrived).
///
/// Data within `max` means a full spin would have caught it without a
/// wake-up: spin fully next time. Otherwise the spin was wasted CPU (or
/// would have been): halve it, down to zero, so an idle consumer, or one
/// fed more slowly than `max`, costs nothing.
fn next_spin(spin: Duration, max: Duration, ready_after: Option<Duration>) -> Duration {
    match ready_after {
        Some(after) if after <= max => max,
        _ if spin < Duration::from_micros(2) => Duration::ZERO,
        _ => spin / 2,
    }
}

/// The position to read from, applying the reset policy when there is none
/// or it fell outside `[log start, log end]`.
fn resolve_position(a: &mut Assigned, reset: OffsetReset) -> Result<u64> {
    let (start, end) = (a.partition.log_start_offset(), a.partition.log_end_offset());
    match a.position {
        Some(p) if (start..=end).contains(&p) => return Ok(p),
        Some(p) if reset == OffsetReset::None => {
            return Err(Error::OffsetOutOfRange {
                topic: a.tp.topic.clone(),
                partition: a.tp.partition,
                offset: p,
                log_start: start,
                log_end: end,
            });
        }
        None if reset == OffsetReset::None => {
            return Err(Error::NoOffset {
                topic: a.tp.topic.clone(),
                partition: a.tp.partition,
            });
        }
        _ => {}
    }
    let p = if reset == OffsetReset::Latest {
        end
    } else {
        start
    };
    a.position = Some(p);
    Ok(p)
}

impl Drop for Consumer {
    fn drop(&mut self) {
        for a in &self.assigned {
            a.partition.shared.waiters().unregister(&self.signal);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LogConfig;
    use crate::testutil::TempDir;

    const MAX: Duration = Duration::from_micros(50);

    #[test]
    fn lost_spins_double_the_pause_up_to_the_cap_and_kept_ones_halve_it() {
        let mut pause = MIN_SPIN_PAUSE;
        let mut seen = vec![pause];
        for _ in 0..8 {
            pause = next_pause(pause, true);
            seen.push(pause);
        }
        let ms = Duration::from_millis;
        assert_eq!(
            seen,
            [
                ms(1),
                ms(2),
                ms(4),
                ms(8),
                ms(16),
                ms(32),
                ms(64),
                ms(100),
                ms(100)
            ]
        );
        assert_eq!(next_pause(ms(100), false), ms(50));
        assert_eq!(next_pause(ms(1), false), ms(1));
    }

    #[test]
    fn data_within_the_longest_spin_restores_it() {
        let us = Duration::from_micros;
        assert_eq!(next_spin(Duration::ZERO, MAX, Some(us(30))), MAX);
        assert_eq!(next_spin(us(6), MAX, Some(MAX)), MAX);
        // Data after a park the full spin would not have covered.
        assert_eq!(next_spin(MAX, MAX, Some(us(51))), us(25));
    }

    #[test]
    fn waits_that_spin_in_vain_halve_the_spin_down_to_zero() {
        let mut spin = MAX;
        let mut steps = 0;
        while spin > Duration::ZERO {
            let next = next_spin(spin, MAX, None);
            assert!(next < spin);
            spin = next;
            steps += 1;
        }
        assert_eq!(steps, 6, "50 µs, halved until below 2 µs, then zero");
        assert_eq!(next_spin(Duration::ZERO, MAX, None), Duration::ZERO);
    }

    #[test]
    fn a_wait_spin_set_on_the_field_is_capped_too() {
        let dir = TempDir::new();
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        // What a caller outside the crate can do (the struct is
        // non-exhaustive: no struct literal there).
        #[expect(clippy::field_reassign_with_default, reason = "as a user would")]
        let config = {
            let mut config = ConsumerConfig::default();
            config.wait_spin = Duration::from_secs(3);
            config
        };
        let consumer = log.consumer(config);
        assert_eq!(consumer.config.wait_spin, ConsumerConfig::MAX_WAIT_SPIN);
        assert_eq!(consumer.spin, ConsumerConfig::MAX_WAIT_SPIN);
    }
}
