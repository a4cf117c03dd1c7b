//! A full disk is an error, never a crash: both append paths (stores through
//! the map onto `fallocate`d blocks, and `pwrite` of large batches) report
//! ENOSPC as `Error::Io`, nothing acknowledged is lost, and the log reopens.
//!
//! Needs root to mount a small tmpfs; elsewhere the test prints why it
//! skipped (CI runs as root).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::TempDir;
use logbus::*;

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop.
struct SmallDisk {
    _dir: TempDir,
    mount: PathBuf,
}

impl SmallDisk {
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = TempDir::new("disk-full");
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&mount)
            .status();
        match status {
            Ok(s) if s.success() => Some(SmallDisk { _dir: dir, mount }),
            other => {
                eprintln!("skipping: cannot mount a tmpfs here ({other:?})");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        &self.mount
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mount).status();
    }
}

fn is_enospc(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if source.raw_os_error() == Some(libc_enospc()))
}

fn libc_enospc() -> i32 {
    28 // ENOSPC on Linux
}

#[test]
fn full_disk_is_an_error_and_loses_nothing() {
    let Some(disk) = SmallDisk::mount("4m") else {
        return;
    };
    let dir = disk.path().join("log");
    let topic = TopicConfig::new(1)
        .segment_bytes(1 << 20)
        .max_record_bytes(128 << 10);
    let mut acked: Vec<(u64, Vec<u8>)> = Vec::new();
    {
        let log = Log::open(&dir, LogConfig::default()).unwrap();
        log.create_topic("t", topic).unwrap();
        let producer = log.producer("t").unwrap();
        // Alternate small records (stored through the map) and large batches
        // (written with pwrite) until the disk is full.
        let mut errors = Vec::new();
        for round in 0u32.. {
            let result = if round % 2 == 0 {
                let value = format!("small-{round}-{}", "s".repeat(900)).into_bytes();
                producer
                    .send(Record::new(value.clone()))
                    .map(|m| vec![(m.offset, value)])
            } else {
                let values: Vec<Vec<u8>> = (0..60)
                    .map(|i| format!("big-{round}-{i}-{}", "b".repeat(900)).into_bytes())
                    .collect();
                let records: Vec<Record> = values.iter().map(|v| Record::new(v.clone())).collect();
                producer
                    .send_batch(&records)
                    .map(|metas| metas.iter().map(|m| m.offset).zip(values).collect())
            };
            match result {
                Ok(written) => acked.extend(written),
                Err(e) => {
                    assert!(is_enospc(&e), "expected ENOSPC, got {e:?}");
                    errors.push(round % 2);
                    if errors.contains(&0) && errors.contains(&1) || errors.len() > 20 {
                        break;
                    }
                }
            }
        }
        assert!(
            acked.len() > 100,
            "the disk filled too early: {} records",
            acked.len()
        );
        assert!(
            errors.contains(&0) && errors.contains(&1),
            "both append paths must meet ENOSPC: {errors:?}"
        );
        // Everything acknowledged reads back while the disk is full.
        let p = log.topic("t").unwrap().partition(0).unwrap().clone();
        assert_eq!(p.log_end_offset(), acked.last().unwrap().0 + 1);
        let got = common::read_all(&log, "t", 0);
        assert_eq!(got.len(), acked.len());
        // Closing may fail for lack of space; it must not lose data.
        let _ = log.close();
    }
    let log = Log::open(&dir, LogConfig::default()).unwrap();
    let got = common::read_all(&log, "t", 0);
    assert_eq!(got.len(), acked.len());
    for (r, (offset, value)) in got.iter().zip(&acked) {
        assert_eq!(r.offset, *offset);
        assert_eq!(r.value.as_deref(), Some(&value[..]));
    }
}

/// A `BatchBuilder` send that meets ENOSPC after some of its batches were
/// written keeps exactly the records not written: the log holds a prefix of
/// the send, the builder the rest, nothing twice and nothing lost.
#[test]
fn a_builder_send_cut_by_a_full_disk_keeps_the_unwritten_rest() {
    let Some(disk) = SmallDisk::mount("4m") else {
        return;
    };
    let dir = disk.path().join("log");
    let topic = TopicConfig::new(1)
        .segment_bytes(1 << 20)
        .max_record_bytes(16 << 10);
    let log = Log::open(&dir, LogConfig::default()).unwrap();
    log.create_topic("t", topic).unwrap();
    let producer = log.producer("t").unwrap();
    let p = log.topic("t").unwrap().partition(0).unwrap().clone();
    let value = |round: u32, i: u32| format!("r{round}-{i}-{}", "v".repeat(400)).into_bytes();
    let mut batch = producer.batch();
    let mut cut = None;
    for round in 0u32..100 {
        // About 100 KB per send: several 16 KiB batches.
        for i in 0..250 {
            batch.push_value(&value(round, i)).unwrap();
        }
        let before = p.log_end_offset();
        match batch.send() {
            Ok(sent) => assert_eq!(sent.offsets(), before..before + 250),
            Err(e) => {
                assert!(is_enospc(&e), "expected ENOSPC, got {e:?}");
                cut = Some((round, before, p.log_end_offset()));
                break;
            }
        }
    }
    let (round, before, after) = cut.expect("the disk never filled");
    let written = (after - before) as usize;
    assert!(
        written > 0 && written < 250,
        "the disk filled inside the send: {written}"
    );
    assert_eq!(
        batch.len(),
        250 - written,
        "the builder keeps exactly the unwritten records"
    );
    let got = common::read_all(&log, "t", 0);
    assert_eq!(got.len() as u64, after);
    for (i, r) in got[before as usize..].iter().enumerate() {
        assert_eq!(r.value.as_deref(), Some(&value(round, i as u32)[..]));
    }
}
