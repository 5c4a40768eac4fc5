//! The few MPI calls the cluster store makes, over a communicator of its own whose error
//! handler returns errors (`MPI_ERRORS_RETURN`) instead of aborting the job.
//!
//! rsmpi's safe point-to-point API discards MPI's return codes, so these wrappers call
//! `mpi::ffi` directly and turn every code other than `MPI_SUCCESS` into a
//! [`cascade_core::Error`] of kind `Io` naming the call and the peer.

use std::ffi::{c_int, c_void};
use std::mem::MaybeUninit;

use cascade_core::{Error, ErrorKind, Result};
use mpi::ffi;

/// `MPI_SUCCESS` is 0 in every implementation (the standard fixes it).
const SUCCESS: c_int = 0;

/// The largest tag every MPI accepts (the standard's lower bound for `MPI_TAG_UB`).
pub(crate) const TAG_MAX: i32 = 32767;

/// An `MPI_Comm` duplicated from `MPI_COMM_WORLD`, freed on drop.
pub(crate) struct Comm {
    raw: ffi::MPI_Comm,
    rank: i32,
    size: i32,
}

// SAFETY: the runtime only hands out communicators after checking that MPI provides
// MPI_THREAD_MULTIPLE, under which any thread may call MPI on any handle concurrently.
unsafe impl Send for Comm {}
// SAFETY: as for Send: MPI_THREAD_MULTIPLE makes concurrent calls on one communicator legal.
unsafe impl Sync for Comm {}

/// A message matched by [`Comm::probe_any`], not received yet.
pub(crate) struct Matched {
    message: ffi::MPI_Message,
    /// The sender's rank.
    pub source: i32,
    /// The message's length in bytes.
    pub len: usize,
}

fn check(code: c_int, call: &'static str) -> Result<()> {
    if code == SUCCESS {
        return Ok(());
    }
    let mut text = [0 as std::ffi::c_char; ffi::MPI_MAX_ERROR_STRING as usize + 1];
    let mut len: c_int = 0;
    // SAFETY: the buffer holds MPI_MAX_ERROR_STRING characters as MPI_Error_string requires.
    let described = unsafe { ffi::MPI_Error_string(code, text.as_mut_ptr(), &mut len) };
    let detail = if described == SUCCESS {
        let bytes: Vec<u8> = text[..usize::try_from(len).unwrap_or(0).min(text.len())]
            .iter()
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    } else {
        format!("error code {code}")
    };
    Err(Error::new(
        ErrorKind::Io,
        format!("{call} failed: {detail}"),
    ))
}

fn count_of(len: usize) -> Result<c_int> {
    c_int::try_from(len).map_err(|_| {
        Error::new(
            ErrorKind::TooLarge,
            "an MPI message is limited to 2 GiB - 1 bytes",
        )
        .with_context("bytes", len)
    })
}

fn byte_type() -> ffi::MPI_Datatype {
    // SAFETY: RSMPI_UINT8_T is a constant handle initialised by the C shim of mpi-sys.
    unsafe { ffi::RSMPI_UINT8_T }
}

impl Comm {
    /// Duplicates `MPI_COMM_WORLD` (collective: every rank calls it in the same order).
    pub(crate) fn dup_world() -> Result<Self> {
        let mut raw = MaybeUninit::<ffi::MPI_Comm>::uninit();
        // SAFETY: MPI is initialised (the runtime checked); `raw` receives the new handle.
        let code = unsafe { ffi::MPI_Comm_dup(ffi::RSMPI_COMM_WORLD, raw.as_mut_ptr()) };
        check(code, "MPI_Comm_dup")?;
        // SAFETY: MPI_Comm_dup succeeded, so it wrote the handle.
        let raw = unsafe { raw.assume_init() };
        let mut comm = Self {
            raw,
            rank: 0,
            size: 0,
        };
        // SAFETY: `raw` is a valid communicator; ERRORS_RETURN is a predefined handler.
        let code = unsafe { ffi::MPI_Comm_set_errhandler(raw, ffi::RSMPI_ERRORS_RETURN) };
        check(code, "MPI_Comm_set_errhandler")?;
        // SAFETY: valid communicator, out-pointer to a live integer.
        let code = unsafe { ffi::MPI_Comm_rank(raw, &mut comm.rank) };
        check(code, "MPI_Comm_rank")?;
        // SAFETY: as above.
        let code = unsafe { ffi::MPI_Comm_size(raw, &mut comm.size) };
        check(code, "MPI_Comm_size")?;
        Ok(comm)
    }

