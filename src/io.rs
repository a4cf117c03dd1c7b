//! Filesystem helpers: the data-directory lock, durable writes, block
//! reservation, and the checksummed key=value format of logbus's small
//! metadata files.
//!
//! Every error names the file or directory it happened on.
//!
//! # Metadata file format
//!
//! ```text
//! # logbus topic-config v1
//! partitions=3
//! retention.ms=604800000
//! crc32=1a2b3c4d
//! ```
//!
//! The first line names the kind of file and its format version; the last line
//! is the CRC-32 (IEEE) of every byte before it, as 8 lowercase hex digits,
//! followed by a newline. This framing (header first, CRC trailer last) is the
//! same in every version, so that a reader can always verify a file before
//! looking at its version and tell "damaged" apart from "too new".

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Name of the lock file inside a locked directory.
const LOCK_FILE: &str = ".lock";

/// An exclusive advisory lock on a directory, held until dropped.
///
/// It is a `flock(LOCK_EX | LOCK_NB)` on `dir/.lock`. flock locks belong to
/// the open file description, so a second [`DirLock::acquire`] fails whether
/// it comes from another process or from this one, and the kernel releases
/// the lock when the holder exits, however it exits.
#[derive(Debug)]
pub struct DirLock {
    // Holds the lock while open; `Drop` unlocks it. It is opened with
    // O_CLOEXEC (std always sets it), so a child process we spawn does not
    // inherit the lock and keep it past our exit.
    file: File,
}

impl DirLock {
    /// Takes the lock on `dir`, creating `dir/.lock` if needed.
    ///
    /// # Errors
    ///
    /// [`Error::Locked`] if any other holder has it (in this process or
    /// another); [`Error::Io`] if the lock file cannot be opened or locked.
    #[expect(unsafe_code, reason = "flock(2) has no wrapper in std as of the MSRV")]
    pub fn acquire(dir: &Path) -> Result<DirLock> {
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        loop {
            // SAFETY: the descriptor belongs to `file`, which is open for the
            // whole call; flock touches no memory of ours.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                break;
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(code) if code == libc::EWOULDBLOCK || code == libc::EAGAIN => {
                    return Err(Error::Locked { path });
                }
                _ => return Err(Error::io(&path, err)),
            }
        }
        // The lock file is deliberately never deleted: removing it on drop
        // would let a later opener lock a fresh inode while a process that
        // opened the old one still believes it holds the lock.
        Ok(DirLock { file })
    }
}

impl Drop for DirLock {
    #[expect(unsafe_code, reason = "flock(2) has no wrapper in std as of the MSRV")]
    fn drop(&mut self) {
        // Unlock explicitly rather than by closing: a child process forked
        // but not yet exec'd shares this open file description, and closing
        // our descriptor alone would leave the directory locked until it
        // execs. LOCK_UN releases the lock for the whole description.
        // SAFETY: the descriptor belongs to `self.file`, open until the end
        // of this call; flock touches no memory of ours.
        let _ = unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// fsyncs a directory, making a create, rename or delete of an entry in it
/// durable.
///
/// # Errors
///
/// [`Error::Io`] with `dir` if it cannot be opened or synced.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    #[cfg(test)]
    if crate::crashsim::op(dir) {
        // Simulated storage decides what is durable; the disk need not.
        crate::crashsim::dir_synced(dir);
        return Ok(());
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))?;
    #[cfg(test)]
    crate::crashsim::dir_synced(dir);
    Ok(())
}

/// Atomically replaces `path` with `contents`.
///
/// Writes `path` + `.tmp`, fsyncs it, renames it over `path` and fsyncs the
/// parent directory. After a crash the file holds either the old or the new
/// contents, never a mix; a stray `.tmp` may remain, which readers ignore and
/// the next call overwrites.
///
/// # Errors
///
/// [`Error::Io`] naming the temporary file, `path`, or the parent directory,
/// whichever failed.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    #[cfg(test)]
    crate::crashsim::op(&tmp);
    let written = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(contents)?;
            // fsync, not fdatasync: the new file's size and inode must be
            // durable before the rename can point `path` at it.
            f.sync_all()
        });
    if let Err(e) = written {
        // Best effort only: a leftover .tmp is harmless, the original error
        // is the one worth reporting.
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(&tmp, e));
    }
    #[cfg(test)]
    {
        crate::crashsim::file_synced(&tmp);
        crate::crashsim::op(path);
    }
    fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    fsync_dir(parent_dir(path))
}

