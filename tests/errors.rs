//! Every error a user can meet carries the right variant and context, and
//! leaves nothing half done: invalid names create nothing, oversized records
//! write nothing, a locked directory stays untouched, a closed log refuses
//! work, and records already read outlive their topic.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use common::{TempDir, read_all};
use logbus::*;
use proptest::prelude::*;

const T0: i64 = 1_700_000_000_000;

fn config() -> LogConfig {
    LogConfig::default().clock(Arc::new(ManualClock::new(T0)))
}

fn topic_config(partitions: u32) -> TopicConfig {
    // No retention: records carry arbitrary timestamps, and the background
    // maintenance thread would delete rolled segments of old ones.
    TopicConfig::new(partitions)
        .segment_bytes(64 << 10)
        .max_record_bytes(1024)
        .index_interval_bytes(512)
        .retention_ms(None)
}

fn names_in(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn tp(topic: &str, partition: u32) -> TopicPartition {
    TopicPartition::new(topic, partition)
}

// ---------------------------------------------------------------------------
// Names, topics, partitions

#[test]
fn invalid_names_are_refused_and_create_nothing() {
    let root = TempDir::new("names");
    let dir = root.path().join("data");
    let log = Log::open(&dir, config()).unwrap();
    let root_before = names_in(root.path());
    let dir_before = names_in(&dir);

    let long = "x".repeat(250);
    for name in [
        "../x", "", &long, ".", "..", "a/b", "/abs", "a b", "~x", "x\0", "é", "..\\x",
    ] {
        match log.create_topic(name, topic_config(1)) {
            Err(Error::InvalidName { name: n, reason }) => {
                assert_eq!(n, name);
                assert!(!reason.is_empty());
            }
            other => panic!("{name:?}: expected InvalidName, got {other:?}"),
        }
        assert!(matches!(
            validate_topic_name(name),
            Err(Error::InvalidName { .. })
        ));
        // Looking an invalid name up is just an unknown topic.
        assert!(matches!(log.topic(name), Err(Error::UnknownTopic { .. })));
    }
    assert_eq!(names_in(root.path()), root_before, "outside the data dir");
    assert_eq!(names_in(&dir), dir_before, "inside the data dir");
    assert!(log.topics().is_empty());

    log.close().unwrap();
    assert_eq!(names_in(root.path()), root_before);
}

/// Kafka allows topic names of up to 249 characters, and so does
/// `validate_topic_name`. `create_topic` builds a topic under a transient
/// directory name and `delete_topic` renames it to one before removal: those
/// names must stay within the 255-byte NAME_MAX for the longest valid names
/// too (they once were `~creating-<name>` / `~deleted-<name>`, which failed
/// with ENAMETOOLONG for names of 246..=249 characters).
#[test]
fn longest_valid_topic_name_works() {
    let dir = TempDir::new("long-name");
    let log = Log::open(dir.path(), config()).unwrap();
    for len in [245, 246, 249] {
        let name = "y".repeat(len);
        validate_topic_name(&name).unwrap();
        log.create_topic(&name, topic_config(1))
            .unwrap_or_else(|e| panic!("{len} chars: {e}"));
        log.producer(&name).unwrap().send(Record::new("v")).unwrap();
    }
    log.close().unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    assert_eq!(log.topics().len(), 3);
    for len in [245, 246, 249] {
        let name = "y".repeat(len);
        assert_eq!(read_all(&log, &name, 0).len(), 1);
        log.delete_topic(&name)
            .unwrap_or_else(|e| panic!("delete {len} chars: {e}"));
    }
    assert!(log.topics().is_empty());
    log.close().unwrap();
    assert_eq!(
        names_in(dir.path()),
        [".boot_id", ".clean_shutdown", ".lock", "logbus.meta"]
            .map(String::from)
            .into()
    );
}

#[test]
fn unknown_topic_existing_topic_and_unknown_partition() {
    let dir = TempDir::new("topics");
    let log = Log::open(dir.path(), config()).unwrap();
    let unknown = |r: Result<()>| match r {
        Err(Error::UnknownTopic { topic }) => assert_eq!(topic, "nope"),
        other => panic!("expected UnknownTopic, got {other:?}"),
    };
    unknown(log.topic("nope").map(drop));
    unknown(log.producer("nope").map(drop));
    unknown(log.delete_topic("nope"));
    let mut consumer = log.consumer(ConsumerConfig::default());
    unknown(consumer.assign(&[tp("nope", 0)]));
    unknown(consumer.offsets_for_times(&[(tp("nope", 0), 0)]).map(drop));

    log.create_topic("t", topic_config(2)).unwrap();
    let producer = log.producer("t").unwrap();
    producer.send(Record::new("kept").partition(1)).unwrap();
    match log.create_topic("t", topic_config(5)) {
        Err(Error::TopicExists { topic }) => assert_eq!(topic, "t"),
        other => panic!("expected TopicExists, got {other:?}"),
    }
    // The existing topic is untouched.
    let topic = log.topic("t").unwrap();
    assert_eq!(topic.partitions().len(), 2);
    assert_eq!(
        read_all(&log, "t", 1)[0].value.as_deref(),
        Some(&b"kept"[..])
    );

    let unknown_partition = |r: Result<()>, p: u32| match r {
        Err(Error::UnknownPartition { topic, partition }) => {
            assert_eq!((topic.as_str(), partition), ("t", p));
        }
        other => panic!("expected UnknownPartition {p}, got {other:?}"),
    };
    unknown_partition(topic.partition(2).map(drop), 2);
    unknown_partition(producer.send(Record::new("x").partition(7)).map(drop), 7);
    // One bad partition in a batch: nothing of the batch is written.
    let batch = [
        Record::new("a").partition(0),
        Record::new("b").partition(9),
        Record::new("c").partition(1),
    ];
    unknown_partition(producer.send_batch(&batch).map(drop), 9);
    assert_eq!(topic.partition(0).unwrap().log_end_offset(), 0);
    assert_eq!(topic.partition(1).unwrap().log_end_offset(), 1);
    // A failed assign leaves the assignment as it was.
    consumer.assign(&[tp("t", 0)]).unwrap();
    unknown_partition(consumer.assign(&[tp("t", 1), tp("t", 3)]), 3);
    assert_eq!(consumer.assignment(), vec![tp("t", 0)]);
    match consumer.seek(&tp("t", 1), 0) {
        Err(Error::NotAssigned { topic, partition }) => {
            assert_eq!((topic.as_str(), partition), ("t", 1))
        }
        other => panic!("expected NotAssigned, got {other:?}"),
    }
    log.close().unwrap();
}

#[test]
fn invalid_configs_are_refused() {
    let dir = TempDir::new("configs");
    let interval0 = LogConfig::default().durability(Durability::Interval(Duration::ZERO));
    assert!(matches!(
        Log::open(dir.path(), interval0),
        Err(Error::InvalidConfig { .. })
    ));
    let log = Log::open(dir.path(), config()).unwrap();
    for bad in [
        TopicConfig::new(0),
        TopicConfig::new(1).segment_bytes(100),
        TopicConfig::new(1)
            .segment_bytes(8192)
            .max_record_bytes(10_000),
        TopicConfig::new(1).index_interval_bytes(0),
    ] {
        assert!(
            matches!(
                log.create_topic("t", bad.clone()),
                Err(Error::InvalidConfig { .. })
            ),
            "{bad:?}"
        );
    }
    assert!(log.topics().is_empty());
    assert_eq!(
        names_in(dir.path()),
        [".boot_id", ".lock", "logbus.meta"]
            .map(String::from)
            .into()
    );
    log.close().unwrap();
}

// ---------------------------------------------------------------------------
// The directory lock

#[test]
fn second_open_in_process_is_locked_until_close() {
    let dir = TempDir::new("lock");
    let log = Log::open(dir.path(), config()).unwrap();
    log.create_topic("t", topic_config(1)).unwrap();
    for _ in 0..2 {
        match Log::open(dir.path(), config()) {
            Err(Error::Locked { path }) => assert_eq!(path, dir.path().join(".lock")),
            other => panic!("expected Locked, got {other:?}"),
        }
    }
    // The refused open changed nothing: the first log works on.
    log.producer("t").unwrap().send(Record::new("x")).unwrap();
    log.close().unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    assert!(log.recovery_report().clean_shutdown);
    assert_eq!(read_all(&log, "t", 0).len(), 1);
    // Dropping the last handle releases the lock too.
    drop(log);
    Log::open(dir.path(), config()).unwrap().close().unwrap();
}

const LOCK_CHILD_ENV: &str = "LOGBUS_TEST_LOCK_CHILD_DIR";

/// Child side of `open_from_another_process_is_locked`: a no-op unless the
/// parent set the environment. Holds the log open until stdin closes.
#[test]
fn lock_holder_child() {
    let Ok(dir) = std::env::var(LOCK_CHILD_ENV) else {
        return;
    };
    let log = Log::open(&dir, LogConfig::default()).unwrap();
    let mut out = std::io::stdout().lock();
    // On a line of its own: the test harness has printed "test ... " before.
    writeln!(out, "\nLOCKED").unwrap();
    out.flush().unwrap();
    let mut sink = Vec::new();
    std::io::stdin().read_to_end(&mut sink).unwrap();
    log.close().unwrap();
}

#[test]
fn open_from_another_process_is_locked() {
    let dir = TempDir::new("lock-child");
    let mut child = common::reexec("lock_holder_child")
        .env(LOCK_CHILD_ENV, dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while line != "LOCKED\n" {
        line.clear();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "child exited");
    }
    let held = Log::open(dir.path(), config());
    drop(child.stdin.take()); // let the child close and exit
    let status = child.wait().unwrap();
    assert!(status.success());
    match held {
        Err(Error::Locked { path }) => assert_eq!(path, dir.path().join(".lock")),
        other => panic!("expected Locked, got {other:?}"),
    }
    let log = Log::open(dir.path(), config()).unwrap();
    assert!(
        log.recovery_report().clean_shutdown,
        "the child closed cleanly"
    );
    log.close().unwrap();
}

/// `close()` must release the directory lock even while another thread of
/// the process is spawning a child: between fork and exec the child holds a
/// copy of every descriptor (O_CLOEXEC only closes them at exec), and an
/// flock belongs to the open file description, so closing our descriptor is
/// not enough — the lock would stay held until the child execs. `DirLock`
/// unlocks with `flock(fd, LOCK_UN)` on drop. Here the child is held between fork
/// and exec (a `pre_exec` hook that sleeps) to make the window deterministic.
#[test]
fn close_releases_the_lock_while_a_child_is_being_spawned() {
    use std::os::unix::net::UnixStream;
    use std::os::unix::process::CommandExt;
    let dir = TempDir::new("lock-fork");
    let log = Log::open(dir.path(), config()).unwrap();
    let (mut forked, in_child) = UnixStream::pair().unwrap();
    let spawner = std::thread::spawn(move || {
        let mut cmd = std::process::Command::new("true");
        // SAFETY: the hook runs in the forked child before exec and only
        // makes two system calls (write and nanosleep).
        unsafe {
            cmd.pre_exec(move || {
                (&in_child).write_all(b"f")?;
                std::thread::sleep(Duration::from_millis(1500));
                Ok(())
            });
        }
        cmd.status()
    });
    let mut byte = [0u8; 1];
    forked.read_exact(&mut byte).unwrap(); // the child now holds our descriptors
    log.close().unwrap();
    let reopened = Log::open(dir.path(), config());
    spawner.join().unwrap().unwrap();
    match reopened {
        Ok(log) => log.close().unwrap(),
        Err(e) => panic!("close() did not release the lock: {e:?}"),
    }
}

// ---------------------------------------------------------------------------
// Sizes and offsets

#[test]
fn record_too_large_writes_nothing() {
    let dir = TempDir::new("too-large");
    let log = Log::open(dir.path(), config()).unwrap();
    let topic = log.create_topic("t", topic_config(3)).unwrap();
    let producer = log.producer("t").unwrap();
    let too_large = |r: Result<()>| match r {
        Err(Error::RecordTooLarge { size, max }) => {
            assert_eq!(max, 1024);
            assert!(size > max, "size {size}");
            size
        }
        other => panic!("expected RecordTooLarge, got {other:?}"),
    };

    let size = too_large(producer.send(Record::new(vec![7u8; 2000])).map(drop));
    assert!((2000..2100).contains(&size), "size {size} is the batch's");
    too_large(
        producer
            .send(Record::new("v").key(vec![1u8; 1100]))
            .map(drop),
    );
    too_large(
        producer
            .send(Record::new("v").header("h", vec![1u8; 1100]))
            .map(drop),
    );

    // The largest value that fits is accepted; one byte more is refused.
    let fits = (0..1024)
        .rev()
        .find(|&n| {
            producer
                .send(Record::new(vec![1u8; n]).partition(0))
                .is_ok()
        })
        .unwrap();
    assert!(fits > 900, "{fits}");
    let size = too_large(producer.send(Record::new(vec![1u8; fits + 1])).map(drop));
    assert!(size <= 1024 + 3, "one more byte of value: {size}");

    let ends = |topic: &Topic| -> Vec<u64> {
        topic
            .partitions()
            .iter()
            .map(|p| p.log_end_offset())
            .collect()
    };
    let before = ends(&topic);
    let sizes: Vec<u64> = topic
        .partitions()
        .iter()
        .map(|p| p.stats().size_bytes)
        .collect();
    // One oversized record in the middle of a batch: nothing at all written,
    // in any partition.
    let mut batch: Vec<Record> = (0..10)
        .map(|i| Record::new(format!("small-{i}")).key(format!("k{i}")))
        .collect();
    batch.insert(5, Record::new(vec![0u8; 5000]).key("big"));
    too_large(producer.send_batch(&batch).map(drop));
    let keyless: Vec<Record> = (0..10)
        .map(|i| {
            if i == 7 {
                Record::new(vec![0u8; 1500])
            } else {
                Record::new(format!("small-{i}"))
            }
        })
        .collect();
    too_large(producer.send_batch(&keyless).map(drop));
    assert_eq!(ends(&topic), before);
    let after: Vec<u64> = topic
        .partitions()
        .iter()
        .map(|p| p.stats().size_bytes)
        .collect();
    assert_eq!(after, sizes);

    // Many small records whose total exceeds the limit are fine: several batches.
    let many: Vec<Record> = (0..100)
        .map(|i| Record::new(vec![i as u8; 100]).partition(1))
        .collect();
    let metas = producer.send_batch(&many).unwrap();
    assert_eq!(metas.len(), 100);
    let got = read_all(&log, "t", 1);
    assert_eq!(got.len(), 100);
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r.value.as_deref(), Some(&vec![i as u8; 100][..]));
    }
    log.close().unwrap();
}

