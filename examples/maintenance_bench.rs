//! Maintenance figures, printed as a table (no timing assertions):
//!
//! 1. compaction throughput: 100-byte records, 10 % distinct keys, all in
//!    sealed segments; MB/s of input (bytes of the log before cleaning);
//! 2. retention: time to delete expired segments (O(1) each);
//! 3. idle CPU: a log with 100 topics and the maintenance thread running,
//!    process CPU time over a wall-clock window (getrusage);
//! 4. idle consumers: the same with 4 consumer threads blocked in `poll`;
//! 5. a trickle: one record every 1 ms / 200 µs / 50 µs, the consumer
//!    thread's CPU time with the default adaptive spin and with none.
//!
//! `cargo run --release --example maintenance_bench [records] [idle_secs]`
//! (defaults: 2000000 records, 10 s). Segments are flushed before the
//! timed part (as the background flusher does seconds after a roll);
//! `BENCH_NO_FLUSH=1` leaves them unsynced, so the timed part includes
//! their fsync.

#[path = "common/mod.rs"]
mod common;
use common::thread_cpu;

use std::sync::Arc;
use std::time::{Duration, Instant};

use logbus::{
    CleanupPolicy, ConsumerConfig, Log, LogConfig, ManualClock, Record, TopicConfig, TopicPartition,
};

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("logbus-bench-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn cpu_time() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we pass; no other
    // preconditions.
    #[allow(unsafe_code)]
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn compaction(records: u64) {
    let dir = temp_dir("compact");
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let config = LogConfig::default()
        .clock(clock.clone())
        .background_maintenance(false);
    let log = Log::open(&dir, config).expect("open");
    let topic = log
        .create_topic(
            "c",
            TopicConfig::new(1)
                .segment_bytes(64 << 20)
                .cleanup_policy(CleanupPolicy::Compact)
                .min_cleanable_dirty_ratio(0.0),
        )
        .expect("create");
    let p = topic.partition(0).expect("partition").clone();
    let producer = log.producer("c").expect("producer");
    let keys = records / 10;
    let value = vec![b'v'; 100];
    let mut batch = Vec::with_capacity(500);
    for i in 0..records {
        batch.push(Record::new(value.clone()).key(format!("key-{:09}", i % keys)));
        if batch.len() == 500 {
            producer.send_batch(&batch).expect("send");
            batch.clear();
        }
    }
    if !batch.is_empty() {
        producer.send_batch(&batch).expect("send");
    }
    p.roll().expect("roll");
    // Steady state: the flusher syncs sealed segments seconds after their
    // roll; the cleaner syncs any it finds unsynced (counted if not done here).
    if std::env::var_os("BENCH_NO_FLUSH").is_none() {
        p.flush().expect("flush");
    }
    let before = p.stats();
    let cpu0 = cpu_time();
    let started = Instant::now();
    let summary = log.maintain().expect("maintain");
    let took = started.elapsed();
    let cpu = cpu_time() - cpu0;
    let after = p.stats();
    let stats = log.cleaner_stats();
    assert!(summary.failures.is_empty(), "{:?}", summary.failures);
    let mb = before.size_bytes as f64 / 1e6;
    println!(
        "| compaction | {records} records of 100 B values, {keys} keys | input {mb:.1} MB in {:.0} ms ({:.0} ms CPU) | **{:.0} MB/s** of input ({:.0} MB per CPU-second) | {} -> {} segments, {:.1} MB left, {} passes, removed {} |",
        took.as_secs_f64() * 1e3,
        cpu.as_secs_f64() * 1e3,
        mb / took.as_secs_f64(),
        mb / cpu.as_secs_f64(),
        before.segments,
        after.segments,
        after.size_bytes as f64 / 1e6,
        stats.passes,
        stats.records_removed,
    );
    log.close().expect("close");
    let _ = std::fs::remove_dir_all(&dir);
}

fn retention() {
    let dir = temp_dir("retain");
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let config = LogConfig::default()
        .clock(clock.clone())
        .background_maintenance(false);
    let log = Log::open(&dir, config).expect("open");
    let topic = log
        .create_topic(
            "r",
            TopicConfig::new(1)
                .segment_bytes(8 << 20)
                .retention_ms(Some(1_000)),
        )
        .expect("create");
    let p = topic.partition(0).expect("partition").clone();
    let producer = log.producer("r").expect("producer");
    let batch: Vec<Record> = (0..1000).map(|_| Record::new(vec![b'x'; 1000])).collect();
    for _ in 0..200 {
        producer.send_batch(&batch).expect("send");
    }
    p.roll().expect("roll");
    if std::env::var_os("BENCH_NO_FLUSH").is_none() {
        p.flush().expect("flush");
    }
    let before = p.stats();
    clock.advance(Duration::from_secs(10));
    let started = Instant::now();
    let summary = log.maintain().expect("maintain");
    let took = started.elapsed();
    println!(
        "| retention | {} expired segments, {:.0} MB | deleted in {:.2} ms | {:.1} µs per segment | |",
        summary.segments_deleted,
        before.size_bytes as f64 / 1e6,
        took.as_secs_f64() * 1e3,
        took.as_secs_f64() * 1e6 / summary.segments_deleted.max(1) as f64,
    );
    log.close().expect("close");
    let _ = std::fs::remove_dir_all(&dir);
}

fn idle(secs: u64) {
    let dir = temp_dir("idle");
    let log = Log::open(&dir, LogConfig::default()).expect("open");
    for t in 0..100 {
        let name = format!("topic-{t:03}");
        log.create_topic(&name, TopicConfig::new(1))
            .expect("create");
        log.producer(&name)
            .expect("producer")
            .send(Record::new("x"))
            .expect("send");
    }
    // Let the first passes after the sends run.
    std::thread::sleep(Duration::from_millis(200));
    let cpu0 = cpu_time();
    let wall0 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let cpu = cpu_time() - cpu0;
    let wall = wall0.elapsed();
    println!(
        "| idle | 100 topics, maintenance thread running | {:.1} ms CPU in {:.1} s | **{:.4} % of a core** | whole process (getrusage) |",
        cpu.as_secs_f64() * 1e3,
        wall.as_secs_f64(),
        100.0 * cpu.as_secs_f64() / wall.as_secs_f64(),
    );
    log.close().expect("close");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Process CPU over `secs` with 4 consumer threads blocked in `poll(1 s)`
/// on empty topics (the spin adapts down to nothing).
fn idle_consumers(secs: u64) {
    let dir = temp_dir("idle-consumers");
    let log = Log::open(&dir, LogConfig::default()).expect("open");
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        for t in 0..4 {
            let name = format!("topic-{t}");
            log.create_topic(&name, TopicConfig::new(1))
                .expect("create");
            let (log, stop) = (&log, &stop);
            s.spawn(move || {
                let mut c = log.consumer(ConsumerConfig::default());
                c.assign(&[TopicPartition::new(name, 0)]).expect("assign");
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    c.poll(Duration::from_secs(1)).expect("poll");
                }
            });
        }
        std::thread::sleep(Duration::from_millis(200));
        let cpu0 = cpu_time();
        let wall0 = Instant::now();
        std::thread::sleep(Duration::from_secs(secs));
        let cpu = cpu_time() - cpu0;
        let wall = wall0.elapsed();
        println!(
            "| idle consumers | 4 threads blocked in `poll(1 s)`, default `wait_spin` | {:.1} ms CPU in {:.1} s | **{:.4} % of a core** | whole process (getrusage) |",
            cpu.as_secs_f64() * 1e3,
            wall.as_secs_f64(),
            100.0 * cpu.as_secs_f64() / wall.as_secs_f64(),
        );
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    log.close().expect("close");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The consumer thread's CPU while a producer sends one record every `gap`
/// for `secs`, with the given spin.
fn trickle(gap: Duration, spin: Duration, secs: u64) {
    let dir = temp_dir("trickle");
    let log = Log::open(&dir, LogConfig::default()).expect("open");
    log.create_topic("t", TopicConfig::new(1)).expect("create");
    let records = (Duration::from_secs(secs).as_micros() / gap.as_micros()) as u64;
    let producer = log.producer("t").expect("producer");
    let (cpu, wall) = std::thread::scope(|s| {
        let consumer = s.spawn(|| {
            let mut c = log.consumer(ConsumerConfig::default().wait_spin(spin));
            c.assign(&[TopicPartition::new("t", 0)]).expect("assign");
            let (cpu0, wall0) = (thread_cpu(), Instant::now());
            let mut n = 0;
            while n < records {
                n += c.poll(Duration::from_secs(1)).expect("poll").len() as u64;
            }
            (thread_cpu() - cpu0, wall0.elapsed())
        });
        let mut next = Instant::now();
        for _ in 0..records {
            if let Some(d) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
            producer.send(Record::new("x").partition(0)).expect("send");
            next += gap;
        }
        consumer.join().expect("consumer")
    });
    println!(
        "| trickle | one `send` every {} µs, `wait_spin` {} µs | consumer thread {:.1} ms CPU in {:.1} s | **{:.2} % of a core** | CLOCK_THREAD_CPUTIME_ID |",
        gap.as_micros(),
        spin.as_micros(),
        cpu.as_secs_f64() * 1e3,
        wall.as_secs_f64(),
        100.0 * cpu.as_secs_f64() / wall.as_secs_f64(),
    );
    log.close().expect("close");
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    let mut args = std::env::args().skip(1);
    let records = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    let idle_secs = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    println!("| what | setup | measured | figure | notes |");
    println!("|---|---|---|---|---|");
    compaction(records);
    retention();
    idle(idle_secs);
    idle_consumers(idle_secs);
    for gap in [1000, 200, 50] {
        for spin in [ConsumerConfig::DEFAULT_WAIT_SPIN, Duration::ZERO] {
            trickle(Duration::from_micros(gap), spin, 2);
        }
    }
}
