//! Many threads at once: concurrent producers and consumers see every record
//! exactly once and in order, a parked consumer is woken by a send, and the
//! durability modes acknowledge everything under concurrency.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, mpsc};
use std::time::{Duration, Instant};

use common::{TempDir, read_all};
use logbus::*;

const PRODUCERS: u64 = 4;
const PER_PRODUCER: u64 = 50_000;
const PARTITIONS: u32 = 4;

fn value(producer: u64, seq: u64) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&producer.to_be_bytes());
    v[8..].copy_from_slice(&seq.to_be_bytes());
    v
}

fn parse(value: &[u8]) -> (u64, u64) {
    assert_eq!(value.len(), 16);
    (
        u64::from_be_bytes(value[..8].try_into().unwrap()),
        u64::from_be_bytes(value[8..].try_into().unwrap()),
    )
}

#[test]
fn producers_and_consumers_see_every_record_once_in_order() {
    let dir = TempDir::new("mpmc");
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    log.create_topic(
        "t",
        TopicConfig::new(PARTITIONS)
            .segment_bytes(1 << 20)
            .max_record_bytes(64 << 10)
            .index_interval_bytes(4096),
    )
    .unwrap();
    let total = (PRODUCERS * PER_PRODUCER) as usize;
    let seen_total = Arc::new(AtomicUsize::new(0));
    // Producers, consumers and this thread start together.
    let start = Arc::new(Barrier::new(PRODUCERS as usize + 2 + 1));

    // Two consumers, two partitions each, polling while the producers run.
    let consumers: Vec<_> = [[0u32, 1], [2, 3]]
        .into_iter()
        .map(|parts| {
            let log = log.clone();
            let seen_total = Arc::clone(&seen_total);
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                let mut consumer = log.consumer(ConsumerConfig::default().max_poll_records(2000));
                let tps: Vec<TopicPartition> =
                    parts.iter().map(|&p| TopicPartition::new("t", p)).collect();
                consumer.assign(&tps).unwrap();
                start.wait();
                let deadline = Instant::now() + Duration::from_secs(60);
                // (partition, offset, producer, seq) in the order received.
                let mut got = Vec::new();
                let mut next = BTreeMap::new();
                while seen_total.load(Ordering::SeqCst) < total {
                    if Instant::now() > deadline {
                        let ends: Vec<u64> = parts
                            .iter()
                            .map(|&p| log.topic("t").unwrap().partition(p).unwrap().log_end_offset())
                            .collect();
                        panic!(
                            "consumer {parts:?} stuck: read up to {next:?}, log ends {ends:?}, {} of {total} seen",
                            seen_total.load(Ordering::SeqCst)
                        );
                    }
                    let records = consumer.poll(Duration::from_millis(50)).unwrap();
                    for r in &records {
                        assert!(parts.contains(&r.partition));
                        let expected = next.entry(r.partition).or_insert(0u64);
                        // Strictly increasing, and with no gap.
                        assert_eq!(r.offset, *expected, "partition {}", r.partition);
                        *expected += 1;
                        let (producer, seq) = parse(r.value.as_ref().unwrap());
                        got.push((r.partition, r.offset, producer, seq));
                    }
                    seen_total.fetch_add(records.len(), Ordering::SeqCst);
                }
                got
            })
        })
        .collect();

    let producers: Vec<_> = (0..PRODUCERS)
        .map(|id| {
            let producer = log.producer("t").unwrap();
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                start.wait();
                let mut acked = Vec::with_capacity(PER_PRODUCER as usize);
                let mut seq = 0;
                while seq < PER_PRODUCER {
                    // Alternate single sends and small batches.
                    let n = if (seq / 7) % 2 == 0 {
                        1
                    } else {
                        10.min(PER_PRODUCER - seq)
                    };
                    let records: Vec<Record> = (seq..seq + n)
                        .map(|s| {
                            Record::new(value(id, s).to_vec())
                                .partition(((s + id) % u64::from(PARTITIONS)) as u32)
                        })
                        .collect();
                    let metas = if n == 1 {
                        vec![producer.send(records[0].clone()).unwrap()]
                    } else {
                        producer.send_batch(&records).unwrap()
                    };
                    acked.extend(metas.iter().map(|m| (m.partition, m.offset)));
                    seq += n;
                }
                acked
            })
        })
        .collect();
    start.wait();

    // (partition, offset) -> (producer, seq), from the producers' acks.
    let mut acked = BTreeMap::new();
    for (id, handle) in producers.into_iter().enumerate() {
        for (seq, at) in handle.join().unwrap().into_iter().enumerate() {
            assert!(
                acked.insert(at, (id as u64, seq as u64)).is_none(),
                "{at:?} acked twice"
            );
        }
    }
    assert_eq!(acked.len(), total);

    let mut seen = BTreeSet::new();
    let mut last_seq = BTreeMap::new();
    for handle in consumers {
        for (partition, offset, producer, seq) in handle.join().unwrap() {
            assert!(
                seen.insert((producer, seq)),
                "({producer}, {seq}) seen twice"
            );
            assert_eq!(acked.get(&(partition, offset)), Some(&(producer, seq)));
            // One producer's records reach a partition in the order sent.
            if let Some(prev) = last_seq.insert((partition, producer), seq) {
                assert!(prev < seq, "producer {producer} reordered in {partition}");
            }
        }
    }
    assert_eq!(seen.len(), total, "every record seen exactly once");
    let ends: u64 = (0..PARTITIONS)
        .map(|p| {
            log.topic("t")
                .unwrap()
                .partition(p)
                .unwrap()
                .log_end_offset()
        })
        .sum();
    assert_eq!(ends, total as u64);
    log.close().unwrap();
}

