//! A tour of logbus under load: two producers, two consumers, one topic.
//!
//! ```text
//! cargo run --release --example demo
//! ```
//!
//! Opens a log in a temporary directory (deleted at the end), creates a
//! topic with 4 partitions, and runs two phases while two consumer threads
//! read everything back:
//!
//! 1. two producer threads send ~1M keyed 100-byte records with
//!    `send_batch` in batches of 1000;
//! 2. the same two threads send more records one `send()` at a time.
//!
//! Each value carries its producer, phase, sequence number and the send time
//! (nanoseconds since an `Instant` shared by all threads), so the consumers
//! can check that nothing was missed or reordered and measure
//! produce→consume latency. Exits with status 1 if any check fails.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use logbus::{ConsumerConfig, Log, LogConfig, Record, TopicConfig, TopicPartition};

const TOPIC: &str = "demo";
const PARTITIONS: u32 = 4;
const PRODUCERS: usize = 2;
const CONSUMERS: usize = 2;
const VALUE_LEN: usize = 100;
const BATCH: usize = 1000;
/// Records per producer in the batched phase (2 × 500k = 1M).
const BATCHED_PER_PRODUCER: u64 = 500_000;
/// Records per producer in the single-send phase.
const SINGLE_PER_PRODUCER: u64 = 100_000;
const PHASES: [&str; 2] = ["send_batch(1000)", "send() one by one"];

/// Value layout: [producer u8][phase u8][seq u64 LE][sent_ns u64 LE][padding].
fn value(producer: u8, phase: u8, seq: u64, sent_ns: u64) -> Bytes {
    let mut v = [b'.'; VALUE_LEN];
    v[0] = producer;
    v[1] = phase;
    v[2..10].copy_from_slice(&seq.to_le_bytes());
    v[10..18].copy_from_slice(&sent_ns.to_le_bytes());
    Bytes::copy_from_slice(&v)
}

fn key(producer: u8, seq: u64) -> Bytes {
    // 64 keys per producer: spreads records over the 4 partitions by murmur2.
    Bytes::from(format!("p{producer}-k{}", seq % 64))
}

struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What one consumer thread saw.
#[derive(Default)]
struct Seen {
    /// Latency in ns, per phase.
    latency: [Vec<u64>; 2],
    /// Records consumed.
    records: u64,
    /// Records consumed per (producer, phase).
    per_producer: [[u64; 2]; PRODUCERS],
    /// First and last receive time (ns since epoch).
    first_ns: u64,
    last_ns: u64,
    errors: Vec<String>,
}

fn percentile_us(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((p * sorted.len() as f64) as usize).min(sorted.len() - 1)] as f64 / 1000.0
}

