//! Consumer-group and work-queue figures: a group of 4 against one
//! consumer, join → assignment latency, offset commits per second, and a
//! work queue with 4 workers acking every record.
//!
//! ```text
//! cargo run --release --example group_bench [-- --records N --reps R]
//! ```
//!
//! Each row is the median of `--reps` runs (default 3); ratios are taken
//! within one process run. Timing lives here, never in tests.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use logbus::{
    ConsumerConfig, ConsumerGroup, GroupConfig, Log, LogConfig, QueueConfig, Record, TopicConfig,
    TopicPartition, WorkQueue,
};

const PARTITIONS: u32 = 8;

fn main() {
    let mut records: u64 = 4_000_000;
    let mut reps = 3;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let value: u64 = args
            .next()
            .and_then(|v| v.replace('_', "").parse().ok())
            .unwrap_or_else(|| panic!("{a} needs a number"));
        match a.as_str() {
            "--records" => records = value,
            "--reps" => reps = value as usize,
            _ => panic!("unknown option {a}"),
        }
    }
    let dir = std::env::temp_dir().join(format!("logbus-group-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let log = Log::open(&dir, LogConfig::default()).expect("open");
    log.create_topic("bench", TopicConfig::new(PARTITIONS))
        .expect("create");
    fill(&log, records);

    let mut single = Vec::new();
    let mut group = Vec::new();
    let mut join = Vec::new();
    let mut commits = Vec::new();
    let mut commits8 = Vec::new();
    let mut queue = Vec::new();
    for rep in 0..reps {
        queue.push(work_queue(&log, records, 4, rep));
        single.push(one_consumer(&log, records));
        group.push(group_of(&log, records, 4, rep));
        join.push(join_latency(&log, 200, rep));
        commits.push(commit_rate(&log, 200_000, 1, rep));
        commits8.push(commit_rate(&log, 100_000, PARTITIONS, rep));
    }
    let single_rate = median(&mut single);
    let group_rate = median(&mut group);
    let mut p50s: Vec<f64> = join.iter().map(|j| j.0).collect();
    let mut p99s: Vec<f64> = join.iter().map(|j| j.1).collect();
    println!(
        "# logbus consumer groups, {records} x 100 B records over {PARTITIONS} partitions, medians of {reps}"
    );
    println!("{:<52} {:>14} {:>8}", "workload", "figure", "x");
    println!(
        "{:<52} {:>10.2} M/s {:>8}",
        "one Consumer assigned all 8 partitions",
        single_rate / 1e6,
        "1.00"
    );
    println!(
        "{:<52} {:>10.2} M/s {:>8.2}",
        "ConsumerGroup of 4 members (4 threads)",
        group_rate / 1e6,
        group_rate / single_rate
    );
    println!(
        "{:<52} {:>9.0} µs p50 / {:.0} µs p99",
        "join -> assignment (3 members polling)",
        median(&mut p50s),
        median(&mut p99s)
    );
    println!(
        "{:<52} {:>10.0} k/s",
        "commit_offsets, 1 partition, Durability::Os",
        median(&mut commits) / 1e3
    );
    println!(
        "{:<52} {:>10.0} k/s",
        "commit(), 8 partitions, Durability::Os",
        median(&mut commits8) / 1e3
    );
    let queue_rate = median(&mut queue);
    println!(
        "{:<52} {:>10.2} M/s {:>8.2}",
        "WorkQueue, 4 workers, ack() per record, Os",
        queue_rate / 1e6,
        queue_rate / single_rate
    );
    log.close().expect("close");
    let _ = std::fs::remove_dir_all(&dir);
}

fn fill(log: &Log, records: u64) {
    let producer = log.producer("bench").expect("producer");
    let payload = bytes::Bytes::from_static(&[b'x'; 100]);
    let per = records / u64::from(PARTITIONS);
    for p in 0..PARTITIONS {
        let mut sent = 0;
        while sent < per {
            let n = (per - sent).min(1000);
            let batch: Vec<Record> = (0..n)
                .map(|_| Record::new(payload.clone()).partition(p))
                .collect();
            producer.send_batch(&batch).expect("send");
            sent += n;
        }
    }
}

fn one_consumer(log: &Log, records: u64) -> f64 {
    let mut c = log.consumer(ConsumerConfig::default());
    let all: Vec<TopicPartition> = (0..PARTITIONS)
        .map(|p| TopicPartition::new("bench", p))
        .collect();
    c.assign(&all).expect("assign");
    c.seek_to_beginning(&all).expect("seek");
    let start = Instant::now();
    let mut n = 0u64;
    while n < records / u64::from(PARTITIONS) * u64::from(PARTITIONS) {
        n += c.poll(Duration::from_secs(1)).expect("poll").len() as u64;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Members of a fresh group, each on its own thread, until every record is
/// read. The clock starts once all members own their partitions.
fn group_of(log: &Log, records: u64, members: usize, rep: usize) -> f64 {
    let total = records / u64::from(PARTITIONS) * u64::from(PARTITIONS);
    let read = Arc::new(AtomicU64::new(0));
    let ready = Arc::new(Barrier::new(members + 1));
    let go = Arc::new(Barrier::new(members + 1));
    let group = format!("throughput-{rep}");
    let handles: Vec<_> = (0..members)
        .map(|_| {
            let (log, read, ready, go, group) = (
                log.clone(),
                read.clone(),
                ready.clone(),
                go.clone(),
                group.clone(),
            );
            std::thread::spawn(move || {
                let config = GroupConfig::default().auto_commit(false);
                let mut m = ConsumerGroup::join(&log, &group, &["bench"], config).expect("join");
                let mut early = 0u64;
                let per_member = PARTITIONS as usize / members;
                // Rebalances settle while members poll; count what they read.
                while m.assignment().len() != per_member {
                    early += m.poll(Duration::from_millis(1)).expect("poll").len() as u64;
                }
                read.fetch_add(early, Ordering::SeqCst);
                ready.wait();
                go.wait();
                while read.load(Ordering::SeqCst) < total {
                    let n = m.poll(Duration::from_millis(10)).expect("poll").len() as u64;
                    read.fetch_add(n, Ordering::SeqCst);
                }
                m
            })
        })
        .collect();
    ready.wait();
    let already = read.load(Ordering::SeqCst);
    let start = Instant::now();
    go.wait();
    let members: Vec<ConsumerGroup> = handles
        .into_iter()
        .map(|h| h.join().expect("member"))
        .collect();
    let elapsed = start.elapsed().as_secs_f64();
    drop(members);
    (total - already) as f64 / elapsed
}

/// Three members poll on their own threads; a fourth joins and polls until
/// it owns partitions, then leaves. Returns (p50, p99) in µs.
fn join_latency(log: &Log, joins: usize, rep: usize) -> (f64, f64) {
    let group = format!("join-{rep}");
    let stop = Arc::new(AtomicBool::new(false));
    let pollers: Vec<_> = (0..3)
        .map(|_| {
            let (log, stop, group) = (log.clone(), stop.clone(), group.clone());
            std::thread::spawn(move || {
                let config = GroupConfig::default()
                    .auto_commit(false)
                    .offset_reset(logbus::OffsetReset::Latest);
                let mut m = ConsumerGroup::join(&log, &group, &["bench"], config).expect("join");
                while !stop.load(Ordering::SeqCst) {
                    m.poll(Duration::from_millis(100)).expect("poll");
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let mut micros = Vec::with_capacity(joins);
    for _ in 0..joins {
        let config = GroupConfig::default()
            .auto_commit(false)
            .offset_reset(logbus::OffsetReset::Latest);
        let start = Instant::now();
        let mut m = ConsumerGroup::join(log, &group, &["bench"], config).expect("join");
        while m.assignment().is_empty() {
            m.poll(Duration::from_micros(100)).expect("poll");
        }
        micros.push(start.elapsed().as_secs_f64() * 1e6);
        m.leave().expect("leave");
        std::thread::sleep(Duration::from_millis(2));
    }
    stop.store(true, Ordering::SeqCst);
    for p in pollers {
        p.join().expect("poller");
    }
    micros.sort_by(f64::total_cmp);
    (micros[micros.len() / 2], micros[micros.len() * 99 / 100])
}

/// Commits per second by one member owning `partitions` partitions.
fn commit_rate(log: &Log, commits: u64, partitions: u32, rep: usize) -> f64 {
    let topic = format!("commits-{partitions}-{rep}");
    log.create_topic(&topic, TopicConfig::new(partitions))
        .expect("create");
    let producer = log.producer(&topic).expect("producer");
    for p in 0..partitions {
        producer.send(Record::new("x").partition(p)).expect("send");
    }
    let config = GroupConfig::default().auto_commit(false);
    let mut m = ConsumerGroup::join(
        log,
        &format!("committer-{partitions}-{rep}"),
        &[&topic],
        config,
    )
    .expect("join");
    while m.assignment().len() != partitions as usize {
        m.poll(Duration::from_millis(1)).expect("poll");
    }
    let tps: Vec<(TopicPartition, u64)> = (0..partitions)
        .map(|p| (TopicPartition::new(topic.as_str(), p), 1))
        .collect();
    let start = Instant::now();
    for i in 0..commits {
        let offsets: Vec<(TopicPartition, u64)> =
            tps.iter().map(|(tp, _)| (tp.clone(), i % 2)).collect();
        m.commit_offsets(&offsets).expect("commit");
    }
    let rate = commits as f64 / start.elapsed().as_secs_f64();
    m.leave().expect("leave");
    rate
}

/// `workers` threads take every record from a fresh queue, acking each
/// one with its own `ack` call.
fn work_queue(log: &Log, records: u64, workers: usize, rep: usize) -> f64 {
    let total = records / u64::from(PARTITIONS) * u64::from(PARTITIONS);
    let queue = WorkQueue::open(
        log,
        &format!("bench-q-{rep}"),
        "bench",
        QueueConfig::default(),
    )
    .expect("queue");
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            let (mut worker, done) = (queue.worker(), done.clone());
            std::thread::spawn(move || {
                while done.load(Ordering::SeqCst) < total {
                    let jobs = worker.poll(Duration::from_millis(10)).expect("poll");
                    for job in &jobs {
                        worker.ack(job).expect("ack");
                    }
                    done.fetch_add(jobs.len() as u64, Ordering::SeqCst);
                }
                worker.commit().expect("commit");
            })
        })
        .collect();
    for h in handles {
        h.join().expect("worker");
    }
    total as f64 / start.elapsed().as_secs_f64()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
