//! The tier's shared state and its write, read, remove and flush paths.
//!
//! Every mutation (append, remove, compaction's moves, clear) runs under the one writer
//! lock, so the index, the byte counts and the delete log change in sequence order.
//! Reads never take it: they clone the index entry (which holds the segment's open file)
//! and read with `pread`, so a segment deleted by compaction meanwhile still serves them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cascade_core::tier::{buffer_too_small, tier_full};
use cascade_core::{BlockId, Error, ErrorKind, Result, ShardedIndex};
use cascade_hash::checksum;
use parking_lot::{Mutex, RwLock};
use rayon::prelude::*;

use crate::deletes::{DeleteLog, Kill};
use crate::engine::EngineInUse;
use crate::format::{HEADER_LEN, PAGE, RecordHeader, RecordMeta, record_span};
use crate::io::{self, AlignedBuf, with_scratch};
use crate::lustre::Striping;
use crate::readers::{ReadFile, ReadHandles};
use crate::segment::Segment;
use crate::signal::Signal;

/// Longest run of records written with one vectored call (and staged, under O_DIRECT).
const RUN_LIMIT: u64 = 32 << 20;
/// Shortest run of adjacent records read with one O_DIRECT call: a batch is cut into
/// about as many runs as there are I/O threads, but none shorter than this, as devices
/// serve a few large requests faster than many small ones.
const MIN_DIRECT_READ_RUN: u64 = 4 << 20;
/// Longest run read with one call. Buffered runs are never cut shorter: one `preadv`
/// that continues where the previous read of the file ended is what the kernel's
/// readahead recognises as a stream (large requests, the next window read while the
/// caller verifies this one); parts of one run read in parallel look random to it.
pub(crate) const MAX_READ_RUN: u64 = 16 << 20;
/// Bytes appended to a segment before their writeback is started without waiting (as
/// RocksDB's `bytes_per_sync` does): large enough that the device gets large requests,
/// small enough that it works while the next runs are copied into the page cache, so a
/// flush finds little left to write instead of the whole batch.
const WRITEBACK_CHUNK: u64 = 8 << 20;
/// Zeros for record padding.
static ZEROS: [u8; PAGE as usize] = [0u8; PAGE as usize];

/// Where a block lives.
#[derive(Clone)]
pub struct Entry {
    /// Its segment (the open file keeps serving reads even after the file is deleted).
    pub segment: Arc<Segment>,
    /// The record as written.
    pub record: RecordMeta,
}

/// State only mutations touch.
pub struct Writer {
    /// The segment each write lane appends to; a lane gets its first segment when a
    /// thread of that lane first writes (lane 0 has one from the start).
    pub lanes: Vec<Option<Arc<Segment>>>,
    /// The lane of each writing thread.
    pub lane_of: crate::lane::Lanes,
    /// Number of the next segment this writer creates.
    pub next_number: u64,
    /// Last sequence handed out.
    pub last_seq: u64,
    /// This writer's delete log.
    pub deletes: DeleteLog,
    /// Staging for O_DIRECT writes, kept between uses.
    pub staging: AlignedBuf,
    /// Segments sealed (or written by compaction) since the last flush.
    pub unsynced: Vec<Arc<Segment>>,
    /// Directory entries changed since the last flush.
    pub dir_dirty: bool,
}

/// Counters for `extra_stats`.
#[derive(Default)]
pub struct Counters {
    /// Segments rewritten by compaction.
    pub compactions: AtomicU64,
    /// Blocks dropped because their bytes failed the checksum.
    pub corrupt_dropped: AtomicU64,
    /// Batch reads and appended runs done with pread/pwrite although the engine is
    /// io_uring, because the calling thread could not have a ring.
    pub uring_fallbacks: AtomicU64,
}

