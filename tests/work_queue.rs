//! Work queues: load sharing with one lease per record, ack / release /
//! reject, lease expiry, a dropped worker, the delivery limit and the
//! dead-letter topic, and state that survives reopen and a killed process.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::TempDir;
use logbus::{
    DLQ_DELIVERIES, DLQ_REASON, DLQ_SOURCE, Delivery, Error, Log, LogConfig, QueueConfig, Record,
    TopicConfig, WorkQueue, Worker,
};

const SHORT: Duration = Duration::from_millis(20);

fn open(dir: &std::path::Path) -> Log {
    Log::open(dir, LogConfig::default()).unwrap()
}

fn produce(log: &Log, topic: &str, n: usize) {
    let records: Vec<Record> = (0..n)
        .map(|i| Record::new(format!("job-{i}")).key(format!("{i}")))
        .collect();
    log.producer(topic).unwrap().send_batch(&records).unwrap();
}

/// Polls until `n` deliveries arrived (panics after a generous timeout).
fn take(worker: &mut Worker, n: usize) -> Vec<Delivery> {
    let give_up = Instant::now() + Duration::from_secs(20);
    let mut got = Vec::new();
    while got.len() < n {
        assert!(
            Instant::now() < give_up,
            "only {} of {n}: {:?}",
            got.len(),
            got.iter()
                .map(|d: &Delivery| (d.record.partition, d.record.offset))
                .collect::<Vec<_>>()
        );
        got.extend(worker.poll(SHORT).unwrap());
    }
    got
}

/// How many records of `topic` have an odd offset (the tests ack the even ones).
fn odd_offsets(log: &Log, topic: &str) -> usize {
    let t = log.topic(topic).unwrap();
    t.partitions()
        .iter()
        .map(|p| (p.log_end_offset() / 2) as usize)
        .sum()
}

fn header<'a>(r: &'a logbus::ConsumerRecord, key: &str) -> &'a [u8] {
    r.headers
        .iter()
        .find(|h| h.key == key)
        .and_then(|h| h.value.as_deref())
        .unwrap_or_else(|| panic!("no header {key}"))
}

#[test]
fn workers_share_the_load_and_each_record_is_delivered_once() {
    let dir = TempDir::new("queue-share");
    let log = open(dir.path());
    log.create_topic("jobs", TopicConfig::new(4)).unwrap();
    produce(&log, "jobs", 20_000);
    let queue = WorkQueue::open(&log, "q", "jobs", QueueConfig::default()).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (mut w, seen) = (queue.worker(), Arc::clone(&seen));
            std::thread::spawn(move || {
                let mut mine = 0;
                loop {
                    let got = w.poll(Duration::from_millis(50)).unwrap();
                    if got.is_empty() {
                        return mine;
                    }
                    mine += got.len();
                    w.ack_all(&got).unwrap();
                    let mut seen = seen.lock().unwrap();
                    seen.extend(got.iter().map(|d| (d.record.partition, d.record.offset)));
                }
            })
        })
        .collect();
    let per_worker: Vec<usize> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    let seen = seen.lock().unwrap();
    let unique: BTreeSet<_> = seen.iter().collect();
    assert_eq!(
        (seen.len(), unique.len()),
        (20_000, 20_000),
        "{per_worker:?}"
    );
    assert_eq!(queue.backlog(), logbus::QueueBacklog::default());
}

#[test]
fn a_released_record_is_redelivered_with_its_count() {
    let dir = TempDir::new("queue-release");
    let log = open(dir.path());
    log.create_topic("jobs", TopicConfig::new(1)).unwrap();
    produce(&log, "jobs", 1);
    let queue = WorkQueue::open(&log, "q", "jobs", QueueConfig::default()).unwrap();
    let (mut a, mut b) = (queue.worker(), queue.worker());
    let first = take(&mut a, 1).remove(0);
    assert_eq!(first.delivery_count, 1);
    assert!(
        b.poll(SHORT).unwrap().is_empty(),
        "leased to a: nobody else gets it"
    );
    a.release(&first).unwrap();
    let again = take(&mut b, 1).remove(0);
    assert_eq!((again.record.offset, again.delivery_count), (0, 2));
    // a's old delivery cannot settle it any more.
    assert!(matches!(a.ack(&first), Err(Error::NotLeased { .. })));
    b.ack(&again).unwrap();
}