    /// This process's rank.
    pub(crate) fn rank(&self) -> i32 {
        self.rank
    }

    /// How many ranks the communicator has.
    pub(crate) fn size(&self) -> i32 {
        self.size
    }

    /// Sends `data` to `dest` and returns once the buffer may be reused.
    pub(crate) fn send(&self, data: &[u8], dest: i32, tag: i32) -> Result<()> {
        let count = count_of(data.len())?;
        // SAFETY: `data` is valid for `count` bytes for the whole (blocking) call.
        let code = unsafe {
            ffi::MPI_Send(
                data.as_ptr().cast::<c_void>(),
                count,
                byte_type(),
                dest,
                tag,
                self.raw,
            )
        };
        check(code, "MPI_Send").map_err(|e| e.with_context("rank", dest))
    }

    /// Receives into each buffer, in order, one message from `source` with `tag`; returns
    /// each message's length.
    pub(crate) fn recv_parts(
        &self,
        buffers: &mut [&mut [u8]],
        source: i32,
        tag: i32,
    ) -> Result<Vec<usize>> {
        self.exchange_parts(&[], source, buffers, source, tag)
    }

    /// Sends `parts` to `dest` and receives `buffers` from `source` (all with `tag`), all
    /// in flight at once; returns the received messages' lengths.
    pub(crate) fn exchange_parts(
        &self,
        parts: &[&[u8]],
        dest: i32,
        buffers: &mut [&mut [u8]],
        source: i32,
        tag: i32,
    ) -> Result<Vec<usize>> {
        let mut requests = Vec::with_capacity(parts.len() + buffers.len());
        let mut first_error = None;
        for buffer in buffers.iter_mut() {
            let count = count_of(buffer.len())?;
            let mut request = MaybeUninit::<ffi::MPI_Request>::uninit();
            // SAFETY: each buffer is borrowed mutably until `wait_all` below completed
            // every request, so MPI writes only memory this call owns.
            let code = unsafe {
                ffi::MPI_Irecv(
                    buffer.as_mut_ptr().cast::<c_void>(),
                    count,
                    byte_type(),
                    source,
                    tag,
                    self.raw,
                    request.as_mut_ptr(),
                )
            };
            if let Err(e) = check(code, "MPI_Irecv") {
                first_error = Some(e.with_context("rank", source));
                break;
            }
            // SAFETY: MPI_Irecv succeeded and wrote the request.
            requests.push(unsafe { request.assume_init() });
        }
        let receives = requests.len();
        for part in parts {
            if first_error.is_some() {
                break;
            }
            let count = count_of(part.len())?;
            let mut request = MaybeUninit::<ffi::MPI_Request>::uninit();
            // SAFETY: each part outlives the requests: they are all completed by
            // `wait_all` below before this function returns.
            let code = unsafe {
                ffi::MPI_Isend(
                    part.as_ptr().cast::<c_void>(),
                    count,
                    byte_type(),
                    dest,
                    tag,
                    self.raw,
                    request.as_mut_ptr(),
                )
            };
            if let Err(e) = check(code, "MPI_Isend") {
                first_error = Some(e.with_context("rank", dest));
                break;
            }
            // SAFETY: MPI_Isend succeeded and wrote the request.
            requests.push(unsafe { request.assume_init() });
        }
        // Even after a failed post, the requests already posted must complete before the
        // buffers they use are released.
        let waited = wait_all(&mut requests);
        match first_error {
            Some(e) => Err(e),
            None => waited.map(|mut lens| {
                lens.truncate(receives);
                lens
            }),
        }
    }

    /// Starts sending `data` to `dest`; [`Sends::wait`] (or dropping `sends`) completes it.
    ///
    /// # Safety
    ///
    /// `data` must stay valid and unmodified until `sends` has been waited for or
    /// dropped (not leaked): MPI reads it in the background until then.
    pub(crate) unsafe fn isend(
        &self,
        sends: &mut Sends,
        data: &[u8],
        dest: i32,
        tag: i32,
    ) -> Result<()> {
        let count = count_of(data.len())?;
        let mut request = MaybeUninit::<ffi::MPI_Request>::uninit();
        // SAFETY: the caller keeps `data` alive and unchanged until the request completes.
        let code = unsafe {
            ffi::MPI_Isend(
                data.as_ptr().cast::<c_void>(),
                count,
                byte_type(),
                dest,
                tag,
                self.raw,
                request.as_mut_ptr(),
            )
        };
        check(code, "MPI_Isend").map_err(|e| e.with_context("rank", dest))?;
        // SAFETY: MPI_Isend succeeded and wrote the request.
        sends.requests.push(unsafe { request.assume_init() });
        Ok(())
    }

