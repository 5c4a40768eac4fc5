//! Prefetch from the cold file tier into shared memory, measured against the two things
//! it must match (issue 19): the caller starts a prefetch, sleeps for the time a get of
//! the blocks from the cold file tier takes (its stand-in for compute), then gets them.
//! The get should run at shm speed (at least 80% of a get of blocks already in shm) and
//! the prefetch should move blocks at least 90% as fast as a get_batch of the same
//! blocks from the cold file tier.
//!
//! One round, every phase timed in the same run:
//! 1. all blocks moved down to the file tier, its page cache dropped: `get_batch` of all
//!    of them (the cold baseline; reads do not promote, so they stay there);
//! 2. the page cache dropped again: `prefetch` of all of them, sleep for phase 1's time,
//!    `get_batch` of all of them (the prefetch's own time, start to done, is recorded by a
//!    thread waiting on its handle);
//! 3. the blocks now in shm: `get_batch` of all of them (the shm baseline).
//!
//! ```sh
//! cargo run --release --example prefetch_bench -- --blocks 1024 --rounds 9
//! ```
//!
//! Options: `--blocks N` (default 1024), `--block-kib K` (128), `--rounds R` (9),
//! `--dir PATH` for the file tier (default: the temp directory; a fresh folder is made
//! there and removed at the end), `--direct` for O_DIRECT reads, `--warm` to keep the
//! page cache (a diagnostic of the store's own cost: the reads are not cold then). The shm pool is a fresh
//! file under /dev/shm, removed at the end.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cascade::lustre::{FileTier, FileTierConfig};
use cascade::{BlockId, ByteSize, CascadeStore, Error, Result, StorePolicy, Tier};
use cascade_shm::{ShmTier, ShmTierConfig};

struct Args {
    blocks: usize,
    block_bytes: usize,
    rounds: usize,
    dir: PathBuf,
    direct: bool,
    warm: bool,
}

fn args() -> Result<Args> {
    let mut parsed = Args {
        blocks: 1024,
        block_bytes: 128 << 10,
        rounds: 9,
        dir: std::env::temp_dir(),
        direct: false,
        warm: false,
    };
    let mut it = std::env::args().skip(1);
    let bad = |what: &str| Error::config(format!("bad value for {what}"));
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| bad(&arg));
        match arg.as_str() {
            "--blocks" => parsed.blocks = value()?.parse().map_err(|_| bad("--blocks"))?,
            "--block-kib" => {
                parsed.block_bytes =
                    value()?.parse::<usize>().map_err(|_| bad("--block-kib"))? << 10
            }
            "--rounds" => parsed.rounds = value()?.parse().map_err(|_| bad("--rounds"))?,
            "--dir" => parsed.dir = PathBuf::from(value()?),
            "--direct" => parsed.direct = true,
            "--warm" => parsed.warm = true,
            other => return Err(Error::config(format!("unknown argument {other}"))),
        }
    }
    if parsed.blocks == 0 || parsed.block_bytes == 0 || parsed.rounds == 0 {
        return Err(Error::config(
            "--blocks, --block-kib and --rounds must be positive",
        ));
    }
    Ok(parsed)
}

