//! The in-process group coordinator: members, generations, target
//! assignments and the hand-over of partitions between members.
//!
//! Kafka's coordinator runs in a broker and talks to members over the wire;
//! this one is a state machine behind one mutex per group, driven by member
//! handles. Its requests mirror Kafka's (join, sync, heartbeat/poll, leave,
//! commit) so a future wire-protocol listener can drive it for members that
//! live behind a socket.
//!
//! The central rule: a partition is owned by at most one member at a time.
//! A rebalance sets each member's *target*; a member gains a partition only
//! once its previous owner has released it (after its `on_revoked`
//! callback, where it can commit). Eager strategies revoke everything and
//! grant the whole new target at once; cooperative-sticky revokes only what
//! moves and grants partitions as they come free.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU64, Ordering};

use parking_lot::Mutex;

use super::assignor::{self, AssignmentStrategy, MemberSpec};
use super::offsets::{GroupOffsets, OffsetAndMetadata};
use crate::consumer::{Bell, TopicPartition};
use crate::error::{Error, Result};

/// Partition count of a topic, `None` if it does not exist.
pub(crate) type TopicLookup<'a> = &'a dyn Fn(&str) -> Option<u32>;

/// Every group of one log.
#[derive(Debug)]
pub(crate) struct Coordinator {
    groups: Mutex<BTreeMap<String, Arc<GroupCell>>>,
    next_member: AtomicU64,
}

/// One group: its state behind a lock, plus what polls read without it.
#[derive(Debug)]
pub(crate) struct GroupCell {
    pub id: String,
    pub state: Mutex<Group>,
    /// Clock time (ms) before which no member can have expired: polls
    /// compare against it and take the lock only once it has passed.
    next_check_ms: AtomicI64,
}

/// A group's state.
#[derive(Debug, Default)]
pub(crate) struct Group {
    pub generation: u32,
    strategy: Option<AssignmentStrategy>,
    pub members: BTreeMap<String, MemberState>,
    /// Who owns each owned partition.
    owners: HashMap<TopicPartition, String>,
    pub committed: BTreeMap<TopicPartition, OffsetAndMetadata>,
}

/// Why a member is no longer in its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Removal {
    Present = 0,
    /// It stopped polling for longer than `max_poll_interval`.
    Expired = 1,
    /// A newer member with the same static instance id replaced it.
    Fenced = 2,
    /// It left.
    Left = 3,
}

/// Shared between a member handle and the coordinator.
#[derive(Debug)]
pub(crate) struct MemberLink {
    /// Clock time the member's last `poll` returned.
    last_poll_ms: AtomicI64,
    /// The member is inside `poll` (so it is polling, however long it waits).
    in_poll: AtomicBool,
    /// The coordinator changed something this member must act on.
    dirty: AtomicBool,
    removal: AtomicU8,
    bell: Arc<Bell>,
}

impl MemberLink {
    fn new(bell: Arc<Bell>, now_ms: i64) -> Arc<MemberLink> {
        Arc::new(MemberLink {
            last_poll_ms: AtomicI64::new(now_ms),
            in_poll: AtomicBool::new(false),
            dirty: AtomicBool::new(true),
            removal: AtomicU8::new(Removal::Present as u8),
            bell,
        })
    }

    /// The member is about to read the group's state and act on it.
    pub fn clear_dirty(&self) {
        self.dirty.store(false, Ordering::SeqCst);
    }

    pub fn is_dirty(&self) -> bool {
        self.dirty.load(Ordering::SeqCst)
    }

    pub fn removal(&self) -> Removal {
        match self.removal.load(Ordering::SeqCst) {
            1 => Removal::Expired,
            2 => Removal::Fenced,
            3 => Removal::Left,
            _ => Removal::Present,
        }
    }

    /// The member entered (`true`) or returned from (`false`) `poll`.
    pub fn set_in_poll(&self, polling: bool, now_ms: i64) {
        if !polling {
            self.last_poll_ms.store(now_ms, Ordering::SeqCst);
        }
        self.in_poll.store(polling, Ordering::SeqCst);
    }

    /// Tells the member to act, waking it if it waits in `poll`.
    fn nudge(&self) {
        self.dirty.store(true, Ordering::SeqCst);
        self.bell.ring();
    }

    fn remove(&self, why: Removal) {
        self.removal.store(why as u8, Ordering::SeqCst);
        self.nudge();
    }
}

