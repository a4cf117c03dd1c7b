//! Model-based test: random sequences of create topic, send, send_batch,
//! poll, seek, roll, close + reopen and crash run against the real `Log`
//! and against a plain in-memory model (a `Vec` of records per partition
//! and a position per assigned partition). After every step the two must
//! agree: the offsets and partitions `send` returns, the records `poll`
//! returns, and, after each reopen and at the end, every record stored.
//!
//! A crash is a copy of the data directory taken while the log is open
//! (what a killed process leaves: see `common::copy_dir`); the test goes on
//! with the copy, which must hold every acknowledged record.
//!
//! The default run does `MODEL_CASES` cases (1,000); `PROPTEST_CASES`
//! changes it, e.g. the long run:
//! `PROPTEST_CASES=100000 cargo test --release --test model`.
//!
//! New operations (committing a group's offsets, retention, compaction) are
//! a new `Op` variant, its generator in `op()`, and its effect on `Model`.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::TempDir;
use logbus::*;
use proptest::prelude::*;

const T0: i64 = 1_700_000_000_000;
const TOPICS: [&str; 3] = ["t0", "t1", "t2"];
/// The default number of cases (`PROPTEST_CASES` overrides it).
const MODEL_CASES: u32 = 1_000;

/// A record as the model stores it (and as a reader must see it).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stored {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    timestamp: i64,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

/// A generated record: small values, sometimes a key, header, tombstone
/// or explicit timestamp.
#[derive(Debug, Clone)]
struct GenRecord {
    key: Option<u8>,
    value: Option<Vec<u8>>,
    header: Option<Vec<u8>>,
    timestamp: Option<i64>,
}

impl GenRecord {
    fn record(&self) -> Record {
        let mut r = match &self.value {
            Some(v) => Record::new(v.clone()),
            None => Record::tombstone(Vec::new()),
        };
        r.key = self.key.map(|k| bytes::Bytes::from(format!("key-{k}")));
        if let Some(h) = &self.header {
            r = r.header("h", h.clone());
        }
        r.timestamp = self.timestamp;
        r
    }

