//! Corruption catalogue: a reference log (three partitions over two topics,
//! several segments each, `.index` + `.timeindex`, `topic.conf`,
//! `logbus.meta`), taken both after a clean `close()` and as a crash image,
//! has each of its files truncated at many points and bit-flipped at seeded
//! positions. For every case `Log::open` must either
//!
//! - recover: every record read back (through `FetchedBatches::records`,
//!   `Consumer::poll` and `Consumer::poll_each`) is the record written at
//!   that offset, byte for byte; what survives of each partition is a prefix of what was written;
//!   nothing before the damaged byte is lost unless a read reports
//!   `Error::Corrupt`; and partitions the damage did not touch are whole; or
//! - fail with a typed error naming a file of the damaged directory
//!   (`Error::Corrupt`, `Error::UnsupportedVersion`, `Error::Io`);
//!
//! and it must never panic. Each case runs under `catch_unwind`, so a panic
//! fails the test with the case described. The files of the internal topics
//! (`__consumer_offsets`, `__work_queue_state`) get the same damage in a
//! catalogue of their own (see "Internal topics" below). The default run takes a few
//! seconds; `corruption_sweep` (ignored) tries many more points:
//! `cargo test --release --test corruption -- --ignored`.

mod common;

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::{Rng, TempDir, batch_spans, copy_dir};
use logbus::*;

const T0: i64 = 1_700_000_000_000;

/// A written record, as a reader must see it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Written {
    key: Vec<u8>,
    value: Vec<u8>,
    timestamp: i64,
}

type Model = BTreeMap<(String, u32), Vec<Written>>;

/// The two images of the reference log and what was written to it.
struct Reference {
    clean: TempDir,
    crash: TempDir,
    model: Model,
}

fn topic_config(partitions: u32) -> TopicConfig {
    // No retention: the records are years old by the wall clock, and the
    // maintenance thread would delete their segments.
    TopicConfig::new(partitions)
        .retention_ms(None)
        .segment_bytes(4096)
        .max_record_bytes(1024)
        .index_interval_bytes(256)
}

/// Builds the reference log: topic `a` (2 partitions) and `b` (1), each
/// partition with 3+ segments, single sends and batches mixed, timestamps
/// increasing (so the time index has entries). The crash image is copied
/// while the log is open, then the log is closed for the clean image.
fn reference() -> Reference {
    let clean = TempDir::new("corruption-ref-clean");
    let crash = TempDir::new("corruption-ref-crash");
    let clock = Arc::new(ManualClock::new(T0));
    let log = Log::open(clean.path(), LogConfig::default().clock(clock.clone())).unwrap();
    log.create_topic("a", topic_config(2)).unwrap();
    log.create_topic("b", topic_config(1)).unwrap();
    let mut model = Model::new();
    let mut rng = Rng(0x00c0_ffee);
    for (topic, partitions) in [("a", 2u32), ("b", 1)] {
        let producer = log.producer(topic).unwrap();
        for p in 0..partitions {
            let written = model.entry((topic.to_string(), p)).or_default();
            let mut i = 0u64;
            // Until the partition spans at least 3 full segments plus a
            // partly filled active one.
            while log
                .topic(topic)
                .unwrap()
                .partition(p)
                .unwrap()
                .stats()
                .segments
                < 4
            {
                let n = if i % 3 == 0 {
                    1
                } else {
                    2 + rng.below(3) as usize
                };
                let records: Vec<Record> = (0..n)
                    .map(|j| {
                        let len = 20 + rng.below(120) as usize;
                        let ts = T0 + (written.len() + j) as i64 * 10;
                        let mut r = Record::new(rng.bytes(len))
                            .key(format!("{topic}{p}-{i}-{j}"))
                            .partition(p);
                        r.timestamp = Some(ts);
                        r
                    })
                    .collect();
                let metas = producer.send_batch(&records).unwrap();
                for (m, r) in metas.iter().zip(&records) {
                    assert_eq!(m.offset, written.len() as u64);
                    written.push(Written {
                        key: r.key.clone().unwrap().to_vec(),
                        value: r.value.clone().unwrap().to_vec(),
                        timestamp: r.timestamp.unwrap(),
                    });
                }
                i += 1;
            }
            // A few more so the active segment holds index entries too.
            for j in 0..12 {
                let ts = T0 + written.len() as i64 * 10;
                let mut r = Record::new(rng.bytes(100))
                    .key(format!("{topic}{p}-tail-{j}"))
                    .partition(p);
                r.timestamp = Some(ts);
                let m = producer.send(r.clone()).unwrap();
                assert_eq!(m.offset, written.len() as u64);
                written.push(Written {
                    key: r.key.unwrap().to_vec(),
                    value: r.value.unwrap().to_vec(),
                    timestamp: ts,
                });
            }
        }
    }
    copy_dir(clean.path(), crash.path());
    log.close().unwrap();
    Reference {
        clean,
        crash,
        model,
    }
}

/// Every file of an image that damage can target (the lock and the
/// markers excluded: they carry no data), relative to the image root.
fn target_files(root: &Path) -> Vec<PathBuf> {
    common::snapshot(root)
        .into_keys()
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            !name.starts_with('.')
        })
        .collect()
}

#[derive(Debug, Clone, Copy)]
enum Damage {
    /// Cut the file to this many bytes.
    Truncate(u64),
    /// Flip bit `bit` of byte `at`.
    Flip { at: u64, bit: u8 },
}

impl Damage {
    fn apply(self, path: &Path) {
        match self {
            Damage::Truncate(len) => {
                let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
                f.set_len(len).unwrap();
            }
            Damage::Flip { at, bit } => {
                let mut bytes = std::fs::read(path).unwrap();
                bytes[at as usize] ^= 1 << bit;
                std::fs::write(path, bytes).unwrap();
            }
        }
    }

    /// The first byte the damage changed.
    fn position(self) -> u64 {
        match self {
            Damage::Truncate(len) => len,
            Damage::Flip { at, .. } => at,
        }
    }
}

