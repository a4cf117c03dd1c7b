//! Concurrency stress: 8 producer threads, 3 consumer groups of 3 members
//! (members leaving and rejoining at random) and a work queue with 3
//! workers, over one topic. Per group every record is processed at least
//! once, in order within each member's run on a partition; after the final
//! commits nothing is delivered again; the queue acknowledges every record.
//! A watchdog fails the test if progress stops (a deadlock).
//!
//! Records: `LOGBUS_STRESS_RECORDS` (default 10,000,000).

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::TempDir;
use logbus::{
    ConsumerGroup, GroupConfig, Log, LogConfig, QueueConfig, Record, TopicConfig, WorkQueue,
};

const PARTITIONS: u32 = 8;
const PRODUCERS: u64 = 8;
const GROUPS: usize = 3;
const MEMBERS: usize = 3;
const WORKERS: usize = 3;

/// One bit per offset, per partition: which records a consumer saw.
struct Seen {
    bits: Vec<Mutex<Vec<u64>>>,
    distinct: AtomicU64,
}

impl Seen {
    fn new(per_partition: u64) -> Seen {
        let words = per_partition.div_ceil(64) as usize + 1;
        Seen {
            bits: (0..PARTITIONS)
                .map(|_| Mutex::new(vec![0; words]))
                .collect(),
            distinct: AtomicU64::new(0),
        }
    }

    /// Marks offsets of one partition; counts the new ones.
    fn mark(&self, partition: u32, offsets: &[u64]) {
        let mut bits = self.bits[partition as usize].lock().unwrap();
        let mut fresh = 0;
        for &o in offsets {
            let (w, b) = ((o / 64) as usize, o % 64);
            if w >= bits.len() {
                bits.resize(w + 1, 0);
            }
            if bits[w] & (1 << b) == 0 {
                bits[w] |= 1 << b;
                fresh += 1;
            }
        }
        self.distinct.fetch_add(fresh, Ordering::Relaxed);
    }
}

