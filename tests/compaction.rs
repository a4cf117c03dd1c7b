//! Compaction: after cleaning, the latest record per key is kept with its
//! offset and in order (checked against a model, proptest), tombstones are
//! kept for `delete_retention_ms` then removed, records in the active
//! segment are never touched, batches stay valid Kafka v2 (CRC checked on
//! read), several passes when the keys do not fit the map, the dirty point
//! survives reopen, and bytes held across a swap stay intact.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::TempDir;
use logbus::{CleanupPolicy, Log, LogConfig, ManualClock, Partition, Record, TopicConfig};
use proptest::prelude::*;

const T0: i64 = 1_700_000_000_000;
const DAY_MS: u64 = 24 * 3600 * 1000;

type Row = (u64, Option<Vec<u8>>, Option<Vec<u8>>);

fn open(dir: &std::path::Path, clock: &Arc<ManualClock>, map_bytes: usize) -> Log {
    let config = LogConfig::default()
        .clock(Arc::clone(clock) as _)
        .background_maintenance(false)
        .cleaner_map_bytes(map_bytes);
    Log::open(dir, config).unwrap()
}

fn compacted() -> TopicConfig {
    TopicConfig::new(1)
        .segment_bytes(4096)
        .max_record_bytes(1024)
        .segment_ms(None)
        .cleanup_policy(CleanupPolicy::Compact)
        .min_cleanable_dirty_ratio(0.0)
        .delete_retention_ms(DAY_MS)
}

/// Every record, through the CRC-checking zero-copy reader.
fn rows(p: &Partition) -> Vec<Row> {
    let mut out = Vec::new();
    let mut at = p.log_start_offset();
    while at < p.log_end_offset() {
        let fetched = p.fetch(at, 1 << 20).unwrap();
        if fetched.bytes.is_empty() {
            break;
        }
        let before = out.len();
        for r in fetched.records() {
            let r = r.unwrap();
            out.push((
                r.offset,
                r.key.map(<[u8]>::to_vec),
                r.value.map(<[u8]>::to_vec),
            ));
        }
        // A batch whose records below its last offset were removed yields
        // nothing from `at`: step over the gap.
        at = out[before..].last().map_or(at + 1, |r| r.0 + 1);
    }
    out
}

/// What cleaning everything below `sealed_end` must leave: per key the
/// latest record, plus every record at or past `sealed_end` (active
/// segment), keyless records, and tombstones younger than the horizon.
fn model(all: &[Row], sealed_end: u64, tombstone_horizon: i64, ts: &[i64]) -> Vec<Row> {
    let mut latest: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    for r in all.iter().filter(|r| r.0 < sealed_end) {
        if let Some(k) = &r.1 {
            latest.insert(k.clone(), r.0);
        }
    }
    all.iter()
        .filter(|r| {
            if r.0 >= sealed_end {
                return true;
            }
            match &r.1 {
                None => true,
                Some(k) => {
                    latest[k] == r.0 && (r.2.is_some() || ts[r.0 as usize] > tombstone_horizon)
                }
            }
        })
        .cloned()
        .collect()
}

#[derive(Debug, Clone)]
enum Op {
    Put(u8, u8),
    Delete(u8),
    Keyless(u8),
    Roll,
    Tick,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u8..12, any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)),
        2 => (0u8..12).prop_map(Op::Delete),
        1 => any::<u8>().prop_map(Op::Keyless),
        1 => Just(Op::Roll),
        1 => Just(Op::Tick),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Random keys, values, tombstones and rolls, then compaction (with a
    /// tiny map, so it takes several passes): the log equals the model.
    #[test]
    fn compaction_matches_the_model(ops in prop::collection::vec(op(), 1..160), small_map in any::<bool>()) {
        let dir = TempDir::new("compact-model");
        let clock = Arc::new(ManualClock::new(T0));
        let log = open(dir.path(), &clock, if small_map { 1024 } else { 1 << 20 });
        let topic = log.create_topic("m", compacted().delete_retention_ms(10_000)).unwrap();
        let p = topic.partition(0).unwrap().clone();
        let producer = log.producer("m").unwrap();
        let mut ts = Vec::new();
        for op in &ops {
            let record = match op {
                Op::Put(k, v) => Record::new(vec![*v; 40]).key(vec![b'k', *k]),
                Op::Delete(k) => Record::tombstone(vec![b'k', *k]),
                Op::Keyless(v) => Record::new(vec![*v; 10]),
                Op::Roll => { p.roll().unwrap(); continue; }
                Op::Tick => { clock.advance(Duration::from_secs(4)); continue; }
            };
            producer.send(record).unwrap();
            ts.push(clock.now_ms_pub());
        }
        // Seal everything, then a few records the cleaner must not touch.
        p.roll().unwrap();
        let sealed_end = p.log_end_offset();
        for k in 0..3u8 {
            producer.send(Record::new("active").key(vec![b'k', k])).unwrap();
            ts.push(clock.now_ms_pub());
        }
        let all = rows(&p);
        prop_assert_eq!(all.len() as u64, p.log_end_offset());
        let summary = log.maintain().unwrap();
        prop_assert!(summary.failures.is_empty(), "{:?}", summary.failures);
        let horizon = clock.now_ms_pub() - 10_000;
        let want = model(&all, sealed_end, horizon, &ts);
        prop_assert_eq!(rows(&p), want.clone());
        // The same after reopen, and a second pass changes nothing.
        log.close().unwrap();
        drop(log);
        let log = open(dir.path(), &clock, 1 << 20);
        let p = log.topic("m").unwrap().partition(0).unwrap().clone();
        prop_assert_eq!(rows(&p), want.clone());
        let again = log.maintain().unwrap();
        prop_assert_eq!(again.records_removed, 0);
        prop_assert_eq!(rows(&p), want);
    }
}

