//! The io_uring engine's read and write paths: the runs of a whole `get_batch`, and the
//! pieces of a whole appended run, go to the calling thread's ring in one submission.
//! Each run is verified as soon as its read completes, while the others are still in
//! flight; under O_DIRECT the next piece of a write is staged while the previous one is
//! on its way to the device. Where this thread has no ring, the pread/pwrite paths run.

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use cascade_core::Result;
use io_uring::{opcode, types::Fd};

use crate::format::{HEADER_LEN, PAGE, record_span};
use crate::io::{self, IOV_MAX};
use crate::readers::ReadFile;
use crate::segment::Segment;
use crate::store::{Inner, Item, Run, Writer};
use crate::uring::{self, Ring, STAGING};

/// Bytes per write request under O_DIRECT: small enough that staging the next piece
/// overlaps the device writing this one, large enough for large device requests.
const WRITE_PIECE: u64 = 2 << 20;
/// Zeros for record padding.
static ZEROS: [u8; PAGE as usize] = [0u8; PAGE as usize];

/// One vectored request: part of run `run`, `len` bytes at `offset`.
struct Vectored {
    run: usize,
    offset: u64,
    len: usize,
    iov: Vec<libc::iovec>,
}

fn iovec(ptr: *mut u8, len: usize) -> libc::iovec {
    libc::iovec {
        iov_base: ptr.cast(),
        iov_len: len,
    }
}

/// `bytes` as an error when a completion reports one (`-errno`).
fn completion_error(result: i32) -> Option<std::io::Error> {
    (result < 0).then(|| std::io::Error::from_raw_os_error(-result))
}

impl Inner {
    /// The runs of one `get_batch`, read with one submission on this thread's ring.
    pub fn read_runs_uring(&self, runs: Vec<Run<'_>>) -> Vec<(usize, Result<usize>)> {
        let read = uring::with_ring(runs, |ring, runs| {
            if self.direct {
                self.read_direct_uring(ring, runs)
            } else {
                self.read_buffered_uring(ring, runs)
            }
        });
        match read {
            Ok(outcomes) => outcomes,
            Err(runs) => {
                self.counters
                    .uring_fallbacks
                    .fetch_add(1, Ordering::Relaxed);
                self.read_runs_psync(runs)
            }
        }
    }

    /// Buffered: one `readv` per run (per 1024 iovecs), straight into the callers'
    /// buffers, through this thread's own handle on each segment.
    fn read_buffered_uring(
        &self,
        ring: &mut Ring,
        mut runs: Vec<Run<'_>>,
    ) -> Vec<(usize, Result<usize>)> {
        let junk = ring.junk();
        let segments: Vec<Arc<Segment>> = runs
            .iter()
            .map(|run| Arc::clone(&run[0].1.segment))
            .collect();
        // Kept open until every request completed.
        let files: Vec<ReadFile<'_>> = segments.iter().map(|s| self.read_file(s)).collect();
        let mut headers: Vec<Vec<[u8; HEADER_LEN]>> = runs
            .iter()
            .map(|run| vec![[0u8; HEADER_LEN]; run.len()])
            .collect();
        let mut requests: Vec<Vectored> = Vec::new();
        for (k, (run, heads)) in runs.iter_mut().zip(headers.iter_mut()).enumerate() {
            let mut request = Vectored {
                run: k,
                offset: run[0].1.record.offset,
                len: 0,
                iov: Vec::new(),
            };
            for ((_, entry, out), header) in run.iter_mut().zip(heads.iter_mut()) {
                if request.iov.len() + 3 > IOV_MAX {
                    let offset = request.offset + request.len as u64;
                    requests.push(std::mem::replace(
                        &mut request,
                        Vectored {
                            run: k,
                            offset,
                            len: 0,
                            iov: Vec::new(),
                        },
                    ));
                }
                let span = record_span(entry.record.len) as usize;
                let pad = span - HEADER_LEN - out.len();
                request.iov.push(iovec(header.as_mut_ptr(), HEADER_LEN));
                request.iov.push(iovec(out.as_mut_ptr(), out.len()));
                if pad > 0 {
                    // Every pad lands in the same junk page: its bytes are never read.
                    request.iov.push(iovec(junk, pad));
                }
                request.len += span;
            }
            requests.push(request);
        }
        let mut pending = vec![0usize; runs.len()];
        for request in &requests {
            pending[request.run] += 1;
        }
        let mut failed = vec![false; runs.len()];
        let mut runs: Vec<Option<Run<'_>>> = runs.into_iter().map(Some).collect();
        let mut outcomes = Vec::new();
        let mut retry = Vec::new();
        {
            let mut batch = ring.batch();
            for (tag, request) in requests.iter().enumerate() {
                let entry = opcode::Readv::new(
                    Fd(files[request.run].as_raw_fd()),
                    request.iov.as_ptr(),
                    request.iov.len() as u32,
                )
                .offset(request.offset)
                .build();
                // SAFETY: the iovecs, the headers, the callers' buffers, the junk page and
                // the files all outlive `batch`, which waits for every request when
                // dropped; a run's memory is touched again only once all its requests
                // completed (`pending`).
                unsafe { batch.push(entry, tag as u64) };
            }
            batch.submit();
            while let Some((tag, result)) = batch.next() {
                let Some(request) = requests.get(tag as usize) else {
                    continue;
                };
                let k = request.run;
                if result < 0 || result as usize != request.len {
                    failed[k] = true;
                }
                pending[k] -= 1;
                if pending[k] > 0 {
                    continue;
                }
                let Some(run) = runs[k].take() else { continue };
                if failed[k] {
                    retry.push(run);
                } else {
                    let problems = Self::check_read(&run, &headers[k]);
                    outcomes.extend(self.finish_run(run, problems));
                }
            }
        }
        // Short or failed: let each record report its own outcome.
        for run in retry {
            outcomes.extend(self.read_each(run));
        }
        drop(files);
        outcomes
    }

