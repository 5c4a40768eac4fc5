//! Write and cold-read throughput of the file tier against two baselines measured in the
//! same run, and the time to reopen a directory of many blocks.
//!
//! ```text
//! cargo run --release -p cascade-lustre --example file_tier_bench -- \
//!     [--dir PATH] [--blocks 2000] [--block-kib 128] [--reps 3] [--reopen-blocks 100000] [--direct]
//!     [--engines] [--fio PATH] [--batch 64]
//! ```
//!
//! With `--engines`, it compares (in batches of `--batch` blocks) the I/O engines instead (see [`engines`]): io_uring
//! against psync, buffered and O_DIRECT, 1 and 2 threads, with fio's io_uring engine
//! reading the same segment files as the limit.
//!
//! Per repetition, each layout writes the same blocks into a fresh directory (this VM's
//! ext4 reuses freed inodes only after seconds, so nothing is deleted until the end):
//! - `file tier`: `put_batch` in batches of 64, then a cold `get_batch` after
//!   [`FileTier::drop_page_cache`];
//! - `file per block` (the layout of LMCache's local disk backend): one file per block,
//!   read back on the same 2 threads (rayon) after dropping each file's cached pages;
//! - `raw sequential`: one file of the same total size read start to end in 4 MiB reads,
//!   the ceiling of the device.
//!
//! Writes are timed into the page cache (no fsync) for every layout alike. Medians of the
//! repetitions are printed, with the ratios the issue's goals are stated in.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: failing loudly is right

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use cascade_core::config::ByteSize;
use cascade_core::{BlockId, Tier};
use cascade_lustre::{FileTier, FileTierConfig, drop_path_cache};
use rand::{RngCore, SeedableRng, rngs::StdRng};
use rayon::prelude::*;

mod engines;

pub(crate) struct Args {
    pub(crate) dir: PathBuf,
    pub(crate) blocks: usize,
    pub(crate) block_size: usize,
    pub(crate) reps: usize,
    reopen_blocks: usize,
    direct: bool,
    only_tier: bool,
    engines: bool,
    pub(crate) fio: String,
    pub(crate) batch: usize,
}

