//! [`ConsumerGroup`]: one member of a consumer group, polling the
//! partitions the coordinator gives it and committing offsets.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::config::{GroupConfig, millis};
use super::coordinator::{GroupCell, JoinRequest, Joined, MemberLink, Removal};
use super::offsets::{self, MAX_STRING, OffsetAndMetadata};
use crate::consumer::{Consumer, TopicPartition, Waker};
use crate::consumer_records::ConsumerRecords;
use crate::db::Log;
use crate::error::{Error, Result};
use crate::log::record::RecordView;

/// Called by [`ConsumerGroup::poll`] (and [`poll_each`](ConsumerGroup::poll_each))
/// when the member's partitions change.
/// Every method has an empty default.
///
/// ```
/// use logbus::{RebalanceContext, RebalanceListener, TopicPartition};
/// struct CommitOnRevoke;
/// impl RebalanceListener for CommitOnRevoke {
///     fn on_revoked(&mut self, group: &mut RebalanceContext<'_>, partitions: &[TopicPartition]) {
///         // Last chance to commit what was processed: the partitions go
///         // to another member right after this returns.
///         group.commit().ok();
///     }
/// }
/// ```
pub trait RebalanceListener: Send {
    /// Before the member gives up `partitions` (commits still succeed).
    fn on_revoked(&mut self, group: &mut RebalanceContext<'_>, partitions: &[TopicPartition]) {
        let _ = (group, partitions);
    }

    /// After the member gained `partitions` (positions are set: seek here
    /// to start elsewhere).
    fn on_assigned(&mut self, group: &mut RebalanceContext<'_>, partitions: &[TopicPartition]) {
        let _ = (group, partitions);
    }

    /// The member was removed from the group (it stopped polling for
    /// longer than `max_poll_interval`) and `partitions` already belong to
    /// others: commits for them would be refused.
    fn on_lost(&mut self, partitions: &[TopicPartition]) {
        let _ = partitions;
    }
}

/// What a [`RebalanceListener`] may do with the member during a callback.
#[derive(Debug)]
pub struct RebalanceContext<'a> {
    member: &'a mut ConsumerGroup,
}

impl RebalanceContext<'_> {
    /// Commits the positions of every partition the member owns.
    ///
    /// # Errors
    /// As [`ConsumerGroup::commit`].
    pub fn commit(&mut self) -> Result<()> {
        self.member.commit()
    }

    /// Commits explicit offsets.
    ///
    /// # Errors
    /// As [`ConsumerGroup::commit_offsets`].
    pub fn commit_offsets(&mut self, offsets: &[(TopicPartition, u64)]) -> Result<()> {
        self.member.commit_offsets(offsets)
    }

    /// The member's position on `tp`.
    ///
    /// # Errors
    /// As [`ConsumerGroup::position`].
    pub fn position(&mut self, tp: &TopicPartition) -> Result<u64> {
        self.member.position(tp)
    }

    /// Moves the member's position on `tp`.
    ///
    /// # Errors
    /// As [`ConsumerGroup::seek`].
    pub fn seek(&mut self, tp: &TopicPartition, offset: u64) -> Result<()> {
        self.member.seek(tp, offset)
    }

    /// The group's committed offset for `tp`.
    pub fn committed(&self, tp: &TopicPartition) -> Option<OffsetAndMetadata> {
        self.member.committed(tp)
    }

    /// The member's id and generation.
    pub fn member_id(&self) -> &str {
        self.member.member_id()
    }
}

