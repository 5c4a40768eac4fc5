//! [`ShmTier`]: the [`Tier`] over a mapped pool.

use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use cascade_core::tier::{
    Capability, HostRegion, Tier, buffer_too_small, check_block_fits, tier_full,
};
use cascade_core::{BlockId, Error, ErrorKind, Extent, ExtentAllocator, Result, ShardedIndex};
use parking_lot::Mutex;

use crate::config::ShmTierConfig;
use crate::layout::{ALIGNMENT, Layout, SlotRecord};
use crate::pool::Pool;
use crate::recover::{Recovered, recover};
use crate::slots::SlotTable;

/// The kind string of this tier.
pub const KIND: &str = "shm";

/// Where a stored block lives.
#[derive(Debug, Clone, Copy)]
struct Entry {
    extent: Extent,
    len: u64,
    slot: u32,
    checksum: u64,
}

/// Blocks in a memory-mapped pool file (by default on `/dev/shm`) that outlives the
/// process: a later [`ShmTier::open`] of the same path finds every committed block,
/// with its checksum verified.
///
/// A put writes the bytes into a free extent, computes their xxh3-64 checksum, fills a
/// slot record and commits it last, so a process killed at any instant leaves each
/// block either complete and listed or absent.
pub struct ShmTier {
    name: String,
    path: PathBuf,
    slots: SlotTable,
    data: NonNull<u8>,
    data_len: u64,
    allocator: ExtentAllocator,
    blocks: ShardedIndex<Entry>,
    free_slots: Mutex<Vec<u32>>,
    next_seq: AtomicU64,
    verify_on_read: bool,
    recovered_blocks: usize,
    dropped_at_open: usize,
    // Last: the mapping and the file lock outlive every view of them above.
    pool: Pool,
}

// SAFETY: the data region is only written through extents that one put owns
// exclusively (handed out by the allocator, not yet published), and read under the
// block map's shard lock, which keeps the extent from being freed meanwhile. `data`
// points into the mapping owned by `pool`, which lives as long as the tier.
unsafe impl Send for ShmTier {}
// SAFETY: see above; all other shared state is behind locks or atomics.
unsafe impl Sync for ShmTier {}

impl ShmTier {
    /// Opens the pool of `config` for the tier `name`, creating it when absent.
    ///
    /// Errors: [`ErrorKind::Busy`] when another opener holds the pool;
    /// [`ErrorKind::Incompatible`] for a file of another format, magic, or capacity and
    /// [`ErrorKind::Corrupt`] for a damaged header (both leave the file untouched);
    /// [`ErrorKind::Unavailable`] when the directory is missing or lacks room;
    /// [`ErrorKind::Config`] for bad settings.
    pub fn open(name: impl Into<String>, config: &ShmTierConfig) -> Result<Self> {
        let name = name.into();
        let path = config.resolved_path(&name);
        let layout = Layout::new(config.capacity.as_u64(), config.slot_count())
            .map_err(|e| e.with_context("tier", &name))?;
        let pool = Pool::open(&path, layout, config.prefault)
            .map_err(|e| e.with_context("tier", &name))?;
        let base = pool.base();
        let slot_count = layout.slot_count as usize;
        // SAFETY: the layout was checked against the file's length, so the slot table
        // and the data region lie inside the mapping, which `pool` keeps alive for as
        // long as the tier (the `pool` field drops last). Offsets are page aligned.
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
                    checksum: found.record.checksum,
                },
            );
        }
        // Popped from the end: low slots first, so a small pool touches few table pages.
        let free_slots: Vec<u32> = (0..slot_count as u32)
            .rev()
            .filter(|&s| !used[s as usize])
            .collect();
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
            allocator,
            blocks,
            free_slots: Mutex::new(free_slots),
            next_seq: AtomicU64::new(recovered.max_seq + 1),
            verify_on_read: config.verify_on_read,
            recovered_blocks: recovered.blocks.len(),
            dropped_at_open: recovered.dropped,
            pool,
        })
    }

    /// The pool file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Blocks found (and verified) when the pool was opened.
    pub fn recovered_blocks(&self) -> usize {
        self.recovered_blocks
    }

    /// Slots dropped when the pool was opened: blocks that were incomplete, damaged, or
    /// older copies of a replaced id.
    pub fn dropped_at_open(&self) -> usize {
        self.dropped_at_open
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

    fn store(
        &self,
        id: BlockId,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]) -> Result<()>,
    ) -> Result<()> {
        let len64 = len as u64;
        check_block_fits(&self.name, len64, self.data_len)?;
        let slot = self.take_slot(len64)?;
        let Some(extent) = self.allocator.allocate(len64) else {
            self.free_slots.lock().push(slot);
            return Err(tier_full(
                &self.name,
                len64,
                self.allocator.used(),
                self.allocator.capacity(),
            ));
        };
        // SAFETY: the extent was just allocated and is not published yet.
        let target = unsafe { self.extent_mut(extent, len) };
        if let Err(err) = fill(target) {
            self.release(slot, extent);
            return Err(err);
        }
        // Hashing right after the copy reads the bytes back from cache.
        let checksum = cascade_hash::checksum(target);
        let record = SlotRecord {
            seq: self.next_seq.fetch_add(1, Ordering::Relaxed),
            id: id.as_u128(),
            offset: extent.offset,
            len: len64,
            checksum,
        };
        self.slots.publish(slot as usize, &record);
        let entry = Entry {
            extent,
            len: len64,
            slot,
            checksum,
        };
        if let Some(old) = self.blocks.insert_value(id, entry) {
            // The insert's write lock waited for readers of the old extent; the new
            // record is committed, so retracting the old one never leaves the id absent.
            self.slots.retract(old.slot as usize);
            self.release(old.slot, old.extent);
        }
        Ok(())
    }

    /// Runs `visit` on the stored bytes of `id` under the shard read lock, after
    /// checking them when `verify_on_read` is set. A block failing its checksum is
    /// dropped and reported as [`ErrorKind::Corrupt`].
    fn read<R>(&self, id: BlockId, visit: impl FnOnce(&[u8], u64) -> Result<R>) -> Result<R> {
        let outcome = self.blocks.with(&id, |entry| {
            // SAFETY: the shard read lock is held while the slice is used.
            let bytes = unsafe { self.extent_ref(entry.extent, entry.len as usize) };
            if self.verify_on_read && cascade_hash::checksum(bytes) != entry.checksum {
                return None;
            }
            Some(visit(bytes, entry.len))
        });
        match outcome {
            None => Err(Error::not_found(id)),
            Some(Some(result)) => result,
            Some(None) => {
                self.remove(id)?;
                Err(
                    Error::new(ErrorKind::Corrupt, "block failed its checksum; dropped it")
                        .with_context("tier", &self.name)
                        .with_context("id", id),
                )
            }
        }
    }
}

