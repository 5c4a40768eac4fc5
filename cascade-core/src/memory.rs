//! The `memory` tier: blocks in an anonymous region of the process heap.
//!
//! Not persistent. Useful as the fastest host tier on machines without `/dev/shm`, and
//! for tests. The region is reserved once at open and carved by an [`ExtentAllocator`],
//! so puts never call the system allocator and reused space is already touched.

use std::ptr::NonNull;

use memmap2::MmapMut;
use rayon::prelude::*;
use serde::Deserialize;

use crate::alloc::{Extent, ExtentAllocator};
use crate::config::ByteSize;
use crate::index::ShardedIndex;
use crate::tier::{
    BatchFill, BatchVisit, Capability, FillTarget, HostRegion, Tier, apply_visits,
    buffer_too_small, check_block_fits, fill_results, tier_full,
};
use crate::{BlockId, Error, ErrorKind, Result};

/// The kind string of this tier.
pub const KIND: &str = "memory";

/// Settings of a `memory` tier.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryTierConfig {
    /// Bytes the tier may hold. Default: 1 GiB.
    pub capacity: ByteSize,
    /// Touch every page at open so that puts never fault. Default: false (the region is
    /// reserved, and pages are faulted in as blocks first land on them).
    pub prefault: bool,
}

impl Default for MemoryTierConfig {
    fn default() -> Self {
        Self {
            capacity: ByteSize::gib(1),
            prefault: false,
        }
    }
}

/// Allocation granularity: a cache line, so blocks never share one.
const ALIGNMENT: u64 = 64;

/// Blocks in anonymous process memory.
pub struct MemoryTier {
    name: String,
    region: MmapMut,
    base: NonNull<u8>,
    allocator: ExtentAllocator,
    blocks: ShardedIndex<(Extent, u64)>,
}

// SAFETY: the region is only written through extents that one put owns exclusively, and
// read under the block map's shard lock that keeps the extent from being freed meanwhile;
// `base` points into `region`, which lives as long as the tier.
unsafe impl Send for MemoryTier {}
// SAFETY: see above; all shared state is behind locks.
unsafe impl Sync for MemoryTier {}

impl MemoryTier {
    /// Opens a memory tier.
    pub fn open(name: impl Into<String>, config: &MemoryTierConfig) -> Result<Self> {
        let name = name.into();
        let capacity = config.capacity.as_u64();
        if capacity == 0 {
            return Err(
                Error::config("capacity must be greater than zero").with_context("tier", &name)
            );
        }
        let len = usize::try_from(capacity).map_err(|_| {
            Error::config("capacity exceeds the address space").with_context("tier", &name)
        })?;
        let mut region = MmapMut::map_anon(len).map_err(|e| {
            Error::io("could not reserve memory for the memory tier", e)
                .with_context("tier", &name)
                .with_context("capacity_bytes", capacity)
        })?;
        if config.prefault {
            region
                .par_chunks_mut(1 << 21)
                .for_each(|chunk| chunk.iter_mut().step_by(4096).for_each(|b| *b = 0));
        }
        let base = NonNull::new(region.as_mut_ptr())
            .ok_or_else(|| Error::new(ErrorKind::Io, "mmap returned a null region"))?;
        Ok(Self {
            name,
            allocator: ExtentAllocator::new(capacity, ALIGNMENT),
            region,
            base,
            blocks: ShardedIndex::new(),
        })
    }

    fn region_len(&self) -> usize {
        self.region.len()
    }

    /// # Safety
    /// The caller must own `extent` exclusively (freshly allocated, not yet published).
    // Handing out `&mut` from `&self` is the point: disjoint extents of one shared region
    // are written by many threads at once, each owning its extent through the allocator.
    #[allow(clippy::mut_from_ref)]
    unsafe fn extent_mut(&self, extent: Extent, len: usize) -> &mut [u8] {
        debug_assert!(extent.offset as usize + len <= self.region_len());
        // SAFETY: the extent lies inside the region and the caller owns it exclusively.
        unsafe {
            std::slice::from_raw_parts_mut(self.base.as_ptr().add(extent.offset as usize), len)
        }
    }

    /// # Safety
    /// The caller must hold the block map's shard lock for the block owning `extent`, so
    /// that it is neither freed nor rewritten while the slice lives.
    unsafe fn extent_ref(&self, extent: Extent, len: usize) -> &[u8] {
        // SAFETY: the extent lies inside the region; the caller keeps it alive.
        unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(extent.offset as usize), len) }
    }

    fn store(
        &self,
        id: BlockId,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]) -> Result<()>,
    ) -> Result<()> {
        check_block_fits(&self.name, len as u64, self.allocator.capacity())?;
        let extent = self.allocator.allocate(len as u64).ok_or_else(|| {
            tier_full(
                &self.name,
                len as u64,
                self.allocator.used(),
                self.allocator.capacity(),
            )
        })?;
        // SAFETY: the extent was just allocated and is not published yet.
        let target = unsafe { self.extent_mut(extent, len) };
        if let Err(err) = fill(target) {
            self.allocator.free(extent);
            return Err(err);
        }
        if let Some((old, _)) = self.blocks.insert_value(id, (extent, len as u64)) {
            // The write lock taken by the insert waited for readers of the old extent.
            self.allocator.free(old);
        }
        Ok(())
    }
}