trait NowPub {
    fn now_ms_pub(&self) -> i64;
}
impl NowPub for ManualClock {
    fn now_ms_pub(&self) -> i64 {
        logbus::Clock::now_ms(self)
    }
}

fn keyed(p: &logbus::Producer, key: &str, value: Option<&str>) -> u64 {
    let record = match value {
        Some(v) => Record::new(v.to_string()).key(key.to_string()),
        None => Record::tombstone(key.to_string()),
    };
    p.send(record).unwrap().offset
}

/// A tombstone stays for `delete_retention_ms` (readers can see the
/// delete), then a pass removes it, triggered by its due time alone.
#[test]
fn tombstones_are_kept_for_delete_retention_then_removed() {
    let dir = TempDir::new("compact-tomb");
    let clock = Arc::new(ManualClock::new(T0));
    let log = open(dir.path(), &clock, 1 << 20);
    let topic = log.create_topic("t", compacted()).unwrap();
    let p = topic.partition(0).unwrap().clone();
    let producer = log.producer("t").unwrap();
    keyed(&producer, "a", Some("1"));
    keyed(&producer, "b", Some("2"));
    let tomb = keyed(&producer, "a", None);
    p.roll().unwrap();
    keyed(&producer, "c", Some("3")); // active: never cleaned

    let summary = log.maintain().unwrap();
    assert_eq!(summary.records_removed, 1); // a=1, superseded
    assert_eq!(summary.next_due_ms, Some(T0 + DAY_MS as i64));
    let keys: Vec<(u64, Option<Vec<u8>>)> = rows(&p).into_iter().map(|r| (r.0, r.2)).collect();
    assert_eq!(
        keys,
        [
            (1, Some(b"2".to_vec())),
            (tomb, None),
            (3, Some(b"3".to_vec()))
        ]
    );

    clock.advance(Duration::from_millis(DAY_MS - 1));
    assert_eq!(log.maintain().unwrap().records_removed, 0);
    clock.advance(Duration::from_millis(1));
    let summary = log.maintain().unwrap();
    assert_eq!(summary.records_removed, 1, "{summary:?}");
    let offsets: Vec<u64> = rows(&p).into_iter().map(|r| r.0).collect();
    assert_eq!(offsets, [1, 3]);
    assert_eq!(
        p.log_start_offset(),
        0,
        "compaction never moves the log start"
    );
}

/// Keys that do not fit the map are cleaned in several passes, with the
/// same result; the figures count them.
#[test]
fn more_keys_than_the_map_holds_take_several_passes() {
    let dir = TempDir::new("compact-passes");
    let clock = Arc::new(ManualClock::new(T0));
    // 1 KiB: 32 slots, 28 keys per pass.
    let log = open(dir.path(), &clock, 1024);
    let topic = log
        .create_topic("p", compacted().segment_bytes(1 << 20))
        .unwrap();
    let p = topic.partition(0).unwrap().clone();
    let producer = log.producer("p").unwrap();
    for round in 0..3 {
        for k in 0..100 {
            keyed(&producer, &format!("key{k}"), Some(&format!("{round}")));
        }
    }
    p.roll().unwrap();
    let summary = log.maintain().unwrap();
    assert_eq!(summary.records_removed, 200);
    let left = rows(&p);
    assert_eq!(left.len(), 100);
    assert!(left.iter().all(|r| r.2.as_deref() == Some(&b"2"[..])));
    assert_eq!(left.first().map(|r| r.0), Some(200));
    let stats = log.cleaner_stats();
    assert!(stats.passes >= 4, "{stats:?}");
    assert_eq!(stats.runs, 1);
    assert_eq!(stats.records_removed, 200);
    assert!(stats.bytes_written < stats.bytes_read);
    assert_eq!(stats.last_run_ms, Some(T0));
    assert!(stats.keys >= 100);
}

