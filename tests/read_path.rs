//! The consumer's read path: `poll` makes no allocation per record (a
//! counting allocator watches the polling thread), and its wait (a bounded
//! spin, then a park) is ended by data arriving during the spin, after it,
//! or after the adaptive spin has shrunk to nothing.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Barrier;
use std::time::Duration;

use bytes::Bytes;
use common::TempDir;
use logbus::*;

/// Counts allocations per thread, so the log's background threads do not
/// blur the count of the polling one.
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

// SAFETY: every call is forwarded to `System` unchanged; the counter is a
// const-initialised thread-local `Cell` (no allocation, no lock).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Records, in batches of 1000, with keys, values of varied sizes and an
/// occasional tombstone (no headers: owned headers are one allocation each
/// by design).
fn fill(log: &Log, topic: &str, records: u64) {
    let producer = log.producer(topic).unwrap();
    let mut sent = 0u64;
    while sent < records {
        let batch: Vec<Record> = (sent..(sent + 1000).min(records))
            .map(|i| {
                let key = Bytes::from(format!("key-{}", i % 97));
                if i % 50 == 7 {
                    Record::tombstone(key).partition(0)
                } else {
                    let value = vec![b'v'; 1 + (i % 300) as usize];
                    Record::new(value).key(key).partition(0)
                }
            })
            .collect();
        sent += batch.len() as u64;
        producer.send_batch(&batch).unwrap();
    }
}

#[test]
fn poll_makes_no_allocation_per_record() {
    const RECORDS: u64 = 50_000;
    let dir = TempDir::new("alloc-per-record");
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    log.create_topic("t", TopicConfig::new(1)).unwrap();
    fill(&log, "t", RECORDS);
    let keys: Vec<String> = (0..97).map(|k| format!("key-{k}")).collect();
    for max_poll_records in [500, 10_000] {
        let config = ConsumerConfig::default().max_poll_records(max_poll_records);
        let mut consumer = log.consumer(config);
        consumer.assign(&[TopicPartition::new("t", 0)]).unwrap();
        let (mut next, mut polls) = (0u64, 0u64);
        let before = allocations();
        while next < RECORDS {
            let records = consumer.poll(Duration::from_secs(10)).unwrap();
            assert!(!records.is_empty(), "nothing at offset {next}");
            polls += 1;
            for r in &records {
                assert_eq!(r.offset, next);
                assert_eq!(r.key, Some(keys[(next % 97) as usize].as_bytes()));
                let len = r.value.map(<[u8]>::len);
                assert_eq!(len, (next % 50 != 7).then_some(1 + (next % 300) as usize));
                next += 1;
            }
        }
        let allocated = allocations() - before;
        // The entry table and the partition list of the returned
        // `ConsumerRecords`, once per poll each; a per-record allocation
        // would show as at least RECORDS.
        assert!(
            allocated <= 2 * polls,
            "{allocated} allocations in {polls} polls of {RECORDS} records \
             (max_poll_records {max_poll_records})"
        );
    }
}

/// Sends one record once the consumer thread is about to poll, after
/// `delay`, while the consumer polls with a timeout far longer than the
/// test: it returns the record only if the append woke it.
fn woken_by_a_send(spin: Duration, delay: Duration) {
    let dir = TempDir::new("wake");
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    log.create_topic("t", TopicConfig::new(1)).unwrap();
    let mut consumer = log.consumer(ConsumerConfig::default().wait_spin(spin));
    consumer.assign(&[TopicPartition::new("t", 0)]).unwrap();
    let go = Barrier::new(2);
    std::thread::scope(|s| {
        s.spawn(|| {
            go.wait();
            std::thread::sleep(delay);
            log.producer("t")
                .unwrap()
                .send(Record::new("late"))
                .unwrap();
        });
        go.wait();
        let records = consumer.poll(Duration::from_secs(600)).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records.get(0).unwrap().value, Some(&b"late"[..]));
    });
}

#[test]
fn a_send_during_the_spin_ends_the_wait() {
    // The longest spin, and a send right away: it lands while spinning.
    woken_by_a_send(ConsumerConfig::MAX_WAIT_SPIN, Duration::ZERO);
}

#[test]
fn a_send_after_the_spin_unparks_the_consumer() {
    woken_by_a_send(Duration::from_micros(50), Duration::from_millis(30));
    woken_by_a_send(Duration::ZERO, Duration::from_millis(30));
}

