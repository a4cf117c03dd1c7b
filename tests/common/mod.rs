//! Shared helpers for integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        Self::new_in(&std::env::temp_dir(), tag)
    }

    /// A temporary directory under `base`.
    pub fn new_in(base: &Path, tag: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = base.join(format!("logbus-it-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
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

/// A temporary directory on tmpfs (`/dev/shm`) when there is one, where
/// fsync costs nothing: for tests that open and close many logs.
pub fn fast_temp_dir(tag: &str) -> TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() && std::fs::metadata(shm).is_ok_and(|m| !m.permissions().readonly()) {
        TempDir::new_in(shm, tag)
    } else {
        TempDir::new(tag)
    }
}

/// The single `.log` files of a partition directory, sorted.
pub fn log_files(partition_dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(partition_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

/// Copies `src` into `dst` recursively (files and directories only).
///
/// Copying a data directory while its `Log` is still open is how the tests
/// take a crash image: every acknowledged record is in the page cache, the
/// active segments are still preallocated (zero tail, untrimmed indexes) and
/// there is no `.clean_shutdown` marker — exactly what a killed process
/// leaves. The copy's `.lock` is a plain file: nobody holds a lock on it.
pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let from = entry.path();
        let to = dst.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&from, &to);
        } else {
            copy_sparse(&from, &to);
        }
    }
}

/// Copies a file's data extents only (`SEEK_DATA`/`SEEK_HOLE`), leaving
/// holes as holes: active segments are preallocated sparse to their full
/// size (64 MiB for `__consumer_offsets`), and copying their zeros made
/// crash images slow. The copy reads back byte for byte the same.
pub fn copy_sparse(from: &Path, to: &Path) {
    use std::os::unix::fs::FileExt;
    use std::os::unix::io::AsRawFd;
    let src = std::fs::File::open(from).unwrap();
    let len = src.metadata().unwrap().len();
    let dst = std::fs::File::create(to).unwrap();
    dst.set_len(len).unwrap();
    let fd = src.as_raw_fd();
    // Sized to the file: a fresh 1 MiB buffer per small file was most of
    // the cost of copying a directory of many small segments.
    let mut buf = vec![0u8; (len as usize).clamp(1, 1 << 20)];
    let mut pos: i64 = 0;
    while (pos as u64) < len {
        // SAFETY: lseek on a descriptor we own; no memory is involved.
        let data = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
        if data < 0 {
            break; // ENXIO: only a hole is left
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        let end = if hole < 0 { len as i64 } else { hole };
        let mut at = data;
        while at < end {
            let n = ((end - at) as usize).min(buf.len());
            src.read_exact_at(&mut buf[..n], at as u64).unwrap();
            dst.write_all_at(&buf[..n], at as u64).unwrap();
            at += n as i64;
        }
        pos = end;
    }
}

/// A crash image of `src` (see [`copy_dir`]) in a new temporary directory.
pub fn crash_copy(src: &Path, tag: &str) -> TempDir {
    let dst = TempDir::new(tag);
    copy_dir(src, dst.path());
    dst
}

/// Every file under `dir` (relative path → contents), `.lock` excluded.
pub fn snapshot(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut std::collections::BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else if path.file_name().is_some_and(|n| n != ".lock") {
                let rel = path.strip_prefix(root).unwrap().to_path_buf();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// A record batch as the tests see it, parsed independently of the crate:
/// big-endian baseOffset (bytes 0..8), batchLength (8..12), recordsCount (57..61).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSpan {
    pub start: usize,
    pub len: usize,
    pub base_offset: u64,
    pub records: u32,
}

/// Walks the batches of a segment file's bytes, stopping at the first
/// header that is zero or runs past the end.
pub fn batch_spans(bytes: &[u8]) -> Vec<BatchSpan> {
    let mut out = Vec::new();
    let mut p = 0;
    while p + 61 <= bytes.len() {
        let base_offset = u64::from_be_bytes(bytes[p..p + 8].try_into().unwrap());
        let length = i32::from_be_bytes(bytes[p + 8..p + 12].try_into().unwrap());
        if length <= 0 || bytes[p + 16] != 2 {
            break;
        }
        let len = length as usize + 12;
        if p + len > bytes.len() {
            break;
        }
        let records = u32::from_be_bytes(bytes[p + 57..p + 61].try_into().unwrap());
        out.push(BatchSpan {
            start: p,
            len,
            base_offset,
            records,
        });
        p += len;
    }
    out
}

/// Small deterministic PRNG (splitmix64), so failures replay from the seed.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// Every record of a partition, read with `Partition::read` from the log start.
pub fn read_all(log: &logbus::Log, topic: &str, partition: u32) -> Vec<logbus::ConsumerRecord> {
    let p = log
        .topic(topic)
        .unwrap()
        .partition(partition)
        .unwrap()
        .clone();
    let mut out = Vec::new();
    let mut offset = p.log_start_offset();
    while offset < p.log_end_offset() {
        let batch = p.read(offset, 10_000).unwrap();
        assert!(
            !batch.is_empty(),
            "no records at {offset} below the log end"
        );
        offset = batch.last().unwrap().offset + 1;
        out.extend(batch);
    }
    out
}

/// A command re-running this test binary with only `test_name` selected:
/// the child-process pattern (the named test does its child work when it
/// finds its environment variable, and nothing otherwise).
pub fn reexec(test_name: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([test_name, "--exact", "--nocapture", "--test-threads=1"]);
    cmd
}

/// Two file sets (see [`snapshot`]) are equal; reports the first differing
/// file, not its bytes.
pub fn assert_same_files(
    got: &std::collections::BTreeMap<PathBuf, Vec<u8>>,
    want: &std::collections::BTreeMap<PathBuf, Vec<u8>>,
) {
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (name, bytes) in want {
        assert!(
            got[name] == *bytes,
            "{name:?} differs ({} vs {} bytes)",
            got[name].len(),
            bytes.len()
        );
    }
}
