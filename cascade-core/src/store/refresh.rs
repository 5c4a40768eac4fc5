//! The ledger built from the tiers at open, and refreshed from tiers shared with other
//! processes.

use super::ledger::Gone;
use super::{CascadeStore, Core};
use crate::config::WritePolicy;
use crate::{BlockId, Result};

/// What [`CascadeStore::refresh`] changed in the store's index.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RefreshReport {
    /// Blocks newly indexed, over all tiers.
    pub added: u64,
    /// Blocks dropped from the index, over all tiers.
    pub removed: u64,
    /// The same per tier, fastest first.
    pub tiers: Vec<TierRefreshCounts>,
}

/// What [`CascadeStore::refresh`] changed at one tier.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct TierRefreshCounts {
    /// Tier instance name.
    pub name: String,
    /// Blocks newly indexed at this tier.
    pub added: u64,
    /// Blocks the store already placed here whose length changed because another
    /// process replaced them.
    pub replaced: u64,
    /// Blocks dropped from the index because another process removed them here.
    pub removed: u64,
}

impl Core {
    /// Indexes what the tiers hold. A block found in two tiers (an interrupted move, or
    /// a written-through copy) is served by the faster copy; the slower one is kept as
    /// its written-through copy under `write_through` when it sits in the persistent
    /// tier that would hold that copy, and removed otherwise.
    pub(super) fn rebuild_index(&self) -> Result<()> {
        let through = self.policy.write_policy == WritePolicy::WriteThrough;
        for (position, tier) in self.tiers.iter().enumerate() {
            for (id, len) in tier.ids() {
                if let Some(existing) = self.ledger.get(&id) {
                    let keep = through
                        && existing.len == len
                        && existing.backup.is_none()
                        && self.persistent_below(existing.tier, len) == Some(position);
                    if keep && self.ledger.set_backup(id, existing, position) {
                        continue;
                    }
                    tracing::info!(%id, kept = existing.tier, dropped = position,
                        "block found in two tiers after an interrupted move; dropping the slower copy");
                    tier.remove(id).map_err(|e| e.at("open", tier.name()))?;
                    continue;
                }
                self.ledger.adopt(id, position, len);
            }
        }
        Ok(())
    }

    /// Forgets `id` if the ledger places it at `position` and that tier no longer has it.
    fn drop_removed(&self, position: usize, id: BlockId) -> bool {
        let _guard = self.stripes.lock(&id);
        let Some(at) = self.ledger.get(&id) else {
            return false;
        };
        if at.tier != position || self.tiers[position].contains(id) {
            return false;
        }
        if !self.ledger.forget(id, at, Gone::Lost) {
            return false;
        }
        if let Some(backup) = at.backup {
            self.remove_copy(backup, id);
        }
        true
    }
}

impl CascadeStore {
    /// Asks every tier for blocks that other processes sharing its storage stored or
    /// removed since this store opened (see [`crate::Tier::refresh`]) and updates the
    /// index:
    /// - an added block the store does not hold is indexed at that tier;
    /// - an added block the store holds at that tier keeps its place (its length is
    ///   updated when another process replaced it); one held by another tier is left
    ///   as it is, and nothing another process stored is ever removed;
    /// - a removed block is dropped from the index only where the index places it at
    ///   that tier and the tier indeed no longer holds it.
    ///
    /// Errors: the first tier whose refresh fails; tiers before it were applied.
    pub fn refresh(&self) -> Result<RefreshReport> {
        let mut report = RefreshReport::default();
        for (position, tier) in self.core.tiers.iter().enumerate() {
            let found = tier.refresh().map_err(|e| e.at("refresh", tier.name()))?;
            let mut counts = TierRefreshCounts {
                name: tier.name().to_string(),
                ..TierRefreshCounts::default()
            };
            for (id, _) in found.added {
                let _guard = self.core.stripes.lock(&id);
                // The tier's answer now, not at its refresh: a put or remove may have
                // come in between.
                let Some(len) = tier.len_of(id) else {
                    continue;
                };
                match self.core.ledger.get(&id) {
                    None => {
                        self.core.ledger.adopt(id, position, len);
                        counts.added += 1;
                    }
                    Some(at) if at.tier == position && at.len != len => {
                        // Another process replaced it: any copy of the old bytes is stale.
                        if let Some(backup) = at.backup
                            && self.core.ledger.drop_backup(id, backup)
                        {
                            self.core.remove_copy(backup, id);
                        }
                        self.core.ledger.adopt(id, position, len);
                        counts.replaced += 1;
                    }
                    Some(_) => {}
                }
            }
            for id in found.removed {
                counts.removed += u64::from(self.core.drop_removed(position, id));
            }
            report.added += counts.added;
            report.removed += counts.removed;
            report.tiers.push(counts);
        }
        Ok(report)
    }
}
