//! Blocks kept in small device pieces (an engine's per-layer K and V), moved to and from
//! host memory through a device scratch buffer: the pieces of a run of host memory are
//! gathered into the scratch by one kernel launch and the run goes in one DMA (or the
//! other way round: one DMA into the scratch, one launch to scatter it). The copy
//! engines move a 4 KiB copy at a few GB/s; HBM moves the pieces at its own rate, and
//! the DMA is then as large as the run.

use cascade_core::Result;
use cascade_core::device::HostDeviceCopy;
use cudarc::driver::{CudaSlice, DevicePtr};

use crate::checksum::{PendingChecksums, finish_checksums};
use crate::copy::{CopyEngine, DmaCopy, Flight};
use crate::driver::cuda_error;

/// Copies shorter than this are worth gathering: the copy engine reaches most of the
/// link's rate only on copies of about this size and more (docs/benchmarks.md, "host
/// copier alone").
pub(crate) const SMALL_COPY: usize = 64 << 10;
/// Scratch bytes of one pass (one stream: gather, DMA).
const PASS_BYTES: usize = 64 << 20;
/// Each run starts this aligned in the scratch, so that the kernels take their wide
/// paths (16-byte words; 8-byte aligned checksums) whatever the length of the run
/// before it.
const SCRATCH_ALIGNMENT: usize = 256;
/// Passes in flight at once, so a large call holds at most this many scratch buffers.
const PASSES_IN_FLIGHT: usize = 4;

/// A run of small copies whose host ranges follow each other without a gap.
pub(crate) struct Run {
    host: usize,
    len: usize,
    /// `(device address, offset in the run, length)` of each piece, in host order.
    pieces: Vec<(u64, usize, usize)>,
}

/// Splits `copies` into those moved as they are and runs of at least two small copies
/// with adjacent host ranges (in the order given).
pub(crate) fn split_runs(copies: Vec<HostDeviceCopy>) -> (Vec<HostDeviceCopy>, Vec<Run>) {
    let mut singles = Vec::new();
    let mut runs: Vec<Run> = Vec::new();
    let mut open: Option<Run> = None;
    let close = |run: Option<Run>, singles: &mut Vec<HostDeviceCopy>, runs: &mut Vec<Run>| {
        let Some(run) = run else { return };
        if run.pieces.len() > 1 {
            runs.push(run);
        } else {
            for &(device, _, len) in &run.pieces {
                singles.push(HostDeviceCopy {
                    host: run.host,
                    device,
                    len,
                });
            }
        }
    };
    for c in copies {
        if c.len >= SMALL_COPY {
            close(open.take(), &mut singles, &mut runs);
            singles.push(c);
            continue;
        }
        match &mut open {
            Some(run) if run.host + run.len == c.host && run.len + c.len <= PASS_BYTES => {
                run.pieces.push((c.device, run.len, c.len));
                run.len += c.len;
            }
            _ => {
                close(open.take(), &mut singles, &mut runs);
                open = Some(Run {
                    host: c.host,
                    len: c.len,
                    pieces: vec![(c.device, 0, c.len)],
                });
            }
        }
    }
    close(open, &mut singles, &mut runs);
    (singles, runs)
}

