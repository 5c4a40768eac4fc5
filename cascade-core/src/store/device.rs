//! Sources and destinations other than one host buffer: host pieces, and device memory
//! into (and out of) every tier.
//!
//! Device memory goes where a host block would (the fastest tier with room): a tier in
//! device memory copies it device to device; a host tier receives it by DMA straight
//! into its own memory (the shm pool is registered with the driver; other tiers fill a
//! temporary buffer that the copier reaches through pinned staging), through the
//! store's [`DeviceCopier`] for that device. Batches use the tiers' batch fills and
//! lends, so a batch of device blocks into shm is one batched DMA, and so is a batch
//! read out of it. Without a copier (no `gpu` feature, no driver), device memory reaches
//! only tiers in device memory; a block held by a host tier is then promoted into one
//! first.

use std::collections::BTreeMap;
use std::sync::Arc;

use rayon::prelude::*;

use super::ledger::{Entry, Gone};
use super::promotion::Promotion;
use super::reads::GET_ATTEMPTS;
use super::{CascadeStore, PutOutcome};
use crate::device::{
    Dest, DeviceAccess, DeviceCopier, DeviceRegion, HostDeviceCopy, Source, device_of, gather,
    no_device_access, pair_up, scatter,
};
use crate::tier::{FillTarget, HostRegion, Tier};
use crate::{BlockId, Error, ErrorKind, Result};

impl CascadeStore {
    /// Gives the store its way to CUDA (the facade passes cascade-gpu's with the `gpu`
    /// feature): host tiers then take and fill device memory directly.
    #[must_use]
    pub fn with_device_access(mut self, access: Arc<dyn DeviceAccess>) -> Self {
        self.devices = Some(access);
        self
    }

    /// The copier for `device`, made on first use with the host tiers' memory registered.
    fn copier(&self, device: usize) -> Result<Arc<dyn DeviceCopier>> {
        let mut copiers = self.copiers.lock();
        if let Some((_, copier)) = copiers.iter().find(|(d, _)| *d == device) {
            return Ok(Arc::clone(copier));
        }
        let access = self.devices.as_ref().ok_or_else(no_device_access)?;
        let regions: Vec<HostRegion> = self
            .core
            .tiers
            .iter()
            .filter(|t| !t.capability().device_memory)
            .filter_map(|t| t.host_region())
            .collect();
        let copier = access.copier(device, &regions)?;
        copiers.push((device, Arc::clone(&copier)));
        Ok(copier)
    }

    fn has_device_tier(&self) -> bool {
        self.core.tiers.iter().any(|t| t.capability().device_memory)
    }

    /// The device of the first tier in device memory, else device 0: the device of the
    /// addresses that [`CascadeStore::put_device`] and friends take.
    fn default_device(&self) -> usize {
        self.core
            .tiers
            .iter()
            .find_map(|t| t.capability().device)
            .unwrap_or(0)
    }

    /// Stores the block `source` describes (host or device memory, whole or in pieces)
    /// under `id`, placed as [`CascadeStore::put`] places host bytes.
    ///
    /// Errors as [`CascadeStore::put`], and [`ErrorKind::Unavailable`] for device memory
    /// that no tier can take (no GPU support in this build or no driver, and no tier in
    /// device memory); [`ErrorKind::InvalidInput`] for pieces on several devices.
    pub fn put_from(&self, id: BlockId, source: Source<'_>) -> Result<PutOutcome> {
        let len = source.len();
        match source {
            Source::Host(data) => self.put(id, data),
            Source::HostPieces(pieces) => self.place(id, len, &mut |tier| {
                tier.put_with(id, len, &mut |buf| {
                    gather(pieces, buf);
                    Ok(())
                })
            }),
            Source::Device(regions) => {
                let device = device_of(regions)?.unwrap_or_else(|| self.default_device());
                self.place(id, len, &mut |tier| {
                    self.write_device(tier, id, regions, device, len)
                })
            }
        }
    }

    /// Writes device `regions` into `tier` as block `id`.
    fn write_device(
        &self,
        tier: &dyn Tier,
        id: BlockId,
        regions: &[DeviceRegion],
        device: usize,
        len: usize,
    ) -> Result<()> {
        if tier.capability().device_memory && regions.len() <= 1 {
            let ptr = regions.first().map_or(0, DeviceRegion::ptr);
            // SAFETY: DeviceRegion::new's contract covers the range for this call.
            return unsafe { tier.put_from_device(id, ptr, len) };
        }
        let copier = self.copier(device)?;
        tier.put_with(id, len, &mut |buf| {
            let copies = pair_up(buf.as_mut_ptr() as usize, buf.len(), regions);
            // SAFETY: the device ranges are valid (DeviceRegion::new); `buf` is the
            // tier's room for this block, owned by this put until it returns.
            unsafe { copier.to_host(&copies) }
        })
    }

