//! A real crash: SIGKILL of a child process in the middle of its work loses
//! no acknowledged record, in the main topic, in a topic under retention,
//! in a compacted topic and in the group's committed offsets, including
//! kills aimed at a segment roll and at a maintenance pass (retention
//! deleting segments, the cleaner swapping cleaned segments in).
//!
//! The child runs a loop of `ChildOp`s and prints a line once each one is
//! acknowledged; the parent keeps what was acknowledged in a `Ledger` and,
//! after a kill, reopens the log and checks it. New kinds of work are a
//! new `ChildOp`, the line it prints, and a check in `Ledger::verify`.
//!
//! The run is on tmpfs: a process crash keeps the page cache, so tmpfs
//! loses nothing a disk would keep (power loss is `crashsim`'s job).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use common::{Rng, assert_same_files, read_all, snapshot};
use logbus::*;

const CHILD_DIR_ENV: &str = "LOGBUS_TEST_SIGKILL_DIR";
const CHILD_CYCLE_ENV: &str = "LOGBUS_TEST_SIGKILL_CYCLE";
const CHILD_SEGMENT_ENV: &str = "LOGBUS_SIGKILL_SEGMENT_BYTES";
/// Partitions of the child's main topic.
const CHILD_PARTITIONS: u32 = 2;
/// The main topic: no retention, no compaction, so every acknowledged
/// record stays, at offsets contiguous from 0.
const MAIN: &str = "t";
/// Small segments under size and time retention: maintenance passes
/// delete its oldest segments while the child writes.
const RETAINED: &str = "r";
/// Small segments, cleanup policy `compact`, a few keys: maintenance
/// passes clean and swap segments while the child writes.
const COMPACTED: &str = "c";
/// Distinct keys of the compacted topic.
const COMPACTED_KEYS: u64 = 16;
/// The consumer group the child reads and commits with.
const CHILD_GROUP: &str = "g";