/// Moves `runs` in direction `to_host` through device scratch buffers, and, on the way
/// to the host, hashes each of `hash` (host ranges) that lies inside one run from the
/// scratch; `(position in hash, checksum)` of those it hashed.
///
/// The caller must hold the engine's context current and a loaded piece kernel; every
/// device range must be valid, every host range reachable by DMA (registered or
/// pinned), until this returns.
pub(crate) fn move_runs(
    engine: &CopyEngine,
    runs: &[Run],
    to_host: bool,
    hash: &[(usize, usize)],
) -> Result<Vec<(usize, Option<u64>)>> {
    if runs.is_empty() {
        return Ok(Vec::new());
    }
    let kernel = engine.piece_kernel().ok_or_else(|| {
        cascade_core::Error::new(
            cascade_core::ErrorKind::Unavailable,
            "the piece-copy kernel is not loaded",
        )
    })?;
    let mut answers = Vec::new();
    // The ranges to hash by address, so each run finds those inside it by a search.
    let mut by_host: Vec<(usize, usize, usize)> = hash
        .iter()
        .enumerate()
        .map(|(p, &(host, len))| (host, len, p))
        .collect();
    by_host.sort_unstable();
    let passes = into_passes(runs);
    for group in passes.chunks(PASSES_IN_FLIGHT) {
        // Dropped last (locals drop in reverse): the flight drains its streams and the
        // pending checksums wait for their kernel before any scratch is freed.
        let mut scratches: Vec<CudaSlice<u8>> = Vec::with_capacity(group.len());
        let mut descriptors = Vec::with_capacity(group.len());
        let mut pending: Vec<(Vec<usize>, PendingChecksums<'_>)> = Vec::new();
        let mut flight: Flight<'_, ()> = Flight::new(engine);
        for pass in group {
            let k = engine.pick_stream();
            let stream = engine.stream(k);
            let bytes: usize = pass
                .iter()
                .map(|r| r.len.next_multiple_of(SCRATCH_ALIGNMENT))
                .sum();
            // SAFETY: every byte of the scratch that is read was written first: the runs
            // are covered by their pieces without gaps, gathered before the DMA out,
            // and the DMA in writes them whole before the scatter; the padding between
            // runs is never read.
            let scratch = unsafe { stream.alloc::<u8>(bytes) }
                .map_err(|e| cuda_error("cuMemAllocAsync", e))?;
            let base = {
                let (ptr, _sync) = scratch.device_ptr(stream);
                ptr
            };
            let mut pieces: Vec<DmaCopy> = Vec::new();
            let mut dma: Vec<DmaCopy> = Vec::with_capacity(pass.len());
            let mut hashed: Vec<(usize, (u64, usize))> = Vec::new();
            let mut at = 0u64;
            for run in pass.iter() {
                for &(device, offset, len) in &run.pieces {
                    let scratch_at = base + at + offset as u64;
                    // The scratch is the pieces' host side: filled from them on the
                    // way out, emptied into them on the way in.
                    pieces.push(DmaCopy::toward(to_host, scratch_at, device, len));
                }
                dma.push(DmaCopy::toward(
                    to_host,
                    run.host as u64,
                    base + at,
                    run.len,
                ));
                if to_host {
                    for (p, inside, len) in ranges_inside(&by_host, run.host, run.len) {
                        hashed.push((p, (base + at + inside as u64, len)));
                    }
                }
                at += run.len.next_multiple_of(SCRATCH_ALIGNMENT) as u64;
            }
            if to_host {
                // SAFETY: the pieces' device ranges are the caller's, valid until this
                // returns; the scratch lives in `scratches` until the flight landed.
                descriptors.push(unsafe { kernel.launch(stream, &pieces) }?);
                if let Some(checksums) = engine.checksum_kernel()
                    && !hashed.is_empty()
                {
                    let blocks: Vec<(u64, usize)> = hashed.iter().map(|&(_, b)| b).collect();
                    // SAFETY: the blocks lie in the scratch, gathered before the hash
                    // (same stream), unchanged and alive until the pending checksums
                    // are finished or dropped, both before the scratch is.
                    match unsafe { checksums.start_on(stream, &blocks) } {
                        Ok(p) => pending.push((hashed.iter().map(|&(p, _)| p).collect(), p)),
                        Err(e) => tracing::warn!(error = %e, "checksum kernel launch failed"),
                    }
                }
                flight.push_on(k, &dma, ())?;
            } else {
                engine.enqueue(k, &dma)?;
                // SAFETY: as above; the scatter runs after the DMA into the scratch.
                descriptors.push(unsafe { kernel.launch(stream, &pieces) }?);
                flight.push_on(k, &[], ())?;
            }
            scratches.push(scratch);
        }
        let landed = flight.land(|()| {});
        for (positions, p) in pending {
            let count = positions.len();
            answers.extend(positions.into_iter().zip(finish_checksums(Some(p), count)));
        }
        landed?;
        drop(descriptors);
        drop(scratches);
    }
    Ok(answers)
}

/// The ranges of `by_host` (`(host, len, position)`, sorted by host) that lie wholly
/// inside the run of `len` bytes at `host`: `(position, offset in the run, length)`.
fn ranges_inside(
    by_host: &[(usize, usize, usize)],
    host: usize,
    len: usize,
) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
    let first = by_host.partition_point(|&(h, _, _)| h < host);
    by_host[first..]
        .iter()
        .take_while(move |&&(h, _, _)| h < host + len)
        .filter(move |&&(h, l, _)| h + l <= host + len)
        .map(move |&(h, l, p)| (p, h - host, l))
}

