//! `ConsumerRecords`, what `Consumer::poll` and `ConsumerGroup::poll`
//! return: borrowed iteration, owned iteration and `Partition::read` give
//! the same records (keys, empty and null fields, tombstones, headers with
//! null values, explicit timestamps); `get`, `partitions` and `records(tp)`
//! agree with iteration; `max_poll_records` bounds each poll; a container
//! held across appends, rolls and retention deleting its segment still
//! reads the same bytes; a group member's poll returns the same records;
//! the container moves between threads.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use common::TempDir;
use logbus::*;
use proptest::prelude::*;

const WAIT: Duration = Duration::from_millis(200);

/// A record's content as plain data, to compare the three read paths.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Plain {
    topic: String,
    partition: u32,
    offset: u64,
    timestamp: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

fn of_polled(r: &PolledRecord<'_>) -> Plain {
    Plain {
        topic: r.topic.to_owned(),
        partition: r.partition,
        offset: r.offset,
        timestamp: r.timestamp,
        key: r.key.map(<[u8]>::to_vec),
        value: r.value.map(<[u8]>::to_vec),
        headers: r
            .headers()
            .map(|(k, v)| (k.to_owned(), v.map(<[u8]>::to_vec)))
            .collect(),
    }
}

fn of_owned(r: &ConsumerRecord) -> Plain {
    Plain {
        topic: r.topic.to_string(),
        partition: r.partition,
        offset: r.offset,
        timestamp: r.timestamp,
        key: r.key.as_ref().map(|k| k.to_vec()),
        value: r.value.as_ref().map(|v| v.to_vec()),
        headers: r
            .headers
            .iter()
            .map(|h| (h.key.clone(), h.value.as_ref().map(|v| v.to_vec())))
            .collect(),
    }
}

/// Every path over one `ConsumerRecords` must agree: `iter`, `&records`,
/// `get(i)`, `records(tp)` per `partitions()`, each borrowed record's
/// `to_owned`, and owned iteration. Returns the records (owned iteration's).
fn check_paths(records: ConsumerRecords) -> Vec<Plain> {
    let borrowed: Vec<Plain> = records.iter().map(|r| of_polled(&r)).collect();
    assert_eq!(records.len(), borrowed.len());
    assert_eq!(records.is_empty(), borrowed.is_empty());
    assert_eq!(records.iter().len(), borrowed.len(), "exact size");
    let by_ref: Vec<Plain> = (&records).into_iter().map(|r| of_polled(&r)).collect();
    assert_eq!(by_ref, borrowed);
    let indexed: Vec<Plain> = (0..records.len())
        .map(|i| of_polled(&records.get(i).expect("in bounds")))
        .collect();
    assert_eq!(indexed, borrowed);
    assert!(records.get(records.len()).is_none());
    assert!(records.get(usize::MAX).is_none());
    let to_owned: Vec<Plain> = records.iter().map(|r| of_owned(&r.to_owned())).collect();
    assert_eq!(to_owned, borrowed);
    // Partition by partition, in the order iteration gives them.
    let mut regrouped = Vec::new();
    let tps: Vec<TopicPartition> = records.partitions().cloned().collect();
    for tp in &tps {
        let of_tp: Vec<Plain> = records.records(tp).map(|r| of_polled(&r)).collect();
        assert!(!of_tp.is_empty(), "{tp:?} listed without records");
        assert!(
            of_tp
                .iter()
                .all(|r| r.topic == tp.topic && r.partition == tp.partition)
        );
        assert!(of_tp.windows(2).all(|w| w[0].offset < w[1].offset));
        regrouped.extend(of_tp);
    }
    assert_eq!(regrouped, borrowed);
    let mut distinct = tps.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), tps.len(), "each partition listed once");
    let owned: Vec<Plain> = records.clone().into_iter().map(|r| of_owned(&r)).collect();
    assert_eq!(owned, borrowed);
    assert_eq!(records.into_iter().len(), borrowed.len());
    owned
}

/// Polls until `want` records came, checking every poll with `check_paths`.
fn poll_all(consumer: &mut Consumer, want: usize, max_poll: usize) -> Vec<Plain> {
    let mut out = Vec::new();
    while out.len() < want {
        let records = consumer.poll(WAIT).unwrap();
        assert!(!records.is_empty(), "nothing after {} of {want}", out.len());
        assert!(records.len() <= max_poll, "{} > {max_poll}", records.len());
        out.extend(check_paths(records));
    }
    assert!(consumer.poll(Duration::ZERO).unwrap().is_empty());
    out
}

