//! Entry points for the fuzz targets in `fuzz/` and for their proptest
//! corpus runner (the tests at the bottom, part of the default `cargo test`).
//!
//! Each function takes arbitrary bytes, must never panic on them, and
//! panics (`assert!`) only when logbus breaks one of its own promises: two
//! decoders disagree, a record whose batch fails its CRC is returned, what
//! survives recovery is not a prefix of what was written, or a second open
//! sees something else than the first. Exposed with the `fuzzing` feature;
//! not part of the public API.
//!
//! Random bytes rarely get past a CRC, so the batch and directory targets
//! also build valid data from their input and then damage it where the
//! input says (optionally fixing the CRC up afterwards): the fuzzer reaches
//! the record decoder and the recovery paths, not just the CRC check.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use crate::log::index::{Entry, IndexFile, OffsetEntry, TimeEntry};
use crate::log::record::{self, BatchHeader};
use crate::{Error, Log, LogConfig, Record, TopicConfig};

mod state;
pub use state::{decode_offsets, decode_window};

/// A reader over the fuzz input that never fails: past the end it yields zeros.
struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Input<'a> {
    fn new(data: &'a [u8]) -> Self {
        Input { data, pos: 0 }
    }

    fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let start = self.pos.min(self.data.len());
        let end = start.saturating_add(n).min(self.data.len());
        self.pos = self.pos.saturating_add(n);
        &self.data[start..end]
    }

    /// Up to `max` bytes, as many as the next length field says.
    fn chunk(&mut self, max: usize) -> &'a [u8] {
        let n = usize::from(self.u16()) % (max + 1);
        self.bytes(n)
    }

    fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }
}

