//! [`ShmTier`]: the [`Tier`] over a mapped pool.

use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use cascade_core::tier::{
    BatchFill, BatchVisit, Capability, CheckedFill, CheckedVisit, FillTarget, HostRegion, Tier,
    apply_checked_visits, buffer_too_small, check_block_fits, checked_fill_results, tier_full,
};
use cascade_core::{
    BlockId, Error, ErrorKind, Extent, ExtentAllocator, Result, ShardedIndex, SharedFile,
    SharedPlace,
};
use parking_lot::Mutex;

use crate::commit::{CommitQueue, Pending};
use crate::config::ShmTierConfig;
use crate::layout::{ALIGNMENT, Layout, SlotRecord};
use crate::pool::Pool;
use crate::recover::{Recovered, recover};
use crate::slots::SlotTable;

/// The kind string of this tier.
pub const KIND: &str = "shm";

/// A filled batch of at least this many bytes is hashed and published on the tier's
/// hashing threads, chunk by chunk while the next chunk is filled; smaller ones are
/// still in cache and are hashed at publish on the caller's thread.
const PIPELINE_BYTES: usize = 8 << 20;

/// Bytes filled per call of a pipelined batch's fill (one batched DMA, when the source
/// is device memory): large enough that a DMA call's fixed cost stays small, small
/// enough that hashing starts soon.
const FILL_CHUNK_BYTES: usize = 4 << 20;

/// Bytes one hashing job hashes and publishes.
const HASH_JOB_BYTES: usize = 1 << 20;

/// Hashing threads of one tier at most.
const MAX_HASH_THREADS: usize = 16;

/// Room reserved for one item of a batch put: its position in the batch, slot, extent.
type Reserved = (usize, u32, Extent);

/// Where a stored block lives.
#[derive(Debug, Clone, Copy)]
struct Entry {
    extent: Extent,
    len: u64,
    slot: u32,
    /// The put's sequence number, unique per put: the committer matches on it, since
    /// an id can be replaced and a slot reused while a commit waits.
    seq: u64,
    /// Known once the slot is committed (at once for a synchronous commit).
    checksum: Option<u64>,
}

/// Blocks in a memory-mapped pool file (by default on `/dev/shm`) that outlives the
/// process: a later [`ShmTier::open`] of the same path finds every committed block,
/// with its checksum verified.
///
/// A put writes the bytes into a free extent and makes the block readable at once; its
/// xxh3-64 checksum and slot record are then written and committed (the commit word
/// last), before the put returns, or by a background thread when `background_commit` is
/// on. A process killed at any instant therefore leaves each block either complete and
/// listed or absent; [`Tier::flush`] waits until every earlier put is committed.
pub struct ShmTier {
    inner: Arc<Inner>,
    committer: Option<JoinHandle<()>>,
}

struct Inner {
    name: String,
    path: PathBuf,
    slots: SlotTable,
    data: NonNull<u8>,
    data_len: u64,
    /// Where the data region starts in the pool file.
    data_offset: u64,
    /// The pool file as other processes of the node may map it.
    shared: Option<SharedFile>,
    allocator: ExtentAllocator,
    blocks: ShardedIndex<Entry>,
    free_slots: Mutex<Vec<u32>>,
    next_seq: AtomicU64,
    verify_on_read: bool,
    /// `None`: puts commit before they return.
    commits: Option<CommitQueue>,
    /// The threads that hash and publish large batches, started by the first one
    /// (`None` inside when they could not be started: the caller's thread does it).
    hashers: OnceLock<Option<rayon::ThreadPool>>,
    recovered_blocks: usize,
    dropped_at_open: usize,
    /// Blocks stored with the checksum their batch fill handed (hashed on the GPU).
    checksums_from_fill: AtomicU64,
    // Last: the mapping and the file lock outlive every view of them above.
    pool: Pool,
}

