//! Consumer groups: pub-sub between groups, load sharing within one,
//! rebalances on join / leave / poll timeout, static membership, the
//! rebalance listener, fencing, wake-ups, and a stress test with members
//! joining and leaving while producers write.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::TempDir;
use logbus::{
    AssignmentStrategy, ConsumerGroup, ConsumerRecord, Error, GroupConfig, GroupState, Log,
    LogConfig, RebalanceContext, RebalanceListener, Record, TopicConfig, TopicPartition,
};

const SHORT: Duration = Duration::from_millis(20);

fn open(dir: &TempDir) -> Log {
    Log::open(dir.path(), LogConfig::default()).unwrap()
}

fn produce(log: &Log, topic: &str, n: usize) {
    let producer = log.producer(topic).unwrap();
    let records: Vec<Record> = (0..n)
        .map(|i| Record::new(format!("v{i}")).key(format!("k{i}")))
        .collect();
    producer.send_batch(&records).unwrap();
}

/// Polls until `done` holds for the records gathered so far, or panics
/// after a generous timeout (never a timing assertion: only a hang guard).
fn poll_until(
    member: &mut ConsumerGroup,
    mut done: impl FnMut(&ConsumerGroup, &[ConsumerRecord]) -> bool,
) -> Vec<ConsumerRecord> {
    let give_up = Instant::now() + Duration::from_secs(20);
    let mut got = Vec::new();
    while !done(member, &got) {
        assert!(
            Instant::now() < give_up,
            "condition not reached; {member:?}"
        );
        got.extend(member.poll(SHORT).unwrap());
    }
    got
}

/// Polls two members in turn until each owns `each` partitions (panics
/// after a generous timeout: a hang guard, not a timing assertion).
fn settle(a: &mut ConsumerGroup, b: &mut ConsumerGroup, each: usize) {
    let give_up = Instant::now() + Duration::from_secs(20);
    while a.assignment().len() != each || b.assignment().len() != each {
        assert!(Instant::now() < give_up, "no balance: {a:?} {b:?}");
        a.poll(SHORT).unwrap();
        b.poll(SHORT).unwrap();
    }
}

fn tps(topic: &str, parts: &[u32]) -> Vec<TopicPartition> {
    parts
        .iter()
        .map(|&p| TopicPartition::new(topic, p))
        .collect()
}

fn config() -> GroupConfig {
    GroupConfig::default().auto_commit(false)
}

#[test]
fn two_groups_each_receive_every_record() {
    let dir = TempDir::new("group-pubsub");
    let log = open(&dir);
    log.create_topic("t", TopicConfig::new(3)).unwrap();
    produce(&log, "t", 300);
    for group in ["a", "b"] {
        let mut m = ConsumerGroup::join(&log, group, &["t"], config()).unwrap();
        let got = poll_until(&mut m, |_, got| got.len() >= 300);
        let values: BTreeSet<_> = got.iter().map(|r| r.value.clone()).collect();
        assert_eq!((got.len(), values.len()), (300, 300), "group {group}");
    }
}

#[test]
fn members_split_partitions_and_each_record_goes_to_one_member() {
    let dir = TempDir::new("group-split");
    let log = open(&dir);
    log.create_topic("t", TopicConfig::new(4)).unwrap();
    produce(&log, "t", 400);
    let mut a = ConsumerGroup::join(&log, "g", &["t"], config()).unwrap();
    let mut b = ConsumerGroup::join(&log, "g", &["t"], config()).unwrap();
    let mut got = Vec::new();
    let give_up = Instant::now() + Duration::from_secs(20);
    while got.len() < 400 {
        assert!(Instant::now() < give_up);
        got.extend(a.poll(SHORT).unwrap());
        got.extend(b.poll(SHORT).unwrap());
    }
    let (ta, tb) = (a.assignment(), b.assignment());
    assert_eq!((ta.len(), tb.len()), (2, 2));
    assert!(ta.iter().all(|tp| !tb.contains(tp)));
    let offsets: BTreeSet<(u32, u64)> = got.iter().map(|r| (r.partition, r.offset)).collect();
    assert_eq!(offsets.len(), 400, "a record was delivered twice");
    assert_eq!(a.generation(), b.generation());
}

