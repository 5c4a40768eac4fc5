//! The Redis plugin's put/get throughput for 128 KiB blocks, through the plugin boundary,
//! against `redis-benchmark -d 131072` on the same private server in the same run.
//!
//! Run: `cargo bench -p cascade-redis --bench redis` (needs redis-server and
//! redis-benchmark; prints a line and measures nothing when they are absent).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::process::Command;
use std::time::{Duration, Instant};

use cascade_core::plugin::{PluginLibrary, PluginTier};
use cascade_core::{BlockId, Tier};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const BLOCK: usize = 128 << 10;
const IDS: u64 = 256;
const THREADS: usize = 16;

/// Runs redis-benchmark and prints its SET and GET rates as GB/s of payload.
fn redis_benchmark(port: u16, clients: usize) {
    let output = Command::new("redis-benchmark")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            "set,get",
            "-d",
            "131072",
        ])
        .args(["-n", "20000", "-r", "256", "-q", "-c", &clients.to_string()])
        .output();
    let Ok(output) = output else {
        println!("redis-benchmark not installed; baseline skipped");
        return;
    };
    for line in String::from_utf8_lossy(&output.stdout).split(['\n', '\r']) {
        let Some((op, rest)) = line.split_once(": ") else {
            continue;
        };
        let Some(rps) = rest
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<f64>().ok())
        else {
            continue;
        };
        if rest.contains("requests per second") {
            let gbps = rps * BLOCK as f64 / 1e9;
            println!(
                "redis-benchmark -d 131072 -c {clients} {op}: {rps:.0} requests/s = {gbps:.2} GB/s"
            );
        }
    }
}

fn ids(n: u64) -> BlockId {
    BlockId::from_u128(u128::from(n % IDS) + 1)
}

/// `iters` calls of `op` spread over THREADS threads, each with its own buffer.
fn threaded(iters: u64, buffers: &mut [Vec<u8>], op: &(dyn Fn(u64, &mut [u8]) + Sync)) -> Duration {
    let start = Instant::now();
    std::thread::scope(|scope| {
        for (t, buffer) in buffers.iter_mut().enumerate() {
            scope.spawn(move || {
                let mut n = t as u64;
                while n < iters {
                    op(n, buffer);
                    n += THREADS as u64;
                }
            });
        }
    });
    start.elapsed()
}

fn redis(c: &mut Criterion) {
    let Some(server) = common::RedisServer::start() else {
        return;
    };
    let path = cascade_redis::built_library().expect("cargo bench builds the cdylib");
    let tier: PluginTier = PluginLibrary::load(path)
        .unwrap()
        .create(
            "redis",
            &format!(
                "url = \"{}\"\ncapacity = \"1 GiB\"\npool_size = {THREADS}\n",
                server.url()
            ),
        )
        .unwrap();
    tier.clear().unwrap();

    redis_benchmark(server.port, 50);
    redis_benchmark(server.port, THREADS);
    redis::cmd("FLUSHALL")
        .query::<()>(
            &mut redis::Client::open(server.url())
                .unwrap()
                .get_connection()
                .unwrap(),
        )
        .unwrap();

    let data = vec![0xA7u8; BLOCK];
    for n in 0..IDS {
        tier.put(ids(n), &data).unwrap();
    }
    let mut out = vec![0u8; BLOCK];
    let mut buffers: Vec<Vec<u8>> = (0..THREADS).map(|_| vec![0u8; BLOCK]).collect();

    let mut group = c.benchmark_group("redis_128KiB");
    group.throughput(Throughput::Bytes(BLOCK as u64));
    group.bench_function("put_1_thread", |b| {
        let mut n = 0;
        b.iter(|| {
            n += 1;
            tier.put(ids(n), black_box(&data)).unwrap()
        })
    });
    group.bench_function("get_1_thread", |b| {
        let mut n = 0;
        b.iter(|| {
            n += 1;
            tier.get(ids(n), black_box(&mut out)).unwrap()
        })
    });
    group.bench_function(format!("put_{THREADS}_threads"), |b| {
        b.iter_custom(|iters| {
            threaded(iters, &mut buffers, &|n, _| {
                tier.put(ids(n), &data).unwrap()
            })
        })
    });
    group.bench_function(format!("get_{THREADS}_threads"), |b| {
        b.iter_custom(|iters| {
            threaded(iters, &mut buffers, &|n, buffer| {
                assert_eq!(tier.get(ids(n), buffer).unwrap(), BLOCK);
            })
        })
    });
    group.finish();
    tier.clear().unwrap();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20);
    targets = redis
}
criterion_main!(benches);
