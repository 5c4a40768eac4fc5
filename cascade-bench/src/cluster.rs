//! `cascade-bench --cluster`: a cluster store across the ranks of an MPI job, per rank
//! and in aggregate, against limits measured in the same run.
//!
//! Every rank runs the same command under `mpirun` / `srun`. Each round measures:
//! - single rank: rank 0 alone writes and reads its blocks while the others wait (their
//!   progress threads idle), the baseline of the aggregate figures;
//! - write, local read: every rank at once, each on its own blocks;
//! - remote read: every rank reads the blocks rank r+1 wrote, in `--batch` batches:
//!   first as configured (ranks on one node copy each other's blocks straight from their
//!   shm pools), then with direct reads off, every block over MPI as between nodes;
//! - dedup: every rank puts the same blocks; the bytes stored cluster-wide must be one
//!   copy;
//! - MPI point-to-point: every rank sends blocks of the same size to rank r+1 while
//!   receiving from rank r-1, `--batch` in flight: the limit of the remote read.
//!
//! The default deployment is one shm pool per rank with one I/O thread per rank (a core
//! per rank, so the aggregate can be compared with ranks x the single rank).

use std::time::Instant;

use cascade::mpi::{ClusterStore, Mpi, P2pBandwidth, p2p_bandwidth};
use cascade::{BlockId, Cascade, CascadeConfig, Error, ErrorKind, Result};
use serde::Serialize;

use crate::Args;

/// One figure per rank and for all ranks together, in GB/s (medians over rounds).
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// What was measured.
    pub name: String,
    /// Each rank's own GB/s (its bytes over its own time), median over rounds.
    pub per_rank_gbps: Vec<f64>,
    /// All ranks' bytes over the slowest rank's time, median over rounds.
    pub aggregate_gbps: f64,
    /// The limit this figure is compared with (GB/s), and what it is.
    pub limit: Option<(String, f64)>,
}

/// The whole cluster report.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterReport {
    /// The command line.
    pub command: String,
    /// Machine of rank 0.
    pub machine: String,
    /// UTC date of the run.
    pub date: String,
    /// MPI library version.
    pub mpi: String,
    /// Ranks.
    pub ranks: usize,
    /// Blocks per rank.
    pub blocks: usize,
    /// Block size in bytes.
    pub block_size: usize,
    /// Blocks per batch call.
    pub batch: usize,
    /// Rounds (the figures are medians over them).
    pub rounds: u32,
    /// Rank 0 alone.
    pub single_rank: Vec<Figure>,
    /// Every rank at once.
    pub figures: Vec<Figure>,
    /// MPI point-to-point bandwidth of the block size (per rank and aggregate GB/s).
    pub p2p: Option<(f64, f64)>,
    /// Bytes the dedup round stored over all ranks, and one copy of its blocks.
    pub dedup_bytes: (u64, u64),
    /// With direct reads on: blocks of the direct pass read straight from another rank's
    /// shm pool, and the pass's remote blocks (the rest came over MPI).
    pub direct_reads: Option<(u64, u64)>,
}

/// Runs the cluster benchmark on this rank; rank 0 prints the report (and writes
/// `--json`).
pub fn main(args: &Args, command: String) -> Result<()> {
    if args.blocks == 0 {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "--blocks must be at least 1",
        ));
    }
    let mpi = Mpi::init()?;
    let config = deployment(args)?;
    // The default deployment's pool is this benchmark's scratch: a fresh one per run.
    let scratch = args.config.is_none().then(|| scratch_pool(mpi.rank()));
    if let Some(path) = &scratch {
        remove_pool(path)?;
    }
    let cluster = Cascade::open_cluster(&config)?;
    let report = run(&cluster, &mpi, args, command);
    let closed = cluster.close();
    drop(cluster);
    if let Some(path) = scratch.as_ref().filter(|_| !args.keep_data) {
        remove_pool(path)?;
    }
    let report = report?;
    closed?;
    if mpi.rank() == 0 {
        print!("{}", to_text(&report));
        if let Some(path) = &args.json {
            let bytes = serde_json::to_vec_pretty(&report)
                .map_err(|e| Error::new(ErrorKind::Io, e.to_string()))?;
            std::fs::write(path, bytes).map_err(|e| {
                Error::new(ErrorKind::Io, "cannot write --json")
                    .with_context("path", path.display())
                    .with_source(e)
            })?;
        }
    }
    Ok(())
}