/// A record decoded by either decoder, for comparing them.
#[derive(Debug, PartialEq, Eq)]
struct Decoded {
    offset: u64,
    timestamp: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

/// Decodes `batch` with the owning and the borrowing decoder; both must
/// accept exactly the same records and fail at the same one.
fn decode_both(batch: &[u8], header: &BatchHeader) -> Vec<Result<Decoded, ()>> {
    let bytes = Bytes::copy_from_slice(batch);
    let owned: Vec<Result<Decoded, ()>> = match record::records(&bytes) {
        Ok(iter) => iter
            .map(|r| {
                r.map(|r| Decoded {
                    offset: r.offset as u64,
                    timestamp: r.timestamp,
                    key: r.key.map(|k| k.to_vec()),
                    value: r.value.map(|v| v.to_vec()),
                    headers: r
                        .headers
                        .into_iter()
                        .map(|h| (h.key, h.value.map(|v| v.to_vec())))
                        .collect(),
                })
                .map_err(|_| ())
            })
            .collect(),
        Err(_) => vec![Err(())],
    };
    let borrowed: Vec<Result<Decoded, ()>> = match record::record_views(batch, header) {
        Ok(iter) => iter
            .map(|r| {
                r.map(|r| Decoded {
                    offset: r.offset,
                    timestamp: r.timestamp,
                    key: r.key.map(<[u8]>::to_vec),
                    value: r.value.map(<[u8]>::to_vec),
                    headers: r
                        .headers()
                        .map(|(k, v)| (k.to_owned(), v.map(<[u8]>::to_vec)))
                        .collect(),
                })
                .map_err(|_| ())
            })
            .collect(),
        Err(_) => vec![Err(())],
    };
    assert_eq!(owned, borrowed, "the two record decoders disagree");
    owned
}

/// Records built from the input, for a valid batch to damage.
fn records_from(input: &mut Input<'_>) -> Vec<Record> {
    let n = 1 + usize::from(input.u8() % 8);
    (0..n)
        .map(|_| {
            let flags = input.u8();
            let key_len = usize::from(input.u8() % 32);
            let value_len = usize::from(input.u8());
            let mut r = Record {
                key: (flags & 1 != 0).then(|| Bytes::copy_from_slice(input.bytes(key_len))),
                value: (flags & 2 != 0).then(|| Bytes::copy_from_slice(input.bytes(value_len))),
                headers: Vec::new(),
                timestamp: Some(1_700_000_000_000 + i64::from(input.u16())),
                partition: None,
            };
            if flags & 4 != 0 {
                let k = String::from_utf8_lossy(input.chunk(7)).into_owned();
                r = r.header(k, Bytes::copy_from_slice(input.chunk(15)));
            }
            r
        })
        .collect()
}

/// Recomputes a batch's CRC over its (damaged) bytes, so that the damage
/// reaches the record decoder.
fn fix_crc(batch: &mut [u8]) {
    const CRC_AT: usize = 17;
    const CRC_FROM: usize = 21;
    if let Ok(h) = record::parse_header(batch) {
        if let Some(covered) = batch.get(CRC_FROM..h.total_len()) {
            let crc = crc32c::crc32c(covered);
            batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        }
    }
}

/// Batch decoder: `record::parse_header`, `check`, `records` and
/// `record_views` on the raw input, then on a valid batch built from the
/// input and damaged where it says (with the CRC fixed up or not).
pub fn decode_batch(data: &[u8]) {
    decode_batch_bytes(data);
    let mut input = Input::new(data);
    let records = records_from(&mut input);
    // Every record has a timestamp, so the clock argument is unused.
    let size = record::encoded_len(&records, 0);
    let mut batch = vec![0u8; size];
    let written = record::encode_batch_into(&mut batch, i64::from(input.u16()), &records, 0);
    batch.truncate(written.len);
    // The undamaged batch decodes to exactly what was encoded.
    let header = record::check(&batch).expect("a freshly encoded batch is valid");
    let decoded = decode_both(&batch, &header);
    assert_eq!(decoded.len(), records.len(), "record count");
    for (d, r) in decoded.iter().zip(&records) {
        let d = d.as_ref().expect("a freshly encoded record decodes");
        assert_eq!(d.key.as_deref(), r.key.as_deref());
        assert_eq!(d.value.as_deref(), r.value.as_deref());
        assert_eq!(Some(d.timestamp), r.timestamp);
    }
    checked_batch_reads_back(&batch, &header, &decoded);
    let fix = input.u8() & 1 == 1;
    while !input.is_empty() {
        match input.u8() % 3 {
            0 => {
                let at = usize::from(input.u16()) % batch.len();
                batch[at] ^= input.u8() | 1;
            }
            1 => batch.truncate(usize::from(input.u16()) % (batch.len() + 1)),
            _ => batch.extend_from_slice(input.chunk(15)),
        }
        if batch.is_empty() {
            break;
        }
    }
    if fix {
        fix_crc(&mut batch);
    }
    decode_batch_bytes(&batch);
}

fn decode_batch_bytes(data: &[u8]) {
    let parsed = record::parse_header(data);
    match record::check(data) {
        Ok(header) => {
            assert_eq!(Ok(header), parsed, "check and parse_header disagree");
            assert!(header.total_len() <= data.len());
            let batch = &data[..header.total_len()];
            let decoded = decode_both(batch, &header);
            checked_batch_reads_back(batch, &header, &decoded);
        }
        Err(_) => {
            // Decoders take any whole batch, checked or not (the read path
            // checks the CRC first; the decoders must still not panic).
            if let Ok(header) = parsed {
                if header.total_len() <= data.len() {
                    decode_both(&data[..header.total_len()], &header);
                }
            }
        }
    }
}

/// What `ConsumerRecords` relies on to count a batch from its header and
/// decode it later without a way to fail: once `check_records` passed, the
/// read path's decoding (the inlined fast path, else the checked one)
/// yields exactly `records_count` records, at increasing offsets below
/// `next_offset()`, equal to what the checked decoder gave.
fn checked_batch_reads_back(batch: &[u8], header: &BatchHeader, decoded: &[Result<Decoded, ()>]) {
    if record::check_records(batch, header).is_err() {
        return;
    }
    let mut views = record::record_views(batch, header).expect("a checked batch has views");
    let mut offsets = Vec::new();
    loop {
        let r = match views.next_fast() {
            Some(r) => r,
            None => match views.next() {
                Some(r) => r.expect("a checked batch decodes"),
                None => break,
            },
        };
        assert!(
            r.offset < header.next_offset() as u64,
            "offset past the batch"
        );
        assert!(
            offsets.last().is_none_or(|&o| r.offset > o),
            "offsets not rising"
        );
        let slow = decoded[offsets.len()]
            .as_ref()
            .expect("the checked decoder agrees");
        assert_eq!(
            (r.offset, r.key, r.value),
            (slow.offset, slow.key.as_deref(), slow.value.as_deref())
        );
        offsets.push(r.offset);
    }
    assert_eq!(offsets.len(), header.records_count as usize, "record count");
}

static NEXT_DIR: AtomicU64 = AtomicU64::new(0);

/// A scratch directory, removed on drop; on tmpfs when there is one.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
        let path = base.join(format!("logbus-fuzz-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("scratch directory");
        Scratch(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn check_index<E: Entry>(path: &Path, data: &[u8]) {
    std::fs::write(path, data).expect("write index");
    let Some(index) = IndexFile::<E>::open(path, None).expect("open an index file") else {
        assert!(data.len() % E::SIZE != 0, "a whole number of entries loads");
        return;
    };
    assert_eq!(index.len(), data.len() / E::SIZE);
    let entries: Vec<E> = (0..index.len()).map(|i| index.get(i)).collect();
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(
            format!("{e:?}"),
            format!("{:?}", E::decode(&data[i * E::SIZE..])),
            "entry {i}"
        );
    }
    // floor is a binary search: exact on sorted entries, and on any
    // entries it returns one whose key is at most the one asked for.
    let sorted = entries.windows(2).all(|w| w[0].key() <= w[1].key());
    let probes = entries
        .iter()
        .flat_map(|e| {
            [
                e.key().saturating_sub(1),
                e.key(),
                e.key().saturating_add(1),
            ]
        })
        .chain([i64::MIN, 0, i64::MAX]);
    for key in probes {
        let got = index.floor(key);
        if let Some(e) = got {
            assert!(e.key() <= key, "floor({key}) returned a larger key");
        }
        if sorted {
            let want = entries.iter().rev().find(|e| e.key() <= key);
            assert_eq!(
                got.map(|e| e.key()),
                want.map(|e| e.key()),
                "floor({key}) on sorted entries"
            );
        }
    }
    drop(index);
    // Reopened for appends (as the active segment's index is): grows the
    // file and keeps the entries.
    let index = IndexFile::<E>::open(path, Some(entries.len() + 4))
        .expect("reopen")
        .expect("still whole entries");
    assert_eq!(index.len(), entries.len());
    if let Some(last) = entries.last() {
        assert!(index.append(*last));
    }
    index.trim().expect("trim");
}

/// Index loader: the input as an `.index` and as a `.timeindex` file,
/// loaded, searched, reopened for appends and trimmed.
pub fn load_index(data: &[u8]) {
    let dir = Scratch::new("index");
    check_index::<OffsetEntry>(&dir.0.join("0.index"), data);
    check_index::<TimeEntry>(&dir.0.join("0.timeindex"), data);
}

/// Props/config file parser: `decode_props` for both kinds of metadata
/// file, then `TopicConfig::from_pairs`. What decodes must re-encode to a
/// file that decodes to the same thing.
///
/// Random bytes almost never carry a valid CRC line, so the input is also
/// tried with one appended (the body reaches the line parser).
pub fn decode_config(data: &[u8]) {
    decode_config_bytes(data);
    let mut with_crc = data.to_vec();
    if !with_crc.is_empty() && !with_crc.ends_with(b"\n") {
        with_crc.push(b'\n');
    }
    let crc = crc32fast::hash(&with_crc);
    with_crc.extend_from_slice(format!("crc32={crc:08x}\n").as_bytes());
    decode_config_bytes(&with_crc);
}

fn decode_config_bytes(data: &[u8]) {
    let path = Path::new("fuzz.conf");
    for kind in ["topic-config", "meta"] {
        let Ok((version, pairs)) = crate::io::decode_props(path, data, kind, u32::MAX) else {
            continue;
        };
        let borrowed: Vec<(&str, String)> =
            pairs.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        let encoded =
            crate::io::encode_props(kind, version, &borrowed).expect("decoded pairs re-encode");
        assert_eq!(encoded, data, "decode then encode gives the file back");
        if let Ok(config) = TopicConfig::from_pairs(&pairs) {
            let again = TopicConfig::from_pairs(
                &config
                    .to_pairs()
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect::<Vec<_>>(),
            )
            .expect("a config's own pairs parse");
            assert_eq!(format!("{config:?}"), format!("{again:?}"));
            let _ = config.validate();
        }
    }
}

/// The reference directory the recovery target damages: topic `t` with one
/// partition of three segments (the last one active), written by a real
/// `Log`, as a clean image and a crash image. Built once per process.
struct Template {
    clean: Scratch,
    crash: Scratch,
    /// (key, value) of every record, by offset.
    records: Vec<(Vec<u8>, Vec<u8>)>,
    /// Files of the partition directory, sorted, relative to the root.
    files: Vec<PathBuf>,
}

fn template() -> &'static Template {
    static TEMPLATE: OnceLock<Template> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let clean = Scratch::new("template-clean");
        let crash = Scratch::new("template-crash");
        let log = Log::open(&clean.0, LogConfig::default()).expect("open template");
        // No retention: the records are years old by the wall clock.
        let topic = TopicConfig::new(1)
            .retention_ms(None)
            .segment_bytes(4096)
            .max_record_bytes(1024)
            .index_interval_bytes(128);
        log.create_topic("t", topic).expect("create template topic");
        let producer = log.producer("t").expect("producer");
        let mut records = Vec::new();
        let mut i = 0u32;
        while log
            .topic("t")
            .expect("t")
            .partition(0)
            .expect("p")
            .stats()
            .segments
            < 3
            || i < 60
        {
            let n = 1 + (i % 3) as usize;
            let batch: Vec<Record> = (0..n)
                .map(|j| {
                    let key = format!("k{i}-{j}").into_bytes();
                    let value = vec![(i as u8).wrapping_mul(31); 40 + (i as usize * 7) % 90];
                    Record::new(value)
                        .key(key)
                        .timestamp(1_700_000_000_000 + i64::from(i))
                })
                .collect();
            producer.send_batch(&batch).expect("send");
            records.extend(batch.iter().map(|r| {
                (
                    r.key.clone().unwrap_or_default().to_vec(),
                    r.value.clone().unwrap_or_default().to_vec(),
                )
            }));
            i += 1;
        }
        copy_dir(&clean.0, &crash.0);
        log.close().expect("close template");
        let mut files: Vec<PathBuf> = std::fs::read_dir(clean.0.join("t").join("0"))
            .expect("read template")
            .map(|e| PathBuf::from("t/0").join(e.expect("entry").file_name()))
            .collect();
        files.push(PathBuf::from("t/topic.conf"));
        files.push(PathBuf::from("logbus.meta"));
        files.sort();
        Template {
            clean,
            crash,
            records,
            files,
        }
    })
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).expect("mkdir");
    for entry in std::fs::read_dir(src).expect("read_dir") {
        let entry = entry.expect("entry");
        let to = dst.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &to);
        } else {
            std::fs::copy(entry.path(), to).expect("copy");
        }
    }
}

