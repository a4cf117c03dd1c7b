//! Read throughput over a prefilled partition (1M × 100 B records, page
//! cache warm): `Consumer::poll` of up to 10 000 records, `Partition::read`
//! of 1000 records, and raw `Partition::fetch` of 1 MiB. Each pass wraps
//! around to offset 0 at the end of the log. `cargo bench --bench read`.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, Throughput, black_box, criterion_group, criterion_main};
use logbus::{ConsumerConfig, Log, LogConfig, Record, TopicConfig, TopicPartition};

static PAYLOAD: [u8; 100] = [b'x'; 100];
const RECORDS: u64 = 1_000_000;

struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn read(c: &mut Criterion) {
    let dir =
        TempDir(std::env::temp_dir().join(format!("logbus-bench-read-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    let log = Log::open(&dir.0, LogConfig::default()).unwrap();
    log.create_topic("t", TopicConfig::new(1)).unwrap();
    let producer = log.producer("t").unwrap();
    let value = Bytes::from_static(&PAYLOAD);
    let batch: Vec<Record> = (0..1000).map(|_| Record::new(value.clone())).collect();
    for _ in 0..RECORDS / 1000 {
        producer.send_batch(&batch).unwrap();
    }
    let partition = log.topic("t").unwrap().partition(0).unwrap().clone();
    let tp = TopicPartition::new("t", 0);

    let mut g = c.benchmark_group("read");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));

    const POLL: usize = 10_000;
    g.throughput(Throughput::Elements(POLL as u64));
    g.bench_function("consumer_poll_10000x100B", |b| {
        let mut consumer = log.consumer(ConsumerConfig::default().max_poll_records(POLL));
        consumer.assign(std::slice::from_ref(&tp)).unwrap();
        b.iter(|| {
            let records = consumer.poll(Duration::ZERO).unwrap();
            let (mut last, mut sum) = (0, 0usize);
            for r in &records {
                last = r.offset;
                sum += r.value.map_or(0, <[u8]>::len);
            }
            if last + 1 >= RECORDS {
                consumer.seek(&tp, 0).unwrap();
            }
            black_box(sum)
        })
    });

    const READ: usize = 1000;
    g.throughput(Throughput::Elements(READ as u64));
    g.bench_function("partition_read_1000x100B", |b| {
        let mut offset = 0u64;
        b.iter(|| {
            let records = partition.read(offset, READ).unwrap();
            offset = records.last().unwrap().offset + 1;
            if offset >= RECORDS {
                offset = 0;
            }
            black_box(records.len())
        })
    });

    // Raw batches; throughput in records (about 9 500 per 1 MiB fetch).
    let per_fetch = {
        let f = partition.fetch(0, 1 << 20).unwrap();
        let mut n = 0u64;
        let mut pos = 0;
        let b = &f.bytes[..];
        while pos + 61 <= b.len() {
            n += u64::from(u32::from_be_bytes(
                b[pos + 57..pos + 61].try_into().unwrap(),
            ));
            pos += i32::from_be_bytes(b[pos + 8..pos + 12].try_into().unwrap()) as usize + 12;
        }
        n
    };
    g.throughput(Throughput::Elements(per_fetch));
    g.bench_function("partition_fetch_1MiB_raw", |b| {
        let mut offset = 0u64;
        b.iter(|| {
            let f = partition.fetch(offset, 1 << 20).unwrap();
            offset += per_fetch;
            if offset + per_fetch > RECORDS {
                offset = 0;
            }
            black_box(f.bytes.len())
        })
    });
    g.finish();
    log.close().unwrap();
}

criterion_group!(benches, read);
criterion_main!(benches);