/// The cleaner waits for `min_cleanable_dirty_ratio`, and its dirty point
/// survives reopen (no re-cleaning of a clean log).
#[test]
fn dirty_ratio_gates_cleaning_and_the_dirty_point_persists() {
    let dir = TempDir::new("compact-ratio");
    let clock = Arc::new(ManualClock::new(T0));
    {
        let log = open(dir.path(), &clock, 1 << 20);
        let topic = log
            .create_topic("r", compacted().min_cleanable_dirty_ratio(0.5))
            .unwrap();
        let p = topic.partition(0).unwrap().clone();
        let producer = log.producer("r").unwrap();
        for i in 0..20 {
            keyed(&producer, &format!("k{}", i % 4), Some("value"));
        }
        p.roll().unwrap();
        assert_eq!(log.maintain().unwrap().partitions_cleaned, 1);
        let first_dirty = p.stats().first_dirty_offset;
        assert_eq!(first_dirty, 20);
        // A little dirty data (well under half the log): not worth a pass.
        keyed(&producer, "k0", Some("new"));
        p.roll().unwrap();
        assert_eq!(log.maintain().unwrap().partitions_cleaned, 0);
        log.close().unwrap();
    }
    let log = open(dir.path(), &clock, 1 << 20);
    let p = log.topic("r").unwrap().partition(0).unwrap().clone();
    assert_eq!(p.stats().first_dirty_offset, 20);
    assert_eq!(log.maintain().unwrap().partitions_cleaned, 0);
    // Enough dirty data: cleaned.
    let producer = log.producer("r").unwrap();
    for _ in 0..10 {
        keyed(&producer, "k1", Some("newer"));
    }
    p.roll().unwrap();
    let summary = log.maintain().unwrap();
    assert_eq!(summary.partitions_cleaned, 1);
    let left: Vec<(u64, Vec<u8>)> = rows(&p).into_iter().map(|r| (r.0, r.2.unwrap())).collect();
    assert_eq!(
        left,
        [
            (18, b"value".to_vec()),
            (19, b"value".to_vec()),
            (20, b"new".to_vec()),
            (30, b"newer".to_vec()),
        ]
    );
}

/// Records and batches held from segments the cleaner replaces stay
/// byte-for-byte the same; new reads see the cleaned log.
#[test]
fn bytes_held_across_a_swap_stay_intact() {
    let dir = TempDir::new("compact-held");
    let clock = Arc::new(ManualClock::new(T0));
    let log = open(dir.path(), &clock, 1 << 20);
    let topic = log.create_topic("h", compacted()).unwrap();
    let p = topic.partition(0).unwrap().clone();
    let producer = log.producer("h").unwrap();
    for i in 0..60 {
        keyed(
            &producer,
            &format!("k{}", i % 3),
            Some(&format!("value-{i:04}")),
        );
    }
    p.roll().unwrap();
    let held = p.read(0, 10).unwrap();
    let fetched = p.fetch(0, 1 << 20).unwrap();
    let copy = fetched.bytes.to_vec();
    let summary = log.maintain().unwrap();
    assert!(summary.segments_cleaned > 0);
    assert_eq!(&fetched.bytes[..], &copy[..]);
    for r in &held {
        let want = format!("value-{:04}", r.offset);
        assert_eq!(r.value.as_deref(), Some(want.as_bytes()));
    }
    // One record per batch: every record the fetch covered is still there.
    assert_eq!(fetched.records().count(), count_batches(&copy));
    let now: Vec<u64> = rows(&p).into_iter().map(|r| r.0).collect();
    assert_eq!(now, [57, 58, 59]);
}

fn count_batches(bytes: &[u8]) -> usize {
    let mut n = 0;
    let mut at = 0;
    while at + 12 <= bytes.len() {
        let len = i32::from_be_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
        at += 12 + len;
        n += 1;
    }
    n
}

