//! Retention: segments deleted by time (injected clock) and by size, the
//! time-based roll of an idle segment, the log start offset moving forward
//! (and surviving reopen), readers before it getting `OffsetOutOfRange` or
//! their reset policy, bytes held from deleted segments staying intact,
//! O(1) deletion (no read of the content), and the background thread.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::TempDir;
use logbus::{
    ConsumerConfig, Error, Log, LogConfig, ManualClock, OffsetReset, Record, TopicConfig,
    TopicPartition,
};

const T0: i64 = 1_700_000_000_000;

fn manual_log(dir: &std::path::Path, clock: &Arc<ManualClock>) -> Log {
    let config = LogConfig::default()
        .clock(Arc::clone(clock) as _)
        .background_maintenance(false);
    Log::open(dir, config).unwrap()
}

/// 4 KiB segments; records of ~1 KiB, so about three per segment.
fn small_segments() -> TopicConfig {
    TopicConfig::new(1)
        .segment_bytes(4096)
        .max_record_bytes(2048)
        .segment_ms(None)
        .retention_ms(None)
}

/// Every record from `from` to the end (a fetch stops at a segment's end).
fn read_all(p: &logbus::Partition, from: u64) -> Vec<logbus::ConsumerRecord> {
    let mut out = Vec::new();
    let mut at = from;
    while at < p.log_end_offset() {
        let got = p.read(at, 1000).unwrap();
        at = got.last().map_or(at + 1, |r| r.offset + 1);
        out.extend(got);
    }
    out
}

fn value(i: u64) -> Vec<u8> {
    let mut v = vec![b'a' + (i % 26) as u8; 1000];
    v[..8].copy_from_slice(&i.to_be_bytes());
    v
}

#[test]
fn time_retention_deletes_expired_sealed_segments_only() {
    let dir = TempDir::new("ret-time");
    let clock = Arc::new(ManualClock::new(T0));
    let log = manual_log(dir.path(), &clock);
    let topic = log
        .create_topic("t", small_segments().retention_ms(Some(60_000)))
        .unwrap();
    let p = topic.partition(0).unwrap().clone();
    let producer = log.producer("t").unwrap();
    for i in 0..12u64 {
        producer.send(Record::new(value(i))).unwrap();
        clock.advance(Duration::from_secs(10)); // record i has time T0 + 10 s * i
    }
    let before = p.stats();
    assert!(before.segments >= 4, "{before:?}");

    // At T0 + 120 s nothing is older than 60 s... except records 0..=5.
    let summary = log.maintain().unwrap();
    assert!(summary.failures.is_empty(), "{:?}", summary.failures);
    let after = p.stats();
    assert!(summary.segments_deleted >= 1);
    assert_eq!(
        after.segments as u64,
        before.segments as u64 - summary.segments_deleted
    );
    assert_eq!(after.size_bytes, before.size_bytes - summary.bytes_deleted);
    assert!(after.log_start_offset > 0);
    // Everything at or after the new start is still there, byte for byte.
    let start = after.log_start_offset;
    let rest = read_all(&p, start);
    assert_eq!(rest.len() as u64, 12 - start);
    for r in &rest {
        assert_eq!(r.value.as_deref(), Some(&value(r.offset)[..]));
    }
    // Every deleted record was past retention: the newest deleted one is
    // record start - 1 at T0 + 10 s * (start - 1), older than now - 60 s.
    assert!(T0 + 10_000 * (start as i64 - 1) < clock.now_ms_pub() - 60_000);
    // And the first kept segment is not expired: its newest record is younger.
    match p.read(0, 1) {
        Err(Error::OffsetOutOfRange { log_start, .. }) => assert_eq!(log_start, start),
        other => panic!("expected OffsetOutOfRange, got {other:?}"),
    }

    // Far in the future everything sealed expires, never the active segment.
    clock.advance(Duration::from_secs(3600));
    log.maintain().unwrap();
    let end = p.stats();
    assert_eq!(end.segments, 1);
    assert_eq!(end.log_end_offset, 12);
    assert_eq!(
        end.log_start_offset,
        p.read(end.log_start_offset, 1).unwrap()[0].offset
    );
}