/// `--config`, or a shm pool per rank sized for two rounds of blocks, one I/O thread.
fn deployment(args: &Args) -> Result<CascadeConfig> {
    if let Some(path) = &args.config {
        return CascadeConfig::from_toml_file(path);
    }
    let bytes = args.blocks as u64 * args.size;
    let capacity = bytes * 2 + (64 << 20);
    let path = scratch_pool_pattern();
    CascadeConfig::from_toml_str(&format!(
        "dedup = true\npromote_on_read = false\nnum_io_threads = 1\n\
         [[tiers]]\nkind = \"shm\"\nname = \"bench-shm\"\npath = \"{path}\"\ncapacity = {capacity}\n"
    ))
}

fn scratch_pool_pattern() -> String {
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    format!("/dev/shm/cascade-bench-{uid}-rank{{rank}}.pool")
}

fn scratch_pool(rank: usize) -> std::path::PathBuf {
    scratch_pool_pattern()
        .replace(cascade::mpi::config::RANK_PLACEHOLDER, &rank.to_string())
        .into()
}

fn remove_pool(path: &std::path::Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(
            Error::new(ErrorKind::Io, "cannot remove the benchmark's shm pool")
                .with_context("path", path.display())
                .with_source(e),
        ),
    }
}

struct Data {
    mine: Vec<u8>,
    shared: Vec<u8>,
    out: Vec<u8>,
}

fn fill(buffer: &mut [u8], seed: u64) {
    let mut x = seed | 1;
    for chunk in buffer.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let bytes = x.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
}

fn id(round: u32, phase: u8, rank: usize, i: usize) -> BlockId {
    BlockId::from_u128(
        (0xC1u128 << 120)
            | (u128::from(round) << 88)
            | (u128::from(phase) << 80)
            | ((rank as u128) << 40)
            | i as u128,
    )
}

#[derive(Default)]
struct Samples {
    per_rank: Vec<Vec<f64>>,
    aggregate: Vec<f64>,
}

impl Samples {
    fn figure(&self, name: &str, limit: Option<(String, f64)>) -> Figure {
        Figure {
            name: name.to_string(),
            per_rank_gbps: self.per_rank.iter().map(|s| median(s)).collect(),
            aggregate_gbps: median(&self.aggregate),
            limit,
        }
    }
}

fn median(values: &[f64]) -> f64 {
    crate::stats::median(values)
}

/// Times `work` on every rank between barriers: (this rank's seconds, each rank's
/// seconds).
fn timed(cluster: &ClusterStore, work: impl FnOnce() -> Result<()>) -> Result<Vec<f64>> {
    cluster.barrier()?;
    let start = Instant::now();
    let done = work();
    let mine = start.elapsed().as_secs_f64();
    done?;
    let nanos = cluster.gather((mine * 1e9) as u64)?;
    Ok(nanos.into_iter().map(|n| n as f64 / 1e9).collect())
}

fn record(samples: &mut Samples, seconds: &[f64], bytes_each: &[u64]) {
    samples.per_rank.resize(seconds.len(), Vec::new());
    for (rank, (s, b)) in seconds.iter().zip(bytes_each).enumerate() {
        if *b > 0 && *s > 0.0 {
            samples.per_rank[rank].push(*b as f64 / s / 1e9);
        }
    }
    let slowest = seconds
        .iter()
        .zip(bytes_each)
        .filter(|(_, b)| **b > 0)
        .map(|(s, _)| *s)
        .fold(0.0, f64::max);
    let total: u64 = bytes_each.iter().sum();
    if slowest > 0.0 {
        samples.aggregate.push(total as f64 / slowest / 1e9);
    }
}