#[test]
fn an_expired_lease_goes_to_another_worker() {
    let dir = TempDir::new("queue-expiry");
    let log = open(dir.path());
    log.create_topic("jobs", TopicConfig::new(1)).unwrap();
    produce(&log, "jobs", 3);
    let config = QueueConfig::default().lease_timeout(Duration::from_millis(100));
    let queue = WorkQueue::open(&log, "q", "jobs", config).unwrap();
    let (mut slow, mut fast) = (queue.worker(), queue.worker());
    let held = take(&mut slow, 3);
    // `fast` waits inside poll and is woken when the leases expire.
    let again = take(&mut fast, 3);
    assert!(again.iter().all(|d| d.delivery_count == 2));
    let err = slow.ack(&held[0]).unwrap_err();
    assert!(matches!(err, Error::NotLeased { offset: 0, .. }), "{err:?}");
    fast.ack_all(&again).unwrap();
}

#[test]
fn a_dropped_worker_gives_its_records_back() {
    let dir = TempDir::new("queue-drop");
    let log = open(dir.path());
    log.create_topic("jobs", TopicConfig::new(2)).unwrap();
    produce(&log, "jobs", 10);
    let queue = WorkQueue::open(&log, "q", "jobs", QueueConfig::default()).unwrap();
    let mut dies = queue.worker();
    let held = take(&mut dies, 10);
    let mut survivor = queue.worker();
    let survivor_thread = std::thread::spawn(move || {
        let got = take(&mut survivor, 10);
        survivor.ack_all(&got).unwrap();
        got
    });
    std::thread::sleep(Duration::from_millis(30));
    drop(dies); // e.g. its thread panicked
    let got = survivor_thread.join().unwrap();
    let want: BTreeSet<_> = held
        .iter()
        .map(|d| (d.record.partition, d.record.offset))
        .collect();
    let have: BTreeSet<_> = got
        .iter()
        .map(|d| (d.record.partition, d.record.offset))
        .collect();
    assert_eq!(want, have);
}

#[test]
fn rejected_and_undeliverable_records_go_to_the_dead_letter_topic() {
    let dir = TempDir::new("queue-dlq");
    let log = open(dir.path());
    log.create_topic("jobs", TopicConfig::new(1)).unwrap();
    produce(&log, "jobs", 2);
    let config = QueueConfig::default().max_deliveries(3);
    let queue = WorkQueue::open(&log, "q", "jobs", config).unwrap();
    let mut w = queue.worker();
    let got = take(&mut w, 2);
    let (poison, bad) = (&got[0], &got[1]);
    w.reject(bad).unwrap();
    // The poison record fails three times.
    w.release(poison).unwrap();
    for count in 2..=3 {
        let again = take(&mut w, 1).remove(0);
        assert_eq!((again.record.offset, again.delivery_count), (0, count));
        w.release(&again).unwrap();
    }
    assert!(w.poll(SHORT).unwrap().is_empty(), "no fourth delivery");
    let dlq = log.topic("q.dlq").unwrap();
    let letters = dlq.partition(0).unwrap().read(0, 10).unwrap();
    assert_eq!(letters.len(), 2);
    let by_reason: BTreeMap<Vec<u8>, &logbus::ConsumerRecord> = letters
        .iter()
        .map(|r| (header(r, DLQ_REASON).to_vec(), r))
        .collect();
    let rejected = by_reason[&b"rejected"[..]];
    assert_eq!(rejected.value.as_deref(), Some(&b"job-1"[..]));
    assert_eq!(header(rejected, DLQ_SOURCE), b"jobs/0/1");
    let exhausted = by_reason[&b"max-deliveries"[..]];
    assert_eq!(exhausted.value.as_deref(), Some(&b"job-0"[..]));
    assert_eq!(header(exhausted, DLQ_DELIVERIES), b"3");
    assert_eq!(exhausted.key.as_deref(), Some(&b"0"[..]));
}