/// `compact,delete`: retention deletes old segments too.
#[test]
fn compact_delete_also_applies_retention() {
    let dir = TempDir::new("compact-delete");
    let clock = Arc::new(ManualClock::new(T0));
    let log = open(dir.path(), &clock, 1 << 20);
    let topic = log
        .create_topic(
            "cd",
            compacted()
                .cleanup_policy(CleanupPolicy::CompactDelete)
                .retention_ms(Some(1_000)),
        )
        .unwrap();
    let p = topic.partition(0).unwrap().clone();
    let producer = log.producer("cd").unwrap();
    keyed(&producer, "a", Some("1"));
    keyed(&producer, "a", Some("2"));
    p.roll().unwrap();
    clock.advance(Duration::from_secs(2));
    keyed(&producer, "b", Some("3"));
    let summary = log.maintain().unwrap();
    assert_eq!(summary.segments_deleted, 1);
    assert_eq!(p.log_start_offset(), 2);
    let offsets: Vec<u64> = rows(&p).into_iter().map(|r| r.0).collect();
    assert_eq!(offsets, [2]);
}

/// The cleaner compacts the internal `__consumer_offsets` topic like any
/// compacted topic: many commits shrink to the latest per partition, and
/// the committed offsets are the same after cleaning and reopen.
#[test]
fn consumer_offsets_topic_is_compacted_and_offsets_survive() {
    use logbus::{ConsumerGroup, GroupConfig, TopicPartition};
    let dir = TempDir::new("compact-offsets");
    let tp = TopicPartition::new("in", 0);
    let config = || LogConfig::default().background_maintenance(false);
    {
        let log = Log::open(dir.path(), config()).unwrap();
        log.create_topic("in", TopicConfig::new(1)).unwrap();
        let producer = log.producer("in").unwrap();
        let batch: Vec<Record> = (0..300).map(|i| Record::new(format!("r{i}"))).collect();
        producer.send_batch(&batch).unwrap();
        let mut m = ConsumerGroup::join(
            &log,
            "g",
            &["in"],
            GroupConfig::default().auto_commit(false),
        )
        .unwrap();
        let give_up = std::time::Instant::now() + Duration::from_secs(20);
        while m.assignment().is_empty() {
            assert!(std::time::Instant::now() < give_up);
            m.poll(Duration::from_millis(10)).unwrap();
        }
        for offset in 1..=300 {
            m.commit_offsets(&[(tp.clone(), offset)]).unwrap();
        }
        let offsets = log.topic("__consumer_offsets").unwrap();
        let p = offsets.partition(0).unwrap().clone();
        let before = p.stats();
        p.roll().unwrap();
        let summary = log.maintain().unwrap();
        assert!(summary.failures.is_empty(), "{:?}", summary.failures);
        assert!(summary.records_removed >= 299, "{summary:?}");
        assert!(
            p.stats().size_bytes < before.size_bytes / 10,
            "{:?}",
            p.stats()
        );
        assert_eq!(m.committed(&tp).map(|c| c.offset), Some(300));
        m.leave().unwrap();
        log.close().unwrap();
    }
    let log = Log::open(dir.path(), config()).unwrap();
    let desc = log.describe_group("g").unwrap();
    assert_eq!(desc.offsets[0].committed, Some(300));
}

#[derive(Debug, Clone)]
enum Step {
    Put(u8, u8),
    Delete(u8),
    Roll,
    Tick,
    Maintain,
    Reopen,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (0u8..10, any::<u8>()).prop_map(|(k, v)| Step::Put(k, v)),
        2 => (0u8..10).prop_map(Step::Delete),
        2 => Just(Step::Roll),
        1 => Just(Step::Tick),
        2 => Just(Step::Maintain),
        1 => Just(Step::Reopen),
    ]
}

