//! `ClusterStore`: one store across the ranks of an MPI job (cargo feature `cluster`),
//! with the `CascadeStore` API. Host memory only: device blocks go through each rank's
//! own `CascadeStore`.

use std::sync::{Arc, Mutex, RwLock};

use pyo3::prelude::*;
use pyo3::types::PyType;

use cascade::mpi::{ClusterStore, Mpi};
use cascade::{BlockId, Cascade, CascadeConfig, ErrorKind};

use crate::buffer::Access;
use crate::config::PyConfig;
use crate::convert::to_python;
use crate::data::{self, Data, DeviceRange};
use crate::errors::{IntoPy, kind_error};
use crate::ids;
use crate::split::{Split, raise_first};

/// The process's MPI handle, kept from the first `ClusterStore` to interpreter exit
/// (`_finalize_mpi`, registered with `atexit`), so stores can be opened one after another:
/// MPI cannot be initialised again once finalized.
static RUNTIME: Mutex<Option<Mpi>> = Mutex::new(None);

fn runtime(py: Python<'_>) -> PyResult<Mpi> {
    let mut held = RUNTIME.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(mpi) = held.as_ref() {
        return Ok(mpi.clone());
    }
    let mpi = py.detach(Mpi::init).py_err()?;
    let atexit = py.import("atexit")?;
    let module = py.import("cascade._native")?;
    atexit.call_method1("register", (module.getattr("_finalize_mpi")?,))?;
    *held = Some(mpi.clone());
    Ok(mpi)
}

/// Drops the process's MPI handle: MPI is finalized if this module initialised it
/// (registered with `atexit`; every `ClusterStore` should be closed before).
#[pyfunction]
pub fn _finalize_mpi(py: Python<'_>) {
    let taken = RUNTIME.lock().unwrap_or_else(|p| p.into_inner()).take();
    py.detach(move || drop(taken));
}

/// One store across every rank of an MPI job (run under `mpirun` / `srun`), with the
/// `CascadeStore` API.
///
/// Each rank opens its own tiers from the config (`{rank}` in a path becomes the rank;
/// a shm pool without a path gets one per rank). A block id's owner rank records which
/// ranks hold it: with dedup on, a block some rank holds is not stored again; a get
/// reads locally, else fetches from the rank holding it (a failed or corrupt transfer is
/// a miss). MPI is initialised with MPI_THREAD_MULTIPLE, or joined when mpi4py
/// initialised it (with `mpi4py.rc.thread_level = "multiple"`).
///
/// Opening and `close()` are collective: every rank calls them in the same order. Close
/// explicitly (or use `with`) rather than leaving it to the garbage collector, which
/// runs at different times on different ranks. Host buffers only.
#[pyclass(name = "ClusterStore", module = "cascade", frozen)]
pub struct PyClusterStore {
    inner: RwLock<Option<Arc<ClusterStore>>>,
}

impl PyClusterStore {
    fn store(&self) -> PyResult<Arc<ClusterStore>> {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| kind_error(ErrorKind::InvalidInput, "the cluster store is closed"))
    }

    fn open(py: Python<'_>, config: CascadeConfig) -> PyResult<Self> {
        let mpi = runtime(py)?;
        let store = py
            .detach(|| ClusterStore::open(&mpi, &config, Cascade::open))
            .py_err()?;
        Ok(Self {
            inner: RwLock::new(Some(Arc::new(store))),
        })
    }
}

fn host_only<T>(items: &[(BlockId, DeviceRange)]) -> Vec<cascade::Result<T>> {
    items
        .iter()
        .map(|_| {
            Err(cascade::Error::new(
                ErrorKind::Unsupported,
                "the cluster store takes host memory; copy device tensors to the host (tensor.cpu())",
            ))
        })
        .collect()
}

fn host(data: Data, what: &str) -> PyResult<crate::data::Host> {
    match data {
        Data::Host(buffer) => Ok(buffer),
        Data::Device(_) => Err(kind_error(
            ErrorKind::Unsupported,
            format!("{what}: the cluster store takes host memory (tensor.cpu())"),
        )),
    }
}

#[pymethods]
impl PyClusterStore {
    /// Opens this rank's part of the cluster from a `CascadeConfig` (collective).
    #[new]
    #[pyo3(signature = (config = None))]
    fn new(py: Python<'_>, config: Option<PyConfig>) -> PyResult<Self> {
        let mapped = config.unwrap_or_default().to_cascade()?;
        Self::open(py, mapped.config)
    }

