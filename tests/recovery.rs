//! Crash recovery: torn tails are cut back to the last whole batch, damage
//! followed by valid data is reported (never silently truncated), damaged or
//! missing indexes never lose records. (The SIGKILL test of a child
//! process is in `crash.rs`.)
//!
//! A crash image is taken by copying the data directory while the `Log` is
//! still open (see `common::copy_dir`): no `.clean_shutdown` marker, active
//! segments still preallocated, exactly what a killed process leaves.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::{
    Rng, TempDir, assert_same_files, batch_spans, crash_copy, log_files, read_all, snapshot,
};
use logbus::*;

/// Fixed "now": records without a timestamp get this one.
const T0: i64 = 1_700_000_000_000;

fn config() -> LogConfig {
    LogConfig::default().clock(Arc::new(ManualClock::new(T0)))
}

/// Small segments and a dense index, so a few hundred records span several
/// segments and every segment has index entries.
fn small_topic(segment_bytes: u64) -> TopicConfig {
    // No retention: some tests write timestamps far in the past, which the
    // background maintenance thread would otherwise delete mid-test.
    TopicConfig::new(1)
        .segment_bytes(segment_bytes)
        .max_record_bytes(2 << 10)
        .index_interval_bytes(256)
        .retention_ms(None)
}

fn pdir(root: &Path) -> PathBuf {
    root.join("t").join("0")
}

fn remove_marker(root: &Path) {
    std::fs::remove_file(root.join(".clean_shutdown")).unwrap();
}

/// A record as it will be read back: the timestamp is filled in.
fn random_record(rng: &mut Rng, tag: &str, timestamp: Option<i64>) -> Record {
    let len = 10 + rng.below(190) as usize;
    let mut r = Record::new(rng.bytes(len)).key(tag.to_string());
    if rng.below(3) == 0 {
        r = r.header("h", rng.bytes(5));
    }
    r.timestamp = Some(timestamp.unwrap_or(T0));
    r
}

/// Sends `batches` batches (single sends and `send_batch` calls of 2..=5
/// records); returns every record with its offset, in offset order.
fn write_batches(log: &Log, batches: usize, rng: &mut Rng) -> Vec<(u64, Record)> {
    let producer = log.producer("t").unwrap();
    let mut sent = Vec::new();
    for b in 0..batches {
        if b % 3 == 0 {
            let r = random_record(rng, &format!("k{b}"), None);
            let meta = producer.send(r.clone()).unwrap();
            sent.push((meta.offset, r));
        } else {
            let n = 2 + rng.below(4) as usize;
            let records: Vec<Record> = (0..n)
                .map(|j| random_record(rng, &format!("k{b}-{j}"), None))
                .collect();
            let metas = producer.send_batch(&records).unwrap();
            sent.extend(metas.iter().map(|m| m.offset).zip(records));
        }
    }
    for (i, (offset, _)) in sent.iter().enumerate() {
        assert_eq!(*offset, i as u64);
    }
    sent
}

fn assert_record(got: &ConsumerRecord, offset: u64, want: &Record) {
    assert_eq!(got.offset, offset);
    assert_eq!(got.key, want.key, "key at {offset}");
    assert_eq!(got.value, want.value, "value at {offset}");
    assert_eq!(got.headers, want.headers, "headers at {offset}");
    assert_eq!(Some(got.timestamp), want.timestamp, "timestamp at {offset}");
}

/// The partition holds exactly `want`, byte for byte.
fn assert_records(log: &Log, want: &[(u64, Record)]) {
    let got = read_all(log, "t", 0);
    assert_eq!(got.len(), want.len(), "record count");
    for (g, (offset, r)) in got.iter().zip(want) {
        assert_record(g, *offset, r);
    }
    let p = log.topic("t").unwrap().partition(0).unwrap().clone();
    assert_eq!(p.log_end_offset(), want.last().map_or(0, |(o, _)| o + 1));
}

/// After recovery the log takes appends at the right offset and reads them back.
fn assert_appends_continue(log: &Log, next: u64) {
    let r = Record::new("after recovery").key("after").timestamp(T0 + 1);
    let meta = log.producer("t").unwrap().send(r.clone()).unwrap();
    assert_eq!(meta.offset, next);
    let p = log.topic("t").unwrap().partition(0).unwrap().clone();
    let got = p.read(next, 10).unwrap();
    assert_eq!(got.len(), 1);
    assert_record(&got[0], next, &r);
}

fn recovery_of(log: &Log) -> PartitionRecovery {
    let report = log.recovery_report();
    assert_eq!(report.partitions.len(), 1);
    report.partitions[0].2.clone()
}

