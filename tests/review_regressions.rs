//! Regressions for bugs found in review: each test failed before its fix.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{TempDir, log_files};
use logbus::*;

fn small() -> TopicConfig {
    TopicConfig::new(1)
        .segment_bytes(64 << 10)
        .max_record_bytes(16 << 10)
        .index_interval_bytes(512)
}

/// After a clean reopen, one append must not mark the older, never checked
/// batches of the active segment as verified.
#[test]
fn first_append_after_clean_reopen_keeps_crc_checks_on_old_batches() {
    let dir = TempDir::new("crc-reopen");
    {
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        log.create_topic("t", small()).unwrap();
        let producer = log.producer("t").unwrap();
        for i in 0..20 {
            producer.send(Record::new(format!("value-{i:04}"))).unwrap();
        }
        log.close().unwrap();
    }
    // Flip a byte of record 0's value ("value-0000" is near the end of the first batch).
    let file = log_files(&dir.path().join("t").join("0")).remove(0);
    let mut bytes = std::fs::read(&file).unwrap();
    let at = bytes.windows(10).position(|w| w == b"value-0000").unwrap();
    bytes[at + 9] ^= 0x01;
    std::fs::write(&file, &bytes).unwrap();

    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    log.producer("t")
        .unwrap()
        .send(Record::new("after reopen"))
        .unwrap();
    let p = log.topic("t").unwrap().partition(0).unwrap().clone();
    assert!(
        matches!(p.read(0, 10), Err(Error::Corrupt { .. })),
        "a damaged record was returned"
    );
}

/// `{:?}` of handles must neither dump the map nor touch bytes past a
/// trimmed file's end.
#[test]
fn debug_of_handles_after_roll_and_close_is_short_and_safe() {
    let dir = TempDir::new("debug");
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let topic = log.create_topic("t", TopicConfig::new(1)).unwrap();
    log.producer("t").unwrap().send(Record::new("x")).unwrap();
    let p = topic.partition(0).unwrap().clone();
    let fetched = p.fetch(0, 1 << 20).unwrap();
    p.roll().unwrap();
    let text = format!("{log:?} {topic:?} {p:?} {fetched:?}");
    assert!(text.len() < 64 << 10, "Debug printed {} bytes", text.len());
    log.close().unwrap();
    let text = format!("{topic:?} {p:?}");
    assert!(text.contains("Segment"));
}

/// `segment_ms` beyond `i64::MAX` means "never", not "every append".
#[test]
fn huge_segment_ms_never_rolls() {
    let dir = TempDir::new("segms");
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let topic = log
        .create_topic("t", TopicConfig::new(1).segment_ms(Some(u64::MAX)))
        .unwrap();
    let producer = log.producer("t").unwrap();
    for _ in 0..5 {
        producer.send(Record::new("x")).unwrap();
    }
    assert_eq!(topic.partition(0).unwrap().stats().segments, 1);
}

