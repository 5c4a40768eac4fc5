//! `cascade ls`: block ids with size, tier and age.

use std::time::SystemTime;

use cascade::{BlockId, Result};
use serde::Serialize;

use crate::deployment::Deployment;
use crate::output::{Report, table};

/// One block.
#[derive(Debug, Serialize)]
pub struct Entry {
    /// The id (32 hex digits).
    pub id: BlockId,
    /// Payload bytes.
    pub size: u64,
    /// The tier that serves it.
    pub tier: String,
    /// Seconds since it was written, where the tier records write times (file tiers).
    pub age_seconds: Option<f64>,
}

/// What `cascade ls` prints.
#[derive(Debug, Serialize)]
pub struct Listing {
    /// The blocks, by tier (fastest first) then id.
    pub blocks: Vec<Entry>,
    /// Blocks that matched, listed or not.
    pub total: usize,
}

/// Lists the blocks, of `tier` only when given, at most `limit`.
pub fn run(deployment: &Deployment, tier: Option<&str>, limit: Option<usize>) -> Result<Listing> {
    let only = tier.map(|t| deployment.tier_position(t)).transpose()?;
    let store = &deployment.store;
    let now = SystemTime::now();
    let mut found: Vec<(usize, BlockId, u64)> = store
        .ids()
        .into_iter()
        .filter_map(|id| Some((store.tier_of(id)?, id, store.len_of(id)?)))
        .filter(|(position, _, _)| only.is_none_or(|o| o == *position))
        .collect();
    found.sort_unstable();
    let total = found.len();
    let blocks = found
        .into_iter()
        .take(limit.unwrap_or(usize::MAX))
        .map(|(position, id, size)| Entry {
            id,
            size,
            tier: store.tiers()[position].name().to_string(),
            age_seconds: deployment
                .file_tier(position)
                .and_then(|f| f.written_at(id))
                .and_then(|at| now.duration_since(at).ok())
                .map(|age| age.as_secs_f64()),
        })
        .collect();
    Ok(Listing { blocks, total })
}

/// "3d 4h", "5m 2s", "-".
fn age(seconds: Option<f64>) -> String {
    let Some(seconds) = seconds else {
        return "-".into();
    };
    let s = seconds as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

impl Report for Listing {
    fn text(&self) -> String {
        let mut rows = table(&["id", "size", "tier", "age"]);
        for b in &self.blocks {
            rows.add_row(vec![
                b.id.to_string(),
                b.size.to_string(),
                b.tier.clone(),
                age(b.age_seconds),
            ]);
        }
        let mut text = format!("{rows}\n");
        if self.total > self.blocks.len() {
            text.push_str(&format!(
                "{} of {} blocks shown (--limit)\n",
                self.blocks.len(),
                self.total
            ));
        } else {
            text.push_str(&format!("{} blocks\n", self.total));
        }
        text
    }
}
