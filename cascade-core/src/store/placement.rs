//! Where a put lands, and making room by moving the coldest blocks down in batches.

use std::collections::BTreeMap;

use super::ledger::{Entry, Gone, Move};
use super::{CascadeStore, Core};
use crate::metrics::{Call, Timer};
use crate::tier::{FillTarget, Tier};
use crate::{BlockId, Error, ErrorKind, Result};

/// How many times a put retries a tier that reported full after room was made (another
/// thread may have taken the room meanwhile) before trying the next tier.
const PUT_ATTEMPTS_PER_TIER: usize = 8;

impl CascadeStore {
    /// Stores `data` under `id`.
    ///
    /// With dedup on, an id already stored copies nothing and returns
    /// [`PutOutcome::Deduplicated`]; with dedup off it replaces the stored block.
    /// Under `write_through`, a block placed in a non-persistent tier is also queued for
    /// the first persistent tier below it.
    ///
    /// [`PutOutcome::Deduplicated`]: super::PutOutcome::Deduplicated
    pub fn put(&self, id: BlockId, data: &[u8]) -> Result<super::PutOutcome> {
        let timer = Timer::start(self.latency());
        let outcome = self.place(id, data.len(), &mut |tier| tier.put(id, data));
        timer.put(Call::Single);
        outcome
    }

    /// The placement loop shared by host and device puts: `write` stores the block in
    /// the tier it is given, under the block's stripe lock.
    pub(super) fn place(
        &self,
        id: BlockId,
        len: usize,
        write: &mut dyn FnMut(&dyn Tier) -> Result<()>,
    ) -> Result<super::PutOutcome> {
        if let Some(outcome) = self.dedup_hit(&id, len) {
            return Ok(outcome);
        }
        let bytes = len as u64;
        let mut first_accepting = None;
        let mut last_full = None;
        for tier in 0..self.core.tiers.len() {
            if !self.core.accepts(tier, bytes) {
                continue;
            }
            let first = *first_accepting.get_or_insert(tier);
            for attempt in 0..PUT_ATTEMPTS_PER_TIER {
                if !self.core.make_room(tier, bytes)? && self.core.free_bytes(tier) < bytes {
                    if attempt + 1 == PUT_ATTEMPTS_PER_TIER {
                        break;
                    }
                    // Another thread may hold this tier's coldest blocks for a move of
                    // its own: once it is done there is room, or blocks to move again.
                    std::thread::yield_now();
                    continue;
                }
                let _guard = self.core.stripes.lock(&id);
                if let Some(outcome) = self.dedup_hit(&id, len) {
                    return Ok(outcome);
                }
                match write(&*self.core.tiers[tier]) {
                    Ok(()) => {
                        self.publish(id, tier, bytes, first);
                        return Ok(super::PutOutcome::Stored);
                    }
                    Err(e) if e.kind() == ErrorKind::TierFull => {
                        last_full = Some(e.at("put", self.core.tiers[tier].name()));
                    }
                    Err(e) if e.kind() == ErrorKind::TooLarge => break,
                    Err(e) => return Err(e.at("put", self.core.tiers[tier].name())),
                }
            }
        }
        Err(match (last_full, first_accepting) {
            (Some(full), _) => full,
            (None, Some(tier)) => {
                let t = &self.core.tiers[tier];
                crate::tier::tier_full(t.name(), bytes, t.used(), t.capacity())
                    .with_context("reason", "no room could be made in any tier that takes it")
                    .at("put", t.name())
            }
            (None, None) => self.core.too_large(bytes),
        })
    }

    pub(super) fn dedup_hit(&self, id: &BlockId, len: usize) -> Option<super::PutOutcome> {
        if self.core.policy.dedup && self.core.ledger.contains(id) {
            self.core.ledger.dedup(len as u64);
            Some(super::PutOutcome::Deduplicated)
        } else {
            None
        }
    }

    /// Records the blocks a batch call just wrote to `tier`, in order, each under its
    /// stripe lock as [`CascadeStore::publish`]. On one thread: spread over the store's
    /// threads, the ledger's shared per-tier recency order made the H200 spill's puts
    /// slower than this loop (docs/benchmarks.md, run 11).
    pub(super) fn publish_batch(&self, stored: &[(BlockId, u64)], tier: usize) {
        for &(id, len) in stored {
            let _guard = self.core.stripes.lock(&id);
            self.publish(id, tier, len, tier);
        }
    }