trait NowPub {
    fn now_ms_pub(&self) -> i64;
}
impl NowPub for ManualClock {
    fn now_ms_pub(&self) -> i64 {
        logbus::Clock::now_ms(self)
    }
}

#[test]
fn size_retention_keeps_the_partition_under_retention_bytes() {
    let dir = TempDir::new("ret-size");
    let clock = Arc::new(ManualClock::new(T0));
    let log = manual_log(dir.path(), &clock);
    let topic = log
        .create_topic("s", small_segments().retention_bytes(Some(8192)))
        .unwrap();
    let p = topic.partition(0).unwrap().clone();
    let producer = log.producer("s").unwrap();
    for i in 0..30u64 {
        producer.send(Record::new(value(i))).unwrap();
    }
    let before = p.stats();
    assert!(before.size_bytes > 8192);
    let summary = log.maintain().unwrap();
    let after = p.stats();
    assert!(summary.segments_deleted > 0);
    // Kafka's rule: delete the oldest segment while what is left stays at
    // or above the limit. Three records (3210 B) per segment: 9630 B left,
    // and one more deletion would leave 6420 B < 8192 B.
    assert_eq!(after.size_bytes, 9630, "{after:?}");
    assert_eq!(after.size_bytes, before.size_bytes - summary.bytes_deleted);
    assert_eq!(read_all(&p, after.log_start_offset).len(), 9);
    // A second pass has nothing to do.
    assert_eq!(log.maintain().unwrap().segments_deleted, 0);
}

#[test]
fn idle_active_segment_rolls_after_segment_ms() {
    let dir = TempDir::new("ret-roll");
    let clock = Arc::new(ManualClock::new(T0));
    let log = manual_log(dir.path(), &clock);
    let topic = log
        .create_topic("r", small_segments().segment_ms(Some(1_000)))
        .unwrap();
    let p = topic.partition(0).unwrap().clone();
    // An empty active segment never rolls.
    clock.advance(Duration::from_secs(10));
    assert_eq!(log.maintain().unwrap().segments_rolled, 0);
    log.producer("r").unwrap().send(Record::new("x")).unwrap();
    clock.advance(Duration::from_millis(999));
    let summary = log.maintain().unwrap();
    assert_eq!(summary.segments_rolled, 0);
    assert_eq!(summary.next_due_ms, Some(clock.now_ms_pub() + 1));
    clock.advance(Duration::from_millis(1));
    assert_eq!(log.maintain().unwrap().segments_rolled, 1);
    assert_eq!(p.stats().segments, 2);
    assert_eq!(p.stats().active_segment_bytes, 0);
}

#[test]
fn log_start_survives_reopen_and_consumers_reset() {
    let dir = TempDir::new("ret-reopen");
    let clock = Arc::new(ManualClock::new(T0));
    let start = {
        let log = manual_log(dir.path(), &clock);
        let topic = log
            .create_topic("o", small_segments().retention_bytes(Some(4096)))
            .unwrap();
        let producer = log.producer("o").unwrap();
        for i in 0..20u64 {
            producer.send(Record::new(value(i))).unwrap();
        }
        log.maintain().unwrap();
        let start = topic.partition(0).unwrap().log_start_offset();
        assert!(start > 0);
        log.close().unwrap();
        start
    };
    let log = manual_log(dir.path(), &clock);
    let p = log.topic("o").unwrap().partition(0).unwrap().clone();
    assert_eq!(p.log_start_offset(), start);
    assert_eq!(p.log_end_offset(), 20);

    let tp = TopicPartition::new("o", 0);
    // Reset policy earliest: a position before the start moves to it.
    let mut c = log.consumer(ConsumerConfig::default().offset_reset(OffsetReset::Earliest));
    c.assign(std::slice::from_ref(&tp)).unwrap();
    c.seek(&tp, 0).unwrap();
    let got = c.poll(Duration::from_millis(100)).unwrap();
    assert_eq!(got.get(0).map(|r| r.offset), Some(start));
    // Policy none: the error names the new start.
    let mut c = log.consumer(ConsumerConfig::default().offset_reset(OffsetReset::None));
    c.assign(std::slice::from_ref(&tp)).unwrap();
    c.seek(&tp, 0).unwrap();
    match c.poll(Duration::from_millis(10)) {
        Err(Error::OffsetOutOfRange { log_start, .. }) => assert_eq!(log_start, start),
        other => panic!("expected OffsetOutOfRange, got {other:?}"),
    }
}