/// Everything a tier instance shares with its compaction thread.
pub struct Inner {
    /// Instance name.
    pub name: String,
    /// The directory.
    pub dir: PathBuf,
    /// This writer's id.
    pub writer_id: String,
    /// Segment files are opened with O_DIRECT.
    pub direct: bool,
    /// The engine batch reads and all writes go through.
    pub engine: EngineInUse,
    /// Bytes of live records allowed.
    pub capacity: u64,
    /// Size at which segments are sealed.
    pub segment_size: u64,
    /// Dead fraction that makes a sealed segment a compaction candidate.
    pub threshold: f64,
    /// Lustre striping of new segments.
    pub striping: Option<Striping>,
    /// Permissions of the files this writer creates.
    pub access: cascade_core::Access,
    /// id -> record.
    pub index: ShardedIndex<Entry>,
    /// Every segment on disk that this instance knows, by file name.
    pub segments: RwLock<BTreeMap<String, Arc<Segment>>>,
    /// The writer lock.
    pub writer: Mutex<Writer>,
    /// Bytes of live records.
    pub used: AtomicU64,
    /// Wakes the compaction thread.
    pub signal: Arc<Signal>,
    /// Threads reading the runs of a batch.
    pub io_pool: rayon::ThreadPool,
    /// Each reading thread's own handles on the segments it reads (buffered I/O).
    pub read_handles: ReadHandles,
    /// Counters.
    pub counters: Counters,
    /// Held by a refresh for its whole run, so two refreshes never merge at once.
    pub refreshing: Mutex<()>,
    /// Held for the tier's life: the flock that says this writer id is in use.
    pub _lock: std::fs::File,
}

/// Records adjacent in one segment, read with one request: (position in the batch, where
/// the record lives, the caller's buffer of exactly its length).
pub type Run<'a> = Vec<(usize, Entry, &'a mut [u8])>;