/// `runs` grouped into passes of about [`PASS_BYTES`] (a run larger than that is a pass
/// of its own).
fn into_passes(runs: &[Run]) -> Vec<&[Run]> {
    let mut passes = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (k, run) in runs.iter().enumerate() {
        if bytes > 0 && bytes + run.len > PASS_BYTES {
            passes.push(&runs[start..k]);
            (start, bytes) = (k, 0);
        }
        bytes += run.len;
    }
    if start < runs.len() {
        passes.push(&runs[start..]);
    }
    passes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(host: usize, device: u64, len: usize) -> HostDeviceCopy {
        HostDeviceCopy { host, device, len }
    }

    #[test]
    fn small_adjacent_copies_form_runs_and_the_rest_stay_single() {
        let copies = vec![
            copy(0, 100, 4096),
            copy(4096, 900, 4096),
            copy(8192, 500, 4096),
            // A gap: a new run of one piece, so a single.
            copy(20_000, 7, 100),
            // Large: single, and it closes the run before it.
            copy(20_100, 8, SMALL_COPY),
            copy(1 << 20, 9, 10),
            copy((1 << 20) + 10, 10, 20),
        ];
        let (singles, runs) = split_runs(copies);
        assert_eq!(runs.len(), 2);
        assert_eq!((runs[0].host, runs[0].len), (0, 3 * 4096));
        assert_eq!(
            runs[0].pieces,
            vec![(100, 0, 4096), (900, 4096, 4096), (500, 8192, 4096)]
        );
        assert_eq!((runs[1].host, runs[1].len), (1 << 20, 30));
        let singles: Vec<(usize, u64, usize)> =
            singles.iter().map(|c| (c.host, c.device, c.len)).collect();
        assert_eq!(singles, vec![(20_000, 7, 100), (20_100, 8, SMALL_COPY)]);
    }

    #[test]
    fn a_run_finds_exactly_the_ranges_wholly_inside_it() {
        // (host, len, position), sorted by host.
        let by_host = [
            (0, 100, 4),
            (100, 50, 0),
            (150, 60, 3),
            (210, 10, 1),
            (300, 5, 2),
        ];
        let inside: Vec<_> = ranges_inside(&by_host, 100, 120).collect();
        // 150..210 lies inside 100..220, 210..220 too; 0..100 ends where the run starts.
        assert_eq!(inside, vec![(0, 0, 50), (3, 50, 60), (1, 110, 10)]);
        // A range that sticks out of the run is not one of it.
        let inside: Vec<_> = ranges_inside(&by_host, 100, 100).collect();
        assert_eq!(inside, vec![(0, 0, 50)]);
        assert_eq!(ranges_inside(&by_host, 400, 10).count(), 0);
    }

    #[test]
    fn passes_cover_every_run_once_in_order() {
        let runs: Vec<Run> = [PASS_BYTES / 2, PASS_BYTES / 2, 1, PASS_BYTES * 2, 5]
            .iter()
            .enumerate()
            .map(|(k, &len)| Run {
                host: k,
                len,
                pieces: Vec::new(),
            })
            .collect();
        let passes = into_passes(&runs);
        let hosts: Vec<Vec<usize>> = passes
            .iter()
            .map(|p| p.iter().map(|r| r.host).collect())
            .collect();
        assert_eq!(hosts, vec![vec![0, 1], vec![2], vec![3], vec![4]]);
    }
}
