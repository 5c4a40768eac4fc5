//! `cascade verify`: every block of the persistent tiers checked against its checksum.
//!
//! - File tiers are read segment by segment in file order, in long sequential reads,
//!   and each record's header and checksum are checked; damaged blocks are reported and
//!   left in place unless `--repair` drops them.
//! - An shm pool verifies every block's checksum each time it opens, and drops the
//!   damaged ones then: the report gives what this open dropped.
//! - Other persistent tiers (plugins) are read block by block; a tier drops a block that
//!   fails its checksum as it reads it, so those are dropped whether or not `--repair`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use cascade::{BlockId, ErrorKind, Result};
use serde::Serialize;

use crate::deployment::Deployment;
use crate::output::{Progress, Report, size, table};

/// One damaged block.
#[derive(Debug, Serialize)]
pub struct Damaged {
    /// The block.
    pub id: BlockId,
    /// What failed.
    pub reason: String,
    /// Where it is stored (a segment file and offset), when the tier says.
    pub place: Option<String>,
    /// It was dropped from the store.
    pub dropped: bool,
}

/// One tier's check.
#[derive(Debug, Serialize)]
pub struct TierCheck {
    /// Tier name.
    pub tier: String,
    /// Kind string.
    pub kind: String,
    /// How it was checked.
    pub method: &'static str,
    /// Blocks checked.
    pub blocks: u64,
    /// Payload bytes checked.
    pub bytes: u64,
    /// Bytes read from storage.
    pub read_bytes: u64,
    /// Wall time of the check.
    pub seconds: f64,
    /// Damaged blocks found.
    pub damaged: Vec<Damaged>,
}

/// What `cascade verify` prints.
#[derive(Debug, Serialize)]
pub struct Verification {
    /// Whether damaged blocks were dropped.
    pub repair: bool,
    /// The persistent tiers, fastest first.
    pub tiers: Vec<TierCheck>,
}

impl Verification {
    /// Damaged blocks still in the store.
    pub fn damaged_left(&self) -> usize {
        self.tiers
            .iter()
            .flat_map(|t| &t.damaged)
            .filter(|d| !d.dropped)
            .count()
    }
}

/// Checks every persistent tier; with `repair`, drops what is damaged.
pub fn run(deployment: &Deployment, repair: bool, progress: Progress) -> Result<Verification> {
    let store = &deployment.store;
    let mut tiers = Vec::new();
    for (position, tier) in store.tiers().iter().enumerate() {
        if !tier.capability().persistent {
            continue;
        }
        let started = Instant::now();
        let mut check = TierCheck {
            tier: tier.name().to_string(),
            kind: tier.kind().to_string(),
            method: "",
            blocks: 0,
            bytes: 0,
            read_bytes: 0,
            seconds: 0.0,
            damaged: Vec::new(),
        };
        if let Some(file) = deployment.file_tier(position) {
            check.method = "segments read in file order, record headers and checksums checked";
            let bar = progress.bytes(tier.name(), store.stats().tiers[position].bytes);
            let report = file.verify(&|bytes| bar.inc(bytes))?;
            bar.finish_and_clear();
            check.blocks = report.blocks;
            check.bytes = report.bytes;
            check.read_bytes = report.read_bytes;
            for damaged in report.damaged {
                let dropped = repair && store.remove(damaged.id)?;
                check.damaged.push(Damaged {
                    id: damaged.id,
                    reason: damaged.reason.to_string(),
                    place: Some(format!(
                        "{} at {}",
                        damaged.segment.display(),
                        damaged.offset
                    )),
                    dropped,
                });
            }
        } else if tier.kind() == "shm" {
            check.method =
                "every checksum verified when the pool opened (damaged blocks dropped then)";
            let extra: std::collections::BTreeMap<String, f64> =
                tier.extra_stats().into_iter().collect();
            check.blocks = extra.get("recovered_blocks").copied().unwrap_or(0.0) as u64;
            check.bytes = store.stats().tiers[position].bytes;
            let dropped = extra.get("dropped_at_open").copied().unwrap_or(0.0) as u64;
            if dropped > 0 {
                check.damaged.push(Damaged {
                    id: BlockId::from_u128(0),
                    reason: format!(
                        "{dropped} damaged blocks dropped when the pool opened (ids unknown)"
                    ),
                    place: None,
                    dropped: true,
                });
            }
        } else {
            check.method = "each block read through the tier (the tier drops a damaged one)";
            read_through(deployment, position, &mut check, progress)?;
        }
        check.seconds = started.elapsed().as_secs_f64();
        tiers.push(check);
    }
    Ok(Verification { repair, tiers })
}

/// Reads every block the store places at `position` through its tier.
fn read_through(
    deployment: &Deployment,
    position: usize,
    check: &mut TierCheck,
    progress: Progress,
) -> Result<()> {
    let store = &deployment.store;
    let tier = &store.tiers()[position];
    let ids: Vec<(BlockId, u64)> = store
        .ids()
        .into_iter()
        .filter(|id| store.tier_of(*id) == Some(position))
        .filter_map(|id| Some((id, store.len_of(id)?)))
        .collect();
    let bar = progress.bytes(tier.name(), ids.iter().map(|(_, len)| len).sum());
    let read = AtomicU64::new(0);
    let mut buffer = Vec::new();
    for (id, len) in ids {
        buffer.resize(len as usize, 0);
        match tier.get(id, &mut buffer) {
            Ok(n) => {
                read.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) if e.kind() == ErrorKind::Corrupt => {
                // The tier dropped it; the store forgets it too.
                store.remove(id)?;
                check.damaged.push(Damaged {
                    id,
                    reason: e.message().to_string(),
                    place: None,
                    dropped: true,
                });
            }
            Err(e) => return Err(e),
        }
        check.blocks += 1;
        check.bytes += len;
        bar.inc(len);
    }
    bar.finish_and_clear();
    check.read_bytes = read.into_inner();
    Ok(())
}

impl Report for Verification {
    fn text(&self) -> String {
        let mut tiers = table(&[
            "tier", "kind", "blocks", "bytes", "seconds", "GB/s", "damaged",
        ]);
        for t in &self.tiers {
            let gbps = if t.seconds > 0.0 {
                t.read_bytes as f64 / t.seconds / 1e9
            } else {
                0.0
            };
            tiers.add_row(vec![
                t.tier.clone(),
                t.kind.clone(),
                t.blocks.to_string(),
                size(t.bytes),
                format!("{:.2}", t.seconds),
                format!("{gbps:.2}"),
                t.damaged.len().to_string(),
            ]);
        }
        let mut text = format!("{tiers}\n");
        if self.tiers.is_empty() {
            text.push_str("no persistent tier in this deployment: nothing to verify\n");
        }
        for t in &self.tiers {
            text.push_str(&format!("{}: {}\n", t.tier, t.method));
            for d in &t.damaged {
                let place = d
                    .place
                    .as_deref()
                    .map(|p| format!(" ({p})"))
                    .unwrap_or_default();
                let state = if d.dropped {
                    "dropped"
                } else {
                    "left in place"
                };
                text.push_str(&format!(
                    "  damaged {}: {}{place}, {state}\n",
                    d.id, d.reason
                ));
            }
        }
        let left = self.damaged_left();
        if left > 0 {
            text.push_str(&format!(
                "{left} damaged blocks left in place (never served); run with --repair to drop them\n"
            ));
        }
        text
    }
}