    /// Opens from a Cascade TOML file (collective).
    #[classmethod]
    fn from_toml(
        _cls: &Bound<'_, PyType>,
        py: Python<'_>,
        path: std::path::PathBuf,
    ) -> PyResult<Self> {
        let config = CascadeConfig::from_toml_file(&path).py_err()?;
        Self::open(py, config)
    }

    /// Opens from a TOML document given as a string (collective).
    #[classmethod]
    fn from_toml_str(_cls: &Bound<'_, PyType>, py: Python<'_>, text: &str) -> PyResult<Self> {
        let config = CascadeConfig::from_toml_str(text).py_err()?;
        Self::open(py, config)
    }

    /// This process's rank.
    #[getter]
    fn rank(&self) -> PyResult<usize> {
        Ok(self.store()?.rank())
    }

    /// How many ranks the cluster has.
    #[getter]
    fn ranks(&self) -> PyResult<usize> {
        Ok(self.store()?.ranks())
    }

    /// Whether blocks held by ranks on this node are copied straight from their shm
    /// pools (checked against their stored checksum) instead of sent over MPI. On by
    /// default; `CASCADE_CLUSTER_DIRECT_READS=0` at open, or setting this to False, turns
    /// it off for this rank.
    #[getter]
    fn direct_reads(&self) -> PyResult<bool> {
        Ok(self.store()?.direct_reads())
    }

    #[setter]
    fn set_direct_reads(&self, on: bool) -> PyResult<()> {
        self.store()?.set_direct_reads(on);
        Ok(())
    }

    /// The rank that owns `block_id` (records its holders).
    fn owner(&self, block_id: &Bound<'_, PyAny>) -> PyResult<usize> {
        Ok(self.store()?.owner(ids::parse(block_id)?))
    }

    /// Stores `data` under `block_id`; True once stored on some rank (with dedup on, a
    /// block any rank holds is not stored again).
    fn put(
        &self,
        py: Python<'_>,
        block_id: &Bound<'_, PyAny>,
        data: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        let id = ids::parse(block_id)?;
        let store = self.store()?;
        let buffer = host(data::take(data, Access::Read, "data")?, "data")?;
        let bytes = buffer.bytes();
        py.detach(|| store.put(id, bytes)).py_err()?;
        Ok(true)
    }