/// Recovery of arbitrary directory content: a real log's directory (clean
/// or crash image, chosen by the input) has its files replaced, cut,
/// patched or extended as the input says; then `Log::open` must recover or
/// return an error, and everything it then returns must be a prefix of
/// what was written, each record from a batch that passes its CRC, and the
/// same after a second open.
///
/// With `strict`, every record must also be the one written at its offset.
/// The fuzz target runs without it: a coverage-guided fuzzer can learn a
/// CRC from the comparison and forge a valid batch, which no log can tell
/// from a real one. Offsets and CRCs are checked either way.
pub fn recover_dir(data: &[u8], strict: bool) {
    let t = template();
    let mut input = Input::new(data);
    let dir = Scratch::new("recover");
    let src = if input.u8() & 1 == 0 {
        &t.clean.0
    } else {
        &t.crash.0
    };
    copy_dir(src, &dir.0);
    while !input.is_empty() {
        let file = dir
            .0
            .join(&t.files[usize::from(input.u8()) % t.files.len()]);
        let Ok(mut bytes) = std::fs::read(&file) else {
            continue;
        };
        match input.u8() % 4 {
            0 => bytes = input.chunk(usize::from(u16::MAX) - 1).to_vec(),
            1 => bytes.truncate(usize::from(input.u16())),
            2 => {
                let at = usize::from(input.u16());
                let patch = input.chunk(15);
                if at < bytes.len() {
                    for (b, p) in bytes[at..].iter_mut().zip(patch) {
                        *b ^= p;
                    }
                }
            }
            _ => bytes.extend_from_slice(input.chunk(255)),
        }
        std::fs::write(&file, bytes).expect("write damaged file");
    }
    let first = match read_back(&dir.0) {
        Ok(first) => first,
        Err(_) => return,
    };
    for (i, (offset, key, value)) in first.iter().enumerate() {
        assert_eq!(*offset, i as u64, "offsets are a prefix from 0");
        if strict {
            let written = t.records.get(i).expect("no more records than written");
            assert_eq!(
                (key, value),
                (&written.0, &written.1),
                "record {i} is the one written"
            );
        }
    }
    let second = read_back(&dir.0).expect("a log that opened once opens again");
    assert_eq!(first, second, "the second open reads the same records");
}

