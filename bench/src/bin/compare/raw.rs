//! What every ratio is taken against, and the ceilings: plain `write()` /
//! `read()`, a pre-sized memory map, a crossbeam channel, `fdatasync` loops.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::table::{Sample, lat_of};
use crate::util::Timer;
use crate::util::payload;

const IO_BUF: usize = 64 << 10;

/// `[u32 len][payload]` records through a 64 KiB `BufWriter`, no fsync.
#[inline(never)] // a frame of its own in profiles
pub fn write(path: &Path, records: u64, size: usize) -> Sample {
    let data = payload(size);
    let file = File::create(path).expect("create raw file");
    let start = Timer::start();
    let mut w = BufWriter::with_capacity(IO_BUF, file);
    let len = (data.len() as u32).to_le_bytes();
    for _ in 0..records {
        w.write_all(&len).unwrap();
        w.write_all(data).unwrap();
    }
    w.flush().unwrap();
    start.sample(records)
}

/// Sequential `read()` into a 64 KiB buffer, walking every record and
/// touching its last payload byte.
#[inline(never)] // a frame of its own in profiles
pub fn read(path: &Path, expect: u64) -> Sample {
    let mut file = File::open(path).expect("open raw file");
    let start = Timer::start();
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
    assert_eq!(count, expect, "raw read count");
    std::hint::black_box((sum, touch));
    start.sample(count)
}

/// The same `[u32 len][payload]` records copied into a shared map of a file
/// sized up front with `set_len` (sparse: each first-touched page faults and
/// allocates a block), no msync. Map and `set_len` are timed.
#[inline(never)] // a frame of its own in profiles
pub fn mmap_append(path: &Path, records: u64, size: usize) -> Sample {
    let data = payload(size);
    let rec = 4 + data.len();
    let total = records as usize * rec;
    let start = Timer::start();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .expect("create mmap file");
    file.set_len(total as u64).unwrap();
    // SAFETY: the file was created above, is private to this benchmark and
    // is not truncated while mapped.
    let mut map = unsafe { memmap2::MmapMut::map_mut(&file) }.expect("map");
    let len = (data.len() as u32).to_le_bytes();
    for chunk in map.chunks_exact_mut(rec) {
        chunk[..4].copy_from_slice(&len);
        chunk[4..].copy_from_slice(data);
    }
    drop(map);
    start.sample(records)
}

/// Walks a file written by [`mmap_append`] (or [`write`]: same bytes)
/// through a read-only map, touching every record's last byte.
#[inline(never)] // a frame of its own in profiles
pub fn mmap_read(path: &Path, expect: u64) -> Sample {
    let start = Timer::start();
    let file = File::open(path).expect("open mmap file");
    // SAFETY: as in `mmap_append`; nothing writes the file while it is mapped.
    let map = unsafe { memmap2::Mmap::map(&file) }.expect("map");
    let (mut pos, mut count, mut sum, mut touch) = (0usize, 0u64, 0u64, 0u8);
    while pos + 4 <= map.len() {
        let len = u32::from_le_bytes(map[pos..pos + 4].try_into().unwrap()) as usize;
        touch ^= map[pos + 3 + len];
        sum += len as u64;
        count += 1;
        pos += 4 + len;
    }
    assert_eq!(count, expect, "mmap read count");
    std::hint::black_box((sum, touch));
    start.sample(count)
}

/// One thread sends a copy of each payload (`Vec<u8>`) through
/// `bounded(1024)`, another receives and touches it: the in-memory ceiling,
/// nothing persisted.
#[inline(never)] // a frame of its own in profiles
pub fn channel_throughput(records: u64, size: usize) -> Sample {
    let data = payload(size);
    let (tx, rx) = crossbeam_channel::bounded::<Vec<u8>>(1024);
    let start = Instant::now();
    std::thread::scope(|s| {
        let consumer = s.spawn(move || {
            let (mut n, mut touch) = (0u64, 0u8);
            while let Ok(v) = rx.recv() {
                touch ^= v[v.len() - 1];
                n += 1;
            }
            std::hint::black_box(touch);
            n
        });
        for _ in 0..records {
            tx.send(data.to_vec()).unwrap();
        }
        drop(tx);
        assert_eq!(consumer.join().unwrap(), records);
    });
    Sample::throughput(records, start.elapsed().as_secs_f64())
}

/// `pwrite()` of one record into a preallocated, zero-filled and synced
/// file, then `fdatasync`: the cheapest durable append (no size or extent
/// change to journal).
pub fn fsync_prealloc(path: &Path, records: u64) -> Sample {
    use std::os::unix::fs::FileExt;
    let file = File::create(path).expect("create fsync file");
    let size = records as usize * 104;
    file.write_all_at(&vec![0u8; size], 0).unwrap();
    file.sync_all().unwrap();
    let mut rec = Vec::with_capacity(104);
    rec.extend_from_slice(&100u32.to_le_bytes());
    rec.extend_from_slice(payload(100));
    let mut lat = Vec::with_capacity(records as usize);
    let start = Instant::now();
    for i in 0..records {
        let t = Instant::now();
        file.write_all_at(&rec, i * 104).unwrap();
        file.sync_data().unwrap();
        lat.push(t.elapsed().as_nanos() as u64);
    }
    Sample {
        records,
        secs: start.elapsed().as_secs_f64(),
        lat: lat_of(lat),
        value: None,
        cpu_secs: None,
    }
}

/// `write()` of `group` records then `fdatasync`, `records / group` times,
/// appending to a growing file: the group-commit ceiling under
/// `Durability::Always` at a group size of `group`.
pub fn fsync_groups(path: &Path, records: u64, group: usize) -> Sample {
    let mut file = File::create(path).expect("create fsync file");
    let mut rec = Vec::with_capacity(group * 104);
    for _ in 0..group {
        rec.extend_from_slice(&100u32.to_le_bytes());
        rec.extend_from_slice(payload(100));
    }
    let rounds = (records / group as u64).max(1);
    let mut lat = Vec::with_capacity(rounds as usize);
    let start = Instant::now();
    for _ in 0..rounds {
        let t = Instant::now();
        file.write_all(&rec).unwrap();
        file.sync_data().unwrap();
        lat.push(t.elapsed().as_nanos() as u64);
    }
    Sample {
        records: rounds * group as u64,
        secs: start.elapsed().as_secs_f64(),
        lat: lat_of(lat),
        value: None,
        cpu_secs: None,
    }
}

/// A paced one-way handoff through a crossbeam channel: what a thread
/// wake-up costs on this machine, with no log in between. Latency =
/// receive time minus the send time carried in the message.
pub fn channel_latency(records: u64, every: Duration) -> Sample {
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
        value: None,
        cpu_secs: None,
    }
}