/// The damage points for one file: `dense` asks for the big sweep.
fn damages(bytes: &[u8], rng: &mut Rng, dense: bool) -> Vec<Damage> {
    let len = bytes.len() as u64;
    let mut out = Vec::new();
    if len == 0 {
        return out;
    }
    let mut cuts = vec![0, 1, len / 2, len - 1];
    // Batch boundaries and one byte either side: a cut there leaves whole
    // batches only, the case a length check alone would miss.
    let spans = batch_spans(bytes);
    let step = if dense { 1 } else { (spans.len() / 4).max(1) };
    for s in spans.iter().step_by(step) {
        let end = (s.start + s.len) as u64;
        cuts.extend([s.start as u64, end.saturating_sub(1), end + 1]);
    }
    let randoms = if dense { 150 } else { 4 };
    cuts.extend((0..randoms).map(|_| rng.below(len)));
    cuts.retain(|&c| c < len);
    cuts.sort_unstable();
    cuts.dedup();
    out.extend(cuts.into_iter().map(Damage::Truncate));
    // Where the data is: a flip in a zero tail is just a garbage tail.
    let data_len = spans
        .last()
        .map_or(len, |s| (s.start + s.len) as u64)
        .max(1);
    let flips = if dense { 300 } else { 8 };
    for _ in 0..flips {
        out.push(Damage::Flip {
            at: rng.below(data_len),
            bit: rng.below(8) as u8,
        });
    }
    out
}

/// Which image a case damages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Image {
    Clean,
    Crash,
}

struct Case<'a> {
    image: Image,
    file: &'a Path,
    damage: Damage,
}

impl std::fmt::Display for Case<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?} image, {} {:?}",
            self.image,
            self.file.display(),
            self.damage
        )
    }
}

/// Records read from one partition, and whether the read stopped at an
/// `Error::Corrupt` before the log end.
struct Read {
    records: Vec<(u64, Written)>,
    stopped_by_corrupt: bool,
}

fn corrupt_path_is_in(err: &Error, dir: &Path) -> bool {
    match err {
        Error::Corrupt { path, .. } => path.starts_with(dir),
        _ => false,
    }
}

/// Reads a partition from its log start through `FetchedBatches::records`.
fn read_fetched(p: &Partition, pdir: &Path) -> Result<Read, String> {
    let mut records = Vec::new();
    let mut offset = p.log_start_offset();
    let end = p.log_end_offset();
    while offset < end {
        let fetched = match p.fetch(offset, 16 << 10) {
            Ok(f) => f,
            Err(e) if corrupt_path_is_in(&e, pdir) => {
                return Ok(Read {
                    records,
                    stopped_by_corrupt: true,
                });
            }
            Err(e) => return Err(format!("fetch({offset}): {e}")),
        };
        let before = offset;
        for r in fetched.records() {
            match r {
                Ok(r) => {
                    if r.offset != offset {
                        return Err(format!("expected offset {offset}, got {}", r.offset));
                    }
                    records.push((
                        r.offset,
                        Written {
                            key: r.key.map(<[u8]>::to_vec).unwrap_or_default(),
                            value: r.value.map(<[u8]>::to_vec).unwrap_or_default(),
                            timestamp: r.timestamp,
                        },
                    ));
                    offset += 1;
                }
                Err(e) if corrupt_path_is_in(&e, pdir) => {
                    return Ok(Read {
                        records,
                        stopped_by_corrupt: true,
                    });
                }
                Err(e) => return Err(format!("records() at {offset}: {e}")),
            }
        }
        if offset == before {
            return Err(format!("no progress at {offset} below the log end {end}"));
        }
    }
    Ok(Read {
        records,
        stopped_by_corrupt: false,
    })
}

/// Reads a partition from the beginning through `Consumer::poll`.
fn read_polled(log: &Log, topic: &str, partition: u32, pdir: &Path) -> Result<Read, String> {
    let tp = TopicPartition::new(topic, partition);
    let mut consumer = log.consumer(ConsumerConfig::default().offset_reset(OffsetReset::None));
    consumer
        .assign(std::slice::from_ref(&tp))
        .map_err(|e| e.to_string())?;
    consumer
        .seek_to_beginning(std::slice::from_ref(&tp))
        .map_err(|e| e.to_string())?;
    let end = log
        .topic(topic)
        .and_then(|t| t.partition(partition).cloned())
        .map_err(|e| e.to_string())?
        .log_end_offset();
    let mut records = Vec::new();
    while consumer.position(&tp).map_err(|e| e.to_string())? < end {
        match consumer.poll(Duration::ZERO) {
            Ok(batch) if batch.is_empty() => {
                return Err("poll returned nothing below the end".into());
            }
            Ok(batch) => records.extend(batch.into_iter().map(|r| {
                (
                    r.offset,
                    Written {
                        key: r.key.map(|k| k.to_vec()).unwrap_or_default(),
                        value: r.value.map(|v| v.to_vec()).unwrap_or_default(),
                        timestamp: r.timestamp,
                    },
                )
            })),
            Err(e) if corrupt_path_is_in(&e, pdir) => {
                return Ok(Read {
                    records,
                    stopped_by_corrupt: true,
                });
            }
            Err(e) => return Err(format!("poll: {e}")),
        }
    }
    Ok(Read {
        records,
        stopped_by_corrupt: false,
    })
}

