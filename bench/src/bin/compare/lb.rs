//! The logbus side of every workload: batched and single appends, reads
//! (owned, borrowed, raw batches), and produce -> consume latency.

use std::path::Path;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use logbus::{
    ConsumerConfig, Durability, Log, LogConfig, Partition, Producer, Record, TopicConfig,
    TopicPartition,
};

use crate::table::{Sample, lat_of};
use crate::util::Timer;

pub const BATCH: usize = 1000;

pub fn open_log(dir: &Path, durability: Durability) -> Log {
    Log::open(dir, LogConfig::default().durability(durability)).expect("open log")
}

/// [`open_log`] with one topic `t` of one partition: what most rows append to.
pub fn one_partition_log(dir: &Path, durability: Durability) -> Log {
    let log = open_log(dir, durability);
    log.create_topic("t", TopicConfig::new(1))
        .expect("create topic");
    log
}

fn payload(size: usize) -> Bytes {
    Bytes::from_static(crate::util::payload(size))
}

/// `send_batch` of 1000 keyless records to partition 0, building each batch
/// in the timed loop (reusing the Vec).
#[inline(never)] // a frame of its own in profiles
pub fn append_batches(producer: &Producer, records: u64, size: usize) -> Sample {
    let value = payload(size);
    let mut batch: Vec<Record> = Vec::with_capacity(BATCH);
    let start = Timer::start();
    let mut left = records;
    while left > 0 {
        let n = left.min(BATCH as u64);
        batch.clear();
        for _ in 0..n {
            batch.push(Record::new(value.clone()).partition(0));
        }
        producer.send_batch(&batch).expect("send_batch");
        left -= n;
    }
    start.sample(records)
}

/// The same records pushed into a reused [`BatchBuilder`](logbus::BatchBuilder)
/// (encoded as they are pushed), one `send` per 1000.
#[inline(never)] // a frame of its own in profiles
pub fn append_builder(producer: &Producer, records: u64, size: usize) -> Sample {
    let value = payload(size);
    let mut batch = producer.batch();
    let start = Timer::start();
    let mut left = records;
    while left > 0 {
        let n = left.min(BATCH as u64);
        batch.to_partition(0).expect("partition 0");
        for _ in 0..n {
            batch.push_value(&value).expect("push_value");
        }
        batch.send().expect("send");
        left -= n;
    }
    start.sample(records)
}

/// `threads` threads each sending `records / threads` single records.
/// `partition(i)`: the explicit partition of thread `i`, or keyless.
pub fn single_sends(
    producer: &Producer,
    records: u64,
    size: usize,
    threads: usize,
    partition: impl Fn(usize) -> Option<u32> + Sync,
    measure_latency: bool,
) -> Sample {
    let per = records / threads as u64;
    let barrier = Barrier::new(threads + 1);
    let (secs, lats) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let producer = producer.clone();
                let barrier = &barrier;
                let part = partition(t);
                s.spawn(move || {
                    let value = payload(size);
                    let mut lat = Vec::new();
                    if measure_latency {
                        lat.reserve(per as usize / 16 + 1);
                    }
                    barrier.wait();
                    for i in 0..per {
                        let mut r = Record::new(value.clone());
                        if let Some(p) = part {
                            r = r.partition(p);
                        }
                        // Timing every call would add two clock reads to a
                        // sub-microsecond send; sample 1 in 16 (all when slow).
                        if measure_latency && (i % 16 == 0 || per <= 100_000) {
                            let t0 = Instant::now();
                            producer.send(r).expect("send");
                            lat.push(t0.elapsed().as_nanos() as u64);
                        } else {
                            producer.send(r).expect("send");
                        }
                    }
                    lat
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let mut lats = Vec::new();
        for h in handles {
            lats.extend(h.join().unwrap());
        }
        (start.elapsed().as_secs_f64(), lats)
    });
    Sample {
        records: per * threads as u64,
        secs,
        lat: if measure_latency { lat_of(lats) } else { None },
        value: None,
        cpu_secs: None,
    }
}

/// A consumer assigned partition 0 of `topic`, up to 10 000 records per poll.
fn partition0_reader(log: &Log, topic: &str) -> logbus::Consumer {
    let mut consumer = log.consumer(ConsumerConfig::default().max_poll_records(10_000));
    consumer
        .assign(&[TopicPartition::new(topic, 0)])
        .expect("assign");
    consumer
}

