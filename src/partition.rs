//! One partition: its segments behind locks, the published end offset, the
//! wake-up of waiting consumers, and group commit.
//!
//! # Locks
//! `writer` (a mutex) serialises appends and rolls. `segments` (a read-write
//! lock) is taken for writing only to add or remove a segment, and for
//! reading only long enough to clone an `Arc<Segment>`: readers copy record
//! bytes without any lock. Order: `writer` before `segments`; `sync` is never
//! held together with either.

use std::borrow::Borrow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::Sender;
use parking_lot::{Mutex, RwLock};

use crate::config::{Clock, Durability, TopicConfig};
use crate::error::{Error, Result};
use crate::log::record::{self, EncodedBatch, EncodedSpan};
use crate::log::segment::{AppendError, Appended, Segment, SegmentOptions, SegmentWriter};
use crate::log::{self, PartitionRecovery};
use crate::record::{ConsumerRecord, Record};
use crate::worker::Job;

mod read;
mod upkeep;
mod wait;
pub use read::{FetchedBatches, FetchedRecords};
pub(crate) use read::{HoldsRecord, ReadCursor, Resume, decode_into, decode_into_at, visit};
pub(crate) use upkeep::meta as segment_meta;
pub(crate) use wait::{Signal, Waiters, wait_for_data};

/// A handle on one partition of a topic. Cheap to clone.
///
/// Most users go through [`Producer`](crate::Producer) and
/// [`Consumer`](crate::Consumer); a `Partition` gives the figures and the
/// raw batch bytes (for tools and for serving Kafka fetches as they are).
#[derive(Clone, Debug)]
pub struct Partition {
    pub(crate) shared: Arc<PartitionShared>,
}

/// Everything about a partition that handles and threads share.
#[derive(Debug)]
pub(crate) struct PartitionShared {
    topic: Arc<str>,
    id: u32,
    dir: PathBuf,
    config: Arc<TopicConfig>,
    durability: Durability,
    clock: Arc<dyn Clock>,
    writer: Mutex<WriterState>,
    segments: RwLock<Vec<Arc<Segment>>>,
    /// Offset the next record gets; everything below is published.
    log_end: AtomicU64,
    log_start: AtomicU64,
    /// Set after a failed write-back: appends are refused until reopen.
    /// Shared with the flusher, which syncs sealed segments.
    poisoned: Arc<AtomicBool>,
    flusher: Sender<Job>,
    /// Set when the log closes or the topic is deleted.
    closed: AtomicBool,
    waiters: Waiters,
    sync: GroupCommit,
    /// Retention and cleaner state (see `upkeep`).
    upkeep: upkeep::Upkeep,
}

#[derive(Debug)]
struct WriterState {
    /// `None` once the partition is closed (log closed or topic deleted).
    active: Option<SegmentWriter>,
}

/// What opening a partition needs from the log.
pub(crate) struct OpenContext<'a> {
    pub durability: Durability,
    pub clock: &'a Arc<dyn Clock>,
    /// The previous session closed cleanly: trust the files.
    pub clean: bool,
    /// The machine restarted since the previous (unclean) session.
    pub after_reboot: bool,
    pub flusher: &'a Sender<Job>,
    /// Woken when a segment is sealed (retention and the cleaner may have work).
    pub maintenance: Option<&'a Sender<()>>,
}

impl PartitionShared {
    pub(crate) fn open(
        topic: Arc<str>,
        id: u32,
        dir: PathBuf,
        config: Arc<TopicConfig>,
        ctx: &OpenContext<'_>,
    ) -> Result<(Arc<PartitionShared>, PartitionRecovery)> {
        let opts = segment_options(&config);
        let last = match (ctx.clean, ctx.after_reboot) {
            (true, _) => log::LastShutdown::Clean,
            (false, false) => log::LastShutdown::Crash,
            (false, true) => log::LastShutdown::CrashAndReboot,
        };
        let loaded = log::load(&dir, opts, last, ctx.clock.now_ms())?;
        let log_end = loaded.writer.next_offset();
        let log_start = loaded.segments.first().map_or(0, |s| s.base_offset());
        let shared = Arc::new(PartitionShared {
            topic,
            id,
            config,
            durability: ctx.durability,
            clock: Arc::clone(ctx.clock),
            writer: Mutex::new(WriterState {
                active: Some(loaded.writer),
            }),
            segments: RwLock::new(loaded.segments),
            log_end: AtomicU64::new(log_end),
            log_start: AtomicU64::new(log_start),
            poisoned: Arc::new(AtomicBool::new(false)),
            flusher: ctx.flusher.clone(),
            closed: AtomicBool::new(false),
            waiters: Waiters::default(),
            // After a clean close everything on disk is durable; after a
            // crash it may be in the page cache only, so the first flush
            // must sync it.
            sync: GroupCommit::new(if ctx.clean { log_end } else { 0 }),
            upkeep: upkeep::Upkeep::load(&dir, ctx.maintenance.cloned()),
            dir,
        });
        Ok((shared, loaded.recovery))
    }

