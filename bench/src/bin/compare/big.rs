//! Workloads on logs of gigabytes: open time after a clean close and after
//! a crash, and anonymous memory while reading. Crashes and memory
//! readings happen in child processes (this binary run with `--child`),
//! so a crash is a real SIGKILL and RssAnon starts from a fresh process.

use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use logbus::{ConsumerConfig, Durability, Log, Record, TopicConfig, TopicPartition};

use crate::lb::{BATCH, open_log};
use crate::table::Sample;
use crate::util::payload;

const GIB: u64 = 1 << 30;
/// Records in the big logs are 1 KiB: 1 GiB = 1 Mi records.
const SIZE: usize = 1024;

/// Appends `bytes` of 1 KiB records (batches of 1000) to topic "t".
fn fill(log: &Log, bytes: u64) -> u64 {
    let value = bytes::Bytes::from_static(payload(SIZE));
    let batch: Vec<Record> = (0..BATCH)
        .map(|_| Record::new(value.clone()).partition(0))
        .collect();
    let records = bytes / SIZE as u64;
    let producer = log.producer("t").expect("producer");
    let mut left = records;
    while left > 0 {
        let n = left.min(BATCH as u64) as usize;
        producer.send_batch(&batch[..n]).expect("send_batch");
        left -= n as u64;
    }
    records
}

// ---------------------------------------------------------------- children

/// Entry point of `compare --child KIND ARGS...`.
pub fn child_main(args: &[String]) -> ! {
    match args.first().map(String::as_str) {
        // write-crash DIR BYTES: create topic "t", append BYTES, SIGKILL self.
        Some("write-crash") => {
            let dir = Path::new(&args[1]);
            let bytes: u64 = args[2].parse().expect("bytes");
            let log = open_log(dir, Durability::Os);
            if log.topic("t").is_err() {
                log.create_topic("t", TopicConfig::new(1))
                    .expect("create topic");
            }
            fill(&log, bytes);
            kill_self();
        }
        // read-rss DIR EXPECT MODE: read everything, print RssAnon figures.
        Some("read-rss") => {
            let dir = Path::new(&args[1]);
            let expect: u64 = args[2].parse().expect("records");
            let mode = args[3].as_str();
            let before = crate::util::rss_anon_kib();
            let log = open_log(dir, Durability::Os);
            let opened = crate::util::rss_anon_kib();
            let mut peak = opened;
            let start = Instant::now();
            let mut next = 0u64;
            if mode == "poll" {
                let mut c = log.consumer(ConsumerConfig::default());
                c.assign(&[TopicPartition::new("t", 0)]).expect("assign");
                while next < expect {
                    let recs = c.poll(Duration::from_millis(500)).expect("poll");
                    assert!(!recs.is_empty(), "poll returned nothing at {next}");
                    for r in &recs {
                        assert_eq!(r.offset, next);
                        next += 1;
                    }
                    peak = peak.max(crate::util::rss_anon_kib());
                }
            } else {
                let topic = log.topic("t").expect("topic");
                let p = topic.partition(0).expect("partition");
                while next < expect {
                    let f = p.fetch(next, 1 << 20).expect("fetch");
                    for r in f.records() {
                        assert_eq!(r.expect("record").offset, next);
                        next += 1;
                    }
                    peak = peak.max(crate::util::rss_anon_kib());
                }
            }
            let secs = start.elapsed().as_secs_f64();
            println!("rss {before} {opened} {peak} {next} {secs}");
            log.close().expect("close");
            std::process::exit(0)
        }
        other => {
            eprintln!("unknown child {other:?}");
            std::process::exit(2)
        }
    }
}

fn kill_self() -> ! {
    // SAFETY: kill(2) and getpid(2) take no pointers; SIGKILL ends the
    // process here, as a crash would.
    #[expect(unsafe_code, reason = "kill(2) has no safe wrapper in std")]
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    unreachable!("SIGKILL returned")
}