#[test]
fn a_consumer_whose_spin_shrank_to_nothing_still_wakes() {
    let dir = TempDir::new("wake-after-idle");
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    log.create_topic("t", TopicConfig::new(1)).unwrap();
    let mut consumer = log.consumer(ConsumerConfig::default());
    consumer.assign(&[TopicPartition::new("t", 0)]).unwrap();
    // Idle waits halve the spin each time: 50 µs is gone after six.
    for _ in 0..8 {
        assert!(consumer.poll(Duration::from_millis(1)).unwrap().is_empty());
    }
    let go = Barrier::new(2);
    std::thread::scope(|s| {
        s.spawn(|| {
            go.wait();
            std::thread::sleep(Duration::from_millis(30));
            log.producer("t").unwrap().send(Record::new("x")).unwrap();
        });
        go.wait();
        let records = consumer.poll(Duration::from_secs(600)).unwrap();
        assert_eq!(records.len(), 1);
    });
    // And again, now that data restored the full spin.
    log.producer("t").unwrap().send(Record::new("y")).unwrap();
    let records = consumer.poll(Duration::from_secs(600)).unwrap();
    assert_eq!(records.get(0).unwrap().value, Some(&b"y"[..]));
}

#[test]
fn wait_spin_is_capped() {
    let capped = ConsumerConfig::default().wait_spin(Duration::from_secs(5));
    assert_eq!(capped.wait_spin, ConsumerConfig::MAX_WAIT_SPIN);
    assert_eq!(
        ConsumerConfig::default().wait_spin,
        ConsumerConfig::DEFAULT_WAIT_SPIN
    );
    assert!(ConsumerConfig::DEFAULT_WAIT_SPIN <= ConsumerConfig::MAX_WAIT_SPIN);
}

/// What `poll` returns, as comparable values.
type Seen = (
    String,
    u32,
    u64,
    i64,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Vec<(String, Option<Vec<u8>>)>,
);

#[test]
fn poll_each_lends_exactly_what_poll_returns() {
    let dir = TempDir::new("poll-each");
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    log.create_topic("t", TopicConfig::new(3)).unwrap();
    let producer = log.producer("t").unwrap();
    for i in 0..3000u32 {
        let mut r = Record::new(format!("value-{i}")).partition(i % 3);
        if i % 7 == 0 {
            r = r.key(format!("k{i}")).header("h", format!("{i}"));
        }
        if i % 11 == 0 {
            r = Record::tombstone(format!("k{i}")).partition(i % 3);
        }
        producer.send(r).unwrap();
    }
    let all: Vec<TopicPartition> = (0..3).map(|p| TopicPartition::new("t", p)).collect();
    let config = ConsumerConfig::default().max_poll_records(128);
    let mut owned = log.consumer(config.clone());
    owned.assign(&all).unwrap();
    let mut lent = log.consumer(config);
    lent.assign(&all).unwrap();

    let (mut by_poll, mut by_each) = (Vec::<Seen>::new(), Vec::<Seen>::new());
    while by_poll.len() < 3000 {
        let records = owned.poll(Duration::from_secs(10)).unwrap();
        assert!(!records.is_empty() && records.len() <= 128);
        by_poll.extend(records.into_iter().map(|r| {
            let headers = r
                .headers
                .iter()
                .map(|h| (h.key.clone(), h.value.as_ref().map(|v| v.to_vec())));
            let headers = headers.collect();
            (
                r.topic.to_string(),
                r.partition,
                r.offset,
                r.timestamp,
                r.key.map(|k| k.to_vec()),
                r.value.map(|v| v.to_vec()),
                headers,
            )
        }));
    }
    while by_each.len() < 3000 {
        let before = by_each.len();
        let n = lent
            .poll_each(Duration::from_secs(10), |tp, r| {
                let headers = r
                    .headers()
                    .map(|(k, v)| (k.to_owned(), v.map(<[u8]>::to_vec)))
                    .collect();
                by_each.push((
                    tp.topic.clone(),
                    tp.partition,
                    r.offset,
                    r.timestamp,
                    r.key.map(<[u8]>::to_vec),
                    r.value.map(<[u8]>::to_vec),
                    headers,
                ));
            })
            .unwrap();
        assert_eq!(n, by_each.len() - before);
        assert!(n > 0 && n <= 128);
    }
    assert_eq!(by_each, by_poll);
    // Both consumers stand past everything: nothing more either way.
    assert_eq!(
        lent.poll_each(Duration::from_millis(5), |_, _| panic!("no more"))
            .unwrap(),
        0
    );
    for p in &all {
        assert_eq!(lent.position(p).unwrap(), 1000);
    }
}

