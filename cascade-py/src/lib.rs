//! The `cascade` Python module: Cascade's tiered KV-block store for Python inference
//! engines, with the documented API (`CascadeConfig`, `CascadeStore`,
//! `compute_block_id`, `GPUBackend`, `ShmBackend`).
//!
//! Built by maturin as `cascade._native` (abi3, CPython 3.9 and later); the pure-Python
//! package in `python/cascade` re-exports it and ships the typing stubs.

mod backend;
mod bench;
mod buffer;
#[cfg(feature = "cluster")]
mod cluster;
mod config;
mod convert;
#[cfg(feature = "gpu")]
mod cuda;
mod data;
mod errors;
mod handles;
mod ids;
mod prefix;
mod split;
mod store;

use pyo3::prelude::*;

/// The native half of the `cascade` package (import `cascade`, not this module).
#[pymodule(name = "_native")]
fn native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(module)?;
    module.add_class::<config::PyConfig>()?;
    module.add_class::<store::PyStore>()?;
    module.add_class::<handles::PyPrefetchHandle>()?;
    module.add_class::<handles::PyGetBatchHandle>()?;
    module.add_class::<backend::PyBackend>()?;
    module.add_class::<backend::PyShmBackend>()?;
    module.add_class::<backend::PyMemoryBackend>()?;
    module.add_class::<backend::PyLustreBackend>()?;
    module.add_class::<backend::PyGpuBackend>()?;
    module.add_function(wrap_pyfunction!(ids::compute_block_id, module)?)?;
    module.add_function(wrap_pyfunction!(ids::compute_block_ids, module)?)?;
    module.add_function(wrap_pyfunction!(prefix::prefix_keys, module)?)?;
    module.add_function(wrap_pyfunction!(prefix::prefix_key, module)?)?;
    module.add_function(wrap_pyfunction!(prefix::prefix_namespace, module)?)?;
    module.add_function(wrap_pyfunction!(tier_kinds, module)?)?;
    module.add_class::<bench::NativeBench>()?;
    #[cfg(feature = "cluster")]
    {
        module.add_class::<cluster::PyClusterStore>()?;
        module.add_function(wrap_pyfunction!(cluster::_finalize_mpi, module)?)?;
    }
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}

/// The tier kinds compiled into this build ("memory", "shm", "file", "gpu", ...), sorted.
#[pyfunction]
fn tier_kinds() -> Vec<String> {
    cascade::TierRegistry::builtin()
        .kinds()
        .into_iter()
        .map(str::to_string)
        .collect()
}
