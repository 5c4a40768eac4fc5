//! `CascadeStore`: the tiered store, called from any number of Python threads.

use std::sync::{Arc, RwLock};

use pyo3::prelude::*;
use pyo3::types::PyType;

use cascade::core::store::PrefetchTarget;
use cascade::{
    BlockId, Cascade, CascadeConfig, CascadeStore, Dest, DeviceRegion, ErrorKind, PutOutcome,
    Source,
};

use crate::buffer::Access;
use crate::config::PyConfig;
use crate::convert::to_python;
use crate::data::{self, Block, Data, DeviceRange, Host};
use crate::errors::{IntoPy, kind_error, warn_tier_unavailable};
use crate::ids;
use crate::split::{Pieces, Split, raise_first};

/// A hierarchical KV-block store: tiers fastest first (GPU, shared memory, files)
/// behind one sharded index.
///
/// Every method that copies or does I/O releases the GIL, so Python threads calling the
/// same store run in parallel. Blocks go in from any C-contiguous buffer (numpy arrays,
/// bytes, bytearray, memoryview) without an intermediate copy and come back into
/// writable buffers. `put` / `get` / `put_batch` / `get_batch` also take CUDA tensors
/// (DLPack or `__cuda_array_interface__`, on the GPU tier's device, or device 0 in a
/// store without one), after the producer's stream is synchronized: the GPU tier copies
/// them device to device, host tiers by DMA straight into (and out of) their memory, so
/// a store without a GPU tier takes and fills CUDA tensors too. A block may also be a
/// list of pieces (all host buffers, or all CUDA tensors), gathered in order on put and
/// scattered in order on get: an engine's per-layer K and V tensors. Block ids are
/// 32-character hex strings (`compute_block_id`).
///
/// The store is closed when it is garbage-collected, by `close()`, or at the end of a
/// `with` block; persistent tiers (shared memory, files) keep their blocks for the next
/// store opened on them.
#[pyclass(name = "CascadeStore", module = "cascade", frozen)]
pub struct PyStore {
    inner: RwLock<Option<Arc<CascadeStore>>>,
    /// The CUDA device of the store's GPU tier, whose producer streams are synchronized
    /// before device copies; None without a GPU tier (device 0 is used then).
    #[cfg_attr(not(feature = "gpu"), allow(dead_code))]
    gpu_device: Option<usize>,
}

impl PyStore {
    fn store(&self) -> PyResult<Arc<CascadeStore>> {
        let guard = self
            .inner
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        guard
            .clone()
            .ok_or_else(|| kind_error(ErrorKind::InvalidInput, "the store is closed"))
    }

    /// Opens `config`, warning about each configured tier that was skipped as
    /// unavailable (`required = false`) and about `notes` from the config mapping.
    fn open(py: Python<'_>, config: CascadeConfig, notes: Vec<String>) -> PyResult<Self> {
        // Shared: a deployment with `metrics_listen` serves its metrics while it is open.
        let store = py.detach(|| Cascade::open_shared(&config)).py_err()?;
        let opened: Vec<String> = store.tiers().iter().map(|t| t.name().to_string()).collect();
        let mut warnings = notes;
        for (position, tier) in config.tiers.iter().enumerate() {
            let name = tier.display_name(position);
            if opened.contains(&name) {
                continue;
            }
            let what = if tier.kind == "gpu" {
                #[cfg(feature = "gpu")]
                let why = crate::cuda::missing_gpu_reason();
                #[cfg(not(feature = "gpu"))]
                let why = "no GPU support in this build";
                format!(
                    "no usable GPU: the GPU tier {name:?} could not be opened on this machine ({why})"
                )
            } else {
                format!(
                    "tier {name:?} (kind {:?}) is unavailable on this machine",
                    tier.kind
                )
            };
            warnings.push(what);
        }
        for warning in warnings {
            let message = format!("{warning}; continuing with tiers: {}", opened.join(", "));
            warn_tier_unavailable(py, &message)?;
        }
        // The tiers say which device their memory is on; the config is not read again.
        let gpu_device = store
            .tiers()
            .iter()
            .find_map(|tier| tier.capability().device);
        Ok(Self {
            inner: RwLock::new(Some(store)),
            gpu_device,
        })
    }