#[test]
fn poll_each_makes_no_allocation() {
    const RECORDS: u64 = 20_000;
    let dir = TempDir::new("poll-each-alloc");
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    log.create_topic("t", TopicConfig::new(1)).unwrap();
    fill(&log, "t", RECORDS);
    let mut consumer = log.consumer(ConsumerConfig::default());
    consumer.assign(&[TopicPartition::new("t", 0)]).unwrap();
    let mut next = 0u64;
    let before = allocations();
    while next < RECORDS {
        consumer
            .poll_each(Duration::from_secs(10), |_, r| {
                assert_eq!(r.offset, next);
                next += 1;
            })
            .unwrap();
    }
    assert_eq!(allocations() - before, 0);
}

/// Offsets and values read through `poll` (or `poll_each`) from `tp`, at
/// most `max` per call, until `count` records came.
fn read_n(consumer: &mut Consumer, count: usize, each: bool) -> Vec<(u64, Vec<u8>)> {
    let mut got = Vec::new();
    while got.len() < count {
        if each {
            let n = consumer
                .poll_each(Duration::from_secs(10), |_, r| {
                    got.push((r.offset, r.value.unwrap_or_default().to_vec()));
                })
                .unwrap();
            assert!(n > 0);
        } else {
            let records = consumer.poll(Duration::from_secs(10)).unwrap();
            assert!(!records.is_empty());
            got.extend(
                records
                    .into_iter()
                    .map(|r| (r.offset, r.value.unwrap_or_default().to_vec())),
            );
        }
    }
    got
}

fn expected(from: u64, to: u64) -> Vec<(u64, Vec<u8>)> {
    (from..to)
        .map(|i| (i, format!("v{i}").into_bytes()))
        .collect()
}

/// Polls that stop inside a batch go on from where they stopped (without
/// decoding the records before again): the records, across seeks back and
/// forth inside and outside the batch, are the right ones.
#[test]
fn polls_that_stop_inside_a_batch_go_on_from_there() {
    let dir = TempDir::new("resume");
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    log.create_topic("t", TopicConfig::new(1)).unwrap();
    let producer = log.producer("t").unwrap();
    for b in 0..3u64 {
        let batch: Vec<Record> = (b * 1000..(b + 1) * 1000)
            .map(|i| Record::new(format!("v{i}")).partition(0))
            .collect();
        producer.send_batch(&batch).unwrap();
    }
    let tp = TopicPartition::new("t", 0);
    for each in [false, true] {
        let mut c = log.consumer(ConsumerConfig::default().max_poll_records(300));
        c.assign(std::slice::from_ref(&tp)).unwrap();
        // 0..300, 300..600, 600..900, 900..1000 + 1000..1200, ...
        assert_eq!(read_n(&mut c, 1500, each), expected(0, 1500));
        // Back into the batch the consumer stopped in, and into an earlier one.
        c.seek(&tp, 1250).unwrap();
        assert_eq!(read_n(&mut c, 300, each), expected(1250, 1550));
        c.seek(&tp, 10).unwrap();
        assert_eq!(read_n(&mut c, 600, each), expected(10, 610));
        // Forward past the stop, then to the very stop.
        c.seek(&tp, 2999).unwrap();
        assert_eq!(read_n(&mut c, 1, each), expected(2999, 3000));
        c.seek(&tp, 610).unwrap();
        assert_eq!(read_n(&mut c, 2390, each), expected(610, 3000));
    }
}

