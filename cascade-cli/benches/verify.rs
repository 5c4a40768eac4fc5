//! `cascade verify` over a file tier of 1 GiB against the disk's cold sequential read
//! rate, measured in the same run, in alternating rounds.
//!
//! `cargo bench -p cascade-cli --bench verify` (`CASCADE_VERIFY_BENCH_ROUNDS=9` for more rounds)
//!
//! Each round drops the page cache of the files involved (posix_fadvise DONTNEED after
//! an fsync), then times (a) reading a plain 1 GiB file from start to end in 8 MiB reads
//! (advised POSIX_FADV_SEQUENTIAL, as verify advises its segment files)
//! and (b) running the `cascade verify --json` binary on the deployment (wall time of
//! the whole command: process start, opening the tier from its segment footers, reading
//! and checking every block). `CASCADE_VERIFY_BENCH_DIR` says where the data goes
//! (default `target/verify-bench`, on the disk the repository is on); it is removed at
//! the end. `CASCADE_VERIFY_BENCH_MIB` sets the size (default 1024).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use cascade::{BlockId, Cascade};

const BLOCK: usize = 128 << 10;
/// Rounds (`CASCADE_VERIFY_BENCH_ROUNDS`, default 3).
const ROUNDS: usize = 3;

fn drop_cache(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            cascade::lustre::drop_path_cache(&path).unwrap();
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` lists benchmarks: there is nothing to list here.
    }
    let mib: usize = std::env::var("CASCADE_VERIFY_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let root = std::env::var_os("CASCADE_VERIFY_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/verify-bench")
        });
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let tier_dir = root.join("kv");
    let plain_dir = root.join("plain");
    std::fs::create_dir_all(&plain_dir).unwrap();
    let config = root.join("cascade.toml");
    std::fs::write(
        &config,
        format!(
            "[[tiers]]\nkind = \"file\"\npath = {:?}\ncapacity = \"{} MiB\"\n",
            tier_dir.display().to_string(),
            mib + mib / 4 + 64
        ),
    )
    .unwrap();
    let blocks = mib * (1 << 20) / BLOCK;
    let data: Vec<u8> = (0..8 << 20)
        .map(|i: usize| (i as u8) ^ (i >> 13) as u8)
        .collect();
    {
        let store = Cascade::open_toml_file(&config).unwrap();
        let batch = 64;
        for start in (0..blocks).step_by(batch) {
            let items: Vec<(BlockId, &[u8])> = (start..(start + batch).min(blocks))
                .map(|n| {
                    let at = (n * 4096) % (data.len() - BLOCK);
                    (BlockId::from_u128(n as u128 + 1), &data[at..at + BLOCK])
                })
                .collect();
            for r in store.put_batch(&items) {
                r.unwrap();
            }
        }
        store.flush().unwrap();
    }
    let plain = plain_dir.join("sequential");
    {
        let mut file = std::fs::File::create(&plain).unwrap();
        for _ in 0..mib / 8 {
            file.write_all(&data).unwrap();
        }
        file.sync_all().unwrap();
    }
    println!(
        "verify bench: {mib} MiB file tier ({blocks} blocks of 128 KiB) in {}",
        root.display()
    );
    let mut sequential = Vec::new();
    let mut verify_wall = Vec::new();
    let mut verify_own = Vec::new();
    let mut buf = vec![0u8; 8 << 20];
    let rounds: usize = std::env::var("CASCADE_VERIFY_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ROUNDS);
    let mut ratios = Vec::new();
    for round in 0..rounds {
        let mut read_plain = || {
            drop_cache(&plain_dir);
            let started = Instant::now();
            let mut file = std::fs::File::open(&plain).unwrap();
            // The same readahead hint verify gives its segment files.
            cascade::lustre::advise_sequential(&file);
            let mut total = 0u64;
            loop {
                let n = file.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            total as f64 / started.elapsed().as_secs_f64() / 1e9
        };
        let run_verify = || {
            drop_cache(&tier_dir);
            let started = Instant::now();
            let output = Command::new(env!("CARGO_BIN_EXE_cascade"))
                .args(["verify", "--json", "--config"])
                .arg(&config)
                .output()
                .unwrap();
            let wall = started.elapsed().as_secs_f64();
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
            let tier = &report["tiers"][0];
            assert_eq!(tier["blocks"].as_u64(), Some(blocks as u64));
            assert_eq!(tier["damaged"].as_array().map(Vec::len), Some(0));
            let bytes = tier["read_bytes"].as_f64().unwrap();
            (
                bytes / wall / 1e9,
                bytes / tier["seconds"].as_f64().unwrap() / 1e9,
            )
        };
        // Alternate which goes first, so neither always follows the other's I/O.
        let (seq, (wall, own)) = if round % 2 == 0 {
            let s = read_plain();
            (s, run_verify())
        } else {
            let v = run_verify();
            (read_plain(), v)
        };
        println!(
            "  round {round}: cold sequential read {seq:.2} GB/s; cascade verify {wall:.2} GB/s (whole command), {own:.2} GB/s (its reading and checking); ratio {:.0}%",
            100.0 * wall / seq
        );
        ratios.push(wall / seq);
        sequential.push(seq);
        verify_wall.push(wall);
        verify_own.push(own);
    }
    let (seq, wall, own) = (median(sequential), median(verify_wall), median(verify_own));
    println!(
        "medians: cold sequential read {seq:.2} GB/s; cascade verify {wall:.2} GB/s whole command = {:.0}% of it ({own:.2} GB/s = {:.0}% for the check itself)",
        100.0 * wall / seq,
        100.0 * own / seq
    );
    // Paired within a round, the ratio is steadier than the medians on a busy machine.
    println!(
        "median of the per-round ratios (whole command / cold sequential read): {:.0}%",
        100.0 * median(ratios)
    );
    let _ = std::fs::remove_dir_all(&root);
}