impl crate::TierKind for MemoryTier {
    const KIND: &'static str = KIND;
    type Config = MemoryTierConfig;

    fn open_kind(name: String, config: &MemoryTierConfig) -> Result<Self> {
        Self::open(name, config)
    }
}

impl Tier for MemoryTier {
    fn kind(&self) -> &str {
        KIND
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn capability(&self) -> Capability {
        Capability {
            // put_with_batch / get_with_batch reserve and lend the whole batch at once.
            batch_native: true,
            max_block_size: self.allocator.capacity(),
            ..Capability::default()
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

    fn put_with_batch(
        &self,
        items: &[(BlockId, usize)],
        fill: &mut BatchFill<'_>,
    ) -> Vec<Result<()>> {
        let mut results: Vec<Result<()>> = Vec::with_capacity(items.len());
        let mut reserved: Vec<(usize, Extent)> = Vec::with_capacity(items.len());
        for (i, &(_, len)) in items.iter().enumerate() {
            let extent = check_block_fits(&self.name, len as u64, self.allocator.capacity())
                .and_then(|()| {
                    self.allocator.allocate(len as u64).ok_or_else(|| {
                        tier_full(
                            &self.name,
                            len as u64,
                            self.allocator.used(),
                            self.allocator.capacity(),
                        )
                    })
                });
            match extent {
                Ok(extent) => {
                    reserved.push((i, extent));
                    results.push(Ok(()));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        let mut targets: Vec<FillTarget<'_>> = reserved
            .iter()
            // SAFETY: each extent was just allocated for this item and is not published.
            .map(|&(i, extent)| (i, unsafe { self.extent_mut(extent, items[i].1) }))
            .collect();
        let filled = fill_results(fill, &mut targets);
        drop(targets);
        for ((i, extent), outcome) in reserved.into_iter().zip(filled) {
            match outcome {
                Ok(()) => {
                    let (id, len) = items[i];
                    if let Some((old, _)) = self.blocks.insert_value(id, (extent, len as u64)) {
                        self.allocator.free(old);
                    }
                }
                Err(e) => {
                    self.allocator.free(extent);
                    results[i] = Err(e);
                }
            }
        }
        results
    }

    fn get(&self, id: BlockId, out: &mut [u8]) -> Result<usize> {
        self.blocks
            .with(&id, |&(extent, len)| {
                let len_usize = len as usize;
                if out.len() < len_usize {
                    return Err(buffer_too_small(id, len, out.len()));
                }
                // SAFETY: the shard read lock is held for the duration of the copy.
                let bytes = unsafe { self.extent_ref(extent, len_usize) };
                out[..len_usize].copy_from_slice(bytes);
                Ok(len_usize)
            })
            .unwrap_or_else(|| Err(Error::not_found(id)))
    }

    fn get_with(&self, id: BlockId, visit: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        self.blocks
            .with(&id, |&(extent, len)| {
                // SAFETY: the shard read lock is held while `visit` runs.
                visit(unsafe { self.extent_ref(extent, len as usize) })
            })
            .unwrap_or_else(|| Err(Error::not_found(id)))
    }

    fn get_with_batch(&self, ids: &[BlockId], visit: &mut BatchVisit<'_>) -> Vec<Result<()>> {
        self.blocks.with_many(ids, |found| {
            let mut results: Vec<Result<()>> = ids.iter().map(|_| Ok(())).collect();
            let mut lent: Vec<(usize, &[u8])> = Vec::with_capacity(ids.len());
            for (i, value) in found.iter().enumerate() {
                match *value {
                    Some(&(extent, len)) => {
                        // SAFETY: the shard read locks are held while `visit` runs.
                        lent.push((i, unsafe { self.extent_ref(extent, len as usize) }));
                    }
                    None => results[i] = Err(Error::not_found(ids[i])),
                }
            }
            apply_visits(visit, &lent, &mut results);
            results
        })
    }

    fn len_of(&self, id: BlockId) -> Option<u64> {
        self.blocks.with(&id, |&(_, len)| len)
    }

    fn remove(&self, id: BlockId) -> Result<bool> {
        match self.blocks.remove_value(&id) {
            Some((extent, _)) => {
                self.allocator.free(extent);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn flush(&self) -> Result<()> {
        Ok(())
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
        self.blocks.for_each(|id, &(_, len)| ids.push((*id, len)));
        ids
    }

    fn host_region(&self) -> Option<HostRegion> {
        Some(HostRegion {
            base: self.base.as_ptr(),
            len: self.region_len(),
        })
    }

    fn extra_stats(&self) -> Vec<(String, f64)> {
        vec![("fragmentation".into(), self.allocator.fragmentation())]
    }
}