#[test]
fn offsets_out_of_range_and_reset_policies() {
    let dir = TempDir::new("range");
    let log = Log::open(dir.path(), config()).unwrap();
    log.create_topic("t", topic_config(1)).unwrap();
    let producer = log.producer("t").unwrap();
    for i in 0..10 {
        producer.send(Record::new(format!("v{i}"))).unwrap();
    }
    let t0 = tp("t", 0);
    let partition = log.topic("t").unwrap().partition(0).unwrap().clone();
    let out_of_range = |r: Result<()>, offset: u64| match r {
        Err(Error::OffsetOutOfRange {
            topic,
            partition,
            offset: o,
            log_start,
            log_end,
        }) => {
            assert_eq!((topic.as_str(), partition, o), ("t", 0, offset));
            assert_eq!((log_start, log_end), (0, 10));
        }
        other => panic!("expected OffsetOutOfRange at {offset}, got {other:?}"),
    };
    out_of_range(partition.read(11, 10).map(drop), 11);
    out_of_range(partition.fetch(u64::MAX, 10).map(drop), u64::MAX);
    assert!(
        partition.read(10, 10).unwrap().is_empty(),
        "the end is in range"
    );

    // Reset policy None: errors, and the position stays where it was put.
    let none = ConsumerConfig::default().offset_reset(OffsetReset::None);
    let mut consumer = log.consumer(none);
    consumer.assign(std::slice::from_ref(&t0)).unwrap();
    match consumer.poll(Duration::from_millis(10)) {
        Err(Error::NoOffset { topic, partition }) => {
            assert_eq!((topic.as_str(), partition), ("t", 0))
        }
        other => panic!("expected NoOffset, got {other:?}"),
    }
    assert!(matches!(
        consumer.position(&t0),
        Err(Error::NoOffset { .. })
    ));
    consumer.seek(&t0, 50).unwrap();
    out_of_range(consumer.poll(Duration::from_millis(10)).map(drop), 50);
    out_of_range(consumer.poll(Duration::from_millis(10)).map(drop), 50);
    out_of_range(consumer.position(&t0).map(drop), 50);
    consumer.seek(&t0, 10).unwrap();
    assert!(consumer.poll(Duration::from_millis(10)).unwrap().is_empty());
    consumer.seek(&t0, 3).unwrap();
    assert_eq!(
        consumer
            .poll(Duration::from_millis(10))
            .unwrap()
            .get(0)
            .unwrap()
            .offset,
        3
    );

    // Earliest: a bad position (and no position) restarts from the start.
    let mut consumer = log.consumer(ConsumerConfig::default().offset_reset(OffsetReset::Earliest));
    consumer.assign(std::slice::from_ref(&t0)).unwrap();
    assert_eq!(consumer.position(&t0).unwrap(), 0);
    consumer.seek(&t0, 50).unwrap();
    let got = consumer.poll(Duration::from_millis(10)).unwrap();
    assert_eq!(
        got.iter().map(|r| r.offset).collect::<Vec<_>>(),
        (0..10).collect::<Vec<_>>()
    );

    // Latest: a bad position (and no position) jumps to the end.
    let mut consumer = log.consumer(ConsumerConfig::default().offset_reset(OffsetReset::Latest));
    consumer.assign(std::slice::from_ref(&t0)).unwrap();
    assert_eq!(consumer.position(&t0).unwrap(), 10);
    consumer.seek(&t0, 50).unwrap();
    assert!(consumer.poll(Duration::from_millis(10)).unwrap().is_empty());
    assert_eq!(consumer.position(&t0).unwrap(), 10);
    producer.send(Record::new("new")).unwrap();
    let got = consumer.poll(Duration::from_secs(5)).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got.get(0).unwrap().offset, got.get(0).unwrap().value),
        (10, Some(&b"new"[..]))
    );
    log.close().unwrap();
}