/// The model of one pass: below `sealed_end`, the latest record per key,
/// without tombstones whose retention is over.
fn clean_model(rows: &mut Vec<(Row, i64)>, sealed_end: u64, now: i64, delete_retention: i64) {
    let mut latest: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    for (r, _) in rows.iter().filter(|(r, _)| r.0 < sealed_end) {
        if let Some(k) = &r.1 {
            latest.insert(k.clone(), r.0);
        }
    }
    rows.retain(|(r, ts)| {
        r.0 >= sealed_end
            || r.1
                .as_ref()
                .is_none_or(|k| latest[k] == r.0 && (r.2.is_some() || ts + delete_retention > now))
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// Produce, roll, clean and reopen in any order (large segments, so
    /// only explicit rolls seal): after every step the log equals the
    /// model, which applies one cleaning of the sealed segments at each
    /// `maintain`.
    #[test]
    fn interleaved_cleaning_and_reopen_match_the_model(
        steps in prop::collection::vec(step(), 1..80),
        small_map in any::<bool>(),
    ) {
        const RETAIN: i64 = 10_000;
        let dir = TempDir::new("compact-steps");
        let clock = Arc::new(ManualClock::new(T0));
        let map = if small_map { 1024 } else { 1 << 20 };
        let mut log = open(dir.path(), &clock, map);
        log.create_topic(
            "s",
            compacted()
                .segment_bytes(1 << 20)
                .delete_retention_ms(RETAIN as u64),
        )
        .unwrap();
        let mut model: Vec<(Row, i64)> = Vec::new();
        let mut next = 0u64;
        let mut sealed_end = 0u64;
        for step in &steps {
            let p = log.topic("s").unwrap().partition(0).unwrap().clone();
            match step {
                Step::Put(..) | Step::Delete(_) => {
                    let (key, value) = match step {
                        Step::Put(k, v) => (vec![b'k', *k], Some(vec![*v; 30])),
                        Step::Delete(k) => (vec![b'k', *k], None),
                        _ => unreachable!(),
                    };
                    let record = match &value {
                        Some(v) => Record::new(v.clone()).key(key.clone()),
                        None => Record::tombstone(key.clone()),
                    };
                    let offset = log.producer("s").unwrap().send(record).unwrap().offset;
                    prop_assert_eq!(offset, next);
                    model.push(((offset, Some(key), value), clock.now_ms_pub()));
                    next += 1;
                }
                Step::Roll => {
                    p.roll().unwrap();
                    sealed_end = next;
                }
                Step::Tick => clock.advance(Duration::from_secs(4)),
                Step::Maintain => {
                    let summary = log.maintain().unwrap();
                    prop_assert!(summary.failures.is_empty(), "{:?}", summary.failures);
                    clean_model(&mut model, sealed_end, clock.now_ms_pub(), RETAIN);
                }
                Step::Reopen => {
                    log.close().unwrap();
                    log = open(dir.path(), &clock, map);
                }
            }
            let p = log.topic("s").unwrap().partition(0).unwrap().clone();
            let want: Vec<Row> = model.iter().map(|(r, _)| r.clone()).collect();
            prop_assert_eq!(rows(&p), want, "after {:?}", step);
        }
    }
}

/// The internal `__work_queue_state` topic is compacted like any other:
/// many snapshots shrink to the latest per partition and the queue's state
/// is the same after cleaning and reopen.
#[test]
fn work_queue_state_topic_is_compacted_and_state_survives() {
    use logbus::{QueueConfig, WorkQueue};
    let dir = TempDir::new("compact-queue");
    let config = || LogConfig::default().background_maintenance(false);
    {
        let log = Log::open(dir.path(), config()).unwrap();
        log.create_topic("jobs", TopicConfig::new(1)).unwrap();
        let records: Vec<Record> = (0..60)
            .map(|i| Record::new(format!("job-{i}")).key(format!("{i}")))
            .collect();
        log.producer("jobs").unwrap().send_batch(&records).unwrap();
        let queue = WorkQueue::open(&log, "q", "jobs", QueueConfig::default()).unwrap();
        let mut w = queue.worker();
        let mut got = Vec::new();
        let give_up = std::time::Instant::now() + Duration::from_secs(20);
        while got.len() < 60 {
            assert!(std::time::Instant::now() < give_up);
            got.extend(w.poll(Duration::from_millis(10)).unwrap());
        }
        // One snapshot per commit: many records for one key.
        for d in got.iter().filter(|d| d.record.offset % 2 == 0) {
            w.ack(d).unwrap();
            w.commit().unwrap();
        }
        let state = log.topic("__work_queue_state").unwrap();
        let p = state.partition(0).unwrap().clone();
        let before = p.stats();
        assert!(before.log_end_offset > 20, "{before:?}");
        p.roll().unwrap();
        let summary = log.maintain().unwrap();
        assert!(summary.failures.is_empty(), "{:?}", summary.failures);
        assert!(summary.records_removed >= 20, "{summary:?}");
        drop(w);
        drop(queue);
        log.close().unwrap();
    }
    let log = Log::open(dir.path(), config()).unwrap();
    let queue = WorkQueue::open(&log, "q", "jobs", QueueConfig::default()).unwrap();
    let mut w = queue.worker();
    let mut got = Vec::new();
    let give_up = std::time::Instant::now() + Duration::from_secs(20);
    while got.len() < 30 {
        assert!(std::time::Instant::now() < give_up, "only {}", got.len());
        got.extend(w.poll(Duration::from_millis(10)).unwrap());
    }
    assert!(
        got.iter().all(|d| d.record.offset % 2 == 1),
        "acked records came back"
    );
    assert!(w.poll(Duration::from_millis(10)).unwrap().is_empty());
}