fn parse_args() -> Args {
    let mut args = Args {
        dir: std::env::temp_dir().join("cascade-file-tier-bench"),
        blocks: 2000,
        block_size: 128 << 10,
        reps: 3,
        reopen_blocks: 100_000,
        direct: false,
        only_tier: false,
        engines: false,
        fio: "fio".into(),
        batch: 64,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().expect("a value after the flag");
        match flag.as_str() {
            "--dir" => args.dir = PathBuf::from(value()),
            "--blocks" => args.blocks = value().parse().expect("--blocks N"),
            "--block-kib" => {
                args.block_size = value().parse::<usize>().expect("--block-kib N") << 10
            }
            "--reps" => args.reps = value().parse().expect("--reps N"),
            "--reopen-blocks" => args.reopen_blocks = value().parse().expect("--reopen-blocks N"),
            "--direct" => args.direct = true,
            "--only-tier" => args.only_tier = true,
            "--engines" => args.engines = true,
            "--fio" => args.fio = value(),
            "--batch" => args.batch = value().parse().expect("--batch N"),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

/// Writes back every dirty page first, so that one phase's writeback does not throttle
/// the next phase's writes.
pub(crate) fn settle() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

/// Run before every timed phase, identically for every layout: writes back dirty pages,
/// then touches and frees as much memory as the phase will put in the page cache. This
/// VM hands memory that stays free for about 2 s back to the host, and the first touch
/// of such a page costs ten times more; the pages freed here are fresh for the phase.
pub(crate) fn prepare(bytes: usize) {
    settle();
    let mut scratch = vec![0u8; bytes];
    for page in scratch.chunks_mut(4096) {
        page[0] = 1;
    }
    std::hint::black_box(&scratch);
}

pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

pub(crate) fn gbps(bytes: usize, seconds: f64) -> f64 {
    bytes as f64 / seconds / 1e9
}

pub(crate) fn id(n: usize) -> BlockId {
    BlockId::from_u128(n as u128 * 0x9E37_79B9_7F4A_7C15 + 1)
}

pub(crate) fn tier_config(dir: &Path, direct: bool) -> FileTierConfig {
    let mut config = FileTierConfig::new(dir);
    config.capacity = ByteSize::gib(64);
    config.direct_io = direct;
    config.writer_id = Some("bench".into());
    config
}

struct Figures {
    tier_write: Vec<f64>,
    tier_cold: Vec<f64>,
    files_write: Vec<f64>,
    files_cold: Vec<f64>,
    raw_write: Vec<f64>,
    raw_cold: Vec<f64>,
    raw_direct_cold: Vec<f64>,
}

fn main() {
    let args = parse_args();
    std::fs::create_dir_all(&args.dir).unwrap();
    let total = args.blocks * args.block_size;
    println!(
        "{} blocks of {} KiB ({:.2} GB), {} repetitions, direct_io = {}, in {}",
        args.blocks,
        args.block_size >> 10,
        total as f64 / 1e9,
        args.reps,
        args.direct,
        args.dir.display()
    );
    // Every buffer is allocated and touched once, before anything is timed.
    let mut rng = StdRng::seed_from_u64(1);
    let inputs: Vec<Vec<u8>> = (0..args.blocks)
        .map(|_| {
            let mut block = vec![0u8; args.block_size];
            rng.fill_bytes(&mut block);
            block
        })
        .collect();
    let mut outputs: Vec<Vec<u8>> = (0..args.blocks)
        .map(|_| vec![1u8; args.block_size])
        .collect();
    if args.engines {
        engines::run(&args, &inputs, &mut outputs);
        std::fs::remove_dir_all(&args.dir).unwrap();
        return;
    }
    let mut chunk = vec![0u8; 4 << 20];
    // O_DIRECT needs a page-aligned buffer: carve one out of a larger allocation.
    let mut direct_raw = vec![0u8; (4 << 20) + 4096];
    let skip = direct_raw.as_ptr().align_offset(4096);
    let direct_chunk = &mut direct_raw[skip..skip + (4 << 20)];

    let mut figures = Figures {
        tier_write: vec![],
        tier_cold: vec![],
        files_write: vec![],
        files_cold: vec![],
        raw_write: vec![],
        raw_cold: vec![],
        raw_direct_cold: vec![],
    };
    for rep in 0..args.reps {
        let rep_dir = args.dir.join(format!("rep{rep}"));
        std::fs::create_dir_all(&rep_dir).unwrap();

        // The layouts take turns at going first, so that the page-cache state one phase
        // leaves behind does not always favour the same layout.
        let phases: Vec<usize> = if args.only_tier {
            vec![0]
        } else {
            (0..3).map(|k| (k + rep) % 3).collect()
        };
        for phase in phases {
            match phase {
                0 => {
                    // The file tier.
                    let tier =
                        FileTier::open("bench", &tier_config(&rep_dir.join("tier"), args.direct))
                            .unwrap();
                    let items: Vec<(BlockId, &[u8])> = inputs
                        .iter()
                        .enumerate()
                        .map(|(n, b)| (id(n), b.as_slice()))
                        .collect();
                    prepare(total);
                    let started = Instant::now();
                    for batch in items.chunks(64) {
                        for result in tier.put_batch(batch) {
                            result.unwrap();
                        }
                    }
                    figures
                        .tier_write
                        .push(gbps(total, started.elapsed().as_secs_f64()));
                    tier.drop_page_cache().unwrap();
                    prepare(total);
                    let started = Instant::now();
                    let mut next = 0;
                    for batch in outputs.chunks_mut(64) {
                        let mut requests: Vec<(BlockId, &mut [u8])> = batch
                            .iter_mut()
                            .enumerate()
                            .map(|(k, out)| (id(next + k), out.as_mut_slice()))
                            .collect();
                        next += requests.len();
                        for result in tier.get_batch(&mut requests) {
                            assert_eq!(result.unwrap(), args.block_size);
                        }
                    }
                    figures
                        .tier_cold
                        .push(gbps(total, started.elapsed().as_secs_f64()));
                    assert!(
                        outputs.iter().zip(&inputs).all(|(o, i)| o == i),
                        "tier bytes differ"
                    );
                    drop(tier);
                }
                1 => {
                    // One file per block, in a fresh directory.
                    let files_dir = rep_dir.join("files");
                    std::fs::create_dir_all(&files_dir).unwrap();
                    let paths: Vec<PathBuf> = (0..args.blocks)
                        .map(|n| files_dir.join(format!("{}.kv", id(n))))
                        .collect();
                    prepare(total);
                    let started = Instant::now();
                    paths.par_iter().zip(&inputs).for_each(|(path, block)| {
                        File::create(path).unwrap().write_all(block).unwrap();
                    });
                    figures
                        .files_write
                        .push(gbps(total, started.elapsed().as_secs_f64()));
                    paths
                        .par_iter()
                        .for_each(|path| drop_path_cache(path).unwrap());
                    prepare(total);
                    outputs.iter_mut().for_each(|o| o.fill(1));
                    let started = Instant::now();
                    paths
                        .par_iter()
                        .zip(outputs.par_iter_mut())
                        .for_each(|(path, out)| {
                            File::open(path).unwrap().read_exact(out).unwrap();
                        });
                    figures
                        .files_cold
                        .push(gbps(total, started.elapsed().as_secs_f64()));
                    assert!(
                        outputs.iter().zip(&inputs).all(|(o, i)| o == i),
                        "file bytes differ"
                    );
                }
                _ => {
                    // One file, written and read sequentially.
                    let raw = rep_dir.join("raw.bin");
                    prepare(total);
                    let started = Instant::now();
                    {
                        let mut file = File::create(&raw).unwrap();
                        for block in &inputs {
                            file.write_all(block).unwrap();
                        }
                    }
                    figures
                        .raw_write
                        .push(gbps(total, started.elapsed().as_secs_f64()));
                    drop_path_cache(&raw).unwrap();
                    prepare(total);
                    let started = Instant::now();
                    let mut file = File::open(&raw).unwrap();
                    let mut read = 0;
                    loop {
                        let n = file.read(&mut chunk).unwrap();
                        if n == 0 {
                            break;
                        }
                        read += n;
                    }
                    figures
                        .raw_cold
                        .push(gbps(read, started.elapsed().as_secs_f64()));
                    assert_eq!(read, total);
                    // The same file again with O_DIRECT: the device's ceiling without page-cache costs.
                    let started = Instant::now();
                    let mut file = std::fs::OpenOptions::new()
                        .read(true)
                        .custom_flags(libc::O_DIRECT)
                        .open(&raw)
                        .unwrap();
                    let mut read = 0;
                    loop {
                        let n = file.read(direct_chunk).unwrap();
                        if n == 0 {
                            break;
                        }
                        read += n;
                    }
                    figures
                        .raw_direct_cold
                        .push(gbps(read, started.elapsed().as_secs_f64()));
                    assert_eq!(read, total);
                }
            }
        }
        if args.only_tier {
            println!(
                "rep {rep}: tier {:.2}/{:.2} (write/cold read GB/s)",
                figures.tier_write[rep], figures.tier_cold[rep]
            );
            continue;
        }
        println!(
            "rep {rep}: tier {:.2}/{:.2}  file-per-block {:.2}/{:.2}  raw {:.2}/{:.2}, O_DIRECT read {:.2}  (write/cold read GB/s)",
            figures.tier_write[rep],
            figures.tier_cold[rep],
            figures.files_write[rep],
            figures.files_cold[rep],
            figures.raw_write[rep],
            figures.raw_cold[rep],
            figures.raw_direct_cold[rep]
        );
    }

    if args.only_tier {
        return;
    }
    let tier_cold = median(figures.tier_cold.clone());
    let files_cold = median(figures.files_cold.clone());
    let raw_cold = median(figures.raw_cold.clone());
    let raw_direct = median(figures.raw_direct_cold.clone());
    println!();
    println!("| layout | write GB/s | cold read GB/s |");
    println!("|---|---|---|");
    println!(
        "| file tier (segments) | {:.2} | {:.2} |",
        median(figures.tier_write),
        tier_cold
    );
    println!(
        "| one file per block | {:.2} | {:.2} |",
        median(figures.files_write),
        files_cold
    );
    println!(
        "| raw sequential, one file | {:.2} | {:.2} |",
        median(figures.raw_write),
        raw_cold
    );
    println!("| raw sequential, one file, O_DIRECT reads | - | {raw_direct:.2} |");
    println!();
    let same_mode = if args.direct {
        &figures.raw_direct_cold
    } else {
        &figures.raw_cold
    };
    let raw_same_mode = median(same_mode.clone());
    let per_rep = |base: &[f64]| {
        median(
            figures
                .tier_cold
                .iter()
                .zip(base)
                .map(|(t, b)| t / b)
                .collect(),
        )
    };
    println!(
        "medians of the per-repetition ratios: {:.2}x one file per block, {:.0}% of raw sequential ({})",
        per_rep(&figures.files_cold),
        100.0 * per_rep(same_mode),
        if args.direct { "O_DIRECT" } else { "buffered" }
    );

    println!(
        "cold read: {:.2}x one file per block (goal >= 1.5), {:.0}% of raw sequential with the same I/O mode ({}; goal >= 80%)",
        tier_cold / files_cold,
        100.0 * tier_cold / raw_same_mode,
        if args.direct { "O_DIRECT" } else { "buffered" }
    );

    if args.reopen_blocks > 0 {
        reopen(&args);
    }
    std::fs::remove_dir_all(&args.dir).unwrap();
}

/// Reopen time of a directory of `reopen_blocks` small blocks (one 4 KiB page each).
fn reopen(args: &Args) {
    let dir = args.dir.join("reopen");
    let len = 4096 - 64;
    let block = vec![7u8; len];
    {
        let tier = FileTier::open("bench", &tier_config(&dir, false)).unwrap();
        let ids: Vec<BlockId> = (0..args.reopen_blocks).map(id).collect();
        for batch in ids.chunks(1024) {
            let items: Vec<(BlockId, &[u8])> =
                batch.iter().map(|id| (*id, block.as_slice())).collect();
            for result in tier.put_batch(&items) {
                result.unwrap();
            }
        }
        tier.flush().unwrap();
    }
    let mut warm = Vec::new();
    let mut cold = Vec::new();
    let mut segments = 0;
    for round in 0..6 {
        let is_cold = round % 2 == 0;
        if is_cold {
            for entry in std::fs::read_dir(&dir).unwrap() {
                drop_path_cache(&entry.unwrap().path()).unwrap();
            }
        }
        let started = Instant::now();
        let tier = FileTier::open("bench", &tier_config(&dir, false)).unwrap();
        let seconds = started.elapsed().as_secs_f64();
        assert_eq!(tier.ids().len(), args.reopen_blocks);
        segments = tier.segment_paths().len();
        if is_cold {
            cold.push(seconds)
        } else {
            warm.push(seconds)
        }
    }
    println!();
    println!(
        "reopen of {} blocks of {} bytes in {} segment files: {:.0} ms with the files' pages cached, {:.0} ms cold (medians of 3; goal < 1000 ms)",
        args.reopen_blocks,
        len,
        segments,
        median(warm) * 1e3,
        median(cold) * 1e3
    );
}
