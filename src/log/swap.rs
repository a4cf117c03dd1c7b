//! Swapping cleaned segments in, crash-safely, and finishing or rolling
//! back an interrupted swap on open. The protocol (docs/FORMAT.md,
//! "Compaction swap"):
//!
//! 1. the cleaner writes `B.log.cleaned` (+ `.index.cleaned`,
//!    `.timeindex.cleaned`) and syncs them;
//! 2. renames them to `B.E.index.swap`, `B.E.timeindex.swap`, then
//!    `B.E.log.swap` (`E`: the offset after the last replaced segment), and
//!    syncs the directory. **`B.E.log.swap` on disk is the commit point**;
//! 3. renames each replaced segment's files to `*.deleted`;
//! 4. renames the `.swap` files into place (indexes first, the log last)
//!    and syncs the directory;
//! 5. unlinks the `.deleted` files.
//!
//! On open: `.cleaned` files, and `.swap` files without their
//! `B.E.log.swap`, are removed (roll back: the old segments are
//! untouched); for each `B.E.log.swap` every segment file with a base
//! offset in `[B, E)` is removed and the `.swap` files are renamed into
//! place (roll forward); `.deleted` files are removed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::clean::cleaned_path;
use super::segment::{Segment, file_stem};
use crate::error::{Error, Result};

const EXTS: [&str; 3] = ["index", "timeindex", "log"];

fn swap_path(dir: &Path, base: u64, end: u64, ext: &str) -> PathBuf {
    dir.join(format!("{}.{}.{ext}.swap", file_stem(base), file_stem(end)))
}

fn final_path(dir: &Path, base: u64, ext: &str) -> PathBuf {
    dir.join(format!("{}.{ext}", file_stem(base)))
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(|e| Error::io(to, e))
}

fn remove_if_present(path: &Path) -> Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Steps 2 to 5: replaces `old` (consecutive sealed segments, made durable
/// by the caller) with the synced `.cleaned` segment at their first base
/// offset. `end` is the offset after the last of them.
pub(crate) fn commit(dir: &Path, old: &[Arc<Segment>], end: u64) -> Result<()> {
    let base = old.first().map_or(0, |s| s.base_offset());
    for (i, ext) in EXTS.iter().enumerate() {
        rename(
            &cleaned_path(dir, base, ext),
            &swap_path(dir, base, end, ext),
        )?;
        if i == 1 {
            failpoint("swap:partial-swap", dir)?;
        }
    }
    crate::io::fsync_dir(dir)?;
    failpoint("swap:committed", dir)?;
    for (i, segment) in old.iter().enumerate() {
        // The log first: a segment without its `.log` is gone for `open`.
        for path in segment.file_paths() {
            let mut deleted = path.clone().into_os_string();
            deleted.push(".deleted");
            match std::fs::rename(&path, &deleted) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
        if i == 0 {
            failpoint("swap:partial-delete", dir)?;
        }
    }
    failpoint("swap:old-deleted", dir)?;
    for (i, ext) in EXTS.iter().enumerate() {
        rename(&swap_path(dir, base, end, ext), &final_path(dir, base, ext))?;
        if i == 1 {
            failpoint("swap:partial-install", dir)?;
        }
    }
    crate::io::fsync_dir(dir)?;
    failpoint("swap:installed", dir)?;
    for segment in old {
        for path in segment.file_paths() {
            let mut deleted = path.into_os_string();
            deleted.push(".deleted");
            remove_if_present(Path::new(&deleted))?;
        }
    }
    Ok(())
}

/// Parses `B.E.log.swap` into `(B, E)`.
fn parse_swap_name(name: &str) -> Option<(u64, u64)> {
    let stems = name.strip_suffix(".log.swap")?;
    let (b, e) = stems.split_once('.')?;
    let digits = |s: &str| s.len() == 20 && s.bytes().all(|c| c.is_ascii_digit());
    if !digits(b) || !digits(e) {
        return None;
    }
    Some((b.parse().ok()?, e.parse().ok()?))
}

/// Base offset of a segment file name (`B.log`, `B.index`, `B.timeindex`).
fn segment_file_base(name: &str) -> Option<u64> {
    let (stem, ext) = name.split_once('.')?;
    let ok = stem.len() == 20
        && stem.bytes().all(|c| c.is_ascii_digit())
        && matches!(ext, "log" | "index" | "timeindex");
    ok.then(|| stem.parse().ok()).flatten()
}

/// Finishes or rolls back whatever swap a crash interrupted in `dir`;
/// returns the names of the files it removed.
pub(crate) fn recover(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    let mut removed = Vec::new();
    let mut changed = false;
    let committed: Vec<(u64, u64)> = names.iter().filter_map(|n| parse_swap_name(n)).collect();
    for name in &names {
        // Index `.swap` files renamed before their log's: not committed.
        let uncommitted_swap = name.ends_with(".swap")
            && !committed
                .iter()
                .any(|&(b, e)| name.starts_with(&format!("{}.{}.", file_stem(b), file_stem(e))));
        if name.ends_with(".cleaned") || uncommitted_swap {
            remove_if_present(&dir.join(name))?;
            removed.push(name.clone());
            changed = true;
        }
    }
    for &(base, end) in &committed {
        // Committed: roll forward. Old segment files in [base, end) go; at
        // `base` itself an index is old only while its `.swap` still waits
        // (step 4 installs indexes before the log).
        for name in &names {
            let Some(b) = segment_file_base(name) else {
                continue;
            };
            if !(base..end).contains(&b) {
                continue;
            }
            let ext = name.split_once('.').map_or("", |(_, e)| e);
            let old = b != base || ext == "log" || swap_path(dir, base, end, ext).exists();
            if old && remove_if_present(&dir.join(name))? {
                removed.push(name.clone());
            }
        }
        for ext in EXTS {
            let swap = swap_path(dir, base, end, ext);
            if swap.exists() {
                rename(&swap, &final_path(dir, base, ext))?;
            }
        }
        changed = true;
    }
    for name in &names {
        if name.ends_with(".deleted") && remove_if_present(&dir.join(name))? {
            removed.push(name.clone());
            changed = true;
        }
    }
    if changed {
        crate::io::fsync_dir(dir)?;
    }
    Ok(removed)
}

/// A crash point for tests: with a failpoint armed for `step` and a path
/// containing `dir`, the swap stops here as if the process had died.
fn failpoint(step: &'static str, dir: &Path) -> Result<()> {
    #[cfg(test)]
    if crate::io::failpoints::fire_step(step, dir) {
        return Err(Error::io(
            dir,
            std::io::Error::other(format!("failpoint {step}")),
        ));
    }
    let _ = (step, dir);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swap_and_segment_names_parse() {
        let name = format!("{}.{}.log.swap", file_stem(5), file_stem(90));
        assert_eq!(parse_swap_name(&name), Some((5, 90)));
        assert_eq!(parse_swap_name("5.90.log.swap"), None);
        assert_eq!(parse_swap_name(&format!("{}.log", file_stem(5))), None);
        assert_eq!(
            segment_file_base(&format!("{}.timeindex", file_stem(7))),
            Some(7)
        );
        assert_eq!(
            segment_file_base(&format!("{}.log.deleted", file_stem(7))),
            None
        );
        assert_eq!(segment_file_base("cleaner.checkpoint"), None);
    }
}