#[test]
fn cooperative_join_and_leave_move_only_what_must_move() {
    let dir = TempDir::new("group-coop");
    let log = open(&dir);
    log.create_topic("t", TopicConfig::new(6)).unwrap();
    let revoked = Arc::new(Mutex::new(Vec::new()));
    let mut a = ConsumerGroup::join(&log, "g", &["t"], config()).unwrap();
    a.set_rebalance_listener(Recorder::new("a", &revoked));
    poll_until(&mut a, |m, _| m.assignment().len() == 6);
    let mut b = ConsumerGroup::join(&log, "g", &["t"], config()).unwrap();
    settle(&mut a, &mut b, 3);
    // Cooperative: `a` gave up exactly the three that moved, nothing else.
    let events = revoked.lock().unwrap().clone();
    let lost: Vec<TopicPartition> = events
        .iter()
        .filter(|(who, kind, _)| *who == "a" && *kind == "revoked")
        .flat_map(|(_, _, p)| p.clone())
        .collect();
    assert_eq!(lost.len(), 3);
    assert!(lost.iter().all(|tp| b.assignment().contains(tp)));
    b.leave().unwrap();
    poll_until(&mut a, |m, _| m.assignment().len() == 6);
}

#[test]
fn eager_strategies_revoke_everything_then_assign_the_new_set() {
    for strategy in [AssignmentStrategy::Range, AssignmentStrategy::RoundRobin] {
        let dir = TempDir::new("group-eager");
        let log = open(&dir);
        log.create_topic("t", TopicConfig::new(4)).unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let cfg = config().strategy(strategy);
        let mut a = ConsumerGroup::join(&log, "g", &["t"], cfg.clone()).unwrap();
        a.set_rebalance_listener(Recorder::new("a", &events));
        poll_until(&mut a, |m, _| m.assignment().len() == 4);
        let mut b = ConsumerGroup::join(&log, "g", &["t"], cfg).unwrap();
        settle(&mut a, &mut b, 2);
        let events = events.lock().unwrap().clone();
        let kinds: Vec<(&str, usize)> = events.iter().map(|(_, k, p)| (*k, p.len())).collect();
        // All four assigned, all four revoked, then the new two assigned.
        assert_eq!(
            kinds,
            [("assigned", 4), ("revoked", 4), ("assigned", 2)],
            "{strategy:?}"
        );
        if strategy == AssignmentStrategy::Range {
            assert_eq!(a.assignment(), tps("t", &[0, 1]));
            assert_eq!(b.assignment(), tps("t", &[2, 3]));
        }
    }
}

#[test]
fn a_member_that_stops_polling_loses_its_partitions_and_its_commits_are_refused() {
    let dir = TempDir::new("group-stall");
    let log = open(&dir);
    log.create_topic("t", TopicConfig::new(4)).unwrap();
    produce(&log, "t", 40);
    let cfg = config().max_poll_interval(Duration::from_millis(200));
    let mut a = ConsumerGroup::join(&log, "g", &["t"], cfg.clone()).unwrap();
    let mut b = ConsumerGroup::join(&log, "g", &["t"], cfg).unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    b.set_rebalance_listener(Recorder::new("b", &events));
    settle(&mut a, &mut b, 2);
    let stale_generation = b.generation();
    // `b` stops polling; `a` keeps polling and takes everything over.
    poll_until(&mut a, |m, _| m.assignment().len() == 4);
    let err = b
        .commit_offsets(&[(b.assignment()[0].clone(), 0)])
        .unwrap_err();
    match err {
        Error::StaleGeneration {
            generation,
            current,
            ..
        } => assert!(generation == stale_generation && current > generation),
        other => panic!("expected StaleGeneration, got {other:?}"),
    }
    // Its next poll reports the loss and rejoins as a new member.
    b.poll(SHORT).unwrap();
    let lost: Vec<_> = events
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, k, _)| *k == "lost")
        .map(|(_, _, p)| p.len())
        .collect();
    assert_eq!(lost, [2]);
    settle(&mut a, &mut b, 2);
}