fn pattern(n: usize, len: usize) -> Vec<u8> {
    let mut x = (n as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

struct Bench {
    warm: bool,
    store: CascadeStore,
    shm: Arc<ShmTier>,
    file: Arc<FileTier>,
    ids: Vec<BlockId>,
    outs: Vec<Vec<u8>>,
    sums: Vec<u64>,
}

impl Bench {
    /// Every block into the file tier, its pages out of the page cache.
    fn to_cold_files(&self) -> Result<()> {
        self.store.free_up(0, self.shm.capacity())?;
        if let Some(n) = self
            .ids
            .iter()
            .position(|id| self.store.tier_of(*id) != Some(1))
        {
            return Err(Error::config(format!(
                "block {n} did not move to the file tier"
            )));
        }
        self.cold()
    }

    fn cold(&self) -> Result<()> {
        if self.warm {
            return Ok(());
        }
        self.file.drop_page_cache()
    }

    /// `get_batch` of every block into the kept buffers; its time.
    fn get_all(&mut self) -> Result<Duration> {
        let mut items: Vec<(BlockId, &mut [u8])> = self
            .ids
            .iter()
            .zip(self.outs.iter_mut())
            .map(|(id, out)| (*id, out.as_mut_slice()))
            .collect();
        let started = Instant::now();
        let results = self.store.get_batch(&mut items);
        let took = started.elapsed();
        for (n, result) in results.into_iter().enumerate() {
            if result?.is_none() {
                return Err(Error::config(format!("block {n} missing")));
            }
        }
        Ok(took)
    }

    /// The buffers hold the blocks stored (checked after the timed part).
    fn check(&self) -> Result<()> {
        for (n, (out, sum)) in self.outs.iter().zip(&self.sums).enumerate() {
            if cascade::hash::checksum(out) != *sum {
                return Err(Error::config(format!(
                    "block {n} read back different bytes"
                )));
            }
        }
        Ok(())
    }

    fn scrub(&mut self) {
        for out in &mut self.outs {
            out.fill(0x5A);
        }
    }
}

fn main() -> Result<()> {
    let args = args()?;
    let bytes = (args.blocks * args.block_bytes) as u64;
    let dir = tempfile::Builder::new()
        .prefix("cascade-prefetch-bench-")
        .tempdir_in(&args.dir)
        .map_err(|e| Error::io("cannot make the bench folder", e))?;
    let pool = PathBuf::from(format!(
        "/dev/shm/cascade-prefetch-bench-{}.pool",
        std::process::id()
    ));
    let shm = Arc::new(ShmTier::open(
        "shm",
        &ShmTierConfig {
            path: Some(pool.clone()),
            capacity: ByteSize(bytes + bytes / 4),
            ..ShmTierConfig::default()
        },
    )?);
    let file = Arc::new(FileTier::open(
        "file",
        &FileTierConfig {
            capacity: ByteSize(bytes * (args.rounds as u64 + 4)),
            direct_io: args.direct,
            // Rounds leave dead copies behind; compaction stays out of the timed phases.
            background_compaction: false,
            ..FileTierConfig::new(dir.path().join("files"))
        },
    )?);
    let tiers: Vec<Arc<dyn Tier>> = vec![shm.clone(), file.clone()];
    let store = CascadeStore::new(
        tiers,
        StorePolicy {
            promote_on_read: false,
            ..StorePolicy::default()
        },
    )?
    .without_latency_metrics();

    let blocks: Vec<Vec<u8>> = (0..args.blocks)
        .map(|n| pattern(n, args.block_bytes))
        .collect();
    let ids: Vec<BlockId> = (0..args.blocks)
        .map(|n| BlockId::from_u128(0xB10C_0000_0000 | n as u128))
        .collect();
    let items: Vec<(BlockId, &[u8])> = ids
        .iter()
        .zip(&blocks)
        .map(|(id, b)| (*id, b.as_slice()))
        .collect();
    for result in store.put_batch(&items) {
        result?;
    }
    let sums = blocks.iter().map(|b| cascade::hash::checksum(b)).collect();
    drop(items);
    drop(blocks);
    let mut bench = Bench {
        warm: args.warm,
        store,
        shm,
        file,
        ids,
        outs: vec![vec![1u8; args.block_bytes]; args.blocks],
        sums,
    };
    // Warm-up, untimed: every buffer and pool page touched, the rings and threads started.
    bench.get_all()?;
    bench.to_cold_files()?;
    bench.get_all()?;

    let mib = bytes as f64 / (1 << 20) as f64;
    let gbs = |d: Duration| bytes as f64 / d.as_secs_f64() / 1e9;
    // Other work on the machine shows in every figure: the load is printed with them.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "load average before the run: {}; {} cores",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{} blocks of {} KiB ({mib:.0} MiB), {} rounds, file tier in {} ({})",
        args.blocks,
        args.block_bytes >> 10,
        args.rounds,
        dir.path().display(),
        match (args.direct, args.warm) {
            (true, _) => "O_DIRECT",
            (false, true) => "buffered, page cache kept: a diagnostic, not cold",
            (false, false) => "buffered, page cache dropped",
        }
    );
    println!(
        "| round | cold file get_batch GB/s | prefetch GB/s | get after prefetch GB/s | shm get GB/s | prefetch / cold get | get after / shm get |"
    );
    println!("|---|---|---|---|---|---|---|");
    let (mut cold_v, mut pre_v, mut after_v, mut shm_v, mut r1, mut r2) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for round in 0..args.rounds {
        // 1. Cold baseline.
        bench.to_cold_files()?;
        bench.scrub();
        let cold = bench.get_all()?;
        bench.check()?;
        // 2. Prefetch, sleep for a cold get's time, get.
        bench.cold()?;
        bench.scrub();
        let started = Instant::now();
        let handle = bench.store.prefetch(&bench.ids)?;
        let (prefetch, after) = std::thread::scope(|scope| -> Result<(Duration, Duration)> {
            let waiter = scope.spawn(|| {
                let outcomes = handle.wait();
                (started.elapsed(), outcomes)
            });
            std::thread::sleep(cold.saturating_sub(started.elapsed()));
            let after = bench.get_all()?;
            let (prefetch, outcomes) = waiter
                .join()
                .map_err(|_| Error::config("the prefetch waiter panicked"))?;
            for outcome in outcomes {
                if !outcome?.is_ready() {
                    return Err(Error::config("a block was not prefetched"));
                }
            }
            Ok((prefetch, after))
        })?;
        drop(handle);
        bench.check()?;
        // 3. Shm baseline: the prefetched blocks are there now.
        bench.scrub();
        let in_shm = bench.get_all()?;
        bench.check()?;
        if let Some(n) = bench
            .ids
            .iter()
            .position(|id| bench.store.tier_of(*id) != Some(0))
        {
            return Err(Error::config(format!(
                "block {n} is not in shm after the prefetch"
            )));
        }
        let (c, p, a, s) = (gbs(cold), gbs(prefetch), gbs(after), gbs(in_shm));
        println!(
            "| {round} | {c:.2} | {p:.2} | {a:.2} | {s:.2} | {:.2} | {:.2} |",
            p / c,
            a / s
        );
        cold_v.push(c);
        pre_v.push(p);
        after_v.push(a);
        shm_v.push(s);
        r1.push(p / c);
        r2.push(a / s);
    }
    println!(
        "| median | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
        median(&mut cold_v),
        median(&mut pre_v),
        median(&mut after_v),
        median(&mut shm_v),
        median(&mut r1),
        median(&mut r2)
    );
    let stats = bench.store.stats();
    println!(
        "store: prefetched {}, prefetch_hits {}, prefetch_wasted {}",
        stats.prefetched, stats.prefetch_hits, stats.prefetch_wasted
    );
    drop(bench);
    if let Err(e) = std::fs::remove_file(&pool) {
        eprintln!("could not remove {}: {e}", pool.display());
    }
    Ok(())
}
