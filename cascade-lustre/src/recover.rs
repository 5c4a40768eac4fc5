//! Recovery: rebuilding a file tier's index from its directory when it opens.
//!
//! Writers whose lock nobody holds are dead and this tier takes their files over; every
//! segment is loaded (footer, or a scan of a torn one); every writer's delete log
//! applies; the newest record of each id that no kill covers is indexed; and this
//! writer's delete log is rewritten to the kills that still hide a record on disk.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cascade_core::{Access, BlockId, ErrorKind, Result, ShardedIndex};
use rayon::prelude::*;

use crate::deletes::{self, DELETE_SUFFIX, DeleteLog, Kill, Kills};
use crate::directory::{LOCK_SUFFIX, Listing, io_error, lock_writer};
use crate::engine::EngineInUse;
use crate::format::record_span;
use crate::io;
use crate::segment::{LoadReport, Segment};
use crate::store::Entry;

/// What opening a directory found, for logs and measurements.
#[derive(Debug, Clone, Default)]
pub struct OpenReport {
    /// Segment files read.
    pub segments: usize,
    /// Segments without a valid footer, whose records were scanned.
    pub scanned_segments: usize,
    /// Blocks in the index after open.
    pub blocks: usize,
    /// Bytes cut off torn tails.
    pub torn_bytes: u64,
    /// Damaged pages skipped inside segments.
    pub damaged_pages: u64,
    /// Wall time of the open.
    pub elapsed: Duration,
    /// The I/O engine in use (`io_engine = "auto"` resolves to one at open).
    pub io_engine: Option<EngineInUse>,
}

/// What recovery rebuilt, handed to the tier being opened.
pub(crate) struct Recovered {
    /// Every segment on disk with a live or a killed record, this writer's and others'.
    pub segments: Vec<Arc<Segment>>,
    /// The newest live record of each id.
    pub index: ShardedIndex<Entry>,
    /// Bytes the indexed records take (record spans).
    pub used: u64,
    /// The highest sequence seen in a record or a kill.
    pub last_seq: u64,
    /// This writer's delete log, open for appending.
    pub deletes: DeleteLog,
    /// Segments, scans, torn and damaged bytes, blocks.
    pub report: OpenReport,
}

