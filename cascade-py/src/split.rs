//! A batch call's blocks split by where they live (host or device memory), each half
//! copied by its own path, the results put back in the batch's order and the first
//! failure raised.

use pyo3::prelude::*;

use cascade::{BlockId, Error, ErrorKind};

use crate::data::{DeviceRange, Part};
use crate::errors::{invalid_input, to_py};

/// The blocks of a batch, split by where their memory lives.
pub struct Split<H> {
    /// Per block, in batch order: whether it is in device memory.
    on_device: Vec<bool>,
    host: Vec<(BlockId, H)>,
    device: Vec<(BlockId, DeviceRange)>,
}

impl<H> Split<H> {
    /// Pairs each id with its block and splits them by where they live.
    pub fn new(ids: &[BlockId], parts: Vec<Part<H>>) -> Self {
        let mut split = Self {
            on_device: Vec::with_capacity(parts.len()),
            host: Vec::new(),
            device: Vec::new(),
        };
        for (id, part) in ids.iter().zip(parts) {
            match part {
                Part::Host(bytes) => {
                    split.on_device.push(false);
                    split.host.push((*id, bytes));
                }
                Part::Device(range) => {
                    split.on_device.push(true);
                    split.device.push((*id, range));
                }
            }
        }
        split
    }

    /// Runs `host` on the host blocks and `device` on the device blocks (each only when
    /// there are any) and returns one result per block, in the batch's order.
    pub fn run<T>(
        mut self,
        host: impl FnOnce(&mut [(BlockId, H)]) -> Vec<cascade::Result<T>>,
        device: impl FnOnce(&[(BlockId, DeviceRange)]) -> Vec<cascade::Result<T>>,
    ) -> Vec<cascade::Result<T>> {
        let mut host_done = if self.host.is_empty() {
            Vec::new()
        } else {
            host(&mut self.host)
        }
        .into_iter();
        let mut device_done = if self.device.is_empty() {
            Vec::new()
        } else {
            device(&self.device)
        }
        .into_iter();
        self.on_device
            .iter()
            .map(|&on_device| {
                let done = if on_device {
                    device_done.next()
                } else {
                    host_done.next()
                };
                done.unwrap_or_else(|| {
                    Err(Error::new(
                        ErrorKind::Io,
                        "the tier returned no result for this block",
                    ))
                })
            })
            .collect()
    }
}

impl<'a> Split<&'a mut [u8]> {
    /// Splits the outputs of a batch read, after checking that no two share memory
    /// (they are written in parallel).
    pub fn outputs(ids: &[BlockId], parts: Vec<Part<&'a mut [u8]>>, what: &str) -> PyResult<Self> {
        let mut spans: Vec<(usize, usize, usize)> = parts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let (start, len) = p.span();
                (start, len, i)
            })
            .filter(|s| s.1 > 0)
            .collect();
        spans.sort_unstable();
        for pair in spans.windows(2) {
            if pair[1].0 < pair[0].0 + pair[0].1 {
                return Err(invalid_input(format!(
                    "{what}[{}] and {what}[{}] share memory; each block needs its own output",
                    pair[0].2, pair[1].2
                )));
            }
        }
        Ok(Self::new(ids, parts))
    }
}

/// The values of a batch's results, or the first failure (its `context["index"]` naming
/// the block) once every block was tried.
pub fn raise_first<T>(results: Vec<cascade::Result<T>>) -> PyResult<Vec<T>> {
    let mut values = Vec::with_capacity(results.len());
    for (index, result) in results.into_iter().enumerate() {
        values.push(result.map_err(|e| to_py(e.with_context("index", index)))?);
    }
    Ok(values)
}