/// `path` with `.tmp` appended to its file name (`a/b.cfg` -> `a/b.cfg.tmp`).
fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(".tmp");
    PathBuf::from(s)
}

/// The directory holding `path`; `.` for a bare relative file name, whose
/// `parent()` is the empty path.
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// fdatasyncs `file`: its data, and the metadata needed to read it back
/// (such as its size), reach stable storage.
///
/// # Errors
///
/// [`Error::Io`] with `path`. After a failure the page cache state of the
/// file is unknown; retrying is not safe (see [`Error::Poisoned`]).
pub fn fdatasync(file: &File, path: &Path) -> Result<()> {
    #[cfg(test)]
    {
        let simulated = crate::crashsim::op(path);
        if failpoints::fire_sync(path) {
            return Err(Error::io(path, io::Error::from_raw_os_error(libc::EIO)));
        }
        if simulated {
            // Simulated storage decides what is durable; the disk need not.
            crate::crashsim::file_synced(path);
            return Ok(());
        }
    }
    file.sync_data().map_err(|e| Error::io(path, e))?;
    #[cfg(test)]
    crate::crashsim::file_synced(path);
    Ok(())
}

/// `pwrite`s all of `buf` at `position` (a short write is legal, so loop).
///
/// # Errors
/// [`Error::Io`] with `path` (ENOSPC, EIO...).
pub fn write_all_at(file: &File, path: &Path, buf: &[u8], position: u64) -> Result<()> {
    use std::os::unix::fs::FileExt;
    #[cfg(test)]
    {
        crate::crashsim::op(path);
        if let Some(errno) = failpoints::fire_write(path) {
            return Err(Error::io(path, io::Error::from_raw_os_error(errno)));
        }
    }
    file.write_all_at(buf, position)
        .map_err(|e| Error::io(path, e))
}

/// Test-only fault injection: make the next `fdatasync` of a file whose path
/// contains a marker fail with EIO. (The full storage seam with power-cut
/// simulation is the reliability issue's work.)
#[cfg(test)]
pub(crate) mod failpoints {
    use std::path::Path;

    use parking_lot::Mutex;

    static FAIL_SYNC: Mutex<Vec<String>> = Mutex::new(Vec::new());

    /// The next fdatasync of a path containing `marker` fails.
    pub(crate) fn fail_next_sync(marker: &str) {
        FAIL_SYNC.lock().push(marker.to_string());
    }

    static FAIL_WRITE: Mutex<Vec<(String, i32)>> = Mutex::new(Vec::new());

    /// The next write or block reservation (`pwrite`, `fallocate`) on a path
    /// containing every `|`-separated part of `marker` fails with `errno`
    /// (ENOSPC, EIO).
    pub(crate) fn fail_next_write(marker: &str, errno: i32) {
        FAIL_WRITE.lock().push((marker.to_string(), errno));
    }

    pub(super) fn fire_write(path: &Path) -> Option<i32> {
        let path = path.to_string_lossy();
        let mut armed = FAIL_WRITE.lock();
        let i = armed
            .iter()
            .position(|(m, _)| m.split('|').all(|part| path.contains(part)))?;
        Some(armed.remove(i).1)
    }

    static FAIL_STEP: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

    /// The next time `step` is reached for a path containing `marker`, it
    /// fails (and the operation stops there, as a crash would).
    pub(crate) fn fail_step(step: &str, marker: &str) {
        FAIL_STEP
            .lock()
            .push((step.to_string(), marker.to_string()));
    }

    pub(crate) fn fire_step(step: &str, path: &Path) -> bool {
        let path = path.to_string_lossy();
        let mut armed = FAIL_STEP.lock();
        match armed
            .iter()
            .position(|(s, m)| s == step && path.contains(m.as_str()))
        {
            Some(i) => {
                armed.remove(i);
                true
            }
            None => false,
        }
    }

    pub(super) fn fire_sync(path: &Path) -> bool {
        let path = path.to_string_lossy();
        let mut armed = FAIL_SYNC.lock();
        match armed.iter().position(|m| path.contains(m.as_str())) {
            Some(i) => {
                armed.remove(i);
                true
            }
            None => false,
        }
    }
}

