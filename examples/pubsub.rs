//! Pub-sub inside one process: three producers publish order events; two
//! subscriber groups (billing with two members, shipping with one) each
//! receive every event; a late "audit" subscriber joins afterwards and
//! replays the whole history.
//!
//! ```text
//! cargo run --release --example pubsub
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use logbus::{ConsumerGroup, GroupConfig, Log, LogConfig, Record, Result, TopicConfig};

const PRODUCERS: usize = 3;
const EVENTS_PER_PRODUCER: usize = 2_000;

/// What each subscriber received.
#[derive(Debug)]
pub struct Summary {
    /// Events published.
    pub published: usize,
    /// Group name → distinct events it received.
    pub received: BTreeMap<String, usize>,
}

fn main() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("logbus-pubsub-{}", std::process::id()));
    let summary = run(&dir)?;
    std::fs::remove_dir_all(&dir).ok();
    println!("{summary:?}");
    Ok(())
}

/// Runs the example in `dir` (created, left behind for the caller).
pub fn run(dir: &Path) -> Result<Summary> {
    let log = Log::open(dir, LogConfig::default())?;
    log.create_topic("orders", TopicConfig::new(4))?;

    // Subscribers first, each member on its own thread.
    let expected = PRODUCERS * EVENTS_PER_PRODUCER;
    let subscribers: Vec<_> = [("billing", 2), ("shipping", 1)]
        .into_iter()
        .flat_map(|(group, members)| (0..members).map(move |m| (group, m)))
        .map(|(group, member)| {
            let log = log.clone();
            std::thread::spawn(move || subscribe(&log, group, member, expected))
        })
        .collect();

    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let log = log.clone();
            std::thread::spawn(move || -> Result<()> {
                let producer = log.producer("orders")?;
                for i in 0..EVENTS_PER_PRODUCER {
                    // Keyed by customer: one customer's events stay in order.
                    let customer = format!("customer-{}", i % 50);
                    producer.send(Record::new(format!("order {p}-{i}")).key(customer))?;
                }
                Ok(())
            })
        })
        .collect();
    for p in producers {
        p.join().expect("producer thread")?;
    }
    println!("published {expected} events from {PRODUCERS} producers");

    let mut received: BTreeMap<String, usize> = BTreeMap::new();
    for s in subscribers {
        let (group, count) = s.join().expect("subscriber thread")?;
        *received.entry(group).or_default() += count;
    }

    // A late subscriber: a new group starts from the beginning (offset
    // reset `earliest`) and replays everything published so far.
    let replayed = subscribe(&log, "audit", 0, expected)?.1;
    received.insert("audit".into(), replayed);
    for (group, n) in &received {
        println!("group {group:<8} received {n} events");
    }
    log.close()?;
    Ok(Summary {
        published: expected,
        received,
    })
}

/// One member of `group`: polls until the group as a whole has read
/// `expected` events (it knows from the group's lag), then leaves.
fn subscribe(log: &Log, group: &str, member: usize, expected: usize) -> Result<(String, usize)> {
    let mut consumer = ConsumerGroup::join(log, group, &["orders"], GroupConfig::default())?;
    let mut mine = 0;
    let give_up = Instant::now() + Duration::from_secs(30);
    loop {
        let records = consumer.poll(Duration::from_millis(20))?;
        mine += records.len();
        consumer.commit()?;
        let desc = log.describe_group(group)?;
        let committed: u64 = desc.offsets.iter().filter_map(|o| o.committed).sum();
        if committed as usize >= expected || Instant::now() > give_up {
            break;
        }
    }
    println!("  {group}/{member} processed {mine} events");
    consumer.leave()?;
    Ok((group.to_string(), mine))
}
