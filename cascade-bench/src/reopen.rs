//! Issue 5's reopen goal: the time to open a file tier directory holding many small
//! blocks (100,000 by default), cold and warm, through the store a deployment opens.

use std::path::Path;
use std::time::Instant;

use cascade::{BlockId, CascadeConfig, Error, ErrorKind, Result};
use rayon::prelude::*;
use serde::Serialize;

use crate::bench::Bench;
use crate::dataset::fill_block;
use crate::setup::{self, capacity_for};
use crate::stats::Samples;

/// Goal: a cold open of the directory in under this many milliseconds.
pub const GOAL_MS: f64 = 1000.0;
/// The file tier's record header (`cascade_lustre::format::HEADER_LEN`).
pub const RECORD_HEADER: usize = 64;
/// Payload bytes per block: with its header a record fills exactly one 4 KiB page, so a
/// directory holds as many records as its size allows (the worst case for an open).
pub const BLOCK_BYTES: usize = 4096 - RECORD_HEADER;
/// Blocks per `put_batch` call of the write.
pub const WRITE_BATCH: usize = 1024;
/// High half of the reopen blocks' ids, apart from the main data set's.
const ID_PREFIX: u128 = 0x7E09_E000 << 64;
/// Seed of the payload every reopen block carries.
const PAYLOAD_SEED: u64 = 0x7E09_E001;

/// The reopen table under "File tier cold read".
#[derive(Debug, Clone, Serialize)]
pub struct ReopenTable {
    /// Blocks written and expected after every open (`--reopen-blocks`).
    pub blocks: usize,
    /// Payload bytes per block.
    pub block_bytes: usize,
    /// The goal for the cold median, in milliseconds.
    pub goal_ms: f64,
    /// How the directory was written and opened.
    pub note: String,
    /// Why there are no figures, when there are none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// Segment files in the directory, as the tier reports them after the last open.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segments: Option<u64>,
    /// Milliseconds of each open with the directory's pages dropped from the page cache.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cold_ms: Option<Samples>,
    /// Milliseconds of each open with the directory's pages cached.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warm_ms: Option<Samples>,
    /// Whether the cold median is under the goal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub met: Option<bool>,
}

impl ReopenTable {
    fn empty(bench: &Bench) -> Self {
        Self {
            blocks: bench.args.reopen_blocks,
            block_bytes: BLOCK_BYTES,
            goal_ms: GOAL_MS,
            note: format!(
                "Blocks of {BLOCK_BYTES} bytes (one 4 KiB page per record) written with \
                 put_batch of {WRITE_BATCH} on {} threads into a store holding only the \
                 file tier (the deployment's settings, in a fresh folder), flushed, and the \
                 store dropped. Then {} opens each cold and warm, alternating, cold first: \
                 the time is Cascade::open of that store (the tier rebuilding its index \
                 from the segments, then the store indexing the tier's blocks); before a \
                 cold open every file of the folder is synced and dropped from the page \
                 cache (posix_fadvise DONTNEED). Every open must find all the blocks. The \
                 goal is judged on the cold median.",
                bench.args.threads,
                bench.repeat()
            ),
            skipped: None,
            segments: None,
            cold_ms: None,
            warm_ms: None,
            met: None,
        }
    }
}

/// Measures the reopen table, or says why not; `skipped` is the file section's reason for
/// not running at all, if it has one.
pub fn run(bench: &Bench, skipped: Option<&str>) -> ReopenTable {
    let mut table = ReopenTable::empty(bench);
    if let Some(reason) = skipped {
        table.skipped = Some(reason.to_string());
        return table;
    }
    if bench.args.reopen_blocks == 0 {
        table.skipped = Some("--reopen-blocks 0 turns it off".into());
        return table;
    }
    match measure(bench) {
        Ok(measured) => {
            table.met = Some(meets_goal(&measured.cold));
            table.segments = Some(measured.segments);
            table.cold_ms = Some(measured.cold);
            table.warm_ms = Some(measured.warm);
        }
        Err(e) => table.skipped = Some(format!("could not be measured: {e}")),
    }
    table
}

/// Whether the median of `cold` open times is under [`GOAL_MS`]; never without figures.
pub fn meets_goal(cold: &Samples) -> bool {
    !cold.values.is_empty() && cold.median < GOAL_MS
}

struct Measured {
    cold: Samples,
    warm: Samples,
    segments: u64,
}

