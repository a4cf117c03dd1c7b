//! logbus against plain `write()`/`read()` of the same bytes, side by side.
//!
//! ```text
//! cargo run --release --example compare [-- --records N --sync-records S --reps R --json out.json]
//! ```
//!
//! Every workload runs `--reps` times (default 3), interleaved (rep 1 of
//! every row, then rep 2, ...), and each row reports the median of its reps
//! (records/s, p50 and p99 are medians taken separately). MB/s counts
//! payload bytes only (10^6 B). `×` is the ratio of records/s to the plain
//! `write()`/`read()` row of the same record size; for `Durability::Always`
//! rows it is the ratio to the `write()+fdatasync` ceiling loop (marked `*`).

use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use logbus::{
    ConsumerConfig, Durability, Log, LogConfig, Partition, Producer, Record, TopicConfig,
    TopicPartition,
};

static PAYLOAD_100: [u8; 100] = [b'x'; 100];
static PAYLOAD_1K: [u8; 1024] = [b'y'; 1024];
const BATCH: usize = 1000;
const IO_BUF: usize = 64 << 10;

// ---------------------------------------------------------------- options

struct Opts {
    records: u64,
    sync_records: u64,
    latency_records: u64,
    latency_every_us: u64,
    reps: usize,
    json: Option<PathBuf>,
    /// Comma-separated workload groups to run (all when `None`).
    only: Option<String>,
}

impl Opts {
    fn want(&self, group: &str) -> bool {
        self.only
            .as_deref()
            .is_none_or(|only| only.split(',').any(|g| g == group))
    }
}

fn parse_args() -> Opts {
    let mut o = Opts {
        records: 2_000_000,
        sync_records: 1000,
        latency_records: 50_000,
        latency_every_us: 20,
        reps: 3,
        json: None,
        only: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || {
            args.next().unwrap_or_else(|| {
                eprintln!("{a} needs a value");
                std::process::exit(2)
            })
        };
        let num = |s: String| -> u64 {
            s.replace('_', "").parse().unwrap_or_else(|_| {
                eprintln!("bad number {s:?}");
                std::process::exit(2)
            })
        };
        match a.as_str() {
            "--records" => o.records = num(val()),
            "--sync-records" => o.sync_records = num(val()),
            "--latency-records" => o.latency_records = num(val()),
            "--latency-every-us" => o.latency_every_us = num(val()),
            "--reps" => o.reps = num(val()).max(1) as usize,
            "--json" => o.json = Some(PathBuf::from(val())),
            "--only" => o.only = Some(val()),
            "-h" | "--help" => {
                println!(
                    "compare [--records N (100 B rows, default 2000000; 1 KiB rows use N/8)] \
                     [--sync-records S (Durability::Always rows, default 1000)] \
                     [--latency-records L (default 50000)] [--latency-every-us U (default 20)] [--reps R (default 3)] [--json out.json] \
                     [--only GROUPS (comma-separated: baseline,batch100,batch1k,single,latency,sync)]"
                );
                std::process::exit(0);
            }
            // `cargo bench`-style flags passed by accident are ignored.
            _ if a.starts_with("--bench") => {}
            other => {
                eprintln!("unknown argument {other:?} (try --help)");
                std::process::exit(2)
            }
        }
    }
    o.records = o.records.max(BATCH as u64);
    o.sync_records = o.sync_records.max(4);
    o
}

// ---------------------------------------------------------------- results

#[derive(Clone, Copy, Default)]
struct Sample {
    records: u64,
    secs: f64,
    /// (p50, p99) in µs, when the row measures latency.
    lat: Option<(f64, f64)>,
}

impl Sample {
    fn rate(&self) -> f64 {
        self.records as f64 / self.secs
    }
}

struct Row {
    name: String,
    payload: usize,
    /// Name of the row this one is compared with.
    reference: Option<&'static str>,
    note: String,
    samples: Vec<Sample>,
}

struct Table {
    rows: Vec<Row>,
}