    pub(crate) fn topic(&self) -> &Arc<str> {
        &self.topic
    }

    pub(crate) fn id(&self) -> u32 {
        self.id
    }

    pub(crate) fn log_end(&self) -> u64 {
        self.log_end.load(Ordering::SeqCst)
    }

    pub(crate) fn log_start(&self) -> u64 {
        self.log_start.load(Ordering::Acquire)
    }

    pub(crate) fn waiters(&self) -> &Waiters {
        &self.waiters
    }

    /// Bytes of log from the batch holding `offset` to the end (about:
    /// whole batches), without reading any record.
    pub(crate) fn bytes_from(&self, offset: u64) -> u64 {
        let segments = self.segments.read();
        let mut total = 0;
        for segment in segments.iter().rev() {
            if segment.base_offset() >= offset {
                total += segment.published_len();
                continue;
            }
            // An estimate: a segment whose offsets are damaged counts none
            // of its bytes here (reading it reports the damage).
            if let Ok(Some(found)) = segment.locate(offset) {
                total += segment.published_len().saturating_sub(found.position);
            }
            break;
        }
        total
    }

    /// The segment file holding `offset` and the byte position of its batch
    /// there, to name the damage when a record decodes but its contents do
    /// not (an internal topic's state). The partition directory and 0 if the
    /// segment is gone or the lookup fails.
    pub(crate) fn locate_file(&self, offset: u64) -> (PathBuf, u64) {
        let segment = {
            let segments = self.segments.read();
            segments
                .get(segment_holding(&segments, offset))
                .filter(|s| s.base_offset() <= offset)
                .cloned()
        };
        match segment {
            Some(segment) => {
                let position = match segment.locate(offset) {
                    Ok(Some(found)) => found.position,
                    _ => 0,
                };
                (segment.log_path().to_path_buf(), position)
            }
            None => (self.dir.clone(), 0),
        }
    }

    pub(crate) fn durability(&self) -> Durability {
        self.durability
    }

    fn poisoned_error(&self) -> Error {
        Error::Poisoned {
            topic: self.topic.to_string(),
            partition: self.id,
        }
    }

    /// Appends `records` as one batch of `batch_len` encoded bytes, encoded
    /// straight into the segment's map, and makes it visible; returns once it
    /// is as durable as the log's mode promises. `now` must be the time
    /// `batch_len` was computed with (it fills in missing timestamps, which
    /// changes the encoded length).
    pub(crate) fn append<R: Borrow<Record>>(
        &self,
        records: &[R],
        batch_len: usize,
        now: i64,
    ) -> Result<Appended> {
        self.append_with(batch_len, now, |w| w.append(records, batch_len, now))
    }

    /// Appends a batch the caller already encoded (any base offset), written
    /// with `pwrite`: the fast path for large batches.
    pub(crate) fn append_encoded(
        &self,
        batch: &mut [u8],
        encoded: &EncodedBatch,
        records: usize,
        now: i64,
    ) -> Result<Appended> {
        let len = batch.len();
        self.append_with(len, now, |w| w.append_encoded(batch, encoded, records))
    }