// ---------------------------------------------------------------------------
// Closing and deleting

#[test]
fn operations_after_close_are_refused() {
    let dir = TempDir::new("closed");
    let log = Log::open(dir.path(), config()).unwrap();
    log.create_topic("t", topic_config(2)).unwrap();
    let producer = log.producer("t").unwrap();
    producer.send(Record::new("before")).unwrap();
    let partition = log.topic("t").unwrap().partition(0).unwrap().clone();
    let mut consumer = log.consumer(ConsumerConfig::default());
    consumer.assign(&[tp("t", 0), tp("t", 1)]).unwrap();
    let clone = log.clone();
    log.close().unwrap();
    log.close().unwrap(); // idempotent

    let closed = |what: &str, r: Result<()>| {
        assert!(
            matches!(r, Err(Error::Closed)),
            "{what}: expected Closed, got {r:?}"
        )
    };
    closed(
        "create_topic",
        log.create_topic("u", topic_config(1)).map(drop),
    );
    closed("topic", log.topic("t").map(drop));
    closed("producer", log.producer("t").map(drop));
    closed("delete_topic", log.delete_topic("t"));
    closed("clone.topic", clone.topic("t").map(drop));
    closed("send", producer.send(Record::new("after")).map(drop));
    closed(
        "send_batch",
        producer.send_batch(&[Record::new("after")]).map(drop),
    );
    closed("poll", consumer.poll(Duration::from_millis(10)).map(drop));
    closed("assign", consumer.assign(&[tp("t", 0)]));
    closed("roll", partition.roll());
    // Nothing was written after close: the files are as close left them.
    let log = Log::open(dir.path(), config()).unwrap();
    assert!(log.recovery_report().clean_shutdown);
    assert_eq!(log.topics(), vec!["t".to_string()]);
    let total: usize = (0..2).map(|p| read_all(&log, "t", p).len()).sum();
    assert_eq!(total, 1);
    log.close().unwrap();
}