/// Bytes a torn tail holds up to its last non-zero byte: a zero run is what
/// a preallocated (never written) region looks like and is not reported.
fn torn_extent(tail: &[u8]) -> u64 {
    tail.iter()
        .rposition(|&b| b != 0)
        .map_or(0, |p| p as u64 + 1)
}

#[test]
fn torn_tail_at_every_byte_of_the_last_batch() {
    let src = TempDir::new("torn-src");
    let mut rng = Rng(1);
    let sent = {
        let log = Log::open(src.path(), config()).unwrap();
        log.create_topic("t", small_topic(8 << 10)).unwrap();
        let sent = write_batches(&log, 60, &mut rng);
        log.close().unwrap();
        sent
    };
    let logs = log_files(&pdir(src.path()));
    assert!(logs.len() >= 2, "want sealed segments too, got {logs:?}");
    let last_log = logs.last().unwrap().clone();
    let name = last_log.file_name().unwrap().to_owned();
    let bytes = std::fs::read(&last_log).unwrap();
    let spans = batch_spans(&bytes);
    // Closed cleanly: trimmed to whole batches.
    assert_eq!(spans.iter().map(|s| s.len).sum::<usize>(), bytes.len());
    let last = *spans.last().unwrap();
    assert!(last.records >= 2, "want a multi-record last batch");
    let keep: Vec<(u64, Record)> = sent
        .iter()
        .filter(|(o, _)| *o < last.base_offset)
        .cloned()
        .collect();

    for cut in 0..last.len {
        let copy = crash_copy(src.path(), "torn");
        remove_marker(copy.path());
        let path = pdir(copy.path()).join(&name);
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len((last.start + cut) as u64).unwrap();
        drop(file);

        let log = Log::open(copy.path(), config())
            .unwrap_or_else(|e| panic!("cut at {cut} of the last batch: {e}"));
        assert!(!log.recovery_report().clean_shutdown);
        let r = recovery_of(&log);
        assert_eq!(r.segments, logs.len());
        assert_eq!(r.segments_scanned, 1, "only the active segment is scanned");
        assert_eq!(
            r.truncated_bytes,
            torn_extent(&bytes[last.start..last.start + cut]),
            "cut at {cut}"
        );
        if cut >= 8 {
            // Past the base offset's leading zero bytes: real data was cut.
            assert!(r.truncated_bytes > 0, "cut at {cut}");
        }
        assert_records(&log, &keep);
        assert_appends_continue(&log, last.base_offset);
        log.close().unwrap();
    }
}

#[test]
fn crash_image_with_preallocated_zero_tail_keeps_every_record() {
    let src = TempDir::new("prealloc-src");
    let mut rng = Rng(2);
    let log = Log::open(src.path(), config()).unwrap();
    log.create_topic("t", small_topic(8 << 10)).unwrap();
    let sent = write_batches(&log, 50, &mut rng);
    let crash = crash_copy(src.path(), "prealloc");
    log.close().unwrap();

    assert!(!crash.path().join(".clean_shutdown").exists());
    let active = log_files(&pdir(crash.path())).last().unwrap().clone();
    let crashed_len = std::fs::metadata(&active).unwrap().len();
    assert_eq!(crashed_len, 8 << 10, "the active segment is preallocated");
    let data_len: usize = batch_spans(&std::fs::read(&active).unwrap())
        .iter()
        .map(|s| s.len)
        .sum();
    assert!((data_len as u64) < crashed_len);

    let log = Log::open(crash.path(), config()).unwrap();
    assert!(!log.recovery_report().clean_shutdown);
    let r = recovery_of(&log);
    assert_eq!(r.segments_scanned, 1);
    assert_eq!(r.truncated_bytes, 0, "a zero tail holds no data");
    assert_records(&log, &sent);
    assert_appends_continue(&log, sent.len() as u64);
    log.close().unwrap();
    // Trimmed again to the data (the new record's batch appended).
    let after = std::fs::read(&active).unwrap();
    let spans = batch_spans(&after);
    assert_eq!(spans.iter().map(|s| s.len).sum::<usize>(), after.len());
    assert_eq!(spans.last().unwrap().base_offset, sent.len() as u64);
}

