//! Power cuts at every storage operation of a workload, and injected
//! write/fsync errors.
//!
//! The workload runs under `Durability::Always` with small segments (so it
//! rolls), sends single records and batches to two partitions and commits
//! group offsets. For each cut point N the workload runs again in a fresh
//! directory; the image a power cut at operation N would leave is rebuilt
//! four ways (unsynced data dropped, kept, torn at 512 bytes, garbage) and
//! reopened. Every record acknowledged before the cut must be there with
//! the same bytes at the same offset, the log must open and read without
//! error, and the group's committed offset must not go backwards.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::{Unsynced, finish, ops, start};
use crate::testutil::TempDir;
use crate::{
    ConsumerGroup, Delivery, Durability, Error, GroupConfig, Log, LogConfig, QueueConfig, Record,
    TopicConfig, TopicPartition, WorkQueue,
};

/// What the workload saw acknowledged, with the operation count at the
/// moment each acknowledgement returned.
#[derive(Debug, Default)]
struct Acked {
    records: Vec<(u64, u32, u64, Vec<u8>)>,
    /// (ops, partition, committed offset).
    commits: Vec<(u64, u32, u64)>,
    /// (ops, partition, offset) of work-queue records acknowledged and
    /// committed: they must never be delivered again.
    queue_acks: Vec<(u64, u32, u64)>,
}

fn config() -> LogConfig {
    LogConfig::default()
        .durability(Durability::Always)
        .background_maintenance(false)
}

fn value(i: usize) -> Vec<u8> {
    format!("record-{i:04}-{}", "x".repeat(120)).into_bytes()
}

/// The workload: ~80 sends, a few batches, group commits, rolls, and a
/// work queue acknowledging every other record it takes.
fn workload(dir: &Path) -> Acked {
    let mut acked = Acked::default();
    let log = Log::open(dir, config()).expect("open");
    let topic = TopicConfig::new(2)
        .segment_bytes(4096)
        .max_record_bytes(2048)
        .retention_ms(None);
    log.create_topic("t", topic).expect("create");
    let producer = log.producer("t").expect("producer");
    let mut member =
        ConsumerGroup::join(&log, "g", &["t"], GroupConfig::default().auto_commit(false))
            .expect("join");
    while member.assignment().len() < 2 {
        member.poll(Duration::from_millis(1)).expect("poll");
    }
    let queue = WorkQueue::open(&log, "q", "t", QueueConfig::default()).expect("queue");
    let mut worker = queue.worker();
    for i in 0..80 {
        if i % 10 == 9 {
            let batch: Vec<Record> = (0..4)
                .map(|k| Record::new(value(1000 + i * 10 + k)).partition((i % 2) as u32))
                .collect();
            let metas = producer.send_batch(&batch).expect("send_batch");
            let now = ops(dir);
            for (m, r) in metas.iter().zip(&batch) {
                let v = r.value.as_deref().unwrap_or_default().to_vec();
                acked.records.push((now, m.partition, m.offset, v));
            }
        } else {
            let v = value(i);
            let m = producer
                .send(Record::new(v.clone()).partition((i % 2) as u32))
                .expect("send");
            acked.records.push((ops(dir), m.partition, m.offset, v));
        }
        if i % 7 == 6 {
            let p = (i % 2) as u32;
            let end = log.topic("t").expect("topic").partitions()[p as usize].log_end_offset();
            member
                .commit_offsets(&[(TopicPartition::new("t", p), end)])
                .expect("commit");
            acked.commits.push((ops(dir), p, end));
        }
        if i % 16 == 15 {
            let jobs = worker.poll(Duration::ZERO).expect("queue poll");
            let done: Vec<&Delivery> = jobs.iter().filter(|d| d.record.offset % 2 == 0).collect();
            worker.ack_all(done.iter().copied()).expect("ack");
            worker.commit().expect("queue commit");
            let now = ops(dir);
            for d in done {
                acked
                    .queue_acks
                    .push((now, d.record.partition, d.record.offset));
            }
            // The rest is released when the worker goes; a fresh one next time.
            worker = queue.worker();
        }
    }
    drop(worker);
    drop(queue);
    drop(member);
    log.close().expect("close");
    acked
}

