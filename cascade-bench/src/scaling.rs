//! Thread scaling: one tier's write and read GB/s at 1, 2, 4, ... `--threads` threads,
//! each against its limit measured with the same thread count.

use serde::Serialize;

use crate::bench::Bench;
use crate::dataset::Dataset;
use crate::setup;
use crate::stats::ratio;
use crate::tiers;

/// The scaling table.
#[derive(Debug, Clone, Serialize)]
pub struct ScalingTable {
    /// The tier kind measured.
    pub kind: String,
    /// Why there are no rows, when there are none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// One row per thread count.
    pub rows: Vec<ScalingRow>,
}

/// Figures at one thread count.
#[derive(Debug, Clone, Serialize)]
pub struct ScalingRow {
    /// Threads.
    pub threads: usize,
    /// Write GB/s (median).
    pub write_gbps: f64,
    /// Read GB/s (median).
    pub read_gbps: f64,
    /// The limit's write GB/s with the same threads (median), when measured.
    pub limit_write_gbps: Option<f64>,
    /// The limit's read GB/s with the same threads (median), when measured.
    pub limit_read_gbps: Option<f64>,
    /// Write over the limit.
    pub write_efficiency: Option<f64>,
    /// Read over the limit.
    pub read_efficiency: Option<f64>,
    /// Read GB/s over the one-thread read GB/s.
    pub read_speedup: Option<f64>,
    /// What the limit is (measured with this row's thread count).
    pub limit: String,
}

/// 1, 2, 4, ... below `max`, then `max`.
pub fn thread_counts(max: usize) -> Vec<usize> {
    let mut counts = Vec::new();
    let mut t = 1;
    while t < max {
        counts.push(t);
        t *= 2;
    }
    counts.push(max.max(1));
    counts
}

/// The kind the scaling table measures: the one `--tier` names, else the deployment's
/// fastest tier when this build has it, else `memory`.
pub fn scaling_kind(bench: &Bench) -> String {
    let chosen = bench.args.tier.kinds();
    if let [only] = chosen.as_slice() {
        return (*only).to_string();
    }
    match bench.deployment.first_kind() {
        Some(kind) if setup::not_compiled_reason(kind).is_none() => kind.to_string(),
        _ => "memory".to_string(),
    }
}

/// Measures the table.
pub fn run(bench: &Bench, ds: &mut Dataset) -> ScalingTable {
    let kind = scaling_kind(bench);
    if let Some(reason) = setup::not_compiled_reason(&kind) {
        return ScalingTable {
            kind,
            skipped: Some(reason),
            rows: Vec::new(),
        };
    }
    let counts = thread_counts(bench.args.threads);
    let bar = bench.progress.bar("scaling", counts.len() as u64);
    let mut rows: Vec<ScalingRow> = Vec::new();
    for threads in counts {
        bar.set_message(format!("{kind}, {threads} threads"));
        let (measured, limit) = match tiers::measure_kind(bench, ds, &kind, threads) {
            Ok(m) => m,
            Err(e) => {
                bar.finish_and_clear();
                return ScalingTable {
                    kind,
                    skipped: Some(format!("could not be measured with {threads} threads: {e}")),
                    rows,
                };
            }
        };
        let limit_write = limit.write_gbps.as_ref().map(|s| s.median);
        let limit_read = limit.read_gbps.as_ref().map(|s| s.median);
        let base_read = rows.first().map(|r| r.read_gbps);
        rows.push(ScalingRow {
            threads,
            write_gbps: measured.write.median,
            read_gbps: measured.read.median,
            limit_write_gbps: limit_write,
            limit_read_gbps: limit_read,
            write_efficiency: limit_write.and_then(|l| ratio(measured.write.median, l)),
            read_efficiency: limit_read.and_then(|l| ratio(measured.read.median, l)),
            read_speedup: ratio(
                measured.read.median,
                base_read.unwrap_or(measured.read.median),
            ),
            limit: tiers::limit_name(&kind),
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    ScalingTable {
        kind,
        skipped: None,
        rows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_counts_double_up_to_the_maximum() {
        assert_eq!(thread_counts(1), vec![1]);
        assert_eq!(thread_counts(2), vec![1, 2]);
        assert_eq!(thread_counts(32), vec![1, 2, 4, 8, 16, 32]);
        assert_eq!(thread_counts(6), vec![1, 2, 4, 6]);
    }
}
