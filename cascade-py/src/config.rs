//! `CascadeConfig`: the documented flat settings, mapped onto Cascade's TOML tiers.

use pyo3::prelude::*;

use cascade::HasherKind;
use cascade::{CascadeConfig, ErrorKind, TierConfig, TierRegistry};

use crate::errors::{IntoPy, kind_error};

const GIB: u64 = 1 << 30;

/// Settings of a store, with the documented names (`gpu_capacity_bytes`,
/// `shm_capacity_bytes`, `shm_path`, `lustre_path`, `dedup_enabled`, `num_io_threads`)
/// plus the rest of Cascade's configuration (`promote_on_read`, `hasher`,
/// `write_policy`, ...).
///
/// The tiers, fastest first:
/// - a GPU tier when `gpu_capacity_bytes > 0` (this build must have GPU support; with no
///   usable GPU the store opens the other tiers and warns, or raises when
///   `gpu_required` is true);
/// - a shared-memory tier of `shm_capacity_bytes` when that is > 0, its pool file at
///   `shm_path` (empty: `/dev/shm/cascade-<uid>-shm.pool`);
/// - a file tier under the directory `lustre_path` when it is not empty.
///
/// Defaults differ from the C++ ones where those cannot work on a small machine:
/// no GPU tier, 1 GiB of shared memory, and one I/O thread per core.
#[pyclass(
    name = "CascadeConfig",
    module = "cascade",
    get_all,
    set_all,
    from_py_object
)]
#[derive(Clone, Debug)]
pub struct PyConfig {
    /// Bytes of GPU memory for the GPU tier; 0 for none. Default: 0.
    pub gpu_capacity_bytes: u64,
    /// CUDA device ordinal of the GPU tier. Default: 0.
    pub gpu_device_id: u64,
    /// Raise instead of warning when the GPU tier cannot be opened. Default: False.
    pub gpu_required: bool,
    /// Bytes of the shared-memory tier; 0 for none. Default: 1 GiB.
    pub shm_capacity_bytes: u64,
    /// The shared-memory pool file; empty for the per-user default. Default: "".
    pub shm_path: String,
    /// Directory of the file tier (Lustre, GPFS, any POSIX directory); empty for none.
    /// Default: "".
    pub lustre_path: String,
    /// Bytes the file tier may hold; 0 for the tier's default. Default: 0.
    pub lustre_capacity_bytes: u64,
    /// A put of an id already stored copies nothing. Default: True.
    pub dedup_enabled: bool,
    /// A read from a slower tier moves the block to the fastest. Default: True.
    pub promote_on_read: bool,
    /// Content hash of `put_content`: "sha256" (the documented one) or "blake3".
    /// Default: "sha256".
    pub hasher: String,
    /// Threads for batch calls; 0 for one per core. Default: 0.
    pub num_io_threads: usize,
    /// Prefetches (`CascadeStore.prefetch`) that move blocks at once, each on its own
    /// thread; later ones wait in order. At least 1. Default: 2.
    pub max_prefetches: usize,
    /// `"write_back"` (a block lives in the fastest tier that takes it and moves down
    /// under pressure) or `"write_through"` (a put placed in a non-persistent tier is
    /// also written, in the background, to the first persistent tier below; `flush()`
    /// waits for those writes, so flushed blocks survive a crash). Default:
    /// "write_back".
    pub write_policy: String,
}

impl Default for PyConfig {
    fn default() -> Self {
        Self {
            gpu_capacity_bytes: 0,
            gpu_device_id: 0,
            gpu_required: false,
            shm_capacity_bytes: GIB,
            shm_path: String::new(),
            lustre_path: String::new(),
            lustre_capacity_bytes: 0,
            dedup_enabled: true,
            promote_on_read: true,
            hasher: "sha256".to_string(),
            num_io_threads: 0,
            max_prefetches: 2,
            write_policy: "write_back".to_string(),
        }
    }
}

/// A config turned into Cascade's own, with what the caller should be warned about.
pub struct Mapped {
    /// The deployment to open.
    pub config: CascadeConfig,
    /// Tiers asked for that this build cannot provide (warned about, not opened).
    pub warnings: Vec<String>,
}