/// Everything stored, through `Partition::read`.
fn read_back(log: &Log, topic: &str, partitions: u32) -> Vec<Plain> {
    let topic_handle = log.topic(topic).unwrap();
    let mut out = Vec::new();
    for p in 0..partitions {
        let partition = topic_handle.partition(p).unwrap();
        let mut at = 0;
        while at < partition.log_end_offset() {
            let got = partition.read(at, 1000).unwrap();
            at = got.last().unwrap().offset + 1;
            out.extend(got.iter().map(of_owned));
        }
    }
    out
}

/// Sorted by (partition, offset): a poll interleaves partitions.
fn by_partition(mut v: Vec<Plain>) -> Vec<Plain> {
    v.sort_by_key(|r| (r.partition, r.offset));
    v
}

fn bytes_field() -> impl Strategy<Value = Option<Vec<u8>>> {
    // Empty fields often: `Some(empty)` must not read back as `None`.
    prop::option::of(prop::collection::vec(any::<u8>(), 0..40))
}

fn record() -> impl Strategy<Value = Record> {
    (
        bytes_field(),
        bytes_field(),
        prop::collection::vec(("[a-z]{0,6}", bytes_field()), 0..4),
        prop::option::of(0i64..2_000_000_000_000),
        0u32..3,
    )
        .prop_map(|(key, value, headers, timestamp, partition)| Record {
            key: key.map(Bytes::from),
            value: value.map(Bytes::from),
            headers: headers
                .into_iter()
                .map(|(k, v)| Header {
                    key: k,
                    value: v.map(Bytes::from),
                })
                .collect(),
            timestamp,
            partition: Some(partition),
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Borrowed records, owned records and `Partition::read` agree on
    /// every field, over three partitions and any `max_poll_records`.
    #[test]
    fn borrowed_owned_and_read_agree(
        batches in prop::collection::vec(prop::collection::vec(record(), 1..30), 1..8),
        max_poll in 1usize..60,
    ) {
        let dir = TempDir::new("records-prop");
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        log.create_topic("p", TopicConfig::new(3)).unwrap();
        let producer = log.producer("p").unwrap();
        let mut sent = 0;
        for batch in &batches {
            producer.send_batch(batch).unwrap();
            sent += batch.len();
        }
        let mut consumer = log.consumer(ConsumerConfig::default().max_poll_records(max_poll));
        let tps: Vec<TopicPartition> = (0..3).map(|p| TopicPartition::new("p", p)).collect();
        consumer.assign(&tps).unwrap();
        let polled = poll_all(&mut consumer, sent, max_poll);
        prop_assert_eq!(polled.len(), sent);
        let stored = read_back(&log, "p", 3);
        prop_assert_eq!(by_partition(polled), stored.clone());
        // What was sent, field by field (timestamps where explicit).
        let mut sent_by_partition: Vec<Vec<&Record>> = vec![Vec::new(); 3];
        for r in batches.iter().flatten() {
            sent_by_partition[r.partition.unwrap() as usize].push(r);
        }
        let sent_in_order = sent_by_partition.into_iter().flatten();
        for (got, want) in stored.iter().zip(sent_in_order) {
            prop_assert_eq!(got.key.as_deref(), want.key.as_deref());
            prop_assert_eq!(got.value.as_deref(), want.value.as_deref());
            let headers: Vec<(String, Option<Vec<u8>>)> = want
                .headers
                .iter()
                .map(|h| (h.key.clone(), h.value.as_ref().map(|v| v.to_vec())))
                .collect();
            prop_assert_eq!(&got.headers, &headers);
            if let Some(ts) = want.timestamp {
                prop_assert_eq!(got.timestamp, ts);
            }
        }
        log.close().unwrap();
    }
}

fn value(p: u32, i: u64) -> Vec<u8> {
    format!("p{p}-{i:04}").into_bytes()
}

/// `n` records on each of `partitions` partitions of a new topic `topic`.
fn fill(log: &Log, topic: &str, partitions: u32, n: u64) {
    log.create_topic(topic, TopicConfig::new(partitions))
        .unwrap();
    let producer = log.producer(topic).unwrap();
    for p in 0..partitions {
        let batch: Vec<Record> = (0..n)
            .map(|i| Record::new(value(p, i)).key(format!("k{i}")).partition(p))
            .collect();
        producer.send_batch(&batch).unwrap();
    }
}

#[test]
fn partitions_and_records_per_partition() {
    let dir = TempDir::new("records-parts");
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    fill(&log, "m", 4, 5);
    let mut consumer = log.consumer(ConsumerConfig::default());
    let tps: Vec<TopicPartition> = (0..4).map(|p| TopicPartition::new("m", p)).collect();
    // Partition 3 is assigned but gets no records: not listed.
    consumer.assign(&tps).unwrap();
    consumer.seek_to_end(&tps[3..]).unwrap();
    let records = consumer.poll(WAIT).unwrap();
    assert_eq!(records.len(), 15);
    let mut listed: Vec<TopicPartition> = records.partitions().cloned().collect();
    listed.sort();
    assert_eq!(listed, &tps[..3]);
    for tp in &tps[..3] {
        let got: Vec<(u64, Vec<u8>)> = records
            .records(tp)
            .map(|r| (r.offset, r.value.unwrap().to_vec()))
            .collect();
        let want: Vec<(u64, Vec<u8>)> = (0..5).map(|i| (i, value(tp.partition, i))).collect();
        assert_eq!(got, want, "{tp:?}");
        assert_eq!(records.records(tp).len(), 5);
    }
    assert_eq!(records.records(&tps[3]).count(), 0);
    assert_eq!(records.records(&TopicPartition::new("other", 0)).count(), 0);
    // `get` walks the partitions in iteration order, up to the bound.
    let offsets: Vec<(u32, u64)> = records.iter().map(|r| (r.partition, r.offset)).collect();
    for (i, want) in offsets.iter().enumerate() {
        let r = records.get(i).unwrap();
        assert_eq!((r.partition, r.offset), *want);
    }
    assert!(records.get(15).is_none());
    // Debug names the partitions and counts, not the bytes.
    let debug = format!("{records:?}");
    assert!(
        debug.contains("len: 15") && debug.contains("\"m-0\": 5"),
        "{debug}"
    );
    assert!(!debug.contains("p0-0000"), "{debug}");
    let empty = ConsumerRecords::empty();
    assert!(empty.is_empty() && empty.get(0).is_none() && empty.iter().next().is_none());
    assert_eq!(empty.partitions().count(), 0);
}

#[test]
fn max_poll_records_bounds_each_poll_and_positions_follow() {
    let dir = TempDir::new("records-max");
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    fill(&log, "m", 2, 25);
    let tps: Vec<TopicPartition> = (0..2).map(|p| TopicPartition::new("m", p)).collect();
    for max in [1, 7, 25, 50, 1000] {
        let mut consumer = log.consumer(ConsumerConfig::default().max_poll_records(max));
        consumer.assign(&tps).unwrap();
        let mut seen: BTreeMap<u32, u64> = BTreeMap::new();
        let mut polls = 0;
        while seen.values().sum::<u64>() < 50 {
            let records = consumer.poll(WAIT).unwrap();
            polls += 1;
            assert!(
                !records.is_empty() && records.len() <= max,
                "{max}: {}",
                records.len()
            );
            for r in &records {
                let next = seen.entry(r.partition).or_default();
                assert_eq!(r.offset, *next, "max {max}: in order, none skipped");
                assert_eq!(r.value, Some(&value(r.partition, r.offset)[..]));
                *next += 1;
            }
            // The position is past what was returned, also when the
            // container is dropped unread.
            for tp in &tps {
                let want = seen.get(&tp.partition).copied().unwrap_or(0);
                assert_eq!(consumer.position(tp).unwrap(), want);
            }
        }
        assert_eq!(polls, 50usize.div_ceil(max.min(50)).max(1), "max {max}");
        assert!(consumer.poll(Duration::ZERO).unwrap().is_empty());
    }
}

/// Was: a poll that filled `max_poll_records` from one partition set the
/// next poll's first partition modulo the records taken instead of the
/// partitions assigned, so with `max_poll_records(1)` partition 0 was read
/// until empty before any other (round robin lost).
#[test]
fn polls_that_fill_up_go_round_the_partitions() {
    let dir = TempDir::new("records-round");
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    fill(&log, "m", 3, 4);
    let tps: Vec<TopicPartition> = (0..3).map(|p| TopicPartition::new("m", p)).collect();
    let mut consumer = log.consumer(ConsumerConfig::default().max_poll_records(1));
    consumer.assign(&tps).unwrap();
    let order: Vec<u32> = (0..6)
        .map(|_| consumer.poll(WAIT).unwrap().get(0).unwrap().partition)
        .collect();
    assert_eq!(order, [0, 1, 2, 0, 1, 2]);
}

/// The container holds the fetched bytes (the mapped segment itself): they
/// read the same after later appends, rolls, and retention deleting the
/// segment's files.
#[test]
fn records_held_across_appends_rolls_and_retention_stay_valid() {
    let dir = TempDir::new("records-held");
    let log = Log::open(
        dir.path(),
        LogConfig::default().background_maintenance(false),
    )
    .unwrap();
    let config = TopicConfig::new(1)
        .segment_bytes(4096)
        .max_record_bytes(2048)
        .segment_ms(None)
        .retention_ms(None)
        .retention_bytes(Some(0));
    let topic = log.create_topic("h", config).unwrap();
    let partition = topic.partition(0).unwrap().clone();
    let producer = log.producer("h").unwrap();
    let big = |i: u64| {
        let mut v = format!("record-{i}-").into_bytes();
        v.resize(900, b'0' + (i % 10) as u8);
        v
    };
    for i in 0..3 {
        producer
            .send(
                Record::new(big(i))
                    .key(format!("k{i}"))
                    .header("i", format!("{i}")),
            )
            .unwrap();
    }
    let mut consumer = log.consumer(ConsumerConfig::default());
    consumer.assign(&[TopicPartition::new("h", 0)]).unwrap();
    let held = consumer.poll(WAIT).unwrap();
    assert_eq!(held.len(), 3);
    let before: Vec<Plain> = held.iter().map(|r| of_polled(&r)).collect();
    // Appends roll the segment several times over...
    for i in 3..40 {
        producer.send(Record::new(big(i))).unwrap();
    }
    // ...and retention deletes every sealed segment, the held one too.
    let summary = log.maintain().unwrap();
    assert!(summary.segments_deleted >= 3, "{summary:?}");
    assert!(partition.log_start_offset() > 3);
    assert!(!dir.path().join("h/0/00000000000000000000.log").exists());
    let after: Vec<Plain> = held.iter().map(|r| of_polled(&r)).collect();
    assert_eq!(after, before);
    for (i, r) in after.iter().enumerate() {
        assert_eq!(r.value.as_deref(), Some(&big(i as u64)[..]));
        assert_eq!(
            r.headers,
            [("i".to_owned(), Some(format!("{i}").into_bytes()))]
        );
    }
    // Owned records made now share the same (deleted) segment's bytes.
    let owned = held.into_vec();
    assert_eq!(owned.iter().map(of_owned).collect::<Vec<_>>(), before);
    // The consumer moves on past the deleted records (reset: earliest).
    let next = consumer.poll(WAIT).unwrap();
    assert_eq!(
        next.get(0).map(|r| r.offset),
        Some(partition.log_start_offset())
    );
    log.close().unwrap();
}

/// A consumer group member's poll returns the same container, with the
/// same records a standalone consumer reads, and commits past them.
#[test]
fn group_poll_returns_the_same_records() {
    let dir = TempDir::new("records-group");
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    fill(&log, "g", 3, 20);
    let mut consumer = log.consumer(ConsumerConfig::default());
    let tps: Vec<TopicPartition> = (0..3).map(|p| TopicPartition::new("g", p)).collect();
    consumer.assign(&tps).unwrap();
    let standalone = by_partition(poll_all(&mut consumer, 60, 500));

    let config = GroupConfig::default().auto_commit(false);
    let mut member = ConsumerGroup::join(&log, "readers", &["g"], config).unwrap();
    let mut polled = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while polled.len() < 60 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} of 60",
            polled.len()
        );
        polled.extend(check_paths(member.poll(WAIT).unwrap()));
    }
    assert_eq!(by_partition(polled), standalone);
    member.commit().unwrap();
    for tp in &tps {
        assert_eq!(member.committed(tp).map(|c| c.offset), Some(20));
    }
    member.leave().unwrap();
    log.close().unwrap();
}