/// Records and fetched batches held from a segment stay byte-for-byte the
/// same after retention deletes it (no SIGBUS, no garbage).
#[test]
fn bytes_held_from_deleted_segments_stay_valid() {
    let dir = TempDir::new("ret-held");
    let clock = Arc::new(ManualClock::new(T0));
    let log = manual_log(dir.path(), &clock);
    let topic = log
        .create_topic("h", small_segments().retention_bytes(Some(0)))
        .unwrap();
    let p = topic.partition(0).unwrap().clone();
    let producer = log.producer("h").unwrap();
    for i in 0..10u64 {
        producer.send(Record::new(value(i))).unwrap();
    }
    let records = p.read(0, 3).unwrap();
    let fetched = p.fetch(0, 1 << 20).unwrap();
    let copy = fetched.bytes.to_vec();
    let mut c = log.consumer(ConsumerConfig::default());
    c.assign(&[TopicPartition::new("h", 0)]).unwrap();
    let polled = c.poll(Duration::from_millis(100)).unwrap();
    assert!(!polled.is_empty());

    let summary = log.maintain().unwrap();
    assert!(summary.segments_deleted >= 2);
    assert!(p.log_start_offset() > 3);
    // The files are gone...
    let files = common::log_files(&dir.path().join("h/0"));
    assert_eq!(files.len(), 1);
    // ...the bytes are not.
    for r in &records {
        assert_eq!(r.value.as_deref(), Some(&value(r.offset)[..]));
    }
    for r in &polled {
        assert_eq!(r.value, Some(&value(r.offset)[..]));
    }
    assert_eq!(&fetched.bytes[..], &copy[..]);
    let offsets: Vec<u64> = fetched.records().map(|r| r.unwrap().offset).collect();
    assert_eq!(offsets[0], 0);
    // The writer was never blocked: appends go on.
    producer.send(Record::new(value(10))).unwrap();
    assert_eq!(p.log_end_offset(), 11);
}

/// Deleting an expired segment reads nothing of it: a segment whose
/// content is garbage (written behind the log's back) is deleted without
/// a `Corrupt` error. (Its metadata comes from the time index.)
#[test]
fn deleting_a_segment_does_not_read_its_content() {
    let dir = TempDir::new("ret-o1");
    let clock = Arc::new(ManualClock::new(T0));
    let log = manual_log(dir.path(), &clock);
    let topic = log
        .create_topic("d", small_segments().retention_ms(Some(1_000)))
        .unwrap();
    let p = topic.partition(0).unwrap().clone();
    let producer = log.producer("d").unwrap();
    for i in 0..8u64 {
        producer.send(Record::new(value(i))).unwrap();
    }
    let first = common::log_files(&dir.path().join("d/0"))[0].clone();
    // Damage the whole first segment (sealed) in place.
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&first)
            .unwrap();
        let len = f.metadata().unwrap().len();
        f.write_all_at(&vec![0xEE; len as usize], 0).unwrap();
    }
    clock.advance(Duration::from_secs(5));
    let summary = log.maintain().unwrap();
    assert!(summary.failures.is_empty(), "{:?}", summary.failures);
    assert!(summary.segments_deleted >= 1);
    assert!(!first.exists());
    assert!(p.log_start_offset() > 0);
}