type ReadRecords = Vec<(u64, Vec<u8>, Vec<u8>)>;

/// Opens `dir`, reads partition `t/0` up to the first corruption through
/// `FetchedBatches::records`, and closes the log. Every record returned must
/// come from a batch that passes its CRC.
fn read_back(dir: &Path) -> Result<ReadRecords, Error> {
    let log = Log::open(dir, LogConfig::default())?;
    let partition = log.topic("t")?.partition(0)?.clone();
    let mut out = Vec::new();
    let mut offset = partition.log_start_offset();
    let end = partition.log_end_offset();
    'read: while offset < end {
        let fetched = match partition.fetch(offset, 1 << 16) {
            Ok(f) => f,
            Err(Error::Corrupt { .. }) => break,
            Err(e) => panic!("fetch({offset}) below the end {end}: {e}"),
        };
        let batches = batch_ranges(&fetched.bytes);
        let before = offset;
        for r in fetched.records() {
            match r {
                Ok(r) => {
                    let (start, end) = batches
                        .iter()
                        .copied()
                        .find(|&(_, _, first, last)| {
                            first <= r.offset as i64 && r.offset as i64 <= last
                        })
                        .map(|(s, e, _, _)| (s, e))
                        .expect("a returned record lies in a fetched batch");
                    assert!(
                        record::check(&fetched.bytes[start..end]).is_ok(),
                        "record {} returned from a batch that fails its CRC",
                        r.offset
                    );
                    out.push((
                        r.offset,
                        r.key.unwrap_or_default().to_vec(),
                        r.value.unwrap_or_default().to_vec(),
                    ));
                    offset = r.offset + 1;
                }
                Err(Error::Corrupt { .. }) => break 'read,
                Err(e) => panic!("records() at {offset}: {e}"),
            }
        }
        assert!(
            offset > before,
            "no progress at {offset} below the end {end}"
        );
    }
    log.close()?;
    Ok(out)
}