fn child_key(cycle: u64, i: u64, j: u64) -> String {
    format!("c{cycle}-{i}-{j}")
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// The value is a function of the key, so any record found can be checked:
/// the key repeated to a length its hash chooses (0..300 bytes).
fn child_value(key: &str) -> Vec<u8> {
    key.bytes()
        .cycle()
        .take((fnv(key) % 300) as usize)
        .collect()
}

/// Key of a compacted-topic record: one of `COMPACTED_KEYS`, chosen by its id.
fn compacted_key(id: &str) -> String {
    format!("k{}", fnv(id) % COMPACTED_KEYS)
}

/// Value of a compacted-topic record: `id/child_value(id)`, so the record
/// found under a key names the send it came from.
fn compacted_value(id: &str) -> Vec<u8> {
    [id.as_bytes(), b"/", &child_value(id)].concat()
}

/// The id a compacted-topic value names, if the value is one the child built.
fn compacted_id(value: &[u8]) -> Option<&str> {
    let slash = value.iter().position(|&b| b == b'/')?;
    let id = std::str::from_utf8(&value[..slash]).ok()?;
    (compacted_value(id) == value).then_some(id)
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The child runs no background maintenance: its passes are the
/// announced `ChildOp::Maintain`s, so the parent can aim at them. The
/// parent's verification runs none either, so that nothing changes the
/// files while it compares them.
fn log_config() -> LogConfig {
    LogConfig::default().background_maintenance(false)
}

fn main_topic() -> TopicConfig {
    // Small segments put kills near rolls. The long run uses larger ones
    // (LOGBUS_SIGKILL_SEGMENT_BYTES) to keep the segment count down.
    TopicConfig::new(CHILD_PARTITIONS)
        .segment_bytes(env_u64(CHILD_SEGMENT_ENV, 16 << 10))
        .max_record_bytes(4 << 10)
        .index_interval_bytes(512)
}

fn retained_topic() -> TopicConfig {
    // Size retention keeps about three segments; time retention deletes
    // what an earlier child wrote.
    TopicConfig::new(1)
        .segment_bytes(4096)
        .max_record_bytes(2048)
        .index_interval_bytes(256)
        .retention_bytes(Some(12 << 10))
        .retention_ms(Some(100))
}

fn compacted_topic() -> TopicConfig {
    TopicConfig::new(1)
        .segment_bytes(4096)
        .max_record_bytes(2048)
        .index_interval_bytes(256)
        .cleanup_policy(CleanupPolicy::Compact)
        .retention_ms(None)
        .min_cleanable_dirty_ratio(0.0)
}

/// One step of the child's work.
#[derive(Debug, Clone, Copy)]
enum ChildOp {
    /// `send` of one record to the main topic; prints `ACK <key> <partition> <offset>`.
    Send,
    /// `send_batch` of n records to the main topic; prints an `ACK` line per record.
    SendBatch(u64),
    /// `send_batch` of n records to the retained topic; prints
    /// `RACK <key> <offset>` per record.
    SendRetained(u64),
    /// `send` of one record to the compacted topic; prints `CACK <key> <id> <offset>`.
    SendCompacted,
    /// An explicit roll of a main-topic partition; prints `ROLL <partition>`
    /// just before it, so the parent can aim a kill at the roll.
    Roll(u32),
    /// `Log::maintain` (retention, then cleaning): prints `MAINTAIN` just
    /// before it, for the parent to aim at, and `MAINTAINED <segments
    /// deleted> <segments cleaned> <records removed>` once it returned
    /// (`FAILED …` if a partition's step failed).
    Maintain,
    /// A poll of the child's consumer group member, then a synchronous
    /// commit; prints `COMMIT <partition> <offset>` for each committed
    /// offset once `commit` has returned.
    Commit,
}

impl ChildOp {
    /// The `i`-th step of cycle `cycle`: a commit every 16th, a roll every
    /// 256th (every roll is a dozen more files for each verification to
    /// copy and compare), a maintenance pass at seeded moments (one step in 32 on
    /// average), otherwise sends to the four kinds of target in turn.
    fn nth(cycle: u64, i: u64) -> ChildOp {
        if i % 16 == 7 {
            ChildOp::Commit
        } else if i % 256 == 255 {
            ChildOp::Roll((i / 256 % u64::from(CHILD_PARTITIONS)) as u32)
        } else if Rng(cycle << 32 ^ i).next_u64() % 32 == 0 {
            ChildOp::Maintain
        } else {
            match i % 4 {
                0 => ChildOp::Send,
                1 => ChildOp::SendRetained(1 + i / 4 % 3),
                2 => ChildOp::SendCompacted,
                _ => ChildOp::SendBatch(2 + i / 4 % 4),
            }
        }
    }
}

fn open_or_create(log: &Log, name: &str, config: TopicConfig) -> Topic {
    match log.create_topic(name, config) {
        Ok(t) => t,
        Err(Error::TopicExists { .. }) => log.topic(name).unwrap(),
        Err(e) => panic!("{e}"),
    }
}

/// Child side of the SIGKILL tests: a no-op unless the parent set the
/// environment. Opens the log, then runs `ChildOp`s until killed.
#[test]
fn sigkill_child() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    let cycle: u64 = std::env::var(CHILD_CYCLE_ENV).unwrap().parse().unwrap();
    let log = Log::open(&dir, log_config()).unwrap();
    let topic = open_or_create(&log, MAIN, main_topic());
    open_or_create(&log, RETAINED, retained_topic());
    open_or_create(&log, COMPACTED, compacted_topic());
    let producer = log.producer(MAIN).unwrap();
    let retained = log.producer(RETAINED).unwrap();
    let compacted = log.producer(COMPACTED).unwrap();
    let group = GroupConfig::default().auto_commit(false);
    let mut member = ConsumerGroup::join(&log, CHILD_GROUP, &[MAIN], group).unwrap();
    let mut out = std::io::stdout().lock();
    // On a line of its own: the test harness has printed "test ... " before.
    writeln!(out, "\nREADY").unwrap();
    out.flush().unwrap();
    let mut ack = |line: std::fmt::Arguments<'_>| {
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            std::process::exit(0); // the parent is gone
        }
    };
    for i in 0..u64::MAX {
        match ChildOp::nth(cycle, i) {
            ChildOp::Send => {
                let key = child_key(cycle, i, 0);
                let m = producer
                    .send(Record::new(child_value(&key)).key(key.clone()))
                    .unwrap();
                ack(format_args!("ACK {key} {} {}", m.partition, m.offset));
            }
            ChildOp::SendBatch(n) => {
                // One partition per batch: a chunk of one call is one
                // Kafka batch, appended atomically.
                let partition = (i % u64::from(CHILD_PARTITIONS)) as u32;
                let records: Vec<Record> = (0..n)
                    .map(|j| {
                        let key = child_key(cycle, i, j);
                        Record::new(child_value(&key)).key(key).partition(partition)
                    })
                    .collect();
                let metas = producer.send_batch(&records).unwrap();
                for (r, m) in records.iter().zip(&metas) {
                    let key = std::str::from_utf8(r.key.as_ref().unwrap()).unwrap();
                    ack(format_args!("ACK {key} {} {}", m.partition, m.offset));
                }
            }
            ChildOp::SendRetained(n) => {
                let keys: Vec<String> = (0..n).map(|j| child_key(cycle, i, j)).collect();
                let records: Vec<Record> = keys
                    .iter()
                    .map(|k| Record::new(child_value(k)).key(k.clone()))
                    .collect();
                let metas = retained.send_batch(&records).unwrap();
                for (key, m) in keys.iter().zip(&metas) {
                    ack(format_args!("RACK {key} {}", m.offset));
                }
            }
            ChildOp::SendCompacted => {
                let id = child_key(cycle, i, 0);
                let key = compacted_key(&id);
                let m = compacted
                    .send(Record::new(compacted_value(&id)).key(key.clone()))
                    .unwrap();
                ack(format_args!("CACK {key} {id} {}", m.offset));
            }
            ChildOp::Roll(p) => {
                ack(format_args!("ROLL {p}"));
                topic.partition(p).unwrap().roll().unwrap();
            }
            ChildOp::Maintain => {
                ack(format_args!("MAINTAIN"));
                let s = log.maintain().unwrap();
                if !s.failures.is_empty() {
                    ack(format_args!("FAILED {:?}", s.failures));
                }
                ack(format_args!(
                    "MAINTAINED {} {} {}",
                    s.segments_deleted, s.segments_cleaned, s.records_removed
                ));
            }
            ChildOp::Commit => {
                member.poll(Duration::ZERO).unwrap();
                member.commit().unwrap();
                for tp in member.assignment() {
                    if let Some(c) = member.committed(&tp) {
                        ack(format_args!("COMMIT {} {}", tp.partition, c.offset));
                    }
                }
            }
        }
    }
}