#[test]
fn queue_state_survives_close_and_reopen() {
    let dir = TempDir::new("queue-reopen");
    {
        let log = open(dir.path());
        log.create_topic("jobs", TopicConfig::new(2)).unwrap();
        produce(&log, "jobs", 100);
        let queue = WorkQueue::open(&log, "q", "jobs", QueueConfig::default()).unwrap();
        let mut w = queue.worker();
        let got = take(&mut w, 100);
        let acked: Vec<&Delivery> = got.iter().filter(|d| d.record.offset % 2 == 0).collect();
        w.ack_all(acked).unwrap();
        drop(w); // the rest is released
        drop(queue);
        log.close().unwrap();
    }
    let log = open(dir.path());
    let queue = WorkQueue::open(&log, "q", "jobs", QueueConfig::default()).unwrap();
    let mut w = queue.worker();
    let got = take(&mut w, odd_offsets(&log, "jobs"));
    assert!(
        got.iter()
            .all(|d| d.record.offset % 2 == 1 && d.delivery_count == 2)
    );
    assert!(w.poll(SHORT).unwrap().is_empty());
}

/// The child half of `acked_records_stay_acked_after_a_killed_process`.
fn child_acks_half_then_waits(dir: &str) {
    let log = Log::open(dir, LogConfig::default()).unwrap();
    log.create_topic("jobs", TopicConfig::new(3)).unwrap();
    produce(&log, "jobs", 300);
    let queue = WorkQueue::open(&log, "q", "jobs", QueueConfig::default()).unwrap();
    let mut w = queue.worker();
    let got = take(&mut w, 300);
    for d in &got {
        if d.record.offset % 2 == 0 {
            w.ack(d).unwrap();
        }
    }
    w.commit().unwrap();
    println!("committed");
    std::thread::sleep(Duration::from_secs(600));
}

#[test]
fn acked_records_stay_acked_after_a_killed_process() {
    if let Ok(dir) = std::env::var("LOGBUS_QUEUE_CHILD_DIR") {
        child_acks_half_then_waits(&dir);
        return;
    }
    let dir = TempDir::new("queue-kill");
    let mut child = common::reexec("acked_records_stay_acked_after_a_killed_process")
        .env("LOGBUS_QUEUE_CHILD_DIR", dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    // The harness may print "test <name> ... " on the same line first.
    let committed = stdout.lines().any(|l| l.unwrap().ends_with("committed"));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(committed);
    let log = open(dir.path());
    assert!(!log.recovery_report().clean_shutdown);
    let queue = WorkQueue::open(&log, "q", "jobs", QueueConfig::default()).unwrap();
    let mut w = queue.worker();
    let unacked = odd_offsets(&log, "jobs");
    let got = take(&mut w, unacked);
    // Exactly the un-acked ones, each with its first delivery counted.
    let offsets: BTreeSet<(u32, u64)> = got
        .iter()
        .map(|d| (d.record.partition, d.record.offset))
        .collect();
    assert_eq!(offsets.len(), unacked);
    assert!(
        got.iter()
            .all(|d| d.record.offset % 2 == 1 && d.delivery_count == 2)
    );
    assert!(w.poll(SHORT).unwrap().is_empty());
}

#[test]
fn one_queue_name_is_one_queue() {
    let dir = TempDir::new("queue-registry");
    let log = open(dir.path());
    log.create_topic("jobs", TopicConfig::new(1)).unwrap();
    log.create_topic("other", TopicConfig::new(1)).unwrap();
    produce(&log, "jobs", 1);
    let q1 = WorkQueue::open(&log, "q", "jobs", QueueConfig::default()).unwrap();
    let q2 = WorkQueue::open(&log, "q", "jobs", QueueConfig::default()).unwrap();
    let mut a = q1.worker();
    take(&mut a, 1);
    assert!(
        q2.worker().poll(SHORT).unwrap().is_empty(),
        "leased through q1"
    );
    let err = WorkQueue::open(&log, "q", "other", QueueConfig::default()).unwrap_err();
    assert!(matches!(err, Error::InvalidConfig { .. }), "{err:?}");
    for bad in ["", "../x", "a/b"] {
        let err = WorkQueue::open(&log, bad, "jobs", QueueConfig::default()).unwrap_err();
        assert!(matches!(err, Error::InvalidName { .. }), "{bad:?}: {err:?}");
    }
    let err = WorkQueue::open(&log, "q2", "missing", QueueConfig::default()).unwrap_err();
    assert!(matches!(err, Error::UnknownTopic { .. }), "{err:?}");
}

#[test]
fn poll_wakes_on_new_records_and_on_wakeup() {
    let dir = TempDir::new("queue-wake");
    let log = open(dir.path());
    log.create_topic("jobs", TopicConfig::new(2)).unwrap();
    let queue = WorkQueue::open(&log, "q", "jobs", QueueConfig::default()).unwrap();
    let mut w = queue.worker();
    let producer_log = log.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        produce(&producer_log, "jobs", 1);
    });
    let got = w.poll(Duration::from_secs(60)).unwrap();
    t.join().unwrap();
    assert_eq!(got.len(), 1);
    let waker = w.waker();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        waker.wake();
    });
    assert!(matches!(
        w.poll(Duration::from_secs(60)),
        Err(Error::Wakeup)
    ));
    t.join().unwrap();
}

