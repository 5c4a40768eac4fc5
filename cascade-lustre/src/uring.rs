//! io_uring mechanics: the probe, one ring per thread with its registered O_DIRECT
//! staging buffer, and batches that never give memory back while the kernel holds it.
//!
//! A ring belongs to the thread that made it (thread-local, `SINGLE_ISSUER` where the
//! kernel has it), so a batch is submitted without locks: every thread calling
//! `get_batch` or `put_batch` is an I/O thread with a ring of its own.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;

use io_uring::{IoUring, Probe, opcode, squeue};

use crate::format::PAGE;

/// Submission-queue entries per ring: more requests than a batch has in flight.
const ENTRIES: u32 = 256;
/// Bytes of the per-ring staging buffer for O_DIRECT (records are not page-aligned in
/// the caller's memory, so direct I/O goes through it). Registered with the ring where
/// the kernel allows (`RLIMIT_MEMLOCK`), which saves pinning its pages on every request.
pub const STAGING: usize = 16 << 20;

/// Whether this process may use io_uring: creates a ring, checks the operations the tier
/// needs, and runs one no-op through it. `Err` says why not.
pub fn probe() -> Result<(), String> {
    let mut ring = IoUring::new(8).map_err(|e| format!("io_uring_setup failed: {e}"))?;
    let mut probe = Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| format!("io_uring probe failed: {e}"))?;
    let needed = [
        (opcode::Readv::CODE, "readv"),
        (opcode::Writev::CODE, "writev"),
        (opcode::Read::CODE, "read"),
        (opcode::Write::CODE, "write"),
    ];
    for (code, name) in needed {
        if !probe.is_supported(code) {
            return Err(format!("the kernel's io_uring lacks {name}"));
        }
    }
    let nop = opcode::Nop::new().build().user_data(7);
    // SAFETY: a no-op references no memory.
    unsafe { ring.submission().push(&nop) }.map_err(|_| "io_uring queue full".to_string())?;
    ring.submit_and_wait(1)
        .map_err(|e| format!("io_uring_enter failed: {e}"))?;
    match ring.completion().next() {
        Some(cqe) if cqe.result() >= 0 => Ok(()),
        Some(cqe) => Err(format!(
            "io_uring no-op failed: {}",
            io::Error::from_raw_os_error(-cqe.result())
        )),
        None => Err("io_uring no-op did not complete".into()),
    }
}

/// Page-aligned memory for O_DIRECT requests, addressed only through raw pointers: the
/// kernel writes into parts of it while the thread reads others.
pub struct Staging {
    base: *mut u8,
    /// The allocation behind `base` (never touched as a slice).
    _alloc: Vec<u8>,
    /// Registered with the ring as fixed buffer 0.
    registered: bool,
}

impl Staging {
    fn new() -> Self {
        let mut alloc = vec![0u8; STAGING + PAGE as usize];
        let skip = alloc.as_ptr().align_offset(PAGE as usize);
        // SAFETY: `skip` < PAGE, so `skip + STAGING` stays inside the allocation.
        let base = unsafe { alloc.as_mut_ptr().add(skip) };
        Self {
            base,
            _alloc: alloc,
            registered: false,
        }
    }

    /// Address of byte `at` (`at <= STAGING`).
    pub fn at(&self, at: usize) -> *mut u8 {
        debug_assert!(at <= STAGING);
        // SAFETY: callers stay within the STAGING bytes after `base`.
        unsafe { self.base.add(at.min(STAGING)) }
    }

    /// A read request of `len` bytes at `offset` of `fd` into staging byte `at`.
    pub fn read(&self, fd: i32, at: usize, len: usize, offset: u64) -> squeue::Entry {
        let fd = io_uring::types::Fd(fd);
        if self.registered {
            opcode::ReadFixed::new(fd, self.at(at), len as u32, 0)
                .offset(offset)
                .build()
        } else {
            opcode::Read::new(fd, self.at(at), len as u32)
                .offset(offset)
                .build()
        }
    }

    /// A write request of staging bytes `at..at + len` to `offset` of `fd`.
    pub fn write(&self, fd: i32, at: usize, len: usize, offset: u64) -> squeue::Entry {
        let fd = io_uring::types::Fd(fd);
        if self.registered {
            opcode::WriteFixed::new(fd, self.at(at), len as u32, 0)
                .offset(offset)
                .build()
        } else {
            opcode::Write::new(fd, self.at(at), len as u32)
                .offset(offset)
                .build()
        }
    }

    /// Staging bytes `at..at + len`, once no request targets them.
    ///
    /// # Safety
    ///
    /// No request in flight may read or write these bytes while the slice lives.
    pub unsafe fn slice(&self, at: usize, len: usize) -> &[u8] {
        debug_assert!(at + len <= STAGING);
        // SAFETY: inside the allocation (caller keeps `at + len <= STAGING`); nothing
        // writes these bytes meanwhile (the caller's promise).
        unsafe { std::slice::from_raw_parts(self.at(at), len.min(STAGING - at.min(STAGING))) }
    }