impl PyConfig {
    /// Maps the flat settings onto `[[tiers]]` entries for the kinds this build knows.
    pub fn to_cascade(&self) -> PyResult<Mapped> {
        let kinds = TierRegistry::builtin();
        let known = kinds.kinds();
        let mut tiers = Vec::new();
        let mut warnings = Vec::new();
        if self.gpu_capacity_bytes > 0 {
            if known.contains(&"gpu") {
                let mut gpu = TierConfig::new("gpu")
                    .named("gpu")
                    .with(
                        "capacity",
                        to_toml_int(self.gpu_capacity_bytes, "gpu_capacity_bytes")?,
                    )
                    .with(
                        "device_id",
                        to_toml_int(self.gpu_device_id, "gpu_device_id")?,
                    );
                gpu.required = self.gpu_required;
                tiers.push(gpu);
            } else {
                let message = format!(
                    "no GPU support in this build of cascade (built without the `gpu` feature): \
                     the GPU tier of {} bytes on device {} is not opened",
                    self.gpu_capacity_bytes, self.gpu_device_id
                );
                if self.gpu_required {
                    return Err(kind_error(ErrorKind::Unavailable, message));
                }
                warnings.push(message);
            }
        }
        if self.shm_capacity_bytes > 0 {
            let capacity = to_toml_int(self.shm_capacity_bytes, "shm_capacity_bytes")?;
            if known.contains(&"shm") {
                let mut shm = TierConfig::new("shm")
                    .named("shm")
                    .with("capacity", capacity);
                if !self.shm_path.is_empty() {
                    shm = shm.with("path", self.shm_path.as_str());
                }
                tiers.push(shm);
            } else {
                // Builds without the shm tier keep host blocks in process memory instead.
                tiers.push(
                    TierConfig::new("memory")
                        .named("memory")
                        .with("capacity", capacity),
                );
            }
        }
        if !self.lustre_path.is_empty() {
            if !known.contains(&"file") {
                return Err(kind_error(
                    ErrorKind::Unsupported,
                    "lustre_path is set but this build of cascade has no file tier",
                ));
            }
            let mut file = TierConfig::new("file")
                .named("lustre")
                .with("path", self.lustre_path.as_str());
            if self.lustre_capacity_bytes > 0 {
                file = file.with(
                    "capacity",
                    to_toml_int(self.lustre_capacity_bytes, "lustre_capacity_bytes")?,
                );
            }
            tiers.push(file);
        }
        if tiers.is_empty() {
            return Err(kind_error(
                ErrorKind::Config,
                "the config has no tier: set shm_capacity_bytes, lustre_path or gpu_capacity_bytes",
            ));
        }
        let hasher = match self.hasher.to_ascii_lowercase().as_str() {
            "sha256" => HasherKind::Sha256,
            "blake3" => HasherKind::Blake3,
            other => {
                return Err(kind_error(
                    ErrorKind::Config,
                    format!("hasher must be \"sha256\" or \"blake3\", got {other:?}"),
                ));
            }
        };
        let write_policy = match self.write_policy.to_ascii_lowercase().as_str() {
            "write_back" => cascade::WritePolicy::WriteBack,
            "write_through" => cascade::WritePolicy::WriteThrough,
            other => {
                return Err(kind_error(
                    ErrorKind::Config,
                    format!(
                        "write_policy must be \"write_back\" or \"write_through\", got {other:?}"
                    ),
                ));
            }
        };
        let config = CascadeConfig {
            dedup: self.dedup_enabled,
            promote_on_read: self.promote_on_read,
            hasher,
            num_io_threads: self.num_io_threads,
            max_prefetches: self.max_prefetches,
            write_policy,
            tiers,
            ..CascadeConfig::default()
        };
        Ok(Mapped { config, warnings })
    }
}

fn to_toml_int(value: u64, field: &str) -> PyResult<i64> {
    i64::try_from(value)
        .map_err(|_| kind_error(ErrorKind::Config, format!("{field} is too large: {value}")))
}

#[pymethods]
impl PyConfig {
    /// A config; every setting may be given by keyword (see the class docstring).
    #[new]
    #[pyo3(signature = (
        *,
        gpu_capacity_bytes = 0,
        gpu_device_id = 0,
        gpu_required = false,
        shm_capacity_bytes = GIB,
        shm_path = String::new(),
        lustre_path = String::new(),
        lustre_capacity_bytes = 0,
        dedup_enabled = true,
        promote_on_read = true,
        hasher = "sha256".to_string(),
        num_io_threads = 0,
        write_policy = "write_back".to_string(),
        max_prefetches = 2,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        gpu_capacity_bytes: u64,
        gpu_device_id: u64,
        gpu_required: bool,
        shm_capacity_bytes: u64,
        shm_path: String,
        lustre_path: String,
        lustre_capacity_bytes: u64,
        dedup_enabled: bool,
        promote_on_read: bool,
        hasher: String,
        num_io_threads: usize,
        write_policy: String,
        max_prefetches: usize,
    ) -> Self {
        Self {
            gpu_capacity_bytes,
            gpu_device_id,
            gpu_required,
            shm_capacity_bytes,
            shm_path,
            lustre_path,
            lustre_capacity_bytes,
            dedup_enabled,
            promote_on_read,
            hasher,
            num_io_threads,
            max_prefetches,
            write_policy,
        }
    }

    /// The deployment this config opens, as Cascade TOML (what `CascadeStore.from_toml`
    /// reads). Tiers this build lacks are left out.
    fn to_toml(&self) -> PyResult<String> {
        self.to_cascade()?.config.to_toml_string().py_err()
    }

    fn __repr__(&self) -> String {
        format!(
            "CascadeConfig(gpu_capacity_bytes={}, gpu_device_id={}, gpu_required={}, \
             shm_capacity_bytes={}, shm_path={:?}, lustre_path={:?}, lustre_capacity_bytes={}, \
             dedup_enabled={}, promote_on_read={}, hasher={:?}, num_io_threads={}, \
             max_prefetches={}, write_policy={:?})",
            self.gpu_capacity_bytes,
            self.gpu_device_id,
            py_bool(self.gpu_required),
            self.shm_capacity_bytes,
            self.shm_path,
            self.lustre_path,
            self.lustre_capacity_bytes,
            py_bool(self.dedup_enabled),
            py_bool(self.promote_on_read),
            self.hasher,
            self.num_io_threads,
            self.max_prefetches,
            self.write_policy
        )
    }
}

fn py_bool(value: bool) -> &'static str {
    if value { "True" } else { "False" }
}