#[test]
fn a_send_wakes_a_consumer_parked_in_poll() {
    let dir = TempDir::new("wake");
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    log.create_topic("t", TopicConfig::new(4)).unwrap();
    let producer = log.producer("t").unwrap();
    // Created and assigned here, polled on another thread: the wake-up must
    // reach the thread that polls.
    let mut consumer = log.consumer(ConsumerConfig::default());
    consumer
        .assign(
            &(0..4)
                .map(|p| TopicPartition::new("t", p))
                .collect::<Vec<_>>(),
        )
        .unwrap();
    const ROUNDS: u32 = 40;
    const TIMEOUT: Duration = Duration::from_secs(10);
    let (ready_tx, ready_rx) = mpsc::channel();
    let poller = std::thread::spawn(move || {
        for round in 0..ROUNDS {
            ready_tx.send(()).unwrap();
            let started = Instant::now();
            let records = consumer.poll(TIMEOUT).unwrap();
            let waited = started.elapsed();
            // Woken, not timed out: it returned before the timeout, with the record.
            assert!(waited < TIMEOUT, "round {round}: poll waited {waited:?}");
            assert_eq!(records.len(), 1, "round {round}");
            assert_eq!(
                records.get(0).unwrap().value,
                Some(format!("round-{round}").as_bytes())
            );
        }
    });
    for round in 0..ROUNDS {
        ready_rx.recv().unwrap();
        // Half the rounds give the consumer time to park; the others race
        // the send against it going to sleep.
        if round % 2 == 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
        producer
            .send(Record::new(format!("round-{round}")).partition(round % 4))
            .unwrap();
    }
    poller.join().unwrap();
    log.close().unwrap();
}

/// Four threads send concurrently under `durability`; every send is
/// acknowledged with a distinct offset, readable at once and after a crash.
fn concurrent_sends(durability: Durability, per_thread: u64) {
    let dir = TempDir::new("durability");
    let log = Log::open(dir.path(), LogConfig::default().durability(durability)).unwrap();
    assert_eq!(log.durability(), durability);
    log.create_topic(
        "t",
        TopicConfig::new(2)
            .segment_bytes(32 << 10)
            .max_record_bytes(4 << 10)
            .index_interval_bytes(1024),
    )
    .unwrap();
    let threads: Vec<_> = (0..4u64)
        .map(|id| {
            let producer = log.producer("t").unwrap();
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                for seq in 0..per_thread {
                    let r = Record::new(value(id, seq).to_vec()).partition((seq % 2) as u32);
                    let meta = if seq % 5 == 4 {
                        producer.send_batch(std::slice::from_ref(&r)).unwrap()[0]
                    } else {
                        producer.send(r).unwrap()
                    };
                    acked.push(((meta.partition, meta.offset), (id, seq)));
                }
                acked
            })
        })
        .collect();
    let mut acked = BTreeMap::new();
    for t in threads {
        for (at, who) in t.join().unwrap() {
            assert!(acked.insert(at, who).is_none(), "{at:?} acked twice");
        }
    }
    assert_eq!(acked.len() as u64, 4 * per_thread);
    let check = |log: &Log| {
        let mut n = 0;
        for p in 0..2 {
            for r in read_all(log, "t", p) {
                assert_eq!(
                    acked.get(&(p, r.offset)),
                    Some(&parse(r.value.as_ref().unwrap()))
                );
                n += 1;
            }
        }
        assert_eq!(n, acked.len());
    };
    check(&log);
    if let Durability::Interval(every) = durability {
        // The flusher keeps running; records stay readable meanwhile.
        std::thread::sleep(every * 3);
        check(&log);
    }
    let crash = common::crash_copy(dir.path(), "durability-crash");
    log.close().unwrap();
    let log = Log::open(crash.path(), LogConfig::default()).unwrap();
    assert!(!log.recovery_report().clean_shutdown);
    check(&log);
    log.close().unwrap();
}

#[test]
fn durability_always_with_concurrent_senders() {
    concurrent_sends(Durability::Always, 150);
}

#[test]
fn durability_interval_with_concurrent_senders() {
    concurrent_sends(Durability::Interval(Duration::from_millis(10)), 1500);
}