    /// Staging bytes `at..at + len` for the thread to fill before a write request.
    ///
    /// # Safety
    ///
    /// No request in flight may read or write these bytes while the slice lives.
    #[allow(clippy::mut_from_ref)] // the memory is the kernel's and ours, never a Rust borrow's
    pub unsafe fn slice_mut(&self, at: usize, len: usize) -> &mut [u8] {
        debug_assert!(at + len <= STAGING);
        // SAFETY: as for `slice`, and no other slice of these bytes exists (caller).
        unsafe { std::slice::from_raw_parts_mut(self.at(at), len.min(STAGING - at.min(STAGING))) }
    }
}

/// A thread's ring.
pub struct Ring {
    // Declared first, so it is dropped (its fixed buffer unregistered) before the
    // staging memory is freed.
    uring: IoUring,
    in_flight: usize,
    ready: VecDeque<(u64, i32)>,
    staging: Option<Staging>,
    /// One page that receives the padding between records on buffered reads (never read).
    junk: Vec<u8>,
}

impl Ring {
    fn new() -> io::Result<Self> {
        // Completions are only needed when this thread waits for them: deferring the
        // kernel's completion work to then saves interrupting the thread (kernel 6.1+).
        let uring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(ENTRIES)
            .or_else(|_| IoUring::new(ENTRIES))?;
        Ok(Self {
            uring,
            in_flight: 0,
            ready: VecDeque::new(),
            staging: None,
            junk: vec![0u8; PAGE as usize],
        })
    }

    /// This ring's staging buffer, allocated (and registered where allowed) on first use.
    pub fn staging(&mut self) -> &Staging {
        if self.staging.is_none() {
            let mut staging = Staging::new();
            let iov = libc::iovec {
                iov_base: staging.base.cast(),
                iov_len: STAGING,
            };
            // SAFETY: the memory stays allocated while registered: `uring` is dropped
            // (unregistering it) before `staging`, see the field order.
            match unsafe { self.uring.submitter().register_buffers(&[iov]) } {
                Ok(()) => staging.registered = true,
                Err(e) => {
                    tracing::debug!(error = %e, "io_uring: staging buffer not registered (RLIMIT_MEMLOCK?); using plain reads and writes")
                }
            }
            self.staging = Some(staging);
        }
        match &self.staging {
            Some(staging) => staging,
            None => unreachable!("set just above"),
        }
    }

    /// The page buffered reads drop record padding into.
    pub fn junk(&mut self) -> *mut u8 {
        self.junk.as_mut_ptr()
    }

    /// Starts a batch; it waits for all its requests before it is dropped.
    pub fn batch(&mut self) -> Batch<'_> {
        Batch { ring: self }
    }

    fn reap(&mut self) -> usize {
        let mut got = 0;
        for cqe in self.uring.completion() {
            self.ready.push_back((cqe.user_data(), cqe.result()));
            got += 1;
        }
        self.in_flight -= got.min(self.in_flight);
        got
    }

    /// Submits what is queued and waits until at least one completion arrived.
    fn wait(&mut self) {
        let mut warned = false;
        loop {
            if self.reap() > 0 || self.in_flight == 0 {
                return;
            }
            match self.uring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EINTR) | Some(libc::EAGAIN) | Some(libc::EBUSY)
                    ) => {}
                Err(e) => {
                    // Requests the kernel accepted still complete, and their memory must
                    // not be handed back before: keep waiting, without spinning.
                    if !warned {
                        tracing::warn!(error = %e, "io_uring_enter failed while requests are in flight; retrying");
                        warned = true;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
        }
    }
}

/// Requests submitted together; dropping it waits for every one still in flight.
pub struct Batch<'r> {
    ring: &'r mut Ring,
}

impl Batch<'_> {
    /// Queues `entry` tagged `tag` (submitted at the next [`Batch::submit`] or wait).
    ///
    /// # Safety
    ///
    /// Every buffer, iovec array and file descriptor `entry` refers to must stay valid,
    /// and its buffers untouched by anyone else, until this batch returned the entry's
    /// completion from [`Batch::next`] or was dropped.
    pub unsafe fn push(&mut self, entry: squeue::Entry, tag: u64) {
        let entry = entry.user_data(tag);
        // Never more requests in flight than the completion queue holds.
        while self.ring.in_flight >= ENTRIES as usize {
            self.ring.wait();
        }
        loop {
            // SAFETY: the caller's promise covers the memory the entry refers to.
            if unsafe { self.ring.uring.submission().push(&entry) }.is_ok() {
                self.ring.in_flight += 1;
                return;
            }
            // The submission queue is full: hand it to the kernel first.
            if let Err(e) = self.ring.uring.submit() {
                tracing::debug!(error = %e, "io_uring submit failed; waiting for completions");
                self.ring.wait();
            }
        }
    }

    /// Hands the queued requests to the kernel without waiting.
    pub fn submit(&mut self) {
        if let Err(e) = self.ring.uring.submit() {
            tracing::debug!(error = %e, "io_uring submit failed; the next wait retries");
        }
    }

    /// The next completion (tag, result: bytes or -errno), waiting for it; `None` once
    /// nothing is in flight.
    pub fn next(&mut self) -> Option<(u64, i32)> {
        if self.ring.ready.is_empty() {
            self.ring.wait();
        }
        self.ring.ready.pop_front()
    }

    /// The ring's staging buffer.
    pub fn staging(&mut self) -> &Staging {
        self.ring.staging()
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        while self.ring.in_flight > 0 {
            self.ring.wait();
        }
        self.ring.ready.clear();
    }
}