/// A consumer stopped inside a segment that retention then deletes meets
/// the reset policy, as without a resume point; and the deleted segment is
/// not read.
#[test]
fn a_resume_point_in_a_deleted_segment_meets_the_reset_policy() {
    let dir = TempDir::new("resume-retention");
    let log = Log::open(
        dir.path(),
        LogConfig::default().background_maintenance(false),
    )
    .unwrap();
    let small = TopicConfig::new(1)
        .segment_bytes(64 << 10)
        .max_record_bytes(4096)
        .segment_ms(None)
        .retention_ms(None)
        .retention_bytes(Some(0));
    log.create_topic("t", small).unwrap();
    let producer = log.producer("t").unwrap();
    let mut sent = 0u64;
    let mut send_batches = |batches: u64| {
        for _ in 0..batches {
            let batch: Vec<Record> = (sent..sent + 100)
                .map(|i| Record::new(format!("v{i}")).partition(0))
                .collect();
            producer.send_batch(&batch).unwrap();
            sent += 100;
        }
    };
    send_batches(1);
    let tp = TopicPartition::new("t", 0);
    for reset in [OffsetReset::Earliest, OffsetReset::None] {
        let mut c = log.consumer(
            ConsumerConfig::default()
                .max_poll_records(30)
                .offset_reset(reset),
        );
        c.assign(std::slice::from_ref(&tp)).unwrap();
        let start = log
            .topic("t")
            .unwrap()
            .partition(0)
            .unwrap()
            .log_start_offset();
        c.seek(&tp, start).unwrap();
        assert_eq!(read_n(&mut c, 30, false), expected(start, start + 30));
        // Enough batches to roll past the segment, then delete it.
        send_batches(40);
        log.topic("t")
            .unwrap()
            .partition(0)
            .unwrap()
            .roll()
            .unwrap();
        send_batches(1);
        assert!(log.maintain().unwrap().segments_deleted > 0);
        let new_start = log
            .topic("t")
            .unwrap()
            .partition(0)
            .unwrap()
            .log_start_offset();
        assert!(new_start > start + 30);
        match reset {
            OffsetReset::Earliest => {
                assert_eq!(
                    read_n(&mut c, 30, false),
                    expected(new_start, new_start + 30)
                );
            }
            _ => assert!(matches!(
                c.poll(Duration::from_secs(1)),
                Err(Error::OffsetOutOfRange { .. })
            )),
        }
    }
}

/// A record's topic is held inline when the name is short and shared when
/// it is long (`TopicName`): both read back as the name, from `poll` and
/// `Partition::read`, and stay so after the topic is deleted.
#[test]
fn records_carry_short_and_long_topic_names() {
    let dir = TempDir::new("topic-names");
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let long = "a-topic-name-longer-than-the-inline-room.v2".to_string();
    let exact = "x".repeat(TopicName::INLINE_LEN);
    let names = ["t".to_string(), exact, long];
    assert!(names[2].len() > TopicName::INLINE_LEN);
    let mut all = Vec::new();
    for name in &names {
        log.create_topic(name, TopicConfig::new(1)).unwrap();
        let batch: Vec<Record> = (0..50)
            .map(|i| Record::new(format!("{name}-{i}")))
            .collect();
        log.producer(name).unwrap().send_batch(&batch).unwrap();
        all.push(TopicPartition::new(name.clone(), 0));
    }
    let mut consumer = log.consumer(ConsumerConfig::default().max_poll_records(40));
    consumer.assign(&all).unwrap();
    let mut held = Vec::new();
    while held.len() < 150 {
        held.extend(consumer.poll(Duration::from_secs(5)).unwrap());
    }
    let by_read = log
        .topic(&names[2])
        .unwrap()
        .partition(0)
        .unwrap()
        .read(0, 10)
        .unwrap();
    assert_eq!(by_read.len(), 10);
    for name in &names {
        log.delete_topic(name).unwrap();
    }
    let mut per_topic = std::collections::HashMap::<&str, u64>::new();
    for r in held.iter().chain(&by_read) {
        let name: &str = &r.topic;
        let next = per_topic.entry(name).or_default();
        if r.offset == 0 {
            *next = 0; // `by_read` starts over
        }
        assert_eq!(r.offset, *next, "{name}");
        assert_eq!(
            r.value.as_deref(),
            Some(format!("{name}-{}", r.offset).as_bytes())
        );
        *next += 1;
    }
    let mut seen: Vec<&str> = per_topic.keys().copied().collect();
    seen.sort_unstable();
    let mut want: Vec<&str> = names.iter().map(String::as_str).collect();
    want.sort_unstable();
    assert_eq!(seen, want);
    assert_eq!(held.iter().filter(|r| r.topic == names[2]).count(), 50);
}