fn main() {
    let dir = TempDir(std::env::temp_dir().join(format!("logbus-demo-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    println!("Opening a log in {} (deleted at exit).", dir.0.display());
    let log = Log::open(&dir.0, LogConfig::default()).expect("open log");
    log.create_topic(TOPIC, TopicConfig::new(PARTITIONS))
        .expect("create topic");
    println!(
        "Created topic {TOPIC:?} with {PARTITIONS} partitions. {PRODUCERS} producer threads will \
         send {} keyed {VALUE_LEN}-byte records in batches of {BATCH}, then {} more one send() \
         at a time; {CONSUMERS} consumer threads (partitions 0,1 and 2,3) read them as they arrive.",
        PRODUCERS as u64 * BATCHED_PER_PRODUCER,
        PRODUCERS as u64 * SINGLE_PER_PRODUCER
    );

    let epoch = Instant::now();
    let now_ns = move || epoch.elapsed().as_nanos() as u64;
    let producers_done = AtomicBool::new(false);
    // Per phase: start and end (ns since epoch) over both producers.
    let phase_start = [AtomicU64::new(u64::MAX), AtomicU64::new(u64::MAX)];
    let phase_end = [AtomicU64::new(0), AtomicU64::new(0)];
    let phase_barrier = Barrier::new(PRODUCERS);
    let start_barrier = Barrier::new(PRODUCERS + CONSUMERS);
    let results: Mutex<Vec<Seen>> = Mutex::new(Vec::new());
    let failed = Arc::new(AtomicBool::new(false));

    std::thread::scope(|s| {
        for c in 0..CONSUMERS {
            let log = &log;
            let producers_done = &producers_done;
            let results = &results;
            let start_barrier = &start_barrier;
            s.spawn(move || {
                let parts: Vec<u32> = (0..PARTITIONS)
                    .filter(|p| *p as usize % CONSUMERS == c)
                    .collect();
                let mut consumer = log.consumer(ConsumerConfig::default().max_poll_records(10_000));
                let tps: Vec<TopicPartition> = parts
                    .iter()
                    .map(|&p| TopicPartition::new(TOPIC, p))
                    .collect();
                consumer.assign(&tps).expect("assign");
                let topic = log.topic(TOPIC).unwrap();
                let mut seen = Seen::default();
                // Next expected offset per partition, and the last sequence
                // number seen per (producer, phase, partition).
                let mut next_offset = vec![0u64; PARTITIONS as usize];
                let mut last_seq: Vec<[[Option<u64>; PARTITIONS as usize]; 2]> =
                    vec![[[None; PARTITIONS as usize]; 2]; PRODUCERS];
                start_barrier.wait();
                loop {
                    let records = match consumer.poll(Duration::from_millis(50)) {
                        Ok(r) => r,
                        Err(e) => {
                            seen.errors.push(format!("consumer {c}: poll failed: {e}"));
                            break;
                        }
                    };
                    let now = now_ns();
                    for r in &records {
                        let p = r.partition as usize;
                        if r.offset != next_offset[p] {
                            seen.errors.push(format!(
                                "partition {p}: offset {} after {}",
                                r.offset,
                                next_offset[p] as i64 - 1
                            ));
                        }
                        next_offset[p] = r.offset + 1;
                        let v = r.value.unwrap_or(&[]);
                        if v.len() != VALUE_LEN {
                            seen.errors
                                .push(format!("partition {p} offset {}: bad value", r.offset));
                            continue;
                        }
                        let (prod, phase) = (v[0] as usize, v[1] as usize);
                        let seq = u64::from_le_bytes(v[2..10].try_into().unwrap());
                        let sent = u64::from_le_bytes(v[10..18].try_into().unwrap());
                        if prod >= PRODUCERS || phase >= 2 {
                            seen.errors
                                .push(format!("partition {p} offset {}: bad header", r.offset));
                            continue;
                        }
                        // A producer's records reach one partition in send order.
                        if let Some(last) = last_seq[prod][phase][p] {
                            if seq <= last {
                                seen.errors.push(format!(
                                    "partition {p}: producer {prod} seq {seq} after {last}"
                                ));
                            }
                        }
                        last_seq[prod][phase][p] = Some(seq);
                        seen.per_producer[prod][phase] += 1;
                        seen.latency[phase].push(now.saturating_sub(sent));
                        if seen.records == 0 {
                            seen.first_ns = now;
                        }
                        seen.records += 1;
                        seen.last_ns = now;
                    }
                    if seen.errors.len() > 10 {
                        break;
                    }
                    // Done once the producers have finished and every assigned
                    // partition has been read to its end.
                    if records.is_empty() && producers_done.load(Ordering::Acquire) {
                        let caught_up = parts.iter().all(|&p| {
                            topic.partition(p).unwrap().log_end_offset() == next_offset[p as usize]
                        });
                        if caught_up {
                            break;
                        }
                    }
                }
                results.lock().unwrap().push(seen);
            });
        }

        let producer_handles: Vec<_> = (0..PRODUCERS)
            .map(|id| {
                let producer = log.producer(TOPIC).expect("producer");
                let (phase_start, phase_end) = (&phase_start, &phase_end);
                let phase_barrier = &phase_barrier;
                let start_barrier = &start_barrier;
                let failed = Arc::clone(&failed);
                s.spawn(move || {
                    let id8 = id as u8;
                    start_barrier.wait();
                    // Phase 0: batches of 1000.
                    phase_start[0].fetch_min(now_ns(), Ordering::Relaxed);
                    let mut batch = Vec::with_capacity(BATCH);
                    let mut seq = 0;
                    while seq < BATCHED_PER_PRODUCER {
                        batch.clear();
                        let sent = now_ns();
                        for _ in 0..BATCH.min((BATCHED_PER_PRODUCER - seq) as usize) {
                            batch.push(Record::new(value(id8, 0, seq, sent)).key(key(id8, seq)));
                            seq += 1;
                        }
                        if let Err(e) = producer.send_batch(&batch) {
                            eprintln!("producer {id}: send_batch failed: {e}");
                            failed.store(true, Ordering::Relaxed);
                            return;
                        }
                    }
                    phase_end[0].fetch_max(now_ns(), Ordering::Relaxed);
                    phase_barrier.wait();
                    // Phase 1: single sends.
                    phase_start[1].fetch_min(now_ns(), Ordering::Relaxed);
                    for seq in 0..SINGLE_PER_PRODUCER {
                        let r = Record::new(value(id8, 1, seq, now_ns())).key(key(id8, seq));
                        if let Err(e) = producer.send(r) {
                            eprintln!("producer {id}: send failed: {e}");
                            failed.store(true, Ordering::Relaxed);
                            return;
                        }
                    }
                    phase_end[1].fetch_max(now_ns(), Ordering::Relaxed);
                })
            })
            .collect();
        for h in producer_handles {
            h.join().unwrap();
        }
        producers_done.store(true, Ordering::Release);
    });

    // Report.
    let seen = results.into_inner().unwrap();
    let mut errors: Vec<String> = seen.iter().flat_map(|s| s.errors.clone()).collect();
    let produced: u64 = PRODUCERS as u64 * (BATCHED_PER_PRODUCER + SINGLE_PER_PRODUCER);
    let consumed: u64 = seen.iter().map(|s| s.records).sum();
    let topic = log.topic(TOPIC).unwrap();
    let stored: u64 = topic.partitions().iter().map(|p| p.log_end_offset()).sum();
    if consumed != produced || stored != produced {
        errors.push(format!(
            "produced {produced}, stored {stored}, consumed {consumed}"
        ));
    }
    for prod in 0..PRODUCERS {
        for (phase, expect) in [BATCHED_PER_PRODUCER, SINGLE_PER_PRODUCER]
            .into_iter()
            .enumerate()
        {
            let got: u64 = seen.iter().map(|s| s.per_producer[prod][phase]).sum();
            if got != expect {
                errors.push(format!(
                    "producer {prod} phase {phase}: sent {expect}, consumed {got}"
                ));
            }
        }
    }
    if failed.load(Ordering::Relaxed) {
        errors.push("a producer failed".into());
    }

    println!();
    println!(
        "{:<38} {:>9} {:>8} {:>12} {:>8} {:>9} {:>9} {:>9}",
        "phase", "records", "seconds", "records/s", "MB/s", "p50 us", "p99 us", "p999 us"
    );
    let row = |name: &str, n: u64, secs: f64, lat: Option<&mut Vec<u64>>| {
        let (p50, p99, p999) = match lat {
            Some(l) => {
                l.sort_unstable();
                (
                    format!("{:.1}", percentile_us(l, 0.5)),
                    format!("{:.1}", percentile_us(l, 0.99)),
                    format!("{:.1}", percentile_us(l, 0.999)),
                )
            }
            None => ("-".into(), "-".into(), "-".into()),
        };
        let rate = n as f64 / secs;
        println!(
            "{:<38} {:>9} {:>8.3} {:>12.0} {:>8.1} {:>9} {:>9} {:>9}",
            name,
            n,
            secs,
            rate,
            rate * VALUE_LEN as f64 / 1e6,
            p50,
            p99,
            p999
        );
    };
    for (i, phase) in PHASES.iter().enumerate() {
        let mut lat: Vec<u64> = seen
            .iter()
            .flat_map(|s| s.latency[i].iter().copied())
            .collect();
        let n = lat.len() as u64;
        let secs = (phase_end[i]
            .load(Ordering::Relaxed)
            .saturating_sub(phase_start[i].load(Ordering::Relaxed))) as f64
            / 1e9;
        row(
            &format!("produce: {phase}, {PRODUCERS} threads"),
            n,
            secs,
            Some(&mut lat),
        );
    }
    let first = seen.iter().map(|s| s.first_ns).min().unwrap_or(0);
    let last = seen.iter().map(|s| s.last_ns).max().unwrap_or(0);
    row(
        &format!("consume: poll, {CONSUMERS} threads"),
        consumed,
        last.saturating_sub(first) as f64 / 1e9,
        None,
    );
    println!(
        "\nLatency = consumer receive time - send time stamped in the value (batched phase: \
         stamped when the batch was built). MB/s counts the {VALUE_LEN}-byte values."
    );

    log.close().expect("close");
    drop(dir);
    if errors.is_empty() {
        println!(
            "OK: all {produced} records consumed exactly once, in order per partition and per producer."
        );
    } else {
        println!("FAILED:");
        for e in errors.iter().take(20) {
            println!("  {e}");
        }
        std::process::exit(1);
    }
}
