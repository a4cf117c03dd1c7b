//! Event-store figures: appends per second with the version check, the
//! index build at open, and reading one stream among many.
//!
//! `cargo run --release --example store_bench [events]` (default 1 M
//! events of 100 bytes over 10 k streams, 4 partitions, `Durability::Os`).

use std::time::Instant;

use logbus::{Durability, EventStore, ExpectedVersion, Log, LogConfig, StoreConfig};

fn main() -> logbus::Result<()> {
    let events: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let streams = 10_000u64;
    let dir = std::env::temp_dir().join(format!("logbus-store-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let payload = vec![b'x'; 100];

    let log = Log::open(&dir, LogConfig::default())?;
    let store = EventStore::open(&log, "bench", StoreConfig::new(4))?;
    let mut versions = vec![None::<u64>; streams as usize];
    let start = Instant::now();
    for i in 0..events {
        let s = (i % streams) as usize;
        let r = store.append(
            &format!("stream-{s}"),
            ExpectedVersion::from(versions[s]),
            [payload.clone()],
        )?;
        versions[s] = r.version;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "append, 1 event per call, checked version: {events} in {secs:.2} s = {:.0} k events/s",
        events as f64 / secs / 1e3
    );

    let batch = 10u64;
    let start = Instant::now();
    for i in 0..events / batch {
        let s = (i % streams) as usize;
        let r = store.append(
            &format!("stream-{s}"),
            ExpectedVersion::from(versions[s]),
            (0..batch).map(|_| payload.clone()),
        )?;
        versions[s] = r.version;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "append, {batch} events per call: {events} in {secs:.2} s = {:.0} k events/s",
        events as f64 / secs / 1e3
    );
    let total = events * 2;
    drop(store);
    log.close()?;

    let log = Log::open(&dir, LogConfig::default())?;
    let start = Instant::now();
    let store = EventStore::open(&log, "bench", StoreConfig::new(4))?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "open (index build) over {total} events, {} streams: {:.0} ms = {:.1} M events/s",
        store.stats().streams,
        secs * 1e3,
        total as f64 / secs / 1e6
    );

    let start = Instant::now();
    let rounds = 1_000u64;
    let mut read = 0;
    for i in 0..rounds {
        read += store
            .read_stream(&format!("stream-{}", i * 7 % streams), 0)?
            .len();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "read_stream of one stream ({} events) among {total}: {:.0} us per stream",
        read as u64 / rounds,
        secs * 1e6 / rounds as f64
    );
    let start = Instant::now();
    let all = store.replay_all().count();
    let secs = start.elapsed().as_secs_f64();
    println!(
        "replay_all: {all} events in {:.0} ms = {:.1} M events/s",
        secs * 1e3,
        all as f64 / secs / 1e6
    );
    log.close()?;
    let _ = std::fs::remove_dir_all(&dir);
    always(&dir)?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// `Durability::Always`: 4 threads appending to their own streams of one
/// partition, so their appends can share fdatasyncs (group commit).
fn always(dir: &std::path::Path) -> logbus::Result<()> {
    let log = Log::open(dir, LogConfig::default().durability(Durability::Always))?;
    let store = EventStore::open(&log, "always", StoreConfig::new(1))?;
    let per_thread = 500;
    let start = Instant::now();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || -> logbus::Result<()> {
                let stream = format!("writer-{t}");
                for v in 0..per_thread {
                    let expected = if v == 0 {
                        ExpectedVersion::NoStream
                    } else {
                        ExpectedVersion::Exact(v - 1)
                    };
                    store.append(&stream, expected, [vec![b'x'; 100]])?;
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join().expect("writer panicked")?;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "append under Durability::Always, 4 threads, 1 partition: {:.1} k appends/s",
        (4 * per_thread) as f64 / secs / 1e3
    );
    log.close()
}