#[test]
fn a_member_waiting_inside_poll_is_never_considered_stalled() {
    let dir = TempDir::new("group-longpoll");
    let log = open(&dir);
    log.create_topic("t", TopicConfig::new(2)).unwrap();
    let cfg = config().max_poll_interval(Duration::from_millis(50));
    let mut a = ConsumerGroup::join(&log, "g", &["t"], cfg.clone()).unwrap();
    let mut b = ConsumerGroup::join(&log, "g", &["t"], cfg).unwrap();
    settle(&mut a, &mut b, 1);
    let generation = a.generation();
    // Both wait in poll far longer than max_poll_interval.
    let waiter = std::thread::spawn(move || {
        b.poll(Duration::from_millis(400)).unwrap();
        b
    });
    a.poll(Duration::from_millis(400)).unwrap();
    let mut b = waiter.join().unwrap();
    b.poll(SHORT).unwrap();
    assert_eq!((a.generation(), b.generation()), (generation, generation));
}

#[test]
fn a_static_member_comes_back_without_a_rebalance() {
    let dir = TempDir::new("group-static");
    let log = open(&dir);
    log.create_topic("t", TopicConfig::new(4)).unwrap();
    let cfg = |id: &str| config().group_instance_id(id);
    let mut a = ConsumerGroup::join(&log, "g", &["t"], cfg("a")).unwrap();
    let mut b = ConsumerGroup::join(&log, "g", &["t"], cfg("b")).unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    b.set_rebalance_listener(Recorder::new("b", &events));
    settle(&mut a, &mut b, 2);
    let (generation, a_parts, b_parts) = (b.generation(), a.assignment(), b.assignment());
    let b_events = events.lock().unwrap().len();
    drop(a); // a restart: the place is kept for session_timeout (45 s)
    let desc = log.describe_group("g").unwrap();
    assert!(desc.members.iter().any(|m| m.away));
    let mut a = ConsumerGroup::join(&log, "g", &["t"], cfg("a")).unwrap();
    poll_until(&mut a, |m, _| m.assignment().len() == 2);
    b.poll(SHORT).unwrap();
    assert_eq!(a.assignment(), a_parts);
    assert_eq!(b.assignment(), b_parts);
    assert_eq!((a.generation(), b.generation()), (generation, generation));
    assert_eq!(events.lock().unwrap().len(), b_events, "b saw a rebalance");
}

#[test]
fn an_absent_static_member_expires_after_its_session_timeout() {
    let dir = TempDir::new("group-static-expiry");
    let log = open(&dir);
    log.create_topic("t", TopicConfig::new(4)).unwrap();
    let cfg = |id: &str| {
        config()
            .group_instance_id(id)
            .session_timeout(Duration::from_millis(100))
    };
    let mut a = ConsumerGroup::join(&log, "g", &["t"], cfg("a")).unwrap();
    let mut b = ConsumerGroup::join(&log, "g", &["t"], cfg("b")).unwrap();
    settle(&mut a, &mut b, 2);
    drop(a);
    poll_until(&mut b, |m, _| m.assignment().len() == 4);
    assert_eq!(log.describe_group("g").unwrap().members.len(), 1);
}

