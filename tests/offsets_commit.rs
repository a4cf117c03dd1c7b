//! Committed offsets: they survive close + reopen and a killed process,
//! commits are fenced (stale member, partition not owned, offset past the
//! end), the reset policy applies without one, auto-commit, and the group
//! admin operations (list, describe, reset, delete).

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::TempDir;
use logbus::{
    ConsumerGroup, ConsumerRecord, Durability, Error, GroupConfig, GroupState, Log, LogConfig,
    OffsetReset, OffsetSpec, Record, TopicConfig, TopicPartition,
};

const SHORT: Duration = Duration::from_millis(20);

fn open(dir: &std::path::Path) -> Log {
    Log::open(dir, LogConfig::default()).unwrap()
}

fn produce(log: &Log, topic: &str, partition: u32, n: usize) {
    let records: Vec<Record> = (0..n)
        .map(|i| Record::new(format!("v{i}")).partition(partition))
        .collect();
    log.producer(topic).unwrap().send_batch(&records).unwrap();
}

fn manual() -> GroupConfig {
    GroupConfig::default().auto_commit(false)
}

/// Polls until `n` records arrived (or panics after a generous timeout).
fn poll_n(member: &mut ConsumerGroup, n: usize) -> Vec<ConsumerRecord> {
    let give_up = Instant::now() + Duration::from_secs(20);
    let mut got = Vec::new();
    while got.len() < n {
        assert!(
            Instant::now() < give_up,
            "only {} of {n} records",
            got.len()
        );
        got.extend(member.poll(SHORT).unwrap());
    }
    got
}

/// Polls until the member owns `n` partitions.
fn own(member: &mut ConsumerGroup, n: usize) -> Vec<ConsumerRecord> {
    let give_up = Instant::now() + Duration::from_secs(20);
    let mut got = Vec::new();
    while member.assignment().len() != n {
        assert!(Instant::now() < give_up);
        got.extend(member.poll(SHORT).unwrap());
    }
    got
}

#[test]
fn committed_offsets_survive_close_and_reopen() {
    let dir = TempDir::new("offsets-reopen");
    let tp = TopicPartition::new("t", 0);
    {
        let log = open(dir.path());
        log.create_topic("t", TopicConfig::new(1)).unwrap();
        produce(&log, "t", 0, 10);
        let mut m = ConsumerGroup::join(&log, "g", &["t"], manual()).unwrap();
        let got = poll_n(&mut m, 10);
        assert_eq!(got.len(), 10);
        m.commit_offsets(&[(tp.clone(), 6)]).unwrap();
        m.leave().unwrap();
        log.close().unwrap();
    }
    let log = open(dir.path());
    assert_eq!(log.list_groups(), ["g"]);
    let desc = log.describe_group("g").unwrap();
    assert_eq!(desc.offsets[0].committed, Some(6));
    assert_eq!(desc.offsets[0].lag, 4);
    // A new member resumes right after the committed offset.
    let mut m = ConsumerGroup::join(&log, "g", &["t"], manual()).unwrap();
    let got = poll_n(&mut m, 4);
    assert_eq!(got[0].offset, 6);
    assert_eq!(m.committed(&tp).map(|c| c.offset), Some(6));
}

#[test]
fn offsets_topic_is_internal() {
    let dir = TempDir::new("offsets-internal");
    let log = open(dir.path());
    log.create_topic("t", TopicConfig::new(1)).unwrap();
    let _m = ConsumerGroup::join(&log, "g", &["t"], manual()).unwrap();
    assert_eq!(log.topics(), ["t"]);
    for result in [
        log.create_topic("__consumer_offsets", TopicConfig::new(1))
            .map(|_| ()),
        log.delete_topic("__consumer_offsets"),
        log.producer("__consumer_offsets").map(|_| ()),
    ] {
        assert!(
            matches!(result, Err(Error::InvalidName { .. })),
            "{result:?}"
        );
    }
    // Readable, for inspection or mirroring.
    assert!(log.topic("__consumer_offsets").is_ok());
}

/// The child half of `committed_offsets_survive_a_killed_process`.
fn child_commits_then_waits(dir: &str) {
    let log = Log::open(dir, LogConfig::default()).unwrap();
    log.create_topic("t", TopicConfig::new(2)).unwrap();
    produce(&log, "t", 0, 100);
    produce(&log, "t", 1, 100);
    let mut m = ConsumerGroup::join(&log, "g", &["t"], manual()).unwrap();
    poll_n(&mut m, 200);
    for k in 1..=50u64 {
        m.commit_offsets(&[
            (TopicPartition::new("t", 0), k),
            (TopicPartition::new("t", 1), 2 * k),
        ])
        .unwrap();
        println!("committed {k}");
    }
    println!("done");
    std::thread::sleep(Duration::from_secs(600));
}