/// `Worker::set_max_poll_records` bounds that worker's polls (it was once
/// ignored in favour of the queue's setting), and new records decoded
/// straight into deliveries carry their record and a first delivery count.
#[test]
fn a_workers_own_max_poll_records_bounds_its_polls() {
    let dir = TempDir::new("queue-max-poll");
    let log = open(dir.path());
    log.create_topic("jobs", TopicConfig::new(2)).unwrap();
    produce(&log, "jobs", 100);
    let config = QueueConfig::default().max_poll_records(40);
    let queue = WorkQueue::open(&log, "q", "jobs", config).unwrap();
    let mut small = queue.worker();
    small.set_max_poll_records(3);
    let first = small.poll(SHORT).unwrap();
    assert_eq!(first.len(), 3, "97 more were available");
    let mut big = queue.worker();
    let second = big.poll(SHORT).unwrap();
    assert_eq!(second.len(), 40, "the queue's setting for the other worker");
    let backlog = queue.backlog();
    assert_eq!((backlog.leased, backlog.available), (43, 57));
    let mut all: Vec<&Delivery> = first.iter().chain(&second).collect();
    all.sort_by_key(|d| (d.record.partition, d.record.offset));
    all.dedup_by_key(|d| (d.record.partition, d.record.offset));
    assert_eq!(all.len(), 43, "no record leased twice");
    for d in &all {
        assert_eq!(d.delivery_count, 1);
        assert_eq!(&*d.record.topic, "jobs");
        let key: usize = std::str::from_utf8(d.record.key.as_deref().unwrap())
            .unwrap()
            .parse()
            .unwrap();
        let value = format!("job-{key}");
        assert_eq!(d.record.value.as_deref(), Some(value.as_bytes()));
    }
    small.ack_all(&first).unwrap();
    big.ack_all(&second).unwrap();
    assert_eq!(queue.backlog().available, 57);
}

/// One `ack` per record (its own fast path): it settles exactly the lease
/// it names, refuses a second ack, another worker's delivery and a stale
/// delivery count without touching the lease, and what it acked stays done
/// across a reopen while the rest comes back.
#[test]
fn ack_settles_exactly_its_own_lease() {
    let dir = TempDir::new("queue-ack-one");
    let mut acked = BTreeSet::new();
    {
        let log = open(dir.path());
        log.create_topic("jobs", TopicConfig::new(2)).unwrap();
        produce(&log, "jobs", 40);
        let queue = WorkQueue::open(&log, "q", "jobs", QueueConfig::default()).unwrap();
        let (mut a, mut b) = (queue.worker(), queue.worker());
        a.set_max_poll_records(20);
        let mine = take(&mut a, 20);
        let theirs = take(&mut b, 20);
        // `b` cannot ack `a`'s lease; `a` still can afterwards.
        let err = b.ack(&mine[0]).unwrap_err();
        assert!(matches!(err, Error::NotLeased { .. }), "{err:?}");
        a.ack(&mine[0]).unwrap();
        acked.insert((mine[0].record.partition, mine[0].record.offset));
        let again = a.ack(&mine[0]).unwrap_err();
        assert!(matches!(again, Error::NotLeased { .. }), "{again:?}");
        // A delivery whose count is not the lease's (an older delivery of
        // the record) is refused, and leaves the lease alone.
        let mut stale = mine[1].clone();
        stale.delivery_count += 1;
        assert!(matches!(a.ack(&stale), Err(Error::NotLeased { .. })));
        for (w, ds) in [(&mut a, &mine[1..]), (&mut b, &theirs[..])] {
            for d in ds.iter().filter(|d| d.record.offset % 2 == 0) {
                w.ack(d).unwrap();
                acked.insert((d.record.partition, d.record.offset));
            }
        }
        let backlog = queue.backlog();
        assert_eq!(
            (backlog.leased, backlog.available),
            (40 - acked.len() as u64, 0)
        );
        a.commit().unwrap();
        drop((a, b));
        drop(queue);
        log.close().unwrap();
    }
    let log = open(dir.path());
    let queue = WorkQueue::open(&log, "q", "jobs", QueueConfig::default()).unwrap();
    let mut w = queue.worker();
    let got = take(&mut w, 40 - acked.len());
    let back: BTreeSet<(u32, u64)> = got
        .iter()
        .map(|d| (d.record.partition, d.record.offset))
        .collect();
    assert_eq!(back.len(), got.len());
    assert!(back.is_disjoint(&acked), "an acked record came back");
    assert!(w.poll(SHORT).unwrap().is_empty());
}

