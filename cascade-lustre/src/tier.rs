//! [`FileTier`]: opening a directory (its files in `directory`, the index rebuilt by
//! `recover`, the shared state of `store`) and the [`Tier`] implementation over them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use cascade_core::tier::{BatchVisit, check_block_fits};
use cascade_core::{BlockId, Capability, Error, ErrorKind, Result, Tier};
use parking_lot::{Mutex, RwLock};
use rayon::prelude::*;

use crate::compact::{self, CompactionReport, Compactor};
use crate::config::FileTierConfig;
use crate::directory::{check_format, io_error, list, take_writer};
use crate::engine::{self, EngineInUse};
use crate::format::{HEADER_LEN, PAGE};
use crate::io::{self, AlignedBuf};
use crate::lend::LendBuffers;
use crate::lustre;
use crate::readers::{READ_HANDLES, ReadHandles};
use crate::recover::{self, OpenReport};
use crate::segment::Segment;
use crate::signal::Signal;
use crate::store::{Counters, Entry, Inner, Writer};

/// Blocks aggregated into large segment files in a directory (any POSIX filesystem;
/// striped on Lustre). See the crate documentation for the format and the guarantees.
pub struct FileTier {
    pub(crate) inner: Arc<Inner>,
    compactor: Option<Compactor>,
    report: OpenReport,
    lend_buffers: LendBuffers,
}

impl FileTier {
    /// Opens the tier in `config.path`, creating the directory when missing, and rebuilds
    /// the index from the segments found there (its own and other writers').
    pub fn open(name: impl Into<String>, config: &FileTierConfig) -> Result<Self> {
        let started = Instant::now();
        let name = name.into();
        config
            .validate()
            .map_err(|e| e.with_context("tier", &name))?;
        let dir = config.path.clone();
        let access = config.access().map_err(|e| e.with_context("tier", &name))?;
        access
            .create_dir_all(&dir)
            .map_err(|e| io_error("cannot create the tier directory", &dir, e))?;
        check_format(&dir, &access)?;
        let io_engine = engine::choose(config.io_engine, &name)?;
        let direct = config.direct_io
            && {
                let ok = io::direct_io_supported(&dir);
                if !ok {
                    tracing::warn!(dir = %dir.display(), "O_DIRECT refused by this filesystem; using buffered I/O");
                }
                ok
            };
        let striping = lustre::striping_for(&dir, config.stripe_count, config.stripe_size.as_u64());
        let (writer_id, lock) = take_writer(&dir, config, &access)?;
        let listing = list(&dir)?;

        let recovered = recover::recover(&dir, &writer_id, &listing, &access, direct, &name)?;
        if recovered.used > config.capacity.as_u64() {
            tracing::warn!(tier = %name, used = recovered.used, capacity = config.capacity.as_u64(), "directory holds more than the capacity; puts fail until blocks are removed");
        }
        let recover::Recovered {
            segments,
            index,
            used,
            last_seq,
            deletes,
            mut report,
        } = recovered;

        let next_number = listing
            .segments
            .get(&writer_id)
            .and_then(|files| files.iter().map(|(n, _)| *n).max())
            .map_or(0, |n| n + 1);
        let active = Arc::new(Segment::create(
            &dir,
            &writer_id,
            next_number,
            direct,
            striping,
            &access,
        )?);
        let mut map = BTreeMap::new();
        for segment in &segments {
            map.insert(segment.name.clone(), Arc::clone(segment));
        }
        map.insert(active.name.clone(), Arc::clone(&active));
        let io_pool = rayon::ThreadPoolBuilder::new()
            .num_threads(config.io_threads)
            .thread_name(|i| format!("cascade-file-io-{i}"))
            .build()
            .map_err(|e| Error::new(ErrorKind::Io, format!("cannot start the I/O threads: {e}")))?;
        let signal = Arc::new(Signal::default());
        let inner = Arc::new(Inner {
            io_pool,
            read_handles: ReadHandles::new(READ_HANDLES),
            name,
            dir,
            writer_id,
            direct,
            engine: io_engine,
            capacity: config.capacity.as_u64(),
            segment_size: config.segment_bytes(),
            threshold: config.compaction_threshold,
            striping,
            access,
            index,
            segments: RwLock::new(map),
            writer: Mutex::new(Writer {
                lanes: std::iter::once(Some(active))
                    .chain(std::iter::repeat_n(
                        None,
                        config.write_lanes.saturating_sub(1),
                    ))
                    .collect(),
                lane_of: crate::lane::Lanes::new(config.write_lanes),
                next_number: next_number + 1,
                last_seq,
                deletes,
                staging: AlignedBuf::default(),
                unsynced: Vec::new(),
                dir_dirty: true,
            }),
            used: AtomicU64::new(used),
            signal: Arc::clone(&signal),
            counters: Counters::default(),
            refreshing: Mutex::new(()),
            _lock: lock,
        });
        let compactor = if config.background_compaction {
            let compactor = Compactor::start(Arc::downgrade(&inner), signal)?;
            if segments.iter().any(|s| inner.is_candidate(s)) {
                inner.signal.wake();
            }
            Some(compactor)
        } else {
            None
        };
        report.elapsed = started.elapsed();
        report.io_engine = Some(io_engine);
        tracing::debug!(tier = %inner.name, ?report, "file tier opened");
        Ok(Self {
            inner,
            compactor,
            report,
            lend_buffers: LendBuffers::default(),
        })
    }