#[test]
fn zeros_or_garbage_after_the_last_batch_are_truncated() {
    let src = TempDir::new("garbage-src");
    let mut rng = Rng(3);
    let sent = {
        let log = Log::open(src.path(), config()).unwrap();
        log.create_topic("t", small_topic(64 << 10)).unwrap();
        let sent = write_batches(&log, 20, &mut rng);
        log.close().unwrap();
        sent
    };
    let logs = log_files(&pdir(src.path()));
    let name = logs.last().unwrap().file_name().unwrap().to_owned();
    let bytes = std::fs::read(logs.last().unwrap()).unwrap();
    let next = sent.len() as u64;

    // A plausible next batch (right base offset) whose CRC no longer matches.
    let first = batch_spans(&bytes)[0];
    let mut bad_crc = bytes[first.start..first.start + first.len].to_vec();
    bad_crc[..8].copy_from_slice(&next.to_be_bytes());
    let n = bad_crc.len();
    bad_crc[n - 3] ^= 0x40;
    let mut garbage = rng.bytes(777);
    garbage[0] = 0xA5;
    let mut garbage_then_zeros = rng.bytes(100);
    garbage_then_zeros.extend_from_slice(&[0u8; 3000]);

    let tails: Vec<(&str, Vec<u8>)> = vec![
        ("zeros", vec![0u8; 5000]),
        ("random garbage", garbage),
        ("garbage then zeros", garbage_then_zeros),
        ("next batch with a bad CRC", bad_crc.clone()),
        ("half a header", bad_crc[..40].to_vec()),
        ("bad CRC then zeros", [bad_crc, vec![0u8; 4096]].concat()),
    ];
    for (what, tail) in &tails {
        // After an unclean shutdown: cut back to the last whole batch.
        let copy = crash_copy(src.path(), "garbage");
        remove_marker(copy.path());
        let path = pdir(copy.path()).join(&name);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(tail).unwrap();
        drop(f);
        let log = Log::open(copy.path(), config()).unwrap_or_else(|e| panic!("{what}: {e}"));
        let r = recovery_of(&log);
        assert_eq!(r.truncated_bytes, torn_extent(tail), "{what}");
        assert_records(&log, &sent);
        assert_appends_continue(&log, next);
        log.close().unwrap();
        let len = std::fs::metadata(&path).unwrap().len() as usize;
        assert!(
            len > bytes.len() && len < bytes.len() + 200,
            "{what}: {len}"
        );
    }

    // After a clean shutdown every file was trimmed to whole batches, so
    // bytes after them are damage to report, not a tail to cut.
    for (what, tail) in &tails[1..] {
        let copy = crash_copy(src.path(), "garbage-clean");
        let path = pdir(copy.path()).join(&name);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(tail).unwrap();
        drop(f);
        match Log::open(copy.path(), config()) {
            Err(Error::Corrupt {
                path: p, position, ..
            }) => {
                assert_eq!(p, path, "{what}");
                assert_eq!(position, bytes.len() as u64, "{what}");
            }
            other => panic!("{what} after a clean shutdown: expected Corrupt, got {other:?}"),
        }
        assert_eq!(
            std::fs::metadata(&path).unwrap().len() as usize,
            bytes.len() + tail.len()
        );
    }
}

/// Offsets of the batch header fields that the batch CRC does not cover.
const BASE_OFFSET: std::ops::Range<usize> = 0..8;
const LEADER_EPOCH: std::ops::Range<usize> = 12..16;

#[test]
fn bit_flip_in_an_earlier_batch_of_the_active_segment_is_corrupt() {
    let src = TempDir::new("flip-src");
    let mut rng = Rng(4);
    let log = Log::open(src.path(), config()).unwrap();
    log.create_topic("t", small_topic(64 << 10)).unwrap();
    let sent = write_batches(&log, 12, &mut rng);
    let crash = crash_copy(src.path(), "flip-crash");
    log.close().unwrap();

    let logs = log_files(&pdir(crash.path()));
    assert_eq!(logs.len(), 1);
    let name = logs[0].file_name().unwrap().to_owned();
    let bytes = std::fs::read(&logs[0]).unwrap();
    let spans = batch_spans(&bytes);
    // A multi-record batch in the middle, with valid batches after it.
    let victim = *spans[spans.len() / 2..spans.len() - 2]
        .iter()
        .find(|s| s.records >= 2)
        .expect("a multi-record batch");

    let mut flips: Vec<(usize, u8)> = (0..victim.len).map(|i| (i, (i % 8) as u8)).collect();
    // Every bit of the base offset: the CRC does not cover it, so an offset
    // bumped upwards must be caught by the offsets themselves.
    flips.extend(BASE_OFFSET.flat_map(|i| (0..8).map(move |b| (i, b))));
    for (i, bit) in flips {
        let copy = crash_copy(crash.path(), "flip");
        let path = pdir(copy.path()).join(&name);
        let mut damaged = bytes.clone();
        damaged[victim.start + i] ^= 1 << bit;
        std::fs::write(&path, &damaged).unwrap();
        let opened = Log::open(copy.path(), config());
        if LEADER_EPOCH.contains(&i) {
            // Not covered by the CRC (as in Kafka) and never used: harmless,
            // and every record is intact.
            let log = opened.unwrap();
            assert_records(&log, &sent);
            log.close().unwrap();
            continue;
        }
        match opened {
            Err(Error::Corrupt {
                path: p, position, ..
            }) => {
                assert_eq!(p, path, "byte {i} bit {bit}");
                assert_eq!(position, victim.start as u64, "byte {i} bit {bit}");
            }
            Ok(log) => {
                let n = read_all(&log, "t", 0).len();
                panic!(
                    "byte {i} bit {bit}: opened with {n} of {} records",
                    sent.len()
                )
            }
            Err(e) => panic!("byte {i} bit {bit}: expected Corrupt, got {e:?}"),
        }
        // Nothing was truncated.
        assert_eq!(std::fs::read(&path).unwrap(), damaged, "byte {i} bit {bit}");
    }
}