fn measure(bench: &Bench) -> Result<Measured> {
    let blocks = bench.args.reopen_blocks;
    let dir = bench.run_dir.fresh("reopen")?;
    let config = store_config(bench, &dir, blocks);
    write_blocks(bench, &config, blocks)?;
    let mut cold = Vec::with_capacity(bench.repeat());
    let mut warm = Vec::with_capacity(bench.repeat());
    let mut segments = 0;
    let bar = bench.progress.bar("reopen", 2 * bench.repeat() as u64);
    for open in 0..2 * bench.repeat() {
        let is_cold = open % 2 == 0;
        bar.set_message(if is_cold { "cold open" } else { "warm open" });
        if is_cold {
            setup::drop_page_cache(&dir)?;
            setup::sync_everything();
        }
        let started = Instant::now();
        let store = setup::open_store(&config)?;
        let ms = started.elapsed().as_secs_f64() * 1e3;
        let stats = store.stats();
        if stats.blocks != blocks as u64 {
            return Err(Error::new(
                ErrorKind::Corrupt,
                "a reopened file tier did not hold every block written",
            )
            .with_context("expected", blocks)
            .with_context("found", stats.blocks)
            .with_context("path", dir.display()));
        }
        segments = stats
            .tiers
            .first()
            .and_then(|t| t.extra.get("segments"))
            .map_or(0, |s| *s as u64);
        drop(store);
        if is_cold {
            cold.push(ms);
        } else {
            warm.push(ms);
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    bench.run_dir.release(&dir);
    Ok(Measured {
        cold: Samples::new(cold),
        warm: Samples::new(warm),
        segments,
    })
}

/// A store holding only the deployment's file tier in `dir`, with room for `blocks`
/// one-page records.
fn store_config(bench: &Bench, dir: &Path, blocks: usize) -> CascadeConfig {
    let capacity = capacity_for(blocks as u64 * 4096, blocks);
    let tier = bench
        .deployment
        .bench_tier("file", capacity, dir, &bench.run_dir);
    bench.deployment.store_config(vec![tier], false)
}

/// The id of reopen block `i`.
pub fn block_id(i: usize) -> BlockId {
    BlockId::from_u128(ID_PREFIX | i as u128)
}

/// Writes `blocks` blocks through a store opened from `config`, flushes and drops it.
/// Every block carries the same payload: an open reads headers and footers, never payloads.
fn write_blocks(bench: &Bench, config: &CascadeConfig, blocks: usize) -> Result<()> {
    let pool = bench.pools.get(bench.args.threads)?;
    let mut payload = vec![0u8; BLOCK_BYTES];
    fill_block(&mut payload, PAYLOAD_SEED, 0);
    let ids: Vec<BlockId> = (0..blocks).map(block_id).collect();
    let store = setup::open_store(config)?;
    let bar = bench.progress.bar("reopen", blocks as u64);
    bar.set_message("writing");
    pool.install(|| {
        ids.par_chunks(WRITE_BATCH).try_for_each(|chunk| {
            let items: Vec<(BlockId, &[u8])> =
                chunk.iter().map(|id| (*id, payload.as_slice())).collect();
            store
                .put_batch(&items)
                .into_iter()
                .try_for_each(|outcome| outcome.map(|_| ()))?;
            bar.inc(chunk.len() as u64);
            Ok::<(), Error>(())
        })
    })?;
    bar.set_message("flushing");
    store.flush()?;
    drop(store);
    bar.finish_and_clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goal_is_judged_on_the_cold_median() {
        assert!(meets_goal(&Samples::new(vec![900.0, 1200.0, 950.0])));
        assert!(!meets_goal(&Samples::new(vec![900.0, 1200.0, 1100.0])));
        assert!(!meets_goal(&Samples::new(vec![GOAL_MS])));
        assert!(
            !meets_goal(&Samples::new(Vec::new())),
            "no figures, no goal"
        );
    }

    #[test]
    fn ids_are_distinct_and_apart_from_the_data_set() {
        assert_ne!(block_id(0), block_id(1));
        assert_eq!(block_id(5).as_u128() >> 64, ID_PREFIX >> 64);
        assert_ne!(ID_PREFIX >> 64, u128::from(crate::SEED));
    }

    #[cfg(feature = "lustre")]
    #[test]
    fn one_record_fills_one_page() {
        assert_eq!(RECORD_HEADER, cascade::lustre::format::HEADER_LEN);
        assert_eq!(
            (BLOCK_BYTES + RECORD_HEADER) as u64,
            cascade::lustre::format::PAGE
        );
    }
}