/// Reads a partition from the beginning through `Consumer::poll_each`
/// (which hands over the records before a damaged batch, then reports it).
fn read_polled_each(log: &Log, topic: &str, partition: u32, pdir: &Path) -> Result<Read, String> {
    let tp = TopicPartition::new(topic, partition);
    let mut consumer = log.consumer(ConsumerConfig::default().offset_reset(OffsetReset::None));
    consumer
        .assign(std::slice::from_ref(&tp))
        .map_err(|e| e.to_string())?;
    consumer
        .seek_to_beginning(std::slice::from_ref(&tp))
        .map_err(|e| e.to_string())?;
    let end = log
        .topic(topic)
        .and_then(|t| t.partition(partition).cloned())
        .map_err(|e| e.to_string())?
        .log_end_offset();
    let mut records = Vec::new();
    while consumer.position(&tp).map_err(|e| e.to_string())? < end {
        let polled = consumer.poll_each(Duration::ZERO, |_, r| {
            records.push((
                r.offset,
                Written {
                    key: r.key.map(<[u8]>::to_vec).unwrap_or_default(),
                    value: r.value.map(<[u8]>::to_vec).unwrap_or_default(),
                    timestamp: r.timestamp,
                },
            ));
        });
        match polled {
            Ok(0) => return Err("poll_each returned nothing below the end".into()),
            Ok(_) => {}
            Err(e) if corrupt_path_is_in(&e, pdir) => {
                let at = consumer.position(&tp).map_err(|e| e.to_string())?;
                if at != records.len() as u64 {
                    return Err(format!(
                        "poll_each stopped at position {at} after {} records",
                        records.len()
                    ));
                }
                return Ok(Read {
                    records,
                    stopped_by_corrupt: true,
                });
            }
            Err(e) => return Err(format!("poll_each: {e}")),
        }
    }
    Ok(Read {
        records,
        stopped_by_corrupt: false,
    })
}

/// The records of `model` that lie entirely before `damage` in the damaged
/// `.log` file of this partition (and in every segment before it): these
/// must survive unless a read reports corruption. For index files every
/// record must survive (indexes are rebuilt from the log).
fn must_survive(
    root: &Path,
    pdir: &Path,
    case: &Case<'_>,
    written: usize,
    reference_bytes: &[u8],
) -> usize {
    let damaged = root.join(case.file);
    if damaged.parent() != Some(pdir) {
        return written;
    }
    if damaged.extension().is_some_and(|e| e != "log") {
        return written;
    }
    // Offsets of the whole batches before the damage in this segment.
    let pos = case.damage.position() as usize;
    let mut survive = 0;
    for s in batch_spans(reference_bytes) {
        if s.start + s.len <= pos {
            survive = s.base_offset as usize + s.records as usize;
        }
    }
    let base: u64 = damaged
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .parse()
        .unwrap();
    survive.max(base as usize)
}

/// Opens the damaged copy and checks the rules of the module docs.
fn check_case(
    reference: &Reference,
    root: &Path,
    case: &Case<'_>,
    reference_bytes: &[u8],
) -> Result<(), String> {
    let log = match Log::open(root, LogConfig::default()) {
        Ok(log) => log,
        Err(e) => {
            return match &e {
                Error::Corrupt { path, .. }
                | Error::UnsupportedVersion { path, .. }
                | Error::Io { path, .. }
                    if path.starts_with(root) && path != root =>
                {
                    Ok(())
                }
                _ => Err(format!("open failed without naming a file: {e:?}")),
            };
        }
    };
    for ((topic, partition), written) in &reference.model {
        let pdir = root.join(topic).join(partition.to_string());
        let p = log
            .topic(topic)
            .and_then(|t| t.partition(*partition).cloned())
            .map_err(|e| format!("{topic}/{partition} after open: {e}"))?;
        if p.log_start_offset() != 0 {
            return Err(format!(
                "{topic}/{partition} starts at {}",
                p.log_start_offset()
            ));
        }
        if p.log_end_offset() > written.len() as u64 {
            return Err(format!(
                "{topic}/{partition} ends at {} past the {} records written",
                p.log_end_offset(),
                written.len()
            ));
        }
        let fetched = read_fetched(&p, &pdir).map_err(|e| format!("{topic}/{partition}: {e}"))?;
        let polled = read_polled(&log, topic, *partition, &pdir)
            .map_err(|e| format!("{topic}/{partition}: {e}"))?;
        let each = read_polled_each(&log, topic, *partition, &pdir)
            .map_err(|e| format!("{topic}/{partition}: {e}"))?;
        for read in [&fetched, &polled, &each] {
            for (i, (offset, got)) in read.records.iter().enumerate() {
                if *offset != i as u64 {
                    return Err(format!(
                        "{topic}/{partition}: record {i} has offset {offset}"
                    ));
                }
                if written.get(i) != Some(got) {
                    return Err(format!(
                        "{topic}/{partition}: record at {offset} differs from the one written"
                    ));
                }
            }
            if !read.stopped_by_corrupt && (read.records.len() as u64) < p.log_end_offset() {
                return Err(format!("{topic}/{partition}: read stopped early"));
            }
            let keep = must_survive(root, &pdir, case, written.len(), reference_bytes);
            if !read.stopped_by_corrupt && read.records.len() < keep {
                return Err(format!(
                    "{topic}/{partition}: {} records survive, {keep} were before the damage",
                    read.records.len()
                ));
            }
        }
        // A poll that meets a damaged batch returns the error instead of
        // the records before it; otherwise both paths read the same.
        let either_stopped = fetched.stopped_by_corrupt || polled.stopped_by_corrupt;
        if !fetched.stopped_by_corrupt {
            check_offsets_for_times(&log, topic, *partition, written, p.log_end_offset(), 97)?;
        }
        if !either_stopped && fetched.records.len() != polled.records.len() {
            return Err(format!(
                "{topic}/{partition}: fetch read {} records, poll {}",
                fetched.records.len(),
                polled.records.len()
            ));
        }
    }
    // What recovery settled on must survive another reopen unchanged.
    log.close().map_err(|e| format!("close: {e}"))?;
    let again = Log::open(root, LogConfig::default()).map_err(|e| format!("second open: {e}"))?;
    for (topic, partition) in reference.model.keys() {
        let p = again
            .topic(topic)
            .unwrap()
            .partition(*partition)
            .unwrap()
            .clone();
        let pdir = root.join(topic).join(partition.to_string());
        read_fetched(&p, &pdir).map_err(|e| format!("after reopen {topic}/{partition}: {e}"))?;
    }
    again.close().map_err(|e| format!("second close: {e}"))?;
    Ok(())
}

