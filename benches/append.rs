//! Append throughput: `send_batch` of 1000 × 100 B records, the same
//! records pushed into a `BatchBuilder`, and single
//! `send()` of 100 B, one producer thread, one partition, `Durability::Os`.
//!
//! Each sample appends into a fresh log (created and removed outside the
//! timed region), so disk use stays bounded. `cargo bench --bench append`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use logbus::{Log, LogConfig, Producer, Record, TopicConfig};

static PAYLOAD: [u8; 100] = [b'x'; 100];
const BATCH: usize = 1000;

/// A fresh one-partition log in a temp dir; removed on drop.
struct Fresh {
    log: Option<Log>,
    dir: PathBuf,
}

impl Fresh {
    fn new() -> (Fresh, Producer) {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "logbus-bench-append-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let log = Log::open(&dir, LogConfig::default()).unwrap();
        log.create_topic("t", TopicConfig::new(1)).unwrap();
        let producer = log.producer("t").unwrap();
        (
            Fresh {
                log: Some(log),
                dir,
            },
            producer,
        )
    }
}

impl Drop for Fresh {
    fn drop(&mut self) {
        if let Some(log) = self.log.take() {
            let _ = log.close();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn append(c: &mut Criterion) {
    let value = Bytes::from_static(&PAYLOAD);
    let mut g = c.benchmark_group("append");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));

    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("send_batch_1000x100B", |b| {
        b.iter_custom(|iters| {
            let (fresh, producer) = Fresh::new();
            let mut batch: Vec<Record> = Vec::with_capacity(BATCH);
            let start = Instant::now();
            for _ in 0..iters {
                batch.clear();
                batch.extend((0..BATCH).map(|_| Record::new(value.clone())));
                producer.send_batch(&batch).unwrap();
            }
            let elapsed = start.elapsed();
            drop(fresh);
            elapsed
        })
    });

    g.bench_function("batch_builder_1000x100B", |b| {
        b.iter_custom(|iters| {
            let (fresh, producer) = Fresh::new();
            let mut batch = producer.batch();
            let start = Instant::now();
            for _ in 0..iters {
                for _ in 0..BATCH {
                    batch.push_value(&PAYLOAD).unwrap();
                }
                batch.send().unwrap();
            }
            let elapsed = start.elapsed();
            drop(batch);
            drop(fresh);
            elapsed
        })
    });

    g.throughput(Throughput::Elements(1));
    g.bench_function("send_100B", |b| {
        b.iter_custom(|iters| {
            let (fresh, producer) = Fresh::new();
            let start = Instant::now();
            for _ in 0..iters {
                producer.send(Record::new(value.clone())).unwrap();
            }
            let elapsed = start.elapsed();
            drop(fresh);
            elapsed
        })
    });
    g.finish();
}

criterion_group!(benches, append);
criterion_main!(benches);