    fn stored(&self, now: i64) -> Stored {
        Stored {
            key: self.key.map(|k| format!("key-{k}").into_bytes()),
            value: self.value.clone(),
            timestamp: self.timestamp.unwrap_or(now),
            headers: self
                .header
                .iter()
                .map(|h| ("h".to_string(), Some(h.clone())))
                .collect(),
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    CreateTopic {
        topic: usize,
        partitions: u32,
    },
    Send {
        topic: usize,
        partition: Option<u32>,
        record: GenRecord,
    },
    SendBatch {
        topic: usize,
        partition: Option<u32>,
        records: Vec<GenRecord>,
    },
    Poll,
    /// Seek partition `which` (an index into the assignment) to a share
    /// `at` of its length, in 0..=256.
    Seek {
        which: usize,
        at: u16,
    },
    Roll {
        topic: usize,
        partition: u32,
    },
    /// Move the clock on (timestamps of records sent without one).
    Tick {
        ms: u16,
    },
    CloseReopen,
    Crash,
}

fn gen_record() -> impl Strategy<Value = GenRecord> {
    (
        proptest::option::weighted(0.6, 0u8..8),
        proptest::option::weighted(0.9, proptest::collection::vec(any::<u8>(), 0..120)),
        proptest::option::weighted(0.2, proptest::collection::vec(any::<u8>(), 0..8)),
        proptest::option::weighted(0.2, T0 - 1000..T0 + 1000),
    )
        .prop_map(|(key, value, header, timestamp)| GenRecord {
            key,
            value,
            header,
            timestamp,
        })
}

fn op() -> impl Strategy<Value = Op> {
    let topic = 0..TOPICS.len();
    let partition = proptest::option::weighted(0.3, 0u32..4);
    prop_oneof![
        2 => (topic.clone(), 1u32..=3).prop_map(|(topic, partitions)| Op::CreateTopic { topic, partitions }),
        10 => (topic.clone(), partition.clone(), gen_record())
            .prop_map(|(topic, partition, record)| Op::Send { topic, partition, record }),
        5 => (topic.clone(), partition, proptest::collection::vec(gen_record(), 0..12))
            .prop_map(|(topic, partition, records)| Op::SendBatch { topic, partition, records }),
        5 => Just(Op::Poll),
        2 => (0usize..9, 0u16..=256).prop_map(|(which, at)| Op::Seek { which, at }),
        2 => (topic, 0u32..4).prop_map(|(topic, partition)| Op::Roll { topic, partition }),
        1 => (0u16..5000).prop_map(|ms| Op::Tick { ms }),
        1 => Just(Op::CloseReopen),
        1 => Just(Op::Crash),
    ]
}

/// The in-memory model.
#[derive(Debug, Default)]
struct Model {
    /// Partition count per topic index.
    topics: BTreeMap<usize, u32>,
    /// Records per (topic, partition).
    records: BTreeMap<(usize, u32), Vec<Stored>>,
    /// The consumer's position per assigned (topic, partition).
    positions: BTreeMap<(usize, u32), u64>,
}

/// The system under test: the log, a consumer assigned every partition,
/// and the directory (a crash moves the test to a copy).
struct Real {
    dir: TempDir,
    log: Log,
    consumer: Consumer,
}

fn tp(topic: usize, partition: u32) -> TopicPartition {
    TopicPartition::new(TOPICS[topic], partition)
}

fn topic_config(partitions: u32) -> TopicConfig {
    // The smallest segments: rolls happen every few sends.
    // No retention: the model keeps every record.
    TopicConfig::new(partitions)
        .retention_ms(None)
        .segment_bytes(4096)
        .max_record_bytes(1024)
        .index_interval_bytes(128)
}

impl Real {
    fn open(dir: TempDir, clock: Arc<ManualClock>, model: &Model) -> Real {
        let log = Log::open(dir.path(), LogConfig::default().clock(clock.clone())).unwrap();
        let consumer = log.consumer(ConsumerConfig::default().wait_spin(Duration::ZERO));
        let mut real = Real { dir, log, consumer };
        real.reassign(model);
        real
    }

    /// Assigns every partition of the model and seeks each to its position.
    fn reassign(&mut self, model: &Model) {
        let tps: Vec<TopicPartition> = model.positions.keys().map(|&(t, p)| tp(t, p)).collect();
        self.consumer.assign(&tps).unwrap();
        for (&(t, p), &pos) in &model.positions {
            self.consumer.seek(&tp(t, p), pos).unwrap();
        }
    }
}

impl Model {
    fn partitions(&self, topic: usize) -> Option<u32> {
        self.topics.get(&topic).copied()
    }

    /// What a send to `topic` must fail with, if anything.
    fn send_error(&self, topic: usize, partition: Option<u32>) -> Option<&'static str> {
        match (self.partitions(topic), partition) {
            (None, _) => Some("UnknownTopic"),
            (Some(n), Some(p)) if p >= n => Some("UnknownPartition"),
            _ => None,
        }
    }

    /// Checks the partition a record went to and its offset, and stores it.
    fn appended(
        &mut self,
        topic: usize,
        explicit: Option<u32>,
        r: &GenRecord,
        meta: &RecordMetadata,
        now: i64,
    ) {
        let n = self.partitions(topic).unwrap();
        assert!(meta.partition < n, "partition {} of {n}", meta.partition);
        if let Some(p) = explicit {
            assert_eq!(meta.partition, p, "explicit partition");
        } else if let Some(k) = r.key {
            assert_eq!(
                meta.partition,
                partition_for_key(format!("key-{k}").as_bytes(), n),
                "partition of a keyed record"
            );
        }
        let stored = self.records.entry((topic, meta.partition)).or_default();
        assert_eq!(meta.offset, stored.len() as u64, "offset of a new record");
        assert_eq!(meta.timestamp, r.timestamp.unwrap_or(now), "timestamp");
        stored.push(r.stored(now));
    }
}

fn err_name(e: &Error) -> &'static str {
    match e {
        Error::UnknownTopic { .. } => "UnknownTopic",
        Error::UnknownPartition { .. } => "UnknownPartition",
        Error::TopicExists { .. } => "TopicExists",
        _ => "other",
    }
}

fn stored_of(r: &ConsumerRecord) -> Stored {
    Stored {
        key: r.key.as_ref().map(|k| k.to_vec()),
        value: r.value.as_ref().map(|v| v.to_vec()),
        timestamp: r.timestamp,
        headers: r
            .headers
            .iter()
            .map(|h| (h.key.clone(), h.value.as_ref().map(|v| v.to_vec())))
            .collect(),
    }
}