/// Reads partition 0 from offset 0 with `Consumer::poll`, iterating the
/// `ConsumerRecords` by reference (borrowed records), checking offsets and
/// touching every value's last byte.
#[inline(never)] // a frame of its own in profiles
pub fn read_consumer(log: &Log, topic: &str, expect: u64) -> Sample {
    let mut consumer = partition0_reader(log, topic);
    let start = Timer::start();
    let mut walk = Walk::default();
    while walk.next < expect {
        let recs = consumer.poll(Duration::from_millis(200)).expect("poll");
        assert!(
            !recs.is_empty(),
            "poll returned nothing at offset {}",
            walk.next
        );
        for r in &recs {
            walk.record(r.offset, r.value);
        }
    }
    walk.finish(start)
}

/// As [`read_consumer`], but iterating the `ConsumerRecords` by value:
/// owned `ConsumerRecord`s (a `Bytes` per value), what `poll` returned
/// before `ConsumerRecords`.
#[inline(never)] // a frame of its own in profiles
pub fn read_consumer_owned(log: &Log, topic: &str, expect: u64) -> Sample {
    let mut consumer = partition0_reader(log, topic);
    let start = Timer::start();
    let mut walk = Walk::default();
    while walk.next < expect {
        let recs = consumer.poll(Duration::from_millis(200)).expect("poll");
        assert!(
            !recs.is_empty(),
            "poll returned nothing at offset {}",
            walk.next
        );
        for r in recs {
            walk.record(r.offset, r.value.as_deref());
        }
    }
    walk.finish(start)
}

/// Reads partition 0 from offset 0 with `Consumer::poll_each` (borrowed
/// records), checking offsets and touching every value's last byte.
#[inline(never)] // a frame of its own in profiles
pub fn read_consumer_each(log: &Log, topic: &str, expect: u64) -> Sample {
    let mut consumer = partition0_reader(log, topic);
    let start = Timer::start();
    let mut walk = Walk::default();
    while walk.next < expect {
        let n = consumer
            .poll_each(Duration::from_millis(200), |_, r| {
                walk.record(r.offset, r.value)
            })
            .expect("poll_each");
        assert!(n > 0, "poll_each returned nothing at offset {}", walk.next);
    }
    walk.finish(start)
}

/// Every record through `FetchedBatches::records` (borrowed views, CRC
/// checked once per process): decodes each record, checks the offset order
/// and touches each value, like the consumer row, without per-record
/// reference counting.
#[inline(never)] // a frame of its own in profiles
pub fn read_views(p: &Partition, expect: u64) -> Sample {
    let start = Timer::start();
    let mut walk = Walk::default();
    while walk.next < expect {
        let f = p.fetch(walk.next, 1 << 20).expect("fetch");
        for r in f.records() {
            let r = r.expect("record");
            walk.record(r.offset, r.value);
        }
    }
    walk.finish(start)
}

/// What every in-order reader does per record: checks that offsets come in
/// order from 0 and touches the value (its length and last byte), so no
/// read is optimised away.
#[derive(Default)]
struct Walk {
    next: u64,
    sum: u64,
    touch: u8,
}

impl Walk {
    #[inline(always)]
    fn record(&mut self, offset: u64, value: Option<&[u8]>) {
        assert_eq!(offset, self.next, "out of order");
        let v = value.unwrap();
        self.sum += v.len() as u64;
        self.touch ^= v[v.len() - 1];
        self.next += 1;
    }

    fn finish(self, start: Timer) -> Sample {
        std::hint::black_box((self.sum, self.touch));
        start.sample(self.next)
    }
}

