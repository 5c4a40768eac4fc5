//! Tiered overflow: the data set written through shm over the file tier with 0, 50, 75
//! and 90% of it beyond the shm capacity, then read back cold (the file tier's page cache
//! dropped), as in the documented table.
//!
//! Promotion on read is off for this table: with it, every cold read of a spilled block
//! would push a hot one down, and the table would measure that thrashing rather than the
//! tiers.

use cascade::Result;
use serde::Serialize;

use crate::bench::Bench;
use crate::dataset::Dataset;
use crate::measure;
use crate::peers::files;
use crate::setup::{self, capacity_for};
use crate::stats::{Samples, gbps, ratio};

/// The overflow fractions of the documented table, in percent.
pub const OVERFLOW_PERCENTS: [u64; 4] = [0, 50, 75, 90];

/// The overflow table.
#[derive(Debug, Clone, Serialize)]
pub struct OverflowTable {
    /// The upper tier kind (`shm`, or `memory` where this build has no shm tier).
    pub upper: String,
    /// The lower tier kind.
    pub lower: String,
    /// How the read was made cold, and the promotion setting.
    pub note: String,
    /// Why there are no rows, when there are none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// One row per overflow fraction.
    pub rows: Vec<OverflowRow>,
    /// Cold read GB/s of one file per block in the same folder, the baseline of `speedup`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_cold_read_gbps: Option<f64>,
    /// Why the baseline is missing, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_skipped: Option<String>,
}

/// Figures at one overflow fraction.
#[derive(Debug, Clone, Serialize)]
pub struct OverflowRow {
    /// Share of the data meant to lie beyond the upper tier, in percent.
    pub overflow_percent: u64,
    /// Bytes the upper tier was given.
    pub upper_capacity_bytes: u64,
    /// Share of the data found in the lower tier after the writes, in percent.
    pub measured_lower_percent: f64,
    /// Write GB/s, demotions included.
    pub write_gbps: Samples,
    /// Cold read GB/s.
    pub cold_read_gbps: Samples,
    /// Cold read over the one-file-per-block cold read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speedup: Option<f64>,
}

/// Measures the table.
pub fn run(bench: &mut Bench, ds: &mut Dataset) -> OverflowTable {
    let upper = if setup::not_compiled_reason("shm").is_none() {
        "shm"
    } else {
        "memory"
    };
    let mut table = OverflowTable {
        upper: upper.into(),
        lower: "file".into(),
        note: "cold: the file tier's files are synced and dropped from the page cache \
               (posix_fadvise DONTNEED) before reading; promote_on_read = false"
            .into(),
        skipped: None,
        rows: Vec::new(),
        baseline_cold_read_gbps: None,
        baseline_skipped: None,
    };
    if let Some(reason) = setup::not_compiled_reason("file") {
        table.skipped = Some(reason);
        return table;
    }
    let bar = bench
        .progress
        .bar("overflow", OVERFLOW_PERCENTS.len() as u64);
    for percent in OVERFLOW_PERCENTS {
        bar.set_message(format!("{percent}%"));
        match measure_row(bench, ds, upper, percent) {
            Ok(row) => table.rows.push(row),
            Err(e) => {
                table.skipped = Some(format!("could not be measured at {percent}% overflow: {e}"));
                break;
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    match files::baseline(bench, ds) {
        Ok(base) => {
            table.baseline_cold_read_gbps = Some(base.read.median);
            for row in &mut table.rows {
                row.speedup = ratio(row.cold_read_gbps.median, base.read.median);
            }
        }
        Err(reason) => table.baseline_skipped = Some(reason),
    }
    table
}

/// The upper tier's capacity for `percent` of the data beyond it: all of it (with
/// rounding room) at 0%, else the remaining share.
pub fn upper_capacity(total: u64, blocks: usize, percent: u64) -> u64 {
    if percent == 0 {
        capacity_for(total, blocks)
    } else {
        total * (100 - percent.min(100)) / 100
    }
}

fn measure_row(bench: &Bench, ds: &mut Dataset, upper: &str, percent: u64) -> Result<OverflowRow> {
    let pool = bench.pools.get(bench.args.threads)?;
    let total = ds.total_bytes();
    let upper_capacity = upper_capacity(total, ds.blocks(), percent);
    let mut writes = Vec::new();
    let mut reads = Vec::new();
    let mut lower_share = 0.0;
    for _ in 0..bench.repeat() {
        let upper_dir = bench.run_dir.fresh(&format!("overflow{percent}-{upper}"))?;
        let lower_dir = bench.run_dir.fresh(&format!("overflow{percent}-file"))?;
        let tiers = vec![
            bench
                .deployment
                .bench_tier(upper, upper_capacity, &upper_dir, &bench.run_dir),
            bench.deployment.bench_tier(
                "file",
                capacity_for(total, ds.blocks()),
                &lower_dir,
                &bench.run_dir,
            ),
        ];
        let store = setup::open_store(&bench.deployment.store_config(tiers, false))?;
        let (w, r) = measure::write_then_read(&pool, &store, ds, bench.batch(), &mut || {
            setup::drop_page_cache(&lower_dir).map(|_| ())
        })?;
        let stats = store.stats();
        let lower_bytes = stats.tiers.get(1).map_or(0, |t| t.bytes);
        lower_share = 100.0 * lower_bytes as f64 / total.max(1) as f64;
        drop(store);
        bench.run_dir.release(&upper_dir);
        bench.run_dir.release(&lower_dir);
        writes.push(gbps(total, w));
        reads.push(gbps(total, r));
    }
    Ok(OverflowRow {
        overflow_percent: percent,
        upper_capacity_bytes: upper_capacity,
        measured_lower_percent: lower_share,
        write_gbps: Samples::new(writes),
        cold_read_gbps: Samples::new(reads),
        speedup: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upper_capacity_leaves_the_requested_share_outside() {
        let total = 1000 << 20;
        assert!(upper_capacity(total, 8000, 0) >= total);
        assert_eq!(upper_capacity(total, 8000, 50), total / 2);
        assert_eq!(upper_capacity(total, 8000, 90), total / 10);
    }
}