/// Reopens an image and checks what the cut at `cut` must have kept.
fn check(image_dir: &Path, acked: &Acked, cut: u64, how: Unsynced) {
    let log = Log::open(image_dir, config())
        .unwrap_or_else(|e| panic!("cut at op {cut} ({how:?}): open failed: {e}"));
    let Ok(topic) = log.topic("t") else {
        // Cut before the topic's creation was durable: nothing was acknowledged.
        assert!(
            acked.records.iter().all(|(at, ..)| *at >= cut),
            "cut {cut} ({how:?}): the topic vanished under acknowledged records"
        );
        return;
    };
    for (at, partition, offset, value) in &acked.records {
        if *at >= cut {
            continue; // acknowledged after the cut
        }
        let p = &topic.partitions()[*partition as usize];
        let got = p
            .read(*offset, 1)
            .unwrap_or_else(|e| panic!("cut {cut} ({how:?}): read {partition}@{offset}: {e}"));
        assert_eq!(
            got.first()
                .map(|r| (r.offset, r.value.as_deref().map(<[u8]>::to_vec))),
            Some((*offset, Some(value.clone()))),
            "cut at op {cut} ({how:?}): acknowledged record {partition}@{offset} lost"
        );
    }
    // Everything readable reads without error, offsets contiguous.
    for p in topic.partitions() {
        let mut next = p.log_start_offset();
        while next < p.log_end_offset() {
            let got = p
                .read(next, 1000)
                .unwrap_or_else(|e| panic!("cut {cut} ({how:?}): read at {next}: {e}"));
            for r in &got {
                assert_eq!(r.offset, next, "cut {cut} ({how:?}): gap");
                next += 1;
            }
            assert!(!got.is_empty(), "cut {cut} ({how:?}): nothing at {next}");
        }
    }
    // Committed offsets never go backwards past what was acknowledged.
    let committed: BTreeMap<u32, u64> = log
        .describe_group("g")
        .map(|d| {
            d.offsets
                .iter()
                .filter_map(|o| o.committed.map(|c| (o.partition.partition, c)))
                .collect()
        })
        .unwrap_or_default();
    for (at, partition, offset) in &acked.commits {
        if *at < cut {
            let have = committed.get(partition).copied().unwrap_or(0);
            assert!(
                have >= *offset,
                "cut {cut} ({how:?}): commit {partition}@{offset} lost (have {have})"
            );
        }
    }
    // Work-queue records acknowledged before the cut never come back.
    let gone: std::collections::BTreeSet<(u32, u64)> = acked
        .queue_acks
        .iter()
        .filter(|(at, ..)| *at < cut)
        .map(|&(_, p, o)| (p, o))
        .collect();
    let queue = WorkQueue::open(&log, "q", "t", QueueConfig::default())
        .unwrap_or_else(|e| panic!("cut {cut} ({how:?}): queue open: {e}"));
    let mut worker = queue.worker();
    loop {
        let jobs = worker
            .poll(Duration::ZERO)
            .unwrap_or_else(|e| panic!("cut {cut} ({how:?}): queue poll: {e}"));
        if jobs.is_empty() {
            break;
        }
        for d in &jobs {
            let key = (d.record.partition, d.record.offset);
            assert!(
                !gone.contains(&key),
                "cut {cut} ({how:?}): acknowledged queue record {key:?} delivered again"
            );
        }
        worker.ack_all(&jobs).expect("ack");
    }
    drop(worker);
    drop(queue);
    log.close().expect("close image");
}