/// Reserves disk blocks for `[offset, offset + len)` of `file`, extending its
/// size if the range reaches past the end.
///
/// Writes through a memory map into reserved blocks cannot fail with ENOSPC,
/// which would otherwise arrive as SIGBUS. Uses `fallocate(fd, 0, ..)`; on
/// filesystems without it, falls back to `posix_fallocate`, which glibc
/// emulates by writing to each block. `len == 0` does nothing.
///
/// On 32-bit targets with a 32-bit `off_t`, ranges ending past 2 GiB are
/// rejected as invalid input.
///
/// # Errors
///
/// [`Error::Io`] with `path`, for example on ENOSPC, EBADF (file not open for
/// writing) or a range that overflows `off_t`.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[expect(
    unsafe_code,
    reason = "fallocate(2) and posix_fallocate(3) have no wrapper in std"
)]
pub fn allocate(file: &File, path: &Path, offset: u64, len: u64) -> Result<()> {
    if len == 0 {
        // fallocate rejects an empty range with EINVAL; nothing to reserve.
        return Ok(());
    }
    #[cfg(test)]
    {
        crate::crashsim::op(path);
        if let Some(errno) = failpoints::fire_write(path) {
            return Err(Error::io(path, io::Error::from_raw_os_error(errno)));
        }
    }
    let (off, len) = off_t_range(path, offset, len)?;
    let fd = file.as_raw_fd();
    loop {
        // SAFETY: `fd` belongs to `file`, which is open for the whole call;
        // fallocate touches no memory of ours.
        let rc = unsafe { libc::fallocate(fd, 0, off, len) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            // EOPNOTSUPP: the filesystem cannot; ENOSYS: the kernel cannot.
            Some(libc::EOPNOTSUPP | libc::ENOSYS) => break,
            _ => return Err(Error::io(path, err)),
        }
    }
    loop {
        // SAFETY: as above. posix_fallocate returns the error number instead
        // of setting errno.
        let rc = unsafe { libc::posix_fallocate(fd, off, len) };
        match rc {
            0 => return Ok(()),
            libc::EINTR => continue,
            code => return Err(Error::io(path, io::Error::from_raw_os_error(code))),
        }
    }
}

/// Reserves space for `[offset, offset + len)` of `file` as well as this
/// platform allows.
///
/// Without `fallocate` this only extends the file size, which does not
/// reserve blocks: a later write through a memory map can still hit ENOSPC.
///
/// # Errors
///
/// [`Error::Io`] with `path`.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub fn allocate(file: &File, path: &Path, offset: u64, len: u64) -> Result<()> {
    if len == 0 {
        return Ok(());
    }
    let end = offset.checked_add(len).ok_or_else(|| {
        Error::io(
            path,
            io::Error::new(io::ErrorKind::InvalidInput, "allocation range overflows"),
        )
    })?;
    let size = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if end > size {
        file.set_len(end).map_err(|e| Error::io(path, e))?;
    }
    Ok(())
}

/// Converts a byte range to `off_t`s, rejecting ranges the kernel could not
/// represent instead of letting them wrap.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn off_t_range(path: &Path, offset: u64, len: u64) -> Result<(libc::off_t, libc::off_t)> {
    let invalid = || {
        Error::io(
            path,
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("allocation range {offset}+{len} does not fit in off_t"),
            ),
        )
    };
    let off = libc::off_t::try_from(offset).map_err(|_| invalid())?;
    let l = libc::off_t::try_from(len).map_err(|_| invalid())?;
    off.checked_add(l).ok_or_else(invalid)?;
    Ok((off, l))
}

/// The parts of `[from, to)` of `file` that may hold data: everything but
/// its holes (`SEEK_DATA` / `SEEK_HOLE`). Holes read as zeros, and an
/// active segment is sparse up to its full capacity, so recovery looks at
/// these ranges only instead of reading (and faulting in) gigabytes of
/// zeros. Where the file system cannot say, the whole range.
#[expect(
    unsafe_code,
    reason = "lseek(2) with SEEK_DATA/SEEK_HOLE has no wrapper in std"
)]
pub fn data_ranges(file: &File, from: u64, to: u64) -> Vec<std::ops::Range<u64>> {
    use std::os::unix::io::AsRawFd;
    let whole: Vec<std::ops::Range<u64>> = std::iter::once(from..to).collect();
    let (Ok(mut pos), Ok(end)) = (libc::off_t::try_from(from), libc::off_t::try_from(to)) else {
        return whole;
    };
    let fd = file.as_raw_fd();
    let mut out = Vec::new();
    while pos < end {
        // SAFETY: lseek on a descriptor `file` keeps open; no memory involved.
        let data = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
        if data < 0 {
            return match io::Error::last_os_error().raw_os_error() {
                Some(libc::ENXIO) => out, // nothing but a hole is left
                _ => whole,
            };
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        if hole < 0 {
            return whole;
        }
        if data >= end {
            break;
        }
        out.push(data as u64..hole.min(end) as u64);
        pos = hole;
    }
    out
}

/// Prefix of the header line, before the kind.
const HEADER_PREFIX: &str = "# logbus ";
/// Prefix of the trailer line, before the hex CRC.
const CRC_PREFIX: &[u8] = b"crc32=";
/// Length of the trailer line without its newline: `crc32=` + 8 hex digits.
const CRC_LINE_LEN: usize = CRC_PREFIX.len() + 8;

/// Whether `s` is a non-empty string of `[a-z0-9_.-]`, the alphabet of keys
/// and kinds. Excluding `=`, spaces and newlines keeps parsing unambiguous.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-'))
}