enum Slot {
    Untried,
    Ready(Box<Ring>),
    Failed,
}

thread_local! {
    static RING: RefCell<Slot> = const { RefCell::new(Slot::Untried) };
}

/// Runs `f` with this thread's ring (made on first use); `Err(arg)` when this thread has
/// none (it could not be created, or the thread is already inside `with_ring`), so the
/// caller does the work with pread/pwrite instead.
pub fn with_ring<T, R>(arg: T, f: impl FnOnce(&mut Ring, T) -> R) -> Result<R, T> {
    RING.with(|cell| {
        let Ok(mut slot) = cell.try_borrow_mut() else {
            return Err(arg);
        };
        if matches!(*slot, Slot::Untried) {
            *slot = match Ring::new() {
                Ok(ring) => Slot::Ready(Box::new(ring)),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot create an io_uring for this thread; its file I/O uses pread/pwrite");
                    Slot::Failed
                }
            };
        }
        match &mut *slot {
            Slot::Ready(ring) => Ok(f(ring, arg)),
            _ => Err(arg),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;

    /// Whether io_uring runs here; a skip fails where `CASCADE_REQUIRE` names io_uring.
    fn ring_or_skip() -> bool {
        if let Err(why) = probe() {
            cascade_core::require::skip(
                cascade_core::require::Requirement::IoUring,
                format!("io_uring unavailable here ({why})"),
            );
            return false;
        }
        true
    }

    #[test]
    fn a_batch_reads_many_ranges_and_reports_each() {
        if !ring_or_skip() {
            return;
        }
        let mut file = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..(1u32 << 20)).map(|n| (n % 251) as u8).collect();
        file.write_all(&data).unwrap();
        let mut outs = vec![vec![0u8; 1000]; 40];
        let done = with_ring((), |ring, ()| {
            let mut batch = ring.batch();
            for (k, out) in outs.iter_mut().enumerate() {
                let entry = opcode::Read::new(
                    io_uring::types::Fd(file.as_raw_fd()),
                    out.as_mut_ptr(),
                    out.len() as u32,
                )
                .offset(k as u64 * 20_000)
                .build();
                // SAFETY: `outs` and `file` outlive the batch, which is drained below.
                unsafe { batch.push(entry, k as u64) };
            }
            batch.submit();
            let mut seen = Vec::new();
            while let Some((tag, result)) = batch.next() {
                assert_eq!(result, 1000);
                seen.push(tag);
            }
            seen.sort_unstable();
            seen
        })
        .unwrap_or_else(|()| panic!("no ring"));
        assert_eq!(done, (0..40).collect::<Vec<u64>>());
        for (k, out) in outs.iter().enumerate() {
            assert_eq!(out[..], data[k * 20_000..k * 20_000 + 1000]);
        }
    }

    #[test]
    fn the_ring_is_not_reentrant_and_says_so() {
        if !ring_or_skip() {
            return;
        }
        let inner = with_ring((), |_, ()| with_ring((), |_, ()| ()).is_err()).unwrap();
        assert!(inner, "a nested use gets Err and falls back");
    }

    #[test]
    fn staging_reads_and_writes_round_trip_registered_or_not() {
        if !ring_or_skip() {
            return;
        }
        let mut file = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..(2 * PAGE as usize)).map(|n| (n % 253) as u8).collect();
        file.write_all(&data).unwrap();
        let fd = file.as_raw_fd();
        let registered = with_ring((), |ring, ()| {
            let mut batch = ring.batch();
            let entry = batch.staging().read(fd, PAGE as usize, data.len(), 0);
            // SAFETY: the staging range and the file outlive the batch, drained below.
            unsafe { batch.push(entry, 1) };
            assert_eq!(batch.next(), Some((1, data.len() as i32)));
            // SAFETY: the read completed; nothing else targets the range.
            let read = unsafe { batch.staging().slice(PAGE as usize, data.len()) }.to_vec();
            assert_eq!(read, data);
            let entry = batch
                .staging()
                .write(fd, PAGE as usize, PAGE as usize, 2 * PAGE);
            // SAFETY: as above; the kernel only reads the range.
            unsafe { batch.push(entry, 2) };
            assert_eq!(batch.next(), Some((2, PAGE as i32)));
            drop(batch);
            ring.staging().registered
        })
        .unwrap_or_else(|()| panic!("no ring"));
        let mut tail = vec![0u8; PAGE as usize];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut tail, 2 * PAGE).unwrap();
        assert_eq!(tail, data[..PAGE as usize]);
        eprintln!("staging registered with the ring: {registered}");
    }
}