#[test]
fn committed_offsets_survive_a_killed_process() {
    if let Ok(dir) = std::env::var("LOGBUS_OFFSETS_CHILD_DIR") {
        child_commits_then_waits(&dir);
        return;
    }
    let dir = TempDir::new("offsets-kill");
    let mut child = common::reexec("committed_offsets_survive_a_killed_process")
        .env("LOGBUS_OFFSETS_CHILD_DIR", dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut last = 0;
    for line in stdout.lines() {
        let line = line.unwrap();
        if let Some(k) = line.strip_prefix("committed ") {
            last = k.parse().unwrap();
        }
        if line == "done" {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL: no close, no clean marker
    child.wait().unwrap();
    assert_eq!(last, 50);
    let log = open(dir.path());
    assert!(!log.recovery_report().clean_shutdown);
    let desc = log.describe_group("g").unwrap();
    let committed: Vec<Option<u64>> = desc.offsets.iter().map(|o| o.committed).collect();
    assert_eq!(committed, [Some(50), Some(100)]);
}

#[test]
fn commits_are_refused_for_partitions_not_owned_and_offsets_past_the_end() {
    let dir = TempDir::new("offsets-refused");
    let log = open(dir.path());
    log.create_topic("t", TopicConfig::new(2)).unwrap();
    log.create_topic("other", TopicConfig::new(1)).unwrap();
    produce(&log, "t", 0, 5);
    let mut a = ConsumerGroup::join(&log, "g", &["t"], manual()).unwrap();
    let mut b = ConsumerGroup::join(&log, "g", &["t"], manual()).unwrap();
    let give_up = Instant::now() + Duration::from_secs(20);
    while a.assignment().len() != 1 || b.assignment().len() != 1 {
        assert!(Instant::now() < give_up);
        a.poll(SHORT).unwrap();
        b.poll(SHORT).unwrap();
    }
    let mine = a.assignment()[0].clone();
    let theirs = b.assignment()[0].clone();
    let err = a.commit_offsets(&[(theirs.clone(), 0)]).unwrap_err();
    assert!(matches!(err, Error::NotAssigned { .. }), "{err:?}");
    let err = a
        .commit_offsets(&[(TopicPartition::new("other", 0), 0)])
        .unwrap_err();
    assert!(matches!(err, Error::NotAssigned { .. }), "{err:?}");
    let end = log
        .topic("t")
        .unwrap()
        .partition(mine.partition)
        .unwrap()
        .log_end_offset();
    let err = a.commit_offsets(&[(mine.clone(), end + 1)]).unwrap_err();
    assert!(matches!(err, Error::OffsetOutOfRange { .. }), "{err:?}");
    // A refused commit leaves nothing behind, even for the valid part.
    let err = a
        .commit_offsets(&[(mine.clone(), end), (theirs, 0)])
        .unwrap_err();
    assert!(matches!(err, Error::NotAssigned { .. }), "{err:?}");
    assert_eq!(a.committed(&mine), None);
    a.commit_offsets(&[(mine.clone(), end)]).unwrap();
    assert_eq!(a.committed(&mine).map(|c| c.offset), Some(end));
}

#[test]
fn without_a_committed_offset_the_reset_policy_decides() {
    let dir = TempDir::new("offsets-reset-policy");
    let log = open(dir.path());
    log.create_topic("t", TopicConfig::new(1)).unwrap();
    produce(&log, "t", 0, 3);
    let tp = TopicPartition::new("t", 0);

    let mut earliest = ConsumerGroup::join(&log, "e", &["t"], manual()).unwrap();
    assert_eq!(poll_n(&mut earliest, 3)[0].offset, 0);

    let latest_cfg = manual().offset_reset(OffsetReset::Latest);
    let mut latest = ConsumerGroup::join(&log, "l", &["t"], latest_cfg).unwrap();
    own(&mut latest, 1);
    assert_eq!(latest.position(&tp).unwrap(), 3);
    produce(&log, "t", 0, 1);
    assert_eq!(poll_n(&mut latest, 1)[0].offset, 3);

    let none_cfg = manual().offset_reset(OffsetReset::None);
    let mut none = ConsumerGroup::join(&log, "n", &["t"], none_cfg.clone()).unwrap();
    let give_up = Instant::now() + Duration::from_secs(20);
    let err = loop {
        assert!(Instant::now() < give_up);
        match none.poll(SHORT) {
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    assert!(matches!(err, Error::NoOffset { .. }), "{err:?}");
    drop(none);
    // With a committed offset, `None` is no obstacle.
    log.reset_group_offsets("n", "t", OffsetSpec::Offset(2))
        .unwrap();
    let mut none = ConsumerGroup::join(&log, "n", &["t"], none_cfg).unwrap();
    assert_eq!(poll_n(&mut none, 2)[0].offset, 2);
}

#[test]
fn auto_commit_commits_what_previous_polls_returned_and_on_leave() {
    let dir = TempDir::new("offsets-auto");
    let log = open(dir.path());
    log.create_topic("t", TopicConfig::new(1)).unwrap();
    let tp = TopicPartition::new("t", 0);
    produce(&log, "t", 0, 5);
    let cfg = GroupConfig::default().auto_commit_interval(Duration::from_millis(1));
    let mut m = ConsumerGroup::join(&log, "g", &["t"], cfg).unwrap();
    poll_n(&mut m, 5);
    let give_up = Instant::now() + Duration::from_secs(20);
    while m.committed(&tp).map(|c| c.offset) != Some(5) {
        assert!(Instant::now() < give_up, "auto-commit never happened");
        m.poll(SHORT).unwrap();
    }
    produce(&log, "t", 0, 2);
    poll_n(&mut m, 2);
    m.leave().unwrap();
    let desc = log.describe_group("g").unwrap();
    assert_eq!(desc.offsets[0].committed, Some(7));
}

#[test]
fn commit_async_is_visible_and_survives_reopen() {
    let dir = TempDir::new("offsets-async");
    let tp = TopicPartition::new("t", 0);
    {
        let config = LogConfig::default().durability(Durability::Always);
        let log = Log::open(dir.path(), config).unwrap();
        log.create_topic("t", TopicConfig::new(1)).unwrap();
        produce(&log, "t", 0, 4);
        let mut m = ConsumerGroup::join(&log, "g", &["t"], manual()).unwrap();
        poll_n(&mut m, 4);
        m.commit_async().unwrap();
        assert_eq!(m.committed(&tp).map(|c| c.offset), Some(4));
        drop(m);
        log.close().unwrap();
    }
    let log = open(dir.path());
    assert_eq!(
        log.describe_group("g").unwrap().offsets[0].committed,
        Some(4)
    );
}

#[test]
fn describe_reports_members_assignment_offsets_and_lag() {
    let dir = TempDir::new("offsets-describe");
    let log = open(dir.path());
    log.create_topic("t", TopicConfig::new(2)).unwrap();
    produce(&log, "t", 0, 10);
    produce(&log, "t", 1, 4);
    let mut m = ConsumerGroup::join(&log, "g", &["t"], manual()).unwrap();
    let got = own(&mut m, 2);
    poll_n(&mut m, 14 - got.len());
    m.commit_offsets(&[(TopicPartition::new("t", 0), 7)])
        .unwrap();
    assert_eq!(m.lag(&TopicPartition::new("t", 0)).unwrap(), 0);
    let desc = log.describe_group("g").unwrap();
    assert_eq!(desc.state, GroupState::Stable);
    assert_eq!(desc.members.len(), 1);
    assert_eq!(desc.members[0].assignment.len(), 2);
    let lags: Vec<(Option<u64>, u64, u64)> = desc
        .offsets
        .iter()
        .map(|o| (o.committed, o.log_end, o.lag))
        .collect();
    assert_eq!(lags, [(Some(7), 10, 3), (None, 4, 4)]);
    assert_eq!(desc.total_lag(), 7);
    assert!(matches!(
        log.describe_group("nope"),
        Err(Error::UnknownGroup { .. })
    ));
}

#[test]
fn reset_and_delete_need_an_empty_group() {
    let dir = TempDir::new("offsets-admin");
    let log = open(dir.path());
    log.create_topic("t", TopicConfig::new(1)).unwrap();
    produce(&log, "t", 0, 10);
    let tp = TopicPartition::new("t", 0);
    let m = ConsumerGroup::join(&log, "g", &["t"], manual()).unwrap();
    let err = log
        .reset_group_offsets("g", "t", OffsetSpec::Earliest)
        .unwrap_err();
    assert!(
        matches!(err, Error::GroupNotEmpty { members: 1, .. }),
        "{err:?}"
    );
    assert!(matches!(
        log.delete_group("g"),
        Err(Error::GroupNotEmpty { .. })
    ));
    m.leave().unwrap();

    for (spec, want) in [
        (OffsetSpec::Earliest, 0),
        (OffsetSpec::Latest, 10),
        (OffsetSpec::Offset(4), 4),
        (OffsetSpec::Timestamp(i64::MAX), 10),
        (OffsetSpec::Timestamp(0), 0),
    ] {
        let moved = log.reset_group_offsets("g", "t", spec).unwrap();
        assert_eq!(moved, [(tp.clone(), want)], "{spec:?}");
        let desc = log.describe_group("g").unwrap();
        assert_eq!(desc.offsets[0].committed, Some(want));
    }
    let err = log
        .reset_group_offsets("g", "t", OffsetSpec::Offset(11))
        .unwrap_err();
    assert!(matches!(err, Error::OffsetOutOfRange { .. }), "{err:?}");
    log.reset_group_offsets("g", "t", OffsetSpec::Offset(4))
        .unwrap();
    let mut m = ConsumerGroup::join(&log, "g", &["t"], manual()).unwrap();
    assert_eq!(poll_n(&mut m, 6)[0].offset, 4);
    m.leave().unwrap();

    log.delete_group("g").unwrap();
    assert!(log.list_groups().is_empty());
    assert!(matches!(
        log.delete_group("g"),
        Err(Error::UnknownGroup { .. })
    ));
    // The deletion is durable: reopening does not bring the offsets back.
    let path = log.dir().to_path_buf();
    log.close().unwrap();
    drop(log);
    let log = open(&path);
    assert!(log.list_groups().is_empty());
}
