//! Retention that waits for consumers (`TopicConfig::consumers`): a segment
//! goes once every named consumer group or work queue is past it; and
//! producer back-pressure (`max_unconsumed_bytes`): `send` blocks, then
//! fails with `Error::Backpressure`, and resumes when consumers catch up.

mod common;

use std::time::{Duration, Instant};

use common::TempDir;
use logbus::{
    ConsumerGroup, Error, GroupConfig, Log, LogConfig, QueueConfig, Record, TopicConfig,
    TopicPartition, WorkQueue,
};

const SHORT: Duration = Duration::from_millis(20);

/// Maintenance runs only when the test calls `maintain()`.
fn open(dir: &TempDir) -> Log {
    Log::open(
        dir.path(),
        LogConfig::default().background_maintenance(false),
    )
    .unwrap()
}

/// One partition, small segments, no time retention, waiting for `consumers`.
fn topic(consumers: &[&str]) -> TopicConfig {
    TopicConfig::new(1)
        .segment_bytes(4096)
        .max_record_bytes(1024)
        .retention_ms(None)
        .consumers(consumers.iter().copied())
}

/// Sends `n` 200-byte records one by one (several segments' worth).
fn fill(log: &Log, topic: &str, n: usize) {
    let producer = log.producer(topic).unwrap();
    for i in 0..n {
        producer.send(Record::new(format!("{i:0>200}"))).unwrap();
    }
}

/// A member of `group` that commits offset `offset` on partition 0.
fn commit(log: &Log, group: &str, offset: u64) {
    let mut m = ConsumerGroup::join(
        log,
        group,
        &["t"],
        GroupConfig::default().auto_commit(false),
    )
    .unwrap();
    let give_up = Instant::now() + Duration::from_secs(20);
    while m.assignment().is_empty() {
        assert!(Instant::now() < give_up);
        m.poll(SHORT).unwrap();
    }
    m.commit_offsets(&[(TopicPartition::new("t", 0), offset)])
        .unwrap();
    m.leave().unwrap();
}

#[test]
fn a_segment_goes_once_every_named_group_is_past_it() {
    let dir = TempDir::new("consumed-groups");
    let log = open(&dir);
    log.create_topic("t", topic(&["billing", "audit"])).unwrap();
    fill(&log, "t", 100);
    let p = log.topic("t").unwrap().partition(0).unwrap().clone();
    let segments = p.stats().segments;
    assert!(segments > 3, "{segments} segments");

    // Nobody has consumed anything: nothing goes.
    assert_eq!(log.maintain().unwrap().segments_deleted, 0);
    // One group at the end is not enough: `audit` still needs everything.
    commit(&log, "billing", 100);
    assert_eq!(log.maintain().unwrap().segments_deleted, 0);
    assert_eq!(p.log_start_offset(), 0);
    // `audit` at 50: the sealed segments wholly below 50 go, no more.
    commit(&log, "audit", 50);
    let summary = log.maintain().unwrap();
    assert!(summary.segments_deleted > 0);
    let start = p.log_start_offset();
    assert!(start > 0 && start <= 50, "log start {start}");
    // Every record from 50 on is still there.
    let kept: Vec<u64> = common::read_all(&log, "t", 0)
        .iter()
        .map(|r| r.offset)
        .filter(|&o| o >= 50)
        .collect();
    assert_eq!(kept, (50..100).collect::<Vec<u64>>());
}

#[test]
fn a_work_queue_is_a_consumer_too() {
    let dir = TempDir::new("consumed-queue");
    let log = open(&dir);
    log.create_topic("t", topic(&["jobs"])).unwrap();
    fill(&log, "t", 60);
    let p = log.topic("t").unwrap().partition(0).unwrap().clone();
    let queue = WorkQueue::open(&log, "jobs", "t", QueueConfig::default()).unwrap();
    let mut worker = queue.worker();
    let got = worker.poll(SHORT).unwrap();
    assert_eq!(got.len(), 60, "one poll reads across segments");
    // Leased, not acknowledged: nothing goes.
    assert_eq!(log.maintain().unwrap().segments_deleted, 0);
    // Acknowledged but not yet persisted: still nothing (a crash would
    // redeliver those records, so they must stay).
    worker.ack_all(&got).unwrap();
    assert_eq!(log.maintain().unwrap().segments_deleted, 0);
    worker.commit().unwrap();
    assert!(log.maintain().unwrap().segments_deleted > 0);
    assert!(p.log_start_offset() > 0);
}