fn stored_of_polled(r: &PolledRecord<'_>) -> Stored {
    Stored {
        key: r.key.map(<[u8]>::to_vec),
        value: r.value.map(<[u8]>::to_vec),
        timestamp: r.timestamp,
        headers: r
            .headers()
            .map(|(k, v)| (k.to_owned(), v.map(<[u8]>::to_vec)))
            .collect(),
    }
}

/// Every partition holds exactly the model's records (read through
/// `FetchedBatches::records`, CRC-checked).
fn assert_all_stored(real: &Real, model: &Model) {
    for (&topic, &n) in &model.topics {
        for p in 0..n {
            let partition = real
                .log
                .topic(TOPICS[topic])
                .unwrap()
                .partition(p)
                .unwrap()
                .clone();
            let want = model.records.get(&(topic, p)).map_or(&[][..], |v| &v[..]);
            assert_eq!(partition.log_start_offset(), 0);
            assert_eq!(
                partition.log_end_offset(),
                want.len() as u64,
                "log end of {topic}/{p}"
            );
            let mut offset = 0;
            while offset < want.len() as u64 {
                let fetched = partition.fetch(offset, 4096).unwrap();
                for r in fetched.records() {
                    let r = r.unwrap();
                    assert_eq!(r.offset, offset);
                    let w = &want[offset as usize];
                    assert_eq!(r.key, w.key.as_deref(), "key at {topic}/{p}/{offset}");
                    assert_eq!(r.value, w.value.as_deref(), "value at {topic}/{p}/{offset}");
                    assert_eq!(r.timestamp, w.timestamp);
                    let headers: Vec<(String, Option<Vec<u8>>)> = r
                        .headers()
                        .map(|(k, v)| (k.to_string(), v.map(<[u8]>::to_vec)))
                        .collect();
                    assert_eq!(headers, w.headers);
                    offset += 1;
                }
            }
        }
    }
}

