//! The last failure of each thread, and the guard every extern function runs its body in.
//!
//! A failing call records its status and reason in a thread-local; the caller reads
//! them with `cascade_last_error_status` / `cascade_last_error_message`. Successful calls
//! leave the record alone (so reading it costs nothing on the fast path), and the text is
//! rendered only when asked for, so a cache miss costs no allocation.

use std::cell::RefCell;
use std::ffi::{CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};

use cascade::{BlockId, Error, ErrorKind};

use crate::status::CascadeStatus;

/// Why an extern call failed, before it is recorded.
pub enum Failure {
    /// An error from the store or from argument checks.
    Error(Error),
    /// A get or size query of a block that is not stored (rendered lazily).
    Missing(BlockId),
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Self::Error(error)
    }
}

impl Failure {
    /// An [`ErrorKind::InvalidInput`] failure.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Error(Error::new(ErrorKind::InvalidInput, message))
    }

    /// The status code this failure is reported with.
    pub fn status(&self) -> CascadeStatus {
        match self {
            Self::Error(e) => CascadeStatus::from_kind(e.kind()),
            Self::Missing(_) => CascadeStatus::NotFound,
        }
    }
}

/// Result type of the functions behind the extern entry points.
pub type CResult<T = ()> = Result<T, Failure>;

enum Reason {
    Failure(Failure),
    Panic(String),
}

struct LastError {
    status: CascadeStatus,
    reason: Reason,
    text: Option<CString>,
}

thread_local! {
    static LAST: RefCell<Option<LastError>> = const { RefCell::new(None) };
}

fn record(status: CascadeStatus, reason: Reason) {
    LAST.with(|last| {
        *last.borrow_mut() = Some(LastError {
            status,
            reason,
            text: None,
        });
    });
}

/// Records `failure` as this thread's last error and returns its status.
pub fn fail(failure: Failure) -> CascadeStatus {
    let status = failure.status();
    record(status, Reason::Failure(failure));
    status
}

/// Runs an extern function's body: a failure is recorded and returned as its status, and
/// a panic is caught (it must never unwind into C) and reported as
/// [`CascadeStatus::Internal`].
pub fn guard(body: impl FnOnce() -> CResult) -> CascadeStatus {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => CascadeStatus::Ok,
        Ok(Err(failure)) => fail(failure),
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic with no message".to_string());
            record(CascadeStatus::Internal, Reason::Panic(message));
            CascadeStatus::Internal
        }
    }
}

/// Runs `body` for a function that has no status to return (close, version), so a
/// panic is swallowed into the thread's last error instead of crossing into C.
pub fn guard_infallible<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    let mut value = None;
    let status = guard(|| {
        value = Some(body());
        Ok(())
    });
    match (status, value) {
        (CascadeStatus::Ok, Some(v)) => v,
        _ => fallback,
    }
}

fn render(reason: &Reason) -> String {
    match reason {
        Reason::Failure(Failure::Error(e)) => e.to_string(),
        Reason::Failure(Failure::Missing(id)) => Error::not_found(*id).to_string(),
        Reason::Panic(message) => {
            format!("internal: a bug in cascade was caught at the C boundary: {message}")
        }
    }
}

/// The status of the last failed call on the calling thread, or `CASCADE_STATUS_OK` when
/// no call on this thread has failed since it started (or since
/// `cascade_clear_last_error`). Successful calls do not reset it.
///
/// Thread safety: safe from any thread; each thread has its own record.
#[unsafe(no_mangle)]
pub extern "C" fn cascade_last_error_status() -> CascadeStatus {
    guard_infallible(CascadeStatus::Internal, || {
        LAST.with(|last| {
            last.borrow()
                .as_ref()
                .map_or(CascadeStatus::Ok, |l| l.status)
        })
    })
}

/// The readable reason of the last failed call on the calling thread, e.g.
/// `"tier_full: no room in shm (...)"`, or `""` when there is none. Never NULL.
///
/// The string is owned by the library and stays valid until the next failing call on the
/// same thread (or `cascade_clear_last_error`); copy it to keep it.
///
/// Thread safety: safe from any thread; each thread has its own record.
#[unsafe(no_mangle)]
pub extern "C" fn cascade_last_error_message() -> *const c_char {
    guard_infallible(c"".as_ptr(), || {
        LAST.with(|last| {
            let mut last = last.borrow_mut();
            let Some(last) = last.as_mut() else {
                return c"".as_ptr();
            };
            let reason = &last.reason;
            last.text
                .get_or_insert_with(|| {
                    let text = render(reason).replace('\0', "\\0");
                    CString::new(text).unwrap_or_default()
                })
                .as_ptr()
        })
    })
}

/// Forgets the calling thread's last error (status `CASCADE_STATUS_OK`, message `""`).
///
/// Thread safety: safe from any thread; affects only the calling thread's record.
#[unsafe(no_mangle)]
pub extern "C" fn cascade_clear_last_error() {
    guard_infallible((), || LAST.with(|last| *last.borrow_mut() = None));
}

#[cfg(test)]
mod tests {
    use std::ffi::CStr;

    use super::*;

    fn message() -> String {
        // SAFETY: the pointer is a NUL-terminated string valid until the next failure.
        unsafe { CStr::from_ptr(cascade_last_error_message()) }
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn failures_are_recorded_per_thread_and_panics_are_caught() {
        cascade_clear_last_error();
        assert_eq!(cascade_last_error_status(), CascadeStatus::Ok);
        assert_eq!(message(), "");

        let status = guard(|| Err(Error::new(ErrorKind::TierFull, "no room").into()));
        assert_eq!(status, CascadeStatus::TierFull);
        assert_eq!(cascade_last_error_status(), CascadeStatus::TierFull);
        assert_eq!(message(), "tier_full: no room");

        assert_eq!(guard(|| Ok(())), CascadeStatus::Ok);
        assert_eq!(cascade_last_error_status(), CascadeStatus::TierFull);

        let status = guard(|| panic!("boom"));
        assert_eq!(status, CascadeStatus::Internal);
        assert!(message().contains("boom"), "{}", message());

        std::thread::spawn(|| assert_eq!(cascade_last_error_status(), CascadeStatus::Ok))
            .join()
            .expect("the other thread sees its own record");
        assert_eq!(guard_infallible(7, || panic!("again")), 7);
    }

    #[test]
    fn a_miss_renders_the_id() {
        let id = BlockId::from_u128(5);
        assert_eq!(fail(Failure::Missing(id)), CascadeStatus::NotFound);
        assert!(message().contains(&id.to_hex()));
    }
}