    /// The CUDA device of the tensors this store takes: its GPU tier's, or device 0 in
    /// a store without one (the store's device addresses are on that device).
    #[cfg(feature = "gpu")]
    fn device(&self) -> usize {
        self.gpu_device.unwrap_or(0)
    }

    /// Stores device ranges into the store's tiers (DMA into host tiers), after synchronizing their
    /// producers' streams, with the GIL released.
    fn put_device(
        &self,
        py: Python<'_>,
        store: &CascadeStore,
        items: &[(BlockId, DeviceRange)],
    ) -> Vec<cascade::Result<PutOutcome>> {
        #[cfg(feature = "gpu")]
        {
            py.detach(|| {
                crate::cuda::copy_after_sync(Some(self.device()), items, |plain| {
                    // SAFETY: each range was checked dense and is kept alive by its Python
                    // owner (held by the caller) until this returns; the producer's stream
                    // was synchronized, so nothing writes it meanwhile. Host tiers take
                    // the ranges by DMA; where CUDA is unavailable the store refuses
                    // them without touching them.
                    unsafe { store.put_device_batch(plain) }
                })
            })
        }
        #[cfg(not(feature = "gpu"))]
        {
            let _ = (py, store);
            items.iter().map(|_| Err(no_gpu_build())).collect()
        }
    }

