//! The [`Tier`] trait: one storage level (GPU HBM, host memory, shared memory, files).

use rayon::prelude::*;

use crate::{BlockId, Error, ErrorKind, Result};

/// What a tier can do; the store and the conformance kit read it.
///
/// Tiers build it from [`Capability::default`] (a private, host-memory tier with no
/// limit of its own on block size) and set what differs, so a field added later keeps
/// its default for tiers that do not know it:
///
/// ```
/// # use cascade_core::Capability;
/// let file_like = Capability { persistent: true, shared: true, refresh: true, ..Capability::default() };
/// assert!(!file_like.device_memory);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Capability {
    /// Blocks survive the process: reopening the tier finds them again. Default: false.
    pub persistent: bool,
    /// Bytes live in device (GPU) memory rather than host memory. Default: false.
    pub device_memory: bool,
    /// The CUDA device ordinal the tier's memory lives on, for tiers in device memory
    /// whose device is known (the GPU tier); `None` for host memory. Default: `None`.
    pub device: Option<usize>,
    /// Several instances, in several processes, may hold the tier's storage at once and
    /// see each other's blocks (a shared directory, a server); with [`Self::refresh`]
    /// unset they see them at once, otherwise after [`Tier::refresh`]. Default: false.
    pub shared: bool,
    /// [`Tier::refresh`] finds blocks that other instances sharing the storage stored or
    /// removed, so a store can bring its index up to date without reopening. Only a
    /// [`Self::shared`] tier can have it. Default: false.
    pub refresh: bool,
    /// The tier's own batch calls (`put_batch`, `get_batch`, `put_with_batch`,
    /// `get_with_batch`) do better than one call per block: one submission, one round
    /// trip or one DMA for the batch. Default: false (the trait's per-block defaults).
    pub batch_native: bool,
    /// Largest single block the tier accepts, in bytes. Default: `u64::MAX` (the
    /// capacity is the only limit).
    pub max_block_size: u64,
}

impl Default for Capability {
    fn default() -> Self {
        Self {
            persistent: false,
            device_memory: false,
            device: None,
            shared: false,
            refresh: false,
            batch_native: false,
            max_block_size: u64::MAX,
        }
    }
}

/// One storage level of the hierarchy.
///
/// Implementations are shared between threads (`&self` everywhere) and must keep these
/// promises, which the conformance kit checks:
/// - `used() <= capacity()` at every moment;
/// - a successful `put` makes the block readable with the same bytes until `remove`,
///   `clear`, or (for a non-persistent tier) the end of the process;
/// - `put` of an id already held replaces it;
/// - a full tier answers [`ErrorKind::TierFull`], a block that can never fit
///   [`ErrorKind::TooLarge`], and bytes failing their checksum [`ErrorKind::Corrupt`].
pub trait Tier: Send + Sync {
    /// The kind string this tier is configured with (`"memory"`, `"shm"`, ...).
    fn kind(&self) -> &str;

    /// The instance name (unique within a store), used in stats and errors.
    fn name(&self) -> &str;

    /// What the tier can do.
    fn capability(&self) -> Capability;

    /// Total bytes the tier may hold.
    fn capacity(&self) -> u64;

    /// Bytes currently allocated to blocks (including any rounding the tier applies).
    fn used(&self) -> u64;

    /// Stores `data` under `id`, replacing an older block of the same id.
    fn put(&self, id: BlockId, data: &[u8]) -> Result<()>;

    /// Copies the block into the start of `out` and returns its length.
    ///
    /// Errors: [`ErrorKind::NotFound`]; [`ErrorKind::InvalidInput`] when `out` is shorter
    /// than the block; [`ErrorKind::Corrupt`] when the bytes fail their checksum (the tier
    /// then drops the block).
    fn get(&self, id: BlockId, out: &mut [u8]) -> Result<usize>;

    /// The stored length of `id`, or `None` when absent.
    fn len_of(&self, id: BlockId) -> Option<u64>;

    /// Whether `id` is stored.
    fn contains(&self, id: BlockId) -> bool {
        self.len_of(id).is_some()
    }