#[test]
fn records_read_outlive_their_topic() {
    let dir = TempDir::new("outlive");
    let log = Log::open(dir.path(), config()).unwrap();
    log.create_topic("t", topic_config(1)).unwrap();
    let producer = log.producer("t").unwrap();
    let old = |i: usize| format!("old-{i:04}").into_bytes();
    let new = |i: usize| format!("NEW-{i:04}").into_bytes();
    for i in 0..200 {
        producer
            .send(
                Record::new(old(i))
                    .key(format!("key-{i:04}"))
                    .header("h", old(i)),
            )
            .unwrap();
    }
    let mut consumer = log.consumer(ConsumerConfig::default().max_poll_records(1000));
    consumer.assign(&[tp("t", 0)]).unwrap();
    let mut held = Vec::new();
    while held.len() < 200 {
        held.extend(consumer.poll(Duration::from_secs(5)).unwrap());
    }
    let check = |held: &[ConsumerRecord]| {
        for (i, r) in held.iter().enumerate() {
            assert_eq!(r.value.as_deref(), Some(&old(i)[..]));
            assert_eq!(r.key.as_deref(), Some(format!("key-{i:04}").as_bytes()));
            assert_eq!(r.headers[0].value.as_deref(), Some(&old(i)[..]));
        }
    };

    log.delete_topic("t").unwrap();
    check(&held);
    assert!(matches!(log.topic("t"), Err(Error::UnknownTopic { .. })));
    assert!(matches!(
        producer.send(Record::new("x")),
        Err(Error::Closed)
    ));
    assert!(matches!(
        consumer.poll(Duration::from_millis(10)),
        Err(Error::Closed)
    ));

    // Same name, same sizes at the same offsets: the same file names and
    // positions, with different bytes.
    log.create_topic("t", topic_config(1)).unwrap();
    let producer2 = log.producer("t").unwrap();
    for i in 0..200 {
        producer2
            .send(
                Record::new(new(i))
                    .key(format!("key-{i:04}"))
                    .header("h", new(i)),
            )
            .unwrap();
    }
    check(&held);
    // The old producer does not write into the new topic.
    assert!(matches!(
        producer.send(Record::new("x")),
        Err(Error::Closed)
    ));
    let fresh = read_all(&log, "t", 0);
    assert_eq!(fresh.len(), 200);
    assert_eq!(fresh[7].value.as_deref(), Some(&new(7)[..]));

    // And after the log is closed and the directory is gone.
    log.close().unwrap();
    drop(log);
    drop(dir);
    check(&held);
}

