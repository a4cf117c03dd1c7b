//! The bytes on disk are Kafka's RecordBatch v2 and stay stable: a known
//! record written through the public API must produce exactly the batch
//! dumped in docs/FORMAT.md. If this fails, the format changed: bump
//! `FORMAT_VERSION` and document the migration.

mod common;

use std::sync::Arc;

use common::{TempDir, log_files};
use logbus::*;

/// The batch documented in docs/FORMAT.md ("A real batch").
const DOCUMENTED_BATCH: &str = "\
00000000000000000000004e00000000\
0251d3a38e0000000000010000018bcf\
e568000000018bcfe56801ffffffffff\
ffffffffffffffffff00000002240000\
00066b65790a76616c75650202680276\
12000202066b65790100";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn written_batch_matches_the_documented_bytes() {
    let dir = TempDir::new("format");
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let log = Log::open(dir.path(), LogConfig::default().clock(clock.clone())).unwrap();
    log.create_topic("format", TopicConfig::new(1)).unwrap();
    let producer = log.producer("format").unwrap();
    producer
        .send_batch(&[
            Record::new("value").key("key").header("h", "v"),
            Record::tombstone("key").timestamp(1_700_000_000_001),
        ])
        .unwrap();
    log.close().unwrap();
    let files = log_files(&dir.path().join("format").join("0"));
    assert_eq!(files.len(), 1);
    let bytes = std::fs::read(&files[0]).unwrap();
    println!("batch ({} bytes):\n{}", bytes.len(), hexdump(&bytes));
    assert_eq!(hex(&bytes), DOCUMENTED_BATCH);
}

fn hexdump(bytes: &[u8]) -> String {
    bytes
        .chunks(16)
        .enumerate()
        .map(|(i, c)| {
            format!(
                "{:04x}  {}\n",
                i * 16,
                c.iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        })
        .collect()
}