    /// Removes `id`; returns whether it was present.
    fn remove(&self, id: BlockId) -> Result<bool>;

    /// Stores many blocks; one result per item, in order. The default runs the puts in
    /// parallel on the rayon pool.
    fn put_batch(&self, items: &[(BlockId, &[u8])]) -> Vec<Result<()>> {
        items
            .par_iter()
            .map(|(id, data)| self.put(*id, data))
            .collect()
    }

    /// Reads many blocks into their buffers; one result (the length) per item, in order.
    /// The default runs the gets in parallel on the rayon pool.
    fn get_batch(&self, items: &mut [(BlockId, &mut [u8])]) -> Vec<Result<usize>> {
        items
            .par_iter_mut()
            .map(|(id, out)| self.get(*id, out))
            .collect()
    }

    /// Stores a block of `len` bytes that `fill` writes in place.
    ///
    /// Tiers that own addressable host memory override this so that a demotion or
    /// promotion writes straight into their storage with no intermediate buffer. The
    /// default fills a temporary buffer and calls [`Tier::put`].
    fn put_with(
        &self,
        id: BlockId,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]) -> Result<()>,
    ) -> Result<()> {
        let mut buffer = vec![0u8; len];
        fill(&mut buffer)?;
        self.put(id, &buffer)
    }

    /// Stores several blocks whose bytes `fill` writes in place, in one call, so that a
    /// batch of moves (or of device copies) reaches the tier's memory as one batch.
    ///
    /// `items` are `(id, length)`. `fill` gets a buffer of the item's length for every
    /// item that got room, each with the item's position in `items`, and returns one
    /// result per buffer it was given, in order; only buffers filled with `Ok` are
    /// stored. A tier may call it more than once, each time with other items (the shm
    /// tier fills a large batch in chunks while it hashes the chunks before); each
    /// buffer is handed out once. One result per item, in order (a full tier answers
    /// [`ErrorKind::TierFull`] for the items it found no room for).
    ///
    /// Tiers that own addressable host memory override this to reserve room for every
    /// item first and fill it in place; the default fills temporary buffers and puts
    /// them one by one. The store calls this while it holds the blocks' locks: an
    /// implementation must not wait for work on the store's rayon pool.
    fn put_with_batch(
        &self,
        items: &[(BlockId, usize)],
        fill: &mut BatchFill<'_>,
    ) -> Vec<Result<()>> {
        let mut buffers: Vec<Vec<u8>> = items.iter().map(|&(_, len)| vec![0u8; len]).collect();
        let mut targets: Vec<FillTarget<'_>> = buffers
            .iter_mut()
            .enumerate()
            .map(|(i, b)| (i, b.as_mut_slice()))
            .collect();
        let filled = fill_results(fill, &mut targets);
        drop(targets);
        let mut results: Vec<Result<()>> = Vec::with_capacity(items.len());
        let mut ready: Vec<(BlockId, &[u8])> = Vec::new();
        let mut positions = Vec::new();
        for (i, outcome) in filled.into_iter().enumerate() {
            match outcome {
                Ok(()) => {
                    ready.push((items[i].0, buffers[i].as_slice()));
                    positions.push(i);
                    results.push(Ok(()));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        // One by one, not through put_batch: the store calls this under its block locks,
        // where waiting on a rayon pool could run a job that waits for those locks.
        for (i, (id, data)) in positions.into_iter().zip(ready) {
            results[i] = self.put(id, data);
        }
        results
    }

    /// [`Tier::put_with_batch`] whose fill may also hand, with each buffer it filled, the
    /// checksum of the bytes it wrote: the XXH3-64 (seed 0, as `cascade_hash::checksum`)
    /// computed where the bytes came from (on the GPU, for a block copied from device
    /// memory), so a tier that keeps checksums need not read the bytes back from memory
    /// to hash them. `None` where the fill does not know it.
    ///
    /// The caller vouches for each checksum it hands: a wrong one makes the block fail its
    /// check when the tier verifies it (on reopen, or on reads that verify), so it is
    /// dropped, never served. The default ignores the checksums and calls
    /// [`Tier::put_with_batch`]; otherwise as that method.
    fn put_with_batch_checked(
        &self,
        items: &[(BlockId, usize)],
        fill: &mut CheckedFill<'_>,
    ) -> Vec<Result<()>> {
        self.put_with_batch(items, &mut |targets| {
            fill(targets)
                .into_iter()
                .map(|outcome| outcome.map(|_| ()))
                .collect()
        })
    }

    /// [`Tier::get_batch`] that also answers each block's checksum (as
    /// [`Tier::put_with_batch_checked`] takes it) where the tier can compute it without
    /// reading the bytes through host memory (the GPU tier hashes its blocks on the
    /// device while they are copied out); `None` elsewhere. The store uses it to move
    /// blocks out of a device tier into a tier that keeps checksums. The default answers
    /// `None` for every block.
    fn get_batch_checked(
        &self,
        items: &mut [(BlockId, &mut [u8])],
    ) -> Vec<Result<(usize, Option<u64>)>> {
        self.get_batch(items)
            .into_iter()
            .map(|got| got.map(|len| (len, None)))
            .collect()
    }

    /// Lends the block's bytes to `visit` without copying them out, where the tier can.
    ///
    /// The default copies into a temporary buffer first.
    fn get_with(&self, id: BlockId, visit: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        visit(&read_whole(self, id)?)
    }

    /// Lends the bytes of many blocks to `visit` at once, where the tier can, so that one
    /// batched DMA reads them all straight from the tier's memory.
    ///
    /// `visit` gets `(position in ids, bytes)` for every block found and returns one
    /// result per block it was given, in order. A tier may call it more than once, each
    /// time with other blocks (the file tier lends a large batch chunk by chunk, reading
    /// the next while the visit copies one out). One result per id, in order
    /// ([`ErrorKind::NotFound`] for a missing block, [`ErrorKind::Corrupt`] for one that
    /// failed its checksum). The default reads each block into a temporary buffer first.
    fn get_with_batch(&self, ids: &[BlockId], visit: &mut BatchVisit<'_>) -> Vec<Result<()>> {
        let mut results: Vec<Result<()>> = Vec::with_capacity(ids.len());
        let mut buffers: Vec<(usize, Vec<u8>)> = Vec::new();
        for (i, &id) in ids.iter().enumerate() {
            match read_whole(self, id) {
                Ok(buffer) => {
                    buffers.push((i, buffer));
                    results.push(Ok(()));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        let lent: Vec<(usize, &[u8])> = buffers.iter().map(|(i, b)| (*i, b.as_slice())).collect();
        apply_visits(visit, &lent, &mut results);
        results
    }

    /// [`Tier::get_with_batch`] that also hands each lent block's stored checksum, where
    /// the tier keeps one: the XXH3-64 (seed 0, as `cascade_hash::checksum`) of the
    /// bytes as they were written, not of the bytes now lent. A caller that must send a
    /// checksum with the bytes (a cluster holder) takes it instead of hashing them, and
    /// bytes damaged since the write then fail the receiver's check rather than being
    /// certified by a fresh hash.
    ///
    /// `visit` gets `(position in ids, bytes, checksum)`; otherwise as
    /// [`Tier::get_with_batch`]. The default lends through [`Tier::get_with_batch`] with
    /// no checksums.
    fn get_with_batch_checked(
        &self,
        ids: &[BlockId],
        visit: &mut CheckedVisit<'_>,
    ) -> Vec<Result<()>> {
        self.get_with_batch(ids, &mut |lent| {
            let blocks: Vec<(usize, &[u8], Option<u64>)> =
                lent.iter().map(|&(i, bytes)| (i, bytes, None)).collect();
            visit(&blocks)
        })
    }

    /// Stores a block of `len` bytes copied from device (GPU) memory at address `src`.
    ///
    /// Only tiers whose [`Capability::device_memory`] is set implement this; the default
    /// answers [`ErrorKind::Unsupported`]. Errors otherwise as [`Tier::put`].
    ///
    /// # Safety
    /// `[src, src + len)` must be device memory valid for `len` bytes on the tier's
    /// device, and nothing may write it until this returns.
    unsafe fn put_from_device(&self, id: BlockId, src: u64, len: usize) -> Result<()> {
        let _ = (id, src, len);
        Err(no_device_path(self.name()))
    }

    /// Copies the block into device (GPU) memory of `capacity` bytes at `dst` and returns
    /// its length.
    ///
    /// Only tiers whose [`Capability::device_memory`] is set implement this; the default
    /// answers [`ErrorKind::Unsupported`]. Errors otherwise as [`Tier::get`].
    ///
    /// # Safety
    /// `[dst, dst + capacity)` must be device memory valid for `capacity` bytes on the
    /// tier's device, which nothing else reads or writes until this returns.
    unsafe fn get_into_device(&self, id: BlockId, dst: u64, capacity: usize) -> Result<usize> {
        let _ = (id, dst, capacity);
        Err(no_device_path(self.name()))
    }

    /// Stores many blocks from device memory; items are `(id, device address, length)`,
    /// one result per item, in order. The default calls [`Tier::put_from_device`] for
    /// each; the GPU tier batches the copies.
    ///
    /// # Safety
    /// As for [`Tier::put_from_device`], for every item.
    unsafe fn put_from_device_batch(&self, items: &[(BlockId, u64, usize)]) -> Vec<Result<()>> {
        items
            .iter()
            // SAFETY: the caller upholds put_from_device's contract for every item.
            .map(|&(id, src, len)| unsafe { self.put_from_device(id, src, len) })
            .collect()
    }

    /// Copies many blocks into device memory; items are `(id, device address,
    /// capacity)`, one result (the length) per item, in order. The default calls
    /// [`Tier::get_into_device`] for each; the GPU tier batches the copies.
    ///
    /// # Safety
    /// As for [`Tier::get_into_device`], for every item; the ranges must not overlap.
    unsafe fn get_into_device_batch(&self, items: &[(BlockId, u64, usize)]) -> Vec<Result<usize>> {
        items
            .iter()
            // SAFETY: the caller upholds get_into_device's contract for every item.
            .map(|&(id, dst, capacity)| unsafe { self.get_into_device(id, dst, capacity) })
            .collect()
    }

    /// Makes everything stored so far durable (persistent tiers) or does nothing.
    fn flush(&self) -> Result<()>;

    /// Removes every block.
    fn clear(&self) -> Result<()>;

    /// Every id held, with its length; the store rebuilds its index from this on open.
    fn ids(&self) -> Vec<(BlockId, u64)>;

    /// The host memory region holding the tier's blocks, when it has one that other tiers
    /// may address directly (the shm pool, which the GPU tier registers with CUDA).
    fn host_region(&self) -> Option<HostRegion> {
        None
    }

    /// The file holding the tier's blocks, when other processes of the same user on this
    /// node may map it and read blocks from it themselves (the shm pool); see
    /// [`Tier::shared_places`].
    fn shared_file(&self) -> Option<SharedFile> {
        None
    }

    /// Where each block lies in [`Tier::shared_file`], with the checksum it was stored
    /// with; `None` for a block the tier does not hold, or whose place or checksum is not
    /// known yet. A place is a hint, not a lend: the block may move or be replaced the
    /// moment this returns, so a reader in another process must check the bytes it copies
    /// against the checksum, and treat a mismatch as "not read here".
    fn shared_places(&self, ids: &[BlockId]) -> Vec<Option<SharedPlace>> {
        vec![None; ids.len()]
    }

    /// Called once by the store with the tier directly below this one, so a tier can
    /// prepare direct transfers to it (the GPU tier registers the shm pool with CUDA).
    fn attach_below(&self, below: &dyn Tier) -> Result<()> {
        let _ = below;
        Ok(())
    }

    /// Tier-specific figures (fragmentation, segments, ...) merged into the store's stats.
    fn extra_stats(&self) -> Vec<(String, f64)> {
        Vec::new()
    }

    /// Looks at the tier's storage again for blocks that other processes sharing it
    /// stored or removed since this instance opened (or last refreshed), and makes them
    /// visible (or gone) here, without reopening.
    ///
    /// Only tiers whose storage several processes can share implement this (the file
    /// tier on a shared directory, plugins with a refresh slot such as the Redis tier)
    /// and say so with [`Capability::refresh`]; the default, which memory, shm and GPU
    /// tiers keep, reports nothing.
    fn refresh(&self) -> Result<TierRefresh> {
        Ok(TierRefresh::default())
    }
}

/// The fill of [`Tier::put_with_batch`]: writes the buffers it is given, one result each.
pub type BatchFill<'f> = dyn FnMut(&mut [FillTarget<'_>]) -> Vec<Result<()>> + 'f;

/// The fill of [`Tier::put_with_batch_checked`]: writes the buffers it is given, one
/// result each, with the checksum of the bytes it wrote where it knows it.
pub type CheckedFill<'f> = dyn FnMut(&mut [FillTarget<'_>]) -> Vec<Result<Option<u64>>> + 'f;

/// The visit of [`Tier::get_with_batch`]: reads the `(position, bytes)` blocks it is lent,
/// one result each.
pub type BatchVisit<'f> = dyn FnMut(&[(usize, &[u8])]) -> Vec<Result<()>> + 'f;

/// The visit of [`Tier::get_with_batch_checked`]: reads the `(position, bytes, stored
/// checksum)` blocks it is lent, one result each.
pub type CheckedVisit<'f> = dyn FnMut(&[(usize, &[u8], Option<u64>)]) -> Vec<Result<()>> + 'f;

/// One destination of [`Tier::put_with_batch`]'s fill: the item's position in the batch
/// and the room for its bytes.
pub type FillTarget<'a> = (usize, &'a mut [u8]);