#[test]
fn a_second_live_member_with_the_same_instance_id_fences_the_first() {
    let dir = TempDir::new("group-fence");
    let log = open(&dir);
    log.create_topic("t", TopicConfig::new(2)).unwrap();
    let cfg = config().group_instance_id("same");
    let mut old = ConsumerGroup::join(&log, "g", &["t"], cfg.clone()).unwrap();
    poll_until(&mut old, |m, _| m.assignment().len() == 2);
    let mut new = ConsumerGroup::join(&log, "g", &["t"], cfg).unwrap();
    poll_until(&mut new, |m, _| m.assignment().len() == 2);
    assert!(matches!(old.poll(SHORT), Err(Error::Fenced { .. })));
    assert!(matches!(old.commit(), Err(Error::Fenced { .. })));
}

#[test]
fn members_must_share_one_strategy() {
    let dir = TempDir::new("group-strategy");
    let log = open(&dir);
    log.create_topic("t", TopicConfig::new(2)).unwrap();
    let _a = ConsumerGroup::join(&log, "g", &["t"], config()).unwrap();
    let err = ConsumerGroup::join(
        &log,
        "g",
        &["t"],
        config().strategy(AssignmentStrategy::Range),
    )
    .unwrap_err();
    assert!(matches!(err, Error::InconsistentStrategy { .. }), "{err:?}");
}

#[test]
fn wakeup_interrupts_a_blocked_poll() {
    let dir = TempDir::new("group-wakeup");
    let log = open(&dir);
    log.create_topic("t", TopicConfig::new(1)).unwrap();
    let mut m = ConsumerGroup::join(&log, "g", &["t"], config()).unwrap();
    let waker = m.waker();
    let woke = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&woke);
    let t = std::thread::spawn(move || {
        let r = m.poll(Duration::from_secs(60));
        flag.store(true, Ordering::SeqCst);
        (r.map(|v| v.len()), m)
    });
    std::thread::sleep(Duration::from_millis(50));
    waker.wake();
    let (result, mut m) = t.join().unwrap();
    assert!(matches!(result, Err(Error::Wakeup)), "{result:?}");
    // Reported once: the next poll works normally.
    produce(&log, "t", 1);
    let got = poll_until(&mut m, |_, got| !got.is_empty());
    assert_eq!(got.len(), 1);
}

#[test]
fn poll_wakes_on_data_for_an_assigned_partition() {
    let dir = TempDir::new("group-wake-data");
    let log = open(&dir);
    log.create_topic("t", TopicConfig::new(2)).unwrap();
    let mut m = ConsumerGroup::join(&log, "g", &["t"], config()).unwrap();
    poll_until(&mut m, |m, _| m.assignment().len() == 2);
    let producer_log = log.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        produce(&producer_log, "t", 1);
    });
    // One long poll returns the record (it does not wait out the timeout:
    // the test would take a minute otherwise).
    let got = m.poll(Duration::from_secs(60)).unwrap();
    t.join().unwrap();
    assert_eq!(got.len(), 1);
}

/// Records rebalance callbacks as (member, kind, partitions).
type Events = Arc<Mutex<Vec<(&'static str, &'static str, Vec<TopicPartition>)>>>;

struct Recorder {
    who: &'static str,
    events: Events,
}

impl Recorder {
    fn new(who: &'static str, events: &Events) -> Self {
        Recorder {
            who,
            events: Arc::clone(events),
        }
    }
}

impl RebalanceListener for Recorder {
    fn on_revoked(&mut self, _: &mut RebalanceContext<'_>, partitions: &[TopicPartition]) {
        let e = (self.who, "revoked", partitions.to_vec());
        self.events.lock().unwrap().push(e);
    }
    fn on_assigned(&mut self, _: &mut RebalanceContext<'_>, partitions: &[TopicPartition]) {
        let e = (self.who, "assigned", partitions.to_vec());
        self.events.lock().unwrap().push(e);
    }
    fn on_lost(&mut self, partitions: &[TopicPartition]) {
        let e = (self.who, "lost", partitions.to_vec());
        self.events.lock().unwrap().push(e);
    }
}