/// A member as the coordinator keeps it.
#[derive(Debug)]
pub(crate) struct MemberState {
    pub instance_id: Option<String>,
    pub topics: Vec<String>,
    /// What the current generation's assignment gives it.
    pub target: BTreeSet<TopicPartition>,
    /// What it holds now (a subset of `target` once it has caught up).
    pub owned: BTreeSet<TopicPartition>,
    /// The generation whose assignment it has fully taken up.
    pub synced_generation: u32,
    max_poll_interval_ms: i64,
    session_timeout_ms: i64,
    /// A static member whose handle went away, keeping its target for
    /// `session_timeout` in case it comes back.
    pub away_since_ms: Option<i64>,
    link: Arc<MemberLink>,
}

/// What a member asks for when it joins.
#[derive(Debug)]
pub(crate) struct JoinRequest<'a> {
    pub topics: &'a [String],
    pub strategy: AssignmentStrategy,
    pub instance_id: Option<&'a str>,
    pub max_poll_interval_ms: i64,
    pub session_timeout_ms: i64,
    pub bell: Arc<Bell>,
}

/// A member's place in its group.
#[derive(Debug)]
pub(crate) struct Joined {
    pub cell: Arc<GroupCell>,
    pub member_id: String,
    pub link: Arc<MemberLink>,
}

/// Partitions granted to a member by [`Group::acquire`].
#[derive(Debug)]
pub(crate) struct Acquired {
    pub granted: Vec<TopicPartition>,
    pub generation: u32,
}

impl Coordinator {
    pub fn new(loaded: GroupOffsets) -> Coordinator {
        let groups = loaded
            .into_iter()
            .map(|(id, committed)| {
                let group = Group {
                    committed,
                    ..Group::default()
                };
                (id.clone(), GroupCell::new(id, group))
            })
            .collect();
        Coordinator {
            groups: Mutex::new(groups),
            next_member: AtomicU64::new(0),
        }
    }

    /// The group, created empty if unknown.
    pub fn group(&self, id: &str) -> Arc<GroupCell> {
        let mut groups = self.groups.lock();
        Arc::clone(
            groups
                .entry(id.to_string())
                .or_insert_with(|| GroupCell::new(id.to_string(), Group::default())),
        )
    }

    /// The group if it exists.
    pub fn existing(&self, id: &str) -> Option<Arc<GroupCell>> {
        self.groups.lock().get(id).cloned()
    }

    /// Every group with members or committed offsets.
    pub fn group_ids(&self) -> Vec<String> {
        let groups: Vec<Arc<GroupCell>> = self.groups.lock().values().cloned().collect();
        groups
            .into_iter()
            .filter(|cell| {
                let g = cell.state.lock();
                !g.members.is_empty() || !g.committed.is_empty()
            })
            .map(|cell| cell.id.clone())
            .collect()
    }

    /// Forgets an empty group (its offsets are already deleted).
    pub fn forget(&self, id: &str) {
        self.groups.lock().remove(id);
    }

    /// A topic was deleted: groups forget its offsets (returned, so the
    /// caller writes tombstones) and groups subscribed to it rebalance
    /// without its partitions.
    pub fn topic_deleted(
        &self,
        topic: &str,
        topics: TopicLookup<'_>,
    ) -> Vec<(String, Vec<TopicPartition>)> {
        let cells: Vec<Arc<GroupCell>> = self.groups.lock().values().cloned().collect();
        let mut forgotten = Vec::new();
        for cell in cells {
            let mut g = cell.state.lock();
            let gone: Vec<TopicPartition> = g
                .committed
                .keys()
                .filter(|tp| tp.topic == topic)
                .cloned()
                .collect();
            for tp in &gone {
                g.committed.remove(tp);
            }
            if !gone.is_empty() {
                forgotten.push((cell.id.clone(), gone));
            }
            if g.members
                .values()
                .any(|m| m.topics.iter().any(|t| t == topic))
            {
                g.rebalance(topics);
            }
        }
        forgotten
    }

