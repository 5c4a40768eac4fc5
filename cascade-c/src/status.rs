//! `cascade_status`: one code per [`ErrorKind`], returned by every fallible call.

use cascade::ErrorKind;

/// What a call did: `CASCADE_STATUS_OK`, or the kind of failure. The readable reason of
/// the last failure on the calling thread is `cascade_last_error_message()`.
///
/// The values are stable: new kinds get new numbers, existing numbers never change.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CascadeStatus {
    /// The call succeeded.
    Ok = 0,
    /// The block is not stored.
    NotFound = 1,
    /// A tier has no room left and none could be made.
    TierFull = 2,
    /// The block is larger than any tier can ever hold.
    TooLarge = 3,
    /// Stored bytes failed their checksum (they are never served) or on-disk data is damaged.
    Corrupt = 4,
    /// An operating-system I/O error.
    Io = 5,
    /// A configuration value is missing or invalid.
    Config = 6,
    /// A resource is absent on this machine (no GPU, no driver, no /dev/shm).
    Unavailable = 7,
    /// A runtime tier plugin failed to load or reported an error.
    Plugin = 8,
    /// A bad argument: a null pointer, an output buffer too small, bad hex text.
    InvalidInput = 9,
    /// Data written by an incompatible format version.
    Incompatible = 10,
    /// Another process holds the resource (e.g. the shm pool).
    Busy = 11,
    /// The operation is not supported by this build or deployment (e.g. device
    /// pointers without a GPU tier).
    Unsupported = 12,
    /// A bug inside Cascade: a Rust panic caught at the C boundary, or an error kind
    /// newer than this header. The store stays usable; please report the message.
    Internal = 13,
}

impl CascadeStatus {
    /// The code of an error kind.
    pub fn from_kind(kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::NotFound => Self::NotFound,
            ErrorKind::TierFull => Self::TierFull,
            ErrorKind::TooLarge => Self::TooLarge,
            ErrorKind::Corrupt => Self::Corrupt,
            ErrorKind::Io => Self::Io,
            ErrorKind::Config => Self::Config,
            ErrorKind::Unavailable => Self::Unavailable,
            ErrorKind::Plugin => Self::Plugin,
            ErrorKind::InvalidInput => Self::InvalidInput,
            ErrorKind::Incompatible => Self::Incompatible,
            ErrorKind::Busy => Self::Busy,
            ErrorKind::Unsupported => Self::Unsupported,
            _ => Self::Internal,
        }
    }

    /// Every code, in numeric order.
    pub const ALL: [CascadeStatus; 14] = [
        Self::Ok,
        Self::NotFound,
        Self::TierFull,
        Self::TooLarge,
        Self::Corrupt,
        Self::Io,
        Self::Config,
        Self::Unavailable,
        Self::Plugin,
        Self::InvalidInput,
        Self::Incompatible,
        Self::Busy,
        Self::Unsupported,
        Self::Internal,
    ];

    /// The stable lowercase name (the [`ErrorKind::as_str`] spelling for error kinds).
    pub fn name(self) -> &'static std::ffi::CStr {
        match self {
            Self::Ok => c"ok",
            Self::NotFound => c"not_found",
            Self::TierFull => c"tier_full",
            Self::TooLarge => c"too_large",
            Self::Corrupt => c"corrupt",
            Self::Io => c"io",
            Self::Config => c"config",
            Self::Unavailable => c"unavailable",
            Self::Plugin => c"plugin",
            Self::InvalidInput => c"invalid_input",
            Self::Incompatible => c"incompatible",
            Self::Busy => c"busy",
            Self::Unsupported => c"unsupported",
            Self::Internal => c"internal",
        }
    }
}

/// The stable lowercase name of a status code (`"ok"`, `"not_found"`, `"tier_full"`, ...),
/// or `"unknown"` for a number that is no code. Never NULL; the string is static.
///
/// Thread safety: safe from any thread.
#[unsafe(no_mangle)]
pub extern "C" fn cascade_status_name(status: i32) -> *const std::ffi::c_char {
    usize::try_from(status)
        .ok()
        .and_then(|i| CascadeStatus::ALL.get(i))
        .map_or(c"unknown", |s| s.name())
        .as_ptr()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_their_position_and_names_match_error_kinds() {
        for (i, status) in CascadeStatus::ALL.iter().enumerate() {
            assert_eq!(*status as usize, i);
        }
        for kind in [
            ErrorKind::NotFound,
            ErrorKind::TierFull,
            ErrorKind::TooLarge,
            ErrorKind::Corrupt,
            ErrorKind::Io,
            ErrorKind::Config,
            ErrorKind::Unavailable,
            ErrorKind::Plugin,
            ErrorKind::InvalidInput,
            ErrorKind::Incompatible,
            ErrorKind::Busy,
            ErrorKind::Unsupported,
        ] {
            let status = CascadeStatus::from_kind(kind);
            assert_ne!(status, CascadeStatus::Internal, "{kind}");
            assert_eq!(status.name().to_str().ok(), Some(kind.as_str()));
        }
    }

    #[test]
    fn status_name_of_a_bad_number_is_unknown() {
        for bad in [-1, 14, i32::MAX] {
            // SAFETY: cascade_status_name returns a static NUL-terminated string.
            let name = unsafe { std::ffi::CStr::from_ptr(cascade_status_name(bad)) };
            assert_eq!(name, c"unknown");
        }
    }
}
