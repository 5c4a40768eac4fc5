//! The per-tier table: write and read GB/s of a store holding one tier of each kind, and
//! the hardware efficiency against a limit measured in the same run.

use std::time::Duration;

use cascade::{CascadeConfig, Result};
use serde::Serialize;

use crate::bench::{Bench, RwFigures};
use crate::dataset::Dataset;
use crate::limits::{self, DirectMode};
use crate::measure;
use crate::setup::{self, capacity_for, is_file_kind};
use crate::stats::{Samples, gbps, ratio};

/// One tier kind's figures.
#[derive(Debug, Clone, Serialize)]
pub struct TierRow {
    /// The tier kind.
    pub kind: String,
    /// Why the kind has no figures, when it has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// Write GB/s (puts plus the final flush).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_gbps: Option<Samples>,
    /// Read GB/s (cold for the file tier: page cache dropped first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_gbps: Option<Samples>,
    /// The hardware limit this tier is compared with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<Limit>,
    /// Write GB/s over the limit's write GB/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_efficiency: Option<f64>,
    /// Read GB/s over the limit's read GB/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_efficiency: Option<f64>,
}

impl TierRow {
    /// A row with no figures and the reason.
    pub fn skipped(kind: &str, reason: impl Into<String>) -> Self {
        Self {
            kind: kind.to_string(),
            skipped: Some(reason.into()),
            write_gbps: None,
            read_gbps: None,
            limit: None,
            write_efficiency: None,
            read_efficiency: None,
        }
    }
}

/// A hardware limit measured in this run.
#[derive(Debug, Clone, Serialize)]
pub struct Limit {
    /// What was measured, in words.
    pub what: String,
    /// Why there are no figures, when there are none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// Write-direction GB/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_gbps: Option<Samples>,
    /// Read-direction GB/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_gbps: Option<Samples>,
}

/// The per-tier table for `kinds`, each with `threads` threads.
pub fn run(bench: &Bench, ds: &mut Dataset, kinds: &[&str], threads: usize) -> Vec<TierRow> {
    let bar = bench.progress.bar("tiers", kinds.len() as u64);
    let rows = kinds
        .iter()
        .map(|kind| {
            bar.set_message(kind.to_string());
            let row = tier_row(bench, ds, kind, threads);
            bar.inc(1);
            row
        })
        .collect();
    bar.finish_and_clear();
    rows
}

fn tier_row(bench: &Bench, ds: &mut Dataset, kind: &str, threads: usize) -> TierRow {
    if let Some(reason) = setup::not_compiled_reason(kind) {
        return TierRow::skipped(kind, reason);
    }
    let (measured, limit) = match measure_kind(bench, ds, kind, threads) {
        Ok(m) => m,
        Err(e) => return TierRow::skipped(kind, format!("could not be measured: {e}")),
    };
    let eff =
        |tier: &Samples, limit: Option<&Samples>| limit.and_then(|l| ratio(tier.median, l.median));
    TierRow {
        kind: kind.to_string(),
        skipped: None,
        write_efficiency: eff(&measured.write, limit.write_gbps.as_ref()),
        read_efficiency: eff(&measured.read, limit.read_gbps.as_ref()),
        write_gbps: Some(measured.write),
        read_gbps: Some(measured.read),
        limit: Some(limit),
    }
}

/// A store config holding one tier of `kind` large enough for the data set, its data (if
/// any) in `dir`.
pub fn single_tier_config(
    bench: &Bench,
    ds: &Dataset,
    kind: &str,
    dir: &std::path::Path,
) -> CascadeConfig {
    let capacity = capacity_for(ds.total_bytes(), ds.blocks());
    let tier = bench
        .deployment
        .bench_tier(kind, capacity, dir, &bench.run_dir);
    bench.deployment.store_config(vec![tier], false)
}

/// One write and cold read of the data set through a new store holding one tier of
/// `kind`, in a new folder named after `label`: the page cache of the store's files is
/// dropped between the write and the read. `settle` runs, untimed, before each timed
/// phase. Returns (write time, read time).
pub fn fresh_store_round(
    bench: &Bench,
    pool: &rayon::ThreadPool,
    ds: &mut Dataset,
    kind: &str,
    label: &str,
    settle: impl Fn(),
) -> Result<(Duration, Duration)> {
    let dir = bench.run_dir.fresh(label)?;
    let store = setup::open_store(&single_tier_config(bench, ds, kind, &dir))?;
    settle();
    let times = measure::write_then_read(pool, &store, ds, bench.batch(), &mut || {
        setup::drop_page_cache(&dir)?;
        settle();
        Ok(())
    })?;
    drop(store);
    bench.run_dir.release(&dir);
    Ok(times)
}

/// memcpy passes per round; the round's limit is the fastest.
const MEMCPY_PASSES: usize = 3;

/// The limit a kind is compared with.
enum LimitKind {
    /// memcpy with the same threads: one figure for both directions.
    Memcpy,
    /// One file written then read sequentially, with O_DIRECT and buffered (readahead);
    /// per direction the faster of the two (virtual disks differ in which wins).
    SequentialFile,
    /// One 1 GiB pinned copy each way on this CUDA device (write: host to device,
    /// read: device to host).
    #[cfg_attr(not(feature = "gpu"), allow(dead_code))]
    PinnedCopy(usize),
    /// None can be measured, for this reason.
    Unmeasured(String),
}

/// Bytes of the pinned copy that sets the GPU's limit.
#[cfg(feature = "gpu")]
const PINNED_COPY_BYTES: usize = 1 << 30;