    /// Adds a member (or brings a static member back), rebalancing unless
    /// a static member returns to its unchanged place.
    pub fn join(
        &self,
        group_id: &str,
        req: JoinRequest<'_>,
        topics: TopicLookup<'_>,
        now_ms: i64,
    ) -> Result<Joined> {
        let cell = self.group(group_id);
        let mut g = cell.state.lock();
        g.expire(&cell, topics, now_ms);
        if let Some(strategy) = g.strategy.filter(|_| !g.members.is_empty()) {
            if strategy != req.strategy {
                return Err(Error::InconsistentStrategy {
                    group: group_id.to_string(),
                    group_strategy: strategy.name(),
                    requested: req.strategy.name(),
                });
            }
        }
        g.strategy = Some(req.strategy);
        let link = MemberLink::new(Arc::clone(&req.bell), now_ms);
        let returning = req.instance_id.and_then(|instance| {
            g.members
                .iter()
                .find(|(_, m)| m.instance_id.as_deref() == Some(instance))
                .map(|(id, _)| id.clone())
        });
        if let Some(member_id) = returning {
            let same_topics = g.members[&member_id].topics == req.topics;
            if same_topics {
                // Static membership: the member takes its old place, same
                // target, same generation; nobody else notices.
                let previous = g.take_over(&member_id, &link, &req);
                if previous.away_since_ms.is_none() {
                    previous.link.remove(Removal::Fenced);
                }
                drop(g);
                return Ok(Joined {
                    cell,
                    member_id,
                    link,
                });
            }
            // Subscription changed: the old incarnation goes, the new one
            // joins as a new member.
            if let Some(old) = g.remove_member(&member_id) {
                old.link.remove(Removal::Fenced);
            }
        }
        let n = self.next_member.fetch_add(1, Ordering::Relaxed);
        let member_id = match req.instance_id {
            Some(instance) => format!("{instance}-{n:06}"),
            None => format!("member-{n:06}"),
        };
        g.members.insert(
            member_id.clone(),
            MemberState {
                instance_id: req.instance_id.map(str::to_string),
                topics: req.topics.to_vec(),
                target: BTreeSet::new(),
                owned: BTreeSet::new(),
                synced_generation: 0,
                max_poll_interval_ms: req.max_poll_interval_ms,
                session_timeout_ms: req.session_timeout_ms,
                away_since_ms: None,
                link: Arc::clone(&link),
            },
        );
        g.rebalance(topics);
        g.schedule_check(&cell);
        drop(g);
        Ok(Joined {
            cell,
            member_id,
            link,
        })
    }
}

impl GroupCell {
    fn new(id: String, group: Group) -> Arc<GroupCell> {
        Arc::new(GroupCell {
            id,
            state: Mutex::new(group),
            next_check_ms: AtomicI64::new(i64::MAX),
        })
    }

    /// Whether some member may have expired by `now_ms` (cheap, no lock).
    pub fn check_due(&self, now_ms: i64) -> bool {
        now_ms >= self.next_check_ms.load(Ordering::SeqCst)
    }

    /// A member that returned from `poll` at `now_ms` expires at
    /// `now_ms + max_poll_interval` unless it polls again: make sure a
    /// check is scheduled by then.
    pub fn schedule_check_by(&self, at_ms: i64) {
        self.next_check_ms.fetch_min(at_ms, Ordering::SeqCst);
    }

    /// Milliseconds until the next expiry check is due (for poll's wait).
    pub fn ms_until_check(&self, now_ms: i64) -> i64 {
        self.next_check_ms
            .load(Ordering::SeqCst)
            .saturating_sub(now_ms)
    }
}

impl Group {
    /// New generation: a fresh target for every member, each told to act.
    pub fn rebalance(&mut self, topics: TopicLookup<'_>) {
        self.generation = self.generation.wrapping_add(1);
        let Some(strategy) = self.strategy else {
            return;
        };
        let mut counts = BTreeMap::new();
        for m in self.members.values() {
            for t in &m.topics {
                if let Some(n) = topics(t) {
                    counts.insert(t.clone(), n);
                }
            }
        }
        let specs: Vec<MemberSpec<'_>> = self
            .members
            .iter()
            .map(|(id, m)| MemberSpec {
                sort_key: m.instance_id.as_deref().unwrap_or(id),
                id,
                topics: &m.topics,
                owned: &m.owned,
            })
            .collect();
        let mut assignment = assignor::assign(strategy, &specs, &counts);
        for (id, m) in &mut self.members {
            m.target = assignment.remove(id).unwrap_or_default();
            m.link.nudge();
        }
    }

