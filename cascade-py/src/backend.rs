//! Direct access to one tier, without the store's index or placement: the documented
//! `GPUBackend(capacity, device_id=0)` and `ShmBackend(capacity, path)`, plus
//! `MemoryBackend` and `LustreBackend`.

use std::sync::Arc;

use pyo3::prelude::*;

use cascade::{BlockId, ErrorKind, Tier, TierConfig, TierRegistry};

use crate::buffer::Access;
use crate::convert::to_python;
use crate::data::{self, Data, DeviceRange};
use crate::errors::{IntoPy, kind_error};
use crate::ids;
use crate::split::{Split, raise_first};

/// One tier used on its own: blocks go exactly where you put them, with no index,
/// no dedup and no movement between tiers. `put` replaces a block of the same id;
/// a full tier raises `TierFullError`.
///
/// Blocks go in from any C-contiguous host buffer; a `GPUBackend` also takes CUDA
/// tensors (`__cuda_array_interface__` or DLPack) and copies device to device.
#[pyclass(name = "Backend", module = "cascade", subclass, frozen)]
pub struct PyBackend {
    tier: Arc<dyn Tier>,
    #[cfg(feature = "gpu")]
    gpu: Option<(Arc<cascade_gpu::GpuTier>, usize)>,
}

impl PyBackend {
    fn from_config(py: Python<'_>, config: TierConfig) -> PyResult<Self> {
        let tier = py
            .detach(|| TierRegistry::builtin().open(0, &config))
            .py_err()?;
        Ok(Self {
            tier,
            #[cfg(feature = "gpu")]
            gpu: None,
        })
    }

    fn put_device(
        &self,
        py: Python<'_>,
        items: &[(BlockId, DeviceRange)],
    ) -> Vec<cascade::Result<()>> {
        #[cfg(feature = "gpu")]
        if let Some((gpu, device_id)) = &self.gpu {
            return py.detach(|| {
                crate::cuda::copy_after_sync(Some(*device_id), items, |plain| {
                    // SAFETY: each range was checked dense and is kept alive by its Python
                    // owner (held by the caller) until this returns; the producer's stream
                    // was synchronized, so nothing writes it meanwhile.
                    unsafe { gpu.put_from_device_batch(plain) }
                })
            });
        }
        let _ = py;
        items.iter().map(|_| Err(no_device_path())).collect()
    }

    fn get_device(
        &self,
        py: Python<'_>,
        items: &[(BlockId, DeviceRange)],
    ) -> Vec<cascade::Result<usize>> {
        #[cfg(feature = "gpu")]
        if let Some((gpu, device_id)) = &self.gpu {
            return py.detach(|| {
                crate::cuda::copy_after_sync(Some(*device_id), items, |plain| {
                    // SAFETY: as in put_device; the outputs were checked not to overlap.
                    unsafe { gpu.get_into_device_batch(plain) }
                })
            });
        }
        let _ = py;
        items.iter().map(|_| Err(no_device_path())).collect()
    }
}

fn no_device_path() -> cascade::Error {
    cascade::Error::new(
        ErrorKind::Unsupported,
        "GPU memory can only be copied by a GPUBackend of a build with GPU support; \
         pass host memory (tensor.cpu()) to this backend",
    )
}

