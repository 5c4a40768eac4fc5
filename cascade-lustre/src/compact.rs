//! Compaction: rewriting sealed segments that are mostly dead.
//!
//! The live records of a candidate are copied to a segment being appended to, with their original
//! sequence numbers, the index is pointed at the copies, the copies are fsynced, and only
//! then is the old file deleted. A crash at any point leaves either the old record, the
//! copy, or both (identical, same sequence) on disk, so nothing is lost and nothing
//! removed comes back (delete-log entries kill every copy of a sequence). Readers are
//! never blocked: they hold the old segment's open file until their read is done.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;

use cascade_core::{Error, Result};

use crate::format::record_span;
use crate::io;
use crate::segment::Segment;
use crate::signal::Signal;
use crate::store::{Entry, Inner, Item};

/// Live bytes copied per writer-lock hold, so puts interleave with a long compaction.
const CHUNK_BYTES: u64 = 16 << 20;

/// What one compaction pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CompactionReport {
    /// Segments rewritten and deleted.
    pub segments: u64,
    /// Live bytes copied.
    pub moved_bytes: u64,
    /// Bytes of segment files deleted.
    pub reclaimed_bytes: u64,
}

/// The background compaction thread.
pub struct Compactor {
    signal: Arc<Signal>,
    handle: Option<JoinHandle<()>>,
}

impl Compactor {
    /// Starts the thread; it holds only a weak reference to the tier.
    pub fn start(inner: Weak<Inner>, signal: Arc<Signal>) -> Result<Self> {
        let thread_signal = Arc::clone(&signal);
        let handle = std::thread::Builder::new()
            .name("cascade-compact".into())
            .spawn(move || {
                while thread_signal.wait() {
                    let Some(inner) = inner.upgrade() else { break };
                    if let Err(e) = compact(&inner) {
                        tracing::warn!(tier = %inner.name, error = %e, "background compaction failed; will retry");
                    }
                }
            })
            .map_err(|e| Error::io("cannot start the compaction thread", e))?;
        Ok(Self {
            signal,
            handle: Some(handle),
        })
    }
}

impl Drop for Compactor {
    fn drop(&mut self) {
        self.signal.stop();
        if let Some(handle) = self.handle.take() {
            if handle.join().is_err() {
                tracing::warn!("the compaction thread panicked");
            }
        }
    }
}

/// Rewrites every current candidate segment.
pub fn compact(inner: &Inner) -> Result<CompactionReport> {
    let candidates: Vec<Arc<Segment>> = inner
        .segments
        .read()
        .values()
        .filter(|s| inner.is_candidate(s))
        .cloned()
        .collect();
    let mut report = CompactionReport::default();
    for segment in candidates {
        let (moved, reclaimed) = compact_segment(inner, &segment)?;
        if reclaimed > 0 {
            report.segments += 1;
            report.moved_bytes += moved;
            report.reclaimed_bytes += reclaimed;
            inner.counters.compactions.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(report)
}

fn is_live(inner: &Inner, segment: &Arc<Segment>, offset: u64, id: cascade_core::BlockId) -> bool {
    inner
        .index
        .with(&id, |e| {
            Arc::ptr_eq(&e.segment, segment) && e.record.offset == offset
        })
        .unwrap_or(false)
}

/// Copies the live records of `segment` away and deletes it; returns (moved, reclaimed).
fn compact_segment(inner: &Inner, segment: &Arc<Segment>) -> Result<(u64, u64)> {
    let records = segment.records.lock().clone();
    let mut buffer: Vec<u8> = Vec::new();
    let mut moved = 0u64;
    let mut chunk_start = 0;
    while chunk_start < records.len() {
        // Read a chunk of live records without the writer lock.
        let mut chunk = Vec::new();
        let mut bytes = 0u64;
        let mut next = chunk_start;
        while next < records.len() && (chunk.is_empty() || bytes < CHUNK_BYTES) {
            let record = records[next];
            next += 1;
            if !is_live(inner, segment, record.offset, record.id) {
                continue;
            }
            chunk.push(record);
            bytes += record.len;
        }
        chunk_start = next;
        buffer.resize(bytes as usize, 0);
        let mut good = Vec::with_capacity(chunk.len());
        let mut cursor = 0usize;
        for record in chunk {
            let len = record.len as usize;
            let entry = Entry {
                segment: Arc::clone(segment),
                record,
            };
            match inner.read_entry(&entry, &mut buffer[cursor..cursor + len]) {
                Ok(_) => good.push((record, cursor)),
                // Dropped by read_entry already; nothing to copy.
                Err(e) if e.kind() == cascade_core::ErrorKind::Corrupt => {}
                Err(e) => return Err(e),
            }
            cursor += len;
        }
        // Copy and repoint under the writer lock, re-checking liveness there: a remove
        // or replace in between makes the copy unnecessary.
        let mut w = inner.writer.lock();
        let still: Vec<_> = good
            .into_iter()
            .filter(|(r, _)| is_live(inner, segment, r.offset, r.id))
            .collect();
        let items: Vec<Item<'_>> = still
            .iter()
            .map(|(r, at)| Item {
                id: r.id,
                data: &buffer[*at..*at + r.len as usize],
                seq: r.seq,
                checksum: r.checksum,
            })
            .collect();
        let lane = w.lane_of.of_caller();
        let placed = inner.append(&mut w, lane, &items);
        for ((old, _), outcome) in still.iter().zip(placed) {
            let (target, record) = outcome?;
            let span = record_span(record.len);
            target.live.fetch_add(span, Ordering::AcqRel);
            let moved_here = inner.index.update(&old.id, |e| {
                e.segment = Arc::clone(&target);
                e.record = record;
            });
            if moved_here.is_some() {
                segment.live.fetch_sub(span, Ordering::AcqRel);
                moved += span;
            } else {
                target.live.fetch_sub(span, Ordering::AcqRel);
            }
        }
    }
    if segment.live.load(Ordering::Acquire) != 0 {
        tracing::warn!(segment = %segment.path.display(), "compaction left live records behind; segment kept");
        return Ok((moved, 0));
    }
    // The copies must be durable before the originals go.
    inner.flush()?;
    let size = segment.file.metadata().map(|m| m.len()).unwrap_or(0);
    inner.segments.write().remove(&segment.name);
    segment.retired.store(true, Ordering::Release);
    inner.read_handles.forget(segment.serial);
    match std::fs::remove_file(&segment.path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(Error::io("cannot delete a compacted segment", e)
                .with_context("path", segment.path.display()));
        }
    }
    io::sync_dir(&inner.dir).map_err(|e| Error::io("fsync of the tier directory failed", e))?;
    Ok((moved, size))
}