    /// Appends batches the caller already encoded (any base offsets), each
    /// `buf[start..start + len]` of `batches`, back to back under one hold
    /// of the writer lock so their offsets are consecutive; one wake-up and,
    /// under `Durability::Always`, one sync for all. Returns where the first
    /// landed (`None` for no batches), and how many batches were written:
    /// on an error, the batches before the failing one stay written.
    pub(crate) fn append_encoded_batches(
        &self,
        buf: &mut [u8],
        batches: &[EncodedSpan],
        now: i64,
    ) -> (usize, Result<Option<Appended>>) {
        let mut first = None;
        let mut next_offset = 0;
        {
            let mut state = self.writer.lock();
            for (written, span) in batches.iter().enumerate() {
                let batch = &mut buf[span.start..span.start + span.encoded.len];
                let mut write =
                    |w: &mut SegmentWriter| w.append_encoded(batch, &span.encoded, span.records);
                let appended = self.append_locked(&mut state, span.encoded.len, now, &mut write);
                let (appended, end) = match appended {
                    Ok(done) => done,
                    Err(e) => {
                        drop(state);
                        self.waiters.wake();
                        return (written, Err(e));
                    }
                };
                // Publish while still holding the lock so log_end only moves forward.
                self.log_end.store(end, Ordering::SeqCst);
                first.get_or_insert(appended);
                next_offset = end;
            }
        }
        if first.is_none() {
            return (0, Ok(None));
        }
        self.waiters.wake();
        if self.durability == Durability::Always {
            if let Err(e) = self.sync_to(next_offset) {
                return (batches.len(), Err(e));
            }
        }
        (batches.len(), Ok(first))
    }

    /// As [`append`](Self::append), but never waits for a sync: under
    /// `Durability::Always` the caller calls `sync_to(log end)` itself, after
    /// releasing its own locks (the group coordinator appends commits under
    /// its group lock and must not hold it through an fdatasync). Returns
    /// where the batch landed and the new log end.
    pub(crate) fn append_deferring_sync<R: Borrow<Record>>(
        &self,
        records: &[R],
        batch_len: usize,
        now: i64,
    ) -> Result<(Appended, u64)> {
        let mut write = |w: &mut SegmentWriter| w.append(records, batch_len, now);
        let appended = {
            let mut state = self.writer.lock();
            let appended = self.append_locked(&mut state, batch_len, now, &mut write)?;
            self.log_end.store(appended.1, Ordering::SeqCst);
            appended
        };
        self.waiters.wake();
        Ok(appended)
    }

    fn append_with(
        &self,
        batch_len: usize,
        now: i64,
        mut write: impl FnMut(&mut SegmentWriter) -> std::result::Result<Appended, AppendError>,
    ) -> Result<Appended> {
        let (appended, next_offset) = {
            let mut state = self.writer.lock();
            let appended = self.append_locked(&mut state, batch_len, now, &mut write)?;
            // Publish while still holding the lock so log_end only moves forward.
            self.log_end.store(appended.1, Ordering::SeqCst);
            appended
        };
        self.waiters.wake();
        if self.durability == Durability::Always {
            self.sync_to(next_offset)?;
        }
        Ok(appended)
    }