fn run_child(args: &[&str]) -> String {
    let exe = std::env::current_exe().expect("current_exe");
    let out = Command::new(exe)
        .arg("--child")
        .args(args)
        .output()
        .expect("spawn child");
    // A crash child must end by its own SIGKILL, after writing everything;
    // any other end (a panic) would leave a log that is not what the row says.
    use std::os::unix::process::ExitStatusExt as _;
    let expected = if args[0] == "write-crash" {
        out.status.signal() == Some(libc::SIGKILL)
    } else {
        out.status.success()
    };
    if !expected {
        panic!(
            "child {args:?} ended with {:?}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Writes back and drops every file of `dir` from the page cache
/// (`fdatasync` + `POSIX_FADV_DONTNEED`), so the next open reads from disk.
/// Other processes' cached files are untouched (no drop_caches).
fn evict(dir: &Path) {
    for entry in walk(dir) {
        let Ok(f) = std::fs::File::open(&entry) else {
            continue;
        };
        let _ = f.sync_data();
        use std::os::fd::AsRawFd as _;
        // SAFETY: a valid open descriptor; fadvise is advice only.
        #[expect(unsafe_code, reason = "posix_fadvise has no safe wrapper in std")]
        unsafe {
            libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
        }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Makes the next open see a different boot (a power loss, not a process
/// crash): logbus then re-verifies what an unsynced write could have lost.
fn fake_reboot(dir: &Path) {
    let f = dir.join(".boot_id");
    let _ = std::fs::File::create(&f)
        .and_then(|f| f.write_all_at(b"00000000-0000-0000-0000-000000000000\n", 0));
}

fn time_open(dir: &Path) -> (f64, Log) {
    let t = Instant::now();
    let log = open_log(dir, Durability::Os);
    let ms = t.elapsed().as_secs_f64() * 1e3;
    (ms, log)
}

/// Open-time samples (ms) for a log of `gib` GiB, `reps` of each kind:
/// [clean warm, clean cold, crash warm, crash cold, crash + reboot cold].
pub fn open_times(root: &Path, gib: u64, reps: usize) -> [Vec<f64>; 5] {
    let dir = root.join(format!("open{gib}g"));
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.to_string_lossy().into_owned();
    eprintln!("  open: writing {gib} GiB, then SIGKILL ...");
    run_child(&["write-crash", &d, &(gib * GIB).to_string()]);
    let mut out: [Vec<f64>; 5] = Default::default();
    for rep in 0..reps {
        if rep > 0 {
            // A fresh crash: open, append one batch, SIGKILL.
            run_child(&["write-crash", &d, &(BATCH as u64 * SIZE as u64).to_string()]);
        }
        let (ms, log) = time_open(&dir);
        assert!(!log.recovery_report().clean_shutdown);
        out[2].push(ms);
        log.close().expect("close");
        for (i, cold) in [(0, false), (1, true)] {
            if cold {
                evict(&dir);
            }
            let (ms, log) = time_open(&dir);
            assert!(log.recovery_report().clean_shutdown);
            out[i].push(ms);
            log.close().expect("close");
        }
        run_child(&["write-crash", &d, &(BATCH as u64 * SIZE as u64).to_string()]);
        evict(&dir);
        let (ms, log) = time_open(&dir);
        out[3].push(ms);
        log.close().expect("close");
        run_child(&["write-crash", &d, &(BATCH as u64 * SIZE as u64).to_string()]);
        fake_reboot(&dir);
        evict(&dir);
        let (ms, log) = time_open(&dir);
        assert!(log.recovery_report().after_reboot);
        out[4].push(ms);
        log.close().expect("close");
    }
    let _ = std::fs::remove_dir_all(&dir);
    out
}

/// Peak RssAnon (MiB) of a fresh process reading a `gib` GiB log, by
/// `Consumer::poll` (default config) and by `FetchedBatches::records`.
pub struct RssResult {
    pub mode: &'static str,
    pub before_mib: f64,
    pub peak_mib: f64,
    pub read: Sample,
}

pub fn rss(root: &Path, gib: u64) -> Vec<RssResult> {
    let dir = root.join(format!("rss{gib}g"));
    let _ = std::fs::remove_dir_all(&dir);
    let records = {
        let log = open_log(&dir, Durability::Os);
        log.create_topic("t", TopicConfig::new(1)).expect("topic");
        let n = fill(&log, gib * GIB);
        log.close().expect("close");
        n
    };
    let d = dir.to_string_lossy().into_owned();
    let mut out = Vec::new();
    for mode in ["poll", "views"] {
        let line = run_child(&["read-rss", &d, &records.to_string(), mode]);
        let f: Vec<f64> = line
            .split_whitespace()
            .skip(1)
            .map(|x| x.parse().expect("child output"))
            .collect();
        out.push(RssResult {
            mode,
            before_mib: f[0] / 1024.0,
            peak_mib: f[2] / 1024.0,
            read: Sample::throughput(f[3] as u64, f[4]),
        });
    }
    let _ = std::fs::remove_dir_all(&dir);
    out
}
