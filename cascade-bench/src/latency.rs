//! Latency of single calls: p50 and p99 of `put` and `get` of one block, one thread, per
//! tier kind.

use std::time::Instant;

use cascade::{BlockId, Error, ErrorKind, Result};
use serde::Serialize;

use crate::bench::Bench;
use crate::dataset::Dataset;
use crate::setup;
use crate::stats::percentile;
use crate::tiers::single_tier_config;

/// One tier kind's latencies, in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyRow {
    /// The tier kind.
    pub kind: String,
    /// Why there are no figures, when there are none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// Timed calls of each kind.
    pub ops: usize,
    /// Median put.
    pub put_p50_us: f64,
    /// 99th percentile put.
    pub put_p99_us: f64,
    /// Median get.
    pub get_p50_us: f64,
    /// 99th percentile get.
    pub get_p99_us: f64,
}

/// Measures every kind in `kinds`.
pub fn run(bench: &Bench, ds: &mut Dataset, kinds: &[&str]) -> Vec<LatencyRow> {
    let bar = bench.progress.bar("latency", kinds.len() as u64);
    let rows = kinds
        .iter()
        .map(|kind| {
            bar.set_message(kind.to_string());
            let ops = bench.args.latency_ops.min(ds.blocks());
            let mut row = LatencyRow {
                kind: kind.to_string(),
                skipped: setup::not_compiled_reason(kind),
                ops,
                put_p50_us: 0.0,
                put_p99_us: 0.0,
                get_p50_us: 0.0,
                get_p99_us: 0.0,
            };
            if row.skipped.is_none() {
                if let Err(e) = measure(bench, ds, kind, &mut row) {
                    row.skipped = Some(format!("could not be measured: {e}"));
                }
            }
            bar.inc(1);
            row
        })
        .collect();
    bar.finish_and_clear();
    rows
}

fn measure(bench: &Bench, ds: &mut Dataset, kind: &str, row: &mut LatencyRow) -> Result<()> {
    let dir = bench.run_dir.fresh(&format!("latency-{kind}"))?;
    let store = setup::open_store(&single_tier_config(bench, ds, kind, &dir))?;
    let mut out = vec![0u8; ds.block_size()];
    // One untimed pass over the same amount of data, then removed, so the timed calls
    // land on touched memory (a tier's first touch of fresh pages costs ~0.5 GB/s here)
    // and in files that already exist.
    for i in 0..row.ops {
        let id = BlockId::from_u128(u128::MAX - i as u128);
        store.put(id, ds.block(i))?;
        store.get(id, &mut out)?;
    }
    for i in 0..row.ops {
        store.remove(BlockId::from_u128(u128::MAX - i as u128))?;
    }
    let mut puts = Vec::with_capacity(row.ops);
    for i in 0..row.ops {
        let id = ds.ids()[i];
        let start = Instant::now();
        store.put(id, ds.block(i))?;
        puts.push(start.elapsed().as_secs_f64() * 1e6);
    }
    let mut gets = Vec::with_capacity(row.ops);
    for i in 0..row.ops {
        let id = ds.ids()[i];
        let start = Instant::now();
        let got = store.get(id, &mut out)?;
        gets.push(start.elapsed().as_secs_f64() * 1e6);
        if got != Some(out.len()) || out != ds.block(i) {
            return Err(Error::new(
                ErrorKind::Corrupt,
                "a single get returned other bytes than were put",
            )
            .with_context("id", id));
        }
    }
    drop(store);
    bench.run_dir.release(&dir);
    puts.sort_by(f64::total_cmp);
    gets.sort_by(f64::total_cmp);
    row.put_p50_us = percentile(&puts, 50.0);
    row.put_p99_us = percentile(&puts, 99.0);
    row.get_p50_us = percentile(&gets, 50.0);
    row.get_p99_us = percentile(&gets, 99.0);
    Ok(())
}