/// Figures of a run (summed over shards).
#[derive(Debug, Default, Clone)]
struct Tally {
    kills: u64,
    aimed_at_roll: u64,
    aimed_at_maintenance: u64,
    verified: u64,
    /// Records acknowledged: main topic, retained topic, compacted topic.
    acked: u64,
    acked_retained: u64,
    acked_compacted: u64,
    commits: u64,
    /// Maintenance passes started and finished.
    passes_started: u64,
    passes_finished: u64,
    segments_deleted: u64,
    segments_cleaned: u64,
    /// Kills that left the files of unfinished work behind: a cleaned
    /// segment not yet swapped in (`.cleaned`), a swap in progress
    /// (`.swap`/`.deleted`), a retention deletion half done (an index
    /// without its log).
    left_cleaning: u64,
    left_swap: u64,
    left_retention: u64,
    /// Where the time goes (see `sigkill_cycles`).
    spawn_to_ready: Duration,
    kill_wait: Duration,
    reap: Duration,
    verify_open_read: Duration,
    verify_reopen_compare: Duration,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        self.kills += o.kills;
        self.aimed_at_roll += o.aimed_at_roll;
        self.aimed_at_maintenance += o.aimed_at_maintenance;
        self.verified += o.verified;
        self.acked += o.acked;
        self.acked_retained += o.acked_retained;
        self.acked_compacted += o.acked_compacted;
        self.commits += o.commits;
        self.passes_started += o.passes_started;
        self.passes_finished += o.passes_finished;
        self.segments_deleted += o.segments_deleted;
        self.segments_cleaned += o.segments_cleaned;
        self.left_cleaning += o.left_cleaning;
        self.left_swap += o.left_swap;
        self.left_retention += o.left_retention;
        self.spawn_to_ready += o.spawn_to_ready;
        self.kill_wait += o.kill_wait;
        self.reap += o.reap;
        self.verify_open_read += o.verify_open_read;
        self.verify_reopen_compare += o.verify_reopen_compare;
    }

    fn line(&self) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1e3 / self.kills.max(1) as f64;
        format!(
            "{} kills ({} aimed at a roll, {} at a maintenance pass; {} verified by the parent); \
             acked {} main + {} retained + {} compacted records, {} commits; \
             {} of {} maintenance passes finished, {} segments deleted, {} cleaned; \
             kills left {} cleanings, {} swaps, {} retention deletions unfinished; \
             ms per kill: spawn-to-ready {:.1}, kill wait {:.1}, reap {:.1}, \
             verify open+read {:.1}, verify reopen+compare {:.1}",
            self.kills,
            self.aimed_at_roll,
            self.aimed_at_maintenance,
            self.verified,
            self.acked,
            self.acked_retained,
            self.acked_compacted,
            self.commits,
            self.passes_finished,
            self.passes_started,
            self.segments_deleted,
            self.segments_cleaned,
            self.left_cleaning,
            self.left_swap,
            self.left_retention,
            ms(self.spawn_to_ready),
            ms(self.kill_wait),
            ms(self.reap),
            ms(self.verify_open_read),
            ms(self.verify_reopen_compare),
        )
    }
}