fn limit_kind(bench: &Bench, kind: &str) -> LimitKind {
    match kind {
        k if is_file_kind(k) => LimitKind::SequentialFile,
        "gpu" if cfg!(feature = "gpu") => {
            let device = bench
                .deployment
                .tier_of_kind("gpu")
                .and_then(|t| t.settings.get("device_id"))
                .and_then(toml::Value::as_integer)
                .and_then(|d| usize::try_from(d).ok())
                .unwrap_or(0);
            LimitKind::PinnedCopy(device)
        }
        "gpu" => LimitKind::Unmeasured("this build has no GPU support (feature gpu)".into()),
        _ => LimitKind::Memcpy,
    }
}

/// Host-to-device and device-to-host GB/s of one pinned copy of 1 GiB.
#[cfg(feature = "gpu")]
fn pinned_copy(device: usize) -> Result<(f64, f64)> {
    let rate = cascade::gpu::measure_pinned_copy(device, PINNED_COPY_BYTES, 1)?;
    Ok((rate.host_to_device_gbps, rate.device_to_host_gbps))
}

#[cfg(not(feature = "gpu"))]
fn pinned_copy(_device: usize) -> Result<(f64, f64)> {
    Err(cascade::Error::new(
        cascade::ErrorKind::Unavailable,
        "this build has no GPU support (feature gpu)",
    ))
}

/// The limit of `kind` in words, without the thread count.
pub fn limit_name(kind: &str) -> String {
    match kind {
        k if is_file_kind(k) => format!(
            "one file of the same size written then read sequentially, the faster per direction of O_DIRECT ({} MiB requests) and buffered (readahead, one thread)",
            limits::DIRECT_CHUNK >> 20
        ),
        "gpu" => "1 GiB pinned host <-> device copy".into(),
        _ => "memcpy of the same bytes".into(),
    }
}

/// Write and read GB/s of a store holding one tier of `kind` with `threads` threads, and
/// of its limit, measured in alternation (limit, store, limit, store, ...) so both see
/// the same machine; the first round is an untimed warm-up.
///
/// Memory-backed kinds keep one store (its memory warmed by the first round) and clear it
/// between rounds. The file tier opens a fresh store in a fresh folder each round, and its
/// read is cold: the page cache of its files is dropped first.
pub fn measure_kind(
    bench: &Bench,
    ds: &mut Dataset,
    kind: &str,
    threads: usize,
) -> Result<(RwFigures, Limit)> {
    let pool = bench.pools.get(threads)?;
    let bytes = ds.total_bytes();
    let fresh = is_file_kind(kind);
    let limit = limit_kind(bench, kind);
    let mut writes = Vec::with_capacity(bench.repeat());
    let mut reads = Vec::with_capacity(bench.repeat());
    let mut limit_writes = Vec::with_capacity(bench.repeat());
    let mut limit_reads = Vec::with_capacity(bench.repeat());
    let mut buffered = false;
    let mut kept = None;
    if !fresh {
        let dir = bench.run_dir.fresh(kind)?;
        let store = setup::open_store(&single_tier_config(bench, ds, kind, &dir))?;
        kept = Some((dir, store));
    }
    for round in 0..=bench.repeat() {
        let timed = round > 0;
        match &limit {
            LimitKind::Memcpy => {
                // The fastest of a few passes: memcpy here is bimodal (about 26 or 42
                // GB/s on 2 threads, pass to pass), and a limit is what the hardware
                // reaches, so a slow pass must not flatter the tier.
                let t = (0..MEMCPY_PASSES)
                    .map(|_| gbps(bytes, measure::memcpy_all(&pool, ds)))
                    .fold(0.0, f64::max);
                if timed {
                    limit_writes.push(t);
                    limit_reads.push(t);
                }
            }
            LimitKind::SequentialFile => {
                let dir = bench.run_dir.fresh("limit")?;
                let (direct_w, direct_r, mode) = limits::direct_file(&pool, ds, &dir)?;
                let (buffered_w, buffered_r) = limits::buffered_file(ds, &dir)?;
                bench.run_dir.release(&dir);
                buffered |= mode == DirectMode::Buffered;
                if timed {
                    limit_writes.push(gbps(bytes, direct_w.min(buffered_w)));
                    limit_reads.push(gbps(bytes, direct_r.min(buffered_r)));
                }
            }
            LimitKind::PinnedCopy(device) => {
                let (up, down) = pinned_copy(*device)?;
                if timed {
                    limit_writes.push(up);
                    limit_reads.push(down);
                }
            }
            LimitKind::Unmeasured(_) => {}
        }
        let (w, r) = match &kept {
            Some((_, store)) => {
                let times =
                    measure::write_then_read(&pool, store, ds, bench.batch(), &mut || Ok(()))?;
                store.clear()?;
                times
            }
            None => fresh_store_round(bench, &pool, ds, kind, kind, || {})?,
        };
        if timed {
            writes.push(gbps(bytes, w));
            reads.push(gbps(bytes, r));
        }
    }
    if let Some((dir, store)) = kept {
        drop(store);
        bench.run_dir.release(&dir);
    }
    let mut what = match limit {
        // One copy on one stream: the thread count does not apply.
        LimitKind::PinnedCopy(_) => limit_name(kind),
        _ => format!("{}, {threads} threads", limit_name(kind)),
    };
    if buffered {
        what.push_str(" (the file system refused O_DIRECT: buffered, synced, cache dropped)");
    }
    let limit = match limit {
        LimitKind::Unmeasured(reason) => Limit {
            what,
            skipped: Some(reason),
            write_gbps: None,
            read_gbps: None,
        },
        _ => Limit {
            what,
            skipped: None,
            write_gbps: Some(Samples::new(limit_writes)),
            read_gbps: Some(Samples::new(limit_reads)),
        },
    };
    Ok((
        RwFigures {
            write: Samples::new(writes),
            read: Samples::new(reads),
        },
        limit,
    ))
}