    /// Records a block just written to `tier` by a put; the caller holds the stripe
    /// lock. `first` is the fastest tier that accepts blocks of this size: landing below
    /// it is a fallback. Copies of a replaced block elsewhere (dedup off) are removed,
    /// and under `write_through` the block is queued for its persistent copy.
    pub(super) fn publish(&self, id: BlockId, tier: usize, len: u64, first: usize) {
        let (entry, previous) = self.core.ledger.admit(id, tier, len);
        if let Some(previous) = previous {
            self.core.discard(id, previous, Some(tier));
        }
        if tier > first {
            self.core.ledger.fallback(tier);
        }
        if let Some(writer) = &self.writer
            && !self.core.tiers[tier].capability().persistent
            && let Some(target) = self.core.persistent_below(tier, len)
        {
            writer.enqueue(id, entry, target);
        }
    }
}

impl Core {
    pub(super) fn too_large(&self, len: u64) -> Error {
        Error::new(ErrorKind::TooLarge, "no tier can hold a block this large")
            .with_context("block_bytes", len)
            .with_context(
                "largest_accepted",
                self.tiers
                    .iter()
                    .map(|t| t.capability().max_block_size.min(t.capacity()))
                    .max()
                    .unwrap_or(0),
            )
    }

    /// Moves least recently used blocks out of `tier`, in batches, until `need` bytes
    /// are free. Returns false when it could not (nothing left to move, or the tiers
    /// below refuse).
    pub(super) fn make_room(&self, tier: usize, need: u64) -> Result<bool> {
        let counters = self.ledger.tier_counters(tier);
        let mut rounds =
            crate::stats::read(&counters.blocks) + crate::stats::read(&counters.copies) + 4;
        loop {
            let free = self.free_bytes(tier);
            if free >= need {
                return Ok(true);
            }
            if rounds == 0 {
                return Ok(false);
            }
            rounds -= 1;
            let victims = self.ledger.take_coldest(tier, need - free);
            if victims.is_empty() || self.move_out(tier, &victims)? == 0 {
                return Ok(false);
            }
        }
    }

    /// Moves `victims` (taken from `tier`'s recency order) out of `tier`: written-through
    /// copies are dropped, blocks whose copy already sits in the tier below are
    /// repointed, the rest are copied down in one batch per target tier (or evicted from
    /// the last tier). Victims that stay are given back as the coldest. Returns how many
    /// left the tier.
    fn move_out(&self, tier: usize, victims: &[(BlockId, u64)]) -> Result<usize> {
        let mut gone = 0;
        let mut stay: Vec<(BlockId, u64)> = Vec::new();
        let mut groups: BTreeMap<usize, Vec<(BlockId, Entry)>> = BTreeMap::new();
        for &(id, _) in victims {
            let Some(entry) = self.ledger.get(&id) else {
                // Removed since it was picked.
                gone += 1;
                continue;
            };
            if entry.backup == Some(tier) {
                let _guard = self.stripes.lock(&id);
                if self.ledger.drop_backup(id, tier) {
                    self.remove_copy(tier, id);
                }
                gone += 1;
            } else if entry.tier != tier {
                gone += 1;
            } else {
                match (tier + 1..self.tiers.len()).find(|&t| self.accepts(t, entry.len)) {
                    None => {
                        let _guard = self.stripes.lock(&id);
                        if self.ledger.forget(id, entry, Gone::Evicted) {
                            self.discard(id, entry, None);
                        }
                        gone += 1;
                    }
                    Some(target) if entry.backup == Some(target) => {
                        let _guard = self.stripes.lock(&id);
                        if self.ledger.relocate(id, entry, target, Move::Demote) {
                            self.remove_copy(tier, id);
                        }
                        gone += 1;
                    }
                    Some(target) => groups.entry(target).or_default().push((id, entry)),
                }
            }
        }
        let mut first_error = None;
        for (target, group) in groups {
            let total = group.iter().map(|(_, e)| e.len).sum();
            // Room below is made before any lock here is taken; what does not fit
            // comes back as TierFull and stays.
            if let Err(e) = self.make_room(target, total) {
                first_error.get_or_insert(e);
            }
            let moved = self.copy_down(tier, target, &group, &mut stay, &mut first_error);
            gone += moved;
        }
        self.ledger.give_back_coldest(tier, &stay);
        match first_error {
            Some(e) if gone == 0 => Err(e),
            _ => Ok(gone),
        }
    }

