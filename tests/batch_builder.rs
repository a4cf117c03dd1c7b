//! `BatchBuilder`: records encoded as they are pushed. The bytes on disk are
//! the ones `send_batch` writes for the same records, offsets come back
//! consecutive in push order (also across several batches and with other
//! producers writing), partition routing follows keys and explicit
//! partitions, and a refused record or a refused send loses nothing.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{TempDir, batch_spans, crash_copy, fast_temp_dir, log_files, read_all};
use logbus::*;
use proptest::prelude::*;

fn open_with_clock(dir: &TempDir, clock: Arc<ManualClock>) -> Log {
    Log::open(
        dir.path(),
        LogConfig::default()
            .clock(clock)
            .background_maintenance(false),
    )
    .unwrap()
}

fn arb_record() -> impl Strategy<Value = Record> {
    let bytes = || proptest::collection::vec(any::<u8>(), 0..300);
    (
        proptest::option::of(bytes()),
        proptest::option::of(bytes()),
        proptest::collection::vec(("[a-z]{0,8}", proptest::option::of(bytes())), 0..3),
        proptest::option::of(-1_000_000i64..1_000_000),
    )
        .prop_map(|(key, value, headers, ts)| Record {
            key: key.map(Bytes::from),
            value: value.map(Bytes::from),
            headers: headers
                .into_iter()
                .map(|(k, v)| Header {
                    key: k,
                    value: v.map(Bytes::from),
                })
                .collect(),
            timestamp: ts.map(|t| 1_700_000_000_000 + t),
            partition: None,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The builder writes byte for byte what `send_batch` writes for the
    /// same records at the same clock: Kafka's batch format, one encoder.
    #[test]
    fn writes_the_bytes_send_batch_writes(records in proptest::collection::vec(arb_record(), 1..40)) {
        let dir = fast_temp_dir("builder-bytes");
        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        let log = open_with_clock(&dir, Arc::clone(&clock));
        let config = TopicConfig::new(1).max_record_bytes(64 << 10);
        log.create_topic("a", config.clone()).unwrap();
        log.create_topic("b", config).unwrap();
        log.producer("a").unwrap().send_batch(&records).unwrap();
        let producer = log.producer("b").unwrap();
        let mut batch = producer.batch();
        for r in &records {
            batch.push(r).unwrap();
        }
        prop_assert_eq!(batch.len(), records.len());
        let sent = batch.send().unwrap();
        prop_assert_eq!(sent.offsets(), 0..records.len() as u64);
        log.close().unwrap();
        let a = log_files(&dir.path().join("a").join("0"));
        let b = log_files(&dir.path().join("b").join("0"));
        prop_assert_eq!(std::fs::read(&a[0]).unwrap(), std::fs::read(&b[0]).unwrap());
    }
}

#[test]
fn many_batches_round_trip_with_consecutive_offsets() {
    let dir = TempDir::new("builder-roundtrip");
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    // Small batches and segments: one send spans batches and segment rolls.
    let config = TopicConfig::new(1)
        .segment_bytes(64 << 10)
        .max_record_bytes(4 << 10);
    log.create_topic("t", config).unwrap();
    let producer = log.producer("t").unwrap();
    let mut batch = producer.batch();
    let mut expected = Vec::new();
    for round in 0..3u32 {
        for i in 0..5_000u32 {
            let value = format!("{round}-{i}-{}", "v".repeat((i % 50) as usize));
            batch.push_value(value.as_bytes()).unwrap();
            expected.push(value);
        }
        assert!(batch.encoded_len() > 4 << 10, "several batches' worth");
        let sent = batch.send().unwrap();
        assert_eq!(
            sent.offsets(),
            u64::from(round) * 5_000..u64::from(round + 1) * 5_000
        );
        assert!(batch.is_empty());
        assert_eq!(batch.encoded_len(), 0);
    }
    let p = log.topic("t").unwrap().partition(0).unwrap().clone();
    assert!(p.stats().segments > 3, "the sends rolled segments");
    let got = read_all(&log, "t", 0);
    assert_eq!(got.len(), expected.len());
    for (i, (r, want)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(r.offset, i as u64);
        assert_eq!(r.value.as_deref(), Some(want.as_bytes()));
        assert_eq!(r.key, None);
    }
    // Stored batches stay within max_record_bytes.
    let sizes: Vec<usize> = log_files(&dir.path().join("t").join("0"))
        .iter()
        .flat_map(|f| batch_spans(&std::fs::read(f).unwrap()))
        .map(|b| b.len)
        .collect();
    assert!(sizes.len() > 3);
    assert!(sizes.iter().all(|&s| s <= 4 << 10), "{sizes:?}");
}

#[test]
fn keys_and_explicit_partitions_route_the_batch() {
    let dir = TempDir::new("builder-route");
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    log.create_topic("t", TopicConfig::new(4)).unwrap();
    let producer = log.producer("t").unwrap();
    let keys: Vec<Vec<u8>> = (0..64u32)
        .map(|i| format!("key-{i}").into_bytes())
        .collect();
    let home = partition_for_key(&keys[0], 4);
    let other = keys
        .iter()
        .find(|k| partition_for_key(k, 4) != home)
        .expect("64 keys over 4 partitions");

    // The first key fixes the partition; a key of another one is refused.
    let mut batch = producer.batch();
    batch.push_value(b"keyless first").unwrap();
    batch.push_keyed(&keys[0], Some(b"v0")).unwrap();
    match batch.push_keyed(other, Some(b"elsewhere")) {
        Err(Error::PartitionMismatch {
            batch: b, record, ..
        }) => assert_eq!((b, record), (home, partition_for_key(other, 4))),
        other => panic!("expected PartitionMismatch, got {other:?}"),
    }
    assert_eq!(batch.len(), 2, "the refused record was not added");
    batch.push_keyed(&keys[0], None).unwrap(); // a tombstone
    let sent = batch.send().unwrap();
    assert_eq!((sent.partition, sent.records), (home, 3));
    let got = read_all(&log, "t", home);
    assert_eq!(got.len(), 3);
    assert_eq!(got[1].key.as_deref(), Some(&keys[0][..]));
    assert_eq!(got[2].value, None);

    // An explicit partition on a record works like a key.
    let mut batch = producer.batch();
    batch.push(&Record::new("p2").partition(2)).unwrap();
    assert!(matches!(
        batch.push(&Record::new("p3").partition(3)),
        Err(Error::PartitionMismatch { .. })
    ));
    assert!(matches!(
        batch.push(&Record::new("p9").partition(9)),
        Err(Error::UnknownPartition { partition: 9, .. })
    ));
    assert_eq!(batch.send().unwrap().partition, 2);

    // to_partition sends everything there, keys or not.
    let mut batch = producer.batch();
    assert!(matches!(
        batch.to_partition(4),
        Err(Error::UnknownPartition { .. })
    ));
    batch.to_partition(1).unwrap();
    for k in &keys {
        batch.push_keyed(k, Some(b"v")).unwrap();
    }
    let sent = batch.send().unwrap();
    assert_eq!((sent.partition, sent.records), (1, keys.len()));

    // Keyless batches take the sticky partition, and the choice resets on send.
    let mut batch = producer.batch();
    batch.push_value(b"anywhere").unwrap();
    let sent = batch.send().unwrap();
    assert!(sent.partition < 4);
    batch.push_keyed(other, Some(b"v")).unwrap();
    assert_eq!(batch.send().unwrap().partition, partition_for_key(other, 4));
}

#[test]
fn a_record_too_large_is_refused_alone_and_the_rest_is_sent() {
    let dir = TempDir::new("builder-too-large");
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    log.create_topic("t", TopicConfig::new(1).max_record_bytes(1024))
        .unwrap();
    let producer = log.producer("t").unwrap();
    let mut batch = producer.batch();
    for i in 0..10u8 {
        batch.push_value(&[i; 100]).unwrap();
    }
    match batch.push_value(&[0; 2000]) {
        Err(Error::RecordTooLarge { size, max }) => assert!(size > max && max == 1024),
        other => panic!("expected RecordTooLarge, got {other:?}"),
    }
    assert_eq!(batch.len(), 10);
    // Just under the limit alone: starts a batch of its own.
    batch.push_value(&[7; 900]).unwrap();
    let sent = batch.send().unwrap();
    assert_eq!(sent.offsets(), 0..11);
    let got = read_all(&log, "t", 0);
    assert_eq!(got.len(), 11);
    assert_eq!(got[9].value.as_deref(), Some(&[9u8; 100][..]));
    assert_eq!(got[10].value.as_deref(), Some(&[7u8; 900][..]));
}

#[test]
fn an_empty_send_reports_the_log_end_and_writes_nothing() {
    let dir = TempDir::new("builder-empty");
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    log.create_topic("t", TopicConfig::new(1)).unwrap();
    let producer = log.producer("t").unwrap();
    producer.send(Record::new("one")).unwrap();
    let mut batch = producer.batch();
    let sent = batch.send().unwrap();
    assert_eq!((sent.base_offset, sent.records), (1, 0));
    assert!(sent.offsets().is_empty());
    batch.push_value(b"x").unwrap();
    batch.clear();
    assert_eq!(batch.send().unwrap().records, 0);
    assert_eq!(
        log.topic("t")
            .unwrap()
            .partition(0)
            .unwrap()
            .log_end_offset(),
        1
    );
}

#[test]
fn records_without_a_timestamp_get_the_first_push_time() {
    let dir = TempDir::new("builder-time");
    let clock = Arc::new(ManualClock::new(10_000));
    let log = open_with_clock(&dir, Arc::clone(&clock));
    log.create_topic("t", TopicConfig::new(1)).unwrap();
    let producer = log.producer("t").unwrap();
    let mut batch = producer.batch();
    batch.push_value(b"a").unwrap();
    clock.advance(Duration::from_millis(500));
    batch.push_value(b"b").unwrap();
    batch.push(&Record::new("c").timestamp(5)).unwrap();
    batch.push(&Record::new("d").timestamp(i64::MAX)).unwrap();
    batch.send().unwrap();
    clock.advance(Duration::from_millis(500));
    batch.push_value(b"e").unwrap();
    batch.send().unwrap();
    let got: Vec<i64> = read_all(&log, "t", 0).iter().map(|r| r.timestamp).collect();
    assert_eq!(got, [10_000, 10_000, 5, i64::MAX, 11_000]);
}

#[test]
fn concurrent_builders_each_get_one_consecutive_range() {
    let dir = TempDir::new("builder-concurrent");
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    log.create_topic("t", TopicConfig::new(1).max_record_bytes(2048))
        .unwrap();
    let threads: Vec<_> = (0..4u32)
        .map(|t| {
            let producer = log.producer("t").unwrap();
            std::thread::spawn(move || {
                let mut batch = producer.batch();
                let mut ranges = Vec::new();
                for round in 0..40u32 {
                    for i in 0..100u32 {
                        batch
                            .push_value(format!("{t}:{round}:{i:0>30}").as_bytes())
                            .unwrap();
                    }
                    ranges.push((round, batch.send().unwrap()));
                }
                ranges
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect::<Vec<_>>();
    let got = read_all(&log, "t", 0);
    assert_eq!(got.len(), 4 * 40 * 100);
    for (t, ranges) in threads.into_iter().enumerate() {
        for (round, sent) in ranges {
            assert_eq!(sent.records, 100);
            for (i, offset) in sent.offsets().enumerate() {
                let want = format!("{t}:{round}:{i:0>30}");
                assert_eq!(got[offset as usize].value.as_deref(), Some(want.as_bytes()));
            }
        }
    }
}

#[test]
fn a_refused_send_keeps_its_records_for_a_retry() {
    let dir = TempDir::new("builder-backpressure");
    let log = Log::open(
        dir.path(),
        LogConfig::default().background_maintenance(false),
    )
    .unwrap();
    let config = TopicConfig::new(1)
        .segment_bytes(4096)
        .max_record_bytes(1024)
        .retention_ms(None)
        .consumers(["slow"])
        .max_unconsumed_bytes(Some(2048));
    log.create_topic("t", config).unwrap();
    let mut producer = log.producer("t").unwrap();
    producer.set_max_block(Duration::from_millis(20));
    let p = log.topic("t").unwrap().partition(0).unwrap().clone();
    let mut batch = producer.batch();
    let mut sent = 0;
    let err = loop {
        for _ in 0..4 {
            batch.push_value(&[b'x'; 200]).unwrap();
        }
        match batch.send() {
            Ok(s) => sent += s.records,
            Err(e) => break e,
        }
        assert!(sent < 1000, "back-pressure never kicked in");
    };
    assert!(matches!(err, Error::Backpressure { .. }), "{err:?}");
    assert_eq!(
        p.log_end_offset(),
        sent as u64,
        "the refused send wrote nothing"
    );
    assert_eq!(batch.len(), 4, "and kept its records");
    // The consumer catches up; the same builder sends them.
    let mut member = ConsumerGroup::join(
        &log,
        "slow",
        &["t"],
        GroupConfig::default().auto_commit(false),
    )
    .unwrap();
    while member.assignment().is_empty() {
        member.poll(Duration::from_millis(10)).unwrap();
    }
    member
        .commit_offsets(&[(TopicPartition::new("t", 0), sent as u64)])
        .unwrap();
    member.leave().unwrap();
    let retried = batch.send().unwrap();
    assert_eq!(retried.offsets(), sent as u64..sent as u64 + 4);
}

#[test]
fn always_durability_sends_survive_an_unclean_shutdown() {
    let dir = TempDir::new("builder-always");
    let log = Log::open(
        dir.path(),
        LogConfig::default().durability(Durability::Always),
    )
    .unwrap();
    log.create_topic("t", TopicConfig::new(1)).unwrap();
    let producer = log.producer("t").unwrap();
    let mut batch = producer.batch();
    for i in 0..1000u32 {
        batch.push_value(&i.to_le_bytes()).unwrap();
    }
    assert_eq!(batch.send().unwrap().records, 1000);
    // A copy of the directory while the log is open: what a crash leaves.
    let crashed = crash_copy(dir.path(), "builder-always-copy");
    let log = Log::open(crashed.path(), LogConfig::default()).unwrap();
    assert!(!log.recovery_report().clean_shutdown);
    let got = read_all(&log, "t", 0);
    assert_eq!(got.len(), 1000);
    assert_eq!(got[999].value.as_deref(), Some(&999u32.to_le_bytes()[..]));
}
