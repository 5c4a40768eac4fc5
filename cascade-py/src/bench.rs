//! `_NativeBench`: the Python benchmark's workload run from Rust in the same process,
//! so the Python figures have a baseline measured in the same run on the same store
//! configuration (benches/python_vs_rust.py).

use std::time::Instant;

use pyo3::prelude::*;

use cascade::{BlockId, Cascade, CascadeStore};

use crate::config::PyConfig;
use crate::convert::to_python;
use crate::errors::{IntoPy, invalid_input};

#[derive(serde::Serialize, Default)]
struct Timings {
    put_single: Vec<f64>,
    get_single: Vec<f64>,
    put_batch: Vec<f64>,
    get_batch: Vec<f64>,
}

fn timed(run: impl FnOnce() -> cascade::Result<()>) -> cascade::Result<f64> {
    let start = Instant::now();
    run()?;
    Ok(start.elapsed().as_secs_f64())
}

fn check(results: Vec<cascade::Result<impl Sized>>) -> cascade::Result<()> {
    results.into_iter().try_for_each(|r| r.map(|_| ()))
}

fn run(
    store: &CascadeStore,
    blocks: &[&[u8]],
    outs: &mut [&mut [u8]],
    batch: usize,
    repeats: usize,
) -> cascade::Result<Timings> {
    let ids: Vec<BlockId> = (0..blocks.len())
        .map(|i| BlockId::from_u128(0xbe9c_0000_0000 + i as u128))
        .collect();
    let mut t = Timings::default();
    for _ in 0..repeats {
        store.clear()?;
        t.put_single.push(timed(|| {
            ids.iter()
                .zip(blocks)
                .try_for_each(|(id, b)| store.put(*id, b).map(|_| ()))
        })?);
        t.get_single.push(timed(|| {
            ids.iter()
                .zip(outs.iter_mut())
                .try_for_each(|(id, o)| store.get(*id, o).map(|_| ()))
        })?);
        store.clear()?;
        t.put_batch.push(timed(|| {
            for (id_chunk, block_chunk) in ids.chunks(batch).zip(blocks.chunks(batch)) {
                let items: Vec<(BlockId, &[u8])> = id_chunk
                    .iter()
                    .copied()
                    .zip(block_chunk.iter().copied())
                    .collect();
                check(store.put_batch(&items))?;
            }
            Ok(())
        })?);
        t.get_batch.push(timed(|| {
            for (id_chunk, out_chunk) in ids.chunks(batch).zip(outs.chunks_mut(batch)) {
                let mut items: Vec<(BlockId, &mut [u8])> = id_chunk
                    .iter()
                    .copied()
                    .zip(out_chunk.iter_mut().map(|o| &mut **o))
                    .collect();
                check(store.get_batch(&mut items))?;
            }
            Ok(())
        })?);
    }
    store.clear()?;
    Ok(t)
}

/// The Python benchmark's workload, run from Rust: a store opened from `config` and
/// `blocks` buffers of `block_bytes`, allocated and touched once at construction.
/// `run(batch, repeats)` times single and batch put/get passes and returns the seconds
/// of each pass as lists under "put_single", "get_single", "put_batch", "get_batch";
/// the store is cleared (untimed) before each put pass. Calling `run` with one repeat
/// between Python passes lets both sides share the machine's conditions.
#[pyclass(name = "_NativeBench", module = "cascade", frozen)]
pub struct NativeBench {
    store: CascadeStore,
    block_bytes: usize,
    blocks: usize,
    data: Arena,
    outs: std::sync::Mutex<Arena>,
}

/// Blocks laid out as an engine's KV pool: one allocation, each block starting on a
/// 4 KiB boundary (copy speed on this CPU depends on alignment, so the Python side
/// lays its numpy blocks out the same way).
struct Arena {
    bytes: Vec<u8>,
    start: usize,
    stride: usize,
}

impl Arena {
    fn new(block_bytes: usize, blocks: usize, fill: impl Fn(usize, usize) -> u8) -> Self {
        let stride = block_bytes.div_ceil(4096).max(1) * 4096;
        let mut bytes: Vec<u8> = Vec::with_capacity(stride * blocks + (2 << 20));
        // numpy asks for transparent huge pages on arrays of 4 MiB and more (this
        // machine's THP mode is `madvise`), and copy speed depends on them: ask for the
        // same so both sides copy between the same kinds of pages.
        let huge_start = bytes.as_ptr().align_offset(2 << 20);
        let huge_len = (bytes.capacity() - huge_start) & !((2 << 20) - 1);
        if huge_len > 0 {
            // SAFETY: the range lies inside the vector's own allocation (capacity),
            // 2 MiB aligned; madvise only changes how the kernel backs those pages.
            unsafe {
                libc::madvise(
                    bytes.as_mut_ptr().add(huge_start).cast(),
                    huge_len,
                    libc::MADV_HUGEPAGE,
                );
            }
        }
        bytes.resize(stride * blocks + (2 << 20), 0);
        let start = bytes.as_ptr().align_offset(4096);
        for i in 0..blocks {
            let block = &mut bytes[start + i * stride..start + i * stride + block_bytes];
            for (j, b) in block.iter_mut().enumerate() {
                *b = fill(i, j);
            }
        }
        Self {
            bytes,
            start,
            stride,
        }
    }

    fn slices(&self, block_bytes: usize, blocks: usize) -> Vec<&[u8]> {
        (0..blocks)
            .map(|i| {
                &self.bytes
                    [self.start + i * self.stride..self.start + i * self.stride + block_bytes]
            })
            .collect()
    }

    fn slices_mut(&mut self, block_bytes: usize, blocks: usize) -> Vec<&mut [u8]> {
        let (start, stride) = (self.start, self.stride);
        self.bytes[start..]
            .chunks_mut(stride)
            .take(blocks)
            .map(|chunk| &mut chunk[..block_bytes])
            .collect()
    }
}

#[pymethods]
impl NativeBench {
    #[new]
    fn new(py: Python<'_>, config: PyConfig, block_bytes: usize, blocks: usize) -> PyResult<Self> {
        let mapped = config.to_cascade()?;
        py.detach(|| {
            let store = Cascade::open(&mapped.config)?;
            Ok(Self {
                store,
                block_bytes,
                blocks,
                data: Arena::new(block_bytes, blocks, |i, j| (i * 31 + j * 7) as u8),
                outs: std::sync::Mutex::new(Arena::new(block_bytes, blocks, |_, _| 1)),
            })
        })
        .py_err()
    }

    #[pyo3(signature = (batch = 64, repeats = 1))]
    fn run(&self, py: Python<'_>, batch: usize, repeats: usize) -> PyResult<Py<PyAny>> {
        if batch == 0 || repeats == 0 {
            return Err(invalid_input("batch and repeats must be at least 1"));
        }
        let timings = py
            .detach(|| {
                let mut outs = self
                    .outs
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                let data = self.data.slices(self.block_bytes, self.blocks);
                let mut outs = outs.slices_mut(self.block_bytes, self.blocks);
                run(&self.store, &data, &mut outs, batch, repeats)
            })
            .py_err()?;
        to_python(py, &timings)
    }
}