    /// What `member_id` must give up before it takes up the current
    /// generation: everything it owns under an eager strategy (once per
    /// generation), what left its target under cooperative-sticky.
    pub fn revocations(&self, member_id: &str, link: &Arc<MemberLink>) -> Vec<TopicPartition> {
        let Some(m) = self.member(member_id, link) else {
            return Vec::new();
        };
        let eager = !self
            .strategy
            .is_some_and(AssignmentStrategy::is_cooperative);
        if eager && m.synced_generation != self.generation {
            m.owned.iter().cloned().collect()
        } else {
            m.owned.difference(&m.target).cloned().collect()
        }
    }

    /// The member no longer holds `tps`; members waiting for them are told.
    pub fn release(&mut self, member_id: &str, link: &Arc<MemberLink>, tps: &[TopicPartition]) {
        let Some(m) = self.member_mut(member_id, link) else {
            return; // removed or replaced: its partitions were freed then
        };
        for tp in tps {
            m.owned.remove(tp);
        }
        for tp in tps {
            if self.owners.get(tp).is_some_and(|o| o == member_id) {
                self.owners.remove(tp);
            }
        }
        self.nudge_waiting_for(tps);
    }

    fn nudge_waiting_for(&self, tps: &[TopicPartition]) {
        for m in self.members.values() {
            if tps.iter().any(|tp| m.target.contains(tp)) {
                m.link.nudge();
            }
        }
    }

    /// Grants `member_id` the partitions of its target that are free: all
    /// at once under an eager strategy, as they come free under
    /// cooperative-sticky. Once nothing is missing, the member is in sync.
    pub fn acquire(&mut self, member_id: &str, link: &Arc<MemberLink>) -> Acquired {
        let generation = self.generation;
        let cooperative = self
            .strategy
            .is_some_and(AssignmentStrategy::is_cooperative);
        let Some(m) = self
            .members
            .get_mut(member_id)
            .filter(|m| Arc::ptr_eq(&m.link, link))
        else {
            return Acquired {
                granted: Vec::new(),
                generation,
            };
        };
        let missing: Vec<TopicPartition> = m.target.difference(&m.owned).cloned().collect();
        let free: Vec<TopicPartition> = missing
            .iter()
            .filter(|tp| !self.owners.contains_key(*tp))
            .cloned()
            .collect();
        let granted = if cooperative || free.len() == missing.len() {
            free
        } else {
            Vec::new()
        };
        for tp in &granted {
            m.owned.insert(tp.clone());
            self.owners.insert(tp.clone(), member_id.to_string());
        }
        if granted.len() == missing.len() {
            m.synced_generation = generation;
        }
        Acquired {
            granted,
            generation,
        }
    }

    /// The member, if `link` is its current incarnation.
    pub fn member(&self, member_id: &str, link: &Arc<MemberLink>) -> Option<&MemberState> {
        self.members
            .get(member_id)
            .filter(|m| Arc::ptr_eq(&m.link, link))
    }

    fn member_mut(&mut self, member_id: &str, link: &Arc<MemberLink>) -> Option<&mut MemberState> {
        self.members
            .get_mut(member_id)
            .filter(|m| Arc::ptr_eq(&m.link, link))
    }

    /// Checks that `member_id` (this incarnation) is still in the group.
    pub fn check_member(
        &self,
        group: &str,
        member_id: &str,
        link: &Arc<MemberLink>,
        generation: u32,
    ) -> Result<&MemberState> {
        match self.member(member_id, link) {
            Some(m) => Ok(m),
            None => Err(Error::StaleGeneration {
                group: group.to_string(),
                member: member_id.to_string(),
                generation,
                current: self.generation,
            }),
        }
    }

    /// Removes a member that left (or keeps a static one's place for its
    /// session timeout), releasing what it owns; rebalances if it went.
    pub fn leave(
        &mut self,
        cell: &GroupCell,
        member_id: &str,
        link: &Arc<MemberLink>,
        keep_static_place: bool,
        topics: TopicLookup<'_>,
        now_ms: i64,
    ) {
        let Some(m) = self.member(member_id, link) else {
            return; // already replaced or removed
        };
        let owned: Vec<TopicPartition> = m.owned.iter().cloned().collect();
        let keep = keep_static_place && m.instance_id.is_some();
        self.release(member_id, link, &owned);
        if keep {
            if let Some(m) = self.members.get_mut(member_id) {
                m.away_since_ms = Some(now_ms);
            }
            link.removal.store(Removal::Left as u8, Ordering::SeqCst);
        } else {
            self.remove_member(member_id);
            link.removal.store(Removal::Left as u8, Ordering::SeqCst);
            self.rebalance(topics);
        }
        self.schedule_check(cell);
    }