#[test]
fn producers_groups_and_a_work_queue_under_churn() {
    let total: u64 = std::env::var("LOGBUS_STRESS_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let per_producer = total / PRODUCERS;
    let total = per_producer * PRODUCERS;
    let dir = TempDir::new("stress");
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    log.create_topic("s", TopicConfig::new(PARTITIONS).segment_bytes(64 << 20))
        .unwrap();
    let progress = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let (progress, done) = (progress.clone(), done.clone());
        std::thread::spawn(move || {
            let mut last = (progress.load(Ordering::SeqCst), Instant::now());
            while !done.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(200));
                let now = progress.load(Ordering::SeqCst);
                if now != last.0 {
                    last = (now, Instant::now());
                } else if last.1.elapsed() > Duration::from_secs(60) {
                    eprintln!("watchdog: no progress for 60 s; aborting (deadlock?)");
                    std::process::abort();
                }
            }
        })
    };

    let producers: Vec<_> = (0..PRODUCERS)
        .map(|w| {
            let (log, progress) = (log.clone(), progress.clone());
            std::thread::spawn(move || {
                let producer = log.producer("s").unwrap();
                let mut sent = 0;
                while sent < per_producer {
                    let n = (per_producer - sent).min(1000);
                    let batch: Vec<Record> = (sent..sent + n)
                        .map(|i| Record::new(format!("{w}:{i}")).partition(((w + i) % 8) as u32))
                        .collect();
                    producer.send_batch(&batch).unwrap();
                    sent += n;
                    progress.fetch_add(n, Ordering::SeqCst);
                }
            })
        })
        .collect();

    let seen: Arc<Vec<Seen>> = Arc::new(
        (0..GROUPS)
            .map(|_| Seen::new(total / u64::from(PARTITIONS)))
            .collect(),
    );
    let mut consumers = Vec::new();
    for g in 0..GROUPS {
        for m in 0..MEMBERS {
            let (log, seen, done, progress) =
                (log.clone(), seen.clone(), done.clone(), progress.clone());
            consumers.push(std::thread::spawn(move || {
                let mut rng = common::Rng((g * 10 + m) as u64 + 7);
                while !done.load(Ordering::SeqCst) {
                    let cfg = GroupConfig::default();
                    let mut member =
                        ConsumerGroup::join(&log, &format!("g{g}"), &["s"], cfg).unwrap();
                    // Where each owned partition's previous poll ended, to check
                    // order across polls while the member keeps it.
                    let mut last: HashMap<u32, u64> = HashMap::new();
                    let mut owned = member.assignment();
                    let polls = 20 + rng.below(400);
                    for _ in 0..polls {
                        if done.load(Ordering::SeqCst) {
                            break;
                        }
                        let records = member.poll(Duration::from_millis(5)).unwrap();
                        let now_owned = member.assignment();
                        if now_owned != owned {
                            last.clear(); // a rebalance: positions may restart at commits
                            owned = now_owned;
                        }
                        let mut by_part: HashMap<u32, Vec<u64>> = HashMap::new();
                        for r in &records {
                            by_part.entry(r.partition).or_default().push(r.offset);
                        }
                        for (p, offsets) in by_part {
                            assert!(
                                offsets.windows(2).all(|w| w[1] == w[0] + 1),
                                "group {g}: partition {p} out of order within a poll"
                            );
                            if let Some(&prev) = last.get(&p) {
                                assert_eq!(
                                    offsets[0],
                                    prev + 1,
                                    "group {g}: partition {p} skipped or repeated between polls"
                                );
                            }
                            last.insert(p, offsets[offsets.len() - 1]);
                            seen[g].mark(p, &offsets);
                        }
                        progress.fetch_add(records.len() as u64, Ordering::SeqCst);
                    }
                    // Auto-commit on leave (and on every revocation).
                    member.leave().unwrap();
                }
            }));
        }
    }

    let queue = WorkQueue::open(&log, "stress-q", "s", QueueConfig::default()).unwrap();
    let acked = Arc::new(Seen::new(total / u64::from(PARTITIONS)));
    let queue_done = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (mut worker, acked, stop, progress) = (
                queue.worker(),
                acked.clone(),
                queue_done.clone(),
                progress.clone(),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let jobs = worker.poll(Duration::from_millis(5)).unwrap();
                    worker.ack_all(&jobs).unwrap();
                    for d in &jobs {
                        acked.mark(d.record.partition, &[d.record.offset]);
                    }
                    progress.fetch_add(jobs.len() as u64, Ordering::SeqCst);
                }
                worker.commit().unwrap();
            })
        })
        .collect();

    for p in producers {
        p.join().unwrap();
    }
    let give_up = Instant::now() + Duration::from_secs(600);
    while seen
        .iter()
        .any(|s| s.distinct.load(Ordering::SeqCst) < total)
        || acked.distinct.load(Ordering::SeqCst) < total
    {
        assert!(Instant::now() < give_up, "consumers did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
    done.store(true, Ordering::SeqCst);
    queue_done.store(true, Ordering::SeqCst);
    for c in consumers {
        c.join().unwrap();
    }
    for w in workers {
        w.join().unwrap();
    }
    watchdog.join().unwrap();
    let written: u64 = log
        .topic("s")
        .unwrap()
        .partitions()
        .iter()
        .map(|p| p.log_end_offset())
        .sum();
    assert_eq!(written, total);
    // After the final commits, a new member of each group reads nothing.
    for g in 0..GROUPS {
        let cfg = GroupConfig::default().auto_commit(false);
        let mut m = ConsumerGroup::join(&log, &format!("g{g}"), &["s"], cfg).unwrap();
        let mut again = 0;
        let give_up = Instant::now() + Duration::from_secs(20);
        while m.assignment().len() < PARTITIONS as usize {
            assert!(Instant::now() < give_up);
            again += m.poll(Duration::from_millis(5)).unwrap().len();
        }
        again += m.poll(Duration::from_millis(20)).unwrap().len();
        assert_eq!(
            again, 0,
            "group {g} re-delivered records after its final commit"
        );
    }
    let backlog = queue.backlog();
    assert_eq!((backlog.available, backlog.leased), (0, 0));
}