impl Tier for ShmTier {
    fn kind(&self) -> &str {
        KIND
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn capability(&self) -> Capability {
        Capability {
            persistent: true,
            device_memory: false,
            max_block_size: self.data_len,
        }
    }

    fn capacity(&self) -> u64 {
        self.allocator.capacity()
    }

    fn used(&self) -> u64 {
        self.allocator.used()
    }

    fn put(&self, id: BlockId, data: &[u8]) -> Result<()> {
        self.store(id, data.len(), &mut |target| {
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
        self.store(id, len, fill)
    }

    fn get(&self, id: BlockId, out: &mut [u8]) -> Result<usize> {
        self.read(id, |bytes, len| {
            if out.len() < bytes.len() {
                return Err(buffer_too_small(id, len, out.len()));
            }
            out[..bytes.len()].copy_from_slice(bytes);
            Ok(bytes.len())
        })
    }

    fn get_with(&self, id: BlockId, visit: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        self.read(id, |bytes, _| visit(bytes))
    }

    fn len_of(&self, id: BlockId) -> Option<u64> {
        self.blocks.with(&id, |entry| entry.len)
    }

    fn remove(&self, id: BlockId) -> Result<bool> {
        match self.blocks.remove_value(&id) {
            Some(entry) => {
                self.slots.retract(entry.slot as usize);
                self.release(entry.slot, entry.extent);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn flush(&self) -> Result<()> {
        self.pool
            .sync()
            .map_err(|e| e.with_context("tier", &self.name))
    }

    fn clear(&self) -> Result<()> {
        let mut ids = Vec::new();
        self.blocks.for_each(|id, _| ids.push(*id));
        for id in ids {
            self.remove(id)?;
        }
        Ok(())
    }

    fn ids(&self) -> Vec<(BlockId, u64)> {
        let mut ids = Vec::new();
        self.blocks.for_each(|id, entry| ids.push((*id, entry.len)));
        ids
    }

    fn host_region(&self) -> Option<HostRegion> {
        Some(HostRegion {
            base: self.data.as_ptr(),
            len: self.data_len as usize,
        })
    }

    fn extra_stats(&self) -> Vec<(String, f64)> {
        let slots_used = self.slots.len() - self.free_slots.lock().len();
        vec![
            ("fragmentation".into(), self.allocator.fragmentation()),
            ("slots_used".into(), slots_used as f64),
            ("slots_total".into(), self.slots.len() as f64),
            ("recovered_blocks".into(), self.recovered_blocks as f64),
            ("dropped_at_open".into(), self.dropped_at_open as f64),
        ]
    }
}