    /// Removes members past their deadlines and rebalances if any went.
    pub fn expire(&mut self, cell: &GroupCell, topics: TopicLookup<'_>, now_ms: i64) {
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| m.deadline_ms().is_some_and(|d| now_ms > d))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            if let Some(m) = self.remove_member(id) {
                m.link.remove(Removal::Expired);
            }
        }
        if !expired.is_empty() {
            self.rebalance(topics);
        }
        self.schedule_check(cell);
    }

    /// Sets when the next member could expire.
    fn schedule_check(&self, cell: &GroupCell) {
        let next = self
            .members
            .values()
            .filter_map(MemberState::deadline_ms)
            .min()
            .unwrap_or(i64::MAX);
        cell.next_check_ms.store(next, Ordering::SeqCst);
    }

    /// Drops a member and forgets what it owned (without its consent: it
    /// was removed, so its commits will be refused).
    fn remove_member(&mut self, member_id: &str) -> Option<MemberState> {
        let m = self.members.remove(member_id)?;
        let owned: Vec<TopicPartition> = m.owned.iter().cloned().collect();
        for tp in &owned {
            if self.owners.get(tp).is_some_and(|o| o == member_id) {
                self.owners.remove(tp);
            }
        }
        self.nudge_waiting_for(&owned);
        Some(m)
    }

    /// A static member's new handle replaces its old one. Whatever the
    /// old handle owned is freed for the new one. Returns the old state.
    fn take_over(
        &mut self,
        member_id: &str,
        link: &Arc<MemberLink>,
        req: &JoinRequest<'_>,
    ) -> PreviousIncarnation {
        let owned: Vec<TopicPartition> = self.members[member_id].owned.iter().cloned().collect();
        for tp in &owned {
            self.owners.remove(tp);
        }
        let generation = self.generation;
        // The caller found `member_id` in `members` under the same lock.
        let m = self
            .members
            .get_mut(member_id)
            .expect("take_over is called with a present member id");
        let previous = PreviousIncarnation {
            link: std::mem::replace(&mut m.link, Arc::clone(link)),
            away_since_ms: m.away_since_ms.take(),
        };
        m.owned.clear();
        m.synced_generation = generation.wrapping_sub(1);
        m.max_poll_interval_ms = req.max_poll_interval_ms;
        m.session_timeout_ms = req.session_timeout_ms;
        previous
    }

    /// The strategy its members use (`None` before the first member).
    pub fn strategy(&self) -> Option<AssignmentStrategy> {
        self.strategy
    }
}

#[derive(Debug)]
struct PreviousIncarnation {
    link: Arc<MemberLink>,
    away_since_ms: Option<i64>,
}