/// Raw batches with `Partition::fetch` (1 MiB per call): walks the batch
/// headers (count, order) and reads every byte once (a word sum standing in
/// for the copy to a socket a Kafka fetch handler would do).
#[inline(never)] // a frame of its own in profiles
pub fn read_fetch(p: &Partition, expect: u64) -> Sample {
    let start = Timer::start();
    let end = p.log_end_offset();
    let (mut offset, mut count, mut bytes_seen) = (0u64, 0u64, 0u64);
    while offset < end {
        let f = p.fetch(offset, 1 << 20).expect("fetch");
        let b = &f.bytes[..];
        assert!(!b.is_empty());
        let mut pos = 0;
        while pos + 61 <= b.len() {
            let base = i64::from_be_bytes(b[pos..pos + 8].try_into().unwrap()) as u64;
            let batch_len = i32::from_be_bytes(b[pos + 8..pos + 12].try_into().unwrap()) as usize;
            let last_delta = i32::from_be_bytes(b[pos + 23..pos + 27].try_into().unwrap()) as u64;
            let n = i32::from_be_bytes(b[pos + 57..pos + 61].try_into().unwrap()) as u64;
            assert_eq!(base, offset, "batch out of order");
            count += n;
            offset = base + last_delta + 1;
            pos += batch_len + 12;
        }
        // Stand-in for handing the bytes to a socket: read every byte once.
        bytes_seen = bytes_seen.wrapping_add(word_sum(b));
    }
    assert_eq!(count, expect, "fetch count");
    std::hint::black_box(bytes_seen);
    start.sample(count)
}

fn word_sum(b: &[u8]) -> u64 {
    let mut acc = 0u64;
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        acc = acc.wrapping_add(u64::from_ne_bytes(c.try_into().unwrap()));
    }
    for &x in chunks.remainder() {
        acc = acc.wrapping_add(u64::from(x));
    }
    acc
}

/// One producer sending single records paced `every` apart, one consumer
/// thread blocked in `poll`; latency = consumer's receive time minus the
/// send time embedded in the value (nanos since a shared `Instant`).
pub fn latency(log: &Log, topic: &str, records: u64, every: Duration) -> Sample {
    let producer = log.producer(topic).unwrap();
    let epoch = Instant::now();
    let ready = Barrier::new(2);
    let stop = AtomicBool::new(false);
    let (lats, secs) = std::thread::scope(|s| {
        let consumer = s.spawn(|| {
            let mut c = partition0_reader(log, topic);
            let mut lats = Vec::with_capacity(records as usize);
            let mut next = 0u64;
            ready.wait();
            while next < records && !stop.load(Ordering::Relaxed) {
                for r in &c.poll(Duration::from_millis(500)).unwrap() {
                    let now = epoch.elapsed().as_nanos() as u64;
                    let v = r.value.unwrap();
                    let sent = u64::from_le_bytes(v[..8].try_into().unwrap());
                    assert_eq!(r.offset, next, "out of order");
                    next += 1;
                    lats.push(now.saturating_sub(sent));
                }
            }
            lats
        });
        ready.wait();
        // Let the consumer reach its park.
        std::thread::sleep(Duration::from_millis(20));
        let mut buf = [b'z'; 100];
        let start = Instant::now();
        let mut next = Instant::now();
        for _ in 0..records {
            while Instant::now() < next {
                std::hint::spin_loop();
            }
            let sent = epoch.elapsed().as_nanos() as u64;
            buf[..8].copy_from_slice(&sent.to_le_bytes());
            producer
                .send(Record::new(Bytes::copy_from_slice(&buf)).partition(0))
                .unwrap();
            // Pace from the later of the schedule and now: no catch-up bursts.
            next = (next + every).max(Instant::now());
        }
        let secs = start.elapsed().as_secs_f64();
        let lats = consumer.join().unwrap();
        stop.store(true, Ordering::Relaxed);
        (lats, secs)
    });
    assert_eq!(lats.len() as u64, records, "latency: records missed");
    Sample {
        records,
        secs,
        lat: lat_of(lats),
        value: None,
        cpu_secs: None,
    }
}

/// Fills `partitions` partitions of `topic` with `per_partition` 100 B
/// records each (batches of 1000).
pub fn fill_partitions(log: &Log, topic: &str, partitions: u32, per_partition: u64) {
    let producer = log.producer(topic).expect("producer");
    let value = payload(100);
    for p in 0..partitions {
        let mut left = per_partition;
        while left > 0 {
            let n = left.min(BATCH as u64);
            let batch: Vec<Record> = (0..n)
                .map(|_| Record::new(value.clone()).partition(p))
                .collect();
            producer.send_batch(&batch).expect("send_batch");
            left -= n;
        }
    }
}