/// Calls a batch fill and checks it answered once per buffer; a fill that answered a
/// different count fails every buffer rather than storing unfilled bytes.
pub fn fill_results(fill: &mut BatchFill<'_>, targets: &mut [FillTarget<'_>]) -> Vec<Result<()>> {
    counted(fill(targets), targets.len())
}

/// [`fill_results`] for a [`CheckedFill`].
pub fn checked_fill_results(
    fill: &mut CheckedFill<'_>,
    targets: &mut [FillTarget<'_>],
) -> Vec<Result<Option<u64>>> {
    counted(fill(targets), targets.len())
}

/// `filled`, or an error for each of `count` buffers when the fill answered another count.
fn counted<T>(filled: Vec<Result<T>>, count: usize) -> Vec<Result<T>> {
    if filled.len() == count {
        return filled;
    }
    let error = Error::new(
        ErrorKind::Plugin,
        "a batch fill returned a different number of results than buffers",
    )
    .with_context("buffers", count)
    .with_context("results", filled.len());
    (0..count).map(|_| Err(error.clone())).collect()
}

/// Calls a batch visit on `lent` and records its per-block results in `results`
/// (indexed by position); a visit that answered a different count fails every block it
/// was given.
pub fn apply_visits(
    visit: &mut BatchVisit<'_>,
    lent: &[(usize, &[u8])],
    results: &mut [Result<()>],
) {
    let visited = visit(lent);
    record_visits(visited, lent.iter().map(|&(i, _)| i), results);
}

/// [`apply_visits`] for a [`CheckedVisit`].
pub fn apply_checked_visits(
    visit: &mut CheckedVisit<'_>,
    lent: &[(usize, &[u8], Option<u64>)],
    results: &mut [Result<()>],
) {
    let visited = visit(lent);
    record_visits(visited, lent.iter().map(|&(i, _, _)| i), results);
}

fn record_visits(
    visited: Vec<Result<()>>,
    positions: impl ExactSizeIterator<Item = usize> + Clone,
    results: &mut [Result<()>],
) {
    if visited.len() != positions.len() {
        let error = Error::new(
            ErrorKind::Plugin,
            "a batch visit returned a different number of results than blocks",
        )
        .with_context("blocks", positions.len())
        .with_context("results", visited.len());
        for i in positions {
            results[i] = Err(error.clone());
        }
        return;
    }
    for (i, outcome) in positions.zip(visited) {
        results[i] = outcome;
    }
}

/// What [`Tier::refresh`] found: changes made by other processes sharing the tier's
/// storage, never this instance's own puts and removes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TierRefresh {
    /// Blocks that became visible, or whose stored bytes another process replaced, with
    /// their length now.
    pub added: Vec<(BlockId, u64)>,
    /// Blocks that are no longer held (another process removed them).
    pub removed: Vec<BlockId>,
}

