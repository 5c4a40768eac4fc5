//! `cascade compact`: rewrites the file tiers' segments that are mostly dead.

use cascade::Result;
use serde::Serialize;

use crate::deployment::Deployment;
use crate::output::{Report, size, table};

/// One file tier's compaction.
#[derive(Debug, Serialize)]
pub struct TierCompaction {
    /// Tier name.
    pub tier: String,
    /// Segments rewritten and deleted.
    pub segments: u64,
    /// Live bytes copied.
    pub moved_bytes: u64,
    /// Bytes of segment files deleted.
    pub reclaimed_bytes: u64,
}

/// What `cascade compact` prints.
#[derive(Debug, Serialize)]
pub struct Compaction {
    /// The file tiers, fastest first.
    pub tiers: Vec<TierCompaction>,
}

/// Compacts every file tier, then makes the result durable.
pub fn run(deployment: &Deployment) -> Result<Compaction> {
    let mut tiers = Vec::new();
    for (_, file) in &deployment.file_tiers {
        let report = file.compact()?;
        cascade::Tier::flush(&**file)?;
        tiers.push(TierCompaction {
            tier: cascade::Tier::name(&**file).to_string(),
            segments: report.segments,
            moved_bytes: report.moved_bytes,
            reclaimed_bytes: report.reclaimed_bytes,
        });
    }
    Ok(Compaction { tiers })
}

impl Report for Compaction {
    fn text(&self) -> String {
        if self.tiers.is_empty() {
            return "no file tier in this deployment: nothing to compact\n".into();
        }
        let mut rows = table(&["tier", "segments rewritten", "moved", "reclaimed"]);
        for t in &self.tiers {
            rows.add_row(vec![
                t.tier.clone(),
                t.segments.to_string(),
                size(t.moved_bytes),
                size(t.reclaimed_bytes),
            ]);
        }
        format!("{rows}\n")
    }
}