/// One record to append.
pub struct Item<'a> {
    /// The block.
    pub id: BlockId,
    /// Its bytes.
    pub data: &'a [u8],
    /// Its sequence.
    pub seq: u64,
    /// xxh3-64 of `data`.
    pub checksum: u64,
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl Inner {
    /// A sequence above every earlier one; close to the clock, so that writers sharing a
    /// directory order their writes to one id by time.
    pub fn next_seq(w: &mut Writer) -> u64 {
        w.last_seq = (w.last_seq + 1).max(now_nanos());
        w.last_seq
    }

    /// A new segment of this writer, known to readers from now on.
    pub fn new_segment(&self, w: &mut Writer) -> Result<Arc<Segment>> {
        let fresh = Arc::new(Segment::create(
            &self.dir,
            &self.writer_id,
            w.next_number,
            self.direct,
            self.striping,
            &self.access,
        )?);
        w.next_number += 1;
        w.dir_dirty = true;
        self.segments
            .write()
            .insert(fresh.name.clone(), Arc::clone(&fresh));
        Ok(fresh)
    }

    /// The segment `lane` appends to, started when the lane has none yet.
    pub fn lane_segment(&self, w: &mut Writer, lane: usize) -> Result<Arc<Segment>> {
        if let Some(segment) = &w.lanes[lane] {
            return Ok(Arc::clone(segment));
        }
        let fresh = self.new_segment(w)?;
        w.lanes[lane] = Some(Arc::clone(&fresh));
        Ok(fresh)
    }

    /// Seals the segment of `lane` and starts a new one.
    pub fn roll(&self, w: &mut Writer, lane: usize) -> Result<()> {
        let fresh = self.new_segment(w)?;
        let Some(old) = w.lanes[lane].replace(fresh) else {
            return Ok(());
        };
        if let Err(e) = old.seal() {
            // Still readable: the next open scans it instead of reading a footer.
            tracing::warn!(segment = %old.path.display(), error = %e, "sealing a full segment failed");
        }
        w.unsynced.push(Arc::clone(&old));
        self.maybe_wake(&old);
        Ok(())
    }

    /// Appends `items` in order to the segment of `lane`, rolling segments as they fill;
    /// one result per item: the segment and record written. Live-byte counts are the
    /// caller's business.
    pub fn append(
        &self,
        w: &mut Writer,
        lane: usize,
        items: &[Item<'_>],
    ) -> Vec<Result<(Arc<Segment>, RecordMeta)>> {
        let mut results = Vec::with_capacity(items.len());
        let mut start = 0;
        while start < items.len() {
            let active = match self.lane_segment(w, lane) {
                Ok(segment) => segment,
                Err(e) => {
                    results.extend(items[start..].iter().map(|_| Err(e.clone())));
                    break;
                }
            };
            let seg_end = active.end.load(Ordering::Acquire);
            let mut end = start;
            let mut bytes = 0u64;
            while end < items.len() {
                let span = record_span(items[end].data.len() as u64);
                let fits = seg_end + bytes + span <= self.segment_size;
                // A record larger than a whole segment gets an empty segment to itself.
                let alone = end == start && seg_end == PAGE;
                if !(fits || alone) || (end > start && bytes + span > RUN_LIMIT) {
                    break;
                }
                bytes += span;
                end += 1;
            }
            if end == start {
                if let Err(e) = self.roll(w, lane) {
                    results.extend(items[start..].iter().map(|_| Err(e.clone())));
                    break;
                }
                continue;
            }
            let run = &items[start..end];
            match self.write_run(w, &active, run, seg_end) {
                Ok(metas) => {
                    active.records.lock().extend_from_slice(&metas);
                    active.end.store(seg_end + bytes, Ordering::Release);
                    self.write_back_early(&active);
                    results.extend(metas.into_iter().map(|m| Ok((Arc::clone(&active), m))));
                }
                Err(e) => {
                    // Cut what a failed write may have left, so the next append (and a
                    // later footer) start right after the last good record.
                    let _ = active.file.set_len(seg_end);
                    results.extend(run.iter().map(|_| Err(e.clone())));
                }
            }
            start = end;
        }
        results
    }

    /// Starts writeback of what was appended to `segment` since the last start, once that
    /// reaches [`WRITEBACK_CHUNK`] (buffered I/O only: O_DIRECT writes are on the device
    /// already). Runs under the writer lock, which orders the updates of the mark.
    fn write_back_early(&self, segment: &Segment) {
        if self.direct {
            return;
        }
        let end = segment.end.load(Ordering::Acquire);
        let from = segment.written_back.load(Ordering::Acquire);
        if end >= from + WRITEBACK_CHUNK {
            io::start_writeback(&segment.file, from, end - from);
            segment.written_back.store(end, Ordering::Release);
        }
    }

    /// One vectored write of `run` at `at` in `segment`.
    fn write_run(
        &self,
        w: &mut Writer,
        segment: &Segment,
        run: &[Item<'_>],
        at: u64,
    ) -> Result<Vec<RecordMeta>> {
        let nonce = segment.nonce;
        let mut metas = Vec::with_capacity(run.len());
        let mut headers = Vec::with_capacity(run.len());
        let mut offset = at;
        for item in run {
            let len = item.data.len() as u64;
            let header = RecordHeader {
                id: item.id,
                seq: item.seq,
                len,
                checksum: item.checksum,
            };
            headers.push(header.encode(nonce));
            metas.push(RecordMeta {
                id: item.id,
                seq: item.seq,
                offset,
                len,
                checksum: item.checksum,
            });
            offset += record_span(len);
        }
        let total = (offset - at) as usize;
        let result = match self.engine {
            EngineInUse::IoUring => self.write_records_uring(w, segment, run, &headers, at, total),
            EngineInUse::Psync => {
                Self::write_records(w, segment, run, &headers, at, total, self.direct)
            }
        };
        result.map_err(|e| {
            let full = matches!(
                e.raw_os_error(),
                Some(libc::ENOSPC) | Some(libc::EFBIG) | Some(libc::EDQUOT)
            );
            let message = if full {
                "writing a segment failed: the filesystem is full (blocks stored before are kept)"
            } else {
                "writing a segment failed"
            };
            Error::io(message, e)
                .with_context("tier", &self.name)
                .with_context("path", segment.path.display())
        })?;
        Ok(metas)
    }

    /// Writes `run` (its encoded `headers`, `total` bytes) at `at` with `pwritev`: from the
    /// callers' buffers, or staged into one aligned buffer under O_DIRECT.
    pub(crate) fn write_records(
        w: &mut Writer,
        segment: &Segment,
        run: &[Item<'_>],
        headers: &[[u8; HEADER_LEN]],
        at: u64,
        total: usize,
        direct: bool,
    ) -> std::io::Result<()> {
        if direct {
            let staging = w.staging.get(total, false);
            let mut cursor = 0;
            for (item, header) in run.iter().zip(headers) {
                let span = record_span(item.data.len() as u64) as usize;
                staging[cursor..cursor + HEADER_LEN].copy_from_slice(header);
                let body = cursor + HEADER_LEN;
                staging[body..body + item.data.len()].copy_from_slice(item.data);
                staging[body + item.data.len()..cursor + span].fill(0);
                cursor += span;
            }
            io::write_all_vectored_at(&segment.file, &[w.staging.as_slice()], at)
        } else {
            let mut bufs: Vec<&[u8]> = Vec::with_capacity(run.len() * 3);
            for (item, header) in run.iter().zip(headers) {
                let pad =
                    (record_span(item.data.len() as u64) as usize) - HEADER_LEN - item.data.len();
                bufs.push(header);
                bufs.push(item.data);
                bufs.push(&ZEROS[..pad]);
            }
            io::write_all_vectored_at(&segment.file, &bufs, at)
        }
    }

    /// Stores blocks: capacity check, one grouped append, index update.
    pub fn put_many(&self, items: &[(BlockId, &[u8])], checksums: &[u64]) -> Vec<Result<()>> {
        let mut results: Vec<Option<Result<()>>> = (0..items.len()).map(|_| None).collect();
        let mut w = self.writer.lock();
        let lane = w.lane_of.of_caller();
        let mut accepted = Vec::with_capacity(items.len());
        let mut positions = Vec::with_capacity(items.len());
        for (position, ((id, data), sum)) in items.iter().zip(checksums).enumerate() {
            let span = record_span(data.len() as u64);
            let used = self.used.load(Ordering::Acquire);
            if used + span > self.capacity {
                results[position] = Some(Err(tier_full(&self.name, span, used, self.capacity)));
                continue;
            }
            self.used.fetch_add(span, Ordering::AcqRel);
            let seq = Inner::next_seq(&mut w);
            accepted.push(Item {
                id: *id,
                data,
                seq,
                checksum: *sum,
            });
            positions.push(position);
        }
        let placed = self.append(&mut w, lane, &accepted);
        for ((position, item), outcome) in positions.into_iter().zip(&accepted).zip(placed) {
            let span = record_span(item.data.len() as u64);
            results[position] = Some(match outcome {
                Ok((segment, record)) => {
                    segment.live.fetch_add(span, Ordering::AcqRel);
                    let entry = Entry { segment, record };
                    if let Some(old) = self.index.insert_value(item.id, entry) {
                        self.release(&old);
                    }
                    Ok(())
                }
                Err(e) => {
                    self.used.fetch_sub(span, Ordering::AcqRel);
                    Err(e)
                }
            });
        }
        drop(w);
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::new(ErrorKind::Io, "put was not attempted"))))
            .collect()
    }

    /// Accounts a record the index no longer points at.
    pub fn release(&self, old: &Entry) {
        let span = record_span(old.record.len);
        self.used.fetch_sub(span, Ordering::AcqRel);
        old.segment.live.fetch_sub(span, Ordering::AcqRel);
        self.maybe_wake(&old.segment);
    }

    /// Wakes the compactor when `segment` became a candidate.
    pub fn maybe_wake(&self, segment: &Segment) {
        if self.is_candidate(segment) {
            self.signal.wake();
        }
    }

    /// Sealed, ours to rewrite, and dead enough.
    pub fn is_candidate(&self, segment: &Segment) -> bool {
        segment.owned
            && segment.sealed.load(Ordering::Acquire)
            && !segment.retired.load(Ordering::Acquire)
            && segment.dead_fraction() >= self.threshold
    }

    /// Removes `id` (writing a delete-log entry first, so it stays removed after reopen).
    /// With `only`, removes it only while it is still that record (dropping a corrupt
    /// one must not remove a newer version).
    pub fn remove_entry(
        &self,
        w: &mut Writer,
        id: BlockId,
        only: Option<(&Arc<Segment>, u64)>,
    ) -> Result<bool> {
        let Some(entry) = self.index.with(&id, Entry::clone) else {
            return Ok(false);
        };
        if let Some((segment, offset)) = only {
            if !Arc::ptr_eq(&entry.segment, segment) || entry.record.offset != offset {
                return Ok(false);
            }
        }
        w.deletes.append(Kill {
            id,
            seq: entry.record.seq,
        })?;
        self.index.remove_value(&id);
        self.release(&entry);
        Ok(true)
    }

    /// Drops a block whose bytes failed verification and builds the error to return.
    fn corrupt(&self, entry: &Entry, why: &str) -> Error {
        let id = entry.record.id;
        let dropped = {
            let mut w = self.writer.lock();
            self.remove_entry(&mut w, id, Some((&entry.segment, entry.record.offset)))
        };
        if matches!(dropped, Ok(true)) {
            self.counters
                .corrupt_dropped
                .fetch_add(1, Ordering::Relaxed);
        }
        tracing::warn!(tier = %self.name, %id, segment = %entry.segment.path.display(), why, "corrupt block dropped");
        Error::new(
            ErrorKind::Corrupt,
            "stored block failed verification and was dropped",
        )
        .with_context("tier", &self.name)
        .with_context("id", id)
        .with_context("reason", why)
        .with_context("segment", entry.segment.path.display())
        .with_context("offset", entry.record.offset)
    }

    /// Checks a record header read back against the index entry.
    pub(crate) fn header_matches(entry: &Entry, bytes: &[u8]) -> bool {
        RecordHeader::decode(bytes, Some(entry.segment.nonce)).is_ok_and(|h| {
            h.id == entry.record.id
                && h.seq == entry.record.seq
                && h.len == entry.record.len
                && h.checksum == entry.record.checksum
        })
    }

    /// Reads and verifies one record into `out` (at least the record's length); on
    /// failure the block is dropped, `out` is zeroed and the error is `Corrupt`.
    pub fn read_entry(&self, entry: &Entry, out: &mut [u8]) -> Result<usize> {
        let len = entry.record.len as usize;
        if out.len() < len {
            return Err(buffer_too_small(
                entry.record.id,
                entry.record.len,
                out.len(),
            ));
        }
        let out = &mut out[..len];
        let file = self.read_file(&entry.segment);
        let offset = entry.record.offset;
        let verdict: Result<Option<&str>> = if self.direct {
            with_scratch(|buf| {
                let bytes = io::read_aligned(&file, buf, offset, HEADER_LEN + len)
                    .map_err(|e| self.read_error(entry, e))?;
                if bytes.len() < HEADER_LEN + len {
                    return Ok(Some("segment file truncated"));
                }
                if !Self::header_matches(entry, &bytes[..HEADER_LEN]) {
                    return Ok(Some("record header damaged"));
                }
                out.copy_from_slice(&bytes[HEADER_LEN..]);
                Ok(None)
            })
        } else {
            let mut header = [0u8; HEADER_LEN];
            let got = io::read_vectored_at(&file, &mut [&mut header, out], offset)
                .map_err(|e| self.read_error(entry, e))?;
            if got < HEADER_LEN + len {
                Ok(Some("segment file truncated"))
            } else if !Self::header_matches(entry, &header) {
                Ok(Some("record header damaged"))
            } else {
                Ok(None)
            }
        };
        let problem = match verdict? {
            Some(problem) => Some(problem),
            None if checksum(out) != entry.record.checksum => Some("checksum mismatch"),
            None => None,
        };
        match problem {
            None => Ok(len),
            Some(why) => {
                out.fill(0);
                Err(self.corrupt(entry, why))
            }
        }
    }

    /// The file a read of `segment` by the calling thread goes through: its own handle
    /// for buffered reads (its own readahead), the shared one under O_DIRECT.
    pub(crate) fn read_file<'a>(&self, segment: &'a Segment) -> ReadFile<'a> {
        if self.direct {
            ReadFile::Shared(&segment.file)
        } else {
            self.read_handles.for_caller(segment)
        }
    }

    fn read_error(&self, entry: &Entry, e: std::io::Error) -> Error {
        Error::io("reading a segment failed", e)
            .with_context("tier", &self.name)
            .with_context("segment", entry.segment.path.display())
    }

    /// Reads a run of adjacent records of one segment with one vectored call, straight
    /// into the callers' buffers (each exactly its record's length).
    pub fn read_run(&self, run: Vec<(usize, Entry, &mut [u8])>) -> Vec<(usize, Result<usize>)> {
        if run.len() == 1 {
            return run
                .into_iter()
                .map(|(i, entry, out)| (i, self.read_entry(&entry, out)))
                .collect();
        }
        if self.direct {
            return self.read_run_direct(run);
        }
        let start = run[0].1.record.offset;
        let mut headers = vec![[0u8; HEADER_LEN]; run.len()];
        let pads: Vec<usize> = run
            .iter()
            .map(|(_, e, _)| {
                record_span(e.record.len) as usize - HEADER_LEN - e.record.len as usize
            })
            .collect();
        let pad_total: usize = pads.iter().sum();
        let mut run = run;
        let expected: usize = run
            .iter()
            .map(|(_, e, _)| record_span(e.record.len) as usize)
            .sum();
        let segment = Arc::clone(&run[0].1.segment);
        // The padding is read into this thread's scratch buffer and discarded: no
        // allocation (or page faults on fresh memory) per run.
        let got = with_scratch(|scratch| {
            let mut bufs: Vec<&mut [u8]> = Vec::with_capacity(run.len() * 3);
            let mut rest: &mut [u8] = scratch.get(pad_total, false);
            for ((header, (_, _, out)), pad) in headers.iter_mut().zip(run.iter_mut()).zip(&pads) {
                let (mine, tail) = rest.split_at_mut(*pad);
                rest = tail;
                bufs.push(header);
                bufs.push(out);
                bufs.push(mine);
            }
            io::read_vectored_at(&self.read_file(&segment), &mut bufs, start).ok()
        });
        if got != Some(expected) {
            // Short or failed: let each record report its own outcome.
            return run
                .into_iter()
                .map(|(i, entry, out)| (i, self.read_entry(&entry, out)))
                .collect();
        }
        let problems = Self::check_read(&run, &headers);
        self.finish_run(run, problems)
    }

    /// What is wrong with each record of `run` read straight into the callers' buffers
    /// with its header in `headers` (`None`: nothing).
    pub(crate) fn check_read(
        run: &[(usize, Entry, &mut [u8])],
        headers: &[[u8; HEADER_LEN]],
    ) -> Vec<Option<&'static str>> {
        run.iter()
            .zip(headers)
            .map(|((_, entry, out), header)| {
                if !Self::header_matches(entry, header) {
                    Some("record header damaged")
                } else if checksum(out) != entry.record.checksum {
                    Some("checksum mismatch")
                } else {
                    None
                }
            })
            .collect()
    }

    /// Checks each record of `run` in `bytes` (the run's whole extent, read from
    /// `start`) and copies the good ones into their buffers; says what is wrong with each.
    pub(crate) fn check_staged(
        run: &mut [(usize, Entry, &mut [u8])],
        bytes: &[u8],
        start: u64,
    ) -> Vec<Option<&'static str>> {
        let mut problems = Vec::with_capacity(run.len());
        for (_, entry, out) in run.iter() {
            let at = (entry.record.offset - start) as usize;
            let body = &bytes[at + HEADER_LEN..at + HEADER_LEN + out.len()];
            problems.push(
                if !Self::header_matches(entry, &bytes[at..at + HEADER_LEN]) {
                    Some("record header damaged")
                } else if checksum(body) != entry.record.checksum {
                    Some("checksum mismatch")
                } else {
                    None
                },
            );
        }
        // Copy only after the whole run verified, to keep the buffer borrow short.
        for ((_, entry, out), problem) in run.iter_mut().zip(&problems) {
            if problem.is_none() {
                let at = (entry.record.offset - start) as usize + HEADER_LEN;
                out.copy_from_slice(&bytes[at..at + out.len()]);
            }
        }
        problems
    }

    /// The outcome of each record of a run given what is wrong with it: its length, or
    /// (zeroed, dropped) `Corrupt`.
    pub(crate) fn finish_run(
        &self,
        run: Run<'_>,
        problems: Vec<Option<&'static str>>,
    ) -> Vec<(usize, Result<usize>)> {
        run.into_iter()
            .zip(problems)
            .map(|((i, entry, out), problem)| match problem {
                None => (i, Ok(out.len())),
                Some(why) => {
                    out.fill(0);
                    (i, Err(self.corrupt(&entry, why)))
                }
            })
            .collect()
    }

    /// Each record of `run` read on its own (after a short or failed run read), so each
    /// reports its own outcome.
    pub(crate) fn read_each(&self, run: Run<'_>) -> Vec<(usize, Result<usize>)> {
        run.into_iter()
            .map(|(i, entry, out)| (i, self.read_entry(&entry, out)))
            .collect()
    }

    /// [`Inner::read_run`] under O_DIRECT: one aligned read of the whole run into this
    /// thread's staging buffer, then a verified copy of each record out of it.
    fn read_run_direct(
        &self,
        mut run: Vec<(usize, Entry, &mut [u8])>,
    ) -> Vec<(usize, Result<usize>)> {
        let start = run[0].1.record.offset;
        let end = run[run.len() - 1].1.record.end();
        let segment = Arc::clone(&run[0].1.segment);
        let problems = with_scratch(|buf| {
            let bytes = io::read_aligned(&segment.file, buf, start, (end - start) as usize).ok()?;
            if bytes.len() as u64 != end - start {
                return None;
            }
            Some(Self::check_staged(&mut run, bytes, start))
        });
        match problems {
            Some(problems) => self.finish_run(run, problems),
            // Short or failed: let each record report its own outcome.
            None => self.read_each(run),
        }
    }

    /// Reads the records `found` (position, where it lives, a buffer of exactly its
    /// length) with planned runs on the I/O threads, through the tier's engine; each
    /// position's outcome, in no particular order.
    pub fn read_found(&self, found: Vec<(usize, Entry, &mut [u8])>) -> Vec<(usize, Result<usize>)> {
        let runs = Self::plan_runs(found, self.io_pool.current_num_threads(), self.direct);
        match self.engine {
            EngineInUse::IoUring => self.read_runs_uring(runs),
            EngineInUse::Psync => self.read_runs_psync(runs),
        }
    }

    /// The runs of one `get_batch`, spread over the I/O threads (pread engine).
    pub fn read_runs_psync(&self, runs: Vec<Run<'_>>) -> Vec<(usize, Result<usize>)> {
        if runs.len() == 1 {
            return runs
                .into_iter()
                .flat_map(|run| self.read_run(run))
                .collect();
        }
        self.io_pool.install(|| {
            runs.into_par_iter()
                .flat_map_iter(|run| self.read_run(run))
                .collect()
        })
    }

    /// Groups found entries into runs of adjacent records of one segment, each read
    /// with one call (runs go to the I/O threads in parallel).
    pub fn plan_runs<'a>(
        mut found: Vec<(usize, Entry, &'a mut [u8])>,
        threads: usize,
        direct: bool,
    ) -> Vec<Vec<(usize, Entry, &'a mut [u8])>> {
        found.sort_by_key(|(_, e, _)| (Arc::as_ptr(&e.segment) as usize, e.record.offset));
        let limit = if direct {
            Self::direct_run_limit(&found, threads)
        } else {
            MAX_READ_RUN
        };
        let mut runs: Vec<Vec<(usize, Entry, &'a mut [u8])>> = Vec::new();
        let mut run_bytes = 0u64;
        for item in found {
            let joins = runs
                .last()
                .and_then(|run| run.last())
                .is_some_and(|(_, last, _)| {
                    Arc::ptr_eq(&last.segment, &item.1.segment)
                        && last.record.end() == item.1.record.offset
                        && run_bytes + record_span(item.1.record.len) <= limit
                });
            let span = record_span(item.1.record.len);
            match runs.last_mut() {
                Some(run) if joins => {
                    run.push(item);
                    run_bytes += span;
                }
                _ => {
                    runs.push(vec![item]);
                    run_bytes = span;
                }
            }
        }
        runs
    }

    /// Run length under O_DIRECT, where nothing reads ahead: long enough for large
    /// requests, short enough to keep the I/O threads busy. A batch is cut into `parts`
    /// runs of about equal length (a short tail run would cost a whole request); the
    /// slack of almost one record keeps the greedy grouping at `parts` runs when records
    /// differ in length, without letting equal records spill from one part into the next.
    fn direct_run_limit(found: &[(usize, Entry, &mut [u8])], threads: usize) -> u64 {
        let spans = found.iter().map(|(_, e, _)| record_span(e.record.len));
        let total: u64 = spans.clone().sum();
        let largest = spans.max().unwrap_or(0);
        let parts = (total / MIN_DIRECT_READ_RUN).clamp(1, threads.max(1) as u64);
        (total.div_ceil(parts) + largest.saturating_sub(1)).min(MAX_READ_RUN)
    }

    /// fsync of everything written so far: the segments the lanes append to, segments
    /// sealed since the last flush, the delete log, and the directory when files were
    /// created or deleted.
    pub fn flush(&self) -> Result<()> {
        let mut w = self.writer.lock();
        let sync_error = |segment: &Segment, e: std::io::Error| {
            Error::io("fsync of a segment failed", e)
                .with_context("tier", &self.name)
                .with_context("path", segment.path.display())
        };
        for active in w.lanes.iter().flatten() {
            active.file.sync_data().map_err(|e| sync_error(active, e))?;
        }
        while let Some(segment) = w.unsynced.last() {
            if !segment.retired.load(Ordering::Acquire) {
                segment
                    .file
                    .sync_data()
                    .map_err(|e| sync_error(segment, e))?;
            }
            w.unsynced.pop();
        }
        w.deletes.sync()?;
        if w.dir_dirty {
            io::sync_dir(&self.dir).map_err(|e| {
                Error::io("fsync of the tier directory failed", e)
                    .with_context("path", self.dir.display())
            })?;
            w.dir_dirty = false;
        }
        Ok(())
    }
}