/// A poll's records can move to (or be shared with) another thread, as a
/// `Vec` of owned records could.
#[test]
fn records_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<ConsumerRecords>();
    send_sync::<PolledRecord<'_>>();
    send_sync::<RecordsIter<'_>>();
    send_sync::<RecordsIntoIter>();
    let dir = TempDir::new("records-send");
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    fill(&log, "s", 1, 3);
    let mut consumer = log.consumer(ConsumerConfig::default());
    consumer.assign(&[TopicPartition::new("s", 0)]).unwrap();
    let records = consumer.poll(WAIT).unwrap();
    let values = std::thread::spawn(move || {
        records
            .iter()
            .map(|r| r.value.unwrap().to_vec())
            .collect::<Vec<_>>()
    })
    .join()
    .unwrap();
    assert_eq!(values, (0..3).map(|i| value(0, i)).collect::<Vec<_>>());
}

/// Makes the last record of batch `k` of the segment file `seg` malformed
/// (its header count, the batch's last byte, says one header where there
/// is none) and writes a CRC that matches: only a crafted batch (or a
/// writer bug) is like that. Returns the batch's first offset and size.
fn craft_malformed_record(seg: &std::path::Path, k: usize) -> (u64, usize) {
    let mut bytes = std::fs::read(seg).unwrap();
    let span = common::batch_spans(&bytes)[k];
    let end = span.start + span.len;
    assert_eq!(bytes[end - 1], 0, "no headers");
    bytes[end - 1] = 2; // zigzag 1
    let crc = crc32c::crc32c(&bytes[span.start + 21..end]);
    bytes[span.start + 17..span.start + 21].copy_from_slice(&crc.to_be_bytes());
    std::fs::write(seg, &bytes).unwrap();
    (span.base_offset, span.records as usize)
}