#[test]
fn bit_flip_in_a_sealed_segment_fails_the_read() {
    let src = TempDir::new("sealed-flip-src");
    let mut rng = Rng(5);
    let sent = {
        let log = Log::open(src.path(), config()).unwrap();
        log.create_topic("t", small_topic(4096)).unwrap();
        let sent = write_batches(&log, 60, &mut rng);
        log.close().unwrap();
        sent
    };
    let logs = log_files(&pdir(src.path()));
    assert!(logs.len() >= 3);
    let name = logs[0].file_name().unwrap().to_owned();
    let index = logs[0].with_extension("index");
    assert!(
        std::fs::metadata(&index).unwrap().len() > 0,
        "want index entries"
    );
    let bytes = std::fs::read(&logs[0]).unwrap();
    let spans = batch_spans(&bytes);
    let victim = spans[0];
    let after_victim = spans[1].base_offset;

    for clean in [true, false] {
        let copy = crash_copy(src.path(), "sealed-flip");
        if !clean {
            remove_marker(copy.path());
        }
        let path = pdir(copy.path()).join(&name);
        let mut damaged = bytes.clone();
        damaged[victim.start + victim.len - 3] ^= 0x10; // inside the last record
        std::fs::write(&path, &damaged).unwrap();

        let log = Log::open(copy.path(), config()).unwrap();
        let expect_corrupt = |what: &str, result: Result<Vec<ConsumerRecord>>| match result {
            Err(Error::Corrupt {
                path: p, position, ..
            }) => {
                assert_eq!(p, path, "{what}");
                assert_eq!(position, victim.start as u64, "{what}");
            }
            other => panic!("{what} (clean {clean}): expected Corrupt, got {other:?}"),
        };
        let p = log.topic("t").unwrap().partition(0).unwrap().clone();
        for offset in victim.base_offset..victim.base_offset + u64::from(victim.records) {
            expect_corrupt("Partition::read", p.read(offset, 100));
            let fetched = p.fetch(offset, 1 << 20).unwrap();
            let views: Result<Vec<_>> = fetched.records().map(|r| r.map(|r| r.offset)).collect();
            expect_corrupt("FetchedBatches::records", views.map(|_| Vec::new()));
        }
        let mut consumer = log.consumer(ConsumerConfig::default());
        let tp = TopicPartition::new("t", 0);
        consumer.assign(std::slice::from_ref(&tp)).unwrap();
        let poll = |consumer: &mut Consumer, timeout| consumer.poll(timeout).map(|r| r.into_vec());
        expect_corrupt(
            "Consumer::poll",
            poll(&mut consumer, Duration::from_millis(100)),
        );
        // The position did not move past the damage.
        expect_corrupt(
            "Consumer::poll again",
            poll(&mut consumer, Duration::from_millis(10)),
        );
        // All timestamps are T0, so the lookup lands in the damaged batch.
        let found = consumer.offsets_for_times(&[(tp.clone(), T0)]);
        assert!(
            matches!(found, Err(Error::Corrupt { .. })),
            "offsets_for_times: {found:?}"
        );
        // Records after the damage are still readable.
        let got = p.read(after_victim, 1000).unwrap();
        assert_eq!(got[0].offset, after_victim);
        assert_record(&got[0], after_victim, &sent[after_victim as usize].1);
        consumer.seek(&tp, after_victim).unwrap();
        let got = consumer
            .poll(Duration::from_millis(100))
            .unwrap()
            .into_vec();
        assert_record(&got[0], after_victim, &sent[after_victim as usize].1);
        log.close().unwrap();
    }
}

