//! Checking every block of the tier against its checksum without serving or dropping it
//! (`cascade verify`), and when each block was written (`cascade ls`).
//!
//! A read through [`cascade_core::Tier::get`] drops a block that fails its checksum;
//! verification only reports it, so an operator can look before [`FileTier::remove`]
//! drops it (`cascade verify --repair`). Records are read in file order, segment by
//! segment, in long sequential reads that also cover small gaps of dead records: one
//! stream per segment is what a disk (and Lustre's readahead) serves fastest.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cascade_core::{BlockId, Result};
use cascade_hash::checksum;

use crate::format::HEADER_LEN;
use crate::io::{self, AlignedBuf};
use crate::store::{Entry, Inner};
use crate::tier::FileTier;

/// Longest single read.
const READ_RUN: u64 = 16 << 20;
/// Dead bytes between two live records that are read through rather than skipped.
const MAX_GAP: u64 = 1 << 20;
/// Runs read ahead of the one being checked.
const READ_AHEAD: usize = 2;

/// A block whose stored bytes do not match what was written.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DamagedBlock {
    /// The block.
    pub id: BlockId,
    /// The segment file holding its record.
    pub segment: PathBuf,
    /// Where its record starts in the segment.
    pub offset: u64,
    /// What failed: "checksum mismatch", "record header damaged" or "segment file
    /// truncated".
    pub reason: &'static str,
}

/// What [`FileTier::verify`] found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct VerifyReport {
    /// Blocks checked.
    pub blocks: u64,
    /// Payload bytes checked.
    pub bytes: u64,
    /// Bytes read from the segment files (records with their headers and padding, and
    /// dead records between live ones that were read through).
    pub read_bytes: u64,
    /// Blocks that failed, in segment and offset order.
    pub damaged: Vec<DamagedBlock>,
}

impl FileTier {
    /// Reads every block the tier holds and checks its record header and checksum;
    /// `progress` is called with the payload bytes of each run checked. Damaged blocks
    /// are reported, never dropped or served.
    ///
    /// Errors: an I/O error reading a segment (the report so far is lost).
    pub fn verify(&self, progress: &(dyn Fn(u64) + Sync)) -> Result<VerifyReport> {
        let inner = &*self.inner;
        let mut by_segment: Vec<(Arc<crate::segment::Segment>, Vec<Entry>)> = Vec::new();
        {
            let mut map: std::collections::HashMap<u64, usize> = Default::default();
            inner.index.for_each(|_, entry| {
                let slot = *map.entry(entry.segment.serial).or_insert_with(|| {
                    by_segment.push((Arc::clone(&entry.segment), Vec::new()));
                    by_segment.len() - 1
                });
                by_segment[slot].1.push(entry.clone());
            });
        }
        by_segment.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        for (segment, entries) in &mut by_segment {
            entries.sort_by_key(|e| e.record.offset);
            io::advise_sequential(&segment.file);
        }
        let mut runs = Vec::new();
        for (_, entries) in &by_segment {
            plan_runs(entries, &mut runs);
        }
        verify_runs(inner, &runs, progress)
    }

    /// When `id`'s record was written, as the writer's clock told (a record's sequence
    /// is its write time in nanoseconds since the epoch, or just above the writer's
    /// previous one); `None` when the tier does not hold `id`.
    pub fn written_at(&self, id: BlockId) -> Option<SystemTime> {
        let seq = self.inner.index.with(&id, |e| e.record.seq)?;
        SystemTime::UNIX_EPOCH.checked_add(Duration::from_nanos(seq))
    }
}

/// Splits one segment's records (sorted by offset) into reads: records close enough to
/// read through, up to [`READ_RUN`] bytes each.
fn plan_runs<'a>(entries: &'a [Entry], runs: &mut Vec<&'a [Entry]>) {
    let mut start = 0;
    while start < entries.len() {
        let first = entries[start].record.offset;
        let mut end = start + 1;
        while end < entries.len() {
            let next = &entries[end].record;
            let prev_end = entries[end - 1].record.end();
            if next.offset > prev_end + MAX_GAP || next.end() - first > READ_RUN {
                break;
            }
            end += 1;
        }
        runs.push(&entries[start..end]);
        start = end;
    }
}

/// Reads `run`'s span of its segment into `buf`; returns the bytes read.
fn read_run(inner: &Inner, run: &[Entry], buf: &mut AlignedBuf) -> Result<usize> {
    let first = run[0].record.offset;
    let span = (run[run.len() - 1].record.end() - first) as usize;
    let segment = &run[0].segment;
    io::read_full_at(&segment.file, buf.get(span, false), first).map_err(|e| {
        cascade_core::Error::io("cannot read a segment", e)
            .with_context("tier", &inner.name)
            .with_context("path", segment.path.display())
    })
}

/// Reads every run in order on a reader thread, [`READ_AHEAD`] runs ahead, and checks
/// each on this thread as it arrives.
fn verify_runs(
    inner: &Inner,
    runs: &[&[Entry]],
    progress: &(dyn Fn(u64) + Sync),
) -> Result<VerifyReport> {
    use std::sync::mpsc;
    let (full_tx, full_rx) = mpsc::sync_channel::<Result<(AlignedBuf, usize)>>(READ_AHEAD);
    let (free_tx, free_rx) = mpsc::channel::<AlignedBuf>();
    for _ in 0..=READ_AHEAD {
        // The receiver is alive: it is dropped only after this loop.
        let _ = free_tx.send(AlignedBuf::default());
    }
    std::thread::scope(|scope| {
        scope.spawn(move || {
            for run in runs {
                // Both ends close when the checker stops early (an error): so does this.
                let Ok(mut buf) = free_rx.recv() else { return };
                let read = read_run(inner, run, &mut buf).map(|got| (buf, got));
                let failed = read.is_err();
                if full_tx.send(read).is_err() || failed {
                    return;
                }
            }
        });
        // Moved in so that an early return closes them and the reader stops.
        let (free_tx, full_rx) = (free_tx, full_rx);
        let mut report = VerifyReport::default();
        for run in runs {
            let Ok(read) = full_rx.recv() else {
                return Err(cascade_core::Error::new(
                    cascade_core::ErrorKind::Io,
                    "the verify reader stopped early",
                ));
            };
            let (buf, got) = read?;
            progress(check_run(run, &buf.as_slice()[..got], &mut report));
            let _ = free_tx.send(buf);
        }
        Ok(report)
    })
}

/// Checks the records of one run against `bytes`, read from the run's first record on;
/// returns the payload bytes checked.
fn check_run(run: &[Entry], bytes: &[u8], report: &mut VerifyReport) -> u64 {
    let first = run[0].record.offset;
    let segment = &run[0].segment;
    report.read_bytes += bytes.len() as u64;
    let mut payload = 0;
    for entry in run {
        let at = (entry.record.offset - first) as usize;
        let len = entry.record.len as usize;
        let reason = if bytes.len() < at + HEADER_LEN + len {
            Some("segment file truncated")
        } else if !Inner::header_matches(entry, &bytes[at..at + HEADER_LEN]) {
            Some("record header damaged")
        } else if checksum(&bytes[at + HEADER_LEN..at + HEADER_LEN + len]) != entry.record.checksum
        {
            Some("checksum mismatch")
        } else {
            None
        };
        report.blocks += 1;
        report.bytes += entry.record.len;
        payload += entry.record.len;
        if let Some(reason) = reason {
            report.damaged.push(DamagedBlock {
                id: entry.record.id,
                segment: segment.path.clone(),
                offset: entry.record.offset,
                reason,
            });
        }
    }
    payload
}
