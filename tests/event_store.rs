//! The event store: optimistic concurrency (one winner per version under
//! concurrent appenders, typed `VersionConflict`), all-or-nothing
//! multi-event appends (one batch), reads by key that return one stream in
//! order and survive reopen, a crash image and SIGKILL, snapshots + later
//! events, replay from an offset and a timestamp, and bad input.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use common::{TempDir, batch_spans, crash_copy, log_files, read_all, reexec};
use logbus::{
    CleanupPolicy, Error, EventData, EventStore, ExpectedVersion, Log, LogConfig, ManualClock,
    Record, StoreConfig, TopicConfig, VERSION_HEADER,
};

fn open(dir: &Path) -> Log {
    Log::open(dir, LogConfig::default()).unwrap()
}

fn open_store(log: &Log, partitions: u32) -> EventStore {
    EventStore::open(log, "accounts", StoreConfig::new(partitions)).unwrap()
}

fn data(events: &[logbus::Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| String::from_utf8(e.data.to_vec()).unwrap())
        .collect()
}

fn versions(events: &[logbus::Event]) -> Vec<u64> {
    events.iter().map(|e| e.version).collect()
}

#[test]
fn a_stale_expected_version_is_refused_with_both_versions_and_writes_nothing() {
    let dir = TempDir::new("store-conflict");
    let log = open(dir.path());
    let store = open_store(&log, 1);
    let first = store
        .append("acct-1", ExpectedVersion::NoStream, ["opened", "deposited"])
        .unwrap();
    assert_eq!(first.first_version, Some(0));
    assert_eq!(first.version, Some(1));
    assert_eq!(first.first_offset, Some(0));
    let end = store.events_topic().partition(0).unwrap().log_end_offset();

    let cases = [
        (ExpectedVersion::NoStream, Some(1)),
        (ExpectedVersion::Exact(0), Some(1)),
        (ExpectedVersion::Exact(2), Some(1)),
    ];
    for (expected, actual) in cases {
        match store.append("acct-1", expected, ["lost"]) {
            Err(Error::VersionConflict {
                stream,
                expected: e,
                actual: a,
            }) => {
                assert_eq!(stream, "acct-1");
                assert_eq!(e, expected);
                assert_eq!(a, actual);
            }
            other => panic!("{expected}: {other:?}"),
        }
    }
    // A stream with no event: only NoStream or Any go ahead.
    let err = store
        .append("acct-2", ExpectedVersion::Exact(0), ["x"])
        .unwrap_err();
    assert!(
        matches!(&err, Error::VersionConflict { actual: None, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("acct-2"), "{err}");
    assert_eq!(
        store.events_topic().partition(0).unwrap().log_end_offset(),
        end,
        "a refused append wrote something"
    );

    // The right version goes ahead, and Any always does.
    let next = store
        .append("acct-1", ExpectedVersion::Exact(1), ["withdrew"])
        .unwrap();
    assert_eq!(next.first_version, Some(2));
    store
        .append("acct-1", ExpectedVersion::Any, ["closed"])
        .unwrap();
    assert_eq!(store.stream_version("acct-1").unwrap(), Some(3));
    // An empty append checks the version and writes nothing.
    let empty = store
        .append("acct-1", ExpectedVersion::Exact(3), Vec::<EventData>::new())
        .unwrap();
    assert_eq!((empty.version, empty.first_version), (Some(3), None));
    assert!(matches!(
        store.append("acct-1", ExpectedVersion::Exact(2), Vec::<EventData>::new()),
        Err(Error::VersionConflict { .. })
    ));
    assert_eq!(
        data(&store.read_stream("acct-1", 0).unwrap()),
        ["opened", "deposited", "withdrew", "closed"]
    );
}

/// Appends `per_thread` events to one stream from each of `threads`
/// threads, each reading the version and retrying on conflict; returns
/// the number of conflicts seen.
fn race(stores: &[EventStore], stream: &str, threads: usize, per_thread: usize) -> usize {
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let store = stores[t % stores.len()].clone();
            let stream = stream.to_string();
            std::thread::spawn(move || {
                let mut conflicts = 0;
                for n in 0..per_thread {
                    loop {
                        let seen = store.stream_version(&stream).unwrap();
                        // Two events per append: both must land together.
                        let events = [format!("t{t}-{n}-a"), format!("t{t}-{n}-b")];
                        match store.append(&stream, seen.into(), events) {
                            Ok(_) => break,
                            Err(Error::VersionConflict { actual, .. }) => {
                                assert_ne!(actual, seen, "conflict without a change");
                                conflicts += 1;
                            }
                            Err(e) => panic!("{e:?}"),
                        }
                    }
                }
                conflicts
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).sum()
}

/// Each version is won by exactly one append: versions 0..n without gaps
/// or duplicates, each append's two events adjacent, each thread's events
/// in its own order.
fn check_race(log: &Log, store: &EventStore, stream: &str, threads: usize, per_thread: usize) {
    let events = store.read_stream(stream, 0).unwrap();
    let total = threads * per_thread * 2;
    assert_eq!(versions(&events), (0..total as u64).collect::<Vec<_>>());
    let values = data(&events);
    let unique: HashSet<&String> = values.iter().collect();
    assert_eq!(unique.len(), total, "an event was written twice");
    let mut next = vec![0usize; threads];
    for pair in values.chunks(2) {
        let (a, b) = (&pair[0], &pair[1]);
        let t: usize = a[1..a.find('-').unwrap()].parse().unwrap();
        assert_eq!(a, &format!("t{t}-{}-a", next[t]));
        assert_eq!(b, &format!("t{t}-{}-b", next[t]), "an append was split");
        next[t] += 1;
    }
    // What is on disk agrees: version headers count up in offset order.
    let on_disk: Vec<u64> = read_all(log, store.name(), events[0].partition)
        .iter()
        .filter(|r| r.key.as_deref() == Some(stream.as_bytes()))
        .map(version_of)
        .collect();
    assert_eq!(on_disk, (0..total as u64).collect::<Vec<_>>());
}

fn version_of(r: &logbus::ConsumerRecord) -> u64 {
    let h = r.headers.iter().find(|h| h.key == VERSION_HEADER).unwrap();
    std::str::from_utf8(h.value.as_deref().unwrap())
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn concurrent_appenders_on_one_stream_win_each_version_exactly_once() {
    let dir = TempDir::new("store-race");
    let log = open(dir.path());
    let store = open_store(&log, 3);
    // Other streams in the same partitions, written at the same time.
    let noise = {
        let store = store.clone();
        std::thread::spawn(move || {
            for i in 0..300 {
                let s = format!("other-{}", i % 7);
                store.append(&s, ExpectedVersion::Any, ["noise"]).unwrap();
            }
        })
    };
    race(std::slice::from_ref(&store), "hot", 4, 150);
    noise.join().unwrap();
    check_race(&log, &store, "hot", 4, 150);
    assert_eq!(store.stats().streams, 8);
    // Debug output stays short however many streams are indexed.
    let debug = format!("{store:?}");
    assert!(
        debug.contains("accounts") && !debug.contains("other-"),
        "{debug}"
    );
}

#[test]
fn concurrent_appenders_under_durability_always() {
    // The store syncs after releasing its partition lock (so appenders share
    // fdatasyncs): versions must still be won exactly once.
    let dir = TempDir::new("store-always");
    let config = LogConfig::default().durability(logbus::Durability::Always);
    let log = Log::open(dir.path(), config).unwrap();
    let store = open_store(&log, 1);
    race(std::slice::from_ref(&store), "durable", 3, 20);
    check_race(&log, &store, "durable", 3, 20);
    store.save_snapshot("durable", 5, "state").unwrap();
    drop(store);
    log.close().unwrap();
    let log = open(dir.path());
    let store = open_store(&log, 1);
    check_race(&log, &store, "durable", 3, 20);
    assert_eq!(
        store.latest_snapshot("durable").unwrap().unwrap().version,
        5
    );
}

#[test]
fn opening_the_same_store_twice_shares_one_version_check() {
    let dir = TempDir::new("store-twice");
    let log = open(dir.path());
    let a = open_store(&log, 1);
    let b = open_store(&log, 1);
    // Seen from either handle, the other's appends count.
    a.append("s", ExpectedVersion::NoStream, ["1"]).unwrap();
    assert!(matches!(
        b.append("s", ExpectedVersion::NoStream, ["2"]),
        Err(Error::VersionConflict {
            actual: Some(0),
            ..
        })
    ));
    race(&[a.clone(), b.clone()], "shared", 4, 100);
    check_race(&log, &a, "shared", 4, 100);
}

#[test]
fn a_multi_event_append_is_one_batch_or_nothing() {
    let dir = TempDir::new("store-atomic");
    let log = open(dir.path());
    let config = StoreConfig::new(1).events(
        TopicConfig::new(1)
            .retention_ms(None)
            .max_record_bytes(4096),
    );
    let store = EventStore::open(&log, "accounts", config).unwrap();
    let events: Vec<String> = (0..10).map(|i| format!("event {i}")).collect();
    store
        .append("a", ExpectedVersion::NoStream, events.clone())
        .unwrap();

    // Events whose one batch just fits the limit: still one batch. Each
    // event is ~100 bytes; `send_batch`'s size bound would have split them.
    let fits = (0..45).map(|i| format!("{i:0>100}")).collect::<Vec<_>>();
    let mut n = fits.len();
    let result = loop {
        match store.append("b", ExpectedVersion::NoStream, fits[..n].to_vec()) {
            Ok(r) => break r,
            Err(Error::RecordTooLarge { size, max }) => {
                assert_eq!(max, 4096);
                assert!(size > max);
                n -= 1;
            }
            Err(e) => panic!("{e:?}"),
        }
    };
    assert!(n >= 30, "only {n} events of 100 bytes fit 4 KiB");
    assert_eq!(result.first_offset, Some(10));
    let p = store.events_topic().partition(0).unwrap();
    let end = p.log_end_offset();

    // One more event: too large for one batch, so nothing at all is written.
    let err = store
        .append("c", ExpectedVersion::NoStream, fits[..n + 1].to_vec())
        .unwrap_err();
    assert!(matches!(err, Error::RecordTooLarge { .. }), "{err:?}");
    assert_eq!(p.log_end_offset(), end);
    assert_eq!(store.stream_version("c").unwrap(), None);
    assert!(store.read_stream("c", 0).unwrap().is_empty());

    log.close().unwrap();
    let files = log_files(&dir.path().join("accounts").join("0"));
    let bytes = std::fs::read(&files[0]).unwrap();
    let spans = batch_spans(&bytes);
    let counts: Vec<u32> = spans.iter().map(|s| s.records).collect();
    assert_eq!(
        counts,
        [10, n as u32],
        "each append must be exactly one batch"
    );
}

#[test]
fn read_stream_returns_one_stream_in_order_across_reopen_and_crash() {
    let dir = TempDir::new("store-read");
    let log = open(dir.path());
    let store = open_store(&log, 3);
    let streams = ["alice", "bob", "carol", "dave", "erin"];
    for round in 0..20u64 {
        for (i, s) in streams.iter().enumerate() {
            // Uneven batches, interleaved in the partitions.
            let events: Vec<String> = (0..=(round + i as u64) % 3)
                .map(|k| format!("{s}-{round}-{k}"))
                .collect();
            store.append(s, ExpectedVersion::Any, events).unwrap();
        }
    }
    let expected: Vec<(String, Vec<String>)> = streams
        .iter()
        .map(|s| {
            let events = store.read_stream(s, 0).unwrap();
            assert!(events.iter().all(|e| &*e.stream == *s));
            assert_eq!(
                versions(&events),
                (0..events.len() as u64).collect::<Vec<_>>()
            );
            let p = store.partition_of(s);
            assert!(events.iter().all(|e| e.partition == p));
            assert!(events.windows(2).all(|w| w[0].offset < w[1].offset));
            (s.to_string(), data(&events))
        })
        .collect();
    for (s, events) in &expected {
        let mine: Vec<&String> = events
            .iter()
            .filter(|e| e.starts_with(s.as_str()))
            .collect();
        assert_eq!(mine.len(), events.len(), "{s} got another stream's event");
        // from_version skips the start.
        let tail = store.read_stream(s, 5).unwrap();
        assert_eq!(data(&tail), events[5..]);
        assert_eq!(tail[0].version, 5);
        assert!(store.read_stream(s, 10_000).unwrap().is_empty());
    }
    assert!(store.read_stream("nobody", 0).unwrap().is_empty());
    assert_eq!(store.stream_version("nobody").unwrap(), None);

    let check = |store: &EventStore| {
        for (s, events) in &expected {
            assert_eq!(&data(&store.read_stream(s, 0).unwrap()), events, "{s}");
        }
        assert_eq!(store.stats().streams, streams.len());
        assert_eq!(store.stats().foreign_records, 0);
    };

    // A crash image, taken while the log is open.
    let crashed = crash_copy(dir.path(), "store-read-crash");
    {
        let log = open(crashed.path());
        assert!(!log.recovery_report().clean_shutdown);
        let store = open_store(&log, 3);
        check(&store);
        let last = store.stream_version("alice").unwrap().unwrap();
        store
            .append("alice", ExpectedVersion::Exact(last), ["after crash"])
            .unwrap();
        assert!(matches!(
            store.append("alice", ExpectedVersion::Exact(last), ["twice"]),
            Err(Error::VersionConflict { .. })
        ));
    }

    drop(store);
    log.close().unwrap();
    let log = open(dir.path());
    let store = open_store(&log, 3);
    check(&store);
    let v = store.stream_version("bob").unwrap().unwrap();
    let appended = store
        .append("bob", ExpectedVersion::Exact(v), ["after reopen"])
        .unwrap();
    assert_eq!(appended.first_version, Some(v + 1));
}

#[test]
fn snapshots_plus_later_events_rebuild_the_state() {
    let dir = TempDir::new("store-snap");
    let log = open(dir.path());
    let store = open_store(&log, 2);
    let balance = |store: &EventStore, s: &str| -> i64 {
        let (snapshot, events) = store.load(s).unwrap();
        let start: i64 = snapshot.map_or(0, |s| {
            std::str::from_utf8(&s.data).unwrap().parse().unwrap()
        });
        start
            + events
                .iter()
                .map(|e| {
                    std::str::from_utf8(&e.data)
                        .unwrap()
                        .parse::<i64>()
                        .unwrap()
                })
                .sum::<i64>()
    };
    assert_eq!(store.latest_snapshot("acct").unwrap(), None);
    store
        .append("acct", ExpectedVersion::NoStream, ["100", "-30", "5"])
        .unwrap();
    assert_eq!(balance(&store, "acct"), 75);

    // A snapshot may not claim a version the stream has not reached.
    let err = store.save_snapshot("acct", 3, "75").unwrap_err();
    assert!(
        matches!(
            err,
            Error::VersionConflict {
                expected: ExpectedVersion::Exact(3),
                actual: Some(2),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(matches!(
        store.save_snapshot("ghost", 0, "x"),
        Err(Error::VersionConflict { actual: None, .. })
    ));

    store.save_snapshot("acct", 1, "70").unwrap();
    store
        .append("acct", ExpectedVersion::Exact(2), ["-1"])
        .unwrap();
    let (snapshot, events) = store.load("acct").unwrap();
    let snapshot = snapshot.unwrap();
    assert_eq!((snapshot.version, &snapshot.data[..]), (1, &b"70"[..]));
    assert_eq!(versions(&events), [2, 3]);
    assert_eq!(balance(&store, "acct"), 74);

    // The latest snapshot wins; it survives a reopen.
    store.save_snapshot("acct", 3, "74").unwrap();
    let (snapshot, events) = store.load("acct").unwrap();
    assert_eq!(snapshot.unwrap().version, 3);
    assert!(events.is_empty());
    drop(store);
    log.close().unwrap();

    let log = open(dir.path());
    let store = open_store(&log, 2);
    assert_eq!(store.latest_snapshot("acct").unwrap().unwrap().data, "74");
    assert_eq!(balance(&store, "acct"), 74);
    let snapshots = log.topic("accounts-snapshots").unwrap();
    assert_eq!(snapshots.config().cleanup_policy, CleanupPolicy::Compact);
}

#[test]
fn replay_from_an_offset_and_from_a_timestamp() {
    let dir = TempDir::new("store-replay");
    let clock = Arc::new(ManualClock::new(1_000_000));
    let log = Log::open(dir.path(), LogConfig::default().clock(clock.clone())).unwrap();
    let store = open_store(&log, 2);
    for i in 0..10 {
        clock.set(1_000_000 + i * 1_000);
        let s = format!("s{}", i % 3);
        store
            .append(&s, ExpectedVersion::Any, [format!("{i}")])
            .unwrap();
    }
    let all: Vec<_> = store.replay_all().collect::<Result<_, _>>().unwrap();
    assert_eq!(all.len(), 10);
    // Per stream, version order; and each event matches read_stream.
    for s in ["s0", "s1", "s2"] {
        let mine: Vec<_> = all.iter().filter(|e| &*e.stream == s).cloned().collect();
        assert_eq!(mine, store.read_stream(s, 0).unwrap());
    }

    // From an offset: that partition only, from there.
    let p = store.partition_of("s0");
    let events = store.read_stream("s0", 0).unwrap();
    let from = events[1].offset;
    let replayed: Vec<_> = store
        .replay_from_offset(p, from)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(
        replayed
            .iter()
            .all(|e| e.partition == p && e.offset >= from)
    );
    let expected: Vec<_> = all
        .iter()
        .filter(|e| e.partition == p && e.offset >= from)
        .cloned()
        .collect();
    assert_eq!(replayed, expected);
    let end = store.events_topic().partition(p).unwrap().log_end_offset();
    assert_eq!(store.replay_from_offset(p, end).unwrap().count(), 0);
    assert!(matches!(
        store.replay_from_offset(p, end + 1),
        Err(Error::OffsetOutOfRange { .. })
    ));
    assert!(matches!(
        store.replay_from_offset(7, 0),
        Err(Error::UnknownPartition { .. })
    ));

    // From a timestamp: events 6..10 (timestamps 1_006_000 on).
    let mut recent: Vec<String> = store
        .replay_from_timestamp(1_006_000)
        .unwrap()
        .map(|e| String::from_utf8(e.unwrap().data.to_vec()).unwrap())
        .collect();
    recent.sort();
    assert_eq!(recent, ["6", "7", "8", "9"]);
    assert_eq!(store.replay_from_timestamp(2_000_000).unwrap().count(), 0);
    assert_eq!(store.replay_from_timestamp(0).unwrap().count(), 10);
}

#[test]
fn bad_input_is_refused_with_typed_errors() {
    let dir = TempDir::new("store-bad");
    let log = open(dir.path());
    for bad in ["", "a/b", "..", "accounts!", &"x".repeat(249)] {
        // 249 characters is a valid topic name, but "<name>-snapshots" is not.
        let err = EventStore::open(&log, bad, StoreConfig::default()).unwrap_err();
        assert!(matches!(err, Error::InvalidName { .. }), "{bad:?}: {err:?}");
    }
    assert!(log.topics().is_empty(), "a refused open created a topic");

    // A compacted events topic would keep only each stream's last event.
    log.create_topic(
        "compacted",
        TopicConfig::new(1).cleanup_policy(CleanupPolicy::Compact),
    )
    .unwrap();
    assert!(matches!(
        EventStore::open(&log, "compacted", StoreConfig::default()),
        Err(Error::InvalidConfig { .. })
    ));

    // A compacted events config is refused before anything is created.
    let config =
        StoreConfig::default().events(TopicConfig::new(1).cleanup_policy(CleanupPolicy::Compact));
    assert!(matches!(
        EventStore::open(&log, "fresh", config),
        Err(Error::InvalidConfig { .. })
    ));
    assert_eq!(log.topics(), ["compacted"]);

    let store = open_store(&log, 1);
    assert!(matches!(
        store.append("", ExpectedVersion::Any, ["x"]),
        Err(Error::InvalidName { .. })
    ));

    // Records written around the store are skipped, and counted.
    store.append("s", ExpectedVersion::NoStream, ["0"]).unwrap();
    let producer = log.producer("accounts").unwrap();
    producer.send(Record::new("no key")).unwrap();
    producer.send(Record::new("no version").key("s")).unwrap();
    producer
        .send(
            Record::new("bad version")
                .key("s")
                .header(VERSION_HEADER, "x1"),
        )
        .unwrap();
    producer
        .send(
            Record::new("out of sequence")
                .key("s")
                .header(VERSION_HEADER, "7"),
        )
        .unwrap();
    assert_eq!(store.stream_version("s").unwrap(), Some(0));
    store.append("s", ExpectedVersion::Exact(0), ["1"]).unwrap();
    assert_eq!(data(&store.read_stream("s", 0).unwrap()), ["0", "1"]);
    assert_eq!(store.stats().foreign_records, 4);

    // A stray record claiming the largest version: no overflow, no panic.
    let max = i64::MAX as u64;
    producer
        .send(
            Record::new("huge")
                .key("h")
                .header(VERSION_HEADER, max.to_string()),
        )
        .unwrap();
    assert_eq!(store.stream_version("h").unwrap(), Some(max));
    assert!(matches!(
        store.append("h", ExpectedVersion::Any, ["past the end"]),
        Err(Error::InvalidConfig { .. })
    ));
    producer
        .send(
            Record::new("bigger")
                .key("g")
                .header(VERSION_HEADER, (max + 1).to_string()),
        )
        .unwrap();
    assert_eq!(store.stream_version("g").unwrap(), None);
    assert_eq!(store.stats().foreign_records, 5);
    let replayed: Vec<_> = store.replay_all().collect::<Result<_, _>>().unwrap();
    assert_eq!(
        data(&replayed),
        ["0", "1", "huge"],
        "replay returned a foreign record"
    );
}

#[cfg(feature = "serde_json")]
#[test]
fn typed_events_round_trip_through_a_codec() {
    use logbus::{JsonCodec, TypedStore};
    let dir = TempDir::new("store-typed");
    let log = open(dir.path());
    let typed = TypedStore::new(open_store(&log, 1), JsonCodec::<(String, i64)>::new());
    typed
        .append(
            "acct",
            ExpectedVersion::NoStream,
            &[("deposit".into(), 10), ("withdraw".into(), 4)],
        )
        .unwrap();
    let events = typed.read_stream("acct", 0).unwrap();
    assert_eq!(events[1].version, 1);
    assert_eq!(events[1].event, ("withdraw".to_string(), 4));
    // An event the codec cannot read names its stream and version.
    typed
        .store()
        .append("acct", ExpectedVersion::Exact(1), ["not json"])
        .unwrap();
    match typed.read_stream("acct", 0) {
        Err(Error::Codec {
            stream, version, ..
        }) => assert_eq!((stream.as_str(), version), ("acct", Some(2))),
        other => panic!("{other:?}"),
    }
}

// A real crash: SIGKILL of a child appending with version checks.

const CHILD_DIR_ENV: &str = "LOGBUS_TEST_STORE_KILL_DIR";

/// Child side of `sigkill_keeps_every_acknowledged_append`: a no-op unless
/// the parent set the environment. Appends two-event batches to a few
/// streams and prints each acknowledged append until killed.
#[test]
fn store_kill_child() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    let log = open(Path::new(&dir));
    let store = open_store(&log, 2);
    let mut out = std::io::stdout().lock();
    for i in 0u64.. {
        let s = format!("s{}", i % 5);
        let v = store.stream_version(&s).unwrap();
        let r = store
            .append(&s, v.into(), [format!("{i}a"), format!("{i}b")])
            .unwrap();
        use std::io::Write;
        writeln!(out, "{s} {}", r.version.unwrap()).unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn sigkill_keeps_every_acknowledged_append() {
    let dir = TempDir::new("store-kill");
    let mut child = reexec("store_kill_child")
        .env(CHILD_DIR_ENV, dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut acked = std::collections::HashMap::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while acked.values().sum::<u64>() < 2_000 {
        let line = lines.next().expect("child ended early").unwrap();
        let Some((s, v)) = line.split_once(' ') else {
            continue; // the test harness's own output
        };
        let Ok(v) = v.parse::<u64>() else { continue };
        acked.insert(s.to_string(), v + 1);
    }
    child.kill().unwrap();
    child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(10));

    let log = open(dir.path());
    let store = open_store(&log, 2);
    for (s, n) in &acked {
        let events = store.read_stream(s, 0).unwrap();
        assert!(events.len() as u64 >= *n, "{s}: {} < {n}", events.len());
        assert_eq!(
            versions(&events),
            (0..events.len() as u64).collect::<Vec<_>>()
        );
        // Appends are whole: an even number of events, pairs together.
        assert_eq!(events.len() % 2, 0, "{s}: half an append survived");
        for pair in data(&events).chunks(2) {
            assert_eq!(pair[0].trim_end_matches('a'), pair[1].trim_end_matches('b'));
        }
        let v = store.stream_version(s).unwrap();
        store.append(s, v.into(), ["after"]).unwrap();
    }
}

#[path = "../examples/event_store.rs"]
mod example;

#[test]
fn the_example_runs_its_story() {
    let dir = TempDir::new("store-example");
    let summary = example::run(dir.path()).unwrap();
    assert_eq!(summary.conflicts, 1, "{summary:?}");
    assert_eq!(
        summary.refused, 1,
        "the loser's retry must see the new balance"
    );
    assert_eq!(summary.rebuilt, summary.replayed);
    // 100 - 70 or 100 - 50, + 5 × 10, + 1 + 2 - 3.
    assert!([80, 100].contains(&summary.rebuilt.balance), "{summary:?}");
    assert_eq!(summary.events_after_snapshot, 3);
    assert_eq!(summary.rebuilt.version, Some(summary.snapshot_version + 3));
}

#[test]
fn retention_removes_old_events_but_versions_continue() {
    let dir = TempDir::new("store-retention");
    // Maintenance runs when the test says: the background thread would
    // delete segments while they are counted below.
    let quiet = || LogConfig::default().background_maintenance(false);
    let log = Log::open(dir.path(), quiet()).unwrap();
    // Small segments and a size limit, so maintenance deletes old ones.
    let events = TopicConfig::new(1)
        .segment_bytes(4096)
        .max_record_bytes(1024)
        .retention_ms(None)
        .retention_bytes(Some(8192));
    let config = StoreConfig::new(1).events(events);
    let store = EventStore::open(&log, "retained", config.clone()).unwrap();
    for i in 0..200u64 {
        let s = if i % 2 == 0 { "a" } else { "b" };
        store
            .append(s, ExpectedVersion::Any, [format!("{s}{i:0>40}")])
            .unwrap();
    }
    let p = store.events_topic().partition(0).unwrap().clone();
    assert!(p.stats().segments > 4);
    log.maintain().unwrap();
    let start = p.log_start_offset();
    assert!(start > 0, "retention deleted nothing");

    let check = |store: &EventStore| {
        let a = store.read_stream("a", 0).unwrap();
        assert!(!a.is_empty() && a.len() < 100);
        assert!(a.iter().all(|e| e.offset >= start));
        // The oldest left is not version 0, and versions run on to 99.
        assert!(a[0].version > 0);
        assert_eq!(
            versions(&a),
            (a[0].version..100).collect::<Vec<_>>(),
            "versions must be the ones written"
        );
        assert_eq!(store.stream_version("a").unwrap(), Some(99));
        // Reading from a version retention removed starts at the oldest left.
        assert_eq!(store.read_stream("a", 1).unwrap(), a);
        let replayed = store.replay_all().count();
        assert_eq!(
            replayed as u64,
            p.log_end_offset() - start,
            "replay starts at the log start"
        );
    };
    check(&store);
    drop(store);
    log.close().unwrap();

    let log = Log::open(dir.path(), quiet()).unwrap();
    let store = EventStore::open(&log, "retained", config).unwrap();
    let p = store.events_topic().partition(0).unwrap().clone();
    assert_eq!(p.log_start_offset(), start);
    check(&store);
    // A reopened store continues each stream's versions from its headers.
    let r = store
        .append("a", ExpectedVersion::Exact(99), ["next"])
        .unwrap();
    assert_eq!(r.first_version, Some(100));
}

#[test]
fn appends_wait_for_the_events_topics_consumers() {
    use logbus::{ConsumerGroup, GroupConfig};
    let dir = TempDir::new("store-backpressure");
    let log = open(dir.path());
    let events = TopicConfig::new(1)
        .retention_ms(None)
        .consumers(["projector"])
        .max_unconsumed_bytes(Some(1024));
    let store = EventStore::open(&log, "bp", StoreConfig::new(1).events(events)).unwrap();
    // Past the limit in one append (admitted: nothing was unconsumed before).
    let big: Vec<String> = (0..20).map(|i| format!("{i:0>100}")).collect();
    store.append("s", ExpectedVersion::NoStream, big).unwrap();

    // The next append waits until the projector has consumed them.
    let blocked = {
        let store = store.clone();
        std::thread::spawn(move || store.append("s", ExpectedVersion::Exact(19), ["after"]))
    };
    std::thread::sleep(Duration::from_millis(100));
    assert!(!blocked.is_finished(), "an append went past the limit");
    let mut projector = ConsumerGroup::join(
        &log,
        "projector",
        &["bp"],
        GroupConfig::default().auto_commit(false),
    )
    .unwrap();
    let mut seen = 0;
    while seen < 20 {
        seen += projector.poll(Duration::from_millis(50)).unwrap().len();
    }
    projector.commit().unwrap();
    let appended = blocked.join().unwrap().unwrap();
    assert_eq!(appended.first_version, Some(20));
}