// ---------------------------------------------------------------------------
// Indexes and the time index

/// Earliest offset whose timestamp is `>= t`, by brute force.
fn model_offset_for_time(model: &[(u64, i64)], t: i64) -> Option<OffsetAndTimestamp> {
    model
        .iter()
        .find(|(_, ts)| *ts >= t)
        .map(|&(offset, timestamp)| OffsetAndTimestamp { offset, timestamp })
}

fn assert_offsets_for_times(log: &Log, model: &[(u64, i64)], what: &str) {
    let consumer = log.consumer(ConsumerConfig::default());
    let tp = TopicPartition::new("t", 0);
    let mut queries = vec![i64::MIN, i64::MAX];
    for &(_, ts) in model {
        queries.extend([ts - 1, ts, ts + 1]);
    }
    queries.sort_unstable();
    queries.dedup();
    let asked: Vec<(TopicPartition, i64)> = queries.iter().map(|&t| (tp.clone(), t)).collect();
    let got = consumer.offsets_for_times(&asked).unwrap();
    for (&t, got) in queries.iter().zip(got) {
        assert_eq!(
            got,
            model_offset_for_time(model, t),
            "{what}: timestamp {t}"
        );
    }
}

/// Writes records with explicit timestamps: increasing first, then jumping
/// around (so a segment's largest timestamp is often not in its last batch),
/// single sends and batches mixed, over several segments.
/// Records with their offsets, and `(offset, timestamp)` pairs.
type Timed = (Vec<(u64, Record)>, Vec<(u64, i64)>);

fn write_timed(log: &Log, rng: &mut Rng) -> Timed {
    let producer = log.producer("t").unwrap();
    let mut sent = Vec::new();
    let mut ts = 1_000_000i64;
    let mut i = 0;
    while sent.len() < 700 {
        let n = if i % 2 == 0 {
            1
        } else {
            1 + rng.below(6) as usize
        };
        let records: Vec<Record> = (0..n)
            .map(|j| {
                let t = if sent.len() < 250 {
                    ts += rng.below(20) as i64;
                    ts
                } else {
                    1_000_000 - 3_000 + rng.below(12_000) as i64
                };
                random_record(rng, &format!("k{i}-{j}"), Some(t))
            })
            .collect();
        let metas = if n == 1 {
            vec![producer.send(records[0].clone()).unwrap()]
        } else {
            producer.send_batch(&records).unwrap()
        };
        sent.extend(metas.iter().map(|m| m.offset).zip(records));
        i += 1;
    }
    let model = sent
        .iter()
        .map(|(o, r)| (*o, r.timestamp.unwrap()))
        .collect();
    (sent, model)
}

#[test]
fn offsets_for_times_matches_a_brute_force_model() {
    let src = TempDir::new("times");
    let mut rng = Rng(6);
    let log = Log::open(src.path(), config()).unwrap();
    log.create_topic("t", small_topic(8 << 10)).unwrap();
    let (sent, model) = write_timed(&log, &mut rng);
    let stats = log.topic("t").unwrap().partition(0).unwrap().stats();
    assert!(stats.segments >= 5, "{stats:?}");
    assert_offsets_for_times(&log, &model, "live");
    let crash = crash_copy(src.path(), "times-crash");
    log.close().unwrap();

    let log = Log::open(src.path(), config()).unwrap();
    assert!(log.recovery_report().clean_shutdown);
    assert_records(&log, &sent);
    assert_offsets_for_times(&log, &model, "after a clean reopen");
    log.close().unwrap();

    let log = Log::open(crash.path(), config()).unwrap();
    assert!(!log.recovery_report().clean_shutdown);
    assert_records(&log, &sent);
    assert_offsets_for_times(&log, &model, "after a crash");
    // Appends after recovery keep the time index right.
    let producer = log.producer("t").unwrap();
    let mut model = model;
    for k in 0..40i64 {
        let t = 1_000_000 + (k * 7919) % 9_000 - 2_000;
        let meta = producer.send(Record::new("late").timestamp(t)).unwrap();
        model.push((meta.offset, t));
    }
    assert_offsets_for_times(&log, &model, "appends after a crash");
    log.close().unwrap();
    let log = Log::open(crash.path(), config()).unwrap();
    assert_offsets_for_times(&log, &model, "reopen after appends after a crash");
    log.close().unwrap();
}

