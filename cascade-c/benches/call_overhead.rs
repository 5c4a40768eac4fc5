//! What the C boundary adds to one call: a get of one small block through
//! `CascadeStore::get` (Rust) and through `cascade_get` (the extern "C" function C and
//! C++ programs call: argument checks, catch_unwind, status code), on the same store.
//! The C++ figure through libcascade_c.so is `single_get_ns` of examples/cpp's benchmark.
//!
//! ```text
//! cargo bench -p cascade-c --bench call_overhead
//! CASCADE_C_BENCH_CONFIG=deployment.toml cargo bench -p cascade-c --bench call_overhead
//! ```
//!
//! The store is a 16 MiB memory tier, or the deployment TOML named by
//! `CASCADE_C_BENCH_CONFIG` (give the C++ benchmark the same file with `--config`).

// criterion_group! defines an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use cascade::Cascade;
use cascade_c::{CascadeBlockId, CascadeStatus, cascade_get};
use criterion::{Criterion, criterion_group, criterion_main};

/// The block size of the C++ benchmark's default `--latency-size`.
const BLOCK: usize = 4096;

fn single_get(c: &mut Criterion) {
    let store = match std::env::var_os("CASCADE_C_BENCH_CONFIG") {
        Some(path) => Cascade::open_toml_file(path),
        None => Cascade::open_toml_str("[[tiers]]\nkind = \"memory\"\ncapacity = \"16 MiB\"\n"),
    }
    .unwrap_or_else(|e| panic!("cannot open the store: {e}"));
    let data = vec![7u8; BLOCK];
    let id = cascade::compute_block_id(&data);
    store
        .put(id, &data)
        .unwrap_or_else(|e| panic!("cannot put the block: {e}"));
    let mut out = vec![0u8; BLOCK];

    let mut group = c.benchmark_group(format!("single get of {BLOCK} bytes"));
    group.bench_function("rust CascadeStore::get", |b| {
        b.iter(|| store.get(black_box(id), black_box(&mut out)))
    });

    // A handle over the same store, as C programs get one from cascade_open_*.
    let handle = cascade_c::store::CascadeHandle::from_store(store);
    let raw = CascadeBlockId::from(id);
    group.bench_function("C ABI cascade_get", |b| {
        b.iter(|| {
            let mut len = 0usize;
            // SAFETY: the handle lives for the whole benchmark; out holds BLOCK bytes.
            let status = unsafe {
                cascade_get(
                    &handle,
                    black_box(raw),
                    out.as_mut_ptr(),
                    out.len(),
                    &mut len,
                )
            };
            assert_eq!(status, CascadeStatus::Ok);
            len
        })
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = single_get
}
criterion_main!(benches);
