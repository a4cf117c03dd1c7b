//! A durable work queue inside one process: three workers share resize
//! jobs; one worker dies in the middle of a job, which is delivered again
//! to another worker once its lease times out; a poison job that fails
//! every time ends up in the dead-letter topic after three deliveries.
//!
//! ```text
//! cargo run --release --example work_queue
//! ```

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use logbus::{
    DLQ_DELIVERIES, DLQ_REASON, Log, LogConfig, QueueConfig, Record, Result, TopicConfig, WorkQueue,
};

const JOBS: usize = 300;

/// What happened.
#[derive(Debug)]
pub struct Summary {
    /// Jobs completed (acknowledged), by job name.
    pub completed: BTreeSet<String>,
    /// The job the dying worker held, and how often it was delivered.
    pub redelivered: Option<(String, u16)>,
    /// Jobs in the dead-letter topic, with the reason header.
    pub dead_letters: Vec<(String, String)>,
}

fn main() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("logbus-work-queue-{}", std::process::id()));
    let summary = run(&dir)?;
    std::fs::remove_dir_all(&dir).ok();
    println!(
        "{} jobs completed; redelivered after a crash: {:?}; dead letters: {:?}",
        summary.completed.len(),
        summary.redelivered,
        summary.dead_letters
    );
    Ok(())
}

/// Runs the example in `dir`.
pub fn run(dir: &Path) -> Result<Summary> {
    let log = Log::open(dir, LogConfig::default())?;
    log.create_topic("resize", TopicConfig::new(3))?;
    let producer = log.producer("resize")?;
    for i in 0..JOBS {
        producer.send(Record::new(format!("img-{i}.png")))?;
    }
    producer.send(Record::new("poison.png"))?;
    println!("queued {} jobs (one of them poison)", JOBS + 1);

    let config = QueueConfig::default()
        .lease_timeout(Duration::from_millis(300))
        .max_deliveries(3)
        .max_poll_records(5); // small bites, so the three workers share the work
    let queue = WorkQueue::open(&log, "resizer", "resize", config)?;

    // A worker takes one job and dies holding it: its thread ends without
    // acking, the worker handle is leaked as if the process part crashed.
    let mut doomed = queue.worker();
    doomed.set_max_poll_records(1);
    let held = loop {
        if let Some(job) = doomed.poll(Duration::from_millis(100))?.into_iter().next() {
            break job;
        }
    };
    let held_name = text(held.record.value.as_deref());
    println!("worker 0 took {held_name} and died");
    std::mem::forget(doomed); // no drop, no release: only the lease timeout frees it

    let completed = Arc::new(Mutex::new(BTreeSet::new()));
    let redelivered = Arc::new(Mutex::new(None));
    let workers: Vec<_> = (1..=3)
        .map(|id| {
            let mut worker = queue.worker();
            let (completed, redelivered, held_name) =
                (completed.clone(), redelivered.clone(), held_name.clone());
            std::thread::spawn(move || -> Result<usize> {
                let mut done = 0;
                let give_up = Instant::now() + Duration::from_secs(20);
                // Every job but the poison one, then a quiet moment.
                while Instant::now() < give_up && completed.lock().expect("lock").len() < JOBS {
                    for job in worker.poll(Duration::from_millis(50))? {
                        let name = text(job.record.value.as_deref());
                        if name == "poison.png" {
                            worker.release(&job)?; // fails every time
                            continue;
                        }
                        if name == held_name {
                            println!(
                                "worker {id} got {name} again (delivery {})",
                                job.delivery_count
                            );
                            *redelivered.lock().expect("lock") =
                                Some((name.clone(), job.delivery_count));
                        }
                        std::thread::sleep(Duration::from_micros(500)); // "resizing"
                        worker.ack(&job)?;
                        completed.lock().expect("lock").insert(name);
                        done += 1;
                    }
                }
                worker.commit()?;
                Ok(done)
            })
        })
        .collect();
    for (i, w) in workers.into_iter().enumerate() {
        println!(
            "worker {} completed {} jobs",
            i + 1,
            w.join().expect("worker thread")?
        );
    }

    // The poison job's third release sent it to the dead-letter topic.
    let give_up = Instant::now() + Duration::from_secs(10);
    let mut dead_letters = Vec::new();
    while dead_letters.is_empty() && Instant::now() < give_up {
        dead_letters = queue
            .dead_letter_topic()
            .partition(0)?
            .read(0, 10)?
            .into_iter()
            .map(|r| {
                let reason = r.headers.iter().find(|h| h.key == DLQ_REASON);
                let deliveries = r.headers.iter().find(|h| h.key == DLQ_DELIVERIES);
                println!(
                    "dead letter: {} ({}, {} deliveries)",
                    text(r.value.as_deref()),
                    text(reason.and_then(|h| h.value.as_deref())),
                    text(deliveries.and_then(|h| h.value.as_deref()))
                );
                (
                    text(r.value.as_deref()),
                    text(reason.and_then(|h| h.value.as_deref())),
                )
            })
            .collect();
        if dead_letters.is_empty() {
            // The poison job is between deliveries: poll it once more.
            let mut w = queue.worker();
            for job in w.poll(Duration::from_millis(50))? {
                w.release(&job)?;
            }
        }
    }
    let completed = completed.lock().expect("lock").clone();
    let redelivered = redelivered.lock().expect("lock").clone();
    drop(queue);
    log.close()?;
    Ok(Summary {
        completed,
        redelivered,
        dead_letters,
    })
}

fn text(bytes: Option<&[u8]>) -> String {
    String::from_utf8_lossy(bytes.unwrap_or_default()).into_owned()
}