impl Table {
    fn add(
        &mut self,
        name: &str,
        payload: usize,
        reference: Option<&'static str>,
        note: &str,
        s: Sample,
    ) {
        if let Some(r) = self.rows.iter_mut().find(|r| r.name == name) {
            r.samples.push(s);
            return;
        }
        self.rows.push(Row {
            name: name.to_string(),
            payload,
            reference,
            note: note.to_string(),
            samples: vec![s],
        });
    }

    fn median_rate(&self, name: &str) -> Option<f64> {
        self.rows
            .iter()
            .find(|r| r.name == name)
            .map(|r| median(r.samples.iter().map(Sample::rate).collect()))
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p * sorted.len() as f64) as usize).min(sorted.len() - 1);
    sorted[i] as f64 / 1000.0
}

fn lat_of(mut ns: Vec<u64>) -> Option<(f64, f64)> {
    ns.sort_unstable();
    Some((percentile(&ns, 0.50), percentile(&ns, 0.99)))
}

// ---------------------------------------------------------------- helpers

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(root: &Path, name: &str) -> TempDir {
        let p = root.join(name);
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create data dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Filesystem type and mount point holding `path` (from /proc/self/mountinfo).
fn filesystem_of(path: &Path) -> String {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return "unknown".into();
    };
    let mut best: Option<(usize, String)> = None;
    for line in info.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let Some(dash) = f.iter().position(|s| *s == "-") else {
            continue;
        };
        if f.len() < dash + 3 || f.len() < 5 {
            continue;
        }
        let mount = f[4];
        if path.starts_with(mount) && best.as_ref().is_none_or(|(l, _)| mount.len() >= *l) {
            best = Some((
                mount.len(),
                format!("{} on {} ({})", f[dash + 1], mount, f[dash + 2]),
            ));
        }
    }
    best.map_or_else(|| "unknown".into(), |(_, s)| s)
}

fn open_log(dir: &Path, durability: Durability) -> Log {
    Log::open(dir, LogConfig::default().durability(durability)).expect("open log")
}

fn payload(size: usize) -> Bytes {
    match size {
        100 => Bytes::from_static(&PAYLOAD_100),
        1024 => Bytes::from_static(&PAYLOAD_1K),
        _ => unreachable!(),
    }
}

// ---------------------------------------------------------------- baselines

/// `[u32 len][payload]` records through a 64 KiB `BufWriter`, no fsync.
#[inline(never)] // a frame of its own in profiles
fn raw_write(path: &Path, records: u64, size: usize) -> Sample {
    let data: &[u8] = if size == 100 {
        &PAYLOAD_100
    } else {
        &PAYLOAD_1K
    };
    let file = File::create(path).expect("create raw file");
    let start = Instant::now();
    let mut w = BufWriter::with_capacity(IO_BUF, file);
    let len = (data.len() as u32).to_le_bytes();
    for _ in 0..records {
        w.write_all(&len).unwrap();
        w.write_all(data).unwrap();
    }
    w.flush().unwrap();
    let secs = start.elapsed().as_secs_f64();
    drop(w);
    Sample {
        records,
        secs,
        lat: None,
    }
}

