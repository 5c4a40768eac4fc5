//! A batch call's blocks split by where they live (host or device memory, whole or in
//! pieces), each group copied by its own path, the results put back in the batch's
//! order and the first failure raised.

use pyo3::prelude::*;

use cascade::{BlockId, Error, ErrorKind};

use crate::data::{DeviceRange, Part};
use crate::errors::{invalid_input, to_py};

/// Which group a block of the batch went to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    Host,
    Device,
    Pieces,
}

/// A block given as pieces, concatenated in order.
pub enum Pieces<H> {
    /// Host buffers.
    Host(Vec<H>),
    /// Device ranges.
    Device(Vec<DeviceRange>),
}

/// The blocks of a batch, split by where their memory lives.
pub struct Split<H> {
    /// Per block, in batch order: the group it is in.
    routes: Vec<Route>,
    host: Vec<(BlockId, H)>,
    device: Vec<(BlockId, DeviceRange)>,
    pieces: Vec<(BlockId, Pieces<H>)>,
}

impl<H> Split<H> {
    /// Pairs each id with its block and splits them by where they live.
    pub fn new(ids: &[BlockId], parts: Vec<Part<H>>) -> Self {
        let mut split = Self {
            routes: Vec::with_capacity(parts.len()),
            host: Vec::new(),
            device: Vec::new(),
            pieces: Vec::new(),
        };
        for (id, part) in ids.iter().zip(parts) {
            let route = match part {
                Part::Host(bytes) => {
                    split.host.push((*id, bytes));
                    Route::Host
                }
                Part::Device(range) => {
                    split.device.push((*id, range));
                    Route::Device
                }
                Part::HostPieces(pieces) => {
                    split.pieces.push((*id, Pieces::Host(pieces)));
                    Route::Pieces
                }
                Part::DevicePieces(ranges) => {
                    split.pieces.push((*id, Pieces::Device(ranges)));
                    Route::Pieces
                }
            };
            split.routes.push(route);
        }
        split
    }

    /// As [`Split::run_all`] for calls that take whole blocks only: a block given as
    /// pieces fails with [`ErrorKind::Unsupported`].
    pub fn run<T>(
        self,
        host: impl FnOnce(&mut [(BlockId, H)]) -> Vec<cascade::Result<T>>,
        device: impl FnOnce(&[(BlockId, DeviceRange)]) -> Vec<cascade::Result<T>>,
    ) -> Vec<cascade::Result<T>> {
        self.run_all(host, device, |pieces| {
            pieces
                .iter()
                .map(|_| {
                    Err(Error::new(
                        ErrorKind::Unsupported,
                        "this call takes each block whole; a block given as a list of pieces \
                         is taken by CascadeStore",
                    ))
                })
                .collect()
        })
    }

    /// Runs `host` on the whole host blocks, `device` on the whole device blocks and
    /// `pieces` on the blocks given in pieces (each only when there are any) and returns
    /// one result per block, in the batch's order.
    pub fn run_all<T>(
        mut self,
        host: impl FnOnce(&mut [(BlockId, H)]) -> Vec<cascade::Result<T>>,
        device: impl FnOnce(&[(BlockId, DeviceRange)]) -> Vec<cascade::Result<T>>,
        pieces: impl FnOnce(&mut [(BlockId, Pieces<H>)]) -> Vec<cascade::Result<T>>,
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
        let mut pieces_done = if self.pieces.is_empty() {
            Vec::new()
        } else {
            pieces(&mut self.pieces)
        }
        .into_iter();
        self.routes
            .iter()
            .map(|route| {
                let done = match route {
                    Route::Host => host_done.next(),
                    Route::Device => device_done.next(),
                    Route::Pieces => pieces_done.next(),
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
    /// Splits the outputs of a batch read, after checking that no two (nor two pieces)
    /// share memory (they are written in parallel).
    pub fn outputs(ids: &[BlockId], parts: Vec<Part<&'a mut [u8]>>, what: &str) -> PyResult<Self> {
        let mut spans: Vec<(usize, usize, usize)> = parts
            .iter()
            .enumerate()
            .flat_map(|(i, p)| {
                p.spans()
                    .into_iter()
                    .map(move |(start, len)| (start, len, i))
            })
            .filter(|s| s.1 > 0)
            .collect();
        spans.sort_unstable();
        for pair in spans.windows(2) {
            if pair[1].0 < pair[0].0 + pair[0].1 {
                let message = if pair[0].2 == pair[1].2 {
                    format!(
                        "two pieces of {what}[{}] share memory; each piece needs its own memory",
                        pair[0].2
                    )
                } else {
                    format!(
                        "{what}[{}] and {what}[{}] share memory; each block needs its own output",
                        pair[0].2, pair[1].2
                    )
                };
                return Err(invalid_input(message));
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