    /// Receives the next message from `source` with `tag`, whatever its length, waiting
    /// for it (yielding the core between polls, so a rank's own progress thread and
    /// other ranks on the same cores keep running).
    pub(crate) fn recv_vec(&self, source: i32, tag: i32) -> Result<Vec<u8>> {
        let mut idle = Idle::default();
        loop {
            if let Some(matched) = self.probe(source, tag)? {
                return self.receive(matched);
            }
            idle.pause();
        }
    }

    /// Matches a pending message from any rank with `tag`, if one has arrived.
    pub(crate) fn probe_any(&self, tag: i32) -> Result<Option<Matched>> {
        // SAFETY: RSMPI_ANY_SOURCE is a constant initialised by the C shim.
        self.probe(unsafe { ffi::RSMPI_ANY_SOURCE }, tag)
    }

    fn probe(&self, source: i32, tag: i32) -> Result<Option<Matched>> {
        let mut flag: c_int = 0;
        let mut message = MaybeUninit::<ffi::MPI_Message>::uninit();
        let mut status = MaybeUninit::<ffi::MPI_Status>::uninit();
        // SAFETY: valid communicator; the out-pointers point at live locals.
        let code = unsafe {
            ffi::MPI_Improbe(
                source,
                tag,
                self.raw,
                &mut flag,
                message.as_mut_ptr(),
                status.as_mut_ptr(),
            )
        };
        check(code, "MPI_Improbe")?;
        if flag == 0 {
            return Ok(None);
        }
        // SAFETY: a successful match wrote both the message handle and the status.
        let (message, status) = unsafe { (message.assume_init(), status.assume_init()) };
        let mut count: c_int = 0;
        // SAFETY: `status` describes a matched message of bytes.
        let code = unsafe { ffi::MPI_Get_count(&status, byte_type(), &mut count) };
        check(code, "MPI_Get_count")?;
        Ok(Some(Matched {
            message,
            source: status.MPI_SOURCE,
            len: usize::try_from(count).unwrap_or(0),
        }))
    }

    /// Receives a matched message.
    pub(crate) fn receive(&self, matched: Matched) -> Result<Vec<u8>> {
        let Matched {
            mut message,
            source,
            len,
        } = matched;
        let mut data = vec![0u8; len];
        let mut status = MaybeUninit::<ffi::MPI_Status>::uninit();
        // SAFETY: `data` holds exactly the matched message's length; `message` is the
        // handle MPI_Improbe returned, received exactly once (it is moved in here).
        let code = unsafe {
            ffi::MPI_Mrecv(
                data.as_mut_ptr().cast::<c_void>(),
                count_of(len)?,
                byte_type(),
                &mut message,
                status.as_mut_ptr(),
            )
        };
        check(code, "MPI_Mrecv").map_err(|e| e.with_context("rank", source))?;
        Ok(data)
    }

    /// Waits until every rank reached this call (collective; one thread at a time).
    ///
    /// Non-blocking barrier polled with yields: a blocking MPI_Barrier spins on the core
    /// the rank's progress thread shares, delaying the requests it should answer.
    pub(crate) fn barrier(&self) -> Result<()> {
        let mut request = MaybeUninit::<ffi::MPI_Request>::uninit();
        // SAFETY: valid communicator; `request` receives the handle.
        let code = unsafe { ffi::MPI_Ibarrier(self.raw, request.as_mut_ptr()) };
        check(code, "MPI_Ibarrier")?;
        // SAFETY: MPI_Ibarrier succeeded and wrote the request.
        let mut requests = [unsafe { request.assume_init() }];
        wait_all(&mut requests).map(|_| ())
    }

    /// Sums `values` element-wise over all ranks (collective; one thread at a time).
    pub(crate) fn sum_u64(&self, values: &[u64]) -> Result<Vec<u64>> {
        let mut out = vec![0u64; values.len()];
        let count = count_of(values.len())?;
        let mut request = MaybeUninit::<ffi::MPI_Request>::uninit();
        // SAFETY: both buffers hold `count` u64 values and the datatype matches; both
        // outlive the request, completed by `wait_all` before this returns.
        let code = unsafe {
            ffi::MPI_Iallreduce(
                values.as_ptr().cast::<c_void>(),
                out.as_mut_ptr().cast::<c_void>(),
                count,
                ffi::RSMPI_UINT64_T,
                ffi::RSMPI_SUM,
                self.raw,
                request.as_mut_ptr(),
            )
        };
        check(code, "MPI_Iallreduce")?;
        // SAFETY: MPI_Iallreduce succeeded and wrote the request.
        let mut requests = [unsafe { request.assume_init() }];
        wait_all(&mut requests)?;
        Ok(out)
    }
}