fn run(ops: &[Op]) {
    let mut model = Model::default();
    let clock = Arc::new(ManualClock::new(T0));
    let mut real = Real::open(common::fast_temp_dir("model"), clock.clone(), &model);
    for op in ops {
        let now = clock.now_ms();
        match op {
            Op::CreateTopic { topic, partitions } => {
                let got = real
                    .log
                    .create_topic(TOPICS[*topic], topic_config(*partitions));
                if model.topics.contains_key(topic) {
                    assert_eq!(
                        got.map(|_| ()).map_err(|e| err_name(&e)),
                        Err("TopicExists")
                    );
                } else {
                    got.unwrap();
                    model.topics.insert(*topic, *partitions);
                    for p in 0..*partitions {
                        model.positions.insert((*topic, p), 0);
                    }
                    real.reassign(&model);
                }
            }
            Op::Send {
                topic,
                partition,
                record,
            } => {
                let producer = real.log.producer(TOPICS[*topic]);
                let mut r = record.record();
                r.partition = *partition;
                let got = producer.and_then(|p| p.send(r));
                match model.send_error(*topic, *partition) {
                    Some(e) => assert_eq!(got.map(|_| ()).map_err(|e| err_name(&e)), Err(e)),
                    None => model.appended(*topic, *partition, record, &got.unwrap(), now),
                }
            }
            Op::SendBatch {
                topic,
                partition,
                records,
            } => {
                let producer = real.log.producer(TOPICS[*topic]);
                let batch: Vec<Record> = records
                    .iter()
                    .map(|g| {
                        let mut r = g.record();
                        r.partition = *partition;
                        r
                    })
                    .collect();
                let got = producer.and_then(|p| p.send_batch(&batch));
                // An empty batch has no partition to be wrong about.
                let partition_checked = if records.is_empty() { None } else { *partition };
                match model.send_error(*topic, partition_checked) {
                    Some(e) => assert_eq!(got.map(|_| ()).map_err(|e| err_name(&e)), Err(e)),
                    None => {
                        let metas = got.unwrap();
                        assert_eq!(metas.len(), records.len());
                        for (g, m) in records.iter().zip(&metas) {
                            model.appended(*topic, *partition, g, m, now);
                        }
                    }
                }
            }
            Op::Poll => {
                let available: u64 = model
                    .positions
                    .iter()
                    .map(|(k, &pos)| model.records.get(k).map_or(0, |v| v.len() as u64) - pos)
                    .sum();
                let got = real.consumer.poll(Duration::ZERO).unwrap();
                assert_eq!(
                    got.is_empty(),
                    available == 0,
                    "poll with {available} available"
                );
                for r in &got {
                    let topic = TOPICS.iter().position(|t| **t == *r.topic).unwrap();
                    let pos = model.positions.get_mut(&(topic, r.partition)).unwrap();
                    assert_eq!(r.offset, *pos, "poll order in {}/{}", r.topic, r.partition);
                    let want = &model.records[&(topic, r.partition)][r.offset as usize];
                    assert_eq!(
                        &stored_of_polled(&r),
                        want,
                        "record at {}/{}/{}",
                        r.topic,
                        r.partition,
                        r.offset
                    );
                    assert_eq!(&stored_of(&r.to_owned()), want, "owned {}", r.offset);
                    *pos += 1;
                }
            }
            Op::Seek { which, at } => {
                let Some((&key, _)) = model
                    .positions
                    .iter()
                    .nth(*which % model.positions.len().max(1))
                else {
                    continue;
                };
                let len = model.records.get(&key).map_or(0, |v| v.len() as u64);
                let offset = len * u64::from(*at) / 256;
                real.consumer.seek(&tp(key.0, key.1), offset).unwrap();
                model.positions.insert(key, offset);
            }
            Op::Roll { topic, partition } => {
                let got = real
                    .log
                    .topic(TOPICS[*topic])
                    .and_then(|t| t.partition(*partition).cloned())
                    .and_then(|p| p.roll());
                match model.send_error(*topic, Some(*partition)) {
                    Some(e) => assert_eq!(got.map_err(|e| err_name(&e)), Err(e)),
                    None => got.unwrap(),
                }
            }
            Op::Tick { ms } => clock.advance(Duration::from_millis(u64::from(*ms))),
            Op::CloseReopen => {
                let Real {
                    dir, log, consumer, ..
                } = real;
                drop(consumer);
                log.close().unwrap();
                real = Real::open(dir, clock.clone(), &model);
                assert!(real.log.recovery_report().clean_shutdown);
                assert_all_stored(&real, &model);
            }
            Op::Crash => {
                let copy = common::fast_temp_dir("model-crash");
                common::copy_dir(real.dir.path(), copy.path());
                drop(real);
                real = Real::open(copy, clock.clone(), &model);
                assert!(!real.log.recovery_report().clean_shutdown);
                assert_all_stored(&real, &model);
            }
        }
    }
    assert_all_stored(&real, &model);
    real.log.close().unwrap();
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(MODEL_CASES)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn log_matches_the_model(ops in proptest::collection::vec(op(), 1..80)) {
        run(&ops);
    }
}

/// A fixed sequence through every operation, so each is known to run
/// whatever the random cases draw.
#[test]
fn every_operation_once() {
    let record = |key: Option<u8>| GenRecord {
        key,
        value: Some(b"value".to_vec()),
        header: Some(b"h".to_vec()),
        timestamp: None,
    };
    run(&[
        Op::Send {
            topic: 0,
            partition: None,
            record: record(None),
        },
        Op::CreateTopic {
            topic: 0,
            partitions: 2,
        },
        Op::CreateTopic {
            topic: 0,
            partitions: 2,
        },
        Op::Send {
            topic: 0,
            partition: Some(1),
            record: record(Some(1)),
        },
        Op::Send {
            topic: 0,
            partition: Some(2),
            record: record(Some(1)),
        },
        Op::SendBatch {
            topic: 0,
            partition: None,
            records: (0..8).map(|k| record(Some(k))).collect(),
        },
        Op::Poll,
        Op::Seek { which: 1, at: 128 },
        Op::Roll {
            topic: 0,
            partition: 1,
        },
        Op::Tick { ms: 10 },
        Op::Send {
            topic: 0,
            partition: None,
            record: record(Some(3)),
        },
        Op::Crash,
        Op::Poll,
        Op::CloseReopen,
        Op::Poll,
    ]);
}