/// A range of host memory owned by a tier, valid for as long as the tier lives.
#[derive(Debug, Clone, Copy)]
pub struct HostRegion {
    /// First byte of the region.
    pub base: *mut u8,
    /// Length in bytes.
    pub len: usize,
}

/// A tier's file that other processes on the node may map read-only to read blocks from
/// it ([`Tier::shared_places`] says where each block lies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedFile {
    /// The file's path.
    pub path: std::path::PathBuf,
    /// The device and inode of the file, so that a reader can tell it opened this very
    /// file (and not another one at the same path, in another mount namespace).
    pub device: u64,
    /// See `device`.
    pub inode: u64,
    /// The file's length in bytes when the tier opened it; the tier never shrinks it.
    pub len: u64,
}

/// Where a block lies in its tier's [`SharedFile`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedPlace {
    /// The block's first byte, from the start of the file.
    pub offset: u64,
    /// The block's length.
    pub len: u64,
    /// The XXH3-64 checksum (seed 0) the block was stored with.
    pub checksum: u64,
}

// SAFETY: a HostRegion is only an address range; whoever dereferences it must follow the
// owning tier's rules, and the pointer itself may move between threads.
unsafe impl Send for HostRegion {}
// SAFETY: as above; sharing the address carries no access by itself.
unsafe impl Sync for HostRegion {}