fn not_found_is_none(result: cascade::Result<usize>) -> cascade::Result<Option<usize>> {
    match result {
        Ok(n) => Ok(Some(n)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[pymethods]
impl PyBackend {
    /// Stores `data` under `block_id`, replacing a block of the same id. Returns True.
    fn put(
        &self,
        py: Python<'_>,
        block_id: &Bound<'_, PyAny>,
        data: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        let id = ids::parse(block_id)?;
        match data::take(data, Access::Read, "data")? {
            Data::Host(host) => {
                let bytes = host.bytes();
                let tier = &self.tier;
                py.detach(|| tier.put(id, bytes)).py_err()?;
            }
            Data::Device(device) => {
                raise_first(self.put_device(py, &[(id, device.range)]))?;
            }
        }
        Ok(true)
    }

    /// Copies the block into `out` (host buffer, or CUDA memory for a GPUBackend).
    /// Returns `(found, size)`.
    fn get(
        &self,
        py: Python<'_>,
        block_id: &Bound<'_, PyAny>,
        out: &Bound<'_, PyAny>,
    ) -> PyResult<(bool, usize)> {
        let id = ids::parse(block_id)?;
        let found = match data::take(out, Access::Write, "out")? {
            Data::Host(mut host) => {
                let bytes = host.bytes_mut();
                let tier = &self.tier;
                not_found_is_none(py.detach(|| tier.get(id, bytes))).py_err()?
            }
            Data::Device(device) => {
                let mut results = self.get_device(py, &[(id, device.range)]);
                not_found_is_none(results.remove(0)).py_err()?
            }
        };
        Ok(found.map_or((false, 0), |n| (true, n)))
    }

    /// Stores many blocks in one call; returns how many were stored. `blocks` is a list
    /// of blocks, or one array or tensor whose rows are the blocks. Host and device
    /// blocks may be mixed (device ones only on a GPUBackend).
    fn put_batch(
        &self,
        py: Python<'_>,
        block_ids: &Bound<'_, PyAny>,
        blocks: &Bound<'_, PyAny>,
    ) -> PyResult<usize> {
        let ids = ids::parse_all(block_ids, "block_ids")?;
        let batch = data::take_batch(blocks, ids.len(), Access::Read, "blocks")?;
        let tier = &self.tier;
        let results = Split::new(&ids, batch.parts()).run(
            |host| py.detach(|| tier.put_batch(host)),
            |device| self.put_device(py, device),
        );
        Ok(raise_first(results)?.len())
    }

    /// Reads many blocks in one call into their outputs (a list, or one array or tensor
    /// whose rows receive the blocks; outputs must not overlap); one entry per block:
    /// its size, or None when it is not stored.
    fn get_batch(
        &self,
        py: Python<'_>,
        block_ids: &Bound<'_, PyAny>,
        outs: &Bound<'_, PyAny>,
    ) -> PyResult<Vec<Option<usize>>> {
        let ids = ids::parse_all(block_ids, "block_ids")?;
        let mut batch = data::take_batch(outs, ids.len(), Access::Write, "outs")?;
        let tier = &self.tier;
        let results = Split::outputs(&ids, batch.parts_mut(), "outs")?.run(
            |host| py.detach(|| tier.get_batch(host)),
            |device| self.get_device(py, device),
        );
        raise_first(results.into_iter().map(not_found_is_none).collect())
    }

    /// Whether `block_id` is stored.
    fn contains(&self, block_id: &Bound<'_, PyAny>) -> PyResult<bool> {
        Ok(self.tier.contains(ids::parse(block_id)?))
    }

    fn __contains__(&self, block_id: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.contains(block_id)
    }

    /// The stored size of `block_id`, or None.
    fn size_of(&self, block_id: &Bound<'_, PyAny>) -> PyResult<Option<u64>> {
        Ok(self.tier.len_of(ids::parse(block_id)?))
    }

    /// Removes `block_id`; returns whether it was stored.
    fn remove(&self, py: Python<'_>, block_id: &Bound<'_, PyAny>) -> PyResult<bool> {
        let id = ids::parse(block_id)?;
        let tier = &self.tier;
        py.detach(|| tier.remove(id)).py_err()
    }

    /// Every stored block id.
    fn ids(&self, py: Python<'_>) -> Vec<String> {
        let tier = &self.tier;
        py.detach(|| tier.ids())
            .iter()
            .map(|(id, _)| id.to_hex())
            .collect()
    }

    fn __len__(&self, py: Python<'_>) -> usize {
        let tier = &self.tier;
        py.detach(|| tier.ids().len())
    }

    /// Removes every block.
    fn clear(&self, py: Python<'_>) -> PyResult<()> {
        let tier = &self.tier;
        py.detach(|| tier.clear()).py_err()
    }

    /// Makes everything stored so far durable (persistent tiers) or does nothing.
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        let tier = &self.tier;
        py.detach(|| tier.flush()).py_err()
    }

    /// Bytes the tier may hold.
    #[getter]
    fn capacity(&self) -> u64 {
        self.tier.capacity()
    }

    /// Bytes allocated to blocks.
    #[getter]
    fn used(&self) -> u64 {
        self.tier.used()
    }

    /// The tier's name.
    #[getter]
    fn name(&self) -> String {
        self.tier.name().to_string()
    }

    /// The tier's kind ("gpu", "shm", "file", "memory").
    #[getter]
    fn kind(&self) -> String {
        self.tier.kind().to_string()
    }

    /// Figures of the tier: name, kind, capacity_bytes, used_bytes, blocks, capability
    /// and tier-specific extras.
    fn get_stats(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        #[derive(serde::Serialize)]
        struct BackendStats {
            name: String,
            kind: String,
            capacity_bytes: u64,
            used_bytes: u64,
            blocks: usize,
            capability: cascade::Capability,
            extra: std::collections::BTreeMap<String, f64>,
        }
        let tier = &self.tier;
        let stats = py.detach(|| BackendStats {
            name: tier.name().to_string(),
            kind: tier.kind().to_string(),
            capacity_bytes: tier.capacity(),
            used_bytes: tier.used(),
            blocks: tier.ids().len(),
            capability: tier.capability(),
            extra: tier.extra_stats().into_iter().collect(),
        });
        to_python(py, &stats)
    }

    fn __repr__(&self) -> String {
        format!(
            "<{} name={:?} kind={:?} capacity={} used={}>",
            match self.tier.kind() {
                "gpu" => "GPUBackend",
                "shm" => "ShmBackend",
                "file" | "lustre" => "LustreBackend",
                "memory" => "MemoryBackend",
                _ => "Backend",
            },
            self.tier.name(),
            self.tier.kind(),
            self.tier.capacity(),
            self.tier.used()
        )
    }
}

fn capacity_setting(capacity: u64) -> PyResult<i64> {
    i64::try_from(capacity).map_err(|_| {
        kind_error(
            ErrorKind::Config,
            format!("capacity is too large: {capacity}"),
        )
    })
}

/// The shared-memory tier on its own: a pool file (default under /dev/shm), pre-faulted,
/// that keeps its blocks for the next `ShmBackend` opened on the same path.
#[pyclass(name = "ShmBackend", module = "cascade", extends = PyBackend, frozen)]
pub struct PyShmBackend;

#[pymethods]
impl PyShmBackend {
    /// Opens (or reopens) a pool of `capacity` bytes at `path` (empty: the per-user
    /// default under /dev/shm).
    #[new]
    #[pyo3(signature = (capacity, path = String::new()))]
    fn new(py: Python<'_>, capacity: u64, path: String) -> PyResult<PyClassInitializer<Self>> {
        let mut config = TierConfig::new("shm")
            .named("shm")
            .with("capacity", capacity_setting(capacity)?);
        if !path.is_empty() {
            config = config.with("path", path);
        }
        Ok(PyClassInitializer::from(PyBackend::from_config(py, config)?).add_subclass(Self))
    }
}

/// The process-memory tier on its own (not persistent).
#[pyclass(name = "MemoryBackend", module = "cascade", extends = PyBackend, frozen)]
pub struct PyMemoryBackend;

#[pymethods]
impl PyMemoryBackend {
    /// A memory tier of `capacity` bytes.
    #[new]
    fn new(py: Python<'_>, capacity: u64) -> PyResult<PyClassInitializer<Self>> {
        let config = TierConfig::new("memory")
            .named("memory")
            .with("capacity", capacity_setting(capacity)?);
        Ok(PyClassInitializer::from(PyBackend::from_config(py, config)?).add_subclass(Self))
    }
}

/// The file tier on its own: segment files under a directory of a parallel file system
/// (or any POSIX directory), reopened with their contents.
#[pyclass(name = "LustreBackend", module = "cascade", extends = PyBackend, frozen)]
pub struct PyLustreBackend;

#[pymethods]
impl PyLustreBackend {
    /// A file tier in directory `path` (created when missing) holding up to `capacity`
    /// bytes (0: the tier's default).
    #[new]
    #[pyo3(signature = (path, capacity = 0))]
    fn new(
        py: Python<'_>,
        path: std::path::PathBuf,
        capacity: u64,
    ) -> PyResult<PyClassInitializer<Self>> {
        let path = path
            .to_str()
            .ok_or_else(|| kind_error(ErrorKind::Config, "path is not valid UTF-8"))?
            .to_string();
        let mut config = TierConfig::new("file").named("lustre").with("path", path);
        if capacity > 0 {
            config = config.with("capacity", capacity_setting(capacity)?);
        }
        Ok(PyClassInitializer::from(PyBackend::from_config(py, config)?).add_subclass(Self))
    }
}

/// The GPU tier on its own: a slab of device memory on `device_id`. Takes host buffers
/// and CUDA tensors (`__cuda_array_interface__` or DLPack, e.g. torch CUDA tensors),
/// which are copied device to device after the producer's stream is synchronized.
/// Raises `UnavailableError` where there is no GPU or no GPU support in this build.
#[pyclass(name = "GPUBackend", module = "cascade", extends = PyBackend, frozen)]
pub struct PyGpuBackend;

#[pymethods]
impl PyGpuBackend {
    /// A GPU tier of `capacity` bytes of device memory on `device_id`.
    #[new]
    #[pyo3(signature = (capacity, device_id = 0))]
    fn new(py: Python<'_>, capacity: u64, device_id: usize) -> PyResult<PyClassInitializer<Self>> {
        #[cfg(feature = "gpu")]
        {
            let config = cascade_gpu::GpuTierConfig {
                device_id,
                capacity: cascade::ByteSize(capacity),
                ..cascade_gpu::GpuTierConfig::default()
            };
            let gpu = py
                .detach(|| cascade_gpu::GpuTier::open("gpu", &config))
                .map_err(|e| {
                    if e.kind() == ErrorKind::Unavailable {
                        e.with_context("why", crate::cuda::missing_gpu_reason())
                    } else {
                        e
                    }
                })
                .py_err()?;
            let gpu = Arc::new(gpu);
            let base = PyBackend {
                tier: gpu.clone(),
                gpu: Some((gpu, device_id)),
            };
            Ok(PyClassInitializer::from(base).add_subclass(Self))
        }
        #[cfg(not(feature = "gpu"))]
        {
            let _ = (py, capacity, device_id);
            Err(kind_error(
                ErrorKind::Unavailable,
                "no GPU support in this build of cascade (built without the `gpu` feature)",
            ))
        }
    }

    /// The card's name as the driver reports it.
    #[getter]
    fn card(slf: PyRef<'_, Self>) -> String {
        #[cfg(feature = "gpu")]
        if let Some((gpu, _)) = &slf.as_super().gpu {
            return gpu.card().to_string();
        }
        let _ = slf;
        String::new()
    }
}