/// `poll` checks the structure of every record of a batch it has not
/// checked before (with its CRC, once per process) and reports a batch
/// with a valid CRC and a malformed record as `Error::Corrupt`, also after
/// a recovery scan (which checks CRCs only); the records before it come,
/// iteration never panics, and nothing after the damage is returned.
#[test]
fn a_crafted_batch_with_a_valid_crc_is_corrupt_at_poll() {
    for clean in [true, false] {
        let dir = TempDir::new("records-crafted");
        {
            let log = Log::open(dir.path(), LogConfig::default()).unwrap();
            let config = TopicConfig::new(1)
                .segment_bytes(4096)
                .max_record_bytes(1024)
                .index_interval_bytes(256);
            log.create_topic("c", config).unwrap();
            let producer = log.producer("c").unwrap();
            for b in 0..20u64 {
                let batch: Vec<Record> =
                    (0..10).map(|i| Record::new(value(0, b * 10 + i))).collect();
                producer.send_batch(&batch).unwrap();
            }
            log.close().unwrap();
        }
        let files = common::log_files(&dir.path().join("c").join("0"));
        // Clean: a sealed segment, before its last index entry (a clean
        // open does not read it). Crash: the active segment, which the
        // recovery scan reads (CRCs only).
        let seg = if clean {
            &files[0]
        } else {
            files.last().unwrap()
        };
        let (victim, _) = craft_malformed_record(seg, 1);
        if !clean {
            std::fs::remove_file(dir.path().join(".clean_shutdown")).unwrap();
        }
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        let tp = TopicPartition::new("c", 0);
        let start = victim - 10;
        let mut consumer = log.consumer(ConsumerConfig::default().max_poll_records(10));
        consumer.assign(std::slice::from_ref(&tp)).unwrap();
        consumer.seek(&tp, start).unwrap();
        // The batch before the damage, whole (the poll is full before the
        // damaged batch is looked at).
        let records = consumer.poll(WAIT).unwrap();
        let offsets: Vec<u64> = records.iter().map(|r| r.offset).collect();
        assert_eq!(
            offsets,
            (start..victim).collect::<Vec<_>>(),
            "clean {clean}"
        );
        assert_eq!(records.into_vec().len(), 10);
        for _ in 0..2 {
            match consumer.poll(WAIT) {
                Err(Error::Corrupt { path, .. }) => assert_eq!(&path, seg),
                other => panic!("clean {clean}: {:?}", other.map(|r| r.len())),
            }
            assert_eq!(consumer.position(&tp).unwrap(), victim);
        }
        // A poll that would take records of the damaged batch fails whole
        // (with room for more: none of the batch is returned).
        let mut consumer = log.consumer(ConsumerConfig::default());
        consumer.assign(std::slice::from_ref(&tp)).unwrap();
        consumer.seek(&tp, start).unwrap();
        assert!(matches!(consumer.poll(WAIT), Err(Error::Corrupt { .. })));
        assert_eq!(consumer.position(&tp).unwrap(), start);
        // Every reader agrees.
        let p = log.topic("c").unwrap().partition(0).unwrap().clone();
        assert!(matches!(p.read(victim, 100), Err(Error::Corrupt { .. })));
        let n = consumer.poll_each(WAIT, |_, _| {});
        assert!(matches!(n, Err(Error::Corrupt { .. })), "{n:?}");
    }
}