    /// Rolls when the segment is too old or full, and writes the batch.
    /// Returns where it landed and the new log end.
    fn append_locked(
        &self,
        state: &mut WriterState,
        batch_len: usize,
        now: i64,
        write: &mut impl FnMut(&mut SegmentWriter) -> std::result::Result<Appended, AppendError>,
    ) -> Result<(Appended, u64)> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(self.poisoned_error());
        }
        let Some(writer) = state.active.as_mut() else {
            return Err(Error::Closed);
        };
        if let Some(ms) = self.config.segment_ms {
            if writer.position() > 0
                && now.saturating_sub(writer.created_ms()) >= i64::try_from(ms).unwrap_or(i64::MAX)
            {
                self.roll(state, now)?;
            }
        }
        loop {
            let Some(writer) = state.active.as_mut() else {
                return Err(Error::Closed);
            };
            match write(writer) {
                Ok(appended) => return Ok((appended, writer.next_offset())),
                Err(AppendError::Full) if writer.position() > 0 => self.roll(state, now)?,
                Err(AppendError::Full) => {
                    // Validation keeps batches below segment_bytes, so an empty
                    // segment always has room; refuse rather than loop.
                    return Err(Error::RecordTooLarge {
                        size: batch_len,
                        max: self.config.segment_bytes as usize,
                    });
                }
                Err(AppendError::Io(e)) => return Err(e),
            }
        }
    }

    /// Seals the active segment and starts a new one at the log end.
    fn roll(&self, state: &mut WriterState, now: i64) -> Result<()> {
        let Some(writer) = state.active.take() else {
            return Err(Error::Closed);
        };
        let next = writer.next_offset();
        let new = SegmentWriter::create(&self.dir, next, segment_options(&self.config), now);
        let (segment, new_writer) = match new {
            Ok(created) => created,
            Err(e) => {
                state.active = Some(writer); // nothing changed; keep appending here
                return Err(e);
            }
        };
        let sealed = writer
            .seal()
            .inspect_err(|_| self.poisoned.store(true, Ordering::Release));
        let synced = match &sealed {
            // Group commit and the interval flush sync only the last segment,
            // so under those modes the sealed one must be durable (with its
            // directory entry) before the new one becomes last: otherwise a
            // waiter could sync the new segment and return for a record that
            // sits, unsynced, in the old one.
            Ok(sealed) if self.durability != Durability::Os => sealed
                .make_sealed_durable(&self.dir)
                .inspect_err(|_| self.poisoned.store(true, Ordering::Release)),
            _ => Ok(()),
        };
        self.segments.write().push(segment);
        state.active = Some(new_writer);
        self.upkeep.rolled();
        let sealed = sealed?;
        synced?;
        if self.durability == Durability::Os {
            // Off the hot path, like Kafka's flush of a rolled segment: a power
            // loss can then only tear the active segment, which recovery scans.
            let job = Job::SyncSealed {
                segment: sealed,
                dir: self.dir.clone(),
                poisoned: Arc::clone(&self.poisoned),
            };
            // The flusher only stops after every partition is closed.
            let _ = self.flusher.send(job);
        }
        Ok(())
    }

    /// Rolls the active segment now if it holds anything (tests, admin).
    pub(crate) fn roll_now(&self) -> Result<()> {
        let mut state = self.writer.lock();
        let now = self.clock.now_ms();
        match state.active.as_ref() {
            Some(w) if w.position() > 0 => self.roll(&mut state, now),
            Some(_) => Ok(()),
            None => Err(Error::Closed),
        }
    }

    /// Waits until everything below `offset` is on disk, sharing one
    /// `fdatasync` between all callers waiting at the same time.
    pub(crate) fn sync_to(&self, offset: u64) -> Result<()> {
        let mut state = self.sync.lock();
        loop {
            if state.synced >= offset {
                return Ok(());
            }
            if self.poisoned.load(Ordering::Acquire) {
                return Err(self.poisoned_error());
            }
            if state.syncing {
                state = self.sync.wait(state);
                continue;
            }
            state.syncing = true;
            let (synced, last_group, last_sync) = (state.synced, state.last_group, state.last_sync);
            let kept = state.file.take();
            drop(state);
            // Read the end first: records below it are in the segment read
            // next, or in one sealed (and synced) by a roll.
            let end = self.gather(synced, last_group, last_sync);
            let active = self.segments.read().last().cloned();
            let started = Instant::now();
            let (result, file) = match active {
                Some(segment) => self.sync_active(&segment, kept),
                None => (Ok(()), None),
            };
            let took = started.elapsed();
            state = self.sync.lock();
            state.syncing = false;
            state.file = file;
            self.sync.done.notify_all();
            match result {
                // A roll's sync of an older segment may have failed meanwhile:
                // then records below `end` are not all durable.
                Ok(()) if self.poisoned.load(Ordering::Acquire) => {
                    return Err(self.poisoned_error());
                }
                Ok(()) => {
                    state.last_group = end.saturating_sub(state.synced);
                    state.last_sync = took;
                    state.synced = state.synced.max(end);
                }
                Err(e) => {
                    // fsyncgate: after a failed fsync the kernel may have dropped
                    // the dirty pages; a retry could "succeed" over lost data.
                    self.poisoned.store(true, Ordering::Release);
                    return Err(e);
                }
            }
        }
    }

    /// Syncs the active segment through `kept` when it was taken for that
    /// segment, else through [`Self::descriptor_of`]'s; returns the one to
    /// keep.
    fn sync_active(
        &self,
        segment: &Arc<Segment>,
        kept: Option<SyncFile>,
    ) -> (Result<()>, Option<SyncFile>) {
        let kept = kept.filter(|k| std::ptr::eq(k.segment.as_ptr(), Arc::as_ptr(segment)));
        let kept = match kept {
            Some(kept) => kept,
            None => match self.descriptor_of(segment) {
                Ok(Some(file)) => SyncFile {
                    segment: Arc::downgrade(segment),
                    file,
                    path: segment.log_path().to_path_buf(),
                },
                Ok(None) => return (Ok(()), None),
                Err(e) => return (Err(e), None),
            },
        };
        (crate::io::fdatasync(&kept.file, &kept.path), Some(kept))
    }

    /// A descriptor of `segment`'s log for `fdatasync`: the writer's own
    /// while it still appends there (a partition keeps one file open),
    /// else a new one (`None`: retention already deleted the segment).
    fn descriptor_of(&self, segment: &Arc<Segment>) -> Result<Option<Arc<std::fs::File>>> {
        let writers = self
            .writer
            .lock()
            .active
            .as_ref()
            .filter(|w| Arc::ptr_eq(w.segment(), segment))
            .map(SegmentWriter::shared_file);
        match writers {
            Some(file) => Ok(Some(file)),
            None => Ok(segment.open_for_sync()?.map(Arc::new)),
        }
    }

    /// The log end a new group commit covers. A sync that starts the moment
    /// the previous one ends catches only the records appended during it:
    /// the senders it just released are still waking up, so with N senders
    /// groups alternate between large and small and each sender waits for
    /// two syncs. So the leader lets the group fill up first: it waits until
    /// as many records are pending as the previous sync covered, or for a
    /// quarter of the previous sync's duration (at most `MAX_GATHER`),
    /// whichever comes first. A lone sender finds its own record already
    /// pending and never waits.
    fn gather(&self, synced: u64, last_group: u64, last_sync: Duration) -> u64 {
        let end = self.log_end();
        if end.saturating_sub(synced) >= last_group {
            return end;
        }
        let deadline = Instant::now() + (last_sync / 4).min(MAX_GATHER);
        loop {
            // Yield rather than sleep: the senders being waited for need
            // the CPU, and a sleep's granularity is longer than the wait.
            std::thread::yield_now();
            let end = self.log_end();
            if end.saturating_sub(synced) >= last_group || Instant::now() >= deadline {
                return end;
            }
        }
    }

    /// Makes everything appended so far durable: sealed segments whose
    /// background sync (under `Durability::Os`) may still be queued, then
    /// the active one.
    pub(crate) fn flush(&self) -> Result<()> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(self.poisoned_error()); // never retry a failed fsync
        }
        let end = self.log_end();
        let sealed: Vec<Arc<Segment>> = {
            let segments = self.segments.read();
            segments[..segments.len().saturating_sub(1)].to_vec()
        };
        for segment in sealed {
            segment
                .make_sealed_durable(&self.dir)
                .inspect_err(|_| self.poisoned.store(true, Ordering::Release))?;
        }
        self.sync_to(end)
    }

    /// Whether there is unsynced data (for the interval flusher).
    pub(crate) fn is_dirty(&self) -> bool {
        self.sync.lock().synced < self.log_end()
    }

    /// Closes the partition: trims and syncs its files and drops the writer.
    /// Appends fail with [`Error::Closed`] from then on.
    pub(crate) fn close(&self) -> Result<()> {
        let mut state = self.writer.lock();
        self.closed.store(true, Ordering::Release);
        let Some(writer) = state.active.take() else {
            return Ok(());
        };
        let result = self.close_files(writer);
        drop(state);
        self.sync.lock().file = None; // the writer's descriptor: close it now
        self.waiters.wake_all();
        result
    }

    /// Seals the active segment and makes every segment durable, unless an
    /// fsync already failed: then its pages may be gone, and a clean close
    /// would let the next open trust them.
    fn close_files(&self, writer: SegmentWriter) -> Result<()> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(self.poisoned_error());
        }
        let sealed = writer.seal()?;
        // Segments sealed by this session under Durability::Os, or left
        // unsynced by a crashed one: make them durable before the clean mark.
        let older: Vec<Arc<Segment>> = {
            let segments = self.segments.read();
            segments[..segments.len().saturating_sub(1)].to_vec()
        };
        for segment in older {
            segment.make_sealed_durable(&self.dir)?;
        }
        sealed.sync()?;
        sealed.offset_index().sync()?;
        sealed.time_index().sync()?;
        crate::io::fsync_dir(&self.dir)
    }

    /// Marks the partition closed without touching its files (topic deletion).
    pub(crate) fn abandon(&self) {
        self.closed.store(true, Ordering::Release);
        self.writer.lock().active = None;
        self.waiters.wake_all();
        // The caller renames the directory next: wait out maintenance work
        // on it (it stops at its next closed check), so no cleaner writes
        // into a directory a new topic of the same name may then own.
        self.upkeep.wait_idle();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn out_of_range(&self, offset: u64) -> Error {
        Error::OffsetOutOfRange {
            topic: self.topic.to_string(),
            partition: self.id,
            offset,
            log_start: self.log_start(),
            log_end: self.log_end(),
        }
    }

    /// Whole batches from the one holding `offset`, up to `max_bytes`
    /// (at least one batch when `offset` is below the log end).
    pub(crate) fn fetch(&self, offset: u64, max_bytes: usize) -> Result<FetchedBatches> {
        let end = self.log_end();
        if offset < self.log_start() || offset > end {
            return Err(self.out_of_range(offset));
        }
        if offset == end {
            return Ok(FetchedBatches::empty());
        }
        // Holding the read lock only delays a roll: the lookup touches
        // memory, never the disk or another lock.
        let segments = self.segments.read();
        // Again under the lock: retention moves the start offset while it
        // holds the write lock, and a reader must not be served later
        // records in place of deleted ones.
        if offset < self.log_start() {
            return Err(self.out_of_range(offset));
        }
        let first = segment_holding(&segments, offset);
        for segment in &segments[first..] {
            if let Some(found) = segment.locate(offset)? {
                return Ok(FetchedBatches {
                    bytes: segment.read_batches(found.position, max_bytes, end),
                    segment: Some(Arc::clone(segment)),
                    position: found.position,
                    from: offset,
                });
            }
        }
        // Only reachable when compaction left no record at or after `offset`.
        Ok(FetchedBatches::empty())
    }

    /// The earliest offset whose timestamp is `>= timestamp`, with that
    /// timestamp; `None` if every record is older.
    pub(crate) fn offset_for_time(&self, timestamp: i64) -> Result<Option<(u64, i64)>> {
        // The end first: a batch found past it is still being published.
        let end = self.log_end();
        let segments: Vec<Arc<Segment>> = self.segments.read().clone();
        let start = self.log_start();
        for segment in segments.iter().filter(|s| s.max_timestamp() >= timestamp) {
            let Some(found) = segment.locate_time(timestamp)? else {
                continue;
            };
            let batch = segment.read_batches(found.position, 0, end);
            if batch.is_empty() {
                break; // at or past the end: nothing readable yet
            }
            let records = decode_batch(&batch, segment.log_path(), found.position)?;
            for r in records {
                let r = r.map_err(|e| {
                    Error::corrupt(segment.log_path(), found.position, e.to_string())
                })?;
                if r.timestamp >= timestamp && r.offset >= 0 && r.offset as u64 >= start {
                    return Ok(Some((r.offset as u64, r.timestamp)));
                }
            }
        }
        Ok(None)
    }

    /// Figures for monitoring.
    pub(crate) fn stats(&self) -> PartitionStats {
        let segments = self.segments.read();
        PartitionStats {
            log_start_offset: self.log_start(),
            log_end_offset: self.log_end(),
            segments: segments.len(),
            size_bytes: segments.iter().map(|s| s.published_len()).sum(),
            active_segment_bytes: segments.last().map_or(0, |s| s.published_len()),
            first_dirty_offset: self.cleaner_state().first_dirty.max(self.log_start()),
        }
    }
}