/// Acks made one by one are persisted by `commit` even when nothing else
/// changed the queue afterwards (no lease left for a dropped worker to
/// give back): after a reopen none of the records comes back.
#[test]
fn single_acks_alone_are_persisted_by_commit() {
    let dir = TempDir::new("queue-ack-commit");
    {
        let log = open(dir.path());
        log.create_topic("jobs", TopicConfig::new(1)).unwrap();
        produce(&log, "jobs", 10);
        let queue = WorkQueue::open(&log, "q", "jobs", QueueConfig::default()).unwrap();
        let mut w = queue.worker();
        for d in take(&mut w, 10) {
            w.ack(&d).unwrap();
        }
        w.commit().unwrap();
        drop(w);
        drop(queue);
        log.close().unwrap();
    }
    let log = open(dir.path());
    let queue = WorkQueue::open(&log, "q", "jobs", QueueConfig::default()).unwrap();
    assert!(queue.worker().poll(SHORT).unwrap().is_empty());
}

/// Polls fetch and decode new records outside the queue's lock (one poll
/// per partition at a time): 4 workers with small polls, each record acked
/// on its own, while a producer keeps appending, still see every record
/// exactly once and leave nothing behind.
#[test]
fn workers_acking_each_record_while_records_arrive_see_each_once() {
    const TOTAL: usize = 12_000;
    let dir = TempDir::new("queue-concurrent-acks");
    let log = open(dir.path());
    log.create_topic("jobs", TopicConfig::new(3)).unwrap();
    let config = QueueConfig::default().max_poll_records(7);
    let queue = WorkQueue::open(&log, "q", "jobs", config).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let acked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    std::thread::scope(|s| {
        s.spawn(|| {
            for chunk in 0..(TOTAL / 100) {
                let records: Vec<Record> = (0..100)
                    .map(|i| Record::new(format!("job-{}", chunk * 100 + i)))
                    .collect();
                log.producer("jobs").unwrap().send_batch(&records).unwrap();
            }
        });
        for _ in 0..4 {
            let (mut w, seen, acked) = (queue.worker(), Arc::clone(&seen), Arc::clone(&acked));
            s.spawn(move || {
                let give_up = Instant::now() + Duration::from_secs(60);
                while acked.load(std::sync::atomic::Ordering::SeqCst) < TOTAL {
                    assert!(Instant::now() < give_up, "stuck");
                    let got = w.poll(SHORT).unwrap();
                    assert!(got.len() <= 7);
                    for d in &got {
                        assert_eq!(d.delivery_count, 1, "nothing expires or is released here");
                        w.ack(d).unwrap();
                    }
                    acked.fetch_add(got.len(), std::sync::atomic::Ordering::SeqCst);
                    let mut seen = seen.lock().unwrap();
                    seen.extend(got.iter().map(|d| (d.record.partition, d.record.offset)));
                }
            });
        }
    });
    let seen = seen.lock().unwrap();
    let unique: BTreeSet<_> = seen.iter().collect();
    assert_eq!((seen.len(), unique.len()), (TOTAL, TOTAL));
    assert_eq!(queue.backlog(), logbus::QueueBacklog::default());
}