fn put_all(
    cluster: &ClusterStore,
    data: &[u8],
    size: usize,
    batch: usize,
    ids: impl Fn(usize) -> BlockId,
) -> Result<()> {
    let blocks: Vec<(BlockId, &[u8])> = data
        .chunks(size)
        .enumerate()
        .map(|(i, b)| (ids(i), b))
        .collect();
    for chunk in blocks.chunks(batch) {
        for r in cluster.put_batch(chunk) {
            r?;
        }
    }
    Ok(())
}

fn get_all(
    cluster: &ClusterStore,
    out: &mut [u8],
    size: usize,
    batch: usize,
    ids: impl Fn(usize) -> BlockId,
) -> Result<()> {
    let mut items: Vec<(BlockId, &mut [u8])> = out
        .chunks_mut(size)
        .enumerate()
        .map(|(i, b)| (ids(i), b))
        .collect();
    for chunk in items.chunks_mut(batch) {
        for r in cluster.get_batch(chunk) {
            if r?.is_none() {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    "a block written in this round was not found",
                ));
            }
        }
    }
    Ok(())
}

fn run(cluster: &ClusterStore, mpi: &Mpi, args: &Args, command: String) -> Result<ClusterReport> {
    let (rank, ranks) = (cluster.rank(), cluster.ranks());
    let size = args.block_size();
    let blocks = args.blocks;
    let batch = args.batch as usize;
    let bytes = (blocks * size) as u64;
    let mut data = Data {
        mine: vec![0u8; blocks * size],
        shared: vec![0u8; blocks * size],
        out: vec![0u8; blocks * size],
    };
    fill(&mut data.mine, 0x5EED ^ (rank as u64 + 1) << 32);
    fill(&mut data.shared, 0xD0D0);
    fill(&mut data.out, 1);
    let (mut solo_w, mut solo_r) = (Samples::default(), Samples::default());
    let (mut write, mut local, mut remote, mut remote_mpi, mut dedup) = (
        Samples::default(),
        Samples::default(),
        Samples::default(),
        Samples::default(),
        Samples::default(),
    );
    // Direct reads (from the shm pools of ranks on this node) as configured, then every
    // remote block over MPI; both against the same round's point-to-point bandwidth.
    let direct = cluster.direct_reads();
    let mut direct_blocks = 0u64;
    let mut p2p: Vec<P2pBandwidth> = Vec::new();
    let mut dedup_bytes = (0, 0);
    let solo_bytes: Vec<u64> = (0..ranks).map(|r| if r == 0 { bytes } else { 0 }).collect();
    let all_bytes = vec![bytes; ranks];
    // Round 0 is an untimed warm-up: it maps every rank's pool into the others (a
    // reader's first touch of a pool page costs a page-table fill), as the pools of a
    // long-running job are mapped after its first reads.
    for round in 0..=args.repeat {
        let warm_up = round == 0;
        // Rank 0 alone: the single-rank baseline of this round.
        let s = timed(cluster, || {
            if rank == 0 {
                put_all(cluster, &data.mine, size, batch, |i| id(round, 0, 0, i))?;
            }
            Ok(())
        })?;
        if !warm_up {
            record(&mut solo_w, &s, &solo_bytes);
        }
        let s = timed(cluster, || {
            if rank == 0 {
                get_all(cluster, &mut data.out, size, batch, |i| id(round, 0, 0, i))?;
            }
            Ok(())
        })?;
        if !warm_up {
            record(&mut solo_r, &s, &solo_bytes);
        }
        clear(cluster)?;
        // Every rank at once.
        let s = timed(cluster, || {
            put_all(cluster, &data.mine, size, batch, |i| id(round, 1, rank, i))
        })?;
        if !warm_up {
            record(&mut write, &s, &all_bytes);
        }
        let s = timed(cluster, || {
            get_all(cluster, &mut data.out, size, batch, |i| {
                id(round, 1, rank, i)
            })
        })?;
        if !warm_up {
            record(&mut local, &s, &all_bytes);
        }
        if ranks > 1 {
            let peer = (rank + 1) % ranks;
            let mut read_peer = |samples: &mut Samples| -> Result<()> {
                let s = timed(cluster, || {
                    get_all(cluster, &mut data.out, size, batch, |i| {
                        id(round, 1, peer, i)
                    })
                })?;
                if !warm_up {
                    record(samples, &s, &all_bytes);
                }
                Ok(())
            };
            if direct {
                let before = cluster.stats().direct_hits;
                read_peer(&mut remote)?;
                if !warm_up {
                    direct_blocks += cluster.stats().direct_hits - before;
                }
                cluster.set_direct_reads(false);
                let over_mpi = read_peer(&mut remote_mpi);
                cluster.set_direct_reads(true);
                over_mpi?;
            } else {
                read_peer(&mut remote_mpi)?;
            }
            if let Some(measured) = p2p_bandwidth(size, blocks, batch)?
                && !warm_up
            {
                p2p.push(measured);
            }
        }
        clear(cluster)?;
        // Every rank puts the same blocks.
        let before = cluster.totals()?;
        let s = timed(cluster, || {
            put_all(cluster, &data.shared, size, batch, |i| id(round, 2, 0, i))
        })?;
        if !warm_up {
            record(&mut dedup, &s, &all_bytes);
        }
        let after = cluster.totals()?;
        if !warm_up {
            dedup_bytes = (after.bytes - before.bytes, bytes);
        }
        clear(cluster)?;
    }
    let solo_write = median(&solo_w.aggregate);
    let solo_read = median(&solo_r.aggregate);
    let n = ranks as f64;
    let p2p_figure = (!p2p.is_empty()).then(|| {
        let per: Vec<f64> = p2p.iter().map(|p| p.per_rank_gbps).collect();
        let agg: Vec<f64> = p2p.iter().map(|p| p.aggregate_gbps).collect();
        (median(&per), median(&agg))
    });
    let mut figures = vec![
        write.figure(
            "write",
            Some((format!("{ranks} x single rank"), n * solo_write)),
        ),
        local.figure(
            "local read",
            Some((format!("{ranks} x single rank"), n * solo_read)),
        ),
    ];
    let direct_blocks: u64 = cluster.gather(direct_blocks)?.iter().sum();
    if let Some((_, agg)) = p2p_figure {
        let limit = || Some(("MPI p2p, same size".to_string(), agg));
        if direct {
            figures.push(remote.figure("remote read (same node: direct from shm)", limit()));
        }
        figures.push(remote_mpi.figure("remote read (over MPI)", limit()));
    }
    figures.push(dedup.figure("dedup put (same blocks on every rank)", None));
    Ok(ClusterReport {
        command,
        machine: crate::machine::Machine::detect().describe(),
        date: crate::machine::utc_now(),
        mpi: mpi.library().to_string(),
        ranks,
        blocks,
        block_size: size,
        batch,
        rounds: args.repeat,
        single_rank: vec![
            solo_w.figure("write", None),
            solo_r.figure("local read", None),
        ],
        figures,
        p2p: p2p_figure,
        direct_reads: (direct && ranks > 1).then_some((
            direct_blocks,
            (blocks * ranks) as u64 * u64::from(args.repeat),
        )),
        dedup_bytes,
    })
}

