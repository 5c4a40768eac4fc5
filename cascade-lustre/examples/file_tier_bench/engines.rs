//! `--engines`: the io_uring engine against psync, and fio as the limit.
//!
//! For buffered and O_DIRECT I/O, with 1 and 2 threads, each engine writes the blocks
//! into a fresh tier (`put_batch` of `--batch` blocks, default 64, each thread its share, into its own write lane)
//! and reads them back cold (`get_batch` of as many, after [`FileTier::drop_page_cache`]).
//! Right after the io_uring engine's turn, fio's io_uring engine reads the same segment
//! files sequentially (one job per thread, each over its share of the files, `--invalidate=1`,
//! the same `--direct`), at a few request sizes and depths; the fastest is the limit.
//! The engines take turns at going first. The threads are a persistent pool whose rings
//! and staging buffers are warmed before anything is timed, as an engine's threads would be.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

use cascade_core::{BlockId, Tier};
use cascade_lustre::{EngineInUse, FileTier, IoEngine};

use crate::{Args, gbps, id, median, prepare, tier_config};

/// fio request sizes and queue depths tried; the fastest counts as the limit.
const FIO_SHAPES: [(&str, u32); 3] = [("128k", 64), ("1m", 16), ("4m", 4)];

#[derive(Default)]
struct Series {
    psync_write: Vec<f64>,
    psync_read: Vec<f64>,
    uring_write: Vec<f64>,
    uring_read: Vec<f64>,
    fio: Vec<f64>,
}

/// Runs the comparison and prints its table.
pub(crate) fn run(args: &Args, inputs: &[Vec<u8>], outputs: &mut [Vec<u8>]) {
    if let Err(why) = cascade_lustre::io_uring_available() {
        panic!("io_uring is not available here ({why}): nothing to compare");
    }
    let fio_version = Command::new(&args.fio)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match &fio_version {
        Some(version) => println!("limit: {version}, io_uring engine, shapes {FIO_SHAPES:?}"),
        None => println!("fio not found ({}): no limit column", args.fio),
    }
    let pools: Vec<rayon::ThreadPool> = [1, 2]
        .into_iter()
        .map(|threads| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            warm(&pool, &args.dir.join(format!("warm{threads}")));
            pool
        })
        .collect();
    let configs: Vec<(bool, usize)> = [false, true]
        .into_iter()
        .flat_map(|direct| [1, 2].map(|threads| (direct, threads)))
        .collect();
    let mut series: Vec<Series> = configs.iter().map(|_| Series::default()).collect();
    for rep in 0..args.reps {
        for (c, &(direct, threads)) in configs.iter().enumerate() {
            let order = if (rep + c) % 2 == 0 {
                [IoEngine::Psync, IoEngine::IoUring]
            } else {
                [IoEngine::IoUring, IoEngine::Psync]
            };
            for engine in order {
                let dir = args.dir.join(format!("engines-{rep}-{c}-{engine:?}"));
                let pool = &pools[threads - 1];
                let (write, read, segments) =
                    measure(pool, &dir, engine, direct, args.batch, inputs, outputs);
                let s = &mut series[c];
                if engine == IoEngine::IoUring {
                    s.uring_write.push(write);
                    s.uring_read.push(read);
                    if fio_version.is_some() {
                        let limit = FIO_SHAPES
                            .iter()
                            .map(|&(bs, depth)| fio(args, &segments, threads, direct, bs, depth))
                            .fold(0.0, f64::max);
                        s.fio.push(limit);
                    }
                } else {
                    s.psync_write.push(write);
                    s.psync_read.push(read);
                }
                std::fs::remove_dir_all(&dir).unwrap();
            }
            let s = &series[c];
            println!(
                "rep {rep} {} x{threads}: write psync {:.2} io_uring {:.2}, cold read psync {:.2} io_uring {:.2}, fio {} GB/s",
                mode(direct),
                s.psync_write[rep],
                s.uring_write[rep],
                s.psync_read[rep],
                s.uring_read[rep],
                s.fio.get(rep).map_or("-".into(), |f| format!("{f:.2}"))
            );
        }
    }
    println!();
    println!(
        "{} blocks of {} KiB, batches of {}, medians of {} repetitions (GB/s of block bytes; ratios are medians of the per-repetition ratios)",
        args.blocks,
        args.block_size >> 10,
        args.batch,
        args.reps
    );
    println!();
    println!(
        "| I/O | threads | write psync | write io_uring | io_uring / psync | cold read psync | cold read io_uring | io_uring / psync | fio io_uring | io_uring / fio |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (&(direct, threads), s) in configs.iter().zip(&series) {
        let ratio = |a: &[f64], b: &[f64]| median(a.iter().zip(b).map(|(x, y)| x / y).collect());
        let (fio_cell, fio_ratio) = if s.fio.is_empty() {
            ("-".to_string(), "-".to_string())
        } else {
            (
                format!("{:.2}", median(s.fio.clone())),
                format!("{:.0}%", 100.0 * ratio(&s.uring_read, &s.fio)),
            )
        };
        println!(
            "| {} | {threads} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {fio_cell} | {fio_ratio} |",
            mode(direct),
            median(s.psync_write.clone()),
            median(s.uring_write.clone()),
            ratio(&s.uring_write, &s.psync_write),
            median(s.psync_read.clone()),
            median(s.uring_read.clone()),
            ratio(&s.uring_read, &s.psync_read),
        );
    }
}