/// One `Consumer` assigned every partition of `topic`, reading `total`
/// records with `poll` (default config).
#[inline(never)] // a frame of its own in profiles
pub fn read_all_partitions(log: &Log, topic: &str, partitions: u32, total: u64) -> Sample {
    let mut c = log.consumer(ConsumerConfig::default());
    let all: Vec<TopicPartition> = (0..partitions)
        .map(|p| TopicPartition::new(topic, p))
        .collect();
    c.assign(&all).expect("assign");
    let start = Timer::start();
    let (mut n, mut touch) = (0u64, 0u8);
    while n < total {
        let recs = c.poll(Duration::from_millis(500)).expect("poll");
        assert!(!recs.is_empty(), "poll returned nothing after {n}");
        for r in &recs {
            let v = r.value.unwrap();
            touch ^= v[v.len() - 1];
        }
        n += recs.len() as u64;
    }
    std::hint::black_box(touch);
    start.sample(n)
}

/// A fresh `ConsumerGroup` of `members` threads reading `total` records of
/// `topic`, with `poll` (or `poll_each` when `each`). The clock starts once
/// every member owns its partitions (what members read while the group
/// settled is subtracted).
pub fn read_group(
    log: &Log,
    topic: &str,
    group: &str,
    partitions: u32,
    total: u64,
    members: usize,
    each: bool,
) -> Sample {
    use logbus::{ConsumerGroup, GroupConfig};
    use std::sync::atomic::AtomicU64;
    let read = AtomicU64::new(0);
    let ready = Barrier::new(members + 1);
    let go = Barrier::new(members + 1);
    let per_member = partitions as usize / members;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..members)
            .map(|_| {
                let (read, ready, go) = (&read, &ready, &go);
                s.spawn(move || {
                    let config = GroupConfig::default().auto_commit(false);
                    let mut m = ConsumerGroup::join(log, group, &[topic], config).expect("join");
                    let mut early = 0u64;
                    // Rebalances settle while members poll; count what they read.
                    while m.assignment().len() != per_member {
                        early += m.poll(Duration::from_millis(1)).expect("poll").len() as u64;
                    }
                    read.fetch_add(early, Ordering::SeqCst);
                    ready.wait();
                    go.wait();
                    let mut touch = 0u8;
                    while read.load(Ordering::Relaxed) < total {
                        let n = if each {
                            m.poll_each(Duration::from_millis(10), |_, r| {
                                let v = r.value.unwrap();
                                touch ^= v[v.len() - 1];
                            })
                            .expect("poll_each")
                        } else {
                            let recs = m.poll(Duration::from_millis(10)).expect("poll");
                            for r in &recs {
                                let v = r.value.unwrap();
                                touch ^= v[v.len() - 1];
                            }
                            recs.len()
                        };
                        read.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    std::hint::black_box(touch);
                    m
                })
            })
            .collect();
        ready.wait();
        let already = read.load(Ordering::SeqCst);
        let start = Instant::now();
        go.wait();
        let members: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().expect("member"))
            .collect();
        let secs = start.elapsed().as_secs_f64();
        drop(members);
        Sample::throughput(total - already, secs)
    })
}

/// `workers` threads take every record of `topic` from a fresh work queue,
/// acking each one with its own `ack` call (Kafka share-group semantics:
/// per-record leases, any worker gets any record).
pub fn read_work_queue(log: &Log, topic: &str, queue: &str, total: u64, workers: usize) -> Sample {
    use logbus::{QueueConfig, WorkQueue};
    use std::sync::atomic::AtomicU64;
    let queue = WorkQueue::open(log, queue, topic, QueueConfig::default()).expect("queue");
    let done = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..workers {
            let (mut worker, done) = (queue.worker(), &done);
            s.spawn(move || {
                let mut touch = 0u8;
                while done.load(Ordering::Relaxed) < total {
                    let jobs = worker.poll(Duration::from_millis(10)).expect("poll");
                    for job in &jobs {
                        let v = job.record.value.as_deref().unwrap();
                        touch ^= v[v.len() - 1];
                        worker.ack(job).expect("ack");
                    }
                    done.fetch_add(jobs.len() as u64, Ordering::Relaxed);
                }
                worker.commit().expect("commit");
                std::hint::black_box(touch);
            });
        }
    });
    Sample::throughput(done.load(Ordering::SeqCst), start.elapsed().as_secs_f64())
}
