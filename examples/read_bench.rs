//! Read-path figures for profiling and A/B runs (no assertions on time):
//!
//! - `read [passes] [size] [records]`: fills one partition (`send_batch` of
//!   1000), then reads it `passes` times with `Consumer::poll`, iterating
//!   the `ConsumerRecords` by reference (by value, owned records, when
//!   `OWNED=1`; with `poll_each` when `EACH=1`), printing each pass's wall and thread-CPU
//!   time per record (the first pass also maps the segment's pages) and the
//!   best. `MPR=n` sets `max_poll_records` (default 10000).
//! - `latency [spin_us] [every_us] [records]`: one `send` every `every_us`,
//!   a consumer blocked in `poll` with `wait_spin(spin_us)`; prints p50, p90,
//!   p99, p99.9 and the consumer thread's CPU as a share of the wall clock.
//!
//! `cargo run --release --example read_bench -- read 5`,
//! `cargo run --release --example read_bench -- latency 50 20 30000`.
//! Under `perf record` or `valgrind --tool=callgrind`, `read 1` is the
//! shortest useful run.

#[path = "common/mod.rs"]
mod common;
use common::thread_cpu;

use std::sync::Barrier;
use std::time::{Duration, Instant};

use bytes::Bytes;
use logbus::{ConsumerConfig, Log, LogConfig, Record, TopicConfig, TopicPartition};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: u64| args.get(i).map_or(default, |s| s.parse().expect("number"));
    match args.first().map(String::as_str) {
        Some("latency") => latency(arg(1, 50), arg(2, 20), arg(3, 30_000)),
        _ => read(arg(1, 5) as usize, arg(2, 100) as usize, arg(3, 2_000_000)),
    }
}

fn temp_log(tag: &str) -> (Log, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("logbus-read-bench-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let log = Log::open(&dir, LogConfig::default()).expect("open");
    log.create_topic("t", TopicConfig::new(1)).expect("create");
    (log, dir)
}

fn read(passes: usize, size: usize, n: u64) {
    let (log, dir) = temp_log("read");
    let producer = log.producer("t").expect("producer");
    let value = Bytes::from(vec![b'x'; size]);
    let mut left = n;
    while left > 0 {
        let k = left.min(1000);
        let batch: Vec<Record> = (0..k)
            .map(|_| Record::new(value.clone()).partition(0))
            .collect();
        producer.send_batch(&batch).expect("send_batch");
        left -= k;
    }
    let max_poll_records = std::env::var("MPR").map_or(10_000, |s| s.parse().expect("MPR"));
    let each = std::env::var_os("EACH").is_some();
    let owned = std::env::var_os("OWNED").is_some();
    let (mut best, mut best_cpu) = (f64::MAX, f64::MAX);
    for pass in 1..=passes {
        let mut c = log.consumer(ConsumerConfig::default().max_poll_records(max_poll_records));
        c.assign(&[TopicPartition::new("t", 0)]).expect("assign");
        let (t0, c0) = (Instant::now(), thread_cpu().as_secs_f64());
        let (mut next, mut sum, mut touch) = (0u64, 0u64, 0u8);
        while next < n {
            if each {
                c.poll_each(Duration::from_millis(200), |_, r| {
                    assert_eq!(r.offset, next);
                    let v = r.value.expect("value");
                    sum += v.len() as u64;
                    touch ^= v[v.len() - 1];
                    next += 1;
                })
                .expect("poll_each");
            } else if owned {
                for r in c.poll(Duration::from_millis(200)).expect("poll") {
                    assert_eq!(r.offset, next);
                    let v = r.value.as_deref().expect("value");
                    sum += v.len() as u64;
                    touch ^= v[v.len() - 1];
                    next += 1;
                }
            } else {
                for r in &c.poll(Duration::from_millis(200)).expect("poll") {
                    assert_eq!(r.offset, next);
                    let v = r.value.expect("value");
                    sum += v.len() as u64;
                    touch ^= v[v.len() - 1];
                    next += 1;
                }
            }
        }
        std::hint::black_box((sum, touch));
        let (wall, cpu) = (t0.elapsed().as_secs_f64(), thread_cpu().as_secs_f64() - c0);
        println!(
            "pass {pass}: {:.2} ns/record wall, {:.2} ns/record cpu",
            wall * 1e9 / n as f64,
            cpu * 1e9 / n as f64
        );
        best = best.min(wall);
        best_cpu = best_cpu.min(cpu);
    }
    println!(
        "{} {size} B, max_poll_records {max_poll_records}: best {:.1} M records/s, {:.2} ns/record cpu",
        if each {
            "poll_each"
        } else if owned {
            "poll (owned records)"
        } else {
            "poll"
        },
        n as f64 / best / 1e6,
        best_cpu * 1e9 / n as f64
    );
    drop(log);
    let _ = std::fs::remove_dir_all(&dir);
}

fn latency(spin_us: u64, every_us: u64, records: u64) {
    let (log, dir) = temp_log("latency");
    let producer = log.producer("t").expect("producer");
    let epoch = Instant::now();
    let ready = Barrier::new(2);
    let every = Duration::from_micros(every_us);
    let (mut lats, cpu) = std::thread::scope(|s| {
        let consumer = s.spawn(|| {
            let config = ConsumerConfig::default()
                .max_poll_records(10_000)
                .wait_spin(Duration::from_micros(spin_us));
            let mut c = log.consumer(config);
            c.assign(&[TopicPartition::new("t", 0)]).expect("assign");
            let mut lats = Vec::with_capacity(records as usize);
            ready.wait();
            let c0 = thread_cpu().as_secs_f64();
            while (lats.len() as u64) < records {
                for r in c.poll(Duration::from_millis(500)).expect("poll") {
                    let now = epoch.elapsed().as_nanos() as u64;
                    let v = r.value.as_deref().expect("value");
                    let sent = u64::from_le_bytes(v[..8].try_into().expect("8 bytes"));
                    lats.push(now.saturating_sub(sent));
                }
            }
            (lats, thread_cpu().as_secs_f64() - c0)
        });
        ready.wait();
        // Let the consumer reach its wait.
        std::thread::sleep(Duration::from_millis(20));
        let mut buf = [b'z'; 100];
        let mut next = Instant::now();
        for _ in 0..records {
            while Instant::now() < next {
                std::hint::spin_loop();
            }
            let sent = epoch.elapsed().as_nanos() as u64;
            buf[..8].copy_from_slice(&sent.to_le_bytes());
            producer
                .send(Record::new(Bytes::copy_from_slice(&buf)).partition(0))
                .expect("send");
            // Pace from the later of the schedule and now: no catch-up bursts.
            next = (next + every).max(Instant::now());
        }
        consumer.join().expect("consumer")
    });
    lats.sort_unstable();
    let q = |p: f64| lats[((lats.len() as f64 * p) as usize).min(lats.len() - 1)] as f64 / 1e3;
    let wall = records as f64 * every_us as f64 * 1e-6;
    println!(
        "spin {spin_us} us, one send every {every_us} us: p50 {:.1} p90 {:.1} p99 {:.1} p99.9 {:.1} us; consumer thread CPU {:.0} % of the wall clock",
        q(0.5),
        q(0.9),
        q(0.99),
        q(0.999),
        100.0 * cpu / wall
    );
    drop(log);
    let _ = std::fs::remove_dir_all(&dir);
}