    /// Copies `group` from `tier` into `target` through the target's batch fill, under
    /// the blocks' stripe locks, and repoints the ledger for each block copied.
    fn copy_down(
        &self,
        tier: usize,
        target: usize,
        group: &[(BlockId, Entry)],
        stay: &mut Vec<(BlockId, u64)>,
        first_error: &mut Option<Error>,
    ) -> usize {
        let _guards = self.stripes.lock_many(group.iter().map(|(id, _)| *id));
        let live: Vec<(BlockId, Entry)> = group
            .iter()
            .copied()
            .filter(|(id, e)| self.ledger.get(id) == Some(*e))
            .collect();
        let mut gone = group.len() - live.len();
        if live.is_empty() {
            return gone;
        }
        let source = &self.tiers[tier];
        let items: Vec<(BlockId, usize)> =
            live.iter().map(|(id, e)| (*id, e.len as usize)).collect();
        let results = if source.capability().device_memory {
            device_moves(&*self.tiers[target], &**source, &items)
        } else {
            // Host to host the fill is a memcpy per block; in chunks small enough to
            // stay in cache, the target's checksum of each chunk (taken once the chunk is
            // filled) reads the bytes from cache instead of memory. A large move runs
            // on the machine's cores, a share of the chunks each (`parallel.rs`).
            super::parallel::in_chunks(
                &items,
                |&(_, len)| len as u64,
                |part| {
                    let mut results = Vec::with_capacity(part.len());
                    for chunk in host_chunks(part) {
                        results.extend(
                            self.tiers[target]
                                .put_with_batch(chunk, &mut |t| read_into(&**source, chunk, t)),
                        );
                    }
                    results
                },
            )
        };
        for ((id, entry), result) in live.iter().zip(results) {
            match result {
                Ok(()) => {
                    if self.ledger.relocate(*id, *entry, target, Move::Demote) {
                        self.remove_copy(tier, *id);
                    }
                    gone += 1;
                }
                Err(e) if e.kind() == ErrorKind::TierFull => stay.push((*id, entry.len)),
                Err(e) if matches!(e.kind(), ErrorKind::Corrupt | ErrorKind::NotFound) => {
                    // The source copy is unreadable: it cannot be served, so drop it.
                    tracing::warn!(%id, error = %e, "dropping an unreadable block during demotion");
                    if self.ledger.forget(*id, *entry, Gone::Corrupt) {
                        self.discard(*id, *entry, None);
                    }
                    gone += 1;
                }
                Err(e) => {
                    first_error.get_or_insert(e.at("demote", self.tiers[target].name()));
                    stay.push((*id, entry.len));
                }
            }
        }
        gone
    }

    /// Removes one copy from a tier after the ledger stopped pointing at it.
    pub(super) fn remove_copy(&self, tier: usize, id: BlockId) {
        if let Err(e) = self.tiers[tier].remove(id) {
            tracing::warn!(%id, error = %e, tier = self.tiers[tier].name(),
                "moved block not removed from its old tier");
        }
    }
}

/// Copies `items` out of `source` (a tier in device memory) into `target` in one batch
/// call: one batched DMA, the blocks hashed on the GPU on the way. On one thread: cut
/// into chunks on several threads (as host moves are), each thread's DMA calls and
/// kernel launches cost more than they overlapped once the GPU took the hashing over
/// (H200, docs/benchmarks.md: demotion 53-54% -> 64-68% of the ceiling on one thread);
/// a target that hashes itself spreads that over its own threads (the shm tier does).
fn device_moves(
    target: &dyn Tier,
    source: &dyn Tier,
    items: &[(BlockId, usize)],
) -> Vec<Result<()>> {
    target.put_with_batch_checked(items, &mut |targets| {
        read_device_into(source, items, targets)
    })
}

/// Bytes of one chunk of a host-to-host move: well inside a core's share of the cache.
const HOST_MOVE_CHUNK: usize = 1 << 20;