/// What the child acknowledged, over every cycle on one directory.
#[derive(Debug, Default)]
struct Ledger {
    /// Main topic: (partition, offset) → key.
    acked: BTreeMap<(u32, u64), String>,
    /// The group's last acknowledged committed offset per partition.
    committed: BTreeMap<u32, u64>,
    /// The committed offsets the last verification found.
    seen_committed: BTreeMap<u32, u64>,
    /// Retained topic: offset → key, from the last log start seen.
    retained: BTreeMap<u64, String>,
    /// The retained topic's log start at the last verification.
    retained_start: u64,
    /// Compacted topic: offset → (key, id).
    compacted: BTreeMap<u64, (String, String)>,
    /// Compacted topic: key → offset of its latest acknowledged value.
    compacted_latest: BTreeMap<String, u64>,
    /// Compacted topic: key → offset of its latest value the last
    /// verification found.
    compacted_seen: BTreeMap<String, u64>,
    tally: Tally,
}

impl Ledger {
    /// Takes in one line the child printed (a whole line: one cut by the
    /// kill was never acknowledged).
    fn apply(&mut self, line: &str) {
        let mut parts = line.split_whitespace();
        let mut next = || parts.next().unwrap();
        match next() {
            "ACK" => {
                let key = next().to_string();
                let partition: u32 = next().parse().unwrap();
                let offset: u64 = next().parse().unwrap();
                let previous = self.acked.insert((partition, offset), key);
                assert!(
                    previous.is_none(),
                    "offset {partition}/{offset} acked twice"
                );
                self.tally.acked += 1;
            }
            "RACK" => {
                let key = next().to_string();
                let offset: u64 = next().parse().unwrap();
                let previous = self.retained.insert(offset, key);
                assert!(previous.is_none(), "{RETAINED}/{offset} acked twice");
                self.tally.acked_retained += 1;
            }
            "CACK" => {
                let key = next().to_string();
                let id = next().to_string();
                let offset: u64 = next().parse().unwrap();
                let latest = self.compacted_latest.entry(key.clone()).or_default();
                *latest = offset.max(*latest);
                let previous = self.compacted.insert(offset, (key, id));
                assert!(previous.is_none(), "{COMPACTED}/{offset} acked twice");
                self.tally.acked_compacted += 1;
            }
            "ROLL" => {}
            "MAINTAIN" => self.tally.passes_started += 1,
            "MAINTAINED" => {
                self.tally.passes_finished += 1;
                self.tally.segments_deleted += next().parse::<u64>().unwrap();
                self.tally.segments_cleaned += next().parse::<u64>().unwrap();
            }
            "COMMIT" => {
                let partition: u32 = next().parse().unwrap();
                let offset: u64 = next().parse().unwrap();
                let last = self.committed.entry(partition).or_default();
                assert!(offset >= *last, "commit of {partition} went back");
                *last = offset;
                self.tally.commits += 1;
            }
            _ => panic!("unexpected line from the child: {line:?}"),
        }
    }

    /// Counts the unfinished work a kill left in `dir` (before anything
    /// reopens it), so the figures show the kills really hit it.
    fn count_unfinished(&mut self, dir: &Path) {
        let names = |topic: &str| -> BTreeSet<String> {
            match std::fs::read_dir(dir.join(topic).join("0")) {
                Ok(entries) => entries
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect(),
                Err(_) => BTreeSet::new(), // not created yet
            }
        };
        let c = names(COMPACTED);
        if c.iter().any(|n| n.ends_with(".cleaned")) {
            self.tally.left_cleaning += 1;
        }
        if c.iter()
            .any(|n| n.ends_with(".swap") || n.ends_with(".deleted"))
        {
            self.tally.left_swap += 1;
        }
        let r = names(RETAINED);
        let orphan_index = r.iter().any(|n| {
            n.strip_suffix(".index")
                .or_else(|| n.strip_suffix(".timeindex"))
                .is_some_and(|stem| !r.contains(&format!("{stem}.log")))
        });
        if orphan_index {
            self.tally.left_retention += 1;
        }
    }