fn segment_options(config: &TopicConfig) -> SegmentOptions {
    SegmentOptions {
        capacity: config.segment_bytes,
        index_interval: config.index_interval_bytes,
        contiguous: config.cleanup_policy == crate::config::CleanupPolicy::Delete,
    }
}

/// Validates a fetched batch and iterates its records.
pub(crate) fn decode_batch(
    batch: &Bytes,
    path: &Path,
    position: u64,
) -> Result<record::RecordIter> {
    record::check(batch).map_err(|e| Error::corrupt(path, position, e.to_string()))?;
    record::records(batch).map_err(|e| Error::corrupt(path, position, e.to_string()))
}

/// Figures about one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionStats {
    /// First offset still stored.
    pub log_start_offset: u64,
    /// Offset the next record gets.
    pub log_end_offset: u64,
    /// Number of segment files.
    pub segments: usize,
    /// Bytes of record batches stored.
    pub size_bytes: u64,
    /// Bytes in the active segment (never deleted or cleaned).
    pub active_segment_bytes: u64,
    /// The cleaner's dirty point: offsets below it were compacted (equal
    /// to the log start offset before the first cleaning, and for topics
    /// that are not compacted).
    pub first_dirty_offset: u64,
}

/// Index of the last segment starting at or before `offset` (0 when none
/// does): where a lookup of `offset` begins.
fn segment_holding(segments: &[Arc<Segment>], offset: u64) -> usize {
    segments
        .partition_point(|s| s.base_offset() <= offset)
        .saturating_sub(1)
}