/// Sends in flight, completed by [`Sends::wait`] or on drop.
#[derive(Default)]
pub(crate) struct Sends {
    requests: Vec<ffi::MPI_Request>,
}

impl Sends {
    /// Waits until every send completed.
    pub(crate) fn wait(&mut self) -> Result<()> {
        let done = wait_all(&mut self.requests).map(|_| ());
        self.requests.clear();
        done
    }
}

impl Drop for Sends {
    fn drop(&mut self) {
        if !self.requests.is_empty()
            && let Err(e) = self.wait()
        {
            tracing::warn!(error = %e, "sends failed while being dropped");
        }
    }
}

/// How a thread waiting on MPI spends the time between polls: yielding the core for a
/// while (answers usually come within microseconds), then sleeping briefly. A waiter that
/// spins for long takes the core, or its hyperthread sibling, from the rank's progress
/// thread and from the ranks that do the work it waits for.
#[derive(Default)]
pub(crate) struct Idle {
    polls: u32,
}

impl Idle {
    /// Polls that only yield before the waiter starts sleeping.
    const YIELDS: u32 = 200;
    /// The sleep between later polls.
    const SLEEP: std::time::Duration = std::time::Duration::from_micros(20);

    /// Waits a little before the next poll.
    pub(crate) fn pause(&mut self) {
        if self.polls < Self::YIELDS {
            self.polls += 1;
            std::thread::yield_now();
        } else {
            std::thread::sleep(Self::SLEEP);
        }
    }
}

/// Completes `requests`, yielding the core between polls; returns each one's length
/// in bytes.
fn wait_all(requests: &mut [ffi::MPI_Request]) -> Result<Vec<usize>> {
    if requests.is_empty() {
        return Ok(Vec::new());
    }
    let count = count_of(requests.len())?;
    let mut statuses: Vec<MaybeUninit<ffi::MPI_Status>> =
        (0..requests.len()).map(|_| MaybeUninit::uninit()).collect();
    let mut indices: Vec<c_int> = vec![0; requests.len()];
    let mut lens = vec![0usize; requests.len()];
    let mut left = requests.len();
    // SAFETY: RSMPI_UNDEFINED is a constant initialised by the C shim.
    let undefined = unsafe { ffi::RSMPI_UNDEFINED };
    let mut idle = Idle::default();
    while left > 0 {
        let mut done: c_int = 0;
        // SAFETY: `requests` holds `count` requests (completed ones are set to
        // MPI_REQUEST_NULL by MPI and skipped); `indices` and `statuses` hold as many slots.
        let code = unsafe {
            ffi::MPI_Testsome(
                count,
                requests.as_mut_ptr(),
                &mut done,
                indices.as_mut_ptr(),
                statuses.as_mut_ptr().cast::<ffi::MPI_Status>(),
            )
        };
        check(code, "MPI_Testsome")?;
        if done == undefined {
            break;
        }
        let done = usize::try_from(done).unwrap_or(0);
        if done == 0 {
            idle.pause();
            continue;
        }
        // Progress: keep polling hot while messages keep completing.
        idle = Idle::default();
        for (index, status) in indices[..done].iter().zip(&statuses[..done]) {
            let mut n: c_int = 0;
            // SAFETY: MPI_Testsome filled the first `done` statuses.
            let code = unsafe { ffi::MPI_Get_count(status.as_ptr(), byte_type(), &mut n) };
            check(code, "MPI_Get_count")?;
            if let Some(slot) = usize::try_from(*index).ok().and_then(|i| lens.get_mut(i)) {
                *slot = usize::try_from(n).unwrap_or(0);
            }
        }
        left = left.saturating_sub(done);
    }
    Ok(lens)
}

impl Drop for Comm {
    fn drop(&mut self) {
        if crate::runtime::finalized() {
            return;
        }
        // SAFETY: the communicator was created by MPI_Comm_dup and is freed once; MPI is
        // still initialised (checked above).
        let code = unsafe { ffi::MPI_Comm_free(&mut self.raw) };
        if code != SUCCESS {
            tracing::warn!(code, "MPI_Comm_free failed");
        }
    }
}