/// (start, end, first offset, last offset) of each batch header in `bytes`.
fn batch_ranges(bytes: &[u8]) -> Vec<(usize, usize, i64, i64)> {
    let mut out = Vec::new();
    let mut p = 0;
    while let Ok(h) = record::parse_header(&bytes[p..]) {
        let end = p + h.total_len();
        if end > bytes.len() {
            break;
        }
        out.push((p, end, h.base_offset, h.last_offset()));
        p = end;
    }
    out
}

#[cfg(test)]
mod tests {
    //! The corpus runner: the fuzz targets' entry functions over proptest's
    //! inputs, so that the default `cargo test` exercises them on stable.
    use proptest::prelude::*;

    fn config(cases: u32) -> ProptestConfig {
        ProptestConfig {
            cases,
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    proptest! {
        #![proptest_config(config(2000))]
        #[test]
        fn decode_batch_never_panics(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            super::decode_batch(&data);
        }

        #[test]
        fn decode_config_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            super::decode_config(&data);
        }
    }

    proptest! {
        #![proptest_config(config(3000))]
        #[test]
        fn decode_offsets_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            super::decode_offsets(&data);
        }

        #[test]
        fn decode_window_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            super::decode_window(&data);
        }
    }

    proptest! {
        #![proptest_config(config(300))]
        #[test]
        fn load_index_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            super::load_index(&data);
        }
    }

    proptest! {
        #![proptest_config(config(200))]
        #[test]
        fn recover_dir_keeps_a_prefix(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            super::recover_dir(&data, true);
        }
    }

    /// A well-formed config file survives decode/encode, and every damaged
    /// variant of it is handled (the random inputs above rarely pass the CRC).
    #[test]
    fn decode_config_on_real_files() {
        let config = crate::TopicConfig::new(3);
        let pairs = config.to_pairs();
        let file = crate::io::encode_props("topic-config", 1, &pairs).unwrap();
        super::decode_config(&file);
        for i in 0..file.len() {
            let mut damaged = file.clone();
            damaged[i] ^= 0x20;
            super::decode_config(&damaged);
            super::decode_config(&file[..i]);
        }
    }
}