/// Checks `len` against a tier's capacity and largest block; shared by tier crates so the
/// error text is the same everywhere.
pub fn check_block_fits(tier: &str, len: u64, max_block_size: u64) -> Result<()> {
    if len > max_block_size {
        return Err(
            Error::new(ErrorKind::TooLarge, "block larger than the tier can hold")
                .with_context("tier", tier)
                .with_context("block_bytes", len)
                .with_context("max_block_bytes", max_block_size),
        );
    }
    Ok(())
}

/// The error every tier returns for an output buffer shorter than the block.
pub fn buffer_too_small(id: BlockId, need: u64, have: usize) -> Error {
    Error::new(
        ErrorKind::InvalidInput,
        "output buffer too small for the block",
    )
    .with_context("id", id)
    .with_context("block_bytes", need)
    .with_context("buffer_bytes", have)
}

/// The error every tier returns when it has no room now.
pub fn tier_full(tier: &str, need: u64, used: u64, capacity: u64) -> Error {
    Error::new(ErrorKind::TierFull, "tier is full")
        .with_context("tier", tier)
        .with_context("need_bytes", need)
        .with_context("used_bytes", used)
        .with_context("capacity_bytes", capacity)
}

/// A block read whole into a new buffer of its stored length (the defaults' way to lend
/// from a tier that has no memory of its own to lend).
fn read_whole<T: Tier + ?Sized>(tier: &T, id: BlockId) -> Result<Vec<u8>> {
    let len = tier.len_of(id).ok_or_else(|| Error::not_found(id))?;
    let len = usize::try_from(len).map_err(|_| {
        Error::new(ErrorKind::TooLarge, "block larger than the address space")
            .with_context("id", id)
    })?;
    let mut buffer = vec![0u8; len];
    let got = tier.get(id, &mut buffer)?;
    buffer.truncate(got);
    Ok(buffer)
}

fn no_device_path(tier: &str) -> Error {
    Error::new(
        ErrorKind::Unsupported,
        "this tier holds host memory and cannot copy to or from device memory",
    )
    .with_context("tier", tier)
}