#[derive(Debug)]
struct SyncState {
    /// Every offset below this is on disk.
    synced: u64,
    /// A caller is in fdatasync right now; others wait for it.
    syncing: bool,
    /// Records the last sync covered: how many the next one waits for.
    last_group: u64,
    /// How long the last fdatasync took: bounds that wait.
    last_sync: Duration,
    /// The active segment's log file (the writer's descriptor, shared),
    /// kept between syncs (the leader takes it while it syncs): opening
    /// and closing the file for every group cost two system calls per
    /// commit.
    file: Option<SyncFile>,
}

/// A descriptor of the segment it was taken for. `Weak`, so a segment
/// retention deletes is not kept mapped by this; comparing pointers is
/// sound because the `Weak` keeps the allocation from being reused.
#[derive(Debug)]
struct SyncFile {
    segment: Weak<Segment>,
    file: Arc<std::fs::File>,
    /// The file's own path (errors name it; the crash simulator records it).
    path: PathBuf,
}

/// The longest a group-commit leader waits for its group to fill up.
const MAX_GATHER: Duration = Duration::from_micros(100);

/// Group commit's state and wake-up. `std`'s `Condvar` rather than
/// `parking_lot`'s: `notify_all` there moves the waiters onto the mutex's
/// queue and wakes them one at a time, each after the previous one
/// unlocked, so with 4 senders the last was released three wake-ups
/// (10-50 µs each on a VM) after the sync; `std` wakes them all at once.
#[derive(Debug)]
struct GroupCommit {
    state: std::sync::Mutex<SyncState>,
    done: std::sync::Condvar,
}