// SAFETY: the data region is only written through extents that one put owns
// exclusively (handed out by the allocator, not yet published), and read under the
// block map's shard lock, which keeps the extent from being freed meanwhile. `data`
// points into the mapping owned by `pool`, which lives as long as `Inner`.
unsafe impl Send for Inner {}
// SAFETY: see above; all other shared state is behind locks or atomics.
unsafe impl Sync for Inner {}

impl ShmTier {
    /// Opens the pool of `config` for the tier `name`, creating it when absent.
    ///
    /// Errors: [`ErrorKind::Busy`] when another opener holds the pool;
    /// [`ErrorKind::Incompatible`] for a file of another format, magic, or capacity and
    /// [`ErrorKind::Corrupt`] for a damaged header (both leave the file untouched);
    /// [`ErrorKind::Unavailable`] when the directory is missing or lacks room;
    /// [`ErrorKind::Config`] for bad settings.
    pub fn open(name: impl Into<String>, config: &ShmTierConfig) -> Result<Self> {
        let inner = Arc::new(Inner::open(name.into(), config)?);
        let committer = match inner.commits {
            Some(_) => {
                let worker = Arc::clone(&inner);
                let handle = std::thread::Builder::new()
                    .name(format!("cascade-shm-commit-{}", inner.name))
                    .spawn(move || worker.run_committer())
                    .map_err(|e| {
                        Error::io("cannot start the shm commit thread", e)
                            .with_context("tier", &inner.name)
                    })?;
                Some(handle)
            }
            None => None,
        };
        Ok(Self { inner, committer })
    }

    /// The pool file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Blocks found (and verified) when the pool was opened.
    pub fn recovered_blocks(&self) -> usize {
        self.inner.recovered_blocks
    }

    /// Committed slots dropped when the pool was opened: records failing their own
    /// check, blocks failing their checksum or lying out of bounds, and older copies of
    /// a replaced id. (Puts that never committed are not counted: they were never
    /// visible.)
    pub fn dropped_at_open(&self) -> usize {
        self.inner.dropped_at_open
    }

    /// Blocks stored with the checksum their batch fill handed
    /// ([`Tier::put_with_batch_checked`]: blocks hashed on the GPU during their DMA)
    /// rather than hashed here, since open.
    pub fn checksums_from_fill(&self) -> u64 {
        self.inner.checksums_from_fill.load(Ordering::Relaxed)
    }

    /// Waits until every put made so far is committed to the slot table (without
    /// writing anything back to disk; see [`Tier::flush`]).
    pub fn wait_committed(&self) {
        if let Some(commits) = &self.inner.commits {
            commits.wait_drained();
        }
    }
}

impl Drop for ShmTier {
    fn drop(&mut self) {
        // A clean close commits every put first, so a reopen finds all of them.
        if let Some(commits) = &self.inner.commits {
            commits.stop();
        }
        if let Some(handle) = self.committer.take() {
            if handle.join().is_err() {
                tracing::error!(tier = %self.inner.name, "the shm commit thread panicked");
            }
        }
    }
}

/// The pool file's identity for readers in other processes; `None` (with a note in the
/// log) when it cannot be read, which only turns off their direct reads.
fn shared_file(path: &Path, len: u64) -> Option<SharedFile> {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(path) {
        Ok(meta) => Some(SharedFile {
            path: path.to_path_buf(),
            device: meta.dev(),
            inode: meta.ino(),
            len,
        }),
        Err(e) => {
            tracing::debug!(path = %path.display(), error = %e, "cannot stat the shm pool; other processes will not read it directly");
            None
        }
    }
}