    /// Reopens `dir` after a kill and checks it (see the `verify_*`
    /// functions); then checks that recovering again from a crash right
    /// after this recovery gives the same files as closing.
    fn verify(&mut self, dir: &Path) {
        let started = Instant::now();
        // Usually unclean; clean when the last child was killed before it
        // even opened the log, right after the previous verification.
        let log = Log::open(dir, log_config()).unwrap();
        assert_no_unfinished_work(dir);
        self.verify_main(&log);
        self.verify_retained(&log);
        self.verify_compacted(&log);
        self.verify_committed(&log);
        let reopen = Instant::now();
        self.tally.verify_open_read += reopen - started;
        let again = common::fast_temp_dir("sigkill-again");
        common::copy_dir(dir, again.path());
        log.close().unwrap();
        Log::open(again.path(), log_config())
            .unwrap()
            .close()
            .unwrap();
        assert_same_files(&snapshot(again.path()), &snapshot(dir));
        self.tally.verify_reopen_compare += reopen.elapsed();
        self.tally.verified += 1;
    }

    /// Main topic: every acknowledged record is present with its bytes at
    /// its offset; offsets are contiguous from 0 up to the log end; every
    /// record present is one the child sent (nothing from past a torn tail
    /// is visible).
    fn verify_main(&self, log: &Log) {
        // Every child so far was killed before it created the topic.
        let created = log.topic(MAIN).is_ok();
        assert!(created || self.acked.is_empty(), "topic lost");
        for partition in (0..CHILD_PARTITIONS).filter(|_| created) {
            let records = read_all(log, MAIN, partition);
            let p = log
                .topic(MAIN)
                .unwrap()
                .partition(partition)
                .unwrap()
                .clone();
            assert_eq!(
                p.log_end_offset(),
                records.len() as u64,
                "log end of {partition}"
            );
            for (i, r) in records.iter().enumerate() {
                assert_eq!(r.offset, i as u64, "offsets of partition {partition}");
                let key = std::str::from_utf8(r.key.as_ref().unwrap()).unwrap();
                assert_eq!(
                    r.value.as_deref(),
                    Some(&child_value(key)[..]),
                    "value of {key}"
                );
            }
            for ((p, offset), key) in self.acked.range((partition, 0)..=(partition, u64::MAX)) {
                let r = records.get(*offset as usize).unwrap_or_else(|| {
                    panic!(
                        "acked {key} at {p}/{offset} lost: {} records",
                        records.len()
                    )
                });
                assert_eq!(r.key.as_deref(), Some(key.as_bytes()), "at {p}/{offset}");
            }
        }
    }