/// `items` cut into consecutive chunks of about [`HOST_MOVE_CHUNK`] bytes (at least one
/// item each).
fn host_chunks(items: &[(BlockId, usize)]) -> impl Iterator<Item = &[(BlockId, usize)]> {
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut bytes = 0usize;
        let take = rest
            .iter()
            .take_while(|(_, len)| {
                let fits = bytes == 0 || bytes + len <= HOST_MOVE_CHUNK;
                bytes += len;
                fits
            })
            .count()
            .max(1);
        let (chunk, tail) = rest.split_at(take);
        rest = tail;
        Some(chunk)
    })
}

/// Fills `targets` (buffers of [`Tier::put_with_batch`]) with the blocks `items` names
/// from `source`, block by block; for a tier in device memory see [`read_device_into`].
/// Runs under stripe locks, so never on the store's rayon pool: a worker waiting there
/// could pick up a job that waits for these locks.
pub(super) fn read_into(
    source: &dyn Tier,
    items: &[(BlockId, usize)],
    targets: &mut [FillTarget<'_>],
) -> Vec<Result<()>> {
    if source.capability().device_memory {
        return read_device_into(source, items, targets)
            .into_iter()
            .map(|outcome| outcome.map(|_| ()))
            .collect();
    }
    targets
        .iter_mut()
        .map(|(i, buf)| {
            let id = items[*i].0;
            let got = source.get(id, buf);
            check_read(source, id, buf.len(), got)
        })
        .collect()
}

/// Fills `targets` from `source`, a tier in device memory, in one batch call (one
/// batched DMA), with each block's checksum where the tier hashes on the device
/// ([`Tier::get_batch_checked`]).
fn read_device_into(
    source: &dyn Tier,
    items: &[(BlockId, usize)],
    targets: &mut [FillTarget<'_>],
) -> Vec<Result<Option<u64>>> {
    let mut batch: Vec<(BlockId, &mut [u8])> = targets
        .iter_mut()
        .map(|(i, buf)| (items[*i].0, &mut **buf))
        .collect();
    let got = source.get_batch_checked(&mut batch);
    batch
        .iter()
        .zip(got)
        .map(|((id, buf), got)| {
            let checksum = got.as_ref().ok().and_then(|&(_, checksum)| checksum);
            check_read(source, *id, buf.len(), got.map(|(len, _)| len)).map(|()| checksum)
        })
        .collect()
}

/// A read of `want` bytes of `id` from `source` during a move: its error, in the tier's
/// name, or [`ErrorKind::Corrupt`] when the block's length changed.
fn check_read(source: &dyn Tier, id: BlockId, want: usize, got: Result<usize>) -> Result<()> {
    got.map_err(|e| e.at("read", source.name())).and_then(|n| {
        if n == want {
            Ok(())
        } else {
            Err(
                Error::new(ErrorKind::Corrupt, "block length changed while moving")
                    .with_context("id", id)
                    .with_context("tier", source.name())
                    .with_context("expected_bytes", want)
                    .with_context("read_bytes", n),
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_chunks_cover_every_item_once_in_order_within_the_chunk_size() {
        let lens = [
            100usize,
            HOST_MOVE_CHUNK,
            1,
            HOST_MOVE_CHUNK / 2,
            HOST_MOVE_CHUNK / 2,
            7,
            3 * HOST_MOVE_CHUNK,
        ];
        let items: Vec<(BlockId, usize)> = lens
            .iter()
            .enumerate()
            .map(|(i, &len)| (BlockId::from_u128(i as u128), len))
            .collect();
        let chunks: Vec<&[(BlockId, usize)]> = host_chunks(&items).collect();
        let flat: Vec<(BlockId, usize)> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        assert_eq!(flat, items);
        for chunk in &chunks {
            let bytes: usize = chunk.iter().map(|(_, len)| len).sum();
            assert!(!chunk.is_empty());
            assert!(chunk.len() == 1 || bytes <= HOST_MOVE_CHUNK, "{chunk:?}");
        }
        // 128 KiB blocks go eight to a chunk.
        let blocks: Vec<(BlockId, usize)> = (0..20)
            .map(|i| (BlockId::from_u128(i), 128 << 10))
            .collect();
        let sizes: Vec<usize> = host_chunks(&blocks).map(<[_]>::len).collect();
        assert_eq!(sizes, vec![8, 8, 4]);
        assert_eq!(host_chunks(&[]).count(), 0);
    }
}
