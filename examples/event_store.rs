//! An account aggregate on the event store.
//!
//! Two tellers withdraw from the same account at the same time. Both read
//! it at the same version; the store lets only one append (optimistic
//! concurrency), the other gets `Error::VersionConflict`, reloads the
//! account and decides again. Then the account is snapshotted, more events
//! follow, the log is closed, and after reopening the state is rebuilt
//! from the latest snapshot plus the events after it.
//!
//! `cargo run --release --example event_store`

use std::path::Path;
use std::sync::{Arc, Barrier};

use logbus::{Error, Event, EventStore, ExpectedVersion, Log, LogConfig, StoreConfig};

/// The aggregate: rebuilt from events, never stored as such.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Account {
    pub balance: i64,
    /// Version of the last event applied (`None`: no event yet).
    pub version: Option<u64>,
}

impl Account {
    /// Applies one event ("deposited 100", "withdrew 70").
    fn apply(&mut self, event: &Event) {
        let text = std::str::from_utf8(&event.data).unwrap_or("");
        match text.split_once(' ') {
            Some(("deposited", n)) => self.balance += n.parse::<i64>().unwrap_or(0),
            Some(("withdrew", n)) => self.balance -= n.parse::<i64>().unwrap_or(0),
            _ => {}
        }
        self.version = Some(event.version);
    }

    /// Snapshot bytes: "balance@version".
    fn to_snapshot(self) -> String {
        format!("{}@{}", self.balance, self.version.unwrap_or(0))
    }

    fn from_snapshot(data: &[u8]) -> Option<Account> {
        let (balance, version) = std::str::from_utf8(data).ok()?.split_once('@')?;
        Some(Account {
            balance: balance.parse().ok()?,
            version: Some(version.parse().ok()?),
        })
    }

    /// Latest snapshot + the events after it.
    fn load(store: &EventStore, id: &str) -> logbus::Result<Account> {
        let (snapshot, events) = store.load(id)?;
        let mut account = snapshot
            .and_then(|s| Account::from_snapshot(&s.data))
            .unwrap_or_default();
        events.iter().for_each(|e| account.apply(e));
        Ok(account)
    }
}

/// What happened, for the test to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Appends refused with `VersionConflict` (then retried).
    pub conflicts: usize,
    /// Withdrawals refused after a retry: not enough money any more.
    pub refused: usize,
    /// The account rebuilt after reopening, from snapshot + later events.
    pub rebuilt: Account,
    /// The same account folded from every event since version 0.
    pub replayed: Account,
    /// Version the snapshot was taken at.
    pub snapshot_version: u64,
    /// Events read on top of the snapshot.
    pub events_after_snapshot: usize,
}

const ACCOUNT: &str = "acct-42";

/// One teller: withdraw `amount` if the balance allows, retrying on conflict.
fn withdraw(
    store: &EventStore,
    amount: i64,
    both_read: &Barrier,
    teller: &str,
) -> logbus::Result<(usize, bool)> {
    let mut conflicts = 0;
    let mut first = true;
    loop {
        let account = Account::load(store, ACCOUNT)?;
        if first {
            // Both tellers have read the account before either writes.
            both_read.wait();
            first = false;
        }
        if account.balance < amount {
            println!(
                "{teller}: balance {} < {amount}: withdrawal refused",
                account.balance
            );
            return Ok((conflicts, false));
        }
        let expected = ExpectedVersion::from(account.version);
        match store.append(ACCOUNT, expected, [format!("withdrew {amount}")]) {
            Ok(r) => {
                println!(
                    "{teller}: withdrew {amount} at version {}",
                    r.version.unwrap_or(0)
                );
                return Ok((conflicts, true));
            }
            Err(Error::VersionConflict {
                expected, actual, ..
            }) => {
                conflicts += 1;
                println!(
                    "{teller}: version conflict (expected {expected}, stream is at {}): reloading",
                    actual.map_or("none".into(), |v| v.to_string())
                );
            }
            Err(e) => return Err(e),
        }
    }
}

/// Runs the whole story in `dir` (which it leaves behind).
pub fn run(dir: &Path) -> logbus::Result<Summary> {
    let log = Log::open(dir, LogConfig::default())?;
    let store = EventStore::open(&log, "accounts", StoreConfig::new(4))?;
    store.append(
        ACCOUNT,
        ExpectedVersion::NoStream,
        ["opened", "deposited 100"],
    )?;
    println!("opened {ACCOUNT} with 100");

    // Two tellers, 70 and 50: both fit 100, not both together.
    let both_read = Arc::new(Barrier::new(2));
    let tellers: Vec<_> = [("teller A", 70), ("teller B", 50)]
        .into_iter()
        .map(|(name, amount)| {
            let (store, both_read) = (store.clone(), Arc::clone(&both_read));
            std::thread::spawn(move || withdraw(&store, amount, &both_read, name))
        })
        .collect();
    let (mut conflicts, mut refused) = (0, 0);
    for t in tellers {
        // A teller thread only ends by returning; a panic there is a bug.
        let (c, done) = t.join().expect("teller thread panicked")?;
        conflicts += c;
        refused += usize::from(!done);
    }

    for _ in 0..5 {
        let account = Account::load(&store, ACCOUNT)?;
        store.append(ACCOUNT, account.version.into(), ["deposited 10"])?;
    }
    let account = Account::load(&store, ACCOUNT)?;
    let snapshot_version = account.version.unwrap_or(0);
    store.save_snapshot(ACCOUNT, snapshot_version, account.to_snapshot())?;
    println!(
        "snapshot at version {snapshot_version}: balance {}",
        account.balance
    );
    store.append(
        ACCOUNT,
        ExpectedVersion::Exact(snapshot_version),
        ["deposited 1", "deposited 2", "withdrew 3"],
    )?;
    drop(store);
    log.close()?;

    let log = Log::open(dir, LogConfig::default())?;
    let store = EventStore::open(&log, "accounts", StoreConfig::new(4))?;
    let (_, after) = store.load(ACCOUNT)?;
    let rebuilt = Account::load(&store, ACCOUNT)?;
    let mut replayed = Account::default();
    store
        .read_stream(ACCOUNT, 0)?
        .iter()
        .for_each(|e| replayed.apply(e));
    println!(
        "after reopen: snapshot + {} events -> balance {} at version {} (full replay: {})",
        after.len(),
        rebuilt.balance,
        rebuilt.version.unwrap_or(0),
        replayed.balance
    );
    log.close()?;
    Ok(Summary {
        conflicts,
        refused,
        rebuilt,
        replayed,
        snapshot_version,
        events_after_snapshot: after.len(),
    })
}

#[allow(
    dead_code,
    reason = "tests/event_store.rs includes this file for `run`"
)]
fn main() -> logbus::Result<()> {
    let dir = std::env::temp_dir().join(format!("logbus-example-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let summary = run(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    println!("{:?}", summary?);
    Ok(())
}