/// One member of a consumer group: it polls the partitions the group's
/// coordinator assigns it and commits how far it got. Move it to the thread
/// that polls it.
///
/// Members of one group split the partitions of the topics they subscribe
/// to (each partition read by one member at a time, in order); different
/// groups each read every record. Assignment, rebalances, positions of new
/// partitions and auto-commit happen inside [`poll`](ConsumerGroup::poll)
/// (or [`poll_each`](ConsumerGroup::poll_each), its borrowing form).
///
/// ```
/// # use logbus::*;
/// # use std::time::Duration;
/// # let dir = std::env::temp_dir().join(format!("logbus-doc-group-{}", std::process::id()));
/// # let log = Log::open(&dir, LogConfig::default())?;
/// log.create_topic("orders", TopicConfig::new(4))?;
/// log.producer("orders")?.send(Record::new("order #1").key("alice"))?;
///
/// let mut billing = ConsumerGroup::join(&log, "billing", &["orders"], GroupConfig::default())?;
/// let records = billing.poll(Duration::from_secs(1))?;
/// assert_eq!(records.len(), 1);
/// billing.commit()?; // the group resumes after this record next time
/// let tp = TopicPartition::new("orders", records.get(0).unwrap().partition);
/// assert_eq!(billing.committed(&tp).map(|c| c.offset), Some(1));
/// billing.leave()?;
/// # drop(log); std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), logbus::Error>(())
/// ```
pub struct ConsumerGroup {
    log: Log,
    cell: Arc<GroupCell>,
    member_id: String,
    link: Arc<MemberLink>,
    config: GroupConfig,
    topics: Vec<String>,
    /// Reads the partitions this member owns, and nothing else.
    consumer: Consumer,
    /// The generation this member last took up.
    generation: u32,
    listener: Option<Box<dyn RebalanceListener>>,
    next_auto_commit: Instant,
    /// `leave` already ran (drop must not run it again).
    left: bool,
}

impl std::fmt::Debug for ConsumerGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerGroup")
            .field("group", &self.cell.id)
            .field("member_id", &self.member_id)
            .field("generation", &self.generation)
            .field("assignment", &self.consumer.assignment())
            .finish_non_exhaustive()
    }
}

impl ConsumerGroup {
    /// Joins group `group_id` subscribed to `topics`. Partitions are
    /// assigned during the following polls.
    ///
    /// # Errors
    /// [`Error::UnknownTopic`]; [`Error::InvalidConfig`] for an empty
    /// group id or bad timeouts; [`Error::InconsistentStrategy`] if the
    /// group's members use another strategy; I/O errors creating the
    /// offsets topic.
    pub fn join(
        log: &Log,
        group_id: &str,
        topics: &[&str],
        config: GroupConfig,
    ) -> Result<ConsumerGroup> {
        config.validate()?;
        if group_id.is_empty() || group_id.len() > MAX_STRING {
            return Err(Error::InvalidConfig {
                reason: "a group id must be 1..=32767 bytes".into(),
            });
        }
        let mut subscribed: Vec<String> = Vec::with_capacity(topics.len());
        for &t in topics {
            log.topic(t)?;
            if !subscribed.iter().any(|s| s == t) {
                subscribed.push(t.to_string());
            }
        }
        subscribed.sort();
        // Created now, so a commit never waits for it.
        log.shared().offsets_partition()?;
        let mut consumer = log.consumer(config.consumer.clone());
        // A deleted topic's partitions leave through a rebalance, not an error.
        consumer.skip_closed = true;
        let joined = join_group(log, group_id, &subscribed, &config, &consumer)?;
        Ok(ConsumerGroup {
            log: log.clone(),
            cell: joined.cell,
            member_id: joined.member_id,
            link: joined.link,
            next_auto_commit: Instant::now() + config.auto_commit_interval,
            config,
            topics: subscribed,
            consumer,
            generation: 0,
            listener: None,
            left: false,
        })
    }

    /// Joins again as a new member (after being removed).
    fn rejoin(&mut self) -> Result<()> {
        let joined = join_group(
            &self.log,
            &self.cell.id.clone(),
            &self.topics,
            &self.config,
            &self.consumer,
        )?;
        self.cell = joined.cell;
        self.member_id = joined.member_id;
        self.link = joined.link;
        self.generation = 0;
        Ok(())
    }