    /// Hashes `data` with this rank's configured hasher, stores it, returns the id.
    fn put_content(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<String> {
        let buffer = data::take_host(data, Access::Read, &"data")?;
        let store = self.store()?;
        let bytes = buffer.bytes();
        let hasher =
            store.local().hasher().cloned().ok_or_else(|| {
                kind_error(ErrorKind::Config, "this store has no hasher configured")
            })?;
        let id = hasher.block_id(bytes);
        py.detach(|| store.put(id, bytes)).py_err()?;
        Ok(id.to_hex())
    }

    /// Copies the block into `out` from this rank or the rank holding it. Returns
    /// `(found, size)`; `(False, 0)` when no rank has it or its transfer failed.
    fn get(
        &self,
        py: Python<'_>,
        block_id: &Bound<'_, PyAny>,
        out: &Bound<'_, PyAny>,
    ) -> PyResult<(bool, usize)> {
        let id = ids::parse(block_id)?;
        let store = self.store()?;
        let mut buffer = host(data::take(out, Access::Write, "out")?, "out")?;
        let bytes = buffer.bytes_mut();
        let found = py.detach(|| store.get(id, bytes)).py_err()?;
        Ok(found.map_or((false, 0), |n| (true, n)))
    }

    /// Whether any rank holds `block_id`.
    fn contains(&self, py: Python<'_>, block_id: &Bound<'_, PyAny>) -> PyResult<bool> {
        let id = ids::parse(block_id)?;
        let store = self.store()?;
        py.detach(|| store.contains(id)).py_err()
    }

    fn __contains__(&self, py: Python<'_>, block_id: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.contains(py, block_id)
    }

    /// The stored size of `block_id` on any rank, or None.
    fn size_of(&self, py: Python<'_>, block_id: &Bound<'_, PyAny>) -> PyResult<Option<u64>> {
        let id = ids::parse(block_id)?;
        let store = self.store()?;
        py.detach(|| store.len_of(id)).py_err()
    }

    /// Removes `block_id` from every rank holding it; returns whether any did.
    fn remove(&self, py: Python<'_>, block_id: &Bound<'_, PyAny>) -> PyResult<bool> {
        let id = ids::parse(block_id)?;
        let store = self.store()?;
        py.detach(|| store.remove(id)).py_err()
    }

    /// Stores many blocks (a list, or one array whose rows are the blocks), one message
    /// per owner rank; returns how many are stored after the call (new or deduplicated).
    fn put_batch(
        &self,
        py: Python<'_>,
        block_ids: &Bound<'_, PyAny>,
        blocks: &Bound<'_, PyAny>,
    ) -> PyResult<usize> {
        let ids = ids::parse_all(block_ids, "block_ids")?;
        let batch = data::take_batch(blocks, ids.len(), Access::Read, "blocks")?;
        let store = self.store()?;
        let results = Split::new(&ids, batch.parts())
            .run(|items| py.detach(|| store.put_batch(items)), host_only);
        Ok(raise_first(results)?.len())
    }

    /// Reads many blocks into their outputs (a list, or one array whose rows receive the
    /// blocks), fetching the ones this rank lacks from their holders with one request
    /// per rank. Returns one entry per block: its size, or None.
    fn get_batch(
        &self,
        py: Python<'_>,
        block_ids: &Bound<'_, PyAny>,
        outs: &Bound<'_, PyAny>,
    ) -> PyResult<Vec<Option<usize>>> {
        let ids = ids::parse_all(block_ids, "block_ids")?;
        let mut batch = data::take_batch(outs, ids.len(), Access::Write, "outs")?;
        let split = Split::outputs(&ids, batch.parts_mut(), "outs")?;
        let store = self.store()?;
        let results = split.run(|items| py.detach(|| store.get_batch(items)), host_only);
        raise_first(results)
    }

    /// How many leading keys of a token-prefix chain some rank holds.
    fn lookup_prefix(&self, py: Python<'_>, keys: &Bound<'_, PyAny>) -> PyResult<usize> {
        let keys = ids::parse_all(keys, "keys")?;
        let store = self.store()?;
        py.detach(|| store.lookup_prefix(&keys)).py_err()
    }

    /// This rank's counters: the local store's (`local`, as `CascadeStore.get_stats()`)
    /// and the cluster's (remote_hits, direct_hits, remote_misses, remote_bytes, dedup_hits,
    /// dedup_bytes_saved, transfer_failures, owned_blocks, blocks_served, bytes_served).
    fn get_stats(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let store = self.store()?;
        let stats = py.detach(|| store.stats());
        to_python(py, &stats)
    }

    /// Blocks and bytes stored over all ranks (collective).
    fn totals(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let store = self.store()?;
        let totals = py.detach(|| store.totals()).py_err()?;
        to_python(py, &totals)
    }

    /// Waits until every rank reached this call (collective).
    fn barrier(&self, py: Python<'_>) -> PyResult<()> {
        let store = self.store()?;
        py.detach(|| store.barrier()).py_err()
    }

    /// Picks up blocks other ranks wrote to a shared file tier (one directory on the
    /// parallel file system); they are read locally from then on.
    fn refresh(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let store = self.store()?;
        let report = py.detach(|| store.refresh()).py_err()?;
        to_python(py, &report)
    }

    /// Every block id this rank holds.
    fn ids(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        let store = self.store()?;
        let ids = py.detach(|| store.ids());
        Ok(ids.iter().map(BlockId::to_hex).collect())
    }

    /// Names of this rank's tiers, fastest first.
    #[getter]
    fn tiers(&self) -> PyResult<Vec<String>> {
        Ok(self
            .store()?
            .local()
            .tiers()
            .iter()
            .map(|t| t.name().to_string())
            .collect())
    }

    /// Removes every block this rank holds.
    fn clear(&self, py: Python<'_>) -> PyResult<()> {
        let store = self.store()?;
        py.detach(|| store.clear()).py_err()
    }

    /// Makes this rank's blocks durable (persistent tiers write back and sync).
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        let store = self.store()?;
        py.detach(|| store.flush()).py_err()
    }

    /// Closes this rank's part (collective: waits for every rank, stops the progress
    /// thread, flushes). Closing twice does nothing.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let taken = self.inner.write().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(store) = taken {
            py.detach(move || store.close()).py_err()?;
        }
        Ok(())
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_none()
    }

    /// Blocks this rank holds.
    fn __len__(&self) -> PyResult<usize> {
        Ok(usize::try_from(self.store()?.local().stats().blocks).unwrap_or(usize::MAX))
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        match self.store() {
            Ok(store) => format!(
                "<ClusterStore rank={} ranks={} blocks={}>",
                store.rank(),
                store.ranks(),
                store.local().stats().blocks
            ),
            Err(_) => "<ClusterStore closed>".to_string(),
        }
    }
}