    /// Retained topic: the log start only moves forward; offsets are
    /// contiguous from the log start to the log end; every acknowledged
    /// record at or above the log start is present with its bytes; every
    /// record present is one the child sent.
    fn verify_retained(&mut self, log: &Log) {
        let Ok(topic) = log.topic(RETAINED) else {
            assert!(self.retained.is_empty(), "{RETAINED} lost");
            return;
        };
        let p = topic.partition(0).unwrap().clone();
        let (start, end) = (p.log_start_offset(), p.log_end_offset());
        assert!(
            start >= self.retained_start,
            "{RETAINED}: log start went back from {} to {start}",
            self.retained_start
        );
        assert!(
            start <= end,
            "{RETAINED}: log start {start} past the end {end}"
        );
        let records = read_all(log, RETAINED, 0);
        assert_eq!(
            records.len() as u64,
            end - start,
            "{RETAINED}: record count"
        );
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r.offset, start + i as u64, "{RETAINED}: offsets");
            let key = std::str::from_utf8(r.key.as_ref().unwrap()).unwrap();
            assert_eq!(
                r.value.as_deref(),
                Some(&child_value(key)[..]),
                "{RETAINED}: value of {key}"
            );
        }
        // Below the start: deleted for good (the start never moves back).
        self.retained = self.retained.split_off(&start);
        self.retained_start = start;
        for (offset, key) in &self.retained {
            let r = records
                .get((offset - start) as usize)
                .unwrap_or_else(|| panic!("{RETAINED}: acked {key} at {offset} lost (end {end})"));
            assert_eq!(
                r.key.as_deref(),
                Some(key.as_bytes()),
                "{RETAINED}/{offset}"
            );
        }
    }

    /// Compacted topic: the log start stays 0 (compaction never moves it);
    /// offsets strictly increase; every record present is one the child
    /// sent, and the one acknowledged at that offset if any; for every key
    /// the latest acknowledged value, or a newer one the child sent, is
    /// there; the latest offset of a key never goes back.
    fn verify_compacted(&mut self, log: &Log) {
        let Ok(topic) = log.topic(COMPACTED) else {
            assert!(self.compacted.is_empty(), "{COMPACTED} lost");
            return;
        };
        let p = topic.partition(0).unwrap().clone();
        assert_eq!(p.log_start_offset(), 0, "{COMPACTED}: log start moved");
        let end = p.log_end_offset();
        let mut latest: BTreeMap<String, u64> = BTreeMap::new();
        let mut previous = None;
        for r in read_all(log, COMPACTED, 0) {
            assert!(
                previous.is_none_or(|p| r.offset > p),
                "{COMPACTED}: offset {} after {previous:?}",
                r.offset
            );
            assert!(
                r.offset < end,
                "{COMPACTED}: offset {} past the end",
                r.offset
            );
            previous = Some(r.offset);
            let key = String::from_utf8(r.key.as_ref().unwrap().to_vec()).unwrap();
            let value = r
                .value
                .as_deref()
                .unwrap_or_else(|| panic!("{COMPACTED}: tombstone at {} never sent", r.offset));
            let id = compacted_id(value)
                .unwrap_or_else(|| panic!("{COMPACTED}: value at {} never sent", r.offset));
            assert_eq!(key, compacted_key(id), "{COMPACTED}: key of {id}");
            if let Some((k, acked_id)) = self.compacted.get(&r.offset) {
                assert_eq!(
                    (k, acked_id.as_str()),
                    (&key, id),
                    "{COMPACTED}/{}",
                    r.offset
                );
            }
            latest.insert(key, r.offset);
        }
        for (key, &acked) in &self.compacted_latest {
            let found = latest.get(key).copied();
            assert!(
                found.is_some_and(|f| f >= acked),
                "{COMPACTED}: latest value of {key} (acked at {acked}) lost; found {found:?}"
            );
        }
        for (key, offset) in latest {
            let seen = self.compacted_seen.entry(key).or_default();
            assert!(
                offset >= *seen,
                "{COMPACTED}: latest value went back from {seen} to {offset}"
            );
            *seen = offset;
        }
    }

    /// Each committed offset is at least the last one acknowledged and the
    /// last one seen, and at most the log end.
    fn verify_committed(&mut self, log: &Log) {
        let offsets = match log.describe_group(CHILD_GROUP) {
            Ok(d) => d.offsets,
            // No child has joined the group yet (or none committed).
            Err(Error::UnknownGroup { .. }) => Vec::new(),
            Err(e) => panic!("describe_group: {e}"),
        };
        let found: BTreeMap<u32, (u64, u64)> = offsets
            .iter()
            .filter_map(|o| o.committed.map(|c| (o.partition.partition, (c, o.log_end))))
            .collect();
        for (&p, &acked) in &self.committed {
            let (c, _) = found
                .get(&p)
                .copied()
                .unwrap_or_else(|| panic!("acknowledged commit of partition {p} at {acked} lost"));
            assert!(
                c >= acked,
                "committed offset of {p}: {c} below the acknowledged {acked}"
            );
        }
        for (&p, &(c, log_end)) in &found {
            assert!(
                c <= log_end,
                "committed offset of {p}: {c} past the log end {log_end}"
            );
            let seen = self.seen_committed.entry(p).or_default();
            assert!(
                c >= *seen,
                "committed offset of {p} went back from {seen} to {c}"
            );
            *seen = c;
        }
    }
}

/// After `open`, no file of an interrupted swap or cleaning is left
/// (docs/FORMAT.md, "Compaction swap": open finishes or rolls back).
fn assert_no_unfinished_work(dir: &Path) {
    for (path, _) in snapshot_names(dir) {
        let name = path.to_string_lossy();
        assert!(
            !(name.ends_with(".cleaned") || name.ends_with(".swap") || name.ends_with(".deleted")),
            "{name} left after open"
        );
    }
}

/// Every file under `dir`, with its length (no contents read).
fn snapshot_names(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                out.push((entry.path(), meta.len()));
            }
        }
    }
    out
}