    /// Copies the block into `dest` (host or device memory, whole or in pieces). Returns
    /// `Ok(None)` when it is not stored, `Ok(Some(len))` when found.
    ///
    /// Errors as [`CascadeStore::get`]; for device memory also
    /// [`ErrorKind::Unavailable`] when the block's tier cannot reach it (see
    /// [`CascadeStore::put_from`]) and no tier in device memory can take the block.
    pub fn get_into(&self, id: BlockId, mut dest: Dest<'_>) -> Result<Option<usize>> {
        self.read_into(id, &mut dest)
    }

    fn read_into(&self, id: BlockId, dest: &mut Dest<'_>) -> Result<Option<usize>> {
        if let Dest::Host(out) = dest {
            return self.get(id, out);
        }
        self.prefetcher.wait_for(&id);
        let capacity = dest.capacity();
        let mut found_in = None;
        for _ in 0..GET_ATTEMPTS {
            let Some(at) = self.core.ledger.get(&id) else {
                break;
            };
            if (capacity as u64) < at.len {
                return Err(crate::tier::buffer_too_small(id, at.len, capacity));
            }
            let tier = &*self.core.tiers[at.tier];
            let outcome = match dest {
                Dest::Host(out) => tier.get(id, out),
                Dest::HostPieces(pieces) => lend(tier, id, &mut |bytes| {
                    scatter(bytes, pieces);
                    Ok(())
                }),
                Dest::Device(regions) => match self.read_device(tier, id, regions) {
                    Err(e) if self.cannot_reach(tier, &e) => {
                        self.promote_to_device(id, at)?;
                        found_in.get_or_insert(at.tier);
                        continue;
                    }
                    outcome => outcome,
                },
            };
            match outcome {
                Ok(n) => {
                    self.core.ledger.count_hit(found_in.unwrap_or(at.tier));
                    self.core.ledger.touch(at.tier, &id);
                    if found_in.is_none() && self.core.policy.promote_on_read && at.tier > 0 {
                        self.promote_in_place(id, at);
                    }
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

    /// Whether `error` means a host tier cannot reach device memory here, while a tier
    /// in device memory could serve it after a promotion.
    fn cannot_reach(&self, tier: &dyn Tier, error: &Error) -> bool {
        error.kind() == ErrorKind::Unavailable
            && !tier.capability().device_memory
            && self.has_device_tier()
    }

    /// Reads block `id` of `tier` into device `regions`; returns its length.
    fn read_device(&self, tier: &dyn Tier, id: BlockId, regions: &[DeviceRegion]) -> Result<usize> {
        if tier.capability().device_memory && regions.len() == 1 {
            // SAFETY: DeviceRegion::new's contract covers the range for this call.
            return unsafe { tier.get_into_device(id, regions[0].ptr(), regions[0].len()) };
        }
        let device = device_of(regions)?.unwrap_or_else(|| self.default_device());
        let copier = self.copier(device)?;
        lend(tier, id, &mut |bytes| {
            let copies = pair_up(bytes.as_ptr() as usize, bytes.len(), regions);
            // SAFETY: the device ranges are valid (DeviceRegion::new); `bytes` are the
            // tier's, kept alive and unchanged while this visit runs.
            unsafe { copier.to_device(&copies) }
        })
    }

    /// Promotion after a read that did not go through host bytes the store holds: the
    /// block is copied from its tier into the fastest tier that takes it. Best effort.
    fn promote_in_place(&self, id: BlockId, from: Entry) {
        let Some(target) = (0..from.tier).find(|&t| self.core.accepts(t, from.len)) else {
            return;
        };
        if !matches!(self.core.make_room(target, from.len), Ok(true)) {
            return;
        }
        if let Err(e) = self.move_up(id, from, target, None) {
            tracing::debug!(%id, error = %e, "promotion failed; the block stays where it was");
        }
    }

    /// Moves a block found in a host tier into the fastest device tier, for a device
    /// read without a copier. Ok also when the block moved or went meanwhile (the
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
            Err(e) => Err(e),
        }
    }

    /// The fastest tier holding device memory that accepts a block of `len` bytes.
    fn device_tier(&self, len: u64) -> Result<usize> {
        (0..self.core.tiers.len())
            .filter(|&t| self.core.tiers[t].capability().device_memory)
            .find(|&t| self.core.accepts(t, len))
            .ok_or_else(|| {
                if self.has_device_tier() {
                    Error::new(
                        ErrorKind::TooLarge,
                        "no GPU tier can hold a block this large",
                    )
                    .with_context("block_bytes", len)
                } else {
                    no_device_access()
                }
            })
    }

    /// Stores many blocks, each from host or device memory, whole or in pieces; one
    /// result per item, in order.
    ///
    /// The fastest tier that accepts every block receives the batch in one call once
    /// room for all of it is made: a tier in device memory through its batched DMA; a
    /// host tier through its batch fill, with every device block of the batch copied by
    /// one batched DMA straight into the tier's memory. Items it could not take are
    /// placed one by one as [`CascadeStore::put_from`] does.
    pub fn put_from_batch(&self, items: &[(BlockId, Source<'_>)]) -> Vec<Result<PutOutcome>> {
        self.run(items.len(), || {
            let mut results: Vec<Option<Result<PutOutcome>>> = items
                .iter()
                .map(|(id, source)| self.dedup_hit(id, source.len()).map(Ok))
                .collect();
            let pending: Vec<usize> = (0..items.len()).filter(|&i| results[i].is_none()).collect();
            let lens = pending.iter().map(|&i| items[i].1.len() as u64);
            if let Some(tier) = self.batch_tier(lens) {
                let outcomes = self.put_into_tier(tier, items, &pending);
                let mut stored = Vec::with_capacity(pending.len());
                for (&i, ok) in pending.iter().zip(outcomes) {
                    if ok {
                        let (id, source) = items[i];
                        stored.push((id, source.len() as u64));
                        results[i] = Some(Ok(PutOutcome::Stored));
                    }
                }
                self.publish_batch(&stored, tier);
            }
            results
                .into_par_iter()
                .enumerate()
                .map(|(i, done)| done.unwrap_or_else(|| self.put_from(items[i].0, items[i].1)))
                .collect()
        })
    }

    /// Writes the `pending` items into `tier` in one batch; which of them it stored.
    fn put_into_tier(
        &self,
        tier: usize,
        items: &[(BlockId, Source<'_>)],
        pending: &[usize],
    ) -> Vec<bool> {
        let t = &*self.core.tiers[tier];
        if t.capability().device_memory {
            return self.put_into_device_tier(t, items, pending);
        }
        let batch: Vec<(BlockId, usize)> = pending
            .iter()
            .map(|&i| (items[i].0, items[i].1.len()))
            .collect();
        let outcomes = t.put_with_batch_checked(&batch, &mut |targets| {
            self.fill_targets(targets, pending.iter().map(|&i| items[i].1).collect())
        });
        outcomes.iter().map(Result::is_ok).collect()
    }

    /// A tier in device memory takes whole device blocks in one batched call and host
    /// blocks in another; pieces go one by one afterwards.
    fn put_into_device_tier(
        &self,
        tier: &dyn Tier,
        items: &[(BlockId, Source<'_>)],
        pending: &[usize],
    ) -> Vec<bool> {
        let mut stored = vec![false; pending.len()];
        let mut device: Vec<(usize, (BlockId, u64, usize))> = Vec::new();
        let mut host: Vec<(usize, (BlockId, &[u8]))> = Vec::new();
        for (k, &i) in pending.iter().enumerate() {
            match items[i].1 {
                Source::Device([region]) => {
                    device.push((k, (items[i].0, region.ptr(), region.len())));
                }
                Source::Host(data) => host.push((k, (items[i].0, data))),
                _ => {}
            }
        }
        if !device.is_empty() {
            let batch: Vec<(BlockId, u64, usize)> = device.iter().map(|(_, item)| *item).collect();
            // SAFETY: DeviceRegion::new's contract covers every range for this call.
            let outcomes = unsafe { tier.put_from_device_batch(&batch) };
            for ((k, _), outcome) in device.iter().zip(outcomes) {
                stored[*k] = outcome.is_ok();
            }
        }
        if !host.is_empty() {
            let batch: Vec<(BlockId, &[u8])> = host.iter().map(|(_, item)| *item).collect();
            for ((k, _), outcome) in host.iter().zip(tier.put_batch(&batch)) {
                stored[*k] = outcome.is_ok();
            }
        }
        stored
    }

    /// Fills batch targets from their sources: host bytes by memcpy, device ranges by
    /// one batched DMA per device for the whole batch. Device blocks are hashed on the
    /// device during their DMA where the copier can, and the checksums go to the tier
    /// with them ([`Tier::put_with_batch_checked`]).
    fn fill_targets(
        &self,
        targets: &mut [FillTarget<'_>],
        sources: Vec<Source<'_>>,
    ) -> Vec<Result<Option<u64>>> {
        let mut results: Vec<Result<Option<u64>>> = targets.iter().map(|_| Ok(None)).collect();
        let mut by_device: BTreeMap<usize, DeviceFill> = BTreeMap::new();
        for (k, (i, buf)) in targets.iter_mut().enumerate() {
            match sources[*i] {
                Source::Host(data) => buf.copy_from_slice(data),
                Source::HostPieces(pieces) => gather(pieces, buf),
                Source::Device(regions) => match device_of(regions) {
                    Ok(device) => {
                        let fill = by_device
                            .entry(device.unwrap_or_else(|| self.default_device()))
                            .or_default();
                        let host = buf.as_mut_ptr() as usize;
                        fill.copies.extend(pair_up(host, buf.len(), regions));
                        fill.targets.push((k, (host, buf.len())));
                    }
                    Err(e) => results[k] = Err(e),
                },
            }
        }
        for (device, fill) in by_device {
            let blocks: Vec<(usize, usize)> =
                fill.targets.iter().map(|&(_, block)| block).collect();
            // SAFETY: the device ranges are valid (DeviceRegion::new) and unchanged during
            // the put (its contract); the host ranges are the tier's reserved room for
            // these blocks, disjoint, owned by this batch.
            let copied = self
                .copier(device)
                .and_then(|copier| unsafe { copier.to_host_hashed(&fill.copies, &blocks) });
            match copied {
                Ok(checksums) => {
                    for (&(k, _), checksum) in fill.targets.iter().zip(checksums) {
                        results[k] = Ok(checksum);
                    }
                }
                Err(e) => {
                    for (k, _) in fill.targets {
                        results[k] = Err(e.clone());
                    }
                }
            }
        }
        results
    }

    /// Reads many blocks, each into host or device memory, whole or in pieces; one
    /// result per item, in order (`Ok(None)` for a block not stored).
    ///
    /// Blocks held by the same tier go to it in one call: a tier in device memory copies
    /// whole device destinations in one batched DMA; a host tier lends all its blocks at
    /// once and every device destination is filled by one batched DMA straight from the
    /// tier's memory. Promotions on read follow once every block is read; items a batch
    /// could not serve go through [`CascadeStore::get_into`].
    pub fn get_into_batch(&self, items: &mut [(BlockId, Dest<'_>)]) -> Vec<Result<Option<usize>>> {
        for (id, _) in items.iter() {
            self.prefetcher.wait_for(id);
        }
        self.run(items.len(), || {
            let mut results: Vec<Option<Result<Option<usize>>>> = Vec::with_capacity(items.len());
            let mut groups: Vec<Vec<(usize, Entry)>> = vec![Vec::new(); self.core.tiers.len()];
            for (i, (id, dest)) in items.iter().enumerate() {
                match self.core.ledger.get(id) {
                    Some(at) if (dest.capacity() as u64) >= at.len => {
                        groups[at.tier].push((i, at));
                        results.push(None);
                    }
                    Some(at) => results.push(Some(Err(crate::tier::buffer_too_small(
                        *id,
                        at.len,
                        dest.capacity(),
                    )))),
                    None => {
                        self.core.ledger.miss();
                        results.push(Some(Ok(None)));
                    }
                }
            }
            let mut promote = Vec::new();
            for (tier, members) in groups.iter().enumerate() {
                if members.is_empty() {
                    continue;
                }
                let served = self.read_group(tier, members, items);
                for ((i, at), served) in members.iter().zip(served) {
                    if let Some(n) = served {
                        self.core.ledger.hit(tier, &items[*i].0);
                        if self.core.policy.promote_on_read && tier > 0 {
                            promote.push((*i, *at));
                        }
                        results[*i] = Some(Ok(Some(n)));
                    }
                }
            }
            self.promote_batch(
                promote
                    .into_iter()
                    .map(|(i, from)| Promotion {
                        id: items[i].0,
                        from,
                        bytes: match &items[i].1 {
                            Dest::Host(out) => Some(&out[..from.len as usize]),
                            _ => None,
                        },
                    })
                    .collect(),
            );
            results
                .into_iter()
                .zip(items.iter_mut())
                .map(|(done, (id, dest))| done.unwrap_or_else(|| self.read_into(*id, dest)))
                .collect()
        })
    }

    /// Reads the `members` of one tier's group into their destinations in one tier
    /// call; the length of each block served, `None` for those left to the single path.
    fn read_group(
        &self,
        tier: usize,
        members: &[(usize, Entry)],
        items: &mut [(BlockId, Dest<'_>)],
    ) -> Vec<Option<usize>> {
        let t = &*self.core.tiers[tier];
        if t.capability().device_memory {
            return self.read_device_group(t, members, items);
        }
        let ids: Vec<BlockId> = members.iter().map(|(i, _)| items[*i].0).collect();
        let mut served: Vec<Option<usize>> = vec![None; members.len()];
        let outcomes = t.get_with_batch(&ids, &mut |lent| {
            let mut visited: Vec<Result<()>> = lent.iter().map(|_| Ok(())).collect();
            let mut by_device: BTreeMap<usize, (Vec<HostDeviceCopy>, Vec<usize>)> = BTreeMap::new();
            for (k, (pos, bytes)) in lent.iter().enumerate() {
                match &mut items[members[*pos].0].1 {
                    Dest::Host(out) => out[..bytes.len()].copy_from_slice(bytes),
                    Dest::HostPieces(pieces) => scatter(bytes, pieces),
                    Dest::Device(regions) => match device_of(regions) {
                        Ok(device) => {
                            let entry = by_device
                                .entry(device.unwrap_or_else(|| self.default_device()))
                                .or_default();
                            entry
                                .0
                                .extend(pair_up(bytes.as_ptr() as usize, bytes.len(), regions));
                            entry.1.push(k);
                        }
                        Err(e) => visited[k] = Err(e),
                    },
                }
                served[*pos] = Some(bytes.len());
            }
            for (device, (copies, ks)) in by_device {
                // SAFETY: the device ranges are valid (DeviceRegion::new) and disjoint
                // (the caller's outputs); the host ranges are lent by the tier and stay
                // unchanged while this visit runs.
                let copied = self
                    .copier(device)
                    .and_then(|copier| unsafe { copier.to_device(&copies) });
                if let Err(e) = copied {
                    for k in ks {
                        visited[k] = Err(e.clone());
                    }
                }
            }
            visited
        });
        for (pos, outcome) in outcomes.iter().enumerate() {
            if outcome.is_err() {
                served[pos] = None;
            }
        }
        served
    }

    /// One tier in device memory: whole device destinations in one batched call, host
    /// buffers in another; pieces are left to the single path.
    fn read_device_group(
        &self,
        tier: &dyn Tier,
        members: &[(usize, Entry)],
        items: &mut [(BlockId, Dest<'_>)],
    ) -> Vec<Option<usize>> {
        let mut served: Vec<Option<usize>> = vec![None; members.len()];
        let mut device: Vec<(usize, (BlockId, u64, usize))> = Vec::new();
        for (k, (i, _)) in members.iter().enumerate() {
            if let Dest::Device([region]) = &items[*i].1 {
                device.push((k, (items[*i].0, region.ptr(), region.len())));
            }
        }
        if !device.is_empty() {
            let batch: Vec<(BlockId, u64, usize)> = device.iter().map(|(_, item)| *item).collect();
            // SAFETY: DeviceRegion::new's contract covers every range; the caller's
            // destinations do not overlap.
            let outcomes = unsafe { tier.get_into_device_batch(&batch) };
            for ((k, _), outcome) in device.iter().zip(outcomes) {
                served[*k] = outcome.ok();
            }
        }
        let mut host: Vec<(usize, (BlockId, &mut [u8]))> = Vec::new();
        let positions: Vec<(usize, usize)> = members
            .iter()
            .enumerate()
            .map(|(k, (i, _))| (k, *i))
            .collect();
        let mut slots: Vec<Option<&mut (BlockId, Dest<'_>)>> = items.iter_mut().map(Some).collect();
        for (k, i) in positions {
            if let Some((id, Dest::Host(out))) = slots[i].take() {
                host.push((k, (*id, &mut **out)));
            }
        }
        if !host.is_empty() {
            let (ks, mut batch): (Vec<usize>, Vec<(BlockId, &mut [u8])>) = host.into_iter().unzip();
            for (k, outcome) in ks.into_iter().zip(tier.get_batch(&mut batch)) {
                served[k] = outcome.ok();
            }
        }
        served
    }

    /// Stores `len` bytes of device (GPU) memory at `src` under `id`; the addresses are
    /// on the device of the store's first tier in device memory (device 0 without one).
    /// Placement as [`CascadeStore::put_from`].
    ///
    /// # Safety
    /// `[src, src + len)` must be device memory valid as [`DeviceRegion::new`] requires.
    pub unsafe fn put_device(&self, id: BlockId, src: u64, len: usize) -> Result<PutOutcome> {
        // SAFETY: the caller's contract.
        let region = unsafe { DeviceRegion::new(src, len, self.default_device()) };
        self.put_from(id, Source::Device(&[region]))
    }

    /// Copies the block into device (GPU) memory of `capacity` bytes at `dst` (on the
    /// device [`CascadeStore::put_device`] names). Returns `Ok(None)` when it is not
    /// stored, `Ok(Some(len))` when found. As [`CascadeStore::get_into`].
    ///
    /// # Safety
    /// `[dst, dst + capacity)` must be device memory valid as [`DeviceRegion::new`]
    /// requires.
    pub unsafe fn get_device(
        &self,
        id: BlockId,
        dst: u64,
        capacity: usize,
    ) -> Result<Option<usize>> {
        // SAFETY: the caller's contract.
        let region = unsafe { DeviceRegion::new(dst, capacity, self.default_device()) };
        self.get_into(id, Dest::Device(&[region]))
    }

    /// Stores many blocks from device memory; items are `(id, device address, length)`,
    /// one result per item, in order. As [`CascadeStore::put_from_batch`].
    ///
    /// # Safety
    /// As for [`CascadeStore::put_device`], for every item.
    pub unsafe fn put_device_batch(
        &self,
        items: &[(BlockId, u64, usize)],
    ) -> Vec<Result<PutOutcome>> {
        let device = self.default_device();
        let regions: Vec<[DeviceRegion; 1]> = items
            .iter()
            // SAFETY: the caller's contract, for every item.
            .map(|&(_, src, len)| [unsafe { DeviceRegion::new(src, len, device) }])
            .collect();
        let batch: Vec<(BlockId, Source<'_>)> = items
            .iter()
            .zip(&regions)
            .map(|(&(id, _, _), r)| (id, Source::Device(r)))
            .collect();
        self.put_from_batch(&batch)
    }

    /// Copies many blocks into device memory; items are `(id, device address,
    /// capacity)`, one result per item, in order (`Ok(None)` for a block not stored).
    /// As [`CascadeStore::get_into_batch`].
    ///
    /// # Safety
    /// As for [`CascadeStore::get_device`], for every item; the ranges must not overlap.
    pub unsafe fn get_device_batch(
        &self,
        items: &[(BlockId, u64, usize)],
    ) -> Vec<Result<Option<usize>>> {
        let device = self.default_device();
        let regions: Vec<[DeviceRegion; 1]> = items
            .iter()
            // SAFETY: the caller's contract, for every item.
            .map(|&(_, dst, cap)| [unsafe { DeviceRegion::new(dst, cap, device) }])
            .collect();
        let mut batch: Vec<(BlockId, Dest<'_>)> = items
            .iter()
            .zip(&regions)
            .map(|(&(id, _, _), r)| (id, Dest::Device(r)))
            .collect();
        self.get_into_batch(&mut batch)
    }
}

/// Lends block `id` of `tier` to `visit`; the block's length.
fn lend(tier: &dyn Tier, id: BlockId, visit: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<usize> {
    let mut len = 0;
    tier.get_with(id, &mut |bytes| {
        len = bytes.len();
        visit(bytes)
    })?;
    Ok(len)
}

/// The device blocks of one batch fill bound for one device: their copies, and each
/// target they fill (its position among the fill's targets) with its host range, which
/// the copier hashes on the device where it can.
#[derive(Default)]
struct DeviceFill {
    copies: Vec<HostDeviceCopy>,
    targets: Vec<(usize, (usize, usize))>,
}