impl GroupCommit {
    fn new(synced: u64) -> Self {
        GroupCommit {
            state: std::sync::Mutex::new(SyncState {
                synced,
                syncing: false,
                last_group: 0,
                last_sync: Duration::ZERO,
                file: None,
            }),
            done: std::sync::Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SyncState> {
        // No code under this lock panics with the state half-updated, so a
        // poisoned lock (a panic elsewhere in the holder) is still sound.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait<'a>(
        &self,
        state: std::sync::MutexGuard<'a, SyncState>,
    ) -> std::sync::MutexGuard<'a, SyncState> {
        self.done
            .wait(state)
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Partition {
    /// The topic's name.
    pub fn topic(&self) -> &str {
        &self.shared.topic
    }

    /// The partition number.
    pub fn id(&self) -> u32 {
        self.shared.id
    }

    /// The first offset still stored (Kafka's log start offset).
    pub fn log_start_offset(&self) -> u64 {
        self.shared.log_start()
    }

    /// The offset the next record will get (Kafka's log end offset / high
    /// watermark: every record below it is readable).
    pub fn log_end_offset(&self) -> u64 {
        self.shared.log_end()
    }

    /// Size, segment count and offsets.
    pub fn stats(&self) -> PartitionStats {
        self.shared.stats()
    }

    /// Raw Kafka record batches starting with the one that holds `offset`,
    /// up to about `max_bytes` (at least one whole batch), zero-copy.
    ///
    /// # Errors
    /// [`Error::OffsetOutOfRange`] outside `[log_start_offset, log_end_offset]`.
    pub fn fetch(&self, offset: u64, max_bytes: usize) -> Result<FetchedBatches> {
        self.shared.fetch(offset, max_bytes)
    }

    /// Up to `max_records` records from `offset` on, CRC-checked.
    ///
    /// # Errors
    /// [`Error::OffsetOutOfRange`] outside `[log_start_offset, log_end_offset]`,
    /// [`Error::Corrupt`] if a stored batch fails its CRC.
    pub fn read(&self, offset: u64, max_records: usize) -> Result<Vec<ConsumerRecord>> {
        let fetched = self.shared.fetch(offset, 1 << 20)?;
        let mut out = Vec::new();
        decode_into(
            &fetched,
            &self.shared.topic,
            self.shared.id,
            offset,
            max_records,
            &mut out,
        )?;
        Ok(out)
    }

    /// Seals the active segment now and starts a new one (no-op if empty).
    pub fn roll(&self) -> Result<()> {
        self.shared.roll_now()
    }

    /// Makes everything appended so far durable (`fdatasync`), whatever
    /// the log's durability mode.
    pub fn flush(&self) -> Result<()> {
        self.shared.flush()
    }
}

#[cfg(test)]
mod tests {
    use crate::testutil::TempDir;
    use crate::{Durability, Error, Log, LogConfig, Record, TopicConfig};

    #[test]
    fn failed_fsync_is_reported_then_the_partition_refuses_appends_until_reopen() {
        let dir = TempDir::new();
        let config = || LogConfig::default().durability(Durability::Always);
        let log = Log::open(dir.path(), config()).unwrap();
        // A topic name unique to this test, so parallel tests never trip the failpoint.
        log.create_topic("fsyncgate", TopicConfig::new(1)).unwrap();
        let producer = log.producer("fsyncgate").unwrap();
        producer.send(Record::new("durable")).unwrap();

        crate::io::failpoints::fail_next_sync("fsyncgate");
        let err = producer.send(Record::new("lost?")).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err:?}");
        // Never retried into a success: the partition is poisoned.
        let err = producer.send(Record::new("after")).unwrap_err();
        assert!(
            matches!(err, Error::Poisoned { partition: 0, .. }),
            "{err:?}"
        );
        let p = log
            .topic("fsyncgate")
            .unwrap()
            .partition(0)
            .unwrap()
            .clone();
        assert!(matches!(p.flush(), Err(Error::Poisoned { .. })));
        drop((p, producer));
        drop(log);

        let log = Log::open(dir.path(), config()).unwrap();
        let producer = log.producer("fsyncgate").unwrap();
        let meta = producer.send(Record::new("after reopen")).unwrap();
        // The failed record was in the page cache, so it is still there.
        assert_eq!(meta.offset, 2);
    }

    #[test]
    fn time_based_roll_uses_the_injected_clock() {
        let dir = TempDir::new();
        let clock = std::sync::Arc::new(crate::ManualClock::new(1_000_000));
        let log = Log::open(dir.path(), LogConfig::default().clock(clock.clone())).unwrap();
        let topic = log
            .create_topic("timeroll", TopicConfig::new(1).segment_ms(Some(60_000)))
            .unwrap();
        let producer = log.producer("timeroll").unwrap();
        producer.send(Record::new("a")).unwrap();
        clock.advance(std::time::Duration::from_millis(59_999));
        producer.send(Record::new("b")).unwrap();
        assert_eq!(topic.partition(0).unwrap().stats().segments, 1);
        clock.advance(std::time::Duration::from_millis(1));
        producer.send(Record::new("c")).unwrap();
        let stats = topic.partition(0).unwrap().stats();
        assert_eq!(stats.segments, 2);
        assert_eq!(stats.log_end_offset, 3);

        // The new segment's age survives a reopen: it counts from its first
        // record, not from the open.
        drop((producer, topic));
        log.close().unwrap();
        clock.advance(std::time::Duration::from_millis(60_000));
        let log = Log::open(dir.path(), LogConfig::default().clock(clock.clone())).unwrap();
        log.producer("timeroll")
            .unwrap()
            .send(Record::new("d"))
            .unwrap();
        assert_eq!(
            log.topic("timeroll")
                .unwrap()
                .partition(0)
                .unwrap()
                .stats()
                .segments,
            3
        );
    }

    #[test]
    fn flush_leaves_every_sealed_segment_durable() {
        let dir = TempDir::new();
        let log = Log::open(dir.path(), LogConfig::default()).unwrap();
        let topic = log.create_topic("flushroll", TopicConfig::new(1)).unwrap();
        let producer = log.producer("flushroll").unwrap();
        let p = topic.partition(0).unwrap();
        // Rolls under Durability::Os leave syncing the sealed segments to the
        // background flusher; flush must not return before they are synced.
        for i in 0..5 {
            producer.send(Record::new(format!("segment {i}"))).unwrap();
            p.roll().unwrap();
        }
        p.flush().unwrap();
        let segments = p.shared.segments.read();
        let sealed = &segments[..segments.len() - 1];
        assert_eq!(sealed.len(), 5);
        assert!(sealed.iter().all(|s| s.is_sealed_durable()));
    }
}