/// `offsets_for_times` (which starts from the `.timeindex`) gives the
/// earliest surviving offset at or after each timestamp, or an error naming
/// a file; never a wrong offset.
fn check_offsets_for_times(
    log: &Log,
    topic: &str,
    partition: u32,
    written: &[Written],
    log_end: u64,
    step: usize,
) -> Result<(), String> {
    let consumer = log.consumer(ConsumerConfig::default());
    let last = written.last().map_or(T0, |w| w.timestamp);
    for t in (T0 - 5..=last + 5).step_by(step) {
        let want = written[..log_end as usize]
            .iter()
            .position(|w| w.timestamp >= t)
            .map(|i| (i as u64, written[i].timestamp));
        match consumer.offsets_for_times(&[(TopicPartition::new(topic, partition), t)]) {
            Ok(got) => {
                let got = got[0].as_ref().map(|o| (o.offset, o.timestamp));
                if got != want {
                    return Err(format!(
                        "{topic}/{partition}: offsets_for_times({t}) = {got:?}, want {want:?}"
                    ));
                }
            }
            Err(Error::Corrupt { .. }) => {}
            Err(e) => return Err(format!("offsets_for_times({t}): {e}")),
        }
    }
    Ok(())
}

/// Runs every case for every file of both images; returns the failures.
fn run_catalogue(dense: bool, seed: u64) -> (usize, Vec<String>) {
    let reference = reference();
    let mut rng = Rng(seed);
    let mut cases = 0;
    let mut failures = Vec::new();
    for image in [Image::Clean, Image::Crash] {
        let src = match image {
            Image::Clean => reference.clean.path(),
            Image::Crash => reference.crash.path(),
        };
        for file in target_files(src) {
            let bytes = std::fs::read(src.join(&file)).unwrap();
            for damage in damages(&bytes, &mut rng, dense) {
                let case = Case {
                    image,
                    file: &file,
                    damage,
                };
                cases += 1;
                let dir = common::fast_temp_dir("corruption-case");
                copy_dir(src, dir.path());
                damage.apply(&dir.path().join(&file));
                let outcome = catch_unwind(AssertUnwindSafe(|| {
                    check_case(&reference, dir.path(), &case, &bytes)
                }));
                match outcome {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => failures.push(format!("{case}: {e}")),
                    Err(panic) => {
                        let msg = panic
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default();
                        failures.push(format!("{case}: PANIC {msg}"));
                    }
                }
            }
        }
    }
    (cases, failures)
}