impl Inner {
    fn open(name: String, config: &ShmTierConfig) -> Result<Self> {
        let path = config.resolved_path(&name);
        let layout = Layout::new(config.capacity.as_u64(), config.slot_count())
            .map_err(|e| e.with_context("tier", &name))?;
        let pool = Pool::open(&path, layout, config.prefault)
            .map_err(|e| e.with_context("tier", &name))?;
        let base = pool.base();
        let slot_count = layout.slot_count as usize;
        // SAFETY: the layout was checked against the file's length, so the slot table
        // and the data region lie inside the mapping, which `pool` keeps alive for as
        // long as `Inner` (the `pool` field drops last). Offsets are page aligned.
        let (slots, data) = unsafe {
            (
                SlotTable::new(base.add(layout.slot_table_offset as usize), slot_count),
                base.add(layout.data_offset as usize),
            )
        };
        let recovered = if pool.created() {
            Recovered::default()
        } else {
            // SAFETY: the data region is mapped and nothing writes it during recovery.
            let region =
                unsafe { std::slice::from_raw_parts(data.as_ptr(), layout.data_len as usize) };
            recover(&slots, region, &layout)
        };
        let extents: Vec<Extent> = recovered.blocks.iter().map(|f| f.extent).collect();
        let allocator = ExtentAllocator::with_allocated(layout.data_len, ALIGNMENT, &extents)
            .ok_or_else(|| {
                Error::new(ErrorKind::Corrupt, "recovered extents overlap")
                    .with_context("path", path.display())
            })?;
        let blocks = ShardedIndex::new();
        let mut used = vec![false; slot_count];
        for found in &recovered.blocks {
            used[found.slot] = true;
            blocks.insert_value(
                BlockId::from_u128(found.record.id),
                Entry {
                    extent: found.extent,
                    len: found.record.len,
                    slot: found.slot as u32,
                    seq: found.record.seq,
                    checksum: Some(found.record.checksum),
                },
            );
        }
        // Popped from the end: low slots first, so a small pool touches few table pages.
        let free_slots: Vec<u32> = (0..slot_count as u32)
            .rev()
            .filter(|&s| !used[s as usize])
            .collect();
        let shared = shared_file(&path, layout.file_len());
        if recovered.dropped > 0 {
            tracing::warn!(
                tier = %name,
                path = %path.display(),
                dropped = recovered.dropped,
                "shm pool reopened: dropped blocks that were incomplete or failed their checksum"
            );
        }
        Ok(Self {
            name,
            path,
            slots,
            data,
            data_len: layout.data_len,
            data_offset: layout.data_offset,
            shared,
            allocator,
            blocks,
            free_slots: Mutex::new(free_slots),
            next_seq: AtomicU64::new(recovered.max_seq + 1),
            verify_on_read: config.verify_on_read,
            commits: config.background_commit.then(CommitQueue::default),
            hashers: OnceLock::new(),
            recovered_blocks: recovered.blocks.len(),
            dropped_at_open: recovered.dropped,
            checksums_from_fill: AtomicU64::new(0),
            pool,
        })
    }

    /// # Safety
    /// The caller must own `extent` exclusively (allocated, not yet published).
    // Handing out `&mut` from `&self` is the point: disjoint extents of one shared
    // region are written by many threads at once, each owning its extent.
    #[allow(clippy::mut_from_ref)]
    unsafe fn extent_mut(&self, extent: Extent, len: usize) -> &mut [u8] {
        debug_assert!(extent.offset + len as u64 <= self.data_len);
        // SAFETY: the extent lies inside the data region; the caller owns it.
        unsafe {
            std::slice::from_raw_parts_mut(self.data.as_ptr().add(extent.offset as usize), len)
        }
    }

    /// # Safety
    /// The caller must hold the block map's shard lock for the block owning `extent`,
    /// so that it is neither freed nor rewritten while the slice lives.
    unsafe fn extent_ref(&self, extent: Extent, len: usize) -> &[u8] {
        // SAFETY: the extent lies inside the data region; the caller keeps it alive.
        unsafe { std::slice::from_raw_parts(self.data.as_ptr().add(extent.offset as usize), len) }
    }

    fn take_slot(&self, len: u64) -> Result<u32> {
        self.free_slots.lock().pop().ok_or_else(|| {
            tier_full(
                &self.name,
                len,
                self.allocator.used(),
                self.allocator.capacity(),
            )
            .with_context("reason", "every slot is in use (raise max_blocks)")
            .with_context("max_blocks", self.slots.len())
        })
    }