    /// What the open found.
    pub fn open_report(&self) -> &OpenReport {
        &self.report
    }

    /// The tier's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The writer id in this tier's segment file names.
    pub fn writer_id(&self) -> &str {
        &self.inner.writer_id
    }

    /// Whether segment files are opened with O_DIRECT.
    pub fn direct_io(&self) -> bool {
        self.inner.direct
    }

    /// The I/O engine batch reads and writes go through (what `io_engine` resolved to).
    pub fn io_engine(&self) -> EngineInUse {
        self.inner.engine
    }

    /// Where a block lives: its segment file and the byte offset of its record there
    /// (for tools and tests; `None` when the tier does not hold it).
    pub fn location(&self, id: BlockId) -> Option<(PathBuf, u64)> {
        self.inner
            .index
            .with(&id, |e| (e.segment.path.clone(), e.record.offset))
    }

    /// The segment files this tier knows, sorted by name.
    pub fn segment_paths(&self) -> Vec<PathBuf> {
        self.inner
            .segments
            .read()
            .values()
            .map(|s| s.path.clone())
            .collect()
    }

    /// Rewrites every sealed segment whose dead fraction reached the threshold, now, on
    /// the calling thread (the background thread does the same on its own).
    pub fn compact(&self) -> Result<CompactionReport> {
        compact::compact(&self.inner)
    }

    /// Seals every segment being appended to that holds records, and starts new ones,
    /// so that their dead space can be compacted (tests and tools; normally segments
    /// seal when full).
    pub fn seal_active(&self) -> Result<()> {
        let mut w = self.inner.writer.lock();
        for lane in 0..w.lanes.len() {
            let holds_records = w.lanes[lane]
                .as_ref()
                .is_some_and(|s| !s.records.lock().is_empty());
            if holds_records {
                self.inner.roll(&mut w, lane)?;
            }
        }
        Ok(())
    }

    /// Flushes, then drops every segment file's pages from the page cache
    /// (`posix_fadvise(DONTNEED)`), so the next reads come from the device: what a cold
    /// read benchmark needs.
    pub fn drop_page_cache(&self) -> Result<()> {
        self.inner.flush()?;
        let segments: Vec<Arc<Segment>> = self.inner.segments.read().values().cloned().collect();
        for segment in segments {
            io::drop_file_cache(&segment.file)
                .map_err(|e| io_error("posix_fadvise failed", &segment.path, e))?;
        }
        Ok(())
    }
}