/// A CRC-valid batch whose offsets make no sense (negative last offset
/// delta) is damage, not a panic and not a rewind.
#[test]
fn crafted_batch_with_negative_offset_delta_is_corrupt() {
    let dir = TempDir::new("negdelta");
    {
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        log.create_topic("t", small()).unwrap();
        let producer = log.producer("t").unwrap();
        for i in 0..10 {
            producer.send(Record::new(format!("v{i}"))).unwrap();
        }
        log.close().unwrap();
    }
    let file = log_files(&dir.path().join("t").join("0")).remove(0);
    let mut bytes = std::fs::read(&file).unwrap();
    // Batch 4 of 10 single-record batches: set lastOffsetDelta = -1, fix the CRC.
    let mut pos = 0;
    for _ in 0..4 {
        let len = i32::from_be_bytes(bytes[pos + 8..pos + 12].try_into().unwrap()) as usize;
        pos += 12 + len;
    }
    let len = i32::from_be_bytes(bytes[pos + 8..pos + 12].try_into().unwrap()) as usize;
    bytes[pos + 23..pos + 27].copy_from_slice(&(-1i32).to_be_bytes());
    let crc = crc32c::crc32c(&bytes[pos + 21..pos + 12 + len]);
    bytes[pos + 17..pos + 21].copy_from_slice(&crc.to_be_bytes());
    std::fs::write(&file, &bytes).unwrap();
    // Unclean open: the active segment is scanned.
    std::fs::remove_file(dir.path().join(".clean_shutdown")).unwrap();
    let copy = common::crash_copy(dir.path(), "negdelta-copy");
    match Log::open(copy.path(), LogConfig::default()) {
        Err(Error::Corrupt { position, .. }) => assert_eq!(position, pos as u64),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

/// `offsets_for_times` while producers write must never report corruption.
#[test]
fn offsets_for_times_during_appends_never_reports_corruption() {
    let dir = TempDir::new("oft-race");
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    log.create_topic("t", TopicConfig::new(1)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let producer = log.producer("t").unwrap();
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut ts = 1_000_000i64;
            while !stop.load(Ordering::Relaxed) {
                ts += 1;
                producer.send(Record::new("x").timestamp(ts)).unwrap();
            }
        })
    };
    let consumer = log.consumer(ConsumerConfig::default());
    let tp = TopicPartition::new("t", 0);
    let deadline = std::time::Instant::now() + Duration::from_millis(500);
    let mut asked = 0;
    while std::time::Instant::now() < deadline {
        let end = log
            .topic("t")
            .unwrap()
            .partition(0)
            .unwrap()
            .log_end_offset();
        // Ask for a timestamp around the newest records.
        let found = consumer
            .offsets_for_times(&[(tp.clone(), 1_000_000 + end as i64)])
            .unwrap();
        if let Some(found) = found[0] {
            assert!(found.timestamp >= 1_000_000 + end as i64);
        }
        asked += 1;
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert!(asked > 0);
}

/// Out-of-order writeback after a power loss leaves holes in unsynced data.
/// After a reboot that is cut and reported; after a mere process crash the
/// same picture can only be corruption and stays `Error::Corrupt`.
#[test]
fn hole_in_active_segment_is_cut_after_a_reboot_but_corrupt_after_a_crash() {
    let dir = TempDir::new("reboot");
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    log.create_topic("t", TopicConfig::new(1)).unwrap();
    let producer = log.producer("t").unwrap();
    for i in 0..3000 {
        producer
            .send(Record::new(format!("record-{i:05}-{}", "x".repeat(40))))
            .unwrap();
    }
    // Copies taken while the log is open look like a crash.
    let crash_copy = |tag: &str| {
        let copy = common::crash_copy(dir.path(), tag);
        let file = log_files(&copy.path().join("t").join("0")).remove(0);
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[64 << 10..68 << 10].fill(0); // one page lost in the middle
        std::fs::write(&file, &bytes).unwrap();
        copy
    };

    let same_boot = crash_copy("reboot-same");
    assert!(matches!(
        Log::open(same_boot.path(), LogConfig::default()),
        Err(Error::Corrupt { .. })
    ));

    let rebooted = crash_copy("reboot-other");
    std::fs::write(rebooted.path().join(".boot_id"), "an-earlier-boot").unwrap();
    let reopened = Log::open(rebooted.path(), LogConfig::default()).unwrap();
    let report = reopened.recovery_report();
    assert!(report.after_reboot && !report.clean_shutdown);
    assert!(report.truncated_bytes() > 0);
    let p = reopened.topic("t").unwrap().partition(0).unwrap().clone();
    let kept = p.log_end_offset();
    assert!(kept > 0 && kept < 3000, "kept {kept}");
    let got = common::read_all(&reopened, "t", 0);
    assert_eq!(got.len() as u64, kept);
    for (i, r) in got.iter().enumerate() {
        assert_eq!(
            r.value.as_deref(),
            Some(format!("record-{i:05}-{}", "x".repeat(40)).as_bytes())
        );
    }
    drop(log);
}

fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Sealed segments keep no file descriptor (their maps need none), so a
/// log with many segments does not run out of descriptors.
#[test]
fn many_segments_keep_few_descriptors_open() {
    let dir = TempDir::new("fds");
    let before = open_descriptors();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let topic = log
        .create_topic(
            "t",
            TopicConfig::new(1)
                .segment_bytes(4096)
                .max_record_bytes(1024),
        )
        .unwrap();
    let producer = log.producer("t").unwrap();
    let p = topic.partition(0).unwrap().clone();
    for i in 0..400 {
        producer.send(Record::new(format!("record {i}"))).unwrap();
        p.roll().unwrap();
    }
    p.flush().unwrap();
    assert!(p.stats().segments >= 400);
    let during = open_descriptors();
    // Other tests in this binary open files concurrently: allow slack, but
    // 400 segments with even one descriptor each would blow through it.
    assert!(
        during < before + 100,
        "{} descriptors open for {} segments",
        during - before,
        p.stats().segments
    );
    drop((producer, topic, p));
    log.close().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    assert!(open_descriptors() < before + 100);
    assert_eq!(common::read_all(&log, "t", 0).len(), 400);
}