/// Encodes a metadata file: a `# logbus <kind> v<version>` header, one
/// `key=value` line per pair in the given order, and a `crc32=` trailer.
///
/// Keys are not deduplicated; [`decode_props`] returns them as written.
///
/// # Errors
///
/// [`Error::InvalidConfig`] if `kind` or a key is not a non-empty string of
/// `[a-z0-9_.-]`, or a value contains a newline.
pub fn encode_props(kind: &str, version: u32, pairs: &[(&str, String)]) -> Result<Vec<u8>> {
    if !is_token(kind) {
        return Err(Error::InvalidConfig {
            reason: format!("metadata file kind {kind:?} must be non-empty [a-z0-9_.-]"),
        });
    }
    let mut out = format!("{HEADER_PREFIX}{kind} v{version}\n");
    for (key, value) in pairs {
        if !is_token(key) {
            return Err(Error::InvalidConfig {
                reason: format!("key {key:?} must be non-empty [a-z0-9_.-]"),
            });
        }
        if value.contains('\n') {
            return Err(Error::InvalidConfig {
                reason: format!("value of {key:?} contains a newline"),
            });
        }
        out.push_str(key);
        out.push('=');
        out.push_str(value);
        out.push('\n');
    }
    let crc = crc32fast::hash(out.as_bytes());
    out.push_str(&format!("crc32={crc:08x}\n"));
    Ok(out.into_bytes())
}

/// Parses and verifies a file written by [`encode_props`], returning its
/// version and its pairs in file order.
///
/// The CRC is checked before anything else is trusted, so every damaged file
/// is reported as [`Error::Corrupt`]; only an intact file can report
/// [`Error::UnsupportedVersion`]. Never panics, whatever `bytes` holds.
///
/// # Errors
///
/// - [`Error::Corrupt`] (with the byte offset of the offending line) for a
///   missing or malformed CRC line, a CRC mismatch, invalid UTF-8, a missing
///   or malformed header, a header of another `kind`, or a malformed
///   `key=value` line.
/// - [`Error::UnsupportedVersion`] if the version is above `max_version`.
pub fn decode_props(
    path: &Path,
    bytes: &[u8],
    kind: &str,
    max_version: u32,
) -> Result<(u32, Vec<(String, String)>)> {
    let corrupt = |position: usize, reason: String| {
        Error::corrupt(path, u64::try_from(position).unwrap_or(u64::MAX), reason)
    };

    // The trailer: the last line, which must end the file with a newline.
    let Some(without_nl) = bytes.strip_suffix(b"\n") else {
        return Err(corrupt(
            bytes.len(),
            "file does not end with a newline-terminated crc32 line".to_owned(),
        ));
    };
    let crc_start = without_nl
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let stored = parse_crc_line(&without_nl[crc_start..])
        .ok_or_else(|| corrupt(crc_start, "missing or malformed crc32 line".to_owned()))?;
    let body = &bytes[..crc_start];
    let computed = crc32fast::hash(body);
    if stored != computed {
        return Err(corrupt(
            crc_start,
            format!("crc32 mismatch: file says {stored:08x}, contents hash to {computed:08x}"),
        ));
    }

    let text = std::str::from_utf8(body)
        .map_err(|e| corrupt(e.valid_up_to(), "invalid UTF-8".to_owned()))?;
    // `body` is empty or ends in '\n' (it stops where the trailer begins), so
    // every line here was newline-terminated.
    let mut lines = text.split_terminator('\n');
    let header = lines
        .next()
        .ok_or_else(|| corrupt(0, "missing header line".to_owned()))?;
    let (found_kind, version) = parse_header(header)
        .ok_or_else(|| corrupt(0, format!("malformed header line {header:?}")))?;
    if found_kind != kind {
        return Err(corrupt(
            0,
            format!("expected a {kind:?} file, found {found_kind:?}"),
        ));
    }
    if version > max_version {
        return Err(Error::UnsupportedVersion {
            path: path.to_path_buf(),
            found: version,
            supported: max_version,
        });
    }

    let mut pairs = Vec::new();
    let mut position = header.len() + 1;
    for line in lines {
        match line.split_once('=') {
            Some((key, value)) if is_token(key) => {
                pairs.push((key.to_owned(), value.to_owned()));
            }
            _ => {
                return Err(corrupt(
                    position,
                    format!("malformed line {line:?}, expected key=value"),
                ));
            }
        }
        position += line.len() + 1;
    }
    Ok((version, pairs))
}