    /// Calls `listener` when partitions are revoked, assigned or lost.
    pub fn set_rebalance_listener(&mut self, listener: impl RebalanceListener + 'static) {
        self.listener = Some(Box::new(listener));
    }

    /// The group's id.
    pub fn group_id(&self) -> &str {
        &self.cell.id
    }

    /// This member's id (static members' ids start with their instance id).
    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    /// The generation whose assignment this member last took up.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// The partitions this member owns now.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        let mut tps = self.consumer.assignment();
        tps.sort();
        tps
    }

    /// A handle that interrupts [`poll`](Self::poll) from another thread
    /// (it returns [`Error::Wakeup`]).
    pub fn waker(&self) -> Waker {
        self.consumer.waker()
    }

    /// Returns the next records of this member's partitions, waiting up to
    /// `timeout`. Takes part in rebalances (revoking, then gaining
    /// partitions, with the listener's callbacks) and auto-commits. Wakes
    /// at once on new data, on a rebalance, or on [`Waker::wake`].
    ///
    /// # Errors
    /// [`Error::Wakeup`]; [`Error::Fenced`] if a newer member took this
    /// one's static instance id; as [`Consumer::poll`] otherwise.
    pub fn poll(&mut self, timeout: Duration) -> Result<ConsumerRecords> {
        let mut records = ConsumerRecords::empty();
        self.poll_with(timeout, |consumer| {
            records = consumer.fetch_once()?;
            Ok(records.len())
        })?;
        Ok(records)
    }

    /// Like [`poll`](Self::poll), but lends each record to `f`, with its
    /// partition, as a [`RecordView`] borrowed from the mapped segment, as
    /// [`Consumer::poll_each`] does: no allocation and no reference
    /// counting per record. Everything else is as with `poll`: positions
    /// move past each record handed to `f` (what [`commit`](Self::commit)
    /// and auto-commit store), and rebalances, the listener's callbacks and
    /// auto-commit happen in the call, before any record is lent. Returns
    /// the number of records handed over (0 when `timeout` passed with
    /// nothing new).
    ///
    /// ```
    /// # use logbus::*;
    /// # use std::time::Duration;
    /// # let dir = std::env::temp_dir().join(format!("logbus-doc-group-each-{}", std::process::id()));
    /// # let log = Log::open(&dir, LogConfig::default())?;
    /// log.create_topic("orders", TopicConfig::new(2))?;
    /// log.producer("orders")?.send_batch(&[Record::new("a"), Record::new("bb")])?;
    /// let mut billing = ConsumerGroup::join(&log, "billing", &["orders"], GroupConfig::default())?;
    /// let mut bytes = 0;
    /// let mut n = 0;
    /// while n < 2 {
    ///     n += billing.poll_each(Duration::from_secs(1), |_tp, r| {
    ///         bytes += r.value.map_or(0, <[u8]>::len);
    ///     })?;
    /// }
    /// assert_eq!(bytes, 3);
    /// billing.commit()?; // past both records
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
        self.poll_with(timeout, |consumer| consumer.lend_once(&mut f))
    }

    /// The frame of both polls: marks the member as polling (so it is not
    /// taken for stalled) while `poll_until` runs.
    fn poll_with(
        &mut self,
        timeout: Duration,
        fetch: impl FnMut(&mut Consumer) -> Result<usize>,
    ) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        self.link.set_in_poll(true, self.now_ms());
        let result = self.poll_until(deadline, fetch);
        let now = self.now_ms();
        self.link.set_in_poll(false, now);
        self.cell
            .schedule_check_by(now.saturating_add(millis(self.config.max_poll_interval)));
        result
    }

    /// Takes part in the group, then calls `fetch` (one round over the
    /// owned partitions, returning the records it took), until it took some
    /// or `deadline` passed.
    fn poll_until(
        &mut self,
        deadline: Instant,
        mut fetch: impl FnMut(&mut Consumer) -> Result<usize>,
    ) -> Result<usize> {
        loop {
            self.consumer.take_wakeup()?;
            self.keep_membership()?;
            if self.link.is_dirty() {
                self.sync()?;
            }
            if self.config.auto_commit && Instant::now() >= self.next_auto_commit {
                self.auto_commit()?;
            }
            if self.log.is_closed() {
                return Err(Error::Closed);
            }
            let taken = fetch(&mut self.consumer)?;
            let now = Instant::now();
            if taken > 0 || now >= deadline {
                return Ok(taken);
            }
            // Wake in time to expire members that stopped polling, so
            // their partitions reach the members still polling.
            let check_in = self.cell.ms_until_check(self.now_ms()).max(1) as u64;
            let wake_at = deadline.min(now + Duration::from_millis(check_in));
            let (link, log) = (Arc::clone(&self.link), self.log.clone());
            self.consumer
                .wait(wake_at, &|| link.is_dirty() || log.is_closed());
        }
    }

    /// Expires stalled members if due; rejoins if this one was removed.
    fn keep_membership(&mut self) -> Result<()> {
        let now = self.now_ms();
        if self.cell.check_due(now) {
            let shared = Arc::clone(self.log.shared());
            let lookup = |t: &str| shared.partition_count(t);
            self.cell.state.lock().expire(&self.cell, &lookup, now);
        }
        match self.link.removal() {
            Removal::Present => Ok(()),
            Removal::Fenced => Err(self.fenced()),
            Removal::Expired | Removal::Left => {
                // Kafka's behaviour: the partitions are gone (others may
                // have processed them already); rejoin as a new member.
                let lost = self.assignment();
                self.consumer.remove(&lost);
                if !lost.is_empty() {
                    if let Some(mut listener) = self.listener.take() {
                        listener.on_lost(&lost);
                        self.listener = Some(listener);
                    }
                }
                self.rejoin()
            }
        }
    }

    fn fenced(&self) -> Error {
        Error::Fenced {
            group: self.cell.id.clone(),
            instance_id: self.config.group_instance_id.clone().unwrap_or_default(),
        }
    }

    /// Takes up the current generation: gives up what must go (committing
    /// first), then takes what has come free.
    fn sync(&mut self) -> Result<()> {
        // Cleared before reading the state: a change made after this point
        // sets it again, so none is missed.
        self.link.clear_dirty();
        let revoke = {
            let g = self.cell.state.lock();
            g.check_member(&self.cell.id, &self.member_id, &self.link, self.generation)?;
            g.revocations(&self.member_id, &self.link)
        };
        let mut committed = Ok(());
        if !revoke.is_empty() {
            if self.config.auto_commit {
                // A failed commit must not keep the partitions from moving:
                // the hand-over goes on and the error is reported after it.
                committed = self.commit_partitions(&revoke, true);
            }
            self.call_listener(|l, ctx| l.on_revoked(ctx, &revoke));
            self.consumer.remove(&revoke);
            self.cell
                .state
                .lock()
                .release(&self.member_id, &self.link, &revoke);
        }
        let (granted, generation) = {
            let mut g = self.cell.state.lock();
            let acquired = g.acquire(&self.member_id, &self.link);
            let granted: Vec<(TopicPartition, Option<u64>)> = acquired
                .granted
                .into_iter()
                .map(|tp| {
                    let committed = g.committed.get(&tp).map(|c| c.offset);
                    (tp, committed)
                })
                .collect();
            (granted, acquired.generation)
        };
        self.generation = generation;
        if !granted.is_empty() {
            let mut added = Vec::with_capacity(granted.len());
            for (tp, position) in &granted {
                let partition = self.log.topic(&tp.topic)?.partition(tp.partition)?.clone();
                added.push((tp.clone(), partition, *position));
            }
            self.consumer.add(added);
            let tps: Vec<TopicPartition> = granted.into_iter().map(|(tp, _)| tp).collect();
            self.call_listener(|l, ctx| l.on_assigned(ctx, &tps));
        }
        committed
    }

    fn call_listener(
        &mut self,
        call: impl FnOnce(&mut dyn RebalanceListener, &mut RebalanceContext<'_>),
    ) {
        if let Some(mut listener) = self.listener.take() {
            call(listener.as_mut(), &mut RebalanceContext { member: self });
            self.listener = Some(listener);
        }
    }

    fn auto_commit(&mut self) -> Result<()> {
        self.next_auto_commit = Instant::now() + self.config.auto_commit_interval;
        match self.commit_positions(false) {
            // Removed meanwhile: the next poll rejoins.
            Err(Error::StaleGeneration { .. }) => Ok(()),
            other => other,
        }
    }

    /// Commits the position of every owned partition (the offset after
    /// the last record `poll` returned), durably per the log's
    /// [`Durability`](crate::Durability).
    ///
    /// # Errors
    /// [`Error::StaleGeneration`] if the member was removed from the group
    /// (its partitions were reassigned); [`Error::Fenced`]; I/O errors.
    pub fn commit(&mut self) -> Result<()> {
        self.commit_positions(true)
    }

    /// Commits like [`commit`](Self::commit) without waiting for an
    /// `fdatasync` under `Durability::Always`: the commit is visible and
    /// survives a process crash at once; it reaches the disk with the next
    /// synced append or commit of the log, or its close.
    ///
    /// # Errors
    /// As [`commit`](Self::commit).
    pub fn commit_async(&mut self) -> Result<()> {
        self.commit_positions(false)
    }

    fn commit_positions(&mut self, wait: bool) -> Result<()> {
        let positions = self.consumer.positions();
        self.commit_exact(&positions, wait)
    }

    fn commit_partitions(&mut self, tps: &[TopicPartition], wait: bool) -> Result<()> {
        let positions: Vec<(TopicPartition, u64)> = self
            .consumer
            .positions()
            .into_iter()
            .filter(|(tp, _)| tps.contains(tp))
            .collect();
        self.commit_exact(&positions, wait)
    }

    /// Commits explicit offsets (the next offset to read) for partitions
    /// this member owns.
    ///
    /// # Errors
    /// [`Error::NotAssigned`] for a partition the member does not own;
    /// [`Error::OffsetOutOfRange`] for an offset past the log end;
    /// otherwise as [`commit`](Self::commit). Nothing is committed on error.
    pub fn commit_offsets(&mut self, offsets: &[(TopicPartition, u64)]) -> Result<()> {
        self.commit_exact(offsets, true)
    }

    fn commit_exact(&mut self, offsets: &[(TopicPartition, u64)], wait: bool) -> Result<()> {
        if self.link.removal() == Removal::Fenced {
            return Err(self.fenced());
        }
        if offsets.is_empty() {
            return Ok(());
        }
        let now = self.now_ms();
        let (values, records) = offsets::commit_batch(&self.cell.id, offsets, now);
        let store = self.log.shared().offsets_partition()?;
        let end = {
            let mut g = self.cell.state.lock();
            let m = g.check_member(&self.cell.id, &self.member_id, &self.link, self.generation)?;
            for (tp, v) in &values {
                let owned = m.owned.contains(tp);
                let partition = self.consumer.assigned_partition(tp).filter(|_| owned);
                let Some(partition) = partition else {
                    return Err(Error::NotAssigned {
                        topic: tp.topic.clone(),
                        partition: tp.partition,
                    });
                };
                let log_end = partition.log_end_offset();
                if v.offset > log_end {
                    return Err(Error::OffsetOutOfRange {
                        topic: tp.topic.clone(),
                        partition: tp.partition,
                        offset: v.offset,
                        log_start: partition.log_start_offset(),
                        log_end,
                    });
                }
            }
            let end = offsets::append(&store, &records, now)?;
            for (tp, v) in values {
                g.committed.insert(tp, v);
            }
            end
        };
        if wait {
            offsets::sync(&store, end)?;
        }
        let mut topics: Vec<&str> = offsets.iter().map(|(tp, _)| tp.topic.as_str()).collect();
        topics.dedup();
        for topic in topics {
            self.log.shared().consumer_progressed(topic);
        }
        Ok(())
    }

    /// The group's committed offset for `tp` (any partition, owned or not).
    pub fn committed(&self, tp: &TopicPartition) -> Option<OffsetAndMetadata> {
        self.cell.state.lock().committed.get(tp).cloned()
    }

    /// The next offset `poll` returns for an owned partition (its committed
    /// offset, or the reset policy's choice, until the first poll).
    ///
    /// # Errors
    /// [`Error::NotAssigned`]; [`Error::NoOffset`] under `OffsetReset::None`.
    pub fn position(&mut self, tp: &TopicPartition) -> Result<u64> {
        self.consumer.position(tp)
    }

    /// Moves the position of an owned partition.
    ///
    /// # Errors
    /// [`Error::NotAssigned`].
    pub fn seek(&mut self, tp: &TopicPartition, offset: u64) -> Result<()> {
        self.consumer.seek(tp, offset)
    }

    /// Records between this member's position and the end of `tp`.
    ///
    /// # Errors
    /// As [`position`](Self::position).
    pub fn lag(&mut self, tp: &TopicPartition) -> Result<u64> {
        let position = self.consumer.position(tp)?;
        let end = self
            .consumer
            .assigned_partition(tp)
            .map_or(position, |p| p.log_end_offset());
        Ok(end.saturating_sub(position))
    }

    /// Leaves the group: commits (with auto-commit on), calls `on_revoked`,
    /// and hands the partitions to the other members. Dropping the handle
    /// does the same, except that a static member keeps its place for its
    /// session timeout.
    ///
    /// # Errors
    /// The commit's error, if any; the member leaves regardless.
    pub fn leave(mut self) -> Result<()> {
        self.leave_group(false)
    }

    fn leave_group(&mut self, keep_static_place: bool) -> Result<()> {
        if std::mem::replace(&mut self.left, true) {
            return Ok(());
        }
        if self.link.removal() != Removal::Present {
            return Ok(());
        }
        let owned = self.assignment();
        let committed = if self.config.auto_commit {
            self.commit_positions(true)
        } else {
            Ok(())
        };
        if !owned.is_empty() {
            self.call_listener(|l, ctx| l.on_revoked(ctx, &owned));
        }
        self.consumer.remove(&owned);
        let shared = Arc::clone(self.log.shared());
        let lookup = |t: &str| shared.partition_count(t);
        let now = self.now_ms();
        self.cell.state.lock().leave(
            &self.cell,
            &self.member_id,
            &self.link,
            keep_static_place,
            &lookup,
            now,
        );
        committed
    }

    fn now_ms(&self) -> i64 {
        self.log.shared().clock().now_ms()
    }
}

impl Drop for ConsumerGroup {
    fn drop(&mut self) {
        // Errors have nowhere to go here; `leave()` reports them.
        let _ = self.leave_group(true);
    }
}

fn join_group(
    log: &Log,
    group_id: &str,
    topics: &[String],
    config: &GroupConfig,
    consumer: &Consumer,
) -> Result<Joined> {
    let shared = log.shared();
    let lookup = |t: &str| shared.partition_count(t);
    shared.coordinator().join(
        group_id,
        JoinRequest {
            topics,
            strategy: config.strategy,
            instance_id: config.group_instance_id.as_deref(),
            max_poll_interval_ms: millis(config.max_poll_interval),
            session_timeout_ms: millis(config.session_timeout),
            bell: Arc::clone(consumer.bell()),
        },
        &lookup,
        shared.clock().now_ms(),
    )
}
