//! What a user would pick instead of logbus: SQLite (rusqlite, bundled) and
//! the `commitlog` crate, writing and reading the same payloads.

use std::path::Path;

use commitlog::message::{MessageBuf, MessageSet};
use commitlog::{CommitLog, LogOptions, ReadLimit};

use crate::table::Sample;
use crate::util::Timer;
use crate::util::payload;

const SQLITE_TXN: u64 = 10_000;

fn sqlite_open(path: &Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(path).expect("open sqlite");
    c.pragma_update(None, "journal_mode", "WAL").unwrap();
    c.pragma_update(None, "synchronous", "NORMAL").unwrap();
    c
}

/// `INSERT` into `log(offset INTEGER PRIMARY KEY, value BLOB)` in
/// transactions of 10 000 rows, WAL, `synchronous=NORMAL` (no fsync per
/// commit; fsync at WAL checkpoints).
#[inline(never)] // a frame of its own in profiles
pub fn sqlite_append(path: &Path, records: u64, size: usize) -> Sample {
    let data = payload(size);
    let mut c = sqlite_open(path);
    c.execute(
        "CREATE TABLE log (offset INTEGER PRIMARY KEY, value BLOB NOT NULL)",
        [],
    )
    .unwrap();
    let start = Timer::start();
    let mut offset = 0u64;
    while offset < records {
        let tx = c.transaction().unwrap();
        {
            let mut st = tx
                .prepare_cached("INSERT INTO log (offset, value) VALUES (?1, ?2)")
                .unwrap();
            let end = (offset + SQLITE_TXN).min(records);
            while offset < end {
                st.execute(rusqlite::params![offset as i64, data]).unwrap();
                offset += 1;
            }
        }
        tx.commit().unwrap();
    }
    drop(c);
    start.sample(records)
}

/// `SELECT offset, value FROM log ORDER BY offset`, checking the order and
/// touching every value's last byte (borrowed, no copy).
#[inline(never)] // a frame of its own in profiles
pub fn sqlite_read(path: &Path, expect: u64) -> Sample {
    let c = sqlite_open(path);
    let start = Timer::start();
    let mut st = c
        .prepare("SELECT offset, value FROM log ORDER BY offset")
        .unwrap();
    let mut rows = st.query([]).unwrap();
    let (mut next, mut touch) = (0u64, 0u8);
    while let Some(row) = rows.next().unwrap() {
        let off: i64 = row.get(0).unwrap();
        assert_eq!(off as u64, next, "sqlite out of order");
        let v = row.get_ref(1).unwrap().as_blob().unwrap();
        touch ^= v[v.len() - 1];
        next += 1;
    }
    assert_eq!(next, expect, "sqlite read count");
    std::hint::black_box(touch);
    start.sample(next)
}

/// `commitlog` 0.2 with default options, one `append` per batch of at most
/// 1000 records or 512 KiB (it `write()`s each batch, never fsyncs).
#[inline(never)] // a frame of its own in profiles
pub fn commitlog_append(dir: &Path, records: u64, size: usize) -> Sample {
    let data = payload(size);
    let per_batch = (1000).min((512 << 10) / size) as u64;
    let mut log = CommitLog::new(LogOptions::new(dir)).expect("open commitlog");
    let start = Timer::start();
    let mut buf = MessageBuf::default();
    let mut left = records;
    while left > 0 {
        let n = left.min(per_batch);
        buf.clear();
        for _ in 0..n {
            buf.push(data).unwrap();
        }
        log.append(&mut buf).expect("commitlog append");
        left -= n;
    }
    log.flush().unwrap();
    start.sample(records)
}

/// `commitlog::read` of 1 MiB at a time, checking offsets and touching
/// every payload's last byte.
#[inline(never)] // a frame of its own in profiles
pub fn commitlog_read(dir: &Path, expect: u64) -> Sample {
    let log = CommitLog::new(LogOptions::new(dir)).expect("open commitlog");
    let start = Timer::start();
    let (mut next, mut touch) = (0u64, 0u8);
    while next < expect {
        let buf = log
            .read(next, ReadLimit::max_bytes(1 << 20))
            .expect("commitlog read");
        assert!(!buf.is_empty(), "commitlog read nothing at {next}");
        for m in buf.iter() {
            assert_eq!(m.offset(), next, "commitlog out of order");
            let v = m.payload();
            touch ^= v[v.len() - 1];
            next += 1;
        }
    }
    std::hint::black_box(touch);
    start.sample(next)
}