/// 500 SIGKILLs (`LOGBUS_SIGKILL_CYCLES` to change; `LOGBUS_SIGKILL_SEED`
/// for another seed): see `sigkill_cycles`.
#[test]
fn sigkill_loses_no_acknowledged_record() {
    let run = Run {
        cycles: env_u64("LOGBUS_SIGKILL_CYCLES", 500),
        seed: env_u64("LOGBUS_SIGKILL_SEED", 0x5eed),
        segment_bytes: 32 << 10,
        dir_cycles: 5,
        progress_every: 0,
    };
    let tally = run.go(0);
    assert!(tally.acked > 100, "only {} records acked", tally.acked);
    assert!(tally.acked_retained > 100 && tally.acked_compacted > 100);
    assert!(tally.aimed_at_roll > 0 && tally.aimed_at_maintenance > 0);
    assert!(tally.segments_deleted > 0, "retention never ran");
    assert!(tally.segments_cleaned > 0, "the cleaner never ran");
}

/// The long run: `LOGBUS_SIGKILL_LONG_CYCLES` kills (default 100,000) from
/// seed `LOGBUS_SIGKILL_SEED`, split over `LOGBUS_SIGKILL_SHARDS` parallel
/// runs (default 2; shard `s` uses seed + s), 1 MiB segments, a fresh
/// directory every 20 kills (`LOGBUS_SIGKILL_DIR_CYCLES`). Prints a
/// progress line with the counts every 1,000 kills per shard.
/// `cargo test --release --test crash -- --ignored --nocapture sigkill_long_run`.
#[test]
#[ignore = "long run: cargo test --release --test crash -- --ignored --nocapture sigkill_long_run"]
fn sigkill_long_run() {
    let cycles = env_u64("LOGBUS_SIGKILL_LONG_CYCLES", 100_000);
    let shards = env_u64("LOGBUS_SIGKILL_SHARDS", 2).max(1);
    let seed = env_u64("LOGBUS_SIGKILL_SEED", 0x5eed);
    let started = Instant::now();
    let handles: Vec<_> = (0..shards)
        .map(|s| {
            let run = Run {
                // The first shards take the remainder.
                cycles: cycles / shards + u64::from(s < cycles % shards),
                seed: seed + s,
                segment_bytes: env_u64(CHILD_SEGMENT_ENV, 1 << 20),
                dir_cycles: env_u64("LOGBUS_SIGKILL_DIR_CYCLES", 20),
                progress_every: 1000,
            };
            std::thread::spawn(move || run.go(s))
        })
        .collect();
    let mut total = Tally::default();
    for h in handles {
        total.add(&h.join().expect("a shard failed"));
    }
    eprintln!(
        "sigkill long run: done in {:.0} s over {shards} shards: {}",
        started.elapsed().as_secs_f64(),
        total.line()
    );
    assert_eq!(total.kills, cycles);
}

/// How the parent picks the moment of a kill.
#[derive(Debug, Clone, Copy)]
enum KillAt {
    /// While the child is still opening (recovering from the last kill).
    Opening,
    /// Uniform in 0..=50 ms after the child is ready.
    Sending(u64),
    /// 0..=300 µs after the child announces a roll.
    Roll(u64),
    /// 0..=300 µs after the child announces its `nth` maintenance pass
    /// (1-based).
    Maintain { nth: u64, us: u64 },
}

/// One run of kills on one thread.
struct Run {
    cycles: u64,
    seed: u64,
    /// Segment size of the main topic.
    segment_bytes: u64,
    /// A fresh directory every this many kills, so verification stays bounded.
    dir_cycles: u64,
    /// Print a progress line every this many kills (0: never).
    progress_every: u64,
}

/// The lines a child printed, and the moments worth aiming at.
struct ChildOutput {
    lines: std::thread::JoinHandle<Vec<String>>,
    ready: Receiver<()>,
    rolling: Receiver<()>,
    maintaining: Receiver<()>,
}

