//! Opening a partition with many segments: the sealed ones are opened by
//! several threads at once (see `log::open_in_parallel`). The log must come
//! back exactly as it was, and damage must be reported for the first damaged
//! segment in offset order, whichever thread found it.

mod common;

use common::{TempDir, batch_spans, crash_copy, log_files, read_all};
use logbus::*;

const SEGMENTS: usize = 40;

fn topic() -> TopicConfig {
    TopicConfig::new(1)
        .segment_bytes(4096)
        .max_record_bytes(2 << 10)
        .index_interval_bytes(256)
        .retention_ms(None)
}

fn value(i: u64) -> Vec<u8> {
    format!("record {i} {}", "x".repeat((i % 50) as usize)).into_bytes()
}

/// A log whose one partition has at least `SEGMENTS` segments; returns the
/// number of records written.
fn write_log(dir: &std::path::Path) -> u64 {
    let log = Log::open(dir, LogConfig::default().background_maintenance(false)).unwrap();
    log.create_topic("many", topic()).unwrap();
    let producer = log.producer("many").unwrap();
    let mut sent = 0;
    while log_files(&dir.join("many").join("0")).len() < SEGMENTS {
        let batch: Vec<Record> = (sent..sent + 7)
            .map(|i| Record::new(value(i)).key(format!("k{i}")).partition(0))
            .collect();
        producer.send_batch(&batch).unwrap();
        sent += 7;
    }
    log.close().unwrap();
    sent
}

fn assert_all_records(log: &Log, sent: u64) {
    let records = read_all(log, "many", 0);
    assert_eq!(records.len() as u64, sent);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.offset, i as u64);
        assert_eq!(r.value.as_deref(), Some(&value(i as u64)[..]));
    }
}

#[test]
fn a_partition_with_many_segments_reopens_whole_after_close_and_crash() {
    let dir = TempDir::new("many-open");
    let sent = write_log(dir.path());

    let log = Log::open(
        dir.path(),
        LogConfig::default().background_maintenance(false),
    )
    .unwrap();
    let report = log.recovery_report();
    assert!(report.clean_shutdown);
    let scanned: usize = report
        .partitions
        .iter()
        .map(|(_, _, r)| r.segments_scanned)
        .sum();
    assert_eq!(scanned, 0, "a clean open scans nothing");
    assert_eq!(report.indexes_rebuilt(), 0);
    assert_all_records(&log, sent);

    // A crash image of a log in use: the sealed segments are trusted, the
    // active one scanned; appends go on at the right offset.
    let producer = log.producer("many").unwrap();
    let meta = producer.send(Record::new("after").partition(0)).unwrap();
    assert_eq!(meta.offset, sent);
    let crashed = crash_copy(dir.path(), "many-crash");
    log.close().unwrap();
    let log = Log::open(
        crashed.path(),
        LogConfig::default().background_maintenance(false),
    )
    .unwrap();
    let records = read_all(&log, "many", 0);
    assert_eq!(records.len() as u64, sent + 1);
    assert_eq!(records[sent as usize].value.as_deref(), Some(&b"after"[..]));
}

#[test]
fn damage_in_sealed_segments_names_the_first_damaged_file() {
    let dir = TempDir::new("many-damage");
    write_log(dir.path());
    let files = log_files(&dir.path().join("many").join("0"));
    // Damage the last batch (the one a trusted open checks) of two sealed
    // segments, far apart so different threads open them.
    let damaged = [&files[11], &files[30]];
    for path in damaged {
        let mut bytes = std::fs::read(path).unwrap();
        let last = *batch_spans(&bytes).last().unwrap();
        bytes[last.start + last.len - 3] ^= 0x40;
        std::fs::write(path, &bytes).unwrap();
    }
    for _ in 0..5 {
        match Log::open(
            dir.path(),
            LogConfig::default().background_maintenance(false),
        ) {
            Err(Error::Corrupt { path, .. }) => assert_eq!(&path, damaged[0]),
            other => panic!("expected Corrupt naming {:?}, got {other:?}", damaged[0]),
        }
    }
}
