//! `cascade info`: the tiers and the store's counters.

use cascade::StoreStats;
use serde::Serialize;

use crate::deployment::Deployment;
use crate::output::{Report, size, table};

/// One tier as `info` shows it.
#[derive(Debug, Serialize)]
pub struct TierInfo {
    /// Instance name.
    pub name: String,
    /// Kind string.
    pub kind: String,
    /// Blocks survive a restart.
    pub persistent: bool,
    /// Bytes it may hold.
    pub capacity_bytes: u64,
    /// Bytes allocated to blocks.
    pub used_bytes: u64,
    /// Blocks the store places here.
    pub blocks: u64,
    /// Their payload bytes.
    pub bytes: u64,
}

/// What `cascade info` prints.
#[derive(Debug, Serialize)]
pub struct Info {
    /// The deployment.
    pub deployment: String,
    /// The tiers, fastest first.
    pub tiers: Vec<TierInfo>,
    /// Configured tiers this machine lacks, with the reason.
    pub skipped: Vec<(String, String)>,
    /// The store's counters (since this process opened it; blocks and bytes as stored).
    pub stats: StoreStats,
}

/// Reads the deployment's figures.
pub fn run(deployment: &Deployment) -> Info {
    let stats = deployment.store.stats();
    let tiers = deployment
        .store
        .tiers()
        .iter()
        .zip(&stats.tiers)
        .map(|(tier, t)| TierInfo {
            name: t.name.clone(),
            kind: t.kind.clone(),
            persistent: tier.capability().persistent,
            capacity_bytes: t.capacity_bytes,
            used_bytes: t.used_bytes,
            blocks: t.blocks,
            bytes: t.bytes,
        })
        .collect();
    Info {
        deployment: deployment.source.clone(),
        tiers,
        skipped: deployment.skipped.clone(),
        stats,
    }
}

impl Report for Info {
    fn text(&self) -> String {
        let mut tiers = table(&[
            "tier",
            "kind",
            "persistent",
            "capacity",
            "used",
            "used %",
            "blocks",
            "bytes",
        ]);
        for t in &self.tiers {
            let percent = if t.capacity_bytes == 0 {
                0.0
            } else {
                100.0 * t.used_bytes as f64 / t.capacity_bytes as f64
            };
            tiers.add_row(vec![
                t.name.clone(),
                t.kind.clone(),
                if t.persistent { "yes" } else { "no" }.to_string(),
                size(t.capacity_bytes),
                size(t.used_bytes),
                format!("{percent:.1}"),
                t.blocks.to_string(),
                size(t.bytes),
            ]);
        }
        let s = &self.stats;
        let mut counters = table(&["counter", "value"]);
        for (name, value) in [
            ("blocks", s.blocks),
            ("hits", s.hits),
            ("misses", s.misses),
            ("puts", s.puts),
            ("dedup hits", s.dedup_hits),
            ("evictions", s.evictions),
            ("demotions", s.demotions),
            ("promotions", s.promotions),
            ("fallback puts", s.fallback_puts),
            ("write-through failures", s.write_through_failures),
        ] {
            counters.add_row(vec![name.to_string(), value.to_string()]);
        }
        let mut text = format!("deployment: {}\n{tiers}\n", self.deployment);
        for (tier, reason) in &self.skipped {
            text.push_str(&format!("skipped {tier}: {reason}\n"));
        }
        text.push_str(&format!(
            "counters (this process; blocks as found at open):\n{counters}\n"
        ));
        text
    }
}
