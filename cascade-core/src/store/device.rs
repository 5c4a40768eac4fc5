//! Device (GPU) memory in and out of the tiers that hold device memory.

use super::ledger::{Entry, Gone};
use super::reads::GET_ATTEMPTS;
use super::{CascadeStore, PutOutcome};
use crate::{BlockId, Error, ErrorKind, Result};

/// How many times a device put retries a tier that reported full after room was made.
const PUT_ATTEMPTS_PER_TIER: usize = 8;

impl CascadeStore {
    /// The fastest tier holding device memory that accepts a block of `len` bytes.
    fn device_tier(&self, len: u64) -> Result<usize> {
        self.require_device_tier()?;
        (0..self.core.tiers.len())
            .filter(|&t| self.core.tiers[t].capability().device_memory)
            .find(|&t| self.core.accepts(t, len))
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::TooLarge,
                    "no GPU tier can hold a block this large",
                )
                .with_context("block_bytes", len)
            })
    }

    /// Fails with [`ErrorKind::Unsupported`] unless some tier holds device memory.
    fn require_device_tier(&self) -> Result<()> {
        if self.core.tiers.iter().any(|t| t.capability().device_memory) {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::Unsupported,
            "this deployment has no GPU tier: GPU memory can only be stored or read through \
             a tier that holds device memory (configure a `gpu` tier, or pass host memory, \
             e.g. tensor.cpu())",
        )
        .with_context(
            "tiers",
            self.core
                .tiers
                .iter()
                .map(|t| t.name())
                .collect::<Vec<_>>()
                .join(","),
        ))
    }

    /// Stores `len` bytes of device (GPU) memory at `src` under `id`, copied device to
    /// device into the fastest tier that holds device memory; that tier makes room by
    /// demoting its least recently used blocks, as [`CascadeStore::put`] does.
    ///
    /// Dedup as [`CascadeStore::put`]. Errors: [`ErrorKind::Unsupported`] when no tier
    /// holds device memory; [`ErrorKind::TooLarge`] when no such tier can ever hold the
    /// block; [`ErrorKind::TierFull`] when no room could be made.
    ///
    /// # Safety
    /// `[src, src + len)` must be device memory valid for `len` bytes on the GPU tier's
    /// device, and nothing may write it until this returns.
    pub unsafe fn put_device(&self, id: BlockId, src: u64, len: usize) -> Result<PutOutcome> {
        if let Some(outcome) = self.dedup_hit(&id, len) {
            return Ok(outcome);
        }
        let bytes = len as u64;
        let tier = self.device_tier(bytes)?;
        let mut last_full = None;
        for _ in 0..PUT_ATTEMPTS_PER_TIER {
            if !self.core.make_room(tier, bytes)? && self.core.free_bytes(tier) < bytes {
                break;
            }
            let _guard = self.core.stripes.lock(&id);
            if let Some(outcome) = self.dedup_hit(&id, len) {
                return Ok(outcome);
            }
            // SAFETY: the caller's contract is the tier's.
            match unsafe { self.core.tiers[tier].put_from_device(id, src, len) } {
                Ok(()) => {
                    self.publish(id, tier, bytes, tier);
                    return Ok(PutOutcome::Stored);
                }
                Err(e) if e.kind() == ErrorKind::TierFull => last_full = Some(e),
                Err(e) => return Err(e),
            }
        }
        let t = &self.core.tiers[tier];
        Err(last_full
            .unwrap_or_else(|| crate::tier::tier_full(t.name(), bytes, t.used(), t.capacity())))
    }

    /// Copies the block into device (GPU) memory of `capacity` bytes at `dst`. Returns
    /// `Ok(None)` when it is not stored, `Ok(Some(len))` when found.
    ///
    /// A block held by a host tier is first promoted into the fastest tier holding
    /// device memory (making room there by demotion), then read device to device.
    ///
    /// Errors: [`ErrorKind::Unsupported`] when no tier holds device memory (also for an
    /// absent block); [`ErrorKind::InvalidInput`] when `capacity` is smaller than the
    /// block (nothing is copied);
    /// [`ErrorKind::TierFull`] / [`ErrorKind::TooLarge`] when a block in a host tier
    /// cannot be promoted into one; [`ErrorKind::Corrupt`] as [`CascadeStore::get`].
    ///
    /// # Safety
    /// `[dst, dst + capacity)` must be device memory valid for `capacity` bytes on the
    /// GPU tier's device, which nothing else reads or writes until this returns.
    pub unsafe fn get_device(
        &self,
        id: BlockId,
        dst: u64,
        capacity: usize,
    ) -> Result<Option<usize>> {
        self.require_device_tier()?;
        // The tier the block was found in, counted as the hit once it is served.
        let mut found_in = None;
        for _ in 0..GET_ATTEMPTS {
            let Some(at) = self.core.ledger.get(&id) else {
                break;
            };
            if (capacity as u64) < at.len {
                return Err(crate::tier::buffer_too_small(id, at.len, capacity));
            }
            if !self.core.tiers[at.tier].capability().device_memory {
                self.promote_to_device(id, at)?;
                found_in.get_or_insert(at.tier);
                continue;
            }
            // SAFETY: the caller's contract is the tier's.
            match unsafe { self.core.tiers[at.tier].get_into_device(id, dst, capacity) } {
                Ok(n) => {
                    self.core.ledger.count_hit(found_in.unwrap_or(at.tier));
                    self.core.ledger.touch(at.tier, &id);
                    return Ok(Some(n));
                }
                Err(e) => {
                    if !self.after_failed_read(id, at, e)? {
                        break;
                    }
                }
            }
        }
        self.core.ledger.miss();
        Ok(None)
    }

    /// Moves a block found in a host tier into the fastest device tier, for
    /// [`CascadeStore::get_device`]. Ok also when the block moved or went meanwhile (the
    /// caller looks it up again).
    fn promote_to_device(&self, id: BlockId, at: Entry) -> Result<()> {
        let target = self.device_tier(at.len)?;
        if !self.core.make_room(target, at.len)? && self.core.free_bytes(target) < at.len {
            let t = &self.core.tiers[target];
            return Err(Error::new(
                ErrorKind::TierFull,
                "the block is in a host tier and the GPU tier has no room to take it \
                 (read it into host memory with get instead)",
            )
            .with_context("id", id)
            .with_context("held_by", self.core.tiers[at.tier].name())
            .with_context("tier", t.name())
            .with_context("need_bytes", at.len)
            .with_context("used_bytes", t.used())
            .with_context("capacity_bytes", t.capacity()));
        }
        match self.move_up(id, at, target, None) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                // The host tier lost the block (e.g. dropped as corrupt at open).
                let _guard = self.core.stripes.lock(&id);
                if self.core.ledger.forget(id, at, Gone::Lost) {
                    self.core.discard(id, at, None);
                }
                Ok(())
            }
            Err(e) if e.kind() == ErrorKind::Corrupt => {
                let _guard = self.core.stripes.lock(&id);
                if self.core.ledger.forget(id, at, Gone::Corrupt) {
                    self.core.discard(id, at, None);
                }
                Err(e)
            }
            Err(e) => Err(e.with_context("promoting_into", self.core.tiers[target].name())),
        }
    }

    /// Stores many blocks from device memory; items are `(id, device address, length)`,
    /// one result per item, in order.
    ///
    /// When the fastest device tier has room for the whole batch it receives it through
    /// its batch path (one batched DMA on the GPU tier); otherwise blocks are placed one
    /// by one as [`CascadeStore::put_device`] does.
    ///
    /// # Safety
    /// As for [`CascadeStore::put_device`], for every item.
    pub unsafe fn put_device_batch(
        &self,
        items: &[(BlockId, u64, usize)],
    ) -> Vec<Result<PutOutcome>> {
        self.run(|| {
            let mut results: Vec<Option<Result<PutOutcome>>> = items
                .iter()
                .map(|&(id, _, len)| self.dedup_hit(&id, len).map(Ok))
                .collect();
            let pending: Vec<usize> = (0..items.len()).filter(|&i| results[i].is_none()).collect();
            let total: u64 = pending.iter().map(|&i| items[i].2 as u64).sum();
            let largest = pending
                .iter()
                .map(|&i| items[i].2 as u64)
                .max()
                .unwrap_or(0);
            if let Ok(tier) = self.device_tier(largest)
                && !pending.is_empty()
                && self.core.make_room(tier, total).unwrap_or(false)
            {
                let batch: Vec<(BlockId, u64, usize)> = pending.iter().map(|&i| items[i]).collect();
                // SAFETY: the caller's contract is the tier's.
                let outcomes = unsafe { self.core.tiers[tier].put_from_device_batch(&batch) };
                for (&i, outcome) in pending.iter().zip(outcomes) {
                    if outcome.is_ok() {
                        let (id, _, len) = items[i];
                        let _guard = self.core.stripes.lock(&id);
                        self.publish(id, tier, len as u64, tier);
                        results[i] = Some(Ok(PutOutcome::Stored));
                    }
                }
            }
            results
                .into_iter()
                .zip(items)
                .map(|(done, &(id, src, len))| {
                    // SAFETY: the caller's contract covers every item.
                    done.unwrap_or_else(|| unsafe { self.put_device(id, src, len) })
                })
                .collect()
        })
    }

    /// Copies many blocks into device memory; items are `(id, device address,
    /// capacity)`, one result per item, in order (`Ok(None)` for a block not stored).
    /// Blocks already in a device tier go to it in one batch call; the others are
    /// promoted and read one by one as [`CascadeStore::get_device`] does.
    ///
    /// # Safety
    /// As for [`CascadeStore::get_device`], for every item; the ranges must not overlap.
    pub unsafe fn get_device_batch(
        &self,
        items: &[(BlockId, u64, usize)],
    ) -> Vec<Result<Option<usize>>> {
        self.run(|| {
            let mut results: Vec<Option<Result<Option<usize>>>> =
                (0..items.len()).map(|_| None).collect();
            let mut groups: Vec<Vec<usize>> = vec![Vec::new(); self.core.tiers.len()];
            for (i, &(id, _, capacity)) in items.iter().enumerate() {
                match self.core.ledger.get(&id) {
                    Some(at) if (capacity as u64) < at.len => {
                        results[i] = Some(Err(crate::tier::buffer_too_small(id, at.len, capacity)));
                    }
                    Some(at) if self.core.tiers[at.tier].capability().device_memory => {
                        groups[at.tier].push(i);
                    }
                    // Absent or in a host tier: the single-block path counts or promotes.
                    _ => {}
                }
            }
            for (tier, members) in groups.iter().enumerate() {
                if members.is_empty() {
                    continue;
                }
                let batch: Vec<(BlockId, u64, usize)> = members.iter().map(|&i| items[i]).collect();
                // SAFETY: the caller's contract is the tier's.
                let outcomes = unsafe { self.core.tiers[tier].get_into_device_batch(&batch) };
                for (&i, outcome) in members.iter().zip(outcomes) {
                    if let Ok(n) = outcome {
                        self.core.ledger.hit(tier, &items[i].0);
                        results[i] = Some(Ok(Some(n)));
                    }
                    // Moved, corrupt or failed: the single-block path sorts it out.
                }
            }
            results
                .into_iter()
                .zip(items)
                .map(|(done, &(id, dst, capacity))| {
                    // SAFETY: the caller's contract covers every item.
                    done.unwrap_or_else(|| unsafe { self.get_device(id, dst, capacity) })
                })
                .collect()
        })
    }
}
