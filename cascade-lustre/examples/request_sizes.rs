//! How the device sees a cold read: GB/s and the number and average size of the read
//! requests the block device served (from `/proc/diskstats`), for the file tier and for
//! one file of the same size read sequentially, buffered and with O_DIRECT.
//!
//! ```text
//! cargo run --release -p cascade-lustre --example request_sizes -- \
//!     [--dir PATH] [--blocks 4096] [--threads 2] [--lanes 8] [--reps 3]
//! ```
//!
//! The tier is written by `--threads` threads, each a share of `put_batch` calls of 64
//! blocks of 128 KiB (as `cascade-bench` does), flushed, dropped from the page cache and
//! read back the same way with `get_batch`; every byte is checked. `--lanes 1` gives the
//! layout of a tier without write lanes (every thread appends to one segment). Request
//! counts are those of the whole device holding `--dir` (other activity on it counts too);
//! Linux only.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a measurement tool: failing loudly is right

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use cascade_core::config::ByteSize;
use cascade_core::{BlockId, Tier};
use cascade_lustre::{FileTier, FileTierConfig, drop_path_cache};
use rayon::prelude::*;

const BLOCK: usize = 128 << 10;
const BATCH: usize = 64;
const CHUNK: usize = 4 << 20;

struct Args {
    dir: PathBuf,
    blocks: usize,
    threads: usize,
    lanes: usize,
    reps: usize,
}

fn parse_args() -> Args {
    let mut args = Args {
        dir: PathBuf::from("cascade-data/request-sizes"),
        blocks: 4096,
        threads: 2,
        lanes: 8,
        reps: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().expect("a value after the flag");
        match flag.as_str() {
            "--dir" => args.dir = PathBuf::from(value()),
            "--blocks" => args.blocks = value().parse().expect("--blocks N"),
            "--threads" => args.threads = value().parse().expect("--threads N"),
            "--lanes" => args.lanes = value().parse().expect("--lanes N"),
            "--reps" => args.reps = value().parse().expect("--reps N"),
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

/// Read requests completed and sectors read by the block device with this major:minor.
fn device_reads(major: u64, minor: u64) -> (u64, u64) {
    let stats = std::fs::read_to_string("/proc/diskstats").expect("/proc/diskstats");
    for line in stats.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() > 5 && f[0].parse() == Ok(major) && f[1].parse() == Ok(minor) {
            return (f[3].parse().unwrap_or(0), f[5].parse().unwrap_or(0));
        }
    }
    (0, 0)
}

/// Times `read` and prints GB/s with the device's requests meanwhile.
fn measured(what: &str, bytes: usize, dev: (u64, u64), read: impl FnOnce()) {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    let (r0, s0) = device_reads(dev.0, dev.1);
    let started = Instant::now();
    read();
    let seconds = started.elapsed().as_secs_f64();
    let (r1, s1) = device_reads(dev.0, dev.1);
    let requests = r1 - r0;
    println!(
        "{what:<34} {:>5.2} GB/s  {requests:>6} read requests, average {:>5} KiB",
        bytes as f64 / seconds / 1e9,
        (s1 - s0) / 2 / requests.max(1)
    );
}

fn id(n: usize) -> BlockId {
    BlockId::from_u128(n as u128 * 0x9E37_79B9_7F4A_7C15 + 1)
}

fn main() {
    let args = parse_args();
    std::fs::create_dir_all(&args.dir).unwrap();
    let meta = std::fs::metadata(&args.dir).unwrap();
    let dev = (
        u64::from(libc::major(meta.dev())),
        u64::from(libc::minor(meta.dev())),
    );
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .build()
        .unwrap();
    let total = args.blocks * BLOCK;
    let inputs: Vec<Vec<u8>> = (0..args.blocks)
        .map(|n| {
            (0..BLOCK)
                .map(|j| (n * 31 + j * 7 + j / 4096) as u8)
                .collect()
        })
        .collect();
    let mut outputs: Vec<Vec<u8>> = (0..args.blocks).map(|_| vec![1u8; BLOCK]).collect();
    println!(
        "{} blocks of 128 KiB, {} threads, {} write lanes, device {}:{}",
        args.blocks, args.threads, args.lanes, dev.0, dev.1
    );
    for rep in 0..args.reps {
        let dir = args.dir.join(format!("rep{rep}"));
        let mut config = FileTierConfig::new(dir.join("tier"));
        config.capacity = ByteSize::gib(64);
        config.write_lanes = args.lanes;
        let tier = FileTier::open("probe", &config).unwrap();
        let items: Vec<(BlockId, &[u8])> = inputs
            .iter()
            .enumerate()
            .map(|(n, b)| (id(n), b.as_slice()))
            .collect();
        pool.install(|| {
            items.par_chunks(BATCH).for_each(|chunk| {
                for result in tier.put_batch(chunk) {
                    result.unwrap();
                }
            })
        });
        tier.drop_page_cache().unwrap();
        measured("file tier, get_batch of 64", total, dev, || {
            pool.install(|| {
                outputs
                    .par_chunks_mut(BATCH)
                    .enumerate()
                    .for_each(|(k, chunk)| {
                        let mut requests: Vec<(BlockId, &mut [u8])> = chunk
                            .iter_mut()
                            .enumerate()
                            .map(|(j, out)| (id(k * BATCH + j), out.as_mut_slice()))
                            .collect();
                        for result in tier.get_batch(&mut requests) {
                            assert_eq!(result.unwrap(), BLOCK);
                        }
                    })
            })
        });
        assert!(
            outputs.iter().zip(&inputs).all(|(o, i)| o == i),
            "tier bytes differ"
        );
        drop(tier);

        let raw = dir.join("raw.bin");
        write_raw(&raw, &inputs);
        let mut chunk = vec![0u8; CHUNK];
        measured("one file, buffered 4 MiB reads", total, dev, || {
            let mut file = File::open(&raw).unwrap();
            while file.read(&mut chunk).unwrap() > 0 {}
        });
        drop_path_cache(&raw).unwrap();
        // O_DIRECT needs a page-aligned buffer: carve one out of a larger allocation.
        let mut backing = vec![0u8; CHUNK + 4096];
        let skip = backing.as_ptr().align_offset(4096);
        let aligned = &mut backing[skip..skip + CHUNK];
        measured("one file, O_DIRECT 4 MiB reads", total, dev, || {
            let mut file = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECT)
                .open(&raw)
                .unwrap();
            while file.read(aligned).unwrap() > 0 {}
        });
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// One file holding the blocks back to back, synced and dropped from the page cache.
fn write_raw(path: &Path, inputs: &[Vec<u8>]) {
    let mut file = File::create(path).unwrap();
    for block in inputs {
        file.write_all(block).unwrap();
    }
    file.sync_all().unwrap();
    drop_path_cache(path).unwrap();
}