impl MemberState {
    /// When the member expires unless it polls (or, if away, returns).
    fn deadline_ms(&self) -> Option<i64> {
        if let Some(away) = self.away_since_ms {
            return Some(away.saturating_add(self.session_timeout_ms));
        }
        if self.link.in_poll.load(Ordering::SeqCst) {
            // Waiting inside poll is polling, however long it waits; when
            // it returns, the handle schedules its next deadline.
            return None;
        }
        let last = self.link.last_poll_ms.load(Ordering::SeqCst);
        Some(last.saturating_add(self.max_poll_interval_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::Signal;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Join {
            topics: u8,
            instance: Option<u8>,
        },
        Leave {
            member: u8,
            keep_static_place: bool,
        },
        /// Revoke what must go, then take what is free (one sync step).
        Sync {
            member: u8,
        },
        /// Every member stops polling long enough to expire... except one.
        ExpireAllBut {
            member: u8,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u8..3, proptest::option::of(0u8..3))
                .prop_map(|(topics, instance)| Op::Join { topics, instance }),
            2 => (any::<u8>(), any::<bool>())
                .prop_map(|(member, keep_static_place)| Op::Leave { member, keep_static_place }),
            8 => any::<u8>().prop_map(|member| Op::Sync { member }),
            1 => any::<u8>().prop_map(|member| Op::ExpireAllBut { member }),
        ]
    }

    fn strategy() -> impl Strategy<Value = AssignmentStrategy> {
        prop_oneof![
            Just(AssignmentStrategy::Range),
            Just(AssignmentStrategy::RoundRobin),
            Just(AssignmentStrategy::CooperativeSticky),
        ]
    }

    const SUBSCRIPTIONS: [&[&str]; 3] = [&["a"], &["a", "b"], &["b"]];

    fn lookup(topic: &str) -> Option<u32> {
        match topic {
            "a" => Some(5),
            "b" => Some(3),
            _ => None,
        }
    }

    /// No partition has two owners; `owners` mirrors the owned sets.
    fn check_ownership(g: &Group) {
        let mut seen = BTreeSet::new();
        for (id, m) in &g.members {
            for tp in &m.owned {
                assert!(seen.insert(tp.clone()), "{tp:?} owned twice");
                assert_eq!(g.owners.get(tp), Some(id));
            }
        }
        assert_eq!(seen.len(), g.owners.len());
    }

    fn sync(g: &mut Group, id: &str, link: &Arc<MemberLink>) {
        let revoke = g.revocations(id, link);
        g.release(id, link, &revoke);
        g.acquire(id, link);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Any sequence of joins, leaves, expiries and partial syncs keeps
        /// one owner per partition; once every member has synced enough,
        /// each owns exactly its target and every partition is owned.
        #[test]
        fn hand_over_keeps_one_owner_and_converges(
            strategy in strategy(),
            ops in proptest::collection::vec(op(), 1..60),
        ) {
            let coordinator = Coordinator::new(GroupOffsets::default());
            let mut live: Vec<(String, Arc<MemberLink>)> = Vec::new();
            let mut now = 1_000;
            for op in ops {
                now += 1;
                match op {
                    Op::Join { topics, instance } => {
                        let topics: Vec<String> =
                            SUBSCRIPTIONS[topics as usize].iter().map(|t| t.to_string()).collect();
                        let instance = instance.map(|i| format!("i{i}"));
                        let joined = coordinator.join("g", JoinRequest {
                            topics: &topics,
                            strategy,
                            instance_id: instance.as_deref(),
                            max_poll_interval_ms: 100,
                            session_timeout_ms: 50,
                            bell: Bell::new(Signal::for_current_thread()),
                        }, &lookup, now).unwrap();
                        live.retain(|(_, l)| l.removal() == Removal::Present);
                        live.push((joined.member_id, joined.link));
                    }
                    Op::Leave { member, keep_static_place } if !live.is_empty() => {
                        let (id, link) = live.remove(member as usize % live.len());
                        let cell = coordinator.group("g");
                        cell.state.lock().leave(&cell, &id, &link, keep_static_place, &lookup, now);
                    }
                    Op::Sync { member } if !live.is_empty() => {
                        let (id, link) = &live[member as usize % live.len()];
                        let cell = coordinator.group("g");
                        sync(&mut cell.state.lock(), id, link);
                        link.set_in_poll(false, now);
                    }
                    Op::ExpireAllBut { member } if !live.is_empty() => {
                        let keep = member as usize % live.len();
                        for (i, (_, link)) in live.iter().enumerate() {
                            link.set_in_poll(i == keep, now);
                        }
                        now += 1_000;
                        let cell = coordinator.group("g");
                        cell.state.lock().expire(&cell, &lookup, now);
                        live.retain(|(_, l)| l.removal() == Removal::Present);
                        for (_, link) in &live {
                            link.set_in_poll(false, now);
                        }
                    }
                    _ => {}
                }
                check_ownership(&coordinator.group("g").state.lock());
            }
            // Quiesce: every live member syncs until nothing changes.
            let cell = coordinator.group("g");
            let mut g = cell.state.lock();
            live.retain(|(_, l)| l.removal() == Removal::Present);
            for _ in 0..4 {
                for (id, link) in &live {
                    sync(&mut g, id, link);
                }
            }
            check_ownership(&g);
            let mut owned = BTreeSet::new();
            for m in g.members.values() {
                if m.away_since_ms.is_none() {
                    prop_assert_eq!(&m.owned, &m.target);
                }
                owned.extend(m.target.iter().cloned());
            }
            let active_topics: BTreeSet<&String> =
                g.members.values().flat_map(|m| m.topics.iter()).collect();
            let expected: usize = active_topics.iter().map(|t| lookup(t).unwrap() as usize).sum();
            prop_assert_eq!(owned.len(), expected, "every partition has a target owner");
        }
    }
}