    /// Stores blocks given in pieces (host pieces gathered by memcpy, device pieces by
    /// DMA), after synchronizing the device pieces' producer streams, with the GIL
    /// released.
    fn put_pieces(
        &self,
        py: Python<'_>,
        store: &CascadeStore,
        items: &[(BlockId, Pieces<&[u8]>)],
    ) -> Vec<cascade::Result<PutOutcome>> {
        py.detach(|| {
            let regions = match self.device_regions(items) {
                Ok(regions) => regions,
                Err(e) => return items.iter().map(|_| Err(e.clone())).collect(),
            };
            let batch: Vec<(BlockId, Source<'_>)> = items
                .iter()
                .zip(&regions)
                .map(|((id, pieces), regions)| {
                    let source = match pieces {
                        Pieces::Host(host) => Source::HostPieces(host),
                        Pieces::Device(_) => Source::Device(regions),
                    };
                    (*id, source)
                })
                .collect();
            store.put_from_batch(&batch)
        })
    }

    /// Reads blocks into outputs given in pieces, as [`PyStore::put_pieces`] stores them.
    fn get_pieces(
        &self,
        py: Python<'_>,
        store: &CascadeStore,
        items: &mut [(BlockId, Pieces<&mut [u8]>)],
    ) -> Vec<cascade::Result<Option<usize>>> {
        py.detach(|| {
            let regions = match self.device_regions(items) {
                Ok(regions) => regions,
                Err(e) => return items.iter().map(|_| Err(e.clone())).collect(),
            };
            let ids: Vec<(BlockId, bool)> = items
                .iter()
                .map(|(id, p)| (*id, matches!(p, Pieces::Device(_))))
                .collect();
            // Reborrowed so that each block's list of pieces lives as long as the batch.
            let mut host: Vec<Vec<&mut [u8]>> = items
                .iter_mut()
                .map(|(_, pieces)| match pieces {
                    Pieces::Host(host) => host.iter_mut().map(|b| &mut **b).collect(),
                    Pieces::Device(_) => Vec::new(),
                })
                .collect();
            let mut batch: Vec<(BlockId, Dest<'_>)> = ids
                .iter()
                .zip(host.iter_mut())
                .zip(&regions)
                .map(|((&(id, on_device), host), regions)| {
                    let dest = if on_device {
                        Dest::Device(regions)
                    } else {
                        Dest::HostPieces(host.as_mut_slice())
                    };
                    (id, dest)
                })
                .collect();
            store.get_into_batch(&mut batch)
        })
    }

    /// The device regions of each item's device pieces (empty for host pieces), once
    /// their producers' streams are synchronized.
    fn device_regions<H>(
        &self,
        items: &[(BlockId, Pieces<H>)],
    ) -> cascade::Result<Vec<Vec<DeviceRegion>>> {
        let ranges = |p: &Pieces<H>| match p {
            Pieces::Device(ranges) => ranges.clone(),
            Pieces::Host(_) => Vec::new(),
        };
        if items.iter().all(|(_, p)| matches!(p, Pieces::Host(_))) {
            return Ok(items.iter().map(|_| Vec::new()).collect());
        }
        #[cfg(feature = "gpu")]
        {
            let device = self.device();
            crate::cuda::sync_ranges(
                device,
                items.iter().flat_map(|(_, p)| match p {
                    Pieces::Device(ranges) => ranges.as_slice(),
                    Pieces::Host(_) => &[],
                }),
            )?;
            Ok(items
                .iter()
                .map(|(_, p)| {
                    ranges(p)
                        .into_iter()
                        // SAFETY: each range was checked dense and is kept alive by its
                        // Python owner (held by the caller) until the store call that
                        // takes it returns; its producer's stream was synchronized
                        // above, so nothing else writes (or, for outputs, reads) it
                        // meanwhile. Where CUDA is unavailable the store refuses the
                        // ranges without touching them.
                        .map(|d| unsafe { DeviceRegion::new(d.ptr, d.len, device) })
                        .collect()
                })
                .collect())
        }
        #[cfg(not(feature = "gpu"))]
        {
            let _ = ranges;
            Err(no_gpu_build())
        }
    }

    /// Reads blocks into device ranges through the store's GPU tier, after
    /// synchronizing their producers' streams, with the GIL released.
    fn get_device(
        &self,
        py: Python<'_>,
        store: &CascadeStore,
        items: &[(BlockId, DeviceRange)],
    ) -> Vec<cascade::Result<Option<usize>>> {
        #[cfg(feature = "gpu")]
        {
            py.detach(|| {
                crate::cuda::copy_after_sync(Some(self.device()), items, |plain| {
                    // SAFETY: as in put_device; the outputs were checked not to overlap.
                    unsafe { store.get_device_batch(plain) }
                })
            })
        }
        #[cfg(not(feature = "gpu"))]
        {
            let _ = (py, store);
            items.iter().map(|_| Err(no_gpu_build())).collect()
        }
    }
}

/// The tier a prefetch moves blocks to: `None` the fastest with room, else a tier
/// name (as in `CascadeStore.tiers`) or position (0 is the fastest).
fn prefetch_target(
    store: &CascadeStore,
    tier: Option<&Bound<'_, PyAny>>,
) -> PyResult<PrefetchTarget> {
    let Some(tier) = tier.filter(|t| !t.is_none()) else {
        return Ok(PrefetchTarget::Fastest);
    };
    let names: Vec<&str> = store.tiers().iter().map(|t| t.name()).collect();
    if let Ok(position) = tier.extract::<usize>() {
        return Ok(PrefetchTarget::Tier(position));
    }
    let name: String = tier
        .extract()
        .map_err(|_| crate::errors::invalid_input("tier must be a tier name or position"))?;
    names
        .iter()
        .position(|n| *n == name)
        .map(PrefetchTarget::Tier)
        .ok_or_else(|| {
            crate::errors::invalid_input(format!("no tier named {name:?}; the tiers are {names:?}"))
        })
}

#[cfg(not(feature = "gpu"))]
fn no_gpu_build() -> cascade::Error {
    cascade::Error::new(
        ErrorKind::Unsupported,
        "GPU memory needs a build of cascade with GPU support (the `gpu` feature); pass host \
         memory (tensor.cpu())",
    )
}

#[pymethods]
impl PyStore {
    /// Opens a store from a `CascadeConfig` (default: `CascadeConfig()`).
    #[new]
    #[pyo3(signature = (config = None))]
    fn new(py: Python<'_>, config: Option<PyConfig>) -> PyResult<Self> {
        let mapped = config.unwrap_or_default().to_cascade()?;
        Self::open(py, mapped.config, mapped.warnings)
    }

    /// Opens a store from a Cascade TOML file (`[[tiers]]` entries, see cascade.toml).
    #[classmethod]
    fn from_toml(
        _cls: &Bound<'_, PyType>,
        py: Python<'_>,
        path: std::path::PathBuf,
    ) -> PyResult<Self> {
        let config = CascadeConfig::from_toml_file(&path).py_err()?;
        Self::open(py, config, Vec::new())
    }

    /// Opens a store from a TOML document given as a string.
    #[classmethod]
    fn from_toml_str(_cls: &Bound<'_, PyType>, py: Python<'_>, text: &str) -> PyResult<Self> {
        let config = CascadeConfig::from_toml_str(text).py_err()?;
        Self::open(py, config, Vec::new())
    }

    /// Stores `data` (any C-contiguous buffer or CUDA tensor, or a list of them: the
    /// block's pieces, concatenated in order) under `block_id`. Returns True once the
    /// block is stored; with dedup on, an id already stored copies nothing (counted in
    /// `get_stats()["dedup_hits"]`). Raises `TierFullError` / `TooLargeError` when no
    /// tier can take it.
    fn put(
        &self,
        py: Python<'_>,
        block_id: &Bound<'_, PyAny>,
        data: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        let id = ids::parse(block_id)?;
        let store = self.store()?;
        let mut results = match data::take_block(data, Access::Read, "data")? {
            Block::Whole(Data::Host(buffer)) => {
                let bytes = buffer.bytes();
                vec![py.detach(|| store.put(id, bytes))]
            }
            Block::Whole(Data::Device(device)) => {
                self.put_device(py, &store, &[(id, device.range)])
            }
            Block::HostPieces(pieces) => {
                let pieces = Pieces::Host(pieces.iter().map(Host::bytes).collect());
                self.put_pieces(py, &store, &[(id, pieces)])
            }
            Block::DevicePieces(pieces) => {
                let pieces = Pieces::Device(pieces.iter().map(|d| d.range).collect());
                self.put_pieces(py, &store, &[(id, pieces)])
            }
        };
        results.remove(0).py_err()?;
        Ok(true)
    }

    /// Hashes `data` with the configured hasher, stores it under that id, and returns
    /// the id.
    fn put_content(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<String> {
        let buffer = data::take_host(data, Access::Read, &"data")?;
        let store = self.store()?;
        let bytes = buffer.bytes();
        let (id, _) = py.detach(|| store.put_content(bytes)).py_err()?;
        Ok(id.to_hex())
    }

    /// Copies the block into the start of `out` (a writable C-contiguous buffer or CUDA
    /// tensor, or a list of them filled in order: the block's pieces). Returns `(found, size)`: `(False, 0)` when the block is not stored. Raises
    /// `InvalidInputError` when `out` is smaller than the block (nothing is copied) and
    /// `CorruptError` when its stored bytes fail their checksum.
    fn get(
        &self,
        py: Python<'_>,
        block_id: &Bound<'_, PyAny>,
        out: &Bound<'_, PyAny>,
    ) -> PyResult<(bool, usize)> {
        let id = ids::parse(block_id)?;
        let store = self.store()?;
        let mut block = data::take_block(out, Access::Write, "out")?;
        let mut results = match &mut block {
            Block::Whole(Data::Host(buffer)) => {
                let bytes = buffer.bytes_mut();
                vec![py.detach(|| store.get(id, bytes))]
            }
            Block::Whole(Data::Device(device)) => {
                self.get_device(py, &store, &[(id, device.range)])
            }
            Block::HostPieces(pieces) => {
                let parts = vec![data::Part::HostPieces(
                    pieces.iter_mut().map(Host::bytes_mut).collect(),
                )];
                Split::outputs(&[id], parts, "out")?.run_all(
                    |_| Vec::new(),
                    |_| Vec::new(),
                    |items| self.get_pieces(py, &store, items),
                )
            }
            Block::DevicePieces(pieces) => {
                let mut items = [(id, Pieces::Device(pieces.iter().map(|d| d.range).collect()))];
                self.get_pieces(py, &store, &mut items)
            }
        };
        let found = results.remove(0).py_err()?;
        Ok(found.map_or((false, 0), |n| (true, n)))
    }

    /// Whether `block_id` is stored.
    fn contains(&self, block_id: &Bound<'_, PyAny>) -> PyResult<bool> {
        Ok(self.store()?.contains(ids::parse(block_id)?))
    }

    fn __contains__(&self, block_id: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.contains(block_id)
    }

    /// The stored size of `block_id` in bytes, or None.
    fn size_of(&self, block_id: &Bound<'_, PyAny>) -> PyResult<Option<u64>> {
        Ok(self.store()?.len_of(ids::parse(block_id)?))
    }

    /// Removes `block_id`; returns whether it was stored.
    fn remove(&self, py: Python<'_>, block_id: &Bound<'_, PyAny>) -> PyResult<bool> {
        let id = ids::parse(block_id)?;
        let store = self.store()?;
        py.detach(|| store.remove(id)).py_err()
    }

    /// Stores many blocks in one call (one crossing into Rust, placed in parallel).
    /// `blocks` is a list of blocks as long as `block_ids` (each a buffer or tensor, or
    /// a list of pieces), or one array whose rows are the blocks (an engine's KV pool:
    /// the buffer is taken once for all of them).
    /// Returns how many blocks are stored after the call (new or deduplicated). If some
    /// block fails, the others are still stored and the first failure is raised, its
    /// `context["index"]` naming it.
    fn put_batch(
        &self,
        py: Python<'_>,
        block_ids: &Bound<'_, PyAny>,
        blocks: &Bound<'_, PyAny>,
    ) -> PyResult<usize> {
        let ids = ids::parse_all(block_ids, "block_ids")?;
        let batch = data::take_batch(blocks, ids.len(), Access::Read, "blocks")?;
        let store = self.store()?;
        let results = Split::new(&ids, batch.parts()).run_all(
            |host| py.detach(|| store.put_batch(host)),
            |device| self.put_device(py, &store, device),
            |pieces| self.put_pieces(py, &store, pieces),
        );
        Ok(raise_first(results)?.len())
    }

    /// Reads many blocks in one call into their outputs: a list as long as
    /// `block_ids` (each a buffer or tensor, or a list of pieces filled in order), or
    /// one array whose rows receive the blocks; outputs must not overlap. Returns one entry per block: its size, or None when it is not stored.
    /// The first failure (an output too small, a corrupt block) is raised after all the
    /// other blocks were read.
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
        let results = split.run_all(
            |host| py.detach(|| store.get_batch(host)),
            |device| self.get_device(py, &store, device),
            |pieces| self.get_pieces(py, &store, pieces),
        );
        raise_first(results)
    }

    /// Starts reading many blocks into their outputs in the background and returns a
    /// `GetBatchHandle` at once, so the load overlaps the caller's compute: `done()`,
    /// `wait(timeout)`, `cancel()`, `result()` (what `get_batch` returns, raising its
    /// first failure) and `await handle`. Outputs as for `get_batch`; they must not be
    /// touched before the handle is done. Outputs in device memory or in pieces are
    /// read before this returns (the handle is done at once).
    fn get_batch_async(
        &self,
        py: Python<'_>,
        block_ids: &Bound<'_, PyAny>,
        outs: &Bound<'_, PyAny>,
    ) -> PyResult<crate::handles::PyGetBatchHandle> {
        let ids = ids::parse_all(block_ids, "block_ids")?;
        let mut batch = data::take_batch(outs, ids.len(), Access::Write, "outs")?;
        // Checks the outputs for overlap (they are written in parallel).
        Split::outputs(&ids, batch.parts_mut(), "outs")?;
        let store = self.store()?;
        if let Some(items) = crate::handles::lend_all(&ids, batch.parts_mut()) {
            let running = store.get_batch_async(items);
            return Ok(crate::handles::PyGetBatchHandle::running(running, batch));
        }
        let split = Split::outputs(&ids, batch.parts_mut(), "outs")?;
        let results = split.run_all(
            |host| py.detach(|| store.get_batch(host)),
            |device| self.get_device(py, &store, device),
            |pieces| self.get_pieces(py, &store, pieces),
        );
        Ok(crate::handles::PyGetBatchHandle::finished(results))
    }

    /// Starts moving `block_ids` into the fastest tier that takes them and has room (or
    /// into `tier`, a tier name or position) in the background and returns a
    /// `PrefetchHandle` at once: `ready`, `progress()`, `done()`, `wait(timeout)`,
    /// `cancel()`, `detach()`, `statuses()`, `errors()`, `await handle`. A `get` of a
    /// block being moved waits for it instead of reading it twice; ids not stored are
    /// counted missing. Dropping the handle cancels the prefetch unless it is detached.
    #[pyo3(signature = (block_ids, tier = None))]
    fn prefetch(
        &self,
        py: Python<'_>,
        block_ids: &Bound<'_, PyAny>,
        tier: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<crate::handles::PyPrefetchHandle> {
        let ids = ids::parse_all(block_ids, "block_ids")?;
        let store = self.store()?;
        let target = prefetch_target(&store, tier)?;
        let handle = py.detach(|| store.prefetch_to(&ids, target)).py_err()?;
        Ok(crate::handles::PyPrefetchHandle::new(handle))
    }

    /// `prefetch` of the leading stored keys of a token-prefix chain (`prefix_keys`):
    /// the blocks an engine can load (`len(handle)` of them, as `lookup_prefix` counts).
    #[pyo3(signature = (keys, tier = None))]
    fn prefetch_prefix(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        tier: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<crate::handles::PyPrefetchHandle> {
        let keys = ids::parse_all(keys, "keys")?;
        let store = self.store()?;
        let target = prefetch_target(&store, tier)?;
        let handle = py
            .detach(|| store.prefetch_prefix_to(&keys, target))
            .py_err()?;
        Ok(crate::handles::PyPrefetchHandle::new(handle))
    }

    /// How many leading keys of a token-prefix chain are stored: the number of blocks
    /// an engine can load instead of recomputing.
    fn lookup_prefix(&self, keys: &Bound<'_, PyAny>) -> PyResult<usize> {
        let keys = ids::parse_all(keys, "keys")?;
        Ok(self.store()?.lookup_prefix(&keys))
    }

    /// Counters of the store and of each tier, as a dict (blocks, bytes, hits, misses,
    /// puts, dedup_hits, dedup_bytes_saved, evictions, demotions, promotions,
    /// prefetched, prefetch_hits, prefetch_wasted, tiers).
    fn get_stats(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let store = self.store()?;
        let stats = py.detach(|| store.stats());
        to_python(py, &stats)
    }

    /// The store's counters, per-tier gauges and put/get latency histograms in the
    /// Prometheus text format (what `metrics_listen` serves; names in
    /// docs/operations.md).
    fn metrics_text(&self, py: Python<'_>) -> PyResult<String> {
        let store = self.store()?;
        Ok(py.detach(|| store.metrics_text()))
    }

    /// Picks up blocks that other processes sharing a tier's storage (a file tier's
    /// directory on a shared file system) stored or removed since this store opened,
    /// without reopening. Returns a dict: `added` and `removed` (blocks newly indexed or
    /// dropped, over all tiers) and `tiers` (per tier: name, added, replaced, removed).
    /// Blocks this store holds are never removed because another process stored them.
    fn refresh(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let store = self.store()?;
        let report = py.detach(|| store.refresh()).py_err()?;
        to_python(py, &report)
    }

    /// Every stored block id.
    fn ids(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        let store = self.store()?;
        let ids = py.detach(|| store.ids());
        Ok(ids.iter().map(BlockId::to_hex).collect())
    }

    /// Names of the tiers that opened, fastest first.
    #[getter]
    fn tiers(&self) -> PyResult<Vec<String>> {
        Ok(self
            .store()?
            .tiers()
            .iter()
            .map(|t| t.name().to_string())
            .collect())
    }

    /// Removes every block from every tier.
    fn clear(&self, py: Python<'_>) -> PyResult<()> {
        let store = self.store()?;
        py.detach(|| store.clear()).py_err()
    }

    /// Makes everything stored so far durable (persistent tiers write back and sync).
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        let store = self.store()?;
        py.detach(|| store.flush()).py_err()
    }

    /// Flushes and closes the store; later calls raise. Calls still running in other
    /// threads finish first. Closing twice does nothing.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let taken = self
            .inner
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(store) = taken {
            py.detach(move || {
                let flushed = store.flush();
                drop(store);
                flushed
            })
            .py_err()?;
        }
        Ok(())
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.inner
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .is_none()
    }

    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        let store = self.store()?;
        let stats = py.detach(|| store.stats());
        Ok(usize::try_from(stats.blocks).unwrap_or(usize::MAX))
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
                "<CascadeStore tiers={:?} blocks={}>",
                self.tiers().unwrap_or_default(),
                store.stats().blocks
            ),
            Err(_) => "<CascadeStore closed>".to_string(),
        }
    }
}