fn read_child(stdout: std::process::ChildStdout) -> ChildOutput {
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let (roll_tx, rolling) = std::sync::mpsc::channel();
    let (maintain_tx, maintaining) = std::sync::mpsc::channel();
    let lines = std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                // A line cut by the kill was never fully acknowledged.
                Ok(_) if !line.ends_with('\n') => break,
                Ok(_) if line == "READY\n" => {
                    let _ = ready_tx.send(());
                }
                Ok(_) if line.starts_with("ROLL ") => {
                    let _ = roll_tx.send(());
                    lines.push(line);
                }
                Ok(_) if line == "MAINTAIN\n" => {
                    let _ = maintain_tx.send(());
                    lines.push(line);
                }
                Ok(_) if line.starts_with("FAILED ") => panic!("child: {line}"),
                Ok(_) if line.starts_with(|c: char| c.is_ascii_uppercase()) => lines.push(line),
                Ok(_) => {} // the test harness's own output
            }
        }
        lines
    });
    ChildOutput {
        lines,
        ready,
        rolling,
        maintaining,
    }
}

impl Run {
    /// `cycles` SIGKILLs of a child writer at seeded moments, on tmpfs,
    /// with a fresh directory every `dir_cycles` kills. Every other kill is
    /// verified by the parent; in between, the next child recovers from
    /// the kill itself.
    fn go(&self, shard: u64) -> Tally {
        let started = Instant::now();
        let mut rng = Rng(self.seed);
        let mut dir = common::fast_temp_dir("sigkill");
        let mut ledger = Ledger::default();
        let mut tally = Tally::default();
        for cycle in 0..self.cycles {
            if cycle > 0 && cycle % self.dir_cycles == 0 {
                tally.add(&ledger.tally);
                dir = common::fast_temp_dir("sigkill");
                ledger = Ledger::default();
            }
            let kill_at = match rng.below(10) {
                0 | 1 => KillAt::Opening,
                2 | 3 => KillAt::Roll(rng.below(301)),
                4 | 5 => KillAt::Maintain {
                    nth: 1 + rng.below(4),
                    us: rng.below(301),
                },
                _ => KillAt::Sending(rng.below(51)),
            };
            let spawned = Instant::now();
            let mut child = common::reexec("sigkill_child")
                .env(CHILD_SEGMENT_ENV, self.segment_bytes.to_string())
                .env(CHILD_DIR_ENV, dir.path())
                .env(CHILD_CYCLE_ENV, cycle.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap();
            let out = read_child(child.stdout.take().unwrap());
            let wait = Duration::from_secs(60);
            let mut ready_at = spawned;
            if !matches!(kill_at, KillAt::Opening) {
                out.ready
                    .recv_timeout(wait)
                    .expect("child never became ready");
                ready_at = Instant::now();
            }
            match kill_at {
                KillAt::Opening => {}
                KillAt::Sending(ms) => std::thread::sleep(Duration::from_millis(ms)),
                KillAt::Roll(us) => {
                    out.rolling.recv_timeout(wait).expect("child never rolled");
                    std::thread::sleep(Duration::from_micros(us));
                    ledger.tally.aimed_at_roll += 1;
                }
                KillAt::Maintain { nth, us } => {
                    for _ in 0..nth {
                        out.maintaining
                            .recv_timeout(wait)
                            .expect("child never ran maintenance");
                    }
                    std::thread::sleep(Duration::from_micros(us));
                    ledger.tally.aimed_at_maintenance += 1;
                }
            }
            let killing = Instant::now();
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            for line in out.lines.join().expect("child output") {
                ledger.apply(&line);
            }
            ledger.tally.kills += 1;
            ledger.tally.spawn_to_ready += ready_at - spawned;
            ledger.tally.kill_wait += killing - ready_at;
            ledger.tally.reap += killing.elapsed();
            ledger.count_unfinished(dir.path());
            let last_of_dir = (cycle + 1) % self.dir_cycles == 0 || cycle + 1 == self.cycles;
            if cycle % 2 == 1 || last_of_dir {
                ledger.verify(dir.path());
            }
            if self.progress_every > 0 && (cycle + 1) % self.progress_every == 0 {
                let mut now = tally.clone();
                now.add(&ledger.tally);
                eprintln!(
                    "sigkill shard {shard} (seed {:#x}) at {:.0} s: {}",
                    self.seed,
                    started.elapsed().as_secs_f64(),
                    now.line()
                );
            }
        }
        tally.add(&ledger.tally);
        eprintln!(
            "sigkill shard {shard} (seed {:#x}) done in {:.0} s: {}",
            self.seed,
            started.elapsed().as_secs_f64(),
            tally.line()
        );
        // The last cycle was verified, which closed the log cleanly.
        let log = Log::open(dir.path(), log_config()).unwrap();
        assert!(log.recovery_report().clean_shutdown);
        log.close().unwrap();
        tally
    }
}