impl Drop for FileTier {
    fn drop(&mut self) {
        // Stop compaction first so it cannot race the final seal.
        self.compactor = None;
        let inner = &self.inner;
        let w = inner.writer.lock();
        for active in w.lanes.iter().flatten() {
            if active.records.lock().is_empty() {
                let _ = std::fs::remove_file(&active.path);
            } else if let Err(e) = active.seal() {
                tracing::warn!(tier = %inner.name, segment = %active.path.display(), error = %e, "sealing a segment at close failed; the next open scans it");
            }
        }
    }
}

impl Tier for FileTier {
    fn kind(&self) -> &str {
        crate::KIND
    }

    fn name(&self) -> &str {
        &self.inner.name
    }

    fn capability(&self) -> Capability {
        Capability {
            persistent: true,
            // Writers with distinct ids share a directory; refresh picks up the others.
            shared: true,
            refresh: true,
            // A batch is one submission (io_uring) or a few vectored calls.
            batch_native: true,
            max_block_size: self.max_block_size(),
            ..Capability::default()
        }
    }

    fn capacity(&self) -> u64 {
        self.inner.capacity
    }

    fn used(&self) -> u64 {
        self.inner.used.load(Ordering::Acquire)
    }

    fn put(&self, id: BlockId, data: &[u8]) -> Result<()> {
        check_block_fits(&self.inner.name, data.len() as u64, self.max_block_size())?;
        let sum = cascade_hash::checksum(data);
        self.inner
            .put_many(&[(id, data)], &[sum])
            .pop()
            .unwrap_or_else(|| Err(Error::new(ErrorKind::Io, "put produced no result")))
    }

