//! logbus side by side with what a user would use instead, in one process
//! run on one filesystem: plain `write()`/`read()` (the baseline every ratio
//! is taken against), a pre-sized memory map, crossbeam-channel (the
//! in-memory ceiling), SQLite (WAL) and the `commitlog` crate.
//!
//! ```text
//! cargo run --release -p logbus-bench --bin compare -- [--help]
//! ```
//!
//! Every workload runs `--reps` times (default 3), interleaved (rep 1 of
//! every workload, then rep 2, ...), and each row reports the median of its
//! reps (records/s, p50 and p99 are medians taken separately). Ratios are
//! taken between medians of the same run.

mod alloc;
mod alternatives;
mod big;
mod lb;
mod raw;
mod table;
mod util;

use std::path::{Path, PathBuf};
use std::time::Duration;

use logbus::{Durability, TopicConfig};

use crate::lb::{BATCH, open_log};
use crate::table::{RowSpec, Sample, Section, Table};
use crate::util::{TempDir, label};

#[global_allocator]
static GLOBAL: alloc::Counting = alloc::Counting;

// ---------------------------------------------------------------- options

struct Opts {
    records: u64,
    sync_records: u64,
    latency_records: u64,
    latency_every_us: u64,
    reps: usize,
    json: Option<PathBuf>,
    only: Option<String>,
    dir: PathBuf,
    open_gib: Vec<u64>,
    rss_gib: u64,
}

impl Opts {
    fn want(&self, group: &str) -> bool {
        self.only
            .as_deref()
            .is_none_or(|only| only.split(',').any(|g| g == group))
    }
}

const HELP: &str = "\
compare: logbus vs write()/read(), mmap, crossbeam-channel, SQLite, commitlog

  --records N          100 B records per append/read row (default 2000000; 1 KiB rows use N/8)
  --sync-records S     records per Durability::Always row (default 5000)
  --latency-records L  records in the produce->consume rows (default 50000)
  --latency-every-us U one send every U us in the latency rows (default 20)
  --reps R             repetitions, median shown (default 3)
  --only GROUPS        comma-separated workload groups (default: all); see below
  --open-gib A,B       log sizes for the open-time rows (default 1)
  --big                same as --open-gib 1,10 (needs ~11 GB free)
  --rss-gib G          log size for the memory rows (default 2)
  --dir PATH           where data goes (default: the temp dir); deleted afterwards
  --json PATH          also write the table as JSON

groups:";