// ---------------------------------------------------------------------------
// Round trip of arbitrary records

fn bytes_strategy(max: usize) -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        Just(None),
        Just(Some(Vec::new())),
        prop::collection::vec(any::<u8>(), 1..max).prop_map(Some),
    ]
}

fn record_strategy() -> impl Strategy<Value = Record> {
    (
        bytes_strategy(40),
        bytes_strategy(300),
        prop::collection::vec((".{0,8}", bytes_strategy(20)), 0..4),
        prop::option::of(prop_oneof![
            any::<i64>(),
            Just(-1i64),
            Just(0i64),
            (T0 - 10_000_000)..(T0 + 10_000_000),
        ]),
        prop::option::of(0u32..3),
    )
        .prop_map(|(key, value, headers, timestamp, partition)| Record {
            key: key.map(Into::into),
            value: value.map(Into::into),
            headers: headers
                .into_iter()
                .map(|(key, value)| Header {
                    key,
                    value: value.map(Into::into),
                })
                .collect(),
            timestamp,
            partition,
        })
}

/// Every sent record is read back equal, and nothing else is there.
fn check_round_trip(
    log: &Log,
    sent: &BTreeMap<(u32, u64), Record>,
) -> std::result::Result<(), TestCaseError> {
    let mut seen = 0;
    for p in 0..3 {
        for r in read_all(log, "t", p) {
            let want = sent.get(&(p, r.offset));
            prop_assert!(want.is_some(), "unexpected record at {}/{}", p, r.offset);
            let want = want.unwrap();
            prop_assert_eq!(&r.key, &want.key);
            prop_assert_eq!(&r.value, &want.value);
            prop_assert_eq!(&r.headers, &want.headers);
            prop_assert_eq!(Some(r.timestamp), want.timestamp);
            prop_assert_eq!(&*r.topic, "t");
            seen += 1;
        }
    }
    prop_assert_eq!(seen, sent.len());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn arbitrary_records_round_trip(
        ops in prop::collection::vec(
            (any::<bool>(), prop::collection::vec(record_strategy(), 1..6)),
            1..10,
        )
    ) {
        let dir = TempDir::new("prop");
        let log = Log::open(dir.path(), config()).unwrap();
        log.create_topic("t", topic_config(3).max_record_bytes(4096)).unwrap();
        let producer = log.producer("t").unwrap();
        let mut sent = BTreeMap::new();
        for (as_batch, records) in ops {
            let metas = if as_batch {
                producer.send_batch(&records).unwrap()
            } else {
                records.iter().map(|r| producer.send(r.clone()).unwrap()).collect()
            };
            prop_assert_eq!(metas.len(), records.len());
            for (m, mut r) in metas.into_iter().zip(records) {
                if let Some(p) = r.partition {
                    prop_assert_eq!(m.partition, p);
                } else if let Some(key) = &r.key {
                    prop_assert_eq!(m.partition, partition_for_key(key, 3));
                }
                r.timestamp = Some(r.timestamp.unwrap_or(T0));
                prop_assert_eq!(m.timestamp, r.timestamp.unwrap());
                r.partition = None;
                prop_assert!(sent.insert((m.partition, m.offset), r).is_none());
            }
        }
        check_round_trip(&log, &sent)?;
        let crash = common::crash_copy(dir.path(), "prop-crash");
        log.close().unwrap();
        let log = Log::open(dir.path(), config()).unwrap();
        check_round_trip(&log, &sent)?;
        log.close().unwrap();
        let log = Log::open(crash.path(), config()).unwrap();
        check_round_trip(&log, &sent)?;
        log.close().unwrap();
    }
}