    fn release(&self, slot: u32, extent: Extent) {
        self.allocator.free(extent);
        self.free_slots.lock().push(slot);
    }

    fn commit(&self, id: BlockId, entry: &Entry, checksum: u64) {
        let record = SlotRecord {
            seq: entry.seq,
            id: id.as_u128(),
            offset: entry.extent.offset,
            len: entry.len,
            checksum,
        };
        self.slots.publish(entry.slot as usize, &record);
    }

    /// A free slot and extent for a block of `len` bytes, not yet published.
    fn reserve(&self, len: u64) -> Result<(u32, Extent)> {
        check_block_fits(&self.name, len, self.data_len)?;
        let slot = self.take_slot(len)?;
        let Some(extent) = self.allocator.allocate(len) else {
            self.free_slots.lock().push(slot);
            return Err(tier_full(
                &self.name,
                len,
                self.allocator.used(),
                self.allocator.capacity(),
            ));
        };
        Ok((slot, extent))
    }

    /// Makes a reserved, filled extent the block `id`: checksum and slot record (now,
    /// or queued for the committer), then the block map. `checksum`: the extent's, when
    /// the caller already hashed it.
    fn publish(&self, id: BlockId, slot: u32, extent: Extent, len: usize, checksum: Option<u64>) {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let mut entry = Entry {
            extent,
            len: len as u64,
            slot,
            seq,
            checksum: None,
        };
        // A checksum already known costs nothing to commit now, background committer
        // or not; without one, the committer (when there is one) hashes later.
        let checksum = checksum.or_else(|| {
            self.commits.is_none().then(|| {
                // SAFETY: the extent is still owned by this put (not published yet).
                let bytes = unsafe { self.extent_ref(extent, len) };
                // Hashing right after the copy reads the bytes back from cache.
                cascade_hash::checksum(bytes)
            })
        });
        if let Some(checksum) = checksum {
            self.commit(id, &entry, checksum);
            entry.checksum = Some(checksum);
        }
        if let Some(old) = self.blocks.insert_value(id, entry) {
            // The insert's write lock waited for readers of the old extent. With a
            // background commit the id is absent from the table until the new record
            // commits: a crash in between loses the block, never tears it.
            self.slots.retract(old.slot as usize);
            self.release(old.slot, old.extent);
        }
        if let (Some(commits), None) = (&self.commits, checksum) {
            commits.push(Pending { id, seq });
        }
    }