/// Parses `crc32=<8 lowercase hex digits>`. Uppercase is rejected so that
/// each CRC has exactly one spelling.
fn parse_crc_line(line: &[u8]) -> Option<u32> {
    if line.len() != CRC_LINE_LEN {
        return None;
    }
    let hex = line.strip_prefix(CRC_PREFIX)?;
    hex.iter().try_fold(0u32, |acc, &b| {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => return None,
        };
        Some(acc << 4 | u32::from(digit))
    })
}

/// Parses `# logbus <kind> v<version>` into its kind and version. The
/// version must be canonical decimal (no sign, no leading zeros) so that each
/// header has exactly one spelling.
fn parse_header(line: &str) -> Option<(&str, u32)> {
    let (kind, version) = line.strip_prefix(HEADER_PREFIX)?.split_once(' ')?;
    let digits = version.strip_prefix('v')?;
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    if !is_token(kind) || !canonical {
        return None;
    }
    Some((kind, digits.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::{BufRead, BufReader};
    use std::os::unix::fs::MetadataExt;
    use std::process::{Command, Stdio};
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let path = std::env::temp_dir().join(format!(
                "logbus-io-test-{}-{tag}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            fs::create_dir(&path).unwrap();
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn second_lock_in_same_process_fails_until_first_is_dropped() {
        let dir = TempDir::new("lock");
        let first = DirLock::acquire(&dir.0).unwrap();
        match DirLock::acquire(&dir.0) {
            Err(Error::Locked { path }) => assert_eq!(path, dir.0.join(".lock")),
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(first);
        let again = DirLock::acquire(&dir.0).unwrap();
        assert!(dir.0.join(".lock").exists());
        drop(again);
    }

    #[test]
    fn lock_on_missing_dir_is_io_error_with_path() {
        let dir = TempDir::new("lock-missing");
        let missing = dir.0.join("nope");
        match DirLock::acquire(&missing) {
            Err(Error::Io { path, .. }) => assert_eq!(path, missing.join(".lock")),
            other => panic!("expected Io, got {other:?}"),
        }
    }

    #[test]
    fn lock_held_by_another_process_blocks_acquire() {
        let dir = TempDir::new("lock-child");
        let lock_path = dir.0.join(".lock");
        // flock(1) takes the lock, then runs a shell that reports it and
        // waits for its stdin to close (cat exits 0 at EOF), so the test controls
        // when it ends.
        let spawned = Command::new("flock")
            .arg(&lock_path)
            .arg("-c")
            .arg("echo locked; cat >/dev/null")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                eprintln!("note: skipping cross-process lock test, no `flock` binary");
                return;
            }
            Err(e) => panic!("spawning flock: {e}"),
        };
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, "locked\n", "flock did not take the lock");

        let held = DirLock::acquire(&dir.0);
        // Release the child before asserting so a failure cannot leak it.
        drop(child.stdin.take());
        let status = child.wait().unwrap();
        assert!(status.success());
        match held {
            Err(Error::Locked { path }) => assert_eq!(path, lock_path),
            other => panic!("expected Locked, got {other:?}"),
        }
        DirLock::acquire(&dir.0).expect("lock is free once the other process exits");
    }

    #[test]
    fn write_atomic_round_trips_and_leaves_no_tmp() {
        let dir = TempDir::new("atomic");
        let path = dir.0.join("meta.cfg");
        write_atomic(&path, b"first version, longer").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"first version, longer");
        write_atomic(&path, b"second").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        write_atomic(&path, b"").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"");
        let names: Vec<_> = fs::read_dir(&dir.0)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["meta.cfg"]);
    }

    #[test]
    fn write_atomic_replaces_a_stray_tmp() {
        let dir = TempDir::new("atomic-stray");
        let path = dir.0.join("meta.cfg");
        let tmp = dir.0.join("meta.cfg.tmp");
        write_atomic(&path, b"old").unwrap();
        fs::write(&tmp, b"half-written garbage from a crash, longer than new").unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert!(!tmp.exists());
    }

    #[test]
    fn write_atomic_into_missing_dir_reports_the_tmp_path() {
        let dir = TempDir::new("atomic-missing");
        let path = dir.0.join("no-such-dir").join("meta.cfg");
        match write_atomic(&path, b"x") {
            Err(Error::Io { path: p, .. }) => assert_eq!(p, tmp_path(&path)),
            other => panic!("expected Io, got {other:?}"),
        }
    }

    #[test]
    fn parent_of_bare_name_is_current_dir() {
        assert_eq!(parent_dir(Path::new("x.cfg")), Path::new("."));
        assert_eq!(parent_dir(Path::new("a/x.cfg")), Path::new("a"));
        assert_eq!(tmp_path(Path::new("a/x.cfg")), Path::new("a/x.cfg.tmp"));
    }

    #[test]
    fn fsync_dir_and_fdatasync_work_and_carry_paths() {
        let dir = TempDir::new("sync");
        fsync_dir(&dir.0).unwrap();
        let missing = dir.0.join("missing");
        match fsync_dir(&missing) {
            Err(Error::Io { path, .. }) => assert_eq!(path, missing),
            other => panic!("expected Io, got {other:?}"),
        }
        let path = dir.0.join("data");
        let mut file = File::create(&path).unwrap();
        file.write_all(b"hello").unwrap();
        fdatasync(&file, &path).unwrap();
    }

    #[test]
    fn allocate_reserves_blocks_and_extends_the_file() {
        let dir = TempDir::new("alloc");
        let path = dir.0.join("segment");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        allocate(&file, &path, 0, 0).unwrap();
        assert_eq!(file.metadata().unwrap().len(), 0);

        let len = 1 << 20;
        allocate(&file, &path, 4096, len).unwrap();
        let meta = file.metadata().unwrap();
        assert_eq!(meta.len(), 4096 + len);
        // st_blocks counts 512-byte units actually allocated; a sparse
        // set_len would leave it near zero.
        assert!(
            meta.blocks() * 512 >= len,
            "only {} bytes allocated",
            meta.blocks() * 512
        );

        // A range inside the file must not shrink or otherwise resize it.
        allocate(&file, &path, 0, 10).unwrap();
        assert_eq!(file.metadata().unwrap().len(), 4096 + len);
    }

    #[test]
    fn data_ranges_cover_every_nonzero_byte_and_skip_holes() {
        use std::os::unix::fs::FileExt;
        let dir = TempDir::new("sparse");
        let path = dir.0.join("sparse");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let len = 64u64 << 20;
        file.set_len(len).unwrap();
        file.write_all_at(b"head", 10).unwrap();
        file.write_all_at(b"tail", 40 << 20).unwrap();
        let ranges = data_ranges(&file, 0, len);
        for at in [10u64, 13, 40 << 20, (40 << 20) + 3] {
            assert!(ranges.iter().any(|r| r.contains(&at)), "{at} in {ranges:?}");
        }
        // Where the file system reports holes, most of the file is skipped
        // (tmpfs and ext4 do; elsewhere the whole range is the answer).
        let covered: u64 = ranges.iter().map(|r| r.end - r.start).sum();
        assert!(covered <= len);
        // A sub-range is clipped to itself.
        let tail = data_ranges(&file, 30 << 20, len);
        assert!(tail.iter().all(|r| r.start >= 30 << 20 && r.end <= len));
        assert!(tail.iter().any(|r| r.contains(&(40 << 20))));
        assert!(data_ranges(&file, len, len).is_empty());
    }

    #[test]
    fn allocate_errors_carry_the_path() {
        let dir = TempDir::new("alloc-err");
        let path = dir.0.join("ro");
        fs::write(&path, b"").unwrap();
        let read_only = File::open(&path).unwrap();
        match allocate(&read_only, &path, 0, 4096) {
            Err(Error::Io { path: p, .. }) => assert_eq!(p, path),
            other => panic!("expected Io, got {other:?}"),
        }
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        match allocate(&file, &path, u64::MAX - 1, 2) {
            Err(Error::Io { path: p, source }) => {
                assert_eq!(p, path);
                assert_eq!(source.kind(), io::ErrorKind::InvalidInput);
            }
            other => panic!("expected Io, got {other:?}"),
        }
    }

    fn sample() -> Vec<u8> {
        encode_props(
            "topic-config",
            1,
            &[
                ("partitions", "3".to_owned()),
                ("retention.ms", "604800000".to_owned()),
                ("note", "héllo = wörld".to_owned()),
                ("empty", String::new()),
            ],
        )
        .unwrap()
    }

    #[test]
    fn props_encoding_is_the_documented_text() {
        let bytes = encode_props("topic-config", 1, &[("a", "1".to_owned())]).unwrap();
        let body = "# logbus topic-config v1\na=1\n";
        let want = format!("{body}crc32={:08x}\n", crc32fast::hash(body.as_bytes()));
        assert_eq!(String::from_utf8(bytes).unwrap(), want);
    }

    #[test]
    fn props_round_trip_sample() {
        let (version, pairs) = decode_props(Path::new("t"), &sample(), "topic-config", 1).unwrap();
        assert_eq!(version, 1);
        assert_eq!(
            pairs,
            [
                ("partitions".to_owned(), "3".to_owned()),
                ("retention.ms".to_owned(), "604800000".to_owned()),
                ("note".to_owned(), "héllo = wörld".to_owned()),
                ("empty".to_owned(), String::new()),
            ]
        );
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = sample();
        for len in 0..bytes.len() {
            let result = decode_props(Path::new("t"), &bytes[..len], "topic-config", 1);
            assert!(
                matches!(result, Err(Error::Corrupt { .. })),
                "truncation to {len} bytes gave {result:?}"
            );
        }
    }

    #[test]
    fn every_bit_flip_is_an_error() {
        let bytes = sample();
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut damaged = bytes.clone();
                damaged[i] ^= 1 << bit;
                let result = decode_props(Path::new("t"), &damaged, "topic-config", 1);
                assert!(
                    matches!(result, Err(Error::Corrupt { .. })),
                    "flipping bit {bit} of byte {i} gave {result:?}"
                );
            }
        }
    }

    #[test]
    fn future_version_is_unsupported_not_corrupt() {
        let bytes = encode_props("topic-config", 3, &[("a", "b".to_owned())]).unwrap();
        match decode_props(Path::new("dir/t"), &bytes, "topic-config", 2) {
            Err(Error::UnsupportedVersion {
                path,
                found,
                supported,
            }) => {
                assert_eq!(path, Path::new("dir/t"));
                assert_eq!((found, supported), (3, 2));
            }
            other => panic!("expected UnsupportedVersion, got {other:?}"),
        }
        // Older and equal versions are accepted and reported.
        assert_eq!(
            decode_props(Path::new("t"), &bytes, "topic-config", 3)
                .unwrap()
                .0,
            3
        );
        assert_eq!(
            decode_props(Path::new("t"), &bytes, "topic-config", 9)
                .unwrap()
                .0,
            3
        );
    }

    #[test]
    fn wrong_kind_is_corrupt() {
        let result = decode_props(Path::new("t"), &sample(), "offsets", 1);
        assert!(
            matches!(result, Err(Error::Corrupt { position: 0, .. })),
            "{result:?}"
        );
    }

    /// Appends a valid trailer, so the parser behind the CRC check is reached.
    fn with_crc(body: &[u8]) -> Vec<u8> {
        let mut out = body.to_vec();
        out.extend_from_slice(format!("crc32={:08x}\n", crc32fast::hash(body)).as_bytes());
        out
    }

    fn corrupt_position(bytes: &[u8]) -> u64 {
        match decode_props(Path::new("t"), bytes, "k", 1) {
            Err(Error::Corrupt { path, position, .. }) => {
                assert_eq!(path, Path::new("t"));
                position
            }
            other => panic!("expected Corrupt for {bytes:?}, got {other:?}"),
        }
    }

    #[test]
    fn malformed_files_with_valid_crc_are_corrupt_at_the_bad_line() {
        assert_eq!(corrupt_position(b""), 0);
        assert_eq!(corrupt_position(&with_crc(b"")), 0);
        assert_eq!(corrupt_position(&with_crc(b"# logbus k\n")), 0);
        assert_eq!(corrupt_position(&with_crc(b"# logbus k v01\n")), 0);
        assert_eq!(corrupt_position(&with_crc(b"# logbus k v+1\n")), 0);
        assert_eq!(corrupt_position(&with_crc(b"# logbus k v1 \n")), 0);
        assert_eq!(corrupt_position(&with_crc(b"# logbus k v99999999999\n")), 0);
        assert_eq!(
            corrupt_position(&with_crc(b"# logbus k v1\na=1\nnoequals\n")),
            18
        );
        assert_eq!(corrupt_position(&with_crc(b"# logbus k v1\na=1\n\n")), 18);
        assert_eq!(corrupt_position(&with_crc(b"# logbus k v1\nA=1\n")), 14);
        assert_eq!(corrupt_position(&with_crc(b"# logbus k v1\n=1\n")), 14);
        assert_eq!(corrupt_position(&with_crc(b"# logbus k v1\na=\xff\n")), 16);
        // Uppercase hex is not the canonical spelling.
        let upper = String::from_utf8(with_crc(b"# logbus k v1\n"))
            .unwrap()
            .to_uppercase();
        assert_eq!(corrupt_position(upper.as_bytes()), 14);
        // Version 0 and a value holding '=' are fine.
        let (v, pairs) =
            decode_props(Path::new("t"), &with_crc(b"# logbus k v0\na==b=\n"), "k", 1).unwrap();
        assert_eq!((v, pairs), (0, vec![("a".to_owned(), "=b=".to_owned())]));
    }

    #[test]
    fn encode_rejects_bad_keys_values_and_kinds() {
        for key in ["", "Upper", "a b", "a=b", "a\nb", "ключ", "#x"] {
            let result = encode_props("k", 1, &[(key, "v".to_owned())]);
            assert!(
                matches!(result, Err(Error::InvalidConfig { .. })),
                "key {key:?}"
            );
        }
        let result = encode_props("k", 1, &[("a", "line\nbreak".to_owned())]);
        assert!(matches!(result, Err(Error::InvalidConfig { .. })));
        for kind in ["", "Topic", "topic config", "a\nb"] {
            let result = encode_props(kind, 1, &[]);
            assert!(
                matches!(result, Err(Error::InvalidConfig { .. })),
                "kind {kind:?}"
            );
        }
    }

    fn pairs_strategy() -> impl Strategy<Value = Vec<(String, String)>> {
        prop::collection::vec(("[a-z0-9_.-]{1,12}", "[^\n]{0,24}"), 0..8)
    }

    fn as_refs(pairs: &[(String, String)]) -> Vec<(&str, String)> {
        pairs.iter().map(|(k, v)| (k.as_str(), v.clone())).collect()
    }

    proptest! {
        #[test]
        fn props_round_trip(pairs in pairs_strategy(), version in 0u32..=u32::MAX) {
            let bytes = encode_props("topic-config", version, &as_refs(&pairs)).unwrap();
            let decoded = decode_props(Path::new("t"), &bytes, "topic-config", u32::MAX).unwrap();
            prop_assert_eq!(decoded, (version, pairs));
        }

        #[test]
        fn props_damage_is_always_detected(pairs in pairs_strategy()) {
            let bytes = encode_props("topic-config", 1, &as_refs(&pairs)).unwrap();
            for len in 0..bytes.len() {
                let result = decode_props(Path::new("t"), &bytes[..len], "topic-config", 1);
                prop_assert!(result.is_err(), "truncation to {} accepted", len);
            }
            for i in 0..bytes.len() {
                for bit in 0..8 {
                    let mut damaged = bytes.clone();
                    damaged[i] ^= 1 << bit;
                    let result = decode_props(Path::new("t"), &damaged, "topic-config", 1);
                    prop_assert!(result.is_err(), "bit {} of byte {} accepted", bit, i);
                }
            }
        }

        #[test]
        fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_props(Path::new("t"), &bytes, "k", 1);
            let _ = decode_props(Path::new("t"), &with_crc(&bytes), "k", 1);
            let mut framed = b"# logbus k v1\n".to_vec();
            framed.extend_from_slice(&bytes);
            let _ = decode_props(Path::new("t"), &with_crc(&framed), "k", 1);
        }
    }
}
