//! Per-call cost of the plugin boundary: Cascade's memory tier called directly, the same
//! tier loaded from this package's cdylib through the C ABI, the same vtable linked into
//! the bench (the ABI without the shared library), and the C example plugin.
//! Small blocks, so the call itself (not the copy) dominates.
//!
//! Run: `cargo bench -p cascade-plugin-memory --bench boundary`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use cascade_core::plugin::PluginLibrary;
use cascade_core::{BlockId, MemoryTier, MemoryTierConfig, Tier, config::ByteSize};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn tiers() -> Vec<(&'static str, Arc<dyn Tier>)> {
    let direct = MemoryTier::open(
        "direct",
        &MemoryTierConfig {
            capacity: ByteSize::mib(64),
            prefault: true,
        },
    )
    .unwrap();
    let rust_path = cascade_plugin_memory::built_library().expect("cargo bench builds the cdylib");
    let rust_plugin = PluginLibrary::load(rust_path)
        .unwrap()
        .create("plugin-rs", "capacity = \"64 MiB\"\nprefault = true")
        .unwrap();
    // SAFETY: the entry is the one `export_tier!` generated in this package, linked in.
    let in_process = unsafe {
        PluginLibrary::from_static_entry(cascade_plugin_memory::cascade_plugin_entry, "linked")
    }
    .unwrap()
    .create("abi-in-process", "capacity = \"64 MiB\"\nprefault = true")
    .unwrap();
    let c_plugin = PluginLibrary::load(cascade_plugin_example_c::library_path())
        .unwrap()
        .create("plugin-c", "capacity = 67108864")
        .unwrap();
    vec![
        ("memory_direct", Arc::new(direct)),
        ("memory_via_plugin", Arc::new(rust_plugin)),
        ("memory_via_abi_linked_in", Arc::new(in_process)),
        ("c_table_via_plugin", Arc::new(c_plugin)),
    ]
}

fn boundary(c: &mut Criterion) {
    let tiers = tiers();
    for size in [64usize, 4096] {
        let data = vec![0x5Au8; size];
        let mut out = vec![0u8; size];
        let id = BlockId::from_u128(42);

        let mut group = c.benchmark_group(format!("put_{size}B"));
        group.throughput(Throughput::Elements(1));
        for (name, tier) in &tiers {
            group.bench_function(*name, |b| {
                b.iter(|| tier.put(black_box(id), black_box(&data)).unwrap())
            });
        }
        group.finish();

        let mut group = c.benchmark_group(format!("get_{size}B"));
        group.throughput(Throughput::Elements(1));
        for (name, tier) in &tiers {
            tier.put(id, &data).unwrap();
            group.bench_function(*name, |b| {
                b.iter(|| tier.get(black_box(id), black_box(&mut out)).unwrap())
            });
        }
        group.finish();
    }

    let mut group = c.benchmark_group("contains");
    for (name, tier) in &tiers {
        group.bench_function(*name, |b| {
            b.iter(|| tier.contains(black_box(BlockId::from_u128(42))))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = boundary
}
criterion_main!(benches);