/// Sequential `read()` into a 64 KiB buffer, walking every record and
/// touching its last payload byte.
#[inline(never)] // a frame of its own in profiles
fn raw_read(path: &Path, expect: u64) -> Sample {
    let mut file = File::open(path).expect("open raw file");
    let start = Instant::now();
    let mut buf = vec![0u8; IO_BUF];
    let (mut have, mut count, mut sum, mut touch) = (0usize, 0u64, 0u64, 0u8);
    loop {
        let n = file.read(&mut buf[have..]).unwrap();
        if n == 0 {
            break;
        }
        have += n;
        let mut pos = 0;
        while have - pos >= 4 {
            let len = u32::from_le_bytes(buf[pos..pos + 4].try_into().unwrap()) as usize;
            if have - pos < 4 + len {
                break;
            }
            touch ^= buf[pos + 3 + len];
            sum += len as u64;
            count += 1;
            pos += 4 + len;
        }
        buf.copy_within(pos..have, 0);
        have -= pos;
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(count, expect, "raw read count");
    std::hint::black_box((sum, touch));
    Sample {
        records: count,
        secs,
        lat: None,
    }
}

/// `pwrite()` of one record into a preallocated, zero-filled and synced
/// file, then `fdatasync`: the cheapest durable append (no size or extent
/// change to journal).
fn raw_fsync_prealloc(path: &Path, records: u64) -> Sample {
    use std::os::unix::fs::FileExt;
    let file = File::create(path).expect("create fsync file");
    let size = records as usize * 104;
    file.write_all_at(&vec![0u8; size], 0).unwrap();
    file.sync_all().unwrap();
    let mut rec = Vec::with_capacity(104);
    rec.extend_from_slice(&100u32.to_le_bytes());
    rec.extend_from_slice(&PAYLOAD_100);
    let mut lat = Vec::with_capacity(records as usize);
    let start = Instant::now();
    for i in 0..records {
        let t = Instant::now();
        file.write_all_at(&rec, i * 104).unwrap();
        file.sync_data().unwrap();
        lat.push(t.elapsed().as_nanos() as u64);
    }
    let secs = start.elapsed().as_secs_f64();
    Sample {
        records,
        secs,
        lat: lat_of(lat),
    }
}

/// `write()` of `group` records then `fdatasync`, `records / group` times,
/// appending to a growing file: the floor under `Durability::Always`.
fn raw_fsync(path: &Path, records: u64, group: usize) -> Sample {
    let mut file = File::create(path).expect("create fsync file");
    let mut rec = Vec::with_capacity(group * 104);
    for _ in 0..group {
        rec.extend_from_slice(&100u32.to_le_bytes());
        rec.extend_from_slice(&PAYLOAD_100);
    }
    let rounds = records / group as u64;
    let mut lat = Vec::with_capacity(rounds as usize);
    let start = Instant::now();
    for _ in 0..rounds {
        let t = Instant::now();
        file.write_all(&rec).unwrap();
        file.sync_data().unwrap();
        lat.push(t.elapsed().as_nanos() as u64);
    }
    let secs = start.elapsed().as_secs_f64();
    Sample {
        records: rounds * group as u64,
        secs,
        lat: lat_of(lat),
    }
}

// ---------------------------------------------------------------- logbus

/// `send_batch` of 1000 keyless records to partition 0, building each batch
/// in the timed loop (reusing the Vec).
#[inline(never)] // a frame of its own in profiles
fn lb_append_batches(producer: &Producer, records: u64, size: usize) -> Sample {
    let value = payload(size);
    let mut batch: Vec<Record> = Vec::with_capacity(BATCH);
    let start = Instant::now();
    let mut left = records;
    while left > 0 {
        let n = left.min(BATCH as u64);
        batch.clear();
        for _ in 0..n {
            batch.push(Record::new(value.clone()).partition(0));
        }
        producer.send_batch(&batch).expect("send_batch");
        left -= n;
    }
    Sample {
        records,
        secs: start.elapsed().as_secs_f64(),
        lat: None,
    }
}

/// `threads` threads each sending `records / threads` single records.
/// `partition(i)`: the explicit partition of thread `i`, or keyless.
fn lb_single_sends(
    producer: &Producer,
    records: u64,
    threads: usize,
    partition: impl Fn(usize) -> Option<u32> + Sync,
    measure_latency: bool,
) -> Sample {
    let per = records / threads as u64;
    let barrier = Barrier::new(threads + 1);
    let (secs, lats) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let producer = producer.clone();
                let barrier = &barrier;
                let part = partition(t);
                s.spawn(move || {
                    let value = payload(100);
                    let mut lat = Vec::new();
                    if measure_latency {
                        lat.reserve(per as usize / 16 + 1);
                    }
                    barrier.wait();
                    for i in 0..per {
                        let mut r = Record::new(value.clone());
                        if let Some(p) = part {
                            r = r.partition(p);
                        }
                        // Timing every call would add two clock reads to a
                        // sub-microsecond send; sample 1 in 16 (all when slow).
                        if measure_latency && (i % 16 == 0 || per <= 100_000) {
                            let t0 = Instant::now();
                            producer.send(r).expect("send");
                            lat.push(t0.elapsed().as_nanos() as u64);
                        } else {
                            producer.send(r).expect("send");
                        }
                    }
                    lat
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let mut lats = Vec::new();
        for h in handles {
            lats.extend(h.join().unwrap());
        }
        (start.elapsed().as_secs_f64(), lats)
    });
    Sample {
        records: per * threads as u64,
        secs,
        lat: if measure_latency { lat_of(lats) } else { None },
    }
}

/// Reads partition 0 from offset 0 with `Consumer::poll`, checking offsets
/// and touching every value's last byte.
#[inline(never)] // a frame of its own in profiles
fn lb_read_consumer(log: &Log, topic: &str, expect: u64) -> Sample {
    let mut consumer = log.consumer(ConsumerConfig::default().max_poll_records(10_000));
    consumer
        .assign(&[TopicPartition::new(topic, 0)])
        .expect("assign");
    let start = Instant::now();
    let (mut next, mut sum, mut touch) = (0u64, 0u64, 0u8);
    while next < expect {
        let recs = consumer.poll(Duration::from_millis(200)).expect("poll");
        assert!(!recs.is_empty(), "poll returned nothing at offset {next}");
        for r in &recs {
            assert_eq!(r.offset, next, "out of order");
            let v = r.value.as_deref().unwrap();
            sum += v.len() as u64;
            touch ^= v[v.len() - 1];
            next += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    std::hint::black_box((sum, touch));
    Sample {
        records: next,
        secs,
        lat: None,
    }
}

/// Every record through `FetchedBatches::records` (borrowed views, CRC
/// checked once per process): decodes each record, checks the offset order
/// and touches each value, like the consumer row, without per-record
/// reference counting.
#[inline(never)] // a frame of its own in profiles
fn lb_read_views(p: &Partition, expect: u64) -> Sample {
    let start = Instant::now();
    let (mut next, mut sum, mut touch) = (0u64, 0u64, 0u8);
    while next < expect {
        let f = p.fetch(next, 1 << 20).expect("fetch");
        for r in f.records() {
            let r = r.expect("record");
            assert_eq!(r.offset, next, "out of order");
            let v = r.value.unwrap();
            sum += v.len() as u64;
            touch ^= v[v.len() - 1];
            next += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    std::hint::black_box((sum, touch));
    Sample {
        records: next,
        secs,
        lat: None,
    }
}

/// Raw batches with `Partition::fetch` (1 MiB per call): walks the batch
/// headers (count, order) and reads every byte once (a word sum standing in
/// for the copy to a socket a Kafka fetch handler would do).
#[inline(never)] // a frame of its own in profiles
fn lb_read_fetch(p: &Partition, expect: u64) -> Sample {
    let start = Instant::now();
    let end = p.log_end_offset();
    let (mut offset, mut count, mut bytes_seen) = (0u64, 0u64, 0u64);
    while offset < end {
        let f = p.fetch(offset, 1 << 20).expect("fetch");
        let b = &f.bytes[..];
        assert!(!b.is_empty());
        let mut pos = 0;
        while pos + 61 <= b.len() {
            let base = i64::from_be_bytes(b[pos..pos + 8].try_into().unwrap()) as u64;
            let batch_len = i32::from_be_bytes(b[pos + 8..pos + 12].try_into().unwrap()) as usize;
            let last_delta = i32::from_be_bytes(b[pos + 23..pos + 27].try_into().unwrap()) as u64;
            let n = i32::from_be_bytes(b[pos + 57..pos + 61].try_into().unwrap()) as u64;
            assert_eq!(base, offset, "batch out of order");
            count += n;
            offset = base + last_delta + 1;
            pos += batch_len + 12;
        }
        // Stand-in for handing the bytes to a socket: read every byte once.
        bytes_seen = bytes_seen.wrapping_add(word_sum(b));
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(count, expect, "fetch count");
    std::hint::black_box(bytes_seen);
    Sample {
        records: count,
        secs,
        lat: None,
    }
}

fn word_sum(b: &[u8]) -> u64 {
    let mut acc = 0u64;
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        acc = acc.wrapping_add(u64::from_ne_bytes(c.try_into().unwrap()));
    }
    for &x in chunks.remainder() {
        acc = acc.wrapping_add(u64::from(x));
    }
    acc
}

/// The same paced one-way handoff through a crossbeam channel (what a
/// thread wake-up costs on this machine, with no log in between).
fn channel_latency(records: u64, every: Duration) -> Sample {
    let epoch = Instant::now();
    let (tx, rx) = crossbeam_channel::bounded::<Vec<u8>>(1024);
    let (lats, secs) = std::thread::scope(|s| {
        let consumer = s.spawn(move || {
            let mut lats = Vec::with_capacity(records as usize);
            while let Ok(v) = rx.recv() {
                let now = epoch.elapsed().as_nanos() as u64;
                let sent = u64::from_le_bytes(v[..8].try_into().unwrap());
                lats.push(now.saturating_sub(sent));
            }
            lats
        });
        std::thread::sleep(Duration::from_millis(20));
        let mut buf = [b'z'; 100];
        let start = Instant::now();
        let mut next = Instant::now();
        for _ in 0..records {
            while Instant::now() < next {
                std::hint::spin_loop();
            }
            let sent = epoch.elapsed().as_nanos() as u64;
            buf[..8].copy_from_slice(&sent.to_le_bytes());
            tx.send(buf.to_vec()).unwrap();
            next = (next + every).max(Instant::now());
        }
        let secs = start.elapsed().as_secs_f64();
        drop(tx);
        (consumer.join().unwrap(), secs)
    });
    assert_eq!(lats.len() as u64, records);
    Sample {
        records,
        secs,
        lat: lat_of(lats),
    }
}

/// One producer sending single records paced `every` apart, one consumer
/// thread blocked in `poll`; latency = consumer's receive time minus the
/// send time embedded in the value (nanos since a shared `Instant`).
fn lb_latency(log: &Log, topic: &str, records: u64, every: Duration) -> Sample {
    let producer = log.producer(topic).unwrap();
    let epoch = Instant::now();
    let ready = Barrier::new(2);
    let stop = AtomicBool::new(false);
    let (lats, secs) = std::thread::scope(|s| {
        let consumer = s.spawn(|| {
            let mut c = log.consumer(ConsumerConfig::default().max_poll_records(10_000));
            c.assign(&[TopicPartition::new(topic, 0)]).unwrap();
            let mut lats = Vec::with_capacity(records as usize);
            let mut next = 0u64;
            ready.wait();
            while next < records && !stop.load(Ordering::Relaxed) {
                for r in c.poll(Duration::from_millis(500)).unwrap() {
                    let now = epoch.elapsed().as_nanos() as u64;
                    let v = r.value.as_deref().unwrap();
                    let sent = u64::from_le_bytes(v[..8].try_into().unwrap());
                    assert_eq!(r.offset, next, "out of order");
                    next += 1;
                    lats.push(now.saturating_sub(sent));
                }
            }
            lats
        });
        ready.wait();
        // Let the consumer reach its park.
        std::thread::sleep(Duration::from_millis(20));
        let mut buf = [b'z'; 100];
        let start = Instant::now();
        let mut next = Instant::now();
        for _ in 0..records {
            while Instant::now() < next {
                std::hint::spin_loop();
            }
            let sent = epoch.elapsed().as_nanos() as u64;
            buf[..8].copy_from_slice(&sent.to_le_bytes());
            producer
                .send(Record::new(Bytes::copy_from_slice(&buf)).partition(0))
                .unwrap();
            // Pace from the later of the schedule and now: no catch-up bursts.
            next = (next + every).max(Instant::now());
        }
        let secs = start.elapsed().as_secs_f64();
        let lats = consumer.join().unwrap();
        stop.store(true, Ordering::Relaxed);
        (lats, secs)
    });
    assert_eq!(lats.len() as u64, records, "latency: records missed");
    Sample {
        records,
        secs,
        lat: lat_of(lats),
    }
}

// ---------------------------------------------------------------- main

fn main() {
    let o = parse_args();
    let root = std::env::temp_dir().join(format!("logbus-compare-{}", std::process::id()));
    let _root = TempDir::new(&root, "");
    let n100 = o.records;
    let n1k = (o.records / 8).max(BATCH as u64);
    let nsync = o.sync_records;

    println!("logbus compare: plain write()/read() vs logbus, same process, same filesystem");
    println!("data dir   : {} — {}", root.display(), filesystem_of(&root));
    println!(
        "records    : {n100} x 100 B, {n1k} x 1 KiB, {nsync} for Durability::Always rows, \
         {} for the latency row; {} reps per row (median shown)",
        o.latency_records, o.reps
    );
    println!(
        "cpus       : {}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();

    let mut t = Table { rows: Vec::new() };
    const W100: &str = "baseline write() 100 B";
    const R100: &str = "baseline read() 100 B";
    const W1K: &str = "baseline write() 1 KiB";
    const R1K: &str = "baseline read() 1 KiB";
    const FSYNC: &str = "ceiling pwrite(104 B)+fdatasync, prealloc";

    for rep in 0..o.reps {
        eprintln!("rep {}/{} ...", rep + 1, o.reps);
        let dir = TempDir::new(&root, &format!("rep{rep}"));

        // Baselines.
        if o.want("baseline") {
            let f100 = dir.0.join("raw100.dat");
            t.add(
                W100,
                100,
                None,
                "64 KiB BufWriter, [u32 len][payload], no fsync",
                raw_write(&f100, n100, 100),
            );
            t.add(
                R100,
                100,
                None,
                "read() into 64 KiB buf, walks every record",
                raw_read(&f100, n100),
            );
            std::fs::remove_file(&f100).ok();
            let f1k = dir.0.join("raw1k.dat");
            t.add(
                W1K,
                1024,
                None,
                "64 KiB BufWriter, [u32 len][payload], no fsync",
                raw_write(&f1k, n1k, 1024),
            );
            t.add(
                R1K,
                1024,
                None,
                "read() into 64 KiB buf, walks every record",
                raw_read(&f1k, n1k),
            );
            std::fs::remove_file(&f1k).ok();
        }

        // Batched appends, then reads of what they wrote.
        for (size, n, w, r, label) in [
            (100usize, n100, W100, R100, "100 B"),
            (1024, n1k, W1K, R1K, "1 KiB"),
        ] {
            if !o.want(&format!("batch{}", if size == 100 { "100" } else { "1k" })) {
                continue;
            }
            let d = TempDir::new(&dir.0, &format!("batch{size}"));
            let log = open_log(&d.0, Durability::Os);
            log.create_topic("t", TopicConfig::new(1)).unwrap();
            let producer = log.producer("t").unwrap();
            t.add(
                &format!("logbus send_batch(1000) {label}, 1 thread"),
                size,
                Some(w),
                "Durability::Os, 1 partition",
                lb_append_batches(&producer, n, size),
            );
            t.add(
                &format!("logbus read {label} via Consumer::poll"),
                size,
                Some(r),
                "max_poll_records 10000, checks offsets, touches each value",
                lb_read_consumer(&log, "t", n),
            );
            let p = log.topic("t").unwrap().partition(0).unwrap().clone();
            t.add(
                &format!("logbus read {label} via FetchedBatches::records"),
                size,
                Some(r),
                "borrowed records, checks offsets, touches each value",
                lb_read_views(&p, n),
            );
            t.add(
                &format!("logbus read {label} via Partition::fetch"),
                size,
                Some(r),
                "zero-copy 1 MiB fetches; walks batch headers + sums every byte",
                lb_read_fetch(&p, n),
            );
            log.close().unwrap();
        }

        // Single sends.
        if o.want("single") {
            let d = TempDir::new(&dir.0, "single1");
            let log = open_log(&d.0, Durability::Os);
            log.create_topic("t", TopicConfig::new(1)).unwrap();
            let producer = log.producer("t").unwrap();
            t.add(
                "logbus send() 100 B, 1 thread",
                100,
                Some(W100),
                "p50/p99 = send() call time (1 in 16 sampled)",
                lb_single_sends(&producer, n100, 1, |_| Some(0), true),
            );
            log.close().unwrap();
        }
        if o.want("single") {
            let d = TempDir::new(&dir.0, "single4");
            let log = open_log(&d.0, Durability::Os);
            log.create_topic("t", TopicConfig::new(4)).unwrap();
            let producer = log.producer("t").unwrap();
            t.add(
                "logbus send() 100 B, 4 threads, own partition",
                100,
                Some(W100),
                "4 partitions, thread i -> partition i; p50/p99 = send() time, 1/16 sampled",
                lb_single_sends(&producer, n100, 4, |i| Some(i as u32), true),
            );
            log.close().unwrap();
        }
        if o.want("single") {
            let d = TempDir::new(&dir.0, "single4k");
            let log = open_log(&d.0, Durability::Os);
            log.create_topic("t", TopicConfig::new(4)).unwrap();
            let producer = log.producer("t").unwrap();
            t.add(
                "logbus send() 100 B, 4 threads, keyless",
                100,
                Some(W100),
                "one shared Producer, 4 partitions, sticky keyless partitioner",
                lb_single_sends(&producer, n100, 4, |_| None, true),
            );
            log.close().unwrap();
        }

        // Produce -> consume latency.
        let every = Duration::from_micros(o.latency_every_us);
        if o.want("latency") {
            t.add(
                "ceiling crossbeam channel latency 100 B",
                100,
                None,
                &format!(
                    "same pacing ({} us); Vec<u8> through bounded(1024), blocking recv",
                    o.latency_every_us
                ),
                channel_latency(o.latency_records, every),
            );
        }
        if o.want("latency") {
            let d = TempDir::new(&dir.0, "latency");
            let log = open_log(&d.0, Durability::Os);
            log.create_topic("t", TopicConfig::new(1)).unwrap();
            t.add(
                "logbus produce->consume latency 100 B",
                100,
                None,
                &format!(
                    "1 producer, one send() every {} us; 1 consumer blocked in poll",
                    o.latency_every_us
                ),
                lb_latency(&log, "t", o.latency_records, every),
            );
            log.close().unwrap();
        }

        // Durability::Always and its ceiling.
        if o.want("sync") {
            let f = dir.0.join("fsync.dat");
            t.add(
                FSYNC,
                100,
                None,
                "1 thread, preallocated+synced file; p50/p99 = pwrite+fdatasync",
                raw_fsync_prealloc(&f, nsync),
            );
            std::fs::remove_file(&f).ok();
            t.add(
                "ceiling write(104 B)+fdatasync, file grows",
                100,
                Some(FSYNC),
                "1 thread, appending; p50/p99 = write+fdatasync",
                raw_fsync(&f, nsync, 1),
            );
            std::fs::remove_file(&f).ok();
            t.add(
                "ceiling write(4x104 B)+fdatasync, file grows",
                100,
                Some(FSYNC),
                "ideal group commit of 4; p50/p99 per group",
                raw_fsync(&f, nsync, 4),
            );
            std::fs::remove_file(&f).ok();
        }
        for threads in [1usize, 4] {
            if !o.want("sync") {
                continue;
            }
            let d = TempDir::new(&dir.0, &format!("always{threads}"));
            let log = open_log(&d.0, Durability::Always);
            log.create_topic("t", TopicConfig::new(1)).unwrap();
            let producer = log.producer("t").unwrap();
            t.add(
                &format!(
                    "logbus send() Always 100 B, {threads} thread{}",
                    if threads > 1 { "s" } else { "" }
                ),
                100,
                Some(FSYNC),
                "1 partition (group commit); p50/p99 = send() call time",
                lb_single_sends(&producer, nsync, threads, |_| Some(0), true),
            );
            log.close().unwrap();
        }
    }

    print_table(&t, &[FSYNC]);
    if let Some(path) = &o.json {
        std::fs::write(path, to_json(&t, &[FSYNC])).expect("write json");
        println!("\nwrote {}", path.display());
    }
}

struct Summary {
    rate: f64,
    mbs: f64,
    ratio: Option<f64>,
    ratio_is_ceiling: bool,
    p50: Option<f64>,
    p99: Option<f64>,
}

fn summarize(t: &Table, r: &Row, ceilings: &[&str]) -> Summary {
    let rate = median(r.samples.iter().map(Sample::rate).collect());
    let lat = |f: fn((f64, f64)) -> f64| {
        let v: Vec<f64> = r.samples.iter().filter_map(|s| s.lat.map(f)).collect();
        (!v.is_empty()).then(|| median(v))
    };
    Summary {
        rate,
        mbs: rate * r.payload as f64 / 1e6,
        ratio: r.reference.and_then(|b| t.median_rate(b)).map(|b| rate / b),
        ratio_is_ceiling: r.reference.is_some_and(|b| ceilings.contains(&b)),
        p50: lat(|l| l.0),
        p99: lat(|l| l.1),
    }
}

fn print_table(t: &Table, ceilings: &[&str]) {
    let opt =
        |v: Option<f64>, prec: usize| v.map_or_else(|| "-".to_string(), |v| format!("{v:.prec$}"));
    println!(
        "{:<48} {:>12} {:>9} {:>11} {:>9} {:>9}  note",
        "workload", "records/s", "MB/s", "x baseline", "p50 us", "p99 us"
    );
    for r in &t.rows {
        let s = summarize(t, r, ceilings);
        let ratio = match s.ratio {
            Some(x) if s.ratio_is_ceiling => format!("{x:.2}*"),
            Some(x) => format!("{x:.2}"),
            None if r.reference.is_none() && r.name.starts_with("baseline") => "1.00".into(),
            None => "-".into(),
        };
        println!(
            "{:<48} {:>12.0} {:>9.1} {:>11} {:>9} {:>9}  {}",
            r.name,
            s.rate,
            s.mbs,
            ratio,
            opt(s.p50, 1),
            opt(s.p99, 1),
            r.note
        );
    }
    println!(
        "\nx baseline: records/s over the baseline write()/read() row of the same record size; \
         * = over the write+fdatasync ceiling instead. MB/s = payload bytes / 1e6."
    );
}

fn to_json(t: &Table, ceilings: &[&str]) -> String {
    let num = |v: Option<f64>| match v {
        Some(x) if x.is_finite() => format!("{x:.3}"),
        _ => "null".into(),
    };
    let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let mut out = String::from("[\n");
    for (i, r) in t.rows.iter().enumerate() {
        let s = summarize(t, r, ceilings);
        let reps: Vec<String> = r
            .samples
            .iter()
            .map(|x| format!("{:.1}", x.rate()))
            .collect();
        let _ = writeln!(
            out,
            "  {{\"workload\": \"{}\", \"payload_bytes\": {}, \"records_per_s\": {:.1}, \"mb_per_s\": {:.3}, \
             \"x_baseline\": {}, \"reference\": {}, \"p50_us\": {}, \"p99_us\": {}, \"reps_records_per_s\": [{}], \"note\": \"{}\"}}{}",
            esc(&r.name),
            r.payload,
            s.rate,
            s.mbs,
            num(s.ratio),
            r.reference
                .map_or("null".into(), |b| format!("\"{}\"", esc(b))),
            num(s.p50),
            num(s.p99),
            reps.join(", "),
            esc(&r.note),
            if i + 1 < t.rows.len() { "," } else { "" }
        );
    }
    out.push_str("]\n");
    out
}