/// Rebuilds the index of the directory `dir` (listed as `listing`) for `writer_id`.
pub(crate) fn recover(
    dir: &Path,
    writer_id: &str,
    listing: &Listing,
    access: &Access,
    direct: bool,
    name: &str,
) -> Result<Recovered> {
    // Writers whose lock nobody holds are gone: their segments become ours to seal,
    // compact and delete, and their delete logs are merged into ours.
    let mut dead_locks = Vec::new();
    let mut dead: HashSet<String> = HashSet::new();
    let others: HashSet<&String> = listing
        .segments
        .keys()
        .chain(listing.deletes.keys())
        .chain(listing.leftovers.iter().filter_map(|(w, _)| w.as_ref()))
        .filter(|w| **w != writer_id)
        .collect();
    for other in others {
        if !listing.locks.contains(other) {
            dead.insert(other.clone());
        } else if let Some(file) = lock_writer(dir, other, access)? {
            dead_locks.push(file);
            dead.insert(other.clone());
        }
    }
    let owned = |writer: &str| writer == writer_id || dead.contains(writer);
    // The marker is in place (checked above) and no live writer is rewriting these.
    for (writer, path) in &listing.leftovers {
        if writer.as_deref().is_none_or(owned) {
            match std::fs::remove_file(path) {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "removed a temporary file left by a crash")
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove a leftover temporary file")
                }
            }
        }
    }

    let paths: Vec<(String, PathBuf)> = listing
        .segments
        .iter()
        .flat_map(|(w, files)| files.iter().map(move |(_, p)| (w.clone(), p.clone())))
        .collect();
    let loaded: Vec<Result<Option<(Segment, LoadReport)>>> = paths
        .par_iter()
        .map(|(writer, path)| Segment::load(path, writer, direct, owned(writer)))
        .collect();
    let mut report = OpenReport::default();
    let mut segments: Vec<Arc<Segment>> = Vec::with_capacity(loaded.len());
    for (result, (_, path)) in loaded.into_iter().zip(&paths) {
        match result {
            Ok(Some((segment, load))) => {
                report.segments += 1;
                report.scanned_segments += usize::from(load.scanned);
                report.torn_bytes += load.torn_bytes;
                report.damaged_pages += load.damaged_pages;
                if segment.records.lock().is_empty() && segment.owned {
                    let _ = std::fs::remove_file(&segment.path);
                } else {
                    segments.push(Arc::new(segment));
                }
            }
            Ok(None) => {}
            // Deleted meanwhile by another writer's compaction: its copies are newer.
            Err(e) if e.kind() == ErrorKind::Unavailable => {
                tracing::warn!(path = %path.display(), "segment vanished during open");
            }
            Err(e) => return Err(e.with_context("tier", name)),
        }
    }

    // Delete logs: every writer's kills apply; ours and dead writers' are kept.
    let mut kills = Kills::default();
    let mut kept_kills = Kills::default();
    let mut own_log_clean = false;
    for (writer, path) in &listing.deletes {
        let (entries, valid_len) = deletes::read(path)?;
        if writer == writer_id {
            let file_len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            own_log_clean = valid_len == file_len;
        }
        if owned(writer) {
            kept_kills.extend(entries.iter().copied());
        }
        kills.extend(entries);
    }

    // The newest record of each id not killed wins.
    let mut newest: HashMap<BlockId, (usize, usize, u64)> = HashMap::new();
    let mut oldest_seq: HashMap<BlockId, u64> = HashMap::new();
    let mut last_seq = kills.highest_seq();
    for (s, segment) in segments.iter().enumerate() {
        let records = segment.records.lock();
        for (r, record) in records.iter().enumerate() {
            last_seq = last_seq.max(record.seq);
            let oldest = oldest_seq.entry(record.id).or_insert(u64::MAX);
            *oldest = (*oldest).min(record.seq);
            if kills.kills(record.id, record.seq) {
                continue;
            }
            // Equal sequences are copies made by compaction: either serves.
            let newer = newest
                .get(&record.id)
                .is_none_or(|&(_, _, seq)| record.seq > seq);
            if newer {
                newest.insert(record.id, (s, r, record.seq));
            }
        }
    }
    let index = ShardedIndex::new();
    let mut used = 0u64;
    for (id, (s, r, _)) in &newest {
        let segment = &segments[*s];
        let record = segment.records.lock()[*r];
        let span = record_span(record.len);
        segment.live.fetch_add(span, Ordering::Relaxed);
        used += span;
        index.insert_value(
            *id,
            Entry {
                segment: Arc::clone(segment),
                record,
            },
        );
    }
    report.blocks = newest.len();

    // Our delete log keeps only kills that still hide a record on disk.
    let needed: Vec<Kill> = kept_kills.still_hiding(&oldest_seq);
    let own_log = dir.join(format!("{writer_id}{DELETE_SUFFIX}"));
    let dead_logs: Vec<&PathBuf> = listing
        .deletes
        .iter()
        .filter(|(w, _)| dead.contains(*w))
        .map(|(_, p)| p)
        .collect();
    let deletes = if own_log_clean && dead_logs.is_empty() && needed.len() == kept_kills.len() {
        DeleteLog::open_append(&own_log, access)?
    } else {
        let log = DeleteLog::create(&own_log, &needed, access)?;
        io::sync_dir(dir).map_err(|e| io_error("fsync of the tier directory failed", dir, e))?;
        for path in dead_logs {
            let _ = std::fs::remove_file(path);
        }
        log
    };
    // Lock files of dead writers that left nothing behind.
    for writer in &dead {
        let has_segments = segments.iter().any(|s| s.writer == *writer);
        if !has_segments && listing.locks.contains(writer) {
            let _ = std::fs::remove_file(dir.join(format!("{writer}{LOCK_SUFFIX}")));
        }
    }
    drop(dead_locks);
    Ok(Recovered {
        segments,
        index,
        used,
        last_seq,
        deletes,
        report,
    })
}