    fn put_batch(&self, items: &[(BlockId, &[u8])]) -> Vec<Result<()>> {
        let max = self.max_block_size();
        let checksums: Vec<u64> = items
            .par_iter()
            .map(|(_, d)| cascade_hash::checksum(d))
            .collect();
        let mut fitting = Vec::with_capacity(items.len());
        let mut sums = Vec::with_capacity(items.len());
        let mut results: Vec<Option<Result<()>>> = (0..items.len()).map(|_| None).collect();
        let mut positions = Vec::with_capacity(items.len());
        for (position, ((id, data), sum)) in items.iter().zip(checksums).enumerate() {
            match check_block_fits(&self.inner.name, data.len() as u64, max) {
                Ok(()) => {
                    fitting.push((*id, *data));
                    sums.push(sum);
                    positions.push(position);
                }
                Err(e) => results[position] = Some(Err(e)),
            }
        }
        for (position, result) in positions
            .into_iter()
            .zip(self.inner.put_many(&fitting, &sums))
        {
            results[position] = Some(result);
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::new(ErrorKind::Io, "put was not attempted"))))
            .collect()
    }

    fn get(&self, id: BlockId, out: &mut [u8]) -> Result<usize> {
        if self.inner.engine == EngineInUse::IoUring {
            let mut one = [(id, out)];
            return self
                .get_batch(&mut one)
                .pop()
                .unwrap_or_else(|| Err(Error::new(ErrorKind::Io, "get produced no result")));
        }
        let entry = self
            .inner
            .index
            .with(&id, Entry::clone)
            .ok_or_else(|| Error::not_found(id))?;
        self.inner.read_entry(&entry, out)
    }

    fn get_batch(&self, items: &mut [(BlockId, &mut [u8])]) -> Vec<Result<usize>> {
        let mut results: Vec<Option<Result<usize>>> = (0..items.len()).map(|_| None).collect();
        let mut found = Vec::with_capacity(items.len());
        for (position, (id, out)) in items.iter_mut().enumerate() {
            match self.inner.index.with(id, Entry::clone) {
                None => results[position] = Some(Err(Error::not_found(*id))),
                Some(entry) if (out.len() as u64) < entry.record.len => {
                    results[position] = Some(Err(cascade_core::tier::buffer_too_small(
                        *id,
                        entry.record.len,
                        out.len(),
                    )));
                }
                Some(entry) => {
                    let len = entry.record.len as usize;
                    found.push((position, entry, &mut out[..len]));
                }
            }
        }
        for (position, outcome) in self.inner.read_found(found) {
            results[position] = Some(outcome);
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::new(ErrorKind::Io, "get was not attempted"))))
            .collect()
    }

    fn get_with_batch(&self, ids: &[BlockId], visit: &mut BatchVisit<'_>) -> Vec<Result<()>> {
        self.inner.lend_batch(&self.lend_buffers, ids, visit)
    }

    fn len_of(&self, id: BlockId) -> Option<u64> {
        self.inner.index.with(&id, |e| e.record.len)
    }

    fn remove(&self, id: BlockId) -> Result<bool> {
        let mut w = self.inner.writer.lock();
        self.inner.remove_entry(&mut w, id, None)
    }

    fn flush(&self) -> Result<()> {
        self.inner.flush()
    }

    fn clear(&self) -> Result<()> {
        let inner = &self.inner;
        let mut w = inner.writer.lock();
        let segments: Vec<Arc<Segment>> = std::mem::take(&mut *inner.segments.write())
            .into_values()
            .collect();
        inner.index.clear_all();
        inner.used.store(0, Ordering::Release);
        for segment in &segments {
            segment.retired.store(true, Ordering::Release);
            match std::fs::remove_file(&segment.path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error("cannot delete a segment", &segment.path, e)),
            }
        }
        w.unsynced.clear();
        inner.read_handles.forget_all();
        // Lanes start their next segment when they next write.
        w.lanes.iter_mut().for_each(|lane| *lane = None);
        w.deletes.reset()?;
        io::sync_dir(&inner.dir)
            .map_err(|e| io_error("fsync of the tier directory failed", &inner.dir, e))?;
        w.dir_dirty = false;
        Ok(())
    }

    fn ids(&self) -> Vec<(BlockId, u64)> {
        let mut ids = Vec::with_capacity(self.inner.index.count());
        self.inner
            .index
            .for_each(|id, e| ids.push((*id, e.record.len)));
        ids
    }

    /// Picks up other writers' new segments, appends, removals and compactions since
    /// open or the last refresh, as an open would see them (see the crate documentation).
    fn refresh(&self) -> Result<cascade_core::TierRefresh> {
        self.inner.refresh()
    }

    fn extra_stats(&self) -> Vec<(String, f64)> {
        let segments: Vec<Arc<Segment>> = self.inner.segments.read().values().cloned().collect();
        let data: u64 = segments.iter().map(|s| s.data_bytes()).sum();
        let live: u64 = segments
            .iter()
            .map(|s| s.live.load(Ordering::Relaxed))
            .sum();
        vec![
            ("segments".into(), segments.len() as f64),
            ("dead_bytes".into(), data.saturating_sub(live) as f64),
            (
                "compactions".into(),
                self.inner.counters.compactions.load(Ordering::Relaxed) as f64,
            ),
            ("read_handles".into(), self.inner.read_handles.len() as f64),
            (
                "io_uring".into(),
                f64::from(u8::from(self.inner.engine == EngineInUse::IoUring)),
            ),
            (
                "io_uring_fallbacks".into(),
                self.inner.counters.uring_fallbacks.load(Ordering::Relaxed) as f64,
            ),
            (
                "corrupt_dropped".into(),
                self.inner.counters.corrupt_dropped.load(Ordering::Relaxed) as f64,
            ),
        ]
    }
}