/// Tracks which member of each group owns each partition, through the
/// listener, and fails if two own one at the same time.
#[derive(Default)]
struct Ownership {
    owners: Mutex<HashMap<(usize, TopicPartition), usize>>,
}

struct OwnershipListener {
    group: usize,
    member: usize,
    table: Arc<Ownership>,
}

impl RebalanceListener for OwnershipListener {
    fn on_revoked(&mut self, group: &mut RebalanceContext<'_>, partitions: &[TopicPartition]) {
        group.commit().unwrap();
        let mut owners = self.table.owners.lock().unwrap();
        for tp in partitions {
            let owner = owners.remove(&(self.group, tp.clone()));
            assert_eq!(owner, Some(self.member), "{tp:?} revoked from a non-owner");
        }
    }
    fn on_assigned(&mut self, _: &mut RebalanceContext<'_>, partitions: &[TopicPartition]) {
        let mut owners = self.table.owners.lock().unwrap();
        for tp in partitions {
            let previous = owners.insert((self.group, tp.clone()), self.member);
            assert_eq!(previous, None, "{tp:?} owned twice in group {}", self.group);
        }
    }
    fn on_lost(&mut self, partitions: &[TopicPartition]) {
        let mut owners = self.table.owners.lock().unwrap();
        for tp in partitions {
            if owners.get(&(self.group, tp.clone())) == Some(&self.member) {
                owners.remove(&(self.group, tp.clone()));
            }
        }
    }
}

/// Per partition, the offsets a group processed (with repeats).
type Seen = Mutex<BTreeMap<u32, Vec<u64>>>;

