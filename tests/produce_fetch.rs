//! Produce → fetch round trips: offsets are consecutive, records come back
//! byte for byte across segment rolls and reopen, and consumers see every
//! offset exactly once, in order.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{TempDir, read_all};
use logbus::*;

fn small_topic(partitions: u32) -> TopicConfig {
    TopicConfig::new(partitions)
        .segment_bytes(64 << 10)
        .max_record_bytes(16 << 10)
        .index_interval_bytes(512)
}

#[test]
fn round_trip_across_rolls_and_reopen() {
    let dir = TempDir::new("roundtrip");
    let values: Vec<Vec<u8>> = (0..5000u32)
        .map(|i| format!("value-{i}-{}", "x".repeat((i % 200) as usize)).into_bytes())
        .collect();
    {
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        log.create_topic("t", small_topic(1)).unwrap();
        let producer = log.producer("t").unwrap();
        for (i, v) in values.iter().enumerate() {
            let meta = producer
                .send(Record::new(v.clone()).key(format!("k{i}")))
                .unwrap();
            assert_eq!(meta.offset, i as u64);
            assert_eq!(meta.partition, 0);
        }
        let stats = log.topic("t").unwrap().partition(0).unwrap().stats();
        assert!(stats.segments > 5, "expected rolls, got {stats:?}");
        let got = read_all(&log, "t", 0);
        assert_eq!(got.len(), values.len());
        log.close().unwrap();
    }
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    assert!(log.recovery_report().clean_shutdown);
    let got = read_all(&log, "t", 0);
    assert_eq!(got.len(), values.len());
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r.offset, i as u64);
        assert_eq!(r.value.as_deref(), Some(&values[i][..]));
        assert_eq!(r.key.as_deref(), Some(format!("k{i}").as_bytes()));
    }
    // Appends continue at the right offset after reopen.
    let meta = log
        .producer("t")
        .unwrap()
        .send(Record::new("after"))
        .unwrap();
    assert_eq!(meta.offset, values.len() as u64);
}

#[test]
fn batch_send_and_consumer_poll() {
    let dir = TempDir::new("batch");
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    log.create_topic("t", small_topic(3)).unwrap();
    let producer = log.producer("t").unwrap();
    let records: Vec<Record> = (0..1000)
        .map(|i| Record::new(format!("v{i}")).key(format!("key-{}", i % 17)))
        .collect();
    let metas = producer.send_batch(&records).unwrap();
    assert_eq!(metas.len(), 1000);
    for (r, m) in records.iter().zip(&metas) {
        assert_eq!(m.partition, partition_for_key(r.key.as_ref().unwrap(), 3));
    }
    let mut consumer = log.consumer(ConsumerConfig::default());
    consumer
        .assign(
            &(0..3)
                .map(|p| TopicPartition::new("t", p))
                .collect::<Vec<_>>(),
        )
        .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 1000 {
        let batch = consumer.poll(Duration::from_secs(5)).unwrap();
        assert!(!batch.is_empty(), "poll timed out with {} seen", seen.len());
        seen.extend(batch);
    }
    let mut last = [None::<u64>; 3];
    for r in &seen {
        let p = r.partition as usize;
        assert_eq!(
            r.offset,
            last[p].map_or(0, |o| o + 1),
            "partition {p} out of order"
        );
        last[p] = Some(r.offset);
    }
    assert_eq!(consumer.poll(Duration::from_millis(10)).unwrap().len(), 0);
    let _ = Bytes::new();
}

/// Large batches are written with `pwrite`, small ones through the map; both
/// must interleave in one segment, roll, and read back after reopen.
#[test]
fn large_and_small_batches_interleave() {
    let dir = TempDir::new("mixed");
    let config = TopicConfig::new(1)
        .segment_bytes(1 << 20)
        .max_record_bytes(256 << 10);
    let mut expected = Vec::new();
    {
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        log.create_topic("t", config).unwrap();
        let producer = log.producer("t").unwrap();
        for round in 0..40u32 {
            let n = if round % 2 == 0 { 1500 } else { 3 };
            let records: Vec<Record> = (0..n)
                .map(|i| Record::new(format!("r{round}-{i}-{}", "y".repeat(90))))
                .collect();
            let metas = producer.send_batch(&records).unwrap();
            assert_eq!(metas[0].offset, expected.len() as u64);
            expected.extend(records.into_iter().map(|r| r.value.unwrap()));
            producer
                .send(Record::new(format!("single-{round}")))
                .unwrap();
            expected.push(Bytes::from(format!("single-{round}")));
        }
        assert!(
            log.topic("t")
                .unwrap()
                .partition(0)
                .unwrap()
                .stats()
                .segments
                > 3
        );
        let got = read_all(&log, "t", 0);
        assert_eq!(got.len(), expected.len());
    }
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let got = read_all(&log, "t", 0);
    assert_eq!(got.len(), expected.len());
    for (i, (r, v)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(r.offset, i as u64);
        assert_eq!(r.value.as_ref(), Some(v));
    }
}

/// The borrowed iterator returns exactly what `Partition::read` returns,
/// starting at the offset asked for even inside a batch.
#[test]
fn borrowed_records_match_owned_records() {
    let dir = TempDir::new("views");
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let topic = log.create_topic("t", small_topic(1)).unwrap();
    let producer = log.producer("t").unwrap();
    let records: Vec<Record> = (0..300)
        .map(|i| {
            let r = if i % 10 == 3 {
                Record::tombstone(format!("k{i}"))
            } else {
                Record::new(format!("v{i}")).key(format!("k{i}"))
            };
            if i % 4 == 0 {
                r.header("h", format!("x{i}"))
            } else {
                r
            }
        })
        .collect();
    producer.send_batch(&records[..150]).unwrap();
    for r in &records[150..] {
        producer.send(r.clone()).unwrap();
    }
    let p = topic.partition(0).unwrap();
    for from in [0u64, 1, 77, 149, 150, 299] {
        let owned = p.read(from, 10_000).unwrap();
        let fetched = p.fetch(from, 1 << 20).unwrap();
        let views: Vec<RecordView<'_>> = fetched.records().collect::<Result<_>>().unwrap();
        assert_eq!(views.first().map(|v| v.offset), Some(from));
        assert_eq!(views.len(), owned.len().min(views.len()));
        for (v, o) in views.iter().zip(&owned) {
            assert_eq!(v.offset, o.offset);
            assert_eq!(v.timestamp, o.timestamp);
            assert_eq!(v.key, o.key.as_deref());
            assert_eq!(v.value, o.value.as_deref());
            let headers: Vec<(String, Option<Vec<u8>>)> = v
                .headers()
                .map(|(k, v)| (k.to_string(), v.map(<[u8]>::to_vec)))
                .collect();
            let expected: Vec<(String, Option<Vec<u8>>)> = o
                .headers
                .iter()
                .map(|h| (h.key.clone(), h.value.as_ref().map(|v| v.to_vec())))
                .collect();
            assert_eq!(headers, expected);
        }
    }
}

/// With nothing assigned, `poll` waits out its timeout instead of returning
/// at once (which would make a polling loop spin a core).
#[test]
fn poll_without_assignment_waits_for_the_timeout() {
    let dir = TempDir::new("unassigned");
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let mut consumer = log.consumer(ConsumerConfig::default());
    let started = std::time::Instant::now();
    assert!(consumer.poll(Duration::from_millis(30)).unwrap().is_empty());
    // A lower bound only: the call may not return before its deadline.
    assert!(started.elapsed() >= Duration::from_millis(30));
}