/// Runs the workload once per cut point (every `step`-th operation), and
/// rebuilds each cut with `seeds` different tears and garbage.
fn power_cuts(step: u64, seeds: u64) -> (u64, usize, usize) {
    let probe = TempDir::new();
    start(probe.path(), None);
    workload(probe.path());
    let (total, _) = finish(probe.path());
    assert!(total > 100, "workload too small: {total} operations");
    let mut images = 0;
    let mut with_unsynced = 0;
    let mut cut = 1;
    while cut <= total {
        let dir = TempDir::new();
        start(dir.path(), Some(cut));
        let acked = workload(dir.path());
        let (_, image) = finish(dir.path());
        let image = image.unwrap_or_else(|| panic!("cut {cut} of {total} not reached"));
        with_unsynced += usize::from(image.unsynced_files() > 0);
        let seeded = (0..seeds).flat_map(|k| {
            let seed = cut.wrapping_mul(0x9E37_79B9).wrapping_add(k);
            [Unsynced::Tear(seed), Unsynced::Garbage(seed)]
        });
        for how in [Unsynced::Drop, Unsynced::Keep].into_iter().chain(seeded) {
            let target = TempDir::new();
            image.materialize(target.path(), how);
            check(target.path(), &acked, cut, how);
            images += 1;
        }
        cut += step;
    }
    (total, images, with_unsynced)
}

#[test]
fn acknowledged_records_survive_a_power_cut_at_every_operation() {
    // A cut at every operation, each rebuilt four ways; the long run adds
    // seeds: `LOGBUS_POWER_CUT_SEEDS=50` tears and garbles each cut 50 ways.
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let step = env("LOGBUS_POWER_CUT_STEP", 1).max(1);
    let seeds = env("LOGBUS_POWER_CUT_SEEDS", 1).max(1);
    let (total, images, with_unsynced) = power_cuts(step, seeds);
    eprintln!(
        "power cuts: {total} operations, {images} images reopened, \
         {with_unsynced} cut points with unsynced data"
    );
    // The simulation has teeth: most cut points find unsynced writes.
    let cuts = total.div_ceil(step) as usize;
    assert!(with_unsynced * 2 > cuts, "{with_unsynced} of {cuts}");
}

#[test]
fn injected_write_errors_reach_the_caller_and_nothing_is_lost() {
    let dir = TempDir::new();
    let log = Log::open(dir.path(), LogConfig::default()).expect("open");
    let topic = TopicConfig::new(1)
        .segment_bytes(64 << 10)
        .max_record_bytes(60 << 10);
    log.create_topic("w", topic).expect("create");
    let producer = log.producer("w").expect("producer");
    producer.send(Record::new("first")).expect("send");
    // A large batch goes through pwrite: EIO there.
    let big: Vec<Record> = (0..40).map(|_| Record::new(vec![7u8; 1000])).collect();
    let marker = format!("{}/w/0/", dir.path().display());
    crate::io::failpoints::fail_next_write(&marker, libc::EIO);
    let err = producer.send_batch(&big).expect_err("pwrite EIO");
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    // A reservation of blocks for the map (in the next segment's `.log`):
    // ENOSPC there. (A failed index reservation is not an error: the entry
    // is skipped, the index is sparse.)
    let marker = format!("{}/w/0/|.log", dir.path().display());
    crate::io::failpoints::fail_next_write(&marker, libc::ENOSPC);
    let mut failed = None;
    for i in 0..2000 {
        if let Err(e) = producer.send(Record::new(vec![i as u8; 100])) {
            failed = Some(e);
            break;
        }
    }
    let err = failed.expect("a reservation failed");
    match &err {
        Error::Io { source, .. } => assert_eq!(source.raw_os_error(), Some(libc::ENOSPC)),
        other => panic!("expected ENOSPC, got {other:?}"),
    }
    // The log stays consistent and usable: what was acknowledged reads
    // back, and appends continue.
    let end = log.topic("w").unwrap().partitions()[0].log_end_offset();
    producer
        .send(Record::new("after"))
        .expect("send after errors");
    let p = log.topic("w").unwrap().partitions()[0].clone();
    let all = p.read(0, 10_000).expect("read");
    assert_eq!(all[0].value.as_deref(), Some(&b"first"[..]));
    drop((producer, log));
    let log = Log::open(dir.path(), LogConfig::default()).expect("reopen");
    let p = log.topic("w").unwrap().partitions()[0].clone();
    assert_eq!(p.log_end_offset(), end + 1);
}