fn parse_args() -> Opts {
    let mut o = Opts {
        records: 2_000_000,
        sync_records: 5000,
        latency_records: 50_000,
        latency_every_us: 20,
        reps: 3,
        json: None,
        only: None,
        dir: std::env::temp_dir(),
        open_gib: vec![1],
        rss_gib: 2,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || {
            args.next().unwrap_or_else(|| {
                eprintln!("{a} needs a value");
                std::process::exit(2)
            })
        };
        let num = |s: &str| -> u64 {
            s.replace('_', "").parse().unwrap_or_else(|_| {
                eprintln!("bad number {s:?}");
                std::process::exit(2)
            })
        };
        match a.as_str() {
            "--records" => o.records = num(&val()),
            "--sync-records" => o.sync_records = num(&val()),
            "--latency-records" => o.latency_records = num(&val()),
            "--latency-every-us" => o.latency_every_us = num(&val()),
            "--reps" => o.reps = num(&val()).max(1) as usize,
            "--json" => o.json = Some(PathBuf::from(val())),
            "--only" => o.only = Some(val()),
            "--dir" => o.dir = PathBuf::from(val()),
            "--open-gib" => o.open_gib = val().split(',').map(num).collect(),
            "--big" => o.open_gib = vec![1, 10],
            "--rss-gib" => o.rss_gib = num(&val()).max(1),
            "-h" | "--help" => {
                println!("{HELP}");
                for w in WORKLOADS {
                    println!("  {:<10} {}", w.group, w.what);
                }
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

// ---------------------------------------------------------------- workloads

/// What one workload sees: the options and this repetition's directory.
struct Ctx<'a> {
    o: &'a Opts,
    rep: usize,
    dir: &'a Path,
    n100: u64,
    n1k: u64,
}

impl Ctx<'_> {
    fn n(&self, size: usize) -> u64 {
        if size == 100 { self.n100 } else { self.n1k }
    }
}

struct Workload {
    group: &'static str,
    what: &'static str,
    run: fn(&Ctx<'_>, &mut Table),
}

/// Every workload, in the order they run within a repetition.
///
/// A new workload is one entry here plus its function; rows name their
/// section, so the table places them.
const WORKLOADS: &[Workload] = &[
    Workload {
        group: "baseline",
        what: "write() through a 64 KiB buffer, read() back: the baseline",
        run: baseline,
    },
    Workload {
        group: "mmap",
        what: "pre-sized (sparse) shared memory map: copy in, walk back",
        run: mmap,
    },
    Workload {
        group: "channel",
        what: "crossbeam-channel bounded(1024), 1 -> 1 thread: in-memory ceiling",
        run: channel,
    },
    Workload {
        group: "sqlite",
        what: "SQLite (rusqlite, bundled), WAL, synchronous=NORMAL, 10k-row txns",
        run: sqlite,
    },
    Workload {
        group: "commitlog",
        what: "the commitlog crate 0.2, batches of <= 1000 records / 512 KiB",
        run: commitlog,
    },
    Workload {
        group: "batch100",
        what: "logbus send_batch(1000) 100 B, read back 3 ways",
        run: |c, t| logbus_batch(c, t, 100),
    },
    Workload {
        group: "batch1k",
        what: "logbus send_batch(1000) 1 KiB, read back 3 ways",
        run: |c, t| logbus_batch(c, t, 1024),
    },
    Workload {
        group: "single",
        what: "logbus send() 100 B from 1 and 4 threads, 1 KiB from 1",
        run: single,
    },
    Workload {
        group: "latency",
        what: "produce -> consume latency, consumer blocked in poll; crossbeam reference",
        run: latency,
    },
    Workload {
        group: "group4",
        what: "ConsumerGroup of 4 member threads vs one Consumer, 8 partitions",
        run: group4,
    },
    Workload {
        group: "queue4",
        what: "WorkQueue with 4 worker threads, each record acked on its own",
        run: queue4,
    },
    Workload {
        group: "sync",
        what: "Durability::Always from 1 and 4 threads vs write+fdatasync group commit",
        run: sync,
    },
    Workload {
        group: "open",
        what: "open time after clean close / crash, --open-gib sizes (first rep only)",
        run: open,
    },
    Workload {
        group: "rss",
        what: "RssAnon of a fresh process reading --rss-gib GiB (first rep only)",
        run: rss,
    },
];

const W100: &str = "baseline write() 100 B";
const R100: &str = "baseline read() 100 B";
const W1K: &str = "baseline write() 1 KiB";
const R1K: &str = "baseline read() 1 KiB";

fn refs(size: usize) -> (&'static str, &'static str) {
    if size == 100 {
        (W100, R100)
    } else {
        (W1K, R1K)
    }
}

fn sections(size: usize) -> (Section, Section) {
    if size == 100 {
        (Section::Append100, Section::Read100)
    } else {
        (Section::Append1k, Section::Read1k)
    }
}

fn row<'a>(
    section: Section,
    name: &'a str,
    payload: usize,
    reference: Option<&'a str>,
    note: &'a str,
) -> RowSpec<'a> {
    RowSpec {
        section,
        name,
        payload,
        reference,
        note,
    }
}

fn baseline(c: &Ctx<'_>, t: &mut Table) {
    for size in [100, 1024] {
        let (w, r) = refs(size);
        let (sa, sr) = sections(size);
        let f = c.dir.join("raw.dat");
        let note = "64 KiB BufWriter, [u32 len][payload], no fsync";
        t.add(
            row(sa, w, size, None, note),
            raw::write(&f, c.n(size), size),
        );
        let note = "read() into a 64 KiB buffer, walks every record";
        t.add(row(sr, r, size, None, note), raw::read(&f, c.n(size)));
        std::fs::remove_file(&f).ok();
    }
}

fn mmap(c: &Ctx<'_>, t: &mut Table) {
    for size in [100, 1024] {
        let (w, r) = refs(size);
        let (sa, sr) = sections(size);
        let l = label(size);
        let f = c.dir.join("mmap.dat");
        let note = "set_len + MmapMut, [u32 len][payload] copied in, no msync (first touch faults)";
        t.add(
            row(sa, &format!("mmap pre-sized, {l}"), size, Some(w), note),
            raw::mmap_append(&f, c.n(size), size),
        );
        let note = "read-only map, walks every record";
        t.add(
            row(sr, &format!("mmap read, {l}"), size, Some(r), note),
            raw::mmap_read(&f, c.n(size)),
        );
        std::fs::remove_file(&f).ok();
    }
}

fn channel(c: &Ctx<'_>, t: &mut Table) {
    for size in [100, 1024] {
        let (w, _) = refs(size);
        let (sa, _) = sections(size);
        let l = label(size);
        let note = "Vec<u8> copy per record, receiver touches it; nothing persisted";
        t.add(
            row(
                sa,
                &format!("crossbeam-channel 1->1, {l}"),
                size,
                Some(w),
                note,
            ),
            raw::channel_throughput(c.n(size), size),
        );
    }
}

fn sqlite(c: &Ctx<'_>, t: &mut Table) {
    for size in [100, 1024] {
        let (w, r) = refs(size);
        let (sa, sr) = sections(size);
        let l = label(size);
        let d = TempDir::new(c.dir, "sqlite");
        let f = d.path().join("log.db");
        let note = "INSERT, 10k-row txns, WAL, synchronous=NORMAL (fsync at checkpoints only)";
        t.add(
            row(sa, &format!("SQLite, {l}"), size, Some(w), note),
            alternatives::sqlite_append(&f, c.n(size), size),
        );
        let note = "SELECT ... ORDER BY offset, borrowed blobs";
        t.add(
            row(sr, &format!("SQLite read, {l}"), size, Some(r), note),
            alternatives::sqlite_read(&f, c.n(size)),
        );
    }
}

fn commitlog(c: &Ctx<'_>, t: &mut Table) {
    for size in [100, 1024] {
        let (w, r) = refs(size);
        let (sa, sr) = sections(size);
        let l = label(size);
        let d = TempDir::new(c.dir, "commitlog");
        let note = "defaults; one write() per batch, never fsyncs";
        t.add(
            row(sa, &format!("commitlog 0.2, {l}"), size, Some(w), note),
            alternatives::commitlog_append(d.path(), c.n(size), size),
        );
        let note = "read(offset, 1 MiB), copies into a MessageBuf";
        t.add(
            row(sr, &format!("commitlog read, {l}"), size, Some(r), note),
            alternatives::commitlog_read(d.path(), c.n(size)),
        );
    }
}

fn logbus_batch(c: &Ctx<'_>, t: &mut Table, size: usize) {
    let (w, r) = refs(size);
    let (sa, sr) = sections(size);
    let l = label(size);
    let n = c.n(size);
    let d = TempDir::new(c.dir, &format!("batch{size}"));
    let log = lb::one_partition_log(d.path(), Durability::Os);
    let producer = log.producer("t").unwrap();
    t.add(
        row(
            sa,
            &format!("logbus send_batch(1000), {l}"),
            size,
            Some(w),
            "Durability::Os, 1 partition",
        ),
        lb::append_batches(&producer, n, size),
    );
    {
        let d = TempDir::new(c.dir, &format!("builder{size}"));
        let log = lb::one_partition_log(d.path(), Durability::Os);
        let producer = log.producer("t").unwrap();
        t.add(
            row(
                sa,
                &format!("logbus BatchBuilder, {l}"),
                size,
                Some(w),
                "push_value x 1000, send(); Durability::Os, 1 partition",
            ),
            lb::append_builder(&producer, n, size),
        );
        log.close().unwrap();
    }
    let p = log.topic("t").unwrap().partition(0).unwrap().clone();
    // Untimed: the first reader of the just-written log maps its pages (a
    // minor fault per 4 KiB page: half the 100 B poll row's time in a run
    // of 22:22); the rows below all read the mapped, warm segment, as a
    // process that has been running does, and as the baseline read()s a
    // warm page cache.
    std::hint::black_box(lb::read_fetch(&p, n));
    // Each in-order reader with its allocations per record (counted on the
    // reading thread), reported in the memory section after the table's
    // read rows.
    type Read<'a> = &'a dyn Fn() -> Sample;
    let readers: [(&str, &str, &str, Read<'_>); 4] = [
        (
            "Consumer::poll",
            "Consumer::poll",
            "borrowed records (for r in &records), max_poll_records 10000",
            &|| lb::read_consumer(&log, "t", n),
        ),
        (
            "Consumer::poll, owned records (into_iter)",
            "Consumer::poll owned (into_iter)",
            "for r in records: ConsumerRecord, max_poll_records 10000",
            &|| lb::read_consumer_owned(&log, "t", n),
        ),
        (
            "Consumer::poll_each",
            "Consumer::poll_each",
            "borrowed records, max_poll_records 10000",
            &|| lb::read_consumer_each(&log, "t", n),
        ),
        (
            "FetchedBatches::records",
            "FetchedBatches",
            "borrowed records, 1 MiB fetches",
            &|| lb::read_views(&p, n),
        ),
    ];
    let mut allocs = Vec::new();
    for (name, short, note, read) in readers {
        let a0 = alloc::count();
        let s = read();
        allocs.push((short, (alloc::count() - a0) as f64 / n as f64));
        t.add(
            row(sr, &format!("logbus {name}, {l}"), size, Some(r), note),
            s,
        );
    }
    t.add(
        row(
            sr,
            &format!("logbus Partition::fetch, {l}"),
            size,
            Some(r),
            "stored batches, zero-copy; reads every byte",
        ),
        lb::read_fetch(&p, n),
    );
    log.close().unwrap();
    for (short, per_record) in allocs {
        t.add(
            row(
                Section::Memory,
                &format!("allocations per record, {short}, {l}"),
                size,
                None,
                "value = heap allocations / records, reading thread",
            ),
            Sample::value(per_record),
        );
    }
}

fn single(c: &Ctx<'_>, t: &mut Table) {
    let cases: [(&str, usize, u32, usize, &str); 4] = [
        (
            "logbus send(), 1 thread, 100 B",
            100,
            1,
            1,
            "p50/p99 = send() call time, 1 in 16 sampled",
        ),
        (
            "logbus send(), 4 threads, own partition, 100 B",
            100,
            4,
            4,
            "thread i -> partition i; p50/p99 = send() time",
        ),
        (
            "logbus send(), 4 threads, keyless, 100 B",
            100,
            4,
            4,
            "one shared Producer, sticky keyless partitioner",
        ),
        (
            "logbus send(), 1 thread, 1 KiB",
            1024,
            1,
            1,
            "p50/p99 = send() call time, 1 in 16 sampled",
        ),
    ];
    for (i, (name, size, partitions, threads, note)) in cases.into_iter().enumerate() {
        let d = TempDir::new(c.dir, "single");
        let log = open_log(d.path(), Durability::Os);
        log.create_topic("t", TopicConfig::new(partitions)).unwrap();
        let producer = log.producer("t").unwrap();
        let n = c.n(size);
        let s = match i {
            1 => lb::single_sends(&producer, n, size, threads, |i| Some(i as u32), true),
            2 => lb::single_sends(&producer, n, size, threads, |_| None, true),
            _ => lb::single_sends(&producer, n, size, threads, |_| Some(0), true),
        };
        let reference = if size == 100 { W100 } else { W1K };
        t.add(row(Section::Single, name, size, Some(reference), note), s);
        log.close().unwrap();
    }
}

fn latency(c: &Ctx<'_>, t: &mut Table) {
    util::settle();
    let every = Duration::from_micros(c.o.latency_every_us);
    let note = format!(
        "one send every {} us; blocking recv (spins, then parks)",
        c.o.latency_every_us
    );
    t.add(
        row(
            Section::Latency,
            "crossbeam-channel one-way latency",
            100,
            None,
            &note,
        ),
        raw::channel_latency(c.o.latency_records, every),
    );
    let d = TempDir::new(c.dir, "latency");
    let log = lb::one_partition_log(d.path(), Durability::Os);
    let note = format!(
        "one send() every {} us; consumer blocked in poll",
        c.o.latency_every_us
    );
    t.add(
        row(
            Section::Latency,
            "logbus produce->consume latency",
            100,
            None,
            &note,
        ),
        lb::latency(&log, "t", c.o.latency_records, every),
    );
    log.close().unwrap();
}

const GROUP_PARTITIONS: u32 = 8;
const ONE_CONSUMER: &str = "logbus one Consumer, 8 partitions";

fn group4(c: &Ctx<'_>, t: &mut Table) {
    let d = TempDir::new(c.dir, "group");
    let log = open_log(d.path(), Durability::Os);
    log.create_topic("g", TopicConfig::new(GROUP_PARTITIONS))
        .unwrap();
    let per = c.n100 / u64::from(GROUP_PARTITIONS);
    let total = per * u64::from(GROUP_PARTITIONS);
    lb::fill_partitions(&log, "g", GROUP_PARTITIONS, per);
    let sg = Section::Group;
    t.add(
        row(
            sg,
            ONE_CONSUMER,
            100,
            Some(R100),
            "Consumer::poll, default config, all 8 partitions assigned",
        ),
        lb::read_all_partitions(&log, "g", GROUP_PARTITIONS, total),
    );
    t.add(
        row(
            sg,
            "logbus ConsumerGroup of 4, 8 partitions",
            100,
            Some(ONE_CONSUMER),
            "4 member threads, 2 partitions each; x ref = over one Consumer",
        ),
        lb::read_group(
            &log,
            "g",
            &format!("bench-{}", c.rep),
            GROUP_PARTITIONS,
            total,
            4,
            false,
        ),
    );
    t.add(
        row(
            sg,
            "logbus ConsumerGroup of 4, poll_each",
            100,
            Some(ONE_CONSUMER),
            "as above, borrowed records; x ref = over one Consumer (poll)",
        ),
        lb::read_group(
            &log,
            "g",
            &format!("bench-each-{}", c.rep),
            GROUP_PARTITIONS,
            total,
            4,
            true,
        ),
    );
    log.close().unwrap();
}

fn queue4(c: &Ctx<'_>, t: &mut Table) {
    let d = TempDir::new(c.dir, "queue");
    let log = open_log(d.path(), Durability::Os);
    log.create_topic("q", TopicConfig::new(GROUP_PARTITIONS))
        .unwrap();
    let per = c.n100 / u64::from(GROUP_PARTITIONS);
    let total = per * u64::from(GROUP_PARTITIONS);
    lb::fill_partitions(&log, "q", GROUP_PARTITIONS, per);
    let sg = Section::Group;
    t.add(
        row(
            sg,
            "logbus one Consumer, 8 partitions (queue topic)",
            100,
            Some(R100),
            "Consumer::poll, default config, all 8 partitions assigned",
        ),
        lb::read_all_partitions(&log, "q", GROUP_PARTITIONS, total),
    );
    t.add(
        row(
            sg,
            "logbus WorkQueue, 4 workers, ack per record",
            100,
            Some("logbus one Consumer, 8 partitions (queue topic)"),
            "leases, one ack() call per record; x ref = over one Consumer",
        ),
        lb::read_work_queue(&log, "q", &format!("bench-q-{}", c.rep), total, 4),
    );
    log.close().unwrap();
}

const FS1: &str = "write(104 B)+fdatasync, file grows";
const FS4: &str = "write(4 x 104 B)+fdatasync, file grows";
const FS1000: &str = "write(1000 x 104 B)+fdatasync, file grows";

fn sync(c: &Ctx<'_>, t: &mut Table) {
    let n = c.o.sync_records;
    let nb = (n * 20).max(BATCH as u64 * 10);
    let f = c.dir.join("fsync.dat");
    let sd = Section::Durable;
    t.add(
        row(
            sd,
            "pwrite(104 B)+fdatasync, preallocated",
            100,
            None,
            "cheapest durable append: no size change; p50/p99 per sync",
        ),
        raw::fsync_prealloc(&f, n),
    );
    std::fs::remove_file(&f).ok();
    for (name, group, records) in [(FS1, 1, n), (FS4, 4, n), (FS1000, BATCH, nb)] {
        t.add(
            row(
                sd,
                name,
                100,
                None,
                "group-commit ceiling; p50/p99 per group",
            ),
            raw::fsync_groups(&f, records, group),
        );
        std::fs::remove_file(&f).ok();
    }
    for (threads, reference) in [(1usize, FS1), (4, FS4)] {
        let d = TempDir::new(c.dir, "always");
        let log = lb::one_partition_log(d.path(), Durability::Always);
        let producer = log.producer("t").unwrap();
        let name = format!(
            "logbus send() Always, {threads} thread{}",
            if threads > 1 { "s" } else { "" }
        );
        let note =
            format!("1 partition, group commit; x ref = over '{reference}'; p50/p99 = send()");
        t.add(
            row(sd, &name, 100, Some(reference), &note),
            lb::single_sends(&producer, n, 100, threads, |_| Some(0), true),
        );
        log.close().unwrap();
    }
    let note = format!("1 thread; x ref = over '{FS1000}'");
    for builder in [false, true] {
        let d = TempDir::new(c.dir, "always");
        let log = lb::one_partition_log(d.path(), Durability::Always);
        let producer = log.producer("t").unwrap();
        let (name, sample) = if builder {
            (
                "logbus BatchBuilder(1000) Always, 1 thread",
                lb::append_builder(&producer, nb, 100),
            )
        } else {
            (
                "logbus send_batch(1000) Always, 1 thread",
                lb::append_batches(&producer, nb, 100),
            )
        };
        t.add(row(sd, name, 100, Some(FS1000), &note), sample);
        log.close().unwrap();
    }
}

fn open(c: &Ctx<'_>, t: &mut Table) {
    if c.rep > 0 {
        return;
    }
    for &gib in &c.o.open_gib {
        let [clean_warm, clean_cold, crash_warm, crash_cold, reboot_cold] =
            big::open_times(c.dir, gib, c.o.reps);
        let so = Section::Open;
        let kinds = [
            ("clean close, page cache warm", clean_warm),
            ("clean close, page cache cold", clean_cold),
            ("SIGKILL, page cache warm", crash_warm),
            ("SIGKILL, page cache cold", crash_cold),
            ("SIGKILL + new boot id, cache cold", reboot_cold),
        ];
        for (what, samples) in kinds {
            let name = format!("logbus open {gib} GiB after {what}");
            for ms in samples {
                t.add(
                    row(
                        so,
                        &name,
                        1024,
                        None,
                        "1 partition, 128 MiB segments, 1 KiB records",
                    ),
                    Sample::value(ms),
                );
            }
        }
    }
}

fn rss(c: &Ctx<'_>, t: &mut Table) {
    if c.rep > 0 {
        return;
    }
    let gib = c.o.rss_gib;
    for r in big::rss(c.dir, gib) {
        let name = match r.mode {
            "poll" => format!("logbus read {gib} GiB, Consumer::poll (default config)"),
            _ => format!("logbus read {gib} GiB, FetchedBatches::records"),
        };
        let note = format!("fresh process; RssAnon {:.1} MiB before open", r.before_mib);
        let mut s = r.read;
        s.value = Some(r.peak_mib);
        t.add(row(Section::Memory, &name, 1024, None, &note), s);
    }
}

// ---------------------------------------------------------------- main

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        big::child_main(&args[1..]);
    }
    let o = parse_args();
    let root = TempDir::new(&o.dir, &format!("logbus-compare-{}", std::process::id()));
    let n100 = o.records;
    let n1k = (o.records / 8).max(BATCH as u64);

    let header = [
        ("machine", util::machine()),
        ("filesystem", util::filesystem_of(root.path())),
        (
            "records",
            format!(
                "{n100} x 100 B, {n1k} x 1 KiB; {} per Always row; {} latency records; {} reps (median shown)",
                o.sync_records, o.latency_records, o.reps
            ),
        ),
    ];
    println!("logbus compare: every system on the same filesystem, in one process run");
    for (k, v) in &header {
        println!("{k:<11}: {v}");
    }
    println!();

    let mut t = Table::default();
    for rep in 0..o.reps {
        let dir = TempDir::new(root.path(), &format!("rep{rep}"));
        let c = Ctx {
            o: &o,
            rep,
            dir: dir.path(),
            n100,
            n1k,
        };
        for w in WORKLOADS.iter().filter(|w| o.want(w.group)) {
            eprintln!("rep {}/{}: {}", rep + 1, o.reps, w.group);
            (w.run)(&c, &mut t);
        }
    }

    table::print(&t);
    if let Some(path) = &o.json {
        std::fs::write(path, table::to_json(&t, &header)).expect("write json");
        println!("\nwrote {}", path.display());
    }
}