fn files_with_ext(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

#[test]
fn missing_or_garbage_indexes_never_lose_records() {
    let src = TempDir::new("index-src");
    let mut rng = Rng(7);
    let (sent, model) = {
        let log = Log::open(src.path(), config()).unwrap();
        log.create_topic("t", small_topic(8 << 10)).unwrap();
        let out = write_timed(&log, &mut rng);
        log.close().unwrap();
        out
    };
    let segments = log_files(&pdir(src.path())).len();
    assert!(segments >= 5);

    type Damage = fn(&Path, &mut Rng);
    let damages: Vec<(&str, &str, Damage)> = vec![
        ("deleted", "index", |p, _| std::fs::remove_file(p).unwrap()),
        ("deleted", "timeindex", |p, _| {
            std::fs::remove_file(p).unwrap()
        }),
        ("emptied", "index", |p, _| std::fs::write(p, b"").unwrap()),
        ("emptied", "timeindex", |p, _| {
            std::fs::write(p, b"").unwrap()
        }),
        ("odd length", "index", |p, _| {
            let len = std::fs::metadata(p).unwrap().len();
            let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
            f.set_len(if len > 3 { len - 3 } else { 5 }).unwrap();
        }),
        ("odd length", "timeindex", |p, _| {
            let len = std::fs::metadata(p).unwrap().len();
            let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
            f.set_len(if len > 5 { len - 5 } else { 7 }).unwrap();
        }),
        ("0xff past EOF", "index", |p, _| {
            let len = std::fs::metadata(p).unwrap().len().max(16) as usize;
            std::fs::write(p, vec![0xffu8; len]).unwrap();
        }),
        ("0xff past EOF", "timeindex", |p, _| {
            let len = std::fs::metadata(p).unwrap().len().max(24) as usize;
            std::fs::write(p, vec![0xffu8; len]).unwrap();
        }),
        ("random garbage", "index", |p, rng| {
            // Big positions and offsets: point past the end of the segment.
            let n = (std::fs::metadata(p).unwrap().len() / 8).max(2) as usize;
            let mut out = Vec::new();
            for _ in 0..n {
                out.extend_from_slice(&(rng.next_u64() as u32 | 1 << 31).to_be_bytes());
                out.extend_from_slice(&(rng.next_u64() as u32 | 1 << 31).to_be_bytes());
            }
            std::fs::write(p, out).unwrap();
        }),
        ("random garbage", "timeindex", |p, rng| {
            let n = (std::fs::metadata(p).unwrap().len() / 12).max(2) as usize;
            let mut out = Vec::new();
            for _ in 0..n {
                out.extend_from_slice(&(rng.next_u64() as i64).to_be_bytes());
                out.extend_from_slice(&(rng.next_u64() as u32 | 1 << 31).to_be_bytes());
            }
            std::fs::write(p, out).unwrap();
        }),
    ];

    for clean in [true, false] {
        for (what, ext, damage) in &damages {
            let what = format!("{what} .{ext} (clean shutdown: {clean})");
            let copy = crash_copy(src.path(), "index");
            if !clean {
                remove_marker(copy.path());
            }
            for path in files_with_ext(&pdir(copy.path()), ext) {
                damage(&path, &mut rng);
            }
            let log = match Log::open(copy.path(), config()) {
                Ok(log) => log,
                // Refusing to open is acceptable; it must name a file.
                Err(Error::Corrupt { path, .. }) => {
                    assert!(path.starts_with(copy.path()), "{what}: {path:?}");
                    eprintln!("note: {what}: open refused: corrupt {path:?}");
                    continue;
                }
                Err(e) => panic!("{what}: {e:?}"),
            };
            // Every damaged index was noticed and rebuilt (the active
            // segment's may legitimately have had no entry to lose).
            let rebuilt = log.recovery_report().indexes_rebuilt();
            assert!(
                rebuilt >= segments - 1,
                "{what}: {rebuilt} of {segments} rebuilt"
            );
            assert_records(&log, &sent);
            assert_offsets_for_times(&log, &model, &what);
            // And the repaired indexes survive another clean cycle.
            log.close().unwrap();
            let log = Log::open(copy.path(), config()).unwrap();
            assert_records(&log, &sent);
            assert_offsets_for_times(&log, &model, &format!("{what}, reopened"));
            assert_appends_continue(&log, sent.len() as u64);
            log.close().unwrap();
        }
    }
}

#[test]
fn recovery_is_idempotent() {
    let src = TempDir::new("twice-src");
    let mut rng = Rng(8);
    let log = Log::open(src.path(), config()).unwrap();
    log.create_topic("t", small_topic(8 << 10)).unwrap();
    let sent = write_batches(&log, 70, &mut rng);
    // Tear the active segment's tail as a crash mid-append would.
    let crash = crash_copy(src.path(), "twice-crash");
    log.close().unwrap();
    let active = log_files(&pdir(crash.path())).last().unwrap().clone();
    let bytes = std::fs::read(&active).unwrap();
    let last = *batch_spans(&bytes).last().unwrap();
    let mut torn = bytes.clone();
    torn[last.start + last.len - 10..last.start + last.len].fill(0);
    std::fs::write(&active, &torn).unwrap();
    let keep: Vec<_> = sent
        .iter()
        .filter(|(o, _)| *o < last.base_offset)
        .cloned()
        .collect();

    // First recovery, then a second crash right after it (before any append).
    let first = crash_copy(crash.path(), "twice-1");
    let log1 = Log::open(first.path(), config()).unwrap();
    assert!(recovery_of(&log1).truncated_bytes > 0);
    assert_records(&log1, &keep);
    let second = crash_copy(first.path(), "twice-2");
    log1.close().unwrap();

    let log2 = Log::open(second.path(), config()).unwrap();
    assert!(!log2.recovery_report().clean_shutdown);
    assert_eq!(recovery_of(&log2).truncated_bytes, 0, "nothing left to cut");
    assert_records(&log2, &keep);
    log2.close().unwrap();
    assert_same_files(&snapshot(second.path()), &snapshot(first.path()));

    // Recovering the same crash image again gives the same files.
    let third = crash_copy(crash.path(), "twice-3");
    Log::open(third.path(), config()).unwrap().close().unwrap();
    assert_same_files(&snapshot(third.path()), &snapshot(first.path()));
}

/// The `.log` and `.index` files of a partition, by name.
fn logs_and_indexes(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    snapshot(&pdir(root))
        .into_iter()
        .filter(|(p, _)| p.extension().is_some_and(|e| e == "log" || e == "index"))
        .collect()
}

#[test]
fn reopening_between_appends_writes_the_same_files() {
    // The same records (same clock, so the same bytes) written by one
    // session, and by many sessions separated by clean closes and crashes.
    let mut rng = Rng(11);
    let batches: Vec<Vec<Record>> = (0..90)
        .map(|b| {
            let n = 1 + rng.below(4) as usize;
            (0..n)
                .map(|j| random_record(&mut rng, &format!("k{b}-{j}"), None))
                .collect()
        })
        .collect();
    let topic = small_topic(8 << 10).index_interval_bytes(300);
    let one = TempDir::new("sessions-one");
    let log = Log::open(one.path(), config()).unwrap();
    log.create_topic("t", topic.clone()).unwrap();
    for b in &batches {
        log.producer("t").unwrap().send_batch(b).unwrap();
    }
    log.close().unwrap();

    let mut many = TempDir::new("sessions-many");
    let mut log = Log::open(many.path(), config()).unwrap();
    log.create_topic("t", topic).unwrap();
    for (i, b) in batches.iter().enumerate() {
        log.producer("t").unwrap().send_batch(b).unwrap();
        if i % 7 == 6 {
            log.close().unwrap();
            log = Log::open(many.path(), config()).unwrap();
            assert!(log.recovery_report().clean_shutdown);
            assert_eq!(
                log.recovery_report().indexes_rebuilt(),
                0,
                "after batch {i}"
            );
        } else if i % 11 == 10 {
            let crash = crash_copy(many.path(), "sessions-crash");
            log.close().unwrap();
            many = crash;
            log = Log::open(many.path(), config()).unwrap();
            assert!(!log.recovery_report().clean_shutdown);
        }
    }
    log.close().unwrap();
    let want = logs_and_indexes(one.path());
    assert!(want.len() >= 8);
    assert_same_files(&logs_and_indexes(many.path()), &want);
}

#[test]
fn sealed_segment_with_an_untrimmed_tail_recovers_after_a_crash() {
    // A crash while a roll seals a segment can leave the sealed segment's
    // indexes trimmed but its `.log` still at its preallocated size.
    let src = TempDir::new("untrimmed-src");
    let mut rng = Rng(9);
    let sent = {
        let log = Log::open(src.path(), config()).unwrap();
        log.create_topic("t", small_topic(8 << 10)).unwrap();
        let sent = write_batches(&log, 60, &mut rng);
        log.close().unwrap();
        sent
    };
    let logs = log_files(&pdir(src.path()));
    assert!(logs.len() >= 3);
    let grow = |path: &Path, len: u64| {
        let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        f.set_len(len).unwrap();
    };
    for (k, sealed_log) in logs[..logs.len() - 1].iter().enumerate() {
        // `indexes_too`: the crash came before the seal started, so the
        // indexes are still at their preallocated sizes as well.
        for indexes_too in [false, true] {
            let what = format!("segment {k}, indexes untrimmed too: {indexes_too}");
            let copy = crash_copy(src.path(), "untrimmed");
            remove_marker(copy.path());
            let sealed = pdir(copy.path()).join(sealed_log.file_name().unwrap());
            grow(&sealed, 8 << 10);
            if indexes_too {
                grow(&sealed.with_extension("index"), 8 * 40);
                grow(&sealed.with_extension("timeindex"), 12 * 40);
            }
            let log = Log::open(copy.path(), config()).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(recovery_of(&log).truncated_bytes, 0, "{what}");
            assert_records(&log, &sent);
            assert_appends_continue(&log, sent.len() as u64);
            log.close().unwrap();
            let len = std::fs::metadata(&sealed).unwrap().len();
            assert_eq!(
                len,
                std::fs::metadata(sealed_log).unwrap().len(),
                "{what}: trimmed"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Metadata files

fn props(kind: &str, version: u32, body: &str) -> Vec<u8> {
    let text = format!("# logbus {kind} v{version}\n{body}");
    format!("{text}crc32={:08x}\n", crc32fast::hash(text.as_bytes())).into_bytes()
}

#[test]
fn damaged_topic_config_and_future_meta_are_typed_errors() {
    let src = TempDir::new("meta-src");
    {
        let log = Log::open(src.path(), config()).unwrap();
        log.create_topic("t", small_topic(8 << 10)).unwrap();
        log.producer("t").unwrap().send(Record::new("x")).unwrap();
        log.close().unwrap();
    }
    let conf_name = std::fs::read_dir(src.path().join("t"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_file())
        .expect("a topic config file");
    let conf_name = conf_name.file_name().unwrap().to_owned();
    let original = std::fs::read(src.path().join("t").join(&conf_name)).unwrap();

    let mut rng = Rng(10);
    let mut flipped = original.clone();
    flipped[original.len() / 2] ^= 0x04;
    let damaged_configs: Vec<(&str, Vec<u8>)> = vec![
        ("random garbage", rng.bytes(64)),
        ("empty", Vec::new()),
        ("truncated", original[..original.len() - 5].to_vec()),
        ("bit flip", flipped),
        (
            "valid crc, unknown setting",
            props("topic-config", 1, "partitions=1\nfuture.knob=1\n"),
        ),
    ];
    for (what, contents) in damaged_configs {
        let copy = crash_copy(src.path(), "conf");
        let path = copy.path().join("t").join(&conf_name);
        std::fs::write(&path, contents).unwrap();
        match Log::open(copy.path(), config()) {
            Err(Error::Corrupt { path: p, .. }) => assert_eq!(p, path, "{what}"),
            other => panic!("{what}: expected Corrupt naming {path:?}, got {other:?}"),
        }
    }

    let copy = crash_copy(src.path(), "conf-future");
    let path = copy.path().join("t").join(&conf_name);
    std::fs::write(&path, props("topic-config", 99, "partitions=1\n")).unwrap();
    match Log::open(copy.path(), config()) {
        Err(Error::UnsupportedVersion { path: p, found, .. }) => {
            assert_eq!((p, found), (path, 99));
        }
        other => panic!("future topic config: {other:?}"),
    }

    let copy = crash_copy(src.path(), "meta-future");
    let meta = copy.path().join("logbus.meta");
    let future = FORMAT_VERSION + 1;
    std::fs::write(&meta, props("meta", future, &format!("format={future}\n"))).unwrap();
    match Log::open(copy.path(), config()) {
        Err(Error::UnsupportedVersion {
            path,
            found,
            supported,
        }) => {
            assert_eq!(path, meta);
            assert_eq!((found, supported), (future, FORMAT_VERSION));
        }
        other => panic!("future logbus.meta: expected UnsupportedVersion, got {other:?}"),
    }
    // Refusing must not have touched anything: the marker is still there.
    assert!(copy.path().join(".clean_shutdown").exists());

    let copy = crash_copy(src.path(), "meta-garbage");
    let meta = copy.path().join("logbus.meta");
    std::fs::write(&meta, b"\x00\x01 not a meta file\n").unwrap();
    match Log::open(copy.path(), config()) {
        Err(Error::Corrupt { path, .. }) => assert_eq!(path, meta),
        other => panic!("garbage logbus.meta: {other:?}"),
    }
}