/// Every rank drops its blocks (between barriers, so no read is in flight).
fn clear(cluster: &ClusterStore) -> Result<()> {
    cluster.barrier()?;
    cluster.clear()?;
    cluster.barrier()
}

/// The report as text tables.
pub fn to_text(r: &ClusterReport) -> String {
    use std::fmt::Write;
    let mut t = String::new();
    let _ = writeln!(t, "{}", r.command);
    let _ = writeln!(
        t,
        "machine: {}; date: {}; MPI: {}",
        r.machine, r.date, r.mpi
    );
    let _ = writeln!(
        t,
        "{} ranks, {} blocks of {} KiB per rank, batches of {}, medians of {} rounds after an untimed warm-up round\n",
        r.ranks,
        r.blocks,
        r.block_size / 1024,
        r.batch,
        r.rounds
    );
    let _ = writeln!(
        t,
        "| figure | per rank GB/s | aggregate GB/s | limit | of limit |"
    );
    let _ = writeln!(t, "|---|---|---|---|---|");
    for f in &r.single_rank {
        let _ = writeln!(
            t,
            "| single rank (rank 0 alone): {} | {:.2} | {:.2} | | |",
            f.name, f.aggregate_gbps, f.aggregate_gbps
        );
    }
    for f in &r.figures {
        let per: Vec<String> = f.per_rank_gbps.iter().map(|g| format!("{g:.2}")).collect();
        let (limit, ratio) = match &f.limit {
            Some((what, gbps)) if *gbps > 0.0 => (
                format!("{gbps:.2} ({what})"),
                format!("{:.0}%", 100.0 * f.aggregate_gbps / gbps),
            ),
            _ => (String::new(), String::new()),
        };
        let _ = writeln!(
            t,
            "| {} | {} | {:.2} | {limit} | {ratio} |",
            f.name,
            per.join(" / "),
            f.aggregate_gbps
        );
    }
    if let Some((per, agg)) = r.p2p {
        let _ = writeln!(
            t,
            "| MPI p2p, {} KiB messages | {per:.2} | {agg:.2} | | |",
            r.block_size / 1024
        );
    }
    match r.direct_reads {
        _ if r.ranks < 2 => {
            let _ = writeln!(t);
        }
        Some((direct, of)) => {
            let _ = writeln!(
                t,
                "\ndirect reads: {direct} of {of} remote blocks of the direct pass came from a pool on this node (the rest over MPI); {} to turn them off",
                cascade::mpi::DIRECT_READS_ENV.to_string() + "=0"
            );
        }
        None => {
            let _ = writeln!(t, "\ndirect reads: off (every remote block over MPI)");
        }
    }
    let _ = writeln!(
        t,
        "dedup: every rank put the same {} blocks; bytes stored cluster-wide {} (one copy: {}){}",
        r.blocks,
        r.dedup_bytes.0,
        r.dedup_bytes.1,
        if r.dedup_bytes.0 == r.dedup_bytes.1 {
            ""
        } else {
            "  <-- NOT one copy"
        }
    );
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregate_is_every_rank_s_bytes_over_the_slowest_rank() {
        let mut all = Samples::default();
        record(&mut all, &[1.0, 2.0], &[2_000_000_000, 2_000_000_000]);
        assert_eq!(all.per_rank, vec![vec![2.0], vec![1.0]]);
        assert_eq!(all.aggregate, vec![2.0]);
        // In the single-rank phase the idle ranks move nothing: they neither count nor
        // make the phase look slower.
        let mut solo = Samples::default();
        record(&mut solo, &[0.5, 9.0], &[1_000_000_000, 0]);
        assert_eq!(solo.aggregate, vec![2.0]);
        assert!(solo.per_rank[1].is_empty());
    }

    #[test]
    fn the_report_flags_dedup_that_stored_more_than_one_copy() {
        let mut report = ClusterReport {
            command: "cascade-bench --cluster".into(),
            machine: "m".into(),
            date: "d".into(),
            mpi: "Open MPI".into(),
            ranks: 2,
            blocks: 4,
            block_size: 128 << 10,
            batch: 64,
            rounds: 1,
            single_rank: vec![],
            figures: vec![Figure {
                name: "remote read".into(),
                per_rank_gbps: vec![1.0, 1.0],
                aggregate_gbps: 2.0,
                limit: Some(("MPI p2p, same size".into(), 4.0)),
            }],
            p2p: Some((2.0, 4.0)),
            dedup_bytes: (4 << 17, 4 << 17),
            direct_reads: Some((3, 8)),
        };
        let text = to_text(&report);
        assert!(
            text.contains("| remote read | 1.00 / 1.00 | 2.00 | 4.00 (MPI p2p, same size) | 50% |"),
            "{text}"
        );
        assert!(!text.contains("NOT one copy"), "{text}");
        assert!(
            text.contains("direct reads: 3 of 8 remote blocks"),
            "{text}"
        );
        report.dedup_bytes.0 *= 2;
        assert!(to_text(&report).contains("NOT one copy"));
    }
}