impl FileTier {
    /// Largest payload: the capacity less one record header, on whole pages.
    fn max_block_size(&self) -> u64 {
        (self.inner.capacity - self.inner.capacity % PAGE).saturating_sub(HEADER_LEN as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::record_span;
    use cascade_core::config::ByteSize;

    /// The entries of `count` blocks of `len` bytes put in one batch, with their buffers.
    fn planned(direct: bool, count: usize, len: usize, threads: usize) -> Vec<usize> {
        let dir = tempfile::tempdir().unwrap();
        let mut config = FileTierConfig::new(dir.path());
        config.direct_io = direct;
        config.capacity = ByteSize::mib(256);
        let tier = FileTier::open("file0", &config).unwrap();
        let block = vec![3u8; len];
        let ids: Vec<BlockId> = (0..count as u128)
            .map(|n| BlockId::from_u128(n + 1))
            .collect();
        let items: Vec<(BlockId, &[u8])> = ids.iter().map(|id| (*id, block.as_slice())).collect();
        for result in tier.put_batch(&items) {
            result.unwrap();
        }
        let mut outs = vec![vec![0u8; len]; count];
        let found: Vec<(usize, Entry, &mut [u8])> = ids
            .iter()
            .zip(outs.iter_mut())
            .enumerate()
            .map(|(i, (id, out))| {
                let entry = tier.inner.index.with(id, Entry::clone).unwrap();
                (i, entry, out.as_mut_slice())
            })
            .collect();
        Inner::plan_runs(found, threads, direct)
            .iter()
            .map(|run| run.len())
            .collect()
    }

    /// (end, written-back mark) of the caller's lane segment after putting `count` blocks
    /// of 128 KiB one batch at a time.
    fn writeback_marks(direct: bool, batches: &[usize]) -> Vec<(u64, u64)> {
        let dir = tempfile::tempdir().unwrap();
        let mut config = FileTierConfig::new(dir.path());
        config.direct_io = direct;
        config.capacity = ByteSize::mib(256);
        let tier = FileTier::open("file0", &config).unwrap();
        let block = vec![5u8; 128 << 10];
        let mut next = 1u128;
        batches
            .iter()
            .map(|&count| {
                let ids: Vec<BlockId> = (next..next + count as u128)
                    .map(BlockId::from_u128)
                    .collect();
                next += count as u128;
                let items: Vec<(BlockId, &[u8])> =
                    ids.iter().map(|id| (*id, block.as_slice())).collect();
                for result in tier.put_batch(&items) {
                    result.unwrap();
                }
                let segment = tier
                    .inner
                    .index
                    .with(&ids[0], |e| Arc::clone(&e.segment))
                    .unwrap();
                (
                    segment.end.load(Ordering::Acquire),
                    segment.written_back.load(Ordering::Acquire),
                )
            })
            .collect()
    }

    #[test]
    fn writeback_starts_once_8_mib_were_appended_and_covers_all_of_it() {
        let marks = writeback_marks(false, &[16, 40, 20]);
        // 16 blocks (~2 MiB): too little yet.
        assert_eq!(marks[0].1, 0);
        // 56 blocks (~7.2 MiB): still below 8 MiB.
        assert_eq!(marks[1].1, 0);
        // 76 blocks (~9.8 MiB): everything appended so far is handed to writeback.
        assert_eq!(marks[2].1, marks[2].0);
        // O_DIRECT writes bypass the page cache: nothing to start.
        let direct = writeback_marks(true, &[76]);
        assert_eq!(direct[0].1, 0);
    }

    #[test]
    fn buffered_reads_keep_a_contiguous_batch_in_one_run_up_to_the_limit() {
        // 64 records of 128 KiB: about 8.3 MiB, one call however many I/O threads.
        assert_eq!(planned(false, 64, 128 << 10, 8), [64]);
        // 160 records: about 20.6 MiB, cut at 16 MiB.
        let span = record_span(128 << 10) as usize;
        let first = (16 << 20) / span;
        assert_eq!(planned(false, 160, 128 << 10, 8), [first, 160 - first]);
    }

    #[test]
    fn direct_reads_cut_a_batch_into_equal_parts_of_at_least_4_mib() {
        // About 8.3 MiB: two parts of 32 records, not one of 4 MiB and a short tail.
        assert_eq!(planned(true, 64, 128 << 10, 8), [32, 32]);
        // Below 4 MiB: one run.
        assert_eq!(planned(true, 16, 128 << 10, 8), [16]);
        // One thread: one run (up to the 16 MiB limit).
        assert_eq!(planned(true, 64, 128 << 10, 1), [64]);
    }
}