/// Three groups with members joining and leaving at random while four
/// producers write: per group every record is processed at least once and
/// each partition's records arrive in order within an ownership; after a
/// final commit nothing is delivered again. Records per run:
/// `LOGBUS_GROUP_STRESS_RECORDS` (default 1,000,000).
#[test]
fn stress_members_join_and_leave_while_producers_write() {
    let total: usize = std::env::var("LOGBUS_GROUP_STRESS_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let (groups, partitions, producers) = (3usize, 8u32, 4usize);
    let dir = TempDir::new("group-stress");
    let log = open(&dir);
    log.create_topic("s", TopicConfig::new(partitions)).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let table = Arc::new(Ownership::default());
    // seen[group][partition] = offsets processed (with repeats).
    let seen: Arc<Vec<Seen>> = Arc::new((0..groups).map(|_| Mutex::new(BTreeMap::new())).collect());

    let writers: Vec<_> = (0..producers)
        .map(|w| {
            let log = log.clone();
            std::thread::spawn(move || {
                let producer = log.producer("s").unwrap();
                let per = total / producers;
                let mut sent = 0;
                while sent < per {
                    let n = (per - sent).min(500);
                    let batch: Vec<Record> = (sent..sent + n)
                        .map(|i| Record::new(format!("{w}-{i}")).partition((i % 8) as u32))
                        .collect();
                    producer.send_batch(&batch).unwrap();
                    sent += n;
                }
            })
        })
        .collect();

    let mut consumers = Vec::new();
    for g in 0..groups {
        for slot in 0..3 {
            let (log, done, table, seen) = (log.clone(), done.clone(), table.clone(), seen.clone());
            consumers.push(std::thread::spawn(move || {
                let mut rng = common::Rng((g * 10 + slot) as u64 + 1);
                let mut incarnation = 0;
                while !done.load(Ordering::SeqCst) {
                    incarnation += 1;
                    let member_key = slot * 1000 + incarnation;
                    let cfg = GroupConfig::default().auto_commit(false);
                    let mut m = ConsumerGroup::join(&log, &format!("g{g}"), &["s"], cfg).unwrap();
                    m.set_rebalance_listener(OwnershipListener {
                        group: g,
                        member: member_key,
                        table: table.clone(),
                    });
                    let polls = 5 + rng.below(60);
                    for _ in 0..polls {
                        if done.load(Ordering::SeqCst) {
                            break;
                        }
                        let records = m.poll(Duration::from_millis(5)).unwrap();
                        let mut by_part: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
                        for r in &records {
                            by_part.entry(r.partition).or_default().push(r.offset);
                        }
                        let mut seen = seen[g].lock().unwrap();
                        for (p, offsets) in by_part {
                            // In order, without gaps, within one poll.
                            assert!(offsets.windows(2).all(|w| w[1] == w[0] + 1));
                            seen.entry(p).or_default().extend(offsets);
                        }
                        drop(seen);
                        if rng.below(4) == 0 {
                            m.commit().unwrap();
                        }
                    }
                    // Leave (committing in on_revoked), or, sometimes, drop.
                    if rng.below(2) == 0 {
                        m.leave().unwrap();
                    } else {
                        drop(m);
                    }
                }
                incarnation
            }));
        }
    }
    for w in writers {
        w.join().unwrap();
    }
    let written = log
        .topic("s")
        .unwrap()
        .partitions()
        .iter()
        .map(|p| p.log_end_offset())
        .sum::<u64>();
    assert_eq!(written as usize, total / producers * producers);
    // Let the churn go on until every group has read everything at least once.
    let give_up = Instant::now() + Duration::from_secs(300);
    loop {
        let all_read = (0..groups).all(|g| {
            let seen = seen[g].lock().unwrap();
            log.topic("s").unwrap().partitions().iter().all(|p| {
                let got: BTreeSet<u64> = seen
                    .get(&p.id())
                    .map(|v| v.iter().copied().collect())
                    .unwrap_or_default();
                got.len() as u64 == p.log_end_offset()
            })
        });
        if all_read {
            break;
        }
        assert!(Instant::now() < give_up, "groups did not read everything");
        std::thread::sleep(Duration::from_millis(20));
    }
    done.store(true, Ordering::SeqCst);
    let incarnations: usize = consumers.into_iter().map(|c| c.join().unwrap()).sum();
    for g in 0..groups {
        let processed: usize = seen[g].lock().unwrap().values().map(Vec::len).sum();
        eprintln!("group {g}: {processed} records processed for {written} written");
    }
    eprintln!("{incarnations} member incarnations in all");
    assert!(
        incarnations > groups * 3,
        "no member ever left: no churn tested"
    );
    // Every member committed on leave/revoke: a final member reads nothing,
    // once it owns every partition.
    for g in 0..groups {
        let desc = log.describe_group(&format!("g{g}")).unwrap();
        assert_eq!(desc.state, GroupState::Empty);
        let mut m = ConsumerGroup::join(&log, &format!("g{g}"), &["s"], config()).unwrap();
        let again = poll_until(&mut m, |m, _| m.assignment().len() == partitions as usize);
        let again_more = m.poll(SHORT).unwrap();
        assert!(
            again.is_empty() && again_more.is_empty(),
            "group {g} re-delivered records"
        );
        m.leave().unwrap();
    }
}

#[test]
fn deleting_a_subscribed_topic_rebalances_it_away_and_forgets_its_offsets() {
    let dir = TempDir::new("group-delete-topic");
    let log = open(&dir);
    log.create_topic("keep", TopicConfig::new(1)).unwrap();
    log.create_topic("gone", TopicConfig::new(2)).unwrap();
    produce(&log, "gone", 3);
    let mut m = ConsumerGroup::join(&log, "g", &["keep", "gone"], config()).unwrap();
    poll_until(&mut m, |m, got| m.assignment().len() == 3 && got.len() == 3);
    m.commit().unwrap();
    log.delete_topic("gone").unwrap();
    poll_until(&mut m, |m, _| m.assignment() == tps("keep", &[0]));
    let desc = log.describe_group("g").unwrap();
    let offsets: Vec<_> = desc.offsets.iter().map(|o| o.partition.clone()).collect();
    assert_eq!(offsets, tps("keep", &[0]));
    // Produced after the rebalance, still read.
    produce(&log, "keep", 1);
    poll_until(&mut m, |_, got| got.len() == 1);
}

#[test]
fn closing_the_log_ends_a_blocked_group_poll() {
    let dir = TempDir::new("group-close");
    let log = open(&dir);
    log.create_topic("t", TopicConfig::new(1)).unwrap();
    let mut m = ConsumerGroup::join(&log, "g", &["t"], config()).unwrap();
    poll_until(&mut m, |m, _| m.assignment().len() == 1);
    let t = std::thread::spawn(move || m.poll(Duration::from_secs(60)).map(|r| r.len()));
    std::thread::sleep(Duration::from_millis(50));
    log.close().unwrap();
    assert!(matches!(t.join().unwrap(), Err(Error::Closed)));
}

/// (partition, offset, value) of each record a member saw.
type Lent = Vec<(u32, u64, Vec<u8>)>;

/// One `poll_each`, gathering what it lends into `seen`.
fn lend(member: &mut ConsumerGroup, seen: &mut Lent) -> usize {
    member
        .poll_each(SHORT, |tp, r| {
            assert_eq!(tp.topic, "t");
            seen.push((tp.partition, r.offset, r.value.unwrap().to_vec()));
        })
        .unwrap()
}

#[test]
fn group_poll_each_lends_what_poll_returns_and_commits_past_it() {
    let dir = TempDir::new("group-poll-each");
    let log = open(&dir);
    log.create_topic("t", TopicConfig::new(3)).unwrap();
    produce(&log, "t", 300);
    let small = logbus::ConsumerConfig::default().max_poll_records(7);
    let mut owned =
        ConsumerGroup::join(&log, "owned", &["t"], config().consumer(small.clone())).unwrap();
    let mut lent = ConsumerGroup::join(&log, "lent", &["t"], config().consumer(small)).unwrap();
    let by_poll: Lent = poll_until(&mut owned, |_, got| got.len() >= 300)
        .into_iter()
        .map(|r| (r.partition, r.offset, r.value.unwrap().to_vec()))
        .collect();
    let mut by_each = Lent::new();
    let give_up = Instant::now() + Duration::from_secs(20);
    while by_each.len() < 300 {
        assert!(Instant::now() < give_up, "{lent:?}");
        let before = by_each.len();
        let n = lend(&mut lent, &mut by_each);
        assert_eq!(n, by_each.len() - before, "the count returned");
        assert!(n <= 7, "max_poll_records holds");
    }
    assert_eq!(by_each.len(), 300);
    // Same records, in the same order within each partition.
    let per_partition = |seen: &Lent| {
        let mut m: BTreeMap<u32, Vec<(u64, Vec<u8>)>> = BTreeMap::new();
        for (p, o, v) in seen {
            m.entry(*p).or_default().push((*o, v.clone()));
        }
        m
    };
    assert_eq!(per_partition(&by_each), per_partition(&by_poll));

    // Positions moved past every record lent: commit stores them, and a
    // later member of the group starts after them.
    for p in 0..3 {
        let tp = TopicPartition::new("t", p);
        let end = log
            .topic("t")
            .unwrap()
            .partition(p)
            .unwrap()
            .log_end_offset();
        assert_eq!(lent.position(&tp).unwrap(), end);
        assert_eq!(lent.committed(&tp), None, "auto-commit is off");
    }
    lent.commit().unwrap();
    for p in 0..3 {
        let tp = TopicPartition::new("t", p);
        let end = log
            .topic("t")
            .unwrap()
            .partition(p)
            .unwrap()
            .log_end_offset();
        assert_eq!(lent.committed(&tp).map(|c| c.offset), Some(end));
    }
    lent.leave().unwrap();
    produce(&log, "t", 30);
    let mut next = ConsumerGroup::join(&log, "lent", &["t"], config()).unwrap();
    let mut later = Lent::new();
    let give_up = Instant::now() + Duration::from_secs(20);
    while later.len() < 30 {
        assert!(Instant::now() < give_up, "{next:?}");
        lend(&mut next, &mut later);
    }
    assert!(later.iter().all(|(_, _, v)| v.starts_with(b"v")));
    let fresh: BTreeSet<(u32, u64)> = later.iter().map(|(p, o, _)| (*p, *o)).collect();
    let old: BTreeSet<(u32, u64)> = by_each.iter().map(|(p, o, _)| (*p, *o)).collect();
    assert_eq!(fresh.len(), 30);
    assert!(
        fresh.is_disjoint(&old),
        "the new member read only new records"
    );
}

#[test]
fn group_poll_each_takes_part_in_a_rebalance_and_auto_commits_on_revoke() {
    let dir = TempDir::new("group-poll-each-rebalance");
    let log = open(&dir);
    log.create_topic("t", TopicConfig::new(4)).unwrap();
    produce(&log, "t", 400);
    let events: Events = Arc::new(Mutex::new(Vec::new()));
    // Auto-commit on, with an interval no test run reaches: only the
    // commit on revoke moves the committed offsets.
    let auto = GroupConfig::default()
        .auto_commit(true)
        .auto_commit_interval(Duration::from_secs(3600))
        .consumer(logbus::ConsumerConfig::default().max_poll_records(10));
    let mut a = ConsumerGroup::join(&log, "g", &["t"], auto.clone()).unwrap();
    a.set_rebalance_listener(Recorder::new("a", &events));
    let mut seen = Lent::new();
    let give_up = Instant::now() + Duration::from_secs(20);
    while a.assignment().len() < 4 || seen.len() < 50 {
        assert!(Instant::now() < give_up, "{a:?}");
        lend(&mut a, &mut seen);
    }
    let read_by_a: BTreeMap<u32, u64> = seen.iter().fold(BTreeMap::new(), |mut m, (p, o, _)| {
        m.insert(*p, o + 1);
        m
    });

    let mut b = ConsumerGroup::join(&log, "g", &["t"], auto).unwrap();
    b.set_rebalance_listener(Recorder::new("b", &events));
    let give_up = Instant::now() + Duration::from_secs(20);
    while a.assignment().len() != 2 || b.assignment().len() != 2 {
        assert!(Instant::now() < give_up, "no balance: {a:?} {b:?}");
        lend(&mut a, &mut seen);
        lend(&mut b, &mut seen);
    }
    // `a` gave up two partitions inside `poll_each`, committing how far it
    // had read them first.
    let revoked: Vec<TopicPartition> = events
        .lock()
        .unwrap()
        .iter()
        .filter(|(who, kind, _)| *who == "a" && *kind == "revoked")
        .flat_map(|(_, _, p)| p.clone())
        .collect();
    assert_eq!(revoked.len(), 2);
    for tp in &revoked {
        assert!(b.assignment().contains(tp));
        let committed = a.committed(tp).expect("committed on revoke").offset;
        assert!(committed >= read_by_a.get(&tp.partition).copied().unwrap_or(0));
    }
    let give_up = Instant::now() + Duration::from_secs(20);
    while seen.len() < 400 {
        assert!(Instant::now() < give_up, "{a:?} {b:?}");
        lend(&mut a, &mut seen);
        lend(&mut b, &mut seen);
    }
    // Every record exactly once: positions moved as records were lent, and
    // `b` started each partition it took where `a`'s commit left it.
    let offsets: BTreeSet<(u32, u64)> = seen.iter().map(|(p, o, _)| (*p, *o)).collect();
    assert_eq!(
        (seen.len(), offsets.len()),
        (400, 400),
        "a record lent twice"
    );
}
