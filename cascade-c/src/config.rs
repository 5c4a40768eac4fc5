//! `cascade_config`: the documented flat settings (GPU / shm capacities, shm path,
//! Lustre path, dedup, I/O threads) mapped onto Cascade's `[[tiers]]`.

use std::ffi::c_char;

use cascade::{CascadeConfig, Error, ErrorKind, TierConfig, TierRegistry};

use crate::args;
use crate::error::{CResult, guard};
use crate::status::CascadeStatus;

const GIB: u64 = 1 << 30;

/// Settings of a store with the documented names and defaults. Fill it with
/// `cascade_config_default`, change what you need, and open it with
/// `cascade_open_config`.
///
/// The tiers, fastest first:
/// - a GPU tier of `gpu_capacity_bytes` on device `gpu_device_id` when that is > 0
///   (skipped with a logged warning when the machine has no usable GPU or the build has
///   no GPU support, unless `gpu_required`);
/// - a shared-memory tier of `shm_capacity_bytes` when that is > 0, its pool file at
///   `shm_path` (NULL or `""`: `/dev/shm/cascade-<uid>-shm.pool`);
/// - a file tier in the directory `lustre_path` when it is neither NULL nor `""`.
///
/// The shm pool is allocated up front: the documented 64 GiB default needs that much
/// room in `/dev/shm`, and opening fails with `CASCADE_STATUS_UNAVAILABLE` naming the
/// free space when it is not there: set a capacity that fits the machine.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CascadeConfigC {
    /// Bytes of GPU memory for the GPU tier; 0 for none. Default: 32 GiB.
    pub gpu_capacity_bytes: u64,
    /// Bytes of the shared-memory tier; 0 for none. Default: 64 GiB.
    pub shm_capacity_bytes: u64,
    /// The shared-memory pool file; NULL or `""` for the per-user default.
    /// Default: `"/dev/shm/cascade"`. The string is read only during `cascade_open_config`.
    pub shm_path: *const c_char,
    /// Directory of the file tier (Lustre, GPFS, any POSIX directory); NULL or `""` for
    /// none. Default: `""`.
    pub lustre_path: *const c_char,
    /// A put of an id already stored copies nothing. Default: true.
    pub dedup_enabled: bool,
    /// Threads for batch calls; 0 for one per core. Default: 8.
    pub num_io_threads: i32,
    /// CUDA device ordinal of the GPU tier. Default: 0.
    pub gpu_device_id: i32,
    /// Fail the open instead of skipping the GPU tier when it cannot be opened.
    /// Default: false.
    pub gpu_required: bool,
    /// Bytes the file tier may hold; 0 for the tier's default. Default: 0.
    pub lustre_capacity_bytes: u64,
    /// A read from a slower tier moves the block to the fastest. Default: true.
    pub promote_on_read: bool,
}

impl Default for CascadeConfigC {
    fn default() -> Self {
        Self {
            gpu_capacity_bytes: 32 * GIB,
            shm_capacity_bytes: 64 * GIB,
            shm_path: c"/dev/shm/cascade".as_ptr(),
            lustre_path: c"".as_ptr(),
            dedup_enabled: true,
            num_io_threads: 8,
            gpu_device_id: 0,
            gpu_required: false,
            lustre_capacity_bytes: 0,
            promote_on_read: true,
        }
    }
}

fn toml_int(value: u64, field: &str) -> CResult<i64> {
    i64::try_from(value).map_err(|_| Error::config(format!("{field} is too large: {value}")).into())
}