    /// O_DIRECT: each run read into the ring's (registered) staging buffer, as many at
    /// once as it holds, then verified and copied out.
    fn read_direct_uring(
        &self,
        ring: &mut Ring,
        runs: Vec<Run<'_>>,
    ) -> Vec<(usize, Result<usize>)> {
        let mut outcomes = Vec::new();
        // Waves of runs that fit the staging buffer together: (run, staging offset).
        let mut waves: Vec<Vec<(Run<'_>, usize)>> = Vec::new();
        let mut used = 0usize;
        for run in runs {
            let len = Self::extent(&run).1 as usize;
            if len > STAGING {
                outcomes.extend(self.read_run(run));
                continue;
            }
            if waves.is_empty() || used + len > STAGING {
                waves.push(Vec::new());
                used = 0;
            }
            if let Some(wave) = waves.last_mut() {
                wave.push((run, used));
            }
            used += len;
        }
        for wave in waves {
            let mut wave: Vec<Option<(Run<'_>, usize)>> = wave.into_iter().map(Some).collect();
            let mut retry = Vec::new();
            {
                let mut batch = ring.batch();
                for (tag, slot) in wave.iter().enumerate() {
                    let Some((run, at)) = slot else { continue };
                    let (start, len) = Self::extent(run);
                    let fd = run[0].1.segment.file.as_raw_fd();
                    let entry = batch.staging().read(fd, *at, len as usize, start);
                    // SAFETY: each run reads into its own staging range; the staging
                    // buffer and the segment files (held by the entries) outlive `batch`,
                    // which waits for every request when dropped.
                    unsafe { batch.push(entry, tag as u64) };
                }
                batch.submit();
                while let Some((tag, result)) = batch.next() {
                    let Some((mut run, at)) = wave.get_mut(tag as usize).and_then(Option::take)
                    else {
                        continue;
                    };
                    let (start, len) = Self::extent(&run);
                    if result < 0 || result as u64 != len {
                        retry.push(run);
                        continue;
                    }
                    // SAFETY: this run's request completed; no other request targets
                    // its staging range.
                    let bytes = unsafe { batch.staging().slice(at, len as usize) };
                    let problems = Self::check_staged(&mut run, bytes, start);
                    outcomes.extend(self.finish_run(run, problems));
                }
            }
            for run in retry {
                outcomes.extend(self.read_each(run));
            }
        }
        outcomes
    }

    /// Start and length of the page-aligned extent a run's records cover.
    fn extent(run: &Run<'_>) -> (u64, u64) {
        let start = run[0].1.record.offset;
        let end = run[run.len() - 1].1.record.end();
        (start, end - start)
    }

    /// Writes `run` (its encoded `headers`, `total` bytes) at `at` through this thread's
    /// ring, or with pwrite where it has none.
    pub(crate) fn write_records_uring(
        &self,
        w: &mut Writer,
        segment: &Segment,
        run: &[Item<'_>],
        headers: &[[u8; HEADER_LEN]],
        at: u64,
        total: usize,
    ) -> std::io::Result<()> {
        let largest = run
            .iter()
            .map(|item| record_span(item.data.len() as u64))
            .max()
            .unwrap_or(0);
        let direct = self.direct;
        if direct && largest as usize > STAGING {
            return Self::write_records(w, segment, run, headers, at, total, direct);
        }
        let written = uring::with_ring((), |ring, ()| {
            if direct {
                write_direct(ring, segment, run, headers, at)
            } else {
                write_buffered(ring, segment, run, headers, at)
            }
        });
        match written {
            Ok(result) => result,
            Err(()) => {
                self.counters
                    .uring_fallbacks
                    .fetch_add(1, Ordering::Relaxed);
                Self::write_records(w, segment, run, headers, at, total, direct)
            }
        }
    }
}

/// Buffered: `writev` requests of up to 1024 iovecs from the callers' buffers, submitted
/// together.
fn write_buffered(
    ring: &mut Ring,
    segment: &Segment,
    run: &[Item<'_>],
    headers: &[[u8; HEADER_LEN]],
    at: u64,
) -> std::io::Result<()> {
    // (first slice, slice count, offset, bytes) of each request, over `bufs`.
    let mut bufs: Vec<&[u8]> = Vec::with_capacity(run.len() * 3);
    let mut requests: Vec<(usize, usize, u64, usize)> = Vec::new();
    let mut offset = at;
    let mut open = (0usize, 0usize, at, 0usize);
    for (item, header) in run.iter().zip(headers) {
        let span = record_span(item.data.len() as u64) as usize;
        let pad = span - HEADER_LEN - item.data.len();
        if open.1 + 3 > IOV_MAX {
            requests.push(open);
            open = (bufs.len(), 0, offset, 0);
        }
        for part in [&header[..], item.data, &ZEROS[..pad]] {
            if !part.is_empty() {
                bufs.push(part);
                open.1 += 1;
            }
        }
        open.3 += span;
        offset += span as u64;
    }
    requests.push(open);
    let iovs: Vec<libc::iovec> = bufs
        .iter()
        .map(|b| iovec(b.as_ptr().cast_mut(), b.len()))
        .collect();
    let mut error = None;
    let mut short = Vec::new();
    {
        let mut batch = ring.batch();
        for (tag, (first, count, offset, _)) in requests.iter().enumerate() {
            let entry = opcode::Writev::new(
                Fd(segment.file.as_raw_fd()),
                iovs[*first..].as_ptr(),
                *count as u32,
            )
            .offset(*offset)
            .build();
            // SAFETY: the iovecs and the buffers they name (the callers' data, the
            // headers, the zeros) outlive `batch`, which waits for every request when
            // dropped; the kernel only reads them.
            unsafe { batch.push(entry, tag as u64) };
        }
        batch.submit();
        while let Some((tag, result)) = batch.next() {
            let Some(&request) = requests.get(tag as usize) else {
                continue;
            };
            if let Some(e) = completion_error(result) {
                error.get_or_insert(e);
            } else if result as usize != request.3 {
                short.push(request);
            }
        }
    }
    if let Some(e) = error {
        return Err(e);
    }
    // A short write is finished with pwritev (rewriting the same bytes is harmless).
    for (first, count, offset, _) in short {
        io::write_all_vectored_at(&segment.file, &bufs[first..first + count], offset)?;
    }
    Ok(())
}

/// O_DIRECT: the run staged piece by piece into the ring's staging buffer, each piece
/// submitted as soon as it is staged.
fn write_direct(
    ring: &mut Ring,
    segment: &Segment,
    run: &[Item<'_>],
    headers: &[[u8; HEADER_LEN]],
    at: u64,
) -> std::io::Result<()> {
    let fd = segment.file.as_raw_fd();
    // (staging offset, bytes, file offset) of each request.
    let mut pieces: Vec<(usize, usize, u64)> = Vec::new();
    let mut error = None;
    let mut batch = ring.batch();
    let mut settle = |batch: &mut uring::Batch<'_>, pieces: &[(usize, usize, u64)]| {
        while let Some((tag, result)) = batch.next() {
            let Some(&piece) = pieces.get(tag as usize) else {
                continue;
            };
            if let Some(e) = completion_error(result) {
                error.get_or_insert(e);
            } else if result as usize != piece.1 {
                // A short write: the whole piece again with pwrite, from the same
                // aligned staging bytes (rewriting what did land is harmless).
                // SAFETY: the request completed and nothing else targets its range.
                let bytes = unsafe { batch.staging().slice(piece.0, piece.1) };
                if let Err(e) = io::write_all_vectored_at(&segment.file, &[bytes], piece.2) {
                    error.get_or_insert(e);
                }
            }
        }
    };
    let mut used = 0usize;
    let mut offset = at;
    let mut i = 0;
    while i < run.len() {
        let mut j = i;
        let mut len = 0u64;
        while j < run.len() {
            let span = record_span(run[j].data.len() as u64);
            if j > i && len + span > WRITE_PIECE {
                break;
            }
            len += span;
            j += 1;
        }
        let len = len as usize;
        if used + len > STAGING {
            settle(&mut batch, &pieces);
            used = 0;
        }
        {
            // SAFETY: requests in flight cover only staging bytes before `used`.
            let target = unsafe { batch.staging().slice_mut(used, len) };
            let mut cursor = 0;
            for (item, header) in run[i..j].iter().zip(&headers[i..j]) {
                let span = record_span(item.data.len() as u64) as usize;
                target[cursor..cursor + HEADER_LEN].copy_from_slice(header);
                let body = cursor + HEADER_LEN;
                target[body..body + item.data.len()].copy_from_slice(item.data);
                target[body + item.data.len()..cursor + span].fill(0);
                cursor += span;
            }
        }
        let entry = batch.staging().write(fd, used, len, offset);
        // SAFETY: the staged range is not written again until this request completed
        // (`settle` runs before staging is reused); the segment's file outlives `batch`.
        unsafe { batch.push(entry, pieces.len() as u64) };
        batch.submit();
        pieces.push((used, len, offset));
        used += len;
        offset += len as u64;
        i = j;
    }
    settle(&mut batch, &pieces);
    drop(batch);
    error.map_or(Ok(()), Err)
}
