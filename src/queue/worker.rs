//! [`Worker`]: takes leased records from a work queue and settles them.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::share::{QueueShared, Settle};
use crate::consumer::{Consumer, ConsumerConfig, TopicPartition, Waker};
use crate::error::{Error, Result};
use crate::record::ConsumerRecord;

/// A record leased to a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Delivery {
    /// The record.
    pub record: ConsumerRecord,
    /// How many times it has been delivered, this time included (1 the
    /// first time).
    pub delivery_count: u16,
}

impl crate::partition::HoldsRecord for Delivery {
    /// A first delivery: `acquire` decodes new records straight into its
    /// output.
    #[inline(always)]
    #[expect(unsafe_code, reason = "initialising memory in place")]
    unsafe fn init_in_place(p: *mut Self) -> *mut ConsumerRecord {
        // SAFETY: `p` is valid for writes and aligned (the caller's
        // promise); `addr_of_mut!` makes no reference to the uninitialised
        // delivery.
        unsafe {
            std::ptr::addr_of_mut!((*p).delivery_count).write(1);
            std::ptr::addr_of_mut!((*p).record)
        }
    }
}

/// One worker of a [`WorkQueue`](crate::WorkQueue): polls leased records
/// and acknowledges, releases or rejects each. Dropping it releases the
/// records it still holds (as a crash of the worker would, after their
/// lease timeout).
pub struct Worker {
    queue: Arc<QueueShared>,
    id: u64,
    /// Used only to wait for new data on the queue's partitions.
    waiter: Consumer,
    tps: Vec<TopicPartition>,
    max_poll_records: usize,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("queue", &self.queue.name)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Worker {
    pub(crate) fn new(queue: Arc<QueueShared>, id: u64) -> Worker {
        let mut waiter = queue.log.consumer(ConsumerConfig::default());
        let tps: Vec<TopicPartition> = queue
            .topic
            .partitions()
            .iter()
            .map(|p| TopicPartition::new(queue.topic.name(), p.id()))
            .collect();
        // The topic exists (the queue holds it) and every tp is its own.
        let _ = waiter.assign(&tps);
        queue.register(waiter.bell());
        Worker {
            max_poll_records: queue.config.max_poll_records,
            queue,
            id,
            waiter,
            tps,
        }
    }

    /// Sets the most records this worker's polls lease (the queue's
    /// `max_poll_records` by default; at least 1). A slow worker leasing
    /// few records leaves the rest to the others.
    pub fn set_max_poll_records(&mut self, n: usize) {
        self.max_poll_records = n.max(1);
    }

    /// Leases up to `max_poll_records` records, waiting up to `timeout` for
    /// some. Also persists acks made since the last poll. Records released
    /// by others, or whose lease expired, come first.
    ///
    /// # Errors
    /// [`Error::Wakeup`]; [`Error::Closed`]; I/O errors.
    pub fn poll(&mut self, timeout: Duration) -> Result<Vec<Delivery>> {
        let deadline = Instant::now() + timeout;
        loop {
            self.waiter.take_wakeup()?;
            if self.queue.log.is_closed() {
                return Err(Error::Closed);
            }
            let seen = self.queue.released.load(Ordering::SeqCst);
            let got = self.queue.acquire(self.id, self.max_poll_records)?;
            let now = Instant::now();
            if !got.is_empty() || now >= deadline {
                return Ok(got);
            }
            for (tp, next) in self.tps.iter().zip(self.queue.fetch_points()) {
                self.waiter.seek(tp, next)?;
            }
            let expiry = self
                .queue
                .ms_until_expiry()
                .map_or(deadline, |ms| now + Duration::from_millis(ms.max(1) as u64));
            let (queue, log) = (Arc::clone(&self.queue), self.queue.log.clone());
            self.waiter.wait(deadline.min(expiry), &|| {
                queue.released.load(Ordering::SeqCst) != seen || log.is_closed()
            });
        }
    }

    /// Acknowledges a record: it will not be delivered again (durable with
    /// the next `poll` or [`commit`](Self::commit)).
    ///
    /// # Errors
    /// [`Error::NotLeased`] if the lease is no longer this worker's (it
    /// expired and the record went to another worker, or it was settled).
    pub fn ack(&mut self, delivery: &Delivery) -> Result<()> {
        self.queue.ack_one(self.id, delivery)
    }

    /// Acknowledges several records at once (all or none).
    ///
    /// # Errors
    /// As [`ack`](Self::ack).
    pub fn ack_all<'a>(
        &mut self,
        deliveries: impl IntoIterator<Item = &'a Delivery>,
    ) -> Result<()> {
        let all: Vec<&Delivery> = deliveries.into_iter().collect();
        self.queue.settle(self.id, &all, Settle::Ack)
    }

    /// Gives a record back for redelivery now (to any worker). At its
    /// delivery limit it goes to the dead-letter topic instead.
    ///
    /// # Errors
    /// As [`ack`](Self::ack).
    pub fn release(&mut self, delivery: &Delivery) -> Result<()> {
        self.queue.settle(self.id, &[delivery], Settle::Release)
    }

    /// Sends a record to the dead-letter topic (with headers saying why and
    /// where from) and never delivers it again.
    ///
    /// # Errors
    /// As [`ack`](Self::ack); I/O errors writing the dead letter.
    pub fn reject(&mut self, delivery: &Delivery) -> Result<()> {
        self.queue.settle(self.id, &[delivery], Settle::Reject)
    }

    /// Makes acks, releases and rejects so far durable (per the log's
    /// durability) now, instead of at the next poll.
    ///
    /// # Errors
    /// I/O errors.
    pub fn commit(&mut self) -> Result<()> {
        self.queue.commit()
    }

    /// A handle that interrupts [`poll`](Self::poll) from another thread.
    pub fn waker(&self) -> Waker {
        self.waiter.waker()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.queue.unregister(self.waiter.bell());
        // Nowhere to report a failure: the leases then expire on their own
        // and a crash-restart redelivers them.
        let _ = self.queue.worker_gone(self.id);
    }
}