impl CascadeConfigC {
    /// Cascade's own config for these settings.
    ///
    /// # Safety
    /// `shm_path` and `lustre_path` are NULL or NUL-terminated strings.
    pub unsafe fn to_cascade(&self) -> CResult<CascadeConfig> {
        // SAFETY: the caller's contract.
        let (shm_path, lustre_path) = unsafe {
            (
                args::text_opt(self.shm_path, "config.shm_path")?,
                args::text_opt(self.lustre_path, "config.lustre_path")?,
            )
        };
        let known = TierRegistry::builtin();
        let known = known.kinds();
        let mut tiers = Vec::new();
        if self.gpu_capacity_bytes > 0 {
            if known.contains(&"gpu") {
                let device = u64::try_from(self.gpu_device_id).map_err(|_| {
                    Error::config(format!(
                        "gpu_device_id must be >= 0, got {}",
                        self.gpu_device_id
                    ))
                })?;
                let mut gpu = TierConfig::new("gpu")
                    .named("gpu")
                    .with(
                        "capacity",
                        toml_int(self.gpu_capacity_bytes, "gpu_capacity_bytes")?,
                    )
                    .with("device_id", toml_int(device, "gpu_device_id")?);
                gpu.required = self.gpu_required;
                tiers.push(gpu);
            } else if self.gpu_required {
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    "gpu_required is set but this build of cascade has no GPU support (feature gpu)",
                )
                .into());
            }
        }
        if self.shm_capacity_bytes > 0 {
            let capacity = toml_int(self.shm_capacity_bytes, "shm_capacity_bytes")?;
            // Builds without the shm tier keep host blocks in process memory instead.
            let kind = if known.contains(&"shm") {
                "shm"
            } else {
                "memory"
            };
            let mut shm = TierConfig::new(kind).named(kind).with("capacity", capacity);
            if let (Some(path), "shm") = (shm_path, kind) {
                shm = shm.with("path", path);
            }
            tiers.push(shm);
        }
        if let Some(path) = lustre_path {
            if !known.contains(&"file") {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    "lustre_path is set but this build of cascade has no file tier (feature lustre)",
                )
                .into());
            }
            let mut file = TierConfig::new("file").named("lustre").with("path", path);
            if self.lustre_capacity_bytes > 0 {
                file = file.with(
                    "capacity",
                    toml_int(self.lustre_capacity_bytes, "lustre_capacity_bytes")?,
                );
            }
            tiers.push(file);
        }
        if tiers.is_empty() {
            return Err(Error::config(
                "the config has no tier: set shm_capacity_bytes, lustre_path or gpu_capacity_bytes",
            )
            .into());
        }
        let num_io_threads = usize::try_from(self.num_io_threads).map_err(|_| {
            Error::config(format!(
                "num_io_threads must be >= 0, got {}",
                self.num_io_threads
            ))
        })?;
        Ok(CascadeConfig {
            dedup: self.dedup_enabled,
            promote_on_read: self.promote_on_read,
            num_io_threads,
            tiers,
            ..CascadeConfig::default()
        })
    }
}

/// Fills `*out` with the documented defaults (see `cascade_config`). Its string fields
/// point to static strings.
///
/// Errors: `CASCADE_STATUS_INVALID_INPUT` when `out` is NULL.
///
/// Thread safety: safe from any thread.
///
/// # Safety
/// `out` points to writable memory for one `cascade_config`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cascade_config_default(out: *mut CascadeConfigC) -> CascadeStatus {
    guard(|| {
        // SAFETY: the caller's contract, checked for NULL; written whole, never read.
        let out = unsafe { args::out(out, "out")? };
        out.write(CascadeConfigC::default());
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones_and_map_to_tiers() {
        let c = CascadeConfigC::default();
        assert_eq!(c.gpu_capacity_bytes, 32 << 30);
        assert_eq!(c.shm_capacity_bytes, 64 << 30);
        assert_eq!(c.num_io_threads, 8);
        assert!(c.dedup_enabled);
        // SAFETY: the defaults' strings are static.
        let mapped = unsafe { c.to_cascade() }.map_err(|_| "maps").expect("maps");
        let kinds: Vec<&str> = mapped.tiers.iter().map(|t| t.kind.as_str()).collect();
        let expect_gpu = TierRegistry::builtin().kinds().contains(&"gpu");
        assert_eq!(kinds.first() == Some(&"gpu"), expect_gpu);
        assert!(
            mapped.tiers.iter().all(|t| t.kind != "file"),
            "no lustre_path, no file tier"
        );
        assert_eq!(mapped.num_io_threads, 8);
    }

    #[test]
    fn negative_threads_and_no_tier_are_config_errors() {
        let bad = CascadeConfigC {
            num_io_threads: -1,
            ..CascadeConfigC::default()
        };
        // SAFETY: static strings.
        let err = unsafe { bad.to_cascade() }.err().map(|f| f.status());
        assert_eq!(err, Some(CascadeStatus::Config));
        let empty = CascadeConfigC {
            gpu_capacity_bytes: 0,
            shm_capacity_bytes: 0,
            ..CascadeConfigC::default()
        };
        // SAFETY: static strings.
        let err = unsafe { empty.to_cascade() }.err().map(|f| f.status());
        assert_eq!(err, Some(CascadeStatus::Config));
    }
}
