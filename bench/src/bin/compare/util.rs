//! Temp dirs, payloads, and facts about the machine.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::table::Sample;

static PAYLOAD_100: [u8; 100] = [b'x'; 100];
static PAYLOAD_1K: [u8; 1024] = [b'y'; 1024];

/// The payload every system writes for records of `size` bytes.
pub fn payload(size: usize) -> &'static [u8] {
    match size {
        100 => &PAYLOAD_100,
        1024 => &PAYLOAD_1K,
        _ => unreachable!("record sizes are 100 and 1024"),
    }
}

/// "100 B" / "1 KiB".
pub fn label(size: usize) -> &'static str {
    if size == 100 { "100 B" } else { "1 KiB" }
}

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(parent: &Path, name: &str) -> TempDir {
        let p = parent.join(name);
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create data dir");
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Filesystem type and mount point holding `path` (from /proc/self/mountinfo).
pub fn filesystem_of(path: &Path) -> String {
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

/// `RssAnon` of this process in KiB (anonymous resident memory: heap and
/// stacks, not the page cache behind file maps).
pub fn rss_anon_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("RssAnon:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU model and kernel, for the report header.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown cpu".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cpus} x {cpu}, Linux {kernel}")
}

/// CPU time of the calling thread (user + system: a `write()`'s kernel copy
/// counts), in seconds.
pub fn thread_cpu_secs() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration.
    #[expect(unsafe_code, reason = "clock_gettime has no safe wrapper in std")]
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc == 0 {
        ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
    } else {
        f64::NAN
    }
}

/// Wall-clock and thread CPU time of a single-threaded measurement. On a
/// shared machine the CPU time moves much less with other load than the
/// wall clock does, so the table shows the ratio of both.
pub struct Timer {
    wall: Instant,
    cpu: f64,
}

impl Timer {
    pub fn start() -> Timer {
        Timer {
            wall: Instant::now(),
            cpu: thread_cpu_secs(),
        }
    }

    pub fn sample(&self, records: u64) -> Sample {
        let secs = self.wall.elapsed().as_secs_f64();
        let cpu = thread_cpu_secs() - self.cpu;
        Sample {
            cpu_secs: cpu.is_finite().then_some(cpu),
            ..Sample::throughput(records, secs)
        }
    }
}

/// Writes back every dirty page (`sync(2)`) and pauses briefly, so a
/// timing-sensitive row is not measured while the kernel flushes the
/// gigabytes earlier rows left dirty (on 2 cores, that writeback competes
/// with the threads being timed).
pub fn settle() {
    #[expect(unsafe_code, reason = "sync(2) has no safe wrapper in std")]
    // SAFETY: sync takes no arguments and cannot fail.
    unsafe {
        libc::sync()
    };
    std::thread::sleep(std::time::Duration::from_millis(200));
}