fn mode(direct: bool) -> &'static str {
    if direct { "O_DIRECT" } else { "buffered" }
}

/// Gives each pool thread its ring and staging buffer before anything is timed.
fn warm(pool: &rayon::ThreadPool, dir: &Path) {
    for direct in [false, true] {
        let mut config = tier_config(&dir.join(mode(direct)), direct);
        config.io_engine = IoEngine::IoUring;
        let tier = FileTier::open("warm", &config).unwrap();
        pool.broadcast(|ctx| {
            let block = vec![ctx.index() as u8; 128 << 10];
            let key = BlockId::from_u128(ctx.index() as u128 + 1);
            tier.put_batch(&[(key, &block)])[0].as_ref().unwrap();
            let mut out = vec![0u8; block.len()];
            tier.get_batch(&mut [(key, &mut out)])[0].as_ref().unwrap();
            assert!(out == block);
        });
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// Write and cold-read GB/s of one engine, and the segment files it wrote.
fn measure(
    pool: &rayon::ThreadPool,
    dir: &Path,
    engine: IoEngine,
    direct: bool,
    batch: usize,
    inputs: &[Vec<u8>],
    outputs: &mut [Vec<u8>],
) -> (f64, f64, Vec<PathBuf>) {
    let threads = pool.current_num_threads();
    let mut config = tier_config(dir, direct);
    config.io_engine = engine;
    let tier = FileTier::open("bench", &config).unwrap();
    let want = match engine {
        IoEngine::IoUring => EngineInUse::IoUring,
        _ => EngineInUse::Psync,
    };
    assert_eq!(tier.io_engine(), want);
    let total: usize = inputs.iter().map(Vec::len).sum();
    let share = inputs.len().div_ceil(threads);
    let items: Vec<(BlockId, &[u8])> = inputs
        .iter()
        .enumerate()
        .map(|(n, b)| (id(n), b.as_slice()))
        .collect();
    prepare(total);
    let started = Instant::now();
    pool.broadcast(|ctx| {
        for batch in items
            .chunks(share)
            .nth(ctx.index())
            .unwrap_or(&[])
            .chunks(64)
        {
            for result in tier.put_batch(batch) {
                result.unwrap();
            }
        }
    });
    let write = gbps(total, started.elapsed().as_secs_f64());
    tier.drop_page_cache().unwrap();
    let parts: Vec<Mutex<&mut [Vec<u8>]>> = outputs.chunks_mut(share).map(Mutex::new).collect();
    prepare(total);
    let started = Instant::now();
    pool.broadcast(|ctx| {
        let Some(part) = parts.get(ctx.index()) else {
            return;
        };
        let mut part = part.lock().unwrap();
        let first = ctx.index() * share;
        for (b, chunk) in part.chunks_mut(batch).enumerate() {
            let mut requests: Vec<(BlockId, &mut [u8])> = chunk
                .iter_mut()
                .enumerate()
                .map(|(k, out)| (id(first + b * batch + k), out.as_mut_slice()))
                .collect();
            for (result, (_, out)) in tier.get_batch(&mut requests).into_iter().zip(&requests) {
                assert_eq!(result.unwrap(), out.len());
            }
        }
    });
    let read = gbps(total, started.elapsed().as_secs_f64());
    drop(parts);
    assert!(
        outputs.iter().zip(inputs).all(|(o, i)| o == i),
        "{engine:?}: bytes differ"
    );
    outputs.iter_mut().for_each(|o| o.fill(1));
    let segments = tier.segment_paths();
    tier.flush().unwrap();
    drop(tier);
    (write, read, segments)
}

/// GB/s of fio's io_uring engine reading `segments` sequentially, split between
/// `threads` jobs by size.
fn fio(
    args: &Args,
    segments: &[PathBuf],
    threads: usize,
    direct: bool,
    bs: &str,
    depth: u32,
) -> f64 {
    let mut shares: Vec<(u64, Vec<String>)> = vec![(0, Vec::new()); threads];
    let mut files: Vec<(u64, &PathBuf)> = segments
        .iter()
        .map(|p| (std::fs::metadata(p).map_or(0, |m| m.len()), p))
        .filter(|(len, _)| *len > 0)
        .collect();
    files.sort_by_key(|f| std::cmp::Reverse(f.0));
    for (len, path) in files {
        if let Some(share) = shares.iter_mut().min_by_key(|s| s.0) {
            share.0 += len;
            share.1.push(path.display().to_string());
        }
    }
    crate::settle();
    let mut command = Command::new(&args.fio);
    command.args([
        "--output-format=json",
        "--ioengine=io_uring",
        "--rw=read",
        "--invalidate=1",
        &format!("--bs={bs}"),
        &format!("--iodepth={depth}"),
        &format!("--direct={}", u8::from(direct)),
    ]);
    for (k, (_, files)) in shares.iter().enumerate().filter(|(_, s)| !s.1.is_empty()) {
        command.args([
            format!("--name=share{k}"),
            format!("--filename={}", files.join(":")),
            "--file_service_type=sequential".into(),
        ]);
    }
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "fio failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let jobs = report["jobs"].as_array().unwrap();
    let bytes: u64 = jobs
        .iter()
        .map(|j| j["read"]["io_bytes"].as_u64().unwrap())
        .sum();
    let millis = jobs
        .iter()
        .map(|j| j["read"]["runtime"].as_u64().unwrap())
        .max()
        .unwrap();
    bytes as f64 / (millis.max(1) as f64 / 1e3) / 1e9
}