#[test]
fn backpressure_blocks_then_fails_and_writes_nothing() {
    let dir = TempDir::new("consumed-backpressure");
    let log = open(&dir);
    log.create_topic("t", topic(&["slow"]).max_unconsumed_bytes(Some(2048)))
        .unwrap();
    let mut producer = log.producer("t").unwrap();
    producer.set_max_block(Duration::from_millis(50));
    let mut sent = 0;
    let err = loop {
        match producer.send(Record::new(vec![b'x'; 200])) {
            Ok(_) => sent += 1,
            Err(e) => break e,
        }
        assert!(sent < 1000, "back-pressure never kicked in");
    };
    match err {
        Error::Backpressure {
            unconsumed_bytes,
            max,
            ..
        } => assert!(unconsumed_bytes >= max && max == 2048),
        other => panic!("expected Backpressure, got {other:?}"),
    }
    let p = log.topic("t").unwrap().partition(0).unwrap().clone();
    assert_eq!(p.log_end_offset(), sent, "the refused send wrote nothing");
    let batch = [Record::new("a"), Record::new("b")];
    assert!(matches!(
        producer.send_batch(&batch),
        Err(Error::Backpressure { .. })
    ));
    assert_eq!(p.log_end_offset(), sent);
}

#[test]
fn a_blocked_send_resumes_when_the_consumer_catches_up() {
    let dir = TempDir::new("consumed-resume");
    let log = open(&dir);
    log.create_topic("t", topic(&["slow"]).max_unconsumed_bytes(Some(2048)))
        .unwrap();
    let mut producer = log.producer("t").unwrap();
    producer.set_max_block(Duration::from_millis(10));
    while producer.send(Record::new(vec![b'x'; 200])).is_ok() {}
    let end = log
        .topic("t")
        .unwrap()
        .partition(0)
        .unwrap()
        .log_end_offset();
    // Now a send that may wait long; the group catches up meanwhile.
    producer.set_max_block(Duration::from_secs(60));
    let catch_up = {
        let log = log.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            commit(&log, "slow", end);
        })
    };
    let meta = producer.send(Record::new("after")).unwrap();
    catch_up.join().unwrap();
    assert_eq!(meta.offset, end);
}

#[test]
fn back_pressure_needs_named_consumers() {
    let dir = TempDir::new("consumed-config");
    let log = open(&dir);
    let bad = TopicConfig::new(1).max_unconsumed_bytes(Some(1 << 20));
    assert!(matches!(
        log.create_topic("t", bad),
        Err(Error::InvalidConfig { .. })
    ));
    let bad = TopicConfig::new(1).consumers(["a,b"]);
    assert!(matches!(
        log.create_topic("t", bad),
        Err(Error::InvalidConfig { .. })
    ));
    // The settings survive reopen.
    let good = topic(&["a", "b.c"]).max_unconsumed_bytes(Some(1 << 20));
    log.create_topic("t", good.clone()).unwrap();
    log.close().unwrap();
    drop(log);
    let log = open(&dir);
    assert_eq!(log.topic("t").unwrap().config(), &good);
}

/// Regression: the maintenance pass asked for the consumed floor while
/// holding a partition that `delete_topic` waited for under the topics
/// lock the floor lookup then waited for (a deadlock, seen in CI).
#[test]
fn deleting_topics_while_maintenance_runs_does_not_deadlock() {
    let dir = TempDir::new("consumed-delete-race");
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let worker = {
        let log = log.clone();
        std::thread::spawn(move || {
            for round in 0..60 {
                log.create_topic("t", topic(&["g"])).unwrap();
                let mut m = ConsumerGroup::join(&log, "g", &["t"], GroupConfig::default()).unwrap();
                fill(&log, "t", 40); // rolls several times: each seal wakes maintenance
                m.poll(SHORT).unwrap();
                m.commit().unwrap();
                drop(m);
                log.delete_topic("t").unwrap();
                let _ = round;
            }
            done_tx.send(()).unwrap();
        })
    };
    done_rx
        .recv_timeout(Duration::from_secs(120))
        .expect("create/delete rounds stalled: deadlock?");
    worker.join().unwrap();
}
