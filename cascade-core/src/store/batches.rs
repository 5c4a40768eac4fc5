//! Batch calls: one tier batch call per tier involved, single-block paths for the rest.

use rayon::prelude::*;

use super::promotion::Promotion;
use super::{CascadeStore, PutOutcome};
use crate::metrics::{Call, Timer};
use crate::{BlockId, Result};

impl CascadeStore {
    /// Stores many blocks in parallel; one result per item, in order.
    ///
    /// The fastest tier that accepts every block of the batch receives them through its
    /// own batch path (batched DMA for the GPU tier) once room for the whole batch is
    /// made (its coldest blocks move down in batches); blocks it could not take are
    /// placed one by one as [`CascadeStore::put`] does.
    pub fn put_batch(&self, items: &[(BlockId, &[u8])]) -> Vec<Result<PutOutcome>> {
        let timer = Timer::start(self.latency());
        let outcomes = self.put_batch_untimed(items);
        timer.put(Call::Batch);
        outcomes
    }

    fn put_batch_untimed(&self, items: &[(BlockId, &[u8])]) -> Vec<Result<PutOutcome>> {
        self.run(items.len(), || {
            let mut results: Vec<Option<Result<PutOutcome>>> = items
                .iter()
                .map(|(id, data)| self.dedup_hit(id, data.len()).map(Ok))
                .collect();
            let pending: Vec<usize> = (0..items.len()).filter(|&i| results[i].is_none()).collect();
            let lens = pending.iter().map(|&i| items[i].1.len() as u64);
            if let Some(tier) = self.batch_tier(lens.clone()) {
                let batch: Vec<(BlockId, &[u8])> = pending.iter().map(|&i| items[i]).collect();
                let outcomes = self.core.tiers[tier].put_batch(&batch);
                let mut stored = Vec::with_capacity(pending.len());
                for (&i, outcome) in pending.iter().zip(outcomes) {
                    if outcome.is_ok() {
                        let (id, data) = items[i];
                        stored.push((id, data.len() as u64));
                        results[i] = Some(Ok(PutOutcome::Stored));
                    }
                }
                self.publish_batch(&stored, tier);
            }
            results
                .into_par_iter()
                .enumerate()
                .map(|(i, done)| {
                    let (id, data) = items[i];
                    done.unwrap_or_else(|| self.place(id, data.len(), &mut |t| t.put(id, data)))
                })
                .collect()
        })
    }

    /// The fastest tier that accepts blocks of every length in `lens`, once room for
    /// all of them is made there; `None` for an empty batch or when no room was made.
    pub(super) fn batch_tier(&self, lens: impl Iterator<Item = u64> + Clone) -> Option<usize> {
        let total: u64 = lens.clone().sum();
        let count = lens.clone().count();
        if count == 0 {
            return None;
        }
        let tier = (0..self.core.tiers.len())
            .find(|&t| lens.clone().all(|len| self.core.accepts(t, len)))?;
        self.core
            .make_room(tier, total)
            .unwrap_or(false)
            .then_some(tier)
    }

    /// Reads many blocks in parallel into their buffers; one result per item, in order
    /// (`Ok(None)` for a block not stored). Blocks held by the same tier go to it in one
    /// batch call.
    pub fn get_batch(&self, items: &mut [(BlockId, &mut [u8])]) -> Vec<Result<Option<usize>>> {
        let timer = Timer::start(self.latency());
        let found = self.get_batch_untimed(items);
        timer.get(Call::Batch);
        found
    }

    fn get_batch_untimed(&self, items: &mut [(BlockId, &mut [u8])]) -> Vec<Result<Option<usize>>> {
        for (id, _) in items.iter() {
            self.prefetcher.wait_for(id);
        }
        self.run(items.len(), || {
            let mut results: Vec<Option<Result<Option<usize>>>> = Vec::with_capacity(items.len());
            let mut groups: Vec<Vec<(usize, super::Entry)>> =
                vec![Vec::new(); self.core.tiers.len()];
            for (i, (id, out)) in items.iter().enumerate() {
                match self.core.ledger.get(id) {
                    Some(at) if (out.len() as u64) >= at.len => {
                        groups[at.tier].push((i, at));
                        results.push(None);
                    }
                    Some(at) => results.push(Some(Err(crate::tier::buffer_too_small(
                        *id,
                        at.len,
                        out.len(),
                    )))),
                    None => {
                        self.core.ledger.miss();
                        results.push(Some(Ok(None)));
                    }
                }
            }
            // Promotions wait until every group is read: one made earlier could move
            // (or evict) a block of a later group before it is read.
            let mut promote: Vec<(usize, super::Entry, usize)> = Vec::new();
            let mut slots: Vec<Option<&mut (BlockId, &mut [u8])>> =
                items.iter_mut().map(Some).collect();
            for (tier, members) in groups.iter().enumerate() {
                if members.is_empty() {
                    continue;
                }
                let mut batch: Vec<(BlockId, &mut [u8])> = members
                    .iter()
                    .filter_map(|(i, _)| slots[*i].take().map(|(id, out)| (*id, &mut **out)))
                    .collect();
                let outcomes = self.core.tiers[tier].get_batch(&mut batch);
                for ((i, at), (id, outcome)) in members
                    .iter()
                    .zip(batch.iter().map(|(id, _)| id).zip(outcomes))
                {
                    results[*i] = match outcome {
                        Ok(n) => {
                            self.core.ledger.hit(tier, id);
                            if self.core.policy.promote_on_read && tier > 0 {
                                promote.push((*i, *at, n));
                            }
                            Some(Ok(Some(n)))
                        }
                        // A corrupt block is dropped by its tier as it fails, so a second
                        // read would only see it missing: judge this failure now.
                        Err(error) => match self.after_failed_read(*id, *at, error) {
                            // Moved, or a persistent copy took over: the single-block
                            // path reads it where it is now.
                            Ok(true) => None,
                            Ok(false) => {
                                self.core.ledger.miss();
                                Some(Ok(None))
                            }
                            Err(error) => Some(Err(error)),
                        },
                    };
                }
            }
            drop(slots);
            if !promote.is_empty() {
                let blocks = promote
                    .iter()
                    .map(|&(i, from, n)| Promotion {
                        id: items[i].0,
                        from,
                        bytes: Some(&items[i].1[..n]),
                    })
                    .collect();
                self.promote_batch(blocks);
            }
            results
                .into_iter()
                .zip(items.iter_mut())
                .collect::<Vec<_>>()
                .into_par_iter()
                .map(|(done, (id, out))| done.unwrap_or_else(|| self.read_block(*id, out)))
                .collect()
        })
    }
}
