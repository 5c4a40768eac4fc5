//! The C ABI of Cascade: `include/cascade.h` (generated from this crate by cbindgen) and
//! `libcascade_c.so` / `libcascade_c.a`. The header-only C++ wrapper `include/cascade.hpp`
//! is built on it. The guide is docs/c-api.md.
//!
//! Conventions of every function:
//! - it returns a `cascade_status` (`CASCADE_STATUS_OK` or a code per error kind), and
//!   a failing call records a readable reason for the calling thread
//!   (`cascade_last_error_message`);
//! - results go to out-parameters; a NULL or misaligned pointer, or a length no buffer
//!   can have, is `CASCADE_STATUS_INVALID_INPUT`, never a crash;
//! - no Rust panic crosses the boundary: each body runs under `catch_unwind`, and a
//!   caught panic is `CASCADE_STATUS_INTERNAL`;
//! - its doc says what may run at the same time ("Thread safety").

pub mod args;
pub mod async_get;
pub mod batch;
pub mod config;
pub mod device;
pub mod error;
pub mod ids;
pub mod prefetch;
pub mod stats;
pub mod status;
pub mod store;

pub use async_get::{
    CascadeGetBatchAsync, cascade_get_batch_async, cascade_get_batch_async_cancel,
    cascade_get_batch_async_free, cascade_get_batch_async_wait,
};
pub use batch::{cascade_get_batch, cascade_put_batch};
pub use config::{CascadeConfigC, cascade_config_default};
pub use device::{cascade_get_device, cascade_has_gpu_support, cascade_put_device};
pub use error::{cascade_clear_last_error, cascade_last_error_message, cascade_last_error_status};
pub use ids::{
    CASCADE_BLOCK_ID_HEX_LEN, CascadeBlockId, cascade_block_id_from_hex, cascade_block_id_to_hex,
    cascade_compute_block_id, cascade_prefix_key, cascade_prefix_keys,
};
pub use prefetch::{
    CASCADE_PREFETCH_FASTEST, CascadePrefetch, CascadePrefetchProgress, CascadePrefetchStats,
    cascade_get_prefetch_stats, cascade_prefetch, cascade_prefetch_cancel, cascade_prefetch_detach,
    cascade_prefetch_free, cascade_prefetch_prefix, cascade_prefetch_progress,
    cascade_prefetch_wait,
};
pub use stats::{
    CASCADE_TIER_NAME_LEN, CascadeStatsC, CascadeTierStatsC, cascade_get_stats,
    cascade_get_tier_stats,
};
pub use status::{CascadeStatus, cascade_status_name};
pub use store::{
    CascadeHandle, cascade_block_size, cascade_clear, cascade_close, cascade_contains,
    cascade_flush, cascade_get, cascade_lookup_prefix, cascade_open_config, cascade_open_default,
    cascade_open_toml_file, cascade_open_toml_str, cascade_put, cascade_remove,
};

/// The version of this library (`"0.1.0"`, the crate version), a static string.
///
/// Thread safety: safe from any thread.
#[unsafe(no_mangle)]
pub extern "C" fn cascade_version() -> *const std::ffi::c_char {
    const VERSION: &std::ffi::CStr = match std::ffi::CStr::from_bytes_with_nul(
        concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes(),
    ) {
        Ok(v) => v,
        Err(_) => c"unknown",
    };
    VERSION.as_ptr()
}