    fn store(
        &self,
        id: BlockId,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]) -> Result<()>,
    ) -> Result<()> {
        let (slot, extent) = self.reserve(len as u64)?;
        // SAFETY: the extent was just allocated and is not published yet.
        let target = unsafe { self.extent_mut(extent, len) };
        if let Err(err) = fill(target) {
            self.release(slot, extent);
            return Err(err);
        }
        self.publish(id, slot, extent, len, None);
        Ok(())
    }

    /// Reserves room for every item, lets `fill` write them in place (one batched DMA
    /// per call when the source is device memory), then publishes those filled.
    fn store_batch(
        &self,
        items: &[(BlockId, usize)],
        fill: &mut CheckedFill<'_>,
    ) -> Vec<Result<()>> {
        let mut results: Vec<Result<()>> = Vec::with_capacity(items.len());
        let mut reserved: Vec<Reserved> = Vec::with_capacity(items.len());
        for (i, &(_, len)) in items.iter().enumerate() {
            match self.reserve(len as u64) {
                Ok((slot, extent)) => {
                    reserved.push((i, slot, extent));
                    results.push(Ok(()));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        let bytes: usize = reserved.iter().map(|&(i, _, _)| items[i].1).sum();
        match self.hashers_for(bytes) {
            Some(hashers) => self.fill_pipelined(hashers, items, &reserved, fill, &mut results),
            None => {
                for (reserved, outcome) in self.fill_part(items, &reserved, fill) {
                    self.settle(items, reserved, outcome, &mut results);
                }
            }
        }
        results
    }

    /// Lets `fill` write the reserved extents of `part`; each item's outcome, with the
    /// checksum the fill knew.
    fn fill_part<'r>(
        &self,
        items: &[(BlockId, usize)],
        part: &'r [Reserved],
        fill: &mut CheckedFill<'_>,
    ) -> Vec<(&'r Reserved, Result<Option<u64>>)> {
        let mut targets: Vec<FillTarget<'_>> = part
            .iter()
            // SAFETY: each extent was just allocated for this item and is not published.
            .map(|&(i, _, extent)| (i, unsafe { self.extent_mut(extent, items[i].1) }))
            .collect();
        let filled = checked_fill_results(fill, &mut targets);
        drop(targets);
        let known = filled.iter().filter(|f| matches!(f, Ok(Some(_)))).count();
        self.checksums_from_fill
            .fetch_add(known as u64, Ordering::Relaxed);
        part.iter().zip(filled).collect()
    }

    /// Publishes a filled item (with the checksum its fill knew, or hashed now), or gives
    /// back the room of one its fill failed.
    fn settle(
        &self,
        items: &[(BlockId, usize)],
        &(i, slot, extent): &Reserved,
        outcome: Result<Option<u64>>,
        results: &mut [Result<()>],
    ) {
        match outcome {
            Ok(checksum) => self.publish(items[i].0, slot, extent, items[i].1, checksum),
            Err(e) => {
                self.release(slot, extent);
                results[i] = Err(e);
            }
        }
    }

    /// The hashing threads, when a batch of `bytes` is worth them and they run.
    ///
    /// A batch filled by DMA (device memory) or by one large copy is no longer in cache
    /// when it is published, so one thread hashing it reads every byte from memory at a
    /// few GB/s; spread over the cores, and started on each chunk as soon as it is
    /// filled, the hash keeps pace with the DMA of the chunks after it. Threads of the
    /// tier's own, not the store's rayon pool: the caller may hold the store's stripe
    /// locks, and a store worker waiting for its hashes could pick up a job that waits
    /// for them; these threads only hash and publish.
    fn hashers_for(&self, bytes: usize) -> Option<&rayon::ThreadPool> {
        if self.commits.is_some() || bytes < PIPELINE_BYTES {
            return None;
        }
        self.hashers
            .get_or_init(|| {
                let threads = std::thread::available_parallelism()
                    .map_or(1, usize::from)
                    .min(MAX_HASH_THREADS);
                let name = self.name.clone();
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .thread_name(move |k| format!("cascade-shm-hash-{name}-{k}"))
                    .build()
                    .map_err(|e| {
                        tracing::warn!(tier = %self.name, error = %e,
                            "cannot start the shm hashing threads; hashing on the caller's thread");
                    })
                    .ok()
            })
            .as_ref()
    }

    /// Fills a large batch chunk by chunk on the caller's thread while `hashers` hash
    /// and publish the chunks already filled. Once a chunk's fill has handed the
    /// checksum of every block (device blocks hashed on the GPU), nothing is left to
    /// overlap with the fill: the rest of the batch goes to it in one call, which keeps
    /// the DMA in one batch.
    fn fill_pipelined(
        &self,
        hashers: &rayon::ThreadPool,
        items: &[(BlockId, usize)],
        reserved: &[Reserved],
        fill: &mut CheckedFill<'_>,
        results: &mut [Result<()>],
    ) {
        hashers.in_place_scope(|scope| {
            let mut rest = reserved;
            let mut chunk_bytes = FILL_CHUNK_BYTES;
            while !rest.is_empty() {
                let (chunk, tail) = rest.split_at(leading_run(rest, |r| items[r.0].1, chunk_bytes));
                rest = tail;
                let mut filled: Vec<(Reserved, Option<u64>)> = Vec::with_capacity(chunk.len());
                let mut every_checksum_known = true;
                for (reserved, outcome) in self.fill_part(items, chunk, fill) {
                    match outcome {
                        Ok(checksum) => {
                            every_checksum_known &= checksum.is_some();
                            filled.push((*reserved, checksum));
                        }
                        Err(_) => self.settle(items, reserved, outcome, results),
                    }
                }
                if every_checksum_known && !filled.is_empty() {
                    chunk_bytes = usize::MAX;
                }
                for job in by_bytes(&filled, |(r, _)| items[r.0].1, HASH_JOB_BYTES) {
                    let job = job.to_vec();
                    scope.spawn(move |_| {
                        for ((i, slot, extent), known) in job {
                            let checksum = known.unwrap_or_else(|| {
                                // SAFETY: the extent was filled for this put and is not
                                // published yet; nothing writes it while it is hashed.
                                cascade_hash::checksum(unsafe {
                                    self.extent_ref(extent, items[i].1)
                                })
                            });
                            self.publish(items[i].0, slot, extent, items[i].1, Some(checksum));
                        }
                    });
                }
            }
        });
    }

    /// The committer thread: hashes each queued block and commits its slot, unless the
    /// block was removed or replaced meanwhile. Runs until stopped and drained.
    fn run_committer(&self) {
        let Some(commits) = &self.commits else {
            return;
        };
        while let Some(batch) = commits.take() {
            for Pending { id, seq } in batch {
                // Under the shard read lock the entry can be neither removed nor
                // replaced, so its slot is committed before any retract of it.
                let committed = self.blocks.with(&id, |entry| {
                    if entry.seq != seq {
                        return None;
                    }
                    // SAFETY: the shard read lock is held while the bytes are hashed.
                    let bytes = unsafe { self.extent_ref(entry.extent, entry.len as usize) };
                    let checksum = cascade_hash::checksum(bytes);
                    self.commit(id, entry, checksum);
                    Some(checksum)
                });
                if let Some(Some(checksum)) = committed {
                    self.blocks.update(&id, |entry| {
                        if entry.seq == seq {
                            entry.checksum = Some(checksum);
                        }
                    });
                }
            }
            commits.finished();
        }
    }

    /// Runs `visit` on the stored bytes of `id` under the shard read lock, after
    /// checking them when `verify_on_read` is set. A block failing its checksum is
    /// dropped and reported as [`ErrorKind::Corrupt`].
    fn read<R>(&self, id: BlockId, visit: impl FnOnce(&[u8], u64) -> Result<R>) -> Result<R> {
        let outcome = self.blocks.with(&id, |entry| {
            // SAFETY: the shard read lock is held while the slice is used.
            let bytes = unsafe { self.extent_ref(entry.extent, entry.len as usize) };
            // A block whose commit is still queued was written by this process moments
            // ago and has no stored checksum yet.
            if let (true, Some(want)) = (self.verify_on_read, entry.checksum) {
                if cascade_hash::checksum(bytes) != want {
                    return None;
                }
            }
            Some(visit(bytes, entry.len))
        });
        match outcome {
            None => Err(Error::not_found(id)),
            Some(Some(result)) => result,
            Some(None) => {
                // Should a concurrent put have replaced the block since the check, this
                // drops the new copy too: a miss, never wrong bytes.
                self.remove(id);
                Err(
                    Error::new(ErrorKind::Corrupt, "block failed its checksum; dropped it")
                        .with_context("tier", &self.name)
                        .with_context("id", id),
                )
            }
        }
    }

    /// Lends many blocks to `visit` at once under their shards' read locks, after
    /// checking each as [`Inner::read`] does; blocks failing their checksum are dropped
    /// once the locks are released and answered [`ErrorKind::Corrupt`].
    /// Each block is lent with its stored checksum (`None` while its commit is queued).
    fn read_batch(&self, ids: &[BlockId], visit: &mut CheckedVisit<'_>) -> Vec<Result<()>> {
        let mut corrupt: Vec<usize> = Vec::new();
        let mut results = self.blocks.with_many(ids, |found| {
            let mut results: Vec<Result<()>> = ids.iter().map(|_| Ok(())).collect();
            let mut lent: Vec<(usize, &[u8], Option<u64>)> = Vec::with_capacity(ids.len());
            for (i, entry) in found.iter().enumerate() {
                let Some(entry) = entry else {
                    results[i] = Err(Error::not_found(ids[i]));
                    continue;
                };
                // SAFETY: the shard read locks are held while the slices are used.
                let bytes = unsafe { self.extent_ref(entry.extent, entry.len as usize) };
                if let (true, Some(want)) = (self.verify_on_read, entry.checksum)
                    && cascade_hash::checksum(bytes) != want
                {
                    corrupt.push(i);
                    continue;
                }
                lent.push((i, bytes, entry.checksum));
            }
            apply_checked_visits(visit, &lent, &mut results);
            results
        });
        for i in corrupt {
            self.remove(ids[i]);
            results[i] = Err(Error::new(
                ErrorKind::Corrupt,
                "block failed its checksum; dropped it",
            )
            .with_context("tier", &self.name)
            .with_context("id", ids[i]));
        }
        results
    }

    fn remove(&self, id: BlockId) -> bool {
        match self.blocks.remove_value(&id) {
            Some(entry) => {
                self.slots.retract(entry.slot as usize);
                self.release(entry.slot, entry.extent);
                true
            }
            None => false,
        }
    }
}

/// How many of `all`'s first items make a run of about `bytes` bytes (`len` gives an
/// item's bytes): at least one item, so an item larger than that is a run of its own.
fn leading_run<T>(all: &[T], len: impl Fn(&T) -> usize, bytes: usize) -> usize {
    let mut filled = 0usize;
    all.iter()
        .take_while(|item| {
            let fits = filled == 0 || filled.saturating_add(len(item)) <= bytes;
            filled = filled.saturating_add(len(item));
            fits
        })
        .count()
        .max(1)
        .min(all.len())
}

/// Splits `all` into consecutive runs of whole items of about `bytes` bytes each (see
/// [`leading_run`]).
fn by_bytes<T>(all: &[T], len: impl Fn(&T) -> usize, bytes: usize) -> Vec<&[T]> {
    let mut runs = Vec::new();
    let mut rest = all;
    while !rest.is_empty() {
        let (run, tail) = rest.split_at(leading_run(rest, &len, bytes));
        runs.push(run);
        rest = tail;
    }
    runs
}

impl Tier for ShmTier {
    fn kind(&self) -> &str {
        KIND
    }

    fn name(&self) -> &str {
        &self.inner.name
    }

    fn capability(&self) -> Capability {
        Capability {
            persistent: true,
            // In-place batches over the pool; one opener at a time (flock), so not shared.
            batch_native: true,
            max_block_size: self.inner.data_len,
            ..Capability::default()
        }
    }

    fn capacity(&self) -> u64 {
        self.inner.allocator.capacity()
    }

    fn used(&self) -> u64 {
        self.inner.allocator.used()
    }

    fn put(&self, id: BlockId, data: &[u8]) -> Result<()> {
        self.inner.store(id, data.len(), &mut |target| {
            target.copy_from_slice(data);
            Ok(())
        })
    }

    fn put_with(
        &self,
        id: BlockId,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]) -> Result<()>,
    ) -> Result<()> {
        self.inner.store(id, len, fill)
    }

    fn put_with_batch(
        &self,
        items: &[(BlockId, usize)],
        fill: &mut BatchFill<'_>,
    ) -> Vec<Result<()>> {
        self.inner.store_batch(items, &mut |targets| {
            fill(targets)
                .into_iter()
                .map(|outcome| outcome.map(|()| None))
                .collect()
        })
    }

    /// Blocks whose checksum the fill hands are published with it, unhashed here.
    fn put_with_batch_checked(
        &self,
        items: &[(BlockId, usize)],
        fill: &mut CheckedFill<'_>,
    ) -> Vec<Result<()>> {
        self.inner.store_batch(items, fill)
    }

    fn get_with_batch(&self, ids: &[BlockId], visit: &mut BatchVisit<'_>) -> Vec<Result<()>> {
        self.inner.read_batch(ids, &mut |lent| {
            let blocks: Vec<(usize, &[u8])> =
                lent.iter().map(|&(i, bytes, _)| (i, bytes)).collect();
            visit(&blocks)
        })
    }

    fn get_with_batch_checked(
        &self,
        ids: &[BlockId],
        visit: &mut CheckedVisit<'_>,
    ) -> Vec<Result<()>> {
        self.inner.read_batch(ids, visit)
    }

    fn get(&self, id: BlockId, out: &mut [u8]) -> Result<usize> {
        self.inner.read(id, |bytes, len| {
            if out.len() < bytes.len() {
                return Err(buffer_too_small(id, len, out.len()));
            }
            out[..bytes.len()].copy_from_slice(bytes);
            Ok(bytes.len())
        })
    }

    fn get_with(&self, id: BlockId, visit: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        self.inner.read(id, |bytes, _| visit(bytes))
    }

    fn len_of(&self, id: BlockId) -> Option<u64> {
        self.inner.blocks.with(&id, |entry| entry.len)
    }

    fn remove(&self, id: BlockId) -> Result<bool> {
        Ok(self.inner.remove(id))
    }

    /// Waits until every earlier put is committed, then writes dirty pages back (cheap
    /// on tmpfs; real I/O for a pool on a disk-backed file system).
    fn flush(&self) -> Result<()> {
        self.wait_committed();
        self.inner
            .pool
            .sync()
            .map_err(|e| e.with_context("tier", &self.inner.name))
    }

    fn clear(&self) -> Result<()> {
        let mut ids = Vec::new();
        self.inner.blocks.for_each(|id, _| ids.push(*id));
        for id in ids {
            self.inner.remove(id);
        }
        Ok(())
    }

    fn ids(&self) -> Vec<(BlockId, u64)> {
        let mut ids = Vec::new();
        self.inner
            .blocks
            .for_each(|id, entry| ids.push((*id, entry.len)));
        ids
    }

    fn host_region(&self) -> Option<HostRegion> {
        Some(HostRegion {
            base: self.inner.data.as_ptr(),
            len: self.inner.data_len as usize,
        })
    }

    fn shared_file(&self) -> Option<SharedFile> {
        self.inner.shared.clone()
    }

    fn shared_places(&self, ids: &[BlockId]) -> Vec<Option<SharedPlace>> {
        let inner = &self.inner;
        ids.iter()
            .map(|id| {
                inner.blocks.with(id, |entry| {
                    entry.checksum.map(|checksum| SharedPlace {
                        offset: inner.data_offset + entry.extent.offset,
                        len: entry.len,
                        checksum,
                    })
                })?
            })
            .collect()
    }

    fn extra_stats(&self) -> Vec<(String, f64)> {
        let inner = &self.inner;
        let slots_used = inner.slots.len() - inner.free_slots.lock().len();
        vec![
            ("fragmentation".into(), inner.allocator.fragmentation()),
            ("slots_used".into(), slots_used as f64),
            ("slots_total".into(), inner.slots.len() as f64),
            ("recovered_blocks".into(), inner.recovered_blocks as f64),
            ("dropped_at_open".into(), inner.dropped_at_open as f64),
            (
                "checksums_from_fill".into(),
                inner.checksums_from_fill.load(Ordering::Relaxed) as f64,
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_cover_every_item_once_in_order_within_their_bytes() {
        let lens = [3usize, 3, 3, 10, 1, 1, 2];
        let runs = by_bytes(&lens, |&l| l, 6);
        assert_eq!(
            runs,
            vec![&[3, 3][..], &[3][..], &[10][..], &[1, 1, 2][..]],
            "whole items, at most 6 bytes a run unless one item is larger"
        );
        assert_eq!(leading_run(&lens, |&l| l, usize::MAX), lens.len());
        assert_eq!(leading_run(&lens, |&l| l, 0), 1, "at least one item");
        assert!(by_bytes(&[] as &[usize], |&l| l, 6).is_empty());
    }
}