fn assert_catalogue(dense: bool, seed: u64) {
    let (cases, failures) = run_catalogue(dense, seed);
    eprintln!("corruption: {cases} cases, {} failures", failures.len());
    if let Ok(path) = std::env::var("LOGBUS_CORRUPTION_REPORT") {
        std::fs::write(path, failures.join("\n")).unwrap();
    }
    assert!(cases > 500, "only {cases} cases");
    assert!(
        failures.is_empty(),
        "{} of {cases} cases failed:\n{}",
        failures.len(),
        failures
            .iter()
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn every_truncation_and_bit_flip_recovers_or_names_the_file() {
    assert_catalogue(false, 0x5eed);
}

/// Many more points per file (every batch boundary, 150 cuts and 300 flips):
/// `cargo test --release --test corruption -- --ignored`
/// (`LOGBUS_CORRUPTION_SEED` to change the seed).
#[test]
#[ignore = "long run: cargo test --release --test corruption -- --ignored"]
fn corruption_sweep() {
    let seed = std::env::var("LOGBUS_CORRUPTION_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0xbeef);
    assert_catalogue(true, seed);
}

// Regressions: each of these was a silent loss or a wrong record before
// the fix that names it.

/// One partition of 3+ segments, closed cleanly; returns the records.
fn sealed_log(root: &Path) -> Vec<Written> {
    let reference_dir = reference();
    copy_dir(reference_dir.clean.path(), root);
    reference_dir.model[&("b".to_string(), 0)].clone()
}

fn first_sealed_segment(root: &Path) -> PathBuf {
    common::log_files(&root.join("b").join("0"))[0].clone()
}

fn open_error(root: &Path) -> Error {
    match Log::open(root, LogConfig::default()) {
        Ok(_) => panic!("open succeeded"),
        Err(e) => e,
    }
}

/// Was: a sealed segment cut at a batch boundary opened cleanly, and a
/// fetch of the lost offsets silently returned the next segment's records
/// (a hole in the middle of the log).
#[test]
fn sealed_segment_cut_at_a_batch_boundary_is_corrupt() {
    let dir = TempDir::new("cut-boundary");
    sealed_log(dir.path());
    let seg = first_sealed_segment(dir.path());
    let bytes = std::fs::read(&seg).unwrap();
    let spans = batch_spans(&bytes);
    let cut = spans[spans.len() / 2].start as u64;
    Damage::Truncate(cut).apply(&seg);
    match open_error(dir.path()) {
        Error::Corrupt { path, .. } => {
            assert!(path.starts_with(dir.path().join("b/0")), "{path:?}")
        }
        e => panic!("{e:?}"),
    }
}

/// Was: a sealed segment cut inside a batch (so its index points past the
/// end and is rebuilt) was truncated like a torn active segment.
#[test]
fn sealed_segment_cut_inside_a_batch_is_corrupt() {
    let dir = TempDir::new("cut-inside");
    sealed_log(dir.path());
    let seg = first_sealed_segment(dir.path());
    let bytes = std::fs::read(&seg).unwrap();
    let spans = batch_spans(&bytes);
    let cut = (spans[1].start + 30) as u64;
    Damage::Truncate(cut).apply(&seg);
    match open_error(dir.path()) {
        Error::Corrupt { path, .. } => assert_eq!(path, seg),
        e => panic!("{e:?}"),
    }
}

/// Was: a bit flip in a sealed batch's base offset (which the CRC does not
/// cover) made reads return records at the wrong offsets.
#[test]
fn damaged_base_offset_in_a_sealed_segment_fails_the_read() {
    let dir = TempDir::new("base-offset");
    let written = sealed_log(dir.path());
    let seg = first_sealed_segment(dir.path());
    let bytes = std::fs::read(&seg).unwrap();
    let spans = batch_spans(&bytes);
    let victim = spans[spans.len() / 2];
    // The low byte of baseOffset: the batch claims offsets 4 higher.
    Damage::Flip {
        at: victim.start as u64 + 7,
        bit: 2,
    }
    .apply(&seg);
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let p = log.topic("b").unwrap().partition(0).unwrap().clone();
    let read = read_fetched(&p, &dir.path().join("b/0")).unwrap();
    assert!(read.stopped_by_corrupt, "the damaged batch was read");
    assert_eq!(read.records.len() as u64, victim.base_offset);
    for (i, (_, r)) in read.records.iter().enumerate() {
        assert_eq!(r, &written[i]);
    }
    // Asking for an offset of the damaged batch directly fails too.
    let err = p.read(victim.base_offset, 10).unwrap_err();
    assert!(
        matches!(err, Error::Corrupt { ref path, .. } if *path == seg),
        "{err:?}"
    );
}

/// Was: a damaged batch length before the last index entry of a segment
/// (not looked at by a clean open) made the fetch of its offsets return
/// nothing at all, below the log end, instead of an error.
#[test]
fn damaged_batch_length_fails_the_read_instead_of_ending_it() {
    let dir = TempDir::new("batch-length");
    sealed_log(dir.path());
    let seg = first_sealed_segment(dir.path());
    let bytes = std::fs::read(&seg).unwrap();
    let victim = batch_spans(&bytes)[1];
    // The sign bit of batchLength.
    Damage::Flip {
        at: victim.start as u64 + 8,
        bit: 7,
    }
    .apply(&seg);
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let p = log.topic("b").unwrap().partition(0).unwrap().clone();
    let err = p.read(victim.base_offset, 10).unwrap_err();
    assert!(
        matches!(err, Error::Corrupt { ref path, .. } if *path == seg),
        "{err:?}"
    );
}

/// A damaged `.index` entry (trusted after a clean shutdown) never makes a
/// read return the wrong batch: an entry that does not match the batch it
/// points at is skipped.
#[test]
fn damaged_index_entries_never_misdirect_a_read() {
    let dir = TempDir::new("index-entry");
    let written = sealed_log(dir.path());
    let seg = first_sealed_segment(dir.path());
    let index = seg.with_extension("index");
    let entries = std::fs::metadata(&index).unwrap().len() / 8;
    assert!(entries >= 3);
    for entry in 0..entries - 1 {
        for field_byte in [3u64, 6] {
            let case = TempDir::new("index-entry-case");
            copy_dir(dir.path(), case.path());
            let index = case.path().join(index.strip_prefix(dir.path()).unwrap());
            Damage::Flip {
                at: entry * 8 + field_byte,
                bit: 1,
            }
            .apply(&index);
            let log = Log::open(case.path(), LogConfig::default()).unwrap();
            let p = log.topic("b").unwrap().partition(0).unwrap().clone();
            for offset in 0..written.len() as u64 {
                let r = &p.read(offset, 1).unwrap()[0];
                assert_eq!(r.offset, offset, "entry {entry} byte {field_byte}");
                assert_eq!(r.key.as_deref(), Some(&written[offset as usize].key[..]));
            }
        }
    }
}

/// What `open` does with each kind of file replaced by random bytes of
/// the same length (the bad-input catalogue's "file replaced by garbage"):
/// metadata files and sealed segments are `Error::Corrupt` naming the file;
/// the active segment is `Error::Corrupt` after a clean shutdown and a torn
/// tail (cut and reported) after a crash; index files are rebuilt and every
/// record stays readable.
#[test]
fn files_replaced_by_garbage() {
    let reference = reference();
    let mut rng = Rng(0x6a7b);
    for image in [Image::Clean, Image::Crash] {
        let src = match image {
            Image::Clean => reference.clean.path(),
            Image::Crash => reference.crash.path(),
        };
        let pdir = Path::new("a/0");
        let logs = common::log_files(&src.join(pdir));
        let sealed = logs[0].strip_prefix(src).unwrap().to_path_buf();
        let active = logs
            .last()
            .unwrap()
            .strip_prefix(src)
            .unwrap()
            .to_path_buf();
        let cases: Vec<(PathBuf, &str)> = vec![
            (PathBuf::from("logbus.meta"), "corrupt"),
            (PathBuf::from("a/topic.conf"), "corrupt"),
            (sealed.clone(), "corrupt"),
            (
                active.clone(),
                if image == Image::Clean {
                    "corrupt"
                } else {
                    "cut"
                },
            ),
            (sealed.with_extension("index"), "rebuilt"),
            (sealed.with_extension("timeindex"), "rebuilt"),
            (active.with_extension("index"), "rebuilt"),
            (active.with_extension("timeindex"), "rebuilt"),
        ];
        for (file, want) in cases {
            let what = format!("{image:?} image, {} replaced by garbage", file.display());
            let dir = common::fast_temp_dir("garbage");
            copy_dir(src, dir.path());
            let path = dir.path().join(&file);
            let len = std::fs::metadata(&path).unwrap().len() as usize;
            std::fs::write(&path, rng.bytes(len)).unwrap();
            let opened = Log::open(dir.path(), LogConfig::default());
            match (want, opened) {
                ("corrupt", Err(Error::Corrupt { path: p, .. })) => assert_eq!(p, path, "{what}"),
                ("cut", Ok(log)) => {
                    let base = logs.len() as u64; // sanity: the active segment is not the first
                    assert!(base > 1);
                    assert!(log.recovery_report().truncated_bytes() > 0, "{what}");
                    let p = log.topic("a").unwrap().partition(0).unwrap().clone();
                    let read = read_fetched(&p, &dir.path().join(pdir)).unwrap();
                    assert!(!read.stopped_by_corrupt, "{what}");
                    let active_base: u64 = active
                        .file_stem()
                        .unwrap()
                        .to_string_lossy()
                        .parse()
                        .unwrap();
                    assert_eq!(p.log_end_offset(), active_base, "{what}");
                }
                ("rebuilt", Ok(log)) => {
                    let p = log.topic("a").unwrap().partition(0).unwrap().clone();
                    let read = read_fetched(&p, &dir.path().join(pdir)).unwrap();
                    let written = &reference.model[&("a".to_string(), 0)];
                    assert_eq!(read.records.len(), written.len(), "{what}");
                    for (i, (_, r)) in read.records.iter().enumerate() {
                        assert_eq!(r, &written[i], "{what}");
                    }
                }
                (want, got) => panic!("{what}: wanted {want}, got {:?}", got.map(|_| ())),
            }
        }
    }
}

/// A directory in the data directory that is not a topic (no `topic.conf`)
/// fails the open with an error naming it, rather than being skipped: a
/// topic whose config was lost would otherwise vanish with its data.
#[test]
fn stray_directory_is_an_error_naming_it() {
    let dir = TempDir::new("stray");
    Log::open(dir.path(), LogConfig::default())
        .unwrap()
        .close()
        .unwrap();
    let stray = dir.path().join(".snapshot");
    std::fs::create_dir(&stray).unwrap();
    match Log::open(dir.path(), LogConfig::default()) {
        Err(Error::Io { path, .. }) => assert!(path.starts_with(&stray), "{path:?}"),
        other => panic!("{:?}", other.map(|_| ())),
    }
}

/// Was: a damaged `.timeindex` entry (trusted after a clean shutdown)
/// started `offsets_for_times` past the answer, which then returned a later
/// offset. An entry must now name a batch with its largest timestamp.
#[test]
fn damaged_time_index_entries_never_misdirect_offsets_for_times() {
    let dir = TempDir::new("time-entry");
    let written = sealed_log(dir.path());
    let seg = first_sealed_segment(dir.path());
    let index = seg.with_extension("timeindex");
    let entries = std::fs::metadata(&index).unwrap().len() / 12;
    assert!(entries >= 3);
    let log_end = written.len() as u64;
    for entry in 0..entries {
        // Bits of the timestamp and of the relative offset.
        for (field_byte, bit) in [(3u64, 3u8), (7, 2), (7, 4), (11, 0), (11, 3)] {
            let case = TempDir::new("time-entry-case");
            copy_dir(dir.path(), case.path());
            let index = case.path().join(index.strip_prefix(dir.path()).unwrap());
            Damage::Flip {
                at: entry * 12 + field_byte,
                bit,
            }
            .apply(&index);
            let log = Log::open(case.path(), LogConfig::default()).unwrap();
            check_offsets_for_times(&log, "b", 0, &written, log_end, 3)
                .unwrap_or_else(|e| panic!("entry {entry} byte {field_byte} bit {bit}: {e}"));
        }
    }
}

/// Was: `open` removed the clean-shutdown marker only once every topic
/// was open, but opening a partition already re-extends its active segment
/// and indexes (zero tails). A process killed in between (the SIGKILL test
/// kills children while they open), or an open that failed on a later
/// topic, left the marker vouching for files it had changed. The marker now
/// goes first, so the next open recovers as after a crash.
#[test]
fn an_open_that_fails_part_way_leaves_no_clean_marker() {
    let reference = reference();
    let dir = TempDir::new("open-part-way");
    copy_dir(reference.clean.path(), dir.path());
    // Topics open in name order: `a` is opened (its files touched), then
    // `b` fails.
    let conf = dir.path().join("b/topic.conf");
    let good = std::fs::read(&conf).unwrap();
    std::fs::write(&conf, b"garbage").unwrap();
    assert!(matches!(
        Log::open(dir.path(), LogConfig::default()),
        Err(Error::Corrupt { .. })
    ));
    assert!(!dir.path().join(".clean_shutdown").exists());
    std::fs::write(&conf, good).unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    assert!(!log.recovery_report().clean_shutdown);
    for ((topic, partition), written) in &reference.model {
        let p = log
            .topic(topic)
            .unwrap()
            .partition(*partition)
            .unwrap()
            .clone();
        let pdir = dir.path().join(topic).join(partition.to_string());
        let read = read_fetched(&p, &pdir).unwrap();
        assert!(!read.stopped_by_corrupt);
        assert_eq!(read.records.len(), written.len(), "{topic}/{partition}");
    }
}

// ---------------------------------------------------------------------------
// Internal topics: `__consumer_offsets` and `__work_queue_state`
//
// The same damage (cuts at batch boundaries and random points, bit flips)
// applied to every file of the two internal topics of a log where a
// consumer group committed many times and a work queue saved its state
// many times. `open` (which loads the group offsets), `describe_group` and
// `WorkQueue::open` either work or fail with a typed error naming a file
// of the damaged topic; a committed offset found is one the group really
// committed (damage may lose the latest commits, never invent a later
// one); and the queue delivers every record it never acknowledged (damage
// may bring back acknowledged ones: at least once, never lost).

const JOBS: &str = "jobs";
const JOB_PARTITIONS: u32 = 2;

/// The internal-topics reference: images and what was committed and acked.
struct InternalReference {
    clean: TempDir,
    crash: TempDir,
    /// Every offset group `g` committed, per partition.
    committed: BTreeMap<u32, Vec<u64>>,
    /// Records of `jobs`: (partition, offset) → value.
    jobs: BTreeMap<(u32, u64), Vec<u8>>,
    /// Records queue `q` acknowledged and committed before the images.
    acked: std::collections::BTreeSet<(u32, u64)>,
}

fn internal_reference() -> InternalReference {
    let clean = TempDir::new("corruption-internal-clean");
    let crash = TempDir::new("corruption-internal-crash");
    let log = Log::open(clean.path(), LogConfig::default()).unwrap();
    log.create_topic(JOBS, topic_config(JOB_PARTITIONS))
        .unwrap();
    let producer = log.producer(JOBS).unwrap();
    let mut jobs = BTreeMap::new();
    for i in 0..120u32 {
        let value = format!("job-{i}").into_bytes();
        let m = producer
            .send(Record::new(value.clone()).partition(i % JOB_PARTITIONS))
            .unwrap();
        jobs.insert((m.partition, m.offset), value);
    }
    // A group committing a few records at a time: many offset records.
    let config = GroupConfig::default()
        .auto_commit(false)
        .consumer(ConsumerConfig::default().max_poll_records(7));
    let mut member = ConsumerGroup::join(&log, "g", &[JOBS], config).unwrap();
    let mut committed: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    let mut seen = 0;
    while seen < jobs.len() {
        seen += member.poll(Duration::from_millis(50)).unwrap().len();
        member.commit().unwrap();
        for tp in member.assignment() {
            if let Some(c) = member.committed(&tp) {
                committed.entry(tp.partition).or_default().push(c.offset);
            }
        }
    }
    drop(member);
    // A queue acking every other record, committing its state often.
    let queue = WorkQueue::open(&log, "q", JOBS, QueueConfig::default()).unwrap();
    let mut worker = queue.worker();
    worker.set_max_poll_records(9);
    let mut acked = std::collections::BTreeSet::new();
    for _ in 0..10 {
        for d in worker.poll(Duration::from_millis(50)).unwrap() {
            if d.record.offset % 2 == 0 {
                worker.ack(&d).unwrap();
                acked.insert((d.record.partition, d.record.offset));
            }
        }
        worker.commit().unwrap();
    }
    drop(worker);
    copy_dir(clean.path(), crash.path());
    drop(queue);
    log.close().unwrap();
    assert!(committed.values().all(|c| c.len() > 5), "{committed:?}");
    assert!(acked.len() > 20, "only {} acked", acked.len());
    InternalReference {
        clean,
        crash,
        committed,
        jobs,
        acked,
    }
}

/// A typed error naming a file inside `topic_dir` (a segment, an index, the
/// topic's config): never just the directory.
fn names_a_file_in(err: &Error, topic_dir: &Path) -> bool {
    match err {
        Error::Corrupt { path, .. }
        | Error::UnsupportedVersion { path, .. }
        | Error::Io { path, .. } => path.starts_with(topic_dir) && path.extension().is_some(),
        _ => false,
    }
}

/// How the damaged cases ended, for the figures.
#[derive(Debug, Default)]
struct InternalOutcomes {
    /// A typed error naming a file of the damaged topic.
    refused: usize,
    /// Opened with the group's latest commits and the queue's latest state.
    whole: usize,
    /// Opened with older commits (the latest ones lost to the damage).
    older_commits: usize,
    /// Opened with an older queue state: acknowledged records delivered again.
    redelivered: usize,
}

fn check_internal_case(
    reference: &InternalReference,
    dir: &Path,
    topic: &str,
    outcomes: &mut InternalOutcomes,
) -> Result<(), String> {
    let topic_dir = dir.join(topic);
    let mut typed = |what: &str, e: Error| {
        if names_a_file_in(&e, &topic_dir) {
            outcomes.refused += 1;
            Ok(())
        } else {
            Err(format!("{what}: {e:?} does not name a file of {topic}"))
        }
    };
    let log = match Log::open(dir, LogConfig::default()) {
        Ok(log) => log,
        Err(e) => return typed("open", e),
    };
    let mut older = false;
    match log.describe_group("g") {
        Ok(d) => {
            for o in &d.offsets {
                let p = o.partition.partition;
                if let Some(c) = o.committed {
                    if !reference.committed[&p].contains(&c) {
                        return Err(format!(
                            "committed offset {c} of {p} was never committed (commits: {:?})",
                            reference.committed[&p]
                        ));
                    }
                }
                older |= o.committed != reference.committed[&p].last().copied();
            }
        }
        // Every commit lost: allowed (never a later one).
        Err(Error::UnknownGroup { .. }) => older = true,
        Err(e) => typed("describe_group", e)?,
    }
    let queue = match WorkQueue::open(&log, "q", JOBS, QueueConfig::default()) {
        Ok(q) => q,
        Err(e) => return typed("WorkQueue::open", e),
    };
    let mut worker = queue.worker();
    let mut delivered = std::collections::BTreeSet::new();
    loop {
        let got = worker
            .poll(Duration::ZERO)
            .map_err(|e| format!("poll: {e}"))?;
        if got.is_empty() {
            break;
        }
        for d in &got {
            let at = (d.record.partition, d.record.offset);
            if d.record.value.as_deref() != reference.jobs.get(&at).map(Vec::as_slice) {
                return Err(format!("delivered {at:?} with the wrong value"));
            }
            delivered.insert(at);
            worker.ack(d).map_err(|e| format!("ack: {e}"))?;
        }
    }
    let lost: Vec<_> = reference
        .jobs
        .keys()
        .filter(|at| !reference.acked.contains(at) && !delivered.contains(at))
        .collect();
    if !lost.is_empty() {
        return Err(format!("never acknowledged, never delivered: {lost:?}"));
    }
    let redelivered = delivered.iter().any(|at| reference.acked.contains(at));
    outcomes.older_commits += usize::from(older);
    outcomes.redelivered += usize::from(redelivered);
    outcomes.whole += usize::from(!older && !redelivered);
    drop(worker);
    drop(queue);
    log.close().map_err(|e| format!("close: {e}"))
}

#[test]
fn internal_topics_damage_recovers_or_names_the_file() {
    let reference = internal_reference();
    let mut rng = Rng(0x0ff5e7);
    let (mut cases, mut failures) = (0, Vec::new());
    let mut outcomes = InternalOutcomes::default();
    for (image, src) in [
        (Image::Clean, reference.clean.path()),
        (Image::Crash, reference.crash.path()),
    ] {
        for topic in ["__consumer_offsets", "__work_queue_state"] {
            let files: Vec<PathBuf> = target_files(src)
                .into_iter()
                .filter(|f| f.starts_with(topic))
                .collect();
            assert!(files.len() >= 4, "{topic}: {files:?}");
            for file in &files {
                let bytes = std::fs::read(src.join(file)).unwrap();
                for damage in damages(&bytes, &mut rng, false) {
                    cases += 1;
                    let case = Case {
                        image,
                        file,
                        damage,
                    };
                    let dir = common::fast_temp_dir("corruption-internal");
                    copy_dir(src, dir.path());
                    damage.apply(&dir.path().join(file));
                    let outcome = catch_unwind(AssertUnwindSafe(|| {
                        check_internal_case(&reference, dir.path(), topic, &mut outcomes)
                    }));
                    match outcome {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => failures.push(format!("{case}: {e}")),
                        Err(panic) => {
                            let msg = panic
                                .downcast_ref::<String>()
                                .cloned()
                                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                                .unwrap_or_default();
                            failures.push(format!("{case}: PANIC {msg}"));
                        }
                    }
                }
            }
        }
    }
    eprintln!(
        "internal topics: {cases} cases, {} failures; {outcomes:?}",
        failures.len()
    );
    assert!(cases > 150, "only {cases} cases");
    // The damage reached the decoders: some cases refused, some lost the
    // latest commits or queue state (and handled it as promised).
    assert!(outcomes.refused > 0 && outcomes.older_commits > 0 && outcomes.redelivered > 0);
    assert!(
        failures.is_empty(),
        "{} of {cases} cases failed:\n{}",
        failures.len(),
        failures
            .iter()
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Was: a poll that took partition 0's records and then met a damaged batch
/// in partition 1 returned only the error, although partition 0's position
/// had moved past its records: they were lost to the consumer. Now that
/// poll returns them and the next poll returns the error (Kafka's
/// `Fetcher` does the same); partition 1 stays before the damaged batch,
/// its undamaged records before it not returned either, and nothing
/// is lost.
#[test]
fn corruption_in_one_partition_does_not_drop_records_polled_from_another() {
    let dir = TempDir::new("poll-keeps-taken");
    let config = TopicConfig::new(2)
        .retention_ms(None)
        .segment_bytes(4096)
        .max_record_bytes(1024)
        // A clean open checks the batches after a sealed segment's last
        // index entry only: keep the damaged one before it.
        .index_interval_bytes(256);
    {
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        log.create_topic("t", config).unwrap();
        let producer = log.producer("t").unwrap();
        for i in 0..5u32 {
            producer
                .send(Record::new(format!("p0-{i}")).partition(0))
                .unwrap();
        }
        // Several batches (and segments) in partition 1.
        for b in 0..20u32 {
            let batch: Vec<Record> = (0..10u32)
                .map(|i| Record::new(format!("p1-{b}-{i}-{}", "x".repeat(40))).partition(1))
                .collect();
            producer.send_batch(&batch).unwrap();
        }
        log.close().unwrap();
    }
    // Damage a value byte (covered by the CRC) of partition 1's second batch.
    let seg = common::log_files(&dir.path().join("t").join("1"))[0].clone();
    let bytes = std::fs::read(&seg).unwrap();
    let victim = batch_spans(&bytes)[1];
    assert_eq!(victim.base_offset, 10);
    Damage::Flip {
        at: (victim.start + victim.len - 10) as u64,
        bit: 0,
    }
    .apply(&seg);

    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let (p0, p1) = (TopicPartition::new("t", 0), TopicPartition::new("t", 1));
    let check = |consumer: &mut Consumer| {
        let records = consumer.poll(Duration::ZERO).unwrap();
        let values: Vec<String> = records
            .iter()
            .map(|r| {
                assert_eq!(r.partition, 0, "only partition 0's records");
                String::from_utf8(r.value.unwrap().to_vec()).unwrap()
            })
            .collect();
        assert_eq!(values, ["p0-0", "p0-1", "p0-2", "p0-3", "p0-4"]);
        assert_eq!(consumer.position(&p0).unwrap(), 5);
        assert_eq!(
            consumer.position(&p1).unwrap(),
            0,
            "before the damaged fetch"
        );
        match consumer.poll(Duration::ZERO) {
            Err(Error::Corrupt { path, .. }) => assert_eq!(path, seg),
            other => panic!("{:?}", other.map(|r| r.len())),
        }
        // Still there: partition 1 did not move, and the error repeats.
        assert_eq!(consumer.position(&p1).unwrap(), 0);
        assert!(matches!(
            consumer.poll(Duration::ZERO),
            Err(Error::Corrupt { .. })
        ));
        assert_eq!(consumer.position(&p0).unwrap(), 5);
    };
    let mut consumer = log.consumer(ConsumerConfig::default());
    consumer.assign(&[p0.clone(), p1.clone()]).unwrap();
    check(&mut consumer);
    // A seek past the damage drops nothing and reads on.
    let mut consumer = log.consumer(ConsumerConfig::default());
    consumer.assign(&[p0.clone(), p1.clone()]).unwrap();
    let _ = consumer.poll(Duration::ZERO).unwrap();
    consumer.seek(&p1, 20).unwrap();
    let records = consumer.poll(Duration::ZERO).unwrap();
    assert_eq!(records.iter().next().map(|r| r.offset), Some(20));

    // The same through a consumer group (one member owns both partitions,
    // in whichever order): partition 0's records come once, whole, and
    // the error comes by itself.
    let mut member = ConsumerGroup::join(
        &log,
        "g",
        &["t"],
        GroupConfig::default()
            .auto_commit(false)
            .offset_reset(OffsetReset::Earliest),
    )
    .unwrap();
    let (mut values, mut errors) = (Vec::new(), 0);
    for _ in 0..4 {
        match member.poll(Duration::from_millis(200)) {
            Ok(records) => values.extend(records.iter().map(|r| {
                assert_eq!(r.partition, 0, "only partition 0's records");
                r.offset
            })),
            Err(Error::Corrupt { path, .. }) => {
                assert_eq!(path, seg);
                errors += 1;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(values, [0, 1, 2, 3, 4]);
    assert!(errors >= 2, "{errors}");
    assert_eq!(member.position(&p0).unwrap(), 5);
    assert_eq!(member.position(&p1).unwrap(), 0);
}
