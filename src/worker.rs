//! The background flusher thread: one per `Log`.
//!
//! It makes segments sealed under `Durability::Os` durable soon after their
//! roll (as Kafka flushes a rolled segment asynchronously), so a power loss
//! can only tear the active segment, which recovery scans; and under
//! `Durability::Interval(d)` it `fdatasync`s every partition with new data
//! every `d`. It blocks on its channel between jobs: an idle log costs no CPU.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::error::{Error, Result};
use crate::log::segment::Segment;
use crate::partition::PartitionShared;

/// Work for the flusher.
#[derive(Debug)]
pub(crate) enum Job {
    /// fdatasync a freshly sealed segment and its directory.
    SyncSealed {
        segment: Arc<Segment>,
        dir: PathBuf,
        /// The partition's poison flag, raised if the sync fails.
        poisoned: Arc<AtomicBool>,
    },
    Stop,
}

/// Where the interval flusher finds the partitions to sync.
pub(crate) trait PartitionSource: Send + Sync + 'static {
    fn partitions(&self) -> Vec<Arc<PartitionShared>>;
}

/// Handle on the running flusher thread.
#[derive(Debug)]
pub(crate) struct Flusher {
    tx: Sender<Job>,
    handle: Option<JoinHandle<()>>,
}

impl Flusher {
    pub fn start(
        rx: Receiver<Job>,
        tx: Sender<Job>,
        interval: Option<Duration>,
        source: Arc<dyn PartitionSource>,
    ) -> Result<Flusher> {
        let handle = std::thread::Builder::new()
            .name("logbus-flusher".into())
            .spawn(move || run(rx, interval, source))
            .map_err(|e| Error::io("logbus-flusher", e))?;
        Ok(Flusher {
            tx,
            handle: Some(handle),
        })
    }

    /// Finishes queued jobs, then stops and joins the thread.
    pub fn stop(&mut self) {
        let _ = self.tx.send(Job::Stop);
        if let Some(handle) = self.handle.take() {
            // A panicked flusher has nothing left to clean up.
            let _ = handle.join();
        }
    }
}

fn run(rx: Receiver<Job>, interval: Option<Duration>, source: Arc<dyn PartitionSource>) {
    let mut next_tick = interval.map(|d| Instant::now() + d);
    loop {
        let job = match next_tick {
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(at) => rx.recv_deadline(at),
        };
        match job {
            Ok(Job::SyncSealed {
                segment,
                dir,
                poisoned,
            }) => {
                let synced = segment.make_sealed_durable(&dir);
                if synced.is_err() {
                    // The next append on the partition reports it.
                    poisoned.store(true, Ordering::Release);
                }
            }
            Ok(Job::Stop) | Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {}
        }
        if let (Some(at), Some(every)) = (next_tick, interval) {
            // A deadline, not a timeout per job: a stream of roll jobs must
            // not postpone the interval sync.
            if Instant::now() >= at {
                for p in source.partitions() {
                    if p.is_dirty() && !p.is_closed() {
                        // A failure poisons the partition; its next append reports it.
                        let _ = p.flush();
                    }
                }
                next_tick = Some(Instant::now() + every);
            }
        }
    }
}