/// The background thread wakes when a segment is sealed and applies
/// size retention without any `maintain` call.
#[test]
fn background_thread_applies_retention_after_rolls() {
    let dir = TempDir::new("ret-bg");
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let topic = log
        .create_topic("bg", small_segments().retention_bytes(Some(4096)))
        .unwrap();
    let p = topic.partition(0).unwrap().clone();
    let producer = log.producer("bg").unwrap();
    for i in 0..40u64 {
        producer.send(Record::new(value(i))).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    // 3210 B sealed + 1070 B active: deleting the sealed one would leave
    // less than 4096 B, so two segments stay.
    while p.stats().segments > 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let stats = p.stats();
    assert_eq!(stats.segments, 2, "thread did not delete: {stats:?}");
    assert!(stats.log_start_offset > 0);
    log.close().unwrap();
}

/// A crash in the middle of deleting a segment (its `.log` unlinked, its
/// index files not yet): open removes the orphans and starts the log at
/// the next segment.
#[test]
fn crash_between_unlinks_leaves_a_consistent_log() {
    let dir = TempDir::new("ret-crash");
    let clock = Arc::new(ManualClock::new(T0));
    {
        let log = manual_log(dir.path(), &clock);
        log.create_topic("c", small_segments()).unwrap();
        let producer = log.producer("c").unwrap();
        for i in 0..10u64 {
            producer.send(Record::new(value(i))).unwrap();
        }
        log.close().unwrap();
    }
    let pdir = dir.path().join("c/0");
    let logs = common::log_files(&pdir);
    assert!(logs.len() >= 3);
    // What delete_files does first; the crash comes before the indexes go.
    std::fs::remove_file(&logs[0]).unwrap();
    let log = manual_log(dir.path(), &clock);
    let removed = &log.recovery_report().partitions[0].2.removed_files;
    assert_eq!(removed.len(), 2, "{removed:?}");
    let p = log.topic("c").unwrap().partition(0).unwrap().clone();
    let second_base: u64 = logs[1]
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(p.log_start_offset(), second_base);
    let rest = read_all(&p, second_base);
    assert_eq!(rest.len() as u64, 10 - second_base);
}

/// Appends, consumers and maintenance (the thread and `maintain` calls)
/// at once, on a `delete` topic with tiny size retention and on a
/// compacted one: every record a consumer gets is whole and at its offset,
/// offsets only go up, and no call fails.
#[test]
fn appends_reads_and_maintenance_run_together() {
    use logbus::CleanupPolicy;
    let dir = TempDir::new("ret-together");
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    // 16 KiB segments: 15 records each (smaller ones make the test about
    // the flusher's fsync per roll).
    let topic = || small_segments().segment_bytes(16 << 10);
    log.create_topic("del", topic().retention_bytes(Some(32 << 10)))
        .unwrap();
    log.create_topic(
        "cmp",
        topic()
            .cleanup_policy(CleanupPolicy::Compact)
            .min_cleanable_dirty_ratio(0.0),
    )
    .unwrap();
    const N: u64 = 1000;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut threads = Vec::new();
    for topic in ["del", "cmp"] {
        let producer = log.producer(topic).unwrap();
        threads.push(std::thread::spawn(move || {
            for i in 0..N {
                let r = Record::new(value(i)).key(format!("k{}", i % 50));
                assert_eq!(producer.send(r).unwrap().offset, i);
            }
        }));
        let log = log.clone();
        threads.push(std::thread::spawn(move || {
            let mut c = log.consumer(ConsumerConfig::default().offset_reset(OffsetReset::Earliest));
            c.assign(&[TopicPartition::new(topic, 0)]).unwrap();
            let mut last = None;
            let give_up = Instant::now() + Duration::from_secs(60);
            while last != Some(N - 1) {
                assert!(Instant::now() < give_up, "{topic}: stuck at {last:?}");
                for r in c.poll(Duration::from_millis(10)).unwrap() {
                    assert_eq!(r.value.as_deref(), Some(&value(r.offset)[..]), "{topic}");
                    assert!(
                        last.is_none_or(|l| r.offset > l),
                        "{topic}: {last:?} then {}",
                        r.offset
                    );
                    last = Some(r.offset);
                }
            }
        }));
    }
    let maintainer = {
        let log = log.clone();
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut passes = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let summary = log.maintain().unwrap();
                assert!(summary.failures.is_empty(), "{:?}", summary.failures);
                passes += 1;
                // Each pass fsyncs what it rewrites: leave the disk to the
                // producers between passes.
                std::thread::sleep(Duration::from_millis(2));
            }
            passes
        })
    };
    for t in threads {
        t.join().unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(maintainer.join().unwrap() > 0);
    let del = log.topic("del").unwrap().partition(0).unwrap().clone();
    assert!(del.log_start_offset() > 0);
    assert!(log.cleaner_stats().records_removed > 0);
    log.close().unwrap();
}
